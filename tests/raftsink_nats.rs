// SPDX-License-Identifier: MPL-2.0
//! raftsink on NATS JetStream (real `nats-server` processes on 127.0.0.1, started and stopped by
//! the tests): exactly once and in per-stream order through a leader kill and a whole-cluster
//! outage; replays; reading back with videoai-events.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use gst::prelude::*;
use gstvideoai::event::FrameEvent;

/// A pipeline writing `frames` live frames (at `fps`) of stream `id` to `url` through its own
/// outbox.
fn writer(url: &str, dir: &common::TempDir, id: &str, frames: u32, fps: u32) -> gst::Pipeline {
    common::parse(&format!(
        "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=32,height=24,framerate={fps}/1 \
         ! raftsink name=sink location=\"{url}\" outbox-location=\"{}\" stream-id={id} eos-timeout=90000",
        dir.join(&format!("outbox-{id}.db")).display()
    ))
}

/// Plays the pipelines together until each reaches EOS; `during` runs meanwhile.
fn play_all(pipelines: &[gst::Pipeline], during: impl FnOnce()) {
    for p in pipelines {
        p.set_state(gst::State::Playing).unwrap();
    }
    during();
    for p in pipelines {
        let bus = p.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(120),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS within 120 s");
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("{}: {:?}", e.error(), e.debug());
        }
        let stats = p
            .by_name("sink")
            .unwrap()
            .property::<gst::Structure>("stats");
        assert_eq!(
            stats.get::<u64>("pending").unwrap(),
            0,
            "outbox drained: {stats}"
        );
        p.set_state(gst::State::Null).unwrap();
    }
}

/// Every stream has exactly the seqs it was given, once each, and in order in the JetStream
/// stream (per-stream order).
fn check_exactly_once_in_order(events: &[FrameEvent], expected: &BTreeMap<String, usize>) {
    let mut per: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for e in events {
        per.entry(e.stream.as_str()).or_default().push(e.seq);
    }
    for (id, n) in expected {
        let seqs = per
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no events of {id}"));
        assert_eq!(
            seqs.len(),
            *n,
            "{id}: {} events in NATS, {n} frames written",
            seqs.len()
        );
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{id}: out of order or duplicated: {seqs:?}"
        );
    }
    assert_eq!(per.len(), expected.len(), "{:?}", per.keys());
}

#[test]
fn single_server_round_trip_and_replay() {
    common::init();
    let nats = NatsCluster::start(1);
    let dir = common::TempDir::new("nats1");
    let clip = dir.join("clip.mp4");
    common::make_clip(&clip, 64, 48, 20);
    let run = || {
        let p = common::parse(&format!(
            "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 ! raftsink name=sink location=\"{}\" outbox-location=\"{}\"",
            clip.display(),
            nats.url(),
            dir.join("outbox.db").display()
        ));
        let sink = p.by_name("sink").unwrap();
        let out = common::run(&p, Duration::from_secs(60));
        assert!(out.eos && out.errors.is_empty(), "{out:?}");
        sink.property::<gst::Structure>("stats")
    };
    let first = run();
    assert_eq!(first.get::<u64>("forwarded").unwrap(), 20, "{first}");
    // The same input again: nothing new, locally or in NATS.
    let second = run();
    assert_eq!(second.get::<u64>("duplicates").unwrap(), 20, "{second}");
    let events = nats.read_all("VIDEOAI_EVENTS");
    assert_eq!(events.len(), 20);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    // A fresh outbox replaying the same file: the high-water mark in NATS keeps it exactly once
    // (no reliance on the duplicate window).
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 ! raftsink name=sink location=\"{}\" outbox-location=\"{}\"",
        clip.display(),
        nats.url(),
        dir.join("outbox-new.db").display()
    ));
    let sink = p.by_name("sink").unwrap();
    assert!(common::run(&p, Duration::from_secs(60)).eos);
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(
        (
            stats.get::<u64>("forwarded").unwrap(),
            stats.get::<u64>("already-in-nats").unwrap()
        ),
        (0, 20),
        "{stats}"
    );
    assert_eq!(nats.read_all("VIDEOAI_EVENTS").len(), 20);
    // videoai-events reads NATS too, in timeline order.
    let out = Command::new(env!("CARGO_BIN_EXE_videoai-events"))
        .args(["dump", &nats.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped: Vec<FrameEvent> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dumped, events);
}

#[test]
fn leader_killed_while_four_pipelines_write() {
    common::init();
    let mut nats = NatsCluster::start(3);
    let dir = common::TempDir::new("natsleader");
    let (frames, fps) = (150u32, 50u32);
    let ids: Vec<String> = (0..4).map(|i| format!("cam-{i}")).collect();
    let pipelines: Vec<gst::Pipeline> = ids
        .iter()
        .map(|id| writer(&nats.url(), &dir, id, frames, fps))
        .collect();
    let mut killed = None;
    play_all(&pipelines, || {
        // Once the stream exists and events flow, kill its leader.
        let deadline = Instant::now() + Duration::from_secs(10);
        while killed.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            if let Some(leader) = nats.leader_of("VIDEOAI_EVENTS") {
                nats.kill(leader);
                killed = Some(leader);
            }
        }
    });
    assert!(killed.is_some(), "the stream's leader was found and killed");
    assert_eq!(
        nats.replicas_of("VIDEOAI_EVENTS"),
        3,
        "three servers: three replicas"
    );
    let events = nats.read_all("VIDEOAI_EVENTS");
    let expected: BTreeMap<String, usize> =
        ids.iter().map(|id| (id.clone(), frames as usize)).collect();
    check_exactly_once_in_order(&events, &expected);
}

#[test]
fn whole_cluster_down_for_ten_seconds() {
    common::init();
    let mut nats = NatsCluster::start(3);
    let dir = common::TempDir::new("natsdown");
    let (frames, fps) = (150u32, 50u32);
    let ids: Vec<String> = (0..4).map(|i| format!("cam-{i}")).collect();
    let pipelines: Vec<gst::Pipeline> = ids
        .iter()
        .map(|id| writer(&nats.url(), &dir, id, frames, fps))
        .collect();
    play_all(&pipelines, || {
        std::thread::sleep(Duration::from_millis(800));
        nats.stop_all();
        // The pipelines go on: events are committed to their outboxes.
        std::thread::sleep(Duration::from_secs(10));
        for p in &pipelines {
            let stats = p
                .by_name("sink")
                .unwrap()
                .property::<gst::Structure>("stats");
            assert!(stats.get::<u64>("written").unwrap() > 0, "{stats}");
        }
        nats.restart_stopped();
    });
    let events = nats.read_all("VIDEOAI_EVENTS");
    let expected: BTreeMap<String, usize> =
        ids.iter().map(|id| (id.clone(), frames as usize)).collect();
    check_exactly_once_in_order(&events, &expected);
}

#[test]
fn unreachable_nats_keeps_events_in_the_outbox() {
    // No server at all: EOS gives up after eos-timeout with a warning, and the events wait in
    // the outbox (the next run with a server forwards them).
    common::init();
    let dir = common::TempDir::new("natsnone");
    let outbox = dir.join("outbox.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let p = common::parse(&format!(
        "videotestsrc num-buffers=10 ! video/x-raw,framerate=25/1 ! raftsink location=\"{url}\" outbox-location=\"{}\" eos-timeout=1500 stream-id=cam",
        outbox.display()
    ));
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.eos, "{out:?}");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("not acknowledged by NATS") && w.contains("outbox")),
        "{:?}",
        out.warnings
    );
    let store = gstvideoai::event_store::EventStore::open_for_reading(&outbox).unwrap();
    assert_eq!(
        (store.count(None).unwrap(), store.pending().unwrap()),
        (10, 10)
    );
}
