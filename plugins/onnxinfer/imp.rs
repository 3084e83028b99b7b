// SPDX-License-Identifier: MPL-2.0
//! `onnxinfer` implementation.
//!
//! Every buffer goes one way, whether it is a frame of one stream or a `framesync` batch (a
//! single stream is a batch of one): the per-stream rules ([`super::cursor`]) pick, for each
//! frame, whether it is inferred and by which model; [`Engine::prepare`] preprocesses the frames
//! to infer into jobs, one per model run; the jobs run; their results are decoded and attached
//! ([`super::attach`]).
//!
//! Threads: the streaming thread runs frames. With `pipelining=false` (default) the jobs run on
//! it too (`transform_ip`); with `pipelining=true` they run on the inference thread
//! ([`super::worker`]) while the streaming thread preprocesses the next buffer
//! (`generate_output`), and a buffer leaves when the next one came (or a serialized event,
//! query or EOS drains it). A model set while the element runs is loaded and warmed up on a
//! thread of its own ([`super::models::Loader`]) and switched in by the streaming thread
//! between two buffers; models taken out of use are dropped on a thread of their own. The
//! application thread (properties) never waits for the streaming thread.
//!
//! Lock order: `state`, then `settings`, then `stats`, then the small ones (`running_models`,
//! `warm_info`, `warned_formats`). Only the streaming thread (and start/stop) takes `state`, and
//! nobody takes it while holding another lock: the streaming thread copies what it needs from
//! `settings` and releases it before taking `state` (a refused swap, reported from the
//! streaming thread, takes `settings` with `state` held).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::cursor::{CanaryShare, Carried, Cursors, Pick, Rules};
use super::decode::ssd;
use super::engine::{DecodeParams, FrameResult, Item, Job, Overrides, Ran, Tag, Timings};
use super::model::{Family, LoadOptions, Model, ModelError};
use super::models::{Event, Loader, Models, Role};
use super::preprocess::{Anchor, ChannelOrder, Rect, SUPPORTED_FORMATS};
use super::stats::Stats;
use super::worker::Worker;
use super::{
    BoxOrder, CanaryBy, CanaryModelType, ChannelOrderProp, ExecutionProvider, LetterboxAnchor,
    ModelType, OptimizationLevel, ResizeMode, attach, labels,
};
use crate::batch::{self, Status};
use crate::detection;

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
const DEFAULT_BACKGROUND_CLASS: i32 = -1;
const DEFAULT_PIPELINING: bool = false;

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
    background_class: i32,
    interval: u32,
    roi_only: bool,
    canary_model_location: Option<PathBuf>,
    canary_model_type: CanaryModelType,
    canary_fraction: f64,
    canary_by: CanaryBy,
    execution_provider: ExecutionProvider,
    provider_fallback: bool,
    threads: u32,
    spinning: bool,
    preprocess_threads: u32,
    optimization_level: OptimizationLevel,
    pipelining: bool,
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
            background_class: DEFAULT_BACKGROUND_CLASS,
            interval: DEFAULT_INTERVAL,
            roi_only: false,
            canary_model_location: None,
            canary_model_type: CanaryModelType::Same,
            canary_fraction: DEFAULT_CANARY_FRACTION,
            canary_by: CanaryBy::Stream,
            execution_provider: ExecutionProvider::Cpu,
            provider_fallback: false,
            threads: DEFAULT_THREADS,
            spinning: false,
            preprocess_threads: DEFAULT_PREPROCESS_THREADS,
            optimization_level: OptimizationLevel::All,
            pipelining: DEFAULT_PIPELINING,
        }
    }
}

/// `mean`/`std`: one value for all channels or three, checked at start.
fn triple(name: &str, v: &[f64]) -> Result<Option<[f32; 3]>, String> {
    match v {
        [] => Ok(None),
        [a] => Ok(Some([*a as f32; 3])),
        [a, b, c] => Ok(Some([*a as f32, *b as f32, *c as f32])),
        other => Err(format!(
            "{name} has {} values ({other:?}); give one or three, e.g. {name}=\"<0.5,0.5,0.5>\"",
            other.len()
        )),
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

    fn model_type(&self, role: Role) -> ModelType {
        match role {
            Role::Primary => self.model_type,
            Role::Canary => self.canary_model_type.resolve(self.model_type),
        }
    }

    /// Checks the preprocessing properties that only make sense together (at start).
    fn check(&self) -> Result<(), String> {
        triple("mean", &self.mean)?;
        let std = triple("std", &self.std)?;
        if let Some(s) = std
            && s.iter().any(|v| *v == 0.0 || !v.is_finite())
        {
            return Err(format!(
                "std={:?} divides by zero: every value must be non-zero (std=\"<0.229,0.224,0.225>\" for ImageNet, or leave it unset)",
                self.std
            ));
        }
        Ok(())
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
            mean: triple("mean", &self.mean).ok().flatten(),
            std: triple("std", &self.std).ok().flatten(),
            pad_value: u8::try_from(self.pad_value).ok(),
            input_size: (self.input_width as usize, self.input_height as usize),
        }
    }

    fn decode_params(&self, labels: &[String]) -> DecodeParams {
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
            background: match self.background_class {
                -1 => ssd::Background::Auto {
                    labels: labels.len(),
                    first_is_background: labels
                        .first()
                        .is_some_and(|l| ssd::is_background_label(l)),
                },
                c if c < 0 => ssd::Background::None,
                c => ssd::Background::Class(c as usize),
            },
        }
    }

    fn preprocess_threads(&self) -> usize {
        match self.preprocess_threads {
            0 => super::preprocess::pool_threads(),
            n => n as usize,
        }
    }

    fn rules(&self, has_canary: bool) -> Rules {
        Rules {
            interval: self.interval,
            carries: !self.roi_only,
            canary: has_canary.then_some(CanaryShare {
                fraction: self.canary_fraction,
                by: self.canary_by,
            }),
        }
    }
}

/// One frame of a buffer: the buffer itself, or a batch entry.
struct FrameWork {
    /// The batch entry (`None`: the buffer is the frame).
    entry: Option<usize>,
    stream: String,
    info: gst_video::VideoInfo,
    pick: Pick,
    /// `roi-only`: the upstream regions to classify (one result each).
    regions: Vec<Rect>,
    /// What it gave: one per region with `roi-only`, else one.
    results: Vec<Option<FrameResult>>,
    /// The model that gave the results.
    model: Option<String>,
}

/// A buffer between preprocessing and its results.
struct Work {
    /// The batch's entries (batch caps).
    entries: Option<Vec<batch::Entry>>,
    frames: Vec<FrameWork>,
    /// The jobs, each with whether it is the canary's.
    jobs: Vec<(bool, Job)>,
}

/// A buffer whose jobs run on the inference thread (`pipelining=true`).
struct InFlight {
    buffer: gst::Buffer,
    work: Work,
    canary: Vec<bool>,
}

/// Created in `start`, dropped in `stop`.
struct State {
    models: Models,
    labels: Vec<String>,
    /// Negotiated video (`None` with batch caps).
    info: Option<gst_video::VideoInfo>,
    stream_id: Option<String>,
    /// Batch caps (`framesync`).
    batch: bool,
    cursors: Cursors,
    worker: Option<Worker>,
    in_flight: Option<InFlight>,
}

#[derive(Default)]
pub struct OnnxInfer {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    loader: Loader,
    /// Between `start` and `stop`.
    running: AtomicBool,
    /// The paths of the models in use (primary, canary), for a refused swap to put back.
    running_models: Mutex<[Option<PathBuf>; 2]>,
    /// The negotiated video, for warming up a model loaded while playing.
    warm_info: Mutex<Option<gst_video::VideoInfo>>,
    /// `pipelining=true`: one frame period (ns) added to the latency; 0 when unknown.
    frame_period: AtomicU64,
    /// Formats upstream asked about that we cannot read, and invalid model outputs (warned
    /// about once each per run).
    warned_formats: Mutex<std::collections::HashSet<String>>,
    warned_invalid: AtomicBool,
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

fn model_gst_error(err: &ModelError) -> gst::ErrorMessage {
    match err {
        ModelError::NotFound(m) => gst::error_msg!(gst::ResourceError::NotFound, ("{}", m)),
        ModelError::Runtime(m) => gst::error_msg!(gst::LibraryError::Init, ("{}", m)),
        ModelError::Invalid(m) => gst::error_msg!(gst::StreamError::WrongType, ("{}", m)),
        ModelError::Unsupported(m) => gst::error_msg!(gst::StreamError::Format, ("{}", m)),
    }
}

/// Loads a model for `role` with `settings` and checks it fits them.
fn load_model(
    settings: &Settings,
    role: Role,
    path: &std::path::Path,
) -> Result<Model, ModelError> {
    let model_type = settings.model_type(role);
    let model = Model::load(path, &settings.load_options(model_type))?;
    if settings.roi_only && model.family != Family::Classifier {
        return Err(ModelError::Unsupported(format!(
            "roi-only classifies upstream regions and needs a classifier model; '{}' is a {} model. Set model-type=classifier or roi-only=false",
            path.display(),
            model.family.name()
        )));
    }
    gst::info!(
        CAT,
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

/// The frames of `work` mapped for reading: the buffer itself, or the batch entries' frames.
fn frame_buffer<'b>(
    buf: &'b gst::BufferRef,
    entries: Option<&'b [batch::Entry]>,
    entry: Option<usize>,
) -> Option<&'b gst::BufferRef> {
    match (entries, entry) {
        (Some(e), Some(i)) => e.get(i)?.buffer.as_deref(),
        _ => Some(buf),
    }
}

impl OnnxInfer {
    /// Warns when the model does not run where it was asked to (`provider-fallback`).
    fn check_provider(&self, settings: &Settings, model: &Model) {
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
    }

    /// Loads `path` for `role` on another thread; the streaming thread switches it in before
    /// the next buffer. A model that fails is refused with a warning and the current one stays.
    fn request_load(&self, role: Role, path: Option<PathBuf>) {
        let settings = self.settings.lock().unwrap().clone();
        let info = self.warm_info.lock().unwrap().clone();
        let weak = self.obj().downgrade();
        let weak_refused = weak.clone();
        let shown = path.clone().unwrap_or_default();
        if let Some(p) = &path {
            gst::info!(
                CAT,
                imp = self,
                "loading {} model {} in the background",
                role.name(),
                p.display()
            );
        }
        let load = move |path: &std::path::Path| -> Result<Model, String> {
            let model = load_model(&settings, role, path).map_err(|e| e.to_string())?;
            // Warm up with the current frame size, so the switch costs no first-run delay.
            if let Some(info) = &info {
                let spec = super::engine::tensor_spec(
                    &model,
                    &settings.overrides(),
                    info.width() as usize,
                    info.height() as usize,
                )?;
                model
                    .warm_up(&spec)
                    .map_err(|e| format!("warm-up failed: {e}"))?;
            }
            if let Some(el) = weak.upgrade() {
                el.imp().check_provider(&settings, &model);
            }
            Ok(model)
        };
        let refused_path = shown.clone();
        let (generation, started) = self.loader.request(role, path, load, move |g, why| {
            if let Some(el) = weak_refused.upgrade() {
                el.imp().refuse(role, g, &refused_path, &why);
            }
        });
        if let Err(why) = started {
            self.refuse(role, generation, &shown, &why);
        }
    }

    /// A model asked for while running could not be used: warn, keep the current one and put
    /// the location property back to it. Takes no streaming lock.
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
        if !self.loader.is_current(role, generation) {
            return;
        }
        let current = self.running_models.lock().unwrap()[role as usize].clone();
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

    /// Reports what switching models did.
    fn report(&self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Switched { role, id, path } => {
                    gst::info!(CAT, imp = self, "switched {} model to {id}", role.name());
                    self.running_models.lock().unwrap()[role as usize] = Some(path);
                    let mut stats = self.stats.lock().unwrap();
                    stats.swaps += 1;
                    match role {
                        Role::Primary => stats.primary = Some(id),
                        Role::Canary => {
                            stats.canary = Some(id);
                            stats.canary_disabled = None;
                        }
                    }
                }
                Event::Refused {
                    role,
                    generation,
                    path,
                    why,
                } => self.refuse(role, generation, &path, &why),
                Event::CanaryRemoved => {
                    gst::info!(CAT, imp = self, "canary removed");
                    self.running_models.lock().unwrap()[Role::Canary as usize] = None;
                    self.stats.lock().unwrap().canary = None;
                }
            }
        }
    }

    /// The canary failed (`why`): it is switched off, production goes on. Says so in a
    /// warning, an `onnxinfer-canary-disabled` element message and `stats`.
    fn disable_canary(&self, models: Option<&mut Models>, what: &str, why: &str) {
        if let Some(m) = models {
            m.remove_canary();
        }
        self.running_models.lock().unwrap()[Role::Canary as usize] = None;
        {
            let mut stats = self.stats.lock().unwrap();
            stats.canary = None;
            stats.canary_disabled = Some(why.to_string());
        }
        gst::element_imp_warning!(
            self,
            gst::LibraryError::Failed,
            ("canary model {what} switched off, the primary model goes on: {why}")
        );
        let s = gst::Structure::builder("onnxinfer-canary-disabled")
            .field("model", what)
            .field("reason", why)
            .build();
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }

    /// The running canary failed on frames (`why`): switched off.
    fn canary_failed(&self, models: &mut Models, why: &str) {
        let what = models
            .canary
            .as_ref()
            .map(|c| c.model.id.clone())
            .unwrap_or_default();
        self.disable_canary(Some(models), &what, why);
    }

    /// Posts that the primary model failed.
    fn model_failed(&self, e: &str) -> gst::FlowError {
        gst::element_imp_error!(self, gst::LibraryError::Failed, ("{e}"));
        gst::FlowError::Error
    }

    /// The frames of `buf` and what the per-stream rules say for each; switches in models
    /// loaded since the last buffer first.
    fn frames(
        &self,
        state: &mut State,
        settings: &Settings,
        buf: &gst::BufferRef,
    ) -> Result<(Option<Vec<batch::Entry>>, Vec<FrameWork>), gst::FlowError> {
        let events = state.models.apply(&self.loader, state.info.as_ref());
        self.report(events);
        let mut frames = Vec::new();
        let entries = if state.batch {
            let Some(entries) = batch::read(buf) else {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "a {} buffer without its {}: batches come from framesync",
                        batch::CAPS_NAME,
                        batch::META_NAME
                    )
                );
                return Err(gst::FlowError::Error);
            };
            let mut unreadable = 0u64;
            for (i, e) in entries.iter().enumerate() {
                let Some(buffer) = e.buffer.as_ref().filter(|_| e.status == Status::Fresh) else {
                    continue;
                };
                match self.readable(e, buffer) {
                    Some(info) => frames.push(FrameWork {
                        entry: Some(i),
                        stream: e.stream_id.clone(),
                        info,
                        pick: Pick::Infer { canary: false },
                        regions: Vec::new(),
                        results: Vec::new(),
                        model: None,
                    }),
                    None => unreadable += 1,
                }
            }
            let mut stats = self.stats.lock().unwrap();
            stats.frames += frames.len() as u64 + unreadable;
            stats.skipped += unreadable;
            stats.batches += 1;
            Some(entries)
        } else {
            let Some(info) = state.info.clone() else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("got a buffer before caps")
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            self.stats.lock().unwrap().frames += 1;
            frames.push(FrameWork {
                entry: None,
                stream: state.stream_id.clone().unwrap_or_default(),
                info,
                pick: Pick::Infer { canary: false },
                regions: Vec::new(),
                results: Vec::new(),
                model: None,
            });
            None
        };
        let rules = settings.rules(state.models.canary.is_some());
        for f in &mut frames {
            f.pick = state.cursors.pick(&f.stream, &rules);
            if settings.roi_only && matches!(f.pick, Pick::Infer { .. }) {
                let b = frame_buffer(buf, entries.as_deref(), f.entry).unwrap_or(buf);
                f.regions = roi_regions(b);
            }
        }
        Ok((entries, frames))
    }

    /// The video info of a batch entry whose frame onnxinfer can read; warns (once per format)
    /// or logs why not.
    fn readable(&self, e: &batch::Entry, buffer: &gst::Buffer) -> Option<gst_video::VideoInfo> {
        let info = e
            .caps
            .as_ref()
            .and_then(|c| gst_video::VideoInfo::from_caps(c).ok());
        match info {
            Some(info)
                if SUPPORTED_FORMATS.contains(&info.format())
                    && gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                        .is_ok() =>
            {
                Some(info)
            }
            Some(info) if SUPPORTED_FORMATS.contains(&info.format()) => {
                // Too small for its caps (a damaged or empty buffer): skip, say so.
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
                None
            }
            other => {
                let what = other.map_or_else(
                    || format!("{:?}", e.caps),
                    |i| i.format().to_str().to_string(),
                );
                if self.warned_formats.lock().unwrap().insert(what.clone()) {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Format,
                        (
                            "batch entry of stream {} is {what}, which onnxinfer cannot read; its frames are passed on without inference (put videoconvert before framesync)",
                            e.stream_id
                        )
                    );
                }
                None
            }
        }
    }

    /// Preprocesses the frames in `only` that are to be inferred into jobs (with whether each
    /// is the canary's). A canary that cannot take its frames is switched off and they go to
    /// the primary.
    #[allow(clippy::too_many_arguments)]
    fn jobs(
        &self,
        state: &mut State,
        roi_only: bool,
        buf: &gst::BufferRef,
        entries: Option<&[batch::Entry]>,
        frames: &mut [FrameWork],
        only: &[usize],
    ) -> Result<Vec<(bool, Job)>, gst::FlowError> {
        let mut jobs = Vec::new();
        for canary in [true, false] {
            let chosen: Vec<usize> = only
                .iter()
                .copied()
                .filter(|&i| frames[i].pick == Pick::Infer { canary })
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let mut mapped = Vec::with_capacity(chosen.len());
            for &i in &chosen {
                let f = &frames[i];
                let b = frame_buffer(buf, entries, f.entry).unwrap_or(buf);
                match gst_video::VideoFrameRef::from_buffer_ref_readable(b, &f.info) {
                    Ok(frame) => mapped.push((i, frame)),
                    Err(_) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Decode,
                            (
                                "cannot map a {} byte buffer of stream '{}' as {}x{} {}",
                                b.size(),
                                f.stream,
                                f.info.width(),
                                f.info.height(),
                                f.info.format().to_str()
                            )
                        );
                        return Err(gst::FlowError::Error);
                    }
                }
            }
            let mut items = Vec::new();
            for (i, frame) in &mapped {
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
            let prepared = state.models.engine(canary).prepare(&items);
            drop(items);
            drop(mapped);
            match prepared {
                Ok(j) => jobs.extend(j.into_iter().map(|j| (canary, j))),
                Err(why) if canary => {
                    self.canary_failed(&mut state.models, &why);
                    for &i in &chosen {
                        frames[i].pick = Pick::Infer { canary: false };
                    }
                }
                Err(why) => return Err(self.model_failed(&why)),
            }
        }
        Ok(jobs)
    }

    /// The frames of `buf` and the jobs for them.
    fn prepare(
        &self,
        state: &mut State,
        settings: &Settings,
        buf: &gst::BufferRef,
    ) -> Result<Work, gst::FlowError> {
        let (entries, mut frames) = self.frames(state, settings, buf)?;
        let all: Vec<usize> = (0..frames.len()).collect();
        let jobs = self.jobs(
            state,
            settings.roi_only,
            buf,
            entries.as_deref(),
            &mut frames,
            &all,
        )?;
        Ok(Work {
            entries,
            frames,
            jobs,
        })
    }

    /// Decodes what the jobs gave and attaches it: the frame's results, carried results on the
    /// frames `interval` skips and on repeated batch entries; records the statistics.
    fn finish(
        &self,
        state: &mut State,
        settings: &Settings,
        buf: &mut gst::BufferRef,
        mut work: Work,
        ran: Vec<(bool, Ran)>,
    ) -> Result<(), gst::FlowError> {
        let params = settings.decode_params(&state.labels);
        let mut timings = vec![Timings::default(); work.frames.len()];
        let mut invalid = 0;
        let mut runs = 0u64;
        let mut canary_failed = None;
        let mut pending = ran;
        loop {
            for (canary, r) in pending.drain(..) {
                let (decoded, tensor) = r.decode(&params);
                let engine = state.models.engine(canary);
                match decoded {
                    Ok(d) => {
                        if engine.model.id == d.model {
                            engine.recycle(tensor);
                        }
                        runs += 1;
                        invalid += d.invalid;
                        let mut in_run: Vec<usize> =
                            d.results.iter().map(|(t, _)| t.frame).collect();
                        in_run.dedup();
                        let share = d.timings.share(in_run.len());
                        for f in &in_run {
                            timings[*f].add(&share);
                        }
                        for (tag, result) in d.results {
                            let f = &mut work.frames[tag.frame];
                            let slot = tag.region.unwrap_or(0);
                            if f.results.len() <= slot {
                                f.results.resize(slot + 1, None);
                            }
                            f.results[slot] = Some(result);
                            f.model = Some(d.model.clone());
                        }
                    }
                    Err(why) if canary => canary_failed = Some(why),
                    Err(why) => return Err(self.model_failed(&why)),
                }
            }
            // A canary that failed on its frames: switched off, and its frames go to the
            // primary now.
            let Some(why) = canary_failed.take() else {
                break;
            };
            self.canary_failed(&mut state.models, &why);
            let redo: Vec<usize> = (0..work.frames.len())
                .filter(|&i| work.frames[i].pick == Pick::Infer { canary: true })
                .collect();
            for &i in &redo {
                let f = &mut work.frames[i];
                f.pick = Pick::Infer { canary: false };
                f.results.clear();
                f.model = None;
                timings[i] = Timings::default();
            }
            let jobs = self.jobs(
                state,
                settings.roi_only,
                buf,
                work.entries.as_deref(),
                &mut work.frames,
                &redo,
            )?;
            pending = jobs.into_iter().map(|(c, j)| (c, j.run())).collect();
        }
        if invalid > 0 {
            self.stats.lock().unwrap().invalid_outputs += invalid as u64;
            if !self.warned_invalid.swap(true, Ordering::SeqCst) {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Decode,
                    ("the model gave non-finite or out-of-range values ({invalid} candidates in this buffer); they are dropped, never stored as detections, and counted in stats invalid-outputs")
                );
            }
        }

        // Attach.
        let keep_last = settings.interval > 1 || state.batch;
        let mut entries = work.entries.take();
        let mut records = Vec::new();
        let mut skipped = 0u64;
        for (i, f) in work.frames.iter_mut().enumerate() {
            let size = (f.info.width(), f.info.height());
            let b: &mut gst::BufferRef = match (entries.as_mut(), f.entry) {
                (Some(e), Some(k)) => match e[k].buffer.as_mut() {
                    Some(b) => b.make_mut(),
                    None => continue,
                },
                _ => buf,
            };
            match &f.pick {
                Pick::Carry => {
                    skipped += 1;
                    if let Some(c) = state.cursors.last(&f.stream) {
                        attach::result(b, &state.labels, size, &c.model, &c.result, false);
                    }
                }
                Pick::Infer { canary } => {
                    let Some(model) = f.model.clone() else {
                        if settings.roi_only {
                            // No region to classify: the frame still says who looked.
                            let id = state.models.engine(*canary).model.id.clone();
                            attach::region_results(b, &state.labels, &[], &id);
                        }
                        continue;
                    };
                    let role = if *canary { Role::Canary } else { Role::Primary };
                    let n = if settings.roi_only {
                        let mut results = std::mem::take(&mut f.results);
                        results.resize(f.regions.len(), None);
                        attach::region_results(b, &state.labels, &results, &model)
                    } else if let Some(Some(result)) = f.results.first() {
                        let n = attach::result(b, &state.labels, size, &model, result, true);
                        if keep_last {
                            state.cursors.remember(
                                &f.stream,
                                Carried {
                                    model: model.clone(),
                                    result: result.clone(),
                                },
                            );
                        }
                        n
                    } else {
                        0
                    };
                    records.push((model, role, timings[i], n));
                }
            }
        }
        // Repeated entries (a stream slower than the ticks) carry their stream's last result.
        if let Some(entries) = entries.as_mut() {
            if !settings.roi_only {
                for e in entries.iter_mut().filter(|e| e.status == Status::Repeated) {
                    let Some(last) = state.cursors.last(&e.stream_id) else {
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
                        attach::result(
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
            batch::write(buf, entries).map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ("cannot update the batch: {e}")
                );
                gst::FlowError::Error
            })?;
        }
        let mut stats = self.stats.lock().unwrap();
        stats.skipped += skipped;
        if state.batch {
            stats.batch_runs += runs;
        }
        for (model, role, t, n) in records {
            stats.record(&model, role.name(), &t, n);
        }
        Ok(())
    }

    /// `pipelining=true`: waits for the in-flight buffer's jobs, finishes it and returns it.
    fn complete(
        &self,
        state: &mut State,
        settings: &Settings,
        f: InFlight,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let ran = match state.worker.as_mut() {
            Some(w) => w.wait().map_err(|e| self.model_failed(&e))?,
            None => Vec::new(),
        };
        let ran = f.canary.iter().copied().zip(ran).collect();
        let mut buffer = f.buffer;
        self.finish(state, settings, buffer.make_mut(), f.work, ran)?;
        Ok(buffer)
    }

    /// `pipelining=true`: the buffer still in flight goes out now (before a serialized event
    /// or query, at EOS).
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let buffer = {
            let mut guard = self.state.lock().unwrap();
            let Some(state) = guard.as_mut() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let Some(f) = state.in_flight.take() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            self.complete(state, &settings, f)?
        };
        self.obj().src_pad().push(buffer)
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
                glib::ParamSpecInt::builder("background-class")
                    .nick("Background class")
                    .blurb(
                        "SSD models: the class (score column) that means background and is never \
                         a detection. -1 = auto: with per-class scores [1,N,C], column 0 when the \
                         first label is 'background' (or __background__, bg), when there are C-1 \
                         labels (class ids then follow the labels file: column k is class k-1), \
                         or when there is no labels file; with a classes output, class 0 when \
                         the first label names the background. -2 = none: every class is a \
                         class. Default: -1",
                    )
                    .minimum(-2)
                    .default_value(DEFAULT_BACKGROUND_CLASS)
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
                glib::ParamSpecEnum::builder_with_default("canary-model-type", CanaryModelType::Same)
                    .nick("Canary model type")
                    .blurb(
                        "Family of the canary model (see model-type). 'same': the model-type in \
                         force for the primary. Default: same",
                    )
                    .mutable_ready()
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
                        "Parts the preprocessing of a large frame is split into, run on the \
                         process-wide preprocessing pool (one thread per core, shared by every \
                         onnxinfer; no thread is started per frame). 0 = one per core. Default: 0",
                    )
                    .default_value(DEFAULT_PREPROCESS_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("pipelining")
                    .nick("Pipelining")
                    .blurb(
                        "Run the model on a thread of its own: while frame (or batch) N is \
                         inferred, N+1 is preprocessed. Results stay in order; each frame leaves \
                         when the next one came (or at EOS), so one frame period is added to the \
                         latency (reported in the LATENCY query). Pays where preprocessing and \
                         inference can use different cores. Default: false",
                    )
                    .default_value(DEFAULT_PIPELINING)
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
                         (carried by interval, or unreadable batch entries), model and \
                         canary-model (name@version), canary-disabled (why a failing canary was \
                         switched off, empty otherwise), swaps, swaps-refused, batches and \
                         batch-runs (framesync batches and the model runs made for them), \
                         invalid-outputs (candidates dropped for non-finite or out-of-range \
                         values), preprocess/inference/postprocess-mean-ms and -p99-ms \
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
            "canary-model-type" => {
                settings.canary_model_type = value.get().expect("type checked upstream")
            }
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
            "background-class" => {
                settings.background_class = value.get().expect("type checked upstream")
            }
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
            "pipelining" => settings.pipelining = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
        drop(settings);
        // While running, a new model is loaded in the background (see `request_load`); the
        // streaming thread is never waited for.
        if self.running.load(Ordering::SeqCst)
            && let Some((role, path)) = load
        {
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
            "canary-model-type" => s.canary_model_type.to_value(),
            "labels-location" => path(&s.labels_location),
            "confidence-threshold" => s.confidence_threshold.to_value(),
            "iou-threshold" => s.iou_threshold.to_value(),
            "nms-class-agnostic" => s.nms_class_agnostic.to_value(),
            "max-detections" => s.max_detections.to_value(),
            "top-k" => s.top_k.to_value(),
            "box-order" => s.box_order.to_value(),
            "background-class" => s.background_class.to_value(),
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
            "pipelining" => s.pipelining.to_value(),
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
                ("no model set. Set model-location to an .onnx file, e.g. onnxinfer model-location=models/common_det.onnx")
            ));
        };
        settings
            .check()
            .map_err(|m| gst::error_msg!(gst::ResourceError::Settings, ("{}", m)))?;
        let labels = match &settings.labels_location {
            Some(p) => labels::load(p)
                .map_err(|m| gst::error_msg!(gst::ResourceError::NotFound, ("{}", m)))?,
            None => Vec::new(),
        };
        if let Some(p) = &settings.labels_location
            && labels
                .iter()
                .enumerate()
                .all(|(i, l)| *l == format!("class-{i}"))
        {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                (
                    "labels file '{}' has no labels (it is empty); classes are named class-N",
                    p.display()
                )
            );
        }
        let primary =
            load_model(&settings, Role::Primary, &path).map_err(|e| model_gst_error(&e))?;
        self.check_provider(&settings, &primary);
        self.stats.lock().unwrap().reset();
        self.warned_invalid.store(false, Ordering::SeqCst);
        let canary = match &settings.canary_model_location {
            Some(p) => match load_model(&settings, Role::Canary, p) {
                Ok(m) => {
                    self.check_provider(&settings, &m);
                    Some(m)
                }
                Err(e) => {
                    self.disable_canary(None, &p.display().to_string(), &e.to_string());
                    None
                }
            },
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
        self.loader.reset();
        *self.running_models.lock().unwrap() = [
            Some(path),
            canary
                .as_ref()
                .map(|_| settings.canary_model_location.clone().unwrap_or_default()),
        ];
        {
            let mut stats = self.stats.lock().unwrap();
            stats.primary = Some(primary.id.clone());
            stats.canary = canary.as_ref().map(|c| c.id.clone());
        }
        let worker = if settings.pipelining {
            Some(Worker::start().map_err(|e| gst::error_msg!(gst::CoreError::Thread, ("{}", e)))?)
        } else {
            None
        };
        *self.state.lock().unwrap() = Some(State {
            models: Models::new(
                primary,
                canary,
                settings.overrides(),
                settings.preprocess_threads(),
            ),
            labels,
            info: None,
            stream_id: None,
            batch: false,
            cursors: Cursors::default(),
            worker,
            in_flight: None,
        });
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.running.store(false, Ordering::SeqCst);
        // Loads still running finish into a generation nobody waits for.
        self.loader.reset();
        let state = self.state.lock().unwrap().take();
        if let Some(state) = state {
            // The models (sessions) are dropped on the retiring thread.
            super::models::retire(state.models);
        }
        *self.warm_info.lock().unwrap() = None;
        self.warned_formats.lock().unwrap().clear();
        gst::debug!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => {
                // What was in flight belongs to before the flush.
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    state.in_flight = None;
                    if let Some(w) = state.worker.as_mut() {
                        w.discard();
                    }
                }
            }
            _ if event.is_serialized() => {
                // Pipelining: the buffer in flight goes out before the event.
                if let Err(e) = self.drain() {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "draining before {:?}: {e:?}",
                        event.type_()
                    );
                }
            }
            _ => {}
        }
        if let gst::EventView::StreamStart(s) = event.view()
            && let Some(state) = self.state.lock().unwrap().as_mut()
        {
            state.stream_id = Some(s.stream_id().to_string());
            state.cursors.restart(s.stream_id());
        }
        self.parent_sink_event(event)
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if direction == gst::PadDirection::Sink
            && query.is_serialized()
            && let Err(e) = self.drain()
        {
            gst::debug!(CAT, imp = self, "draining before a query: {e:?}");
        }
        let res = BaseTransformImplExt::parent_query(self, direction, query);
        match query.view_mut() {
            gst::QueryViewMut::Caps(q) if direction == gst::PadDirection::Sink => {
                self.check_refused_format(q.filter(), q.result());
            }
            gst::QueryViewMut::Latency(q) if res && direction == gst::PadDirection::Src => {
                // Pipelining holds a frame until the next one comes.
                let period = self.frame_period.load(Ordering::SeqCst);
                if period > 0 {
                    let (live, min, max) = q.result();
                    let extra = gst::ClockTime::from_nseconds(period);
                    q.set(live, min + extra, max.map(|m| m + extra));
                }
            }
            _ => {}
        }
        res
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let pipelining = self.settings.lock().unwrap().pipelining;
        let fps = incaps
            .structure(0)
            .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
            .filter(|f| f.numer() > 0 && f.denom() > 0);
        let period = match fps {
            Some(f) if pipelining => gst::ClockTime::SECOND
                .mul_div_round(f.denom() as u64, f.numer() as u64)
                .map_or(0, |t| t.nseconds()),
            _ => 0,
        };
        self.frame_period.store(period, Ordering::SeqCst);
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return Err(gst::loggable_error!(CAT, "caps set before start"));
        };
        if batch::is_batch_caps(incaps) {
            gst::debug!(CAT, imp = self, "batches from framesync");
            state.batch = true;
            state.info = None;
            state.cursors.reset();
            *self.warm_info.lock().unwrap() = None;
            return Ok(());
        }
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "cannot parse video caps {incaps}"))?;
        let models = &mut state.models;
        for engine in std::iter::once(&mut models.primary).chain(models.canary.as_mut()) {
            let spec = engine.configure(&info).map_err(|e| {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{e}"));
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
        *self.warm_info.lock().unwrap() = Some(info.clone());
        state.info = Some(info);
        state.cursors.forget_results();
        state.batch = false;
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("not started"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let mut work = self.prepare(state, &settings, buf)?;
        let ran = std::mem::take(&mut work.jobs)
            .into_iter()
            .map(|(canary, job)| (canary, job.run()))
            .collect();
        self.finish(state, &settings, buf, work, ran)?;
        Ok(gst::FlowSuccess::Ok)
    }

    fn generate_output(
        &self,
    ) -> Result<gst_base::subclass::base_transform::GenerateOutputSuccess, gst::FlowError> {
        use gst_base::subclass::base_transform::GenerateOutputSuccess;
        let pipelined = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.worker.is_some());
        if !pipelined {
            return self.parent_generate_output();
        }
        let Some(inbuf) = self.take_queued_buffer() else {
            return Ok(GenerateOutputSuccess::NoOutput);
        };
        let settings = self.settings.lock().unwrap().clone();
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        // Preprocess this buffer while the previous one is inferred ...
        let mut work = self.prepare(state, &settings, &inbuf)?;
        // ... then finish the previous one ...
        let out = match state.in_flight.take() {
            Some(f) => Some(self.complete(state, &settings, f)?),
            None => None,
        };
        // ... and start inferring this one.
        let jobs = std::mem::take(&mut work.jobs);
        let canary = jobs.iter().map(|(c, _)| *c).collect();
        if let Some(w) = state.worker.as_mut() {
            w.submit(jobs.into_iter().map(|(_, j)| j).collect())
                .map_err(|e| self.model_failed(&e))?;
        }
        state.in_flight = Some(InFlight {
            buffer: inbuf,
            work,
            canary,
        });
        Ok(match out {
            Some(b) => GenerateOutputSuccess::Buffer(b),
            None => GenerateOutputSuccess::NoOutput,
        })
    }
}
