// SPDX-License-Identifier: MPL-2.0
//! The queued items of `adaptivequeue` and the drop rules that act on them.
//!
//! A `VecDeque` (a growable ring buffer whose slots are reused) behind the element's one mutex.
//! Buffers carry their running time (computed with the segment in force when they came in),
//! their duration and whether they are a keyframe (no `DELTA_UNIT` flag).
//!
//! *Level* = running time from the oldest queued buffer to the end of the newest one; where
//! timestamps are missing, the sum of the queued buffers' durations.
//!
//! Drop rules (events and queries are never dropped, and keep their place):
//! * raw video, [`Store::thin_oldest`]: frames older than the low watermark are thinned to every
//!   k-th frame, so the gap is spread out instead of one jump;
//! * encoded video, [`Store::drop_gop_tails`] and [`Store::expire_head`]: only whole GOP tails
//!   go: from a dropped delta unit up to the next keyframe; a keyframe only when a later
//!   keyframe is queued.
//!
//! The buffer after a gap gets `DISCONT` when it is pushed.

use std::collections::VecDeque;

/// A serialized query waiting in the queue; the thread that queued it blocks until it is
/// answered, so the pointer stays valid for as long as the item exists.
pub struct PendingQuery {
    pub ptr: *mut gst::ffi::GstQuery,
    pub id: u64,
}

// SAFETY: the query is owned by the blocked sink-pad thread for as long as the item exists, and
// only the source-pad task touches it meanwhile.
unsafe impl Send for PendingQuery {}

pub struct Queued {
    pub buffer: gst::Buffer,
    /// Running time of the buffer's start, ns.
    pub rt: Option<u64>,
    pub duration: Option<u64>,
    pub key: bool,
    /// Set `DISCONT` when pushing: buffers before it were dropped.
    pub discont: bool,
    /// Survived a thinning pass: not thinned again.
    pub thinned: bool,
}

pub enum Item {
    Buffer(Queued),
    Event(gst::Event),
    Query(PendingQuery),
}

#[derive(Default)]
pub struct Store {
    items: VecDeque<Item>,
    buffers: usize,
    duration_sum: u64,
    /// Running-time end of the newest buffer queued since the last flush.
    newest_end: Option<u64>,
    /// The next buffer queued gets `DISCONT` (buffers were dropped at the tail).
    pending_discont: bool,
    /// Position in the keep-every-k-th cycle, carried from one thinning pass to the next.
    thin_phase: usize,
}

impl Store {
    pub fn with_capacity(n: usize) -> Self {
        Store {
            items: VecDeque::with_capacity(n),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn buffers(&self) -> usize {
        self.buffers
    }

    pub fn push_buffer(&mut self, mut b: Queued) {
        if let Some(rt) = b.rt {
            let end = rt + b.duration.unwrap_or(0);
            self.newest_end = Some(self.newest_end.map_or(end, |n| n.max(end)));
        }
        if std::mem::take(&mut self.pending_discont) {
            b.discont = true;
        }
        self.buffers += 1;
        self.duration_sum += b.duration.unwrap_or(0);
        self.items.push_back(Item::Buffer(b));
    }

    pub fn push_other(&mut self, item: Item) {
        debug_assert!(!matches!(item, Item::Buffer(_)));
        self.items.push_back(item);
    }

    /// Marks the next queued buffer `DISCONT` (a buffer was dropped before it was queued).
    pub fn mark_gap(&mut self) {
        self.pending_discont = true;
    }

    fn forget(&mut self, b: &Queued) {
        self.buffers -= 1;
        self.duration_sum -= b.duration.unwrap_or(0);
    }

    pub fn pop(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        if let Item::Buffer(b) = &item {
            self.forget(b);
        }
        Some(item)
    }

    /// Takes the query `id` out of the queue (its caller gave up waiting for it).
    pub fn remove_query(&mut self, id: u64) {
        self.items
            .retain(|i| !matches!(i, Item::Query(q) if q.id == id));
    }

    pub fn front(&self) -> Option<&Item> {
        self.items.front()
    }

    /// Removes everything (flush); the caller answers pending queries.
    pub fn clear(&mut self) -> Vec<Item> {
        let items: Vec<Item> = self.items.drain(..).collect();
        *self = Store {
            items: std::mem::take(&mut self.items),
            ..Default::default()
        };
        items
    }

    fn oldest_rt(&self) -> Option<u64> {
        self.items.iter().find_map(|i| match i {
            Item::Buffer(b) => Some(b.rt),
            _ => None,
        })?
    }

    /// Running time between the oldest queued buffer and the end of the newest, ns.
    pub fn level(&self) -> u64 {
        match (self.newest_end, self.oldest_rt()) {
            (Some(newest), Some(oldest)) => newest.saturating_sub(oldest),
            _ => self.duration_sum,
        }
    }

    /// Age of each queued item that is a buffer (None for other items), ns: distance from its
    /// start to the end of the newest buffer, or the summed durations from the newest back.
    fn ages(&self) -> Vec<Option<u64>> {
        let mut ages = vec![None; self.items.len()];
        let mut cumulative = 0u64;
        for (i, item) in self.items.iter().enumerate().rev() {
            if let Item::Buffer(b) = item {
                cumulative += b.duration.unwrap_or(0);
                ages[i] = Some(match (self.newest_end, b.rt) {
                    (Some(n), Some(rt)) => n.saturating_sub(rt),
                    _ => cumulative,
                });
            }
        }
        ages
    }

    /// Removes the buffers at the positions where `drop[i]` is true, keeping every other item in
    /// order, and marks the buffer after each gap `DISCONT`. Returns how many were dropped.
    fn remove_buffers(&mut self, drop: &[bool]) -> usize {
        let mut idx = 0;
        let mut dropped = 0;
        let mut gap = false;
        let (mut buffers, mut duration_sum) = (self.buffers, self.duration_sum);
        self.items.retain_mut(|item| {
            let i = idx;
            idx += 1;
            match item {
                Item::Buffer(b) if drop[i] => {
                    buffers -= 1;
                    duration_sum -= b.duration.unwrap_or(0);
                    dropped += 1;
                    gap = true;
                    false
                }
                Item::Buffer(b) => {
                    if std::mem::take(&mut gap) {
                        b.discont = true;
                    }
                    true
                }
                _ => true,
            }
        });
        self.buffers = buffers;
        self.duration_sum = duration_sum;
        if gap {
            self.pending_discont = true;
        }
        dropped
    }

    /// Raw video over the high watermark: of the frames older than `low` (ns) not thinned
    /// before, keeps every `keep_every`-th (the cycle continues across calls, so frames crossing
    /// the low watermark one at a time are thinned the same way). Survivors are not thinned
    /// again. Returns how many were dropped.
    pub fn thin_oldest(&mut self, low: u64, keep_every: usize) -> usize {
        let keep_every = keep_every.max(2);
        let ages = self.ages();
        let mut phase = self.thin_phase;
        let mut drop = vec![false; self.items.len()];
        for (i, item) in self.items.iter_mut().enumerate() {
            if let (Item::Buffer(b), Some(age)) = (item, ages[i])
                && age > low
                && !b.thinned
            {
                phase = (phase + 1) % keep_every;
                if phase == 0 {
                    b.thinned = true;
                } else {
                    drop[i] = true;
                }
            }
        }
        self.thin_phase = phase;
        self.remove_buffers(&drop)
    }

    /// Encoded video over the high watermark: drops whole GOP tails from the oldest so that, if
    /// possible, no more than `low` (ns) stays queued. Returns the number dropped and whether the
    /// current GOP's tail was cut with no later keyframe queued (then incoming delta units must
    /// be dropped until the next keyframe).
    pub fn drop_gop_tails(&mut self, low: u64) -> (usize, bool) {
        let ages = self.ages();
        let buffer_positions: Vec<usize> = (0..self.items.len())
            .filter(|i| ages[*i].is_some())
            .collect();
        let Some(&first) = buffer_positions.first() else {
            return (0, false);
        };
        let is_key = |i: usize| matches!(&self.items[i], Item::Buffer(b) if b.key);
        let later_keys: Vec<usize> = buffer_positions
            .iter()
            .copied()
            .filter(|&i| i > first && is_key(i))
            .collect();
        let mut drop = vec![false; self.items.len()];
        let cut_tail;
        if let Some(&newest_key) = later_keys.last() {
            // The oldest later keyframe young enough, else the newest one.
            let cut = later_keys
                .iter()
                .copied()
                .find(|&k| ages[k].is_some_and(|a| a <= low))
                .unwrap_or(newest_key);
            for &i in buffer_positions.iter().filter(|&&i| i < cut) {
                drop[i] = true;
            }
            cut_tail = false;
        } else {
            // No later keyframe queued: cut the current GOP's tail, keep its keyframe if queued.
            let keep_first = is_key(first);
            for &i in &buffer_positions {
                drop[i] = !(keep_first && i == first);
            }
            cut_tail = true;
        }
        (self.remove_buffers(&drop), cut_tail)
    }

    /// Drops the head buffer if older than `max_age` (ns) at running time `now` (the end of the
    /// newest buffer when unknown or earlier) and it may go: any raw frame; for encoded video
    /// (`encoded`), a delta unit with the rest of its GOP tail, or a keyframe and its GOP when a
    /// later keyframe is queued. Returns the number dropped and whether incoming delta units
    /// must be dropped until the next keyframe.
    pub fn expire_head(&mut self, now: Option<u64>, max_age: u64, encoded: bool) -> (usize, bool) {
        let now = match (now, self.newest_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        // The oldest buffer (events queued before it keep their place).
        let Some(first) = self.items.iter().position(|i| matches!(i, Item::Buffer(_))) else {
            return (0, false);
        };
        let Item::Buffer(head) = &self.items[first] else {
            return (0, false);
        };
        let head_age = match (now, head.rt) {
            (Some(n), Some(rt)) => n.saturating_sub(rt),
            _ => self.duration_sum,
        };
        if head_age <= max_age {
            return (0, false);
        }
        let mut drop = vec![false; self.items.len()];
        if !encoded {
            drop[first] = true;
            return (self.remove_buffers(&drop), false);
        }
        // The GOP the head belongs to runs up to the next keyframe after it.
        let next_key = self
            .items
            .iter()
            .enumerate()
            .skip(first + 1)
            .find(|(_, i)| matches!(i, Item::Buffer(b) if b.key))
            .map(|(i, _)| i);
        match (head.key, next_key) {
            (true, None) => (0, false),
            (_, next) => {
                let end = next.unwrap_or(self.items.len());
                for (i, d) in drop.iter_mut().enumerate().take(end).skip(first) {
                    *d = matches!(self.items[i], Item::Buffer(_));
                }
                (self.remove_buffers(&drop), next.is_none())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn frame(i: u64, key: bool) -> Queued {
        let mut buffer = gst::Buffer::new();
        buffer.get_mut().unwrap().set_offset(i);
        Queued {
            buffer,
            rt: Some(i * 40 * MS),
            duration: Some(40 * MS),
            key,
            discont: false,
            thinned: false,
        }
    }

    fn offsets(s: &Store) -> Vec<(u64, bool, bool)> {
        s.items
            .iter()
            .filter_map(|i| match i {
                Item::Buffer(b) => Some((b.buffer.offset(), b.key, b.discont)),
                _ => None,
            })
            .collect()
    }

    fn init() {
        gst::init().unwrap();
    }

    #[test]
    fn level_from_running_time_or_durations() {
        init();
        let mut s = Store::default();
        for i in 0..10 {
            s.push_buffer(frame(i, true));
        }
        assert_eq!(s.level(), 400 * MS);
        s.pop();
        assert_eq!(s.level(), 360 * MS);
        let mut d = Store::default();
        for i in 0..5 {
            let mut f = frame(i, true);
            f.rt = None;
            d.push_buffer(f);
        }
        assert_eq!(d.level(), 200 * MS);
    }

    #[test]
    fn raw_thinning_keeps_every_kth_of_the_old_frames() {
        init();
        let mut s = Store::default();
        for i in 0..25 {
            s.push_buffer(frame(i, true));
            if i == 3 {
                s.push_other(Item::Event(gst::event::Gap::new(
                    gst::ClockTime::ZERO,
                    None,
                )));
            }
        }
        // 1000 ms queued; frames older than 200 ms: 0..=19 (age of 19 is 240 ms).
        let dropped = s.thin_oldest(200 * MS, 4);
        let left = offsets(&s);
        assert_eq!(dropped, 15);
        let kept: Vec<u64> = left.iter().map(|l| l.0).collect();
        assert_eq!(kept, vec![3, 7, 11, 15, 19, 20, 21, 22, 23, 24]);
        // Every kept frame after a gap is DISCONT, the untouched young ones are not.
        assert!(left[..5].iter().all(|l| l.2));
        assert!(left[5..].iter().all(|l| !l.2));
        assert_eq!(s.len(), 11, "the event stays");
        assert_eq!(s.buffers(), 10);
        // Frames that cross the watermark later continue the cycle; survivors stay.
        for i in 25..29 {
            s.push_buffer(frame(i, true));
            s.thin_oldest(200 * MS, 4);
        }
        let kept: Vec<u64> = offsets(&s).iter().map(|l| l.0).collect();
        assert_eq!(kept, vec![3, 7, 11, 15, 19, 23, 24, 25, 26, 27, 28]);
    }

    #[test]
    fn gop_tails_cut_at_a_later_keyframe() {
        init();
        let mut s = Store::default();
        // GOPs of 5: keys at 0, 5, 10, 15.
        for i in 0..18 {
            s.push_buffer(frame(i, i % 5 == 0));
        }
        // 720 ms queued, target 200 ms: the oldest keyframe at most 200 ms old is none (15 is
        // 120 ms... 15*40 = 600, newest end 720: age 120 ms) -> keyframe 15.
        let (dropped, tail) = s.drop_gop_tails(200 * MS);
        assert_eq!((dropped, tail), (15, false));
        assert_eq!(
            offsets(&s),
            vec![(15, true, true), (16, false, false), (17, false, false)]
        );
    }

    #[test]
    fn gop_tail_without_a_later_keyframe_keeps_the_keyframe() {
        init();
        let mut s = Store::default();
        for i in 0..10 {
            s.push_buffer(frame(i, i == 0));
        }
        let (dropped, tail) = s.drop_gop_tails(200 * MS);
        assert_eq!((dropped, tail), (9, true));
        assert_eq!(offsets(&s), vec![(0, true, false)]);
        // The next buffer queued continues after a gap.
        s.push_buffer(frame(20, true));
        assert_eq!(offsets(&s)[1], (20, true, true));
    }

    #[test]
    fn expiry_of_raw_and_encoded_heads() {
        init();
        let mut s = Store::default();
        for i in 0..10 {
            s.push_buffer(frame(i, true));
        }
        assert_eq!(s.expire_head(None, 500 * MS, false), (0, false));
        assert_eq!(s.expire_head(None, 300 * MS, false), (1, false));
        // Events ahead of the oldest buffer do not shield it.
        s.items.push_front(Item::Event(gst::event::Gap::new(
            gst::ClockTime::ZERO,
            None,
        )));
        assert_eq!(s.expire_head(None, 300 * MS, false), (1, false));
        assert!(matches!(s.front(), Some(Item::Event(_))));
        // With a clock: the data got older while nothing new came in.
        assert_eq!(s.expire_head(Some(900 * MS), 700 * MS, false), (1, false));
        assert_eq!(
            s.expire_head(Some(10 * MS), 400 * MS, false),
            (0, false),
            "never younger than the newest"
        );

        let mut e = Store::default();
        for i in 0..10 {
            e.push_buffer(frame(i, i % 4 == 0)); // keys 0, 4, 8
        }
        // Head is a keyframe with a later keyframe queued: its whole GOP goes.
        assert_eq!(e.expire_head(None, 300 * MS, true), (4, false));
        assert_eq!(offsets(&e)[0], (4, true, true));
        // Keys 4 and 8 left; make the head a delta: drop 4, then head is delta 5.
        e.pop();
        assert_eq!(e.expire_head(None, 100 * MS, true), (3, false));
        assert_eq!(offsets(&e)[0].0, 8);
        // Only keyframe 8 and its deltas: a keyframe without a later one stays.
        assert_eq!(e.expire_head(None, 10 * MS, true), (0, false));
        e.pop();
        // Head delta 9 with no keyframe after it: the tail goes and incoming deltas must too.
        assert_eq!(e.expire_head(None, 10 * MS, true), (1, true));
        assert!(e.is_empty());
    }
}
