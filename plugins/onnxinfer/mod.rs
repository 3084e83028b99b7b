// SPDX-License-Identifier: MPL-2.0
//! `onnxinfer`: ONNX Runtime inference on raw video frames.
//!
//! In-place transform: every frame is preprocessed (one fused pass from the frame's pixel
//! format to the model's input tensor), run through the model and decoded; each detection is
//! attached as a `GstVideoRegionOfInterestMeta` with a `detection` param (see
//! [`crate::detection`]). Buffers are passed on unchanged otherwise.
//!
//! ```text
//! gst-launch-1.0 filesrc location=clip.mp4 ! qtdemux ! h264parse ! avdec_h264 ! \
//!     onnxinfer model-location=models/common_det.onnx ! fakesink
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
mod labels;
mod model;
mod nms;
pub mod preprocess;
mod yolox;

/// The model family, which decides how outputs are decoded and the preprocessing defaults.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferModelType")]
pub enum ModelType {
    #[enum_value(
        name = "Auto: pick the family from the model's output shapes (logged)",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "YOLOX: raw head [1,N,5+C] decoded on stride 8/16/32 grids; BGR 0-255 input, letterbox anchored top-left, pad 114",
        nick = "yolox"
    )]
    Yolox = 1,
}

/// How frames are fitted to the model's input size.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOnnxInferResize")]
pub enum ResizeMode {
    #[enum_value(
        name = "Letterbox: keep the aspect ratio and pad (where the model family anchors it)",
        nick = "letterbox"
    )]
    Letterbox = 0,
    #[enum_value(
        name = "Stretch: scale width and height independently to fill the input",
        nick = "stretch"
    )]
    Stretch = 1,
}

glib::wrapper! {
    pub struct OnnxInfer(ObjectSubclass<imp::OnnxInfer>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        ModelType::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        ResizeMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(
        Some(plugin),
        "onnxinfer",
        gst::Rank::NONE,
        OnnxInfer::static_type(),
    )
}
