// SPDX-License-Identifier: MPL-2.0
//! The local writer: a thread that owns the SQLite connection and commits events in groups.
//!
//! The streaming thread hands events over ([`Writer::submit`], blocking only when `capacity`
//! events wait); the writer commits when the oldest waiting event is `commit_interval` old or
//! `commit_max_events` wait, whichever comes first, so one fsync covers many events, or at once
//! when someone waits for durability ([`Writer::wait_durable`]: EOS). After each commit a
//! [`Commit`] report goes to the `on_commit` callback (durability messages, the NATS
//! forwarder).
//!
//! Before each commit the writer checks that the file at the log's path is still the one it has
//! open: a log deleted (or replaced) while being written is reopened at its path, and the
//! `on_replaced` callback says so; nothing is written into a deleted file.
//!
//! **A commit that fails for now** (another process holding the log's lock past SQLite's busy
//! timeout, the disk full for a moment) is tried again with backoff, the events staying at the
//! head of the queue, as long as the writer runs: the queue fills and `submit` blocks
//! (backpressure), nothing is dropped. `on_retrying` reports it (once per stretch). A
//! permanent error (read-only, not a database, a failing disk) stops the writer with an error
//! that says how many handed-over events were not stored. At `stop` transient failures are
//! retried for at most `stop_wait`.
//!
//! Lock order: only `Shared::state`; the callbacks run without it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::eventlog::store::{EncodedEvent, EventStore, StoreError};
use crate::util::backoff::{self, Backoff};
use crate::util::histogram::Histogram;

/// Delays between tries of a commit that failed for now: 50 ms doubling to 2 s, ±20 %.
const RETRY: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_secs(2),
    multiplier: 2.0,
    jitter: 0.2,
};

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub commit_interval: Duration,
    pub commit_max_events: usize,
    /// Events that may wait before `submit` blocks.
    pub capacity: usize,
    /// At `stop`: how long a commit that fails for now is still tried.
    pub stop_wait: Duration,
}

/// What one commit made durable.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub events: usize,
    pub inserted: usize,
    /// (stream, seq) of events whose key held another frame (kept aside).
    pub collisions: Vec<(String, i64)>,
    /// Highest seq made durable per stream in this commit.
    pub streams: Vec<(String, i64)>,
}

/// Why a hand-over or a wait did not complete.
#[derive(Debug, Clone)]
pub enum WriteError {
    /// `set_flushing(true)` interrupted it (flush, state change).
    Flushing,
    /// The writer stopped on a permanent error; `lost` events handed over were not stored.
    Failed { error: StoreError, lost: u64 },
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Flushing => write!(f, "flushing"),
            WriteError::Failed { error, lost } => write!(
                f,
                "{error}; {lost} events handed over to the writer were not stored"
            ),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub written: u64,
    pub duplicates: u64,
    pub collisions: u64,
    /// Commits tried again after failing for now (busy, locked, disk full).
    pub retries: u64,
    pub commits: u64,
    pub queued: u64,
    /// From hand-over to durable, per commit (its oldest event).
    pub commit_latency: Histogram,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(EncodedEvent, Instant)>,
    submitted: u64,
    durable: u64,
    /// Someone waits for durability: commit now, not at the end of the interval.
    commit_now: bool,
    flushing: bool,
    shutdown: bool,
    error: Option<(StoreError, u64)>,
    stats: Stats,
}

struct Shared {
    capacity: usize,
    max_events: usize,
    state: Mutex<State>,
    /// The writer waits for events.
    work: Condvar,
    /// Submitters wait for room, or for durability.
    progress: Condvar,
}

pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the writer reports besides commits.
pub struct Callbacks {
    pub on_commit: Box<dyn Fn(&Commit) + Send>,
    /// The log was deleted or replaced under the writer; it goes on in a new log at the same
    /// path (the argument says what happened).
    pub on_replaced: Box<dyn Fn(&str) + Send>,
    /// A commit failed for now and is tried again (said once per stretch of failures; the
    /// argument says why and how many events wait).
    pub on_retrying: Box<dyn Fn(&str) + Send>,
}

impl Writer {
    pub fn start(mut store: EventStore, config: Config, callbacks: Callbacks) -> Writer {
        let shared = Arc::new(Shared {
            capacity: config.capacity.max(1),
            max_events: config.commit_max_events.max(1),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("raftsink-writer".into())
            .spawn(move || Self::run(&s, &mut store, config, callbacks))
            .expect("a thread can be started");
        Writer {
            shared,
            thread: Some(thread),
        }
    }

    fn run(shared: &Shared, store: &mut EventStore, config: Config, callbacks: Callbacks) {
        let mut st = shared.state.lock().unwrap();
        // Commits failed for now in a row; when stopping, how long they are still tried.
        let mut failures = 0u32;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            while st.queue.is_empty() && !st.shutdown {
                st = shared.work.wait(st).unwrap();
            }
            if st.queue.is_empty() {
                return;
            }
            // Group commit: wait until the oldest event is due or the group is full.
            loop {
                let age = st.queue.front().map(|e| e.1.elapsed()).unwrap_or_default();
                if st.shutdown
                    || st.commit_now
                    || st.queue.len() >= config.commit_max_events
                    || age >= config.commit_interval
                {
                    break;
                }
                st = shared
                    .work
                    .wait_timeout(st, config.commit_interval - age)
                    .unwrap()
                    .0;
            }
            let n = st.queue.len().min(config.commit_max_events.max(1));
            // Taken from the queue only once committed: a failure leaves them at its head.
            let events: Vec<EncodedEvent> = st.queue.iter().take(n).map(|e| e.0.clone()).collect();
            let oldest = st.queue.front().map(|e| e.1);
            drop(st);

            let res =
                Self::still_there(store, &callbacks).and_then(|()| store.insert_batch(&events));
            st = shared.state.lock().unwrap();
            match res {
                Ok(done) => {
                    gst::trace!(
                        super::CAT,
                        "committed {n} events ({} new, {} already stored, {} collisions)",
                        done.new,
                        done.duplicates,
                        done.collisions.len()
                    );
                    if failures > 0 {
                        gst::info!(super::CAT, "commit succeeded after {failures} failed tries");
                    }
                    failures = 0;
                    st.queue.drain(..n);
                    if st.queue.is_empty() {
                        st.commit_now = false;
                    }
                    st.durable += n as u64;
                    st.stats.written += done.new as u64;
                    st.stats.duplicates += done.duplicates as u64;
                    st.stats.collisions += done.collisions.len() as u64;
                    st.stats.commits += 1;
                    if let Some(oldest) = oldest {
                        st.stats.commit_latency.record(oldest.elapsed());
                    }
                    shared.progress.notify_all();
                    drop(st);
                    let mut streams: Vec<(String, i64)> = Vec::new();
                    for e in &events {
                        match streams.iter_mut().find(|s| s.0 == e.stream) {
                            Some(s) => s.1 = s.1.max(e.seq),
                            None => streams.push((e.stream.clone(), e.seq)),
                        }
                    }
                    (callbacks.on_commit)(&Commit {
                        events: n,
                        inserted: done.new,
                        collisions: done.collisions,
                        streams,
                    });
                    st = shared.state.lock().unwrap();
                }
                Err(e)
                    if e.transient
                        && !(st.shutdown && stop_deadline.is_some_and(|d| Instant::now() >= d)) =>
                {
                    failures += 1;
                    st.stats.retries += 1;
                    if st.shutdown && stop_deadline.is_none() {
                        stop_deadline = Some(Instant::now() + config.stop_wait);
                    }
                    let waiting = st.queue.len();
                    let delay = RETRY.delay(failures, backoff::random_unit());
                    gst::debug!(
                        super::CAT,
                        "commit of {n} events failed for now ({e}); try {failures}, again in {delay:?}"
                    );
                    if failures == 1 {
                        drop(st);
                        (callbacks.on_retrying)(&format!(
                            "{e}; the commit is tried again with backoff, {waiting} events wait (none is dropped)"
                        ));
                        st = shared.state.lock().unwrap();
                    }
                    // Woken early only to stop.
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !(st.shutdown && stop_deadline.is_none()) {
                        let left = until.saturating_duration_since(Instant::now());
                        st = shared.work.wait_timeout(st, left).unwrap().0;
                    }
                }
                Err(e) => {
                    let lost = st.queue.len() as u64;
                    gst::error!(
                        super::CAT,
                        "commit of {n} events failed: {e}; writer stops, {lost} events not stored"
                    );
                    st.error = Some((e, lost));
                    st.queue.clear();
                    shared.progress.notify_all();
                    return;
                }
            }
        }
    }

    /// Reopens the log at its path when the file there is no longer the one open.
    fn still_there(store: &mut EventStore, callbacks: &Callbacks) -> Result<(), StoreError> {
        if store.still_at_its_path() {
            return Ok(());
        }
        let path = store.path().to_path_buf();
        *store = EventStore::open_for_writing(&path)?;
        (callbacks.on_replaced)(&format!(
            "the event log '{}' was deleted or replaced while raftsink was writing it: the events committed before are in the old file; writing on in a new log at the same path",
            path.display()
        ));
        Ok(())
    }

    /// Hands one event over; blocks while `capacity` events wait.
    pub fn submit(&self, ev: EncodedEvent) -> Result<(), WriteError> {
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if let Some((error, lost)) = &st.error {
                return Err(WriteError::Failed {
                    error: error.clone(),
                    lost: *lost,
                });
            }
            if st.flushing {
                return Err(WriteError::Flushing);
            }
            if st.queue.len() < self.shared.capacity {
                break;
            }
            st = self.shared.progress.wait(st).unwrap();
        }
        st.queue.push_back((ev, Instant::now()));
        st.submitted += 1;
        // Wake the writer only when it has something new to decide: the first event of a group
        // (it waits for work) or a full group (commit now); otherwise its timer is right.
        let n = st.queue.len();
        if n == 1 || n == self.shared.max_events {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Hands one event over while the element stops: past `set_flushing` and the capacity (the
    /// last frames of a stop are few and must not be lost). Dropped only when the writer
    /// already stopped on an error.
    pub fn submit_at_stop(&self, ev: EncodedEvent) {
        let mut st = self.shared.state.lock().unwrap();
        if st.error.is_some() {
            return;
        }
        st.queue.push_back((ev, Instant::now()));
        st.submitted += 1;
        self.shared.work.notify_one();
    }

    /// Waits until everything submitted so far is committed, at most `timeout`. Returns false
    /// on timeout.
    pub fn wait_durable(&self, timeout: Duration) -> Result<bool, WriteError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        let target = st.submitted;
        // Do not wait for the interval: commit what is there now.
        if st.durable < target {
            st.commit_now = true;
            self.shared.work.notify_one();
        }
        loop {
            if let Some((error, lost)) = &st.error {
                return Err(WriteError::Failed {
                    error: error.clone(),
                    lost: *lost,
                });
            }
            if st.durable >= target {
                return Ok(true);
            }
            if st.flushing {
                return Err(WriteError::Flushing);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            st = self.shared.progress.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Interrupts (`true`) or re-allows (`false`) blocking calls: BaseSink unlock/unlock_stop.
    pub fn set_flushing(&self, flushing: bool) {
        let mut st = self.shared.state.lock().unwrap();
        st.flushing = flushing;
        self.shared.progress.notify_all();
    }

    pub fn stats(&self) -> Stats {
        let st = self.shared.state.lock().unwrap();
        let mut s = st.stats.clone();
        s.queued = st.queue.len() as u64;
        s
    }

    /// Commits what waits (a commit failing for now is tried for at most `stop_wait`) and ends
    /// the thread.
    pub fn stop(mut self) -> Result<(), WriteError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WriteError> {
        {
            let mut st = self.shared.state.lock().unwrap();
            st.shutdown = true;
            self.shared.work.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let st = self.shared.state.lock().unwrap();
        match &st.error {
            Some((error, lost)) => Err(WriteError::Failed {
                error: error.clone(),
                lost: *lost,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64) -> EncodedEvent {
        EncodedEvent::for_test("cam", seq)
    }

    #[test]
    fn waiting_for_durability_commits_now() {
        let dir = std::env::temp_dir().join(format!("videoai-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = EventStore::open_for_writing(&dir.join("events.db")).unwrap();
        // A long commit interval: only "commit now" makes the event durable soon.
        let writer = Writer::start(
            store,
            Config {
                commit_interval: Duration::from_secs(20),
                commit_max_events: 1000,
                capacity: 100,
                stop_wait: Duration::from_secs(1),
            },
            Callbacks {
                on_commit: Box::new(|_| {}),
                on_replaced: Box::new(|_| {}),
                on_retrying: Box::new(|_| {}),
            },
        );
        writer.submit(event(1)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        assert!(matches!(
            writer.wait_durable(Duration::from_secs(5)),
            Ok(true)
        ));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(writer.stats().commits, 1);
        writer.stop().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
