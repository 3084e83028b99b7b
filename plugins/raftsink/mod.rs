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

/// When NATS publishes carry `Nats-Msg-Id` (JetStream's deduplication id) beside the
/// expected-sequence rule that keeps each key once.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstRaftSinkNatsMsgId")]
pub enum NatsMsgId {
    #[default]
    #[enum_value(
        name = "Auto: only to servers older than 2.11, which need it (the connected server's version decides; once the process saw an older one, always)",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Always: also to 2.11 and later (a cluster being upgraded from an older version)",
        nick = "always"
    )]
    Always = 1,
}

glib::wrapper! {
    pub struct RaftSink(ObjectSubclass<imp::RaftSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    NatsMsgId::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "raftsink",
        gst::Rank::NONE,
        RaftSink::static_type(),
    )
}
