// SPDX-License-Identifier: MPL-2.0
//! One buffer on its way through onnxinfer: its frames (the buffer itself, or a batch's
//! fresh entries), what the per-stream rules picked for each, the regions to classify, the
//! preprocessing items, and the results as the runs give them. Pure data and functions: the
//! element (`imp.rs`) maps buffers, runs the jobs and reports.

use super::cursor::Pick;
use super::engine::{FrameResult, Item, Job, Results, Tag, Timings};
use super::preprocess::Rect;
use crate::formats::{batch, detection};

/// One frame of a buffer: the buffer itself, or a batch entry.
pub struct FrameWork {
    /// The batch entry (`None`: the buffer is the frame).
    pub entry: Option<usize>,
    pub stream: String,
    pub info: gst_video::VideoInfo,
    pub pick: Pick,
    /// `roi-only`: the upstream regions to classify (one result each).
    pub regions: Vec<Rect>,
    /// What it gave: one per region with `roi-only`, else one.
    pub results: Vec<Option<FrameResult>>,
    /// The model that gave the results.
    pub model: Option<String>,
}

impl FrameWork {
    /// A frame not picked yet.
    pub fn new(entry: Option<usize>, stream: String, info: gst_video::VideoInfo) -> Self {
        FrameWork {
            entry,
            stream,
            info,
            pick: Pick::Infer { canary: false },
            regions: Vec::new(),
            results: Vec::new(),
            model: None,
        }
    }
}

/// A buffer between preprocessing and its results.
pub struct Work {
    /// The batch's entries (batch caps).
    pub entries: Option<Vec<batch::Entry>>,
    pub frames: Vec<FrameWork>,
    /// The jobs, each with whether it is the canary's.
    pub jobs: Vec<(bool, Job)>,
}

/// A buffer whose jobs run on the inference thread (`pipelining=true`).
pub struct InFlight {
    pub buffer: gst::Buffer,
    pub work: Work,
    pub canary: Vec<bool>,
}

impl Work {
    /// Files a run's decoded results under their frames (and regions), and shares the run's
    /// timings among the frames it covered.
    pub fn store(&mut self, decoded: Results, timings: &mut [Timings]) {
        let mut in_run: Vec<usize> = decoded.results.iter().map(|(t, _)| t.frame).collect();
        in_run.dedup();
        let share = decoded.timings.share(in_run.len());
        for f in &in_run {
            timings[*f].add(&share);
        }
        for (tag, result) in decoded.results {
            let f = &mut self.frames[tag.frame];
            let slot = tag.region.unwrap_or(0);
            if f.results.len() <= slot {
                f.results.resize(slot + 1, None);
            }
            f.results[slot] = Some(result);
            f.model = Some(decoded.model.clone());
        }
    }

    /// The canary failed: its frames go to the primary, from scratch. Returns them.
    pub fn canary_frames_to_primary(&mut self, timings: &mut [Timings]) -> Vec<usize> {
        let redo: Vec<usize> = (0..self.frames.len())
            .filter(|&i| self.frames[i].pick == Pick::Infer { canary: true })
            .collect();
        for &i in &redo {
            let f = &mut self.frames[i];
            f.pick = Pick::Infer { canary: false };
            f.results.clear();
            f.model = None;
            timings[i] = Timings::default();
        }
        redo
    }
}

/// The upstream ROIs of `buf` as regions to classify (`roi-only`).
pub fn roi_regions(buf: &gst::BufferRef) -> Vec<Rect> {
    detection::roi_rects(buf)
        .iter()
        .map(|(x, y, w, h)| Rect {
            x: *x as usize,
            y: *y as usize,
            w: *w as usize,
            h: *h as usize,
        })
        .collect()
}

/// The frame of `entry`: the batch entry's buffer, or the buffer itself.
pub fn frame_buffer<'b>(
    buf: &'b gst::BufferRef,
    entries: Option<&'b [batch::Entry]>,
    entry: Option<usize>,
) -> Option<&'b gst::BufferRef> {
    match (entries, entry) {
        (Some(e), Some(i)) => e.get(i)?.buffer.as_deref(),
        _ => Some(buf),
    }
}

/// What to preprocess for the `mapped` frames: each region of a frame that has regions, else
/// the whole frame (not with `roi-only`: a frame without regions has nothing to classify).
pub fn items<'a, 'f>(
    frames: &'a [FrameWork],
    mapped: &'a [(usize, gst_video::VideoFrameRef<&'f gst::BufferRef>)],
    roi_only: bool,
) -> Vec<Item<'a, 'f>> {
    let mut items = Vec::new();
    for (i, frame) in mapped {
        let f = &frames[*i];
        if !f.regions.is_empty() {
            for (r, rect) in f.regions.iter().enumerate() {
                items.push(Item {
                    tag: Tag {
                        frame: *i,
                        region: Some(r),
                    },
                    info: &f.info,
                    frame,
                    region: Some(*rect),
                });
            }
        } else if !roi_only {
            items.push(Item {
                tag: Tag {
                    frame: *i,
                    region: None,
                },
                info: &f.info,
                frame,
                region: None,
            });
        }
    }
    items
}
