// SPDX-License-Identifier: MPL-2.0
//! Frame keys from the camera's own clock (`capture-time-wait`): the same frame gets the same
//! `seq` on every machine that reads the camera, so two readers at once (a `videoai-worker`
//! handover) store each frame once.
//!
//! A camera's clock reaches the pipeline as reference timestamps (`timestamp/x-ntp` from its
//! RTCP sender reports): exact, the same for every reader. Once a few frames have carried one,
//! the frame rate is known (from the median gap between them, as an exact fraction: 30/1,
//! 30000/1001 …, so that every reader gets the same one) and a frame with a timestamp gets the
//! key `round(capture × rate)`, its capture time in frame periods: no counting, no "after the
//! last stored number", so a second reader computes the first reader's keys.
//!
//! A frame without a timestamp of its own (the 2 to 5 s before a new reader's first sender
//! report, or one that lost it) is placed on the camera's frame grid from the last frame that
//! had one, the *anchor*: by its RTP time when `resilientsrc` stamped one
//! ([`crate::formats::capture_time::RTP_REFERENCE`], exact, the same mapping as the camera's
//! own), else by its running time (a few milliseconds off, and wrong for the burst a reader
//! gets while its jitterbuffer fills). Either way it gets the anchor's key plus whole frame
//! periods, so a few milliseconds of error never round to a neighbour's key.
//!
//! Until the rate is known frames are held, in memory and for at most the wait, and keyed the
//! same way once it is. If no timestamp comes in time, the held frames and all later ones are
//! numbered the usual way (`sequence.rs`): that stream then has the weaker guarantee.
//!
//! What stays: a camera whose frames fall within a sender report's jitter (~0.2 ms here) of
//! the middle between two periods of the NTP clock may round one frame differently in two
//! readers that used different reports for it.

use crate::formats::capture_time::RtpTime;

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

/// Furthest an RTP time is taken from its anchor (ns): beyond it the session may have
/// restarted with another unwrapping.
const MAX_RTP_SPAN_NS: i64 = 60_000_000_000;

/// The last frame with a camera timestamp.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    camera_ns: i64,
    rtp: Option<RtpTime>,
}

#[derive(Debug)]
pub struct CameraKeys<T> {
    wait_ns: u64,
    held: Vec<Held<T>>,
    samples: Vec<i64>,
    /// The frame rate, as a fraction every reader of the camera agrees on.
    rate: Option<(i64, i64)>,
    anchor: Option<Anchor>,
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
            anchor: None,
            gave_up: wait_ns == 0,
            max_held,
        }
    }

    /// The frame rate (numerator, denominator), once known.
    pub fn rate(&self) -> Option<(i64, i64)> {
        self.rate
    }

    /// A frame at `running_time_ns`; `camera_ns` is its camera timestamp and `rtp` its RTP
    /// time, if it has them.
    pub fn offer(
        &mut self,
        running_time_ns: u64,
        camera_ns: Option<i64>,
        rtp: Option<RtpTime>,
        payload: T,
    ) -> Step<T> {
        if let Some(c) = camera_ns {
            self.anchor = Some(Anchor { camera_ns: c, rtp });
        }
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

    /// The key and capture time of a frame (once the rate is known): from its camera timestamp
    /// `camera_ns`, else placed on the frame grid from the anchor by its RTP time `rtp`, else by
    /// `estimate()` (its capture time from the running time).
    pub fn key(
        &self,
        camera_ns: Option<i64>,
        rtp: Option<RtpTime>,
        estimate: impl FnOnce() -> i64,
    ) -> Option<(i64, i64)> {
        let (n, d) = self.rate?;
        let periods = |ns: i128| -> i64 {
            let den = d as i128 * 1_000_000_000;
            (ns * n as i128 + den / 2).div_euclid(den) as i64
        };
        if let Some(c) = camera_ns {
            return Some((periods(c as i128), c));
        }
        let Some(anchor) = self.anchor else {
            // The rate comes from timestamped frames, so there is an anchor; kept safe anyway.
            let c = estimate();
            return Some((periods(c as i128), c));
        };
        let anchor_key = periods(anchor.camera_ns as i128);
        if let (Some(r), Some(a)) = (rtp, anchor.rtp)
            && r.ssrc == a.ssrc
            && (r.ns - a.ns).abs() <= MAX_RTP_SPAN_NS
        {
            let delta = r.ns - a.ns;
            return Some((
                anchor_key + periods(delta as i128),
                anchor.camera_ns + delta,
            ));
        }
        let steps = periods(estimate() as i128 - anchor.camera_ns as i128);
        let snapped = steps as i128 * d as i128 * 1_000_000_000 / n as i128;
        Some((anchor_key + steps, anchor.camera_ns + snapped as i64))
    }

    /// Frames still held (end of stream): to be stored the usual way.
    pub fn drain(&mut self) -> Vec<Held<T>> {
        std::mem::take(&mut self.held)
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether the camera's clock is still awaited (neither known nor given up).
    pub fn waiting(&self) -> bool {
        self.rate.is_none() && !self.gave_up
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
                a.offer(i * 33_000_000, None, None, i as u32),
                Step::Held
            ));
        }
        // Camera timestamps (exact, a 30 fps camera): held until eight give the period.
        for i in 3..10u64 {
            let step = a.offer(i * 33_000_000, Some(t0 + i as i64 * P), None, i as u32);
            assert!(matches!(step, Step::Held), "{i}");
        }
        assert!(a.waiting());
        match a.offer(10 * 33_000_000, Some(t0 + 10 * P), None, 10) {
            Step::Keyed(held, 10) => assert_eq!(held.len(), 10),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.rate(), Some((30, 1)));
        assert!(!a.waiting());
        // A second reader started later computes the same key for the same frame, even with
        // its own capture estimate a few milliseconds off.
        let mut b: CameraKeys<u32> = CameraKeys::new(5_000_000_000, 1000);
        // Its own samples: a nanosecond apart from the first reader's period.
        for i in 20..28u64 {
            let _ = b.offer(i * 33_000_000, Some(t0 + i as i64 * (P + 1)), None, 0);
        }
        assert_eq!(b.rate(), Some((30, 1)));
        let frame = t0 + 40 * P;
        let exact =
            |k: &CameraKeys<u32>, c: i64| k.key(Some(c), None, || unreachable!()).unwrap().0;
        let estimated = |k: &CameraKeys<u32>, c: i64| k.key(None, None, || c).unwrap().0;
        assert_eq!(exact(&a, frame), estimated(&b, frame + 4_000_000));
        assert_eq!(exact(&a, frame), estimated(&b, frame - 4_000_000));
        assert_ne!(exact(&a, frame), exact(&a, frame + P));
    }

    /// A 30 fps camera whose frames lie `phase` periods past the NTP clock's period grid.
    fn camera(phase: f64) -> impl Fn(i64) -> i64 {
        let t0 = 1_796_000_000_000_000_000i64 / P * P + (phase * P as f64) as i64;
        move |i| t0 + i * 1_000_000_000 / 30
    }

    /// Reader `a` with the rate known from exact frames 0..10; returns the keys of frames 0..n
    /// from their exact timestamps.
    fn first_reader(cam: &impl Fn(i64) -> i64, n: i64) -> (CameraKeys<u32>, Vec<i64>) {
        let mut a: CameraKeys<u32> = CameraKeys::new(5_000_000_000, 1000);
        for i in 0..10 {
            let _ = a.offer(i as u64 * 33_000_000, Some(cam(i)), None, 0);
        }
        let keys = (0..n)
            .map(|i| a.key(Some(cam(i)), None, || unreachable!()).unwrap().0)
            .collect();
        (a, keys)
    }

    #[test]
    fn frames_before_the_first_report_get_the_first_reader_s_keys_at_any_phase() {
        // The camera's frames half a period off the NTP grid: a millisecond of error in a
        // capture estimate used to round to the neighbour's key, so every frame of the overlap
        // was stored twice. Placed on the grid from an exact frame, it cannot.
        for phase in [0.0, 0.25, 0.4995, 0.5, 0.5005, 0.75, 0.9999] {
            let cam = camera(phase);
            let (_, keys) = first_reader(&cam, 200);
            assert!(keys.windows(2).all(|w| w[1] == w[0] + 1), "{phase}");
            // Reader b starts at frame 100: frames 100..150 before its first sender report,
            // estimated from its running time within ±6 ms; from frame 150 exact.
            let mut b: CameraKeys<u32> = CameraKeys::new(5_000_000_000, 1000);
            let mut held = Vec::new();
            for i in 100..160i64 {
                let err = [-6_000_000, 3_000_000, 0, 6_000_000, -1_000_000][i as usize % 5];
                let exact = (i >= 150).then(|| cam(i));
                match b.offer(i as u64 * 33_333_333, exact, None, i as u32) {
                    Step::Held => held.push((i, exact, cam(i) + err)),
                    Step::Keyed(h, _) => {
                        assert_eq!(h.len(), held.len());
                        for (i, exact, est) in &held {
                            let (k, c) = b.key(*exact, None, || *est).unwrap();
                            assert_eq!(k, keys[*i as usize], "phase {phase} frame {i}");
                            assert!((c - cam(*i)).abs() <= 1, "{c} {}", cam(*i));
                        }
                        held.clear();
                    }
                    Step::Usual(..) => panic!("gave up"),
                }
                if exact.is_some() && held.is_empty() {
                    let k = b.key(exact, None, || unreachable!()).unwrap().0;
                    assert_eq!(k, keys[i as usize], "phase {phase} frame {i}");
                }
            }
        }
    }

    #[test]
    fn rtp_times_key_the_burst_of_a_new_reader_exactly() {
        // While its jitterbuffer fills, a new reader gets frames in a burst: their running
        // times say nothing of when they were taken, their RTP times do.
        let cam = camera(0.5);
        let (_, keys) = first_reader(&cam, 200);
        let rtp = |i: i64, ssrc| RtpTime {
            ssrc,
            // This reader's own unwrapping: any offset.
            ns: 777_000_000_000 + i * 1_000_000_000 / 30,
        };
        let mut b: CameraKeys<u32> = CameraKeys::new(5_000_000_000, 1000);
        for i in 100..130i64 {
            // The first 20 frames arrive within 5 ms, without a camera timestamp.
            let exact = (i >= 120).then(|| cam(i));
            let _ = b.offer(5_000_000, exact, Some(rtp(i, 1)), 0);
        }
        for i in 100..120i64 {
            let (k, c) = b.key(None, Some(rtp(i, 1)), || cam(100)).unwrap();
            assert_eq!(k, keys[i as usize], "frame {i}");
            assert!((c - cam(i)).abs() <= 1);
        }
        // Another SSRC (the camera restarted) is not mapped by this one's anchor: the estimate
        // is used.
        let (k, _) = b.key(None, Some(rtp(110, 2)), || cam(112)).unwrap();
        assert_eq!(k, keys[112]);
    }

    #[test]
    fn without_a_camera_clock_in_time_frames_go_the_usual_way() {
        let mut k: CameraKeys<u32> = CameraKeys::new(1_000_000_000, 1000);
        for i in 0..30u64 {
            assert!(matches!(k.offer(i * 33_000_000, None, None, 0), Step::Held));
        }
        match k.offer(31 * 33_000_000, None, None, 1) {
            Step::Usual(held, 1) => assert_eq!(held.len(), 30),
            other => panic!("{other:?}"),
        }
        assert!(!k.waiting(), "gave up");
        // And from then on, without holding.
        assert!(
            matches!(k.offer(32 * 33_000_000, None, None, 2), Step::Usual(h, 2) if h.is_empty())
        );
        // Waiting off.
        let mut off: CameraKeys<u32> = CameraKeys::new(0, 1000);
        assert!(matches!(off.offer(0, None, None, 3), Step::Usual(h, 3) if h.is_empty()));
        // Bounded in count too.
        let mut small: CameraKeys<u32> = CameraKeys::new(60_000_000_000, 2);
        let _ = small.offer(0, None, None, 0);
        let _ = small.offer(1, None, None, 0);
        assert!(matches!(small.offer(2, None, None, 0), Step::Usual(h, 0) if h.len() == 2));
    }
}
