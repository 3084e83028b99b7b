// SPDX-License-Identifier: MPL-2.0
//! `raftsink`: turns per-frame detection metadata into events and appends them, exactly once,
//! to a durable log (an embedded SQLite file in WAL mode).
//!
//! One event per frame (see [`crate::event::FrameEvent`]), keyed by `(stream, seq)`:
//! `stream` is the stream-id of STREAM-START, `seq` the frame's index derived from its PTS and
//! the caps framerate (a counter where either is missing), so replaying the same input stores
//! nothing twice. Everything is committed before EOS is passed on.
//!
//! ```text
//! gst-launch-1.0 -e … ! onnxinfer model-location=m.onnx ! raftsink location=events.db
//! videoai-events dump events.db
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod sequence;

glib::wrapper! {
    pub struct RaftSink(ObjectSubclass<imp::RaftSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "raftsink",
        gst::Rank::NONE,
        RaftSink::static_type(),
    )
}
