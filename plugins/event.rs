// SPDX-License-Identifier: MPL-2.0
//! The event schema: one event per frame, written by `raftsink` and read by `videoai-events`.
//!
//! Serialised as JSON (one object per line in `videoai-events dump`):
//!
//! ```json
//! {"stream":"cam1","seq":42,"pts_ns":1400000000,"capture_ns":1764000000000000000,
//!  "model":"common_det@1a2b3c4d","detections":[{"label":"text","class_id":0,
//!  "confidence":0.81,"x":64,"y":48,"w":40,"h":52}]}
//! ```
//!
//! Coordinates are in the frame's own pixels. `seq` identifies the frame within its stream;
//! `(stream, seq)` is the idempotence key.

use serde::{Deserialize, Serialize};

/// Version of this schema, stored with every event.
pub const SCHEMA_VERSION: i64 = 1;

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
}
