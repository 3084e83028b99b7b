// SPDX-License-Identifier: MPL-2.0
//! detectionoverlay: boxes drawn at the ROI places (pixel checks on synthetic frames), in RGB,
//! BGRx, NV12 and I420; frames without ROIs pass untouched; objecttracker's lines and zones
//! drawn from the videoai-analytics meta, whose counts read back as counted.

mod common;

use gst::prelude::*;
use gst_video::prelude::*;
use gstvideoai::detectionoverlay::canvas::{LINE_COLOUR, Rgb, ZONE_COLOUR, class_colour};
use gstvideoai::eventlog::event::Detection;
use gstvideoai::formats::detection;

const W: u32 = 64;
const H: u32 = 48;

fn harness(format: &str, props: &[(&str, glib::Value)]) -> gst_check::Harness {
    common::init();
    let el = gst::ElementFactory::make("detectionoverlay")
        .build()
        .unwrap();
    for (k, v) in props {
        el.set_property_from_value(k, v);
    }
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str(&format!(
        "video/x-raw,format={format},width={W},height={H},framerate=30/1"
    ));
    h
}

/// A black frame of `format` with the given detections.
fn frame(format: &str, dets: &[Detection]) -> gst::Buffer {
    let info = gst_video::VideoInfo::builder(format.parse().unwrap(), W, H)
        .build()
        .unwrap();
    let mut buf = gst::Buffer::with_size(info.size()).unwrap();
    {
        let b = buf.get_mut().unwrap();
        let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).unwrap();
        let yuv = info.format_info().is_yuv();
        for p in 0..f.n_planes() {
            let v = if yuv {
                if p == 0 { 16 } else { 128 }
            } else {
                0
            };
            f.plane_data_mut(p).unwrap().fill(v);
        }
    }
    for d in dets {
        detection::attach(buf.get_mut().unwrap(), d, "m@1");
    }
    buf
}

fn mapped(
    format: &str,
    buf: &gst::Buffer,
) -> gst_video::VideoFrame<gst_video::video_frame::Readable> {
    let info = gst_video::VideoInfo::builder(format.parse().unwrap(), W, H)
        .build()
        .unwrap();
    gst_video::VideoFrame::from_buffer_readable(buf.clone(), &info).unwrap()
}

/// The bytes of component `c` at (x, y) of a packed RGB frame with `bpp` bytes per pixel.
fn px(
    f: &gst_video::VideoFrame<gst_video::video_frame::Readable>,
    x: u32,
    y: u32,
    bpp: u32,
) -> &[u8] {
    let stride = f.plane_stride()[0] as usize;
    let at = y as usize * stride + (x * bpp) as usize;
    &f.plane_data(0).unwrap()[at..at + bpp as usize]
}

fn luma(f: &gst_video::VideoFrame<gst_video::video_frame::Readable>, x: u32, y: u32) -> u8 {
    f.plane_data(0).unwrap()[y as usize * f.plane_stride()[0] as usize + x as usize]
}

fn det(class_id: i32, confidence: f64, rect: (u32, u32, u32, u32)) -> Detection {
    Detection::new(format!("class-{class_id}"), class_id, confidence, rect)
}

/// Points on the outline of (10, 20, 30, 16) with line width 2, and points off it.
const ON: [(u32, u32); 6] = [(10, 28), (11, 28), (38, 28), (39, 28), (25, 20), (25, 35)];
const OFF: [(u32, u32); 4] = [(25, 28), (12, 28), (5, 5), (50, 45)];

#[test]
fn boxes_are_drawn_at_the_roi_places_rgb() {
    let mut h = harness("RGB", &[("show-labels", false.to_value())]);
    let out = h
        .push_and_pull(frame("RGB", &[det(3, 0.9, (10, 20, 30, 16))]))
        .unwrap();
    let f = mapped("RGB", &out);
    let Rgb(r, g, b) = class_colour(3, "class-3");
    for (x, y) in ON {
        assert_eq!(px(&f, x, y, 3), [r, g, b], "({x}, {y}) is on the outline");
    }
    for (x, y) in OFF {
        assert_eq!(px(&f, x, y, 3), [0, 0, 0], "({x}, {y}) is not");
    }
}

#[test]
fn byte_order_of_bgrx_is_respected() {
    let mut h = harness("BGRx", &[("show-labels", false.to_value())]);
    let out = h
        .push_and_pull(frame("BGRx", &[det(0, 0.9, (10, 20, 30, 16))]))
        .unwrap();
    let f = mapped("BGRx", &out);
    let Rgb(r, g, b) = class_colour(0, "class-0");
    assert_eq!(&px(&f, 10, 28, 4)[..3], [b, g, r]);
    assert_eq!(&px(&f, 25, 28, 4)[..3], [0, 0, 0]);
}

#[test]
fn boxes_on_nv12_and_i420() {
    for format in ["NV12", "I420"] {
        let mut h = harness(format, &[("show-labels", false.to_value())]);
        let out = h
            .push_and_pull(frame(format, &[det(1, 0.9, (10, 20, 30, 16))]))
            .unwrap();
        let f = mapped(format, &out);
        let Rgb(r, g, b) = class_colour(1, "class-1");
        let y = (16.0 + (65.481 * r as f64 + 128.553 * g as f64 + 24.966 * b as f64) / 255.0)
            .round() as u8;
        for (px, py) in ON {
            assert_eq!(luma(&f, px, py), y, "{format} ({px}, {py})");
        }
        for (px, py) in OFF {
            assert_eq!(luma(&f, px, py), 16, "{format} ({px}, {py})");
        }
    }
}

#[test]
fn labels_go_above_the_box() {
    let mut h = harness("RGB", &[]);
    let out = h
        .push_and_pull(frame("RGB", &[det(2, 0.5, (10, 30, 30, 16))]))
        .unwrap();
    let f = mapped("RGB", &out);
    let Rgb(r, g, b) = class_colour(2, "class-2");
    // The caption background (font scale 2: 16 px text + 2 px padding each side) sits on the
    // 20 rows above the box; wider than the frame here, it starts at the left border.
    let rows: Vec<u32> = (0..30).filter(|y| px(&f, 0, *y, 3) == [r, g, b]).collect();
    assert_eq!(rows, (10..30).collect::<Vec<_>>());
    // The text itself is in black or white inside it.
    let inked = (12..28)
        .flat_map(|y| (2..60).map(move |x| (x, y)))
        .filter(|(x, y)| matches!(px(&f, *x, *y, 3), [0, 0, 0] | [255, 255, 255]))
        .count();
    assert!(inked > 50, "{inked} text pixels");
}

#[test]
fn frames_without_rois_pass_untouched() {
    let mut h = harness("RGB", &[]);
    let input = frame("RGB", &[]);
    let ptr = input.map_readable().unwrap().as_ptr();
    let out = h.push_and_pull(input).unwrap();
    // The same memory: not copied, not written.
    assert_eq!(out.map_readable().unwrap().as_ptr(), ptr);
    assert!(out.map_readable().unwrap().iter().all(|b| *b == 0));
    // Then a frame with one, then without again.
    let out = h
        .push_and_pull(frame("RGB", &[det(0, 0.9, (1, 1, 8, 8))]))
        .unwrap();
    assert!(out.map_readable().unwrap().iter().any(|b| *b != 0));
    let out = h.push_and_pull(frame("RGB", &[])).unwrap();
    assert!(out.map_readable().unwrap().iter().all(|b| *b == 0));
}

#[test]
fn min_confidence_filters_and_boxes_are_clipped() {
    let mut h = harness(
        "RGB",
        &[
            ("min-confidence", 0.5f64.to_value()),
            ("show-labels", false.to_value()),
        ],
    );
    let out = h
        .push_and_pull(frame(
            "RGB",
            &[
                det(0, 0.3, (10, 20, 30, 16)),
                det(1, 0.7, (50, 40, 100, 100)),
            ],
        ))
        .unwrap();
    let f = mapped("RGB", &out);
    assert_eq!(px(&f, 10, 28, 3), [0, 0, 0], "below min-confidence");
    let Rgb(r, g, b) = class_colour(1, "class-1");
    assert_eq!(px(&f, 50, 45, 3), [r, g, b], "clipped box still drawn");
    assert_eq!(px(&f, 55, 45, 3), [0, 0, 0]);
}

#[test]
fn overlay_after_onnxinfer_in_a_pipeline() {
    common::init();
    let dir = common::TempDir::new("overlay");
    let png = dir.join("frame.png");
    let p = common::parse(&format!(
        "{} ! videoconvert ! onnxinfer model-location=\"{}\" labels-location=\"{}\" \
         ! detectionoverlay ! videoconvert ! pngenc snapshot=true ! filesink location=\"{}\"",
        common::text_source(640, 360, 5),
        common::model().display(),
        common::labels().display(),
        png.display()
    ));
    let out = common::run(&p, std::time::Duration::from_secs(60));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
}

/// One person walking right along the bottom of the frame through `objecttracker` (a line at
/// x = 32, a zone on the right) and `detectionoverlay`: the last frame out.
fn walk_past_a_line_into_a_zone(draw_analytics: bool) -> gst::Buffer {
    common::init();
    let mut h = gst_check::Harness::new_parse(&format!(
        "objecttracker lines=door:32,48,32,0 zones=bay:44,4,60,4,60,44,44,44 \
         ! detectionoverlay show-labels=false font-scale=1 draw-analytics={draw_analytics}"
    ));
    h.set_src_caps_str(&format!(
        "video/x-raw,format=RGB,width={W},height={H},framerate=30/1"
    ));
    let mut last = None;
    for (i, x) in (4..=52).step_by(4).enumerate() {
        let mut buf = frame("RGB", &[Detection::new("person", 0, 0.9, (x, 30, 8, 10))]);
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(i as u64 * 33));
        b.set_duration(gst::ClockTime::from_mseconds(33));
        last = Some(h.push_and_pull(buf).unwrap());
    }
    last.unwrap()
}

#[test]
fn lines_and_zones_are_drawn_with_their_counts() {
    let out = walk_past_a_line_into_a_zone(true);
    // The counts read back from the frame's videoai-analytics meta.
    let (lines, zones) = detection::read_places(&out);
    assert_eq!(
        lines,
        [detection::LineCount {
            name: "door".into(),
            from: (32, 48),
            to: (32, 0),
            crossed_in: 1,
            crossed_out: 0,
        }]
    );
    assert_eq!(
        zones,
        [detection::ZoneCount {
            name: "bay".into(),
            points: vec![(44, 4), (60, 4), (60, 44), (44, 44)],
            inside: 1,
            entries: 1,
            exits: 0,
        }]
    );
    let f = mapped("RGB", &out);
    let Rgb(r, g, b) = LINE_COLOUR;
    for y in [2, 40, 46] {
        assert_eq!(px(&f, 32, y, 3), [r, g, b], "(32, {y}) is on the line");
    }
    let Rgb(r, g, b) = ZONE_COLOUR;
    for (x, y) in [(60, 16), (60, 36), (50, 44)] {
        assert_eq!(
            px(&f, x, y, 3),
            [r, g, b],
            "({x}, {y}) is on the zone's edge"
        );
    }
    // Their captions: ink of the 8x8 font on the line's colour at its middle.
    let caption_row: Vec<&[u8]> = (0..W).map(|x| px(&f, x, 24, 3)).collect();
    assert!(
        caption_row.iter().any(|p| *p == [0, 0, 0]),
        "text ink on the caption"
    );
    assert!(caption_row.iter().filter(|p| **p == [255, 214, 0]).count() > 10);

    let plain = walk_past_a_line_into_a_zone(false);
    let f = mapped("RGB", &plain);
    for (x, y) in [(32, 40), (32, 2), (60, 20), (50, 44)] {
        assert_eq!(
            px(&f, x, y, 3),
            [0, 0, 0],
            "draw-analytics=false: ({x}, {y}) untouched"
        );
    }
    assert_eq!(
        detection::read_places(&plain).0[0].crossed_in,
        1,
        "counted all the same"
    );
}
