// SPDX-License-Identifier: MPL-2.0
//! `onnxinfer` implementation.
//!
//! Threads: the streaming thread runs frames (`transform_ip`); a model set while the element
//! runs is loaded and warmed up on a thread of its own and handed over through `pending`, which
//! the streaming thread picks up before the next frame.
//!
//! Lock order: `settings`, then `state`, then `pending`, then `stats`. The streaming thread
//! copies what it needs from `settings` and releases it before taking `state`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::decode::ssd;
use super::engine::{DecodeParams, Engine, FrameResult, Overrides, Timings};
use super::model::{Family, LoadOptions, Model, ModelError};
use super::preprocess::{Anchor, ChannelOrder, Rect, SUPPORTED_FORMATS};
use super::stats::Stats;
use super::{
    BoxOrder, CanaryBy, ChannelOrderProp, ExecutionProvider, LetterboxAnchor, ModelType,
    OptimizationLevel, ResizeMode, labels,
};
use crate::batch::{self, Status};
use crate::detection;
use crate::event::Detection;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "onnxinfer",
        gst::DebugColorFlags::empty(),
        Some("videoai ONNX Runtime inference"),
    )
});

const DEFAULT_MODEL_TYPE: ModelType = ModelType::Auto;
const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.25;
const DEFAULT_IOU_THRESHOLD: f64 = 0.45;
const DEFAULT_RESIZE: ResizeMode = ResizeMode::Auto;
const DEFAULT_MAX_DETECTIONS: u32 = 300;
const DEFAULT_TOP_K: u32 = 1;
const DEFAULT_INTERVAL: u32 = 1;
const DEFAULT_CANARY_FRACTION: f64 = 0.0;
const DEFAULT_THREADS: u32 = 0;
const DEFAULT_PREPROCESS_THREADS: u32 = 0;

/// Which model position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary = 0,
    Canary = 1,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Canary => "canary",
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    model_location: Option<PathBuf>,
    model_type: ModelType,
    labels_location: Option<PathBuf>,
    confidence_threshold: f64,
    iou_threshold: f64,
    resize: ResizeMode,
    letterbox_anchor: LetterboxAnchor,
    channel_order: ChannelOrderProp,
    scale: f64,
    mean: Vec<f64>,
    std: Vec<f64>,
    pad_value: i32,
    input_width: u32,
    input_height: u32,
    max_detections: u32,
    top_k: u32,
    nms_class_agnostic: bool,
    box_order: BoxOrder,
    interval: u32,
    roi_only: bool,
    canary_model_location: Option<PathBuf>,
    canary_fraction: f64,
    canary_by: CanaryBy,
    execution_provider: ExecutionProvider,
    provider_fallback: bool,
    threads: u32,
    spinning: bool,
    preprocess_threads: u32,
    optimization_level: OptimizationLevel,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model_location: None,
            model_type: DEFAULT_MODEL_TYPE,
            labels_location: None,
            confidence_threshold: DEFAULT_CONFIDENCE_THRESHOLD,
            iou_threshold: DEFAULT_IOU_THRESHOLD,
            resize: DEFAULT_RESIZE,
            letterbox_anchor: LetterboxAnchor::Auto,
            channel_order: ChannelOrderProp::Auto,
            scale: -1.0,
            mean: Vec::new(),
            std: Vec::new(),
            pad_value: -1,
            input_width: 0,
            input_height: 0,
            max_detections: DEFAULT_MAX_DETECTIONS,
            top_k: DEFAULT_TOP_K,
            nms_class_agnostic: false,
            box_order: BoxOrder::Yxyx,
            interval: DEFAULT_INTERVAL,
            roi_only: false,
            canary_model_location: None,
            canary_fraction: DEFAULT_CANARY_FRACTION,
            canary_by: CanaryBy::Stream,
            execution_provider: ExecutionProvider::Cpu,
            provider_fallback: false,
            threads: DEFAULT_THREADS,
            spinning: false,
            preprocess_threads: DEFAULT_PREPROCESS_THREADS,
            optimization_level: OptimizationLevel::All,
        }
    }
}

fn triple(v: &[f64]) -> Option<[f32; 3]> {
    match v {
        [] => None,
        [a] => Some([*a as f32; 3]),
        [a, b, c] => Some([*a as f32, *b as f32, *c as f32]),
        _ => None,
    }
}

impl Settings {
    fn load_options(&self, model_type: ModelType) -> LoadOptions {
        LoadOptions {
            model_type,
            threads: self.threads as usize,
            spinning: self.spinning,
            optimization: self.optimization_level,
            provider: self.execution_provider,
            provider_fallback: self.provider_fallback,
        }
    }

    fn overrides(&self) -> Overrides {
        Overrides {
            letterbox: match self.resize {
                ResizeMode::Auto => None,
                ResizeMode::Letterbox => Some(true),
                ResizeMode::Stretch => Some(false),
            },
            anchor: match self.letterbox_anchor {
                LetterboxAnchor::Auto => None,
                LetterboxAnchor::Center => Some(Anchor::Center),
                LetterboxAnchor::TopLeft => Some(Anchor::TopLeft),
            },
            order: match self.channel_order {
                ChannelOrderProp::Auto => None,
                ChannelOrderProp::Rgb => Some(ChannelOrder::Rgb),
                ChannelOrderProp::Bgr => Some(ChannelOrder::Bgr),
            },
            scale: (self.scale >= 0.0).then_some(self.scale as f32),
            mean: triple(&self.mean),
            std: triple(&self.std),
            pad_value: u8::try_from(self.pad_value).ok(),
            input_size: (self.input_width as usize, self.input_height as usize),
        }
    }

    fn decode_params(&self) -> DecodeParams {
        DecodeParams {
            threshold: self.confidence_threshold as f32,
            iou: self.iou_threshold as f32,
            class_agnostic: self.nms_class_agnostic,
            max_detections: self.max_detections as usize,
            top_k: self.top_k as usize,
            box_order: match self.box_order {
                BoxOrder::Yxyx => ssd::BoxOrder::Yxyx,
                BoxOrder::Xyxy => ssd::BoxOrder::Xyxy,
            },
        }
    }

    fn preprocess_threads(&self) -> usize {
        match self.preprocess_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }
}

/// The result attached to the last inferred frame, carried to the frames `interval` skips.
#[derive(Debug, Clone)]
struct Carried {
    model: String,
    result: FrameResult,
}

/// Created in `start`, dropped in `stop`.
struct State {
    primary: Engine,
    canary: Option<Engine>,
    labels: Vec<String>,
    info: Option<gst_video::VideoInfo>,
    stream_id: Option<String>,
    /// mode `canary-by=stream`: this stream goes to the canary.
    canary_stream: bool,
    canary_credit: f64,
    /// Frames seen since the stream started (for `interval`).
    frames_seen: u64,
    last: Option<Carried>,
    /// Batch caps (`framesync`): each entry's frame is inferred, in one run where the model
    /// allows.
    batch: bool,
    /// Per stream of a batch: frames seen and the last result (for `interval`).
    batch_streams: std::collections::HashMap<String, (u64, Option<Carried>)>,
}

/// A model loaded off the streaming thread, waiting to be switched in (`None`: remove the
/// canary).
struct Pending {
    role: Role,
    generation: u64,
    model: Option<Model>,
}

#[derive(Default)]
pub struct OnnxInfer {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    pending: Mutex<Vec<Pending>>,
    has_pending: AtomicBool,
    /// Newest load requested per role; older loads that finish later are discarded.
    generation: [AtomicU64; 2],
    stats: Mutex<Stats>,
    /// Formats upstream asked about that we cannot read (warned about once each per run).
    warned_formats: Mutex<std::collections::HashSet<String>>,
}

#[glib::object_subclass]
impl ObjectSubclass for OnnxInfer {
    const NAME: &'static str = "GstOnnxInfer";
    type Type = super::OnnxInfer;
    type ParentType = gst_base::BaseTransform;
}

/// The upstream ROIs of `buf` as regions to classify (`roi-only`).
fn roi_regions(buf: &gst::BufferRef) -> Vec<Rect> {
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

/// FNV-1a of the stream id, as a fraction in [0, 1).
fn stream_fraction(stream_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream_id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 1_000_000) as f64 / 1_000_000.0
}

fn model_gst_error(err: &ModelError) -> gst::ErrorMessage {
    match err {
        ModelError::NotFound(m) => gst::error_msg!(gst::ResourceError::NotFound, ("{}", m)),
        ModelError::Runtime(m) => gst::error_msg!(gst::LibraryError::Init, ("{}", m)),
        ModelError::Invalid(m) => gst::error_msg!(gst::StreamError::WrongType, ("{}", m)),
        ModelError::Unsupported(m) => gst::error_msg!(gst::StreamError::Format, ("{}", m)),
    }
}

impl OnnxInfer {
    /// Loads a model for `role` with the current settings and checks it fits them.
    fn load(
        &self,
        settings: &Settings,
        role: Role,
        path: &std::path::Path,
    ) -> Result<Model, ModelError> {
        let model_type = match role {
            Role::Primary => settings.model_type,
            Role::Canary => ModelType::Auto,
        };
        let model = Model::load(path, &settings.load_options(model_type))?;
        if settings.roi_only && model.family != Family::Classifier {
            return Err(ModelError::Unsupported(format!(
                "roi-only classifies upstream regions and needs a classifier model; '{}' is a {} model. Set model-type=classifier or roi-only=false",
                path.display(),
                model.family.name()
            )));
        }
        if model.provider != settings.execution_provider {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "execution provider {:?} is not available; running {} on the CPU (provider-fallback=true)",
                    settings.execution_provider,
                    model.id
                )
            );
        }
        gst::info!(
            CAT,
            imp = self,
            "loaded {} model {} from {}: family {} (model-type {:?}), input {:?}, outputs {:?}, provider {:?}",
            role.name(),
            model.id,
            path.display(),
            model.family.name(),
            model_type,
            model.input,
            model.output_shapes,
            model.provider
        );
        Ok(model)
    }

    /// Loads `path` for `role` on another thread; the streaming thread switches it in before
    /// the next frame. A model that fails is refused with a warning and the current one stays.
    fn request_load(&self, role: Role, path: Option<PathBuf>) {
        let generation = self.generation[role as usize].fetch_add(1, Ordering::SeqCst) + 1;
        let settings = self.settings.lock().unwrap().clone();
        let Some(path) = path else {
            // Removing the canary needs no loading.
            self.hand_over(Pending {
                role,
                generation,
                model: None,
            });
            return;
        };
        let info = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|s| s.info.clone());
        let weak = self.obj().downgrade();
        gst::info!(
            CAT,
            imp = self,
            "loading {} model {} in the background",
            role.name(),
            path.display()
        );
        let spawned = std::thread::Builder::new()
            .name("onnxinfer-load".into())
            .spawn(move || {
                let Some(element) = weak.upgrade() else {
                    return;
                };
                let imp = element.imp();
                let loaded = imp.load(&settings, role, &path).and_then(|mut model| {
                    // Warm up with the current frame size, so the switch costs no first-run delay.
                    if let Some(info) = &info {
                        let spec = super::engine::tensor_spec(
                            &model,
                            &settings.overrides(),
                            info.width() as usize,
                            info.height() as usize,
                        );
                        model.warm_up(&spec).map_err(|e| {
                            ModelError::Unsupported(format!(
                                "'{}': warm-up failed: {e}",
                                path.display()
                            ))
                        })?;
                    }
                    Ok(model)
                });
                match loaded {
                    Ok(model) => imp.hand_over(Pending {
                        role,
                        generation,
                        model: Some(model),
                    }),
                    Err(err) => imp.refuse(role, generation, &path, &err.to_string()),
                }
            });
        if let Err(e) = spawned {
            self.refuse(
                role,
                generation,
                &PathBuf::new(),
                &format!("cannot start a loader thread: {e}"),
            );
        }
    }

    fn hand_over(&self, p: Pending) {
        if p.generation != self.generation[p.role as usize].load(Ordering::SeqCst) {
            gst::debug!(
                CAT,
                imp = self,
                "discarding an outdated {} model",
                p.role.name()
            );
            return;
        }
        self.pending.lock().unwrap().push(p);
        self.has_pending.store(true, Ordering::Release);
    }

    /// A model asked for while running could not be used: warn, keep the current one and put the
    /// location property back to it.
    fn refuse(&self, role: Role, generation: u64, path: &std::path::Path, why: &str) {
        self.stats.lock().unwrap().swaps_refused += 1;
        gst::element_imp_warning!(
            self,
            gst::ResourceError::Settings,
            (
                "refusing new {} model '{}': {why}. The current model keeps running",
                role.name(),
                path.display()
            )
        );
        if generation != self.generation[role as usize].load(Ordering::SeqCst) {
            return;
        }
        let current = {
            let state = self.state.lock().unwrap();
            state.as_ref().and_then(|s| match role {
                Role::Primary => Some(s.primary.model.path.clone()),
                Role::Canary => s.canary.as_ref().map(|c| c.model.path.clone()),
            })
        };
        {
            let mut settings = self.settings.lock().unwrap();
            match role {
                Role::Primary => settings.model_location = current,
                Role::Canary => settings.canary_model_location = current,
            }
        }
        self.obj().notify(match role {
            Role::Primary => "model-location",
            Role::Canary => "canary-model-location",
        });
    }

    /// Switches in models loaded since the last frame (streaming thread, `state` held).
    fn apply_pending(&self, state: &mut State, settings: &Settings) {
        if !self.has_pending.swap(false, Ordering::Acquire) {
            return;
        }
        let ready: Vec<Pending> = std::mem::take(&mut *self.pending.lock().unwrap());
        for p in ready {
            if p.generation != self.generation[p.role as usize].load(Ordering::SeqCst) {
                continue;
            }
            let Some(model) = p.model else {
                state.canary = None;
                self.stats.lock().unwrap().canary = None;
                gst::info!(CAT, imp = self, "canary removed");
                continue;
            };
            let mut engine = Engine::new(model);
            if let Some(info) = &state.info
                && let Err(e) =
                    engine.configure(info, &settings.overrides(), settings.preprocess_threads())
            {
                let path = engine.model.path.clone();
                self.refuse(p.role, p.generation, &path, &e);
                continue;
            }
            let id = engine.model.id.clone();
            gst::info!(CAT, imp = self, "switched {} model to {id}", p.role.name());
            let mut stats = self.stats.lock().unwrap();
            stats.swaps += 1;
            match p.role {
                Role::Primary => {
                    stats.primary = Some(id);
                    state.primary = engine;
                }
                Role::Canary => {
                    stats.canary = Some(id);
                    state.canary = Some(engine);
                }
            }
        }
    }

    /// Whether this frame goes to the canary.
    fn pick_canary(state: &mut State, settings: &Settings) -> bool {
        if state.canary.is_none() || settings.canary_fraction <= 0.0 {
            return false;
        }
        match settings.canary_by {
            CanaryBy::Stream => state.canary_stream,
            CanaryBy::Frame => {
                state.canary_credit += settings.canary_fraction;
                if state.canary_credit >= 1.0 {
                    state.canary_credit -= 1.0;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Posts that running `model_id` failed.
    fn model_failed(&self, model_id: &str, e: String) -> gst::FlowError {
        gst::element_imp_error!(
            self,
            gst::LibraryError::Failed,
            ("onnxinfer: model {model_id}: {e}")
        );
        gst::FlowError::Error
    }

    /// Whether a batch entry of `stream_id` goes to the canary.
    fn pick_canary_entry(state: &mut State, settings: &Settings, stream_id: &str) -> bool {
        if state.canary.is_none() || settings.canary_fraction <= 0.0 {
            return false;
        }
        match settings.canary_by {
            CanaryBy::Stream => stream_fraction(stream_id) < settings.canary_fraction,
            CanaryBy::Frame => Self::pick_canary(state, settings),
        }
    }

    /// Attaches roi-only classifier results to the ROIs they came from; returns how many
    /// regions were classified.
    fn attach_roi_results(
        buf: &mut gst::BufferRef,
        labels_: &[String],
        results: &[Option<FrameResult>],
        model_id: &str,
    ) -> usize {
        let tops: Vec<Option<Vec<detection::Class>>> = results
            .iter()
            .map(|r| match r {
                Some(FrameResult::Classes(top)) => Some(
                    top.iter()
                        .map(|(c, p)| (labels::label(labels_, *c), *c as i32, *p as f64))
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        let n = tops.iter().flatten().count();
        detection::classify_rois(buf, &tops, model_id, true);
        detection::attach_inference(buf, model_id, true, n as u32);
        n
    }

    /// A `framesync` batch: every fresh entry is inferred, all of them in one model run per
    /// tensor shape (entry by entry for models with a fixed batch of 1); results go on each
    /// entry's own frame.
    fn transform_batch(
        &self,
        buf: &mut gst::BufferRef,
        state: &mut State,
        settings: &Settings,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(mut entries) = batch::read(buf) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "onnxinfer: a {} buffer without its {}: batches come from framesync",
                    batch::CAPS_NAME,
                    batch::META_NAME
                )
            );
            return Err(gst::FlowError::Error);
        };
        let params = settings.decode_params();
        let overrides = settings.overrides();
        let threads = settings.preprocess_threads();
        // Fresh entries with a frame and caps we can read.
        let mut runnable: Vec<(usize, gst_video::VideoInfo)> = Vec::new();
        let mut unreadable = 0u64;
        for (i, e) in entries.iter().enumerate() {
            if e.status != Status::Fresh || e.buffer.is_none() {
                continue;
            }
            let info = e
                .caps
                .as_ref()
                .and_then(|c| gst_video::VideoInfo::from_caps(c).ok());
            let buffer = e.buffer.as_ref().unwrap();
            match info {
                Some(info)
                    if SUPPORTED_FORMATS.contains(&info.format())
                        && gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                            .is_ok() =>
                {
                    runnable.push((i, info))
                }
                Some(info) if SUPPORTED_FORMATS.contains(&info.format()) => {
                    // Too small for its caps (a damaged or empty buffer): skip, say so.
                    unreadable += 1;
                    gst::warning!(
                        CAT,
                        imp = self,
                        "batch entry of stream {}: a {} byte buffer is not a {}x{} {} frame; skipped",
                        e.stream_id,
                        buffer.size(),
                        info.width(),
                        info.height(),
                        info.format().to_str()
                    );
                }
                other => {
                    unreadable += 1;
                    let what = other.map_or_else(
                        || format!("{:?}", e.caps),
                        |i| i.format().to_str().to_string(),
                    );
                    if self.warned_formats.lock().unwrap().insert(what.clone()) {
                        gst::element_imp_warning!(
                            self,
                            gst::StreamError::Format,
                            (
                                "onnxinfer: batch entry of stream {} is {what}, which onnxinfer cannot read; its frames are passed on without inference (put videoconvert before framesync)",
                                e.stream_id
                            )
                        );
                    }
                }
            }
        }
        {
            let mut stats = self.stats.lock().unwrap();
            stats.frames += runnable.len() as u64 + unreadable;
            stats.skipped += unreadable;
            stats.batches += 1;
        }
        // interval: per stream, frames in between carry the stream's last result.
        let mut carried: Vec<(usize, (u32, u32), Carried)> = Vec::new();
        let mut primary = Vec::new();
        let mut canary = Vec::new();
        for (i, info) in runnable {
            let id = entries[i].stream_id.clone();
            let (seen, last) = state.batch_streams.entry(id.clone()).or_default();
            let n = *seen;
            *seen += 1;
            if settings.interval > 1
                && n % settings.interval as u64 != 0
                && let Some(l) = last
            {
                carried.push((i, (info.width(), info.height()), l.clone()));
                continue;
            }
            if Self::pick_canary_entry(state, settings, &id) {
                canary.push((i, info));
            } else {
                primary.push((i, info));
            }
        }
        for (i, size, c) in &carried {
            let b = entries[*i].buffer.as_mut().unwrap().make_mut();
            if !(settings.roi_only && matches!(c.result, FrameResult::Classes(_))) {
                Self::attach(b, &state.labels, *size, &c.model, &c.result, false);
            }
        }
        self.stats.lock().unwrap().skipped += carried.len() as u64;

        for (role, group) in [(Role::Primary, primary), (Role::Canary, canary)] {
            if group.is_empty() {
                continue;
            }
            let engine = match role {
                Role::Canary => state.canary.as_mut().unwrap(),
                Role::Primary => &mut state.primary,
            };
            let model_id = engine.model.id.clone();
            let fail = |e: String| self.model_failed(&model_id, e);
            let mut timings = Timings::default();
            let mapped: Result<Vec<_>, _> = group
                .iter()
                .map(|(i, info)| {
                    let b = entries[*i].buffer.as_ref().unwrap();
                    gst_video::VideoFrameRef::from_buffer_ref_readable(b.as_ref(), info).map_err(
                        |_| {
                            format!(
                                "cannot map the {} byte frame of stream {} as {}x{} {}",
                                b.size(),
                                entries[*i].stream_id,
                                info.width(),
                                info.height(),
                                info.format().to_str()
                            )
                        },
                    )
                })
                .collect();
            let frames = mapped.map_err(&fail)?;
            let results: Vec<Vec<Option<FrameResult>>> = if settings.roi_only {
                let mut out = Vec::new();
                for ((i, info), frame) in group.iter().zip(&frames) {
                    let regions = roi_regions(entries[*i].buffer.as_ref().unwrap());
                    out.push(if regions.is_empty() {
                        Vec::new()
                    } else {
                        engine
                            .run_batch_regions(
                                (info, frame),
                                &regions,
                                &overrides,
                                threads,
                                &params,
                                &mut timings,
                            )
                            .map_err(&fail)?
                    });
                }
                out
            } else {
                let pairs: Vec<_> = group
                    .iter()
                    .zip(&frames)
                    .map(|((_, info), f)| (info, f))
                    .collect();
                engine
                    .run_batch(&pairs, &overrides, threads, &params, &mut timings)
                    .map_err(&fail)?
                    .into_iter()
                    .map(|r| vec![Some(r)])
                    .collect()
            };
            drop(frames);
            let mut counts = Vec::with_capacity(group.len());
            for ((i, info), r) in group.iter().zip(results) {
                let e = &mut entries[*i];
                let b = e.buffer.as_mut().unwrap().make_mut();
                let size = (info.width(), info.height());
                let n = if settings.roi_only {
                    Self::attach_roi_results(b, &state.labels, &r, &model_id)
                } else if let Some(Some(result)) = r.into_iter().next() {
                    let n = Self::attach(b, &state.labels, size, &model_id, &result, true);
                    // Kept for `interval` and for this stream's repeated entries.
                    let slot = state.batch_streams.entry(e.stream_id.clone()).or_default();
                    slot.1 = Some(Carried {
                        model: model_id.clone(),
                        result,
                    });
                    n
                } else {
                    0
                };
                counts.push(n);
            }
            // Per frame: the batch's time shared between its entries.
            let k = group.len() as u32;
            let share = Timings {
                runs: timings.runs,
                preprocess: timings.preprocess / k,
                inference: timings.inference / k,
                postprocess: timings.postprocess / k,
            };
            let mut stats = self.stats.lock().unwrap();
            stats.batch_runs += timings.runs as u64;
            for n in counts {
                stats.record(&model_id, role.name(), &share, n);
            }
        }
        // Repeated entries (a stream slower than the ticks) carry their stream's last result.
        if !settings.roi_only {
            for e in entries.iter_mut().filter(|e| e.status == Status::Repeated) {
                let Some((_, Some(last))) = state.batch_streams.get(&e.stream_id) else {
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
                    Self::attach(
                        b,
                        &state.labels,
                        (info.width(), info.height()),
                        &last.model,
                        &last.result,
                        false,
                    );
                }
            }
        }
        batch::write(buf, &entries).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("onnxinfer: cannot update the batch: {e}")
            );
            gst::FlowError::Error
        })?;
        Ok(gst::FlowSuccess::Ok)
    }

    fn update_canary_stream(&self, state: &mut State, settings: &Settings) {
        let id = state.stream_id.clone().unwrap_or_default();
        state.canary_stream = stream_fraction(&id) < settings.canary_fraction;
    }

    /// Attaches `result` to the buffer; returns how many detections it holds.
    fn attach(
        buf: &mut gst::BufferRef,
        labels_: &[String],
        size: (u32, u32),
        model: &str,
        result: &FrameResult,
        fresh: bool,
    ) -> usize {
        let n = match result {
            FrameResult::Boxes(boxes) => {
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
                }
                boxes.len()
            }
            FrameResult::Classes(top) => {
                let top: Vec<detection::Class> = top
                    .iter()
                    .map(|(c, p)| (labels::label(labels_, *c), *c as i32, *p as f64))
                    .collect();
                detection::attach_frame_classification(buf, size, &top, model, fresh);
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
}

impl ObjectImpl for OnnxInfer {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let value_spec = |name: &str| {
                glib::ParamSpecDouble::builder(name)
                    .nick(name)
                    .blurb("one channel's value")
                    .build()
            };
            vec![
                glib::ParamSpecString::builder("model-location")
                    .nick("Model location")
                    .blurb(
                        "Path of the ONNX model file (.onnx). Required. Loaded when the element \
                         starts; set while PLAYING, the new model is loaded and warmed up in the \
                         background and switched in between two frames (a model that fails to \
                         load is refused with a warning and the old one keeps running). Default: none",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("model-type", DEFAULT_MODEL_TYPE)
                    .nick("Model type")
                    .blurb(
                        "Model family: how outputs are decoded and the preprocessing defaults \
                         (colour order, scale, mean/std, letterbox). 'auto' picks it from the \
                         output shapes and logs the choice. Default: auto",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("labels-location")
                    .nick("Labels location")
                    .blurb(
                        "Path of a text file with one class label per line (line N = class id N). \
                         Default: none, classes are named class-N",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("confidence-threshold")
                    .nick("Confidence threshold")
                    .blurb("Detections scoring below this (0 to 1) are dropped. Default: 0.25")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_CONFIDENCE_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("iou-threshold")
                    .nick("IoU threshold")
                    .blurb(
                        "Non-maximum suppression: a box overlapping a better box (of the same \
                         class, or of any class with nms-class-agnostic) by more than this \
                         intersection-over-union (0 to 1) is dropped. Default: 0.45",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_IOU_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("nms-class-agnostic")
                    .nick("Class-agnostic NMS")
                    .blurb("Suppress overlapping boxes across classes, not only within a class. Default: false")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-detections")
                    .nick("Maximum detections")
                    .blurb("At most this many detections per frame are attached, best first. Default: 300")
                    .minimum(1)
                    .default_value(DEFAULT_MAX_DETECTIONS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("top-k")
                    .nick("Top k")
                    .blurb("Classifiers: how many classes the classification param lists. Default: 1")
                    .minimum(1)
                    .default_value(DEFAULT_TOP_K)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("box-order", BoxOrder::Yxyx)
                    .nick("SSD box order")
                    .blurb("SSD models: order of the four box coordinates. Default: yxyx")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("resize", DEFAULT_RESIZE)
                    .nick("Resize")
                    .blurb(
                        "How frames are fitted to the model input: letterbox (keep the aspect \
                         ratio, pad), stretch, or auto (letterbox for detectors, stretch for \
                         classifiers and raw). Boxes are always mapped back to frame pixels. \
                         Default: auto",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("letterbox-anchor", LetterboxAnchor::Auto)
                    .nick("Letterbox anchor")
                    .blurb("Where the picture sits in a letterboxed input. Default: auto (top-left for YOLOX, centre otherwise)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("pad-value")
                    .nick("Pad value")
                    .blurb("Letterbox padding, 0 to 255 before normalisation; -1 = 114. Default: -1")
                    .minimum(-1)
                    .maximum(255)
                    .default_value(-1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("channel-order", ChannelOrderProp::Auto)
                    .nick("Channel order")
                    .blurb("Colour order of the input tensor. Default: auto (BGR for YOLOX, RGB otherwise)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("scale")
                    .nick("Scale")
                    .blurb(
                        "f32 inputs: value = (pixel × scale − mean) / std, pixel 0 to 255. \
                         -1 = family default (1 for YOLOX, 1/255 otherwise). Default: -1",
                    )
                    .minimum(-1.0)
                    .default_value(-1.0)
                    .mutable_ready()
                    .build(),
                gst::ParamSpecArray::builder("mean")
                    .nick("Mean")
                    .blurb(
                        "f32 inputs: per-channel mean (after scale), in tensor channel order: one \
                         value or three, e.g. \"<0.485, 0.456, 0.406>\". Default: empty = the \
                         family's (ImageNet for classifiers, 0 otherwise)",
                    )
                    .element_spec(&value_spec("mean-value"))
                    .mutable_ready()
                    .build(),
                gst::ParamSpecArray::builder("std")
                    .nick("Standard deviation")
                    .blurb(
                        "f32 inputs: per-channel divisor (after scale and mean): one value or \
                         three, e.g. \"<0.229, 0.224, 0.225>\". Default: empty = the family's \
                         (ImageNet for classifiers, 1 otherwise)",
                    )
                    .element_spec(&value_spec("std-value"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("input-width")
                    .nick("Input width")
                    .blurb(
                        "Models with a dynamic input size: tensor width in pixels. 0 = the frame \
                         width rounded up to a multiple of 32. Ignored for fixed-size models. Default: 0",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("input-height")
                    .nick("Input height")
                    .blurb(
                        "Models with a dynamic input size: tensor height in pixels. 0 = the frame \
                         height rounded up to a multiple of 32. Default: 0",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("interval")
                    .nick("Interval")
                    .blurb(
                        "Infer every Nth frame; the frames in between carry the last result, \
                         marked fresh=false in their metas. Default: 1 (every frame)",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("roi-only")
                    .nick("ROI only")
                    .blurb(
                        "Classifiers: classify each upstream GstVideoRegionOfInterestMeta region \
                         (cropped and resized) and add a 'classification' param to it, instead of \
                         the whole frame (detector -> classifier cascades). Default: false",
                    )
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("canary-model-location")
                    .nick("Canary model location")
                    .blurb(
                        "A second model that gets canary-fraction of the streams or frames \
                         (canary-by); stats compare it with the primary. Loaded in the background \
                         when set while PLAYING; empty removes it. Default: none",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("canary-fraction")
                    .nick("Canary fraction")
                    .blurb("Share (0 to 1) of streams or frames sent to the canary model. Default: 0")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_CANARY_FRACTION)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("canary-by", CanaryBy::Stream)
                    .nick("Canary by")
                    .blurb(
                        "stream: a stream goes to the canary when a hash of its stream-id falls \
                         within canary-fraction (deterministic, stable across restarts); frame: \
                         that share of frames, spread evenly. Default: stream",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("execution-provider", ExecutionProvider::Cpu)
                    .nick("Execution provider")
                    .blurb(
                        "Where inference runs: cpu, cuda or tensorrt (builds with the cargo \
                         features 'cuda'/'tensorrt' and the onnxruntime-gpu library). A provider \
                         that is not available is an error unless provider-fallback is set. Default: cpu",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("provider-fallback")
                    .nick("Provider fallback")
                    .blurb("Run on the CPU with a warning when the execution provider is not available. Default: false")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Inference threads")
                    .blurb("ONNX Runtime intra-op threads. 0 = one per core. Default: 0")
                    .default_value(DEFAULT_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("intra-op-spinning")
                    .nick("Intra-op spinning")
                    .blurb(
                        "Let ONNX Runtime's idle inference threads busy-wait for the next run. \
                         Off, they sleep and leave the cores to decoding, preprocessing and \
                         other pipelines: on a shared CPU much faster with several pipelines \
                         (8 pipelines on 2 cores: 109 -> 177 frames/s) and about the same for \
                         one (within 5 %, 10 % less CPU); on cores reserved for inference, on \
                         can shave wake-up latency. Default: false",
                    )
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("preprocess-threads")
                    .nick("Preprocessing threads")
                    .blurb(
                        "Threads the preprocessing of large frames is split over. 0 = one per \
                         core. Default: 0",
                    )
                    .default_value(DEFAULT_PREPROCESS_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("optimization-level", OptimizationLevel::All)
                    .nick("Optimization level")
                    .blurb("ONNX Runtime graph optimisation level. Default: all")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only 'onnxinfer-stats' structure: frames (seen), inferred, skipped \
                         (carried by interval), model and canary-model (name@version), swaps, \
                         swaps-refused, preprocess/inference/postprocess-mean-ms and -p99-ms \
                         (milliseconds per inferred frame), and models: one structure per model \
                         version (role, frames, detections, detections-per-frame, \
                         inference-mean-ms, inference-p99-ms, …)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let path = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let doubles = |v: &glib::Value| -> Vec<f64> {
            v.get::<gst::Array>()
                .map(|a| a.iter().filter_map(|x| x.get::<f64>().ok()).collect())
                .unwrap_or_default()
        };
        let mut settings = self.settings.lock().unwrap();
        let mut load = None;
        match pspec.name() {
            "model-location" => {
                settings.model_location = path(value);
                load = Some((Role::Primary, settings.model_location.clone()));
            }
            "canary-model-location" => {
                settings.canary_model_location = path(value);
                load = Some((Role::Canary, settings.canary_model_location.clone()));
            }
            "model-type" => settings.model_type = value.get().expect("type checked upstream"),
            "labels-location" => settings.labels_location = path(value),
            "confidence-threshold" => {
                settings.confidence_threshold = value.get().expect("type checked upstream")
            }
            "iou-threshold" => settings.iou_threshold = value.get().expect("type checked upstream"),
            "nms-class-agnostic" => {
                settings.nms_class_agnostic = value.get().expect("type checked upstream")
            }
            "max-detections" => {
                settings.max_detections = value.get().expect("type checked upstream")
            }
            "top-k" => settings.top_k = value.get().expect("type checked upstream"),
            "box-order" => settings.box_order = value.get().expect("type checked upstream"),
            "resize" => settings.resize = value.get().expect("type checked upstream"),
            "letterbox-anchor" => {
                settings.letterbox_anchor = value.get().expect("type checked upstream")
            }
            "pad-value" => settings.pad_value = value.get().expect("type checked upstream"),
            "channel-order" => settings.channel_order = value.get().expect("type checked upstream"),
            "scale" => settings.scale = value.get().expect("type checked upstream"),
            "mean" => settings.mean = doubles(value),
            "std" => settings.std = doubles(value),
            "input-width" => settings.input_width = value.get().expect("type checked upstream"),
            "input-height" => settings.input_height = value.get().expect("type checked upstream"),
            "interval" => settings.interval = value.get().expect("type checked upstream"),
            "roi-only" => settings.roi_only = value.get().expect("type checked upstream"),
            "canary-fraction" => {
                settings.canary_fraction = value.get().expect("type checked upstream")
            }
            "canary-by" => settings.canary_by = value.get().expect("type checked upstream"),
            "execution-provider" => {
                settings.execution_provider = value.get().expect("type checked upstream")
            }
            "provider-fallback" => {
                settings.provider_fallback = value.get().expect("type checked upstream")
            }
            "threads" => settings.threads = value.get().expect("type checked upstream"),
            "intra-op-spinning" => settings.spinning = value.get().expect("type checked upstream"),
            "preprocess-threads" => {
                settings.preprocess_threads = value.get().expect("type checked upstream")
            }
            "optimization-level" => {
                settings.optimization_level = value.get().expect("type checked upstream")
            }
            other => unreachable!("unknown property {other}"),
        }
        let settings_now = settings.clone();
        drop(settings);
        let mut state = self.state.lock().unwrap();
        if let Some(state) = state.as_mut()
            && matches!(pspec.name(), "canary-fraction" | "canary-by")
        {
            self.update_canary_stream(state, &settings_now);
        }
        let running = state.is_some();
        drop(state);
        // While running, a new model is loaded in the background (see `request_load`).
        if running && let Some((role, path)) = load {
            if role == Role::Primary && path.is_none() {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Settings,
                    ("model-location cannot be cleared while running; the current model keeps running")
                );
                return;
            }
            self.request_load(role, path);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            let s = self.stats.lock().unwrap();
            return s.structure().to_value();
        }
        let s = self.settings.lock().unwrap();
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).to_value();
        let doubles = |v: &[f64]| gst::Array::new(v.iter().copied()).to_value();
        match pspec.name() {
            "model-location" => path(&s.model_location),
            "canary-model-location" => path(&s.canary_model_location),
            "model-type" => s.model_type.to_value(),
            "labels-location" => path(&s.labels_location),
            "confidence-threshold" => s.confidence_threshold.to_value(),
            "iou-threshold" => s.iou_threshold.to_value(),
            "nms-class-agnostic" => s.nms_class_agnostic.to_value(),
            "max-detections" => s.max_detections.to_value(),
            "top-k" => s.top_k.to_value(),
            "box-order" => s.box_order.to_value(),
            "resize" => s.resize.to_value(),
            "letterbox-anchor" => s.letterbox_anchor.to_value(),
            "pad-value" => s.pad_value.to_value(),
            "channel-order" => s.channel_order.to_value(),
            "scale" => s.scale.to_value(),
            "mean" => doubles(&s.mean),
            "std" => doubles(&s.std),
            "input-width" => s.input_width.to_value(),
            "input-height" => s.input_height.to_value(),
            "interval" => s.interval.to_value(),
            "roi-only" => s.roi_only.to_value(),
            "canary-fraction" => s.canary_fraction.to_value(),
            "canary-by" => s.canary_by.to_value(),
            "execution-provider" => s.execution_provider.to_value(),
            "provider-fallback" => s.provider_fallback.to_value(),
            "threads" => s.threads.to_value(),
            "intra-op-spinning" => s.spinning.to_value(),
            "preprocess-threads" => s.preprocess_threads.to_value(),
            "optimization-level" => s.optimization_level.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for OnnxInfer {}

impl ElementImpl for OnnxInfer {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ONNX inference",
                "Filter/Analyzer/Video",
                "Runs an ONNX model (ONNX Runtime) on raw video frames. Detectors (YOLOv5, \
                 YOLOv8/v11, YOLOX, SSD) attach one GstVideoRegionOfInterestMeta per detection \
                 (roi type = label) with a 'detection' param (label, class-id, confidence, \
                 model, fresh); classifiers a 'classification' param on a full-frame ROI or on \
                 upstream ROIs (roi-only); raw models a 'videoai-tensors' meta; every handled \
                 frame a 'videoai-inference' meta naming the model. Preprocessing (colour \
                 conversion, letterbox/stretch resize, normalisation, NCHW/NHWC, f32/u8) is one \
                 fused pass from RGB/BGR/RGBA/BGRA/RGBx/BGRx/ARGB/ABGR/xRGB/xBGR/NV12/I420/GRAY8. \
                 The model can be swapped while playing, and a canary model can take a share of \
                 streams or frames. ONNX Runtime is loaded from ORT_DYLIB_PATH or the location \
                 built into the plugin",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let mut caps = gst_video::VideoCapsBuilder::new()
                .format_list(SUPPORTED_FORMATS.iter().copied())
                .build();
            caps.make_mut()
                .append(gst::Caps::builder(batch::CAPS_NAME).build());
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

impl OnnxInfer {
    /// Upstream asked whether we take a fixed format we cannot read: say so, naming it.
    fn check_refused_format(&self, filter: Option<&gst::CapsRef>, result: Option<&gst::CapsRef>) {
        let (Some(filter), Some(result)) = (filter, result) else {
            return;
        };
        if !result.is_empty() || filter.is_empty() || filter.is_any() {
            return;
        }
        let mut refused = Vec::new();
        for s in filter.iter() {
            if s.name() != "video/x-raw" {
                return;
            }
            let Ok(fmt) = s.get::<&str>("format") else {
                return;
            };
            let fmt = gst_video::VideoFormat::from_string(fmt);
            if SUPPORTED_FORMATS.contains(&fmt) {
                return;
            }
            refused.push(fmt);
        }
        // A caps query is only a probe: upstream may well try other caps next, so this is a
        // warning (posted once per format), not an error. If negotiation then fails, the
        // not-negotiated error that follows has this message right before it.
        if let Some(first) = refused.first() {
            let msg = super::preprocess::UnsupportedFormat(*first).to_string();
            gst::debug!(CAT, imp = self, "refusing caps {filter}: {msg}");
            if self
                .warned_formats
                .lock()
                .unwrap()
                .insert(first.to_str().to_string())
            {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Format,
                    ("onnxinfer: {msg}"),
                    ["upstream asked about {filter}"]
                );
            }
        }
    }
}

impl BaseTransformImpl for OnnxInfer {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let Some(path) = settings.model_location.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("onnxinfer: no model set. Set model-location to an .onnx file, e.g. onnxinfer model-location=models/common_det.onnx")
            ));
        };
        let labels = match &settings.labels_location {
            Some(p) => labels::load(p)
                .map_err(|m| gst::error_msg!(gst::ResourceError::NotFound, ("{}", m)))?,
            None => Vec::new(),
        };
        let primary = self
            .load(&settings, Role::Primary, &path)
            .map_err(|e| model_gst_error(&e))?;
        let canary = match &settings.canary_model_location {
            Some(p) => Some(Engine::new(
                self.load(&settings, Role::Canary, p)
                    .map_err(|e| model_gst_error(&e))?,
            )),
            None => None,
        };
        if let Some(classes) = primary.classes()
            && !labels.is_empty()
            && labels.len() != classes
        {
            gst::warning!(
                CAT,
                imp = self,
                "labels file has {} labels, model {} has {} classes",
                labels.len(),
                primary.id,
                classes
            );
        }
        for g in &self.generation {
            g.fetch_add(1, Ordering::SeqCst);
        }
        self.pending.lock().unwrap().clear();
        *self.stats.lock().unwrap() = Stats {
            primary: Some(primary.id.clone()),
            canary: canary.as_ref().map(|c| c.model.id.clone()),
            ..Default::default()
        };
        let mut state = State {
            primary: Engine::new(primary),
            canary,
            labels,
            info: None,
            stream_id: None,
            canary_stream: false,
            canary_credit: 0.0,
            frames_seen: 0,
            last: None,
            batch: false,
            batch_streams: Default::default(),
        };
        self.update_canary_stream(&mut state, &settings);
        *self.state.lock().unwrap() = Some(state);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Loads still running finish into a generation nobody waits for.
        for g in &self.generation {
            g.fetch_add(1, Ordering::SeqCst);
        }
        *self.state.lock().unwrap() = None;
        self.pending.lock().unwrap().clear();
        self.warned_formats.lock().unwrap().clear();
        gst::debug!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::StreamStart(s) = event.view() {
            let settings = self.settings.lock().unwrap().clone();
            if let Some(state) = self.state.lock().unwrap().as_mut() {
                state.stream_id = Some(s.stream_id().to_string());
                state.frames_seen = 0;
                state.last = None;
                self.update_canary_stream(state, &settings);
                gst::debug!(
                    CAT,
                    imp = self,
                    "stream {} goes to the {} model",
                    s.stream_id(),
                    if state.canary_stream {
                        "canary"
                    } else {
                        "primary"
                    }
                );
            }
        }
        self.parent_sink_event(event)
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        let res = BaseTransformImplExt::parent_query(self, direction, query);
        if direction == gst::PadDirection::Sink
            && let gst::QueryView::Caps(q) = query.view()
        {
            self.check_refused_format(q.filter(), q.result());
        }
        res
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        if batch::is_batch_caps(incaps) {
            let mut state = self.state.lock().unwrap();
            let Some(state) = state.as_mut() else {
                return Err(gst::loggable_error!(CAT, "caps set before start"));
            };
            gst::debug!(CAT, imp = self, "batches from framesync");
            state.batch = true;
            state.info = None;
            state.batch_streams.clear();
            return Ok(());
        }
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "cannot parse video caps {incaps}"))?;
        let settings = self.settings.lock().unwrap().clone();
        let mut state = self.state.lock().unwrap();
        let Some(state) = state.as_mut() else {
            return Err(gst::loggable_error!(CAT, "caps set before start"));
        };
        let overrides = settings.overrides();
        let threads = settings.preprocess_threads();
        for engine in std::iter::once(&mut state.primary).chain(state.canary.as_mut()) {
            let spec = engine.configure(&info, &overrides, threads).map_err(|e| {
                gst::element_imp_error!(self, gst::StreamError::Format, ("onnxinfer: {e}"));
                gst::loggable_error!(CAT, "{e}")
            })?;
            gst::debug!(
                CAT,
                imp = self,
                "{}x{} {} -> {} tensor {:?} ({:?})",
                info.width(),
                info.height(),
                info.format().to_str(),
                engine.model.id,
                spec.shape(engine.model.input.batch.unwrap_or(1)),
                spec
            );
        }
        state.info = Some(info);
        state.last = None;
        state.batch = false;
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let params = settings.decode_params();
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("onnxinfer is not started")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        self.apply_pending(state, &settings);
        if state.batch {
            return self.transform_batch(buf, state, &settings);
        }
        let Some(info) = state.info.clone() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("onnxinfer got a buffer before caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let size = (info.width(), info.height());
        self.stats.lock().unwrap().frames += 1;

        // interval: frames in between carry the last result.
        let n = state.frames_seen;
        state.frames_seen += 1;
        if settings.interval > 1
            && n % settings.interval as u64 != 0
            && let Some(last) = &state.last
        {
            match &last.result {
                FrameResult::Classes(_) if settings.roi_only => {}
                r => {
                    Self::attach(buf, &state.labels, size, &last.model, r, false);
                }
            }
            self.stats.lock().unwrap().skipped += 1;
            return Ok(gst::FlowSuccess::Ok);
        }

        let use_canary = Self::pick_canary(state, &settings);
        let (engine, role) = match state.canary.as_mut() {
            Some(c) if use_canary => (c, Role::Canary),
            _ => (&mut state.primary, Role::Primary),
        };
        let model_id = engine.model.id.clone();
        let mut timings = Timings::default();
        let fail = |e: String| self.model_failed(&model_id, e);
        let map_err = |_| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Decode,
                (
                    "onnxinfer: cannot map a {} byte buffer as {}x{} {}",
                    buf.size(),
                    info.width(),
                    info.height(),
                    info.format().to_str()
                )
            );
            gst::FlowError::Error
        };

        if settings.roi_only {
            let regions = roi_regions(buf);
            let results = if regions.is_empty() {
                Vec::new()
            } else {
                let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info)
                    .map_err(map_err)?;
                engine
                    .run_regions(&frame, &regions, &params, &mut timings)
                    .map_err(fail)?
            };
            let n = Self::attach_roi_results(buf, &state.labels, &results, &model_id);
            let mut stats = self.stats.lock().unwrap();
            if !regions.is_empty() {
                stats.record(&model_id, role.name(), &timings, n);
            }
            return Ok(gst::FlowSuccess::Ok);
        }

        let result = {
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info).map_err(map_err)?;
            engine
                .run_frame(&frame, &params, &mut timings)
                .map_err(fail)?
        };
        let count = Self::attach(buf, &state.labels, size, &model_id, &result, true);
        gst::trace!(
            CAT,
            imp = self,
            "{:?}: {} results from {model_id} (pre {:?}, infer {:?}, post {:?})",
            buf.pts(),
            count,
            timings.preprocess,
            timings.inference,
            timings.postprocess
        );
        if settings.interval > 1 {
            state.last = Some(super::imp::Carried {
                model: model_id.clone(),
                result,
            });
        }
        drop(guard);
        self.stats
            .lock()
            .unwrap()
            .record(&model_id, role.name(), &timings, count);
        Ok(gst::FlowSuccess::Ok)
    }
}
