// SPDX-License-Identifier: MPL-2.0
//! `motiondetect`: where the picture of a fixed camera moves, cheaply, so that `onnxinfer
//! motion-gate=true` runs its model only when something moves.
//!
//! Reads the luma plane (GRAY8, NV12, NV21, I420, YV12, Y42B, Y444: no conversion), averaged
//! over cells of `cell-size` pixels, against a running background ([`detector`] says how: light
//! changes, noise, ghosts). Writes a `videoai-motion` custom meta on every frame and one
//! `GstVideoRegionOfInterestMeta` of roi type `motion` per moving region
//! ([`crate::formats::motion`]); the frames pass otherwise untouched. One element per camera,
//! before `framesync` when cameras are batched.
//!
//! ```text
//! gst-launch-1.0 rtspsrc location=rtsp://cam/stream ! decodebin ! motiondetect \
//!     ignore-zones="clock:0,0,300,0,300,60,0,60" ! videoconvert \
//!     ! onnxinfer model-location=yolov3-tiny.onnx model-type=yolov5 motion-gate=true \
//!     ! objecttracker ! raftsink location=events.db
//! ```

use gst::glib;
use gst::prelude::*;

pub mod detector;
mod imp;

glib::wrapper! {
    pub struct MotionDetect(ObjectSubclass<imp::MotionDetect>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "motiondetect",
        gst::Rank::NONE,
        MotionDetect::static_type(),
    )
}
