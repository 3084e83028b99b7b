// SPDX-License-Identifier: MPL-2.0
//! `onnxinfer`: ONNX Runtime inference on raw video frames.
//!
//! In-place transform: every frame (or every `interval`-th) is preprocessed in one fused pass
//! from its pixel format to the model's input tensor, run through the model and decoded by the
//! model family's decoder. Detections become `GstVideoRegionOfInterestMeta`s with a
//! `detection` param, classifications a `classification` param (see [`crate::formats::detection`]), raw
//! outputs a `videoai-tensors` meta. Buffers are passed on unchanged otherwise.
//!
//! The model can be replaced while playing (set `model-location`: loaded and warmed up on
//! another thread, switched between two frames) and a second, canary model can take a share of
//! the streams or frames.
//!
//! ```text
//! gst-launch-1.0 filesrc location=clip.mp4 ! qtdemux ! h264parse ! avdec_h264 ! \
//!     onnxinfer model-location=models/common_det.onnx ! fakesink
//! ```

use gst::glib;
use gst::prelude::*;

mod attach;
mod cursor;
mod decode;
pub mod engine;
mod formats;
mod imp;
mod labels;
pub mod model;
mod models;
pub mod nms;
mod npy;
pub mod preprocess;
pub mod runtime;
mod settings;
mod stats;
mod swap;
mod work;
mod worker;

/// The element's debug category, also used by the modules beside `imp.rs`.
static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "onnxinfer",
        gst::DebugColorFlags::empty(),
        Some("videoai ONNX Runtime inference"),
    )
});

/// The model family, which decides how outputs are decoded and the preprocessing defaults.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferModelType")]
pub enum ModelType {
    #[enum_value(
        name = "Auto: pick the family from the model's output shapes (the choice is logged)",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "YOLOv5: one output [1,N,5+C] of decoded boxes (cx,cy,w,h in input pixels, objectness, class scores); RGB 0-1, centred letterbox",
        nick = "yolov5"
    )]
    Yolov5 = 1,
    #[enum_value(
        name = "YOLOv8/v11 (ultralytics export): one output [1,4+C,N] (cx,cy,w,h, class scores); RGB 0-1, centred letterbox",
        nick = "yolov8"
    )]
    Yolov8 = 2,
    #[enum_value(
        name = "YOLOX: raw head [1,N,5+C] decoded on stride 8/16/32 grids; BGR 0-255, letterbox anchored top-left, pad 114",
        nick = "yolox"
    )]
    Yolox = 3,
    #[enum_value(
        name = "SSD-style: outputs boxes [1,N,4] (ymin,xmin,ymax,xmax, normalised), scores [1,N], classes [1,N] (+ optional count [1]); RGB 0-1, stretch",
        nick = "ssd"
    )]
    Ssd = 4,
    #[enum_value(
        name = "Classifier: one output [1,C] (logits or probabilities); top-k classes as a 'classification' param on a full-frame ROI, or on upstream ROIs with roi-only; RGB, ImageNet mean/std, stretch",
        nick = "classifier"
    )]
    Classifier = 5,
    #[enum_value(
        name = "Raw: no decoding; every output tensor is attached as a 'videoai-tensors' meta for a downstream decoder",
        nick = "raw"
    )]
    Raw = 6,
}

/// The canary model's family (`model-type` for the canary).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferCanaryModelType")]
pub enum CanaryModelType {
    #[enum_value(
        name = "Same: the model-type in force for the primary model",
        nick = "same"
    )]
    Same = 0,
    #[enum_value(
        name = "Auto: pick the family from the canary's output shapes",
        nick = "auto"
    )]
    Auto = 1,
    #[enum_value(name = "YOLOv5", nick = "yolov5")]
    Yolov5 = 2,
    #[enum_value(name = "YOLOv8/v11", nick = "yolov8")]
    Yolov8 = 3,
    #[enum_value(name = "YOLOX", nick = "yolox")]
    Yolox = 4,
    #[enum_value(name = "SSD-style", nick = "ssd")]
    Ssd = 5,
    #[enum_value(name = "Classifier", nick = "classifier")]
    Classifier = 6,
    #[enum_value(name = "Raw", nick = "raw")]
    Raw = 7,
}

impl CanaryModelType {
    /// The family the canary is loaded as, given the primary's `model-type`.
    pub fn resolve(self, primary: ModelType) -> ModelType {
        match self {
            CanaryModelType::Same => primary,
            CanaryModelType::Auto => ModelType::Auto,
            CanaryModelType::Yolov5 => ModelType::Yolov5,
            CanaryModelType::Yolov8 => ModelType::Yolov8,
            CanaryModelType::Yolox => ModelType::Yolox,
            CanaryModelType::Ssd => ModelType::Ssd,
            CanaryModelType::Classifier => ModelType::Classifier,
            CanaryModelType::Raw => ModelType::Raw,
        }
    }
}

/// How frames are fitted to the model's input size.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferResize")]
pub enum ResizeMode {
    #[enum_value(
        name = "Family default (letterbox for detectors, stretch for classifiers and raw)",
        nick = "auto"
    )]
    Auto = 2,
    #[enum_value(
        name = "Letterbox: keep the aspect ratio and pad (anchored per letterbox-anchor)",
        nick = "letterbox"
    )]
    Letterbox = 0,
    #[enum_value(
        name = "Stretch: scale width and height independently to fill the input",
        nick = "stretch"
    )]
    Stretch = 1,
}

/// Where the picture sits in a letterboxed input.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferLetterboxAnchor")]
pub enum LetterboxAnchor {
    #[enum_value(
        name = "Family default (top-left for YOLOX, centre otherwise)",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "Centre, padding split on both sides", nick = "center")]
    Center = 1,
    #[enum_value(name = "Top-left, padding right and bottom", nick = "top-left")]
    TopLeft = 2,
}

/// Channel order of the input tensor.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferChannelOrder")]
pub enum ChannelOrderProp {
    #[enum_value(name = "Family default (BGR for YOLOX, RGB otherwise)", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "RGB", nick = "rgb")]
    Rgb = 1,
    #[enum_value(name = "BGR", nick = "bgr")]
    Bgr = 2,
}

/// Where inference runs.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferExecutionProvider")]
pub enum ExecutionProvider {
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 0,
    #[enum_value(
        name = "CUDA (needs the onnxruntime-gpu library and a build with the 'cuda' feature)",
        nick = "cuda"
    )]
    Cuda = 1,
    #[enum_value(
        name = "TensorRT (needs the onnxruntime-gpu library and a build with the 'tensorrt' feature)",
        nick = "tensorrt"
    )]
    Tensorrt = 2,
}

/// ONNX Runtime graph optimisation level.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferOptimizationLevel")]
pub enum OptimizationLevel {
    #[enum_value(name = "No graph optimisation", nick = "disable")]
    Disable = 0,
    #[enum_value(
        name = "Basic (constant folding, redundant node removal)",
        nick = "basic"
    )]
    Basic = 1,
    #[enum_value(name = "Extended (node fusions)", nick = "extended")]
    Extended = 2,
    #[enum_value(name = "All (extended plus layout optimisations)", nick = "all")]
    All = 3,
}

/// What the canary share is taken of.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferCanaryBy")]
pub enum CanaryBy {
    #[enum_value(
        name = "Stream: a stream goes to the canary if a hash of its stream-id falls in the fraction (stable across restarts)",
        nick = "stream"
    )]
    Stream = 0,
    #[enum_value(name = "Frame: that share of frames, spread evenly", nick = "frame")]
    Frame = 1,
}

/// Order of the coordinates in an SSD boxes output.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferBoxOrder")]
pub enum BoxOrder {
    #[enum_value(
        name = "ymin, xmin, ymax, xmax (TensorFlow object detection API)",
        nick = "yxyx"
    )]
    Yxyx = 0,
    #[enum_value(name = "xmin, ymin, xmax, ymax", nick = "xyxy")]
    Xyxy = 1,
}

glib::wrapper! {
    pub struct OnnxInfer(ObjectSubclass<imp::OnnxInfer>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        ModelType::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        CanaryModelType::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        ResizeMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        LetterboxAnchor::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        ChannelOrderProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        ExecutionProvider::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        OptimizationLevel::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        CanaryBy::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        BoxOrder::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(
        Some(plugin),
        "onnxinfer",
        gst::Rank::NONE,
        OnnxInfer::static_type(),
    )
}
