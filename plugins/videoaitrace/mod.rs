// SPDX-License-Identifier: MPL-2.0
//! `videoaitrace`: a tracer measuring, per frame, the time from the source that produced it to
//! each sink that consumed it, the time spent in each element, and the frames lost on the way.
//!
//! ```text
//! GST_TRACERS=videoaitrace gst-launch-1.0 …
//! GST_TRACERS="videoaitrace(file=/tmp/latency.json)" gst-launch-1.0 …
//! GST_TRACERS="videoaitrace(prometheus=127.0.0.1:9464)" gst-launch-1.0 …
//! ```
//!
//! With `prometheus=ADDR` the same figures, and every videoai element's `stats`, are served
//! for Prometheus on `http://ADDR/metrics` while the process runs ([`exporter`],
//! [`metrics`], [`element_metrics`]).
//!
//! How frames are followed: a buffer pushed by a *source* (an element, or a bin such as
//! `resilientsrc`, without sink pads) is remembered by (source, PTS) with the time it was
//! pushed; when a buffer with that PTS is pushed into a *sink* (an element or bin without src
//! pads) fed by that source, the difference is one end-to-end sample. The time in an element
//! is from a buffer entering it (pushed into its sink pad) to a buffer with the same PTS
//! leaving it (pushed from its src pad): processing plus any queueing. Elements that change
//! timestamps (encoders, muxers, rate converters) are not matched across.
//!
//! Memory is bounded: samples go into log-bucket histograms (2 % resolution, 1 µs to 1 h), and
//! at most `IN_FLIGHT` (4096) frames per source and per element are remembered (older ones are
//! forgotten: counted as lost if they never arrive). A report (a table on stderr and, with
//! `file=`, JSON) is made when a top-level pipeline goes from PAUSED to READY (stop, or the
//! end of `gst-launch-1.0`); the figures then start again from zero.

use gst::glib;
use gst::prelude::*;

mod element_metrics;
mod exporter;
mod follow;
mod imp;
mod metrics;
mod params;
mod report;

glib::wrapper! {
    pub struct VideoAiTrace(ObjectSubclass<imp::VideoAiTrace>)
        @extends gst::Tracer, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Tracer::register(Some(plugin), "videoaitrace", VideoAiTrace::static_type())
}
