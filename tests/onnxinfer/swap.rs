// SPDX-License-Identifier: MPL-2.0
//! onnxinfer while PLAYING: hot swap of the model (loaded off the streaming thread, switched
//! between two frames, a broken model refused) and canary splits by stream and by frame.

use crate::common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::onnx_model::Spec;
use gst::prelude::*;
use gstvideoai::formats::detection;

/// A YOLOv5-style model with one box of class `class` (so each model's output differs), made
/// slow to load by `ballast` unused floats.
fn model(dir: &common::TempDir, name: &str, class: usize, ballast: usize) -> PathBuf {
    let mut row = vec![32.0, 24.0, 16.0, 16.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    row[5 + class] = 0.9;
    let p = dir.join(&format!("{name}.onnx"));
    Spec::image(64, 64)
        .output("output0", &[1, 1, 11], row)
        .with_ballast(ballast)
        .write(&p);
    p
}

#[test]
fn hot_swap_while_playing() {
    common::init();
    let dir = common::TempDir::new("swap");
    let ballast = 6_000_000; // 24 MB: loading takes far longer than one frame
    let models: Vec<PathBuf> = (0..6)
        .map(|i| model(&dir, &format!("m{i}"), i, ballast))
        .collect();
    let broken = dir.join("broken.onnx");
    std::fs::write(&broken, b"not a model").unwrap();

    // How long one load takes, for comparison with per-frame time below.
    let load_started = Instant::now();
    let opts = gstvideoai::onnxinfer::model::LoadOptions {
        model_type: gstvideoai::onnxinfer::ModelType::Auto,
        session: gstvideoai::onnxinfer::runtime::SessionConfig {
            threads: 0,
            spinning: false,
            optimization: gstvideoai::onnxinfer::OptimizationLevel::All,
            provider: gstvideoai::onnxinfer::ExecutionProvider::Cpu,
            provider_fallback: false,
        },
    };
    gstvideoai::onnxinfer::model::Model::load(&models[1], &opts).unwrap();
    let load_time = load_started.elapsed();

    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers=300 ! video/x-raw,width=64,height=48,framerate=50/1 \
         ! onnxinfer name=infer model-location=\"{}\" ! fakesink sync=false",
        models[0].display()
    ));
    let infer = p.by_name("infer").unwrap();
    // Per frame: the model that produced its result and the time onnxinfer spent on it.
    let frames = Arc::new(Mutex::new(Vec::<(Option<String>, Duration)>::new()));
    let entered = Arc::new(Mutex::new(None::<Instant>));
    let e2 = entered.clone();
    infer
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            *e2.lock().unwrap() = Some(Instant::now());
            gst::PadProbeReturn::Ok
        });
    let f2 = frames.clone();
    infer
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let took = entered
                .lock()
                .unwrap()
                .map(|t| t.elapsed())
                .unwrap_or_default();
            f2.lock()
                .unwrap()
                .push((detection::inference_model(info.buffer().unwrap()), took));
            gst::PadProbeReturn::Ok
        });

    let infer2 = infer.clone();
    let to_set: Vec<PathBuf> = vec![
        models[1].clone(),
        models[2].clone(),
        broken.clone(),
        models[3].clone(),
        models[4].clone(),
        models[5].clone(),
    ];
    let swapper = std::thread::spawn(move || {
        let mut after_broken = None;
        let count = |key: &str| {
            infer2
                .property::<gst::Structure>("stats")
                .get::<u64>(key)
                .unwrap()
        };
        for path in to_set {
            // Some frames on the current model, then the next swap once the last one took
            // effect (a newer request supersedes a load still running, by design).
            std::thread::sleep(Duration::from_millis(150));
            let key = if path.ends_with("broken.onnx") {
                "swaps-refused"
            } else {
                "swaps"
            };
            let before = count(key);
            infer2.set_property("model-location", path.display().to_string());
            let deadline = Instant::now() + Duration::from_secs(10);
            while count(key) == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if key == "swaps-refused" {
                // Refused: the property goes back to the model that keeps running.
                after_broken = Some(infer2.property::<String>("model-location"));
            }
        }
        after_broken
    });
    let out = common::run(&p, Duration::from_secs(30));
    let after_broken = swapper.join().unwrap();
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("refusing new primary model") && w.contains("broken.onnx")),
        "{:?}",
        out.warnings
    );
    assert_eq!(
        after_broken.as_deref(),
        Some(models[2].display().to_string().as_str())
    );

    let frames = frames.lock().unwrap().clone();
    assert_eq!(frames.len(), 300, "no frame dropped");
    // Every frame carries a result, and the model changes exactly five times, in order.
    let ids: Vec<String> = frames
        .iter()
        .map(|f| f.0.clone().expect("every frame has a result"))
        .collect();
    let mut runs: Vec<String> = Vec::new();
    for id in &ids {
        if runs.last() != Some(id) {
            runs.push(id.clone());
        }
    }
    let stems: Vec<String> = runs
        .iter()
        .map(|r| r.split('@').next().unwrap().to_string())
        .collect();
    assert_eq!(stems, vec!["m0", "m1", "m2", "m3", "m4", "m5"], "{runs:?}");
    let stats = infer.property::<gst::Structure>("stats");
    assert_eq!(
        (
            stats.get::<u64>("swaps").unwrap(),
            stats.get::<u64>("swaps-refused").unwrap()
        ),
        (5, 1),
        "{stats}"
    );
    // No frame waited for a load: the slowest frame took far less than loading one model.
    let slowest = frames.iter().map(|f| f.1).max().unwrap();
    eprintln!("slowest frame {slowest:?}, one model load {load_time:?}");
    assert!(
        slowest * 3 < load_time,
        "slowest frame {slowest:?}, one model load {load_time:?}"
    );
}

/// One stream through onnxinfer (harness): `frames` frames with stream-id `stream`; returns the
/// model stem of each frame's result.
fn stream_models(
    primary: &std::path::Path,
    canary: &std::path::Path,
    props: &[(&str, &str)],
    stream: &str,
    frames: u32,
) -> (Vec<String>, gst::Structure) {
    common::init();
    let infer = gst::ElementFactory::make("onnxinfer")
        .property("model-location", primary.display().to_string())
        .property("canary-model-location", canary.display().to_string())
        .build()
        .unwrap();
    for (k, v) in props {
        infer.set_property_from_str(k, v);
    }
    let mut h = gst_check::Harness::with_element(&infer, Some("sink"), Some("src"));
    h.push_event(gst::event::StreamStart::new(stream));
    h.push_event(gst::event::Caps::new(
        &gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", 32)
            .field("height", 24)
            .field("framerate", gst::Fraction::new(30, 1))
            .build(),
    ));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    let mut models = Vec::new();
    for i in 0..frames {
        let mut b = gst::Buffer::with_size(32 * 24 * 3).unwrap();
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(33 * i as u64));
        let out = h.push_and_pull(b).unwrap();
        let m = detection::inference_model(&out).unwrap();
        models.push(m.split('@').next().unwrap().to_string());
    }
    (models, infer.property("stats"))
}

/// The documented split: FNV-1a 64 of the stream id, modulo 10^6, over 10^6, below the fraction.
fn expected_canary(stream: &str, fraction: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    ((h % 1_000_000) as f64 / 1_000_000.0) < fraction
}

#[test]
fn canary_by_stream_is_deterministic_and_stable() {
    let dir = common::TempDir::new("canary");
    let (a, b) = (model(&dir, "primary", 0, 0), model(&dir, "canary", 1, 0));
    let streams: Vec<String> = (0..8).map(|i| format!("camera-{i}")).collect();
    let split = |_: u32| -> Vec<bool> {
        streams
            .iter()
            .map(|s| {
                let (models, _) = stream_models(&a, &b, &[("canary-fraction", "0.5")], s, 5);
                assert!(
                    models.iter().all(|m| *m == models[0]),
                    "{s}: one model per stream: {models:?}"
                );
                models[0] == "canary"
            })
            .collect()
    };
    let first = split(0);
    let expected: Vec<bool> = streams.iter().map(|s| expected_canary(s, 0.5)).collect();
    assert_eq!(first, expected);
    assert!(
        first.iter().any(|c| *c) && first.iter().any(|c| !*c),
        "{first:?}"
    );
    assert_eq!(split(1), first, "stable across runs");
}

#[test]
fn canary_by_frame_takes_its_share_and_stats_compare() {
    let dir = common::TempDir::new("canaryframe");
    let (a, b) = (model(&dir, "primary", 0, 0), model(&dir, "canary", 1, 0));
    let (models, stats) = stream_models(
        &a,
        &b,
        &[("canary-fraction", "0.25"), ("canary-by", "frame")],
        "cam",
        100,
    );
    assert_eq!(models.iter().filter(|m| *m == "canary").count(), 25);
    // Spread evenly: every fourth frame.
    assert!(
        models
            .chunks(4)
            .all(|c| c.iter().filter(|m| *m == "canary").count() == 1),
        "{models:?}"
    );
    let per_model: Vec<gst::Structure> = stats
        .get::<gst::Array>("models")
        .unwrap()
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .collect();
    assert_eq!(per_model.len(), 2, "{stats}");
    for m in &per_model {
        let (role, frames) = (
            m.get::<String>("role").unwrap(),
            m.get::<u64>("frames").unwrap(),
        );
        assert_eq!(frames, if role == "canary" { 25 } else { 75 }, "{m}");
        assert_eq!(m.get::<f64>("detections-per-frame").unwrap(), 1.0);
        assert!(m.get::<f64>("inference-mean-ms").unwrap() > 0.0);
    }
    assert!(
        stats
            .get::<String>("canary-model")
            .unwrap()
            .starts_with("canary@")
    );
}

/// Runs `frames` live frames of 64x48 through `onnxinfer name=infer <props>`; returns the bus
/// outcome, the element messages onnxinfer posted, per frame the model stem of its result,
/// and the final stats.
fn run_live(
    props: &str,
    frames: u32,
) -> (
    common::Outcome,
    Vec<gst::Structure>,
    Vec<String>,
    gst::Structure,
) {
    common::init();
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! onnxinfer name=infer {props} ! fakesink name=sink sync=false"
    ));
    let infer = p.by_name("infer").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let m = detection::inference_model(info.buffer().unwrap()).unwrap_or_default();
            s2.lock()
                .unwrap()
                .push(m.split('@').next().unwrap().to_string());
            gst::PadProbeReturn::Ok
        });
    let messages = Arc::new(Mutex::new(Vec::new()));
    let m2 = messages.clone();
    p.bus().unwrap().add_signal_watch();
    p.bus().unwrap().enable_sync_message_emission();
    p.bus().unwrap().connect_sync_message(None, move |_, msg| {
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
            && s.name().starts_with("onnxinfer")
        {
            m2.lock().unwrap().push(s.to_owned());
        }
    });
    let out = common::run(&p, Duration::from_secs(60));
    let stats = infer.property::<gst::Structure>("stats");
    p.bus().unwrap().remove_signal_watch();
    let seen = seen.lock().unwrap().clone();
    let messages = messages.lock().unwrap().clone();
    (out, messages, seen, stats)
}

#[test]
fn a_canary_that_cannot_load_is_switched_off_and_production_goes_on() {
    let dir = common::TempDir::new("canarybroken");
    let primary = model(&dir, "primary", 0, 0);
    let broken = dir.join("broken.onnx");
    std::fs::write(&broken, b"not a model").unwrap();
    let (out, messages, seen, stats) = run_live(
        &format!(
            "model-location=\"{}\" canary-model-location=\"{}\" canary-fraction=0.5 canary-by=frame",
            primary.display(),
            broken.display()
        ),
        10,
    );
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert_eq!(seen, vec!["primary"; 10]);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("canary") && w.contains("broken.onnx")),
        "{out:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.name() == "onnxinfer-canary-disabled"
                && m.get::<String>("reason").unwrap().contains("broken.onnx")),
        "{messages:?}"
    );
    assert!(
        stats
            .get::<String>("canary-disabled")
            .unwrap()
            .contains("broken.onnx"),
        "{stats}"
    );
}

#[test]
fn a_canary_that_fails_on_frames_is_switched_off_and_its_frames_go_to_production() {
    let dir = common::TempDir::new("canaryrun");
    let primary = model(&dir, "primary", 0, 0);
    // A YOLOX head with the rows of a 96x96 input on a model whose input size is dynamic: it
    // loads (the size is unknown then), but 64x48 frames make a 64x64 tensor (84 rows), so
    // decoding fails on the first frame it gets.
    let canary = dir.join("canary.onnx");
    Spec::dynamic_image()
        .output("output", &[1, 189, 6], vec![0.0; 189 * 6])
        .write(&canary);
    let (out, messages, seen, stats) = run_live(
        &format!(
            "model-location=\"{}\" canary-model-location=\"{}\" canary-model-type=yolox canary-fraction=0.5 canary-by=frame",
            primary.display(),
            canary.display()
        ),
        10,
    );
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert_eq!(seen, vec!["primary"; 10], "every frame has a result");
    assert!(
        messages
            .iter()
            .any(|m| m.name() == "onnxinfer-canary-disabled"
                && m.get::<String>("reason").unwrap().contains("YOLOX")),
        "{messages:?}"
    );
    assert!(
        stats
            .get::<String>("canary-disabled")
            .unwrap()
            .contains("YOLOX"),
        "{stats}"
    );
    assert_eq!(stats.get::<String>("canary-model").unwrap(), "", "{stats}");
}

#[test]
fn the_canary_is_decoded_with_the_production_model_type() {
    // [1,10,8] reads as YOLOv5 under auto (the larger dimension taken for the candidates),
    // but this is a YOLOv8 export (4 + 6 classes, 8 anchors): the canary must be decoded as
    // the production model is.
    let dir = common::TempDir::new("canarytype");
    let mut data = vec![0.0f32; 80];
    // Anchor 0: cx 32, cy 24, w 16, h 16, class 1 at 0.9.
    for (a, v) in [32.0, 24.0, 16.0, 16.0, 0.0, 0.9].iter().enumerate() {
        data[a * 8] = *v;
    }
    let primary = dir.join("v8a.onnx");
    Spec::image(64, 64)
        .output("output0", &[1, 10, 8], data.clone())
        .write(&primary);
    let canary = dir.join("v8b.onnx");
    std::fs::copy(&primary, &canary).unwrap();
    let (primary_frames, _) = stream_models(
        &primary,
        &canary,
        &[("model-type", "yolov8"), ("canary-fraction", "0.0")],
        "cam",
        2,
    );
    assert_eq!(primary_frames, vec!["v8a", "v8a"]);
    // All frames to the canary: same file, so the same detections.
    common::init();
    let run = |fraction: &str| -> Vec<(u32, u32, u32, u32)> {
        let infer = gst::ElementFactory::make("onnxinfer")
            .property("model-location", primary.display().to_string())
            .property("canary-model-location", canary.display().to_string())
            .build()
            .unwrap();
        infer.set_property_from_str("model-type", "yolov8");
        infer.set_property_from_str("canary-fraction", fraction);
        infer.set_property_from_str("canary-by", "frame");
        let mut h = gst_check::Harness::with_element(&infer, Some("sink"), Some("src"));
        h.set_src_caps_str("video/x-raw,format=RGB,width=64,height=64,framerate=30/1");
        let out = h
            .push_and_pull(gst::Buffer::with_size(64 * 64 * 3).unwrap())
            .unwrap();
        out.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .map(|m| m.rect())
            .collect()
    };
    let by_primary = run("0.0");
    let by_canary = run("1.0");
    assert_eq!(by_primary, vec![(24, 16, 16, 16)]);
    assert_eq!(by_canary, by_primary);
}

#[test]
fn a_swap_refused_at_the_first_frame_keeps_the_running_model() {
    // The new model is set before any frame, so it is switched in at the first frame; it
    // cannot take that frame (a dynamic model at input-width x input-height too large to
    // allocate), so it is refused there and the running model stays.
    let dir = common::TempDir::new("swapfirst");
    let primary = model(&dir, "primary", 0, 0);
    let dynamic = dir.join("dyn.onnx");
    Spec::dynamic_image()
        .output(
            "output0",
            &[1, 1, 11],
            vec![32.0, 24.0, 16.0, 16.0, 0.9, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0],
        )
        .write(&dynamic);
    common::init();
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers=5 ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! onnxinfer name=infer input-width=100000 input-height=100000 model-location=\"{}\" ! fakesink sync=false",
        primary.display()
    ));
    let infer = p.by_name("infer").unwrap();
    // Live: PAUSED starts the element but no frame flows before PLAYING.
    p.set_state(gst::State::Paused).unwrap();
    let _ = p.state(gst::ClockTime::from_seconds(5));
    infer.set_property("model-location", dynamic.display().to_string());
    let loaded = Instant::now();
    while infer
        .property::<gst::Structure>("stats")
        .get::<u64>("swaps-refused")
        .unwrap()
        == 0
        && !p.bus().unwrap().have_pending()
        && loaded.elapsed() < Duration::from_secs(2)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = common::run(&p, Duration::from_secs(20));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("refusing new primary model") && w.contains("dyn.onnx")),
        "{out:?}"
    );
    assert_eq!(
        infer.property::<String>("model-location"),
        primary.display().to_string()
    );
}

#[test]
fn setting_properties_does_not_wait_for_an_inference() {
    // A model that takes a while per frame: setting properties meanwhile returns at once.
    let dir = common::TempDir::new("slowset");
    let slow = dir.join("slow.onnx");
    common::onnx_model::slow_model(&slow, 4);
    let other = model(&dir, "other", 0, 0);
    common::init();
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers=3 ! video/x-raw,width=64,height=48,framerate=10/1 \
         ! onnxinfer name=infer model-type=yolov5 threads=1 model-location=\"{}\" ! fakesink name=sink sync=false",
        slow.display()
    ));
    let infer = p.by_name("infer").unwrap();
    let (entered, left) = (
        Arc::new(Mutex::new(0u32)),
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
    );
    let cond = Arc::new(std::sync::Condvar::new());
    let (e2, c2) = (entered.clone(), cond.clone());
    infer
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            *e2.lock().unwrap() += 1;
            c2.notify_all();
            gst::PadProbeReturn::Ok
        });
    let l2 = left.clone();
    infer
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            l2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
    let setter = {
        let infer = infer.clone();
        let other = other.clone();
        std::thread::spawn(move || {
            let mut g = entered.lock().unwrap();
            while *g == 0 {
                g = cond.wait(g).unwrap();
            }
            drop(g);
            // The first frame is in the model now (it takes far longer than this).
            std::thread::sleep(Duration::from_millis(30));
            let before = left.load(std::sync::atomic::Ordering::SeqCst);
            infer.set_property("canary-fraction", 0.5f64);
            infer.set_property("confidence-threshold", 0.3f64);
            infer.set_property("canary-model-location", other.display().to_string());
            let after = left.load(std::sync::atomic::Ordering::SeqCst);
            (before, after)
        })
    };
    let out = common::run(&p, Duration::from_secs(60));
    let (before, after) = setter.join().unwrap();
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert_eq!(
        (before, after),
        (0, 0),
        "the properties were set while the first frame was still being inferred"
    );
}
