// SPDX-License-Identifier: MPL-2.0
//! adaptivequeue's property specs (`gst-inspect-1.0 adaptivequeue` shows their blurbs); the settings themselves are in `state.rs`.

use super::state::{
    DEFAULT_EWMA_ALPHA, DEFAULT_HIGH_WATERMARK, DEFAULT_LIVE_ONLY, DEFAULT_LOW_WATERMARK,
    DEFAULT_MAX_LATENCY, DEFAULT_MAX_SIZE_BUFFERS, DEFAULT_MODE, DEFAULT_TARGET_LATENCY,
};
use gst::glib;
use gst::prelude::*;

/// The property specs, in the order `gst-inspect-1.0` lists them.
pub(super) fn properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecUInt64::builder("low-watermark")
            .nick("Low watermark")
            .blurb(
                "Level (running time queued, in nanoseconds) that drops bring the queue \
                 back down to; below it the level is 'low'. -1 (none): the level is always \
                 'low'. Default: 200000000 (200 ms)",
            )
            .default_value(DEFAULT_LOW_WATERMARK)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt64::builder("high-watermark")
            .nick("High watermark")
            .blurb(
                "Level (ns) above which the queue drops: raw video frames older than the \
                 low watermark thinned to every k-th, encoded video whole GOP tails. -1 \
                 (none): never. Default: 800000000 (800 ms)",
            )
            .default_value(DEFAULT_HIGH_WATERMARK)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt64::builder("max-latency")
            .nick("Maximum latency")
            .blurb(
                "Buffers older than this (ns, less downstream's measured processing \
                 time) are dropped on the way out where the drop rules allow; when \
                 nothing may be dropped, upstream blocks at this level. Also added to the \
                 latency query's maximum. 0 or -1 (none) = no limit. Default: \
                 1500000000 (1.5 s)",
            )
            .default_value(DEFAULT_MAX_LATENCY)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt64::builder("target-latency")
            .nick("Target latency")
            .blurb(
                "mode=adaptive: above this level (ns) the input is thinned to the rate \
                 downstream sustains (encoded video: the first frames of each GOP, whole \
                 GOP tails cut); below it the pass ratio recovers in +5% steps. -1 \
                 (none): never thinned. Default: 400000000 (400 ms)",
            )
            .default_value(DEFAULT_TARGET_LATENCY)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("max-size-buffers")
            .nick("Maximum buffers")
            .blurb(
                "Upstream blocks when this many buffers are queued (the bound for data \
                 without timestamps or durations). 0 = no limit. Default: 200",
            )
            .default_value(DEFAULT_MAX_SIZE_BUFFERS)
            .mutable_playing()
            .build(),
        glib::ParamSpecDouble::builder("ewma-alpha")
            .nick("EWMA alpha")
            .blurb(
                "Weight of each new sample (0 to 1) in the moving averages of downstream \
                 processing time, input interval and QoS proportion. Default: 0.2",
            )
            .minimum(0.001)
            .maximum(1.0)
            .default_value(DEFAULT_EWMA_ALPHA)
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
            .nick("Mode")
            .blurb(
                "fixed: plain watermarks; adaptive: also thin the input to the rate \
                 downstream sustains (measured push time and QoS). Default: adaptive",
            )
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("live-only")
            .nick("Live only")
            .blurb(
                "Drop only when upstream is live (latency query). A non-live source can \
                 wait, so by default it is blocked like queue blocks it instead of losing \
                 data. Default: true",
            )
            .default_value(DEFAULT_LIVE_ONLY)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb(
                "Read-only 'adaptivequeue-stats' structure: in, out, dropped, \
                 dropped-watermark, dropped-expired, dropped-adaptive, dropped-gop-tail \
                 (buffers), level (low|normal|high), current-level-time (ns), \
                 current-level-buffers, ewma-processing-time (ns per buffer \
                 downstream), pass-ratio (0 to 1), upstream-live",
            )
            .read_only()
            .build(),
    ]
}
