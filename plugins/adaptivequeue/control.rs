// SPDX-License-Identifier: MPL-2.0
//! The feedback controller of `adaptivequeue` (mode `adaptive`).
//!
//! * `processing`: EWMA of the time downstream takes per buffer (the duration of each push).
//! * `interval`: EWMA of the running-time distance between incoming buffers (the input rate).
//! * `qos`: EWMA of the `proportion` of downstream QoS events (1.0 = keeping up, 2.0 = half as
//!   fast as needed), decaying back to 1.0 when no QoS events come.
//!
//! Sustainable share of the input = min(interval / processing, 1 / qos). While the queue level is
//! above the target latency, the pass ratio is lowered to 95 % of that share (at most once per
//! [`ADJUST_PERIOD`] of running time), so the queue drains slowly; while the level is below the
//! target, the ratio climbs back in +5 % steps (once per [`ADJUST_PERIOD`]) up to 1.0.
//!
//! Frames are let through by a credit counter (`credit += ratio`; a frame passes when the credit
//! reaches 1), which spreads the dropped frames evenly.

/// Least pass ratio the controller goes down to.
pub const MIN_RATIO: f64 = 0.02;
/// Step by which the ratio recovers.
pub const RECOVERY_STEP: f64 = 0.05;
/// Running time between two ratio adjustments, in nanoseconds.
pub const ADJUST_PERIOD: u64 = 100_000_000;

/// An exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ewma {
    value: Option<f64>,
}

impl Ewma {
    pub fn update(&mut self, sample: f64, alpha: f64) {
        self.value = Some(match self.value {
            Some(v) => v + alpha * (sample - v),
            None => sample,
        });
    }

    pub fn get(&self) -> Option<f64> {
        self.value
    }
}

#[derive(Debug, Clone)]
pub struct Controller {
    pub alpha: f64,
    /// Seconds per buffer downstream.
    pub processing: Ewma,
    /// Seconds of running time between incoming buffers.
    pub interval: Ewma,
    /// QoS proportion.
    pub qos: Ewma,
    ratio: f64,
    credit: f64,
    last_rt: Option<u64>,
    last_adjust: Option<u64>,
}

impl Controller {
    pub fn new(alpha: f64) -> Self {
        Controller {
            alpha,
            processing: Ewma::default(),
            interval: Ewma::default(),
            qos: Ewma::default(),
            ratio: 1.0,
            credit: 0.0,
            last_rt: None,
            last_adjust: None,
        }
    }

    /// Forgets the measurements of the input (after a flush or a new stream).
    pub fn reset_input(&mut self) {
        self.last_rt = None;
        self.last_adjust = None;
        self.credit = 0.0;
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    pub fn record_processing(&mut self, seconds: f64) {
        self.processing.update(seconds, self.alpha);
    }

    pub fn record_qos(&mut self, proportion: f64) {
        if proportion.is_finite() && proportion > 0.0 {
            self.qos.update(proportion, self.alpha);
        }
    }

    /// Records an incoming buffer's running time (ns).
    pub fn record_arrival(&mut self, rt: Option<u64>) {
        if let Some(rt) = rt {
            if let Some(last) = self.last_rt
                && rt > last
            {
                self.interval.update((rt - last) as f64 / 1e9, self.alpha);
            }
            self.last_rt = Some(rt);
        }
    }

    /// Share of the input downstream can take, from the measurements (1.0 when unknown).
    pub fn sustainable_share(&self) -> f64 {
        let by_time = match (self.interval.get(), self.processing.get()) {
            (Some(i), Some(p)) if p > 0.0 => i / p,
            _ => 1.0,
        };
        let by_qos = self.qos.get().map(|q| 1.0 / q.max(1e-3)).unwrap_or(1.0);
        by_time.min(by_qos).clamp(0.0, 1.0)
    }

    /// Adjusts the ratio for the current queue `level` against `target` (both ns) at running
    /// time `now` (ns).
    pub fn adjust(&mut self, level: u64, target: u64, now: u64) {
        if let Some(last) = self.last_adjust
            && now < last + ADJUST_PERIOD
            && now >= last
        {
            return;
        }
        self.last_adjust = Some(now);
        if level > target {
            let share = (self.sustainable_share() * 0.95).clamp(MIN_RATIO, 1.0);
            self.ratio = if self.ratio > share {
                share
            } else {
                // Still above target although the ratio already matches: drain a bit faster.
                (self.ratio * 0.95).max(MIN_RATIO)
            };
        } else {
            self.ratio = (self.ratio + RECOVERY_STEP).min(1.0);
            // QoS only counts while it is fresh: let it decay towards 1.0.
            if self.qos.get().is_some() {
                self.qos.update(1.0, self.alpha);
            }
        }
    }

    /// Whether the next frame passes under the current ratio.
    pub fn admit(&mut self) -> bool {
        if self.ratio >= 1.0 {
            self.credit = 0.0;
            return true;
        }
        self.credit += self.ratio;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_converges() {
        let mut e = Ewma::default();
        e.update(10.0, 0.2);
        assert_eq!(e.get(), Some(10.0));
        for _ in 0..100 {
            e.update(20.0, 0.2);
        }
        assert!((e.get().unwrap() - 20.0).abs() < 1e-6);
    }

    #[test]
    fn thins_to_the_sustainable_rate_and_recovers() {
        let mut c = Controller::new(0.2);
        // 30 fps in, 100 ms per frame downstream: a third is sustainable.
        for i in 0..30u64 {
            c.record_arrival(Some(i * 33_333_333));
            c.record_processing(0.1);
        }
        assert!((c.sustainable_share() - 0.3333).abs() < 0.01);
        c.adjust(600_000_000, 400_000_000, 1_000_000_000);
        assert!((c.ratio() - 0.3167).abs() < 0.01, "{}", c.ratio());
        // Evenly spread: about one frame in three passes, never two in a row.
        let passed: Vec<bool> = (0..30).map(|_| c.admit()).collect();
        let n = passed.iter().filter(|p| **p).count();
        assert!((9..=10).contains(&n), "{n}");
        assert!(passed.windows(2).all(|w| !(w[0] && w[1])));
        // Not again within the adjust period.
        c.adjust(0, 400_000_000, 1_050_000_000);
        assert!(c.ratio() < 0.35);
        // Below target: +5 % per period up to 1.0.
        let mut now = 1_100_000_000;
        for _ in 0..20 {
            c.adjust(0, 400_000_000, now);
            now += ADJUST_PERIOD;
        }
        assert_eq!(c.ratio(), 1.0);
        assert!((0..10).all(|_| c.admit()));
    }

    #[test]
    fn qos_proportion_limits_the_share() {
        let mut c = Controller::new(1.0);
        c.record_qos(4.0);
        assert!((c.sustainable_share() - 0.25).abs() < 1e-9);
        c.record_qos(f64::NAN);
        assert!((c.sustainable_share() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn keeps_draining_while_above_target() {
        let mut c = Controller::new(0.2);
        let mut now = 0;
        for _ in 0..10 {
            c.adjust(900_000_000, 400_000_000, now);
            now += ADJUST_PERIOD;
        }
        // Unknown rates: share 1.0, but the level stays high, so the ratio keeps falling.
        assert!(c.ratio() < 0.7, "{}", c.ratio());
    }
}

/// What a GOP may pass, worked out at its keyframe (adaptive mode, encoded video).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GopPlan {
    /// Share of the input downstream sustains (1.0: all of it).
    pub share: f64,
    /// Frames still queued when the keyframe comes: downstream's time goes to them first.
    pub leftover: f64,
    /// Most frames a burst may have for its last one to leave within max-latency.
    pub max_burst: f64,
}

/// Share of the sustainable rate a GOP's budget aims at, leaving a margin for jitter.
const GOP_SHARE_MARGIN: f64 = 0.95;

/// Thinning encoded video (adaptive mode): frames can only go as whole GOP tails, so what
/// downstream sustains is spent per GOP. At each keyframe the GOP gets a budget: the frames
/// downstream can take over one GOP (`share × GOP length`), less what is still queued from
/// before, at most what can leave within max-latency; fractions carry on to the next GOP.
/// Its first frames pass while the budget lasts and the rest of the GOP is cut; a GOP whose
/// budget does not reach one frame goes whole, keyframe included. The delivered rate so tracks
/// the sustainable one whatever the GOP length (refusing single frames, a GOP loses its whole
/// tail at the first refusal: at GOP 30 and a third sustainable, about half was delivered).
#[derive(Debug, Clone, Default)]
pub struct GopBudget {
    /// Frames per GOP (EWMA of the distance between keyframes).
    len: Ewma,
    /// Frames since the last keyframe (that one included).
    since_key: u32,
    budget: f64,
    /// The rest of this GOP goes.
    cutting: bool,
}

impl GopBudget {
    /// Forgets the stream (flush, new stream).
    pub fn reset(&mut self) {
        *self = GopBudget::default();
    }

    /// Counts every incoming frame (`key`: a keyframe), dropped or not: the GOP length.
    pub fn observe(&mut self, key: bool, alpha: f64) {
        if key {
            if self.since_key > 0 {
                self.len.update(self.since_key as f64, alpha);
            }
            self.since_key = 1;
        } else {
            self.since_key += 1;
        }
    }

    /// Whether the next frame (`key`: a keyframe, after [`Self::observe`]) passes; `plan` is
    /// asked at keyframes (and for the frames of the first GOP).
    pub fn admit(&mut self, key: bool, plan: impl FnOnce() -> GopPlan) -> bool {
        if !key {
            if self.cutting {
                return false;
            }
            if self.budget.is_infinite() {
                // The GOP length is not known yet (the first GOP): it goes on while its burst
                // can still leave within max-latency.
                let plan = plan();
                if plan.share >= 1.0 || plan.leftover < plan.max_burst {
                    return true;
                }
            } else if self.budget >= 1.0 {
                self.budget -= 1.0;
                return true;
            }
            self.cutting = true;
            return false;
        }
        let plan = plan();
        let Some(len) = self.len.get().filter(|_| plan.share < 1.0) else {
            // Not thinning, or the GOP length is not known yet: the whole GOP passes.
            self.budget = f64::INFINITY;
            self.cutting = false;
            return true;
        };
        let fresh = plan.share * GOP_SHARE_MARGIN * len - plan.leftover;
        let carried = if self.budget.is_finite() {
            self.budget.max(0.0)
        } else {
            0.0
        };
        self.budget = (carried + fresh).min(plan.max_burst).min(len);
        if self.budget < 1.0 {
            self.cutting = true;
            return false;
        }
        self.budget -= 1.0;
        self.cutting = false;
        true
    }
}

#[cfg(test)]
mod gop_tests {
    use super::*;

    /// Frames passed over `gops` GOPs of `len` frames, and whether every GOP was cut as a
    /// whole tail (passed frames form a prefix of their GOP).
    fn run(len: u32, gops: u32, plan: GopPlan) -> (u32, bool) {
        let mut g = GopBudget::default();
        let mut passed = 0;
        let mut prefixes = true;
        for _ in 0..gops {
            let mut cut = false;
            for i in 0..len {
                g.observe(i == 0, 0.2);
                if g.admit(i == 0, || plan) {
                    passed += 1;
                    prefixes &= !cut;
                } else {
                    cut = true;
                }
            }
        }
        (passed, prefixes)
    }

    fn share(share: f64) -> GopPlan {
        GopPlan {
            share,
            leftover: 0.0,
            max_burst: f64::INFINITY,
        }
    }

    #[test]
    fn delivers_the_sustainable_share_whatever_the_gop_length() {
        for len in [15u32, 30, 60, 120] {
            let gops = 40;
            let (passed, prefixes) = run(len, gops, share(1.0 / 3.0));
            assert!(prefixes, "GOP {len}: only whole tails are cut");
            let want = (len * gops) as f64 / 3.0 * GOP_SHARE_MARGIN;
            // The first GOP (length unknown) passes whole.
            assert!(
                (passed as f64 - want).abs() <= len as f64 + 2.0,
                "GOP {len}: {passed} passed, want about {want}"
            );
        }
    }

    #[test]
    fn leftovers_and_max_latency_shrink_the_budget() {
        let (full, _) = run(60, 20, share(0.5));
        let (behind, _) = run(
            60,
            20,
            GopPlan {
                leftover: 10.0,
                ..share(0.5)
            },
        );
        let (capped, _) = run(
            60,
            20,
            GopPlan {
                max_burst: 12.0,
                ..share(0.5)
            },
        );
        assert!(
            behind + 19 * 10 - 2 <= full && full <= behind + 19 * 10 + 2,
            "{full} {behind}"
        );
        assert_eq!(capped, 60 + 19 * 12, "{capped}");
    }

    #[test]
    fn a_tiny_share_drops_whole_gops_keyframes_included() {
        let (passed, prefixes) = run(10, 50, share(0.02));
        assert!(prefixes);
        // The first GOP, then about one keyframe in five GOPs.
        assert!((15..=22).contains(&passed), "{passed}");
    }

    #[test]
    fn no_thinning_when_downstream_keeps_up() {
        assert_eq!(run(30, 5, share(1.0)), (150, true));
    }
}
