// SPDX-License-Identifier: MPL-2.0
//! onnxinfer on the real YOLOX-style model: boxes land on the characters textoverlay drew,
//! at two resolutions and from two pixel formats.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstvideoai::eventlog::event::Detection;
use gstvideoai::formats::detection;

/// Runs the text picture through onnxinfer and returns each frame's detections and model.
fn detect(
    width: u32,
    height: u32,
    format: &str,
    frames: u32,
) -> Vec<(Vec<Detection>, Option<String>)> {
    common::init();
    let desc = format!(
        "{} ! videoconvert ! video/x-raw,format={format} ! onnxinfer name=infer model-location=\"{}\" \
         labels-location=\"{}\" ! fakesink",
        common::text_source(width, height, frames),
        common::model().display(),
        common::labels().display()
    );
    let pipeline = common::parse(&desc);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let infer = pipeline.by_name("infer").unwrap();
    let seen2 = seen.clone();
    infer
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buf) = info.buffer() {
                let dets = detection::read(buf);
                let models: Vec<Option<String>> = dets.iter().map(|(_, m)| m.clone()).collect();
                assert!(models.iter().all(|m| m == &detection::inference_model(buf)));
                seen2.lock().unwrap().push((
                    dets.into_iter().map(|(d, _)| d).collect(),
                    detection::inference_model(buf),
                ));
            }
            gst::PadProbeReturn::Ok
        });
    let out = common::run(&pipeline, Duration::from_secs(120));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let stats = infer.property::<gst::Structure>("stats");
    assert_eq!(
        stats.get::<u64>("frames").unwrap(),
        frames as u64,
        "{stats}"
    );
    drop(pipeline);
    std::mem::take(&mut *seen.lock().unwrap())
}

fn check_on_text(width: u32, height: u32, format: &str) {
    let frames = detect(width, height, format, 2);
    assert_eq!(frames.len(), 2);
    let s = width as f64 / 640.0;
    let margin = 12.0 * s;
    let places = common::text_places(width, height);
    for (i, (dets, model)) in frames.iter().enumerate() {
        let model = model.as_deref().unwrap_or("");
        assert!(
            model.starts_with("common_det@"),
            "frame {i}: model {model:?}"
        );
        assert!(
            dets.len() >= places.len(),
            "frame {i}: only {} detections: {dets:?}",
            dets.len()
        );
        for d in dets {
            assert_eq!((d.label.as_str(), d.class_id), ("text", 0), "{d:?}");
            assert!((0.25..=1.0).contains(&d.confidence), "{d:?}");
            let b = (d.x as f64, d.y as f64, d.w as f64, d.h as f64);
            // Each box lies on drawn text: nearly all of it inside a text's ink box.
            let best = places
                .iter()
                .map(|p| {
                    let r = p.ink;
                    common::covered(b, (r.0 - margin, r.1 - margin, r.2 + margin, r.3 + margin))
                })
                .fold(0.0, f64::max);
            assert!(
                best >= 0.9,
                "{width}x{height} {format} frame {i}: box {d:?} is not on the text {places:?}"
            );
            // A character box is about one character big, not the whole picture.
            assert!(d.w as f64 <= 80.0 * s && d.h as f64 <= 80.0 * s, "{d:?}");
        }
        // And every text got at least one box, whose centre lies inside its ink box.
        for p in &places {
            let hit = dets.iter().any(|d| {
                let (cx, cy) = (d.x as f64 + d.w as f64 / 2.0, d.y as f64 + d.h as f64 / 2.0);
                cx >= p.ink.0 && cx <= p.ink.2 && cy >= p.ink.1 && cy <= p.ink.3
            });
            assert!(
                hit,
                "{width}x{height} {format} frame {i}: nothing on '{}' at {:?}: {dets:?}",
                p.text, p.ink
            );
        }
    }
}

#[test]
fn boxes_on_text_640x480_nv12() {
    check_on_text(640, 480, "NV12");
}

#[test]
fn boxes_on_text_640x480_rgb() {
    check_on_text(640, 480, "RGB");
}

#[test]
fn boxes_on_text_1280x720_nv12() {
    check_on_text(1280, 720, "NV12");
}

#[test]
fn boxes_on_text_1280x720_rgb() {
    check_on_text(1280, 720, "RGB");
}

/// The formats give the same boxes up to colour conversion and chroma subsampling.
#[test]
fn all_formats_agree() {
    let reference = detect(640, 480, "RGB", 1);
    let reference = &reference[0].0;
    for format in ["BGR", "RGBA", "BGRA", "RGBx", "BGRx", "I420", "NV12"] {
        let got = detect(640, 480, format, 1);
        let got = &got[0].0;
        assert_eq!(
            got.len(),
            reference.len(),
            "{format}: {got:?} vs RGB {reference:?}"
        );
        for d in got {
            let close = reference.iter().any(|r| {
                (r.x as i64 - d.x as i64).abs() <= 3
                    && (r.y as i64 - d.y as i64).abs() <= 3
                    && (r.w as i64 - d.w as i64).abs() <= 3
                    && (r.h as i64 - d.h as i64).abs() <= 3
            });
            assert!(close, "{format}: {d:?} has no twin in RGB {reference:?}");
        }
    }
}
