// SPDX-License-Identifier: MPL-2.0
//! `adaptivequeue`: a queue that holds a latency target under overload without corrupting
//! decode.
//!
//! Like `queue` it decouples upstream from downstream with its own streaming thread on the
//! source pad. Unlike `queue` it bounds the time data waits: above the high watermark it drops
//! what can be dropped safely (raw frames, spread out; encoded video only whole GOP tails), and
//! in `adaptive` mode it measures how fast downstream is and thins the input to that rate
//! before the watermark is reached.
//!
//! ```text
//! gst-launch-1.0 rtspsrc location=rtsp://cam ! rtph264depay ! h264parse ! adaptivequeue \
//!     ! avdec_h264 ! videoconvert ! onnxinfer model-location=m.onnx ! fakesink
//! ```

use gst::glib;
use gst::prelude::*;

pub mod control;
mod imp;
mod settings;
mod state;
pub mod store;

/// How the queue reacts to overload.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstAdaptiveQueueMode")]
pub enum Mode {
    #[enum_value(
        name = "Fixed: drop only at the high watermark and when data is older than max-latency",
        nick = "fixed"
    )]
    Fixed = 0,
    #[enum_value(
        name = "Adaptive: also thin the input to the rate downstream sustains while above target-latency",
        nick = "adaptive"
    )]
    Adaptive = 1,
}

glib::wrapper! {
    pub struct AdaptiveQueue(ObjectSubclass<imp::AdaptiveQueue>)
        @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    Mode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "adaptivequeue",
        gst::Rank::NONE,
        AdaptiveQueue::static_type(),
    )
}
