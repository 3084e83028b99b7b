// SPDX-License-Identifier: MPL-2.0
//! The delivery window: which stored events are on their way to the broker, and how far each
//! stream is acknowledged. An event may take several messages (the event, its crossings, zone
//! events and counts); it is acknowledged when all of them are, and a stream's mark moves over
//! the acknowledged prefix only, so a mark in the log never passes an event the broker lacks.
//!
//! The client reports each publish it sends with its packet id, in the order they were asked
//! for ([`Window::sent`]), and each acknowledgement by packet id ([`Window::acked`]). Pure, no
//! I/O: the task in [`super`] drives it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// What a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A message of the event stored in row `id` of `stream`.
    Row { stream: Arc<str>, id: i64 },
    /// A status message (`online`, `offline`).
    Status,
}

#[derive(Debug)]
struct Row {
    id: i64,
    remaining: u32,
    asked: Instant,
}

/// An event all of whose messages the broker acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub stream: Arc<str>,
    pub id: i64,
    pub asked: Instant,
}

#[derive(Debug, Default)]
pub struct Window {
    /// Per stream, its events on their way, in row order.
    rows: HashMap<Arc<str>, VecDeque<Row>>,
    /// Messages asked for whose packet id the client has not reported yet, in order.
    asked: VecDeque<Owner>,
    /// Sent and not yet acknowledged, by packet id (the client numbers them from 1 up to its
    /// in-flight limit: a short vector, no hashing on the hot path).
    inflight: Vec<Option<Owner>>,
    messages: usize,
}

impl Window {
    /// Messages asked for and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Row `id` of `stream` goes out as `messages` messages (asked for with [`Self::ask`] right
    /// after). With none (a frame left out), it is done at once when nothing before it waits.
    /// Returns the events done by it.
    pub fn add_row(
        &mut self,
        stream: &Arc<str>,
        id: i64,
        messages: u32,
        now: Instant,
    ) -> Vec<Done> {
        let q = self.rows.entry(stream.clone()).or_default();
        q.push_back(Row {
            id,
            remaining: messages,
            asked: now,
        });
        self.advance(stream)
    }

    /// A message was asked of the client.
    pub fn ask(&mut self, owner: Owner) {
        self.asked.push_back(owner);
        self.messages += 1;
    }

    /// The client sent the next message asked for with packet id `pkid` (0: QoS 0, no
    /// acknowledgement comes: done now).
    pub fn sent(&mut self, pkid: u16) -> Vec<Done> {
        let Some(owner) = self.asked.pop_front() else {
            return Vec::new();
        };
        if pkid == 0 {
            return self.finish(owner);
        }
        let i = pkid as usize;
        if self.inflight.len() <= i {
            self.inflight.resize(i + 1, None);
        }
        // The client reuses an id only after its acknowledgement: not expected. Keep count
        // right (the old message stays unacknowledged, so its row's mark holds).
        if self.inflight[i].is_none() {
            self.inflight[i] = Some(owner);
        }
        Vec::new()
    }

    /// What packet `pkid` (sent, not yet acknowledged) belongs to.
    pub fn owner(&self, pkid: u16) -> Option<Owner> {
        self.inflight.get(pkid as usize).cloned().flatten()
    }

    /// The broker acknowledged packet `pkid` (PUBACK for QoS 1, PUBCOMP for QoS 2).
    pub fn acked(&mut self, pkid: u16) -> Vec<Done> {
        match self.inflight.get_mut(pkid as usize).and_then(Option::take) {
            Some(owner) => self.finish(owner),
            None => Vec::new(),
        }
    }

    fn finish(&mut self, owner: Owner) -> Vec<Done> {
        self.messages = self.messages.saturating_sub(1);
        match owner {
            Owner::Status => Vec::new(),
            Owner::Row { stream, id } => {
                if let Some(r) = self
                    .rows
                    .get_mut(&stream)
                    .and_then(|q| q.iter_mut().find(|r| r.id == id))
                {
                    r.remaining = r.remaining.saturating_sub(1);
                }
                self.advance(&stream)
            }
        }
    }

    /// Pops the stream's acknowledged prefix.
    fn advance(&mut self, stream: &Arc<str>) -> Vec<Done> {
        let mut done = Vec::new();
        if let Some(q) = self.rows.get_mut(stream) {
            while q.front().is_some_and(|r| r.remaining == 0) {
                let r = q.pop_front().unwrap();
                done.push(Done {
                    stream: stream.clone(),
                    id: r.id,
                    asked: r.asked,
                });
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(s: &str, id: i64) -> Owner {
        Owner::Row {
            stream: s.into(),
            id,
        }
    }

    fn name(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn a_mark_moves_only_over_acknowledged_events() {
        let now = Instant::now();
        let mut w = Window::default();
        // Row 1: two messages; row 2: one; row 3: none (left out).
        assert!(w.add_row(&name("a"), 1, 2, now).is_empty());
        w.ask(row("a", 1));
        w.ask(row("a", 1));
        assert!(w.add_row(&name("a"), 2, 1, now).is_empty());
        w.ask(row("a", 2));
        assert!(
            w.add_row(&name("a"), 3, 0, now).is_empty(),
            "waits behind 1 and 2"
        );
        w.ask(Owner::Status);
        for (i, p) in [10, 11, 12, 13].into_iter().enumerate() {
            assert!(w.sent(p).is_empty(), "{i}");
        }
        assert_eq!(w.len(), 4);
        assert!(w.acked(12).is_empty(), "row 2 done, row 1 not");
        assert!(w.acked(13).is_empty(), "status");
        assert!(w.acked(10).is_empty());
        let done: Vec<i64> = w.acked(11).into_iter().map(|d| d.id).collect();
        assert_eq!(done, vec![1, 2, 3]);
        assert!(w.is_empty());
        assert!(w.acked(11).is_empty(), "a repeated ack changes nothing");
    }

    #[test]
    fn streams_move_apart_and_qos0_is_done_when_sent() {
        let now = Instant::now();
        let mut w = Window::default();
        w.add_row(&name("a"), 1, 1, now);
        w.ask(row("a", 1));
        w.add_row(&name("b"), 2, 1, now);
        w.ask(row("b", 2));
        w.sent(1);
        let done = w.sent(0);
        assert_eq!(done.len(), 1);
        assert_eq!(&*done[0].stream, "b");
        assert_eq!(&*w.acked(1)[0].stream, "a");
    }
}
