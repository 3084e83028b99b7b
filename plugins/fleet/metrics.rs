// SPDX-License-Identifier: MPL-2.0
//! A worker's own metrics (the `prometheus` crate's counters and gauges), registered in the
//! process's default registry, which the videoaitrace exporter serves next to the elements'
//! series (`videoai-worker --metrics ADDR`). Every series carries `worker="NAME"`.
//!
//! The worker's tick updates them (counters as things happen, the gauges at the end of each
//! tick); the exporter's thread reads them: atomics, no lock of the worker's.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Pipeline states a camera of this worker can be in (`videoai_worker_camera_state`).
pub const STATES: [&str; 3] = ["starting", "running", "retrying"];

pub struct WorkerMetrics {
    pub claims: IntCounter,
    pub releases: IntCounter,
    pub takeovers: IntCounter,
    pub lost: IntCounter,
    pub early_reads: IntCounter,
    pub ticks: IntCounter,
    /// KV requests by operation (`create`, `update`, `delete`, `put`, `get`).
    pub kv_ops: IntCounterVec,
    pub leases_held: IntGauge,
    pub capacity: IntGauge,
    pub nats_reachable: IntGauge,
    camera_state: IntGaugeVec,
}

impl WorkerMetrics {
    /// The metrics of worker `name` (not registered anywhere yet).
    pub fn new(name: &str, capacity: usize) -> WorkerMetrics {
        let opts = |metric: &str, help: &str| {
            Opts::new(metric, help).const_label("worker", name.to_string())
        };
        let counter = |metric: &str, help: &str| {
            IntCounter::with_opts(opts(metric, help)).expect("a valid counter")
        };
        let gauge = |metric: &str, help: &str| {
            IntGauge::with_opts(opts(metric, help)).expect("a valid gauge")
        };
        let m = WorkerMetrics {
            claims: counter(
                "videoai_worker_claims_total",
                "Cameras this worker took (lease created)",
            ),
            releases: counter(
                "videoai_worker_releases_total",
                "Cameras this worker offered to another for a fair share (make-before-break)",
            ),
            takeovers: counter(
                "videoai_worker_takeovers_total",
                "Claims of cameras last seen held by another worker (after a worker died or gave them back)",
            ),
            lost: counter(
                "videoai_worker_leases_lost_total",
                "Leases found taken by someone else at renewal (their pipelines stopped at once)",
            ),
            early_reads: counter(
                "videoai_worker_early_reads_total",
                "Cameras this worker started reading before their silent holder's lease lapsed (--early-start)",
            ),
            ticks: counter(
                "videoai_worker_ticks_total",
                "Decision rounds (one per third of the lease TTL)",
            ),
            kv_ops: IntCounterVec::new(
                opts(
                    "videoai_worker_kv_operations_total",
                    "Requests to the NATS key-value buckets, by operation",
                ),
                &["op"],
            )
            .expect("a valid counter"),
            leases_held: gauge("videoai_worker_leases_held", "Leases (cameras) held now"),
            capacity: gauge("videoai_worker_capacity", "Most cameras this worker runs"),
            nats_reachable: gauge(
                "videoai_worker_nats_reachable",
                "1 while NATS answers the worker's requests, 0 during an outage or election",
            ),
            camera_state: IntGaugeVec::new(
                opts(
                    "videoai_worker_camera_state",
                    "1 for the state each camera's pipeline is in on this worker (starting, running, retrying); a camera no longer held has no series",
                ),
                &["camera", "state"],
            )
            .expect("a valid gauge"),
        };
        m.capacity.set(capacity as i64);
        m.nats_reachable.set(1);
        m
    }

    /// Registers every series in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.claims.clone()))?;
        registry.register(Box::new(self.releases.clone()))?;
        registry.register(Box::new(self.takeovers.clone()))?;
        registry.register(Box::new(self.lost.clone()))?;
        registry.register(Box::new(self.early_reads.clone()))?;
        registry.register(Box::new(self.ticks.clone()))?;
        registry.register(Box::new(self.kv_ops.clone()))?;
        registry.register(Box::new(self.leases_held.clone()))?;
        registry.register(Box::new(self.capacity.clone()))?;
        registry.register(Box::new(self.nats_reachable.clone()))?;
        registry.register(Box::new(self.camera_state.clone()))?;
        Ok(())
    }

    /// One KV request of kind `op`.
    pub fn kv(&self, op: &str) {
        self.kv_ops.with_label_values(&[op]).inc();
    }

    /// The cameras held now and their pipelines' states.
    pub fn cameras<'a>(&self, states: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.camera_state.reset();
        let mut held = 0;
        for (camera, state) in states {
            held += 1;
            for s in STATES {
                self.camera_state
                    .with_label_values(&[camera, s])
                    .set((s == state) as i64);
            }
        }
        self.leases_held.set(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn exposition(reg: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&reg.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn series_carry_the_worker_and_cameras_come_and_go() {
        let m = WorkerMetrics::new("w1", 3);
        let reg = Registry::new();
        m.register(&reg).unwrap();
        m.claims.inc();
        m.kv("create");
        m.kv("create");
        m.cameras([("cam-a", "running"), ("cam-b", "retrying")]);
        let text = exposition(&reg);
        assert!(
            text.contains("videoai_worker_claims_total{worker=\"w1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("videoai_worker_kv_operations_total{op=\"create\",worker=\"w1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("videoai_worker_leases_held{worker=\"w1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "videoai_worker_camera_state{camera=\"cam-b\",state=\"retrying\",worker=\"w1\"} 1"
            ),
            "{text}"
        );
        // cam-b given back: its series go.
        m.cameras([("cam-a", "running")]);
        let text = exposition(&reg);
        assert!(!text.contains("cam-b"), "{text}");
        assert!(
            text.contains("videoai_worker_leases_held{worker=\"w1\"} 1"),
            "{text}"
        );
    }
}
