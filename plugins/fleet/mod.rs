// SPDX-License-Identifier: MPL-2.0
//! Cameras spread over machines: what `videoai-worker` and `videoai-fleet` share.
//!
//! The coordination lives in NATS JetStream key-value buckets (Raft-replicated, the engine the
//! events already use), never in anything home-made:
//!
//! * `videoai-cameras`: the registry, one key per camera id, value a [`registry::Camera`]
//!   (`uri`, `params`); `videoai-fleet add|remove` writes it;
//! * `videoai-leases`: one key per running camera, value a [`registry::Lease`] (holder, state,
//!   frames/s, last frame); the bucket's `max_age` is the lease TTL. A worker takes a camera by
//!   creating its key (only if absent) and holds it by updating it with the revision it last
//!   wrote (compare-and-set); a key no one renews ages out after the TTL and the camera is free;
//! * `videoai-workers`: one key per live worker (capacity, cameras, counters), same TTL;
//! * `videoai-status`: why a camera does not run (malformed entry, pipeline file error,
//!   retrying after failures).
//!
//! [`plan`] decides, from what a worker sees, which cameras it claims, releases and stops (pure,
//! unit-tested); [`template`] fills a pipeline description file; [`kv`] opens the buckets;
//! [`metrics`] are the worker's Prometheus series; [`worker`] runs it all.

/// The fleet's debug category (`GST_DEBUG=videoai-fleet:5`).
pub(crate) static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "videoai-fleet",
        gst::DebugColorFlags::empty(),
        Some("videoai fleet worker"),
    )
});

pub mod camera;
pub mod kv;
pub mod metrics;
pub mod plan;
pub mod registry;
pub mod template;
pub mod worker;

/// The servers of a tool's `--nats nats://host:port[,host:port…]`, or why not.
pub fn nats_servers(arg: &str) -> Result<Vec<String>, String> {
    match crate::eventlog::nats::parse_location(arg) {
        Some(Ok(u)) => Ok(u),
        Some(Err(why)) => Err(format!("--nats {arg}: {why}")),
        None => Err(format!(
            "--nats {arg}: expected nats://host:port[,host:port…]"
        )),
    }
}
