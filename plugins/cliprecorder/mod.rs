// SPDX-License-Identifier: MPL-2.0
//! `cliprecorder`: what happened, to watch. A ring of the camera's encoded access units (from
//! `resilientsrc encoded=true`, the same connection as the decoded frames) and, on a trigger (a
//! line crossed, a zone entered, a label detected, the `trigger` action signal), one fragmented
//! MP4 clip with `pre-roll` and `post-roll`, written without re-encoding. Triggers within a clip
//! extend it, up to `max-duration`. Decoded frames pass from `sink` to `src` untouched, with a
//! `videoai-clips` meta on the frames a clip was started or extended on (or deleted by
//! `max-size-bytes` / `max-age` retention, or failed to write), which `raftsink` stores with
//! their events (`videoai-events clips` lists them). With `snapshots` (the default), each
//! confirmed track also gets one JPEG of its most confident detection, written when the track
//! ends, its path stored with the track (`videoai-events tracks`).
//!
//! ```text
//! gst-launch-1.0 -e resilientsrc name=cam uri=rtsp://cam/stream encoded=true \
//!     cam.src ! videoconvert ! onnxinfer model-location=yolov3-tiny.onnx model-type=yolov5 \
//!     ! objecttracker lines="door:600,0,600,720" \
//!     ! cliprecorder name=rec location=clips stream-id=cam1 trigger-lines=door \
//!     ! raftsink location=events.db stream-id=cam1 \
//!     cam.encoded ! queue ! rec.encoded
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod retention;
pub mod ring;
pub mod snapshot;
mod writer;

glib::wrapper! {
    pub struct ClipRecorder(ObjectSubclass<imp::ClipRecorder>)
        @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "cliprecorder",
        gst::Rank::NONE,
        ClipRecorder::static_type(),
    )
}
