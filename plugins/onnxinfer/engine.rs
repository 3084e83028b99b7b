// SPDX-License-Identifier: MPL-2.0
//! One model ready to run on frames: the model, its preprocessors (one per video format seen)
//! and a small pool of input tensors.
//!
//! Work goes through three stages, which may run on different threads:
//!
//! 1. [`Engine::prepare`] (streaming thread): frames, or regions of them, preprocessed into
//!    input tensors, grouped into [`Job`]s, one per model run (entries of the same tensor
//!    shape share a run; a model with a fixed batch takes them in chunks);
//! 2. [`Job::run`] (any thread): the model runs; the outputs are copied out;
//! 3. [`Ran::decode`] (streaming thread): outputs decoded by the model's family, invalid values
//!    dropped, NMS, boxes mapped back to frame pixels.
//!
//! A job carries its own reference to the model, so the model can be swapped between stages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decode::{self, Decoded, Output, classifier, ssd};
use super::model::{Family, Model, TensorInput};
use super::nms;
use super::preprocess::{
    Anchor, ChannelOrder, Elem, EntryMut, Fit, Placement, Preprocessor, Rect, Rounding, TensorSpec,
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

/// Largest input tensor onnxinfer makes, in bytes: far beyond any real model, small enough
/// that a mistyped size is an error rather than an allocation that aborts the process.
const MAX_TENSOR_BYTES: usize = 1 << 30;

/// The input tensor a family expects by default, then the overrides; an error when it would
/// be too large to allocate.
pub fn tensor_spec(
    model: &Model,
    overrides: &Overrides,
    frame_w: usize,
    frame_h: usize,
) -> Result<TensorSpec, String> {
    let (order, letterbox, anchor, rounding, scale, mean, std) = match model.family {
        Family::Yolox => (
            ChannelOrder::Bgr,
            true,
            Anchor::TopLeft,
            Rounding::Truncate,
            1.0,
            [0.0; 3],
            [1.0; 3],
        ),
        Family::Yolov5 | Family::Yolov8 => (
            ChannelOrder::Rgb,
            true,
            Anchor::Center,
            Rounding::Round,
            1.0 / 255.0,
            [0.0; 3],
            [1.0; 3],
        ),
        Family::Ssd(_) | Family::Raw => (
            ChannelOrder::Rgb,
            false,
            Anchor::Center,
            Rounding::Round,
            1.0 / 255.0,
            [0.0; 3],
            [1.0; 3],
        ),
        Family::Classifier => (
            ChannelOrder::Rgb,
            false,
            Anchor::Center,
            Rounding::Round,
            1.0 / 255.0,
            [0.485, 0.456, 0.406],
            [0.229, 0.224, 0.225],
        ),
    };
    let (width, height) = model.input_size(frame_w, frame_h, overrides.input_size);
    let anchor = overrides.anchor.unwrap_or(anchor);
    let spec = TensorSpec {
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
            Fit::Letterbox(anchor, rounding)
        } else {
            Fit::Stretch
        },
    };
    let elem_bytes = match spec.elem {
        Elem::F32 => 4,
        Elem::U8 => 1,
    };
    let bytes =
        (spec.entry_len() as u128) * model.input.batch.unwrap_or(1).max(1) as u128 * elem_bytes;
    if bytes > MAX_TENSOR_BYTES as u128 {
        return Err(format!(
            "model {}: an input of {width}x{height} needs a tensor of {:.1} GiB, more than the {} GiB onnxinfer allocates; choose a smaller input-width and input-height",
            model.id,
            bytes as f64 / (1u64 << 30) as f64,
            MAX_TENSOR_BYTES >> 30
        ));
    }
    Ok(spec)
}

/// An input tensor of `batch` entries, remembering which placement each entry's padding was
/// painted for (padding is painted again only when the placement changes).
#[derive(Debug, Default)]
pub struct TensorBuf {
    f32: Vec<f32>,
    u8: Vec<u8>,
    painted: Vec<Option<Placement>>,
}

impl TensorBuf {
    fn len(&self) -> usize {
        self.f32.len().max(self.u8.len())
    }
}

/// Per-stage timings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Model runs (`session.run` calls).
    pub runs: u32,
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

impl Timings {
    /// Each of `n` frames' share of these timings.
    pub fn share(&self, n: usize) -> Timings {
        let n = n.max(1) as u32;
        Timings {
            runs: self.runs,
            preprocess: self.preprocess / n,
            inference: self.inference / n,
            postprocess: self.postprocess / n,
        }
    }

    pub fn add(&mut self, other: &Timings) {
        self.runs += other.runs;
        self.preprocess += other.preprocess;
        self.inference += other.inference;
        self.postprocess += other.postprocess;
    }
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
    pub background: ssd::Background,
}

/// What a tensor entry is to the caller: a frame, or region `region` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub frame: usize,
    pub region: Option<usize>,
}

/// A frame (or a region of it, in frame pixels) to preprocess.
pub struct Item<'a, 'f> {
    pub tag: Tag,
    pub info: &'a gst_video::VideoInfo,
    pub frame: &'a gst_video::VideoFrameRef<&'f gst::BufferRef>,
    pub region: Option<Rect>,
}

/// Preprocessed input of one model run.
pub struct Job {
    model: Arc<Model>,
    tensor: TensorBuf,
    batch: usize,
    spec: TensorSpec,
    entries: Vec<(Tag, Placement)>,
    preprocess: Duration,
}

/// An output tensor copied out of the run.
struct OwnedOutput {
    name: String,
    shape: Vec<i64>,
    data: Vec<f32>,
}

/// A job after the model ran.
pub struct Ran {
    model: Arc<Model>,
    tensor: TensorBuf,
    batch: usize,
    spec: TensorSpec,
    entries: Vec<(Tag, Placement)>,
    outputs: Result<Vec<OwnedOutput>, String>,
    preprocess: Duration,
    inference: Duration,
}

/// What a run gave, decoded.
pub struct Results {
    /// `name@version` of the model that ran.
    pub model: String,
    pub results: Vec<(Tag, FrameResult)>,
    /// Candidates dropped for non-finite or out-of-range values.
    pub invalid: usize,
    pub timings: Timings,
}

/// Formats (size and pixel format) whose preprocessors are kept; past that the cache starts
/// again.
const MAX_FORMATS: usize = 16;
/// Spare tensors kept for reuse.
const MAX_SPARE_TENSORS: usize = 4;

pub struct Engine {
    pub model: Arc<Model>,
    overrides: Overrides,
    threads: usize,
    /// Preprocessors, one per video format seen (most recent last).
    pres: Vec<(gst_video::VideoInfo, Preprocessor)>,
    spare: Vec<TensorBuf>,
}

impl Engine {
    pub fn new(model: Arc<Model>, overrides: Overrides, threads: usize) -> Self {
        Engine {
            model,
            overrides,
            threads,
            pres: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Makes ready for frames of `info` (checks the tensor can be made); returns its spec.
    pub fn configure(&mut self, info: &gst_video::VideoInfo) -> Result<TensorSpec, String> {
        let i = self.preprocessor(info)?;
        Ok(*self.pres[i].1.spec())
    }

    /// The index of the preprocessor for `info`, made on first use.
    fn preprocessor(&mut self, info: &gst_video::VideoInfo) -> Result<usize, String> {
        if let Some(i) = self.pres.iter().position(|(i, _)| i == info) {
            return Ok(i);
        }
        let spec = tensor_spec(
            &self.model,
            &self.overrides,
            info.width() as usize,
            info.height() as usize,
        )?;
        let pre = Preprocessor::new(spec, info, self.threads).map_err(|e| e.to_string())?;
        self.pres.push((info.clone(), pre));
        Ok(self.pres.len() - 1)
    }

    /// Gives a tensor back for reuse.
    pub fn recycle(&mut self, tensor: TensorBuf) {
        if self.spare.len() < MAX_SPARE_TENSORS {
            self.spare.push(tensor);
        }
    }

    /// A tensor of `len` elements of `elem`, from the spares when one fits.
    fn tensor(&mut self, elem: Elem, len: usize, batch: usize) -> TensorBuf {
        let mut t = match self.spare.iter().position(|t| t.len() == len) {
            Some(i) => self.spare.swap_remove(i),
            None => self.spare.pop().unwrap_or_default(),
        };
        let stale = match elem {
            Elem::F32 => t.f32.len() != len,
            Elem::U8 => t.u8.len() != len,
        };
        if stale {
            t = TensorBuf::default();
            match elem {
                Elem::F32 => t.f32 = vec![0.0; len],
                Elem::U8 => t.u8 = vec![0; len],
            }
            t.painted = vec![None; batch];
        }
        t
    }

    /// Preprocesses `items` into jobs, one per model run. Items whose region lies outside their
    /// frame get no entry.
    pub fn prepare(&mut self, items: &[Item<'_, '_>]) -> Result<Vec<Job>, String> {
        if self.pres.len() + items.len() > MAX_FORMATS {
            // Between batches only: no slot may move while this one uses it.
            self.pres
                .retain(|(info, _)| items.iter().any(|it| it.info == info));
        }
        // Each item's preprocessor and source rectangle.
        let mut planned = Vec::with_capacity(items.len());
        for it in items {
            let p = self.preprocessor(it.info)?;
            let pre = &self.pres[p].1;
            let rect = match it.region {
                None => Some(pre.full().placement().source),
                Some(r) => pre.clamp_rect(r),
            };
            if let Some(rect) = rect {
                planned.push((it, p, rect));
            }
        }
        let mut jobs = Vec::new();
        let mut done = vec![false; planned.len()];
        for i in 0..planned.len() {
            if done[i] {
                continue;
            }
            let spec = *self.pres[planned[i].1].1.spec();
            let members: Vec<usize> = (i..planned.len())
                .filter(|&j| !done[j] && *self.pres[planned[j].1].1.spec() == spec)
                .collect();
            for &j in &members {
                done[j] = true;
            }
            let chunk = self.model.input.batch.unwrap_or(members.len()).max(1);
            for group in members.chunks(chunk) {
                let t0 = Instant::now();
                // A fixed batch larger than the group keeps whatever the spare entries hold.
                let batch = self
                    .model
                    .input
                    .batch
                    .unwrap_or(group.len())
                    .max(group.len());
                let entry_len = spec.entry_len();
                let mut tensor = self.tensor(spec.elem, batch * entry_len, batch);
                let mut entries = Vec::with_capacity(group.len());
                for (k, &j) in group.iter().enumerate() {
                    let (item, p, rect) = &planned[j];
                    let pre = &self.pres[*p].1;
                    let full = item.region.is_none();
                    let owned;
                    let plan = if full {
                        pre.full()
                    } else {
                        owned = pre.plan(*rect);
                        &owned
                    };
                    let range = k * entry_len..(k + 1) * entry_len;
                    let repaint = tensor.painted[k] != Some(*plan.placement());
                    match spec.elem {
                        Elem::F32 => {
                            let e = &mut tensor.f32[range];
                            if repaint {
                                pre.paint_padding(EntryMut::F32(e));
                            }
                            pre.run(plan, item.frame, EntryMut::F32(e));
                        }
                        Elem::U8 => {
                            let e = &mut tensor.u8[range];
                            if repaint {
                                pre.paint_padding(EntryMut::U8(e));
                            }
                            pre.run(plan, item.frame, EntryMut::U8(e));
                        }
                    }
                    tensor.painted[k] = Some(*plan.placement());
                    entries.push((item.tag, *plan.placement()));
                }
                jobs.push(Job {
                    model: self.model.clone(),
                    tensor,
                    batch,
                    spec,
                    entries,
                    preprocess: t0.elapsed(),
                });
            }
        }
        Ok(jobs)
    }
}

impl Job {
    /// Runs the model on the job's tensor.
    pub fn run(self) -> Ran {
        let t0 = Instant::now();
        let shape = self.spec.shape(self.batch);
        let input = match self.spec.elem {
            Elem::F32 => TensorInput::F32(&self.tensor.f32, shape),
            Elem::U8 => TensorInput::U8(&self.tensor.u8, shape),
        };
        let outputs = self
            .model
            .run(input, |outputs| {
                outputs
                    .iter()
                    .map(|o| OwnedOutput {
                        name: o.name.to_string(),
                        shape: o.shape.to_vec(),
                        data: o.data.to_vec(),
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(|e| format!("model {}: {e}", self.model.id));
        Ran {
            model: self.model,
            tensor: self.tensor,
            batch: self.batch,
            spec: self.spec,
            entries: self.entries,
            outputs,
            preprocess: self.preprocess,
            inference: t0.elapsed(),
        }
    }

    /// The model this job runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Writes each of its frames' (or regions') input tensor, exactly as the model gets it, to
    /// `dir` as `NNNNNN.npy` (shape of a batch of one), numbered from `first`; returns how many.
    pub fn dump_inputs(&self, dir: &std::path::Path, first: u64) -> std::io::Result<u64> {
        let len = self.spec.entry_len();
        let shape = self.spec.shape(1);
        for k in 0..self.entries.len() {
            let path = dir.join(format!("{:06}.npy", first + k as u64));
            let values = match self.spec.elem {
                Elem::F32 => super::npy::Values::F32(&self.tensor.f32[k * len..(k + 1) * len]),
                Elem::U8 => super::npy::Values::U8(&self.tensor.u8[k * len..(k + 1) * len]),
            };
            super::npy::write(&path, &shape, values)?;
        }
        Ok(self.entries.len() as u64)
    }
}

impl Ran {
    /// Decodes every entry; gives the tensor back (for [`Engine::recycle`]).
    pub fn decode(self, params: &DecodeParams) -> (Result<Results, String>, TensorBuf) {
        let Ran {
            model,
            tensor,
            batch,
            spec,
            entries,
            outputs,
            preprocess,
            inference,
        } = self;
        let t0 = Instant::now();
        let results = outputs.and_then(|outputs| {
            let views: Vec<Output<'_>> = outputs
                .iter()
                .map(|o| Output {
                    name: &o.name,
                    shape: &o.shape,
                    data: &o.data,
                })
                .collect();
            let mut invalid = 0;
            let mut results = Vec::with_capacity(entries.len());
            for (i, (tag, placement)) in entries.iter().enumerate() {
                let (r, bad) = decode_entry(
                    model.family,
                    &views,
                    i,
                    batch,
                    spec.width,
                    spec.height,
                    params,
                    placement,
                )
                .map_err(|e| format!("model {}: {e}", model.id))?;
                invalid += bad;
                results.push((*tag, r));
            }
            Ok(Results {
                model: model.id.clone(),
                results,
                invalid,
                timings: Timings {
                    runs: 1,
                    preprocess,
                    inference,
                    postprocess: t0.elapsed(),
                },
            })
        });
        // The last user of a model taken out of use: it is dropped on the retiring thread,
        // not here.
        if Arc::strong_count(&model) == 1 {
            crate::util::retire::retire(model);
        }
        (results, tensor)
    }

    /// The model this job ran.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
}

/// Decodes entry `i` of `batch` and maps it to frame pixels; also returns how many candidates
/// were dropped for invalid values.
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
) -> Result<(FrameResult, usize), String> {
    let first = || -> Result<(&[f32], &[i64]), String> {
        let o = outputs.first().ok_or("the model gave no output")?;
        Ok((decode::entry(o, i, batch)?, o.shape))
    };
    let decoded = match family {
        Family::Raw => {
            let tensors = outputs
                .iter()
                .map(|o| {
                    Ok((
                        o.name.to_string(),
                        o.shape.to_vec(),
                        decode::entry(o, i, batch)?.to_vec(),
                    ))
                })
                .collect::<Result<_, String>>()?;
            return Ok((FrameResult::Tensors(tensors), 0));
        }
        Family::Classifier => {
            let (data, _) = first()?;
            if data.iter().any(|v| !v.is_finite()) {
                return Ok((FrameResult::Classes(Vec::new()), 1));
            }
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
            p.background,
        )?),
    };
    Ok(match decoded {
        Decoded::Classes(c) => (FrameResult::Classes(c), 0),
        Decoded::Boxes(candidates) => {
            let (valid, invalid) = decode::sanitize(candidates, width, height);
            let kept = nms::nms(valid, p.iou, p.class_agnostic, p.max_detections);
            let boxes = kept
                .iter()
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
                .collect();
            (FrameResult::Boxes(boxes), invalid)
        }
    })
}
