// SPDX-License-Identifier: MPL-2.0
//! Which frame of a stream goes into the batch of a tick, and the clock-offset estimate.
//!
//! Times here are nanoseconds of running time (after any clock-offset correction), signed so
//! that a correction may move a frame before zero.
//!
//! For a tick at `t` with tolerance `tol`, each stream's candidate is the frame closest to `t`
//! among those in `[t - tol, t + tol]` (the earlier one on a tie): that frame is **fresh**.
//! Frames at or before `t` that were not picked are dropped (counted): they are older than
//! the one picked, or too old for any tick. Frames after `t` wait for the next tick. Without a
//! candidate, the stream's last picked frame is **repeated** when it is not older than the
//! stream's frame period plus the tolerance (the stream is just slower than the tick rate);
//! otherwise the entry is **missing** (late, stalled or not started).

use std::collections::VecDeque;

/// A frame waiting for its tick.
#[derive(Debug, Clone)]
pub struct Timed<F> {
    pub time: i64,
    pub frame: F,
}

/// What a stream contributes to one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick<F> {
    Fresh(F),
    Repeated(F),
    Missing,
}

/// Per-stream counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub fresh: u64,
    pub repeated: u64,
    pub missing: u64,
    pub dropped: u64,
}

/// One stream's frames between ticks.
#[derive(Debug)]
pub struct Stream<F> {
    pending: VecDeque<Timed<F>>,
    last: Option<Timed<F>>,
    pub counts: Counts,
}

impl<F> Default for Stream<F> {
    fn default() -> Self {
        Stream {
            pending: VecDeque::new(),
            last: None,
            counts: Counts::default(),
        }
    }
}

impl<F: Clone> Stream<F> {
    pub fn push(&mut self, time: i64, frame: F) {
        self.pending.push_back(Timed { time, frame });
    }

    /// Whether every pending frame is at or before `time` (no frame left for a later tick).
    pub fn pending_until(&self, time: i64) -> bool {
        self.pending.iter().all(|f| f.time <= time)
    }

    /// Forgets everything but the counters (flush).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.last = None;
    }

    /// The frame for the tick at `tick`; `period` is the stream's own frame period (for how
    /// long its last frame may be repeated); an `ended` stream repeats nothing.
    pub fn pick(&mut self, tick: i64, tol: i64, period: i64, ended: bool) -> Pick<F> {
        let best = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, f)| (f.time - tick).abs() <= tol)
            .min_by_key(|(_, f)| ((f.time - tick).abs(), f.time))
            .map(|(i, _)| i);
        let best = best.and_then(|i| self.pending.remove(i));
        let before = self.pending.len();
        self.pending.retain(|f| f.time > tick);
        self.counts.dropped += (before - self.pending.len()) as u64;
        if let Some(b) = best {
            self.counts.fresh += 1;
            let frame = b.frame.clone();
            self.last = Some(b);
            return Pick::Fresh(frame);
        }
        match &self.last {
            Some(l) if !ended && tick - l.time <= period + tol => {
                self.counts.repeated += 1;
                Pick::Repeated(l.frame.clone())
            }
            _ => {
                self.counts.missing += 1;
                Pick::Missing
            }
        }
    }
}

/// Number of samples the clock-offset estimate looks back on.
pub const OFFSET_WINDOW: usize = 256;

/// Clock offset of one stream: the minimum of `arrival - timestamp` over the last
/// [`OFFSET_WINDOW`] frames (arrival = the pipeline clock's running time when the frame reached
/// `framesync`). Network and decode delays only ever add to the difference, so its minimum is
/// the stream's clock offset plus its smallest delay; following a sliding minimum tracks a
/// camera clock that drifts. A monotonic deque keeps the minimum in O(1) per frame and memory
/// bounded by the window.
#[derive(Debug, Default, Clone)]
pub struct OffsetEstimator {
    n: u64,
    window: VecDeque<(u64, i64)>,
}

impl OffsetEstimator {
    pub fn add(&mut self, arrival: i64, timestamp: i64) {
        let v = arrival - timestamp;
        let i = self.n;
        self.n += 1;
        while self.window.back().is_some_and(|(_, b)| *b >= v) {
            self.window.pop_back();
        }
        self.window.push_back((i, v));
        while self
            .window
            .front()
            .is_some_and(|(j, _)| *j + OFFSET_WINDOW as u64 <= i)
        {
            self.window.pop_front();
        }
    }

    /// The estimate (`None` before the first frame).
    pub fn offset(&self) -> Option<i64> {
        self.window.front().map(|(_, v)| *v)
    }

    pub fn reset(&mut self) {
        self.window.clear();
    }

    pub fn len(&self) -> usize {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn slower_stream_repeats_faster_stream_drops() {
        // 15 fps into 30 fps ticks: fresh, repeated, fresh, repeated...
        let mut s = Stream::default();
        for i in 0..4 {
            s.push(i * 200 * MS / 3, i);
        }
        let period = 200 * MS / 3;
        let tick = 100 * MS / 3;
        let picks: Vec<_> = (0..6)
            .map(|k| s.pick(k * tick, tick / 2, period, false))
            .collect();
        assert_eq!(
            picks,
            vec![
                Pick::Fresh(0),
                Pick::Repeated(0),
                Pick::Fresh(1),
                Pick::Repeated(1),
                Pick::Fresh(2),
                Pick::Repeated(2)
            ]
        );
        // 60 fps into 30 fps ticks: every other frame dropped.
        let mut s = Stream::default();
        for i in 0..6 {
            s.push(i * 50 * MS / 3, i);
        }
        let picks: Vec<_> = (0..3)
            .map(|k| s.pick(k * tick, tick / 2, tick / 2, false))
            .collect();
        assert_eq!(picks, vec![Pick::Fresh(0), Pick::Fresh(2), Pick::Fresh(4)]);
        assert_eq!(s.counts.dropped, 2);
    }

    #[test]
    fn stall_goes_missing_then_rejoins() {
        let mut s = Stream::default();
        let p = 40 * MS;
        s.push(0, "a");
        assert_eq!(s.pick(0, p / 2, p, false), Pick::Fresh("a"));
        assert_eq!(s.pick(p, p / 2, p, false), Pick::Repeated("a"));
        assert_eq!(s.pick(2 * p, p / 2, p, false), Pick::Missing);
        // A late frame for tick 2 arrives after tick 3 went out: dropped.
        s.push(2 * p, "late");
        s.push(4 * p + 5 * MS, "b");
        assert_eq!(s.pick(4 * p, p / 2, p, false), Pick::Fresh("b"));
        assert_eq!(s.counts.dropped, 1);
        assert_eq!(s.counts.missing, 1);
    }

    #[test]
    fn offset_follows_the_minimum_within_a_bounded_window() {
        let mut e = OffsetEstimator::default();
        for i in 0..1000i64 {
            // Offset 5 ms plus a 0..9 ms delay; the camera clock runs 0.1 % fast.
            let ts = i * 40 * MS;
            let arrival = ts - ts / 1000 + 5 * MS + (i * 7 % 10) * MS;
            e.add(arrival, ts);
            assert!(e.len() <= OFFSET_WINDOW);
        }
        let expected = 5 * MS - (999 * 40 * MS) / 1000;
        let got = e.offset().unwrap();
        // Within the drift over one window (256 frames × 40 µs).
        assert!((got - expected).abs() <= 11 * MS, "{got} vs {expected}");
    }
}
