// SPDX-License-Identifier: MPL-2.0
//! Frame keys from the camera's own clock (`capture-time-wait`): the same frame gets the same
//! `seq` on every machine that reads the camera, so two readers at once (a `videoai-worker`
//! handover) store each frame once.
//!
//! A camera's clock reaches the pipeline as reference timestamps (`timestamp/x-ntp` from its
//! RTCP sender reports): exact, the same for every reader. Once a few frames have carried one,
//! the frame rate is known (from the median gap between them, as an exact fraction: 30/1,
//! 30000/1001 …, so that every reader gets the same one) and every frame's key is its capture
//! time in frame periods, `round(capture × rate)`: no counting, no "after the last stored
//! number", so a second reader computes the first reader's keys. Frames without a timestamp of
//! their own get their capture time from the camera's mapping (their running time plus the
//! offset of the last frame that had one).
//!
//! Until then (a new reader waits 2 to 5 s for its first sender report) frames are held, in
//! memory and for at most the wait, and keyed the same way once the clock is known. If no
//! timestamp comes in time, the held frames and all later ones are numbered the usual way
//! (`sequence.rs`): that stream then has the weaker guarantee.
//!
//! Two frames in one period (the burst a reader gets while its jitterbuffer fills, stamped on
//! arrival) share a key: the log keeps the first.

/// Frames with a camera timestamp needed before the period is trusted.
const SAMPLES: usize = 8;

#[derive(Debug)]
pub struct Held<T> {
    pub running_time_ns: u64,
    pub payload: T,
}

/// What to do with a frame offered.
#[derive(Debug)]
pub enum Step<T> {
    /// Kept: nothing to store now.
    Held,
    /// Key by the camera clock: store these held frames first, then this one.
    Keyed(Vec<Held<T>>, T),
    /// No camera clock (or waiting is off): store these held frames first, then this one, the
    /// usual way.
    Usual(Vec<Held<T>>, T),
}

#[derive(Debug)]
pub struct CameraKeys<T> {
    wait_ns: u64,
    held: Vec<Held<T>>,
    samples: Vec<i64>,
    /// The frame rate, as a fraction every reader of the camera agrees on.
    rate: Option<(i64, i64)>,
    gave_up: bool,
    max_held: usize,
}

impl<T> CameraKeys<T> {
    /// `wait_ns` 0: never hold, always [`Step::Usual`].
    pub fn new(wait_ns: u64, max_held: usize) -> Self {
        CameraKeys {
            wait_ns,
            held: Vec::new(),
            samples: Vec::new(),
            rate: None,
            gave_up: wait_ns == 0,
            max_held,
        }
    }

    /// The frame rate (numerator, denominator), once known.
    pub fn rate(&self) -> Option<(i64, i64)> {
        self.rate
    }

    /// A frame at `running_time_ns`; `camera_ns` is its camera timestamp, if it has one.
    pub fn offer(&mut self, running_time_ns: u64, camera_ns: Option<i64>, payload: T) -> Step<T> {
        if self.gave_up {
            return Step::Usual(std::mem::take(&mut self.held), payload);
        }
        if let (Some(c), None) = (camera_ns, self.rate) {
            self.samples.push(c);
            if self.samples.len() >= SAMPLES {
                self.rate = estimate_period(&self.samples).map(rate_of);
            }
        }
        if self.rate.is_some() {
            return Step::Keyed(std::mem::take(&mut self.held), payload);
        }
        let waited = self
            .held
            .first()
            .map_or(0, |h| running_time_ns.saturating_sub(h.running_time_ns));
        if waited >= self.wait_ns || self.held.len() >= self.max_held {
            self.gave_up = true;
            return Step::Usual(std::mem::take(&mut self.held), payload);
        }
        self.held.push(Held {
            running_time_ns,
            payload,
        });
        Step::Held
    }

    /// The key of a frame captured at `capture_ns`: its capture time in frame periods, rounded
    /// (once the rate is known).
    pub fn key(&self, capture_ns: i64) -> Option<i64> {
        let (n, d) = self.rate?;
        let num = capture_ns as i128 * n as i128;
        let den = d as i128 * 1_000_000_000;
        Some(((num + den / 2).div_euclid(den)) as i64)
    }

    /// Frames still held (end of stream): to be stored the usual way.
    pub fn drain(&mut self) -> Vec<Held<T>> {
        std::mem::take(&mut self.held)
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// The frame rate of a frame period, as an exact fraction that does not depend on the
/// nanoseconds of one measurement: whole rates (25, 30, 60 …) and NTSC ones (30000/1001 …),
/// else thousandths of a frame per second.
fn rate_of(period_ns: i64) -> (i64, i64) {
    let fps = 1e9 / period_ns as f64;
    let whole = fps.round();
    if whole >= 1.0 && (fps - whole).abs() < whole * 1e-4 {
        return (whole as i64, 1);
    }
    let ntsc = (fps * 1.001).round();
    if ntsc >= 1.0 && (fps - ntsc / 1.001).abs() < ntsc * 1e-4 {
        return (ntsc as i64 * 1000, 1001);
    }
    ((fps * 1000.0).round() as i64, 1000)
}

/// The median gap between consecutive distinct timestamps.
fn estimate_period(samples: &[i64]) -> Option<i64> {
    let mut s = samples.to_vec();
    s.sort();
    let mut gaps: Vec<i64> = s
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort();
    Some(gaps[gaps.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: i64 = 33_333_333;

    #[test]
    fn rates_are_exact_fractions() {
        assert_eq!(rate_of(33_333_333), (30, 1));
        assert_eq!(rate_of(33_333_334), (30, 1));
        assert_eq!(rate_of(40_000_000), (25, 1));
        assert_eq!(rate_of(33_366_667), (30_000, 1001));
        assert_eq!(rate_of(16_683_333), (60_000, 1001));
        assert_eq!(rate_of(80_000_000), (12_500, 1000));
    }

    #[test]
    fn frames_wait_for_the_camera_clock_then_get_keys_every_reader_agrees_on() {
        let t0 = 1_796_000_000_000_000_000i64;
        let mut a: CameraKeys<u32> = CameraKeys::new(5_000_000_000, 1000);
        // Three frames before the first sender report: held.
        for i in 0..3 {
            assert!(matches!(
                a.offer(i * 33_000_000, None, i as u32),
                Step::Held
            ));
        }
        // Camera timestamps (exact, a 30 fps camera): held until eight give the period.
        for i in 3..10u64 {
            let step = a.offer(i * 33_000_000, Some(t0 + i as i64 * P), i as u32);
            assert!(matches!(step, Step::Held), "{i}");
        }
        match a.offer(10 * 33_000_000, Some(t0 + 10 * P), 10) {
            Step::Keyed(held, 10) => assert_eq!(held.len(), 10),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.rate(), Some((30, 1)));
        // A second reader started later computes the same key for the same frame, even with
        // its own capture estimate a few milliseconds off.
        let mut b: CameraKeys<u32> = CameraKeys::new(5_000_000_000, 1000);
        // Its own samples: a nanosecond apart from the first reader's period.
        for i in 20..28u64 {
            let _ = b.offer(i * 33_000_000, Some(t0 + i as i64 * (P + 1)), 0);
        }
        assert_eq!(b.rate(), Some((30, 1)));
        let frame = t0 + 40 * P;
        assert_eq!(a.key(frame), b.key(frame + 4_000_000));
        assert_eq!(a.key(frame), b.key(frame - 4_000_000));
        assert_ne!(a.key(frame), a.key(frame + P));
    }

    #[test]
    fn without_a_camera_clock_in_time_frames_go_the_usual_way() {
        let mut k: CameraKeys<u32> = CameraKeys::new(1_000_000_000, 1000);
        for i in 0..30u64 {
            assert!(matches!(k.offer(i * 33_000_000, None, 0), Step::Held));
        }
        match k.offer(31 * 33_000_000, None, 1) {
            Step::Usual(held, 1) => assert_eq!(held.len(), 30),
            other => panic!("{other:?}"),
        }
        // And from then on, without holding.
        assert!(matches!(k.offer(32 * 33_000_000, None, 2), Step::Usual(h, 2) if h.is_empty()));
        // Waiting off.
        let mut off: CameraKeys<u32> = CameraKeys::new(0, 1000);
        assert!(matches!(off.offer(0, None, 3), Step::Usual(h, 3) if h.is_empty()));
        // Bounded in count too.
        let mut small: CameraKeys<u32> = CameraKeys::new(60_000_000_000, 2);
        let _ = small.offer(0, None, 0);
        let _ = small.offer(1, None, 0);
        assert!(matches!(small.offer(2, None, 0), Step::Usual(h, 0) if h.len() == 2));
    }
}
