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

use super::forwarder::{self, Forwarder};
use super::sequence::{Basis, Sequencer};
use super::writer::{self, WriteError, Writer};
use crate::capture_time::CaptureClock;
use crate::event_store::{EncodedEvent, EventStore};
use crate::histogram::ms;
use crate::{detection, event, liveness, nats_log};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "raftsink",
        gst::DebugColorFlags::empty(),
        Some("videoai durable detection event sink"),
    )
});

const DEFAULT_COMMIT_INTERVAL_MS: u32 = 20;
const DEFAULT_COMMIT_MAX_EVENTS: u32 = 1000;
const DEFAULT_EOS_TIMEOUT_MS: u32 = 30_000;
const QUEUE_CAPACITY: usize = 16_384;

#[derive(Debug, Clone)]
struct Settings {
    location: Option<String>,
    outbox_location: Option<PathBuf>,
    nats_stream: String,
    replicas: u32,
    commit_interval: Duration,
    commit_max_events: u32,
    eos_timeout: Duration,
    skip_empty: bool,
    post_durable: bool,
    stream_id: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: None,
            outbox_location: None,
            nats_stream: nats_log::DEFAULT_STREAM.to_string(),
            replicas: 0,
            commit_interval: Duration::from_millis(DEFAULT_COMMIT_INTERVAL_MS as u64),
            commit_max_events: DEFAULT_COMMIT_MAX_EVENTS,
            eos_timeout: Duration::from_millis(DEFAULT_EOS_TIMEOUT_MS as u64),
            skip_empty: false,
            post_durable: false,
            stream_id: None,
        }
    }
}

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
    sequencer: Sequencer,
    capture: CaptureClock,
    /// Whether upstream is live (decides the sequence number basis), asked once per stream.
    live: Option<bool>,
    /// Batch caps (`framesync`): one event per fresh entry, numbered per entry stream.
    batch: bool,
    batch_streams: std::collections::HashMap<String, Sequencer>,
    /// NATS: told which streams this element writes (EOS waits for those).
    forwarder: Option<Arc<Forwarder>>,
}

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
    let h = location.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
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
                    ("raftsink: events not yet durable after eos-timeout ({timeout:?})")
                );
            }
            Err(WriteError::Flushing) => return false,
            Err(WriteError::Failed(e)) => {
                gst::element_imp_error!(self, gst::ResourceError::Write, ("raftsink: {e}"));
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
                        "raftsink: {} events not acknowledged by NATS within eos-timeout ({timeout:?}); they stay in the outbox and are sent when raftsink next runs with it{}",
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
                ("raftsink: a detection of stream '{stream}' has a confidence that is not finite (NaN or infinity): it is left out of the event (the others are stored); later ones are only counted in stats invalid-detections. Check the model's output")
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
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb(
                        "Where events go. A file path: an SQLite event log (WAL, synchronous=FULL), \
                         created if missing. nats://host:port[,host:port…]: a NATS JetStream \
                         cluster, with a local SQLite outbox (outbox-location) in front of it. \
                         Required. Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("outbox-location")
                    .nick("Outbox location")
                    .blurb(
                        "NATS only: the SQLite file events are committed to first and forwarded \
                         from, so that a NATS outage or a crash loses nothing. Use one per \
                         pipeline, or share one: pipelines in one directory with the same NATS \
                         location share the default, and each waits at EOS only for its own \
                         streams. Events NATS refuses for good (too large, no permission) are \
                         parked in its dead_letters table (videoai-events stats lists them). \
                         Default: videoai-outbox-<stream>-<hash of location>.db in the working \
                         directory",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("nats-stream")
                    .nick("NATS stream")
                    .blurb("NATS only: the JetStream stream (created if missing). Default: VIDEOAI_EVENTS")
                    .default_value(Some(nats_log::DEFAULT_STREAM))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("replicas")
                    .nick("Replicas")
                    .blurb(
                        "NATS only: copies of the stream when it is created. 0 = 3 when the \
                         cluster has three or more servers, else 1. Default: 0",
                    )
                    .maximum(5)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("commit-interval")
                    .nick("Commit interval")
                    .blurb(
                        "Group commit: an event is durable at most this many milliseconds after \
                         it arrived (one fsync covers all events of the interval), and always \
                         before EOS is passed on. 0 commits every event. Default: 20",
                    )
                    .default_value(DEFAULT_COMMIT_INTERVAL_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("commit-max-events")
                    .nick("Commit max events")
                    .blurb("Group commit: commit as soon as this many events wait. Default: 1000")
                    .minimum(1)
                    .default_value(DEFAULT_COMMIT_MAX_EVENTS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("eos-timeout")
                    .nick("EOS timeout")
                    .blurb(
                        "How long EOS waits, in milliseconds, for everything to be durable (and, \
                         with NATS, acknowledged); after it a warning is posted and EOS goes on \
                         (unacknowledged events stay in the outbox). Default: 30000",
                    )
                    .default_value(DEFAULT_EOS_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("skip-empty")
                    .nick("Skip empty")
                    .blurb("Store no event for frames without detections. Default: false (every frame has an event)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-durable")
                    .nick("Post durable")
                    .blurb(
                        "After each commit, post an element message 'raftsink-durable' with \
                         events (in the commit), new (not stored before), streams and seqs (the highest durable seq per \
                         stream). Default: false",
                    )
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-id")
                    .nick("Stream id")
                    .blurb("Store events under this stream id instead of the STREAM-START stream-id. Default: none")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only 'raftsink-stats' structure: written (events stored), \
                         duplicates (already in the log), commits, queued, skipped-empty, \
                         invalid-detections (left out: a non-finite confidence), \
                         commit-latency-p50-ms and -p99-ms (arrival to durable); NATS: \
                         forwarded, already-in-nats, pending (this element's events in the \
                         outbox not yet acknowledged), dead-letters (parked: refused by NATS for \
                         good), retries, nats-connected, last-error, ack-latency-p50-ms and -p99-ms",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let string = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        let millis = |v: &glib::Value| {
            Duration::from_millis(v.get::<u32>().expect("type checked upstream") as u64)
        };
        match pspec.name() {
            "location" => s.location = string(value),
            "outbox-location" => s.outbox_location = string(value).map(PathBuf::from),
            "nats-stream" => {
                s.nats_stream = string(value).unwrap_or_else(|| nats_log::DEFAULT_STREAM.into())
            }
            "replicas" => s.replicas = value.get().expect("type checked upstream"),
            "commit-interval" => s.commit_interval = millis(value),
            "commit-max-events" => {
                s.commit_max_events = value.get().expect("type checked upstream")
            }
            "eos-timeout" => s.eos_timeout = millis(value),
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
            "commit-interval" => (s.commit_interval.as_millis() as u32).to_value(),
            "commit-max-events" => s.commit_max_events.to_value(),
            "eos-timeout" => (s.eos_timeout.as_millis() as u32).to_value(),
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
                ("raftsink: no location set. Set location to an event log file (raftsink location=events.db) or a NATS cluster (location=nats://127.0.0.1:4222)")
            ));
        };
        let nats = match nats_log::parse_location(&location) {
            None => None,
            Some(Ok(urls)) => Some(urls),
            Some(Err(why)) => {
                return Err(gst::error_msg!(
                    gst::ResourceError::Settings,
                    ("raftsink: location {why}")
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
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("raftsink: {e}")))?;
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
                                ("raftsink: {msg}")
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
                                        "raftsink: {why}. The event is parked in the dead-letter table of the outbox '{}' (videoai-events stats lists it); the other events go on. Later dead letters are only counted (stats dead-letters)",
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
                            gst::element_warning!(
                                el,
                                gst::ResourceError::Write,
                                ("raftsink: {what}")
                            );
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
                            "raftsink: cannot commit the last events to {}: {e}",
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
        st.batch = crate::batch::is_batch_caps(caps);
        if st.batch {
            return Ok(());
        }
        drop(st);
        let fps = caps
            .structure(0)
            .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
            .unwrap_or(gst::Fraction::new(0, 1));
        self.state
            .lock()
            .unwrap()
            .sequencer
            .set_framerate(fps.numer(), fps.denom());
        Ok(())
    }

    fn event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::StreamStart(s) => {
                let mut st = self.state.lock().unwrap();
                st.stream_id = Some(s.stream_id().to_string());
                st.sequencer.reset();
                st.live = None;
            }
            gst::EventView::Segment(s) => {
                let mut st = self.state.lock().unwrap();
                st.segment = s.segment().downcast_ref::<gst::ClockTime>().cloned();
                // A new segment (a seek): frames are numbered by their position alone.
                st.sequencer.reset();
                for s in st.batch_streams.values_mut() {
                    s.reset();
                }
            }
            gst::EventView::FlushStop(_) => {
                let mut st = self.state.lock().unwrap();
                st.sequencer.reset();
                for s in st.batch_streams.values_mut() {
                    s.reset();
                }
                st.capture.reset();
            }
            // Durable (and acknowledged) before EOS reaches the application.
            gst::EventView::Eos(_) if !self.drain_for_eos() => return false,
            _ => {}
        }
        self.parent_event(event)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        if self.state.lock().unwrap().batch {
            return self.render_batch(buffer);
        }
        let mut detections = detection::read_detections(buffer);
        let (needs_live, stream) = {
            let st = self.state.lock().unwrap();
            if st.skip_empty && detections.is_empty() {
                drop(st);
                *self.skipped_empty.lock().unwrap() += 1;
                return Ok(gst::FlowSuccess::Ok);
            }
            let stream = st
                .stream_override
                .clone()
                .or_else(|| st.stream_id.clone())
                .unwrap_or_else(|| self.obj().name().to_string());
            (st.live.is_none(), stream)
        };
        self.drop_invalid(&mut detections, &stream);
        // Once per stream: live input numbers frames by capture time, continuing after what is
        // already stored for the stream.
        let live = needs_live.then(|| {
            let live = self.upstream_live();
            let stored = if live {
                self.stored_max_seq(&stream)
            } else {
                None
            };
            (live, stored)
        });
        let ev = {
            let mut st = self.state.lock().unwrap();
            if let Some((live, stored)) = live {
                st.live = Some(live);
                st.sequencer
                    .set_basis(if live { Basis::CaptureTime } else { Basis::Pts });
                st.sequencer.continue_after(stored);
                gst::debug!(
                    CAT,
                    imp = self,
                    "upstream live: {live}, seq from {:?}",
                    st.sequencer.basis()
                );
            }
            let pts = buffer.pts();
            let running_time = st.segment.as_ref().and_then(|seg| seg.to_running_time(pts));
            let capture_ns = st
                .capture
                .capture_ns(self.obj().upcast_ref(), buffer, running_time);
            let model = detection::inference_model(buffer)
                .or_else(|| detection::first_detection_model(buffer))
                .unwrap_or_default();
            let writer = st.writer.clone();
            let ev = EncodedEvent {
                stream,
                seq: st.sequencer.next(pts, capture_ns),
                pts_ns: pts.map(|p| p.nseconds() as i64),
                capture_ns,
                model,
                detections: serde_json::to_string(&detections).unwrap_or_else(|_| "[]".into()),
            };
            (ev, writer)
        };
        let (ev, writer) = ev;
        self.submit(writer, ev)
    }
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
                    ("raftsink: cannot store event ({stream}, {seq}): {e}"),
                    ["check disk space and permissions"]
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    /// A `framesync` batch: one event per fresh entry, under the entry's own stream id and
    /// numbered like a stream of its own (the `stream-id` property does not apply).
    fn render_batch(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(entries) = crate::batch::read(buffer) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "raftsink: a {} buffer without its {}: batches come from framesync",
                    crate::batch::CAPS_NAME,
                    crate::batch::META_NAME
                )
            );
            return Err(gst::FlowError::Error);
        };
        let live = {
            let known = self.state.lock().unwrap().live;
            match known {
                Some(l) => l,
                None => {
                    let l = self.upstream_live();
                    self.state.lock().unwrap().live = Some(l);
                    l
                }
            }
        };
        for e in entries {
            if e.status != crate::batch::Status::Fresh {
                continue;
            }
            let Some(frame) = e.buffer.as_ref() else {
                continue;
            };
            let mut detections = detection::read_detections(frame);
            self.drop_invalid(&mut detections, &e.stream_id);
            let new_stream = !self
                .state
                .lock()
                .unwrap()
                .batch_streams
                .contains_key(&e.stream_id);
            let stored = (new_stream && live)
                .then(|| self.stored_max_seq(&e.stream_id))
                .flatten();
            let (ev, writer) = {
                let mut st = self.state.lock().unwrap();
                // The stream's numbering exists from its first frame on (the store is asked
                // once per stream), stored or not.
                st.batch_streams
                    .entry(e.stream_id.clone())
                    .or_insert_with(|| {
                        let mut s = Sequencer::new();
                        s.set_basis(if live { Basis::CaptureTime } else { Basis::Pts });
                        s.continue_after(stored);
                        s
                    });
                if st.skip_empty && detections.is_empty() {
                    drop(st);
                    *self.skipped_empty.lock().unwrap() += 1;
                    continue;
                }
                let capture_ns = match e.capture_ns {
                    Some(c) => c,
                    None => st
                        .capture
                        .capture_ns(self.obj().upcast_ref(), frame, e.running_time),
                };
                let seqr = st.batch_streams.get_mut(&e.stream_id).unwrap();
                let fps = e
                    .caps
                    .as_ref()
                    .and_then(|c| c.structure(0))
                    .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
                    .unwrap_or(gst::Fraction::new(0, 1));
                seqr.set_framerate(fps.numer(), fps.denom());
                let seq = seqr.next(e.pts, capture_ns);
                let model = detection::inference_model(frame)
                    .or_else(|| detection::first_detection_model(frame))
                    .unwrap_or_default();
                (
                    EncodedEvent {
                        stream: e.stream_id.clone(),
                        seq,
                        pts_ns: e.pts.map(|p| p.nseconds() as i64),
                        capture_ns,
                        model,
                        detections: serde_json::to_string(&detections)
                            .unwrap_or_else(|_| "[]".into()),
                    },
                    st.writer.clone(),
                )
            };
            self.submit(writer, ev)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
