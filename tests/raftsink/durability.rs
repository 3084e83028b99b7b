// SPDX-License-Identifier: MPL-2.0
//! raftsink on the local backend: crashes (SIGKILL) and restarts, corrupt and foreign files,
//! schema migration, skip-empty, live sequence numbers, everything onnxinfer attached, and the
//! videoai-events commands.

use crate::common;
use crate::events_tool;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::onnx_model::Spec;
use gst::prelude::*;
use gstvideoai::eventlog::event::FrameEvent;
use gstvideoai::eventlog::store::EventStore;

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
         ! raftsink location=\"{}\" post-durable=true commit-interval=10000000 sync=true",
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
            &common::test_name(module_path!(), "crash_child_entry"),
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
        let out = events_tool(&["dump", &f.display().to_string()]);
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
    assert_eq!(version, 6, "migrated to the current schema");
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

    let out = events_tool(&["dump", &db.display().to_string()]);
    let events: Vec<FrameEvent> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4, "cam-b's empty frames were skipped");
    for (i, e) in events.iter().enumerate() {
        assert_eq!((e.stream.as_str(), e.seq, e.schema), ("cam-a", i as i64, 3));
        assert_eq!(
            e.key_basis,
            Some(gstvideoai::eventlog::event::KeyBasis::Position)
        );
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
    let raw = String::from_utf8(events_tool(&["dump", &db.display().to_string()]).stdout).unwrap();
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
        let out = events_tool(args);
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
    // A plain log has nothing to do with NATS: no such column (an outbox has it).
    assert!(!stats.contains("not_in_nats"), "{stats}");
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

#[test]
fn seeking_a_variable_rate_file_stores_every_position_once() {
    let dir = common::TempDir::new("vfrseek");
    let clip = dir.join("vfr.mkv");
    let positions = common::vfr_clip(&clip, 120);
    let db = dir.join("events.db");
    common::play_with_seeks(&clip, &format!("location=\"{}\"", db.display()));
    let events = EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    let stored: BTreeSet<u64> = events.iter().map(|e| e.pts_ns.unwrap() as u64).collect();
    let all: BTreeSet<u64> = positions.iter().copied().collect();
    assert_eq!(
        stored.len(),
        events.len(),
        "a position stored twice: {} events for {} positions",
        events.len(),
        stored.len()
    );
    assert_eq!(
        stored,
        all,
        "missing positions: {:?}",
        all.difference(&stored).collect::<Vec<_>>()
    );
}

#[test]
fn a_paced_file_is_not_taken_for_a_live_source() {
    // identity sync=true answers the latency query as live; the file is still a file: the
    // same frames get the same keys on a replay.
    let dir = common::TempDir::new("paced");
    let clip = dir.join("clip.mp4");
    common::init();
    common::make_clip(&clip, 64, 48, 15);
    let db = dir.join("events.db");
    for _ in 0..2 {
        let p = common::parse(&format!(
            "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 ! identity sync=true \
             ! raftsink location=\"{}\" stream-id=clip",
            clip.display(),
            db.display()
        ));
        let out = common::run(&p, Duration::from_secs(30));
        assert!(out.eos && out.errors.is_empty(), "{out:?}");
    }
    let events = EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..15).collect::<Vec<_>>(),
        "numbered by position, stored once"
    );
}

#[test]
fn a_non_finite_confidence_never_poisons_the_log() {
    let dir = common::TempDir::new("nanconf");
    let db = dir.join("events.db");
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=6 ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! identity name=id ! raftsink name=sink location=\"{}\" stream-id=cam",
        db.display()
    ));
    // Every frame: one good detection; frames 1 and 4 also one with a NaN or infinite
    // confidence (a broken export, fp16 overflow upstream).
    let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
    p.by_name("id")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(gst::PadProbeData::Buffer(b)) = &mut info.data {
                let b = b.make_mut();
                let good =
                    gstvideoai::eventlog::event::Detection::new("car", 2, 0.9, (1, 2, 10, 10));
                gstvideoai::formats::detection::attach(b, &good, "m@1");
                if i == 1 || i == 4 {
                    let bad = gstvideoai::eventlog::event::Detection::new(
                        "car",
                        2,
                        if i == 1 { f64::NAN } else { f64::INFINITY },
                        (20, 20, 10, 10),
                    );
                    gstvideoai::formats::detection::attach(b, &bad, "m@1");
                }
            }
            gst::PadProbeReturn::Ok
        });
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.eos, "{out:?}");
    let dump = events_tool(&["dump", &db.display().to_string()]);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let events: Vec<FrameEvent> = String::from_utf8(dump.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e.detections.len() == 1));
    let stats = p
        .by_name("sink")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert_eq!(
        stats.get::<u64>("invalid-detections").unwrap(),
        2,
        "{stats}"
    );
    assert_eq!(
        out.warnings
            .iter()
            .filter(|w| w.contains("not finite"))
            .count(),
        1,
        "{:?}",
        out.warnings
    );
}

#[test]
fn one_unreadable_row_does_not_hide_the_others() {
    // A log written by an older version that stored a NaN as `null`, or damaged by hand.
    let dir = common::TempDir::new("badrow");
    let db = dir.join("events.db");
    push_three(&db);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE events SET detections = '[{\"label\":\"car\",\"class_id\":2,\"confidence\":null,\"x\":1,\"y\":2,\"w\":3,\"h\":4}]' WHERE seq = 1",
        [],
    )
    .unwrap();
    drop(conn);
    for cmd in ["dump", "summary", "stats"] {
        let out = events_tool(&[cmd, &db.display().to_string()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cmd}: {stderr}");
        if cmd == "dump" {
            assert_eq!(stdout.lines().count(), 2, "{stdout}");
            assert!(stderr.contains("(cam, 1)"), "{stderr}");
        }
    }
}

/// Three events of stream `cam` (seq 0, 1, 2) in a new log at `db`.
fn push_three(db: &Path) {
    let mut store = EventStore::open_for_writing(db).unwrap();
    let events: Vec<gstvideoai::eventlog::store::EncodedEvent> = (0..3)
        .map(|i| {
            gstvideoai::eventlog::store::EncodedEvent::new(&FrameEvent {
                stream: "cam".into(),
                seq: i,
                pts_ns: Some(i * 40_000_000),
                capture_ns: 1_795_000_000_000_000_000 + i * 40_000_000,
                model: "m@1".into(),
                detections: vec![gstvideoai::eventlog::event::Detection::new(
                    "car",
                    2,
                    0.9,
                    (1, 2, 3, 4),
                )],
                schema: 2,
                key_basis: None,
                clock: None,
                clips: Vec::new(),
            })
        })
        .collect();
    store.insert_batch(&events).unwrap();
}

#[test]
fn an_archived_log_reads_without_write_access() {
    let dir = common::TempDir::new("archived");
    let sub = dir.join("archive");
    std::fs::create_dir_all(&sub).unwrap();
    let db = sub.join("events.db");
    push_three(&db);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // As a user who cannot write there (root can write anywhere: the test drops to nobody).
    let tool = env!("CARGO_BIN_EXE_videoai-events");
    let root = unsafe { libc::geteuid() } == 0;
    let out = if root {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", tool])
            .args(["dump", &db.display().to_string()])
            .output()
            .unwrap()
    } else {
        Command::new(tool)
            .args(["dump", &db.display().to_string()])
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[test]
fn deleting_the_log_while_writing_is_noticed() {
    let dir = common::TempDir::new("deleted");
    let db = dir.join("events.db");
    common::init();
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers=60 ! video/x-raw,width=16,height=16,framerate=30/1 \
         ! raftsink location=\"{}\" stream-id=cam",
        db.display()
    ));
    let d2 = db.clone();
    let remover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", d2.display()));
        }
    });
    let out = common::run(&p, Duration::from_secs(30));
    remover.join().unwrap();
    let said = format!("{:?} {:?}", out.errors, out.warnings);
    assert!(
        said.contains("deleted") && said.contains("events.db"),
        "nothing said: {said}"
    );
    // It goes on in a new log at the same place.
    assert!(out.eos, "{out:?}");
    let n = EventStore::open_for_reading(&db)
        .unwrap()
        .count(None)
        .unwrap();
    assert!(n > 0 && n < 60, "{n} events in the new log");
}

#[test]
fn big_logs_are_read_in_constant_memory() {
    // A few million events: dump, timeline and follow --from-start stream them.
    let dir = common::TempDir::new("biglog");
    let db = dir.join("events.db");
    let n: i64 = 2_000_000;
    {
        let mut store = EventStore::open_for_writing(&db).unwrap();
        let chunk = 50_000;
        for start in (0..n).step_by(chunk) {
            let events: Vec<gstvideoai::eventlog::store::EncodedEvent> = (start
                ..(start + chunk as i64).min(n))
                .map(|i| gstvideoai::eventlog::store::EncodedEvent {
                    stream: format!("cam-{}", i % 4),
                    seq: i / 4,
                    pts_ns: Some(i * 1000),
                    capture_ns: 1_795_000_000_000_000_000 + i * 1000,
                    model: "m@1".into(),
                    detections:
                        r#"[{"label":"car","class_id":2,"confidence":0.9,"x":1,"y":2,"w":3,"h":4}]"#
                            .into(),
                    key_basis: None,
                    clock: None,
                    clips: None,
                    same_frame_ns: 0,
                })
                .collect();
            store.insert_batch(&events).unwrap();
        }
    }
    let d = db.display().to_string();
    for args in [
        vec!["dump", d.as_str()],
        vec!["timeline", d.as_str(), "--stream", "cam-1"],
        vec!["follow", d.as_str(), "--from-start", "--count", "1500000"],
    ] {
        let (lines, rss_kib) = max_rss_of(env!("CARGO_BIN_EXE_videoai-events"), &args);
        eprintln!("{args:?}: {lines} lines, max RSS {rss_kib} KiB");
        assert!(lines >= 500_000, "{args:?}: {lines} lines");
        assert!(rss_kib < 64 * 1024, "{args:?}: max RSS {rss_kib} KiB");
    }
}

/// Runs `tool args`, counting the lines it prints; returns them and its peak RSS (KiB): the
/// high-water mark of its own memory (`VmHWM`), read while it prints and once it has printed
/// everything. Not wait4's `ru_maxrss`: the child is spawned sharing this process's memory
/// until it execs (posix_spawn, vfork), and the kernel keeps that memory's high-water mark in
/// the child's maxrss at exec, so a test process holding 100 MB (other tests running in it
/// under `cargo test`) made the tool seem to use 118 MB.
fn max_rss_of(tool: &str, args: &[&str]) -> (u64, i64) {
    let mut child = Command::new(tool)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let high_water = || -> Option<i64> {
        let status = std::fs::read_to_string(&status_file).ok()?;
        let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
        kib.trim().trim_end_matches("kB").trim().parse().ok()
    };
    let (mut lines, mut peak) = (0u64, 0i64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        line.unwrap();
        lines += 1;
        if lines % 4096 == 0 {
            peak = peak.max(high_water().unwrap_or(0));
        }
    }
    peak = peak.max(high_water().unwrap_or(0));
    let status = child.wait().unwrap();
    assert!(status.success(), "{args:?} failed: {status}");
    assert!(
        peak > 0,
        "{args:?}: no memory figure read from {status_file}"
    );
    (lines, peak)
}

#[test]
fn commits_reach_the_disk() {
    // SIGKILL keeps the page cache: only counting the syncs shows commits really reach the
    // disk. A shim (LD_PRELOAD) counts fsync/fdatasync calls of a child that commits every
    // event on its own.
    if let Ok(counter) = std::env::var("VIDEOAI_SYNC_CHILD") {
        let db = std::env::var("DB").unwrap();
        common::init();
        let p = common::parse(&format!(
            "videotestsrc num-buffers=20 ! video/x-raw,width=16,height=16,framerate=30/1 \
             ! identity sleep-time=20000 ! raftsink location=\"{db}\" commit-interval=0 stream-id=cam"
        ));
        assert!(common::run(&p, Duration::from_secs(30)).eos);
        let _ = counter;
        return;
    }
    let dir = common::TempDir::new("fsync");
    let shim_c = dir.join("shim.c");
    std::fs::write(
        &shim_c,
        r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static void count(const char *what) {
    const char *path = getenv("VIDEOAI_SYNC_CHILD");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (f) { fprintf(f, "%s\n", what); fclose(f); }
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    count("fsync");
    return real(fd);
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    count("fdatasync");
    return real(fd);
}
"#,
    )
    .unwrap();
    let shim = dir.join("libsyncshim.so");
    let cc = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&shim_c)
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(cc.success(), "gcc builds the shim");
    let counter = dir.join("syncs.txt");
    let db = dir.join("events.db");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            &common::test_name(module_path!(), "commits_reach_the_disk"),
            "--exact",
            "--test-threads=1",
        ])
        .env("LD_PRELOAD", &shim)
        .env("VIDEOAI_SYNC_CHILD", &counter)
        .env("DB", &db)
        .status()
        .unwrap();
    assert!(status.success());
    let syncs = std::fs::read_to_string(&counter).unwrap_or_default();
    let n = syncs.lines().count();
    let events = EventStore::open_for_reading(&db)
        .unwrap()
        .count(None)
        .unwrap();
    assert_eq!(events, 20);
    // synchronous=FULL in WAL mode: each commit syncs the WAL (20 commits, one event each).
    assert!(n >= 20, "{n} syncs for 20 commits");
}
