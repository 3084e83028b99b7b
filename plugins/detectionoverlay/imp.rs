// SPDX-License-Identifier: MPL-2.0
//! `detectionoverlay` implementation: a `VideoFilter` working in place.
//!
//! Lock order: only `settings` (read once per frame, copied; and once in `before_transform`).

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use super::canvas::{self, Canvas, LINE_COLOUR, Rgb, ZONE_COLOUR};
use crate::formats::detection;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "detectionoverlay",
        gst::DebugColorFlags::empty(),
        Some("videoai detection overlay"),
    )
});

const DEFAULT_LINE_WIDTH: u32 = 2;
const DEFAULT_FONT_SCALE: u32 = 2;
const DEFAULT_SHOW_LABELS: bool = true;
const DEFAULT_SHOW_CONFIDENCE: bool = true;
const DEFAULT_MIN_CONFIDENCE: f64 = 0.0;
const DEFAULT_DRAW_ANALYTICS: bool = true;

/// The formats drawn on (all 8 bits per component).
const FORMATS: &[gst_video::VideoFormat] = &[
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::Nv12,
    gst_video::VideoFormat::I420,
];

#[derive(Debug, Clone, Copy)]
struct Settings {
    line_width: u32,
    font_scale: u32,
    show_labels: bool,
    show_confidence: bool,
    min_confidence: f64,
    draw_analytics: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            line_width: DEFAULT_LINE_WIDTH,
            font_scale: DEFAULT_FONT_SCALE,
            show_labels: DEFAULT_SHOW_LABELS,
            show_confidence: DEFAULT_SHOW_CONFIDENCE,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            draw_analytics: DEFAULT_DRAW_ANALYTICS,
        }
    }
}

#[derive(Default)]
pub struct DetectionOverlay {
    settings: Mutex<Settings>,
}

#[glib::object_subclass]
impl ObjectSubclass for DetectionOverlay {
    const NAME: &'static str = "GstDetectionOverlay";
    type Type = super::DetectionOverlay;
    type ParentType = gst_video::VideoFilter;
}

/// The text above a box: `label confidence`, and the classifier's label if any.
fn caption(d: &crate::eventlog::event::Detection, show_confidence: bool) -> String {
    let mut s = d.label.clone();
    if let Some(id) = d.track_id {
        s.push_str(&format!(" #{id}"));
    }
    if show_confidence && d.class_id >= 0 {
        s.push_str(&format!(" {:.2}", d.confidence));
    }
    if let Some(c) = &d.classification
        && c.label != d.label
    {
        s.push_str(" / ");
        s.push_str(&c.label);
    }
    s
}

/// A caption on a filled box of `colour`, top-left at (x, y), kept inside the frame.
fn label(canvas: &mut Canvas, x: i64, y: i64, text: &str, scale: i64, colour: Rgb) {
    let (tw, th) = canvas::text_size(text, scale);
    let pad = scale;
    let (bw, bh) = (tw + 2 * pad, th + 2 * pad);
    let bx = x.min(canvas.width() as i64 - bw).max(0);
    let by = y.min(canvas.height() as i64 - bh).max(0);
    let pen = canvas.pen(colour);
    canvas.fill(bx, by, bx + bw, by + bh, pen);
    let ink = if colour.luma() > 140 {
        Rgb(0, 0, 0)
    } else {
        Rgb(255, 255, 255)
    };
    let ink = canvas.pen(ink);
    canvas.text(bx + pad, by + pad, text, scale, ink);
}

/// objecttracker's lines (with their counts at the middle) and zones (with theirs at the first
/// corner).
fn draw_places(
    canvas: &mut Canvas,
    lines: &[detection::LineCount],
    zones: &[detection::ZoneCount],
    width: i64,
    scale: i64,
) {
    let pt = |p: (i32, i32)| (p.0 as i64, p.1 as i64);
    for z in zones {
        let pen = canvas.pen(ZONE_COLOUR);
        for (i, &a) in z.points.iter().enumerate() {
            let b = z.points[(i + 1) % z.points.len()];
            canvas.segment(pt(a), pt(b), width, pen);
        }
        if let Some(&first) = z.points.first() {
            let text = format!(
                "{}: {} (in {} out {})",
                z.name, z.inside, z.entries, z.exits
            );
            label(
                canvas,
                first.0 as i64,
                first.1 as i64,
                &text,
                scale,
                ZONE_COLOUR,
            );
        }
    }
    for l in lines {
        let pen = canvas.pen(LINE_COLOUR);
        canvas.segment(pt(l.from), pt(l.to), width.max(2) + 1, pen);
        let mid = (
            (l.from.0 as i64 + l.to.0 as i64) / 2,
            (l.from.1 as i64 + l.to.1 as i64) / 2,
        );
        let text = format!("{} in {} out {}", l.name, l.crossed_in, l.crossed_out);
        let (tw, th) = canvas::text_size(&text, scale);
        label(
            canvas,
            mid.0 - tw / 2,
            mid.1 - th / 2,
            &text,
            scale,
            LINE_COLOUR,
        );
    }
}

impl ObjectImpl for DetectionOverlay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt::builder("line-width")
                    .nick("Line width")
                    .blurb(
                        "Width of the box outlines, in pixels (drawn inside the box). Default: 2",
                    )
                    .minimum(1)
                    .maximum(64)
                    .default_value(DEFAULT_LINE_WIDTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("font-scale")
                    .nick("Font scale")
                    .blurb(
                        "Size of the label text: the 8x8 pixel font magnified this many times \
                         (2 = 16 pixels high). Default: 2",
                    )
                    .minimum(1)
                    .maximum(16)
                    .default_value(DEFAULT_FONT_SCALE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("show-labels")
                    .nick("Show labels")
                    .blurb("Draw the label text above each box. Default: true")
                    .default_value(DEFAULT_SHOW_LABELS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("show-confidence")
                    .nick("Show confidence")
                    .blurb("Append the confidence (0.00 to 1.00) to the label. Default: true")
                    .default_value(DEFAULT_SHOW_CONFIDENCE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("min-confidence")
                    .nick("Minimum confidence")
                    .blurb(
                        "Draw only detections at least this confident (0 to 1); regions from \
                         other elements, without a confidence, are always drawn. Default: 0",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_MIN_CONFIDENCE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("draw-analytics")
                    .nick("Draw lines and zones")
                    .blurb(
                        "Draw objecttracker's counting lines (yellow, with their in and out \
                         counts) and zones (blue outline, with the tracks inside now and the \
                         entries and exits so far), from the frame's videoai-analytics meta. \
                         Default: true",
                    )
                    .default_value(DEFAULT_DRAW_ANALYTICS)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "line-width" => s.line_width = value.get().expect("type checked upstream"),
            "font-scale" => s.font_scale = value.get().expect("type checked upstream"),
            "show-labels" => s.show_labels = value.get().expect("type checked upstream"),
            "show-confidence" => s.show_confidence = value.get().expect("type checked upstream"),
            "min-confidence" => s.min_confidence = value.get().expect("type checked upstream"),
            "draw-analytics" => s.draw_analytics = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "line-width" => s.line_width.to_value(),
            "font-scale" => s.font_scale.to_value(),
            "show-labels" => s.show_labels.to_value(),
            "show-confidence" => s.show_confidence.to_value(),
            "min-confidence" => s.min_confidence.to_value(),
            "draw-analytics" => s.draw_analytics.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for DetectionOverlay {}

impl ElementImpl for DetectionOverlay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Detection overlay",
                "Filter/Effect/Video",
                "Draws each GstVideoRegionOfInterestMeta (onnxinfer's detections, or any \
                 element's regions) as a box in its class's colour with 'label #track-id \
                 confidence' above it, and objecttracker's counting lines and zones with their \
                 counts, in place on RGB/BGR (+alpha/padding), NV12 or I420. Frames with \
                 nothing to draw pass through untouched (no map, no copy)",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS.iter().copied())
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for DetectionOverlay {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn before_transform(&self, inbuf: &gst::BufferRef) {
        // Nothing to draw: pass the buffer on as it is (no writable map, no copy).
        let draw_analytics = self.settings.lock().unwrap().draw_analytics;
        let none = !(detection::has_detections(inbuf)
            || (draw_analytics && detection::has_analytics(inbuf)));
        let obj = self.obj();
        if obj.is_passthrough() != none {
            obj.set_passthrough(none);
        }
    }
}

impl VideoFilterImpl for DetectionOverlay {
    fn transform_frame_ip(
        &self,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let s = *self.settings.lock().unwrap();
        let detections: Vec<_> = detection::read_detections(frame.buffer())
            .into_iter()
            .filter(|d| d.class_id < 0 || d.confidence >= s.min_confidence)
            .collect();
        let (lines, zones) = if s.draw_analytics {
            detection::read_places(frame.buffer())
        } else {
            Default::default()
        };
        if detections.is_empty() && lines.is_empty() && zones.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let Some(mut canvas) = Canvas::new(frame) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let line = s.line_width as i64;
        let scale = s.font_scale as i64;
        draw_places(&mut canvas, &lines, &zones, line, scale);
        for d in &detections {
            let colour = canvas::class_colour(d.class_id, &d.label);
            let pen = canvas.pen(colour);
            let rect = (d.x as i64, d.y as i64, d.w as i64, d.h as i64);
            canvas.outline(rect, line, pen);
            if s.show_labels {
                let text = caption(d, s.show_confidence);
                let bh = canvas::text_size(&text, scale).1 + 2 * scale;
                // Above the box when there is room, else inside its top edge.
                let by = if rect.1 >= bh { rect.1 - bh } else { rect.1 };
                label(&mut canvas, rect.0, by, &text, scale, colour);
            }
        }
        gst::trace!(CAT, imp = self, "drew {} regions", detections.len());
        Ok(gst::FlowSuccess::Ok)
    }
}
