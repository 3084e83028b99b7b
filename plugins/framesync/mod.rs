// SPDX-License-Identifier: MPL-2.0
//! `framesync`: many streams in, one synchronised batch per tick out.
//!
//! An Aggregator with request pads `sink_%u`. Each output buffer is a batch (see
//! [`crate::formats::batch`]): no pixels, just references to one frame per stream for that tick, with
//! per-entry metadata (pad index, stream id, caps, segment, PTS, running time, capture time and
//! whether the entry is fresh, repeated or missing). `onnxinfer` runs all fresh entries of a
//! batch in one inference call, `raftsink` stores one event per entry and `framesplit` turns
//! batches back into one stream per source.
//!
//! ```text
//! gst-launch-1.0 framesync name=sync ! onnxinfer model-location=m.onnx ! framesplit name=split \
//!     videotestsrc is-live=true ! sync.sink_0 \
//!     videotestsrc is-live=true pattern=ball ! sync.sink_1 \
//!     split.src_0 ! fakesink  split.src_1 ! fakesink
//! ```

use gst::glib;
use gst::prelude::*;

pub mod align;
mod imp;
mod pad;
mod settings;
mod tick;

/// What frames are matched on.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFrameSyncAlignOn")]
pub enum AlignOn {
    #[enum_value(
        name = "Running time: the frames' running times in their segments",
        nick = "running-time"
    )]
    RunningTime = 0,
    #[enum_value(
        name = "Capture time: the GstReferenceTimestampMeta of each frame (running time for frames without one)",
        nick = "capture-time"
    )]
    CaptureTime = 1,
}

glib::wrapper! {
    pub struct FrameSync(ObjectSubclass<imp::FrameSync>)
        @extends gst_base::Aggregator, gst::Element, gst::Object,
        @implements gst::ChildProxy;
}

glib::wrapper! {
    pub struct FrameSyncPad(ObjectSubclass<pad::FrameSyncPad>)
        @extends gst_base::AggregatorPad, gst::Pad, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        AlignOn::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        FrameSyncPad::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(
        Some(plugin),
        "framesync",
        gst::Rank::NONE,
        FrameSync::static_type(),
    )
}
