// SPDX-License-Identifier: MPL-2.0
//! `detectionoverlay`: draws the detections on the frames.
//!
//! For every `GstVideoRegionOfInterestMeta` on a frame (as `onnxinfer` writes them, or any
//! other element), a box in the class's colour and, above it, `label confidence` (and the
//! classification's label when a classifier labelled the region) in an 8×8 bitmap font.
//! Works in place on RGB/BGR (with or without alpha/padding), NV12 and I420. A frame without
//! ROIs is passed through untouched: not mapped, not copied.
//!
//! ```text
//! gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! videoconvert \
//!     ! onnxinfer model-location=det.onnx ! detectionoverlay ! videoconvert ! autovideosink
//! ```

use gst::glib;
use gst::prelude::*;

pub mod canvas;
mod imp;

glib::wrapper! {
    pub struct DetectionOverlay(ObjectSubclass<imp::DetectionOverlay>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "detectionoverlay",
        gst::Rank::NONE,
        DetectionOverlay::static_type(),
    )
}
