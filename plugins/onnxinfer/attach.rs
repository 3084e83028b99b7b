// SPDX-License-Identifier: MPL-2.0
//! Results onto frames: detections as `GstVideoRegionOfInterestMeta`s, classifications as
//! `classification` params, raw outputs as a `videoai-tensors` meta, and on every handled frame
//! the `videoai-inference` meta (see [`crate::formats::detection`]).

use super::cursor::{Carried, Cursors, Pick};
use super::engine::{FrameResult, Timings};
use super::labels;
use super::work::FrameWork;
use crate::eventlog::event::Detection;
use crate::formats::batch::{self, Status};
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

/// What attaching a buffer's results did, for the statistics.
#[derive(Default)]
pub struct Attached {
    /// Per inferred frame: the model, whether it is the canary, its timings and detections.
    pub records: Vec<(String, bool, Timings, usize)>,
    /// Frames not inferred (`interval`, unreadable): they carry their stream's last result.
    pub skipped: u64,
}

/// Attaches each frame's results (or, on frames the rules skipped, its stream's last result)
/// to the frame: `buf` itself, or its batch entry in `entries`. With `keep_last` a frame's
/// result is remembered for the frames after it. `who_looked(canary)` names the model of a
/// `roi-only` frame without regions.
#[allow(clippy::too_many_arguments)]
pub fn frames(
    buf: &mut gst::BufferRef,
    mut entries: Option<&mut [batch::Entry]>,
    frames: &mut [FrameWork],
    timings: &[Timings],
    labels_: &[String],
    cursors: &mut Cursors,
    roi_only: bool,
    keep_last: bool,
    who_looked: impl Fn(bool) -> String,
) -> Attached {
    let mut done = Attached::default();
    for (i, f) in frames.iter_mut().enumerate() {
        let size = (f.info.width(), f.info.height());
        let b: &mut gst::BufferRef = match (entries.as_deref_mut(), f.entry) {
            (Some(e), Some(k)) => match e[k].buffer.as_mut() {
                Some(b) => b.make_mut(),
                None => continue,
            },
            _ => &mut *buf,
        };
        match &f.pick {
            Pick::Carry => {
                done.skipped += 1;
                if let Some(c) = cursors.last(&f.stream) {
                    result(b, labels_, size, &c.model, &c.result, false);
                }
            }
            Pick::Infer { canary } => {
                let Some(model) = f.model.clone() else {
                    if roi_only {
                        // No region to classify: the frame still says who looked.
                        region_results(b, labels_, &[], &who_looked(*canary));
                    }
                    continue;
                };
                let n = if roi_only {
                    let mut results = std::mem::take(&mut f.results);
                    results.resize(f.regions.len(), None);
                    region_results(b, labels_, &results, &model)
                } else if let Some(Some(r)) = f.results.first() {
                    let n = result(b, labels_, size, &model, r, true);
                    if keep_last {
                        cursors.remember(
                            &f.stream,
                            Carried {
                                model: model.clone(),
                                result: r.clone(),
                            },
                        );
                    }
                    n
                } else {
                    0
                };
                done.records.push((model, *canary, timings[i], n));
            }
        }
    }
    done
}

/// Repeated batch entries (a stream slower than the ticks) carry their stream's last result.
pub fn repeated(entries: &mut [batch::Entry], labels_: &[String], cursors: &Cursors) {
    for e in entries.iter_mut().filter(|e| e.status == Status::Repeated) {
        let Some(last) = cursors.last(&e.stream_id) else {
            continue;
        };
        let (Some(frame), Some(info)) = (
            e.buffer.as_mut(),
            e.caps
                .as_ref()
                .and_then(|c| gst_video::VideoInfo::from_caps(c).ok()),
        ) else {
            continue;
        };
        let b = frame.make_mut();
        if detection::inference_model(b).is_none() {
            result(
                b,
                labels_,
                (info.width(), info.height()),
                &last.model,
                &last.result,
                false,
            );
        }
    }
}
