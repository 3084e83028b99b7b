// SPDX-License-Identifier: MPL-2.0
//! raftsink's MQTT delivery against a real mosquitto on 127.0.0.1: every stored event reaches a
//! subscriber, counted by its key; a broker restarted mid-run loses nothing; the retained counts
//! equal `videoai-events counts`; the last will says `offline` when the process is killed;
//! credentials never show; bad credentials and locations fail at start.

use crate::common;
use crate::common::mqtt::{Mosquitto, Received, Subscriber};
use crate::events_tool;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gst::prelude::*;
use gstvideoai::eventlog::event::{Detection, FrameEvent};
use gstvideoai::formats::detection;

const PERIOD_NS: u64 = 40_000_000;
pub(crate) const FRAMES: u64 = 90;
const WAIT: Duration = Duration::from_secs(60);

/// Frame `i` of six people walking across the line `door` (y = 240): three down, three up.
pub(crate) fn walkers(i: u64) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(1).unwrap();
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(i * PERIOD_NS));
        b.set_duration(gst::ClockTime::from_nseconds(PERIOD_NS));
        for k in 0..6u32 {
            let feet = if k % 2 == 0 {
                150 + 2 * i as u32
            } else {
                330 - 2 * i as u32
            };
            let d = Detection::new("person", 0, 0.9, (20 + 100 * k, feet - 80, 40, 80));
            detection::attach(b, &d, "synthetic@0");
        }
        detection::attach_inference(b, "synthetic@0", true, 6);
    }
    b
}

/// `appsrc ! objecttracker lines=door ! raftsink <props>` into `db` (stream `cam`).
pub(crate) fn pipeline(db: &Path, props: &str) -> (gst::Pipeline, gst_app::AppSrc) {
    common::from_appsrc(
        common::TRACKER_CAPS,
        &format!(
            "objecttracker lines=\"door:0,240,640,240\" ! raftsink name=sink location=\"{}\" stream-id=cam {props}",
            db.display()
        ),
    )
}

/// Runs the walkers into `db` with `props` to EOS (no error); raftsink's stats and the warnings.
pub(crate) fn walk(db: &Path, props: &str) -> (gst::Structure, Vec<String>) {
    let (p, src) = pipeline(db, props);
    for i in 0..FRAMES {
        src.push_buffer(walkers(i)).unwrap();
    }
    src.end_of_stream().unwrap();
    let sink = p.by_name("sink").unwrap();
    let out = common::run(&p, WAIT);
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    (sink.property::<gst::Structure>("stats"), out.warnings)
}

fn run_walkers(db: &Path, props: &str) -> gst::Structure {
    let (stats, warnings) = walk(db, props);
    assert!(warnings.is_empty(), "{warnings:?}");
    stats
}

/// Event messages by key: how many times each arrived.
fn events_by_key(got: &[Received]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for m in got.iter().filter(|m| m.topic == "videoai/cam/events") {
        let ev: FrameEvent = serde_json::from_str(&m.payload).expect("an event as JSON");
        let key = format!("{}/{}", ev.stream, ev.seq);
        *n.entry(key).or_insert(0) += 1;
    }
    n
}

pub(crate) fn stored_keys(db: &Path) -> Vec<String> {
    gstvideoai::eventlog::store::EventStore::open_for_reading(db)
        .unwrap()
        .events(Some("cam"))
        .unwrap()
        .iter()
        .map(|e| format!("{}/{}", e.stream, e.seq))
        .collect()
}

/// The retained messages under `filter`, as a new subscriber gets them.
fn retained(port: u16, filter: &str, want: usize) -> Vec<Received> {
    let sub = Subscriber::start(port, filter, None);
    sub.wait_for(Duration::from_secs(5), |g| g.len() >= want)
}

fn counts_of(db: &Path) -> serde_json::Value {
    // videoai-events counts, one line's directions as {direction: count}.
    let rows = events_tool(&["counts", &db.display().to_string()]);
    let mut counts = serde_json::Map::new();
    for line in String::from_utf8_lossy(&rows.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["line"] == "door" {
            counts.insert(r["direction"].as_str().unwrap().into(), r["count"].clone());
        }
    }
    serde_json::Value::Object(counts)
}

#[test]
fn every_event_reaches_a_subscriber_once_with_its_key_and_the_counts_are_retained() {
    let broker = Mosquitto::start(None);
    let sub = Subscriber::start(broker.port, "videoai/#", None);
    let dir = common::TempDir::new("mqtt-once");
    let db = dir.join("events.db");
    let stats = run_walkers(&db, &format!("mqtt-location={} mqtt-qos=1", broker.url()));
    assert_eq!(
        stats.get::<u64>("mqtt-delivered").unwrap(),
        FRAMES,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("mqtt-pending").unwrap(), 0, "{stats}");
    let got = sub.wait_for(WAIT, |g| {
        events_by_key(g).len() as u64 >= FRAMES
            && g.iter()
                .any(|m| m.topic == "videoai/cam/status" && m.payload == "offline")
    });
    let by_key = events_by_key(&got);
    let mut keys: Vec<String> = by_key.keys().cloned().collect();
    keys.sort_by_key(|k| k[4..].parse::<i64>().unwrap());
    assert_eq!(keys, stored_keys(&db), "every stored event arrived");
    let repeats: usize = by_key.values().map(|n| n - 1).sum();
    assert_eq!(repeats, 0, "no repeats without a fault: {by_key:?}");
    // The key rides along as an MQTT 5 user property too.
    for m in got.iter().filter(|m| m.topic == "videoai/cam/events") {
        let ev: FrameEvent = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(m.key.as_deref(), Some(format!("cam/{}", ev.seq).as_str()));
    }
    // One message per crossing, three each way.
    let crossings: Vec<serde_json::Value> = got
        .iter()
        .filter(|m| m.topic == "videoai/cam/crossings/door")
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .collect();
    assert_eq!(crossings.len(), 6, "{crossings:?}");
    assert_eq!(
        crossings.iter().filter(|c| c["direction"] == "in").count(),
        3
    );
    // The retained counts equal videoai-events counts.
    let counts = retained(broker.port, "videoai/cam/counts/#", 1);
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert!(counts[0].retain);
    let v: serde_json::Value = serde_json::from_str(&counts[0].payload).unwrap();
    assert_eq!(v["counts"], counts_of(&db), "{v}");
    assert_eq!(v["counts"]["in"], 3);
    // Status: online while running, offline (retained) after the stop.
    let status = retained(broker.port, "videoai/cam/status", 1);
    assert_eq!(status[0].payload, "offline");

    // The same frames again (a replay): nothing new is stored, nothing is published again.
    let before = sub.got.lock().unwrap().len();
    run_walkers(&db, &format!("mqtt-location={}", broker.url()));
    std::thread::sleep(Duration::from_millis(500));
    let again = sub.got.lock().unwrap()[before..].to_vec();
    assert!(
        again.iter().all(|m| m.topic == "videoai/cam/status"),
        "a replay publishes only the status: {again:?}"
    );
}

#[test]
fn a_broker_down_at_eos_keeps_the_events_and_the_next_run_publishes_them() {
    let mut broker = Mosquitto::start(None);
    let sub = Subscriber::start(broker.port, "videoai/cam/events", None);
    broker.stop();
    let dir = common::TempDir::new("mqtt-down");
    let db = dir.join("events.db");
    let (stats, warnings) = walk(
        &db,
        &format!("mqtt-location={} eos-timeout=1000000000", broker.url()),
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!(
            "{FRAMES} events not acknowledged by the MQTT broker"
        )),
        "{warnings:?}"
    );
    assert_eq!(stats.get::<u64>("mqtt-pending").unwrap(), FRAMES, "{stats}");
    assert_eq!(stats.get::<u64>("mqtt-delivered").unwrap(), 0, "{stats}");
    let text = String::from_utf8_lossy(&events_tool(&["stats", &db.display().to_string()]).stdout)
        .to_string();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .ends_with(&format!("\t{FRAMES}")),
        "{text}"
    );
    // The broker is back: the next run (the same frames, nothing new stored) publishes them.
    broker.restart();
    let stats = run_walkers(&db, &format!("mqtt-location={}", broker.url()));
    assert_eq!(
        stats.get::<u64>("mqtt-delivered").unwrap(),
        FRAMES,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("mqtt-pending").unwrap(), 0, "{stats}");
    let got = sub.wait_for(WAIT, |g| events_by_key(g).len() as u64 >= FRAMES);
    let mut keys: Vec<String> = events_by_key(&got).into_keys().collect();
    keys.sort_by_key(|k| k[4..].parse::<i64>().unwrap());
    assert_eq!(keys, stored_keys(&db));
}

#[test]
fn qos2_over_mqtt_3_1_1_delivers_each_event_exactly_once() {
    let broker = Mosquitto::start(None);
    let sub = Subscriber::start(broker.port, "videoai/+/events", None);
    let dir = common::TempDir::new("mqtt-qos2");
    let db = dir.join("events.db");
    let stats = run_walkers(
        &db,
        &format!(
            "mqtt-location={} mqtt-qos=2 mqtt-protocol=3.1.1",
            broker.url()
        ),
    );
    assert_eq!(
        stats.get::<u64>("mqtt-delivered").unwrap(),
        FRAMES,
        "{stats}"
    );
    let got = sub.wait_for(WAIT, |g| g.len() as u64 >= FRAMES);
    std::thread::sleep(Duration::from_millis(300));
    let got_all = sub.got.lock().unwrap().clone();
    assert_eq!(got.len() as u64, FRAMES);
    assert_eq!(got_all.len() as u64, FRAMES, "no repeats with QoS 2");
    assert!(
        got_all.iter().all(|m| m.key.is_none()),
        "no user properties in 3.1.1"
    );
    assert_eq!(events_by_key(&got_all).len() as u64, FRAMES);
}

#[test]
fn a_broker_restarted_twice_during_a_run_loses_no_event() {
    let mut broker = Mosquitto::start(None);
    let sub = Subscriber::start(broker.port, "videoai/cam/events", None);
    let dir = common::TempDir::new("mqtt-restart");
    let db = dir.join("events.db");
    let (p, src) = pipeline(&db, &format!("mqtt-location={}", broker.url()));
    let sink = p.by_name("sink").unwrap();
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let delivered = || {
        sink.property::<gst::Structure>("stats")
            .get::<u64>("mqtt-delivered")
            .unwrap()
    };
    let third = FRAMES / 3;
    for phase in 0..3u64 {
        for i in phase * third..(phase + 1) * third {
            src.push_buffer(walkers(i)).unwrap();
        }
        // Wait until some of this phase reached the broker, then restart it under load.
        let t = std::time::Instant::now();
        while delivered() < phase * third + 1 && t.elapsed() < WAIT {
            std::thread::sleep(Duration::from_millis(10));
        }
        if phase < 2 {
            broker.restart();
        }
    }
    src.end_of_stream().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS within a minute");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    let stats = sink.property::<gst::Structure>("stats");
    p.set_state(gst::State::Null).unwrap();
    assert!(stats.get::<u64>("mqtt-retries").unwrap() >= 2, "{stats}");
    assert_eq!(stats.get::<u64>("mqtt-pending").unwrap(), 0, "{stats}");
    let got = sub.wait_for(WAIT, |g| events_by_key(g).len() as u64 >= FRAMES);
    let by_key = events_by_key(&got);
    let mut keys: Vec<String> = by_key.keys().cloned().collect();
    keys.sort_by_key(|k| k[4..].parse::<i64>().unwrap());
    assert_eq!(keys, stored_keys(&db), "every event arrived");
    let repeats: usize = by_key.values().map(|n| n - 1).sum();
    eprintln!(
        "broker restarted twice: {} events, {repeats} repeats (same key), {} sessions",
        by_key.len(),
        stats.get::<u64>("mqtt-retries").unwrap() + 1
    );
    for m in &got {
        let ev: FrameEvent = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(m.key.as_deref(), Some(format!("cam/{}", ev.seq).as_str()));
    }
}

/// The plugin as gst-launch-1.0 loads it.
pub(crate) fn plugin_dir() -> std::path::PathBuf {
    let dir = common::root().join("target/release");
    assert!(
        dir.join("libgstvideoai.so").is_file(),
        "run cargo build --release first"
    );
    dir
}

#[test]
fn sigkill_of_the_pipeline_publishes_offline_through_the_last_will() {
    let broker = Mosquitto::start(None);
    let sub = Subscriber::start(broker.port, "videoai/cam/status", None);
    let dir = common::TempDir::new("mqtt-will");
    let mut child = std::process::Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .args([
            "videotestsrc",
            "is-live=true",
            "!",
            "video/x-raw,width=64,height=64,framerate=10/1",
            "!",
            "raftsink",
            &format!("location={}", dir.join("events.db").display()),
            &format!("mqtt-location={}", broker.url()),
            "deliver-empty=true",
            "stream-id=cam",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 runs");
    let online = sub.wait_for(WAIT, |g| g.iter().any(|m| m.payload == "online"));
    assert!(online.iter().any(|m| m.payload == "online"), "{online:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let got = sub.wait_for(Duration::from_secs(20), |g| {
        g.last().is_some_and(|m| m.payload == "offline")
    });
    assert_eq!(
        got.last().map(|m| m.payload.as_str()),
        Some("offline"),
        "{got:?}"
    );
}

#[test]
fn credentials_come_from_a_file_and_never_show_even_at_debug_level_6() {
    let password = "pw-9f3c1e77-never-shown";
    let broker = Mosquitto::start(Some(("cam", password)));
    let sub = Subscriber::start(broker.port, "videoai/cam/events", Some(("cam", password)));
    let dir = common::TempDir::new("mqtt-secret");
    let cred = dir.join("mqtt.cred");
    std::fs::write(&cred, format!("username=cam\npassword={password}\n")).unwrap();
    let out = std::process::Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_DEBUG", "*:6")
        .env("GST_DEBUG_NO_COLOR", "1")
        .args([
            "-e",
            "videotestsrc",
            "num-buffers=10",
            "!",
            "video/x-raw,width=64,height=64,framerate=25/1",
            "!",
            "raftsink",
            &format!("location={}", dir.join("events.db").display()),
            &format!("mqtt-location={}", broker.url()),
            &format!("mqtt-credentials-file={}", cred.display()),
            "deliver-empty=true",
            "stream-id=cam",
        ])
        .output()
        .expect("gst-launch-1.0 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.len() > 100_000,
        "debug output was produced ({} bytes)",
        text.len()
    );
    assert!(
        !text.contains(password),
        "the password appeared in the output"
    );
    let got = sub.wait_for(WAIT, |g| g.len() >= 10);
    assert_eq!(events_by_key(&got).len(), 10, "{got:?}");
}

#[test]
fn mqtts_with_the_brokers_ca_delivers_and_without_it_fails_at_start() {
    let broker = Mosquitto::start_with(None, true);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let dir = common::TempDir::new("mqtts");
    let db = dir.join("events.db");
    let stats = run_walkers(
        &db,
        &format!(
            "mqtt-location={url} mqtt-ca-file=\"{}\"",
            broker.ca_file().display()
        ),
    );
    assert_eq!(
        stats.get::<u64>("mqtt-delivered").unwrap(),
        FRAMES,
        "{stats}"
    );
    // The system's store does not know the test CA: a clear error at start.
    let p = common::parse(&format!(
        "videotestsrc num-buffers=3 ! raftsink location=\"{}\" mqtt-location={url}",
        dir.join("other.db").display()
    ));
    let out = common::run(&p, WAIT);
    assert!(!out.eos);
    assert!(out.first_error().contains("TLS"), "{}", out.first_error());
}

#[test]
fn refused_credentials_and_malformed_locations_are_errors_at_start() {
    common::init();
    let broker = Mosquitto::start(Some(("cam", "right")));
    let dir = common::TempDir::new("mqtt-refused");
    let cred = dir.join("wrong.cred");
    std::fs::write(&cred, "username=cam\npassword=wrong-secret-4711\n").unwrap();
    let cases = [
        (
            format!(
                "mqtt-location={} mqtt-credentials-file=\"{}\"",
                broker.url(),
                cred.display()
            ),
            "the broker refused",
        ),
        (format!("mqtt-location={}", broker.url()), "refused"),
        (
            "mqtt-location=mqtt//127.0.0.1".to_string(),
            "expected mqtt://host[:port]",
        ),
        (
            "mqtt-location=mqtt://cam:wrong-secret-4711@127.0.0.1".to_string(),
            "credentials in it",
        ),
        (
            format!("mqtt-location={} mqtt-protocol=4.0", broker.url()),
            "expected 5 or 3.1.1",
        ),
        (
            format!(
                "mqtt-location={} mqtt-credentials-file=/nonexistent/cred",
                broker.url()
            ),
            "/nonexistent/cred",
        ),
    ];
    for (props, expected) in cases {
        let p = common::parse(&format!(
            "videotestsrc num-buffers=3 ! raftsink location=\"{}\" {props}",
            dir.join("events.db").display()
        ));
        let out = common::run(&p, WAIT);
        assert!(!out.eos, "{props}: {out:?}");
        let e = out.first_error();
        assert!(e.contains(expected), "{props}: {e}");
        assert!(!e.contains("wrong-secret-4711"), "{props}: {e}");
    }
}

#[test]
fn a_broker_that_is_down_is_retried_with_backoff_not_at_every_commit() {
    // Commits every 20 ms nudge the delivery; reconnecting at each would hammer the broker.
    common::init();
    let port = common::free_port();
    let dir = common::TempDir::new("mqtt-backoff");
    let p = common::parse(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=16,height=16,framerate=50/1 \
         ! raftsink name=sink location=\"{}\" stream-id=cam mqtt-location=mqtt://127.0.0.1:{port} deliver-empty=true",
        dir.join("events.db").display()
    ));
    p.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let stats = p
        .by_name("sink")
        .unwrap()
        .property::<gst::Structure>("stats");
    p.set_state(gst::State::Null).unwrap();
    let retries = stats.get::<u64>("mqtt-retries").unwrap();
    // 0.1, 0.2, 0.4, 0.8, 1.6 s (±20 %): at most 6 attempts in 3 s.
    assert!(
        (2..=7).contains(&retries),
        "{retries} attempts in 3 s: {stats}"
    );
    assert!(stats.get::<u64>("written").unwrap() > 50, "{stats}");
    assert!(stats.get::<u64>("mqtt-pending").unwrap() > 50, "{stats}");
}

#[test]
fn an_event_larger_than_10_kib_goes_over_mqtt_3_1_1_too() {
    // rumqttc's own limit for 3.1.1 is 10 KiB: such an event once ended every session.
    let broker = Mosquitto::start(None);
    let sub = Subscriber::start(broker.port, "videoai/big/events", None);
    let dir = common::TempDir::new("mqtt-big");
    let (p, src) = common::from_appsrc(
        common::TRACKER_CAPS,
        &format!(
            "raftsink name=sink location=\"{}\" stream-id=big mqtt-location={} mqtt-protocol=3.1.1",
            dir.join("events.db").display(),
            broker.url()
        ),
    );
    for i in 0..3u64 {
        let mut b = gst::Buffer::with_size(1).unwrap();
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * PERIOD_NS));
            for k in 0..300u32 {
                let d = Detection::new("person", 0, 0.9, (k, k, 10, 10));
                detection::attach(b, &d, "synthetic@0");
            }
            detection::attach_inference(b, "synthetic@0", true, 300);
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let sink = p.by_name("sink").unwrap();
    let out = common::run(&p, WAIT);
    assert!(
        out.eos && out.errors.is_empty() && out.warnings.is_empty(),
        "{out:?}"
    );
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("mqtt-delivered").unwrap(), 3, "{stats}");
    let got = sub.wait_for(WAIT, |g| g.len() >= 3);
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|m| m.payload.len() > 10 * 1024),
        "{}",
        got[0].payload.len()
    );
}

#[test]
fn a_frame_with_only_a_clip_record_is_delivered_like_one_with_detections() {
    // cliprecorder records a deleted or failed clip with the next frame, which often has no
    // detection: the broker gets it all the same (deliver-empty stays false).
    let broker = Mosquitto::start(None);
    let sub = Subscriber::start(broker.port, "videoai/rec/events", None);
    let dir = common::TempDir::new("mqtt-clip-record");
    let (p, src) = common::from_appsrc(
        common::TRACKER_CAPS,
        &format!(
            "raftsink name=sink location=\"{}\" stream-id=rec mqtt-location={}",
            dir.join("events.db").display(),
            broker.url()
        ),
    );
    for i in 0..3u64 {
        let mut b = gst::Buffer::with_size(1).unwrap();
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * PERIOD_NS));
            match i {
                0 => detection::attach(
                    b,
                    &Detection::new("person", 0, 0.9, (10, 10, 20, 40)),
                    "synthetic@0",
                ),
                1 => detection::add_clip_records(
                    b,
                    &[gstvideoai::eventlog::event::ClipRecord {
                        kind: "deleted".into(),
                        path: "/clips/rec-1.mp4".into(),
                        reason: "retention max-age".into(),
                        ..Default::default()
                    }],
                ),
                // Nothing on it: not delivered.
                _ => {}
            }
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let out = common::run(&p, WAIT);
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let got = sub.wait_for(Duration::from_secs(5), |g| g.len() >= 3);
    assert_eq!(got.len(), 2, "{got:?}");
    let records: Vec<FrameEvent> = got
        .iter()
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .filter(|e: &FrameEvent| !e.clips.is_empty())
        .collect();
    assert_eq!(records.len(), 1, "{got:?}");
    assert_eq!(records[0].clips[0].path, "/clips/rec-1.mp4");
}
