// SPDX-License-Identifier: MPL-2.0
//! raftsink benchmark: `cargo bench --bench raftsink` (or `make bench-raftsink`).
//!
//! 1. Local backend: events/s of raftsink (SQLite, WAL, synchronous=FULL, group commit 20 ms)
//!    fed as fast as possible, vs the raw engine: rusqlite inserting the same rows with the same
//!    schema in transactions of `commit-max-events` rows. Goal: ≥ 0.8× raw and ≥ 30k events/s.
//! 2. NATS backend on a 3-node JetStream cluster (R3, file storage) on 127.0.0.1: events/s of
//!    8 raftsink elements (8 streams, through their outboxes) until everything is acknowledged,
//!    vs a minimal async-nats client publishing the same events the same way (Nats-Msg-Id, one
//!    in flight per stream, 8 streams at once); also the raw client with raftsink's uniqueness
//!    rule (`Nats-Expected-Last-Subject-Sequence`), with raftsink's headers, and fully
//!    pipelined (a window of 256 acknowledgements per stream), for scale. Three alternating
//!    rounds, best of each. The server is the pinned one of the tests (`.deps/nats-server`);
//!    `VIDEOAI_NATS_SERVER=/usr/sbin/nats-server` runs Debian 12's (2.9.10, where raftsink also
//!    sends `Nats-Msg-Id`).
//!
//! 3. MQTT delivery to a local mosquitto: events/s of raftsink (SQLite log + `mqtt-location`)
//!    until the broker acknowledged everything (EOS waits for it), vs a bare rumqttc client (the
//!    same crate, MQTT 5, the same broker receive maximum) publishing the same event JSON to the
//!    same topic until acknowledged; QoS 1 and QoS 2, three alternating rounds, best of each.
//!
//! Environment: `BENCH_EVENTS` (local, default 100000), `BENCH_NATS_EVENTS` (per stream,
//! default 2000), `BENCH_MQTT_EVENTS` (default 20000), `BENCH_PARTS` (the parts to run, default
//! `123`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use gst::prelude::*;
use gstvideoai::eventlog::event::{Detection, FrameEvent};
use gstvideoai::eventlog::store::EncodedEvent;
use gstvideoai::formats::detection;

use common::env_u64 as env;

fn detections(i: u64) -> Vec<Detection> {
    (0..2)
        .map(|k| {
            Detection::new(
                "person",
                0,
                0.5 + k as f64 / 10.0,
                (i as u32 % 600, 40 + k, 64, 128),
            )
        })
        .collect()
}

/// A harness on `sink` with `stream` started: stream-start, 640x480 RGB caps at 30/1, a time
/// segment.
fn started(sink: &gst::Element, stream: &str) -> gst_check::Harness {
    let mut h = gst_check::Harness::with_element(sink, Some("sink"), None);
    h.set_live(false);
    h.push_event(gst::event::StreamStart::new(stream));
    h.push_event(gst::event::Caps::new(
        &gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", 640)
            .field("height", 480)
            .field("framerate", gst::Fraction::new(30, 1))
            .build(),
    ));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    h
}

/// Pushes `n` frames (two detections each) of stream `stream` into a raftsink harness and waits
/// for EOS (everything durable, and acknowledged with NATS). Returns the time and final stats.
/// `ready` is waited on just before the clock starts (all of a run's streams start together).
fn feed(
    props: &[(&str, String)],
    stream: &str,
    n: u64,
    ready: &std::sync::Barrier,
) -> (Duration, gst::Structure) {
    let mut b = gst::ElementFactory::make("raftsink").property("async", false);
    for (k, v) in props {
        b = b.property_from_str(k, v);
    }
    let sink = b.build().unwrap();
    let mut h = started(&sink, stream);
    // With NATS or MQTT, start the clock once connected: steady state, not start-up.
    let connected = if props
        .iter()
        .any(|(k, v)| k == &"location" && v.starts_with("nats://"))
    {
        Some("nats-connected")
    } else if props.iter().any(|(k, _)| k == &"mqtt-location") {
        // The session connects once the element's first stream is known: give stream-id.
        Some("mqtt-connected")
    } else {
        None
    };
    if let Some(field) = connected {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sink
            .property::<gst::Structure>("stats")
            .get::<bool>(field)
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "no NATS connection");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let buffers: Vec<gst::Buffer> = (0..n)
        .map(|i| {
            let mut b = gst::Buffer::new();
            {
                let b = b.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(i * 1_000_000_000 / 30));
                for d in detections(i) {
                    detection::attach(b, &d, "bench@1");
                }
                detection::attach_inference(b, "bench@1", true, 2);
            }
            b
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    for b in buffers {
        h.push(b).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let took = start.elapsed();
    let stats = sink.property::<gst::Structure>("stats");
    (took, stats)
}

fn raw_sqlite(path: &std::path::Path, n: u64, batch: usize) -> Duration {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE events (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL, pts_ns INTEGER,
             capture_ns INTEGER NOT NULL, model TEXT NOT NULL, detections TEXT NOT NULL, schema INTEGER NOT NULL,
             forwarded INTEGER NOT NULL DEFAULT 0, UNIQUE (stream, seq));
         CREATE INDEX events_by_capture ON events (stream, capture_ns, seq);
         CREATE INDEX events_unforwarded ON events (id) WHERE forwarded = 0;",
    )
    .unwrap();
    let rows: Vec<EncodedEvent> = (0..n).map(|i| encoded("raw", i)).collect();
    let mut c = c;
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        let tx = c.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (stream, seq, pts_ns, capture_ns, model, detections, schema)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 2)",
                )
                .unwrap();
            for r in chunk {
                stmt.execute(rusqlite::params![
                    r.stream,
                    r.seq,
                    r.pts_ns,
                    r.capture_ns,
                    r.model,
                    r.detections
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    start.elapsed()
}

fn encoded(stream: &str, i: u64) -> EncodedEvent {
    EncodedEvent::new(&FrameEvent {
        stream: stream.into(),
        seq: i as i64,
        pts_ns: Some((i * 1_000_000_000 / 30) as i64),
        capture_ns: 1_764_000_000_000_000_000 + (i * 33_333_333) as i64,
        model: "bench@1".into(),
        detections: detections(i),
        schema: 2,
        key_basis: None,
        clock: None,
        clips: Vec::new(),
    })
}

/// A raw client's message: subject, `Nats-Msg-Id`, `Videoai-Key`, payload.
type RawMessage = (String, String, String, Vec<u8>);

/// Acknowledgements the pipelined raw client keeps in flight per stream.
const PIPELINE_WINDOW: usize = 256;

/// How the raw client publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Raw {
    /// `Nats-Msg-Id`, one in flight per stream.
    Ordered,
    /// `Nats-Expected-Last-Subject-Sequence` (raftsink's uniqueness rule), one in flight per
    /// stream.
    Checked,
    /// `Nats-Msg-Id`, everything in flight.
    Pipelined,
    /// The headers raftsink sends (the uniqueness rule, `Videoai-Key` and, to servers older
    /// than 2.11, `Nats-Msg-Id`), one in flight per stream: what the rule and the headers cost
    /// the server.
    AllHeaders,
}

/// The raw client: `streams` streams of `n` events, one publish in flight per stream
/// (`pipelined`: all in flight, acks awaited at the end).
fn raw_nats(
    url: &str,
    stream_name: &str,
    (streams, n, round): (usize, u64, usize),
    mode: Raw,
) -> Duration {
    let pipelined = mode == Raw::Pipelined;
    use gstvideoai::eventlog::nats;
    let urls = nats::parse_location(url).unwrap().unwrap();
    nats::block_on(async move {
        let client = nats::connect(&urls, "bench", Duration::from_secs(10), false)
            .await
            .unwrap();
        let with_msg_id = !nats::refuses_in_flight_repeats(&client.server_info().version);
        let js = async_nats::jetstream::new(client);
        nats::ensure_stream(&js, stream_name, 3).await.unwrap();
        let payloads: Vec<Vec<RawMessage>> = (0..streams)
            .map(|s| {
                let id = format!("raw-{s}-{mode:?}-{round}");
                (0..n)
                    .map(|i| {
                        let e = encoded(&id, i);
                        let ev = FrameEvent {
                            stream: id.clone(),
                            seq: i as i64,
                            pts_ns: e.pts_ns,
                            capture_ns: e.capture_ns,
                            model: e.model,
                            detections: detections(i),
                            schema: 2,
                            key_basis: None,
                            clock: None,
                            clips: Vec::new(),
                        };
                        (
                            nats::subject(&id),
                            nats::msg_id(&id, i as i64),
                            nats::key_header(i as i64, ev.capture_ns, ev.pts_ns),
                            serde_json::to_vec(&ev).unwrap(),
                        )
                    })
                    .collect()
            })
            .collect();
        let start = Instant::now();
        let tasks = payloads.into_iter().map(|events| {
            let js = js.clone();
            async move {
                // Pipelined: a window of acknowledgements in flight (async-nats stalls when
                // tens of thousands are outstanding).
                let mut acks = std::collections::VecDeque::new();
                let mut last = 0u64;
                for (subject, id, key, payload) in events {
                    let mut headers = async_nats::HeaderMap::new();
                    if mode == Raw::AllHeaders {
                        if with_msg_id {
                            headers.insert("Nats-Msg-Id", id.as_str());
                        }
                        headers.insert(
                            "Nats-Expected-Last-Subject-Sequence",
                            last.to_string().as_str(),
                        );
                        headers.insert(nats::KEY_HEADER, key.as_str());
                    } else if mode == Raw::Checked {
                        headers.insert(
                            "Nats-Expected-Last-Subject-Sequence",
                            last.to_string().as_str(),
                        );
                    } else {
                        headers.insert("Nats-Msg-Id", id.as_str());
                    }
                    let payload: bytes::Bytes = payload.into();
                    if pipelined {
                        let ack = js
                            .publish_with_headers(subject, headers, payload)
                            .await
                            .unwrap();
                        acks.push_back(ack);
                        if acks.len() >= PIPELINE_WINDOW {
                            acks.pop_front().unwrap().await.unwrap();
                        }
                        continue;
                    }
                    // One in flight: a refusal because the subject is busy (servers from
                    // 2.11, see nats::subject_busy) is sent again, as raftsink does.
                    last = loop {
                        let ack = js
                            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                            .await
                            .unwrap();
                        match ack.await {
                            Ok(a) => break a.sequence,
                            Err(e) if nats::subject_busy(&e) => {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    };
                }
                for a in acks {
                    a.await.unwrap();
                }
            }
        });
        futures_util::future::join_all(tasks).await;
        start.elapsed()
    })
}

/// A bare rumqttc client (MQTT 5) publishing `n` events of `stream` as JSON to its events
/// topic with `qos`, until the broker acknowledged all of them.
fn bare_mqtt(port: u16, stream: &str, n: u64, qos: u8, with_key: bool) -> Duration {
    use rumqttc::v5::{self, mqttbytes::QoS, mqttbytes::v5::Packet};
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let e = encoded(stream, i);
            let ev = FrameEvent {
                stream: e.stream,
                seq: e.seq,
                pts_ns: e.pts_ns,
                capture_ns: e.capture_ns,
                model: e.model,
                detections: detections(i),
                schema: gstvideoai::eventlog::event::SCHEMA_VERSION,
                key_basis: e.key_basis,
                clock: None,
                clips: Vec::new(),
            };
            serde_json::to_vec(&ev).unwrap()
        })
        .collect();
    let topic = format!("videoai/{stream}/events");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut o = v5::MqttOptions::new(format!("bench-{stream}"), "127.0.0.1", port);
        o.set_clean_start(true);
        // From before connecting, as raftsink's backlog is timed from its start.
        let start = Instant::now();
        let (client, mut ev) = v5::AsyncClient::new(o, 1024);
        loop {
            if let v5::Event::Incoming(Packet::ConnAck(_)) = ev.poll().await.unwrap() {
                break;
            }
        }
        let q = if qos == 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        let publisher = tokio::spawn(async move {
            for (i, p) in payloads.into_iter().enumerate() {
                if with_key {
                    // What raftsink sends with each event: its key as a user property.
                    let props = v5::mqttbytes::v5::PublishProperties {
                        user_properties: vec![("idempotency-key".into(), format!("{i}"))],
                        ..Default::default()
                    };
                    client
                        .publish_with_properties(topic.clone(), q, false, p, props)
                        .await
                        .unwrap();
                } else {
                    client.publish(topic.clone(), q, false, p).await.unwrap();
                }
            }
            client
        });
        let mut acked = 0;
        while acked < n {
            match ev.poll().await.unwrap() {
                v5::Event::Incoming(Packet::PubAck(_)) if qos == 1 => acked += 1,
                v5::Event::Incoming(Packet::PubComp(_)) if qos == 2 => acked += 1,
                _ => {}
            }
        }
        let took = start.elapsed();
        let _ = publisher.await;
        took
    })
}

/// Starts a raftsink with MQTT on `log`, whose `stream` holds `n` events not yet delivered, and
/// ends its stream at once: the time from its start (connecting included, as in [`bare_mqtt`])
/// until EOS returns, which is when the broker acknowledged all of them.
fn deliver_backlog(log: &std::path::Path, stream: &str, url: &str, qos: u8, n: u64) -> Duration {
    let sink = gst::ElementFactory::make("raftsink")
        .property("async", false)
        .property("location", log.display().to_string())
        .property("stream-id", stream)
        .property("mqtt-location", url)
        .property("mqtt-qos", qos as u32)
        .property("eos-timeout", 120_000_000_000u64)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut h = started(&sink, stream);
    h.push_event(gst::event::Eos::new());
    let took = start.elapsed();
    let st = sink.property::<gst::Structure>("stats");
    assert_eq!(st.get::<u64>("mqtt-delivered").unwrap(), n, "{st}");
    took
}

/// Rounds of the MQTT part (each is short; the broker's speed varies from run to run).
const MQTT_ROUNDS: u32 = 5;

fn main() {
    common::init();
    let n = env("BENCH_EVENTS", 100_000);
    let per_stream = env("BENCH_NATS_EVENTS", 2000);
    let dir = common::TempDir::new("benchraft");
    // Which parts run (all by default): e.g. `BENCH_PARTS=3` for MQTT alone.
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "123".into());
    let eps = |d: Duration, n: u64| n as f64 / d.as_secs_f64();
    println!(
        "# raftsink benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );

    if parts.contains('1') {
        // 1. Local: three alternating rounds, best of each (this machine's CPU and disk are shared
        // and have slow spells).
        let mut took = Duration::MAX;
        let mut raw = Duration::MAX;
        let mut stats = None;
        for round in 0..3 {
            let db = dir.join(&format!("events-{round}.db"));
            let alone = std::sync::Barrier::new(1);
            let (t, s) = feed(
                &[("location", db.display().to_string())],
                "bench",
                n,
                &alone,
            );
            if t < took {
                took = t;
                stats = Some(s);
            }
            raw = raw.min(raw_sqlite(&dir.join(&format!("raw-{round}.db")), n, 1000));
        }
        let stats = stats.unwrap();
        println!();
        println!(
            "## 1. local backend, {n} events (2 detections each), group commit 20 ms / 1000 events, best of 3"
        );
        println!("| | events/s | commit latency p50 | p99 |");
        println!("|---|---|---|---|");
        println!(
            "| raw rusqlite, transactions of 1000 rows | {:.0} | - | - |",
            eps(raw, n)
        );
        println!(
            "| raftsink (harness push to EOS, durable) | {:.0} | {:.1} ms | {:.1} ms |",
            eps(took, n),
            stats.get::<f64>("commit-latency-p50-ms").unwrap(),
            stats.get::<f64>("commit-latency-p99-ms").unwrap()
        );
        println!(
            "ratio raftsink/raw = {:.2} (goal >= 0.8); {:.0} events/s (goal >= 30000)",
            raw.as_secs_f64() / took.as_secs_f64(),
            eps(took, n)
        );
    }

    if parts.contains('2') {
        // 2. NATS, 3 nodes.
        let server = common::nats::server_binary();
        let version = common::nats::server_version(&server);
        let with_msg_id = !gstvideoai::eventlog::nats::refuses_in_flight_repeats(&version);
        let cluster = NatsCluster::start(3);
        let url = cluster.url();
        let streams = env("BENCH_STREAMS", 8) as usize;
        let total = per_stream * streams as u64;
        // Three alternating rounds, best of each (as above: the machine has slow spells, and a
        // baseline measured minutes apart says little). Each round has streams of its own.
        let (mut ours, mut raw_same, mut raw_checked, mut raw_pipelined, mut raw_headers) = (
            Duration::MAX,
            Duration::MAX,
            Duration::MAX,
            Duration::MAX,
            Duration::MAX,
        );
        let (mut p50, mut p99, mut batches) = (0.0, 0.0, 0);
        for round in 0..3 {
            let ready = std::sync::Arc::new(std::sync::Barrier::new(streams));
            let handles: Vec<_> = (0..streams)
                .map(|s| {
                    let outbox = dir.join(&format!("outbox-{round}-{s}.db"));
                    let (url, ready) = (url.clone(), ready.clone());
                    std::thread::spawn(move || {
                        let props = [
                            ("location", url),
                            ("outbox-location", outbox.display().to_string()),
                            ("eos-timeout", "600000000000".into()),
                        ];
                        feed(&props, &format!("cam-{round}-{s}"), per_stream, &ready)
                    })
                })
                .collect();
            let results: Vec<(Duration, gst::Structure)> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            // The streams started together: the slowest one's time is the run's.
            let took = results.iter().map(|r| r.0).max().unwrap();
            let all_stats: Vec<gst::Structure> = results.into_iter().map(|r| r.1).collect();
            assert!(
                all_stats
                    .iter()
                    .all(|s| s.get::<u64>("pending").unwrap() == 0)
            );
            if took < ours {
                ours = took;
                p99 = all_stats
                    .iter()
                    .map(|s| s.get::<f64>("ack-latency-p99-ms").unwrap())
                    .fold(0.0, f64::max);
                p50 = all_stats
                    .iter()
                    .map(|s| s.get::<f64>("ack-latency-p50-ms").unwrap())
                    .sum::<f64>()
                    / streams as f64;
                batches = all_stats
                    .iter()
                    .map(|s| s.get::<u64>("nats-batches").unwrap())
                    .sum::<u64>();
            }
            let size = (streams, per_stream, round);
            raw_same = raw_same.min(raw_nats(&url, "VIDEOAI_EVENTS", size, Raw::Ordered));
            raw_checked = raw_checked.min(raw_nats(&url, "VIDEOAI_EVENTS", size, Raw::Checked));
            raw_pipelined =
                raw_pipelined.min(raw_nats(&url, "VIDEOAI_EVENTS", size, Raw::Pipelined));
            raw_headers = raw_headers.min(raw_nats(&url, "VIDEOAI_EVENTS", size, Raw::AllHeaders));
        }
        println!();
        println!(
            "## 2. NATS JetStream, 3 nodes on 127.0.0.1 (R3, file), {streams} streams x {per_stream} events"
        );
        println!("{server}: nats-server {version}");
        println!("| | events/s | ack latency p50 | p99 |");
        println!("|---|---|---|---|");
        println!(
            "| raw async-nats, Nats-Msg-Id, one in flight per stream | {:.0} | - | - |",
            eps(raw_same, total)
        );
        println!(
            "| raw async-nats, Nats-Expected-Last-Subject-Sequence, one in flight per stream | {:.0} | - | - |",
            eps(raw_checked, total)
        );
        println!(
            "| raw async-nats, raftsink's headers ({}Expected-Last-Subject-Sequence, Videoai-Key), one in flight per stream | {:.0} | - | - |",
            if with_msg_id { "Msg-Id, " } else { "" },
            eps(raw_headers, total)
        );
        println!(
            "| raw async-nats, fully pipelined (no per-stream order) | {:.0} | - | - |",
            eps(raw_pipelined, total)
        );
        println!(
            "| raftsink: outbox + forwarder, until acknowledged | {:.0} | {p50:.2} ms | {p99:.2} ms |",
            eps(ours, total)
        );
        println!(
            "raftsink's events went in {batches} atomic batches (nats-batches; 0: one event per publish)"
        );
        println!(
            "ratio raftsink/raw (same ordering) = {:.2} (goal >= 0.8)",
            raw_same.as_secs_f64() / ours.as_secs_f64()
        );
        println!(
            "ratio raftsink/raw with raftsink's headers = {:.2}",
            raw_headers.as_secs_f64() / ours.as_secs_f64()
        );
        println!(
            "ratio raftsink/raw fully pipelined (no per-stream order, no uniqueness rule) = {:.2}",
            raw_pipelined.as_secs_f64() / ours.as_secs_f64()
        );
    }

    if parts.contains('3') {
        // 3. MQTT, a local mosquitto.
        let broker = common::mqtt::Mosquitto::start(None);
        let mqtt_n = env("BENCH_MQTT_EVENTS", 20_000);
        println!();
        println!(
            "## 3. MQTT delivery to mosquitto on 127.0.0.1 (MQTT 5), {mqtt_n} events of one stream, until acknowledged, best of {MQTT_ROUNDS}"
        );
        println!(
            "| QoS | bare rumqttc events/s | bare rumqttc + key property | raftsink delivering stored events | ratio to bare (goal >= 0.8) | raftsink storing alone (no MQTT) | raftsink storing and delivering at once | ratio to bare | raftsink ack latency p50 | p99 |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for qos in [1u8, 2] {
            let (mut ours, mut bare, mut keyed) = (Duration::MAX, Duration::MAX, Duration::MAX);
            let (mut backlog_best, mut store_best) = (Duration::MAX, Duration::MAX);
            let (mut p50, mut p99) = (0.0, 0.0);
            for round in 0..MQTT_ROUNDS {
                let stream = format!("mq{qos}-{round}");
                let db = dir.join(&format!("mqtt-{qos}-{round}.db"));
                let alone = std::sync::Barrier::new(1);
                let (t, st) = feed(
                    &[
                        ("location", db.display().to_string()),
                        ("mqtt-location", broker.url()),
                        ("mqtt-qos", qos.to_string()),
                        ("stream-id", stream.clone()),
                        ("eos-timeout", "600000000000".into()),
                    ],
                    &stream,
                    mqtt_n,
                    &alone,
                );
                assert_eq!(st.get::<u64>("mqtt-delivered").unwrap(), mqtt_n, "{st}");
                if t < ours {
                    ours = t;
                    p50 = st.get::<f64>("mqtt-ack-latency-p50-ms").unwrap();
                    p99 = st.get::<f64>("mqtt-ack-latency-p99-ms").unwrap();
                }
                // Delivery alone: a backlog stored first (no MQTT), then a raftsink with MQTT on
                // the same log delivers it.
                let log = dir.join(&format!("mqtt-backlog-{qos}-{round}.db"));
                let backlog = format!("backlog{qos}-{round}");
                let (stored, _) = feed(
                    &[("location", log.display().to_string())],
                    &backlog,
                    mqtt_n,
                    &alone,
                );
                store_best = store_best.min(stored);
                backlog_best =
                    backlog_best.min(deliver_backlog(&log, &backlog, &broker.url(), qos, mqtt_n));
                bare = bare.min(bare_mqtt(
                    broker.port,
                    &format!("bare{qos}-{round}"),
                    mqtt_n,
                    qos,
                    false,
                ));
                keyed = keyed.min(bare_mqtt(
                    broker.port,
                    &format!("keyed{qos}-{round}"),
                    mqtt_n,
                    qos,
                    true,
                ));
            }
            println!(
                "| {qos} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {p50:.2} ms | {p99:.2} ms |",
                eps(bare, mqtt_n),
                eps(keyed, mqtt_n),
                eps(backlog_best, mqtt_n),
                bare.as_secs_f64() / backlog_best.as_secs_f64(),
                eps(store_best, mqtt_n),
                eps(ours, mqtt_n),
                bare.as_secs_f64() / ours.as_secs_f64(),
            );
        }
        println!(
            "The goal compares like with like: events already in the log, published until acknowledged, against a bare client publishing events it holds. Storing and delivering at once also makes every event durable first, on the same cores as the broker: it cannot beat storing alone and delivering alone one after the other."
        );
    }
}
