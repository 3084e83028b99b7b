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
//!
//! Since schema 3 every event says what its `seq` was derived from, `key_basis` (see
//! [`KeyBasis`]): `position` (a file), `capture-time` (a live source's capture time), `camera`
//! (the camera's own clock, the same key on every reader of the camera) or `local` (a live
//! camera frame that could not be placed on the camera's clock: its key is in a space of its
//! own, at or above [`LOCAL_KEY_BASE`], so it can never take a camera key). A `camera` event
//! also carries `clock` ([`ClockMark`]): what another reader of the camera needs to continue its
//! keys from this frame.
//!
//! Events of frames `cliprecorder` did something on carry `clips` ([`ClipRecord`]): the clip a
//! trigger on this frame started or extended (its path, first and last capture time, the
//! trigger), a clip deleted by retention, one that could not be written, or the snapshot path
//! of a track confirmed on this frame. Like a crossing, a
//! record is stored with the frame it happened on, so the frame's key stores it exactly once.

use serde::{Deserialize, Serialize};

/// Version of this schema, stored with every event.
pub const SCHEMA_VERSION: i64 = 3;

/// Keys of frames that could not be placed on their camera's clock start here (2^62): camera,
/// position and capture-time keys are frame counts since the epoch, far below it.
pub const LOCAL_KEY_BASE: i64 = 1 << 62;

/// What an event's `seq` was derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyBasis {
    /// Not live (a file): the frame's position, `round(pts × fps)` (or the PTS in µs).
    Position,
    /// Live: the capture time in frame periods (or in µs without a frame rate).
    CaptureTime,
    /// Live, keyed by the camera's own clock: every reader of the camera gives the frame this key.
    Camera,
    /// Live camera frames that could not be placed on the camera's clock in time: keys at or
    /// above [`LOCAL_KEY_BASE`] from this machine's clock, never a camera key.
    Local,
}

impl KeyBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyBasis::Position => "position",
            KeyBasis::CaptureTime => "capture-time",
            KeyBasis::Camera => "camera",
            KeyBasis::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<KeyBasis> {
        Some(match s {
            "position" => KeyBasis::Position,
            "capture-time" => KeyBasis::CaptureTime,
            "camera" => KeyBasis::Camera,
            "local" => KeyBasis::Local,
            _ => return None,
        })
    }
}

/// Stored with a camera-keyed event: the camera's clock at that frame, from which another reader
/// of the camera (a worker taking it over) continues the keys at once, without waiting for its
/// own first RTCP sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockMark {
    /// The camera's frame period (ns).
    pub period_ns: i64,
    /// The RTP stream's SSRC, when the frame carried its RTP time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// The frame's RTP timestamp (the 32 bits the camera sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp: Option<u32>,
    /// The RTP clock rate (Hz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_rate: Option<u32>,
    /// The frame period in RTP ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_ticks: Option<u32>,
}

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
    /// What `seq` comes from (absent in events of schema 2 and older).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_basis: Option<KeyBasis>,
    /// Camera keys: the camera's clock at this frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockMark>,
    /// What `cliprecorder` did on this frame.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clips: Vec<ClipRecord>,
}

/// What `cliprecorder` did on a frame (`videoai-events clips` and `tracks` read them back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipRecord {
    /// `trigger` (a trigger on this frame started the clip or extended it), `deleted` (by
    /// retention), `failed` (the clip or snapshot could not be written, e.g. a full disk),
    /// `snapshot` (the track confirmed on this frame gets its snapshot at this path, a JPEG of
    /// its most confident detection written when the track ends).
    pub kind: String,
    /// The clip's (or snapshot's) file (absolute).
    pub path: String,
    /// `trigger`: the clip's first and last capture time as planned by this trigger (ns; the
    /// camera's clock when known, else the stream's time). A later trigger may extend it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_capture_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_capture_ns: Option<i64>,
    /// `trigger`: what triggered it (`line door in`, `zone bay entry`, `label person 0.81`, or
    /// the application's reason); `deleted`, `failed`: why; `snapshot`: the track's label.
    pub reason: String,
    /// `snapshot`: the track (objecttracker's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
}

fn current_schema() -> i64 {
    SCHEMA_VERSION
}
