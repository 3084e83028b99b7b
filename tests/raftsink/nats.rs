// SPDX-License-Identifier: MPL-2.0
//! raftsink on NATS JetStream (real `nats-server` processes on 127.0.0.1, started and stopped by
//! the tests): exactly once and in per-stream order through a leader kill and a whole-cluster
//! outage; replays; reading back with videoai-events.

use crate::common;
use crate::events_tool;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use gst::prelude::*;
use gstvideoai::eventlog::event::FrameEvent;
use gstvideoai::eventlog::nats;

/// A pipeline writing `frames` live frames (at `fps`) of stream `id` to `url` through its own
/// outbox.
fn writer(url: &str, dir: &common::TempDir, id: &str, frames: u32, fps: u32) -> gst::Pipeline {
    common::parse(&format!(
        "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=32,height=24,framerate={fps}/1 \
         ! raftsink name=sink location=\"{url}\" outbox-location=\"{}\" stream-id={id} eos-timeout=90000000000",
        dir.join(&format!("outbox-{id}.db")).display()
    ))
}

/// Frames each of [`four_cameras`] writes.
const CAMERA_FRAMES: u32 = 150;

/// Four live cameras (`cam-0` … `cam-3`, 150 frames at 50 fps) writing to NATS at `url`.
fn four_cameras(url: &str, dir: &common::TempDir) -> (Vec<String>, Vec<gst::Pipeline>) {
    let ids: Vec<String> = (0..4).map(|i| format!("cam-{i}")).collect();
    let pipelines = ids
        .iter()
        .map(|id| writer(url, dir, id, CAMERA_FRAMES, 50))
        .collect();
    (ids, pipelines)
}

/// Every frame of each of `ids` (as [`four_cameras`] writes them).
fn every_frame(ids: &[String]) -> BTreeMap<String, usize> {
    ids.iter()
        .map(|id| (id.clone(), CAMERA_FRAMES as usize))
        .collect()
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
        // Seqs of a live source count frames from its capture time: neighbours differ by one.
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        let gaps: Vec<(i64, i64)> = sorted
            .windows(2)
            .filter(|w| w[1] - w[0] != 1)
            .map(|w| (w[0], w[1]))
            .collect();
        assert_eq!(
            seqs.len(),
            *n,
            "{id}: {} events in NATS, {n} frames written (gaps {gaps:?} in {:?}..={:?})",
            seqs.len(),
            sorted.first(),
            sorted.last()
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
    // The clip through raftsink into NATS with the outbox `outbox`; its stats.
    let run = |outbox: &str| {
        let p = common::parse(&format!(
            "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 ! raftsink name=sink location=\"{}\" outbox-location=\"{}\"",
            clip.display(),
            nats.url(),
            dir.join(outbox).display()
        ));
        let sink = p.by_name("sink").unwrap();
        let out = common::run(&p, Duration::from_secs(60));
        assert!(out.eos && out.errors.is_empty(), "{out:?}");
        sink.property::<gst::Structure>("stats")
    };
    let first = run("outbox.db");
    assert_eq!(first.get::<u64>("forwarded").unwrap(), 20, "{first}");
    // The same input again: nothing new, locally or in NATS.
    let second = run("outbox.db");
    assert_eq!(second.get::<u64>("duplicates").unwrap(), 20, "{second}");
    let events = nats.read_all("VIDEOAI_EVENTS");
    assert_eq!(events.len(), 20);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    // A fresh outbox replaying the same file: the high-water mark in NATS keeps it exactly once
    // (no reliance on the duplicate window).
    let stats = run("outbox-new.db");
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
    let out = events_tool(&["dump", &nats.url()]);
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
fn nats_msg_id_is_sent_only_to_servers_older_than_2_11() {
    // Servers before 2.11 check Nats-Expected-Last-Subject-Sequence against applied messages
    // only, so there every publish carries Nats-Msg-Id too (a repeat sent during a leader
    // election is deduplicated). 2.11 and later refuse an in-flight repeat themselves and the id
    // only costs them: left out, unless nats-msg-id=always, or once the process has seen an older
    // server (a cluster being upgraded: the stream leader may be an old one).
    common::init();
    let dir = common::TempDir::new("natsmsgid");
    let version = common::nats::server_version;
    let (old, new) = (
        common::nats::debian_server_binary(),
        common::nats::server_binary(),
    );
    assert!(
        !nats::refuses_in_flight_repeats(&version(&old)),
        "{old}: {}",
        version(&old)
    );
    assert!(
        nats::refuses_in_flight_repeats(&version(&new)),
        "{new}: {}",
        version(&new)
    );
    for (i, (binary, mode, with_id)) in [
        (&new, "auto", false),
        (&new, "always", true),
        (&old, "auto", true),
        (&new, "auto", true),
    ]
    .into_iter()
    .enumerate()
    {
        let server = NatsCluster::start_with(1, binary);
        let p = common::parse(&format!(
            "videotestsrc num-buffers=5 ! video/x-raw,width=32,height=24,framerate=10/1 \
             ! raftsink name=sink location=\"{}\" outbox-location=\"{}\" stream-id=cam nats-msg-id={mode}",
            server.url(),
            dir.join(&format!("outbox-{i}.db")).display()
        ));
        let sink = p.by_name("sink").unwrap();
        let out = common::run(&p, Duration::from_secs(60));
        assert!(out.eos && out.errors.is_empty(), "{out:?}");
        let stats = sink.property::<gst::Structure>("stats");
        let what = format!("run {i}: {} with nats-msg-id={mode}", version(binary));
        assert_eq!(stats.get::<u64>("forwarded").unwrap(), 5, "{what}: {stats}");
        assert_eq!(
            stats.get::<bool>("nats-msg-id").unwrap(),
            with_id,
            "{what}: {stats}"
        );
        let names = server.header_names_of_last(nats::DEFAULT_STREAM, &nats::subject("cam"));
        assert_eq!(
            names.iter().any(|n| n == "Nats-Msg-Id"),
            with_id,
            "{what}: headers {names:?}"
        );
        // A message published alone expects the subject's last; in an atomic batch (never
        // with the id: the servers it is for are older than batches) only the first does.
        let batched = names.iter().any(|n| n == "Nats-Batch-Id");
        assert!(!(batched && with_id), "{what}: headers {names:?}");
        assert!(
            batched
                || names
                    .iter()
                    .any(|n| n == "Nats-Expected-Last-Subject-Sequence"),
            "{what}: headers {names:?}"
        );
    }
}

#[test]
fn a_backlog_of_several_chunks_goes_out_once_and_in_order() {
    // 1300 frames stored while NATS is down stay in the outbox; once it is back, the next run
    // with that outbox publishes them chunk after chunk (512 rows), each chunk marked forwarded
    // and the next one read while the following one is published.
    common::init();
    let mut server = NatsCluster::start(1);
    let dir = common::TempDir::new("natschunks");
    let url = server.url();
    let run = |eos_timeout_ns: u64| {
        let p = common::parse(&format!(
            "videotestsrc num-buffers=1300 ! video/x-raw,width=16,height=16,framerate=30/1 \
             ! raftsink name=sink location=\"{}\" outbox-location=\"{}\" stream-id=cam \
             eos-timeout={eos_timeout_ns}",
            url,
            dir.join("outbox.db").display()
        ));
        let sink = p.by_name("sink").unwrap();
        let out = common::run(&p, Duration::from_secs(120));
        assert!(out.eos && out.errors.is_empty(), "{out:?}");
        sink.property::<gst::Structure>("stats")
    };
    server.stop_all();
    let down = run(500_000_000);
    assert_eq!(
        (
            down.get::<u64>("written").unwrap(),
            down.get::<u64>("forwarded").unwrap(),
            down.get::<u64>("pending").unwrap()
        ),
        (1300, 0, 1300),
        "{down}"
    );
    server.restart_stopped();
    // The same frames again: nothing new locally; the backlog goes out.
    let back = run(90_000_000_000);
    let get = |f: &str| back.get::<u64>(f).unwrap();
    assert_eq!(
        (
            get("duplicates"),
            get("forwarded") + get("already-in-nats"),
            get("pending")
        ),
        (1300, 1300, 0),
        "{back}"
    );
    // From 2.12 the chunks go in atomic batches (512 + 512 + 276 rows: 3, unless one was not
    // acknowledged in time on a loaded machine and went one event at a time).
    let batches = back.get::<u64>("nats-batches").unwrap();
    if nats::takes_atomic_batches(&server.version()) {
        assert!((1..=3).contains(&batches), "{back}");
    } else {
        assert_eq!(batches, 0, "{back}");
    }
    let events = server.read_all(nats::DEFAULT_STREAM);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..1300).collect::<Vec<_>>()
    );
}

#[test]
fn leader_killed_while_four_pipelines_write() {
    common::init();
    let mut nats = NatsCluster::start(3);
    let dir = common::TempDir::new("natsleader");
    let (ids, pipelines) = four_cameras(&nats.url(), &dir);
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
    check_exactly_once_in_order(&events, &every_frame(&ids));
}

#[test]
fn whole_cluster_down_for_ten_seconds() {
    common::init();
    let mut nats = NatsCluster::start(3);
    let dir = common::TempDir::new("natsdown");
    let (ids, pipelines) = four_cameras(&nats.url(), &dir);
    play_all(&pipelines, || {
        std::thread::sleep(Duration::from_millis(800));
        // The outage comes after the stream exists: a cluster that was shut down (SIGTERM) and
        // restarted was seen refusing to place a new three-replica stream for the whole
        // eos-timeout ("no suitable peers for placement"), and placing one is not what this
        // test is about.
        let deadline = Instant::now() + Duration::from_secs(10);
        while nats.leader_of("VIDEOAI_EVENTS").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
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
    // Read once every node has caught up: a node still catching up (or a leader changing)
    // while the events are read only makes the read try again.
    nats.wait_replicas_current("VIDEOAI_EVENTS");
    let events = nats.read_all("VIDEOAI_EVENTS");
    check_exactly_once_in_order(&events, &every_frame(&ids));
}

/// A reader whose server freezes in the middle of a read (SIGSTOP: its connections stay open
/// and say nothing) is not left waiting for the client's pings (60 s and more) or the consumer's
/// heartbeats: the read stops within seconds saying where it was, and goes on from there on a
/// new connection to another node: every event once, in order, within the reader's wait.
#[test]
fn a_read_goes_on_from_where_it_was_when_its_server_freezes() {
    common::init();
    let nats = NatsCluster::start(3);
    let dir = common::TempDir::new("natsfreeze");
    let (ids, pipelines) = four_cameras(&nats.url(), &dir);
    play_all(&pipelines, || {});
    let urls: Vec<String> = nats.url().split(',').map(str::to_string).collect();
    // Enough events that the reader's consumer asks the leader for more after it froze (an
    // ordered consumer fetches 500 at a time).
    const BULK: usize = 4400;
    nats::block_on(async {
        let client = nats::connect(&urls, "test", Duration::from_secs(5), false)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let mut acks = Vec::new();
        for i in 0..BULK as i64 {
            let ev = FrameEvent {
                stream: "bulk".into(),
                seq: i,
                pts_ns: Some(i),
                capture_ns: i,
                model: String::new(),
                detections: Vec::new(),
                schema: gstvideoai::eventlog::event::SCHEMA_VERSION,
                key_basis: None,
                clock: None,
                clips: Vec::new(),
            };
            let subject = format!("{}.bulk", nats::SUBJECT_PREFIX);
            acks.push(
                js.publish(subject, serde_json::to_vec(&ev).unwrap().into())
                    .await
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
    });
    nats.wait_replicas_current("VIDEOAI_EVENTS");
    let mut frozen = None;
    let mut events = Vec::new();
    let mut attempts = 0;
    // What videoai-events does: a new connection per attempt, from where the last one stopped.
    let read = nats::block_on(async {
        tokio::time::timeout(Duration::from_secs(90), async {
            let mut next = 1;
            let give_up = Instant::now() + Duration::from_secs(60);
            loop {
                attempts += 1;
                let client = match nats::connect(&urls, "test", Duration::from_secs(5), false).await
                {
                    Ok(c) => c,
                    Err(e) if Instant::now() < give_up => {
                        eprintln!("connecting: {e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // The first connection's server is the one that freezes.
                let server = client.server_info().server_name;
                let res = nats::for_each_event_from(
                    &async_nats::jetstream::new(client),
                    "VIDEOAI_EVENTS",
                    next,
                    give_up,
                    |e| {
                        events.push(e);
                        if events.len() == 10 {
                            let node = nats.index_of(&server).expect("a node of the cluster");
                            nats.pause(node);
                            frozen = Some(node);
                        }
                        true
                    },
                    |_, _| {},
                )
                .await;
                match res {
                    Ok(()) => return Ok(()),
                    Err(s) if Instant::now() < give_up => {
                        eprintln!("attempt {attempts}: {}", s.why);
                        next = s.next;
                    }
                    Err(s) => return Err(s.why),
                }
            }
        })
        .await
    });
    let frozen = frozen.expect("a server was frozen");
    nats.resume(frozen);
    let read = read.expect("the read stalled for 90 s on the frozen server");
    read.expect("the read ended with an error");
    eprintln!("{} events in {attempts} attempts", events.len());
    assert!(attempts >= 2, "the read did not notice the frozen leader");
    let mut expected = every_frame(&ids);
    expected.insert("bulk".to_string(), BULK);
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
        "videotestsrc num-buffers=10 ! video/x-raw,framerate=25/1 ! raftsink location=\"{url}\" outbox-location=\"{}\" eos-timeout=1500000000 stream-id=cam",
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
    let store = gstvideoai::eventlog::store::EventStore::open_for_reading(&outbox).unwrap();
    assert_eq!(
        (store.count(None).unwrap(), store.pending().unwrap()),
        (10, 10)
    );
}

#[test]
fn seeking_a_variable_rate_file_publishes_every_position_once() {
    common::init();
    let nats = NatsCluster::start(1);
    let dir = common::TempDir::new("natsvfr");
    let clip = dir.join("vfr.mkv");
    let positions = common::vfr_clip(&clip, 120);
    common::play_with_seeks(
        &clip,
        &format!(
            "location=\"{}\" outbox-location=\"{}\" stream-id=vfr",
            nats.url(),
            dir.join("outbox.db").display()
        ),
    );
    let events = nats.read_all("VIDEOAI_EVENTS");
    let stored: std::collections::BTreeSet<u64> =
        events.iter().map(|e| e.pts_ns.unwrap() as u64).collect();
    assert_eq!(stored.len(), events.len(), "a position published twice");
    let all: std::collections::BTreeSet<u64> = positions.into_iter().collect();
    assert_eq!(
        stored,
        all,
        "missing in NATS: {:?}",
        all.difference(&stored).collect::<Vec<_>>()
    );
}

/// `gst-launch-1.0` as a user runs it: with the plugin from target/release, in `cwd`.
fn gst_launch(cwd: &std::path::Path, desc: &str) -> Command {
    let mut c = Command::new("gst-launch-1.0");
    c.arg("-q")
        .args(shell_words(desc))
        .current_dir(cwd)
        .env("GST_PLUGIN_PATH", common::root().join("target/release"));
    c
}

/// Splits a pipeline description at spaces (no quoting needed by the callers).
fn shell_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn same_directory_pipelines(n: usize) {
    common::init();
    let mut nats = NatsCluster::start(3);
    let dir = common::TempDir::new(&format!("samedir{n}"));
    let frames = 120;
    let children: Vec<std::process::Child> = (0..n)
        .map(|i| {
            gst_launch(
                dir.path(),
                &format!(
                    "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=16,height=16,framerate=40/1 \
                     ! raftsink location={} stream-id=proc-{i} eos-timeout=60000000000",
                    nats.url()
                ),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    // The stream leader dies while they write.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut killed = false;
    while !killed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(leader) = nats.leader_of("VIDEOAI_EVENTS") {
            nats.kill(leader);
            killed = true;
        }
    }
    assert!(killed, "the stream's leader was found and killed");
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pipeline {i} of {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let events = nats.read_all("VIDEOAI_EVENTS");
    let expected: BTreeMap<String, usize> = (0..n)
        .map(|i| (format!("proc-{i}"), frames as usize))
        .collect();
    check_exactly_once_in_order(&events, &expected);
}

#[test]
fn two_pipelines_in_one_directory_share_the_default_outbox() {
    same_directory_pipelines(2);
}

#[test]
fn four_pipelines_in_one_directory_share_the_default_outbox() {
    same_directory_pipelines(4);
}

#[test]
fn an_event_nats_refuses_is_parked_and_the_other_streams_go_on() {
    common::init();
    let nats = NatsCluster::start(1);
    // A stream whose messages may not exceed 4 kB.
    let urls = nats_log_urls(&nats);
    nats::block_on(async {
        let client = nats::connect(&urls, "test", Duration::from_secs(5), false)
            .await
            .unwrap();
        async_nats::jetstream::new(client)
            .create_stream(async_nats::jetstream::stream::Config {
                name: "VIDEOAI_EVENTS".into(),
                subjects: vec![format!("{}.>", nats::SUBJECT_PREFIX)],
                max_message_size: 4096,
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let dir = common::TempDir::new("natsbig");
    let outbox = dir.join("outbox.db");
    // Two cameras batched into one raftsink; frame 5 of cam-a carries 200 detections (a
    // 20 kB event).
    let p = common::parse(&format!(
        "framesync name=sync ! raftsink name=sink location=\"{}\" outbox-location=\"{}\" eos-timeout=20000000000 \
         videotestsrc is-live=true num-buffers=30 ! video/x-raw,width=16,height=16,framerate=30/1 ! identity name=a ! sync.sink_0 \
         videotestsrc is-live=true num-buffers=30 ! video/x-raw,width=16,height=16,framerate=30/1 ! sync.sink_1",
        nats.url(),
        outbox.display()
    ));
    let sync = p.by_name("sync").unwrap();
    sync.static_pad("sink_0")
        .unwrap()
        .set_property("stream-id", "cam-a");
    sync.static_pad("sink_1")
        .unwrap()
        .set_property("stream-id", "cam-b");
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    p.by_name("a")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 5
                && let Some(gst::PadProbeData::Buffer(b)) = &mut info.data
            {
                let b = b.make_mut();
                for k in 0..200 {
                    let d = gstvideoai::eventlog::event::Detection::new(
                        format!("label-number-{k}"),
                        k,
                        0.5,
                        (k as u32, 1, 2, 3),
                    );
                    gstvideoai::formats::detection::attach(b, &d, "m@1");
                }
            }
            gst::PadProbeReturn::Ok
        });
    let started = Instant::now();
    let out = common::run(&p, Duration::from_secs(60));
    let took = started.elapsed();
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert!(took < Duration::from_secs(15), "EOS waited {took:?}");
    let stats = p
        .by_name("sink")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("dead-letters").unwrap(), 1, "{stats}");
    assert!(
        out.warnings.iter().any(|w| w.contains("dead-letter")),
        "{:?}",
        out.warnings
    );
    let events = nats.read_all("VIDEOAI_EVENTS");
    let count = |s: &str| events.iter().filter(|e| e.stream == s).count();
    assert_eq!((count("cam-a"), count("cam-b")), (29, 30));
    // videoai-events lists it.
    let listed = events_tool(&["stats", &outbox.display().to_string()]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("dead letter") && text.contains("cam-a"),
        "{text}"
    );
}

fn nats_log_urls(nats: &NatsCluster) -> Vec<String> {
    nats::parse_location(&nats.url()).unwrap().unwrap()
}

#[test]
fn events_tool_waits_for_a_new_leader() {
    common::init();
    let mut nats = NatsCluster::start(3);
    let dir = common::TempDir::new("natsdumpleader");
    let p = writer(&nats.url(), &dir, "cam", 40, 50);
    play_all(&[p], || {});
    // One question to the cluster can go unanswered on a loaded machine: asked until it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        match nats.leader_of("VIDEOAI_EVENTS") {
            Some(l) => break l,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => panic!("no leader of VIDEOAI_EVENTS within 30 s"),
        }
    };
    nats.kill(leader);
    let out = events_tool(&["dump", &nats.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 40);
}

#[test]
fn nats_down_the_counts_are_the_outboxes() {
    common::init();
    let dir = common::TempDir::new("natscounts");
    let outbox = dir.join("outbox.db");
    let port = common::free_port();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=12 ! video/x-raw,framerate=25/1 ! raftsink name=sink location=nats://127.0.0.1:{port} \
         outbox-location=\"{}\" eos-timeout=2000000000 stream-id=cam",
        outbox.display()
    ));
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.eos, "{out:?}");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("12 events not acknowledged")),
        "{:?}",
        out.warnings
    );
    let stats = p
        .by_name("sink")
        .unwrap()
        .property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("pending").unwrap(), 12, "{stats}");
    let last = stats.get::<String>("last-error").unwrap();
    assert!(last.to_lowercase().contains("refused"), "{last}");
}

#[test]
fn nats_locations_without_host_or_port_are_refused_at_start() {
    common::init();
    let dir = common::TempDir::new("natsurl");
    for (location, expect) in [("nats://", "host"), ("nats://127.0.0.1:notaport", "port")] {
        let out = gst_launch(
            dir.path(),
            &format!("videotestsrc num-buffers=5 ! raftsink location={location}"),
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{location}");
        assert!(
            err.contains(expect) && err.contains(location),
            "{location}: {err}"
        );
        let stray: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(stray.is_empty(), "{location}: files left: {stray:?}");
    }
}

/// A raftsink harness writing file frames (position keys, 25 fps) of stream `cam` to NATS at
/// `url` through the outbox `outbox`, committing them every `commit_interval_ns`.
fn file_writer(url: &str, outbox: &std::path::Path, commit_interval_ns: u64) -> gst_check::Harness {
    let sink = gst::ElementFactory::make("raftsink")
        .property("commit-interval", commit_interval_ns)
        .property("location", url)
        .property("outbox-location", outbox.display().to_string())
        .property("stream-id", "cam")
        .property("async", false)
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
    h
}

fn push_file_frames(h: &mut gst_check::Harness, frames: std::ops::Range<u64>) {
    for i in frames {
        let mut b = gst::Buffer::with_size(16).unwrap();
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * i));
        h.push(b).unwrap();
    }
}

fn wait_forwarded(h: &gst_check::Harness, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = h.element().unwrap().property::<gst::Structure>("stats");
        let done = s.get::<u64>("forwarded").unwrap() + s.get::<u64>("already-in-nats").unwrap();
        if done >= n {
            return;
        }
        assert!(Instant::now() < deadline, "not forwarded: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nats_refuses_a_key_republished_after_the_duplicate_window() {
    // Writer B stores frames 0-4 and keeps running; writer A (another outbox, another process
    // in real life) stores 0-9. Two seconds later, past the stream's 1 s duplicate window, B
    // goes on with frames 5-9: NATS must not take them a second time.
    common::init();
    let nats = NatsCluster::start(1);
    let dir = common::TempDir::new("nats-window");
    let urls = nats::parse_location(&nats.url()).unwrap().unwrap();
    nats::block_on(async {
        let client = nats::connect(&urls, "test", Duration::from_secs(5), false)
            .await
            .unwrap();
        async_nats::jetstream::new(client)
            .create_stream(async_nats::jetstream::stream::Config {
                name: "VIDEOAI_EVENTS".into(),
                subjects: vec![format!("{}.>", nats::SUBJECT_PREFIX)],
                duplicate_window: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let mut b = file_writer(&nats.url(), &dir.join("outbox-b.db"), 20_000_000);
    push_file_frames(&mut b, 0..5);
    wait_forwarded(&b, 5);
    let mut a = file_writer(&nats.url(), &dir.join("outbox-a.db"), 20_000_000);
    push_file_frames(&mut a, 0..10);
    assert!(a.push_event(gst::event::Eos::new()));
    drop(a);
    std::thread::sleep(Duration::from_secs(2));
    push_file_frames(&mut b, 5..10);
    assert!(b.push_event(gst::event::Eos::new()));
    let stats = b.element().unwrap().property::<gst::Structure>("stats");
    let seqs: Vec<i64> = nats
        .read_all("VIDEOAI_EVENTS")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "{stats}");
    assert_eq!(
        (
            stats.get::<u64>("forwarded").unwrap(),
            stats.get::<u64>("already-in-nats").unwrap()
        ),
        (5, 5),
        "{stats}"
    );
}

#[test]
fn a_stale_writer_s_batch_is_refused_whole_and_nothing_is_stored_twice() {
    // Writer B stores frames 0-4; writer A (another outbox) stores 0-999. B then goes on with
    // 5-999: its view of the subject is stale, so its first atomic batch is refused whole, and
    // its events go one at a time, each found on the subject.
    common::init();
    let nats = NatsCluster::start(1);
    if !nats::takes_atomic_batches(&nats.version()) {
        eprintln!(
            "nats-server {}: no atomic batches, nothing to test",
            nats.version()
        );
        return;
    }
    let dir = common::TempDir::new("nats-stale-batch");
    // B commits every 2 s (and at EOS): its 995 frames reach the outbox, and so its forwarder,
    // together.
    let mut b = file_writer(&nats.url(), &dir.join("outbox-b.db"), 2_000_000_000);
    push_file_frames(&mut b, 0..5);
    wait_forwarded(&b, 5);
    let mut a = file_writer(&nats.url(), &dir.join("outbox-a.db"), 20_000_000);
    push_file_frames(&mut a, 0..1000);
    wait_forwarded(&a, 1000);
    let from_a = a.element().unwrap().property::<gst::Structure>("stats");
    assert!(a.push_event(gst::event::Eos::new()));
    drop(a);
    push_file_frames(&mut b, 5..1000);
    assert!(b.push_event(gst::event::Eos::new()));
    let stats = b.element().unwrap().property::<gst::Structure>("stats");
    let seqs: Vec<i64> = nats
        .read_all("VIDEOAI_EVENTS")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..1000).collect::<Vec<_>>(), "{stats}");
    let get = |s: &gst::Structure, f: &str| s.get::<u64>(f).unwrap();
    assert_eq!(
        (get(&stats, "forwarded"), get(&stats, "already-in-nats")),
        (5, 995),
        "{stats}"
    );
    assert!(get(&from_a, "nats-batches") >= 1, "{from_a}");
    assert!(get(&stats, "nats-batches-refused") >= 1, "{stats}");
}

#[test]
fn pipelines_sharing_an_outbox_publish_each_event_once() {
    // Four pipelines of one process, one outbox: each event is published by one forwarder (the
    // one whose element wrote it), not by all four.
    common::init();
    let nats = NatsCluster::start(1);
    let dir = common::TempDir::new("nats-shared-outbox");
    let outbox = dir.join("outbox.db");
    let frames = 100u32;
    let pipelines: Vec<gst::Pipeline> = (0..4)
        .map(|i| {
            common::parse(&format!(
                "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=16,height=16,framerate=50/1 \
                 ! raftsink name=sink location=\"{}\" outbox-location=\"{}\" stream-id=cam-{i} eos-timeout=60000000000",
                nats.url(),
                outbox.display()
            ))
        })
        .collect();
    for p in &pipelines {
        p.set_state(gst::State::Playing).unwrap();
    }
    let mut published = 0;
    for p in &pipelines {
        let msg = p
            .bus()
            .unwrap()
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS");
        assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
        let s = p
            .by_name("sink")
            .unwrap()
            .property::<gst::Structure>("stats");
        published += s.get::<u64>("forwarded").unwrap() + s.get::<u64>("already-in-nats").unwrap();
        p.set_state(gst::State::Null).unwrap();
    }
    let total = 4 * frames as u64;
    eprintln!("{total} events, {published} publishes by the four forwarders");
    assert_eq!(nats.read_all("VIDEOAI_EVENTS").len() as u64, total);
    assert!(
        published <= total + total / 10,
        "{published} publishes for {total} events"
    );
}

#[test]
fn a_nats_server_without_jetstream_is_said_to_be_one() {
    // videoai-events against a NATS server that has no JetStream: said within seconds (it used
    // to wait 30 s and then talk about a leader).
    common::init();
    let port = common::free_port();
    let mut server = Command::new(common::nats::server_binary())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let out = events_tool(&["dump", &format!("nats://127.0.0.1:{port}")]);
    let took = started.elapsed();
    let _ = server.kill();
    let _ = server.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("has no JetStream") && err.contains("-js"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}
