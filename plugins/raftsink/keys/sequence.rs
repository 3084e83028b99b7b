// SPDX-License-Identifier: MPL-2.0
//! Position and capture-time keys ([`super::Policy::Position`], [`super::Policy::CaptureTime`]).
//!
//! The number comes from where the frame is, never from how many frames came before it, so a
//! seek, a replay or a restart gives the same frame the same number:
//!
//! * Non-live input (a file): its position, `seq = round(pts · fps)`; without a framerate
//!   (variable-rate files, `0/1` caps) the PTS in microseconds. The same frame of the same file
//!   gets the same number in every run and after any seek, so nothing is stored twice.
//! * Live input (a camera): its capture time, `seq = round(capture time · fps)` (capture time in
//!   wall-clock nanoseconds), or the capture time in microseconds without a framerate. A live
//!   source restarts its timestamps at zero, so PTS-based numbers would collide with the
//!   previous run's; wall-clock numbers keep growing.
//! * Only a frame without a timestamp gets the number after the last one given.
//!
//! Two frames in the same slot (a framerate in the caps that the timestamps do not keep,
//! jitter) are not merged: the second gets the next free number. A flush or a new segment
//! (a seek) forgets the last number, so the frames after it are numbered by their position
//! alone.

/// What the number is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Basis {
    #[default]
    Pts,
    CaptureTime,
}

#[derive(Debug, Default, Clone)]
pub struct Sequencer {
    fps: Option<(u64, u64)>,
    basis: Basis,
    last: Option<i64>,
}

fn frames_at(ns: u128, (n, d): (u64, u64)) -> i64 {
    let num = ns * n as u128;
    let den = d as u128 * 1_000_000_000;
    ((num + den / 2) / den) as i64
}

impl Sequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the framerate from caps (`0/1` or absent: unknown).
    pub fn set_framerate(&mut self, num: i32, den: i32) {
        self.fps = (num > 0 && den > 0).then_some((num as u64, den as u64));
    }

    pub fn set_basis(&mut self, basis: Basis) {
        self.basis = basis;
    }

    pub fn basis(&self) -> Basis {
        self.basis
    }

    /// Live input: numbers continue after `seq` (the highest stored for this stream), so a run
    /// started within a frame of the previous one's end does not reuse its last number.
    pub fn continue_after(&mut self, seq: Option<i64>) {
        if self.basis == Basis::CaptureTime {
            self.last = self.last.max(seq);
        }
    }

    /// Forgets the last number (new stream, or a flush: the position jumped).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The sequence number of a frame with this PTS and capture time (ns since the epoch).
    pub fn next(&mut self, pts_ns: Option<u64>, capture_ns: i64) -> i64 {
        let micros = |ns: u128| (ns / 1000) as i64;
        let derived = match (self.basis, self.fps) {
            (Basis::Pts, Some(fps)) => pts_ns.map(|p| frames_at(p as u128, fps)),
            (Basis::Pts, None) => pts_ns.map(|p| micros(p as u128)),
            (Basis::CaptureTime, Some(fps)) if capture_ns > 0 => {
                Some(frames_at(capture_ns as u128, fps))
            }
            (Basis::CaptureTime, None) if capture_ns > 0 => Some(micros(capture_ns as u128)),
            _ => None,
        };
        let seq = match (derived, self.last) {
            (Some(s), Some(last)) if s <= last => last + 1,
            (Some(s), _) => s,
            (None, Some(last)) => last + 1,
            (None, None) => 0,
        };
        self.last = Some(seq);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> Option<u64> {
        Some(i * 1_000_000_000 / 30)
    }

    #[test]
    fn derived_from_pts_and_framerate() {
        let mut s = Sequencer::new();
        s.set_framerate(30, 1);
        assert_eq!(s.next(frame(0), 5), 0);
        assert_eq!(s.next(frame(1), 5), 1);
        assert_eq!(s.next(frame(90), 5), 90);
        // Restart on the same input gives the same numbers.
        let mut again = Sequencer::new();
        again.set_framerate(30, 1);
        assert_eq!(again.next(frame(90), 77), 90);
    }

    #[test]
    fn live_numbers_follow_the_wall_clock() {
        let mut s = Sequencer::new();
        s.set_framerate(25, 1);
        s.set_basis(Basis::CaptureTime);
        let t0: i64 = 1_764_000_000_000_000_000;
        let a = s.next(frame(0), t0);
        let b = s.next(frame(1), t0 + 40_000_000);
        assert_eq!(b, a + 1);
        // A restarted live source starts its PTS at 0 again; the numbers do not repeat.
        let mut restarted = Sequencer::new();
        restarted.set_framerate(25, 1);
        restarted.set_basis(Basis::CaptureTime);
        assert!(restarted.next(frame(0), t0 + 60_000_000_000) > b);
        // Restarted within the same frame slot: continues after what is stored.
        let mut quick = Sequencer::new();
        quick.set_framerate(25, 1);
        quick.set_basis(Basis::CaptureTime);
        quick.continue_after(Some(b));
        assert_eq!(quick.next(frame(0), t0 + 41_000_000), b + 1);
    }

    #[test]
    fn collisions_and_missing_pts_move_forward() {
        let mut s = Sequencer::new();
        s.set_framerate(25, 1);
        assert_eq!(s.next(Some(40_000_000), 0), 1);
        assert_eq!(s.next(Some(41_000_000), 0), 2, "same slot: next free");
        assert_eq!(s.next(None, 0), 3);
        let mut c = Sequencer::new();
        assert_eq!(c.next(None, 0), 0);
        assert_eq!(c.next(None, 0), 1);
    }

    #[test]
    fn without_a_framerate_the_position_is_the_number() {
        // A variable-rate file: the PTS in microseconds, the same after a seek back.
        let mut s = Sequencer::new();
        s.set_framerate(0, 1);
        let at = |ms: u64| Some(ms * 1_000_000);
        assert_eq!((s.next(at(0), 0), s.next(at(20), 0)), (0, 20_000));
        s.reset();
        assert_eq!(
            s.next(at(0), 0),
            0,
            "after a flush, the same frame, the same number"
        );
        assert_eq!(s.next(at(65), 0), 65_000);
        // Live without a framerate: the capture time in microseconds.
        let mut live = Sequencer::new();
        live.set_basis(Basis::CaptureTime);
        assert_eq!(
            live.next(at(0), 1_795_000_000_123_456_789),
            1_795_000_000_123_456
        );
    }

    #[test]
    fn ntsc_rates_round_to_the_frame() {
        let mut s = Sequencer::new();
        s.set_framerate(30000, 1001);
        // Frame 1000 at 30000/1001 fps is at 33.3667 s.
        let pts = 1000 * 1001 * 1_000_000_000 / 30000;
        assert_eq!(s.next(Some(pts), 0), 1000);
    }
}
