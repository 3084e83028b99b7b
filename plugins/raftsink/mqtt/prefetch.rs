// SPDX-License-Identifier: MPL-2.0
//! Reads of the log ahead of the session: rows of each stream after a position, read in chunks
//! on tokio's blocking pool with a reader of their own, while the delivery task publishes and
//! takes acknowledgements. Reading a chunk and building its events' JSON (detections checked)
//! takes about a millisecond; on the task's own thread, which also runs the connection, that
//! is a millisecond in which nothing reaches the broker.
//!
//! One read runs at a time; each stream keeps up to [`AHEAD`] rows read and not yet taken. A
//! stream read to its end is read again after [`Prefetch::wake`] (new events committed).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use crate::eventlog::store::{EventStore, OutboxRow};

/// Rows read at a time.
pub const CHUNK: usize = 256;
/// Rows of a stream read and not yet taken, at most (a read starts below it).
pub const AHEAD: usize = 2 * CHUNK;

#[derive(Default)]
struct Buffer {
    rows: VecDeque<OutboxRow>,
    /// The row the reads have reached.
    to: i64,
    /// The last read found nothing after `to` (or failed): not read again until a wake.
    exhausted: bool,
}

/// What a read brings back: the reader (None when it failed: opened again), the stream, the
/// row it read after, and the rows.
struct Read {
    store: Option<EventStore>,
    stream: String,
    after: i64,
    rows: Result<Vec<OutboxRow>, String>,
}

pub struct Prefetch {
    log: PathBuf,
    /// The reader, while no read holds it.
    store: Option<EventStore>,
    running: Option<tokio::task::JoinHandle<Read>>,
    streams: HashMap<String, Buffer>,
    /// Streams in the order they are read (round robin).
    order: Vec<String>,
    next: usize,
}

impl Prefetch {
    pub fn new(log: PathBuf) -> Self {
        Prefetch {
            log,
            store: None,
            running: None,
            streams: HashMap::new(),
            order: Vec::new(),
            next: 0,
        }
    }

    /// Reads `stream` from after row `after` (a stream already known keeps its position).
    pub fn add(&mut self, stream: &str, after: i64) {
        if !self.streams.contains_key(stream) {
            self.streams.insert(
                stream.to_string(),
                Buffer {
                    to: after,
                    ..Default::default()
                },
            );
            self.order.push(stream.to_string());
        }
    }

    /// New events were committed: streams read to their end are read again.
    pub fn wake(&mut self) {
        for b in self.streams.values_mut() {
            b.exhausted = false;
        }
    }

    /// Up to `n` rows of `stream` read and not taken yet, in row order.
    pub fn take(&mut self, stream: &str, n: usize) -> Vec<OutboxRow> {
        match self.streams.get_mut(stream) {
            Some(b) => {
                let n = n.min(b.rows.len());
                b.rows.drain(..n).collect()
            }
            None => Vec::new(),
        }
    }

    /// Gives back rows taken and not used: they are taken first next time.
    pub fn unread(&mut self, stream: &str, rows: impl DoubleEndedIterator<Item = OutboxRow>) {
        if let Some(b) = self.streams.get_mut(stream) {
            for r in rows.rev() {
                b.rows.push_front(r);
            }
        }
    }

    /// Starts the next read if none runs and a stream has room and may have more.
    pub fn fill(&mut self) {
        if self.running.is_some() || self.order.is_empty() {
            return;
        }
        let n = self.order.len();
        let Some(i) = (0..n).map(|k| (self.next + k) % n).find(|&i| {
            let b = &self.streams[&self.order[i]];
            !b.exhausted && b.rows.len() < AHEAD
        }) else {
            return;
        };
        self.next = (i + 1) % n;
        let stream = self.order[i].clone();
        let b = &self.streams[&stream];
        let (after, want) = (b.to, AHEAD - b.rows.len());
        let (store, log) = (self.store.take(), self.log.clone());
        self.running = Some(tokio::task::spawn_blocking(move || {
            let store = match store {
                Some(s) => Ok(s),
                None => EventStore::open_for_reading(&log).map_err(|e| e.to_string()),
            };
            match store {
                Ok(s) => {
                    let rows = s
                        .rows_after(&stream, after, want.min(CHUNK))
                        .map_err(|e| e.to_string());
                    Read {
                        store: Some(s),
                        stream,
                        after,
                        rows,
                    }
                }
                Err(e) => Read {
                    store: None,
                    stream,
                    after,
                    rows: Err(e),
                },
            }
        }));
    }

    /// Waits for the running read (forever when none runs: for `select!`) and keeps its rows;
    /// an error when the log could not be read (the stream is tried again after a wake).
    /// Cancel-safe: an unfinished read stays running.
    pub async fn done(&mut self) -> Result<(), String> {
        let Some(h) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let read = h.await;
        self.running = None;
        let read = read.map_err(|e| format!("a read of the log failed: {e}"))?;
        self.store = read.store;
        let Some(b) = self.streams.get_mut(&read.stream) else {
            return Ok(());
        };
        if b.to != read.after {
            return Ok(());
        }
        match read.rows {
            Ok(rows) if rows.is_empty() => {
                b.exhausted = true;
                Ok(())
            }
            Ok(rows) => {
                b.to = rows.last().map_or(b.to, |r| r.id);
                b.rows.extend(rows);
                Ok(())
            }
            Err(e) => {
                b.exhausted = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::store::EncodedEvent;

    fn event(stream: &str, seq: i64) -> EncodedEvent {
        EncodedEvent::for_test(stream, seq)
    }

    fn seqs(rows: &[OutboxRow]) -> Vec<i64> {
        rows.iter().map(|r| r.seq).collect()
    }

    /// Reads, hands out in order, takes back what was not used, stops at the end of a stream
    /// until woken, and reads streams in turn.
    #[test]
    fn reads_ahead_in_order_and_again_after_a_wake() {
        let dir = std::env::temp_dir().join(format!("videoai-prefetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("events.db");
        let mut store = EventStore::open_for_writing(&log).unwrap();
        let batch: Vec<EncodedEvent> = (0..600)
            .map(|i| event(if i % 2 == 0 { "a" } else { "b" }, i))
            .collect();
        store.insert_batch(&batch).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut p = Prefetch::new(log.clone());
            p.add("a", 0);
            p.add("b", 0);
            p.fill();
            p.done().await.unwrap();
            p.fill();
            p.done().await.unwrap();
            // Each stream read once (round robin), a chunk each.
            let a = p.take("a", 3);
            assert_eq!(seqs(&a), vec![0, 2, 4]);
            assert_eq!(seqs(&p.take("b", 2)), vec![1, 3]);
            p.unread("a", a.into_iter().skip(1));
            assert_eq!(seqs(&p.take("a", 2)), vec![2, 4]);
            // Read "a" to its end: 300 rows, then an empty read.
            let mut got = 3;
            for _ in 0..8 {
                p.fill();
                if p.running.is_none() {
                    break;
                }
                p.done().await.unwrap();
                got += p.take("a", usize::MAX).len();
            }
            assert_eq!(got, 300);
            assert!(p.streams["a"].exhausted);
            // New events: nothing until woken.
            store.insert_batch(&[event("a", 1000)]).unwrap();
            assert!(p.take("b", usize::MAX).len() <= AHEAD);
            p.streams.get_mut("b").unwrap().exhausted = true;
            p.fill();
            assert!(p.running.is_none(), "both streams wait for a wake");
            p.wake();
            while p.streams["a"].rows.is_empty() {
                p.fill();
                p.done().await.unwrap();
            }
            assert_eq!(seqs(&p.take("a", 5)), vec![1000]);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
