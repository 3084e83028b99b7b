// SPDX-License-Identifier: MPL-2.0
//! onnxinfer while PLAYING: hot swap of the model (loaded off the streaming thread, switched
//! between two frames, a broken model refused) and canary splits by stream and by frame.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::onnx_model::Spec;
use gst::prelude::*;
use gstvideoai::detection;

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
        threads: 0,
        spinning: false,
        optimization: gstvideoai::onnxinfer::OptimizationLevel::All,
        provider: gstvideoai::onnxinfer::ExecutionProvider::Cpu,
        provider_fallback: false,
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
