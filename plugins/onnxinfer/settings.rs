// SPDX-License-Identifier: MPL-2.0
//! onnxinfer's settings: the defaults, the property specs (`gst-inspect-1.0 onnxinfer` shows
//! their blurbs), reading and writing them by name, and what the other modules are given from
//! them (load options, decode parameters, per-stream rules).

use std::path::PathBuf;

use gst::glib;
use gst::prelude::*;

use super::cursor::{CanaryShare, Gate, Rules};
use super::decode::ssd;
use super::engine::{DecodeParams, Overrides};
use super::model::LoadOptions;
use super::models::Role;
use super::preprocess::{Anchor, ChannelOrder};
use super::runtime::SessionConfig;
use super::{
    BoxOrder, CanaryBy, CanaryModelType, ChannelOrderProp, ExecutionProvider, LetterboxAnchor,
    ModelType, OptimizationLevel, ResizeMode,
};

pub(super) const DEFAULT_MODEL_TYPE: ModelType = ModelType::Auto;
pub(super) const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.25;
pub(super) const DEFAULT_IOU_THRESHOLD: f64 = 0.45;
pub(super) const DEFAULT_RESIZE: ResizeMode = ResizeMode::Auto;
pub(super) const DEFAULT_MAX_DETECTIONS: u32 = 300;
pub(super) const DEFAULT_TOP_K: u32 = 1;
pub(super) const DEFAULT_INTERVAL: u32 = 1;
/// Two seconds.
pub(super) const DEFAULT_STILL_INTERVAL: u64 = 2_000_000_000;
pub(super) const DEFAULT_CANARY_FRACTION: f64 = 0.0;
pub(super) const DEFAULT_THREADS: u32 = 0;
pub(super) const DEFAULT_PREPROCESS_THREADS: u32 = 0;
pub(super) const DEFAULT_BACKGROUND_CLASS: i32 = -1;
pub(super) const DEFAULT_PIPELINING: bool = false;

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) model_location: Option<PathBuf>,
    pub(super) model_type: ModelType,
    pub(super) labels_location: Option<PathBuf>,
    pub(super) confidence_threshold: f64,
    pub(super) iou_threshold: f64,
    pub(super) resize: ResizeMode,
    pub(super) letterbox_anchor: LetterboxAnchor,
    pub(super) channel_order: ChannelOrderProp,
    pub(super) scale: f64,
    pub(super) mean: Vec<f64>,
    pub(super) std: Vec<f64>,
    pub(super) pad_value: i32,
    pub(super) input_width: u32,
    pub(super) input_height: u32,
    pub(super) max_detections: u32,
    pub(super) top_k: u32,
    pub(super) nms_class_agnostic: bool,
    pub(super) box_order: BoxOrder,
    pub(super) background_class: i32,
    pub(super) interval: u32,
    pub(super) motion_gate: bool,
    pub(super) still_interval: u64,
    pub(super) roi_only: bool,
    pub(super) canary_model_location: Option<PathBuf>,
    pub(super) canary_model_type: CanaryModelType,
    pub(super) canary_fraction: f64,
    pub(super) canary_by: CanaryBy,
    pub(super) execution_provider: ExecutionProvider,
    pub(super) provider_fallback: bool,
    pub(super) threads: u32,
    pub(super) spinning: bool,
    pub(super) preprocess_threads: u32,
    pub(super) optimization_level: OptimizationLevel,
    pub(super) pipelining: bool,
    pub(super) input_dump_location: Option<PathBuf>,
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
            motion_gate: false,
            still_interval: DEFAULT_STILL_INTERVAL,
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
            input_dump_location: None,
        }
    }
}

/// `mean`/`std`: one value for all channels or three, checked at start.
pub(super) fn triple(name: &str, v: &[f64]) -> Result<Option<[f32; 3]>, String> {
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
    pub(super) fn load_options(&self, model_type: ModelType) -> LoadOptions {
        LoadOptions {
            model_type,
            session: SessionConfig {
                threads: self.threads as usize,
                spinning: self.spinning,
                optimization: self.optimization_level,
                provider: self.execution_provider,
                provider_fallback: self.provider_fallback,
            },
        }
    }

    pub(super) fn model_type(&self, role: Role) -> ModelType {
        match role {
            Role::Primary => self.model_type,
            Role::Canary => self.canary_model_type.resolve(self.model_type),
        }
    }

    /// Checks the preprocessing properties that only make sense together (at start).
    pub(super) fn check(&self) -> Result<(), String> {
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

    pub(super) fn overrides(&self) -> Overrides {
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

    pub(super) fn decode_params(&self, labels: &[String]) -> DecodeParams {
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

    pub(super) fn preprocess_threads(&self) -> usize {
        match self.preprocess_threads {
            0 => super::preprocess::pool_threads(),
            n => n as usize,
        }
    }

    pub(super) fn rules(&self, has_canary: bool) -> Rules {
        Rules {
            interval: self.interval,
            carries: !self.roi_only,
            gate: self.motion_gate.then_some(Gate {
                still_interval: self.still_interval,
            }),
            canary: has_canary.then_some(CanaryShare {
                fraction: self.canary_fraction,
                by: self.canary_by,
            }),
        }
    }
}

/// The property specs, in the order `gst-inspect-1.0` lists them.
pub(super) fn properties() -> Vec<glib::ParamSpec> {
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
        glib::ParamSpecBoolean::builder("motion-gate")
            .nick("Motion gate")
            .blurb(
                "Infer only frames worth it, after a motiondetect element upstream: frames \
                 with motion (or a shaking camera), frames after a result whose objects moved \
                 since the one before, and at least every still-interval. The frames held \
                 back carry the last result, marked fresh=false (as interval's do), and \
                 objecttracker keeps their tracks. Frames no motiondetect looked at are \
                 inferred. Counted in stats (gate-*). No effect with roi-only (every frame's \
                 regions are classified). Not for moving cameras or where every frame's own \
                 result matters. Default: false",
            )
            .default_value(false)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt64::builder("still-interval")
            .nick("Still interval")
            .blurb(
                "motion-gate=true: a frame is inferred at least this often (ns, by the \
                 frames' timestamps) even when nothing moves, so an object that appeared unseen by the \
                 motion detector is found within this time. Default: 2000000000 (2 s)",
            )
            .minimum(1)
            .default_value(DEFAULT_STILL_INTERVAL)
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
        glib::ParamSpecString::builder("input-dump-location")
            .nick("Input dump location")
            .blurb(
                "A directory: every inferred frame's (or region's) input tensor, exactly as \
                 the model gets it after preprocessing, is written there as NNNNNN.npy (NumPy, \
                 a batch of one), numbered from 0 at each start in the order the model runs \
                 (files of an earlier run are overwritten). For calibrating a \
                 quantized model on the frames it will see (make quantize); each file is the \
                 tensor's size (2 MB for 416x416 f32), so use with interval on long inputs. \
                 Created if missing. Default: none (nothing written)",
            )
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
                 (carried by interval or the motion gate, or unreadable batch entries), \
                 gate-motion, gate-shaking, gate-tracks-moving, gate-still-interval, \
                 gate-no-motion-meta (frames the motion gate let through, by reason) and \
                 gate-skipped (held back), model and \
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
}

impl Settings {
    /// Sets property `name` (a writable one of [`properties`]).
    pub(super) fn set(&mut self, name: &str, value: &glib::Value) {
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
        match name {
            "model-location" => self.model_location = path(value),
            "canary-model-location" => self.canary_model_location = path(value),
            "model-type" => self.model_type = value.get().expect("type checked upstream"),
            "canary-model-type" => {
                self.canary_model_type = value.get().expect("type checked upstream")
            }
            "labels-location" => self.labels_location = path(value),
            "confidence-threshold" => {
                self.confidence_threshold = value.get().expect("type checked upstream")
            }
            "iou-threshold" => self.iou_threshold = value.get().expect("type checked upstream"),
            "nms-class-agnostic" => {
                self.nms_class_agnostic = value.get().expect("type checked upstream")
            }
            "max-detections" => self.max_detections = value.get().expect("type checked upstream"),
            "top-k" => self.top_k = value.get().expect("type checked upstream"),
            "box-order" => self.box_order = value.get().expect("type checked upstream"),
            "background-class" => {
                self.background_class = value.get().expect("type checked upstream")
            }
            "resize" => self.resize = value.get().expect("type checked upstream"),
            "letterbox-anchor" => {
                self.letterbox_anchor = value.get().expect("type checked upstream")
            }
            "pad-value" => self.pad_value = value.get().expect("type checked upstream"),
            "channel-order" => self.channel_order = value.get().expect("type checked upstream"),
            "scale" => self.scale = value.get().expect("type checked upstream"),
            "mean" => self.mean = doubles(value),
            "std" => self.std = doubles(value),
            "input-width" => self.input_width = value.get().expect("type checked upstream"),
            "input-height" => self.input_height = value.get().expect("type checked upstream"),
            "interval" => self.interval = value.get().expect("type checked upstream"),
            "motion-gate" => self.motion_gate = value.get().expect("type checked upstream"),
            "still-interval" => self.still_interval = value.get().expect("type checked upstream"),
            "roi-only" => self.roi_only = value.get().expect("type checked upstream"),
            "canary-fraction" => self.canary_fraction = value.get().expect("type checked upstream"),
            "canary-by" => self.canary_by = value.get().expect("type checked upstream"),
            "execution-provider" => {
                self.execution_provider = value.get().expect("type checked upstream")
            }
            "provider-fallback" => {
                self.provider_fallback = value.get().expect("type checked upstream")
            }
            "threads" => self.threads = value.get().expect("type checked upstream"),
            "intra-op-spinning" => self.spinning = value.get().expect("type checked upstream"),
            "preprocess-threads" => {
                self.preprocess_threads = value.get().expect("type checked upstream")
            }
            "optimization-level" => {
                self.optimization_level = value.get().expect("type checked upstream")
            }
            "pipelining" => self.pipelining = value.get().expect("type checked upstream"),
            "input-dump-location" => {
                self.input_dump_location = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    /// The value of property `name` (except `stats`, which the element has).
    pub(super) fn get(&self, name: &str) -> glib::Value {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).to_value();
        let doubles = |v: &[f64]| gst::Array::new(v.iter().copied()).to_value();
        match name {
            "model-location" => path(&self.model_location),
            "canary-model-location" => path(&self.canary_model_location),
            "model-type" => self.model_type.to_value(),
            "canary-model-type" => self.canary_model_type.to_value(),
            "labels-location" => path(&self.labels_location),
            "confidence-threshold" => self.confidence_threshold.to_value(),
            "iou-threshold" => self.iou_threshold.to_value(),
            "nms-class-agnostic" => self.nms_class_agnostic.to_value(),
            "max-detections" => self.max_detections.to_value(),
            "top-k" => self.top_k.to_value(),
            "box-order" => self.box_order.to_value(),
            "background-class" => self.background_class.to_value(),
            "resize" => self.resize.to_value(),
            "letterbox-anchor" => self.letterbox_anchor.to_value(),
            "pad-value" => self.pad_value.to_value(),
            "channel-order" => self.channel_order.to_value(),
            "scale" => self.scale.to_value(),
            "mean" => doubles(&self.mean),
            "std" => doubles(&self.std),
            "input-width" => self.input_width.to_value(),
            "input-height" => self.input_height.to_value(),
            "interval" => self.interval.to_value(),
            "motion-gate" => self.motion_gate.to_value(),
            "still-interval" => self.still_interval.to_value(),
            "roi-only" => self.roi_only.to_value(),
            "canary-fraction" => self.canary_fraction.to_value(),
            "canary-by" => self.canary_by.to_value(),
            "execution-provider" => self.execution_provider.to_value(),
            "provider-fallback" => self.provider_fallback.to_value(),
            "threads" => self.threads.to_value(),
            "intra-op-spinning" => self.spinning.to_value(),
            "preprocess-threads" => self.preprocess_threads.to_value(),
            "optimization-level" => self.optimization_level.to_value(),
            "pipelining" => self.pipelining.to_value(),
            "input-dump-location" => self
                .input_dump_location
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}
