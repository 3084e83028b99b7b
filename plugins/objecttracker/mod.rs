// SPDX-License-Identifier: MPL-2.0
//! `objecttracker`: every detected object followed from frame to frame with an id that stays
//! put, and lines and zones counted on the tracks.
//!
//! Reads the `GstVideoRegionOfInterestMeta`s on each frame (from `onnxinfer`, or any element:
//! an ROI without a `detection` structure counts as class -1, confidence 1), or the entries of
//! a `framesync` batch (one tracker per stream). Writes `track-state` (`tentative`,
//! `confirmed`, `lost`) and, once the track is confirmed (`min-hits`), `track-id` (u64, unique
//! in its stream, never reused) into each tracked ROI's `detection` structure; crossings, zone
//! entries and exits go into a `videoai-analytics` custom meta on the frame, element
//! messages, and `stats`.
//!
//! ```text
//! gst-launch-1.0 filesrc location=street.mp4 ! decodebin ! videoconvert \
//!     ! onnxinfer model-location=yolov3-tiny.onnx ! objecttracker lines="door:100,400,600,400" \
//!     ! raftsink location=events.db
//! ```

use gst::glib;
use gst::prelude::*;

pub mod assign;
mod imp;
pub mod kalman;
mod settings;
pub mod tracker;

glib::wrapper! {
    pub struct ObjectTracker(ObjectSubclass<imp::ObjectTracker>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// The tracking algorithm.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstObjectTrackerAlgorithm")]
pub enum Algorithm {
    #[enum_value(
        name = "ByteTrack: Kalman filter with constant velocity on each box, high-confidence detections matched first, then low-confidence ones to the tracks left, optimal assignment on IoU",
        nick = "bytetrack"
    )]
    ByteTrack = 0,
    #[enum_value(
        name = "IoU: greedy best-overlap matching on the last box seen, no motion model (cheapest, more id switches on crossings)",
        nick = "iou"
    )]
    Iou = 1,
}

/// The point of a box that lines and zones are judged by.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstObjectTrackerAnchor")]
pub enum Anchor {
    #[enum_value(
        name = "Bottom centre: where a person or a vehicle touches the ground",
        nick = "bottom-centre"
    )]
    BottomCentre = 0,
    #[enum_value(name = "Centre of the box", nick = "centre")]
    Centre = 1,
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "objecttracker",
        gst::Rank::NONE,
        ObjectTracker::static_type(),
    )
}
