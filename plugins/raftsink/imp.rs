// SPDX-License-Identifier: MPL-2.0
//! `raftsink` implementation.
//!
//! Lock order: `settings`, then `state`, then `stats`. The streaming thread holds `state` while
//! appending; `stats` is only taken for counter updates.

use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::sequence::Sequencer;
use crate::capture_time::CaptureClock;
use crate::detection;
use crate::event::FrameEvent;
use crate::event_store::{Append, EventStore};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "raftsink",
        gst::DebugColorFlags::empty(),
        Some("videoai durable detection event sink"),
    )
});

const DEFAULT_COMMIT_INTERVAL_MS: u32 = 20;

#[derive(Debug, Clone)]
struct Settings {
    location: Option<PathBuf>,
    commit_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: None,
            commit_interval: Duration::from_millis(DEFAULT_COMMIT_INTERVAL_MS as u64),
        }
    }
}

/// Created in `start`, dropped in `stop`.
struct State {
    store: EventStore,
    stream_id: Option<String>,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    sequencer: Sequencer,
    capture: CaptureClock,
    commit_interval: Duration,
    /// When the oldest uncommitted event was appended.
    pending_since: Option<Instant>,
    pending: u64,
}

#[derive(Debug, Default)]
struct Stats {
    written: u64,
    duplicates: u64,
    commits: u64,
}

#[derive(Default)]
pub struct RaftSink {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
}

#[glib::object_subclass]
impl ObjectSubclass for RaftSink {
    const NAME: &'static str = "GstRaftSink";
    type Type = super::RaftSink;
    type ParentType = gst_base::BaseSink;
}

impl RaftSink {
    fn commit(&self, state: &mut State) -> Result<(), gst::ErrorMessage> {
        if state.pending == 0 {
            return Ok(());
        }
        state.store.commit().map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::Write,
                (
                    "raftsink: cannot commit {} events: {e}. Check disk space and permissions",
                    state.pending
                )
            )
        })?;
        gst::trace!(CAT, imp = self, "committed {} events", state.pending);
        state.pending = 0;
        state.pending_since = None;
        self.stats.lock().unwrap().commits += 1;
        Ok(())
    }

    fn commit_now(&self) -> bool {
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return true;
        };
        match self.commit(state) {
            Ok(()) => true,
            Err(err) => {
                drop(guard);
                self.post_error_message(err);
                false
            }
        }
    }

    fn stream_id_fallback(&self) -> String {
        self.obj().name().to_string()
    }
}

impl ObjectImpl for RaftSink {
    fn constructed(&self) {
        self.parent_constructed();
        // A log writer keeps up as fast as it can; it does not wait for the clock.
        self.obj().set_sync(false);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb(
                        "Path of the event log: an SQLite file (WAL mode, synchronous=FULL), \
                         created with its schema if missing. Required. Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("commit-interval")
                    .nick("Commit interval")
                    .blurb(
                        "Group commit: events are made durable at most this many milliseconds \
                         after they were appended (checked as frames arrive), and always before \
                         EOS is passed on and on stop. 0 commits every frame. Default: 20",
                    )
                    .default_value(DEFAULT_COMMIT_INTERVAL_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only 'raftsink-stats' structure: written (events stored), \
                         duplicates (events already in the log, ignored), commits",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "location" => {
                settings.location = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from);
            }
            "commit-interval" => {
                settings.commit_interval = Duration::from_millis(
                    value.get::<u32>().expect("type checked upstream") as u64,
                );
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "location" => self
                .settings
                .lock()
                .unwrap()
                .location
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "commit-interval" => {
                (self.settings.lock().unwrap().commit_interval.as_millis() as u32).to_value()
            }
            "stats" => {
                let s = self.stats.lock().unwrap();
                gst::Structure::builder("raftsink-stats")
                    .field("written", s.written)
                    .field("duplicates", s.duplicates)
                    .field("commits", s.commits)
                    .build()
                    .to_value()
            }
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for RaftSink {}

impl ElementImpl for RaftSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Durable detection event sink",
                "Sink/Analyzer/Video",
                "Stores one event per frame (stream id, frame sequence, pts, capture time, model, \
                 detections from the GstVideoRegionOfInterestMeta 'detection' params) in an \
                 SQLite event log, exactly once per (stream, sequence), durable before EOS. \
                 Read the log with `videoai-events dump LOCATION`",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSinkImpl for RaftSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let Some(location) = settings.location else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("raftsink: no location set. Set location to the event log file, e.g. raftsink location=events.db")
            ));
        };
        let store = EventStore::open_for_writing(&location).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::OpenWrite,
                ("raftsink: {e}. Check that the directory exists and is writable")
            )
        })?;
        gst::info!(CAT, imp = self, "writing events to {}", location.display());
        *self.stats.lock().unwrap() = Stats::default();
        *self.state.lock().unwrap() = Some(State {
            store,
            stream_id: None,
            segment: None,
            sequencer: Sequencer::new(),
            capture: CaptureClock::new(),
            commit_interval: settings.commit_interval,
            pending_since: None,
            pending: 0,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let mut guard = self.state.lock().unwrap();
        if let Some(mut state) = guard.take() {
            self.commit(&mut state)?;
        }
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let mut guard = self.state.lock().unwrap();
        if let Some(state) = guard.as_mut() {
            let fps = caps
                .structure(0)
                .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
                .unwrap_or(gst::Fraction::new(0, 1));
            state.sequencer.set_framerate(fps.numer(), fps.denom());
        }
        Ok(())
    }

    fn event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::StreamStart(s) => {
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    state.stream_id = Some(s.stream_id().to_string());
                    state.sequencer.reset();
                }
            }
            gst::EventView::Segment(s) => {
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    state.segment = s.segment().downcast_ref::<gst::ClockTime>().cloned();
                }
            }
            gst::EventView::FlushStop(_) => {
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    state.sequencer.reset();
                    state.capture.reset();
                }
            }
            // Durable before EOS reaches the application.
            gst::EventView::Eos(_) if !self.commit_now() => return false,
            _ => {}
        }
        self.parent_event(event)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let stream = state
            .stream_id
            .clone()
            .unwrap_or_else(|| self.stream_id_fallback());
        let pts = buffer.pts();
        let running_time = state
            .segment
            .as_ref()
            .and_then(|seg| seg.to_running_time(pts));
        let capture_ns = state
            .capture
            .capture_ns(self.obj().upcast_ref(), buffer, running_time);
        let found = detection::read(buffer);
        let model = detection::inference_model(buffer)
            .or_else(|| found.iter().find_map(|(_, m)| m.clone()))
            .unwrap_or_default();
        let ev = FrameEvent {
            stream,
            seq: state.sequencer.next(pts),
            pts_ns: pts.map(|p| p.nseconds() as i64),
            capture_ns,
            model,
            detections: found.into_iter().map(|(d, _)| d).collect(),
        };
        let appended = state.store.append(&ev).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::ResourceError::Write,
                (
                    "raftsink: cannot append event ({}, {}): {e}",
                    ev.stream,
                    ev.seq
                )
            );
            gst::FlowError::Error
        })?;
        match appended {
            Append::Inserted => {
                state.pending += 1;
                state.pending_since.get_or_insert_with(Instant::now);
            }
            Append::Duplicate => {
                gst::debug!(
                    CAT,
                    imp = self,
                    "event ({}, {}) already stored",
                    ev.stream,
                    ev.seq
                );
            }
        }
        let due = state
            .pending_since
            .is_some_and(|t| t.elapsed() >= state.commit_interval);
        if due {
            self.commit(state).map_err(|err| {
                self.post_error_message(err);
                gst::FlowError::Error
            })?;
        }
        drop(guard);

        let mut stats = self.stats.lock().unwrap();
        match appended {
            Append::Inserted => stats.written += 1,
            Append::Duplicate => stats.duplicates += 1,
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
