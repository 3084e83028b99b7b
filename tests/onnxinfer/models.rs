// SPDX-License-Identifier: MPL-2.0
//! onnxinfer decoders on synthetic ONNX models whose outputs are known constants: every model
//! family, exact boxes after letterbox/stretch mapping at several frame sizes, thresholds, NMS,
//! labels, u8 and NHWC inputs, dynamic input sizes, classification of upstream regions,
//! interval, execution providers.

use crate::common;
use crate::run_infer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::onnx_model::{Dim, InputType, Spec};
use gst::prelude::*;
use gstvideoai::formats::detection;

/// One ROI as it left onnxinfer.
#[derive(Debug, Clone, PartialEq)]
struct Roi {
    roi_type: String,
    rect: (u32, u32, u32, u32),
    detection: Option<gst::Structure>,
    classification: Option<gst::Structure>,
}

#[derive(Debug, Clone)]
struct FrameOut {
    rois: Vec<Roi>,
    model: Option<String>,
    fresh: Option<bool>,
    tensors: Vec<(String, Vec<i64>, Vec<f32>)>,
}

fn read_frame(buf: &gst::BufferRef) -> FrameOut {
    let rois = buf
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| Roi {
            roi_type: m.roi_type().to_string(),
            rect: m.rect(),
            detection: m.param("detection").map(|s| s.to_owned()),
            classification: m.param("classification").map(|s| s.to_owned()),
        })
        .collect();
    let meta = gst::meta::CustomMeta::from_buffer(buf, detection::INFERENCE_META).ok();
    FrameOut {
        rois,
        model: detection::inference_model(buf),
        fresh: meta.and_then(|m| m.structure().get::<bool>("fresh").ok()),
        tensors: detection::read_tensors(buf),
    }
}

/// Runs `frames` frames of `width`×`height` `format` through `chain` (an element chain
/// containing `onnxinfer name=infer …`) and returns what each frame carried after it.
fn run_chain(
    chain: &str,
    width: u32,
    height: u32,
    format: &str,
    frames: u32,
) -> (Vec<FrameOut>, gst::Structure) {
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format={format},width={width},height={height},framerate=30/1 ! {chain} ! fakesink name=sink"
    ));
    let out = Arc::new(Mutex::new(Vec::new()));
    let out2 = out.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            out2.lock()
                .unwrap()
                .push(read_frame(info.buffer().unwrap()));
            gst::PadProbeReturn::Ok
        });
    let infer = p.by_name("infer").unwrap();
    let res = common::run(&p, Duration::from_secs(60));
    assert!(res.eos && res.errors.is_empty(), "{chain}: {res:?}");
    let stats = infer.property::<gst::Structure>("stats");
    drop(p);
    let v = std::mem::take(&mut *out.lock().unwrap());
    (v, stats)
}

fn infer(model: &Path, props: &str, width: u32, height: u32, format: &str) -> FrameOut {
    let (mut frames, _) = run_chain(
        &format!(
            "onnxinfer name=infer model-location=\"{}\" {props}",
            model.display()
        ),
        width,
        height,
        format,
        1,
    );
    frames.remove(0)
}

/// The frame rectangle of a tensor box after a centred (or top-left) letterbox of a
/// `fw`×`fh` frame into a `tw`×`th` tensor, rounded as onnxinfer rounds.
fn letterbox_back(b: [f64; 4], fw: f64, fh: f64, tw: f64, th: f64, centred: bool) -> Rect {
    let r = (tw / fw).min(th / fh);
    let (nw, nh) = ((fw * r).floor(), (fh * r).floor());
    let (ox, oy) = if centred {
        (((tw - nw) / 2.0).floor(), ((th - nh) / 2.0).floor())
    } else {
        (0.0, 0.0)
    };
    let (sx, sy) = (nw / fw, nh / fh);
    let fx = |x: f64| ((x - ox) / sx).clamp(0.0, fw);
    let fy = |y: f64| ((y - oy) / sy).clamp(0.0, fh);
    let (x1, y1, x2, y2) = (
        fx(b[0]).round(),
        fy(b[1]).round(),
        fx(b[2]).round(),
        fy(b[3]).round(),
    );
    (x1 as u32, y1 as u32, (x2 - x1) as u32, (y2 - y1) as u32)
}

type Rect = (u32, u32, u32, u32);

/// Each side of `got` within a pixel of `want` (rounding differs by at most one).
fn within_a_pixel(got: Rect, want: Rect) -> bool {
    [
        (got.0, want.0),
        (got.1, want.1),
        (got.2, want.2),
        (got.3, want.3),
    ]
    .iter()
    .all(|(g, w)| g.abs_diff(*w) <= 1)
}

/// Runs two frames of `caps` through `onnxinfer model-location=<model> <props>` to the end.
fn outcome(model: &Path, props: &str, caps: &str) -> common::Outcome {
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=2 ! {caps} ! onnxinfer {props} model-location=\"{}\" ! fakesink",
        model.display()
    ));
    common::run(&p, Duration::from_secs(30))
}

fn labels_file(dir: &common::TempDir, labels: &[&str]) -> PathBuf {
    let p = dir.join("labels.txt");
    std::fs::write(&p, labels.join("\n") + "\n").unwrap();
    p
}

/// Four YOLOv5 rows at a 320×320 input, as (cx, cy, w, h, objectness, class scores):
/// A: class 1 at 0.72; B: overlaps A (IoU 0.6), class 1, 0.5; C: overlaps A, class 0, 0.48;
/// D: apart, class 0, 0.1.
const YOLO_ROWS: [[f32; 7]; 4] = [
    [160.0, 160.0, 64.0, 32.0, 0.9, 0.1, 0.8],
    [168.0, 160.0, 64.0, 32.0, 0.5, 0.0, 1.0],
    [164.0, 162.0, 64.0, 32.0, 0.6, 0.8, 0.1],
    [40.0, 250.0, 20.0, 40.0, 0.2, 0.5, 0.0],
];

fn corners(r: &[f32; 7]) -> [f64; 4] {
    let (cx, cy, w, h) = (r[0] as f64, r[1] as f64, r[2] as f64, r[3] as f64);
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

fn yolov5_model(dir: &common::TempDir) -> PathBuf {
    let p = dir.join("v5.onnx");
    Spec::image(320, 320)
        .output(
            "output0",
            &[1, 4, 7],
            YOLO_ROWS.iter().flatten().copied().collect(),
        )
        .write(&p);
    p
}

fn yolov8_model(dir: &common::TempDir) -> PathBuf {
    // [1, 4 + 2, 4]: attribute-major; v8 has no objectness, so scores = objectness x class.
    let mut data = vec![0.0f32; 6 * 4];
    for (i, r) in YOLO_ROWS.iter().enumerate() {
        let attrs = [r[0], r[1], r[2], r[3], r[4] * r[5], r[4] * r[6]];
        for (a, v) in attrs.iter().enumerate() {
            data[a * 4 + i] = *v;
        }
    }
    let p = dir.join("v8.onnx");
    Spec::image(320, 320)
        .output("output0", &[1, 6, 4], data)
        .write(&p);
    p
}

fn det(roi: &Roi) -> (String, i32, f64, String) {
    let d = roi.detection.as_ref().expect("detection param");
    (
        d.get::<String>("label").unwrap(),
        d.get::<i32>("class-id").unwrap(),
        d.get::<f64>("confidence").unwrap(),
        d.get::<String>("model").unwrap(),
    )
}

fn check_yolo(model: &Path, model_type: &str, labels: &Path) {
    for (fw, fh) in [(640u32, 480u32), (1280, 720), (300, 500)] {
        let out = infer(
            model,
            &format!(
                "model-type={model_type} labels-location=\"{}\"",
                labels.display()
            ),
            fw,
            fh,
            "RGB",
        );
        // Threshold 0.25 drops D, per-class NMS drops B (same class as A), keeps C.
        assert_eq!(out.rois.len(), 2, "{fw}x{fh}: {:?}", out.rois);
        let a = &out.rois[0];
        let c = &out.rois[1];
        let (label, class_id, conf, model_name) = det(a);
        assert_eq!((label.as_str(), class_id), ("dog", 1));
        assert!((conf - 0.72).abs() < 1e-5, "{conf}");
        assert!(model_name.starts_with(model.file_stem().unwrap().to_str().unwrap()));
        assert_eq!(a.roi_type, "dog");
        assert_eq!(det(c).0, "cat");
        let want_a = letterbox_back(
            corners(&YOLO_ROWS[0]),
            fw as f64,
            fh as f64,
            320.0,
            320.0,
            true,
        );
        let want_c = letterbox_back(
            corners(&YOLO_ROWS[2]),
            fw as f64,
            fh as f64,
            320.0,
            320.0,
            true,
        );
        assert!(
            within_a_pixel(a.rect, want_a),
            "{fw}x{fh}: A {:?} vs {want_a:?}",
            a.rect
        );
        assert!(
            within_a_pixel(c.rect, want_c),
            "{fw}x{fh}: C {:?} vs {want_c:?}",
            c.rect
        );
        assert_eq!(out.model.as_deref(), Some(model_name.as_str()));
    }
    // Class-agnostic NMS also drops C; a lower threshold keeps D.
    let out = infer(
        model,
        &format!("model-type={model_type} nms-class-agnostic=true"),
        640,
        480,
        "RGB",
    );
    assert_eq!(out.rois.len(), 1, "{:?}", out.rois);
    let out = infer(
        model,
        &format!("model-type={model_type} confidence-threshold=0.05"),
        640,
        480,
        "RGB",
    );
    assert_eq!(out.rois.len(), 3, "{:?}", out.rois);
    assert_eq!(out.rois[2].roi_type, "class-0", "no labels file: class-N");
    // Higher IoU threshold keeps B too.
    let out = infer(
        model,
        &format!("model-type={model_type} iou-threshold=0.9"),
        640,
        480,
        "RGB",
    );
    assert_eq!(out.rois.len(), 3, "{:?}", out.rois);
    // auto picks the same family.
    let auto = infer(model, "", 640, 480, "RGB");
    let explicit = infer(model, &format!("model-type={model_type}"), 640, 480, "RGB");
    assert_eq!(auto.rois, explicit.rois);
}

#[test]
fn yolov5_boxes_thresholds_nms_labels() {
    let dir = common::TempDir::new("v5");
    let labels = labels_file(&dir, &["cat", "dog"]);
    check_yolo(&yolov5_model(&dir), "yolov5", &labels);
}

#[test]
fn yolov8_boxes_thresholds_nms_labels() {
    let dir = common::TempDir::new("v8");
    let labels = labels_file(&dir, &["cat", "dog"]);
    check_yolo(&yolov8_model(&dir), "yolov8", &labels);
}

#[test]
fn yolox_raw_head_top_left_letterbox() {
    // 64x64 input: 84 rows; cell (gx=1, gy=2) of the stride-16 grid holds one box:
    // cx = 24, cy = 36, w = 16, h = 32, score 0.72 for class 1.
    let dir = common::TempDir::new("yolox");
    let mut data = vec![0.0f32; 84 * 7];
    let r = (64 + 2 * 4 + 1) * 7;
    data[r..r + 7].copy_from_slice(&[0.5, 0.25, 0.0, 2.0f32.ln(), 0.9, 0.1, 0.8]);
    let model = dir.join("yolox.onnx");
    Spec::image(64, 64)
        .output("output", &[1, 84, 7], data)
        .write(&model);
    for (fw, fh) in [(640u32, 480u32), (128, 256)] {
        let out = infer(&model, "", fw, fh, "NV12");
        assert_eq!(out.rois.len(), 1, "{:?}", out.rois);
        let want = letterbox_back(
            [16.0, 20.0, 32.0, 52.0],
            fw as f64,
            fh as f64,
            64.0,
            64.0,
            false,
        );
        let got = out.rois[0].rect;
        assert!(within_a_pixel(got, want), "{fw}x{fh}: {got:?} vs {want:?}");
    }
}

#[test]
fn ssd_outputs_stretch_mapping() {
    let dir = common::TempDir::new("ssd");
    let model = dir.join("ssd.onnx");
    // Boxes normalised (ymin, xmin, ymax, xmax); the third is beyond num_detections.
    Spec::image(300, 300)
        .output(
            "detection_boxes",
            &[1, 3, 4],
            vec![0.1, 0.2, 0.5, 0.6, 0.25, 0.5, 0.75, 1.0, 0.0, 0.0, 1.0, 1.0],
        )
        .output("detection_classes", &[1, 3], vec![2.0, 1.0, 1.0])
        .output("detection_scores", &[1, 3], vec![0.9, 0.6, 0.99])
        .output("num_detections", &[1], vec![2.0])
        .write(&model);
    let labels = labels_file(&dir, &["bg", "person", "car"]);
    for (fw, fh) in [(640u32, 480u32), (1920, 1080)] {
        let out = infer(
            &model,
            &format!("labels-location=\"{}\"", labels.display()),
            fw,
            fh,
            "I420",
        );
        assert_eq!(out.rois.len(), 2, "{:?}", out.rois);
        let (f, g) = (fw as f64, fh as f64);
        let rect = |x1: f64, y1: f64, x2: f64, y2: f64| {
            let (a, b, c, d) = (
                (x1 * f).round(),
                (y1 * g).round(),
                (x2 * f).round(),
                (y2 * g).round(),
            );
            (a as u32, b as u32, (c - a) as u32, (d - b) as u32)
        };
        assert_eq!(det(&out.rois[0]).0, "car");
        assert_eq!(out.rois[0].rect, rect(0.2, 0.1, 0.6, 0.5));
        assert_eq!(det(&out.rois[1]).0, "person");
        assert_eq!(out.rois[1].rect, rect(0.5, 0.25, 1.0, 0.75));
    }
    // xyxy order.
    let out = infer(
        &model,
        "box-order=xyxy confidence-threshold=0.7",
        100,
        100,
        "RGB",
    );
    assert_eq!(out.rois.len(), 1);
    assert_eq!(out.rois[0].rect, (10, 20, 40, 40));
}

fn classifier_model(dir: &common::TempDir, logits: Vec<f32>) -> PathBuf {
    let p = dir.join(&format!("cls{}.onnx", logits.len()));
    Spec::image(48, 48)
        .output("logits", &[1, logits.len() as i64], logits)
        .write(&p);
    p
}

#[test]
fn classifier_whole_frame_top_k() {
    let dir = common::TempDir::new("cls");
    let model = classifier_model(&dir, vec![0.5, 2.5, 1.5]);
    let labels = labels_file(&dir, &["red", "green", "blue"]);
    let out = infer(
        &model,
        &format!("labels-location=\"{}\" top-k=2", labels.display()),
        320,
        240,
        "BGRx",
    );
    assert_eq!(out.rois.len(), 1);
    let roi = &out.rois[0];
    assert_eq!(
        (roi.roi_type.as_str(), roi.rect),
        ("green", (0, 0, 320, 240))
    );
    let c = roi.classification.as_ref().unwrap();
    let labels: Vec<String> = c
        .get::<gst::Array>("labels")
        .unwrap()
        .iter()
        .map(|v| v.get::<String>().unwrap())
        .collect();
    assert_eq!(labels, vec!["green", "blue"]);
    // softmax of (0.5, 2.5, 1.5): green 0.665, blue 0.245.
    let conf: Vec<f64> = c
        .get::<gst::Array>("confidences")
        .unwrap()
        .iter()
        .map(|v| v.get::<f64>().unwrap())
        .collect();
    assert!(
        (conf[0] - 0.665).abs() < 1e-3 && (conf[1] - 0.245).abs() < 1e-3,
        "{conf:?}"
    );
    assert!((det(roi).2 - 0.665).abs() < 1e-3);
}

#[test]
fn classifier_on_upstream_rois() {
    // Detector -> classifier cascade: the classifier adds a classification to each detection.
    let dir = common::TempDir::new("cascade");
    let detector = yolov5_model(&dir);
    let classifier = classifier_model(&dir, vec![3.0, 0.0]);
    let labels = labels_file(&dir, &["person", "vehicle"]);
    let (frames, stats) = run_chain(
        &format!(
            "onnxinfer model-location=\"{}\" ! onnxinfer name=infer model-location=\"{}\" roi-only=true labels-location=\"{}\"",
            detector.display(),
            classifier.display(),
            labels.display()
        ),
        640,
        480,
        "RGB",
        3,
    );
    assert_eq!(stats.get::<u64>("inferred").unwrap(), 3, "{stats}");
    for f in &frames {
        assert_eq!(f.rois.len(), 2);
        for roi in &f.rois {
            assert!(roi.detection.is_some(), "the detector's param stays");
            let c = roi.classification.as_ref().expect("classified");
            assert_eq!(c.get::<String>("label").unwrap(), "person");
            assert!(c.get::<String>("model").unwrap().starts_with("cls2@"));
        }
    }
    // roi-only with a detector model is refused at start.
    let out = run_infer(
        &format!("model-location=\"{}\" roi-only=true", detector.display()),
        "video/x-raw",
    );
    assert!(
        out.first_error().contains("roi-only") && out.first_error().contains("classifier"),
        "{out:?}"
    );
}

#[test]
fn raw_outputs_attached_as_tensors() {
    let dir = common::TempDir::new("raw");
    let model = dir.join("raw.onnx");
    Spec::image(32, 32)
        .output("a", &[1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .output("b", &[1, 1], vec![-7.5])
        .write(&model);
    // A single [1,2,3] output would look like nothing known; raw is explicit.
    let out = infer(&model, "model-type=raw", 64, 64, "GRAY8");
    assert!(out.rois.is_empty());
    let mut t = out.tensors.clone();
    t.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        t,
        vec![
            (
                "a".to_string(),
                vec![1, 2, 3],
                vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
            ),
            ("b".to_string(), vec![1, 1], vec![-7.5])
        ]
    );
    // auto cannot tell: a clear error that suggests model-type.
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=1 ! onnxinfer model-location=\"{}\" ! fakesink",
        model.display()
    ));
    let res = common::run(&p, Duration::from_secs(30));
    assert!(res.first_error().contains("set model-type"), "{res:?}");
}

#[test]
fn u8_nhwc_and_dynamic_inputs() {
    let dir = common::TempDir::new("inputs");
    let rows: Vec<f32> = YOLO_ROWS.iter().flatten().copied().collect();
    // uint8 NHWC input [1,320,320,3].
    let u8_model = dir.join("u8.onnx");
    Spec {
        input_name: "images".into(),
        input_type: InputType::U8,
        input_shape: vec![
            Dim::Fixed(1),
            Dim::Fixed(320),
            Dim::Fixed(320),
            Dim::Fixed(3),
        ],
        outputs: Vec::new(),
        ballast: 0,
    }
    .output("output0", &[1, 4, 7], rows.clone())
    .write(&u8_model);
    let reference = infer(&yolov5_model(&dir), "model-type=yolov5", 640, 480, "RGB");
    let out = infer(&u8_model, "model-type=yolov5", 640, 480, "RGB");
    assert_eq!(
        out.rois,
        reference
            .rois
            .iter()
            .map(|r| {
                let mut r = r.clone();
                // Same boxes; only the model name differs.
                let mut d = r.detection.take().unwrap();
                d.set("model", out.model.clone().unwrap());
                r.detection = Some(d);
                r
            })
            .collect::<Vec<_>>()
    );

    // Dynamic height and width: the tensor is the frame rounded up to 32 (300x200 -> 320x224),
    // centred letterbox of scale min(320/300, 224/200) = 1.0667.
    let dyn_model = dir.join("dyn.onnx");
    Spec::dynamic_image()
        .output("output0", &[1, 4, 7], rows)
        .write(&dyn_model);
    let out = infer(&dyn_model, "model-type=yolov5", 300, 200, "RGB");
    assert_eq!(out.rois.len(), 2);
    let want = letterbox_back(corners(&YOLO_ROWS[0]), 300.0, 200.0, 320.0, 224.0, true);
    let got = out.rois[0].rect;
    assert!(within_a_pixel(got, want), "{got:?} vs {want:?}");
    // input-width/height pick the size instead.
    let out = infer(
        &dyn_model,
        "model-type=yolov5 input-width=320 input-height=320",
        300,
        200,
        "RGB",
    );
    let want = letterbox_back(corners(&YOLO_ROWS[0]), 300.0, 200.0, 320.0, 320.0, true);
    let got = out.rois[0].rect;
    assert!(
        got.0.abs_diff(want.0) <= 1 && got.1.abs_diff(want.1) <= 1,
        "{got:?} vs {want:?}"
    );
}

#[test]
fn wrong_model_type_names_the_shapes() {
    let dir = common::TempDir::new("wrongtype");
    let model = yolov5_model(&dir);
    let out = run_infer(
        &format!("model-location=\"{}\" model-type=yolox", model.display()),
        "video/x-raw",
    );
    let e = out.first_error();
    assert!(
        e.contains("YOLOX") && e.contains("[1,4,7]") && e.contains("model-type"),
        "{e}"
    );
}

#[test]
fn interval_carries_the_last_result() {
    let dir = common::TempDir::new("interval");
    let model = yolov5_model(&dir);
    let (frames, stats) = run_chain(
        &format!(
            "onnxinfer name=infer model-location=\"{}\" interval=3",
            model.display()
        ),
        320,
        240,
        "NV12",
        10,
    );
    assert_eq!(frames.len(), 10);
    assert_eq!(
        (
            stats.get::<u64>("inferred").unwrap(),
            stats.get::<u64>("skipped").unwrap()
        ),
        (4, 6),
        "{stats}"
    );
    for (i, f) in frames.iter().enumerate() {
        let fresh = i % 3 == 0;
        assert_eq!(f.fresh, Some(fresh), "frame {i}");
        assert_eq!(f.rois.len(), 2, "frame {i} carries the result");
        assert_eq!(
            f.rois[0]
                .detection
                .as_ref()
                .unwrap()
                .get::<bool>("fresh")
                .unwrap(),
            fresh
        );
        assert_eq!(
            f.rois,
            frames[i - i % 3]
                .rois
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    let mut d = r.detection.take().unwrap();
                    d.set("fresh", fresh);
                    r.detection = Some(d);
                    r
                })
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn missing_execution_provider() {
    let dir = common::TempDir::new("ep");
    let model = yolov5_model(&dir);
    let out = run_infer(
        &format!(
            "model-location=\"{}\" execution-provider=cuda",
            model.display()
        ),
        "video/x-raw",
    );
    let e = out.first_error();
    assert!(
        e.contains("Cuda") && e.contains("not available") && e.contains("provider-fallback"),
        "{e}"
    );
    // With fallback: a warning, and frames still get results.
    let (frames, stats) = run_chain(
        &format!(
            "onnxinfer name=infer model-location=\"{}\" execution-provider=tensorrt provider-fallback=true",
            model.display()
        ),
        64,
        64,
        "RGB",
        2,
    );
    assert_eq!(
        frames.iter().map(|f| f.rois.len()).collect::<Vec<_>>(),
        vec![2, 2]
    );
    assert_eq!(stats.get::<u64>("inferred").unwrap(), 2);
}

/// An SSD export with per-class scores `[1,N,C]` whose column 0 is "background" (MobileNet-SSD,
/// pytorch-ssd: softmax over background + classes) and no classes output.
fn ssd_background_model(dir: &common::TempDir) -> PathBuf {
    let model = dir.join("ssd_bg.onnx");
    Spec::image(300, 300)
        .output(
            "boxes",
            &[1, 3, 4],
            vec![
                0.0, 0.0, 1.0, 1.0, // row 0: background everywhere
                0.1, 0.1, 0.3, 0.3, // row 1: class 2
                0.6, 0.6, 0.9, 0.9, // row 2: background first, class 1 second
            ],
        )
        .output(
            "scores",
            &[1, 3, 4],
            vec![
                0.94, 0.02, 0.02, 0.02, //
                0.10, 0.05, 0.80, 0.05, //
                0.55, 0.40, 0.03, 0.02,
            ],
        )
        .write(&model);
    model
}

#[test]
fn ssd_background_column_is_not_a_detection() {
    let dir = common::TempDir::new("ssdbg");
    let model = ssd_background_model(&dir);
    // Three labels for four score columns: column 0 is background (labels + 1 columns), and
    // class ids follow the labels file.
    let labels = labels_file(&dir, &["person", "car", "dog"]);
    let out = infer(
        &model,
        &format!("labels-location=\"{}\"", labels.display()),
        300,
        300,
        "RGB",
    );
    let got: Vec<(String, i32)> = out
        .rois
        .iter()
        .map(|r| {
            let d = det(r);
            (d.0, d.1)
        })
        .collect();
    assert_eq!(
        got,
        vec![("car".to_string(), 1), ("person".to_string(), 0)],
        "{:?}",
        out.rois
    );
    assert_eq!(out.rois[0].rect, (30, 30, 60, 60));
    // A labels file whose first line names the background: same boxes, ids = columns.
    let labels = labels_file(&dir, &["background", "person", "car", "dog"]);
    let out = infer(
        &model,
        &format!("labels-location=\"{}\"", labels.display()),
        300,
        300,
        "RGB",
    );
    let got: Vec<(String, i32)> = out.rois.iter().map(|r| (det(r).0, det(r).1)).collect();
    assert_eq!(got, vec![("car".into(), 2), ("person".into(), 1)]);
    // No labels: column 0 of per-class scores is background by default.
    let out = infer(&model, "", 300, 300, "RGB");
    assert_eq!(out.rois.len(), 2, "{:?}", out.rois);
    // background-class=-2: every column is a class (row 0 comes back as class 0).
    let out = infer(&model, "background-class=-2", 300, 300, "RGB");
    assert_eq!(out.rois.len(), 3, "{:?}", out.rois);
    // An explicit column.
    let out = infer(&model, "background-class=2", 300, 300, "RGB");
    assert!(
        out.rois.iter().all(|r| det(r).1 != 2),
        "column 2 is never reported: {:?}",
        out.rois
    );
}

#[test]
fn ssd_classes_output_shorter_than_boxes_is_a_clear_error() {
    let dir = common::TempDir::new("ssdshort");
    let model = dir.join("short.onnx");
    Spec::image(300, 300)
        .output("detection_boxes", &[1, 3, 4], vec![0.5; 12])
        .output("detection_classes", &[1, 2], vec![1.0, 2.0])
        .output("detection_scores", &[1, 3], vec![0.9, 0.8, 0.7])
        .write(&model);
    let out = outcome(&model, "", "video/x-raw,width=320,height=240");
    let e = out.first_error();
    assert!(!out.eos, "{out:?}");
    assert!(
        e.contains("detection_classes") && e.contains("[1,2]") && e.contains("3 boxes"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn non_finite_outputs_never_become_detections() {
    let dir = common::TempDir::new("nonfinite");
    let model = dir.join("nan.onnx");
    let rows: Vec<f32> = [
        [100.0, 100.0, 20.0, 20.0, f32::INFINITY, 0.9, 0.1], // infinite score
        [200.0, 100.0, 20.0, 20.0, f32::NAN, 0.9, 0.1],      // NaN score
        [1e30, 100.0, 1e30, 20.0, 0.9, 0.9, 0.1],            // absurd box
        [100.0, 250.0, f32::INFINITY, 20.0, 0.9, 0.9, 0.1],  // infinite box
        [150.0, 250.0, 30.0, 30.0, 0.9, 0.1, 0.9],           // a real detection
    ]
    .iter()
    .flatten()
    .copied()
    .collect();
    Spec::image(320, 320)
        .output("output0", &[1, 5, 7], rows)
        .write(&model);
    common::init();
    let (frames, stats) = run_chain(
        &format!(
            "onnxinfer name=infer model-type=yolov5 model-location=\"{}\"",
            model.display()
        ),
        320,
        320,
        "RGB",
        3,
    );
    for f in &frames {
        assert_eq!(f.rois.len(), 1, "{:?}", f.rois);
        let (_, class_id, conf, _) = det(&f.rois[0]);
        assert_eq!(class_id, 1);
        assert!((conf - 0.81).abs() < 1e-5, "{conf}");
        assert_eq!(f.rois[0].rect, (135, 235, 30, 30));
    }
    assert_eq!(stats.get::<u64>("invalid-outputs").unwrap(), 12, "{stats}");
    // Warned once, not per frame.
    let out = run_infer(
        &format!("model-type=yolov5 model-location=\"{}\"", model.display()),
        "video/x-raw,width=320,height=320",
    );
    assert!(out.eos, "{out:?}");
    let warned: Vec<&String> = out
        .warnings
        .iter()
        .filter(|w| w.contains("non-finite"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", out.warnings);
}

/// The frame rectangle of a tensor box after the ultralytics (YOLOv5/v8) letterbox: the
/// scaled size is rounded, the padding split in two (floor for top/left).
fn ultralytics_back(b: [f64; 4], fw: f64, fh: f64, t: f64) -> (u32, u32, u32, u32) {
    let r = (t / fw).min(t / fh);
    let (nw, nh) = ((fw * r).round(), (fh * r).round());
    let (ox, oy) = (((t - nw) / 2.0).floor(), ((t - nh) / 2.0).floor());
    let (sx, sy) = (nw / fw, nh / fh);
    let fx = |x: f64| ((x - ox) / sx).clamp(0.0, fw).round();
    let fy = |y: f64| ((y - oy) / sy).clamp(0.0, fh).round();
    let (x1, y1, x2, y2) = (fx(b[0]), fy(b[1]), fx(b[2]), fy(b[3]));
    (x1 as u32, y1 as u32, (x2 - x1) as u32, (y2 - y1) as u32)
}

#[test]
fn letterbox_size_rounds_like_each_family() {
    // 1366x768 into 416x416: 233.88 rows, rounded to 234 by ultralytics, truncated to 233 by
    // YOLOX. A box near the bottom of the picture shows the difference in frame pixels.
    let dir = common::TempDir::new("round");
    let model = dir.join("v5_416.onnx");
    let row = [208.0f32, 280.0, 100.0, 40.0, 0.9, 0.9];
    Spec::image(416, 416)
        .output("output0", &[1, 1, 6], row.to_vec())
        .write(&model);
    let out = infer(&model, "model-type=yolov5", 1366, 768, "RGB");
    assert_eq!(out.rois.len(), 1);
    let b = [158.0, 260.0, 258.0, 300.0];
    assert_eq!(out.rois[0].rect, ultralytics_back(b, 1366.0, 768.0, 416.0));
    // YOLOX keeps truncating (its reference: int(h * r)), anchored top-left.
    let yolox = dir.join("yolox_416.onnx");
    let rows = 3549usize;
    let mut data = vec![0.0f32; rows * 6];
    // Cell (gx=10, gy=20) of the stride-8 grid: cx = (0.5+10)*8 = 84, cy = (0.5+20)*8 = 164,
    // w = h = exp(ln 4)*8 = 32.
    let i = 20 * 52 + 10;
    data[i * 6..i * 6 + 6].copy_from_slice(&[0.5, 0.5, 4f32.ln(), 4f32.ln(), 0.9, 0.9]);
    Spec::image(416, 416)
        .output("output", &[1, rows as i64, 6], data)
        .write(&yolox);
    let out = infer(&yolox, "model-type=yolox", 1366, 768, "RGB");
    assert_eq!(out.rois.len(), 1, "{:?}", out.rois);
    // Truncation: the picture is 416x233 (233.886 rows).
    let (sx, sy): (f64, f64) = (416.0 / 1366.0, 233.0 / 768.0);
    let want = (
        ((84.0 - 16.0) / sx).round() as u32,
        ((164.0 - 16.0) / sy).round() as u32,
    );
    assert_eq!((out.rois[0].rect.0, out.rois[0].rect.1), want);
}

#[test]
fn huge_input_size_is_refused_before_allocating() {
    let dir = common::TempDir::new("huge");
    let dyn_model = dir.join("dyn.onnx");
    Spec::dynamic_image()
        .output(
            "output0",
            &[1, 4, 7],
            YOLO_ROWS.iter().flatten().copied().collect(),
        )
        .write(&dyn_model);
    let out = outcome(
        &dyn_model,
        "model-type=yolov5 input-width=100000 input-height=100000",
        "video/x-raw,width=64,height=48",
    );
    let e = out.first_error();
    assert!(!out.eos, "{out:?}");
    assert!(
        e.contains("100000x100000") && e.contains("input-width"),
        "{e}"
    );
}

#[test]
fn pipelining_gives_the_same_results_in_order() {
    let dir = common::TempDir::new("pipelining");
    let model = yolov5_model(&dir);
    let chain = |extra: &str| {
        run_chain(
            &format!(
                "onnxinfer name=infer model-location=\"{}\" interval=2 {extra}",
                model.display()
            ),
            320,
            240,
            "NV12",
            9,
        )
    };
    let (plain, plain_stats) = chain("");
    let (piped, piped_stats) = chain("pipelining=true");
    assert_eq!(piped.len(), 9, "every frame leaves, the last one at EOS");
    assert_eq!(
        piped
            .iter()
            .map(|f| (f.rois.clone(), f.fresh))
            .collect::<Vec<_>>(),
        plain
            .iter()
            .map(|f| (f.rois.clone(), f.fresh))
            .collect::<Vec<_>>()
    );
    for key in ["inferred", "skipped"] {
        assert_eq!(
            piped_stats.get::<u64>(key).unwrap(),
            plain_stats.get::<u64>(key).unwrap(),
            "{key}"
        );
    }
}

#[test]
fn pipelining_reports_one_frame_more_latency() {
    let dir = common::TempDir::new("pipelatency");
    let model = yolov5_model(&dir);
    common::init();
    let latency = |extra: &str| -> gst::ClockTime {
        let p = common::parse(&format!(
            "videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=25/1 \
             ! onnxinfer name=infer model-location=\"{}\" {extra} ! fakesink name=sink",
            model.display()
        ));
        p.set_state(gst::State::Playing).unwrap();
        let _ = p.state(gst::ClockTime::from_seconds(10));
        let mut q = gst::query::Latency::new();
        assert!(
            p.by_name("infer")
                .unwrap()
                .static_pad("src")
                .unwrap()
                .query(&mut q)
        );
        p.set_state(gst::State::Null).unwrap();
        q.result().1
    };
    let plain = latency("");
    let piped = latency("pipelining=true");
    assert_eq!(piped, plain + gst::ClockTime::from_mseconds(40));
}
