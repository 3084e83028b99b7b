// SPDX-License-Identifier: MPL-2.0
//! The tracer's own Prometheus series: end-to-end latency per (pipeline, source, sink), time in
//! element per (pipeline, element), and frames in, out and lost per path.
//!
//! Hand-written rather than the `prometheus` crate's `Histogram`/`IntCounter` (used here only
//! for the exposition format): a sample must cost next to nothing, since the tracer runs on
//! every buffer push. The crate's `observe` scans its bucket bounds linearly and makes four
//! or five locked read-modify-write operations; here every writer already holds the tracer's
//! state lock, so a sample is a binary search over integer bounds and two plain atomic stores
//! (no read-modify-write), and the scrape reads the same atomics from its own thread without
//! any lock a streaming thread takes. (Measured with `make bench-videoaitrace`.)
//!
//! Series stay registered when a pipeline stops: a pipeline started again under the same name
//! continues its counters (they only increase while the process runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use prometheus::proto::{self, MetricFamily, MetricType};

/// Number of finite buckets.
const BUCKETS: usize = 97;

/// Bucket upper bounds (ns): 100 µs × 2^(k/5) for k = 0..=96, from 0.1 ms to 60.2 s. Each
/// bucket is 15 % wide, so `histogram_quantile` (which interpolates inside a bucket) resolves
/// p50 … p99.99 to within a few percent anywhere between 1 ms and 60 s.
static BOUNDS_NS: LazyLock<[u64; BUCKETS]> =
    LazyLock::new(|| std::array::from_fn(|k| (1e5 * 2f64.powf(k as f64 / 5.0)).round() as u64));

/// Adds `by` to a value only ever written under the caller's lock: a plain load and store,
/// atomic so that the scrape may read it at any time.
fn bump(a: &AtomicU64, by: u64) {
    a.store(
        a.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A counter written under the tracer's state lock and read by the scrape.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Only with the tracer's state lock held (one writer at a time).
    pub fn add(&self, by: u64) {
        bump(&self.0, by);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram written under the tracer's state lock and read by the scrape.
pub struct Histogram {
    /// Per bucket (the last one: above the largest bound).
    counts: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Only with the tracer's state lock held (one writer at a time).
    pub fn record_ns(&self, ns: u64) {
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        bump(&self.counts[i], 1);
        bump(&self.sum_ns, ns);
    }

    /// The Prometheus form: cumulative counts per bound (seconds), the count (the sum of the
    /// buckets as read, so `+Inf` always equals it) and the sum.
    fn to_proto(&self) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for (bound, count) in BOUNDS_NS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound as f64 / 1e9);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        cumulative += self.counts[BUCKETS].load(Ordering::Relaxed);
        h.set_bucket(buckets);
        h.set_sample_count(cumulative);
        h.set_sample_sum(self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        h
    }
}

/// One (pipeline, source, sink) path's series.
#[derive(Default)]
pub struct PathSeries {
    pub latency: Histogram,
    pub out: Counter,
    pub lost: Counter,
}

type Labels = Vec<(&'static str, String)>;

/// Series by their labels; a streaming thread adds one (rarely) under the lock, the scrape
/// copies the list under it.
struct Registry<T>(Mutex<Vec<(Labels, Arc<T>)>>);

impl<T: Default> Registry<T> {
    fn get(&self, labels: Labels) -> Arc<T> {
        let mut list = self.0.lock().unwrap();
        if let Some((_, s)) = list.iter().find(|(l, _)| *l == labels) {
            return s.clone();
        }
        let s = Arc::new(T::default());
        list.push((labels, s.clone()));
        s
    }

    fn snapshot(&self) -> Vec<(Labels, Arc<T>)> {
        self.0.lock().unwrap().clone()
    }
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry(Mutex::new(Vec::new()))
    }
}

#[derive(Default)]
pub struct TracerMetrics {
    paths: Registry<PathSeries>,
    elements: Registry<Histogram>,
    sources: Registry<Counter>,
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f
}

fn metric(labels: &Labels) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = proto::LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.clone());
                l
            })
            .collect(),
    );
    m
}

fn counter(labels: &Labels, value: u64) -> proto::Metric {
    let mut m = metric(labels);
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    m.set_counter(c);
    m
}

fn histogram(labels: &Labels, h: &Histogram) -> proto::Metric {
    let mut m = metric(labels);
    m.set_histogram(h.to_proto());
    m
}

impl TracerMetrics {
    pub fn path(&self, pipeline: &str, source: &str, sink: &str) -> Arc<PathSeries> {
        self.paths.get(vec![
            ("pipeline", pipeline.to_string()),
            ("source", source.to_string()),
            ("sink", sink.to_string()),
        ])
    }

    pub fn source(&self, pipeline: &str, source: &str) -> Arc<Counter> {
        self.sources.get(vec![
            ("pipeline", pipeline.to_string()),
            ("source", source.to_string()),
        ])
    }

    pub fn element(&self, pipeline: &str, element: &str) -> Arc<Histogram> {
        self.elements.get(vec![
            ("pipeline", pipeline.to_string()),
            ("element", element.to_string()),
        ])
    }

    /// A snapshot of every series, for the exposition.
    pub fn gather(&self) -> Vec<MetricFamily> {
        let paths = self.paths.snapshot();
        let elements = self.elements.snapshot();
        let sources = self.sources.snapshot();
        let mut latency = family(
            "videoai_latency_seconds",
            "End-to-end latency of a frame: from its source pushing it to a sink receiving it",
            MetricType::HISTOGRAM,
        );
        let mut element_time = family(
            "videoai_element_processing_seconds",
            "Time a frame spends in an element: from entering it to leaving it (processing and queueing)",
            MetricType::HISTOGRAM,
        );
        let mut frames_in = family(
            "videoai_frames_in_total",
            "Frames a source produced",
            MetricType::COUNTER,
        );
        let mut frames_out = family(
            "videoai_frames_out_total",
            "Frames of a source that reached a sink",
            MetricType::COUNTER,
        );
        let mut frames_lost = family(
            "videoai_frames_lost_total",
            "Frames of a source that never reached a sink (counted when a later frame of the source arrives there)",
            MetricType::COUNTER,
        );
        for (labels, p) in &paths {
            latency.mut_metric().push(histogram(labels, &p.latency));
            frames_out.mut_metric().push(counter(labels, p.out.get()));
            frames_lost.mut_metric().push(counter(labels, p.lost.get()));
        }
        for (labels, h) in &elements {
            element_time.mut_metric().push(histogram(labels, h));
        }
        for (labels, c) in &sources {
            frames_in.mut_metric().push(counter(labels, c.get()));
        }
        [latency, element_time, frames_in, frames_out, frames_lost]
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// Counts frames lost on one path from the order frames are born in at the source: frames
/// arrive in that order, so a frame born before the one arriving that has not arrived yet
/// never will (it was dropped on the way). A frame that arrives after a later one (reordered)
/// was already counted as lost.
#[derive(Debug, Default, Clone, Copy)]
pub struct LossCursor {
    /// Birth index (at the source) of the next frame expected.
    next: u64,
}

impl LossCursor {
    /// The frame born `index`-th arrived: how many frames are now known lost.
    pub fn arrived(&mut self, index: u64) -> u64 {
        if index < self.next {
            return 0;
        }
        let lost = index - self.next;
        self.next = index + 1;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_span_a_tenth_of_a_millisecond_to_a_minute_in_small_steps() {
        let b = &*BOUNDS_NS;
        assert_eq!(b[0], 100_000);
        assert!((60_000_000_000..61_000_000_000).contains(&b[BUCKETS - 1]));
        for w in b.windows(2) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!((ratio - 2f64.powf(0.2)).abs() < 1e-4, "{ratio}");
        }
    }

    #[test]
    fn samples_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.record_ns(0);
        h.record_ns(100_000); // on the bound: in it (le is "less or equal")
        h.record_ns(100_001);
        h.record_ns(20_000_000);
        h.record_ns(u64::MAX / 2); // beyond the last bound: only in +Inf
        let p = h.to_proto();
        let b = p.get_bucket();
        assert_eq!(b[0].cumulative_count(), 2);
        assert_eq!(b[1].cumulative_count(), 3);
        // 20 ms: bound k with 0.1 ms × 2^(k/5) >= 20 ms, k = ceil(5 × log2(200)) = 39.
        assert_eq!(b[38].cumulative_count(), 3);
        assert_eq!(b[39].cumulative_count(), 4);
        assert_eq!(b[BUCKETS - 1].cumulative_count(), 4);
        assert_eq!(p.get_sample_count(), 5);
    }

    #[test]
    fn frames_skipped_over_are_lost_once() {
        let mut c = LossCursor::default();
        assert_eq!(c.arrived(0), 0);
        assert_eq!(c.arrived(1), 0);
        assert_eq!(c.arrived(4), 2, "2 and 3 never came");
        assert_eq!(c.arrived(3), 0, "a late frame is not counted again");
        assert_eq!(c.arrived(5), 0);
        let mut late_start = LossCursor::default();
        assert_eq!(late_start.arrived(3), 3, "the first three were dropped");
    }

    #[test]
    fn series_are_found_again_by_their_labels() {
        let m = TracerMetrics::default();
        m.path("p", "src", "sink").out.add(1);
        m.path("p", "src", "sink").out.add(1);
        m.source("p", "src").add(3);
        m.element("p", "identity0").record_ns(20_000_000);
        let families = m.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "videoai_latency_seconds",
                "videoai_element_processing_seconds",
                "videoai_frames_in_total",
                "videoai_frames_out_total",
                "videoai_frames_lost_total"
            ]
        );
        let out = &families[3].get_metric()[0];
        assert_eq!(out.get_counter().get_value(), 2.0);
    }
}
