// SPDX-License-Identifier: MPL-2.0
//! The NATS forwarder: drains the local outbox (events committed to SQLite but not yet
//! acknowledged by JetStream) into the JetStream stream. Every forwarder of the process is a task
//! on one shared runtime ([`nats::runtime`]) and shares one connection per server list.
//!
//! **Which streams.** A forwarder publishes the video streams its element writes (and, when it is
//! the first forwarder of its outbox in this process, the streams of that outbox nobody in the
//! process writes that have stood still for [`ORPHAN_IDLE`]: what an earlier run left behind).
//! So pipelines sharing an outbox publish each event once, not once each.
//!
//! **Exactly once at any age.** Per video stream strictly in outbox order, one publish in
//! flight per subject (streams in parallel, each with its own backoff). Each video stream's
//! subject holds its keys in increasing order, which JetStream enforces: a message is published
//! with `Nats-Expected-Last-Subject-Sequence` set to the subject's last message as this forwarder
//! saw it, so when another writer appended meanwhile JetStream refuses, the forwarder reads where
//! the subject stands and decides again:
//!
//! * a key above the subject's last one is appended;
//! * a key at or below it is looked for on the subject (a headers-only scan from a minute before
//!   its capture time, cached): held with the same frame, it is a duplicate (counted
//!   `already-in-nats`); held with another frame (capture time, or a file's PTS, more than half
//!   a period away), a **collision**: counted, and the frame kept in the outbox's collisions
//!   table; not held (another reader missed that frame), it is appended to the stream's
//!   `.late` subject, with the same check and the same refusal rule there.
//!
//! **Atomic batches.** On servers from 2.12 and a stream that allows them (`allow_atomic`, set
//! when raftsink creates the stream there), the rows of a chunk from its first that can be
//! appended as they are (keys increasing, all above the subject's last) go in one atomic batch,
//! the first message expecting the subject's last: JetStream checks and stores the whole batch
//! in one proposal, or refuses it whole, so the rule holds as for one event, with one round
//! trip per chunk instead of one per event. A batch refused or not acknowledged is followed by
//! the same rows one at a time, after the view is read again (those the batch stored are then
//! found on the subject). Not with `Nats-Msg-Id`: the servers it is for are older.
//!
//! Events keyed locally (`key_basis: local`) go to the `.local` subject. To servers older than
//! 2.11 publishes also carry `Nats-Msg-Id` ([`super::NatsMsgId`]): there the rule above alone
//! let a key be appended twice when a publish whose acknowledgement was lost is sent again
//! while the servers elect a leader (the first still in flight when the second is checked):
//! 1-10 keys per camera in the 2-minute chaos test on 2.9.10 without it. 2.11 and later refuse
//! the second themselves (the leader tracks the publishes in flight per subject), so the id,
//! which costs every server a deduplication entry per event, is left out there. An event is
//! marked forwarded only once NATS holds it.
//!
//! What JetStream refuses for good (a message larger than the stream allows, a permission
//! violation) and rows that cannot be read are parked in the outbox's dead letters, counted and
//! reported once; transient failures (leader election, servers down) are retried with
//! exponential backoff and jitter for as long as the element runs; what is not acknowledged
//! stays in the outbox for the next run. `pending` is always the outbox's own count.
//!
//! Lock order: `Shared::state`, then [`claims`]; neither is held across an await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::eventlog::event::KeyBasis;
use crate::eventlog::nats::{self, KeyOnSubject, ScanFrom};
use crate::eventlog::store::{EventStore, LastKey, OutboxRow};
use crate::util::backoff::{self, Backoff};
use crate::util::histogram::Histogram;

#[derive(Debug, Clone)]
pub struct Config {
    pub urls: Vec<String>,
    pub stream: String,
    /// 0 = 3 when three or more servers are known, else 1.
    pub replicas: usize,
    pub msg_id: super::NatsMsgId,
    pub outbox: PathBuf,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub forwarded: u64,
    pub skipped: u64,
    /// Keys NATS holds with another frame (kept in the outbox's collisions table).
    pub collisions: u64,
    /// Events of this element's streams that wait in the outbox.
    pub pending: i64,
    /// Events parked in the dead letters by this run.
    pub dead_letters: u64,
    pub retries: u64,
    pub connected: bool,
    /// Whether publishes carry `Nats-Msg-Id` (see [`super::NatsMsgId`]).
    pub msg_id: bool,
    /// Atomic batches committed (several events of a subject in one publish round trip).
    pub batches: u64,
    /// Atomic batches refused or not acknowledged (their events then went one at a time).
    pub batches_refused: u64,
    pub last_error: Option<String>,
    /// Publish to acknowledgement.
    pub ack_latency: Histogram,
}

#[derive(Default)]
struct State {
    stats: Stats,
    shutdown: bool,
    /// The streams this element writes: their events are the ones EOS waits for.
    own: HashSet<String>,
    /// Set once this element's streams were seen drained after the last nudge.
    drained_generation: u64,
    nudged_generation: u64,
}

struct Shared {
    id: u64,
    outbox: PathBuf,
    /// Whether publishes carry `Nats-Msg-Id`: decided each round from the connected server's
    /// version ([`nats::msg_id_needed`]: kept once an older server was seen).
    msg_id: AtomicBool,
    /// Set when the stream refused an atomic batch as not allowed (10174): one event at a time
    /// from then on.
    batches_refused: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
    wake: tokio::sync::Notify,
}

pub struct Forwarder {
    shared: Arc<Shared>,
    config: Config,
    /// Signalled when the task has ended.
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// Rows of one stream read at a time.
const CHUNK: usize = 512;
/// Chunks a stream forwards in one round before the streams to forward are read again.
const ROUND_CHUNKS: usize = 64;
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Retry delays after a failure (per stream, and for connecting): 50 ms doubling up to 2 s,
/// ±20 % so that streams and processes do not retry in lockstep.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_secs(2),
    multiplier: 2.0,
    jitter: 0.2,
};
/// A stream of the outbox that no element of the process writes is forwarded (by the first
/// forwarder of the outbox) once its pending events stood still this long.
pub const ORPHAN_IDLE: Duration = Duration::from_secs(5);
/// How far before a key's capture time a scan of its subject starts: it cannot have been
/// published earlier (clocks of the machines apart by less than this).
const SCAN_MARGIN_NS: i64 = 60_000_000_000;
/// Appends refused in a row (other writers appending meanwhile) before a publish counts as a
/// failure and backs off.
const MAX_REFUSALS: u32 = 50;
/// A publish refused because its subject is busy ([`nats::subject_busy`]) is sent again after
/// this, at most [`MAX_BUSY`] times in a row before it counts as a failure and backs off.
const BUSY_PAUSE: Duration = Duration::from_millis(1);
const MAX_BUSY: u32 = 200;
/// Most events in one atomic batch: the servers' default limit (`max_batch_size`). A chunk
/// ([`CHUNK`]) is smaller.
const MAX_BATCH: usize = 1000;
/// An atomic batch may take [`ACK_TIMEOUT`] and this per event to be sent and acknowledged.
const BATCH_TIME_PER_EVENT: Duration = Duration::from_millis(10);

/// The streams each forwarder of the process writes, per outbox (who forwards what).
type Claims = HashMap<PathBuf, BTreeMap<u64, HashSet<String>>>;

fn claims() -> &'static Mutex<Claims> {
    static CLAIMS: LazyLock<Mutex<Claims>> = LazyLock::new(Default::default);
    &CLAIMS
}

fn outbox_key(p: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Forwarder {
    pub fn start(config: Config, reports: Reports) -> Forwarder {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let outbox = outbox_key(&config.outbox);
        claims()
            .lock()
            .unwrap()
            .entry(outbox.clone())
            .or_default()
            .insert(id, HashSet::new());
        let shared = Arc::new(Shared {
            id,
            outbox,
            msg_id: AtomicBool::new(true),
            batches_refused: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake: tokio::sync::Notify::new(),
        });
        let s = shared.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let c = config.clone();
        nats::runtime().spawn(async move {
            run(s, c, reports).await;
            let _ = tx.send(());
        });
        Forwarder {
            shared,
            config,
            done: Mutex::new(Some(rx)),
        }
    }

    /// The element writes events of `stream`: this forwarder publishes them, and EOS waits for
    /// them.
    pub fn claim(&self, stream: &str) {
        let mut st = self.shared.state.lock().unwrap();
        if !st.own.contains(stream) {
            st.own.insert(stream.to_string());
            if let Some(mine) = claims()
                .lock()
                .unwrap()
                .get_mut(&self.shared.outbox)
                .and_then(|m| m.get_mut(&self.shared.id))
            {
                mine.insert(stream.to_string());
            }
        }
    }

    /// The streams this element writes.
    pub fn own(&self) -> Vec<String> {
        own_streams(&self.shared)
    }

    /// The last camera-keyed event NATS holds for `stream` (where a new reader's keys go on
    /// from), asked on the forwarders' runtime: the answer comes on the channel (`None` when
    /// there is none, or NATS did not say within [`ACK_TIMEOUT`]).
    pub fn last_camera_key(&self, stream: &str) -> std::sync::mpsc::Receiver<Option<LastKey>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (urls, name, subject) = (
            self.config.urls.clone(),
            self.config.stream.clone(),
            nats::subject(stream),
        );
        nats::runtime().spawn(async move {
            let ask = async {
                let client = nats::shared_client(&urls, ACK_TIMEOUT).await.ok()?;
                let js = jetstream::new(client);
                let answer = match js.get_stream(&name).await {
                    Ok(s) => nats::last_event_on_subject(&s, &subject)
                        .await
                        .ok()
                        .flatten(),
                    Err(_) => None,
                };
                nats::release_client(&urls);
                answer
            };
            let last = tokio::time::timeout(ACK_TIMEOUT, ask).await.ok().flatten();
            let key = last
                .filter(|e| e.key_basis == Some(KeyBasis::Camera))
                .map(|e| LastKey {
                    seq: e.seq,
                    capture_ns: e.capture_ns,
                    clock: e.clock,
                });
            let _ = tx.send(key);
        });
        rx
    }

    /// New events were committed to the outbox.
    pub fn nudge(&self) {
        self.shared.state.lock().unwrap().nudged_generation += 1;
        self.shared.wake.notify_one();
    }

    /// Waits until the outbox holds no event of this element's streams that NATS has not
    /// acknowledged (or parked), at most `timeout`; `cancel` returning true stops the wait
    /// early. Returns whether it drained.
    pub fn wait_drained(&self, timeout: Duration, cancel: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        st.nudged_generation += 1;
        let target = st.nudged_generation;
        self.shared.wake.notify_one();
        loop {
            if st.drained_generation >= target {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || cancel() {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(50)))
                .unwrap()
                .0;
        }
    }

    pub fn stats(&self) -> Stats {
        self.shared.state.lock().unwrap().stats.clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.state.lock().unwrap().shutdown = true;
        self.shared.wake.notify_one();
        let done = self.done.lock().unwrap().take();
        if let Some(done) = done {
            let _ = done.recv();
        }
        let mut c = claims().lock().unwrap();
        if let Some(m) = c.get_mut(&self.shared.outbox) {
            m.remove(&self.shared.id);
            if m.is_empty() {
                c.remove(&self.shared.outbox);
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn shutting_down(shared: &Shared) -> bool {
    shared.state.lock().unwrap().shutdown
}

fn note_error(shared: &Shared, msg: String) {
    gst::debug!(super::CAT, "NATS: {msg}; retrying");
    let mut st = shared.state.lock().unwrap();
    st.stats.retries += 1;
    st.stats.last_error = Some(msg);
}

fn own_streams(shared: &Shared) -> Vec<String> {
    shared.state.lock().unwrap().own.iter().cloned().collect()
}

/// Of the outbox's pending streams (with their newest pending row), the ones this forwarder
/// publishes: its own, and idle orphans when it is the outbox's first forwarder here.
fn mine(
    shared: &Shared,
    pending: Vec<(String, i64)>,
    orphans: &mut HashMap<String, (i64, Instant)>,
) -> Vec<String> {
    let own: HashSet<String> = shared.state.lock().unwrap().own.clone();
    let c = claims().lock().unwrap();
    let forwarders = c.get(&shared.outbox);
    let first = forwarders
        .and_then(|m| m.keys().next().copied())
        .is_none_or(|id| id == shared.id);
    let claimed = |s: &str| forwarders.is_some_and(|m| m.values().any(|set| set.contains(s)));
    let now = Instant::now();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (stream, newest) in pending {
        if own.contains(&stream) {
            out.push(stream);
            continue;
        }
        if !first || claimed(&stream) {
            continue;
        }
        seen.insert(stream.clone());
        let since = orphans.entry(stream.clone()).or_insert((newest, now));
        if since.0 != newest {
            *since = (newest, now);
        }
        if now.duration_since(since.1) >= ORPHAN_IDLE {
            out.push(stream);
        }
    }
    orphans.retain(|s, _| seen.contains(s));
    out
}

/// Sleeps for `d`, returning early (true) when shutting down.
async fn pause(shared: &Shared, d: Duration) -> bool {
    if shutting_down(shared) {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shared.wake.notified() => {}
    }
    shutting_down(shared)
}

/// Runs SQLite work on the runtime's blocking pool, handing the store there and back.
async fn blocking<T: Send + 'static>(
    store: &Arc<Mutex<EventStore>>,
    f: impl FnOnce(&mut EventStore) -> T + Send + 'static,
) -> T {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap()))
        .await
        .expect("SQLite work does not panic")
}

/// Callbacks to the element.
pub struct Reports {
    /// A fatal error (the outbox cannot be opened).
    pub on_error: Box<dyn Fn(String) + Send>,
    /// The first event parked in this run (later ones are only counted).
    pub on_parked: Box<dyn Fn(String) + Send>,
    /// The first key found holding another frame in NATS in this run.
    pub on_collision: Box<dyn Fn(String) + Send>,
}

async fn run(shared: Arc<Shared>, config: Config, reports: Reports) {
    let outbox = config.outbox.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let s = EventStore::open_for_writing(&outbox)?;
        s.relax_durability()?;
        Ok::<_, crate::eventlog::store::StoreError>(s)
    })
    .await;
    let store = match opened {
        Ok(Ok(s)) => Arc::new(Mutex::new(s)),
        Ok(Err(e)) => {
            (reports.on_error)(format!("NATS forwarder cannot open the outbox: {e}"));
            return;
        }
        Err(e) => {
            (reports.on_error)(format!("NATS forwarder cannot open the outbox: {e}"));
            return;
        }
    };
    // Until connected, keep the counts true and say why nothing moves.
    let connect = nats::shared_client(&config.urls, ACK_TIMEOUT);
    tokio::pin!(connect);
    let client = loop {
        tokio::select! {
            c = &mut connect => match c {
                Ok(c) => break c,
                Err(e) => {
                    (reports.on_error)(e);
                    return;
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                update_pending(&shared, &store).await;
                if let Some(why) = nats::probe(&config.urls).await {
                    note_error(&shared, why);
                }
                if shutting_down(&shared) {
                    return;
                }
            }
        }
    };
    forward(&shared, &config, store, client, reports).await;
    nats::release_client(&config.urls);
}

/// Reads the outbox's count of this element's pending events into the stats; returns it.
async fn update_pending(shared: &Arc<Shared>, store: &Arc<Mutex<EventStore>>) -> i64 {
    let own = own_streams(shared);
    let pending = blocking(store, move |s| s.pending_of(Some(&own))).await;
    let mut st = shared.state.lock().unwrap();
    match pending {
        Ok(n) => st.stats.pending = n,
        Err(e) => st.stats.last_error = Some(e.to_string()),
    }
    shared.changed.notify_all();
    st.stats.pending
}

/// What the forwarder knows of one subject.
#[derive(Default)]
struct Subject {
    /// The subject's last message (its highest key): `None` = not read since the last refusal.
    last: Option<Option<KeyOnSubject>>,
    /// Keys found on the subject by scans and by this forwarder's appends, with their frame.
    held: BTreeMap<i64, (Option<i64>, Option<i64>)>,
    /// `held` is complete for the keys from this one up to the message at this stream
    /// sequence.
    covered: Option<(i64, u64)>,
}

/// What happened to one stream's chunk.
#[derive(Default)]
struct Outcome {
    /// Outbox ids now in JetStream.
    acked: Vec<i64>,
    /// Outbox ids refused for good, with the reason.
    parked: Vec<(i64, String)>,
    /// Keys NATS holds with another frame: the outbox row id, and the frame the key holds.
    collided: Vec<(i64, Option<i64>)>,
    /// A transient failure ended the chunk early.
    failed: bool,
}

/// What a stream's chunks of one round left to report.
#[derive(Default)]
struct Settled {
    failed: bool,
    first_parked: Option<String>,
    first_collision: Option<i64>,
}

/// Records a chunk's outcome in the outbox (forwarded, collisions kept, dead letters parked) and
/// in the stats.
async fn settle(
    shared: &Shared,
    store: &Arc<Mutex<EventStore>>,
    name: &str,
    outcome: Outcome,
    settled: &mut Settled,
) {
    let Outcome {
        mut acked,
        parked,
        collided,
        failed,
        ..
    } = outcome;
    settled.failed |= failed;
    for (id, why) in &parked {
        gst::warning!(
            super::CAT,
            "stream '{name}': outbox event {id} parked as a dead letter: {why}"
        );
    }
    if settled.first_parked.is_none() {
        settled.first_parked = parked.first().map(|(_, why)| why.clone());
    }
    if settled.first_collision.is_none() {
        settled.first_collision = collided.first().map(|c| c.0);
    }
    if acked.is_empty() && parked.is_empty() && collided.is_empty() {
        return;
    }
    let (n_parked, n_collided) = (parked.len() as u64, collided.len() as u64);
    acked.extend(collided.iter().map(|c| c.0));
    let done = blocking(store, move |s| {
        for (id, stored_capture) in &collided {
            if let Some(ev) = s.outbox_event(*id)? {
                s.keep_collision(&ev, *stored_capture)?;
            }
        }
        s.mark_forwarded(&acked)?;
        for (id, why) in &parked {
            s.park(*id, why)?;
        }
        Ok::<(), crate::eventlog::store::StoreError>(())
    })
    .await;
    match done {
        Ok(()) => {
            let mut st = shared.state.lock().unwrap();
            st.stats.dead_letters += n_parked;
            st.stats.collisions += n_collided;
        }
        Err(e) => note_error(shared, e.to_string()),
    }
}

async fn forward(
    shared: &Arc<Shared>,
    config: &Config,
    store: Arc<Mutex<EventStore>>,
    client: async_nats::Client,
    reports: Reports,
) {
    let shared = shared.clone();
    let js = jetstream::new(client.clone());
    let replicas = match config.replicas {
        0 => {
            let known = client
                .server_info()
                .connect_urls
                .len()
                .max(config.urls.len());
            if known >= 3 { 3 } else { 1 }
        }
        n => n,
    };
    let mut failures = 0u32;
    let stream = loop {
        // A stream just created in a cluster takes a moment to elect its leader; publishes sent
        // before that are not acknowledged, so wait for it.
        let ready = match nats::ensure_stream(&js, &config.stream, replicas).await {
            Ok(mut s) => match s.info().await {
                Ok(info) if info.cluster.as_ref().is_none_or(|c| c.leader.is_some()) => Ok(s),
                Ok(_) => Err(format!("stream '{}' has no leader yet", config.stream)),
                Err(e) => Err(format!("cannot read stream '{}': {e}", config.stream)),
            },
            Err(e) => Err(e),
        };
        match ready {
            Ok(s) => break s,
            Err(e) => {
                let e = match nats::probe(&config.urls).await {
                    Some(why) => why,
                    None => e,
                };
                note_error(&shared, e);
                update_pending(&shared, &store).await;
                failures += 1;
                if pause(&shared, BACKOFF.delay(failures, backoff::random_unit())).await {
                    return;
                }
            }
        }
    };
    shared.state.lock().unwrap().stats.connected = true;
    let allows_batches = stream.cached_info().config.allow_atomic_publish;
    if !allows_batches {
        gst::info!(
            super::CAT,
            "stream '{}' does not allow atomic batches (allow_atomic): one event per publish round trip",
            config.stream
        );
    }

    // Per video stream: when it may be tried again after a failure, and how many failures in a
    // row it has had.
    let mut retry_at: HashMap<String, (Instant, u32)> = HashMap::new();
    let mut subjects: HashMap<String, Subject> = HashMap::new();
    let mut orphans: HashMap<String, (i64, Instant)> = HashMap::new();
    let (mut parked_reported, mut collision_reported) = (false, false);
    let mut batching;
    loop {
        if shutting_down(&shared) {
            return;
        }
        let generation = {
            let version = client.server_info().version;
            let msg_id = nats::msg_id_needed(&version) || config.msg_id == super::NatsMsgId::Always;
            shared.msg_id.store(msg_id, Ordering::Relaxed);
            batching = allows_batches
                && !msg_id
                && nats::takes_atomic_batches(&version)
                && !shared.batches_refused.load(Ordering::Relaxed);
            let mut st = shared.state.lock().unwrap();
            st.stats.msg_id = msg_id;
            st.nudged_generation
        };
        let pending = match blocking(&store, |s| s.pending_streams()).await {
            Ok(s) => s,
            Err(e) => {
                note_error(&shared, e.to_string());
                if pause(&shared, Duration::from_millis(200)).await {
                    return;
                }
                continue;
            }
        };
        let mine = mine(&shared, pending, &mut orphans);
        let now = Instant::now();
        let ready: Vec<String> = mine
            .iter()
            .filter(|s| retry_at.get(*s).is_none_or(|(at, _)| *at <= now))
            .cloned()
            .collect();
        let tasks = ready.into_iter().map(|name| {
            let (store, js, shared, stream) = (&store, &js, &shared, &stream);
            let mut subs: Vec<(String, Subject)> = [
                nats::subject(&name),
                local_subject(&name),
                late_subject(&name),
            ]
            .into_iter()
            .map(|s| {
                let v = subjects.remove(&s).unwrap_or_default();
                (s, v)
            })
            .collect();
            async move {
                // Chunk after chunk until the stream has nothing left (bounded, so streams that
                // appear meanwhile are picked up): no stream waits for the slowest one between
                // chunks. While a chunk is published, the one before is marked forwarded and
                // the one after is read (rows after the chunk's last), so the outbox's reads
                // and commits are not in the way of the publishes; a chunk that fails drops
                // the one read ahead, and the next round reads from the oldest again.
                let mut settled = Settled::default();
                let mut rows = read_chunk(shared, store, &name, 0).await;
                let mut previous: Option<Outcome> = None;
                for _ in 0..ROUND_CHUNKS {
                    let Some(chunk) = rows.take() else {
                        settled.failed = true;
                        break;
                    };
                    let full = chunk.len() == CHUNK;
                    let last_id = chunk.last().map_or(0, |r| r.id);
                    let before = previous.take();
                    let behind = async {
                        if let Some(o) = before {
                            settle(shared, store, &name, o, &mut settled).await;
                        }
                        if full {
                            Some(read_chunk(shared, store, &name, last_id).await)
                        } else {
                            None
                        }
                    };
                    let (outcome, ahead) = futures_util::join!(
                        publish_chunk(shared, js, stream, &name, &mut subs, chunk, batching),
                        behind
                    );
                    let more = !outcome.failed && full;
                    previous = Some(outcome);
                    if !more || shutting_down(shared) {
                        break;
                    }
                    match ahead {
                        Some(Some(next)) if next.is_empty() => break,
                        Some(next) => rows = next,
                        None => break,
                    }
                }
                if let Some(o) = previous {
                    settle(shared, store, &name, o, &mut settled).await;
                }
                (name, subs, settled)
            }
        });
        let results = futures_util::future::join_all(tasks).await;
        let mut any_failed = false;
        for (name, subs, settled) in results {
            subjects.extend(subs);
            if settled.failed {
                any_failed = true;
                let failures = retry_at.get(&name).map_or(1, |(_, n)| n + 1);
                let delay = BACKOFF.delay(failures, backoff::random_unit());
                gst::debug!(
                    super::CAT,
                    "stream '{name}': failure {failures} in a row, next try in {delay:?}"
                );
                retry_at.insert(name.clone(), (Instant::now() + delay, failures));
            } else {
                retry_at.remove(&name);
            }
            if let Some(why) = settled.first_parked
                && !parked_reported
            {
                parked_reported = true;
                (reports.on_parked)(why);
            }
            if let Some(id) = settled.first_collision
                && !collision_reported
            {
                collision_reported = true;
                (reports.on_collision)(format!(
                    "stream '{name}': a key NATS holds carries another frame (outbox row {id}): this frame was kept in the outbox's collisions table (videoai-events collisions lists it)"
                ));
            }
        }
        let pending = update_pending(&shared, &store).await;
        if pending == 0 {
            let mut st = shared.state.lock().unwrap();
            st.drained_generation = generation;
            shared.changed.notify_all();
        }
        let idle = mine.is_empty() || blocking(&store, |s| s.pending()).await.unwrap_or(0) == 0;
        if idle || any_failed || !retry_at.is_empty() {
            let wait = retry_at
                .values()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_millis(500))
                .clamp(Duration::from_millis(10), Duration::from_millis(500));
            if pause(&shared, wait).await {
                return;
            }
        }
    }
}

/// The subject of a stream's locally keyed events.
fn local_subject(stream: &str) -> String {
    format!("{}.local", nats::subject(stream))
}

/// The subject of a stream's events appended below its highest key (checked first).
fn late_subject(stream: &str) -> String {
    format!("{}.late", nats::subject(stream))
}

/// Whether a publish error is for good: retrying the same message can never succeed.
fn refused_for_good(e: &jetstream::context::PublishError) -> bool {
    use jetstream::context::PublishErrorKind;
    if e.kind() == PublishErrorKind::MaxPayloadExceeded {
        return true;
    }
    let code = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(|api| api.error_code());
    // 10054: message size exceeds the stream's maximum.
    if code.is_some_and(|c| c.0 == 10054) {
        return true;
    }
    let text = format!("{e:?}").to_lowercase();
    text.contains("permissions violation") || text.contains("maximum payload")
}

/// What became of one event.
enum Fate {
    Published,
    /// NATS holds the key with this frame already.
    AlreadyThere,
    /// NATS holds the key with another frame (its capture time).
    Collision(Option<i64>),
    Parked(String),
    Failed(String),
}

/// Whether `row` and a frame held under its key (capture time, PTS) are one frame.
fn same_frame(row: &OutboxRow, half_period_ns: i64, held: (Option<i64>, Option<i64>)) -> bool {
    let near = |a: i64, b: i64| (a as i128 - b as i128).abs() <= half_period_ns as i128;
    match (row.key_basis, held) {
        // Written before the headers existed: nothing to compare.
        (_, (None, None)) => true,
        (Some(KeyBasis::Position) | None, (_, Some(pts))) => {
            row.pts_ns.is_some_and(|p| near(p, pts))
        }
        (_, (Some(c), _)) => near(row.capture_ns, c),
        _ => true,
    }
}

/// Half the frame period of a row (how far apart two events under one key may be and still be
/// one frame): from the camera's clock stored with it, else 1/60 s.
fn half_period(row: &OutboxRow) -> i64 {
    row.period_ns.map_or(1_000_000_000 / 60, |p| p / 2)
}

/// The next [`CHUNK`] rows of stream `name` to forward, stored after row `after` (`None`, noted,
/// when the outbox cannot be read).
async fn read_chunk(
    shared: &Shared,
    store: &Arc<Mutex<EventStore>>,
    name: &str,
    after: i64,
) -> Option<Vec<OutboxRow>> {
    let n = name.to_string();
    match blocking(store, move |s| s.unforwarded(&n, after, CHUNK)).await {
        Ok(r) => Some(r),
        Err(e) => {
            note_error(shared, e.to_string());
            None
        }
    }
}

/// Publishes `rows` of stream `name` in order; stops at the first transient failure. With
/// `batching`, the rows from the first that can go to the main subject as they are go in one
/// atomic batch ([`batch_from_start`]); the others, or all of them when the batch is refused,
/// one at a time.
async fn publish_chunk(
    shared: &Shared,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    name: &str,
    subjects: &mut [(String, Subject)],
    rows: Vec<OutboxRow>,
    batching: bool,
) -> Outcome {
    let mut out = Outcome::default();
    if batching {
        match batch_from_start(shared, js, stream, &mut subjects[0], &rows).await {
            Ok(n) => out.acked.extend(rows[..n].iter().map(|r| r.id)),
            Err(e) => {
                note_error(shared, format!("stream '{name}': {e}"));
                out.failed = true;
                return out;
            }
        }
    }
    let batched = out.acked.len();
    for row in rows.into_iter().skip(batched) {
        if shutting_down(shared) {
            return out;
        }
        let fate = match &row.json {
            Err(why) => Fate::Parked(format!(
                "the outbox row ({}, {}) cannot be read: {why}",
                row.stream, row.seq
            )),
            Ok(json) => {
                let (main, rest) = subjects.split_first_mut().expect("three subjects");
                let (local, late) = rest.split_first_mut().expect("three subjects");
                let late = &mut late[0];
                if row.key_basis == Some(KeyBasis::Local) {
                    append(
                        shared,
                        js,
                        stream,
                        local,
                        Order::Increasing(None),
                        &row,
                        json,
                    )
                    .await
                } else {
                    let order = Order::Increasing(Some(late));
                    append(shared, js, stream, main, order, &row, json).await
                }
            }
        };
        match fate {
            Fate::Published => out.acked.push(row.id),
            Fate::AlreadyThere => {
                shared.state.lock().unwrap().stats.skipped += 1;
                out.acked.push(row.id);
            }
            Fate::Collision(held) => out.collided.push((row.id, held)),
            Fate::Parked(why) => out.parked.push((row.id, why)),
            Fate::Failed(e) => {
                note_error(
                    shared,
                    format!("publish of ({name}, {}) not acknowledged: {e}", row.seq),
                );
                // The server may have stored it anyway: read the subjects again first.
                for (_, s) in subjects.iter_mut() {
                    s.last = None;
                }
                out.failed = true;
                return out;
            }
        }
    }
    out
}

/// How many rows from the first of `rows` an atomic batch can take: readable, keyed by the
/// camera's clock or the file's position (the main subject), each key above the one before and
/// the first above `last`, the subject's last key.
fn batchable(rows: &[OutboxRow], last: Option<KeyOnSubject>) -> usize {
    let mut above = last.map(|l| l.seq);
    rows.iter()
        .take(MAX_BATCH)
        .take_while(|r| {
            let fits = r.json.is_ok()
                && r.key_basis != Some(KeyBasis::Local)
                && above.is_none_or(|a| r.seq > a);
            above = Some(r.seq);
            fits
        })
        .count()
}

/// Publishes the rows from the first of `rows` that [`batchable`] allows as one atomic batch
/// on the main subject (`subject`), the first expecting the subject's last message: JetStream
/// stores all of them or none, so the rule of [`append`] (keys above the last one only, the
/// view re-read when refused) holds for the batch as for one event, in one round trip instead
/// of one per event. Returns how many rows are now in JetStream: 0 when fewer than two could
/// go, or when the batch was refused or not acknowledged (the view is then read again and the
/// caller publishes the rows one at a time, which finds those the batch stored, if it did).
/// An error only when the subject's last message cannot be read.
async fn batch_from_start(
    shared: &Shared,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    subject: &mut (String, Subject),
    rows: &[OutboxRow],
) -> Result<usize, String> {
    let (name, view) = (&subject.0, &mut subject.1);
    let last = match view.last {
        Some(l) => l,
        None => {
            let l = nats::last_on_subject(stream, name).await?;
            view.last = Some(l);
            l
        }
    };
    let n = batchable(rows, last);
    if n < 2 {
        return Ok(0);
    }
    let batch = &rows[..n];
    let expected = last.map_or(0, |l| l.stream_seq);
    let sent = Instant::now();
    let id = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    // Bounded as a whole: the messages before the commit wait for room in the client's queue,
    // which is not drained while the connection is down.
    let limit = ACK_TIMEOUT + BATCH_TIME_PER_EVENT * n as u32;
    let sent_batch =
        match tokio::time::timeout(limit, send_batch(js, name, &id, batch, expected)).await {
            Ok(r) => r,
            Err(_) => Err(jetstream::context::PublishError::new(
                jetstream::context::PublishErrorKind::TimedOut,
            )),
        };
    let ack = match sent_batch {
        // A server that took the messages as a batch says so in the acknowledgement. Without
        // that, the stream's leader is a server older than 2.12 that stored each message as a
        // publish of its own, the ones after the first unchecked: no more batches in this
        // process, and the rows go one at a time, which finds those it stored.
        Ok(ack)
            if ack.batch_id.as_deref() != Some(id.as_str()) || ack.batch_size != Some(n as u64) =>
        {
            shared.batches_refused.store(true, Ordering::Relaxed);
            gst::warning!(
                super::CAT,
                "{name}: a batch of {n} events was acknowledged as a single publish (batch {:?}, count {:?}): the stream's leader takes no atomic batches; one event per publish from now on",
                ack.batch_id,
                ack.batch_size
            );
            view.last = None;
            shared.state.lock().unwrap().stats.batches_refused += 1;
            return Ok(0);
        }
        Ok(ack) => ack,
        Err(e) => {
            if nats::atomic_batches_refused_for_good(&e) {
                shared.batches_refused.store(true, Ordering::Relaxed);
                gst::info!(
                    super::CAT,
                    "{name}: atomic batch refused ({e}): one event per publish from now on"
                );
            } else {
                gst::debug!(
                    super::CAT,
                    "{name}: batch of {n} events not stored ({e}): one at a time"
                );
            }
            view.last = None;
            shared.state.lock().unwrap().stats.batches_refused += 1;
            return Ok(0);
        }
    };
    for r in batch {
        view.held.insert(r.seq, (Some(r.capture_ns), r.pts_ns));
    }
    let top = &batch[n - 1];
    view.last = Some(Some(KeyOnSubject {
        stream_seq: ack.sequence,
        seq: top.seq,
        capture_ns: Some(top.capture_ns),
        pts_ns: top.pts_ns,
    }));
    if let Some((lo, upto)) = view.covered
        && upto >= expected
    {
        view.covered = Some((lo, ack.sequence));
    }
    let mut st = shared.state.lock().unwrap();
    st.stats.forwarded += n as u64;
    st.stats.batches += 1;
    st.stats.ack_latency.record(sent.elapsed());
    Ok(n)
}

/// Sends `rows` to `subject` as one atomic batch (ADR-50: `Nats-Batch-Id`, `Nats-Batch-Sequence`
/// from 1, `Nats-Batch-Commit` on the last), the first with `Nats-Expected-Last-Subject-Sequence`
/// `expected`, and waits for the commit's acknowledgement. The messages before the commit go
/// without a reply subject (a refusal of one of them fails the commit), on the connection the
/// commit goes on, so in order.
async fn send_batch(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    rows: &[OutboxRow],
    expected: u64,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    use jetstream::context::{PublishError, PublishErrorKind};
    let client = js.client();
    let count = rows.len();
    for (i, row) in rows.iter().enumerate() {
        let json = row.json.as_deref().expect("batchable rows are readable");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_BATCH_ID, id);
        headers.insert(
            async_nats::header::NATS_BATCH_SEQUENCE,
            (i + 1).to_string().as_str(),
        );
        insert_key_headers(&mut headers, row, (i == 0).then_some(expected));
        let payload = bytes::Bytes::copy_from_slice(json.as_bytes());
        if i + 1 < count {
            client
                .publish_with_headers(subject.to_string(), headers, payload)
                .await
                .map_err(|e| PublishError::with_source(PublishErrorKind::Other, e))?;
        } else {
            headers.insert(async_nats::header::NATS_BATCH_COMMIT, "1");
            let ack = js
                .publish_with_headers(subject.to_string(), headers, payload)
                .await?;
            return match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                Ok(r) => r,
                Err(_) => Err(PublishError::new(PublishErrorKind::TimedOut)),
            };
        }
    }
    Err(PublishError::new(PublishErrorKind::Other))
}

/// Adds what every publish of an event carries: the subject's last message it expects
/// (`Nats-Expected-Last-Subject-Sequence`, when given: in a batch only its first message) and
/// the event's key and frame ([`nats::KEY_HEADER`]).
fn insert_key_headers(headers: &mut async_nats::HeaderMap, row: &OutboxRow, expected: Option<u64>) {
    if let Some(expected) = expected {
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
    }
    headers.insert(
        nats::KEY_HEADER,
        nats::key_header(row.seq, row.capture_ns, row.pts_ns).as_str(),
    );
}

/// How a subject's keys are kept.
enum Order<'a> {
    /// Increasing: a key above the last is appended at once; one at or below it that the subject
    /// does not hold goes to the late subject, when there is one.
    Increasing(Option<&'a mut (String, Subject)>),
    /// In no order (the late subject): every key is looked for before it is appended.
    Checked,
}

/// Appends `row` to `subject` (see the module's doc), unless the subject holds its key.
async fn append(
    shared: &Shared,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    subject: &mut (String, Subject),
    order: Order<'_>,
    row: &OutboxRow,
    json: &str,
) -> Fate {
    let half = half_period(row);
    let (mut refusals, mut busy) = (0, 0);
    let (sorted, mut late) = match order {
        Order::Increasing(late) => (true, late),
        Order::Checked => (false, None),
    };
    loop {
        let (name, view) = (&subject.0, &mut subject.1);
        let last = match view.last {
            Some(l) => l,
            None => match nats::last_on_subject(stream, name).await {
                Ok(l) => {
                    view.last = Some(l);
                    l
                }
                Err(e) => return Fate::Failed(e),
            },
        };
        if let Some(l) = last
            && (row.seq <= l.seq || !sorted)
        {
            match held_on(stream, name, view, l, row, sorted).await {
                Err(e) => return Fate::Failed(e),
                Ok(Some(frame)) if same_frame(row, half, frame) => return Fate::AlreadyThere,
                Ok(Some(frame)) => return Fate::Collision(frame.0),
                Ok(None) if sorted && row.seq <= l.seq => {
                    // Not held, below the highest key: to the late subject (or, without one,
                    // after the highest: the local keys' subject only ever grows).
                    if let Some(l) = late.take() {
                        return Box::pin(append(shared, js, stream, l, Order::Checked, row, json))
                            .await;
                    }
                }
                Ok(None) => {}
            }
        }
        let expected = last.map_or(0, |l| l.stream_seq);
        match publish(shared, js, name, row, json, expected).await {
            Ok(ack) if ack.duplicate => {
                // JetStream's own check caught a repeat of the key: compare the frames.
                view.last = None;
                refusals += 1;
            }
            Ok(ack) => {
                let key = KeyOnSubject {
                    stream_seq: ack.sequence,
                    seq: row.seq,
                    capture_ns: Some(row.capture_ns),
                    pts_ns: row.pts_ns,
                };
                view.held.insert(row.seq, (key.capture_ns, key.pts_ns));
                view.last = Some(Some(match last {
                    Some(l) if l.seq > row.seq => KeyOnSubject {
                        stream_seq: ack.sequence,
                        ..l
                    },
                    _ => key,
                }));
                // The cache covers this append only when it covered everything before it (the
                // message expected last); else messages in between were never scanned.
                if let Some((lo, upto)) = view.covered
                    && upto >= expected
                {
                    view.covered = Some((lo, ack.sequence));
                }
                return Fate::Published;
            }
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                // Another writer appended: read where the subject stands, decide again.
                gst::debug!(
                    super::CAT,
                    "{name}: ({}, {}) refused, the subject moved on",
                    row.stream,
                    row.seq
                );
                view.last = None;
                refusals += 1;
            }
            Err(e) if nats::subject_busy(&e) => {
                // Another publish of the subject is being applied (often this forwarder's own
                // previous one) or a new leader is not ready: the same publish again shortly.
                // The server says so before comparing sequences, so every tenth time the view
                // is read again (other writers may keep the subject busy).
                busy += 1;
                if busy >= MAX_BUSY || shutting_down(shared) {
                    return Fate::Failed(format!("{name}: {e} ({busy} times in a row)"));
                }
                if busy % 10 == 0 {
                    view.last = None;
                }
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            Err(e) if refused_for_good(&e) => {
                return Fate::Parked(format!(
                    "NATS refused event ({}, {}) of {} bytes for good: {e}",
                    row.stream,
                    row.seq,
                    json.len()
                ));
            }
            Err(e) => return Fate::Failed(e.to_string()),
        }
        if refusals >= MAX_REFUSALS {
            return Fate::Failed(format!(
                "{name}: refused {refusals} times in a row (other writers keep appending)"
            ));
        }
    }
}

/// Publishes one event, expecting `expected` as the subject's last message; waits for the
/// acknowledgement.
async fn publish(
    shared: &Shared,
    js: &jetstream::Context,
    subject: &str,
    row: &OutboxRow,
    json: &str,
    expected: u64,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    if shared.msg_id.load(Ordering::Relaxed) {
        headers.insert("Nats-Msg-Id", nats::msg_id(&row.stream, row.seq).as_str());
    }
    insert_key_headers(&mut headers, row, Some(expected));
    let sent = Instant::now();
    let ack = js
        .publish_with_headers(subject.to_string(), headers, json.to_string().into())
        .await?;
    let ack = match tokio::time::timeout(ACK_TIMEOUT, ack).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(jetstream::context::PublishError::new(
                jetstream::context::PublishErrorKind::TimedOut,
            ));
        }
    };
    let mut st = shared.state.lock().unwrap();
    if !ack.duplicate {
        st.stats.forwarded += 1;
    }
    st.stats.ack_latency.record(sent.elapsed());
    Ok(ack)
}

/// The frame `subject` holds under `row`'s key, if it holds it (`last` is the subject's last
/// message): from the view's cache, else by scanning the subject (headers only), a `sorted` one
/// from a minute before the key's capture time (a file's keys: from the start).
async fn held_on(
    stream: &jetstream::stream::Stream,
    subject: &str,
    view: &mut Subject,
    last: KeyOnSubject,
    row: &OutboxRow,
    sorted: bool,
) -> Result<Option<(Option<i64>, Option<i64>)>, String> {
    let k = row.seq;
    if k == last.seq {
        return Ok(Some((last.capture_ns, last.pts_ns)));
    }
    if let Some(f) = view.held.get(&k) {
        return Ok(Some(*f));
    }
    let from = match view.covered {
        // Known up to an earlier last message: read on from there.
        Some((lo, upto)) if k >= lo && upto < last.stream_seq => ScanFrom::Sequence(upto + 1),
        Some((lo, _)) if k >= lo => return Ok(None),
        _ if !sorted => ScanFrom::Start,
        _ => match row.key_basis {
            Some(KeyBasis::Position) | None => ScanFrom::Start,
            _ => ScanFrom::Time(row.capture_ns.saturating_sub(SCAN_MARGIN_NS)),
        },
    };
    let found = nats::keys_on_subject(stream, subject, from, last.stream_seq).await?;
    let lo = match (from, view.covered) {
        (ScanFrom::Sequence(_), Some((lo, _))) => lo,
        (ScanFrom::Start, _) => i64::MIN,
        // Nothing on the subject since the scan's start is newer than the key: the key, if
        // there, would have been found.
        _ => found.iter().map(|f| f.seq).min().map_or(k, |m| m.min(k)),
    };
    for f in &found {
        view.held.insert(f.seq, (f.capture_ns, f.pts_ns));
    }
    view.covered = Some((lo, last.stream_seq));
    // Bounded memory: keep the newest 100 000 keys.
    while view.held.len() > 100_000 {
        let first = *view.held.keys().next().expect("not empty");
        view.held.remove(&first);
        if let Some((lo, upto)) = view.covered {
            view.covered = Some((lo.max(first + 1), upto));
        }
    }
    Ok(view.held.get(&k).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, basis: KeyBasis, readable: bool) -> OutboxRow {
        OutboxRow {
            id: seq,
            stream: "cam".into(),
            seq,
            capture_ns: seq * 40_000_000,
            pts_ns: None,
            key_basis: Some(basis),
            period_ns: Some(40_000_000),
            json: if readable {
                Ok("{}".into())
            } else {
                Err("corrupt".into())
            },
            no_detections: true,
        }
    }

    fn last(seq: i64) -> Option<KeyOnSubject> {
        Some(KeyOnSubject {
            stream_seq: 7,
            seq,
            capture_ns: None,
            pts_ns: None,
        })
    }

    #[test]
    fn a_batch_takes_the_rows_above_the_last_key_up_to_the_first_that_cannot_go_as_it_is() {
        let cam = |s| row(s, KeyBasis::Camera, true);
        let rows: Vec<OutboxRow> = (10..20).map(cam).collect();
        assert_eq!(batchable(&rows, None), 10);
        assert_eq!(batchable(&rows, last(9)), 10);
        // The first at or below the subject's last key: one at a time (it is looked for).
        assert_eq!(batchable(&rows, last(10)), 0);
        assert_eq!(batchable(&rows, last(30)), 0);
        // A locally keyed row goes to its own subject; an unreadable one is parked; a key not
        // above the one before (a replay in the outbox) is looked for: the batch stops there.
        let mut mixed = vec![cam(1), cam(2), row(3, KeyBasis::Local, true), cam(4)];
        assert_eq!(batchable(&mixed, None), 2);
        mixed[2] = row(3, KeyBasis::Camera, false);
        assert_eq!(batchable(&mixed, None), 2);
        mixed[2] = cam(2);
        assert_eq!(batchable(&mixed, None), 2);
        let position: Vec<OutboxRow> = (0..3).map(|s| row(s, KeyBasis::Position, true)).collect();
        assert_eq!(batchable(&position, None), 3);
        // At most the servers' default batch size.
        let many: Vec<OutboxRow> = (0..1500).map(cam).collect();
        assert_eq!(batchable(&many, None), MAX_BATCH);
    }
}
