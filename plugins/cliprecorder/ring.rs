// SPDX-License-Identifier: MPL-2.0
//! The recorder's pure logic: the ring of encoded access units (always starting at a keyframe,
//! pruned by whole GOPs) and a clip's window (pre-roll, post-roll, extensions up to the longest
//! a clip may last). Times are the recorder's keys in ns (see `imp::key_ns`); `T` is whatever
//! the element keeps per access unit (a `gst::Buffer` there, numbers in the tests).

use std::collections::VecDeque;

/// One access unit in the ring.
#[derive(Debug, Clone)]
pub struct Unit<T> {
    pub key_ns: i64,
    pub keyframe: bool,
    pub bytes: usize,
    pub item: T,
}

/// Access units of the last pre-roll and more, from a keyframe on.
#[derive(Debug)]
pub struct Ring<T> {
    units: VecDeque<Unit<T>>,
    bytes: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring {
            units: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T> Ring<T> {
    /// Adds `unit`; false (and not kept) for a delta unit when the ring has no keyframe yet:
    /// it could not be decoded.
    pub fn push(&mut self, unit: Unit<T>) -> bool {
        if self.units.is_empty() && !unit.keyframe {
            return false;
        }
        self.bytes += unit.bytes;
        self.units.push_back(unit);
        true
    }

    /// Drops the oldest GOPs while the next GOP still starts at or before `keep_from_ns`: what
    /// is left covers `keep_from_ns` onwards from a keyframe.
    pub fn prune(&mut self, keep_from_ns: i64) {
        loop {
            // The second keyframe: the start of the ring were the first GOP dropped.
            let Some(next) = self.units.iter().skip(1).position(|u| u.keyframe) else {
                return;
            };
            if self.units[next + 1].key_ns > keep_from_ns {
                return;
            }
            for _ in 0..=next {
                let u = self.units.pop_front().expect("counted above");
                self.bytes -= u.bytes;
            }
        }
    }

    /// Drops every access unit older than `limit_ns`, then those up to the next keyframe (the
    /// ring starts at one): a hard bound, whatever the GOPs (a stream with a single keyframe
    /// and intra refresh after it has nothing else to prune by).
    pub fn trim(&mut self, limit_ns: i64) {
        let mut cut = false;
        while let Some(u) = self.units.front() {
            if u.key_ns < limit_ns || (cut && !u.keyframe) {
                cut = true;
                let u = self.units.pop_front().expect("looked at above");
                self.bytes -= u.bytes;
            } else {
                break;
            }
        }
    }

    /// Where a clip that must show `from_ns` starts: the last keyframe at or before it, or the
    /// oldest one when the ring does not reach that far back. None when the ring is empty.
    pub fn start_for(&self, from_ns: i64) -> Option<usize> {
        let mut start = None;
        for (i, u) in self.units.iter().enumerate() {
            if !u.keyframe {
                continue;
            }
            if start.is_none() || u.key_ns <= from_ns {
                start = Some(i);
            }
            if u.key_ns > from_ns {
                break;
            }
        }
        start
    }

    pub fn units_from(&self, index: usize) -> impl Iterator<Item = &Unit<T>> {
        self.units.iter().skip(index)
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn newest_key(&self) -> Option<i64> {
        self.units.back().map(|u| u.key_ns)
    }

    pub fn clear(&mut self) {
        self.units.clear();
        self.bytes = 0;
    }
}

/// A clip being written: it ends at the last trigger's time plus the post-roll, and never
/// lasts longer than the longest a clip may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first access unit's key (a keyframe).
    pub start_ns: i64,
    /// Access units up to this key belong to the clip.
    pub end_ns: i64,
    /// `start_ns` + max-duration: no trigger extends the clip past it.
    pub cap_ns: i64,
}

impl Window {
    pub fn new(start_ns: i64, trigger_ns: i64, post_roll_ns: i64, max_duration_ns: i64) -> Self {
        let cap_ns = start_ns.saturating_add(max_duration_ns);
        Window {
            start_ns,
            end_ns: trigger_ns.saturating_add(post_roll_ns).min(cap_ns),
            cap_ns,
        }
    }

    /// A trigger at `trigger_ns` while the clip is written: the clip goes on until its
    /// post-roll, up to the cap. False when the trigger comes after the clip's end (a new clip).
    pub fn extend(&mut self, trigger_ns: i64, post_roll_ns: i64) -> bool {
        if trigger_ns > self.end_ns {
            return false;
        }
        self.end_ns = self
            .end_ns
            .max(trigger_ns.saturating_add(post_roll_ns))
            .min(self.cap_ns);
        true
    }

    pub fn contains(&self, key_ns: i64) -> bool {
        key_ns <= self.end_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// 15 fps, a keyframe every `gop` frames, frames 0..n.
    fn filled(n: i64, gop: i64) -> Ring<i64> {
        let mut r = Ring::default();
        for i in 0..n {
            r.push(Unit {
                key_ns: i * S / 15,
                keyframe: i % gop == 0,
                bytes: if i % gop == 0 { 10_000 } else { 1_000 },
                item: i,
            });
        }
        r
    }

    #[test]
    fn the_ring_starts_at_a_keyframe_and_keeps_the_pre_roll() {
        let mut r: Ring<i64> = Ring::default();
        assert!(!r.push(Unit {
            key_ns: 0,
            keyframe: false,
            bytes: 5,
            item: 0
        }));
        assert!(r.is_empty());
        let mut r = filled(150, 30); // 10 s, a keyframe every 2 s
        // Keep from 5 s on: the GOP starting at 4 s is the first kept.
        r.prune(5 * S);
        assert_eq!(r.units_from(0).next().unwrap().item, 60);
        assert!(r.units_from(0).next().unwrap().keyframe);
        assert_eq!(r.len(), 90);
        assert_eq!(r.bytes(), 3 * 10_000 + 87 * 1_000);
        // Pruning again at the same point changes nothing; a GOP boundary exactly at the
        // point starts the ring there.
        r.prune(5 * S);
        assert_eq!(r.len(), 90);
        r.prune(6 * S);
        assert_eq!(r.units_from(0).next().unwrap().item, 90);
        // The last GOP is never dropped.
        r.prune(100 * S);
        assert_eq!(r.units_from(0).next().unwrap().item, 120);
    }

    #[test]
    fn trimming_bounds_the_ring_and_keeps_it_starting_at_a_keyframe() {
        // One keyframe, then only delta units (intra refresh): prune cannot drop anything.
        let mut r = filled(150, 1000);
        r.prune(9 * S);
        assert_eq!(r.len(), 150);
        r.trim(5 * S);
        assert!(
            r.is_empty(),
            "no keyframe after the cut: nothing decodable is left"
        );
        // With GOPs: cut in the middle of one, the ring restarts at the next keyframe.
        let mut r = filled(150, 30);
        r.trim(5 * S);
        assert_eq!(r.units_from(0).next().unwrap().item, 90);
        assert_eq!(r.bytes(), 2 * 10_000 + 58 * 1_000);
        r.trim(0);
        assert_eq!(r.len(), 60);
    }

    #[test]
    fn a_clip_starts_at_the_last_keyframe_before_its_pre_roll() {
        let r = filled(150, 30);
        // 3.5 s before a trigger at 7 s: from 3.5 s, the keyframe at 2 s (frame 30).
        assert_eq!(r.start_for(7 * S - 3 * S - S / 2), Some(30));
        // Exactly on a keyframe.
        assert_eq!(r.start_for(4 * S), Some(60));
        // Further back than the ring reaches: its oldest keyframe.
        assert_eq!(r.start_for(-S), Some(0));
        assert_eq!(Ring::<i64>::default().start_for(0), None);
    }

    #[test]
    fn overlapping_triggers_extend_one_clip_up_to_its_cap() {
        let mut w = Window::new(2 * S, 5 * S, 3 * S, 10 * S);
        assert_eq!(w.end_ns, 8 * S);
        assert!(w.extend(7 * S, 3 * S));
        assert_eq!(w.end_ns, 10 * S);
        // An earlier trigger does not shorten it.
        assert!(w.extend(6 * S, 3 * S));
        assert_eq!(w.end_ns, 10 * S);
        assert!(w.extend(10 * S, 3 * S));
        assert_eq!(w.end_ns, 12 * S, "capped at start + max-duration");
        // After the end: another clip.
        assert!(!w.extend(13 * S, 3 * S));
        assert!(w.contains(12 * S) && !w.contains(12 * S + 1));
        // A post-roll longer than the cap allows.
        assert_eq!(Window::new(0, S, 100 * S, 10 * S).end_ns, 10 * S);
    }
}
