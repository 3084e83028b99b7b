// SPDX-License-Identifier: MPL-2.0
//! `objecttracker` implementation: a BaseTransform working in place.
//!
//! Threads: the streaming thread runs the trackers (`transform_ip`); the application thread
//! sets properties (taken in at start) and reads `stats`.
//!
//! Lock order: `settings`, then `state`. `stats` is built from `state` alone.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::Anchor;
use super::settings::{self, Settings};
use super::tracker::{Config, Det, TrackState, Tracker};
use crate::eventlog::event::Detection;
use crate::formats::batch::{self, Status};
use crate::formats::detection::{self, TrackInfo};
use crate::formats::places::{Event, Line, Places, Point, Zone};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "objecttracker",
        gst::DebugColorFlags::empty(),
        Some("videoai object tracker"),
    )
});

/// Regions tracked per frame at most; more are passed on untracked and counted as skipped
/// (a broken detector must not stall the stream).
pub const MAX_DETECTIONS: usize = 4096;

/// One stream's trackers and counts.
struct Stream {
    tracker: Tracker,
    places: Places,
    /// Running time of the last frame (for frames without a timestamp).
    last_ns: u64,
    /// Whether a detection whose confidence is not a number was warned about.
    warned_confidence: bool,
}

/// Created in `start`, dropped in `stop`.
struct State {
    config: Config,
    lines: Vec<Line>,
    zones: Vec<Zone>,
    anchor: Anchor,
    emit_lost: bool,
    max_lost: u64,
    streams: HashMap<String, Stream>,
    /// The stream id of a single stream (from STREAM_START).
    stream_id: String,
    frames: u64,
    detections: u64,
    skipped: u64,
    /// The caps of the single stream (a change resets the tracks).
    caps: Option<gst::Caps>,
}

impl State {
    fn stream(&mut self, id: &str) -> &mut Stream {
        let (config, lines, zones) = (self.config, &self.lines, &self.zones);
        self.streams
            .entry(id.to_string())
            .or_insert_with(|| Stream {
                tracker: Tracker::new(config),
                places: Places::new(lines.clone(), zones.clone()),
                last_ns: 0,
                warned_confidence: false,
            })
    }
}

#[derive(Default)]
pub struct ObjectTracker {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for ObjectTracker {
    const NAME: &'static str = "GstObjectTracker";
    type Type = super::ObjectTracker;
    type ParentType = gst_base::BaseTransform;
}

fn anchor_of(anchor: Anchor, r: &[f64; 4]) -> Point {
    match anchor {
        Anchor::BottomCentre => (r[0] + r[2] / 2.0, r[1] + r[3]),
        Anchor::Centre => (r[0] + r[2] / 2.0, r[1] + r[3] / 2.0),
    }
}

/// What happened on one frame, for the meta, the messages and the stats.
#[derive(Default)]
struct Happened {
    crossings: Vec<gst::Structure>,
    zone_events: Vec<gst::Structure>,
    /// Warnings to post (once the state lock is released).
    warnings: Vec<String>,
}

impl ObjectTracker {
    /// Tracks the regions of one frame of `stream` at running time `now_ns` (None: unknown).
    fn track_frame(
        &self,
        state: &mut State,
        stream_id: &str,
        buffer: &mut gst::BufferRef,
        now_ns: Option<u64>,
        repeated: bool,
    ) -> Happened {
        let (anchor, emit_lost, max_lost) = (state.anchor, state.emit_lost, state.max_lost);
        let min_hits = state.config.min_hits;
        let all = detection::read_detections(buffer);
        state.frames += 1;
        state.detections += all.len() as u64;
        let mut skipped = all.len().saturating_sub(MAX_DETECTIONS) as u64;
        // Not tracked (confidence 0 here) and counted: a confidence that is not a number (a
        // broken model or post-processing), or a zero-size box.
        let mut not_a_number = 0;
        for d in all.iter().take(MAX_DETECTIONS) {
            if !d.confidence.is_finite() {
                not_a_number += 1;
            } else if d.w == 0 || d.h == 0 {
                skipped += 1;
            }
        }
        let dets: Vec<Det> = all
            .into_iter()
            .take(MAX_DETECTIONS)
            .map(|d| Det {
                rect: [d.x as f64, d.y as f64, d.w as f64, d.h as f64],
                class_id: d.class_id,
                confidence: if d.confidence.is_finite() {
                    d.confidence
                } else {
                    0.0
                },
                label: d.label,
            })
            .collect();
        skipped += not_a_number;
        // A frame whose detections were carried over (onnxinfer interval, a batch entry
        // repeated) only moves the motion model on.
        let fresh = !repeated && detection::inference_fresh(buffer).unwrap_or(true);
        let stream = state.stream(stream_id);
        let now = now_ns.unwrap_or(stream.last_ns + 33_333_333);
        stream.last_ns = now;
        let matches = if fresh {
            stream.tracker.update(&dets, now)
        } else {
            stream.tracker.carry(&dets)
        };
        // Tracks that ended no longer count in lines and zones.
        for id in &stream.tracker.ended {
            stream.places.forget(*id);
        }
        let mut tracks: Vec<Option<TrackInfo>> = matches
            .iter()
            .map(|m| {
                m.map(|t| {
                    let track = &stream.tracker.tracks[t];
                    let shown = track.shown(min_hits);
                    TrackInfo {
                        // A tentative track's regions carry no id (see TrackInfo::id).
                        id: (shown == TrackState::Confirmed).then_some(track.id),
                        state: shown.name(),
                        ..Default::default()
                    }
                })
            })
            .collect();

        let mut happened = Happened::default();
        if not_a_number > 0 && !stream.warned_confidence {
            stream.warned_confidence = true;
            happened.warnings.push(format!(
                "stream '{stream_id}': {not_a_number} detection(s) with a confidence that is not a number (NaN or infinite) were not tracked; counted in stats 'skipped' from now on (the model or its post-processing gives broken scores)"
            ));
        }
        if fresh && !stream.places.is_empty() {
            for (d, m) in matches.iter().enumerate() {
                let Some(t) = m else { continue };
                let track = &stream.tracker.tracks[*t];
                if track.shown(min_hits) != TrackState::Confirmed {
                    continue;
                }
                let (id, label) = (track.id, track.label.clone());
                let info = tracks[d].as_mut().expect("a matched region");
                for event in stream.places.moved(id, anchor_of(anchor, &dets[d].rect)) {
                    match event {
                        Event::Crossed { line, direction } => {
                            let name = stream.places.lines[line].name.as_str();
                            info.crossings.push((name.to_string(), direction.name()));
                            happened.crossings.push(
                                gst::Structure::builder("crossing")
                                    .field("line", name)
                                    .field("direction", direction.name())
                                    .field("track-id", id)
                                    .field("label", label.as_str())
                                    .build(),
                            );
                        }
                        Event::Entered { zone } | Event::Exited { zone } => {
                            let what = if matches!(event, Event::Entered { .. }) {
                                "entry"
                            } else {
                                "exit"
                            };
                            let name = stream.places.zones[zone].name.as_str();
                            info.zone_events.push((name.to_string(), what));
                            happened.zone_events.push(
                                gst::Structure::builder("zone-event")
                                    .field("zone", name)
                                    .field("event", what)
                                    .field("track-id", id)
                                    .field("label", label.as_str())
                                    .build(),
                            );
                        }
                    }
                }
            }
        }
        detection::set_tracks(buffer, &tracks);
        if emit_lost {
            let algorithm = stream.tracker.config.algorithm;
            let lost: Vec<(Detection, u64)> = stream
                .tracker
                .recently_lost(now, max_lost)
                .map(|t| {
                    let r = t.rect(algorithm);
                    let clamp = |v: f64| v.max(0.0).round() as u32;
                    (
                        Detection::new(
                            t.label.clone(),
                            t.class_id,
                            t.confidence,
                            (clamp(r[0]), clamp(r[1]), clamp(r[2]), clamp(r[3])),
                        ),
                        t.id,
                    )
                })
                .collect();
            for (det, id) in lost {
                detection::attach_lost(buffer, &det, id);
            }
        }
        if !stream.places.is_empty() {
            let occupancy = stream.places.occupancy();
            let zones = &stream.places.zones;
            let analytics = gst::Structure::builder("videoai-analytics")
                .field("stream-id", stream_id)
                .field(
                    "crossings",
                    gst::Array::new(happened.crossings.iter().map(|s| s.to_send_value())),
                )
                .field(
                    "zone-events",
                    gst::Array::new(happened.zone_events.iter().map(|s| s.to_send_value())),
                )
                .field(
                    "occupancy",
                    gst::Array::new(zones.iter().zip(&occupancy).map(|(z, n)| {
                        gst::Structure::builder("zone")
                            .field("zone", z.name.as_str())
                            .field("count", *n)
                            .build()
                            .to_send_value()
                    })),
                )
                .field(
                    "lines",
                    gst::Array::new(
                        stream
                            .places
                            .line_counts()
                            .iter()
                            .map(|l| l.to_structure().to_send_value()),
                    ),
                )
                .field(
                    "zones",
                    gst::Array::new(
                        stream
                            .places
                            .zone_counts(&occupancy)
                            .iter()
                            .map(|z| z.to_structure().to_send_value()),
                    ),
                )
                .build();
            detection::attach_analytics(buffer, analytics);
        }
        state.skipped += skipped;
        happened
    }

    /// Warns about each line and zone that lies wholly outside the frames `caps` describe
    /// (nothing can cross or enter it): a typo, or drawn for another resolution.
    fn warn_places_outside(&self, caps: &gst::Caps) {
        let Some(s) = caps.structure(0) else { return };
        let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) else {
            return;
        };
        let outside: Vec<String> = {
            let guard = self.state.lock().unwrap();
            let Some(st) = guard.as_ref() else { return };
            let (fw, fh) = (w as f64, h as f64);
            st.lines
                .iter()
                .filter(|l| !l.meets_frame(fw, fh))
                .map(|l| {
                    format!(
                        "line '{}' ({},{} to {},{})",
                        l.name, l.a.0, l.a.1, l.b.0, l.b.1
                    )
                })
                .chain(
                    st.zones
                        .iter()
                        .filter(|z| !z.meets_frame(fw, fh))
                        .map(|z| format!("zone '{}'", z.name)),
                )
                .collect()
        };
        for what in outside {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                (
                    "{} lies wholly outside the {}x{} frames: nothing can cross or enter it. Give it in the pixels of these frames",
                    what,
                    w,
                    h
                )
            );
        }
    }

    /// Posts each crossing and zone event as an element message, and the warnings.
    fn post(&self, stream_id: &str, running_time: Option<u64>, happened: Happened) {
        for w in &happened.warnings {
            gst::element_imp_warning!(self, gst::StreamError::Format, ("{}", w));
        }
        let element = self.obj();
        for (name, list) in [
            ("objecttracker-crossing", happened.crossings),
            ("objecttracker-zone", happened.zone_events),
        ] {
            for s in list {
                let mut b = gst::Structure::builder(name).field("stream-id", stream_id);
                for (k, v) in s.iter() {
                    b = b.field(k, v.clone());
                }
                if let Some(rt) = running_time {
                    b = b.field("running-time", rt);
                }
                let _ = element.post_message(
                    gst::message::Element::builder(b.build())
                        .src(&*element)
                        .build(),
                );
            }
        }
    }

    /// Ends every track (ids go on from the last: never reused in a stream); counts stay.
    fn reset_tracks(&self) {
        let mut guard = self.state.lock().unwrap();
        let Some(st) = guard.as_mut() else {
            return;
        };
        for s in st.streams.values_mut() {
            let ids: Vec<u64> = s.tracker.tracks.iter().map(|t| t.id).collect();
            for id in ids {
                s.places.forget(id);
            }
            let mut fresh = Tracker::new(st.config);
            fresh.created = s.tracker.created;
            fresh.skip_ids_to(s.tracker.next_id());
            s.tracker = fresh;
        }
    }

    fn stats(&self) -> gst::Structure {
        let guard = self.state.lock().unwrap();
        let mut b = gst::Structure::builder("objecttracker-stats");
        let Some(st) = guard.as_ref() else {
            return b
                .field("frames", 0u64)
                .field("detections", 0u64)
                .field("tracks-created", 0u64)
                .field("tracks-active", 0u64)
                .field("skipped", 0u64)
                .field("lines", gst::Array::new(Vec::<glib::SendValue>::new()))
                .field("zones", gst::Array::new(Vec::<glib::SendValue>::new()))
                .build();
        };
        let created: u64 = st.streams.values().map(|s| s.tracker.created).sum();
        let active: u64 = st
            .streams
            .values()
            .map(|s| {
                s.tracker
                    .tracks
                    .iter()
                    .filter(|t| t.shown(st.config.min_hits) == TrackState::Confirmed)
                    .count() as u64
            })
            .sum();
        let lines = st.lines.iter().enumerate().map(|(i, l)| {
            let (i_n, o_n) = st.streams.values().fold((0u64, 0u64), |(a, b), s| {
                let c = s.places.crossings.get(i).copied().unwrap_or((0, 0));
                (a + c.0, b + c.1)
            });
            gst::Structure::builder("line")
                .field("line", l.name.as_str())
                .field("in", i_n)
                .field("out", o_n)
                .build()
                .to_send_value()
        });
        // Each stream's occupancy once (it walks the stream's tracks), not once per zone.
        let occupancies: Vec<Vec<u64>> =
            st.streams.values().map(|s| s.places.occupancy()).collect();
        let zones = st.zones.iter().enumerate().map(|(i, z)| {
            let (mut entries, mut exits, mut occupancy) = (0u64, 0u64, 0u64);
            for (s, occ) in st.streams.values().zip(&occupancies) {
                let c = s.places.zone_counts.get(i).copied().unwrap_or((0, 0));
                entries += c.0;
                exits += c.1;
                occupancy += occ.get(i).copied().unwrap_or(0);
            }
            gst::Structure::builder("zone")
                .field("zone", z.name.as_str())
                .field("entries", entries)
                .field("exits", exits)
                .field("occupancy", occupancy)
                .build()
                .to_send_value()
        });
        b = b
            .field("frames", st.frames)
            .field("detections", st.detections)
            .field("tracks-created", created)
            .field("tracks-active", active)
            .field("skipped", st.skipped)
            .field("lines", gst::Array::new(lines))
            .field("zones", gst::Array::new(zones));
        b.build()
    }
}

impl ObjectImpl for ObjectTracker {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        self.settings.lock().unwrap().set(pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        self.settings
            .lock()
            .unwrap()
            .get(pspec.name())
            .unwrap_or_else(|| unreachable!("unknown property {}", pspec.name()))
    }
}

impl GstObjectImpl for ObjectTracker {}

impl ElementImpl for ObjectTracker {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Object tracker",
                "Filter/Analyzer/Video",
                "Follows each detected object from frame to frame (ByteTrack or IoU) with an id \
                 that stays put, and counts line crossings and zone entries and exits on the \
                 tracks",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::new_any();
            ["src", "sink"]
                .into_iter()
                .map(|name| {
                    let direction = if name == "src" {
                        gst::PadDirection::Src
                    } else {
                        gst::PadDirection::Sink
                    };
                    gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps).unwrap()
                })
                .collect()
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for ObjectTracker {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let (lines, zones) = settings
            .places()
            .map_err(|m| gst::error_msg!(gst::ResourceError::Settings, ("{}", m)))?;
        gst::debug!(
            CAT,
            imp = self,
            "{} lines, {} zones",
            lines.len(),
            zones.len()
        );
        *self.state.lock().unwrap() = Some(State {
            config: settings.config(),
            lines,
            zones,
            anchor: settings.anchor,
            emit_lost: settings.emit_lost,
            max_lost: settings.max_lost,
            streams: HashMap::new(),
            stream_id: String::new(),
            frames: 0,
            detections: 0,
            skipped: 0,
            caps: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Kept for `stats` after the run: only the trackers go.
        if let Some(st) = self.state.lock().unwrap().as_mut() {
            for s in st.streams.values_mut() {
                s.tracker.tracks.clear();
            }
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            // Track ids do not survive a flushing seek or new caps (another picture size):
            // the objects are followed afresh.
            gst::EventView::FlushStop(_) => self.reset_tracks(),
            gst::EventView::Caps(c) => {
                let caps = c.caps_owned();
                let changed = {
                    let mut guard = self.state.lock().unwrap();
                    guard
                        .as_mut()
                        .map(|st| st.caps.replace(caps.clone()).is_some_and(|old| old != caps))
                        .unwrap_or(false)
                };
                if changed {
                    self.reset_tracks();
                }
                self.warn_places_outside(&caps);
            }
            gst::EventView::StreamStart(s) => {
                if let Some(st) = self.state.lock().unwrap().as_mut() {
                    st.stream_id = s.stream_id().to_string();
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let segment = self.obj().segment();
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("not started"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let mut posts = Vec::new();
        if let Some(mut entries) = batch::read(buf) {
            for e in entries.iter_mut() {
                if e.status == Status::Missing {
                    continue;
                }
                let Some(b) = e.buffer.as_mut() else {
                    continue;
                };
                let rt = e.running_time.map(|t| t.nseconds());
                let stream_id = e.stream_id.clone();
                let repeated = e.status == Status::Repeated;
                let happened = self.track_frame(state, &stream_id, b.make_mut(), rt, repeated);
                posts.push((stream_id, rt, happened));
            }
            batch::write(buf, &entries).map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ("cannot update the batch: {e}")
                );
                gst::FlowError::Error
            })?;
        } else {
            let rt = segment
                .downcast_ref::<gst::ClockTime>()
                .and_then(|s| s.to_running_time(buf.pts()))
                .map(|t| t.nseconds());
            let stream_id = state.stream_id.clone();
            let happened = self.track_frame(state, &stream_id, buf, rt, false);
            posts.push((stream_id, rt, happened));
        }
        drop(guard);
        for (stream_id, rt, happened) in posts {
            self.post(&stream_id, rt, happened);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
