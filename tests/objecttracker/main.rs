// SPDX-License-Identifier: MPL-2.0
//! objecttracker: tracking quality on synthetic scenes whose truth is known ([`scenes`]), line
//! and zone counts, the element's behaviour on odd input ([`element`]), and the object demo on
//! a real COCO detector ([`demo`]). One binary with a module per topic.

#[path = "../common/mod.rs"]
mod common;

mod demo;
mod element;
mod scenes;

use std::time::Duration;

use gst::prelude::*;

use gstvideoai::eventlog::event::Detection;
use gstvideoai::formats::detection;

/// A frame's period: 25 frames a second.
pub const PERIOD_NS: u64 = 40_000_000;

pub use common::mot::{Boxed, Tracked};

/// A frame at `index` carrying `boxes` as onnxinfer would attach them (fresh or carried).
pub fn frame(index: u64, boxes: &[Boxed], fresh: bool) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(1).unwrap();
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(index * PERIOD_NS));
        b.set_duration(gst::ClockTime::from_nseconds(PERIOD_NS));
        for bx in boxes {
            let r = bx.rect;
            let c = |v: f64| v.max(0.0).round() as u32;
            let mut d = Detection::new(
                format!("class-{}", bx.class_id),
                bx.class_id,
                bx.confidence,
                (c(r.0), c(r.1), c(r.2), c(r.3)),
            );
            d.fresh = fresh;
            detection::attach(b, &d, "synthetic@0");
        }
        detection::attach_inference(b, "synthetic@0", fresh, boxes.len() as u32);
    }
    b
}

/// The regions of an output buffer with their track ids.
pub fn tracked(buffer: &gst::BufferRef) -> Vec<Tracked> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| {
            let p = m.param(detection::DETECTION_PARAM);
            Tracked {
                rect: m.rect(),
                id: p.and_then(|p| p.get::<u64>("track-id").ok()),
                state: p.and_then(|p| p.get::<String>("track-state").ok()),
            }
        })
        .collect()
}

/// A harness around `objecttracker <props>` (a gst-launch property list) taking 640×480
/// frames.
pub fn harness(props: &str) -> gst_check::Harness {
    common::init();
    let mut h = gst_check::Harness::new_parse(&format!("objecttracker name=tracker {props}"));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=640,height=480,framerate=25/1");
    h
}

/// Pushes `frames` through `h`; what came out of each.
pub fn run(h: &mut gst_check::Harness, frames: Vec<gst::Buffer>) -> Vec<Vec<Tracked>> {
    frames
        .into_iter()
        .map(|f| {
            let out = h.push_and_pull(f).expect("a frame out");
            tracked(&out)
        })
        .collect()
}

/// The tracker inside the harness' bin.
pub fn tracker(h: &gst_check::Harness) -> gst::Element {
    h.element()
        .unwrap()
        .downcast::<gst::Bin>()
        .unwrap()
        .by_name("tracker")
        .unwrap()
}

pub fn stats(h: &gst_check::Harness) -> gst::Structure {
    tracker(h).property::<gst::Structure>("stats")
}

/// Element messages named `name` posted so far on `bus`.
pub fn messages(bus: &gst::Bus, name: &str) -> Vec<gst::Structure> {
    let mut out = Vec::new();
    while let Some(m) = bus.pop() {
        if let Some(s) = m.structure()
            && m.type_() == gst::MessageType::Element
            && s.name() == name
        {
            out.push(s.to_owned());
        }
    }
    out
}

/// How long a test may wait for a pipeline.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `videoai-events ARGS` and returns its JSON lines.
pub fn events_tool(args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_videoai-events"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
