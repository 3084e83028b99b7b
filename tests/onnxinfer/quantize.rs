// SPDX-License-Identifier: MPL-2.0
//! `make quantize` (scripts/quantize.py): an INT8 model calibrated on frames of the camera's own
//! clip, through onnxinfer's preprocessing (`input-dump-location`), written only when it agrees
//! with the FP32 model on held-back frames; and the clear refusals.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use gst::prelude::*;

use super::common;
use super::common::still_scene;

/// A still-camera clip (the motion tests' scene: a cup on a table, a motorbike crossing), made
/// once per test binary: 200 frames of 1280×720 H.264 at 15 fps.
fn clip() -> &'static Path {
    static CLIP: OnceLock<(common::TempDir, PathBuf)> = OnceLock::new();
    &CLIP
        .get_or_init(|| {
            common::init();
            let dir = common::TempDir::new("quantize-clip");
            let path = dir.join("still.mp4");
            still_scene::write_clip(&path, 200);
            (dir, path)
        })
        .1
}

/// `scripts/quantize.py ARGS…`.
fn quantize(args: &[&str]) -> Output {
    common::quantize_command().args(args).output().unwrap()
}

/// The demo detector quantized on the clip into `out`, with `frames` and `extra` arguments.
fn quantize_coco(out: &Path, frames: &str, extra: &[&str]) -> Output {
    let coco = common::coco_model();
    let mut args = vec![
        "--model",
        coco.to_str().unwrap(),
        "--source",
        clip().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--frames",
        frames,
    ];
    args.extend_from_slice(extra);
    quantize(&args)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The figures line the script prints (JSON).
fn figures(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no figures: {}", text(out)));
    serde_json::from_str(line).unwrap()
}

#[test]
fn the_demo_model_quantized_on_a_camera_clip_passes_its_check_and_onnxinfer_runs_it() {
    let dir = common::TempDir::new("quantize-ok");
    let int8 = dir.join("int8.onnx");
    let out = quantize_coco(&int8, "16", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let f = figures(&out);
    eprintln!("{f}");
    assert!(f["recall"].as_f64().unwrap() >= 0.95, "{f}");
    assert!(f["precision"].as_f64().unwrap() >= 0.95, "{f}");
    assert!(f["mean_iou"].as_f64().unwrap() >= 0.9, "{f}");
    assert!(f["fp32_detections"].as_u64().unwrap() > 0, "{f}");
    assert!(int8.is_file() && dir.join("int8.onnx.json").is_file());

    // onnxinfer runs it, and finds the cup and the motorbike.
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! onnxinfer name=i model-location=\"{}\" \
         labels-location=\"{}\" model-type=yolov5 interval=10 ! fakesink",
        clip().display(),
        int8.display(),
        common::coco_labels().display()
    ));
    let run = common::run(&p, std::time::Duration::from_secs(120));
    assert!(run.eos && run.errors.is_empty(), "{run:?}");
    let s = p.by_name("i").unwrap().property::<gst::Structure>("stats");
    assert_eq!(s.get::<u64>("inferred").unwrap(), 20, "{s}");
    assert!(
        s.get::<String>("model").unwrap().starts_with("int8@"),
        "{s}"
    );
}

#[test]
fn a_broken_quantization_is_refused_with_its_figures() {
    let dir = common::TempDir::new("quantize-broken");
    let int8 = dir.join("broken.onnx");
    // Every op quantized, the decoding head included: boxes in pixels and scores in [0, 1]
    // share one scale.
    let out = quantize_coco(&int8, "8", &["--every-op"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let f = figures(&out);
    assert!(f["recall"].as_f64().unwrap() < 0.95, "{f}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("INT8 model refused, not written") && stderr.contains("recall"),
        "{}",
        text(&out)
    );
    assert!(!int8.exists());
}

#[test]
fn models_and_sources_it_cannot_use_are_refused_clearly() {
    let dir = common::TempDir::new("quantize-refused");
    let dynamic = dir.join("dynamic.onnx");
    common::onnx_model::Spec::dynamic_image()
        .output("out", &[1, 4], vec![0.0; 4])
        .write(&dynamic);
    let no_conv = dir.join("no-conv.onnx");
    common::onnx_model::Spec::image(64, 64)
        .output("out", &[1, 4], vec![0.0; 4])
        .write(&no_conv);
    let damaged = dir.join("damaged.onnx");
    common::onnx_model::damaged_conv_model(&damaged, 64);
    let not_a_model = dir.join("labels.onnx");
    std::fs::write(&not_a_model, "person\ncar\n").unwrap();
    let coco = common::coco_model();
    let coco = coco.to_str().unwrap();
    let clip = clip().to_str().unwrap();
    let out_path = dir.join("out.onnx");
    let out_path = out_path.to_str().unwrap();
    for (model, frames, want) in [
        (dynamic.to_str().unwrap(), "16", "dynamic input shape"),
        (no_conv.to_str().unwrap(), "16", "no Conv layer"),
        // ONNX Runtime's quantizer fails on it with "AssertionError: scale issue".
        (
            damaged.to_str().unwrap(),
            "16",
            "Conv layer 'Conv_conv0' has weights that are not finite",
        ),
        (not_a_model.to_str().unwrap(), "16", "is not an ONNX model"),
        (coco, "4", "too few calibration frames"),
        // 2 × 150 frames asked of a 200-frame clip.
        (coco, "150", "has 200 frames: too few calibration frames"),
    ] {
        let out = quantize(&[
            "--model", model, "--source", clip, "--out", out_path, "--frames", frames,
        ]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{model} {frames}: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{model} {frames}: {}",
            text(&out)
        );
        assert!(!Path::new(out_path).exists());
    }
}
