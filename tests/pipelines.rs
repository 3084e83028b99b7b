// SPDX-License-Identifier: MPL-2.0
//! The ready pipeline files in pipelines/: every one parses with `gst-launch-1.0` syntax (the
//! GPU ones may lack only their GPU elements here), and every CPU one runs for real: files,
//! an RTSP camera (gst-rtsp-server on 127.0.0.1), four cameras, NATS. (`demo-cpu.pipeline`
//! runs in tests/raftsink.rs, `demo_pipeline_file_end_to_end`.)

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::rtsp::RtspCamera;
use gst::prelude::*;
use gstvideoai::eventlog::store::EventStore;

/// Elements the GPU pipelines need and this machine may not have.
const GPU_ELEMENTS: &[&str] = &["nvh264dec", "vaapih264dec", "vah264dec"];

fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let Some(j) = rest[i..].find('}') else { break };
        let inner = &rest[i + 2..i + j];
        // ${NAME:-DEFAULT}: filled by its default (common::pipeline_file) unless given.
        if inner.contains(":-") {
            rest = &rest[i + j..];
            continue;
        }
        let name = inner.to_string();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &rest[i + j..];
    }
    out
}

#[test]
fn rtsp_server_child() {
    // The RTSP camera process of the tests below (does nothing when run as a test).
    common::rtsp::serve_if_child();
}

#[test]
fn every_pipeline_file_parses() {
    common::init();
    let dir = common::root().join("pipelines");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("pipeline") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().any(|l| l.contains("scripts/run-pipeline.sh")),
            "{name}: the header says how to run it"
        );
        let vars: HashMap<&str, String> = placeholders(&text)
            .into_iter()
            .map(|n| -> (&str, String) { (Box::leak(n.into_boxed_str()), "/tmp/x".into()) })
            .collect();
        let desc = common::pipeline_file(&name, &vars);
        let mut ctx = gst::ParseContext::new();
        match gst::parse::launch_full(&desc, Some(&mut ctx), gst::ParseFlags::empty()) {
            Ok(_) => {}
            Err(e) => {
                let missing = ctx.missing_elements();
                assert!(
                    e.matches(gst::ParseError::NoSuchElement)
                        && !missing.is_empty()
                        && missing.iter().all(|m| GPU_ELEMENTS.contains(&m.as_str())),
                    "{name}: {e} (missing: {missing:?})"
                );
                eprintln!("{name}: parses; this machine lacks {missing:?}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 8, "{checked} files");
}

fn base_vars(dir: &common::TempDir) -> HashMap<&'static str, String> {
    HashMap::from([
        ("MODEL", common::model().display().to_string()),
        ("LABELS", common::labels().display().to_string()),
        ("EVENTS", dir.join("events.db").display().to_string()),
    ])
}

/// Decoded frames of an MP4.
fn count_frames(path: &Path) -> usize {
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! avdec_h264 ! appsink name=s sync=false",
        path.display()
    ));
    let sink = p
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut n = 0;
    while sink
        .try_pull_sample(gst::ClockTime::from_seconds(30))
        .is_some()
    {
        n += 1;
    }
    p.set_state(gst::State::Null).unwrap();
    n
}

#[test]
fn overlay_to_file_runs() {
    common::init();
    let dir = common::TempDir::new("pl-overlay");
    let clip = dir.join("clip.mp4");
    let out = dir.join("overlay.mp4");
    common::make_clip(&clip, 640, 360, 20);
    let mut vars = base_vars(&dir);
    vars.insert("INPUT", clip.display().to_string());
    vars.insert("OUTPUT", out.display().to_string());
    let desc = common::pipeline_file("overlay-to-file.pipeline", &vars);
    let o = common::run(&common::parse(&desc), Duration::from_secs(120));
    assert!(o.eos && o.errors.is_empty(), "{o:?}");
    assert_eq!(count_frames(&out), 20);
}

/// Plays `desc` until `enough` says so (bounded), then ends it with EOS as `gst-launch-1.0 -e`
/// does on Ctrl-C.
fn run_live(desc: &str, deadline: Duration, mut enough: impl FnMut() -> bool) {
    run_live_with(desc, deadline, &mut enough, |_| String::new())
}

/// `run_live`, with `diag` describing the pipeline when it does not get enough in time.
fn run_live_with(
    desc: &str,
    deadline: Duration,
    mut enough: impl FnMut() -> bool,
    diag: impl Fn(&gst::Pipeline) -> String,
) {
    let p = common::parse(desc);
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let end = Instant::now() + deadline;
    while !enough() {
        if Instant::now() >= end {
            let d = diag(&p);
            p.set_state(gst::State::Null).unwrap();
            panic!("not enough within {deadline:?}: {d}");
        }
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(200))
            && let gst::MessageView::Error(e) = m.view()
        {
            p.set_state(gst::State::Null).unwrap();
            panic!(
                "{:?}: {} ({:?})",
                e.src().map(|s| s.path_string()),
                e.error(),
                e.debug()
            );
        }
    }
    p.send_event(gst::event::Eos::new());
    let eos = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(
            eos.as_ref().map(|m| m.view()),
            Some(gst::MessageView::Eos(_))
        ),
        "{eos:?}"
    );
}

fn stored(db: &Path, stream: &str) -> usize {
    EventStore::open_for_reading(db)
        .and_then(|s| s.events(Some(stream)))
        .map(|e| e.len())
        .unwrap_or(0)
}

#[test]
fn rtsp_camera_on_the_cpu_runs() {
    common::init();
    let cam = RtspCamera::start("rtsp_server_child");
    let dir = common::TempDir::new("pl-rtsp");
    let db = dir.join("events.db");
    let mut vars = base_vars(&dir);
    vars.insert("CAMERA", cam.uri());
    vars.insert("STREAM", "cam1".into());
    let desc = common::pipeline_file("rtsp-cpu.pipeline", &vars);
    run_live(&desc, Duration::from_secs(90), || stored(&db, "cam1") >= 20);
    let events = EventStore::open_for_reading(&db)
        .unwrap()
        .events(Some("cam1"))
        .unwrap();
    assert!(events.len() >= 20);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn four_cameras_run() {
    common::init();
    let cam = RtspCamera::start("rtsp_server_child");
    let dir = common::TempDir::new("pl-four");
    let db = dir.join("events.db");
    let mut vars = base_vars(&dir);
    for name in ["CAMERA1", "CAMERA2", "CAMERA3", "CAMERA4"] {
        vars.insert(name, cam.uri());
    }
    let desc = common::pipeline_file("four-cameras.pipeline", &vars);
    let cams = ["cam1", "cam2", "cam3", "cam4"];
    run_live(&desc, Duration::from_secs(120), || {
        cams.iter().all(|c| stored(&db, c) >= 5)
    });
    for c in cams {
        assert!(stored(&db, c) >= 5, "{c}");
    }
}

#[test]
fn four_cameras_batched_run() {
    common::init();
    let cam = RtspCamera::start("rtsp_server_child");
    let dir = common::TempDir::new("pl-four-batched");
    let db = dir.join("events.db");
    let mut vars = base_vars(&dir);
    for name in ["CAMERA1", "CAMERA2", "CAMERA3", "CAMERA4"] {
        vars.insert(name, cam.uri());
    }
    vars.insert("OUTDIR", dir.path().display().to_string());
    let desc = common::pipeline_file("four-cameras-batched.pipeline", &vars);
    let cams = ["cam1", "cam2", "cam3", "cam4"];
    run_live_with(
        &desc,
        Duration::from_secs(120),
        || cams.iter().all(|c| stored(&db, c) >= 5),
        |p| {
            let counts: Vec<usize> = cams.iter().map(|c| stored(&db, c)).collect();
            let sync = p
                .by_name("sync")
                .unwrap()
                .property::<gst::Structure>("stats");
            let inf = p
                .by_name("onnxinfer0")
                .map(|e| e.property::<gst::Structure>("stats").to_string());
            format!("stored {counts:?}; framesync {sync}; onnxinfer {inf:?}")
        },
    );
    for (i, c) in cams.iter().enumerate() {
        assert!(stored(&db, c) >= 5, "{c}");
        let frames = count_frames(&dir.join(&format!("cam{}.mp4", i + 1)));
        assert!(frames >= 5, "{c}: {frames} frames in its overlay file");
    }
}

#[test]
fn nats_output_runs() {
    common::init();
    let nats = common::nats::NatsCluster::start(1);
    nats.wait_ready(Duration::from_secs(20));
    let dir = common::TempDir::new("pl-nats");
    let clip = dir.join("clip.mp4");
    common::make_clip(&clip, 320, 240, 15);
    let mut vars = base_vars(&dir);
    vars.insert("INPUT", clip.display().to_string());
    vars.insert("NATS", nats.url());
    vars.insert("OUTBOX", dir.join("outbox.db").display().to_string());
    vars.insert("STREAM", "demo".into());
    let desc = common::pipeline_file("nats.pipeline", &vars);
    let o = common::run(&common::parse(&desc), Duration::from_secs(120));
    assert!(o.eos && o.errors.is_empty(), "{o:?}");
    let events = nats.read_all("VIDEOAI_EVENTS");
    assert_eq!(events.len(), 15);
    assert!(events.iter().all(|e| e.stream == "demo"));
}

/// `fleet-camera.pipeline` as a worker runs it for a camera with `MOTION_GATE=true` and
/// `IGNORE_ZONES`: the still-camera scene (a real photo, a motorbike crossing frames 100–180)
/// as a file, the demo's detector, events into NATS, recording on the motorbike. The gate infers
/// on part of the frames, every frame's event is stored, the motorbike is among them, and its
/// clip and the snapshots are written and stored in NATS with their events.
#[test]
fn fleet_camera_pipeline_runs_with_the_motion_gate() {
    use common::still_scene;
    common::init();
    let nats = common::nats::NatsCluster::start(1);
    nats.wait_ready(Duration::from_secs(20));
    let dir = common::TempDir::new("pl-fleet-gate");
    let clip = dir.join("still.mp4");
    let frames = 200;
    still_scene::write_clip(&clip, frames);
    let vars = HashMap::from([
        ("CAMERA_ID", "cam7".to_string()),
        (
            "URI",
            glib::filename_to_uri(&clip, None).unwrap().to_string(),
        ),
        ("NATS", nats.url()),
        ("MODEL", common::coco_model().display().to_string()),
        ("LABELS", common::coco_labels().display().to_string()),
        ("MOTION_GATE", "true".to_string()),
        ("IGNORE_ZONES", still_scene::IGNORE_ZONES.to_string()),
        ("CLIPS", dir.join("clips").display().to_string()),
        ("RECORD_LABELS", "motorbike".to_string()),
        ("SNAPSHOTS", "true".to_string()),
    ]);
    let desc = common::pipeline_file("fleet-camera.pipeline", &vars);
    assert!(desc.contains("motion-gate=true"), "{desc}");
    let p = common::parse(&desc);
    // The pipeline runs in the worker's working directory (raftsink's default outbox).
    let outbox = dir.join("outbox.db");
    let log = p
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "raftsink"))
        .unwrap();
    log.set_property("outbox-location", outbox.display().to_string());
    let o = common::run(&p, Duration::from_secs(180));
    assert!(o.eos && o.errors.is_empty(), "{o:?}");
    let by_factory = |name: &str| {
        p.iterate_elements()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| f.name() == name))
            .unwrap()
            .property::<gst::Structure>("stats")
    };
    let infer = by_factory("onnxinfer");
    let motion = by_factory("motiondetect");
    eprintln!("{infer}\n{motion}");
    let get = |s: &gst::Structure, f: &str| s.get::<u64>(f).unwrap();
    let inferred = get(&infer, "inferred");
    assert_eq!(get(&motion, "frames"), frames as u64, "{motion}");
    assert!(get(&motion, "moving-frames") >= 60, "{motion}");
    assert_eq!(get(&infer, "gate-no-motion-meta"), 0, "{infer}");
    assert_eq!(
        inferred + get(&infer, "gate-skipped"),
        frames as u64,
        "{infer}"
    );
    assert!(
        inferred * 2 <= frames as u64,
        "{inferred} of {frames} inferred: {infer}"
    );
    let events = nats.read_all("VIDEOAI_EVENTS");
    assert_eq!(events.len(), frames, "every frame's event stored once");
    assert!(events.iter().all(|e| e.stream == "cam7"));
    let motorbikes = events
        .iter()
        .filter(|e| e.detections.iter().any(|d| d.label == "motorbike"))
        .count();
    assert!(motorbikes >= 40, "{motorbikes} events with the motorbike");
    // It recorded: the motorbike's clip and the tracks' snapshots, each stored with its event.
    let written: Vec<_> = std::fs::read_dir(dir.join("clips"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let ext = |e: &str| {
        written
            .iter()
            .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(e))
            .count()
    };
    assert!(ext("mp4") >= 1 && ext("jpg") >= 1, "{written:?}");
    let records: Vec<_> = events.iter().flat_map(|e| e.clips.iter()).collect();
    let kinds = |k: &str| records.iter().filter(|r| r.kind == k).count();
    assert!(kinds("trigger") >= 1, "{records:?}");
    assert_eq!(kinds("snapshot"), ext("jpg"), "{records:?}");
}
