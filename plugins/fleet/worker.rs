// SPDX-License-Identifier: MPL-2.0
//! `videoai-worker`: claims cameras from the registry, runs one GStreamer pipeline per camera
//! in this process, holds each through its lease, and hands them over.
//!
//! Threads: one tokio task loop (the caller's runtime) does all NATS work and decides, once a
//! tick (a third of the lease TTL). Nothing on it waits for GStreamer: each camera's pipeline
//! lives on a thread of its own ([`super::camera`]: building, state changes, probes, EOS,
//! stats), which the tick only reads. All of a tick's lease renewals run at once, each bounded
//! by a third of the TTL, so one slow answer never lets the other leases lapse. The metrics
//! ([`super::metrics`]) are atomics the tick writes and the exporter's thread reads. No lock is
//! held across an await.
//!
//! **Renewal.** A lease is updated by compare-and-set on the revision this worker wrote last.
//! When that fails, the worker reads the key before deciding: its own value at a newer revision
//! (an update whose answer was lost but which landed) is adopted; a taker's value naming this
//! worker as `from` is a handover in progress; only someone else's value means the lease was
//! lost, and then the pipeline is still stopped with EOS (its events durable: the other holder
//! stores the same frames under the same keys).
//!
//! **Lapsed leases.** A lease seen elsewhere counts as lapsed only once the leases bucket has
//! answered this worker for a whole TTL without a renewal of it: while the bucket does not
//! answer (a leader election, NATS restarted) and for a TTL after it answers again, every lease
//! seen is still held. After an outage longer than the TTL every lease has aged out of the
//! bucket, though its holder still runs the camera; the holder re-creates it at its first
//! renewal, and the worker that heard from NATS first does not take it meanwhile. A worker
//! with nothing to renew asks the bucket for its state each tick to know whether it answers.
//!
//! **Make-before-break.** A camera given away (a fair share, or this worker leaving) is
//! *offered* in its lease; a worker with room takes the lease over by compare-and-set (naming
//! this one as `from`) and starts its own pipeline; this worker stops its pipeline only once
//! the taker's lease says its pipeline `stored` an event. The overlap stores each frame once
//! (raftsink keys frames by the camera's clock), and the camera has no gap.
//!
//! **Early reads** (`--early-start`, on by default). A holder that died is noticed only when
//! its lease lapses (a TTL after its last renewal); a taker's pipeline then still waits for the
//! camera's clock (its first RTCP sender report, seconds on a new RTP session) before it stores.
//! With early reads, a camera whose holder went silent (neither its lease nor its heartbeat
//! renewed for half the TTL, while the bucket answers this worker) is read at once by one
//! worker with room ([`plan::early`]), without its lease: its pipeline stores as any second
//! reader does (each frame once), and it is adopted by the claim when the lease lapses. A
//! holder that was only slow renews; the early reader is then stopped (EOS), as it is when
//! another worker claims the camera, or after two TTLs. The decision runs at the moment a lease
//! becomes half a TTL old, not only on the tick. The price of a false alarm: one pipeline
//! started and stopped.
//!
//! **SIGTERM** ([`Worker::shutdown`]): the worker says it is leaving, offers every camera and
//! keeps renewing until takers stored (bounded); cameras no one took are then drained (EOS,
//! bounded by their raftsinks' `eos-timeout`) while their leases are still renewed, and only
//! then given back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};

use super::camera::{CameraRun, Phase, Stop};
use super::kv::{self, Buckets, Mirror};
use super::metrics::WorkerMetrics;
use super::plan::{self, View};
use super::registry::{Camera, CameraStatus, Lease, WorkerInfo, now_ms};
use super::template;

/// How a worker is set up (`videoai-worker --help`).
#[derive(Debug, Clone)]
pub struct Config {
    pub nats: Vec<String>,
    pub pipeline: PathBuf,
    pub capacity: usize,
    pub name: String,
    pub lease_ttl: Duration,
    /// Placeholder values for every camera (a camera's own parameters win).
    pub vars: BTreeMap<String, String>,
    pub replicas: usize,
    /// Read a silent holder's cameras before their leases lapse (see the module's doc).
    pub early_start: bool,
}

/// One camera this worker holds.
struct Run {
    pipeline: CameraRun,
    revision: u64,
    renewed: Instant,
    since_ms: u64,
    frames_at_renewal: (u64, Instant),
    fps: f64,
    /// Offered to another worker (its lease says so).
    offered: bool,
    /// Taken by this worker from an offer of `from`.
    from: Option<String>,
    /// Said in the lease's detail while the pipeline has nothing to say (its parameters that
    /// the pipeline file does not use).
    note: String,
}

/// A camera another worker took over from this one: its pipeline runs until the taker stored.
struct Handover {
    pipeline: CameraRun,
    taker: String,
    /// The lease's revision when this worker read the taker's value: the lease watch may not
    /// have caught up with it yet.
    revision: u64,
    since: Instant,
    /// How long it had waited when last said so.
    reported: Duration,
}

impl Handover {
    /// `run`, handed to `taker` (whose lease is at `revision`), from now on.
    fn new(run: Run, taker: String, revision: u64) -> Handover {
        Handover {
            pipeline: run.pipeline,
            taker,
            revision,
            since: Instant::now(),
            reported: Duration::ZERO,
        }
    }
}

/// A camera read early: its holder went silent, its lease has not lapsed yet.
struct Early {
    pipeline: CameraRun,
    holder: String,
    since: Instant,
}

/// After this long a camera whose pipeline file failed is tried again.
const FAILED_RETRY: Duration = Duration::from_secs(30);
/// Longest a handed-over camera's pipeline waits for the taker's first stored frame.
const HANDOVER_MAX: Duration = Duration::from_secs(20);

pub struct Worker {
    cfg: Config,
    buckets: Buckets,
    cameras: Mirror,
    leases: Mirror,
    workers: Mirror,
    runs: BTreeMap<String, Run>,
    handovers: BTreeMap<String, Handover>,
    /// Cameras read early (`--early-start`), adopted by their claim.
    early: BTreeMap<String, Early>,
    /// Pipelines being stopped (EOS on its way), joined at the end.
    stopping: Vec<CameraRun>,
    /// Cameras not to claim until then (pipeline file errors), with the reason.
    failed: BTreeMap<String, (Instant, String)>,
    /// Statuses this worker last wrote, to write each once.
    reported: BTreeMap<String, String>,
    /// Cameras seen held by another worker: a claim of one is a takeover.
    seen_elsewhere: BTreeSet<String>,
    last_release: Instant,
    /// Since when the leases bucket answers without a break (the start, or the end of an
    /// outage); `None` while it did not answer this worker's last request to it (renewal,
    /// claim, state). Until a TTL after it, every lease seen is still taken as held, so that
    /// their holders can renew them before anyone takes their cameras.
    leases_ok_since: Option<Instant>,
    /// A request to NATS went unanswered since the last heartbeat that was (the
    /// `nats_reachable` gauge).
    nats_down: bool,
    /// SIGTERM came: hands its cameras over, takes none.
    leaving: bool,
    /// Counters and gauges, as `videoai-fleet status` (through the heartbeat) and `--metrics`
    /// show them.
    metrics: Arc<WorkerMetrics>,
    /// This process (`host:pid:start ms`), in its heartbeat.
    instance: String,
    /// Another live process took this worker's name: stop.
    pub twin: Option<String>,
}

impl Worker {
    /// Connects (retrying until NATS answers) and opens the buckets.
    pub async fn connect(mut cfg: Config) -> Result<Worker, String> {
        let (urls, client_name) = (cfg.nats.clone(), format!("videoai-worker {}", cfg.name));
        // With retries on, the client is handed back at once and connects in the background: wait
        // for it, saying why not (once per reason, asked of TCP: the client itself only retries).
        let client =
            crate::eventlog::nats::connect(&urls, &client_name, Duration::from_secs(5), true)
                .await?;
        let mut said = String::new();
        let mut next_probe = tokio::time::Instant::now() + Duration::from_secs(1);
        while client.connection_state() != async_nats::connection::State::Connected {
            if tokio::time::Instant::now() >= next_probe {
                next_probe += Duration::from_secs(2);
                if let Some(why) = crate::eventlog::nats::probe(&urls).await
                    && why != said
                {
                    say(&cfg.name, &format!("{why}; retrying"));
                    said = why;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let js = async_nats::jetstream::new(client);
        let mut wait = Duration::from_millis(200);
        let buckets = loop {
            match kv::open(&js, cfg.lease_ttl, cfg.replicas).await {
                Ok(b) => break b,
                Err(e) => {
                    say(&cfg.name, &format!("{e}; retrying in {wait:?}"));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        // The bucket's TTL is the lease TTL: renewals, ticks and every judgement of age follow
        // it (renewing every third of a longer --lease-ttl let every lease age out between two
        // renewals).
        if let Some(ttl) = kv::lease_ttl(&buckets.leases).await
            && ttl != cfg.lease_ttl
        {
            say(
                &cfg.name,
                &format!(
                    "the leases bucket has a TTL of {ttl:?}: using it (--lease-ttl {:?} is for a bucket this worker creates; the first worker or videoai-fleet created this one)",
                    cfg.lease_ttl
                ),
            );
            cfg.lease_ttl = ttl;
        }
        let instance = format!(
            "{}:{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim(),
            std::process::id(),
            now_ms()
        );
        alone(&buckets, &cfg.name, &instance, cfg.lease_ttl).await?;
        let (name, capacity) = (cfg.name.clone(), cfg.capacity);
        let cameras = Mirror::follow(buckets.cameras.clone());
        let leases = Mirror::follow(buckets.leases.clone());
        let workers = Mirror::follow(buckets.workers.clone());
        Ok(Worker {
            cfg,
            buckets,
            cameras,
            leases,
            workers,
            runs: BTreeMap::new(),
            handovers: BTreeMap::new(),
            early: BTreeMap::new(),
            stopping: Vec::new(),
            failed: BTreeMap::new(),
            reported: BTreeMap::new(),
            seen_elsewhere: BTreeSet::new(),
            last_release: Instant::now(),
            leases_ok_since: Some(Instant::now()),
            nats_down: false,
            leaving: false,
            metrics: Arc::new(WorkerMetrics::new(&name, capacity)),
            instance,
            twin: None,
        })
    }

    /// The worker's metrics (to register where they are served).
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// The tick period: a third of the lease TTL.
    pub fn tick_period(&self) -> Duration {
        self.cfg.lease_ttl / 3
    }

    /// Runs until `stop` resolves, then [`Worker::shutdown`]. An error when it had to stop for
    /// another reason (another live process took its name).
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), String> {
        let mut tick = tokio::time::interval(self.tick_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let self_name = self.cfg.name.clone();
        tokio::pin!(stop);
        loop {
            let early = tokio::time::Instant::from_std(self.early_due());
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                _ = tokio::time::sleep_until(early) => {
                    let registry = self.valid_cameras();
                    self.read_early(&registry);
                }
                _ = &mut stop => break,
            }
            if self.twin.is_some() {
                break;
            }
        }
        let twin = self.twin.clone();
        self.shutdown().await;
        match twin {
            Some(other) => Err(format!(
                "another process ({other}) runs under the name '{}', started before this one: stopped (worker names must be unique)",
                self_name
            )),
            None => Ok(()),
        }
    }

    /// One round: watch the pipelines, renew, look, decide, act.
    pub async fn tick(&mut self) {
        let started = Instant::now();
        self.tick_once().await;
        let took = started.elapsed();
        if took > self.tick_period() {
            say(
                &self.cfg.name,
                &format!(
                    "a decision round took {took:?}, more than a tick ({:?}): NATS slow to answer?",
                    self.tick_period()
                ),
            );
        }
    }

    async fn tick_once(&mut self) {
        self.watch_pipelines().await;
        self.renew().await;
        if self.runs.is_empty() {
            self.probe_leases().await;
        }
        self.follow_handovers();
        let registry = self.registry().await;
        self.read_early(&registry);
        let view = self.view(&registry);
        let p = plan::plan(&view);
        for id in &p.stop {
            self.release(id).await;
        }
        if !self.leaving {
            for id in &p.release {
                if let Some(run) = self.runs.get_mut(id) {
                    say(&self.cfg.name, &format!("{id}: offered (fair share)"));
                    run.offered = true;
                    self.metrics.releases.inc();
                    self.last_release = Instant::now();
                }
            }
            for id in &p.withdraw {
                if let Some(run) = self.runs.get_mut(id) {
                    run.offered = false;
                }
            }
            for id in p.claim {
                if let Some(camera) = registry.get(&id) {
                    self.claim(&id, camera.clone()).await;
                }
            }
        }
        self.heartbeat().await;
        self.metrics.ticks.inc();
        self.metrics.cameras(self.runs.iter().map(|(id, r)| {
            let state = match r.pipeline.snapshot().phase {
                Phase::Starting => "starting",
                Phase::Retrying => "retrying",
                _ => "running",
            };
            (id.as_str(), state)
        }));
    }

    /// Valid registry entries; invalid ones get a `failed` status (once).
    async fn registry(&mut self) -> BTreeMap<String, Camera> {
        let mut out = BTreeMap::new();
        for (id, seen) in self.cameras.snapshot() {
            match Camera::decode(&id, &seen.value) {
                Ok(c) => {
                    out.insert(id, c);
                }
                Err(why) => {
                    self.report(&id, "failed", &format!("registry entry: {why}"))
                        .await
                }
            }
        }
        out
    }

    /// Valid registry entries, without reporting the invalid ones (done each tick).
    fn valid_cameras(&self) -> BTreeMap<String, Camera> {
        self.cameras
            .snapshot()
            .into_iter()
            .filter_map(|(id, seen)| Camera::decode(&id, &seen.value).ok().map(|c| (id, c)))
            .collect()
    }

    /// When the next lease or heartbeat turns half a TTL old unrenewed (an early-read decision
    /// is due then); a tick from now when there is none, or early reads are off.
    fn early_due(&self) -> Instant {
        let now = Instant::now();
        let later = now + self.tick_period();
        if !self.cfg.early_start || self.leaving {
            return later;
        }
        let half = self.cfg.lease_ttl / 2;
        let (leases, workers) = (self.leases.snapshot(), self.workers.snapshot());
        leases
            .values()
            .chain(workers.values())
            // A little after: `at` is when this process heard of the renewal.
            .map(|seen| seen.at + half + Duration::from_millis(10))
            .filter(|due| *due > now)
            .min()
            .unwrap_or(later)
            .min(later)
    }

    /// Early reads (see the module's doc): stops those no longer called for, starts those
    /// [`plan::early`] gives this worker.
    fn read_early(&mut self, registry: &BTreeMap<String, Camera>) {
        if !self.cfg.early_start {
            return;
        }
        let ttl = self.cfg.lease_ttl;
        let half = ttl / 2;
        let now = Instant::now();
        let leases = self.leases.snapshot();
        // Renewed since (by its holder or a new one), gone from the registry, or too long.
        let ended: Vec<String> = self
            .early
            .iter()
            .filter(|(id, e)| {
                leases
                    .get(*id)
                    .is_some_and(|seen| now.duration_since(seen.at) < half)
                    || !registry.contains_key(*id)
                    || e.since.elapsed() >= ttl * 2
                    || self.leaving
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            let e = self.early.remove(&id).expect("listed");
            say(
                &self.cfg.name,
                &format!(
                    "{id}: read early for {:?}; {} renewed or someone else took it: stopping (EOS)",
                    e.since.elapsed(),
                    e.holder
                ),
            );
            self.drain(e.pipeline);
        }
        // Only while the bucket has answered this worker for a TTL: during and after an
        // outage every lease looks silent.
        let steady = !self.nats_down
            && self
                .leases_ok_since
                .is_some_and(|since| now.duration_since(since) >= ttl);
        if self.leaving || !steady {
            return;
        }
        let workers = self.workers.snapshot();
        let heard = |name: &str| {
            workers
                .get(name)
                .is_some_and(|seen| now.duration_since(seen.at) < half)
        };
        let mut silent = BTreeMap::new();
        for (id, seen) in &leases {
            let age = now.duration_since(seen.at);
            let Ok(lease) = serde_json::from_slice::<Lease>(&seen.value) else {
                continue;
            };
            if lease.worker != self.cfg.name
                && age >= half
                && age < ttl
                && !heard(&lease.worker)
                && registry.contains_key(id)
                && !self.runs.contains_key(id)
                && !self.handovers.contains_key(id)
                && !self.failed.contains_key(id)
            {
                silent.insert(id.clone(), lease.worker);
            }
        }
        if silent.is_empty() {
            return;
        }
        let mut spare = BTreeMap::new();
        spare.insert(
            self.cfg.name.clone(),
            self.cfg.capacity.saturating_sub(self.runs.len()),
        );
        for (name, seen) in &workers {
            if *name == self.cfg.name || now.duration_since(seen.at) >= half {
                continue;
            }
            if let Ok(w) = serde_json::from_slice::<WorkerInfo>(&seen.value)
                && !w.leaving
            {
                spare.insert(name.clone(), w.capacity.saturating_sub(w.cameras.len()));
            }
        }
        let ids: BTreeSet<String> = silent.keys().cloned().collect();
        for id in plan::early(&self.cfg.name, &ids, &spare) {
            if self.early.contains_key(&id) {
                continue;
            }
            let Ok((desc, _)) = self.description(&id, &registry[&id]) else {
                // Said when claimed.
                continue;
            };
            let holder = silent.remove(&id).expect("silent");
            say(
                &self.cfg.name,
                &format!("{id}: {holder} silent for half the lease TTL: reading it early"),
            );
            self.metrics.early_reads.inc();
            self.early.insert(
                id.clone(),
                Early {
                    pipeline: CameraRun::start(&id, desc),
                    holder,
                    since: now,
                },
            );
        }
    }

    fn view(&mut self, registry: &BTreeMap<String, Camera>) -> View {
        let ttl = self.cfg.lease_ttl;
        let now = Instant::now();
        let mut held = BTreeSet::new();
        let mut offered = BTreeSet::new();
        for (id, seen) in self.leases.snapshot() {
            let Ok(lease) = serde_json::from_slice::<Lease>(&seen.value) else {
                continue;
            };
            let fresh = now.duration_since(seen.at) < ttl
                || self
                    .leases_ok_since
                    .is_none_or(|since| now.duration_since(since) < ttl);
            if lease.worker != self.cfg.name && fresh {
                if lease.offered && lease.from.is_none() {
                    offered.insert(id.clone());
                }
                held.insert(id.clone());
                self.seen_elsewhere.insert(id);
            }
        }
        self.failed.retain(|_, (until, _)| *until > now);
        held.extend(self.failed.keys().cloned());
        // Handed over: the taker's, whatever the watch shows yet.
        held.extend(self.handovers.keys().cloned());
        offered.retain(|c| !self.failed.contains_key(c) && !self.handovers.contains_key(c));
        let mut others = BTreeMap::new();
        for (name, seen) in self.workers.snapshot() {
            if name == self.cfg.name || now.duration_since(seen.at) >= ttl {
                continue;
            }
            if let Ok(w) = serde_json::from_slice::<WorkerInfo>(&seen.value)
                && !w.leaving
            {
                others.insert(name, w.capacity.saturating_sub(w.cameras.len()));
            }
        }
        let settling = self
            .runs
            .iter()
            .filter(|(_, r)| r.pipeline.snapshot().waits_for_clock || r.from.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        View {
            settling,
            me: self.cfg.name.clone(),
            capacity: self.cfg.capacity,
            cameras: registry.keys().cloned().collect(),
            held_by_others: held,
            offered_by_others: offered,
            offering: self
                .runs
                .iter()
                .filter(|(_, r)| r.offered)
                .map(|(id, _)| id.clone())
                .collect(),
            mine: self.runs.keys().cloned().collect(),
            others_spare: others,
            may_release: now.duration_since(self.last_release) >= ttl * 2,
        }
    }

    fn lease_of(&self, run: &Run) -> Lease {
        let snap = run.pipeline.snapshot();
        let last = run.pipeline.frames.last_ms.load(Ordering::Relaxed);
        Lease {
            worker: self.cfg.name.clone(),
            state: match snap.phase {
                Phase::Stopping | Phase::Ended => "running",
                p => p.as_str(),
            }
            .to_string(),
            detail: if snap.detail.is_empty() {
                run.note.clone()
            } else {
                snap.detail
            },
            fps: run.fps,
            frames: run.pipeline.frames.count.load(Ordering::Relaxed),
            last_frame_ms: (last > 0).then_some(last),
            since_ms: run.since_ms,
            offered: run.offered,
            from: run.from.clone().filter(|_| !run.offered),
            stored: snap.stored > 0,
        }
    }

    /// Takes `id`: creates its lease if it is free (or this worker's own, left by an earlier
    /// run under the same name), or takes over its lease by compare-and-set if its holder
    /// offers it; then starts its pipeline.
    async fn claim(&mut self, id: &str, camera: Camera) {
        let seen = self.leases.snapshot().get(id).cloned();
        let seen_lease = seen
            .as_ref()
            .and_then(|s| serde_json::from_slice::<Lease>(&s.value).ok());
        let from = seen_lease
            .as_ref()
            .filter(|l| l.offered && l.worker != self.cfg.name)
            .map(|l| l.worker.clone());
        let lease = Lease {
            worker: self.cfg.name.clone(),
            state: "starting".into(),
            since_ms: now_ms(),
            from: from.clone(),
            ..Lease::default()
        };
        let value: bytes::Bytes = serde_json::to_vec(&lease).unwrap().into();
        let own = seen_lease
            .as_ref()
            .is_some_and(|l| l.worker == self.cfg.name);
        let limit = self.cfg.lease_ttl / 3;
        let taken = match (&from, &seen) {
            // An offer: take the lease over by compare-and-set, from its revision read just
            // now (the holder renews it every tick: a revision from the watch would lose to that
            // renewal every time when the two workers' ticks are in step).
            (Some(offerer), Some(_)) => {
                self.metrics.kv("get");
                match bounded(limit, self.buckets.leases.entry(id)).await {
                    Ok(Some(entry))
                        if serde_json::from_slice::<Lease>(&entry.value)
                            .is_ok_and(|l| l.offered && &l.worker == offerer) =>
                    {
                        self.metrics.kv("update");
                        bounded(limit, self.buckets.leases.update(id, value, entry.revision)).await
                    }
                    Ok(_) => Err("no longer offered".to_string()),
                    Err(e) => Err(e),
                }
            }
            // Free (or this worker's own lease from before a restart, which may have aged out
            // since: the watch never says so, so its revision is not trusted): create it, or
            // take this worker's own over from the revision it has now.
            _ => {
                self.metrics.kv("create");
                let created =
                    tokio::time::timeout(limit, self.buckets.leases.create(id, value.clone()))
                        .await;
                // Only a failure counts here: `create` reads the key when its write fails for any
                // reason (no leader included), and any replica may answer that read.
                match &created {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {}
                    _ => self.leases_answered(false),
                }
                match created {
                    Ok(Ok(rev)) => Ok(rev),
                    Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists && own => {
                        self.metrics.kv("get");
                        match bounded(limit, self.buckets.leases.entry(id)).await {
                            Ok(Some(entry))
                                if serde_json::from_slice::<Lease>(&entry.value)
                                    .is_ok_and(|l| l.worker == self.cfg.name) =>
                            {
                                self.metrics.kv("update");
                                bounded(
                                    limit,
                                    self.buckets.leases.update(id, value, entry.revision),
                                )
                                .await
                            }
                            Ok(_) => Err("someone else's lease".to_string()),
                            Err(e) => Err(e),
                        }
                    }
                    Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => Err(e.to_string()),
                    // The leases bucket does not answer (counted above: no lease seen is taken
                    // until it has answered for a TTL).
                    other => Err(match other {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {limit:?}"),
                    }),
                }
            }
        };
        let revision = match taken {
            Ok(r) => r,
            Err(why) => {
                // Someone else was quicker (or the holder renewed meanwhile): tried again next
                // round, if still wanted.
                gst::debug!(
                    crate::fleet::CAT,
                    "{}: {id}: not taken: {why}",
                    self.cfg.name
                );
                return;
            }
        };
        self.metrics.claims.inc();
        match &from {
            Some(f) => say(&self.cfg.name, &format!("{id}: taken over from {f}")),
            None => say(&self.cfg.name, &format!("{id}: claimed")),
        }
        if self.seen_elsewhere.remove(id) {
            self.metrics.takeovers.inc();
        }
        match self.description(id, &camera) {
            Ok((desc, unused)) => {
                let note = if unused.is_empty() {
                    String::new()
                } else {
                    let note = format!(
                        "parameters the pipeline file does not use: {}",
                        unused.join(", ")
                    );
                    say(&self.cfg.name, &format!("{id}: {note}"));
                    note
                };
                let pipeline = match self.early.remove(id) {
                    Some(e) => {
                        say(
                            &self.cfg.name,
                            &format!("{id}: read early for {:?}; going on", e.since.elapsed()),
                        );
                        e.pipeline
                    }
                    None => CameraRun::start(id, desc),
                };
                let run = Run {
                    note,
                    pipeline,
                    revision,
                    renewed: Instant::now(),
                    since_ms: now_ms(),
                    frames_at_renewal: (0, Instant::now()),
                    fps: 0.0,
                    offered: false,
                    from,
                };
                self.clear_status(id).await;
                self.runs.insert(id.to_string(), run);
            }
            Err(why) => {
                if let Some(e) = self.early.remove(id) {
                    self.drain(e.pipeline);
                }
                self.refuse(id, revision, why).await
            }
        }
    }

    /// The pipeline file or the camera's parameters are at fault: say so, let go, and leave
    /// the camera alone for a while (another worker's file may be right).
    async fn refuse(&mut self, id: &str, revision: u64, why: String) {
        self.failed
            .insert(id.to_string(), (Instant::now() + FAILED_RETRY, why.clone()));
        self.report(id, "failed", &why).await;
        self.metrics.kv("delete");
        let limit = self.cfg.lease_ttl / 3;
        let _ = bounded(
            limit,
            self.buckets
                .leases
                .delete_expect_revision(id, Some(revision)),
        )
        .await;
    }

    /// The camera's pipeline description, from the pipeline file, and the camera's parameters
    /// the file does not use.
    fn description(
        &self,
        id: &str,
        camera: &Camera,
    ) -> Result<(template::Filled, Vec<String>), String> {
        let path = &self.cfg.pipeline;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the pipeline file {}: {e}", path.display()))?;
        let used = template::placeholders(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let unused: Vec<String> = camera
            .params
            .keys()
            .filter(|k| !used.contains(k))
            .cloned()
            .collect();
        let mut vars = self.cfg.vars.clone();
        vars.extend(camera.params.clone());
        vars.insert("CAMERA_ID".into(), id.to_string());
        vars.insert("URI".into(), camera.uri.clone());
        vars.insert("NATS".into(), format!("nats://{}", hosts(&self.cfg.nats)));
        let filled =
            template::fill(&text, &vars).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((filled, unused))
    }

    /// Pipelines that could not be built give their camera back; stopped pipelines are
    /// reaped; frame rates.
    async fn watch_pipelines(&mut self) {
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            let unbuildable = self.runs[&id].pipeline.snapshot().unbuildable;
            if let Some(why) = unbuildable {
                let run = self.runs.remove(&id).expect("listed");
                let why = format!("{}: {why}", self.cfg.pipeline.display());
                self.refuse(&id, run.revision, why).await;
                run.pipeline.join();
            }
        }
        let stopping = std::mem::take(&mut self.stopping);
        for p in stopping {
            if p.finished() {
                p.join();
            } else {
                self.stopping.push(p);
            }
        }
    }

    /// Renews every lease at once, by compare-and-set; see the module's doc for what a failed
    /// renewal means.
    async fn renew(&mut self) {
        let ttl = self.cfg.lease_ttl;
        let now = Instant::now();
        for run in self.runs.values_mut() {
            let frames = run.pipeline.frames.count.load(Ordering::Relaxed);
            let dt = now.duration_since(run.frames_at_renewal.1).as_secs_f64();
            if dt > 0.0 {
                run.fps = (frames - run.frames_at_renewal.0) as f64 / dt;
            }
            run.frames_at_renewal = (frames, now);
        }
        let updates: Vec<(String, bytes::Bytes, u64, bool)> = self
            .runs
            .iter()
            .map(|(id, run)| {
                let lease = self.lease_of(run);
                let value = serde_json::to_vec(&lease).unwrap().into();
                (id.clone(), value, run.revision, lease.stored)
            })
            .collect();
        for _ in &updates {
            self.metrics.kv("update");
        }
        let leases = &self.buckets.leases;
        let results = futures_util::future::join_all(updates.into_iter().map(
            |(id, value, revision, stored)| async move {
                let r = tokio::time::timeout(ttl / 3, leases.update(&id, value, revision)).await;
                (id, r, stored)
            },
        ))
        .await;
        for (id, result, stored) in results {
            match result {
                Ok(Ok(rev)) => {
                    self.leases_answered(true);
                    let run = self.runs.get_mut(&id).expect("renewed");
                    run.revision = rev;
                    run.renewed = Instant::now();
                    // The old holder has read (or will read) that this one stored: the
                    // handover is done.
                    if stored {
                        run.from = None;
                    }
                }
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    self.leases_answered(true);
                    self.resolve(&id).await;
                }
                // NATS does not answer (a leader election, a partition): no one can take the
                // camera through NATS either, so it keeps running (its events wait in the
                // outbox); if the lease aged out meanwhile, a later renewal finds out. Two
                // readers at once store each frame once (raftsink capture-time-wait).
                _ => {
                    self.leases_answered(false);
                    let run = &self.runs[&id];
                    if run.renewed.elapsed() > ttl {
                        say(
                            &self.cfg.name,
                            &format!(
                                "{id}: lease not renewed for {:?} (NATS unreachable?); still running",
                                run.renewed.elapsed()
                            ),
                        );
                    }
                }
            }
        }
    }

    /// A renewal of `id` found another revision: reads the key and decides.
    async fn resolve(&mut self, id: &str) {
        self.metrics.kv("get");
        let entry =
            match tokio::time::timeout(self.cfg.lease_ttl / 3, self.buckets.leases.entry(id)).await
            {
                Ok(Ok(e)) => e,
                // No answer: decide at the next renewal.
                _ => {
                    self.leases_answered(false);
                    return;
                }
            };
        let current = entry
            .as_ref()
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            .map(|e| {
                (
                    e.revision,
                    serde_json::from_slice::<Lease>(&e.value).unwrap_or_default(),
                )
            });
        let revision = current.as_ref().map_or(0, |(rev, _)| *rev);
        match plan::refused_renewal(&self.cfg.name, current.as_ref().map(|(_, l)| l)) {
            plan::Refused::OwnAnswerLost => {
                say(
                    &self.cfg.name,
                    &format!(
                        "{id}: the lease is at a newer revision of this worker's own (an answer lost); going on"
                    ),
                );
                if let Some(run) = self.runs.get_mut(id) {
                    run.revision = revision;
                    run.renewed = Instant::now();
                }
            }
            plan::Refused::HandingOverTo(taker) => {
                if let Some(run) = self.runs.remove(id) {
                    say(
                        &self.cfg.name,
                        &format!("{id}: taken over by {taker}; running until it stored"),
                    );
                    self.handovers
                        .insert(id.to_string(), Handover::new(run, taker, revision));
                }
            }
            // Its pipeline still runs until the new holder stored, as in a handover: the
            // frames in between may have reached only this one.
            plan::Refused::LostTo(holder) => {
                say(
                    &self.cfg.name,
                    &format!(
                        "{id}: the lease is {holder}'s now; running until it stored, then stopping (EOS)"
                    ),
                );
                self.metrics.lost.inc();
                if let Some(run) = self.runs.remove(id) {
                    self.handovers
                        .insert(id.to_string(), Handover::new(run, holder, revision));
                }
            }
            // Aged out (NATS away longer than the TTL) or deleted, and not taken: take it
            // again.
            plan::Refused::Free => {
                let value: bytes::Bytes = serde_json::to_vec(&self.lease_of(&self.runs[id]))
                    .unwrap()
                    .into();
                self.metrics.kv("create");
                let limit = self.cfg.lease_ttl / 3;
                match tokio::time::timeout(limit, self.buckets.leases.create(id, value)).await {
                    Ok(Ok(rev)) => {
                        let run = self.runs.get_mut(id).expect("held");
                        run.revision = rev;
                        run.renewed = Instant::now();
                    }
                    Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {
                        // Taken meanwhile: the next renewal reads whose.
                    }
                    _ => self.leases_answered(false),
                }
            }
        }
    }

    /// Whether the leases bucket answered a request (an error it sent counts as an answer; no
    /// answer within the limit does not). See the module's doc on lapsed leases.
    fn leases_answered(&mut self, answered: bool) {
        if !answered {
            self.leases_ok_since = None;
            self.nats_down = true;
        } else if self.leases_ok_since.is_none() {
            self.leases_ok_since = Some(Instant::now());
        }
    }

    /// With no lease to renew, whether the leases bucket answers is asked: its state, from a
    /// server that names a leader (`Store::status` only reads a copy kept by the client, and a
    /// replica of a stream without a leader answers with its own copy, naming none).
    async fn probe_leases(&mut self) {
        self.metrics.kv("status");
        let mut stream = self.buckets.leases.stream.clone();
        let answer = tokio::time::timeout(self.tick_period(), stream.info()).await;
        let led = match answer {
            Ok(Ok(info)) => info.cluster.as_ref().is_none_or(|c| c.leader.is_some()),
            _ => false,
        };
        self.leases_answered(led);
    }

    /// Handed-over cameras: stopped (EOS) once their taker's lease says it stored, or it is no
    /// longer the taker's, or after [`HANDOVER_MAX`].
    fn follow_handovers(&mut self) {
        let leases = self.leases.snapshot();
        let done: Vec<String> = self
            .handovers
            .iter()
            .filter(|(id, h)| {
                // Only a value at least as new as the one read when the taker was found.
                let seen = leases.get(*id);
                let lease = seen
                    .filter(|s| s.revision >= h.revision)
                    .and_then(|s| serde_json::from_slice::<Lease>(&s.value).ok());
                let stored = lease
                    .as_ref()
                    .is_some_and(|l| l.worker == h.taker && l.stored);
                let gone = match seen {
                    None => true,
                    Some(s) if s.revision >= h.revision => {
                        lease.as_ref().is_none_or(|l| l.worker != h.taker)
                    }
                    Some(_) => false,
                };
                stored || gone || h.since.elapsed() >= HANDOVER_MAX
            })
            .map(|(id, _)| id.clone())
            .collect();
        for (id, h) in self.handovers.iter_mut() {
            let waited = h.since.elapsed();
            if waited >= h.reported + Duration::from_secs(5) {
                h.reported = waited;
                let s = h.pipeline.snapshot();
                say(
                    &self.cfg.name,
                    &format!(
                        "{id}: still running for {} after {waited:?} (its lease says it has not stored yet){}",
                        h.taker,
                        if s.store_error.is_empty() {
                            String::new()
                        } else {
                            format!("; this pipeline's last NATS error: {}", s.store_error)
                        }
                    ),
                );
            }
        }
        for id in done {
            let h = self.handovers.remove(&id).expect("listed");
            say(
                &self.cfg.name,
                &format!(
                    "{id}: {} stored after {:?} (or gave the camera up); stopping (EOS)",
                    h.taker,
                    h.since.elapsed()
                ),
            );
            self.drain(h.pipeline);
        }
    }

    /// Stops a pipeline with EOS, in the background.
    fn drain(&mut self, pipeline: CameraRun) {
        pipeline.stop(Stop::Drain);
        self.stopping.push(pipeline);
    }

    /// Stops `id` (EOS) and gives its lease back at once (a camera removed from the registry).
    async fn release(&mut self, id: &str) {
        if let Some(run) = self.runs.remove(id) {
            self.drain(run.pipeline);
            self.metrics.kv("delete");
            let limit = self.cfg.lease_ttl / 3;
            let _ = bounded(
                limit,
                self.buckets
                    .leases
                    .delete_expect_revision(id, Some(run.revision)),
            )
            .await;
        }
        self.clear_status(id).await;
    }

    async fn heartbeat(&mut self) {
        let info = WorkerInfo {
            capacity: if self.leaving { 0 } else { self.cfg.capacity },
            // Offered cameras are no longer counted as this worker's: a taker lists them as
            // soon as it takes them.
            cameras: self
                .runs
                .iter()
                .filter(|(_, r)| !r.offered)
                .map(|(id, _)| id.clone())
                .collect(),
            claims: self.metrics.claims.get(),
            releases: self.metrics.releases.get(),
            takeovers: self.metrics.takeovers.get(),
            at_ms: now_ms(),
            leaving: self.leaving,
            instance: self.instance.clone(),
        };
        // Another live process wrote under this name since the last heartbeat (started
        // despite the check at start, e.g. at the same moment): two workers of one name would
        // take each other's leases forever. The later one stops.
        if let Some(seen) = self.workers.snapshot().get(&self.cfg.name)
            && let Ok(w) = serde_json::from_slice::<WorkerInfo>(&seen.value)
            && !w.instance.is_empty()
            && w.instance != self.instance
            && seen.at.elapsed() < self.cfg.lease_ttl
            && started_ms(&w.instance) < started_ms(&self.instance)
        {
            self.twin = Some(w.instance);
        }
        self.metrics.kv("put");
        let put = tokio::time::timeout(
            self.cfg.lease_ttl / 3,
            self.buckets
                .workers
                .put(&self.cfg.name, serde_json::to_vec(&info).unwrap().into()),
        )
        .await;
        match put {
            Ok(Ok(_)) => self.nats_down = false,
            _ => self.nats_down = true,
        }
        self.metrics.nats_reachable.set(!self.nats_down as i64);
    }

    async fn report(&mut self, id: &str, state: &str, detail: &str) {
        let key = format!("{state}: {detail}");
        if self.reported.get(id) == Some(&key) {
            return;
        }
        let s = CameraStatus {
            state: state.into(),
            detail: detail.into(),
            worker: self.cfg.name.clone(),
            at_ms: now_ms(),
        };
        self.metrics.kv("put");
        let limit = self.cfg.lease_ttl / 3;
        if bounded(
            limit,
            self.buckets
                .status
                .put(id, serde_json::to_vec(&s).unwrap().into()),
        )
        .await
        .is_ok()
        {
            self.reported.insert(id.to_string(), key);
        }
    }

    async fn clear_status(&mut self, id: &str) {
        let reported = self.reported.remove(id).is_some();
        if !reported {
            self.metrics.kv("get");
        }
        let limit = self.cfg.lease_ttl / 3;
        if reported
            || bounded(limit, self.buckets.status.get(id))
                .await
                .ok()
                .flatten()
                .is_some()
        {
            self.metrics.kv("delete");
            let _ = bounded(limit, self.buckets.status.delete(id)).await;
        }
    }

    /// Whether another live worker that is not leaving has room.
    fn someone_has_room(&self) -> bool {
        let ttl = self.cfg.lease_ttl;
        self.workers.snapshot().iter().any(|(name, seen)| {
            *name != self.cfg.name
                && seen.at.elapsed() < ttl
                && serde_json::from_slice::<WorkerInfo>(&seen.value)
                    .is_ok_and(|w| !w.leaving && w.capacity > w.cameras.len())
        })
    }

    /// SIGTERM: hands every camera over to workers with room (make-before-break, bounded by
    /// [`HANDOVER_MAX`]), then drains the rest (EOS, their leases still renewed) and gives their
    /// leases back; waits for every pipeline to end.
    pub async fn shutdown(mut self) {
        self.leaving = true;
        for (_, e) in std::mem::take(&mut self.early) {
            self.drain(e.pipeline);
        }
        for run in self.runs.values_mut() {
            run.offered = true;
        }
        self.heartbeat().await;
        let period = self.tick_period();
        let started = Instant::now();
        // Takers first: while some worker has room and cameras are left to take.
        while !self.runs.is_empty()
            && started.elapsed() < HANDOVER_MAX
            && (self.someone_has_room() || started.elapsed() < period * 3)
        {
            self.tick().await;
            tokio::time::sleep(period).await;
        }
        // The rest: EOS until durable, leases renewed meanwhile, then given back.
        for run in self.runs.values() {
            run.pipeline.stop(Stop::Drain);
        }
        while self.runs.values().any(|r| !r.pipeline.finished()) || !self.handovers.is_empty() {
            self.renew().await;
            self.follow_handovers();
            self.heartbeat().await;
            tokio::time::sleep(period).await;
        }
        let runs = std::mem::take(&mut self.runs);
        let limit = self.cfg.lease_ttl / 3;
        for (id, run) in runs {
            self.metrics.kv("delete");
            let _ = bounded(
                limit,
                self.buckets
                    .leases
                    .delete_expect_revision(&id, Some(run.revision)),
            )
            .await;
            self.clear_status(&id).await;
            run.pipeline.join();
        }
        self.metrics.kv("delete");
        let _ = bounded(limit, self.buckets.workers.delete(&self.cfg.name)).await;
        let stopping = std::mem::take(&mut self.stopping);
        let _ = tokio::task::spawn_blocking(move || {
            for p in stopping {
                p.join();
            }
        })
        .await;
    }
}

/// Makes sure no other live process runs under `name`: its heartbeat key must stay still for
/// two heartbeat periods (a dead worker's ages out; a live one's keeps changing). An error names
/// the other process.
async fn alone(buckets: &Buckets, name: &str, instance: &str, ttl: Duration) -> Result<(), String> {
    let read = || async {
        match tokio::time::timeout(ttl, buckets.workers.entry(name)).await {
            Ok(Ok(Some(e))) if e.operation == async_nats::jetstream::kv::Operation::Put => Some((
                e.revision,
                serde_json::from_slice::<WorkerInfo>(&e.value).ok(),
            )),
            _ => None,
        }
    };
    let Some((first, _)) = read().await else {
        return Ok(());
    };
    let deadline = Instant::now() + ttl * 2 / 3 + Duration::from_millis(500);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match read().await {
            Some((rev, Some(w))) if rev != first && w.instance != instance => {
                let (host, pid) = {
                    let mut p = w.instance.split(':');
                    (
                        p.next().unwrap_or("?").to_string(),
                        p.next().unwrap_or("?").to_string(),
                    )
                };
                return Err(format!(
                    "another worker named '{name}' is running (host {host}, pid {pid}, {} cameras): worker names are unique; give this one another --name",
                    w.cameras.len()
                ));
            }
            // Gone (aged out or deleted): free.
            None => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// A key-value request bounded by `limit`: a NATS that does not answer never holds the tick
/// (whose every other lease must be renewed within the TTL).
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, request).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// When the process of an instance (`host:pid:start ms`) started.
fn started_ms(instance: &str) -> u64 {
    instance
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A line of the worker's log (stderr), with the time.
pub fn say(name: &str, what: &str) {
    eprintln!(
        "{} videoai-worker {name}: {what}",
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
    );
}

/// `host:port,host:port` of NATS URLs.
fn hosts(urls: &[String]) -> String {
    crate::eventlog::nats::host_ports(urls).join(",")
}
