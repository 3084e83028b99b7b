// SPDX-License-Identifier: MPL-2.0
//! A latency histogram with bounded memory: logarithmic buckets from 1 µs to about 1 hour with
//! about 2 % relative resolution, plus exact count, sum, min and max. Percentiles are read
//! from the buckets (the bucket's upper bound, clamped to the observed maximum).

use std::time::Duration;

/// Buckets per factor of two.
const SUB: usize = 32;
/// Octaves above 1 µs (2^32 µs is about 71 minutes).
const OCTAVES: usize = 32;
const BUCKETS: usize = SUB * OCTAVES + 1;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("mean", &self.mean())
            .field("p99", &self.percentile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

fn bucket(ns: u64) -> usize {
    let us = ns as f64 / 1000.0;
    if us <= 1.0 {
        return 0;
    }
    let idx = (us.log2() * SUB as f64).ceil() as usize;
    idx.min(BUCKETS - 1)
}

fn upper_bound_ns(idx: usize) -> u64 {
    (2f64.powf(idx as f64 / SUB as f64) * 1000.0) as u64
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, d: Duration) {
        self.record_ns(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn record_ns(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.count += 1;
        self.sum_ns += ns as u128;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum_ns / self.count as u128) as u64)
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn min(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.min_ns)
        }
    }

    /// The `q` quantile (0..=1): the smallest bucket bound at or above that share of samples.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let ns = upper_bound_ns(i).clamp(self.min_ns, self.max_ns);
                return Duration::from_nanos(ns);
            }
        }
        self.max()
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// Milliseconds as f64, for stats structures.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_resolution() {
        let mut h = Histogram::new();
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i * 100)); // 0.1 ms .. 100 ms
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.percentile(0.5).as_secs_f64() * 1000.0;
        let p99 = h.percentile(0.99).as_secs_f64() * 1000.0;
        assert!((p50 - 50.0).abs() / 50.0 < 0.03, "{p50}");
        assert!((p99 - 99.0).abs() / 99.0 < 0.03, "{p99}");
        assert_eq!(h.max(), Duration::from_millis(100));
        assert_eq!(h.min(), Duration::from_micros(100));
        assert!((h.mean().as_secs_f64() * 1000.0 - 50.05).abs() < 0.01);
    }

    #[test]
    fn empty_and_merge() {
        let mut a = Histogram::new();
        assert_eq!(a.percentile(0.99), Duration::ZERO);
        let mut b = Histogram::new();
        b.record(Duration::from_millis(5));
        a.merge(&b);
        assert_eq!(a.count(), 1);
        assert_eq!(a.percentile(0.5), Duration::from_millis(5));
    }
}
