// SPDX-License-Identifier: MPL-2.0
//! raftsink and videoai-events: events stored once per frame, durable at EOS, read back in
//! order; the demo pipeline file end to end.

use crate::common;
use crate::events_tool;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gst::prelude::*;
use gstvideoai::eventlog::event::{Detection, FrameEvent};
use gstvideoai::eventlog::store::EventStore;
use gstvideoai::formats::detection;

fn det(i: u32) -> Detection {
    Detection::new(
        format!("thing{}", i % 3),
        (i % 3) as i32,
        0.5 + i as f64 / 100.0,
        (10 * i, 20 + i, 30, 40 + i),
    )
}

/// Pushes `frames` frames (frame i carries i % 3 detections) into a raftsink harness.
fn push_frames(location: &Path, stream: &str, frames: u32) -> gst::Structure {
    common::init();
    let sink = gst::ElementFactory::make("raftsink")
        .property("location", location.display().to_string())
        // A harness has no pipeline to complete the asynchronous preroll.
        .property("async", false)
        .build()
        .unwrap();
    // The harness starts the element (READY -> PLAYING) right away. Like a file, it is not
    // live: sequence numbers come from the PTS.
    let mut h = gst_check::Harness::with_element(&sink, Some("sink"), None);
    h.set_live(false);
    assert!(h.push_event(gst::event::StreamStart::new(stream)));
    assert!(
        h.push_event(gst::event::Caps::new(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .field("width", 64)
                .field("height", 64)
                .field("framerate", gst::Fraction::new(25, 1))
                .build()
        ))
    );
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    for i in 0..frames {
        let mut buf = gst::Buffer::with_size(64 * 64 * 3).unwrap();
        {
            let b = buf.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(40 * i as u64));
            b.set_duration(gst::ClockTime::from_mseconds(40));
            for k in 0..(i % 3) {
                detection::attach(b, &det(i + k), "synthetic@1");
            }
            detection::attach_inference(b, "synthetic@1", true, i % 3);
        }
        h.push(buf).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    h.element().unwrap().property::<gst::Structure>("stats")
}

#[test]
fn harness_events_round_trip_exactly() {
    let dir = common::TempDir::new("roundtrip");
    let db = dir.join("events.db");
    let stats = push_frames(&db, "cam-1", 10);
    assert_eq!(stats.get::<u64>("written").unwrap(), 10, "{stats}");
    // Durable at EOS: a separate reader sees everything while the sink still exists.
    let events = EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    assert_eq!(events.len(), 10);
    for (i, ev) in events.iter().enumerate() {
        let i = i as u32;
        let expected: Vec<Detection> = (0..(i % 3)).map(|k| det(i + k)).collect();
        assert_eq!(
            (ev.stream.as_str(), ev.seq, ev.pts_ns, ev.model.as_str()),
            (
                "cam-1",
                i as i64,
                Some(40_000_000 * i as i64),
                "synthetic@1"
            )
        );
        assert_eq!(ev.detections, expected, "frame {i}");
    }
    // Capture times follow the frames' spacing (running time mapped to the wall clock).
    for w in events.windows(2) {
        assert_eq!(
            w[1].capture_ns - w[0].capture_ns,
            40_000_000,
            "{:?}",
            (w[0].seq, w[1].seq)
        );
    }
}

#[test]
fn same_input_twice_is_stored_once() {
    let dir = common::TempDir::new("idempotent");
    let db = dir.join("events.db");
    push_frames(&db, "cam-1", 8);
    let stats = push_frames(&db, "cam-1", 12);
    assert_eq!(
        (
            stats.get::<u64>("written").unwrap(),
            stats.get::<u64>("duplicates").unwrap()
        ),
        (4, 8),
        "{stats}"
    );
    push_frames(&db, "cam-2", 5);
    let store = EventStore::open_for_reading(&db).unwrap();
    assert_eq!(store.count(Some("cam-1")).unwrap(), 12);
    assert_eq!(store.count(Some("cam-2")).unwrap(), 5);
    let seqs: Vec<i64> = store
        .events(Some("cam-1"))
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..12).collect::<Vec<_>>());
}

#[test]
fn unwritable_location_is_a_clear_error() {
    common::init();
    let p = common::parse(
        "videotestsrc num-buffers=2 ! raftsink location=/nonexistent-dir/sub/events.db",
    );
    let out = common::run(&p, Duration::from_secs(30));
    let e = out.first_error();
    assert!(
        e.contains("/nonexistent-dir/sub/events.db") && e.contains("writable"),
        "{e}"
    );
}

#[test]
fn no_location_is_a_clear_error() {
    common::init();
    let p = common::parse("videotestsrc num-buffers=2 ! raftsink");
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.first_error().contains("no location set"), "{out:?}");
}

/// The demo pipeline file on a short clip, then `videoai-events dump`: one JSON line per frame,
/// ordered, with boxes on the drawn text; a second run adds nothing.
#[test]
fn demo_pipeline_file_end_to_end() {
    common::init();
    let dir = common::TempDir::new("demo");
    let clip = dir.join("clip.mp4");
    let db = dir.join("events.db");
    let (w, h, frames) = (640, 480, 12);
    common::make_clip(&clip, w, h, frames);
    let vars = HashMap::from([
        ("INPUT", clip.display().to_string()),
        ("MODEL", common::model().display().to_string()),
        ("LABELS", common::labels().display().to_string()),
        ("EVENTS", db.display().to_string()),
    ]);
    let desc = common::pipeline_file("demo-cpu.pipeline", &vars);
    for run in 0..2 {
        let out = common::run(&common::parse(&desc), Duration::from_secs(120));
        assert!(out.eos && out.errors.is_empty(), "run {run}: {out:?}");
    }

    let out = events_tool(&["dump", &db.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    let events: Vec<FrameEvent> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(
        events.len(),
        frames as usize,
        "one event per frame, stored once"
    );
    let places = common::text_places(w, h);
    let s = w as f64 / 640.0;
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.seq, i as i64);
        assert_eq!(ev.pts_ns, Some(i as i64 * 1_000_000_000 / 30));
        assert!(ev.model.starts_with("common_det@"), "{ev:?}");
        assert!(ev.detections.len() >= places.len(), "{ev:?}");
        for d in &ev.detections {
            let b = (d.x as f64, d.y as f64, d.w as f64, d.h as f64);
            let on_text = places.iter().any(|p| {
                let m = 12.0 * s;
                common::covered(b, (p.ink.0 - m, p.ink.1 - m, p.ink.2 + m, p.ink.3 + m)) >= 0.9
            });
            assert!(on_text, "frame {i}: {d:?} not on {places:?}");
        }
    }
    assert!(
        events
            .windows(2)
            .all(|w| w[0].capture_ns <= w[1].capture_ns)
    );

    // --stream filters; summary names the places.
    let stream = events[0].stream.clone();
    let one = events_tool(&["dump", &db.display().to_string(), "--stream", &stream]);
    assert_eq!(
        String::from_utf8(one.stdout).unwrap().lines().count(),
        frames as usize
    );
    let none = events_tool(&["dump", &db.display().to_string(), "--stream", "nope"]);
    assert!(none.status.success() && none.stdout.is_empty());
    let summary = events_tool(&["summary", &db.display().to_string()]);
    let text = String::from_utf8(summary.stdout).unwrap();
    assert!(
        text.contains(&format!("frames: {frames}")) && text.contains("places"),
        "{text}"
    );
}

#[test]
fn events_tool_usage_and_errors() {
    let help = events_tool(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("dump") && help.contains("collisions"),
        "{help}"
    );
    // Every subcommand explains itself.
    for cmd in [
        "dump",
        "timeline",
        "follow",
        "stats",
        "summary",
        "tracks",
        "counts",
        "collisions",
    ] {
        let h = events_tool(&[cmd, "--help"]);
        assert!(h.status.success(), "{cmd}");
        assert!(
            String::from_utf8_lossy(&h.stdout).contains("<LOCATION>"),
            "{cmd}"
        );
    }

    let bad = events_tool(&["frobnicate", "x.db"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("frobnicate"));

    // Times that do not exist or cannot be held, a range the wrong way round, a count of
    // nothing: usage errors, never a silent wrong answer.
    for (args, expected) in [
        (
            vec!["counts", "x.db", "--from", "2300-01-01T00:00:00Z"],
            "1970 to 2262",
        ),
        (
            vec!["counts", "x.db", "--from", "2026-13-45T99:00:00Z"],
            "not a valid time",
        ),
        (
            vec!["counts", "x.db", "--from", "2026-02-31T00:00:00Z"],
            "not a valid time",
        ),
        (
            vec![
                "counts",
                "x.db",
                "--from",
                "2026-11-24T04:00:00Z",
                "--to",
                "2026-11-24T03:00:00Z",
            ],
            "--from is after --to",
        ),
        (vec!["follow", "x.db", "--count", "0"], "--count"),
    ] {
        let out = events_tool(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }

    // A directory is said to be one.
    let dir = common::TempDir::new("events-dir");
    let out = events_tool(&["tracks", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a directory"),
        "{out:?}"
    );

    let missing = events_tool(&["dump", "/nonexistent/events.db"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("/nonexistent/events.db") && err.contains("no such file"),
        "{err}"
    );

    let dir = common::TempDir::new("notadb");
    let junk = dir.join("junk.db");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let junk_out = events_tool(&["dump", &junk.display().to_string()]);
    assert_eq!(junk_out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&junk_out.stderr).contains("junk.db"));
}
