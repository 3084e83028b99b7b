// SPDX-License-Identifier: MPL-2.0
//! The NATS forwarder: drains the local outbox (events committed to SQLite but not yet
//! acknowledged by JetStream) into the JetStream stream. Every forwarder of the process is a task
//! on one shared runtime ([`nats::runtime`]) and shares one connection per server list.
//!
//! Per video stream strictly in outbox order, one publish in flight (streams in parallel, each
//! with its own backoff, so a stream that fails holds back no other). An event is marked
//! forwarded only when JetStream acknowledged it or already holds that exact key: an event
//! whose seq is above the last one on the stream's subject is published; one at or below it
//! (a replay, frames stored after a backward seek, an acknowledgement lost in a crash) is
//! checked against the seqs the subject holds (read once, headers only) and published only
//! when missing. Rows are marked "published" before they are sent (see
//! [`OutboxRow::published`]).
//!
//! What JetStream refuses for good (a message larger than the stream allows, a permission
//! violation) and rows that cannot be read are parked in the outbox's dead letters, counted
//! and reported once; transient failures (leader election, servers down) are retried with
//! exponential backoff and jitter for as long as the element runs; what is not acknowledged
//! stays in the outbox for the next run. `pending` is always the outbox's own count.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::eventlog::nats;
use crate::eventlog::store::{EventStore, OutboxRow};
use crate::util::backoff::{self, Backoff};
use crate::util::histogram::Histogram;

#[derive(Debug, Clone)]
pub struct Config {
    pub urls: Vec<String>,
    pub stream: String,
    /// 0 = 3 when three or more servers are known, else 1.
    pub replicas: usize,
    pub outbox: PathBuf,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub forwarded: u64,
    pub skipped: u64,
    /// Events of this element's streams that wait in the outbox.
    pub pending: i64,
    /// Events parked in the dead letters by this run.
    pub dead_letters: u64,
    pub retries: u64,
    pub connected: bool,
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
    state: Mutex<State>,
    changed: Condvar,
    wake: tokio::sync::Notify,
}

pub struct Forwarder {
    shared: Arc<Shared>,
    /// Signalled when the task has ended.
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// Rows of one stream read (and marked published) at a time.
const CHUNK: usize = 512;
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Retry delays after a failure (per stream, and for connecting): 50 ms doubling up to 2 s,
/// ±20 % so that streams and processes do not retry in lockstep.
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_secs(2),
    multiplier: 2.0,
    jitter: 0.2,
};

impl Forwarder {
    pub fn start(config: Config, reports: Reports) -> Forwarder {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake: tokio::sync::Notify::new(),
        });
        let s = shared.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        nats::runtime().spawn(async move {
            run(s, config, reports).await;
            let _ = tx.send(());
        });
        Forwarder {
            shared,
            done: Mutex::new(Some(rx)),
        }
    }

    /// The element writes events of `stream`: EOS waits for them.
    pub fn claim(&self, stream: &str) {
        let mut st = self.shared.state.lock().unwrap();
        if !st.own.contains(stream) {
            st.own.insert(stream.to_string());
        }
    }

    /// The streams this element writes.
    pub fn own(&self) -> Vec<String> {
        own_streams(&self.shared)
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
}

async fn run(shared: Arc<Shared>, config: Config, reports: Reports) {
    let outbox = config.outbox.clone();
    let store =
        match tokio::task::spawn_blocking(move || EventStore::open_for_writing(&outbox)).await {
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

/// What the forwarder knows of a video stream's subject.
#[derive(Default)]
struct Known {
    /// The highest seq on the subject: `None` = not asked yet, `Some(None)` = empty.
    max: Option<Option<i64>>,
    /// The seqs on the subject, read when an event at or below `max` is to be sent.
    held: Option<HashSet<i64>>,
}

/// What happened to one stream's chunk.
#[derive(Default)]
struct Outcome {
    /// Outbox ids now in JetStream.
    acked: Vec<i64>,
    /// Outbox ids refused for good, with the reason.
    parked: Vec<(i64, String)>,
    /// A transient failure ended the chunk early.
    failed: bool,
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

    // Per video stream: when it may be tried again after a failure, and how many failures in a
    // row it has had.
    let mut retry_at: HashMap<String, (Instant, u32)> = HashMap::new();
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut parked_reported = false;
    loop {
        if shutting_down(&shared) {
            return;
        }
        let generation = shared.state.lock().unwrap().nudged_generation;
        let streams = match blocking(&store, |s| s.pending_streams()).await {
            Ok(s) => s,
            Err(e) => {
                note_error(&shared, e.to_string());
                if pause(&shared, Duration::from_millis(200)).await {
                    return;
                }
                continue;
            }
        };
        let now = Instant::now();
        let ready: Vec<String> = streams
            .into_iter()
            .filter(|s| retry_at.get(s).is_none_or(|(at, _)| *at <= now))
            .collect();
        let tasks = ready.into_iter().map(|name| {
            let (store, js, shared, stream) = (&store, &js, &shared, &stream);
            let mut k = known.remove(&name).unwrap_or_default();
            async move {
                let outcome = forward_chunk(shared, store, js, stream, &name, &mut k).await;
                (name, k, outcome)
            }
        });
        let results = futures_util::future::join_all(tasks).await;
        let mut any_failed = false;
        for (name, k, outcome) in results {
            known.insert(name.clone(), k);
            if outcome.failed {
                any_failed = true;
                let failures = retry_at.get(&name).map_or(1, |(_, n)| n + 1);
                let delay = BACKOFF.delay(failures, backoff::random_unit());
                gst::debug!(
                    super::CAT,
                    "stream '{name}': failure {failures} in a row, next try in {delay:?}"
                );
                retry_at.insert(name, (Instant::now() + delay, failures));
            } else {
                retry_at.remove(&name);
            }
            let Outcome { acked, parked, .. } = outcome;
            let n_parked = parked.len() as u64;
            for (id, why) in &parked {
                gst::warning!(
                    super::CAT,
                    "outbox event {id} parked as a dead letter: {why}"
                );
            }
            if let Some((_, why)) = parked.first()
                && !parked_reported
            {
                parked_reported = true;
                (reports.on_parked)(why.clone());
            }
            let done = blocking(&store, move |s| {
                s.mark_forwarded(&acked)?;
                for (id, why) in &parked {
                    s.park(*id, why)?;
                }
                Ok::<(), crate::eventlog::store::StoreError>(())
            })
            .await;
            match done {
                Ok(()) => shared.state.lock().unwrap().stats.dead_letters += n_parked,
                Err(e) => note_error(&shared, e.to_string()),
            }
        }
        let pending = update_pending(&shared, &store).await;
        if pending == 0 {
            let mut st = shared.state.lock().unwrap();
            st.drained_generation = generation;
            shared.changed.notify_all();
        }
        let all = blocking(&store, |s| s.pending()).await.unwrap_or(0);
        if all == 0 || any_failed || !retry_at.is_empty() {
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

/// Publishes the next chunk of one video stream's pending events, in outbox order.
async fn forward_chunk(
    shared: &Shared,
    store: &Arc<Mutex<EventStore>>,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    name: &str,
    known: &mut Known,
) -> Outcome {
    let mut out = Outcome::default();
    let n = name.to_string();
    let rows: Vec<OutboxRow> = match blocking(store, move |s| s.unforwarded(&n, CHUNK)).await {
        Ok(r) => r,
        Err(e) => {
            note_error(shared, e.to_string());
            out.failed = true;
            return out;
        }
    };
    let subject = nats::subject(name);
    let fresh: Vec<i64> = rows.iter().filter(|r| !r.published).map(|r| r.id).collect();
    if !fresh.is_empty()
        && let Err(e) = blocking(store, move |s| s.mark_published(&fresh)).await
    {
        note_error(shared, e.to_string());
        out.failed = true;
        return out;
    }
    for row in &rows {
        if shutting_down(shared) {
            return out;
        }
        let ev = match &row.event {
            Ok(ev) => ev,
            Err(why) => {
                out.parked.push((
                    row.id,
                    format!(
                        "the outbox row ({}, {}) cannot be read: {why}",
                        row.stream, row.seq
                    ),
                ));
                continue;
            }
        };
        // Already in JetStream? Only an event at or below the subject's last seq can be.
        let max = match known.max {
            Some(m) => m,
            None => match nats::last_seq(stream, &subject).await {
                Ok(m) => {
                    known.max = Some(m);
                    m
                }
                Err(e) => {
                    note_error(shared, e);
                    out.failed = true;
                    return out;
                }
            },
        };
        if max.is_some_and(|m| ev.seq <= m) {
            if known.held.is_none() {
                match nats::held_seqs(stream, &subject).await {
                    Ok(h) => known.held = Some(h),
                    Err(e) => {
                        note_error(shared, e);
                        out.failed = true;
                        return out;
                    }
                }
            }
            if known.held.as_ref().is_some_and(|h| h.contains(&ev.seq)) {
                shared.state.lock().unwrap().stats.skipped += 1;
                out.acked.push(row.id);
                continue;
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", nats::msg_id(name, ev.seq).as_str());
        let payload = serde_json::to_vec(ev).unwrap_or_default();
        let size = payload.len();
        let sent = Instant::now();
        let result = match js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
        {
            Ok(ack) => match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                Ok(r) => r,
                Err(_) => Err(jetstream::context::PublishError::new(
                    jetstream::context::PublishErrorKind::TimedOut,
                )),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(ack) => {
                let mut st = shared.state.lock().unwrap();
                if ack.duplicate {
                    st.stats.skipped += 1;
                } else {
                    st.stats.forwarded += 1;
                }
                st.stats.ack_latency.record(sent.elapsed());
                drop(st);
                known.max = Some(Some(max.map_or(ev.seq, |m| m.max(ev.seq))));
                if let Some(h) = &mut known.held {
                    h.insert(ev.seq);
                }
                out.acked.push(row.id);
            }
            Err(e) if refused_for_good(&e) => {
                out.parked.push((
                    row.id,
                    format!(
                        "NATS refused event ({name}, {}) of {size} bytes for good: {e}",
                        ev.seq
                    ),
                ));
            }
            Err(e) => {
                note_error(
                    shared,
                    format!("publish of ({name}, {}) not acknowledged: {e}", ev.seq),
                );
                // The server may have stored it anyway: ask again before the next try.
                *known = Known::default();
                out.failed = true;
                return out;
            }
        }
    }
    out
}
