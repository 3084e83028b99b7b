// SPDX-License-Identifier: MPL-2.0
//! `framesplit`: batches from `framesync` back into one stream per source.
//!
//! Each fresh entry of a batch is pushed, as the very buffer `framesync` received (every meta
//! kept, ROIs from `onnxinfer` included), on the sometimes pad `src_N`, `N` being the entry's
//! `framesync` sink pad index, after that stream's own STREAM_START, CAPS and SEGMENT. A stream
//! that ends (or whose `framesync` pad is released) gets EOS on its pad.
//!
//! ```text
//! gst-launch-1.0 framesync name=sync ! framesplit name=split \
//!     videotestsrc ! sync.sink_0  videotestsrc pattern=ball ! sync.sink_1 \
//!     split.src_0 ! fakesink  split.src_1 ! fakesink
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct FrameSplit(ObjectSubclass<imp::FrameSplit>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "framesplit",
        gst::Rank::NONE,
        FrameSplit::static_type(),
    )
}
