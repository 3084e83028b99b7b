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
//! Lock order: only `Shared::state`; the callback runs without it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::eventlog::store::{EncodedEvent, EventStore, StoreError};
use crate::util::histogram::Histogram;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub commit_interval: Duration,
    pub commit_max_events: usize,
    /// Events that may wait before `submit` blocks.
    pub capacity: usize,
}

/// What one commit made durable.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub events: usize,
    pub inserted: usize,
    /// Highest seq made durable per stream in this commit.
    pub streams: Vec<(String, i64)>,
}

/// Why a hand-over or a wait did not complete.
#[derive(Debug, Clone)]
pub enum WriteError {
    /// `set_flushing(true)` interrupted it (flush, state change).
    Flushing,
    Failed(StoreError),
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub written: u64,
    pub duplicates: u64,
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
    error: Option<StoreError>,
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
            let (events, arrived): (Vec<EncodedEvent>, Vec<Instant>) = st.queue.drain(..n).unzip();
            if st.queue.is_empty() {
                st.commit_now = false;
            }
            shared.progress.notify_all();
            drop(st);

            let res =
                Self::still_there(store, &callbacks).and_then(|()| store.insert_batch(&events));
            let mut streams: Vec<(String, i64)> = Vec::new();
            for e in &events {
                match streams.iter_mut().find(|s| s.0 == e.stream) {
                    Some(s) => s.1 = s.1.max(e.seq),
                    None => streams.push((e.stream.clone(), e.seq)),
                }
            }

            st = shared.state.lock().unwrap();
            match res {
                Ok(inserted) => {
                    gst::trace!(
                        super::CAT,
                        "committed {n} events ({inserted} new, {} already stored)",
                        n - inserted
                    );
                    st.durable += n as u64;
                    st.stats.written += inserted as u64;
                    st.stats.duplicates += (n - inserted) as u64;
                    st.stats.commits += 1;
                    if let Some(oldest) = arrived.first() {
                        st.stats.commit_latency.record(oldest.elapsed());
                    }
                    shared.progress.notify_all();
                    drop(st);
                    (callbacks.on_commit)(&Commit {
                        events: n,
                        inserted,
                        streams,
                    });
                    st = shared.state.lock().unwrap();
                }
                Err(e) => {
                    gst::error!(super::CAT, "commit of {n} events failed: {e}; writer stops");
                    st.error = Some(e);
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
            if let Some(e) = &st.error {
                return Err(WriteError::Failed(e.clone()));
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
            if let Some(e) = &st.error {
                return Err(WriteError::Failed(e.clone()));
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

    /// Commits what waits and ends the thread.
    pub fn stop(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        {
            let mut st = self.shared.state.lock().unwrap();
            st.shutdown = true;
            self.shared.work.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match self.shared.state.lock().unwrap().error.clone() {
            Some(e) => Err(e),
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
        EncodedEvent {
            stream: "cam".into(),
            seq,
            pts_ns: Some(seq),
            capture_ns: seq,
            model: String::new(),
            detections: "[]".into(),
        }
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
            },
            Callbacks {
                on_commit: Box::new(|_| {}),
                on_replaced: Box::new(|_| {}),
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
