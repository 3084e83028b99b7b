// SPDX-License-Identifier: MPL-2.0
//! The NATS forwarder: drains the local outbox (events committed to SQLite but not yet
//! acknowledged by JetStream) into the JetStream stream. Every forwarder of the process is a task
//! on one shared runtime ([`nats_log::runtime`]) and shares one connection per server list.
//!
//! Per video stream strictly in order, one publish in flight (streams in parallel). Before a
//! stream's first publish, and after any failure, the stream's high-water mark (last seq on its
//! subject) is read from the server and everything at or below it is skipped: exactly once even
//! past JetStream's duplicate window. Failures (leader election, servers down) are retried with
//! exponential backoff and jitter, for as long as the element runs; what is not acknowledged
//! stays in the outbox for the next run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::event::FrameEvent;
use crate::event_store::EventStore;
use crate::histogram::Histogram;
use crate::nats_log;

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
    pub pending: i64,
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
    /// Set once the outbox was seen empty after the last nudge.
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

const BATCH: usize = 4096;
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A little randomness for backoff jitter, without a dependency.
fn jitter(d: Duration) -> Duration {
    let nanos = Instant::now().elapsed().subsec_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    let frac = (nanos.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as f64 / (1u64 << 24) as f64;
    d.mul_f64(0.8 + 0.4 * frac)
}

impl Forwarder {
    pub fn start(config: Config, on_error: Box<dyn Fn(String) + Send>) -> Forwarder {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake: tokio::sync::Notify::new(),
        });
        let s = shared.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        nats_log::runtime().spawn(async move {
            run(s, config, on_error).await;
            let _ = tx.send(());
        });
        Forwarder {
            shared,
            done: Mutex::new(Some(rx)),
        }
    }

    /// New events were committed to the outbox.
    pub fn nudge(&self) {
        self.shared.state.lock().unwrap().nudged_generation += 1;
        self.shared.wake.notify_one();
    }

    /// Waits until the outbox is empty (everything acknowledged), at most `timeout`; `cancel`
    /// returning true stops the wait early. Returns whether it drained.
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
    let mut st = shared.state.lock().unwrap();
    st.stats.retries += 1;
    st.stats.last_error = Some(msg);
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
    store: EventStore,
    f: impl FnOnce(&mut EventStore) -> T + Send + 'static,
) -> (EventStore, T) {
    tokio::task::spawn_blocking(move || {
        let mut store = store;
        let out = f(&mut store);
        (store, out)
    })
    .await
    .expect("SQLite work does not panic")
}

async fn run(shared: Arc<Shared>, config: Config, on_error: Box<dyn Fn(String) + Send>) {
    let outbox = config.outbox.clone();
    let store =
        match tokio::task::spawn_blocking(move || EventStore::open_for_writing(&outbox)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                on_error(format!("NATS forwarder cannot open the outbox: {e}"));
                return;
            }
            Err(e) => {
                on_error(format!("NATS forwarder cannot open the outbox: {e}"));
                return;
            }
        };
    let client = tokio::select! {
        c = nats_log::shared_client(&config.urls, ACK_TIMEOUT) => match c {
            Ok(c) => c,
            Err(e) => {
                on_error(e);
                return;
            }
        },
        _ = async { while !pause(&shared, Duration::from_millis(200)).await {} } => return,
    };
    forward(&shared, &config, store, client).await;
    nats_log::release_client(&config.urls);
}

async fn forward(
    shared: &Arc<Shared>,
    config: &Config,
    mut store: EventStore,
    client: async_nats::Client,
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
    let mut backoff = BACKOFF_MIN;
    let stream = loop {
        // A stream just created in a cluster takes a moment to elect its leader; publishes sent
        // before that are not acknowledged, so wait for it.
        let ready = match nats_log::ensure_stream(&js, &config.stream, replicas).await {
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
                note_error(&shared, e);
                if pause(&shared, jitter(backoff)).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    };
    shared.state.lock().unwrap().stats.connected = true;

    // Per video stream: the high-water mark known from the server (absent: read it first;
    // None: nothing stored yet).
    let mut hwm: HashMap<String, Option<i64>> = HashMap::new();
    loop {
        if shutting_down(&shared) {
            return;
        }
        let generation = shared.state.lock().unwrap().nudged_generation;
        let (s, batch) = blocking(store, |s| s.unforwarded(BATCH)).await;
        store = s;
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                note_error(&shared, e.to_string());
                if pause(&shared, Duration::from_millis(200)).await {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            {
                let mut st = shared.state.lock().unwrap();
                st.stats.pending = 0;
                st.drained_generation = generation;
                shared.changed.notify_all();
            }
            if pause(&shared, Duration::from_millis(500)).await {
                return;
            }
            continue;
        }
        // Group by video stream, in seq order.
        let mut per_stream: BTreeMap<String, Vec<(i64, FrameEvent)>> = BTreeMap::new();
        for (id, ev) in batch {
            per_stream
                .entry(ev.stream.clone())
                .or_default()
                .push((id, ev));
        }
        let tasks = per_stream.into_iter().map(|(name, mut events)| {
            events.sort_by_key(|(_, e)| e.seq);
            let mut mark = hwm.get(&name).copied();
            let (stream, js, shared) = (&stream, &js, &shared);
            async move {
                let done = forward_stream(shared, js, stream, &name, &events, &mut mark).await;
                (name, mark, done)
            }
        });
        let results = futures_util::future::join_all(tasks).await;
        let mut acked = Vec::new();
        for (name, mark, done) in results {
            match mark {
                Some(m) => hwm.insert(name, m),
                None => hwm.remove(&name),
            };
            acked.extend(done);
        }
        let (s, (marked, pending)) = blocking(store, move |s| {
            let marked = if acked.is_empty() {
                Ok(())
            } else {
                s.mark_forwarded(&acked)
            };
            (marked, s.pending().unwrap_or(-1))
        })
        .await;
        store = s;
        if let Err(e) = marked {
            note_error(&shared, e.to_string());
        }
        let mut st = shared.state.lock().unwrap();
        st.stats.pending = pending;
        shared.changed.notify_all();
    }
}

/// Publishes `events` (one video stream, ascending seq) in order, one at a time. `mark` is the
/// stream's high-water mark: `None` = unknown (read from the server first), `Some(None)` = no
/// event stored yet. Returns the outbox ids that are now in JetStream (published or found there).
async fn forward_stream(
    shared: &Shared,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    name: &str,
    events: &[(i64, FrameEvent)],
    mark: &mut Option<Option<i64>>,
) -> Vec<i64> {
    let subject = nats_log::subject(name);
    let mut done = Vec::with_capacity(events.len());
    for (id, ev) in events {
        let mut backoff = BACKOFF_MIN;
        loop {
            if shutting_down(shared) {
                return done;
            }
            let known = match *mark {
                Some(m) => m,
                None => match nats_log::last_seq(stream, &subject).await {
                    Ok(m) => {
                        *mark = Some(m);
                        m
                    }
                    Err(e) => {
                        note_error(shared, e);
                        if pause(shared, jitter(backoff)).await {
                            return done;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            if known.is_some_and(|m| ev.seq <= m) {
                shared.state.lock().unwrap().stats.skipped += 1;
                done.push(*id);
                break;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", nats_log::msg_id(name, ev.seq).as_str());
            let payload = serde_json::to_vec(ev).unwrap_or_default();
            let sent = Instant::now();
            let result = match js
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
            {
                Ok(ack) => match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!(
                        "publish of {}:{} not acknowledged: {e}",
                        name, ev.seq
                    )),
                    Err(_) => Err(format!(
                        "publish of {}:{} not acknowledged within {ACK_TIMEOUT:?}",
                        name, ev.seq
                    )),
                },
                Err(e) => Err(format!("publish of {}:{} failed: {e}", name, ev.seq)),
            };
            match result {
                Ok(()) => {
                    *mark = Some(Some(ev.seq));
                    let mut st = shared.state.lock().unwrap();
                    st.stats.forwarded += 1;
                    st.stats.ack_latency.record(sent.elapsed());
                    drop(st);
                    done.push(*id);
                    break;
                }
                Err(e) => {
                    // The server may have stored it anyway: read the mark again before retrying.
                    *mark = None;
                    note_error(shared, e);
                    if pause(shared, jitter(backoff)).await {
                        return done;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
    done
}
