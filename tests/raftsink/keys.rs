// SPDX-License-Identifier: MPL-2.0
//! raftsink frame keys from the camera's clock (`capture-time-wait`), element by element: a live
//! camera's frames pushed through a harness with the metas resilientsrc gives them (the RTP
//! time of every frame, the camera's NTP time once a sender report came), checked in the log.
//!
//! What must hold: keys come from the frame (never from when it arrived), a frame waiting for
//! the camera's clock is never dropped (EOS, STREAM_START, FLUSH_STOP, stop without EOS), a
//! second reader of the same camera keys frames from its first one, and a key that already holds
//! another frame is a counted collision with both frames kept.

use crate::common;
use crate::events_tool;

use std::path::Path;

use gst::prelude::*;
use gstvideoai::eventlog::store::EventStore;
use gstvideoai::formats::capture_time::{NTP_TO_UNIX_NS, RTP_REFERENCE};

/// A 30 fps camera: RTP at 90 kHz, 3000 ticks a frame, frames `PHASE` of a period off the NTP
/// grid (the worst case for rounding capture times to keys).
const TICKS: u64 = 3000;
const PERIOD_NS: i64 = 33_333_333;
const SSRC: u32 = 0x1234_5678;
/// Capture time of frame 0 (ns since the Unix epoch): half a period off the 30 fps grid.
const T0: i64 = 1_796_000_000_000_000_000 / PERIOD_NS * PERIOD_NS + PERIOD_NS / 2;
/// RTP timestamp of frame 0 (32-bit, as the camera sends it).
const RTP0: u64 = 1_000_000;

/// Camera frame `i`: its capture time.
fn capture(i: i64) -> i64 {
    T0 + (i as i128 * 1_000_000_000 / 30) as i64
}

/// A frame of the camera as resilientsrc delivers it: pts from this reader's running time, the
/// RTP time always, the camera's NTP time when `ntp`.
fn frame(i: i64, pts_ns: u64, ntp: bool) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(16).unwrap();
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts_ns));
        // Unwrapped as a reader that started before the wrap does: one wrap up.
        let ext = (RTP0 + i as u64 * TICKS) + (1u64 << 32);
        let rtp_caps = gst::Caps::builder(RTP_REFERENCE)
            .field("ssrc", SSRC)
            .field("clock-rate", 90_000i32)
            .build();
        gst::ReferenceTimestampMeta::add(
            b,
            &rtp_caps,
            gst::ClockTime::from_nseconds(ext * 1_000_000_000 / 90_000),
            gst::ClockTime::NONE,
        );
        if ntp {
            gst::ReferenceTimestampMeta::add(
                b,
                &gst::Caps::new_empty_simple("timestamp/x-ntp"),
                gst::ClockTime::from_nseconds(capture(i) as u64 + NTP_TO_UNIX_NS),
                gst::ClockTime::NONE,
            );
        }
    }
    b
}

/// A live raftsink harness keyed by the camera's clock (10 s wait), stream `cam`.
fn reader(db: &Path) -> gst_check::Harness {
    common::init();
    let sink = gst::ElementFactory::make("raftsink")
        .property("location", db.display().to_string())
        .property("async", false)
        .property("stream-id", "cam")
        .property("capture-time-wait", 10_000_000_000u64)
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&sink, Some("sink"), None);
    h.set_live(true);
    assert!(h.push_event(gst::event::StreamStart::new("cam-stream")));
    assert!(
        h.push_event(gst::event::Caps::new(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .field("width", 4)
                .field("height", 4)
                .field("framerate", gst::Fraction::new(0, 1))
                .build()
        ))
    );
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    h
}

/// Every stored event of `cam` as the JSON `videoai-events dump` prints.
fn dumped(db: &Path) -> Vec<serde_json::Value> {
    let out = events_tool(&["dump", &db.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stored(db: &Path) -> usize {
    EventStore::open_for_reading(db)
        .unwrap()
        .count(Some("cam"))
        .unwrap() as usize
}

fn stat_u64(h: &gst_check::Harness, field: &str) -> u64 {
    h.element()
        .unwrap()
        .property::<gst::Structure>("stats")
        .get::<u64>(field)
        .unwrap_or_else(|e| panic!("stats {field}: {e}"))
}

/// The key and capture time every event of `cam` was stored with, by camera frame: the frame
/// is found by its capture time.
fn keys_by_frame(db: &Path) -> Vec<(i64, i64, String)> {
    let mut out: Vec<(i64, i64, String)> = dumped(db)
        .iter()
        .map(|e| {
            let c = e["capture_ns"].as_i64().unwrap();
            let i = ((c - T0) as f64 / PERIOD_NS as f64).round() as i64;
            (
                i,
                e["seq"].as_i64().unwrap(),
                e["key_basis"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_second_reader_keys_the_camera_s_frames_from_its_first_one() {
    // Reader A has the camera's clock (NTP from frame 0). Reader B joins at frame 20, gets no
    // sender report before it stops at frame 40 (EOS). B keys its frames from their RTP times
    // and A's last stored frame (same SSRC), at once: every frame is stored once, under one key
    // grid, and nothing waits for B's first sender report.
    let dir = common::TempDir::new("keys-second-reader");
    let db = dir.join("events.db");
    let mut a = reader(&db);
    for i in 0..30 {
        a.push(frame(i, i as u64 * 33_000_000, true)).unwrap();
    }
    assert!(a.push_event(gst::event::Eos::new()));
    let mut b = reader(&db);
    for i in 20..40 {
        // A burst: the frames arrive 0.2 ms apart (a jitterbuffer filling).
        b.push(frame(i, 5_000_000 + i as u64 * 200_000, false))
            .unwrap();
    }
    let waiting = stat_u64(&b, "waiting-frames");
    assert!(b.push_event(gst::event::Eos::new()));
    assert_eq!(waiting, 0, "B waited for its own sender report");
    let keys = keys_by_frame(&db);
    assert_eq!(keys.len(), 40, "{keys:?}");
    let k0 = keys[0].1;
    for (n, (i, seq, basis)) in keys.iter().enumerate() {
        assert_eq!(*i, n as i64, "frame {n} stored twice or missing: {keys:?}");
        assert_eq!(*seq, k0 + n as i64, "frame {n}: {keys:?}");
        assert_eq!(basis, "camera", "frame {n}");
    }
}

#[test]
fn frames_that_never_get_the_camera_clock_are_stored_in_a_key_space_of_their_own() {
    // No sender report before EOS and no earlier reader: the frames cannot be placed on the
    // camera's clock. They are stored, under keys that can never be a camera key (another
    // reader's), marked as such, counted, and never from a 0.2 ms burst onto one key.
    let dir = common::TempDir::new("keys-local");
    let db = dir.join("events.db");
    let mut h = reader(&db);
    for i in 0..20 {
        h.push(frame(i, 5_000_000 + i as u64 * 200_000, false))
            .unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(stat_u64(&h, "local-keyed"), 20);
    let events = dumped(&db);
    assert_eq!(events.len(), 20);
    for e in &events {
        assert_eq!(e["key_basis"], "local", "{e}");
        assert!(e["seq"].as_i64().unwrap() >= 1 << 62, "{e}");
    }
}

/// Pushes 10 frames that wait for the camera's clock, then `interrupt` (an event, or a stop),
/// and checks that all 10 were stored.
fn waiting_frames_survive(tag: &str, interrupt: impl FnOnce(&mut gst_check::Harness)) {
    let dir = common::TempDir::new(tag);
    let db = dir.join("events.db");
    let mut h = reader(&db);
    for i in 0..10 {
        h.push(frame(i, i as u64 * 33_333_333, false)).unwrap();
    }
    assert_eq!(stored(&db), 0, "nothing stored while waiting");
    interrupt(&mut h);
    let _ = h.element().unwrap().set_state(gst::State::Null);
    assert_eq!(
        stored(&db),
        10,
        "frames waiting for the camera's clock were dropped"
    );
}

#[test]
fn frames_waiting_at_a_new_stream_start_are_stored() {
    waiting_frames_survive("keys-stream-start", |h| {
        assert!(h.push_event(gst::event::StreamStart::new("another")));
        assert!(h.push_event(gst::event::Eos::new()));
    });
}

#[test]
fn frames_waiting_at_a_flush_are_stored() {
    waiting_frames_survive("keys-flush", |h| {
        assert!(h.push_event(gst::event::FlushStart::new()));
        assert!(h.push_event(gst::event::FlushStop::new(true)));
    });
}

#[test]
fn frames_waiting_when_stopped_without_eos_are_stored() {
    waiting_frames_survive("keys-stop", |_| {});
}

#[test]
fn a_key_that_holds_another_frame_is_a_collision_and_both_frames_are_kept() {
    // A file read at 30 fps stores frame 1 (pts 33 ms) under key 1; the same stream id later
    // reads a 10 fps file whose frame 1 (pts 100 ms) also gets key 1: not the same frame (its
    // pts is 67 ms away, more than half a period), so not a duplicate.
    let dir = common::TempDir::new("keys-collision");
    let db = dir.join("events.db");
    common::init();
    let run = |fps: i32| {
        let sink = gst::ElementFactory::make("raftsink")
            .property("location", db.display().to_string())
            .property("async", false)
            .property("stream-id", "cam")
            .build()
            .unwrap();
        let mut h = gst_check::Harness::with_element(&sink, Some("sink"), None);
        h.set_live(false);
        assert!(h.push_event(gst::event::StreamStart::new("file")));
        assert!(
            h.push_event(gst::event::Caps::new(
                &gst::Caps::builder("video/x-raw")
                    .field("format", "RGB")
                    .field("width", 4)
                    .field("height", 4)
                    .field("framerate", gst::Fraction::new(fps, 1))
                    .build()
            ))
        );
        assert!(
            h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()))
        );
        let mut b = gst::Buffer::with_size(16).unwrap();
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(1_000_000_000 / fps as u64));
        h.push(b).unwrap();
        assert!(h.push_event(gst::event::Eos::new()));
        h.element().unwrap().property::<gst::Structure>("stats")
    };
    let first = run(30);
    assert_eq!(first.get::<u64>("written").unwrap(), 1);
    let second = run(10);
    assert_eq!(
        (
            second.get::<u64>("duplicates").unwrap(),
            second.get::<u64>("collisions").unwrap()
        ),
        (0, 1),
        "{second}"
    );
    // The log keeps the first; the second is kept aside, readable.
    let out = events_tool(&["collisions", &db.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let kept: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kept.len(), 1, "{text}");
    assert_eq!(
        (kept[0]["seq"].as_i64(), kept[0]["pts_ns"].as_i64()),
        (Some(1), Some(100_000_000))
    );
    // And the same frame again is a duplicate, not a collision.
    let third = run(10);
    assert_eq!(
        (
            third.get::<u64>("duplicates").unwrap(),
            third.get::<u64>("collisions").unwrap()
        ),
        (1, 0),
        "{third}"
    );
}

#[test]
fn a_log_locked_by_another_process_longer_than_the_busy_timeout_loses_nothing() {
    // Another process takes the log's write lock while raftsink writes it and holds it for 7 s
    // (SQLite's busy timeout here is 5 s) while frames arrive: the writer waits it out and every
    // event is stored.
    let dir = common::TempDir::new("keys-busy");
    let db = dir.join("events.db");
    common::init();
    let sink = gst::ElementFactory::make("raftsink")
        .property("location", db.display().to_string())
        .property("async", false)
        .property("stream-id", "cam")
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&sink, Some("sink"), None);
    h.set_live(false);
    assert!(h.push_event(gst::event::StreamStart::new("file")));
    assert!(
        h.push_event(gst::event::Caps::new(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .field("width", 4)
                .field("height", 4)
                .field("framerate", gst::Fraction::new(25, 1))
                .build()
        ))
    );
    assert!(
        h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    let push = |h: &mut gst_check::Harness, i: u64| {
        let mut b = gst::Buffer::with_size(16).unwrap();
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * i));
        h.push(b).unwrap();
    };
    for i in 0..20 {
        push(&mut h, i);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored(&db) < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first 20 not stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut locker = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(7)\n\
             c.execute('COMMIT')\n",
        ])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(locker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    for i in 20..100u64 {
        push(&mut h, i);
        std::thread::sleep(std::time::Duration::from_millis(60));
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    let _ = locker.wait();
    assert_eq!(stored(&db), 100, "{stats}");
    assert!(stats.get::<u64>("store-retries").unwrap() >= 1, "{stats}");
}
