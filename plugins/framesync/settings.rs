// SPDX-License-Identifier: MPL-2.0
//! framesync's settings: the defaults and the property specs (`gst-inspect-1.0 framesync` shows their blurbs).

use super::AlignOn;
use gst::glib;
use gst::prelude::*;

/// Fastest tick rate (batches per second).
pub(super) const MAX_FPS: i32 = 1000;
/// Largest `tolerance` (ns).
pub(super) const MAX_TOLERANCE: u64 = 10_000_000_000;

#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) framerate: gst::Fraction,
    pub(super) tolerance: u64,
    pub(super) align_on: AlignOn,
    pub(super) drift_correction: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            framerate: gst::Fraction::new(0, 1),
            tolerance: 0,
            align_on: AlignOn::RunningTime,
            drift_correction: false,
        }
    }
}

/// The property specs, in the order `gst-inspect-1.0` lists them.
pub(super) fn properties() -> Vec<glib::ParamSpec> {
    vec![
        gst::ParamSpecFraction::builder("framerate")
            .nick("Framerate")
            .blurb(
                "Batches per second (at most 1000). 0/1: the fastest input's framerate \
                 (from its caps), 30/1 when no input has a fixed one. Default: 0/1",
            )
            .minimum(gst::Fraction::new(0, 1))
            .maximum(gst::Fraction::new(MAX_FPS, 1))
            .default_value(gst::Fraction::new(0, 1))
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("tolerance")
            .nick("Tolerance")
            .blurb(
                "How far (ns) a frame's time may be from the batch's tick to be fresh in \
                 it (at most 10 s). 0: half the tick period. Default: 0",
            )
            .maximum(MAX_TOLERANCE)
            .default_value(0)
            .mutable_playing()
            .build(),
        glib::ParamSpecEnum::builder_with_default("align-on", AlignOn::RunningTime)
            .nick("Align on")
            .blurb(
                "Match frames by running time, or by capture time \
                 (GstReferenceTimestampMeta, e.g. from rtspsrc add-reference-timestamp-meta \
                 or an NTP-synced camera). Default: running-time",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("drift-correction")
            .nick("Drift correction")
            .blurb(
                "Live inputs: shift each stream's frame times by its estimated clock \
                 offset to the first pad (sliding minimum of arrival time − frame time \
                 over 256 frames), for cameras whose timestamps drift. The estimate is \
                 always measured (stats skew-ns); this applies it. Default: false",
            )
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("timeout")
            .nick("Timeout")
            .blurb(
                "Live inputs: how long (ns) after a tick's running time (plus upstream \
                 latency) the batch waits for late streams before it goes out with \
                 them marked missing. The same value as the 'latency' property. \
                 Default: 0",
            )
            .default_value(0)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb(
                "Read-only. batches, skipped-ticks (ticks where every stream was missing: no batch), \
                 framerate (tick rate), overhead-us-mean and overhead-us-max (CPU time \
                 aggregate takes per batch, pushing excluded), and streams: one \
                 structure per sink pad with pad, stream-id, fresh, repeated, missing, \
                 dropped (frames that came too late or were superseded) and skew-ns \
                 (estimated clock offset to the first pad, live inputs)",
            )
            .read_only()
            .build(),
    ]
}
