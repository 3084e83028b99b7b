// SPDX-License-Identifier: MPL-2.0
//! Detection metadata on buffers, as every videoai element writes and reads it.
//!
//! * One `GstVideoRegionOfInterestMeta` per detection: roi type = the label, rectangle in the
//!   frame's pixels, and a param structure named `detection` with `label` (string), `class-id`
//!   (int), `confidence` (double) and `model` (string: `name@version`).
//!   Detections carried over from an earlier frame (`onnxinfer interval=N`) have `fresh` false.
//!   `objecttracker` adds `track-state` (`tentative`, `confirmed`, `lost`; a lost track's
//!   predicted box also has `predicted` true) and, once the track is confirmed, `track-id`
//!   (u64, unique in the stream), and on the frame a track crosses a line or enters or leaves
//!   a zone, `crossings` (array of `crossing`: `line`, `direction`) and `zone-events` (array
//!   of `zone-event`: `zone`, `event`).
//! * One `videoai-analytics` custom meta per frame `objecttracker` counted lines or zones on:
//!   `stream-id`, `crossings` (array of `crossing`: `line`, `direction` in/out, `track-id`,
//!   `label`), `zone-events` (array of `zone-event`: `zone`, `event` entry/exit, `track-id`,
//!   `label`) and `occupancy` (array of `zone`: `zone`, `count` of confirmed tracks inside);
//!   also every line and zone with its geometry and counts so far in the stream (what
//!   `detectionoverlay` draws): `lines` (array of `line`: `line`, `x1`, `y1`, `x2`, `y2` (int,
//!   frame pixels), `in`, `out` (uint64)) and `zones` (array of `zone`: `zone`, `points` (array
//!   of int: x1, y1, x2, y2, …), `count` (tracks inside now), `entries`, `exits` (uint64)).
//!   See [`LineCount`], [`ZoneCount`] and [`read_places`].
//! * Motion regions (`motiondetect`, [`super::motion`]) are ROI metas too, but not
//!   detections: every reader here leaves them out.
//! * Classifications: a `classification` param (`label`, `class-id`, `confidence`, `model`,
//!   `labels` and `confidences`: the top-k, best first) on the ROI that was classified, or on a
//!   full-frame ROI that also has a `detection` param for the best class.
//! * One `videoai-inference` custom meta per frame an inference element handled, so that frames
//!   without detections still say which model looked at them: `model` (string), `fresh`
//!   (boolean: false when the result was carried over from an earlier frame) and `detections`
//!   (uint).
//! * One `videoai-clips` custom meta on a frame `cliprecorder` did something on: `records`, a
//!   JSON array of [`ClipRecord`] (the event schema's own type, stored as the event's `clips`):
//!   a clip a trigger on this frame started or extended, one deleted by retention, one that
//!   could not be written. See [`add_clip_records`] and [`clip_records`].
//! * `onnxinfer model-type=raw`: a `videoai-tensors` custom meta whose structure has `model` and,
//!   per output tensor, a field named after the output holding a `tensor` structure: `shape`
//!   (array of int64), `type` ("f32") and `data` (a GstBuffer of little-endian values).

use gst::prelude::*;

use super::motion::is_motion_region;
use crate::eventlog::event::{Classification, ClipRecord, Crossing, Detection, ZoneEvent};

/// Name of the param structure attached to each ROI meta.
pub const DETECTION_PARAM: &str = "detection";
/// Name of the param structure with classification results.
pub const CLASSIFICATION_PARAM: &str = "classification";
/// Name of the per-frame custom meta.
pub const INFERENCE_META: &str = "videoai-inference";
/// Name of the raw tensor custom meta.
pub const TENSORS_META: &str = "videoai-tensors";
/// Name of the per-frame analytics custom meta (`objecttracker`: line crossings, zone entries
/// and exits, zone occupancy).
pub const ANALYTICS_META: &str = "videoai-analytics";
/// Name of the per-frame clip records custom meta (`cliprecorder`).
pub const CLIPS_META: &str = "videoai-clips";

/// Registers the custom meta once per process (called from plugin init and before first use).
pub fn register_inference_meta() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        for name in [
            INFERENCE_META,
            TENSORS_META,
            ANALYTICS_META,
            CLIPS_META,
            super::motion::MOTION_META,
        ] {
            if !gst::meta::CustomMeta::is_registered(name) {
                gst::meta::CustomMeta::register(name, &[]);
            }
        }
    });
}

fn detection_param(det: &Detection, model: &str) -> gst::Structure {
    let mut s = gst::Structure::builder(DETECTION_PARAM)
        .field("label", det.label.as_str())
        .field("class-id", det.class_id)
        .field("confidence", det.confidence)
        .field("model", model)
        .field("fresh", det.fresh)
        .build();
    if let Some(id) = det.track_id {
        s.set("track-id", id);
    }
    s
}

/// Attaches one detection as a `GstVideoRegionOfInterestMeta` with its `detection` param.
pub fn attach(buffer: &mut gst::BufferRef, det: &Detection, model: &str) {
    let mut meta =
        gst_video::VideoRegionOfInterestMeta::add(buffer, &det.label, (det.x, det.y, det.w, det.h));
    meta.add_param(detection_param(det, model));
}

/// One class of a classification: (label, class id, probability).
pub type Class = (String, i32, f64);
/// One classification result: the top-k, best first.
pub type Classes = [Class];

fn classification_param(top: &Classes, model: &str, fresh: bool) -> gst::Structure {
    let (label, class_id, confidence) = top.first().cloned().unwrap_or_default();
    gst::Structure::builder(CLASSIFICATION_PARAM)
        .field("label", label)
        .field("class-id", class_id)
        .field("confidence", confidence)
        .field("model", model)
        .field("fresh", fresh)
        .field("labels", gst::Array::new(top.iter().map(|t| t.0.clone())))
        .field("confidences", gst::Array::new(top.iter().map(|t| t.2)))
        .build()
}

/// Attaches a whole-frame classification: a full-frame ROI (roi type = best label) with a
/// `detection` param for the best class and a `classification` param with the top-k.
pub fn attach_frame_classification(
    buffer: &mut gst::BufferRef,
    size: (u32, u32),
    top: &Classes,
    model: &str,
    fresh: bool,
) {
    let Some((label, class_id, confidence)) = top.first().cloned() else {
        return;
    };
    let mut det = Detection::new(label, class_id, confidence, (0, 0, size.0, size.1));
    det.fresh = fresh;
    let mut meta =
        gst_video::VideoRegionOfInterestMeta::add(buffer, &det.label, (0, 0, size.0, size.1));
    meta.add_param(detection_param(&det, model));
    meta.add_param(classification_param(top, model, fresh));
}

/// The rectangles of the ROI metas on `buffer`, in meta order (what `classify_rois` expects).
pub fn roi_rects(buffer: &gst::BufferRef) -> Vec<(u32, u32, u32, u32)> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| !is_motion_region(m))
        .map(|m| m.rect())
        .collect()
}

/// Adds a `classification` param to each ROI meta, in meta order; `None` leaves an ROI as it is.
pub fn classify_rois(
    buffer: &mut gst::BufferRef,
    results: &[Option<Vec<Class>>],
    model: &str,
    fresh: bool,
) {
    for (mut meta, top) in buffer
        .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| !is_motion_region(m))
        .zip(results.iter())
    {
        if let Some(top) = top
            && !top.is_empty()
        {
            meta.add_param(classification_param(top, model, fresh));
        }
    }
}

/// Attaches raw output tensors (name, shape, f32 data) as a `videoai-tensors` meta.
pub fn attach_tensors(
    buffer: &mut gst::BufferRef,
    tensors: &[(String, Vec<i64>, Vec<f32>)],
    model: &str,
) {
    register_inference_meta();
    let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, TENSORS_META) else {
        return;
    };
    let s = meta.mut_structure();
    s.set("model", model);
    for (name, shape, data) in tensors {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        s.set(
            name.as_str(),
            gst::Structure::builder("tensor")
                .field("shape", gst::Array::new(shape.iter().copied()))
                .field("type", "f32")
                .field("data", gst::Buffer::from_mut_slice(bytes))
                .build(),
        );
    }
}

/// The raw tensors of a `videoai-tensors` meta: (name, shape, data).
pub fn read_tensors(buffer: &gst::BufferRef) -> Vec<(String, Vec<i64>, Vec<f32>)> {
    let Ok(meta) = gst::meta::CustomMeta::from_buffer(buffer, TENSORS_META) else {
        return Vec::new();
    };
    meta.structure()
        .iter()
        .filter_map(|(name, value)| {
            let t = value.get::<gst::Structure>().ok()?;
            let shape = t
                .get::<gst::Array>("shape")
                .ok()?
                .iter()
                .filter_map(|v| v.get::<i64>().ok())
                .collect();
            let data = t.get::<gst::Buffer>("data").ok()?;
            let map = data.map_readable().ok()?;
            let values = map
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Some((name.to_string(), shape, values))
        })
        .collect()
}

/// Marks the frame as handled by `model`.
pub fn attach_inference(buffer: &mut gst::BufferRef, model: &str, fresh: bool, detections: u32) {
    register_inference_meta();
    let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, INFERENCE_META) else {
        return;
    };
    let s = meta.mut_structure();
    s.set("model", model);
    s.set("fresh", fresh);
    s.set("detections", detections);
}

/// Whether the frame carries detections (ROI metas other than motion regions).
pub fn has_detections(buffer: &gst::BufferRef) -> bool {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .any(|m| !is_motion_region(&m))
}

/// Whether the frame's detections are new (`None` without a `videoai-inference` meta: not
/// from onnxinfer, so new as far as anyone can tell).
pub fn inference_fresh(buffer: &gst::BufferRef) -> Option<bool> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, INFERENCE_META).ok()?;
    meta.structure().get::<bool>("fresh").ok()
}

/// What `objecttracker` says of one region.
#[derive(Debug, Clone, Default)]
pub struct TrackInfo {
    /// None for a tentative track: a track carries its id only once it is confirmed, so a
    /// reader of the ids never sees one that ends after a frame or two.
    pub id: Option<u64>,
    pub state: &'static str,
    /// (line, direction) crossed on this frame.
    pub crossings: Vec<(String, &'static str)>,
    /// (zone, entry|exit) on this frame.
    pub zone_events: Vec<(String, &'static str)>,
}

fn set_track_fields(s: &mut gst::StructureRef, t: &TrackInfo) {
    match t.id {
        Some(id) => s.set("track-id", id),
        None => s.remove_field("track-id"),
    }
    s.set("track-state", t.state);
    if !t.crossings.is_empty() {
        s.set(
            "crossings",
            gst::Array::new(t.crossings.iter().map(|(line, direction)| {
                gst::Structure::builder("crossing")
                    .field("line", line.as_str())
                    .field("direction", *direction)
                    .build()
                    .to_send_value()
            })),
        );
    }
    if !t.zone_events.is_empty() {
        s.set(
            "zone-events",
            gst::Array::new(t.zone_events.iter().map(|(zone, event)| {
                gst::Structure::builder("zone-event")
                    .field("zone", zone.as_str())
                    .field("event", *event)
                    .build()
                    .to_send_value()
            })),
        );
    }
}

/// Sets `track-state`, `track-id` (removed for a tentative track: [`TrackInfo::id`]) (and the
/// `crossings` and `zone-events` of this frame) in
/// each ROI's `detection` param, `tracks[i]` for the i-th ROI meta (in meta order; `None`
/// leaves it as it is). An ROI without a `detection` param gets one (label = its roi type,
/// class-id -1, confidence 1).
pub fn set_tracks(buffer: &mut gst::BufferRef, tracks: &[Option<TrackInfo>]) {
    for (mut meta, track) in buffer
        .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| !is_motion_region(m))
        .zip(tracks)
    {
        let Some(track) = track else {
            continue;
        };
        // SAFETY: the meta belongs to a writable buffer we hold mutably; the param returned
        // is owned by the meta and lives as long as it.
        let param = unsafe {
            let m = &mut *meta as *mut gst_video::VideoRegionOfInterestMeta
                as *mut gst_video::ffi::GstVideoRegionOfInterestMeta;
            gst_video::ffi::gst_video_region_of_interest_meta_get_param(m, c"detection".as_ptr())
        };
        if param.is_null() {
            let label = meta.roi_type().to_string();
            let mut s = gst::Structure::builder(DETECTION_PARAM)
                .field("label", label)
                .field("class-id", -1i32)
                .field("confidence", 1.0f64)
                .build();
            set_track_fields(&mut s, track);
            meta.add_param(s);
        } else {
            // SAFETY: as above; a valid structure owned by the meta, not shared.
            let s = unsafe { gst::StructureRef::from_glib_borrow_mut(param) };
            set_track_fields(s, track);
        }
    }
}

/// Attaches a predicted box of a track lost for a short while (`objecttracker emit-lost`).
pub fn attach_lost(buffer: &mut gst::BufferRef, det: &Detection, track_id: u64) {
    let mut meta =
        gst_video::VideoRegionOfInterestMeta::add(buffer, &det.label, (det.x, det.y, det.w, det.h));
    meta.add_param(
        gst::Structure::builder(DETECTION_PARAM)
            .field("label", det.label.as_str())
            .field("class-id", det.class_id)
            .field("confidence", det.confidence)
            .field("fresh", false)
            .field("track-id", track_id)
            .field("track-state", "lost")
            .field("predicted", true)
            .build(),
    );
}

/// Attaches the frame's analytics (see [`ANALYTICS_META`]).
pub fn attach_analytics(buffer: &mut gst::BufferRef, analytics: gst::Structure) {
    register_inference_meta();
    let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, ANALYTICS_META) else {
        return;
    };
    let s = meta.mut_structure();
    for (name, value) in analytics.iter() {
        s.set_value(name, value.clone());
    }
}

/// A counting line in the `videoai-analytics` meta: its geometry and counts so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineCount {
    pub name: String,
    pub from: (i32, i32),
    pub to: (i32, i32),
    /// Crossings from the line's left to its right (looking from `from` to `to`), and back.
    pub crossed_in: u64,
    pub crossed_out: u64,
}

/// A zone in the `videoai-analytics` meta: its polygon, occupancy now and counts so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneCount {
    pub name: String,
    pub points: Vec<(i32, i32)>,
    pub inside: u64,
    pub entries: u64,
    pub exits: u64,
}

impl LineCount {
    pub fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder("line")
            .field("line", self.name.as_str())
            .field("x1", self.from.0)
            .field("y1", self.from.1)
            .field("x2", self.to.0)
            .field("y2", self.to.1)
            .field("in", self.crossed_in)
            .field("out", self.crossed_out)
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<LineCount> {
        Some(LineCount {
            name: s.get("line").ok()?,
            from: (s.get("x1").ok()?, s.get("y1").ok()?),
            to: (s.get("x2").ok()?, s.get("y2").ok()?),
            crossed_in: s.get("in").ok()?,
            crossed_out: s.get("out").ok()?,
        })
    }
}

impl ZoneCount {
    pub fn to_structure(&self) -> gst::Structure {
        let coords = self.points.iter().flat_map(|&(x, y)| [x, y]);
        gst::Structure::builder("zone")
            .field("zone", self.name.as_str())
            .field("points", gst::Array::new(coords.map(|v| v.to_send_value())))
            .field("count", self.inside)
            .field("entries", self.entries)
            .field("exits", self.exits)
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<ZoneCount> {
        let coords: Vec<i32> = s
            .get::<gst::Array>("points")
            .ok()?
            .iter()
            .map(|v| v.get::<i32>().ok())
            .collect::<Option<_>>()?;
        Some(ZoneCount {
            name: s.get("zone").ok()?,
            points: coords.chunks_exact(2).map(|c| (c[0], c[1])).collect(),
            inside: s.get("count").ok()?,
            entries: s.get("entries").ok()?,
            exits: s.get("exits").ok()?,
        })
    }
}

/// Whether the frame has a `videoai-analytics` meta.
pub fn has_analytics(buffer: &gst::BufferRef) -> bool {
    gst::meta::CustomMeta::from_buffer(buffer, ANALYTICS_META).is_ok()
}

/// The lines and zones of the frame's `videoai-analytics` meta (none without the meta);
/// entries that do not have the documented fields are left out.
pub fn read_places(buffer: &gst::BufferRef) -> (Vec<LineCount>, Vec<ZoneCount>) {
    let Ok(meta) = gst::meta::CustomMeta::from_buffer(buffer, ANALYTICS_META) else {
        return (Vec::new(), Vec::new());
    };
    let s = meta.structure();
    let list = |field: &str| -> Vec<gst::Structure> {
        s.get::<gst::Array>(field)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.get::<gst::Structure>().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        list("lines")
            .iter()
            .filter_map(|s| LineCount::from_structure(s))
            .collect(),
        list("zones")
            .iter()
            .filter_map(|s| ZoneCount::from_structure(s))
            .collect(),
    )
}

/// The model named by the frame's `videoai-inference` meta, if any.
pub fn inference_model(buffer: &gst::BufferRef) -> Option<String> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, INFERENCE_META).ok()?;
    meta.structure().get::<String>("model").ok()
}

/// The detections on a buffer with the model of each, in meta order. ROI metas without a
/// `detection` param (written by other elements) are returned with class id -1 and
/// confidence 1.0, their roi type as label, and no model.
pub fn read(buffer: &gst::BufferRef) -> Vec<(Detection, Option<String>)> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| !is_motion_region(m))
        .map(|meta| {
            let model = meta
                .param(DETECTION_PARAM)
                .and_then(|p| p.get::<String>("model").ok());
            (read_one(&meta), model)
        })
        .collect()
}

/// The detections on a buffer, in meta order (as [`read`], without the models).
pub fn read_detections(buffer: &gst::BufferRef) -> Vec<Detection> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| !is_motion_region(m))
        .map(|meta| read_one(&meta))
        .collect()
}

/// Adds `records` to the frame's `videoai-clips` meta (after those it holds already).
pub fn add_clip_records(buffer: &mut gst::BufferRef, records: &[ClipRecord]) {
    if records.is_empty() {
        return;
    }
    register_inference_meta();
    let mut all = clip_records(buffer);
    all.extend_from_slice(records);
    let json = serde_json::to_string(&all).unwrap_or_else(|_| "[]".into());
    let mut meta = match gst::meta::CustomMeta::from_mut_buffer(buffer, CLIPS_META) {
        Ok(m) => m,
        Err(_) => gst::meta::CustomMeta::add(buffer, CLIPS_META).expect("registered above"),
    };
    meta.mut_structure().set("records", json);
}

/// The frame's clip records (`videoai-clips` meta), if any.
pub fn clip_records(buffer: &gst::BufferRef) -> Vec<ClipRecord> {
    gst::meta::CustomMeta::from_buffer(buffer, CLIPS_META)
        .ok()
        .and_then(|m| m.structure().get::<String>("records").ok())
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default()
}

/// The model named by the first ROI's `detection` param, if any.
pub fn first_detection_model(buffer: &gst::BufferRef) -> Option<String> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| !is_motion_region(m))
        .find_map(|m| {
            m.param(DETECTION_PARAM)
                .and_then(|p| p.get::<String>("model").ok())
        })
}

fn read_one(meta: &gst_video::VideoRegionOfInterestMeta) -> Detection {
    let (x, y, w, h) = meta.rect();
    let param = meta.param(DETECTION_PARAM);
    let label = param
        .and_then(|p| p.get::<&str>("label").ok())
        .unwrap_or_else(|| meta.roi_type());
    let class_id = param
        .and_then(|p| p.get::<i32>("class-id").ok())
        .unwrap_or(-1);
    let confidence = param
        .and_then(|p| p.get::<f64>("confidence").ok())
        .unwrap_or(1.0);
    let mut det = Detection::new(label, class_id, confidence, (x, y, w, h));
    det.fresh = param
        .and_then(|p| p.get::<bool>("fresh").ok())
        .unwrap_or(true);
    det.classification = meta.param(CLASSIFICATION_PARAM).map(read_classification);
    det.track_id = param.and_then(|p| p.get::<u64>("track-id").ok());
    let pairs = |field: &str, a: &str, b: &str| -> Vec<(String, String)> {
        param
            .and_then(|p| p.get::<gst::Array>(field).ok())
            .map(|arr| {
                arr.iter()
                    .filter_map(|v| v.get::<gst::Structure>().ok())
                    .map(|s| {
                        (
                            s.get::<String>(a).unwrap_or_default(),
                            s.get::<String>(b).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    det.crossings = pairs("crossings", "line", "direction")
        .into_iter()
        .map(|(line, direction)| Crossing { line, direction })
        .collect();
    det.zone_events = pairs("zone-events", "zone", "event")
        .into_iter()
        .map(|(zone, event)| ZoneEvent { zone, event })
        .collect();
    det
}

fn read_classification(c: &gst::StructureRef) -> Classification {
    let strings = |f: &str| -> Vec<String> {
        c.get::<gst::Array>(f)
            .map(|a| a.iter().filter_map(|v| v.get::<String>().ok()).collect())
            .unwrap_or_default()
    };
    let floats = |f: &str| -> Vec<f64> {
        c.get::<gst::Array>(f)
            .map(|a| a.iter().filter_map(|v| v.get::<f64>().ok()).collect())
            .unwrap_or_default()
    };
    Classification {
        label: c.get::<String>("label").unwrap_or_default(),
        class_id: c.get::<i32>("class-id").unwrap_or(-1),
        confidence: c.get::<f64>("confidence").unwrap_or(0.0),
        model: c.get::<String>("model").unwrap_or_default(),
        labels: strings("labels"),
        confidences: floats("confidences"),
    }
}
