// SPDX-License-Identifier: MPL-2.0
//! `onnxinfer` implementation.
//!
//! Lock order: `settings`, then `state`, then `stats`. The streaming thread copies what it
//! needs from `settings` and releases it before taking `state`; `stats` is only held for
//! counter updates and never while another lock is taken.

use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::model::{Model, ModelError};
use super::preprocess::{Preprocessor, SUPPORTED_FORMATS};
use super::{ModelType, ResizeMode, labels, nms};
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
const DEFAULT_RESIZE: ResizeMode = ResizeMode::Letterbox;
const DEFAULT_MAX_DETECTIONS: u32 = 300;

#[derive(Debug, Clone)]
struct Settings {
    model_location: Option<PathBuf>,
    model_type: ModelType,
    labels_location: Option<PathBuf>,
    confidence_threshold: f64,
    iou_threshold: f64,
    resize: ResizeMode,
    max_detections: u32,
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
            max_detections: DEFAULT_MAX_DETECTIONS,
        }
    }
}

/// Created in `start`, dropped in `stop`.
struct State {
    model: Model,
    labels: Vec<String>,
    letterbox: bool,
    /// Built in `set_caps` for the negotiated video info.
    pre: Option<(gst_video::VideoInfo, Preprocessor)>,
}

#[derive(Debug, Default)]
struct Stats {
    frames: u64,
    inferred: u64,
    detections: u64,
    preprocess: Duration,
    inference: Duration,
    postprocess: Duration,
    model: Option<String>,
}

#[derive(Default)]
pub struct OnnxInfer {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
}

#[glib::object_subclass]
impl ObjectSubclass for OnnxInfer {
    const NAME: &'static str = "GstOnnxInfer";
    type Type = super::OnnxInfer;
    type ParentType = gst_base::BaseTransform;
}

fn ms(d: Duration, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        d.as_secs_f64() * 1000.0 / n as f64
    }
}

impl OnnxInfer {
    fn stats_structure(&self) -> gst::Structure {
        let s = self.stats.lock().unwrap();
        gst::Structure::builder("onnxinfer-stats")
            .field("frames", s.frames)
            .field("inferred", s.inferred)
            .field("detections", s.detections)
            .field("model", s.model.clone().unwrap_or_default())
            .field("preprocess-mean-ms", ms(s.preprocess, s.inferred))
            .field("inference-mean-ms", ms(s.inference, s.inferred))
            .field("postprocess-mean-ms", ms(s.postprocess, s.inferred))
            .build()
    }

    /// Posts an element error for a model that cannot be used.
    fn model_error(&self, err: &ModelError) -> gst::ErrorMessage {
        match err {
            ModelError::NotFound(m) => gst::error_msg!(gst::ResourceError::NotFound, ("{}", m)),
            ModelError::Runtime(m) => gst::error_msg!(gst::LibraryError::Init, ("{}", m)),
            ModelError::Invalid(m) => gst::error_msg!(gst::StreamError::WrongType, ("{}", m)),
            ModelError::Unsupported(m) => gst::error_msg!(gst::StreamError::Format, ("{}", m)),
        }
    }

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
        if let Some(first) = refused.first() {
            let msg = super::preprocess::UnsupportedFormat(*first).to_string();
            gst::warning!(CAT, imp = self, "refusing caps {filter}: {msg}");
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("onnxinfer: {msg}"),
                ["upstream offered only {filter}"]
            );
        }
    }
}

impl ObjectImpl for OnnxInfer {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model-location")
                    .nick("Model location")
                    .blurb(
                        "Path of the ONNX model file (.onnx). Required. Loaded when the element \
                         starts (READY to PAUSED). Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("model-type", DEFAULT_MODEL_TYPE)
                    .nick("Model type")
                    .blurb(
                        "Model family: decides how outputs are decoded and how frames are \
                         preprocessed (colour order, normalisation, letterbox anchor). 'auto' \
                         picks it from the output shapes and logs the choice",
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
                        "Non-maximum suppression: a box overlapping a better box of the same class \
                         by more than this intersection-over-union (0 to 1) is dropped. Default: 0.45",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_IOU_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("resize", DEFAULT_RESIZE)
                    .nick("Resize")
                    .blurb(
                        "How frames are fitted to the model input: letterbox (keep aspect ratio, \
                         pad) or stretch. Boxes are always mapped back to frame pixels. \
                         Default: letterbox",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-detections")
                    .nick("Maximum detections")
                    .blurb("At most this many detections per frame are attached, best first. Default: 300")
                    .minimum(1)
                    .default_value(DEFAULT_MAX_DETECTIONS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only 'onnxinfer-stats' structure: frames (frames seen), inferred \
                         (frames run through the model), detections (attached), model \
                         (name@version), preprocess-mean-ms, inference-mean-ms, \
                         postprocess-mean-ms (milliseconds per inferred frame)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "model-location" => {
                settings.model_location = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from);
            }
            "model-type" => settings.model_type = value.get().expect("type checked upstream"),
            "labels-location" => {
                settings.labels_location = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from);
            }
            "confidence-threshold" => {
                settings.confidence_threshold = value.get().expect("type checked upstream")
            }
            "iou-threshold" => settings.iou_threshold = value.get().expect("type checked upstream"),
            "resize" => settings.resize = value.get().expect("type checked upstream"),
            "max-detections" => {
                settings.max_detections = value.get().expect("type checked upstream")
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats_structure().to_value();
        }
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "model-location" => settings
                .model_location
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "model-type" => settings.model_type.to_value(),
            "labels-location" => settings
                .labels_location
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "confidence-threshold" => settings.confidence_threshold.to_value(),
            "iou-threshold" => settings.iou_threshold.to_value(),
            "resize" => settings.resize.to_value(),
            "max-detections" => settings.max_detections.to_value(),
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
                "Runs an ONNX model (ONNX Runtime) on every raw video frame and attaches each \
                 detection as a GstVideoRegionOfInterestMeta (roi type = label) with a \
                 'detection' param (label, class-id, confidence, model), plus a \
                 'videoai-inference' meta naming the model. Preprocessing (colour conversion, \
                 letterbox/stretch resize, normalisation) is fused into one pass from \
                 RGB/BGR/RGBA/BGRA/RGBx/BGRx/NV12/I420. ONNX Runtime is loaded from \
                 ORT_DYLIB_PATH or the location built into the plugin",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(SUPPORTED_FORMATS.iter().copied())
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
        let model = Model::load(&path, settings.model_type, 0).map_err(|e| self.model_error(&e))?;
        gst::info!(
            CAT,
            imp = self,
            "loaded model {} from {}: input {}x{} {:?}, decoder {:?} ({} classes), model-type {:?}",
            model.id,
            path.display(),
            model.input_width,
            model.input_height,
            model.layout,
            model.decoder,
            model.classes(),
            settings.model_type
        );
        if !labels.is_empty() && labels.len() != model.classes() {
            gst::warning!(
                CAT,
                imp = self,
                "labels file {} has {} labels, model {} has {} classes",
                settings
                    .labels_location
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                labels.len(),
                model.id,
                model.classes()
            );
        }
        *self.stats.lock().unwrap() = Stats {
            model: Some(model.id.clone()),
            ..Default::default()
        };
        *self.state.lock().unwrap() = Some(State {
            model,
            labels,
            letterbox: settings.resize == ResizeMode::Letterbox,
            pre: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        gst::debug!(CAT, imp = self, "stopped");
        Ok(())
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
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "cannot parse video caps {incaps}"))?;
        let mut state = self.state.lock().unwrap();
        let Some(state) = state.as_mut() else {
            return Err(gst::loggable_error!(CAT, "caps set before start"));
        };
        let spec = state.model.tensor_spec(state.letterbox);
        let pre = Preprocessor::new(spec, &info).map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Format, ("onnxinfer: {e}"));
            gst::loggable_error!(CAT, "{e}")
        })?;
        gst::debug!(
            CAT,
            imp = self,
            "input {}x{} {} -> tensor {:?}, placement {:?}",
            info.width(),
            info.height(),
            info.format().to_str(),
            pre.shape(),
            pre.placement()
        );
        state.pre = Some((info, pre));
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (threshold, iou, max_det) = {
            let s = self.settings.lock().unwrap();
            (
                s.confidence_threshold as f32,
                s.iou_threshold as f32,
                s.max_detections as usize,
            )
        };
        let mut state_guard = self.state.lock().unwrap();
        let Some(state) = state_guard.as_mut() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("onnxinfer is not started")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let Some((info, pre)) = state.pre.as_mut() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("onnxinfer got a buffer before caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };

        let t0 = Instant::now();
        {
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info).map_err(|_| {
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
                })?;
            pre.run(&frame);
        }
        let t1 = Instant::now();
        let candidates = state.model.detect(pre, threshold).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Failed,
                ("onnxinfer: model {}: {e}", state.model.id)
            );
            gst::FlowError::Error
        })?;
        let t2 = Instant::now();
        let kept = nms::nms(candidates, iou, false, max_det);
        let placement = *pre.placement();
        let model_id = state.model.id.clone();
        let detections: Vec<Detection> = kept
            .iter()
            .filter_map(|c| {
                let (x1, y1) = placement.to_frame(c.x1, c.y1);
                let (x2, y2) = placement.to_frame(c.x2, c.y2);
                let (x, y) = (x1.round() as u32, y1.round() as u32);
                let (w, h) = (
                    (x2.round() as u32).saturating_sub(x),
                    (y2.round() as u32).saturating_sub(y),
                );
                (w > 0 && h > 0).then(|| Detection {
                    label: labels::label(&state.labels, c.class_id),
                    class_id: c.class_id as i32,
                    confidence: c.score as f64,
                    x,
                    y,
                    w,
                    h,
                })
            })
            .collect();
        drop(state_guard);

        for d in &detections {
            detection::attach(buf, d, &model_id);
        }
        detection::attach_inference(buf, &model_id, true, detections.len() as u32);
        let t3 = Instant::now();
        gst::trace!(
            CAT,
            imp = self,
            "{:?}: {} detections (pre {:?}, infer {:?}, post {:?})",
            buf.pts(),
            detections.len(),
            t1 - t0,
            t2 - t1,
            t3 - t2
        );

        let mut stats = self.stats.lock().unwrap();
        stats.frames += 1;
        stats.inferred += 1;
        stats.detections += detections.len() as u64;
        stats.preprocess += t1 - t0;
        stats.inference += t2 - t1;
        stats.postprocess += t3 - t2;
        Ok(gst::FlowSuccess::Ok)
    }
}
