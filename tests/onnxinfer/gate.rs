// SPDX-License-Identifier: MPL-2.0
//! The motion gate: `motiondetect ! onnxinfer motion-gate=true ! objecttracker` on the
//! still-camera scene (tests/common/still_scene.rs: a real photo as the background, sensor
//! noise, a slow brightness ramp, a flickering block in an ignore zone, a motorbike crossing during
//! a fifth of the time, a cat appearing unseen by the motion detector), next to the same frames
//! inferred one by one.

use std::collections::{BTreeMap, BTreeSet};

use gst::prelude::*;
use gstvideoai::formats::{detection, motion};

use super::common;
use super::common::still_scene::{self, Scene};

/// What came out for one frame.
#[derive(Debug, Clone)]
struct Out {
    fresh: bool,
    /// (label, track id) of the confirmed tracks.
    tracks: Vec<(String, u64)>,
    regions: Vec<(u32, u32, u32, u32)>,
}

/// Runs the scene through `[motiondetect !] onnxinfer … ! objecttracker`; the frames out and
/// the stats of onnxinfer, objecttracker and motiondetect (if there).
fn run(
    scene: &Scene,
    gated: bool,
) -> (
    Vec<Out>,
    gst::Structure,
    gst::Structure,
    Option<gst::Structure>,
) {
    let front = if gated {
        format!(
            "motiondetect name=m ignore-zones=\"{}\" ! ",
            still_scene::IGNORE_ZONES
        )
    } else {
        String::new()
    };
    let gate = if gated {
        "motion-gate=true still-interval=3000000000"
    } else {
        ""
    };
    let (p, src) = common::from_appsrc(
        &Scene::caps(),
        &format!(
            "{front}onnxinfer name=i model-location=\"{}\" labels-location=\"{}\" model-type=yolov5 \
             iou-threshold=0.2 {gate} ! objecttracker name=t lines=\"{}\" ! appsink name=out sync=false",
            common::coco_model().display(),
            common::coco_labels().display(),
            still_scene::LINES
        ),
    );
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    src.set_max_bytes(8 * 1024 * 1024);
    src.set_block(true);
    p.set_state(gst::State::Playing).unwrap();
    let pusher = {
        let src = src.clone();
        let buffers: Vec<gst::Buffer> = (0..still_scene::FRAMES).map(|i| scene.buffer(i)).collect();
        std::thread::spawn(move || {
            for b in buffers {
                if src.push_buffer(b).is_err() {
                    return;
                }
            }
            let _ = src.end_of_stream();
        })
    };
    let mut outs = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(120)) {
        let b = sample.buffer().unwrap();
        let tracks = detection::read(b)
            .into_iter()
            .filter_map(|(d, _)| Some((d.label, d.track_id?)))
            .collect();
        outs.push(Out {
            fresh: detection::inference_fresh(b).unwrap_or(true),
            tracks,
            regions: motion::regions(b).iter().map(|r| r.rect).collect(),
        });
        if outs.len() == still_scene::FRAMES {
            break;
        }
    }
    pusher.join().unwrap();
    let bus = p.bus().unwrap();
    let errors: Vec<_> = bus
        .iter_filtered(&[gst::MessageType::Error])
        .map(|m| format!("{m:?}"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let stats = |name: &str| {
        p.by_name(name)
            .map(|e| e.property::<gst::Structure>("stats"))
    };
    let (i, t, m) = (stats("i").unwrap(), stats("t").unwrap(), stats("m"));
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(outs.len(), still_scene::FRAMES, "every frame came out");
    (outs, i, t, m)
}

fn line_counts(tracker_stats: &gst::Structure) -> Vec<(String, u64, u64)> {
    tracker_stats
        .get::<gst::Array>("lines")
        .unwrap()
        .iter()
        .map(|v| {
            let s = v.get::<gst::Structure>().unwrap();
            (
                s.get::<String>("line").unwrap(),
                s.get::<u64>("in").unwrap(),
                s.get::<u64>("out").unwrap(),
            )
        })
        .collect()
}

/// Per label: the tracks and the frames each was reported on.
type Tracks = BTreeMap<String, BTreeMap<u64, BTreeSet<usize>>>;

fn tracks(outs: &[Out]) -> Tracks {
    let mut by: Tracks = BTreeMap::new();
    for (i, o) in outs.iter().enumerate() {
        for (label, id) in &o.tracks {
            by.entry(label.clone())
                .or_default()
                .entry(*id)
                .or_default()
                .insert(i);
        }
    }
    by
}

#[test]
fn the_motion_gate_infers_a_quarter_of_a_still_scene_and_counts_as_every_frame() {
    common::init();
    let scene = Scene::new();
    let (every, every_i, every_t, _) = run(&scene, false);
    let (gated, gated_i, gated_t, motion) = run(&scene, true);
    let motion = motion.unwrap();
    let n = still_scene::FRAMES as u64;
    let inferred = gated_i.get::<u64>("inferred").unwrap();
    eprintln!("every frame: {every_i}\n{every_t}\ngated: {gated_i}\n{gated_t}\n{motion}");
    assert_eq!(every_i.get::<u64>("inferred").unwrap(), n);

    // At most a quarter of the frames inferred, and why is counted.
    assert!(inferred * 4 <= n, "{inferred} of {n} inferred: {gated_i}");
    let skipped = gated_i.get::<u64>("gate-skipped").unwrap();
    assert_eq!(skipped + inferred, n, "{gated_i}");
    assert_eq!(gated.iter().filter(|o| o.fresh).count() as u64, inferred);
    assert_eq!(gated_i.get::<u64>("gate-no-motion-meta").unwrap(), 0);
    assert!(gated_i.get::<u64>("gate-motion").unwrap() >= still_scene::CROSSING.len() as u64 - 2);

    // The same counts, and the same tracks: as many per label, each reported on about the
    // same frames (a track may end up to a still-interval later or earlier where nothing moves).
    let counts = line_counts(&every_t);
    // Left to right over a line drawn downwards: `out` (plugins/formats/places.rs).
    assert_eq!(counts, vec![("middle".to_string(), 0, 1)], "{every_t}");
    assert_eq!(line_counts(&gated_t), counts, "{gated_t}");
    let (a, b) = (tracks(&every), tracks(&gated));
    let shape = |t: &Tracks| -> Vec<(String, usize)> {
        t.iter().map(|(l, ids)| (l.clone(), ids.len())).collect()
    };
    assert_eq!(shape(&a), shape(&b), "every frame: {a:?}\ngated: {b:?}");
    let crossing =
        |t: &Tracks| -> BTreeSet<usize> { t["motorbike"].values().next().unwrap().clone() };
    assert_eq!(
        crossing(&a),
        crossing(&b),
        "the motorbike is followed on the same frames"
    );

    // The cat appeared where motion is ignored: found within still-interval (3 s = 45 frames).
    let cat_first = |t: &Tracks| {
        t.get("cat")
            .and_then(|ids| ids.values().map(|f| *f.iter().next().unwrap()).min())
    };
    let first = cat_first(&b).expect("the cat is found");
    assert!(
        (still_scene::CAT_FROM..still_scene::CAT_FROM + 45 + 2).contains(&first),
        "cat first reported on frame {first}"
    );
    assert!(cat_first(&a).is_some());

    // The ignore zone held: no motion region in it, though its block flickers every frame,
    // and the moving frames are about the motorbike's.
    for (i, o) in gated.iter().enumerate() {
        for r in &o.regions {
            assert!(
                !still_scene::in_ignore_zone(*r),
                "frame {i}: region {r:?} in the ignore zone"
            );
        }
    }
    let moving = motion.get::<u64>("moving-frames").unwrap();
    assert!(
        moving <= still_scene::CROSSING.len() as u64 + 4,
        "{moving} frames with motion: {motion}"
    );
    assert_eq!(motion.get::<u64>("shaking-frames").unwrap(), 0);
}

/// `videotestsrc pattern=ball` (a ball moving over black) and `pattern=black` (nothing moves)
/// at 320×240 I420, 15 fps.
fn camera(pattern: &str, frames: u32) -> String {
    format!(
        "videotestsrc pattern={pattern} num-buffers={frames} \
         ! video/x-raw,format=I420,width=320,height=240,framerate=15/1"
    )
}

#[test]
fn motion_regions_are_marked_on_every_frame_and_are_never_taken_for_detections() {
    common::init();
    let p = common::parse(&format!(
        "{} ! motiondetect name=m ! objecttracker name=t ! detectionoverlay \
         ! appsink name=out sync=false",
        camera("ball", 40)
    ));
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let (mut frames, mut with_regions) = (0, 0);
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let b = s.buffer().unwrap();
        frames += 1;
        let m = motion::read(b).expect("every frame has a videoai-motion meta");
        let regions = motion::regions(b);
        assert_eq!(m.regions as usize, regions.len());
        assert_eq!(m.moving, !regions.is_empty());
        with_regions += !regions.is_empty() as usize;
        assert!(
            detection::read(b).is_empty(),
            "motion regions are not detections"
        );
        assert!(!detection::has_detections(b));
    }
    let t = p.by_name("t").unwrap().property::<gst::Structure>("stats");
    let m = p.by_name("m").unwrap().property::<gst::Structure>("stats");
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(frames, 40);
    // The ball moves on every frame but the first (which starts the background).
    assert!(with_regions >= 38, "{with_regions} of 40: {m}");
    assert_eq!(t.get::<u64>("detections").unwrap(), 0, "{t}");
    assert_eq!(m.get::<u64>("frames").unwrap(), 40);
    assert!(m.get::<f64>("mean-ms").unwrap() > 0.0);
}

#[test]
fn motiondetect_refuses_bad_ignore_zones_and_warns_of_one_outside_the_frame() {
    common::init();
    for (zones, want) in [
        (
            "clock:0,0,10,10",
            "expected an even count of at least 6 numbers",
        ),
        ("clock:0,0,10,0,20,0", "enclose no area"),
        ("clock:a,0,10,10,0,10", "'a' is not a number"),
    ] {
        let p = common::parse(&format!(
            "{} ! motiondetect ignore-zones=\"{zones}\" ! fakesink",
            camera("ball", 5)
        ));
        let out = common::run(&p, std::time::Duration::from_secs(30));
        assert!(
            out.first_error().contains("ignore-zones") && out.first_error().contains(want),
            "{zones}: {out:?}"
        );
    }
    let p = common::parse(&format!(
        "{} ! motiondetect ignore-zones=\"far:5000,5000,6000,5000,6000,6000\" ! fakesink",
        camera("ball", 5)
    ));
    let out = common::run(&p, std::time::Duration::from_secs(30));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("'far'") && w.contains("outside")),
        "{out:?}"
    );
}

#[test]
fn the_gate_works_per_camera_in_framesync_batches_and_warns_without_motiondetect() {
    common::init();
    let infer = format!(
        "onnxinfer name=i model-location=\"{}\" model-type=yolov5 motion-gate=true",
        common::coco_model().display()
    );
    let p = common::parse(&format!(
        "framesync name=sync ! {infer} ! fakesink \
         {} ! motiondetect ! sync.sink_0 \
         {} ! motiondetect ! sync.sink_1",
        camera("ball", 45),
        camera("black", 45)
    ));
    let out = common::run(&p, std::time::Duration::from_secs(120));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let s = p.by_name("i").unwrap().property::<gst::Structure>("stats");
    let get = |f: &str| s.get::<u64>(f).unwrap();
    // The ball's frames are inferred for their motion; the black camera's are held back but
    // for the first two (no result yet, then a first result) and still-interval (2 s: 30
    // frames at 15 fps).
    assert_eq!(get("gate-no-motion-meta"), 0, "{s}");
    assert!(get("gate-motion") >= 40, "{s}");
    assert!(get("gate-skipped") >= 38, "{s}");
    assert!(get("inferred") <= 45 + 5, "{s}");
    assert!(out.warnings.is_empty(), "{out:?}");

    // Without motiondetect the gate lets every frame through, counted and warned about once.
    let p = common::parse(&format!("{} ! {infer} ! fakesink", camera("ball", 10)));
    let out = common::run(&p, std::time::Duration::from_secs(60));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let s = p.by_name("i").unwrap().property::<gst::Structure>("stats");
    assert_eq!(s.get::<u64>("inferred").unwrap(), 10, "{s}");
    // (The first frame has no result to carry: the gate is not asked.)
    assert_eq!(s.get::<u64>("gate-no-motion-meta").unwrap(), 9, "{s}");
    assert_eq!(
        out.warnings
            .iter()
            .filter(|w| w.contains("no motiondetect"))
            .count(),
        1,
        "{out:?}"
    );
}

/// A camera that pans over a textured view (a photo filling the frame, moving 6 px more to the
/// left on every frame): motiondetect marks the frames shaking, and the gated onnxinfer infers
/// every one of them, counted as `gate-shaking`: the gate costs nothing but the motion
/// detector, and misses nothing.
#[test]
fn a_shaking_camera_is_inferred_on_every_frame_and_counted() {
    common::init();
    let (w, h) = (still_scene::WIDTH, still_scene::HEIGHT);
    let view = still_scene::photo("chelsea", None, w, h);
    let frames = 40;
    let (p, src) = common::from_appsrc(
        &Scene::caps(),
        &format!(
            "motiondetect name=m ! onnxinfer name=i model-location=\"{}\" model-type=yolov5 \
             motion-gate=true ! fakesink",
            common::coco_model().display()
        ),
    );
    p.set_state(gst::State::Playing).unwrap();
    for i in 0..frames {
        let mut frame = view.data.clone();
        let shift = (6 * i) % w;
        for row in frame[..w * h].chunks_mut(w) {
            row.rotate_left(shift);
        }
        let mut b = gst::Buffer::from_mut_slice(frame);
        let d = 1_000_000_000 / still_scene::FPS;
        let bm = b.get_mut().unwrap();
        bm.set_pts(gst::ClockTime::from_nseconds(i as u64 * d));
        bm.set_duration(gst::ClockTime::from_nseconds(d));
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let out = common::run(&p, std::time::Duration::from_secs(120));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let m = p.by_name("m").unwrap().property::<gst::Structure>("stats");
    let s = p.by_name("i").unwrap().property::<gst::Structure>("stats");
    let get = |st: &gst::Structure, f: &str| st.get::<u64>(f).unwrap();
    // The first frame starts the background; the photo's plain parts do not change when they
    // move, so a few frames fall under the shake fraction: those move, and are inferred for it.
    let shaking = get(&m, "shaking-frames");
    assert!(shaking >= frames as u64 * 3 / 4, "{m}");
    assert_eq!(get(&m, "moving-frames"), frames as u64 - 1, "{m}");
    assert_eq!(get(&s, "inferred"), frames as u64, "{s}");
    assert_eq!(get(&s, "gate-skipped"), 0, "{s}");
    assert!(get(&s, "gate-shaking") >= frames as u64 * 3 / 4, "{s}");
    assert_eq!(
        get(&s, "gate-shaking") + get(&s, "gate-motion"),
        frames as u64 - 1,
        "{s}"
    );
}
