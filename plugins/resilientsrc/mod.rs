// SPDX-License-Identifier: MPL-2.0
//! `resilientsrc`: any camera or file in, decoded raw video out, reconnecting by itself.
//!
//! A bin whose `src` pad carries decoded video from `uri` (RTSP, RTMP, HTTP, files, V4L2, …).
//! The source and decoder run in an inner pipeline of their own (`uridecodebin`, typefinding
//! the container and codec from the bytes); an `appsrc` hands their frames on, so when a live
//! source fails, stalls or ends, the inner pipeline is rebuilt with exponential backoff and
//! jitter while downstream sees one continuous stream: same caps, running time always
//! increasing, `DISCONT` after a gap, never an error.
//!
//! ```text
//! gst-launch-1.0 resilientsrc uri=rtsp://user:pass@cam/stream1 ! videoconvert ! autovideosink
//! ```

use gst::glib;
use gst::prelude::*;

mod controller;
pub mod decoders;
mod imp;
mod probe;
pub mod uri;

/// The element's debug category, also used by the modules beside `imp.rs`.
static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "resilientsrc",
        gst::DebugColorFlags::empty(),
        Some("videoai self-healing source"),
    )
});

/// Where the source stands.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstResilientSrcStatus")]
pub enum Status {
    #[default]
    #[enum_value(name = "Stopped: not started", nick = "stopped")]
    Stopped = 0,
    #[enum_value(
        name = "Connecting: opening the source, waiting for the first frame",
        nick = "connecting"
    )]
    Connecting = 1,
    #[enum_value(name = "Running: frames are flowing", nick = "running")]
    Running = 2,
    #[enum_value(
        name = "Retrying: the source failed; waiting for the next attempt",
        nick = "retrying"
    )]
    Retrying = 3,
    #[enum_value(
        name = "Failed: gave up (max-attempts, a non-live source's error, or no usable decoder)",
        nick = "failed"
    )]
    Failed = 4,
    #[enum_value(name = "Ended: a non-live source reached its end", nick = "ended")]
    Ended = 5,
}

/// Which video decoders may be used.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstResilientSrcDecoder")]
pub enum DecoderChoice {
    #[enum_value(
        name = "Auto: NVDEC if available, then VA-API, then CPU; a hardware decoder that fails at run time is dropped for the next",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "NVDEC (nvh264dec, nvh265dec, …)", nick = "nvdec")]
    Nvdec = 1,
    #[enum_value(name = "VA-API (vah264dec, vaapih264dec, …)", nick = "vaapi")]
    Vaapi = 2,
    #[enum_value(name = "CPU (avdec_*, openh264dec, …)", nick = "cpu")]
    Cpu = 3,
}

glib::wrapper! {
    pub struct ResilientSrc(ObjectSubclass<imp::ResilientSrc>)
        @extends gst::Bin, gst::Element, gst::Object,
        @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        Status::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        DecoderChoice::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(
        Some(plugin),
        "resilientsrc",
        gst::Rank::NONE,
        ResilientSrc::static_type(),
    )
}
