// SPDX-License-Identifier: MPL-2.0
//! raftsink on the local backend: crashes (SIGKILL) and restarts, corrupt and foreign files,
//! schema migration, skip-empty, live sequence numbers, everything onnxinfer attached, and the
//! videoai-events commands.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::onnx_model::Spec;
use gst::prelude::*;
use gstvideoai::event::FrameEvent;
use gstvideoai::event_store::EventStore;

/// A YOLOv5-style model with one box, class 1 at 0.72.
fn detector(dir: &common::TempDir) -> PathBuf {
    let p = dir.join("det.onnx");
    Spec::image(64, 64)
        .output(
            "output0",
            &[1, 1, 7],
            vec![32.0, 32.0, 16.0, 16.0, 0.9, 0.1, 0.8],
        )
        .write(&p);
    p
}

const CHILD: &str = "VIDEOAI_CRASH_CHILD";

/// In the child process: plays `clip` through onnxinfer into raftsink at real-time speed and
/// prints `durable <stream> <seq>` for every commit raftsink reports.
fn child_pipeline() {
    common::init();
    let get = |k: &str| std::env::var(k).unwrap();
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 ! onnxinfer model-location=\"{}\" \
         ! raftsink location=\"{}\" post-durable=true commit-interval=10 sync=true",
        get("CLIP"),
        get("MODEL"),
        get("DB")
    ));
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let stdout = std::io::stdout();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "raftsink-durable" {
                    let streams = s.get::<gst::Array>("streams").unwrap();
                    let seqs = s.get::<gst::Array>("seqs").unwrap();
                    let mut out = stdout.lock();
                    for (st, sq) in streams.iter().zip(seqs.iter()) {
                        use std::io::Write;
                        writeln!(
                            out,
                            "durable {} {}",
                            st.get::<String>().unwrap(),
                            sq.get::<i64>().unwrap()
                        )
                        .unwrap();
                        out.flush().unwrap();
                    }
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
}

/// Runs the child pipeline; kills it with SIGKILL after `kill_after` (or lets it finish).
/// Returns the durable reports it printed.
fn run_child(
    db: &Path,
    clip: &Path,
    model: &Path,
    kill_after: Option<Duration>,
) -> Vec<(String, i64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("CLIP", clip)
        .env("MODEL", model)
        .env("DB", db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r2 = reports.clone();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.splitn(3, ' ');
            if parts.next() == Some("durable") {
                let stream = parts.next().unwrap().to_string();
                let seq = parts.next().unwrap().trim().parse::<i64>().unwrap();
                r2.lock().unwrap().push((stream, seq));
            }
        }
    });
    match kill_after {
        Some(d) => {
            std::thread::sleep(d);
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        None => {
            let status = child.wait().unwrap();
            assert!(status.success(), "child failed: {status}");
        }
    }
    reader.join().unwrap();
    reports.lock().unwrap().clone()
}

#[test]
fn crash_child_entry() {
    // Only does something when started by `killed_and_restarted_twenty_times`.
    if std::env::var_os(CHILD).is_some() {
        child_pipeline();
    }
}

#[test]
fn killed_and_restarted_twenty_times() {
    common::init();
    let dir = common::TempDir::new("crash");
    let clip = dir.join("clip.mp4");
    let db = dir.join("events.db");
    let model = detector(&dir);
    let frames = 90u32;
    common::make_clip(&clip, 160, 120, frames);
    // Deterministic "random" kill points between 0.15 and 2.6 s (the clip lasts 3 s).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let after = Duration::from_millis(150 + x % 2450);
        let reports = run_child(&db, &clip, &model, Some(after));
        // Everything reported durable survived the SIGKILL: for each report, every earlier
        // frame of this run too.
        let store = EventStore::open_for_writing(&db).unwrap();
        let stored: BTreeSet<(String, i64)> = store
            .events(None)
            .unwrap()
            .into_iter()
            .map(|e| (e.stream, e.seq))
            .collect();
        for (stream, seq) in &reports {
            for s in 0..=*seq {
                assert!(
                    stored.contains(&(stream.clone(), s)),
                    "round {round} (killed after {after:?}): {stream}:{s} was reported durable (up to {seq}) but is missing"
                );
            }
        }
    }
    // The last run plays to the end: every frame exactly once, each with its detection.
    run_child(&db, &clip, &model, None);
    let events = EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..frames as i64).collect::<Vec<_>>(),
        "one event per frame, no duplicates"
    );
    let streams: BTreeSet<&str> = events.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(
        streams.len(),
        1,
        "the same input keeps its stream id: {streams:?}"
    );
    for e in &events {
        assert_eq!(e.detections.len(), 1, "{e:?}");
        assert_eq!(e.detections[0].class_id, 1);
        assert_eq!(e.pts_ns, Some(e.seq * 1_000_000_000 / 30));
    }
}

fn digest(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn raftsink_error(location: &Path) -> String {
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=3 ! raftsink location=\"{}\"",
        location.display()
    ));
    common::run(&p, Duration::from_secs(30))
        .first_error()
        .to_string()
}

#[test]
fn corrupt_or_foreign_files_are_refused_untouched() {
    let dir = common::TempDir::new("foreign");
    // Not SQLite at all.
    let junk = dir.join("junk.db");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&junk, &bytes).unwrap();
    let e = raftsink_error(&junk);
    assert!(
        e.contains("junk.db") && e.contains("not an SQLite database") && e.contains("untouched"),
        "{e}"
    );
    assert_eq!(digest(&junk), bytes);
    // A valid SQLite file with someone else's tables.
    let other = dir.join("crm.db");
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE customers (id INTEGER, name TEXT); INSERT INTO customers VALUES (1, 'a');")
            .unwrap();
    }
    let before = digest(&other);
    let e = raftsink_error(&other);
    assert!(
        e.contains("not a videoai event log") && e.contains("customers"),
        "{e}"
    );
    assert_eq!(digest(&other), before, "file untouched");
    assert!(!dir.join("crm.db-wal").exists());
    // The reader refuses both too.
    for f in [&junk, &other] {
        let out = Command::new(env!("CARGO_BIN_EXE_videoai-events"))
            .args(["dump", &f.display().to_string()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
    }
}

#[test]
fn version_1_logs_are_migrated() {
    let dir = common::TempDir::new("migrate");
    let db = dir.join("v1.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE events (stream TEXT NOT NULL, seq INTEGER NOT NULL, pts_ns INTEGER,
                 capture_ns INTEGER NOT NULL, model TEXT NOT NULL, detections TEXT NOT NULL,
                 schema INTEGER NOT NULL, PRIMARY KEY (stream, seq)) WITHOUT ROWID;
             CREATE INDEX events_by_capture ON events (stream, capture_ns, seq);
             INSERT INTO events VALUES ('old', 0, 0, 100, 'm@1', '[]', 1);
             INSERT INTO events VALUES ('old', 1, 40, 200, 'm@1',
                 '[{\"label\":\"cat\",\"class_id\":0,\"confidence\":0.5,\"x\":1,\"y\":2,\"w\":3,\"h\":4}]', 1);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    // Reading needs the migration first.
    assert!(EventStore::open_for_reading(&db).is_err());
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=5 ! video/x-raw,framerate=25/1 ! raftsink location=\"{}\"",
        db.display()
    ));
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let store = EventStore::open_for_reading(&db).unwrap();
    let old = store.events(Some("old")).unwrap();
    assert_eq!(old.len(), 2);
    assert_eq!(old[1].detections[0].label, "cat");
    assert_eq!(store.count(None).unwrap(), 7);
    assert_eq!(
        store.pending().unwrap(),
        5,
        "old events count as forwarded; new ones are outbox-pending"
    );
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[test]
fn everything_onnxinfer_attached_is_stored() {
    // interval=2: odd frames carry the result (fresh=false); a classifier cascade labels each box;
    // skip-empty drops the frames of a second, empty stream.
    let dir = common::TempDir::new("content");
    let det = detector(&dir);
    let cls = dir.join("cls.onnx");
    Spec::image(32, 32)
        .output("logits", &[1, 2], vec![0.0, 2.0])
        .write(&cls);
    let db = dir.join("events.db");
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=4 ! video/x-raw,width=64,height=64,framerate=30/1 \
         ! onnxinfer model-location=\"{}\" interval=2 ! onnxinfer model-location=\"{}\" roi-only=true top-k=2 \
         ! raftsink location=\"{}\" stream-id=cam-a",
        det.display(),
        cls.display(),
        db.display()
    ));
    assert!(common::run(&p, Duration::from_secs(30)).eos);
    let p = common::parse(&format!(
        "videotestsrc num-buffers=4 ! video/x-raw,framerate=30/1 ! raftsink location=\"{}\" stream-id=cam-b skip-empty=true",
        db.display()
    ));
    let sink_out = common::run(&p, Duration::from_secs(30));
    assert!(sink_out.eos, "{sink_out:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_videoai-events"))
        .args(["dump", &db.display().to_string()])
        .output()
        .unwrap();
    let events: Vec<FrameEvent> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4, "cam-b's empty frames were skipped");
    for (i, e) in events.iter().enumerate() {
        assert_eq!((e.stream.as_str(), e.seq, e.schema), ("cam-a", i as i64, 2));
        let d = &e.detections[0];
        assert_eq!(d.fresh, i % 2 == 0, "frame {i}");
        let c = d.classification.as_ref().expect("classified");
        assert_eq!(
            (c.label.as_str(), c.class_id, c.labels.len()),
            ("class-1", 1, 2)
        );
        assert!(c.model.starts_with("cls@"));
    }
    // The JSON says so too.
    let raw = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_videoai-events"))
            .args(["dump", &db.display().to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let second = raw.lines().nth(1).unwrap();
    assert!(
        second.contains("\"fresh\":false") && second.contains("\"classification\""),
        "{second}"
    );
}

#[test]
fn live_sources_number_frames_by_capture_time() {
    // Two runs of a live source: PTS restart at 0 each time, yet no frame of the second run is
    // taken for a duplicate of the first.
    let dir = common::TempDir::new("live");
    let db = dir.join("events.db");
    common::init();
    for _ in 0..2 {
        let p = common::parse(&format!(
            "videotestsrc is-live=true num-buffers=10 ! video/x-raw,framerate=50/1 ! raftsink location=\"{}\" stream-id=cam",
            db.display()
        ));
        assert!(common::run(&p, Duration::from_secs(30)).eos);
    }
    let events = EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    assert_eq!(
        events.len(),
        20,
        "no frame of the second run was taken for a duplicate"
    );
    // seq follows capture time x 50 fps. A frame whose slot is already taken (frames delivered
    // in a burst on a loaded machine) gets the next free number, so a number may run ahead of
    // its capture slot by at most the frames of one run, never behind it.
    for w in events.windows(2) {
        assert!(w[0].seq < w[1].seq, "{:?} then {:?}", w[0], w[1]);
    }
    for e in &events {
        let slot = (e.capture_ns as i128 * 50 / 1_000_000_000) as i64;
        assert!((-1..=10).contains(&(e.seq - slot)), "{e:?} (slot {slot})");
    }
}

#[test]
fn timeline_stats_and_follow() {
    let dir = common::TempDir::new("cli");
    let db = dir.join("events.db");
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=10 ! video/x-raw,framerate=10/1 ! raftsink location=\"{}\" stream-id=cam-1",
        db.display()
    ));
    assert!(common::run(&p, Duration::from_secs(30)).eos);
    let all = EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    let (from, to) = (all[2].capture_ns, all[5].capture_ns);
    let tool = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_videoai-events"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let d = db.display().to_string();
    let tl = tool(&[
        "timeline",
        &d,
        "--stream",
        "cam-1",
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ]);
    let seqs: Vec<i64> = tl
        .lines()
        .map(|l| serde_json::from_str::<FrameEvent>(l).unwrap().seq)
        .collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    let stats = tool(&["stats", &d]);
    assert!(
        stats
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("cam-1\t10\t0\t9\t"),
        "{stats}"
    );
    // follow: the stored events with --from-start, then new ones as they are committed.
    let follower = Command::new(env!("CARGO_BIN_EXE_videoai-events"))
        .args(["follow", &d, "--from-start", "--count", "15"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let p = common::parse(&format!(
        "videotestsrc num-buffers=5 ! video/x-raw,framerate=10/1 ! raftsink location=\"{}\" stream-id=cam-2",
        db.display()
    ));
    assert!(common::run(&p, Duration::from_secs(30)).eos);
    let out = follower.wait_with_output().unwrap();
    let streams: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<FrameEvent>(l).unwrap().stream)
        .collect();
    assert_eq!(streams.len(), 15);
    assert!(
        streams[..10].iter().all(|s| s == "cam-1") && streams[10..].iter().all(|s| s == "cam-2")
    );
}
