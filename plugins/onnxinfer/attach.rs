// SPDX-License-Identifier: MPL-2.0
//! Results onto frames: detections as `GstVideoRegionOfInterestMeta`s, classifications as
//! `classification` params, raw outputs as a `videoai-tensors` meta, and on every handled frame
//! the `videoai-inference` meta (see [`crate::formats::detection`]).

use super::engine::FrameResult;
use super::labels;
use crate::eventlog::event::Detection;
use crate::formats::detection;

/// Attaches `result` (from `model`) to a `size` frame; returns how many detections it holds.
pub fn result(
    buf: &mut gst::BufferRef,
    labels_: &[String],
    size: (u32, u32),
    model: &str,
    result: &FrameResult,
    fresh: bool,
) -> usize {
    let n = match result {
        FrameResult::Boxes(boxes) => {
            let mut n = 0;
            for b in boxes {
                let (x, y) = (b.x1.round().max(0.0) as u32, b.y1.round().max(0.0) as u32);
                let w = (b.x2.round().max(0.0) as u32).saturating_sub(x);
                let h = (b.y2.round().max(0.0) as u32).saturating_sub(y);
                if w == 0 || h == 0 {
                    continue;
                }
                let mut det = Detection::new(
                    labels::label(labels_, b.class_id),
                    b.class_id as i32,
                    b.score as f64,
                    (x, y, w, h),
                );
                det.fresh = fresh;
                detection::attach(buf, &det, model);
                n += 1;
            }
            n
        }
        FrameResult::Classes(top) => {
            let top: Vec<detection::Class> = top
                .iter()
                .map(|(c, p)| (labels::label(labels_, *c), *c as i32, *p as f64))
                .collect();
            if !top.is_empty() {
                detection::attach_frame_classification(buf, size, &top, model, fresh);
            }
            usize::from(!top.is_empty())
        }
        FrameResult::Tensors(t) => {
            detection::attach_tensors(buf, t, model);
            0
        }
    };
    detection::attach_inference(buf, model, fresh, n as u32);
    n
}

/// Attaches `roi-only` classifier results to the upstream ROIs they came from (`results[i]`
/// for the frame's i-th ROI, `None` where a region was outside the frame); returns how many
/// regions were classified.
pub fn region_results(
    buf: &mut gst::BufferRef,
    labels_: &[String],
    results: &[Option<FrameResult>],
    model: &str,
) -> usize {
    let tops: Vec<Option<Vec<detection::Class>>> = results
        .iter()
        .map(|r| match r {
            Some(FrameResult::Classes(top)) if !top.is_empty() => Some(
                top.iter()
                    .map(|(c, p)| (labels::label(labels_, *c), *c as i32, *p as f64))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    let n = tops.iter().flatten().count();
    detection::classify_rois(buf, &tops, model, true);
    detection::attach_inference(buf, model, true, n as u32);
    n
}
