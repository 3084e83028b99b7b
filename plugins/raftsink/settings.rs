// SPDX-License-Identifier: MPL-2.0
//! raftsink's settings: the defaults and the property specs (`gst-inspect-1.0 raftsink` shows their blurbs).

use gst::glib;
use gst::prelude::*;

use std::path::PathBuf;
use std::time::Duration;

use super::mqtt;
use crate::eventlog::nats;

pub(super) const DEFAULT_COMMIT_INTERVAL_NS: u64 = 20_000_000;

pub(super) const DEFAULT_COMMIT_MAX_EVENTS: u32 = 1000;

pub(super) const DEFAULT_EOS_TIMEOUT_NS: u64 = 30_000_000_000;

pub(super) const DEFAULT_WEBHOOK_TIMEOUT_NS: u64 = 10_000_000_000;

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) location: Option<String>,
    pub(super) outbox_location: Option<PathBuf>,
    pub(super) nats_stream: String,
    pub(super) replicas: u32,
    pub(super) nats_msg_id: super::NatsMsgId,
    pub(super) commit_interval: Duration,
    pub(super) commit_max_events: u32,
    pub(super) eos_timeout: Duration,
    pub(super) capture_time_wait: Duration,
    pub(super) skip_empty: bool,
    pub(super) post_durable: bool,
    pub(super) stream_id: Option<String>,
    pub(super) mqtt_location: Option<String>,
    pub(super) mqtt_topic: String,
    pub(super) mqtt_qos: u32,
    pub(super) mqtt_protocol: String,
    pub(super) mqtt_credentials_file: Option<PathBuf>,
    pub(super) mqtt_ca_file: Option<PathBuf>,
    pub(super) deliver_empty: bool,
    pub(super) webhook_url: Option<String>,
    pub(super) webhook_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: None,
            outbox_location: None,
            nats_stream: nats::DEFAULT_STREAM.to_string(),
            replicas: 0,
            nats_msg_id: super::NatsMsgId::Auto,
            commit_interval: Duration::from_nanos(DEFAULT_COMMIT_INTERVAL_NS),
            commit_max_events: DEFAULT_COMMIT_MAX_EVENTS,
            eos_timeout: Duration::from_nanos(DEFAULT_EOS_TIMEOUT_NS),
            capture_time_wait: Duration::ZERO,
            skip_empty: false,
            post_durable: false,
            stream_id: None,
            mqtt_location: None,
            mqtt_topic: mqtt::config::DEFAULT_TOPIC.to_string(),
            mqtt_qos: 1,
            mqtt_protocol: "5".to_string(),
            mqtt_credentials_file: None,
            mqtt_ca_file: None,
            deliver_empty: false,
            webhook_url: None,
            webhook_timeout: Duration::from_nanos(DEFAULT_WEBHOOK_TIMEOUT_NS),
        }
    }
}

/// The property specs, in the order `gst-inspect-1.0` lists them.
pub(super) fn properties() -> Vec<glib::ParamSpec> {
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
                 Default: none (then videoai-outbox-<stream>-<hash of location>.db in the \
                 working directory)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("nats-stream")
            .nick("NATS stream")
            .blurb("NATS only: the JetStream stream (created if missing). Default: VIDEOAI_EVENTS")
            .default_value(Some(nats::DEFAULT_STREAM))
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
        glib::ParamSpecEnum::builder_with_default("nats-msg-id", super::NatsMsgId::Auto)
            .nick("NATS Msg-Id")
            .blurb(
                "NATS only: when publishes also carry Nats-Msg-Id (JetStream's deduplication \
                 id) beside Nats-Expected-Last-Subject-Sequence, which keeps each key once at \
                 any age. auto: only to servers older than 2.11 (the connected server's \
                 version decides; once the process has seen an older one, from then on), whose stream leaders check the expected sequence against \
                 applied messages only, so a publish sent again during a leader election \
                 could be stored twice without it; 2.11 and later refuse it themselves, and \
                 the id costs every server a deduplication entry per event (with the expected \
                 sequence, a third of 2.9.10's throughput here). always: also to 2.11 and later, for a cluster whose servers \
                 are being upgraded from an older version. stats shows nats-msg-id in effect. \
                 Default: auto",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("commit-interval")
            .nick("Commit interval")
            .blurb(
                "Group commit: an event is durable at most this long (ns) after it \
                 arrived (one fsync covers all events of the interval), and always before \
                 EOS is passed on. 0 commits every event. Default: 20000000 (20 ms)",
            )
            .maximum(60_000_000_000)
            .default_value(DEFAULT_COMMIT_INTERVAL_NS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("commit-max-events")
            .nick("Commit max events")
            .blurb("Group commit: commit as soon as this many events wait. Default: 1000")
            .minimum(1)
            .default_value(DEFAULT_COMMIT_MAX_EVENTS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("eos-timeout")
            .nick("EOS timeout")
            .blurb(
                "How long (ns) EOS waits for everything to be durable (and, with NATS, \
                 acknowledged); after it a warning is posted and EOS goes on \
                 (unacknowledged events stay in the outbox). Also how long a stop keeps \
                 trying a commit that fails for now (the log locked, the disk full), and how \
                 long videoai-worker lets a stopping camera drain. Default: 30000000000 (30 s)",
            )
            .maximum(86_400_000_000_000)
            .default_value(DEFAULT_EOS_TIMEOUT_NS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("capture-time-wait")
            .nick("Capture time wait")
            .blurb(
                "Live input, in nanoseconds: key frames by the camera's own clock, so that \
                 every machine reading the camera gives each frame the same seq (a \
                 videoai-worker handover, two readers at once, store each frame once). Keys go \
                 on from the last frame the log holds for the stream (another reader's \
                 included, with NATS the one in JetStream), counted in frame periods by RTP \
                 time (timestamp/x-videoai-rtp metas, which resilientsrc stamps) when the SSRC \
                 is the same, else by capture time (timestamp/x-ntp, from the camera's RTCP \
                 sender reports): a taker keys its first frame at once. Frames the camera's \
                 clock cannot place yet wait, in memory, at most this long; then, and at EOS, \
                 a new stream, a flush or a stop, they are stored under local keys (key_basis \
                 local, seq from 2^62: never another reader's key), counted in stats \
                 local-keyed. 0: off (live frames keyed by capture time on this machine). \
                 Default: 0",
            )
            .maximum(60_000_000_000)
            .default_value(0)
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
        glib::ParamSpecString::builder("mqtt-location")
            .nick("MQTT location")
            .blurb(
                "Also deliver every stored event to this MQTT broker: mqtt://host[:port] \
                 (1883) or mqtts://host[:port] (8883, TLS). Events are read back from the \
                 log (or the NATS outbox) once durable; the log keeps how far the broker \
                 acknowledged, so a broker outage loses nothing and a restart publishes \
                 again only what was never acknowledged. Topics under mqtt-topic: events, \
                 crossings/<line>, zones/<zone>, counts/<line> (retained), status (retained \
                 online/offline, offline also by last will). Credentials never go here: \
                 mqtt-credentials-file, or the environment variables VIDEOAI_MQTT_USERNAME and \
                 VIDEOAI_MQTT_PASSWORD. Default: none (no MQTT)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("mqtt-topic")
            .nick("MQTT topic")
            .blurb(
                "MQTT: the topic every message goes under, {stream} standing for the stream \
                 id ('/', '+' and '#' in it become '_'); /events, /crossings/<line>, \
                 /zones/<zone>, /counts/<line> and /status are added. Default: videoai/{stream}",
            )
            .default_value(Some(mqtt::config::DEFAULT_TOPIC))
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("mqtt-qos")
            .nick("MQTT QoS")
            .blurb(
                "MQTT: 1 (at least once: a repeat after a lost acknowledgement carries the \
                 same key, stream/seq) or 2 (exactly once between raftsink and the broker). \
                 Default: 1",
            )
            .minimum(1)
            .maximum(2)
            .default_value(1)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("mqtt-protocol")
            .nick("MQTT protocol")
            .blurb(
                "MQTT: 5 (the key also in the user property idempotency-key) or 3.1.1. \
                 Default: 5",
            )
            .default_value(Some("5"))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("mqtt-credentials-file")
            .nick("MQTT credentials file")
            .blurb(
                "MQTT: a file with the lines username=… and password=… (keep it readable by \
                 the pipeline's user only). Without it, VIDEOAI_MQTT_USERNAME and \
                 VIDEOAI_MQTT_PASSWORD are read; with neither, no credentials. A refused login \
                 is an error at start. Default: none",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("mqtt-ca-file")
            .nick("MQTT CA file")
            .blurb(
                "mqtts: the PEM certificates the broker's certificate must chain to. \
                 Default: none (the system's store, /etc/ssl/certs)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("webhook-url")
            .nick("Webhook URL")
            .blurb(
                "Also POST every stored event, as JSON (what videoai-events dump prints), to \
                 this http:// or https:// URL, with the header Idempotency-Key: <stream>/<seq>; \
                 read back from the log once durable, in order per stream. 2xx delivers; 5xx, \
                 408, 429, timeouts and refused connections are retried with backoff (0.2 s \
                 doubling to 30 s) with the same key; any other answer puts the event in the \
                 log's dead letters (videoai-events stats). Default: none",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("webhook-timeout")
            .nick("Webhook timeout")
            .blurb(
                "How long (ns) one webhook request may take, connecting included, before it is \
                 tried again. Default: 10000000000 (10 s)",
            )
            .minimum(1_000_000)
            .maximum(600_000_000_000)
            .default_value(DEFAULT_WEBHOOK_TIMEOUT_NS)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("deliver-empty")
            .nick("Deliver empty")
            .blurb(
                "MQTT and webhook: also deliver the events of frames without detections (they \
                 are always stored in the log). Default: false",
            )
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb(
                "Read-only 'raftsink-stats' structure: stream (the stream id events go \
                 under; empty for framesync batches), written (events stored), duplicates \
                 (the same frame already in the log), collisions (the key held another \
                 frame: kept in the log's collisions table), commits, queued, store-retries \
                 (commits tried again: the log locked by another process, the disk full), \
                 waiting-frames (frames waiting for the camera's clock, capture-time-wait), \
                 local-keyed (frames stored under local keys), camera-clock (off, waiting, \
                 known, local), skipped-empty, invalid-detections (left out: a non-finite \
                 confidence), commit-latency-p50-ms and -p99-ms (arrival to durable); NATS: \
                 forwarded, already-in-nats, nats-collisions (the key in NATS held another \
                 frame: kept in the outbox), pending (this element's events in the outbox \
                 not yet acknowledged), dead-letters (parked: refused by NATS for good), \
                 retries, nats-connected, nats-msg-id (whether publishes carry Nats-Msg-Id, see nats-msg-id), \
                 nats-batches (atomic batches committed: a camera's events in one publish, \
                 on servers from 2.12 and streams that allow them), nats-batches-refused \
                 (refused whole, e.g. another writer appended: their events went one at a \
                 time, each checked), last-error, ack-latency-p50-ms and -p99-ms; \
                 MQTT: mqtt-delivered (events the broker acknowledged, left-out ones \
                 included), mqtt-messages, mqtt-left-out (no detections), mqtt-pending \
                 (counted in the log; while events flow at most 250 ms old, exact after EOS), \
                 mqtt-retries, mqtt-dead-letters (refused by the broker, or too large: kept \
                 in the log's dead letters), mqtt-connected, mqtt-last-error, mqtt-ack-latency-p50-ms and \
                 -p99-ms; with webhook-url: webhook-delivered, webhook-left-out, webhook-pending, \
                 webhook-retries, webhook-dead-letters, webhook-last-error, \
                 webhook-ack-latency-p50-ms and -p99-ms",
            )
            .read_only()
            .build(),
    ]
}
