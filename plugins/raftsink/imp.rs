// SPDX-License-Identifier: MPL-2.0
//! `raftsink` implementation.
//!
//! Threads: the streaming thread builds each frame's event and hands it to the writer thread
//! ([`super::writer`]), which group-commits to SQLite; with a `nats://` location the forwarder
//! thread ([`super::forwarder`]) drains that SQLite outbox into JetStream.
//!
//! Lock order: `settings`, then `state`, then `io`. Nothing blocks while holding `state` or
//! `io`: the streaming thread clones the writer out of `io` and submits without locks, so
//! `unlock` (which takes `io` briefly) can always interrupt it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::CAT;
use super::camera_keys::{CameraKeys, Held, Step};
use super::forwarder::{self, Forwarder};
use super::sequence::{Basis, Sequencer};
use super::settings::Settings;
use super::writer::{self, WriteError, Writer};
use crate::eventlog::store::{EncodedEvent, EventStore};
use crate::eventlog::{event, nats};
use crate::formats::capture_time::{self, CaptureClock};
use crate::formats::detection;
use crate::util::histogram::ms;
use crate::util::liveness;

const QUEUE_CAPACITY: usize = 16_384;

/// The writer and the forwarder, created in `start` and stopped in `stop`.
struct Io {
    writer: Arc<Writer>,
    forwarder: Option<Arc<Forwarder>>,
    /// The SQLite file: the log itself, or the outbox in front of NATS.
    database: PathBuf,
}

/// Per-stream state of the streaming thread, created in `start`.
#[derive(Default)]
struct State {
    /// From the settings at start (they only change in NULL or READY).
    skip_empty: bool,
    stream_override: Option<String>,
    writer: Option<Arc<Writer>>,
    stream_id: Option<String>,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// The framerate of plain (not batch) input, from its caps.
    framerate: Option<gst::Fraction>,
    /// One numbering per stream: the element's own stream, or each stream of a batch.
    sequencers: std::collections::HashMap<String, Sequencer>,
    capture: CaptureClock,
    /// Whether upstream is live (decides the sequence number basis), asked once per stream.
    live: Option<bool>,
    /// Batch caps (`framesync`): one event per fresh entry, numbered per entry stream.
    batch: bool,
    /// NATS: told which streams this element writes (EOS waits for those).
    forwarder: Option<Arc<Forwarder>>,
    /// `capture-time-wait`, from the settings at start.
    capture_wait: Duration,
    /// Per stream: keys from the camera's clock (`capture-time-wait`), with the frames held.
    camera_keys: std::collections::HashMap<String, CameraKeys<Pending>>,
}

/// A frame's event before its capture time and number are known.
#[derive(Debug)]
struct Pending {
    stream: String,
    pts: Option<gst::ClockTime>,
    framerate: gst::Fraction,
    camera_ns: Option<i64>,
    rtp: Option<capture_time::RtpTime>,
    model: String,
    detections: String,
}

impl Pending {
    fn into_event(self, seq: i64, capture_ns: i64) -> EncodedEvent {
        EncodedEvent {
            stream: self.stream,
            seq,
            pts_ns: self.pts.map(|t| t.nseconds() as i64),
            capture_ns,
            model: self.model,
            detections: self.detections,
        }
    }
}

/// Most frames held for the camera's clock, whatever `capture-time-wait`.
const MAX_HELD: usize = 1000;

#[derive(Default)]
pub struct RaftSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    io: Mutex<Option<Io>>,
    /// The statistics of the last run, kept after `stop`.
    final_stats: Mutex<Option<gst::Structure>>,
    unlocked: Arc<AtomicBool>,
    skipped_empty: Mutex<u64>,
    /// Detections dropped for a non-finite number (they cannot be stored as JSON).
    invalid_detections: Mutex<u64>,
}

#[glib::object_subclass]
impl ObjectSubclass for RaftSink {
    const NAME: &'static str = "GstRaftSink";
    type Type = super::RaftSink;
    type ParentType = gst_base::BaseSink;
}

/// The default outbox of a NATS location: a file in the working directory named after it.
/// Several pipelines (and processes) may share it: the store creates it race-free, and each
/// element waits at EOS only for its own streams.
fn default_outbox(location: &str, stream: &str) -> PathBuf {
    let h = crate::util::hash::fnv1a(location.as_bytes());
    PathBuf::from(format!("videoai-outbox-{stream}-{:08x}.db", h >> 32))
}

impl RaftSink {
    fn io_handles(&self) -> Option<(Arc<Writer>, Option<Arc<Forwarder>>)> {
        self.io
            .lock()
            .unwrap()
            .as_ref()
            .map(|io| (io.writer.clone(), io.forwarder.clone()))
    }

    fn stats_structure(&self) -> gst::Structure {
        // `state` before `io` (the lock order).
        let (held, clock) = {
            let st = self.state.lock().unwrap();
            let held: u64 = st.camera_keys.values().map(|k| k.held() as u64).sum();
            let clock = if st.capture_wait.is_zero() {
                "off"
            } else if st.camera_keys.values().any(|k| k.waiting())
                || (st.camera_keys.is_empty() && st.live != Some(false))
            {
                // Before the first live frame too: frames on their way would be held.
                "waiting"
            } else if !st.camera_keys.is_empty()
                && st.camera_keys.values().all(|k| k.rate().is_some())
            {
                "known"
            } else {
                "none"
            };
            (held, clock)
        };
        let io = self.io_handles();
        if io.is_none()
            && let Some(s) = self.final_stats.lock().unwrap().clone()
        {
            return s;
        }
        let mut b = gst::Structure::builder("raftsink-stats");
        let (w, f) = match &io {
            Some((w, f)) => (w.stats(), f.as_ref().map(|f| f.stats())),
            None => (writer::Stats::default(), None),
        };
        b = b
            .field("written", w.written)
            .field("duplicates", w.duplicates)
            .field("commits", w.commits)
            .field("queued", w.queued)
            .field("held", held)
            .field("camera-clock", clock)
            .field("skipped-empty", *self.skipped_empty.lock().unwrap())
            .field(
                "invalid-detections",
                *self.invalid_detections.lock().unwrap(),
            )
            .field(
                "commit-latency-p50-ms",
                ms(w.commit_latency.percentile(0.5)),
            )
            .field(
                "commit-latency-p99-ms",
                ms(w.commit_latency.percentile(0.99)),
            );
        let f = f.unwrap_or_default();
        b.field("forwarded", f.forwarded)
            .field("already-in-nats", f.skipped)
            .field("pending", f.pending.max(0) as u64)
            .field("dead-letters", f.dead_letters)
            .field("retries", f.retries)
            .field("nats-connected", f.connected)
            .field("last-error", f.last_error.unwrap_or_default())
            .field("ack-latency-p50-ms", ms(f.ack_latency.percentile(0.5)))
            .field("ack-latency-p99-ms", ms(f.ack_latency.percentile(0.99)))
            .build()
    }

    /// Makes everything handed over durable (and, with NATS, acknowledged) before EOS goes on.
    fn drain_for_eos(&self) -> bool {
        let Some((writer, forwarder)) = self.io_handles() else {
            return true;
        };
        let timeout = self.settings.lock().unwrap().eos_timeout;
        match writer.wait_durable(timeout) {
            Ok(true) => {}
            Ok(false) => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    ("events not yet durable after eos-timeout ({timeout:?})")
                );
            }
            Err(WriteError::Flushing) => return false,
            Err(WriteError::Failed(e)) => {
                gst::element_imp_error!(self, gst::ResourceError::Write, ("{e}"));
                return false;
            }
        }
        if let Some(f) = forwarder {
            let unlocked = self.unlocked.clone();
            if !f.wait_drained(timeout, || unlocked.load(Ordering::SeqCst)) {
                let s = f.stats();
                let pending = self.outbox_pending(&f).unwrap_or(s.pending);
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    (
                        "{} events not acknowledged by NATS within eos-timeout ({timeout:?}); they stay in the outbox and are sent when raftsink next runs with it{}",
                        pending,
                        s.last_error
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    )
                );
            }
        }
        true
    }

    /// The highest seq already stored for `stream` (local log or outbox).
    fn stored_max_seq(&self, stream: &str) -> Option<i64> {
        let path = self.io.lock().unwrap().as_ref()?.database.clone();
        EventStore::open_for_reading(&path)
            .ok()?
            .max_seq(stream)
            .ok()
            .flatten()
    }

    /// The outbox's own count of this element's events not yet acknowledged by NATS.
    fn outbox_pending(&self, f: &Forwarder) -> Option<i64> {
        let path = self.io.lock().unwrap().as_ref()?.database.clone();
        EventStore::open_for_reading(&path)
            .ok()?
            .pending_of(Some(&f.own()))
            .ok()
    }

    /// Whether the frames come from a live source: asked of the source itself, not of the
    /// LATENCY query (a paced file, `identity sync=true`, answers that as live).
    fn upstream_live(&self) -> bool {
        let Some(pad) = self.obj().static_pad("sink") else {
            return false;
        };
        liveness::upstream_is_live(&pad).unwrap_or_else(|| {
            let mut q = gst::query::Latency::new();
            pad.peer_query(&mut q) && q.result().0
        })
    }

    /// Drops detections with a non-finite number (NaN, infinity: a broken export, an fp16
    /// overflow), counted in `invalid-detections`; the first time, says so.
    fn drop_invalid(&self, detections: &mut Vec<event::Detection>, stream: &str) {
        let n = event::drop_non_finite(detections);
        if n == 0 {
            return;
        }
        let mut count = self.invalid_detections.lock().unwrap();
        let first = *count == 0;
        *count += n as u64;
        drop(count);
        if first {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                ("a detection of stream '{stream}' has a confidence that is not finite (NaN or infinity): it is left out of the event (the others are stored); later ones are only counted in stats invalid-detections. Check the model's output")
            );
        }
    }
}

impl ObjectImpl for RaftSink {
    fn constructed(&self) {
        self.parent_constructed();
        // A log writer keeps up as fast as it can; it does not wait for the clock.
        self.obj().set_sync(false);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> =
            LazyLock::new(super::settings::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let string = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        let nanos =
            |v: &glib::Value| Duration::from_nanos(v.get::<u64>().expect("type checked upstream"));
        match pspec.name() {
            "location" => s.location = string(value),
            "outbox-location" => s.outbox_location = string(value).map(PathBuf::from),
            "nats-stream" => {
                s.nats_stream = string(value).unwrap_or_else(|| nats::DEFAULT_STREAM.into())
            }
            "replicas" => s.replicas = value.get().expect("type checked upstream"),
            "commit-interval" => s.commit_interval = nanos(value),
            "commit-max-events" => {
                s.commit_max_events = value.get().expect("type checked upstream")
            }
            "eos-timeout" => s.eos_timeout = nanos(value),
            "capture-time-wait" => s.capture_time_wait = nanos(value),
            "skip-empty" => s.skip_empty = value.get().expect("type checked upstream"),
            "post-durable" => s.post_durable = value.get().expect("type checked upstream"),
            "stream-id" => s.stream_id = string(value),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats_structure().to_value();
        }
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "location" => s.location.to_value(),
            "outbox-location" => s
                .outbox_location
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "nats-stream" => s.nats_stream.to_value(),
            "replicas" => s.replicas.to_value(),
            "commit-interval" => (s.commit_interval.as_nanos() as u64).to_value(),
            "commit-max-events" => s.commit_max_events.to_value(),
            "eos-timeout" => (s.eos_timeout.as_nanos() as u64).to_value(),
            "capture-time-wait" => (s.capture_time_wait.as_nanos() as u64).to_value(),
            "skip-empty" => s.skip_empty.to_value(),
            "post-durable" => s.post_durable.to_value(),
            "stream-id" => s.stream_id.to_value(),
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
                 detections with labels, boxes, confidences and classifications from the \
                 GstVideoRegionOfInterestMeta params) exactly once per (stream, sequence): in an \
                 SQLite event log (group commit, durable before EOS), or in a NATS JetStream \
                 cluster through a local SQLite outbox (deduplicated, per-stream order, retried \
                 through leader elections and outages). Read with `videoai-events`",
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
        let Some(location) = settings.location.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("no location set. Set location to an event log file (raftsink location=events.db) or a NATS cluster (location=nats://127.0.0.1:4222)")
            ));
        };
        let nats = match nats::parse_location(&location) {
            None => None,
            Some(Ok(urls)) => Some(urls),
            Some(Err(why)) => {
                return Err(gst::error_msg!(
                    gst::ResourceError::Settings,
                    ("location {why}")
                ));
            }
        };
        let database = match &nats {
            Some(_) => settings
                .outbox_location
                .clone()
                .unwrap_or_else(|| default_outbox(&location, &settings.nats_stream)),
            None => PathBuf::from(&location),
        };
        let store = EventStore::open_for_writing(&database)
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("{e}")))?;
        let weak = self.obj().downgrade();
        let post = settings.post_durable;
        let forwarder = nats.map(|urls| {
            let weak_err = self.obj().downgrade();
            Arc::new(Forwarder::start(
                forwarder::Config {
                    urls,
                    stream: settings.nats_stream.clone(),
                    replicas: settings.replicas as usize,
                    outbox: database.clone(),
                },
                forwarder::Reports {
                    on_error: Box::new(move |msg| {
                        if let Some(el) = weak_err.upgrade() {
                            gst::element_error!(
                                el,
                                gst::ResourceError::OpenWrite,
                                ("{msg}")
                            );
                        }
                    }),
                    on_parked: {
                        let weak = self.obj().downgrade();
                        let outbox = database.clone();
                        Box::new(move |why| {
                            if let Some(el) = weak.upgrade() {
                                gst::element_warning!(
                                    el,
                                    gst::ResourceError::Write,
                                    (
                                        "{why}. The event is parked in the dead-letter table of the outbox '{}' (videoai-events stats lists it); the other events go on. Later dead letters are only counted (stats dead-letters)",
                                        outbox.display()
                                    )
                                );
                            }
                        })
                    },
                },
            ))
        });
        let nudge = forwarder.clone();
        let writer = Writer::start(
            store,
            writer::Config {
                commit_interval: settings.commit_interval,
                commit_max_events: settings.commit_max_events as usize,
                capacity: QUEUE_CAPACITY,
            },
            writer::Callbacks {
                on_commit: Box::new(move |commit| {
                    if let Some(f) = &nudge {
                        f.nudge();
                    }
                    if post && let Some(el) = weak.upgrade() {
                        let s = gst::Structure::builder("raftsink-durable")
                            .field("events", commit.events as u64)
                            .field("new", commit.inserted as u64)
                            .field(
                                "streams",
                                gst::Array::new(commit.streams.iter().map(|s| s.0.clone())),
                            )
                            .field("seqs", gst::Array::new(commit.streams.iter().map(|s| s.1)))
                            .build();
                        let _ = el.post_message(gst::message::Element::builder(s).src(&el).build());
                    }
                }),
                on_replaced: {
                    let weak = self.obj().downgrade();
                    Box::new(move |what| {
                        if let Some(el) = weak.upgrade() {
                            gst::element_warning!(el, gst::ResourceError::Write, ("{what}"));
                        }
                    })
                },
            },
        );
        gst::info!(
            CAT,
            imp = self,
            "writing events to {}{}",
            database.display(),
            if forwarder.is_some() {
                format!(" (outbox for {location})")
            } else {
                String::new()
            }
        );
        *self.skipped_empty.lock().unwrap() = 0;
        *self.invalid_detections.lock().unwrap() = 0;
        *self.final_stats.lock().unwrap() = None;
        let writer = Arc::new(writer);
        *self.state.lock().unwrap() = State {
            skip_empty: settings.skip_empty,
            capture_wait: settings.capture_time_wait,
            stream_override: settings.stream_id.clone(),
            writer: Some(writer.clone()),
            forwarder: forwarder.clone(),
            ..Default::default()
        };
        self.unlocked.store(false, Ordering::SeqCst);
        *self.io.lock().unwrap() = Some(Io {
            writer,
            forwarder,
            database,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let mut last = self.stats_structure();
        if let Some((_, Some(f))) = self.io_handles()
            && let Some(n) = self.outbox_pending(&f)
        {
            last.set("pending", n.max(0) as u64);
        }
        *self.final_stats.lock().unwrap() = Some(last);
        {
            let mut st = self.state.lock().unwrap();
            st.writer = None;
            st.forwarder = None;
        }
        let io = self.io.lock().unwrap().take();
        if let Some(io) = io {
            if let Some(f) = io.forwarder {
                match Arc::try_unwrap(f) {
                    Ok(f) => f.stop(),
                    Err(f) => drop(f),
                }
            }
            if let Ok(w) = Arc::try_unwrap(io.writer) {
                w.stop().map_err(|e| {
                    gst::error_msg!(
                        gst::ResourceError::Write,
                        (
                            "cannot commit the last events to {}: {e}",
                            io.database.display()
                        )
                    )
                })?;
            }
        }
        Ok(())
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.unlocked.store(true, Ordering::SeqCst);
        if let Some((w, _)) = self.io_handles() {
            w.set_flushing(true);
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.unlocked.store(false, Ordering::SeqCst);
        if let Some((w, _)) = self.io_handles() {
            w.set_flushing(false);
        }
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let mut st = self.state.lock().unwrap();
        st.batch = crate::formats::batch::is_batch_caps(caps);
        if st.batch {
            return Ok(());
        }
        drop(st);
        self.state.lock().unwrap().framerate = Some(framerate_of(Some(caps)));
        Ok(())
    }

    fn event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::StreamStart(s) => {
                let mut st = self.state.lock().unwrap();
                st.stream_id = Some(s.stream_id().to_string());
                st.sequencers.clear();
                st.live = None;
                st.camera_keys.clear();
            }
            gst::EventView::Segment(s) => {
                let mut st = self.state.lock().unwrap();
                st.segment = s.segment().downcast_ref::<gst::ClockTime>().cloned();
                // A new segment (a seek): frames are numbered by their position alone.
                st.sequencers.values_mut().for_each(Sequencer::reset);
            }
            gst::EventView::FlushStop(_) => {
                let mut st = self.state.lock().unwrap();
                st.sequencers.values_mut().for_each(Sequencer::reset);
                st.capture.reset();
                // Flushed frames are not stored; the next ones wait for the clock again.
                st.camera_keys.clear();
            }
            // Durable (and acknowledged) before EOS reaches the application; frames still
            // waiting for the camera's clock are stored the usual way first.
            gst::EventView::Eos(_) if self.release_held().is_err() || !self.drain_for_eos() => {
                return false;
            }
            _ => {}
        }
        self.parent_event(event)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (stream, framerate, running_time) = {
            let st = self.state.lock().unwrap();
            if st.batch {
                drop(st);
                return self.render_batch(buffer);
            }
            let stream = st
                .stream_override
                .clone()
                .or_else(|| st.stream_id.clone())
                .unwrap_or_else(|| self.obj().name().to_string());
            let running_time = st
                .segment
                .as_ref()
                .and_then(|seg| seg.to_running_time(buffer.pts()));
            let framerate = st.framerate.unwrap_or(gst::Fraction::new(0, 1));
            (stream, framerate, running_time)
        };
        self.store_frame(Frame {
            stream,
            buffer,
            pts: buffer.pts(),
            running_time,
            capture_ns: None,
            framerate,
        })
    }
}

/// One frame to store: a plain buffer, or a fresh entry of a batch.
struct Frame<'a> {
    stream: String,
    buffer: &'a gst::Buffer,
    pts: Option<gst::ClockTime>,
    running_time: Option<gst::ClockTime>,
    /// Known already (a batch entry carries it), or `None` to read it from the buffer.
    capture_ns: Option<i64>,
    framerate: gst::Fraction,
}

/// The framerate in `caps`, or 0/1 (unknown).
fn framerate_of(caps: Option<&gst::Caps>) -> gst::Fraction {
    caps.and_then(|c| c.structure(0))
        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
        .unwrap_or(gst::Fraction::new(0, 1))
}

impl RaftSink {
    /// Hands one event to the writer.
    fn submit(
        &self,
        writer: Option<Arc<Writer>>,
        ev: EncodedEvent,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(writer) = writer else {
            return Err(gst::FlowError::Flushing);
        };
        let forwarder = self.state.lock().unwrap().forwarder.clone();
        if let Some(f) = forwarder {
            f.claim(&ev.stream);
        }
        let (stream, seq) = (ev.stream.clone(), ev.seq);
        match writer.submit(ev) {
            Ok(()) => Ok(gst::FlowSuccess::Ok),
            Err(WriteError::Flushing) => Err(gst::FlowError::Flushing),
            Err(WriteError::Failed(e)) => {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Write,
                    ("cannot store event ({stream}, {seq}): {e}"),
                    ["check disk space and permissions"]
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    /// A `framesync` batch: one event per fresh entry, under the entry's own stream id and
    /// numbered like a stream of its own (the `stream-id` property does not apply).
    fn render_batch(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(entries) = crate::formats::batch::read(buffer) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "a {} buffer without its {}: batches come from framesync",
                    crate::formats::batch::CAPS_NAME,
                    crate::formats::batch::META_NAME
                )
            );
            return Err(gst::FlowError::Error);
        };
        for e in &entries {
            if e.status != crate::formats::batch::Status::Fresh {
                continue;
            }
            let Some(buffer) = e.buffer.as_ref() else {
                continue;
            };
            self.store_frame(Frame {
                stream: e.stream_id.clone(),
                buffer,
                pts: e.pts,
                running_time: e.running_time,
                capture_ns: e.capture_ns,
                framerate: framerate_of(e.caps.as_ref()),
            })?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Stores one frame's event: numbered by its stream's sequencer, which exists from the
    /// stream's first frame on (the store is asked once per stream, stored or not).
    fn store_frame(&self, f: Frame<'_>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut detections = detection::read_detections(f.buffer);
        self.drop_invalid(&mut detections, &f.stream);
        let (known_live, new_stream) = {
            let st = self.state.lock().unwrap();
            (st.live, !st.sequencers.contains_key(&f.stream))
        };
        // Whether upstream is live: asked of the pipeline once (until the next stream-start).
        let live = known_live.unwrap_or_else(|| {
            let l = self.upstream_live();
            self.state.lock().unwrap().live = Some(l);
            l
        });
        // Live input numbers frames by capture time, continuing after what is already stored
        // for the stream.
        let stored = (new_stream && live)
            .then(|| self.stored_max_seq(&f.stream))
            .flatten();
        let mut st = self.state.lock().unwrap();
        let sequencer = st.sequencers.entry(f.stream.clone()).or_insert_with(|| {
            let mut s = Sequencer::new();
            s.set_basis(if live { Basis::CaptureTime } else { Basis::Pts });
            s.continue_after(stored);
            s
        });
        if new_stream {
            gst::debug!(
                CAT,
                imp = self,
                "stream '{}': upstream live: {live}, seq from {:?} after {stored:?}",
                f.stream,
                sequencer.basis()
            );
        }
        if st.skip_empty && detections.is_empty() {
            drop(st);
            *self.skipped_empty.lock().unwrap() += 1;
            return Ok(gst::FlowSuccess::Ok);
        }
        let model = detection::inference_model(f.buffer)
            .or_else(|| detection::first_detection_model(f.buffer))
            .unwrap_or_default();
        let detections = serde_json::to_string(&detections).unwrap_or_else(|_| "[]".into());
        let element = self.obj().clone();
        let element = element.upcast_ref::<gst::Element>();
        let mut events = Vec::new();
        // Live frames keyed by the camera's clock (capture-time-wait).
        if let (None, Some(rt)) = (f.capture_ns, f.running_time)
            && live
            && !st.capture_wait.is_zero()
        {
            let camera_ns =
                capture_time::reference_timestamp(f.buffer).map(|t| t.nseconds() as i64);
            let rtp = capture_time::rtp_timestamp(f.buffer);
            if camera_ns.is_some() {
                // Learns the camera's mapping for the frames without a timestamp.
                st.capture.capture_ns(element, f.buffer, f.running_time);
            }
            let wait = st.capture_wait.as_nanos() as u64;
            let pending = Pending {
                stream: f.stream.clone(),
                pts: f.pts,
                framerate: f.framerate,
                camera_ns,
                rtp,
                model,
                detections,
            };
            let keys = st
                .camera_keys
                .entry(f.stream.clone())
                .or_insert_with(|| CameraKeys::new(wait, MAX_HELD));
            match keys.offer(rt.nseconds(), camera_ns, rtp, pending) {
                Step::Held => return Ok(gst::FlowSuccess::Ok),
                Step::Keyed(held, now) => {
                    for (p, rt) in held
                        .into_iter()
                        .map(|h| (h.payload, h.running_time_ns))
                        .chain([(now, rt.nseconds())])
                    {
                        events.push(self.keyed(&mut st, p, rt));
                    }
                }
                Step::Usual(held, now) => {
                    events.extend(self.usual(
                        &mut st,
                        held,
                        "no camera clock within capture-time-wait",
                    ));
                    let capture_ns = st.capture.capture_ns(element, f.buffer, f.running_time);
                    events.push(Self::numbered(&mut st, now, capture_ns));
                }
            }
        } else {
            let capture_ns = match f.capture_ns {
                Some(c) => c,
                None => st.capture.capture_ns(element, f.buffer, f.running_time),
            };
            let pending = Pending {
                stream: f.stream,
                pts: f.pts,
                framerate: f.framerate,
                camera_ns: None,
                rtp: None,
                model,
                detections,
            };
            events.push(Self::numbered(&mut st, pending, capture_ns));
        }
        let writer = st.writer.clone();
        drop(st);
        for ev in events {
            self.submit(writer.clone(), ev)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// An event numbered by its stream's sequencer (the usual way).
    fn numbered(st: &mut State, p: Pending, capture_ns: i64) -> EncodedEvent {
        let live = st.live == Some(true);
        let sequencer = st.sequencers.entry(p.stream.clone()).or_insert_with(|| {
            let mut s = Sequencer::new();
            s.set_basis(if live { Basis::CaptureTime } else { Basis::Pts });
            s
        });
        sequencer.set_framerate(p.framerate.numer(), p.framerate.denom());
        let seq = sequencer.next(p.pts, capture_ns);
        p.into_event(seq, capture_ns)
    }

    /// An event keyed by the camera's clock: its own timestamp, or the camera's mapping.
    fn keyed(&self, st: &mut State, p: Pending, running_time_ns: u64) -> EncodedEvent {
        let rt = gst::ClockTime::from_nseconds(running_time_ns);
        let obj = self.obj();
        let capture = &mut st.capture;
        let keys = st.camera_keys.get(&p.stream).expect("keys of the stream");
        let (seq, capture_ns) = keys
            .key(p.camera_ns, p.rtp, || {
                capture
                    .from_reference(rt)
                    .unwrap_or_else(|| capture.wall_at(obj.upcast_ref(), rt))
            })
            .expect("keyed once the period is known");
        p.into_event(seq, capture_ns)
    }

    /// Held frames numbered the usual way (no camera clock in time, or EOS).
    fn usual(&self, st: &mut State, held: Vec<Held<Pending>>, why: &str) -> Vec<EncodedEvent> {
        if !held.is_empty() {
            gst::warning!(
                CAT,
                imp = self,
                "{why}: {} held frames numbered from this machine's clock (another reader of the camera may store them again)",
                held.len()
            );
        }
        held.into_iter()
            .map(|h| {
                let rt = gst::ClockTime::from_nseconds(h.running_time_ns);
                let capture_ns = h
                    .payload
                    .camera_ns
                    .unwrap_or_else(|| st.capture.wall_at(self.obj().upcast_ref(), rt));
                Self::numbered(st, h.payload, capture_ns)
            })
            .collect()
    }

    /// Stores the frames still held (at EOS).
    fn release_held(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut st = self.state.lock().unwrap();
        let held: Vec<Held<Pending>> = st
            .camera_keys
            .values_mut()
            .flat_map(|k| k.drain())
            .collect();
        if held.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let events = self.usual(
            &mut st,
            held,
            "end of stream before the camera clock was known",
        );
        let writer = st.writer.clone();
        drop(st);
        for ev in events {
            self.submit(writer.clone(), ev)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
