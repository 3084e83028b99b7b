// SPDX-License-Identifier: MPL-2.0
//! The event schema: one event per frame, written by `raftsink` and read by `videoai-events`.
//!
//! Serialised as JSON (one object per line in `videoai-events dump`, the payload of each NATS
//! message):
//!
//! ```json
//! {"stream":"cam1","seq":42,"pts_ns":1400000000,"capture_ns":1764000000000000000,
//!  "model":"common_det@1a2b3c4d","detections":[{"label":"text","class_id":0,
//!  "confidence":0.81,"x":64,"y":48,"w":40,"h":52}],"schema":2}
//! ```
//!
//! Coordinates are in the frame's own pixels. `seq` identifies the frame within its stream;
//! `(stream, seq)` is the idempotence key. Optional detection fields: `fresh: false` (result
//! carried over from an earlier frame), `classification` (from a classifier on that region) and
//! `track_id` (the object's track from `objecttracker`, unique in its stream), `crossings`
//! (`[{"line":"door","direction":"in"}]`: lines the track crossed on this frame) and
//! `zone_events` (`[{"zone":"bay","event":"entry"}]`). A crossing is stored with the frame it
//! happened on, so the frame's idempotence key stores it exactly once.

use serde::{Deserialize, Serialize};

/// Version of this schema, stored with every event.
pub const SCHEMA_VERSION: i64 = 2;

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A classifier's result on a region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub label: String,
    pub class_id: i32,
    pub confidence: f64,
    pub model: String,
    /// The top-k, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confidences: Vec<f64>,
}

/// One detected object, in frame pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: String,
    pub class_id: i32,
    pub confidence: f64,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// False when the result was carried over from an earlier frame.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub fresh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// The object's track (`objecttracker`): unique in its stream, never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    /// Lines the track crossed on this frame (`objecttracker lines`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crossings: Vec<Crossing>,
    /// Zones the track entered or left on this frame (`objecttracker zones`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone_events: Vec<ZoneEvent>,
}

/// A track crossed a line: stored with the detection of the frame it happened on, so it is
/// stored exactly once with that frame's event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crossing {
    pub line: String,
    /// `in` or `out`.
    pub direction: String,
}

/// A track entered or left a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneEvent {
    pub zone: String,
    /// `entry` or `exit`.
    pub event: String,
}

impl Detection {
    /// A fresh detection without classification.
    pub fn new(
        label: impl Into<String>,
        class_id: i32,
        confidence: f64,
        rect: (u32, u32, u32, u32),
    ) -> Self {
        Detection {
            label: label.into(),
            class_id,
            confidence,
            x: rect.0,
            y: rect.1,
            w: rect.2,
            h: rect.3,
            fresh: true,
            classification: None,
            track_id: None,
            crossings: Vec::new(),
            zone_events: Vec::new(),
        }
    }

    /// Whether every number in it is finite (JSON has no NaN or infinity: such a value would
    /// be stored as `null` and the event could not be read back).
    pub fn is_finite(&self) -> bool {
        self.confidence.is_finite()
            && self.classification.as_ref().is_none_or(|c| {
                c.confidence.is_finite() && c.confidences.iter().all(|v| v.is_finite())
            })
    }
}

/// Removes the detections with a non-finite number; returns how many were removed.
pub fn drop_non_finite(detections: &mut Vec<Detection>) -> usize {
    let before = detections.len();
    detections.retain(Detection::is_finite);
    before - detections.len()
}

/// Everything stored about one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameEvent {
    pub stream: String,
    pub seq: i64,
    /// Presentation timestamp in the stream, nanoseconds (absent when the buffer had none).
    pub pts_ns: Option<i64>,
    /// Capture time, nanoseconds since the Unix epoch.
    pub capture_ns: i64,
    /// Model (name@version) that produced the detections; empty when no model ran.
    pub model: String,
    pub detections: Vec<Detection>,
    /// Schema version the event was written with.
    #[serde(default = "current_schema")]
    pub schema: i64,
}

fn current_schema() -> i64 {
    SCHEMA_VERSION
}
