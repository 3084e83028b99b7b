// SPDX-License-Identifier: MPL-2.0
//! One model ready to run on frames: the model, its preprocessor for the negotiated video
//! format, and a reusable input tensor. Runs a frame (or regions of it) through the model and
//! returns results in frame pixels.

use std::time::{Duration, Instant};

use super::decode::{self, Decoded, Output, classifier, ssd};
use super::model::{Family, Model, TensorInput};
use super::nms;
use super::preprocess::{
    Anchor, ChannelOrder, Elem, EntryMut, Fit, Placement, Plan, Preprocessor, Rect, TensorSpec,
};

/// Preprocessing choices from the element's properties; `None` = the family's default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overrides {
    pub letterbox: Option<bool>,
    pub anchor: Option<Anchor>,
    pub order: Option<ChannelOrder>,
    pub scale: Option<f32>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub pad_value: Option<u8>,
    /// Input size for models with a dynamic size (0 = frame size rounded up to 32).
    pub input_size: (usize, usize),
}

/// The input tensor a family expects by default, then the overrides.
pub fn tensor_spec(
    model: &Model,
    overrides: &Overrides,
    frame_w: usize,
    frame_h: usize,
) -> TensorSpec {
    let (order, letterbox, anchor, scale, mean, std) = match model.family {
        Family::Yolox => (
            ChannelOrder::Bgr,
            true,
            Anchor::TopLeft,
            1.0,
            [0.0; 3],
            [1.0; 3],
        ),
        Family::Yolov5 | Family::Yolov8 => (
            ChannelOrder::Rgb,
            true,
            Anchor::Center,
            1.0 / 255.0,
            [0.0; 3],
            [1.0; 3],
        ),
        Family::Ssd(_) | Family::Raw => (
            ChannelOrder::Rgb,
            false,
            Anchor::Center,
            1.0 / 255.0,
            [0.0; 3],
            [1.0; 3],
        ),
        Family::Classifier => (
            ChannelOrder::Rgb,
            false,
            Anchor::Center,
            1.0 / 255.0,
            [0.485, 0.456, 0.406],
            [0.229, 0.224, 0.225],
        ),
    };
    let (width, height) = model.input_size(frame_w, frame_h, overrides.input_size);
    let anchor = overrides.anchor.unwrap_or(anchor);
    TensorSpec {
        width,
        height,
        layout: model.input.layout,
        order: overrides.order.unwrap_or(order),
        elem: model.input.elem,
        scale: overrides.scale.unwrap_or(scale),
        mean: overrides.mean.unwrap_or(mean),
        std: overrides.std.unwrap_or(std),
        pad_value: overrides.pad_value.unwrap_or(114),
        fit: if overrides.letterbox.unwrap_or(letterbox) {
            Fit::Letterbox(anchor)
        } else {
            Fit::Stretch
        },
    }
}

/// A reusable input tensor of `batch` entries, remembering which placement each entry's
/// padding was painted for.
#[derive(Debug, Default)]
struct TensorBuf {
    f32: Vec<f32>,
    u8: Vec<u8>,
    painted: Vec<Option<Placement>>,
}

/// Per-stage timings of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Model runs (`session.run` calls).
    pub runs: u32,
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

/// A detection in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    pub score: f32,
    pub class_id: usize,
}

/// What one frame (or region) gave.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameResult {
    Boxes(Vec<FrameBox>),
    /// Top-k classes of the frame or region.
    Classes(Vec<(usize, f32)>),
    /// Raw outputs: (name, shape, data).
    Tensors(Vec<(String, Vec<i64>, Vec<f32>)>),
}

/// Decoding parameters from the element's properties.
#[derive(Debug, Clone, Copy)]
pub struct DecodeParams {
    pub threshold: f32,
    pub iou: f32,
    pub class_agnostic: bool,
    pub max_detections: usize,
    pub top_k: usize,
    pub box_order: ssd::BoxOrder,
}

pub struct Engine {
    pub model: Model,
    pre: Option<Preprocessor>,
    /// Preprocessors of batch entries, one per video format seen (most recent last).
    batch_pres: Vec<(gst_video::VideoInfo, Preprocessor)>,
    tensor: TensorBuf,
}

/// Formats (size and pixel format) whose preprocessors are kept between batches; past that
/// the cache starts again.
const MAX_BATCH_FORMATS: usize = 16;

/// One frame (or region) to preprocess into a tensor entry.
type Item<'a, 'f> = (
    &'a Preprocessor,
    &'a gst_video::VideoFrameRef<&'f gst::BufferRef>,
    &'a Plan,
);

impl Engine {
    pub fn new(model: Model) -> Self {
        Engine {
            model,
            pre: None,
            batch_pres: Vec::new(),
            tensor: TensorBuf::default(),
        }
    }

    /// Prepares for frames of `info`.
    pub fn configure(
        &mut self,
        info: &gst_video::VideoInfo,
        overrides: &Overrides,
        threads: usize,
    ) -> Result<TensorSpec, String> {
        let pre = self.preprocessor(info, overrides, threads)?;
        let spec = *pre.spec();
        self.pre = Some(pre);
        self.batch_pres.clear();
        self.tensor = TensorBuf::default();
        Ok(spec)
    }

    /// A preprocessor from frames of `info` to this model's input.
    fn preprocessor(
        &self,
        info: &gst_video::VideoInfo,
        overrides: &Overrides,
        threads: usize,
    ) -> Result<Preprocessor, String> {
        let spec = tensor_spec(
            &self.model,
            overrides,
            info.width() as usize,
            info.height() as usize,
        );
        Preprocessor::new(spec, info, threads).map_err(|e| e.to_string())
    }

    /// Largest batch this model takes in one run.
    fn max_batch(&self, wanted: usize) -> usize {
        match self.model.input.batch {
            Some(b) => b.max(1),
            None => wanted.max(1),
        }
    }

    /// Preprocesses `items` into the tensor (entry i = item i; all items share one tensor
    /// spec) and runs the model; `decode` turns each entry's outputs into a result:
    /// `decode(outputs, entry, batch, plan)`.
    fn run_plans<R>(
        &mut self,
        items: &[Item<'_, '_>],
        timings: &mut Timings,
        mut decode: impl FnMut(&[Output<'_>], usize, usize, &Plan) -> Result<R, String>,
    ) -> Result<Vec<R>, String> {
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        let spec = *first.0.spec();
        let entry_len = spec.entry_len();
        let fixed = self.model.input.batch;
        let chunk = self.max_batch(items.len());
        let mut results = Vec::with_capacity(items.len());
        for group in items.chunks(chunk) {
            // A fixed batch larger than the group keeps whatever the spare entries hold.
            let batch = fixed.unwrap_or(group.len()).max(group.len());
            let t0 = Instant::now();
            let buf = &mut self.tensor;
            let total = batch * entry_len;
            let stale = match spec.elem {
                Elem::F32 => buf.f32.len() != total,
                Elem::U8 => buf.u8.len() != total,
            };
            if stale {
                match spec.elem {
                    Elem::F32 => buf.f32 = vec![0.0; total],
                    Elem::U8 => buf.u8 = vec![0; total],
                }
                buf.painted = vec![None; batch];
            }
            for (i, (pre, frame, plan)) in group.iter().enumerate() {
                let range = i * entry_len..(i + 1) * entry_len;
                let repaint = buf.painted[i] != Some(*plan.placement());
                match spec.elem {
                    Elem::F32 => {
                        let e = &mut buf.f32[range];
                        if repaint {
                            pre.paint_padding(EntryMut::F32(e));
                        }
                        pre.run(plan, frame, EntryMut::F32(e));
                    }
                    Elem::U8 => {
                        let e = &mut buf.u8[range];
                        if repaint {
                            pre.paint_padding(EntryMut::U8(e));
                        }
                        pre.run(plan, frame, EntryMut::U8(e));
                    }
                }
                buf.painted[i] = Some(*plan.placement());
            }
            let t1 = Instant::now();
            timings.preprocess += t1 - t0;
            let shape = spec.shape(batch);
            let input = match spec.elem {
                Elem::F32 => TensorInput::F32(&buf.f32, shape),
                Elem::U8 => TensorInput::U8(&buf.u8, shape),
            };
            let mut post = Duration::ZERO;
            let mut t2 = t1;
            let decoded = self.model.run(input, |outputs| {
                t2 = Instant::now();
                let out: Result<Vec<R>, String> = group
                    .iter()
                    .enumerate()
                    .map(|(i, item)| decode(outputs, i, batch, item.2))
                    .collect();
                post = t2.elapsed();
                out
            })??;
            timings.runs += 1;
            timings.inference += t2 - t1;
            timings.postprocess += post;
            results.extend(decoded);
        }
        Ok(results)
    }

    /// Runs the whole frame through the model.
    pub fn run_frame(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        params: &DecodeParams,
        timings: &mut Timings,
    ) -> Result<FrameResult, String> {
        let pre = self.pre.take().ok_or("not configured (no caps yet)")?;
        let res = self.run_decoded(&[(&pre, frame, pre.full())], params, timings);
        self.pre = Some(pre);
        res?.pop().ok_or_else(|| "no result".to_string())
    }

    /// Runs each region (frame pixels, clamped to the frame) through the model, batched where
    /// the model allows; regions entirely outside the frame give `None`.
    pub fn run_regions(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        regions: &[Rect],
        params: &DecodeParams,
        timings: &mut Timings,
    ) -> Result<Vec<Option<FrameResult>>, String> {
        let pre = self.pre.take().ok_or("not configured (no caps yet)")?;
        let clamped: Vec<Option<Rect>> = regions.iter().map(|r| pre.clamp_rect(*r)).collect();
        let plans: Vec<Plan> = clamped.iter().flatten().map(|r| pre.plan(*r)).collect();
        let items: Vec<Item<'_, '_>> = plans.iter().map(|p| (&pre, frame, p)).collect();
        let res = self.run_decoded(&items, params, timings);
        self.pre = Some(pre);
        let mut results = res?.into_iter();
        Ok(clamped
            .iter()
            .map(|r| r.and_then(|_| results.next()))
            .collect())
    }

    /// Runs whole frames of any formats (batch entries) through the model: frames whose
    /// tensors have the same spec go in one run (or in chunks of the model's fixed batch).
    pub fn run_batch(
        &mut self,
        frames: &[(
            &gst_video::VideoInfo,
            &gst_video::VideoFrameRef<&gst::BufferRef>,
        )],
        overrides: &Overrides,
        threads: usize,
        params: &DecodeParams,
        timings: &mut Timings,
    ) -> Result<Vec<FrameResult>, String> {
        // Evict between batches only: a slot must not move while this batch uses it.
        if self.batch_pres.len() >= MAX_BATCH_FORMATS {
            self.batch_pres.clear();
        }
        let mut slots = Vec::with_capacity(frames.len());
        for (info, _) in frames {
            slots.push(self.batch_pre(info, overrides, threads)?);
        }
        let pres = std::mem::take(&mut self.batch_pres);
        let mut results: Vec<Option<FrameResult>> = vec![None; frames.len()];
        let mut done = vec![false; frames.len()];
        let mut res = Ok(());
        for i in 0..frames.len() {
            if done[i] {
                continue;
            }
            let spec = *pres[slots[i]].1.spec();
            let members: Vec<usize> = (i..frames.len())
                .filter(|&j| !done[j] && *pres[slots[j]].1.spec() == spec)
                .collect();
            let items: Vec<Item<'_, '_>> = members
                .iter()
                .map(|&j| {
                    let pre = &pres[slots[j]].1;
                    (pre, frames[j].1, pre.full())
                })
                .collect();
            match self.run_decoded(&items, params, timings) {
                Ok(out) => {
                    for (&j, r) in members.iter().zip(out) {
                        results[j] = Some(r);
                        done[j] = true;
                    }
                }
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        self.batch_pres = pres;
        res?;
        Ok(results.into_iter().flatten().collect())
    }

    /// Runs the regions of a batch entry (frame pixels, clamped to the frame).
    pub fn run_batch_regions(
        &mut self,
        (info, frame): (
            &gst_video::VideoInfo,
            &gst_video::VideoFrameRef<&gst::BufferRef>,
        ),
        regions: &[Rect],
        overrides: &Overrides,
        threads: usize,
        params: &DecodeParams,
        timings: &mut Timings,
    ) -> Result<Vec<Option<FrameResult>>, String> {
        if self.batch_pres.len() >= MAX_BATCH_FORMATS {
            self.batch_pres.clear();
        }
        let slot = self.batch_pre(info, overrides, threads)?;
        let pres = std::mem::take(&mut self.batch_pres);
        let pre = &pres[slot].1;
        let clamped: Vec<Option<Rect>> = regions.iter().map(|r| pre.clamp_rect(*r)).collect();
        let plans: Vec<Plan> = clamped.iter().flatten().map(|r| pre.plan(*r)).collect();
        let items: Vec<Item<'_, '_>> = plans.iter().map(|p| (pre, frame, p)).collect();
        let res = self.run_decoded(&items, params, timings);
        self.batch_pres = pres;
        let mut results = res?.into_iter();
        Ok(clamped
            .iter()
            .map(|r| r.and_then(|_| results.next()))
            .collect())
    }

    /// The index of the batch preprocessor for `info`, made on first use.
    fn batch_pre(
        &mut self,
        info: &gst_video::VideoInfo,
        overrides: &Overrides,
        threads: usize,
    ) -> Result<usize, String> {
        if let Some(i) = self.batch_pres.iter().position(|(i, _)| i == info) {
            return Ok(i);
        }
        let pre = self.preprocessor(info, overrides, threads)?;
        self.batch_pres.push((info.clone(), pre));
        Ok(self.batch_pres.len() - 1)
    }

    fn run_decoded(
        &mut self,
        items: &[Item<'_, '_>],
        params: &DecodeParams,
        timings: &mut Timings,
    ) -> Result<Vec<FrameResult>, String> {
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        let family = self.model.family;
        let spec = *first.0.spec();
        let p = *params;
        self.run_plans(items, timings, |outputs, i, batch, plan| {
            decode_entry(
                family,
                outputs,
                i,
                batch,
                spec.width,
                spec.height,
                &p,
                plan.placement(),
            )
        })
    }
}

/// Decodes entry `i` of `batch` and maps it to frame pixels.
#[allow(clippy::too_many_arguments)]
fn decode_entry(
    family: Family,
    outputs: &[Output<'_>],
    i: usize,
    batch: usize,
    width: usize,
    height: usize,
    p: &DecodeParams,
    placement: &Placement,
) -> Result<FrameResult, String> {
    let first = || -> Result<(&[f32], &[i64]), String> {
        let o = outputs.first().ok_or("the model gave no output")?;
        Ok((decode::entry(o, i, batch)?, o.shape))
    };
    let decoded = match family {
        Family::Raw => {
            return Ok(FrameResult::Tensors(
                outputs
                    .iter()
                    .map(|o| {
                        Ok((
                            o.name.to_string(),
                            o.shape.to_vec(),
                            decode::entry(o, i, batch)?.to_vec(),
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            ));
        }
        Family::Classifier => {
            let (data, _) = first()?;
            Decoded::Classes(classifier::top_k(data, p.top_k))
        }
        Family::Yolov5 => {
            let (data, shape) = first()?;
            let k = *shape.last().unwrap_or(&0) as usize;
            Decoded::Boxes(decode::yolo::yolov5(data, k, p.threshold))
        }
        Family::Yolov8 => {
            let (data, shape) = first()?;
            let attrs = *shape.get(1).unwrap_or(&0) as usize;
            Decoded::Boxes(decode::yolo::yolov8(data, attrs, p.threshold))
        }
        Family::Yolox => {
            let (data, shape) = first()?;
            let k = *shape.last().unwrap_or(&0) as usize;
            let expected = decode::yolo::yolox_rows(width, height);
            if k < 6 || data.len() != expected * k {
                return Err(format!(
                    "YOLOX output has shape {}, expected [1,{expected},5+classes] for input {width}x{height}",
                    decode::shape_string(shape)
                ));
            }
            Decoded::Boxes(decode::yolo::yolox(data, width, height, k, p.threshold))
        }
        Family::Ssd(layout) => Decoded::Boxes(ssd::decode(
            &layout,
            outputs,
            i,
            batch,
            width,
            height,
            p.box_order,
            p.threshold,
        )?),
    };
    Ok(match decoded {
        Decoded::Classes(c) => FrameResult::Classes(c),
        Decoded::Boxes(candidates) => {
            let kept = nms::nms(candidates, p.iou, p.class_agnostic, p.max_detections);
            FrameResult::Boxes(
                kept.iter()
                    .map(|c| {
                        let (x1, y1) = placement.to_frame(c.x1, c.y1);
                        let (x2, y2) = placement.to_frame(c.x2, c.y2);
                        FrameBox {
                            x1,
                            y1,
                            x2,
                            y2,
                            score: c.score,
                            class_id: c.class_id,
                        }
                    })
                    .collect(),
            )
        }
    })
}
