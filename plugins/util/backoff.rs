// SPDX-License-Identifier: MPL-2.0
//! Reconnect delays: exponential backoff with random jitter.
//!
//! Attempt `n` (1-based) waits `min(initial · multiplier^(n-1), max)`, then scaled by a random
//! factor in `[1 − jitter, 1 + jitter]` (and never above `max · (1 + jitter)`), so that many
//! cameras dropped at once do not reconnect in lockstep.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// 0..=1
    pub jitter: f64,
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based), without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The delay before attempt `attempt`, jittered by `unit` (a random number in 0..1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - j + 2.0 * j * unit.clamp(0.0, 1.0);
        self.base(attempt).mul_f64(factor)
    }
}

/// A random number in 0..1 (xorshift seeded from the clock; good enough for jitter).
pub fn random_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let ms: Vec<u128> = (1..=8).map(|n| b.base(n).as_millis()).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(b.delay(3, 0.9), Duration::from_secs(2));
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(1000),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(800));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(1200));
        let d: Vec<Duration> = (0..100).map(|_| b.delay(1, random_unit())).collect();
        assert!(d.iter().all(|d| (800..=1200).contains(&d.as_millis())));
        assert!(d.iter().any(|x| *x != d[0]), "jittered");
    }
}
