// SPDX-License-Identifier: MPL-2.0
//! The camera's clock for one stream: places frames on the camera's frame grid, so that every
//! reader of the camera (two workers during a handover, a worker restarted) gives each frame the
//! same key.
//!
//! A frame brings up to two clocks of its camera:
//!
//! * its **RTP time** (`timestamp/x-videoai-rtp`, stamped by `resilientsrc` on every packet):
//!   exact, from the first packet on, the same 32-bit value for every reader of a shared camera
//!   stream, but without an epoch;
//! * its **capture time** (`timestamp/x-ntp`, from the camera's RTCP sender reports): wall-clock,
//!   known only once the reader's first sender report came (2 to 7 s after joining), with a
//!   jitter of ~0.2 ms between reports.
//!
//! **The period** comes from the RTP times (the smallest step between frames, in ticks: the same
//! for every reader, known from the second frame, measured again when the camera changes its
//! rate), or, for a camera with capture times only, from the median step between them snapped to
//! an exact rate (30/1, 30000/1001 …).
//!
//! **Keys are chained** from the last keyed frame, the *anchor*: a frame gets the anchor's key
//! plus the whole periods between them, counted in RTP ticks (same SSRC: exact) or else in
//! capture time (a few tenths of a millisecond off, far from half a period). Never from a
//! capture time rounded on its own: a camera whose frames lie half a period off the epoch's grid
//! would round one frame differently in two readers that used different sender reports.
//! The first anchor of a stream is the last frame stored for it (the log says: another reader's,
//! or this one's before a restart), with its [`ClockMark`]; only a camera never stored before
//! starts from `round(capture × rate)`.
//!
//! So a taker whose camera has the SSRC of the anchor keys its very first frame; with another
//! SSRC (the camera restarted) it waits for a capture time. Frames wait in [`super::StreamKeys`],
//! which decides how long.

use crate::eventlog::event::ClockMark;

/// A frame's RTP time, as `resilientsrc` stamps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtp {
    pub ssrc: u32,
    /// Unwrapped RTP timestamp of this reader's session (ticks).
    pub ticks: i64,
    pub clock_rate: u32,
}

impl Rtp {
    /// The 32-bit timestamp the camera sent.
    fn wire(self) -> u32 {
        self.ticks as u32
    }
}

/// The RTP side of an anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnchorRtp {
    /// A frame of this reader's session.
    Own(Rtp),
    /// From the log: only the 32-bit timestamp the camera sent means anything here.
    Stored {
        ssrc: u32,
        wire: u32,
        clock_rate: u32,
    },
}

impl AnchorRtp {
    /// Ticks from the anchor to `r`, when both are of one RTP stream.
    fn ticks_to(self, r: Rtp) -> Option<i64> {
        match self {
            AnchorRtp::Own(a) if a.ssrc == r.ssrc && a.clock_rate == r.clock_rate => {
                Some(r.ticks - a.ticks)
            }
            AnchorRtp::Stored {
                ssrc,
                wire,
                clock_rate,
            } if ssrc == r.ssrc && clock_rate == r.clock_rate => {
                Some(r.wire().wrapping_sub(wire) as i32 as i64)
            }
            _ => None,
        }
    }
}

/// The last keyed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    seq: i64,
    capture_ns: i64,
    rtp: Option<AnchorRtp>,
}

/// A frame as the clock sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp {
    /// The camera's capture time (ns since the Unix epoch), when the frame carries one.
    pub camera_ns: Option<i64>,
    pub rtp: Option<Rtp>,
}

/// Steps kept to notice a camera that changed its frame rate.
const RECENT: usize = 8;
/// Capture times needed for a period when there are no RTP times: this many, spanning
/// [`NTP_SPAN_NS`] (their jitter, ~0.2 ms, then moves the period by less than 0.02 %: 30 and
/// 30000/1001 fps apart).
const NTP_SAMPLES: usize = 8;
const NTP_SPAN_NS: i64 = 2_000_000_000;
/// Shortest frame period believed (ns): 1/1000 s.
const MIN_PERIOD_NS: i64 = 1_000_000;

#[derive(Debug, Default)]
pub struct CameraClock {
    /// The frame period in RTP ticks, with the clock rate.
    rtp_period: Option<(i64, u32)>,
    /// Recent RTP steps (ticks), newest last.
    recent: Vec<i64>,
    prev_rtp: Option<Rtp>,
    /// Capture times seen (for cameras without RTP times), until the period is known.
    ntp_samples: Vec<i64>,
    ntp_period_ns: Option<i64>,
    /// A frame with both clocks: maps RTP times of its SSRC to capture times.
    mapping: Option<(Rtp, i64)>,
    anchor: Option<Anchor>,
}

impl CameraClock {
    /// Continues from `seq` (stored with `capture_ns` and `mark`): the last frame stored for the
    /// stream, by any reader.
    pub fn continue_from(&mut self, seq: i64, capture_ns: i64, mark: Option<ClockMark>) {
        let rtp = mark.and_then(|m| {
            Some(AnchorRtp::Stored {
                ssrc: m.ssrc?,
                wire: m.rtp?,
                clock_rate: m.clock_rate?,
            })
        });
        if let Some(m) = mark {
            if let (None, Some(t), Some(r)) = (self.rtp_period, m.frame_ticks, m.clock_rate)
                && t > 0
                && r > 0
            {
                self.rtp_period = Some((t as i64, r));
            }
            if self.ntp_period_ns.is_none() && m.period_ns >= MIN_PERIOD_NS {
                self.ntp_period_ns = Some(m.period_ns);
            }
        }
        if self.anchor.is_none_or(|a| a.seq < seq) {
            self.anchor = Some(Anchor {
                seq,
                capture_ns,
                rtp,
            });
        }
    }

    /// Learns from a frame: the period, the RTP → capture time mapping.
    pub fn observe(&mut self, s: Stamp) {
        if let Some(r) = s.rtp {
            match self.prev_rtp {
                Some(p) if p.ssrc == r.ssrc && p.clock_rate == r.clock_rate => {
                    self.rtp_step(r.ticks - p.ticks, r.clock_rate)
                }
                _ => self.recent.clear(),
            }
            self.prev_rtp = Some(r);
            if let Some(c) = s.camera_ns {
                self.mapping = Some((r, c));
            }
        } else if let (Some(c), None) = (s.camera_ns, self.ntp_period_ns) {
            self.ntp_samples.push(c);
            self.ntp_period_ns = ntp_period(&self.ntp_samples);
        }
    }

    /// One step between consecutive frames of one RTP stream.
    fn rtp_step(&mut self, step: i64, rate: u32) {
        // Shorter than a millisecond is no frame period (the same frame twice, a broken stamp).
        if step * 1000 < rate as i64 {
            return;
        }
        self.recent.push(step);
        if self.recent.len() > RECENT {
            self.recent.remove(0);
        }
        let period = match self.rtp_period {
            Some((p, r)) if r == rate => p,
            _ => {
                self.rtp_period = Some((step, rate));
                return;
            }
        };
        if step * 50 < period * 49 {
            // Shorter than the period: the period was a multiple (frames dropped before us).
            self.rtp_period = Some((step, rate));
        } else if self.recent.len() == RECENT
            && self.recent.iter().all(|s| !is_multiple(*s, period))
        {
            // The camera slowed down to a rate that is no fraction of the old one.
            let p = *self.recent.iter().min().expect("RECENT steps");
            self.rtp_period = Some((p, rate));
        }
    }

    /// The frame period (ns), once known.
    pub fn period_ns(&self) -> Option<i64> {
        match self.rtp_period {
            Some((t, r)) => Some((t as i128 * 1_000_000_000 / r as i128) as i64),
            None => self.ntp_period_ns,
        }
    }

    /// Whether a frame has been keyed (or the log gave the last key).
    pub fn anchored(&self) -> bool {
        self.anchor.is_some()
    }

    /// The frame's capture time: its own, or from its RTP time through the mapping.
    fn capture_of(&self, s: Stamp) -> Option<i64> {
        if s.camera_ns.is_some() {
            return s.camera_ns;
        }
        let (r, (mr, mc)) = (s.rtp?, self.mapping?);
        (r.ssrc == mr.ssrc && r.clock_rate == mr.clock_rate).then(|| {
            mc + ((r.ticks - mr.ticks) as i128 * 1_000_000_000 / r.clock_rate as i128) as i64
        })
    }

    /// The key and capture time of a frame, if the camera's clock places it now; it then
    /// becomes the anchor (when its key is the highest yet). Returns also what to store with it.
    pub fn place(&mut self, s: Stamp) -> Option<(i64, i64, ClockMark)> {
        let period_ns = self.period_ns()?;
        let capture = self.capture_of(s);
        let (seq, capture_ns) = match (self.anchor, s.rtp, capture) {
            // Counted in RTP ticks from the anchor: exact.
            (Some(a), Some(r), c)
                if a.rtp.and_then(|ar| ar.ticks_to(r)).is_some() && self.rtp_period.is_some() =>
            {
                let ticks = a.rtp.and_then(|ar| ar.ticks_to(r)).expect("checked");
                let (frame_ticks, _) = self.rtp_period.expect("checked");
                let c = c.unwrap_or_else(|| {
                    a.capture_ns + (ticks as i128 * 1_000_000_000 / r.clock_rate as i128) as i64
                });
                (a.seq + div_round(ticks, frame_ticks), c)
            }
            // Counted in capture time from the anchor.
            (Some(a), _, Some(c)) => (a.seq + div_round(c - a.capture_ns, period_ns), c),
            // The camera's first frame ever stored: its capture time in frame periods.
            (None, _, Some(c)) => {
                let (n, d) = match self.rtp_period {
                    Some((t, r)) => (r as i64, t),
                    None => rate_of(period_ns),
                };
                let den = d as i128 * 1_000_000_000;
                let seq = (c as i128 * n as i128 + den / 2).div_euclid(den) as i64;
                (seq, c)
            }
            _ => return None,
        };
        let own_rtp = s.rtp.map(AnchorRtp::Own);
        if self.anchor.is_none_or(|a| seq >= a.seq) {
            self.anchor = Some(Anchor {
                seq,
                capture_ns,
                rtp: own_rtp,
            });
        }
        let mark = ClockMark {
            period_ns,
            ssrc: s.rtp.map(|r| r.ssrc),
            rtp: s.rtp.map(|r| r.wire()),
            clock_rate: s.rtp.map(|r| r.clock_rate),
            frame_ticks: s
                .rtp
                .and(self.rtp_period)
                .and_then(|(t, _)| u32::try_from(t).ok()),
        };
        Some((seq, capture_ns, mark))
    }
}

/// `a / b` rounded to the nearest whole number (half away from zero).
fn div_round(a: i64, b: i64) -> i64 {
    let (a, b) = (a as i128, b as i128);
    let q = if a >= 0 {
        (2 * a + b) / (2 * b)
    } else {
        -((-2 * a + b) / (2 * b))
    };
    q as i64
}

/// Whether `step` is within 2 % of a whole multiple of `period`.
fn is_multiple(step: i64, period: i64) -> bool {
    let n = div_round(step, period).max(1);
    (step - n * period).abs() * 50 <= period
}

/// The frame rate of a frame period, as an exact fraction that does not depend on the
/// nanoseconds of one measurement: whole rates (25, 30, 60 …) and NTSC ones (30000/1001 …),
/// else thousandths of a frame per second.
pub fn rate_of(period_ns: i64) -> (i64, i64) {
    let fps = 1e9 / period_ns as f64;
    let whole = fps.round();
    if whole >= 1.0 && (fps - whole).abs() < whole * 2e-4 {
        return (whole as i64, 1);
    }
    let ntsc = (fps * 1.001).round();
    if ntsc >= 1.0 && (fps - ntsc / 1.001).abs() < ntsc * 2e-4 {
        return (ntsc as i64 * 1000, 1001);
    }
    ((fps * 1000.0).round() as i64, 1000)
}

fn period_of_rate((n, d): (i64, i64)) -> i64 {
    (d as i128 * 1_000_000_000 / n.max(1) as i128) as i64
}

/// The frame period from capture times with jitter: the median step tells how many frames lie
/// between the first and the last, whose distance over that many gives the period.
fn ntp_period(samples: &[i64]) -> Option<i64> {
    let (first, last) = (*samples.iter().min()?, *samples.iter().max()?);
    let span = last - first;
    if samples.len() < NTP_SAMPLES || span < NTP_SPAN_NS {
        return None;
    }
    let step = median_step(samples)?;
    let frames = div_round(span, step).max(1);
    Some(period_of_rate(rate_of(span / frames))).filter(|p| *p >= MIN_PERIOD_NS)
}

/// The median step between consecutive distinct capture times.
fn median_step(samples: &[i64]) -> Option<i64> {
    let mut s = samples.to_vec();
    s.sort();
    let mut steps: Vec<i64> = s
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort();
    Some(steps[steps.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: i64 = 33_333_333;

    /// A 30 fps camera whose frames lie `phase` periods past the epoch's 30 fps grid: frame `i`'s
    /// capture time, and its RTP time (90 kHz, reader session starting at `first`).
    fn camera(phase: f64) -> impl Fn(i64) -> i64 {
        let t0 = 1_796_000_000_000_000_000i64 / P * P + (phase * P as f64) as i64;
        move |i| t0 + (i as i128 * 1_000_000_000 / 30) as i64
    }

    fn rtp(i: i64, ssrc: u32) -> Rtp {
        Rtp {
            ssrc,
            ticks: (1i64 << 32) + 40_000 + i * 3000,
            clock_rate: 90_000,
        }
    }

    #[test]
    fn rates_are_exact_fractions() {
        assert_eq!(rate_of(33_333_333), (30, 1));
        assert_eq!(rate_of(33_333_334), (30, 1));
        assert_eq!(rate_of(40_000_000), (25, 1));
        assert_eq!(rate_of(33_366_667), (30_000, 1001));
        assert_eq!(rate_of(16_683_333), (60_000, 1001));
        assert_eq!(rate_of(80_000_000), (12_500, 1000));
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(-5, 2), -3);
        assert_eq!(div_round(4, 3), 1);
    }

    #[test]
    fn the_period_comes_from_rtp_from_the_second_frame_and_follows_the_camera() {
        let mut c = CameraClock::default();
        c.observe(Stamp {
            camera_ns: None,
            rtp: Some(rtp(0, 1)),
        });
        assert_eq!(c.period_ns(), None);
        // Frame 1 was dropped before us: the first step is two periods…
        c.observe(Stamp {
            camera_ns: None,
            rtp: Some(rtp(2, 1)),
        });
        assert_eq!(c.rtp_period, Some((6000, 90_000)));
        // …until a one-period step comes.
        c.observe(Stamp {
            camera_ns: None,
            rtp: Some(rtp(3, 1)),
        });
        assert_eq!(c.period_ns(), Some(33_333_333));
        // Frames dropped now and then do not change it.
        for i in [5, 6, 9, 10, 11] {
            c.observe(Stamp {
                camera_ns: None,
                rtp: Some(rtp(i, 1)),
            });
        }
        assert_eq!(c.rtp_period, Some((3000, 90_000)));
        // The camera goes to 25 fps (3600 ticks): after eight such steps, that is the period.
        let mut t = rtp(11, 1).ticks;
        for _ in 0..8 {
            t += 3600;
            c.observe(Stamp {
                camera_ns: None,
                rtp: Some(Rtp {
                    ticks: t,
                    ..rtp(0, 1)
                }),
            });
        }
        assert_eq!(c.rtp_period, Some((3600, 90_000)));
    }

    #[test]
    fn chained_keys_agree_between_readers_at_any_phase() {
        // Reader a keys from capture times (its own sender reports), b from a's last stored
        // frame; b's capture times are up to ±0.3 ms off a's (other reports): every frame gets
        // the same key, whatever the phase of the camera's frames against the epoch's grid.
        for phase in [0.0, 0.25, 0.4999, 0.5, 0.5001, 0.75, 0.9999] {
            let cam = camera(phase);
            let mut a = CameraClock::default();
            let mut keys = Vec::new();
            for i in 0..100 {
                let s = Stamp {
                    camera_ns: Some(cam(i)),
                    rtp: Some(rtp(i, 7)),
                };
                a.observe(s);
                keys.push(a.place(s).map(|k| k.0));
            }
            assert_eq!(keys[0], None, "period unknown at the first frame");
            let keys: Vec<i64> = keys.into_iter().flatten().collect();
            assert!(keys.windows(2).all(|w| w[1] == w[0] + 1), "{phase}");
            // b without RTP: capture times only, other reports.
            let (last_seq, last_capture) = (keys[keys.len() - 1], cam(99));
            let mut b = CameraClock::default();
            b.continue_from(
                last_seq,
                last_capture,
                Some(ClockMark {
                    period_ns: P,
                    ssrc: None,
                    rtp: None,
                    clock_rate: None,
                    frame_ticks: None,
                }),
            );
            for i in 80..140i64 {
                let err = [-300_000, 200_000, 0, 300_000, -100_000][i as usize % 5];
                let s = Stamp {
                    camera_ns: Some(cam(i) + err),
                    rtp: None,
                };
                b.observe(s);
                let (k, _, _) = b.place(s).unwrap();
                assert_eq!(k, last_seq + (i - 99), "phase {phase} frame {i}");
            }
        }
    }

    #[test]
    fn a_taker_with_the_anchor_s_ssrc_keys_its_first_frame_from_rtp() {
        let cam = camera(0.5);
        let mut a = CameraClock::default();
        let mut last = None;
        for i in 0..30 {
            let s = Stamp {
                camera_ns: Some(cam(i)),
                rtp: Some(rtp(i, 9)),
            };
            a.observe(s);
            last = a.place(s);
        }
        let (seq, capture, mark) = last.unwrap();
        assert_eq!(mark.frame_ticks, Some(3000));
        // The taker's session unwraps differently (another start): only the 32 bits matter.
        let mut b = CameraClock::default();
        b.continue_from(seq, capture, Some(mark));
        let taker = |i: i64| Rtp {
            ticks: rtp(i, 9).ticks - (1i64 << 32) + (5i64 << 32),
            ..rtp(i, 9)
        };
        let s = Stamp {
            camera_ns: None,
            rtp: Some(taker(45)),
        };
        b.observe(s);
        let (k, c, _) = b.place(s).expect("placed at the first frame");
        assert_eq!(k, seq + 16);
        assert!((c - cam(45)).abs() <= 1, "{c} {}", cam(45));
        // A camera restarted (another SSRC) cannot be placed without a capture time…
        let other = Stamp {
            camera_ns: None,
            rtp: Some(rtp(50, 10)),
        };
        b.observe(other);
        assert!(b.place(other).is_none());
        // …and is, from its capture time, once it has one.
        let other = Stamp {
            camera_ns: Some(cam(51) + 7_000_000),
            rtp: Some(rtp(51, 10)),
        };
        b.observe(other);
        assert_eq!(b.place(other).unwrap().0, seq + 22);
    }

    #[test]
    fn frames_without_a_capture_time_are_placed_by_the_mapping_of_their_ssrc() {
        // A burst before the first report, then one frame with a capture time: that one frame
        // places the others (by RTP), whatever their arrival.
        let cam = camera(0.5);
        let mut c = CameraClock::default();
        for i in 0..5 {
            c.observe(Stamp {
                camera_ns: None,
                rtp: Some(rtp(i, 3)),
            });
            assert!(
                c.place(Stamp {
                    camera_ns: None,
                    rtp: Some(rtp(i, 3)),
                })
                .is_none()
            );
        }
        let with = Stamp {
            camera_ns: Some(cam(5)),
            rtp: Some(rtp(5, 3)),
        };
        c.observe(with);
        let first = c
            .place(Stamp {
                camera_ns: None,
                rtp: Some(rtp(0, 3)),
            })
            .unwrap();
        assert!((first.1 - cam(0)).abs() <= 1);
        let k5 = c.place(with).unwrap().0;
        assert_eq!(k5, first.0 + 5);
    }

    #[test]
    fn cameras_with_capture_times_only_get_a_period_from_them() {
        let cam = camera(0.3);
        let mut c = CameraClock::default();
        let mut placed = Vec::new();
        for i in 0..80 {
            let s = Stamp {
                camera_ns: Some(cam(i) + [0, 150_000, -150_000][i as usize % 3]),
                rtp: None,
            };
            c.observe(s);
            placed.push(c.place(s).map(|p| p.0));
        }
        assert_eq!(c.period_ns(), Some(33_333_333));
        assert!(
            placed[..60].iter().all(Option::is_none),
            "two seconds first"
        );
        // An NTSC camera is told apart.
        let mut ntsc = CameraClock::default();
        for i in 0..70i64 {
            let c =
                1_796_000_000_000_000_000 + i * 33_366_667 + [0, 150_000, -150_000][i as usize % 3];
            ntsc.observe(Stamp {
                camera_ns: Some(c),
                rtp: None,
            });
        }
        assert_eq!(ntsc.period_ns(), Some(33_366_666));
        let keys: Vec<i64> = placed.into_iter().flatten().collect();
        assert!(keys.windows(2).all(|w| w[1] == w[0] + 1), "{keys:?}");
    }
}
