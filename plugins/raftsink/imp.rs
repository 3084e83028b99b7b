// SPDX-License-Identifier: MPL-2.0
//! `raftsink` implementation.
//!
//! Threads: the streaming thread reads each frame, has [`super::keys`] key it (frames may wait
//! there for the camera's clock) and hands the events to the writer thread
//! ([`super::writer`]), which group-commits to SQLite; with a `nats://` location the forwarder
//! task ([`super::forwarder`]) drains that SQLite outbox into JetStream.
//!
//! No frame is dropped on the way: frames waiting for the camera's clock are keyed (on the
//! camera's clock if it places them, else with local keys) and handed to the writer at EOS, at a
//! new STREAM_START, at FLUSH_STOP and in `stop`, before anything is cleared.
//!
//! Lock order: `settings`, then `state`, then `io`. Nothing blocks while holding `state` or
//! `io`: the streaming thread clones the writer out of `io` and submits without locks, so
//! `unlock` (which takes `io` briefly) can always interrupt it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::CAT;
use super::forwarder::{self, Forwarder};
use super::keys::camera::Rtp;
use super::keys::{self, ClockState, Keyed, Policy, StreamKeys};
use super::mqtt::{self, Delivery};
use super::settings::Settings;
use super::webhook::{self, Webhook};
use super::writer::{self, WriteError, Writer};
use crate::eventlog::store::{EncodedEvent, EventStore, LastKey};
use crate::eventlog::{event, nats};
use crate::formats::capture_time::{self, CaptureClock};
use crate::formats::detection;
use crate::util::histogram::ms;
use crate::util::liveness;

const QUEUE_CAPACITY: usize = 16_384;
/// Longest wait for NATS to say which key a stream's events reached (a new stream's first
/// frame): after it, the local outbox's last key is used.
const LAST_KEY_WAIT: Duration = Duration::from_secs(2);

/// The writer and the forwarder, created in `start` and stopped in `stop`.
struct Io {
    writer: Arc<Writer>,
    forwarder: Option<Arc<Forwarder>>,
    mqtt: Option<Arc<Delivery>>,
    webhook: Option<Arc<Webhook>>,
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
    /// The keys of each stream: the element's own stream, or each stream of a batch.
    keys: HashMap<String, StreamKeys<Pending>>,
    capture: CaptureClock,
    /// Whether upstream is live (decides the key policy), asked once per stream.
    live: Option<bool>,
    /// Batch caps (`framesync`): one event per fresh entry, keyed per entry stream.
    batch: bool,
    /// NATS: told which streams this element writes (EOS waits for those).
    forwarder: Option<Arc<Forwarder>>,
    /// MQTT and webhook: the same.
    mqtt: Option<Arc<Delivery>>,
    webhook: Option<Arc<Webhook>>,
    /// `capture-time-wait`, from the settings at start.
    capture_wait: Duration,
    /// NATS: the last key of the `stream-id` stream, asked at start.
    last_in_nats: Option<(String, std::sync::mpsc::Receiver<Option<LastKey>>)>,
    /// Frames keyed locally (said once).
    warned_local: bool,
}

/// A frame's event before its key is known.
#[derive(Debug)]
struct Pending {
    stream: String,
    pts: Option<gst::ClockTime>,
    model: String,
    detections: String,
    /// The frame's clip records (JSON), if any.
    clips: Option<String>,
}

impl Pending {
    fn into_event(k: Keyed<Pending>) -> EncodedEvent {
        let p = k.payload;
        EncodedEvent {
            stream: p.stream,
            seq: k.seq,
            pts_ns: p.pts.map(|t| t.nseconds() as i64),
            capture_ns: k.capture_ns,
            model: p.model,
            detections: p.detections,
            key_basis: Some(k.basis),
            clock: k.mark,
            clips: p.clips,
            same_frame_ns: k.same_frame_ns,
        }
    }
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
    /// Frames keyed locally (could not be placed on the camera's clock), this run.
    local_keyed: Mutex<u64>,
}

#[glib::object_subclass]
impl ObjectSubclass for RaftSink {
    const NAME: &'static str = "GstRaftSink";
    type Type = super::RaftSink;
    type ParentType = gst_base::BaseSink;
}

/// How long `start` waits for the MQTT broker's answer to a first connection.
const MQTT_PROBE_WAIT: Duration = Duration::from_secs(3);

/// The MQTT target of the settings, or why it is wrong (named after the property).
fn mqtt_target(
    settings: &Settings,
    location: &str,
) -> Result<mqtt::config::Target, gst::ErrorMessage> {
    let bad = |what: String| gst::error_msg!(gst::ResourceError::Settings, ("{what}"));
    let (tls, host, port) =
        mqtt::config::parse_location(location).map_err(|e| bad(format!("mqtt-location: {e}")))?;
    let protocol = mqtt::config::Protocol::parse(&settings.mqtt_protocol).ok_or_else(|| {
        bad(format!(
            "mqtt-protocol is '{}': expected 5 or 3.1.1",
            settings.mqtt_protocol
        ))
    })?;
    let credentials = mqtt::config::credentials(settings.mqtt_credentials_file.as_deref(), |k| {
        std::env::var(k).ok()
    })
    .map_err(bad)?;
    if tls {
        mqtt::config::tls_config(settings.mqtt_ca_file.as_deref()).map_err(bad)?;
    }
    if settings.mqtt_topic.contains(['+', '#']) {
        return Err(bad(format!(
            "mqtt-topic '{}' has a wildcard (+ or #): a published topic cannot",
            settings.mqtt_topic
        )));
    }
    Ok(mqtt::config::Target {
        tls,
        host,
        port,
        protocol,
        qos: settings.mqtt_qos.clamp(1, 2) as u8,
        topic: settings.mqtt_topic.clone(),
        credentials,
        ca_file: settings.mqtt_ca_file.clone(),
        publish_empty: settings.deliver_empty,
    })
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
        let (waiting, clock, stream) = {
            let st = self.state.lock().unwrap();
            let waiting: u64 = st.keys.values().map(|k| k.waiting() as u64).sum();
            let clock = if st.capture_wait.is_zero() {
                ClockState::Off
            } else if st.keys.is_empty() {
                // Before the first live frame too: frames on their way would wait.
                if st.live == Some(false) {
                    ClockState::Off
                } else {
                    ClockState::Waiting
                }
            } else {
                let states: Vec<ClockState> = st.keys.values().map(|k| k.clock_state()).collect();
                [ClockState::Waiting, ClockState::Local, ClockState::Known]
                    .into_iter()
                    .find(|s| states.contains(s))
                    .unwrap_or(ClockState::Off)
            };
            let stream = if st.batch {
                String::new()
            } else {
                st.stream_override
                    .clone()
                    .or_else(|| st.stream_id.clone())
                    .unwrap_or_default()
            };
            (waiting, clock.as_str(), stream)
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
            .field("stream", stream)
            .field("written", w.written)
            .field("duplicates", w.duplicates)
            .field("collisions", w.collisions)
            .field("commits", w.commits)
            .field("queued", w.queued)
            .field("store-retries", w.retries)
            .field("waiting-frames", waiting)
            .field("local-keyed", *self.local_keyed.lock().unwrap())
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
        // Delivery targets: their fields only when they are set (so are their Prometheus series).
        let (m, wh) = self
            .io
            .lock()
            .unwrap()
            .as_ref()
            .map(|io| {
                // What waits is counted in the log itself (the threads do not count it).
                (
                    io.mqtt
                        .as_ref()
                        .map(|m| (m.stats(), m.waiting().unwrap_or(0))),
                    io.webhook
                        .as_ref()
                        .map(|w| (w.stats(), w.waiting().unwrap_or(0))),
                )
            })
            .unwrap_or_default();
        if let Some((m, pending)) = m {
            b = b
                .field("mqtt-delivered", m.delivered)
                .field("mqtt-messages", m.messages)
                .field("mqtt-left-out", m.left_out)
                .field("mqtt-pending", pending.max(0) as u64)
                .field("mqtt-retries", m.retries)
                .field("mqtt-dead-letters", m.dead_letters)
                .field("mqtt-connected", m.connected)
                .field("mqtt-last-error", m.last_error.unwrap_or_default())
                .field("mqtt-ack-latency-p50-ms", ms(m.ack_latency.percentile(0.5)))
                .field(
                    "mqtt-ack-latency-p99-ms",
                    ms(m.ack_latency.percentile(0.99)),
                );
        }
        if let Some((wh, pending)) = wh {
            b = b
                .field("webhook-delivered", wh.delivered)
                .field("webhook-left-out", wh.left_out)
                .field("webhook-pending", pending.max(0) as u64)
                .field("webhook-retries", wh.retries)
                .field("webhook-dead-letters", wh.dead_letters)
                .field("webhook-last-error", wh.last_error.unwrap_or_default())
                .field(
                    "webhook-ack-latency-p50-ms",
                    ms(wh.ack_latency.percentile(0.5)),
                )
                .field(
                    "webhook-ack-latency-p99-ms",
                    ms(wh.ack_latency.percentile(0.99)),
                );
        }
        let f = f.unwrap_or_default();
        b.field("forwarded", f.forwarded)
            .field("already-in-nats", f.skipped)
            .field("nats-collisions", f.collisions)
            .field("pending", f.pending.max(0) as u64)
            .field("dead-letters", f.dead_letters)
            .field("retries", f.retries)
            .field("nats-connected", f.connected)
            .field("nats-msg-id", f.msg_id)
            .field("nats-batches", f.batches)
            .field("nats-batches-refused", f.batches_refused)
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
                let queued = writer.stats().queued;
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    ("{queued} events not yet durable after eos-timeout ({timeout:?}): the log does not take them (locked by another process, or the disk full); they are tried again until the element stops")
                );
            }
            Err(WriteError::Flushing) => return false,
            Err(e @ WriteError::Failed { .. }) => {
                gst::element_imp_error!(self, gst::ResourceError::Write, ("{e}"));
                return false;
            }
        }
        let (mqtt, hook) = self
            .io
            .lock()
            .unwrap()
            .as_ref()
            .map(|io| (io.mqtt.clone(), io.webhook.clone()))
            .unwrap_or_default();
        if let Some(w) = hook {
            let unlocked = self.unlocked.clone();
            if !w.wait_delivered(timeout, || unlocked.load(Ordering::SeqCst)) {
                let s = w.stats();
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    (
                        "{} events not delivered to the webhook {} within eos-timeout ({timeout:?}); they stay in the log and are posted when raftsink next runs with it{}",
                        w.waiting().unwrap_or(0).max(0),
                        w.name(),
                        s.last_error
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    )
                );
            }
        }
        if let Some(m) = mqtt {
            let unlocked = self.unlocked.clone();
            if !m.wait_delivered(timeout, || unlocked.load(Ordering::SeqCst)) {
                let s = m.stats();
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    (
                        "{} events not acknowledged by the MQTT broker {} within eos-timeout ({timeout:?}); they stay in the log and are published when raftsink next runs with it{}",
                        m.waiting().unwrap_or(0).max(0),
                        m.name(),
                        s.last_error
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    )
                );
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

    /// Where the keys of `stream` stand in the log (the local log or outbox, and with NATS the
    /// stream's subject there): the keys of a new stream go on from them.
    fn last_keys(&self, stream: &str) -> (Option<keys::Stored>, Option<i64>, Option<keys::Stored>) {
        let path = self
            .io
            .lock()
            .unwrap()
            .as_ref()
            .map(|io| io.database.clone());
        let local = path
            .and_then(|p| EventStore::open_for_reading(&p).ok())
            .and_then(|s| s.last_keys(stream).ok())
            .unwrap_or_default();
        let stored = |k: LastKey, basis| keys::Stored {
            seq: k.seq,
            capture_ns: k.capture_ns,
            basis: Some(basis),
            mark: k.clock,
        };
        let mut camera = local.camera.map(|k| stored(k, event::KeyBasis::Camera));
        // NATS: asked at start for the stream-id stream, else now.
        let prefetched = {
            let mut st = self.state.lock().unwrap();
            match st.last_in_nats.take() {
                Some((s, rx)) if s == stream => Some(rx),
                other => {
                    st.last_in_nats = other;
                    None
                }
            }
        };
        let forwarder = self.state.lock().unwrap().forwarder.clone();
        let in_nats = match (prefetched, forwarder) {
            (Some(rx), _) => rx.recv_timeout(LAST_KEY_WAIT).ok().flatten(),
            (None, Some(f)) if self.state.lock().unwrap().capture_wait > Duration::ZERO => f
                .last_camera_key(stream)
                .recv_timeout(LAST_KEY_WAIT)
                .ok()
                .flatten(),
            _ => None,
        };
        if let Some(n) = in_nats
            && camera.is_none_or(|c| c.capture_ns < n.capture_ns)
        {
            camera = Some(stored(n, event::KeyBasis::Camera));
        }
        let other = local.other.map(|seq| keys::Stored {
            seq,
            capture_ns: 0,
            basis: None,
            mark: None,
        });
        (camera, local.local, other)
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
            "nats-msg-id" => s.nats_msg_id = value.get().expect("type checked upstream"),
            "commit-interval" => s.commit_interval = nanos(value),
            "commit-max-events" => {
                s.commit_max_events = value.get().expect("type checked upstream")
            }
            "eos-timeout" => s.eos_timeout = nanos(value),
            "capture-time-wait" => s.capture_time_wait = nanos(value),
            "skip-empty" => s.skip_empty = value.get().expect("type checked upstream"),
            "post-durable" => s.post_durable = value.get().expect("type checked upstream"),
            "stream-id" => s.stream_id = string(value),
            "mqtt-location" => s.mqtt_location = string(value),
            "mqtt-topic" => {
                s.mqtt_topic = string(value).unwrap_or_else(|| mqtt::config::DEFAULT_TOPIC.into())
            }
            "mqtt-qos" => s.mqtt_qos = value.get().expect("type checked upstream"),
            "mqtt-protocol" => s.mqtt_protocol = string(value).unwrap_or_else(|| "5".into()),
            "mqtt-credentials-file" => s.mqtt_credentials_file = string(value).map(PathBuf::from),
            "mqtt-ca-file" => s.mqtt_ca_file = string(value).map(PathBuf::from),
            "deliver-empty" => s.deliver_empty = value.get().expect("type checked upstream"),
            "webhook-url" => s.webhook_url = string(value),
            "webhook-timeout" => s.webhook_timeout = nanos(value),
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
            "nats-msg-id" => s.nats_msg_id.to_value(),
            "commit-interval" => (s.commit_interval.as_nanos() as u64).to_value(),
            "commit-max-events" => s.commit_max_events.to_value(),
            "eos-timeout" => (s.eos_timeout.as_nanos() as u64).to_value(),
            "capture-time-wait" => (s.capture_time_wait.as_nanos() as u64).to_value(),
            "skip-empty" => s.skip_empty.to_value(),
            "post-durable" => s.post_durable.to_value(),
            "stream-id" => s.stream_id.to_value(),
            "mqtt-location" => s.mqtt_location.to_value(),
            "mqtt-topic" => s.mqtt_topic.to_value(),
            "mqtt-qos" => s.mqtt_qos.to_value(),
            "mqtt-protocol" => s.mqtt_protocol.to_value(),
            "mqtt-credentials-file" => s
                .mqtt_credentials_file
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "mqtt-ca-file" => s
                .mqtt_ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "deliver-empty" => s.deliver_empty.to_value(),
            "webhook-url" => s.webhook_url.to_value(),
            "webhook-timeout" => (s.webhook_timeout.as_nanos() as u64).to_value(),
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
        let mqtt_target = match &settings.mqtt_location {
            None => None,
            Some(loc) => Some(mqtt_target(&settings, loc)?),
        };
        if let Some(t) = &mqtt_target {
            // A refused login is a clear error now; a broker that does not answer is not
            // (events wait in the log until it does).
            mqtt::probe(t, MQTT_PROBE_WAIT).map_err(|why| {
                gst::error_msg!(
                    gst::ResourceError::OpenWrite,
                    ("MQTT {}: {why}", t.address()),
                    ["check mqtt-credentials-file (or VIDEOAI_MQTT_USERNAME and VIDEOAI_MQTT_PASSWORD) and the broker's access rules"]
                )
            })?;
        }
        if let Some(url) = &settings.webhook_url {
            webhook::check_url(url)
                .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{e}")))?;
        }
        let mut store = EventStore::open_for_writing(&database)
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("{e}")))?;
        if nats.is_some() {
            store
                .mark_outbox(&location)
                .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ("{e}")))?;
        }
        let weak = self.obj().downgrade();
        let post = settings.post_durable;
        let forwarder = nats.map(|urls| {
            let weak_err = self.obj().downgrade();
            Arc::new(Forwarder::start(
                forwarder::Config {
                    urls,
                    stream: settings.nats_stream.clone(),
                    replicas: settings.replicas as usize,
                    msg_id: settings.nats_msg_id,
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
                    on_collision: {
                        let weak = self.obj().downgrade();
                        Box::new(move |what| {
                            if let Some(el) = weak.upgrade() {
                                gst::element_warning!(
                                    el,
                                    gst::StreamError::Failed,
                                    ("{what}. Later ones are only counted (stats nats-collisions)")
                                );
                            }
                        })
                    },
                },
            ))
        });
        // The stream-id stream is this element's from the start: its forwarder publishes it
        // (events an earlier run left in the outbox too).
        if let (Some(f), Some(id)) = (&forwarder, &settings.stream_id) {
            f.claim(id);
        }
        let mqtt = mqtt_target.map(|target| {
            let weak = self.obj().downgrade();
            Arc::new(mqtt::start(
                mqtt::Config {
                    target,
                    log: database.clone(),
                },
                mqtt::Reports {
                    on_error: Box::new(move |msg| {
                        if let Some(el) = weak.upgrade() {
                            gst::element_error!(el, gst::ResourceError::Write, ("{msg}"));
                        }
                    }),
                    on_dead_letter: {
                        let weak = self.obj().downgrade();
                        Box::new(move |msg| {
                            if let Some(el) = weak.upgrade() {
                                gst::element_warning!(el, gst::ResourceError::Write, ("{msg}"));
                            }
                        })
                    },
                },
            ))
        });
        if let (Some(m), Some(id)) = (&mqtt, &settings.stream_id) {
            m.claim(id);
        }
        let webhook = settings.webhook_url.clone().map(|url| {
            let (weak, weak_err) = (self.obj().downgrade(), self.obj().downgrade());
            Arc::new(webhook::start(
                webhook::Config {
                    url,
                    timeout: settings.webhook_timeout,
                    deliver_empty: settings.deliver_empty,
                    log: database.clone(),
                },
                webhook::Reports {
                    on_dead_letter: Box::new(move |msg| {
                        if let Some(el) = weak.upgrade() {
                            gst::element_warning!(el, gst::ResourceError::Write, ("{msg}"));
                        }
                    }),
                    on_error: Box::new(move |msg| {
                        if let Some(el) = weak_err.upgrade() {
                            gst::element_error!(el, gst::ResourceError::Write, ("{msg}"));
                        }
                    }),
                },
            ))
        });
        if let (Some(w), Some(id)) = (&webhook, &settings.stream_id) {
            w.claim(id);
        }
        let nudge = forwarder.clone();
        let nudge_mqtt = mqtt.clone();
        let nudge_webhook = webhook.clone();
        let writer = Writer::start(
            store,
            writer::Config {
                commit_interval: settings.commit_interval,
                commit_max_events: settings.commit_max_events as usize,
                capacity: QUEUE_CAPACITY,
                stop_wait: settings.eos_timeout,
            },
            writer::Callbacks {
                on_commit: Box::new(move |commit| {
                    if let (Some((stream, seq)), Some(el)) =
                        (commit.collisions.first(), weak.upgrade())
                    {
                        // Each time: a collision means keys were not what they should be.
                        gst::element_warning!(
                            el,
                            gst::StreamError::Failed,
                            (
                                "the key ({stream}, {seq}) already holds another frame (its capture time or position differs by more than half a frame period): this frame was kept in the log's collisions table, not stored under the key ({} collisions in this commit; videoai-events collisions lists them)",
                                commit.collisions.len()
                            )
                        );
                    }
                    if let Some(f) = &nudge {
                        f.nudge();
                    }
                    if let Some(m) = &nudge_mqtt {
                        m.nudge();
                    }
                    if let Some(w) = &nudge_webhook {
                        w.nudge();
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
                on_retrying: {
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
        *self.local_keyed.lock().unwrap() = 0;
        *self.final_stats.lock().unwrap() = None;
        let writer = Arc::new(writer);
        // Where the camera's keys stand in NATS, asked now so that the first frame need not
        // wait for the answer.
        let last_in_nats = match (&forwarder, &settings.stream_id) {
            (Some(f), Some(id)) if !settings.capture_time_wait.is_zero() => {
                Some((id.clone(), f.last_camera_key(id)))
            }
            _ => None,
        };
        *self.state.lock().unwrap() = State {
            skip_empty: settings.skip_empty,
            capture_wait: settings.capture_time_wait,
            stream_override: settings.stream_id.clone(),
            writer: Some(writer.clone()),
            forwarder: forwarder.clone(),
            mqtt: mqtt.clone(),
            webhook: webhook.clone(),
            last_in_nats,
            ..Default::default()
        };
        self.unlocked.store(false, Ordering::SeqCst);
        *self.io.lock().unwrap() = Some(Io {
            writer,
            forwarder,
            mqtt,
            webhook,
            database,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Frames still waiting for the camera's clock are stored too (a stop without EOS:
        // an error, a lease lost): keyed now, committed by the writer's stop below.
        let (events, writer) = self.flush_waiting("the element stops");
        if let Some(w) = writer {
            for ev in events {
                w.submit_at_stop(ev);
            }
        }
        let mut last = self.stats_structure();
        if let Some((_, Some(f))) = self.io_handles()
            && let Some(n) = self.outbox_pending(&f)
        {
            last.set("pending", n.max(0) as u64);
        }
        // The targets' own counts of what waits, from the log.
        let targets = self
            .io
            .lock()
            .unwrap()
            .as_ref()
            .map(|io| (io.mqtt.clone(), io.webhook.clone()));
        if let Some((m, w)) = targets {
            if let Some(n) = m.and_then(|m| m.waiting_now()) {
                last.set("mqtt-pending", n.max(0) as u64);
            }
            if let Some(n) = w.and_then(|w| w.waiting_now()) {
                last.set("webhook-pending", n.max(0) as u64);
            }
        }
        *self.final_stats.lock().unwrap() = Some(last);
        {
            let mut st = self.state.lock().unwrap();
            st.writer = None;
            st.forwarder = None;
            st.mqtt = None;
            st.webhook = None;
        }
        let io = self.io.lock().unwrap().take();
        if let Some(io) = io {
            if let Some(m) = io.mqtt {
                match Arc::try_unwrap(m) {
                    Ok(m) => m.stop(),
                    Err(m) => drop(m),
                }
            }
            if let Some(w) = io.webhook {
                match Arc::try_unwrap(w) {
                    Ok(w) => w.stop(),
                    Err(w) => drop(w),
                }
            }
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
                        ),
                        ["check that no other process holds the log locked, and the disk's space and permissions"]
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
                // Frames of the stream that ends are stored before it is forgotten.
                if self.submit_waiting("a new stream starts").is_err() {
                    return false;
                }
                let mut st = self.state.lock().unwrap();
                st.stream_id = Some(s.stream_id().to_string());
                st.keys.clear();
                st.live = None;
            }
            gst::EventView::Segment(s) => {
                let mut st = self.state.lock().unwrap();
                st.segment = s.segment().downcast_ref::<gst::ClockTime>().cloned();
                // A new segment (a seek): frames are numbered by their position alone.
                st.keys.values_mut().for_each(StreamKeys::reset_position);
            }
            gst::EventView::FlushStop(_) => {
                // Frames that waited for the camera's clock reached the sink before the flush:
                // stored, not flushed.
                if self.submit_waiting("a flush").is_err() {
                    return false;
                }
                let mut st = self.state.lock().unwrap();
                st.keys.values_mut().for_each(StreamKeys::reset_position);
                st.capture.reset();
            }
            // Durable (and acknowledged) before EOS reaches the application; frames still
            // waiting for the camera's clock are keyed and stored first.
            gst::EventView::Eos(_)
                if self.submit_waiting("end of stream").is_err() || !self.drain_for_eos() =>
            {
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
        let (forwarder, mqtt, webhook) = {
            let st = self.state.lock().unwrap();
            (st.forwarder.clone(), st.mqtt.clone(), st.webhook.clone())
        };
        if let Some(w) = webhook {
            w.claim(&ev.stream);
        }
        if let Some(f) = forwarder {
            f.claim(&ev.stream);
        }
        if let Some(m) = mqtt {
            m.claim(&ev.stream);
        }
        let (stream, seq) = (ev.stream.clone(), ev.seq);
        match writer.submit(ev) {
            Ok(()) => Ok(gst::FlowSuccess::Ok),
            Err(WriteError::Flushing) => Err(gst::FlowError::Flushing),
            Err(e @ WriteError::Failed { .. }) => {
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

    /// Stores one frame's event: keyed by its stream's [`StreamKeys`], made at the stream's
    /// first frame from where the log's keys of the stream stand.
    fn store_frame(&self, f: Frame<'_>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut detections = detection::read_detections(f.buffer);
        self.drop_invalid(&mut detections, &f.stream);
        let (known_live, new_stream, skip_empty, wait) = {
            let st = self.state.lock().unwrap();
            (
                st.live,
                !st.keys.contains_key(&f.stream),
                st.skip_empty,
                st.capture_wait,
            )
        };
        let clips = detection::clip_records(f.buffer);
        if skip_empty && detections.is_empty() && clips.is_empty() {
            *self.skipped_empty.lock().unwrap() += 1;
            return Ok(gst::FlowSuccess::Ok);
        }
        // Whether upstream is live: asked of the pipeline once (until the next stream-start).
        let live = known_live.unwrap_or_else(|| {
            let l = self.upstream_live();
            self.state.lock().unwrap().live = Some(l);
            l
        });
        let policy = match (live, wait.is_zero()) {
            (false, _) => Policy::Position,
            (true, true) => Policy::CaptureTime,
            (true, false) => Policy::Camera {
                wait_ns: wait.as_nanos() as u64,
            },
        };
        // Asked without the state lock: reading the log, and NATS, take a moment.
        let stored = (new_stream && live).then(|| self.last_keys(&f.stream));
        let model = detection::inference_model(f.buffer)
            .or_else(|| detection::first_detection_model(f.buffer))
            .unwrap_or_default();
        let detections = serde_json::to_string(&detections).unwrap_or_else(|_| "[]".into());
        let camera_ns = capture_time::reference_timestamp(f.buffer).map(|t| t.nseconds() as i64);
        let rtp = capture_time::rtp_timestamp(f.buffer).map(|r| Rtp {
            ssrc: r.ssrc,
            ticks: r.ticks(),
            clock_rate: r.clock_rate,
        });
        let element = self.obj().clone();
        let element = element.upcast_ref::<gst::Element>();
        let mut st = self.state.lock().unwrap();
        let estimate_ns = match f.capture_ns {
            Some(c) => c,
            None => st.capture.capture_ns(element, f.buffer, f.running_time),
        };
        let frame = keys::Frame {
            pts_ns: f.pts.map(|t| t.nseconds()),
            running_ns: f.running_time.map(|t| t.nseconds()),
            camera_ns,
            rtp,
            estimate_ns,
            framerate: (f.framerate.numer() > 0 && f.framerate.denom() > 0)
                .then(|| (f.framerate.numer(), f.framerate.denom())),
        };
        if new_stream {
            gst::debug!(
                CAT,
                imp = self,
                "stream '{}': upstream live: {live}, keys: {policy:?}, continuing from {stored:?}, first frame {frame:?}",
                f.stream
            );
        }
        let keys = st.keys.entry(f.stream.clone()).or_insert_with(|| {
            let mut k = StreamKeys::new(policy);
            if let Some((camera, local, other)) = stored {
                k.continue_from(camera, local, other);
            }
            k
        });
        let keyed = keys.offer(
            frame,
            Pending {
                stream: f.stream,
                pts: f.pts,
                model,
                detections,
                clips: (!clips.is_empty())
                    .then(|| serde_json::to_string(&clips).ok())
                    .flatten(),
            },
        );
        let writer = st.writer.clone();
        drop(st);
        let events = self.note_local(keyed, "they waited capture-time-wait for it in vain");
        self.submit_all(writer, events)
    }

    /// Every stream's waiting frames, keyed now (placed on the camera's clock if it can be,
    /// else with local keys), and the writer.
    fn flush_waiting(&self, why: &str) -> (Vec<EncodedEvent>, Option<Arc<Writer>>) {
        let mut st = self.state.lock().unwrap();
        let keyed: Vec<Keyed<Pending>> = st.keys.values_mut().flat_map(StreamKeys::flush).collect();
        let writer = st.writer.clone();
        drop(st);
        (self.note_local(keyed, why), writer)
    }

    /// Stores the frames that wait for the camera's clock now (EOS, a new stream, a flush).
    fn submit_waiting(&self, why: &str) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (events, writer) = self.flush_waiting(why);
        self.submit_all(writer, events)
    }

    /// The events of `keyed`; counts and warns (once) about frames keyed locally.
    fn note_local(&self, keyed: Vec<Keyed<Pending>>, why: &str) -> Vec<EncodedEvent> {
        let local = keyed
            .iter()
            .filter(|k| k.basis == event::KeyBasis::Local)
            .count() as u64;
        if local > 0 {
            *self.local_keyed.lock().unwrap() += local;
            let first = !std::mem::replace(&mut self.state.lock().unwrap().warned_local, true);
            let stream = keyed[0].payload.stream.clone();
            if first {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("{local} frames of stream '{stream}' could not be placed on the camera's clock ({why}: no RTCP sender report, and no stored frame of the same RTP stream): stored under local keys (key_basis local, seq from 2^62 on), which no other reader of the camera shares. Later ones are counted in stats local-keyed")
                );
            } else {
                gst::debug!(
                    CAT,
                    imp = self,
                    "{local} more frames of '{stream}' keyed locally ({why})"
                );
            }
        }
        keyed.into_iter().map(Pending::into_event).collect()
    }

    fn submit_all(
        &self,
        writer: Option<Arc<Writer>>,
        events: Vec<EncodedEvent>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        for ev in events {
            self.submit(writer.clone(), ev)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
