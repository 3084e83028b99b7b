// SPDX-License-Identifier: MPL-2.0
//! A delivery target's thread (MQTT, webhook) and what it shares with the element
//! ([`TargetThread`]): its statistics, and its [`Progress`]: the streams the element writes, the
//! marks written to the log (every event of a stream up to its mark acknowledged), and the stop
//! flag. EOS waits here until the marks reach the events the log holds. The thread is woken by
//! [`Progress::nudge`] (a condvar for blocking threads, a `Notify` for async ones).
//!
//! Locks: `Progress::state` and `Shared::stats`, never nested, never held across I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::eventlog::store::EventStore;

#[derive(Default)]
struct Inner {
    shutdown: bool,
    own: Vec<String>,
    marks: HashMap<String, i64>,
    nudges: u64,
    /// Bumped by every claim, nudge and mark: what waits can only have changed when it moved.
    changes: u64,
}

#[derive(Default)]
pub struct Progress {
    state: Mutex<Inner>,
    changed: Condvar,
    /// Woken with the condvar, for a thread that awaits.
    pub wake: tokio::sync::Notify,
}

impl Progress {
    /// The element writes `stream`; true when it is new.
    pub fn claim(&self, stream: &str) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.own.iter().any(|s| s == stream) {
            return false;
        }
        st.own.push(stream.to_string());
        st.changes += 1;
        drop(st);
        self.changed.notify_all();
        self.wake.notify_one();
        true
    }

    pub fn own(&self) -> Vec<String> {
        self.state.lock().unwrap().own.clone()
    }

    pub fn stop(&self) {
        self.state.lock().unwrap().shutdown = true;
        self.changed.notify_all();
        self.wake.notify_one();
    }

    pub fn stopping(&self) -> bool {
        self.state.lock().unwrap().shutdown
    }

    /// New events were committed.
    pub fn nudge(&self) {
        let mut st = self.state.lock().unwrap();
        st.nudges += 1;
        st.changes += 1;
        drop(st);
        self.changed.notify_all();
        self.wake.notify_one();
    }

    /// The streams, and a count that moves whenever what waits for the target may have changed.
    fn own_and_changes(&self) -> (Vec<String>, u64) {
        let st = self.state.lock().unwrap();
        (st.own.clone(), st.changes)
    }

    /// Waits at most `timeout` for a nudge (or a stop, or a new stream) after `seen`; returns
    /// the nudges so far.
    pub fn wait_nudge(&self, seen: u64, timeout: Duration) -> u64 {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |s| s.nudges == seen && !s.shutdown)
            .unwrap();
        st.nudges
    }

    /// Where a stream stood in the log when the target started on it.
    pub fn start_at(&self, stream: &str, mark: i64) {
        self.state
            .lock()
            .unwrap()
            .marks
            .entry(stream.to_string())
            .or_insert(mark);
    }

    /// Marks written to the log: they only go up.
    pub fn marked(&self, marks: &[(String, i64)]) {
        let mut st = self.state.lock().unwrap();
        for (s, id) in marks {
            let m = st.marks.entry(s.clone()).or_insert(0);
            *m = (*m).max(*id);
        }
        st.changes += 1;
        drop(st);
        self.changed.notify_all();
    }

    /// Waits until the marks reach every event of the element's streams that `log` holds now,
    /// at most `timeout`; `cancel` returning true (or a stop) ends the wait early. Whether they
    /// did.
    pub fn wait_delivered(&self, log: &Path, timeout: Duration, cancel: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let own = self.own();
        let Ok(store) = EventStore::open_for_reading(log) else {
            return own.is_empty();
        };
        let last: Vec<(String, i64)> = own
            .into_iter()
            .map(|s| {
                let id = store.last_id_of(&s).unwrap_or(0);
                (s, id)
            })
            .collect();
        drop(store);
        self.nudge();
        let mut st = self.state.lock().unwrap();
        loop {
            if last
                .iter()
                .all(|(s, id)| *id == 0 || st.marks.get(s).is_some_and(|m| m >= id))
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || cancel() || st.shutdown {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(50)))
                .unwrap()
                .0;
        }
    }
}

/// What a target's thread shares with the element.
#[derive(Default)]
pub struct Shared<St> {
    pub stats: Mutex<St>,
    pub progress: Progress,
}

/// How long a count of what waits is reused while events move (stats and Prometheus read it:
/// an application polling `stats` must not make the log count its rows at every read).
const WAITING_FRESH: Duration = Duration::from_millis(250);

/// The last count of what waits, and a reader of the log kept open for it.
#[derive(Default)]
struct Waiting {
    reader: Option<EventStore>,
    /// When it was counted, `Progress::changes` then, and the count.
    last: Option<(Instant, u64, i64)>,
}

/// A delivery target's thread: started by `spawn`, stopped (and joined) by `stop` or drop.
pub struct TargetThread<St> {
    shared: Arc<Shared<St>>,
    /// The log the target delivers from, and the target's key in its deliveries table.
    log: PathBuf,
    key: String,
    /// What to call the target in messages (a broker's address, a URL; never credentials).
    name: String,
    thread: Option<std::thread::JoinHandle<()>>,
    waiting: Mutex<Waiting>,
}

impl<St: Default + Clone + Send + 'static> TargetThread<St> {
    /// Runs `body` on a thread named `thread`; when it returns, the target counts as stopped.
    pub fn spawn(
        thread: &str,
        name: String,
        (log, key): (PathBuf, String),
        body: impl FnOnce(&Shared<St>) + Send + 'static,
    ) -> Self {
        let shared: Arc<Shared<St>> = Arc::new(Shared {
            stats: Mutex::new(St::default()),
            progress: Progress::default(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                body(&s);
                s.progress.stop();
            })
            .ok();
        TargetThread {
            shared,
            log,
            key,
            name,
            thread,
            waiting: Mutex::new(Waiting::default()),
        }
    }

    /// The element writes events of `stream`: they are delivered, and EOS waits for them.
    pub fn claim(&self, stream: &str) {
        self.shared.progress.claim(stream);
    }

    /// New events were committed to the log.
    pub fn nudge(&self) {
        self.shared.progress.nudge();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The element's events in the log the target has not acknowledged, counted in the log
    /// itself (right also while the target cannot be reached). The count is taken again when
    /// anything moved since (an event committed, a mark written), at most every
    /// [`WAITING_FRESH`] while events flow; the last count when the log cannot be read.
    pub fn waiting(&self) -> Option<i64> {
        self.count_waiting(false)
    }

    /// [`Self::waiting`], counted now (EOS, the final statistics).
    pub fn waiting_now(&self) -> Option<i64> {
        self.count_waiting(true)
    }

    fn count_waiting(&self, now: bool) -> Option<i64> {
        let (own, changes) = self.shared.progress.own_and_changes();
        let mut w = self.waiting.lock().unwrap();
        if let Some((at, seen, n)) = w.last
            && !now
            && (seen == changes || at.elapsed() < WAITING_FRESH)
        {
            return Some(n);
        }
        if w.reader.is_none() {
            w.reader = EventStore::open_for_reading(&self.log).ok();
        }
        let counted = w.reader.as_ref().map(|r| r.undelivered(&self.key, &own));
        match counted {
            Some(Ok(n)) => {
                w.last = Some((Instant::now(), changes, n));
                Some(n)
            }
            // A reader that failed is opened again next time.
            Some(Err(_)) | None => {
                w.reader = None;
                w.last.map(|(_, _, n)| n)
            }
        }
    }

    pub fn stats(&self) -> St {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Waits until the target acknowledged every event of the element's streams that the log
    /// holds now (marks written), at most `timeout`; `cancel` returning true stops the wait
    /// early. Whether everything was delivered.
    /// Counts what waits again either way: `stats` read after EOS, and its warning, say what
    /// the log holds then, not a count from before.
    pub fn wait_delivered(&self, timeout: Duration, cancel: impl Fn() -> bool) -> bool {
        let done = self
            .shared
            .progress
            .wait_delivered(&self.log, timeout, cancel);
        let _ = self.waiting_now();
        done
    }

    /// Stops the thread (it says goodbye to the target as it can) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.progress.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<St> Drop for TargetThread<St> {
    fn drop(&mut self) {
        self.shared.progress.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
