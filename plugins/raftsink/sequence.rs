// SPDX-License-Identifier: MPL-2.0
//! Frame sequence numbers that survive a restart on the same input.
//!
//! With a known framerate and a PTS, `seq = round(pts · fps)`: the same frame of the same file
//! gets the same number in every run. Without either, a counter continues from the last number
//! given. Numbers only go up within a run: a frame whose PTS maps to a number already used
//! (variable framerate, jitter) gets the next free one, so no frame is silently merged with
//! another.

#[derive(Debug, Default, Clone)]
pub struct Sequencer {
    fps: Option<(u64, u64)>,
    last: Option<i64>,
}

impl Sequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the framerate from caps (`0/1` or absent: unknown).
    pub fn set_framerate(&mut self, num: i32, den: i32) {
        self.fps = (num > 0 && den > 0).then_some((num as u64, den as u64));
    }

    /// Forgets the last number (after a flush: the stream position jumped).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The sequence number of a frame with this PTS.
    pub fn next(&mut self, pts: Option<gst::ClockTime>) -> i64 {
        let derived = match (pts, self.fps) {
            (Some(pts), Some((n, d))) => {
                let ns = pts.nseconds() as u128;
                let num = ns * n as u128;
                let den = d as u128 * 1_000_000_000;
                Some(((num + den / 2) / den) as i64)
            }
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

    #[test]
    fn derived_from_pts_and_framerate() {
        let mut s = Sequencer::new();
        s.set_framerate(30, 1);
        let frame = |i: u64| Some(gst::ClockTime::from_nseconds(i * 1_000_000_000 / 30));
        assert_eq!(s.next(frame(0)), 0);
        assert_eq!(s.next(frame(1)), 1);
        assert_eq!(s.next(frame(90)), 90);
        // Restart on the same input gives the same numbers.
        let mut again = Sequencer::new();
        again.set_framerate(30, 1);
        assert_eq!(again.next(frame(90)), 90);
    }

    #[test]
    fn collisions_and_missing_pts_move_forward() {
        let mut s = Sequencer::new();
        s.set_framerate(25, 1);
        assert_eq!(s.next(Some(gst::ClockTime::from_mseconds(40))), 1);
        assert_eq!(
            s.next(Some(gst::ClockTime::from_mseconds(41))),
            2,
            "same slot: next free"
        );
        assert_eq!(s.next(None), 3);
        let mut c = Sequencer::new();
        assert_eq!((c.next(None), c.next(Some(gst::ClockTime::SECOND))), (0, 1));
    }

    #[test]
    fn ntsc_rates_round_to_the_frame() {
        let mut s = Sequencer::new();
        s.set_framerate(30000, 1001);
        // Frame 1000 at 30000/1001 fps is at 33.3667 s.
        let pts = gst::ClockTime::from_nseconds(1000 * 1001 * 1_000_000_000 / 30000);
        assert_eq!(s.next(Some(pts)), 1000);
    }
}
