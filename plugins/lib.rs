// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! # videoai
//!
//! GStreamer elements for real-time AI on video streams:
//!
//! * `onnxinfer`: ONNX Runtime inference on raw video, one `GstVideoRegionOfInterestMeta`
//!   per detection.
//! * `raftsink`: turns per-frame detections into events stored exactly once in a durable log.
//! * `adaptivequeue`: a queue that keeps latency bounded under overload without breaking
//!   decode.
//! * `detectionoverlay`: draws the detections (boxes, labels) on the frames.
//! * `videoaitrace` (a tracer): source → sink latency per frame, time per element, frames
//!   lost.
//! * `framesync` / `framesplit`: N streams into one synchronised batch per tick (one inference
//!   call for all of them) and back into one stream per source.
//! * `objecttracker`: each detected object followed from frame to frame (ByteTrack), lines
//!   and zones counted on the tracks.
//! * `motiondetect`: where the picture of a fixed camera moves (luma plane, running background),
//!   so that `onnxinfer motion-gate=true` infers only when something moves.
//! * `resilientsrc`: any camera or file in, decoded frames out (and, with `encoded=true`, the
//!   camera's own encoded stream); reconnects with backoff and picks the best decoder available.
//! * `cliprecorder`: a ring of the camera's encoded stream, and a clip with pre-roll and
//!   post-roll written on a line crossing, a zone entry, a label or a signal.
//!
//! The modules outside the element folders hold what several elements and the
//! `videoai-events` tool share, grouped by what they are:
//!
//! * [`formats`]: what elements exchange on buffers (detection meta, batches, capture time);
//! * [`eventlog`]: the event log (schema, SQLite store and outbox, NATS JetStream), no
//!   GStreamer in it;
//! * [`util`]: small helpers (histogram, backoff, hashing, source liveness).

use gst::glib;

pub mod eventlog;
pub mod fleet;
pub mod formats;
pub mod util;

#[cfg(feature = "adaptivequeue")]
pub mod adaptivequeue;
#[cfg(feature = "cliprecorder")]
pub mod cliprecorder;
#[cfg(feature = "detectionoverlay")]
pub mod detectionoverlay;
#[cfg(feature = "framesplit")]
pub mod framesplit;
#[cfg(feature = "framesync")]
pub mod framesync;
#[cfg(feature = "motiondetect")]
pub mod motiondetect;
#[cfg(feature = "objecttracker")]
pub mod objecttracker;
#[cfg(feature = "onnxinfer")]
pub mod onnxinfer;
#[cfg(feature = "raftsink")]
pub mod raftsink;
#[cfg(feature = "resilientsrc")]
pub mod resilientsrc;
#[cfg(feature = "videoaitrace")]
pub mod videoaitrace;

#[allow(unused_variables)] // with every element feature off
fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    formats::detection::register_inference_meta();
    #[cfg(feature = "onnxinfer")]
    if let Some(file) = plugin.filename() {
        onnxinfer::runtime::set_plugin_file(file);
    }
    #[cfg(feature = "adaptivequeue")]
    adaptivequeue::register(plugin)?;
    #[cfg(feature = "cliprecorder")]
    cliprecorder::register(plugin)?;
    #[cfg(feature = "detectionoverlay")]
    detectionoverlay::register(plugin)?;
    #[cfg(feature = "framesplit")]
    framesplit::register(plugin)?;
    #[cfg(feature = "framesync")]
    framesync::register(plugin)?;
    #[cfg(feature = "motiondetect")]
    motiondetect::register(plugin)?;
    #[cfg(feature = "objecttracker")]
    objecttracker::register(plugin)?;
    #[cfg(feature = "onnxinfer")]
    onnxinfer::register(plugin)?;
    #[cfg(feature = "raftsink")]
    raftsink::register(plugin)?;
    #[cfg(feature = "resilientsrc")]
    resilientsrc::register(plugin)?;
    #[cfg(feature = "videoaitrace")]
    videoaitrace::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    videoai,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
