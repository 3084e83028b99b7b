// SPDX-License-Identifier: MPL-2.0
//! `raftsink`: turns per-frame detection metadata into events and appends them, exactly once,
//! to a durable log: an embedded SQLite file in WAL mode, or a NATS JetStream cluster (through
//! a local SQLite outbox).
//!
//! One event per frame (see [`crate::eventlog::event::FrameEvent`]), keyed by `(stream, seq)`:
//! `stream` is the stream-id of STREAM-START, `seq` the frame's key (see [`keys`]), so
//! replaying the same input, or reading the same camera twice, stores nothing twice. Everything is durable (and acknowledged) before
//! EOS is passed on.
//!
//! ```text
//! gst-launch-1.0 -e … ! onnxinfer model-location=m.onnx ! raftsink location=events.db
//! videoai-events dump events.db
//! ```

use gst::glib;
use gst::prelude::*;

mod forwarder;
mod imp;
pub mod keys;
pub mod mqtt;
mod progress;
mod settings;
mod webhook;
mod writer;

/// The element's debug category, also used by the modules beside `imp.rs`.
static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "raftsink",
        gst::DebugColorFlags::empty(),
        Some("videoai durable detection event sink"),
    )
});

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
