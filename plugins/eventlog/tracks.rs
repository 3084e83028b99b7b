// SPDX-License-Identifier: MPL-2.0
//! Tracks and counts read back from stored events (`videoai-events tracks` and `counts`), no
//! GStreamer in it: per (stream, track id) the track's life, its most confident fresh
//! detection and its snapshot (`cliprecorder snapshots`); per (stream, line, direction) the
//! crossings; per (stream, zone) the entries and exits. Each crossing is stored once with the
//! frame it happened on (`objecttracker` puts it on that frame's detection), so summing the
//! events gives exact counts however often the same frames were written.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::event::FrameEvent;

struct Track {
    label: String,
    first_ns: i64,
    last_ns: i64,
    frames: u64,
    first_box: [u32; 4],
    last_box: [u32; 4],
    confidence_sum: f64,
    /// The most confident fresh detection: confidence, box, capture time.
    best: Option<(f64, [u32; 4], i64)>,
}

/// Tracks by (stream, id).
#[derive(Default)]
pub struct Tracks {
    tracks: BTreeMap<(String, u64), Track>,
    /// Snapshot paths by (stream, track id), and why one is not there (not written, deleted).
    snapshots: BTreeMap<(String, u64), String>,
    snapshot_failures: BTreeMap<String, String>,
}

impl Tracks {
    pub fn add(&mut self, e: &FrameEvent) {
        for d in &e.detections {
            let Some(id) = d.track_id else { continue };
            let b = [d.x, d.y, d.w, d.h];
            let t = self
                .tracks
                .entry((e.stream.clone(), id))
                .or_insert_with(|| Track {
                    label: d.label.clone(),
                    first_ns: e.capture_ns,
                    last_ns: e.capture_ns,
                    frames: 0,
                    first_box: b,
                    last_box: b,
                    confidence_sum: 0.0,
                    best: None,
                });
            // The first of equal confidences: the one cliprecorder's snapshot shows.
            if d.fresh && t.best.is_none_or(|(c, _, _)| d.confidence > c) {
                t.best = Some((d.confidence, b, e.capture_ns));
            }
            t.frames += 1;
            t.confidence_sum += d.confidence;
            if e.capture_ns < t.first_ns {
                (t.first_ns, t.first_box) = (e.capture_ns, b);
            }
            if e.capture_ns >= t.last_ns {
                (t.last_ns, t.last_box) = (e.capture_ns, b);
            }
        }
        for r in &e.clips {
            match (r.kind.as_str(), r.track_id) {
                ("snapshot", Some(id)) => {
                    self.snapshots
                        .insert((e.stream.clone(), id), r.path.clone());
                }
                ("failed", Some(_)) | ("deleted", Some(_)) => {
                    self.snapshot_failures
                        .insert(r.path.clone(), format!("{}: {}", r.kind, r.reason));
                }
                _ => {}
            }
        }
    }

    /// One JSON object per track, by stream then id.
    pub fn rows(&self) -> Vec<Value> {
        self.tracks
            .iter()
            .map(|((stream, id), t)| {
                let mut v = json!({
                    "stream": stream,
                    "track_id": id,
                    "label": t.label,
                    "first_capture_ns": t.first_ns,
                    "last_capture_ns": t.last_ns,
                    "frames": t.frames,
                    "first_box": t.first_box,
                    "last_box": t.last_box,
                    "mean_confidence": t.confidence_sum / t.frames.max(1) as f64,
                });
                if let Some((c, b, at)) = t.best {
                    v["best_confidence"] = c.into();
                    v["best_box"] = json!(b);
                    v["best_capture_ns"] = at.into();
                }
                if let Some(path) = self.snapshots.get(&(stream.clone(), *id)) {
                    v["snapshot"] = path.as_str().into();
                    // Not written (`failed: …`), or deleted by retention (`deleted: …`).
                    if let Some(why) = self.snapshot_failures.get(path) {
                        v["snapshot_gone"] = why.as_str().into();
                    }
                }
                v
            })
            .collect()
    }
}

/// Line crossings and zone entries and exits.
#[derive(Default, Clone)]
pub struct Counts {
    lines: BTreeMap<(String, String, String), u64>,
    zones: BTreeMap<(String, String), (u64, u64)>,
}

impl Counts {
    pub fn add(&mut self, e: &FrameEvent) {
        for d in &e.detections {
            for c in &d.crossings {
                *self
                    .lines
                    .entry((e.stream.clone(), c.line.clone(), c.direction.clone()))
                    .or_default() += 1;
            }
            for z in &d.zone_events {
                let n = self
                    .zones
                    .entry((e.stream.clone(), z.zone.clone()))
                    .or_default();
                match z.event.as_str() {
                    "entry" => n.0 += 1,
                    _ => n.1 += 1,
                }
            }
        }
    }

    /// One line's counts: `{"stream", "line", "counts": {direction: count}}` (what raftsink
    /// publishes, retained, on the line's MQTT counts topic).
    pub fn line(&self, stream: &str, line: &str) -> Value {
        let counts: serde_json::Map<String, Value> = self
            .lines
            .iter()
            .filter(|((s, l, _), _)| s == stream && l == line)
            .map(|((_, _, d), n)| (d.clone(), (*n).into()))
            .collect();
        json!({"stream": stream, "line": line, "counts": counts})
    }

    /// One JSON object per (stream, line, direction), then one per (stream, zone).
    pub fn rows(&self) -> Vec<Value> {
        let lines = self.lines.iter().map(|((stream, line, direction), count)| {
            json!({"stream": stream, "line": line, "direction": direction, "count": count})
        });
        let zones = self.zones.iter().map(|((stream, zone), (entries, exits))| {
            json!({"stream": stream, "zone": zone, "entries": entries, "exits": exits})
        });
        lines.chain(zones).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::event::{Crossing, Detection, ZoneEvent};

    fn event(stream: &str, t: i64, dets: Vec<Detection>) -> FrameEvent {
        FrameEvent {
            stream: stream.into(),
            seq: t,
            pts_ns: None,
            capture_ns: t,
            model: String::new(),
            detections: dets,
            schema: super::super::event::SCHEMA_VERSION,
            key_basis: None,
            clock: None,
            clips: Vec::new(),
        }
    }

    fn tracked(id: u64, x: u32, crossed: Option<&str>) -> Detection {
        let mut d = Detection::new("person", 0, 0.8, (x, 10, 20, 40));
        d.track_id = Some(id);
        if let Some(dir) = crossed {
            d.crossings.push(Crossing {
                line: "door".into(),
                direction: dir.into(),
            });
            d.zone_events.push(ZoneEvent {
                zone: "bay".into(),
                event: "entry".into(),
            });
        }
        d
    }

    #[test]
    fn tracks_and_counts_sum_the_events() {
        let evs = vec![
            event("cam", 1, vec![tracked(1, 0, None), tracked(2, 100, None)]),
            event("cam", 2, vec![tracked(1, 5, Some("in"))]),
            event(
                "cam",
                3,
                vec![tracked(1, 9, None), tracked(2, 90, Some("out"))],
            ),
            event("yard", 1, vec![tracked(1, 0, Some("in"))]),
        ];
        let (mut t, mut c) = (Tracks::default(), Counts::default());
        for e in &evs {
            t.add(e);
            c.add(e);
        }
        let rows = t.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["frames"], 3);
        assert_eq!(rows[0]["first_box"], json!([0, 10, 20, 40]));
        assert_eq!(rows[0]["last_box"], json!([9, 10, 20, 40]));
        let counts = c.rows();
        assert_eq!(
            counts[0],
            json!({"stream": "cam", "line": "door", "direction": "in", "count": 1})
        );
        assert_eq!(counts.len(), 5, "{counts:?}");
        assert_eq!(
            counts[3],
            json!({"stream": "cam", "zone": "bay", "entries": 2, "exits": 0})
        );
    }
}
