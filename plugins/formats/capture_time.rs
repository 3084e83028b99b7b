// SPDX-License-Identifier: MPL-2.0
//! Capture timestamps: when a frame was taken, in nanoseconds since the Unix epoch.
//!
//! A `GstReferenceTimestampMeta` from upstream wins: one with reference `timestamp/x-unix`
//! first (already Unix time), else one with `timestamp/x-ntp` (NTP time, nanoseconds since
//! 1900-01-01: what `rtspsrc add-reference-timestamp-meta=true` attaches from the camera's
//! RTCP sender reports), converted to Unix time. Metas with other references (a camera's own
//! clock, PTP without an epoch) are not wall-clock times and are ignored. Otherwise the buffer's
//! running time is mapped to the wall clock: the wall-clock time of running time 0 is measured
//! once (from the pipeline clock and base time when there is one, else from the first frame's
//! running time) and added to each frame's running time, so frames keep their spacing.

use std::time::{SystemTime, UNIX_EPOCH};

use gst::prelude::*;

/// Maps running time to wall-clock time for one element; create one per streaming session.
#[derive(Debug, Default, Clone)]
pub struct CaptureClock {
    /// Wall-clock time (ns since the epoch) at running time 0.
    epoch_at_running_zero: Option<i128>,
    /// Upstream's mapping, once a frame carried a reference timestamp: its capture time minus
    /// its running time (the camera's RTP↔NTP mapping, as running time).
    reference_offset: Option<i128>,
}

fn wall_now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Nanoseconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_TO_UNIX_NS: u64 = 2_208_988_800 * 1_000_000_000;

/// The upstream capture time of `buffer` in ns since the Unix epoch, if it carries one.
pub fn reference_timestamp(buffer: &gst::BufferRef) -> Option<gst::ClockTime> {
    let mut ntp = None;
    for meta in buffer.iter_meta::<gst::ReferenceTimestampMeta>() {
        match meta.reference().structure(0).map(|s| s.name().as_str()) {
            Some("timestamp/x-unix") => return Some(meta.timestamp()),
            Some("timestamp/x-ntp") if ntp.is_none() => {
                ntp = meta
                    .timestamp()
                    .nseconds()
                    .checked_sub(NTP_TO_UNIX_NS)
                    .map(gst::ClockTime::from_nseconds);
            }
            _ => {}
        }
    }
    ntp
}

impl CaptureClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the mapping (on flush or restart).
    pub fn reset(&mut self) {
        self.epoch_at_running_zero = None;
        self.reference_offset = None;
    }

    /// Capture time of a frame at `running_time` from this machine's clock (no meta used).
    pub fn wall_at(&mut self, element: &gst::Element, running_time: gst::ClockTime) -> i64 {
        (self.epoch(element, Some(running_time)) + running_time.nseconds() as i128) as i64
    }

    /// Capture time of a frame at `running_time` that has no meta of its own, from upstream's
    /// mapping (the last frame with a reference timestamp), if one was seen.
    pub fn from_reference(&self, running_time: gst::ClockTime) -> Option<i64> {
        self.reference_offset
            .map(|off| (running_time.nseconds() as i128 + off) as i64)
    }

    /// Capture time of `buffer` in ns since the epoch. `running_time` is the buffer's running
    /// time in its segment; `element` gives the clock and base time.
    pub fn capture_ns(
        &mut self,
        element: &gst::Element,
        buffer: &gst::BufferRef,
        running_time: Option<gst::ClockTime>,
    ) -> i64 {
        if let Some(ts) = reference_timestamp(buffer) {
            if let Some(rt) = running_time {
                self.reference_offset = Some(ts.nseconds() as i128 - rt.nseconds() as i128);
            }
            return ts.nseconds() as i64;
        }
        let Some(rt) = running_time else {
            return wall_now_ns() as i64;
        };
        (self.epoch(element, Some(rt)) + rt.nseconds() as i128) as i64
    }

    /// Wall-clock time (ns since the epoch) of running time 0, measured once.
    fn epoch(&mut self, element: &gst::Element, running_time: Option<gst::ClockTime>) -> i128 {
        *self.epoch_at_running_zero.get_or_insert_with(|| {
            let now = wall_now_ns();
            match (element.clock(), element.base_time()) {
                (Some(clock), Some(base)) => {
                    let clock_now = clock.time().nseconds() as i128;
                    now - (clock_now - base.nseconds() as i128)
                }
                _ => now - running_time.map_or(0, |rt| rt.nseconds() as i128),
            }
        })
    }

    /// The running time (ns, may be negative) at which the wall clock read `capture_ns`: the
    /// inverse of [`Self::capture_ns`], to compare capture times with running times.
    pub fn running_ns(&mut self, element: &gst::Element, capture_ns: i64) -> i64 {
        (capture_ns as i128 - self.epoch(element, None)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_meta(reference: &str, ns: u64) -> gst::Buffer {
        let mut b = gst::Buffer::new();
        gst::ReferenceTimestampMeta::add(
            b.get_mut().unwrap(),
            &gst::Caps::new_empty_simple(reference),
            gst::ClockTime::from_nseconds(ns),
            gst::ClockTime::NONE,
        );
        b
    }

    #[test]
    fn ntp_and_unix_reference_timestamps() {
        gst::init().unwrap();
        let unix = 1_795_000_000_000_000_000u64;
        let b = with_meta("timestamp/x-ntp", unix + NTP_TO_UNIX_NS);
        assert_eq!(reference_timestamp(&b).unwrap().nseconds(), unix);
        let b = with_meta("timestamp/x-unix", unix);
        assert_eq!(reference_timestamp(&b).unwrap().nseconds(), unix);
        // Both: x-unix wins, whatever the order.
        let mut b = with_meta("timestamp/x-ntp", unix + 5 + NTP_TO_UNIX_NS);
        gst::ReferenceTimestampMeta::add(
            b.get_mut().unwrap(),
            &gst::Caps::new_empty_simple("timestamp/x-unix"),
            gst::ClockTime::from_nseconds(unix),
            gst::ClockTime::NONE,
        );
        assert_eq!(reference_timestamp(&b).unwrap().nseconds(), unix);
        // A clock without an epoch is no capture time.
        assert!(reference_timestamp(&with_meta("timestamp/x-camera", 42)).is_none());
    }
}
