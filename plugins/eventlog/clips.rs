// SPDX-License-Identifier: MPL-2.0
//! Clips read back from stored events (`videoai-events clips`), no GStreamer in it: per
//! (stream, clip path) the triggers that started and extended it (each stored once with the
//! frame it happened on), its first and last capture time, and whether retention deleted it
//! or it could not be written; and what is on disk now.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::event::FrameEvent;

#[derive(Default)]
struct Clip {
    first_ns: Option<i64>,
    last_ns: Option<i64>,
    triggers: Vec<Value>,
    deleted: Option<String>,
    failed: Option<String>,
}

/// Clips by (stream, path).
#[derive(Default)]
pub struct Clips(BTreeMap<(String, String), Clip>);

impl Clips {
    pub fn add(&mut self, e: &FrameEvent) {
        // Snapshots (kind snapshot, and failed with a track) belong to tracks.
        for r in e
            .clips
            .iter()
            .filter(|r| r.kind != "snapshot" && r.track_id.is_none())
        {
            let c = self
                .0
                .entry((e.stream.clone(), r.path.clone()))
                .or_default();
            match r.kind.as_str() {
                "trigger" => {
                    if let Some(f) = r.first_capture_ns {
                        c.first_ns = Some(c.first_ns.map_or(f, |x| x.min(f)));
                    }
                    if let Some(l) = r.last_capture_ns {
                        c.last_ns = Some(c.last_ns.map_or(l, |x| x.max(l)));
                    }
                    c.triggers.push(json!({
                        "seq": e.seq,
                        "capture_ns": e.capture_ns,
                        "reason": r.reason,
                    }));
                }
                "deleted" => c.deleted = Some(r.reason.clone()),
                "failed" => c.failed = Some(r.reason.clone()),
                _ => {}
            }
        }
    }

    /// One JSON object per clip, by stream then path, that overlaps [from, to] (capture
    /// times; a clip known only by its deletion is kept). `file`: `complete` (the file is
    /// there), `incomplete` (only its `.partial` is: still being written, or its writer was
    /// killed; it plays up to its last fragment), `deleted` (by retention), `missing`.
    pub fn rows(&self, from: Option<i64>, to: Option<i64>) -> Vec<Value> {
        self.0
            .iter()
            .filter(|(_, c)| {
                from.is_none_or(|f| c.last_ns.is_none_or(|l| l >= f))
                    && to.is_none_or(|t| c.first_ns.is_none_or(|s| s <= t))
            })
            .map(|((stream, path), c)| {
                let file = if Path::new(path).is_file() {
                    "complete"
                } else if Path::new(&format!("{path}.partial")).is_file() {
                    "incomplete"
                } else if c.deleted.is_some() {
                    "deleted"
                } else {
                    "missing"
                };
                let mut v = json!({
                    "stream": stream,
                    "path": path,
                    "first_capture_ns": c.first_ns,
                    "last_capture_ns": c.last_ns,
                    "triggers": c.triggers,
                    "file": file,
                });
                if let Some(d) = &c.deleted {
                    v["deleted"] = d.as_str().into();
                }
                if let Some(f) = &c.failed {
                    v["failed"] = f.as_str().into();
                }
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::event::{ClipRecord, SCHEMA_VERSION};

    fn event(seq: i64, clips: Vec<ClipRecord>) -> FrameEvent {
        FrameEvent {
            stream: "cam".into(),
            seq,
            pts_ns: None,
            capture_ns: seq * 100,
            model: String::new(),
            detections: Vec::new(),
            schema: SCHEMA_VERSION,
            key_basis: None,
            clock: None,
            clips,
        }
    }

    fn record(kind: &str, path: &str, span: Option<(i64, i64)>, reason: &str) -> ClipRecord {
        ClipRecord {
            kind: kind.into(),
            path: path.into(),
            first_capture_ns: span.map(|s| s.0),
            last_capture_ns: span.map(|s| s.1),
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn triggers_extend_one_clip_and_deletion_is_kept() {
        let mut c = Clips::default();
        c.add(&event(
            1,
            vec![record(
                "trigger",
                "/nowhere/a.mp4",
                Some((50, 600)),
                "line door in",
            )],
        ));
        c.add(&event(
            3,
            vec![record(
                "trigger",
                "/nowhere/a.mp4",
                Some((60, 900)),
                "line door out",
            )],
        ));
        c.add(&event(
            9,
            vec![record(
                "trigger",
                "/nowhere/b.mp4",
                Some((800, 1500)),
                "label person 0.80",
            )],
        ));
        c.add(&event(
            20,
            vec![record(
                "deleted",
                "/nowhere/a.mp4",
                None,
                "retention max-size-bytes",
            )],
        ));
        let rows = c.rows(None, None);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["first_capture_ns"], 50);
        assert_eq!(rows[0]["last_capture_ns"], 900);
        assert_eq!(rows[0]["triggers"].as_array().unwrap().len(), 2);
        assert_eq!(rows[0]["file"], "deleted");
        assert_eq!(rows[1]["file"], "missing");
        assert_eq!(c.rows(Some(1000), None).len(), 1);
        assert_eq!(c.rows(None, Some(700)).len(), 1);
    }
}
