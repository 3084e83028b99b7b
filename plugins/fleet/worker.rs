// SPDX-License-Identifier: MPL-2.0
//! `videoai-worker`: claims cameras from the registry, runs one GStreamer pipeline per camera
//! in this process, holds each through its lease, and hands them back.
//!
//! Threads: one tokio task loop (the caller's runtime) does all NATS work and decides, once a
//! tick (a third of the lease TTL); GStreamer runs each pipeline on its own streaming threads;
//! a pipeline is stopped on a thread of its own (EOS, bounded wait, NULL) so a slow stop never
//! delays the renewal of the other leases. A pad probe on each pipeline's sinks counts frames
//! (atomics, no lock). The metrics ([`super::metrics`]) are atomics the tick writes and the
//! exporter's thread reads. No lock is held across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use gst::prelude::*;

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
}

/// One camera this worker runs.
struct Run {
    camera: Camera,
    pipeline: Option<gst::Pipeline>,
    revision: u64,
    renewed: Instant,
    state: &'static str,
    detail: String,
    failures: u32,
    retry_at: Option<Instant>,
    frames: Arc<AtomicU64>,
    last_frame_ms: Arc<AtomicU64>,
    frames_at_renewal: (u64, Instant),
    fps: f64,
    since_ms: u64,
}

/// After this many seconds a camera whose pipeline file failed is tried again.
const FAILED_RETRY: Duration = Duration::from_secs(30);
/// Longest wait for a stopped pipeline's EOS to reach its sinks (events durable).
const EOS_WAIT: Duration = Duration::from_secs(10);

pub struct Worker {
    cfg: Config,
    buckets: Buckets,
    cameras: Mirror,
    leases: Mirror,
    workers: Mirror,
    runs: BTreeMap<String, Run>,
    /// Cameras not to claim until then (pipeline file errors), with the reason.
    failed: BTreeMap<String, (Instant, String)>,
    /// Statuses this worker last wrote, to write each once.
    reported: BTreeMap<String, String>,
    /// Cameras seen held by another worker: a claim of one is a takeover.
    seen_elsewhere: BTreeSet<String>,
    last_release: Instant,
    /// Since when NATS has answered without a break (the start, or the end of an outage):
    /// for a TTL after it, leases seen before are still taken as held, so their holders can
    /// renew them before anyone takes their cameras.
    nats_ok_since: Instant,
    nats_down: bool,
    stopping: Vec<std::thread::JoinHandle<()>>,
    /// Counters and gauges, as `videoai-fleet status` (through the heartbeat) and `--metrics`
    /// show them.
    metrics: Arc<WorkerMetrics>,
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

impl Worker {
    /// Connects (retrying until NATS answers) and opens the buckets.
    pub async fn connect(cfg: Config) -> Result<Worker, String> {
        let client = crate::eventlog::nats::connect(
            &cfg.nats,
            &format!("videoai-worker {}", cfg.name),
            Duration::from_secs(5),
            true,
        )
        .await?;
        let js = async_nats::jetstream::new(client);
        let mut wait = Duration::from_millis(200);
        let buckets = loop {
            match kv::open(&js, cfg.lease_ttl, cfg.replicas).await {
                Ok(b) => break b,
                Err(e) => {
                    eprintln!("videoai-worker {}: {e}; retrying in {wait:?}", cfg.name);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        if let Some(ttl) = kv::lease_ttl(&buckets.leases).await
            && ttl != cfg.lease_ttl
        {
            eprintln!(
                "videoai-worker {}: the leases bucket has a TTL of {ttl:?} (--lease-ttl {:?} ignored: the first worker set it)",
                cfg.name, cfg.lease_ttl
            );
        }
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
            failed: BTreeMap::new(),
            reported: BTreeMap::new(),
            seen_elsewhere: BTreeSet::new(),
            last_release: Instant::now(),
            nats_ok_since: Instant::now(),
            nats_down: false,
            stopping: Vec::new(),
            metrics: Arc::new(WorkerMetrics::new(&name, capacity)),
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

    /// Runs until `stop` resolves, then [`Worker::shutdown`].
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.tick_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                _ = &mut stop => break,
            }
        }
        self.shutdown().await;
    }

    /// One round: watch the pipelines, renew, look, decide, act.
    pub async fn tick(&mut self) {
        self.watch_pipelines();
        self.renew().await;
        let registry = self.registry().await;
        let view = self.view(&registry);
        let p = plan::plan(&view);
        for id in p.stop.iter().chain(&p.release) {
            if p.release.contains(id) {
                self.metrics.releases.inc();
                self.last_release = Instant::now();
            }
            self.release(id, true).await;
        }
        for id in p.claim {
            if let Some(camera) = registry.get(&id) {
                self.claim(&id, camera.clone()).await;
            }
        }
        self.heartbeat().await;
        self.metrics.ticks.inc();
        self.metrics
            .cameras(self.runs.iter().map(|(id, r)| (id.as_str(), r.state)));
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

    fn view(&mut self, registry: &BTreeMap<String, Camera>) -> View {
        let ttl = self.cfg.lease_ttl;
        let now = Instant::now();
        let mut held = BTreeSet::new();
        for (id, seen) in self.leases.snapshot() {
            let Ok(lease) = serde_json::from_slice::<Lease>(&seen.value) else {
                continue;
            };
            let fresh =
                now.duration_since(seen.at) < ttl || now.duration_since(self.nats_ok_since) < ttl;
            if lease.worker != self.cfg.name && fresh {
                held.insert(id.clone());
                self.seen_elsewhere.insert(id);
            }
        }
        self.failed.retain(|_, (until, _)| *until > now);
        held.extend(self.failed.keys().cloned());
        let mut others = BTreeMap::new();
        for (name, seen) in self.workers.snapshot() {
            if name == self.cfg.name || now.duration_since(seen.at) >= ttl {
                continue;
            }
            if let Ok(w) = serde_json::from_slice::<WorkerInfo>(&seen.value) {
                others.insert(name, w.capacity.saturating_sub(w.cameras.len()));
            }
        }
        let settling = self
            .runs
            .iter()
            .filter(|(_, r)| r.pipeline.as_ref().is_some_and(waits_for_clock))
            .map(|(id, _)| id.clone())
            .collect();
        View {
            settling,
            me: self.cfg.name.clone(),
            capacity: self.cfg.capacity,
            cameras: registry.keys().cloned().collect(),
            held_by_others: held,
            mine: self.runs.keys().cloned().collect(),
            others_spare: others,
            may_release: now.duration_since(self.last_release) >= ttl * 2,
        }
    }

    fn lease_of(&self, run: &Run) -> Lease {
        let last = run.last_frame_ms.load(Ordering::Relaxed);
        Lease {
            worker: self.cfg.name.clone(),
            state: run.state.to_string(),
            detail: run.detail.clone(),
            fps: run.fps,
            frames: run.frames.load(Ordering::Relaxed),
            last_frame_ms: (last > 0).then_some(last),
            since_ms: run.since_ms,
        }
    }

    /// Takes `id` if its lease can be created (or is this worker's own, left by an earlier
    /// run under the same name) and starts its pipeline.
    async fn claim(&mut self, id: &str, camera: Camera) {
        let mut run = Run {
            camera,
            pipeline: None,
            revision: 0,
            renewed: Instant::now(),
            state: "starting",
            detail: String::new(),
            failures: 0,
            retry_at: None,
            frames: Arc::default(),
            last_frame_ms: Arc::default(),
            frames_at_renewal: (0, Instant::now()),
            fps: 0.0,
            since_ms: now_ms(),
        };
        let value: bytes::Bytes = serde_json::to_vec(&self.lease_of(&run)).unwrap().into();
        self.metrics.kv("create");
        let created = match self.buckets.leases.create(id, value.clone()).await {
            Ok(rev) => Ok(rev),
            Err(e) => {
                if e.kind() != CreateErrorKind::AlreadyExists {
                    // The leases do not answer: wait a TTL after they do before taking any.
                    self.nats_down = true;
                }
                // Our own lease from before a restart: take it over by its revision.
                let own = self.leases.snapshot().get(id).and_then(|s| {
                    let l: Lease = serde_json::from_slice(&s.value).ok()?;
                    (l.worker == self.cfg.name).then_some(s.revision)
                });
                if own.is_some() {
                    self.metrics.kv("update");
                }
                match own {
                    Some(rev) => self
                        .buckets
                        .leases
                        .update(id, value, rev)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(e.to_string()),
                }
            }
        };
        let Ok(revision) = created else {
            return; // Someone else was quicker.
        };
        run.revision = revision;
        run.renewed = Instant::now();
        self.metrics.claims.inc();
        eprintln!("videoai-worker {}: {id}: claimed", self.cfg.name);
        if self.seen_elsewhere.remove(id) {
            self.metrics.takeovers.inc();
        }
        match self.start(id, &run) {
            Ok(pipeline) => {
                run.pipeline = Some(pipeline);
                run.state = "running";
                self.clear_status(id).await;
                self.runs.insert(id.to_string(), run);
            }
            Err(why) => {
                // The pipeline file or the camera's parameters are at fault: say so, let go,
                // and leave the camera alone for a while (another worker's file may be right).
                self.failed
                    .insert(id.to_string(), (Instant::now() + FAILED_RETRY, why.clone()));
                self.report(id, "failed", &why).await;
                self.metrics.kv("delete");
                let _ = self
                    .buckets
                    .leases
                    .delete_expect_revision(id, Some(revision))
                    .await;
            }
        }
    }

    /// Builds and plays the camera's pipeline from the pipeline file.
    fn start(&self, id: &str, run: &Run) -> Result<gst::Pipeline, String> {
        let path = &self.cfg.pipeline;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the pipeline file {}: {e}", path.display()))?;
        let mut vars = self.cfg.vars.clone();
        vars.extend(run.camera.params.clone());
        vars.insert("CAMERA_ID".into(), id.to_string());
        vars.insert("URI".into(), run.camera.uri.clone());
        vars.insert("NATS".into(), format!("nats://{}", hosts(&self.cfg.nats)));
        let desc = template::fill(&text, &vars).map_err(|e| format!("{}: {e}", path.display()))?;
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| format!("{}: not a pipeline", path.display()))?;
        pipeline.set_property("name", id);
        for sink in pipeline.iterate_sinks().into_iter().flatten() {
            let Some(pad) = sink.static_pad("sink") else {
                continue;
            };
            let (frames, last) = (run.frames.clone(), run.last_frame_ms.clone());
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                frames.fetch_add(1, Ordering::Relaxed);
                last.store(now_ms(), Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        if pipeline.set_state(gst::State::Playing).is_err() {
            let why = first_error(&pipeline).unwrap_or_else(|| "cannot start".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(format!("{id}: {why}"));
        }
        Ok(pipeline)
    }

    /// Errors end a pipeline; it is built again after a backoff (`retrying` meanwhile).
    fn watch_pipelines(&mut self) {
        let now = Instant::now();
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            let mut restart = false;
            {
                let run = self.runs.get_mut(&id).unwrap();
                if let Some(p) = &run.pipeline {
                    let bus = p.bus().unwrap();
                    while let Some(msg) = bus.pop() {
                        match msg.view() {
                            gst::MessageView::Error(e) => {
                                run.detail = format!("{}", e.error());
                                run.failures += 1;
                                run.retry_at = Some(now + backoff(run.failures));
                                run.state = "retrying";
                            }
                            gst::MessageView::Eos(_) => {
                                run.detail = "the stream ended".into();
                                run.failures += 1;
                                run.retry_at = Some(now + backoff(run.failures));
                                run.state = "retrying";
                            }
                            gst::MessageView::Warning(w) => run.detail = format!("{}", w.error()),
                            _ => {}
                        }
                    }
                    if run.state == "retrying" {
                        let p = run.pipeline.take().unwrap();
                        let _ = p.set_state(gst::State::Null);
                    }
                } else if run.retry_at.is_some_and(|t| t <= now) {
                    restart = true;
                }
                // A camera that delivers frames is healthy again.
                let frames = run.frames.load(Ordering::Relaxed);
                if run.pipeline.is_some() && frames > run.frames_at_renewal.0 && run.failures > 0 {
                    run.failures = 0;
                }
            }
            if restart {
                let run = self.runs.get(&id).unwrap();
                let started = self.start(&id, run);
                let run = self.runs.get_mut(&id).unwrap();
                match started {
                    Ok(p) => {
                        run.pipeline = Some(p);
                        run.state = "running";
                        run.retry_at = None;
                    }
                    Err(why) => {
                        run.detail = why;
                        run.failures += 1;
                        run.retry_at = Some(now + backoff(run.failures));
                    }
                }
            }
        }
    }

    /// Renews every lease by compare-and-set; a lease someone else now holds (or that aged out
    /// and was taken: the revision moved on) stops its pipeline at once.
    async fn renew(&mut self) {
        let ttl = self.cfg.lease_ttl;
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            let (value, revision) = {
                let run = self.runs.get_mut(&id).unwrap();
                let now = Instant::now();
                let frames = run.frames.load(Ordering::Relaxed);
                let dt = now.duration_since(run.frames_at_renewal.1).as_secs_f64();
                if dt > 0.0 {
                    run.fps = (frames - run.frames_at_renewal.0) as f64 / dt;
                }
                run.frames_at_renewal = (frames, now);
                let run = &self.runs[&id];
                (
                    bytes::Bytes::from(serde_json::to_vec(&self.lease_of(run)).unwrap()),
                    run.revision,
                )
            };
            self.metrics.kv("update");
            let result =
                tokio::time::timeout(ttl / 3, self.buckets.leases.update(&id, value, revision))
                    .await;
            let run = self.runs.get_mut(&id).unwrap();
            match result {
                Ok(Ok(rev)) => {
                    run.revision = rev;
                    run.renewed = Instant::now();
                }
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    // Aged out (NATS was away longer than the TTL) and not taken: take it
                    // again. Taken by someone else: stop at once.
                    let value: bytes::Bytes = serde_json::to_vec(&self.lease_of(&self.runs[&id]))
                        .unwrap()
                        .into();
                    self.metrics.kv("create");
                    match self.buckets.leases.create(&id, value).await {
                        Ok(rev) => {
                            let run = self.runs.get_mut(&id).unwrap();
                            run.revision = rev;
                            run.renewed = Instant::now();
                        }
                        Err(_) => {
                            eprintln!(
                                "videoai-worker {}: {id}: the lease is someone else's now; stopping",
                                self.cfg.name
                            );
                            self.metrics.lost.inc();
                            self.drop_run(&id, false);
                        }
                    }
                }
                // NATS does not answer (a leader election, a partition): no one can take the
                // camera through NATS either, so it keeps running (its events wait in the
                // outbox); if the lease aged out meanwhile, the next renewal finds a new
                // revision and stops it then. Two readers at once store each frame once
                // (raftsink capture-time-wait).
                _ => {
                    self.nats_down = true;
                    if run.renewed.elapsed() > ttl {
                        eprintln!(
                            "videoai-worker {}: {id}: lease not renewed for {:?} (NATS unreachable?); still running",
                            self.cfg.name,
                            run.renewed.elapsed()
                        );
                    }
                }
            }
        }
    }

    /// Stops the camera's pipeline on a thread of its own: with `eos`, EOS first (bounded) so
    /// the events are durable; without, straight to NULL.
    fn drop_run(&mut self, id: &str, eos: bool) -> Option<Run> {
        let mut run = self.runs.remove(id)?;
        if let Some(p) = run.pipeline.take() {
            let handle = std::thread::Builder::new()
                .name(format!("stop-{id}"))
                .spawn(move || stop_pipeline(&p, eos))
                .ok();
            self.stopping.extend(handle);
        }
        self.stopping.retain(|h| !h.is_finished());
        Some(run)
    }

    /// Stops `id` (EOS) and gives its lease back at once.
    async fn release(&mut self, id: &str, eos: bool) {
        if let Some(run) = self.drop_run(id, eos) {
            self.metrics.kv("delete");
            let _ = self
                .buckets
                .leases
                .delete_expect_revision(id, Some(run.revision))
                .await;
        }
        self.clear_status(id).await;
    }

    async fn heartbeat(&mut self) {
        let info = WorkerInfo {
            capacity: self.cfg.capacity,
            cameras: self.runs.keys().cloned().collect(),
            claims: self.metrics.claims.get(),
            releases: self.metrics.releases.get(),
            takeovers: self.metrics.takeovers.get(),
            at_ms: now_ms(),
        };
        self.metrics.kv("put");
        let put = tokio::time::timeout(
            self.cfg.lease_ttl / 3,
            self.buckets
                .workers
                .put(&self.cfg.name, serde_json::to_vec(&info).unwrap().into()),
        )
        .await;
        match put {
            Ok(Ok(_)) if self.nats_down => {
                self.nats_down = false;
                self.nats_ok_since = Instant::now();
            }
            Ok(Ok(_)) => {}
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
        if self
            .buckets
            .status
            .put(id, serde_json::to_vec(&s).unwrap().into())
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
        if reported || self.buckets.status.get(id).await.ok().flatten().is_some() {
            self.metrics.kv("delete");
            let _ = self.buckets.status.delete(id).await;
        }
    }

    /// Ends every pipeline with EOS, gives every lease back at once, and waits (bounded) for
    /// the pipelines to finish.
    pub async fn shutdown(mut self) {
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in &ids {
            self.release(id, true).await;
        }
        self.metrics.kv("delete");
        let _ = self.buckets.workers.delete(&self.cfg.name).await;
        for h in self.stopping.drain(..) {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// `host:port,host:port` of NATS URLs.
fn hosts(urls: &[String]) -> String {
    crate::eventlog::nats::host_ports(urls).join(",")
}

/// Whether a `raftsink` of `p` still waits for the camera's clock (its `stats` field
/// `camera-clock` is `waiting`: frames held, or none arrived yet, so any on their way would be).
fn waits_for_clock(p: &gst::Pipeline) -> bool {
    p.iterate_recurse().into_iter().flatten().any(|e| {
        e.factory().is_some_and(|f| f.name() == "raftsink")
            && e.property::<gst::Structure>("stats")
                .get::<&str>("camera-clock")
                .is_ok_and(|c| c == "waiting")
    })
}

fn first_error(p: &gst::Pipeline) -> Option<String> {
    let bus = p.bus()?;
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(format!("{}", e.error()));
        }
    }
    None
}

fn stop_pipeline(p: &gst::Pipeline, eos: bool) {
    if eos && p.send_event(gst::event::Eos::new()) {
        let bus = p.bus().unwrap();
        let _ = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(EOS_WAIT.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
    }
    let _ = p.set_state(gst::State::Null);
}
