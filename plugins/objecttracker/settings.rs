// SPDX-License-Identifier: MPL-2.0
//! `objecttracker` settings: defaults, the property specs, and the tracker configuration they
//! make.

use gst::glib;
use gst::prelude::*;

use super::tracker::{self, Config};
use super::{Algorithm, Anchor};
use crate::formats::places::{self as lines, Line, Zone};

pub const DEFAULT_ALGORITHM: Algorithm = Algorithm::ByteTrack;
pub const DEFAULT_HIGH: f64 = 0.5;
pub const DEFAULT_LOW: f64 = 0.1;
/// ByteTrack's `det_thresh` is its track threshold + 0.1.
pub const DEFAULT_NEW_TRACK_MARGIN: f64 = 0.1;
pub const DEFAULT_MATCH: f64 = 0.2;
/// One second.
pub const DEFAULT_MAX_LOST: u64 = 1_000_000_000;
pub const DEFAULT_MIN_HITS: u32 = 2;
pub const DEFAULT_CLASS_AWARE: bool = true;
pub const DEFAULT_EMIT_LOST: bool = false;
pub const DEFAULT_ANCHOR: Anchor = Anchor::BottomCentre;

#[derive(Debug, Clone)]
pub struct Settings {
    pub algorithm: Algorithm,
    pub high: f64,
    pub low: f64,
    pub new_track_margin: f64,
    pub match_iou: f64,
    pub max_lost: u64,
    pub min_hits: u32,
    pub class_aware: bool,
    pub emit_lost: bool,
    pub lines: Option<String>,
    pub zones: Option<String>,
    pub anchor: Anchor,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            algorithm: DEFAULT_ALGORITHM,
            high: DEFAULT_HIGH,
            low: DEFAULT_LOW,
            new_track_margin: DEFAULT_NEW_TRACK_MARGIN,
            match_iou: DEFAULT_MATCH,
            max_lost: DEFAULT_MAX_LOST,
            min_hits: DEFAULT_MIN_HITS,
            class_aware: DEFAULT_CLASS_AWARE,
            emit_lost: DEFAULT_EMIT_LOST,
            lines: None,
            zones: None,
            anchor: DEFAULT_ANCHOR,
        }
    }
}

impl Settings {
    pub fn config(&self) -> Config {
        Config {
            algorithm: match self.algorithm {
                Algorithm::ByteTrack => tracker::Algorithm::ByteTrack,
                Algorithm::Iou => tracker::Algorithm::Iou,
            },
            high: self.high,
            low: self.low,
            start: self.high + self.new_track_margin,
            match_iou: self.match_iou,
            max_lost_ns: self.max_lost,
            min_hits: self.min_hits.max(1),
            class_aware: self.class_aware,
        }
    }

    /// The lines and zones, or what is wrong with them (or with the thresholds).
    pub fn places(&self) -> Result<(Vec<Line>, Vec<Zone>), String> {
        if self.low > self.high {
            return Err(format!(
                "low-threshold {} is above high-threshold {}: low-confidence detections are those between the two; set low-threshold at or below high-threshold",
                self.low, self.high
            ));
        }
        if self.high + self.new_track_margin > 1.0 {
            return Err(format!(
                "high-threshold {} + new-track-margin {} is above 1: no detection could start a track; lower one of them",
                self.high, self.new_track_margin
            ));
        }
        let lines = lines::parse_lines(self.lines.as_deref().unwrap_or(""))
            .map_err(|e| format!("lines: {e}. Syntax: lines=\"NAME:x1,y1,x2,y2;NAME:…\""))?;
        let zones = lines::parse_zones(self.zones.as_deref().unwrap_or("")).map_err(|e| {
            format!("zones: {e}. Syntax: zones=\"NAME:x1,y1,x2,y2,x3,y3[,…];NAME:…\"")
        })?;
        Ok((lines, zones))
    }

    pub fn set(&mut self, name: &str, value: &glib::Value) {
        let text = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
        };
        match name {
            "algorithm" => self.algorithm = value.get().expect("type checked upstream"),
            "high-threshold" => self.high = value.get().expect("type checked upstream"),
            "low-threshold" => self.low = value.get().expect("type checked upstream"),
            "new-track-margin" => {
                self.new_track_margin = value.get().expect("type checked upstream")
            }
            "match-threshold" => self.match_iou = value.get().expect("type checked upstream"),
            "max-lost" => self.max_lost = value.get().expect("type checked upstream"),
            "min-hits" => self.min_hits = value.get().expect("type checked upstream"),
            "class-aware" => self.class_aware = value.get().expect("type checked upstream"),
            "emit-lost" => self.emit_lost = value.get().expect("type checked upstream"),
            "lines" => self.lines = text().filter(|t| !t.trim().is_empty()),
            "zones" => self.zones = text().filter(|t| !t.trim().is_empty()),
            "anchor" => self.anchor = value.get().expect("type checked upstream"),
            _ => {}
        }
    }

    pub fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "algorithm" => self.algorithm.to_value(),
            "high-threshold" => self.high.to_value(),
            "low-threshold" => self.low.to_value(),
            "new-track-margin" => self.new_track_margin.to_value(),
            "match-threshold" => self.match_iou.to_value(),
            "max-lost" => self.max_lost.to_value(),
            "min-hits" => self.min_hits.to_value(),
            "class-aware" => self.class_aware.to_value(),
            "emit-lost" => self.emit_lost.to_value(),
            "lines" => self.lines.to_value(),
            "zones" => self.zones.to_value(),
            "anchor" => self.anchor.to_value(),
            _ => return None,
        })
    }
}

pub fn properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecEnum::builder_with_default("algorithm", DEFAULT_ALGORITHM)
            .nick("Algorithm")
            .blurb(
                "bytetrack: Kalman motion model, two-stage matching (high-confidence detections \
                 first, then low-confidence ones to the tracks left), optimal assignment on \
                 IoU; iou: greedy IoU matching on the last box (cheapest). Default: bytetrack",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecDouble::builder("high-threshold")
            .nick("High threshold")
            .blurb(
                "Confidence at or above which a detection is matched first (0-1); it starts a \
                 track only at high-threshold + new-track-margin or above. Default: 0.5",
            )
            .minimum(0.0)
            .maximum(1.0)
            .default_value(DEFAULT_HIGH)
            .mutable_ready()
            .build(),
        glib::ParamSpecDouble::builder("low-threshold")
            .nick("Low threshold")
            .blurb(
                "Confidence at or above which a detection below high-threshold may still keep \
                 an existing track going (ByteTrack's second stage; 0-1, lower ones are \
                 ignored). Above high-threshold is an error at start. Default: 0.1",
            )
            .minimum(0.0)
            .maximum(1.0)
            .default_value(DEFAULT_LOW)
            .mutable_ready()
            .build(),
        glib::ParamSpecDouble::builder("new-track-margin")
            .nick("New track margin")
            .blurb(
                "How much more than high-threshold a detection that matches no track needs to \
                 start a new one (0-1; ByteTrack's det_thresh is its track threshold + 0.1; \
                 both algorithms): in a crowd, false positives just above high-threshold start \
                 fewer tracks that then take a missed object's place. Set 0 where objects are \
                 often seen only just above high-threshold (partly hidden behind another all \
                 along): with the margin they get no track of their own. high-threshold + \
                 new-track-margin above 1 is an error at start. Default: 0.1",
            )
            .minimum(0.0)
            .maximum(1.0)
            .default_value(DEFAULT_NEW_TRACK_MARGIN)
            .mutable_ready()
            .build(),
        glib::ParamSpecDouble::builder("match-threshold")
            .nick("Match threshold")
            .blurb(
                "Least overlap (IoU, 0-1) between a track's predicted box and a detection for \
                 them to be matched in the first stage (a lost track's overlap counts 0.9 of \
                 itself). With bytetrack the detection's centre must also lie where the track's \
                 motion model expects it (a gate of about 0.4 x the box height), however much \
                 they overlap; boxes that do not overlap at all are never matched, even at 0. \
                 Default: 0.2",
            )
            .minimum(0.0)
            .maximum(1.0)
            .default_value(DEFAULT_MATCH)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("max-lost")
            .nick("Max lost")
            .blurb(
                "How long (ns of running time) a track that lost its object is kept to be \
                 found again with the same id: the same at any frame rate. Default: \
                 1000000000 (1 s)",
            )
            .default_value(DEFAULT_MAX_LOST)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("min-hits")
            .nick("Min hits")
            .blurb(
                "Matched frames before a track is confirmed (track-state=confirmed); until then \
                 its regions say tentative and carry no track-id, and lines and zones do not \
                 count it (it is matched like a confirmed track from its 2nd frame, or at once \
                 on the stream's first frame). 1 gives every region its id at once. 3 reports tracks as supervision's ByteTrack with \
                 minimum_consecutive_frames=2 does. Default: 2",
            )
            .minimum(1)
            .maximum(1000)
            .default_value(DEFAULT_MIN_HITS)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("class-aware")
            .nick("Class aware")
            .blurb(
                "Only match a detection to a track of the same class (a car never continues a \
                 person's track). Default: true",
            )
            .default_value(DEFAULT_CLASS_AWARE)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("emit-lost")
            .nick("Emit lost")
            .blurb(
                "Also attach, for each track lost for at most max-lost, its predicted box as \
                 a region with track-state=lost and predicted=true. Default: false",
            )
            .default_value(DEFAULT_EMIT_LOST)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("lines")
            .nick("Lines")
            .blurb(
                "Named lines in frame pixels, counted per direction as tracks cross them: \
                 \"NAME:x1,y1,x2,y2;NAME:…\", e.g. lines=\"door:100,400,600,400\". 'in' is \
                 from the line's left to its right looking from (x1,y1) to (x2,y2) (downward \
                 for a line drawn left to right). A malformed value is an error at start. \
                 Default: none",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("zones")
            .nick("Zones")
            .blurb(
                "Named polygons in frame pixels, with entries, exits and occupancy counted: \
                 \"NAME:x1,y1,x2,y2,x3,y3[,…];NAME:…\". A malformed value is an error at \
                 start. Default: none",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("anchor", DEFAULT_ANCHOR)
            .nick("Anchor")
            .blurb(
                "The point of a box judged against lines and zones: bottom-centre (where \
                 people and vehicles touch the ground) or centre. Default: bottom-centre",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb(
                "Read-only 'objecttracker-stats': frames, detections, tracks-created, \
                 tracks-active (confirmed now), skipped (regions not tracked: zero-size, a \
                 confidence that is not a number (warned once per stream), over \
                 the per-frame limit), and arrays lines (line, in, out) and zones (zone, \
                 entries, exits, occupancy), summed over streams",
            )
            .read_only()
            .build(),
    ]
}
