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

/// Reference of the meta `resilientsrc` puts on every RTP packet it receives (and which the
/// depayloader and decoder carry to the frame): the packet's RTP timestamp, unwrapped, in
/// nanoseconds of the RTP clock (`timestamp = ticks × 10⁹ / clock-rate`), with the caps fields
/// `ssrc` (uint) and `clock-rate` (int). It is exact from the first packet on, before the
/// camera's first sender report gives `timestamp/x-ntp`; `raftsink` maps it to capture time
/// through the frames that carry both. The unwrapping starts at each reader's first packet:
/// only differences within one reader's session mean anything.
pub const RTP_REFERENCE: &str = "timestamp/x-videoai-rtp";

/// A frame's RTP time, from [`RTP_REFERENCE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpTime {
    pub ssrc: u32,
    /// Unwrapped RTP time in nanoseconds (of this reader's session).
    pub ns: i64,
    /// The RTP clock rate (Hz).
    pub clock_rate: u32,
}

impl RtpTime {
    /// The unwrapped RTP timestamp in ticks: exactly the one the meta was made from (`ns` is
    /// `ticks × 10⁹ / clock-rate` rounded down, which this inverts).
    pub fn ticks(self) -> i64 {
        let num = self.ns as i128 * self.clock_rate as i128;
        (num + 999_999_999).div_euclid(1_000_000_000) as i64
    }
}

/// The RTP time `buffer` carries, if `resilientsrc` stamped it.
pub fn rtp_timestamp(buffer: &gst::BufferRef) -> Option<RtpTime> {
    buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find_map(|meta| {
            let s = meta.reference().structure(0)?;
            (s.name() == RTP_REFERENCE).then_some(())?;
            Some(RtpTime {
                ssrc: s.get::<u32>("ssrc").ok()?,
                ns: i64::try_from(meta.timestamp().nseconds()).ok()?,
                clock_rate: s
                    .get::<i32>("clock-rate")
                    .ok()
                    .and_then(|r| u32::try_from(r).ok())
                    .filter(|r| *r > 0)?,
            })
        })
}

/// Unwraps one RTP stream's 32-bit timestamps and stamps its packets with [`RTP_REFERENCE`].
#[derive(Debug)]
pub struct RtpStamper {
    clock_rate: u32,
    /// SSRC, last 32-bit timestamp, its unwrapped value.
    last: Option<(u32, u32, i64)>,
    caps: Option<(u32, gst::Caps)>,
}

impl RtpStamper {
    pub fn new(clock_rate: u32) -> Self {
        RtpStamper {
            clock_rate: clock_rate.max(1),
            last: None,
            caps: None,
        }
    }

    /// The RTP time of an RTP packet (`None` if it is not one). A new SSRC starts over.
    pub fn time(&mut self, packet: &[u8]) -> Option<RtpTime> {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return None;
        }
        let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        // Signed distance from the last packet: reordered packets go back, wraps go on.
        let ext = match self.last {
            Some((s, last_ts, last_ext)) if s == ssrc => {
                last_ext + ts.wrapping_sub(last_ts) as i32 as i64
            }
            // Starts one wrap up, so that packets just before the first stay positive.
            _ => ts as i64 + (1i64 << 32),
        };
        self.last = Some((ssrc, ts, ext));
        let ns = ext as i128 * 1_000_000_000 / self.clock_rate as i128;
        Some(RtpTime {
            ssrc,
            ns: ns as i64,
            clock_rate: self.clock_rate,
        })
    }

    /// Puts the packet's RTP time on `buffer` (an RTP packet); other buffers are left alone.
    pub fn stamp(&mut self, buffer: &mut gst::BufferRef) {
        let Some(t) = buffer.map_readable().ok().and_then(|m| self.time(&m)) else {
            return;
        };
        let rate = self.clock_rate;
        let caps = match &self.caps {
            Some((ssrc, caps)) if *ssrc == t.ssrc => caps.clone(),
            _ => {
                let caps = gst::Caps::builder(RTP_REFERENCE)
                    .field("ssrc", t.ssrc)
                    .field("clock-rate", rate as i32)
                    .build();
                self.caps = Some((t.ssrc, caps.clone()));
                caps
            }
        };
        gst::ReferenceTimestampMeta::add(
            buffer,
            &caps,
            gst::ClockTime::from_nseconds(t.ns as u64),
            gst::ClockTime::NONE,
        );
    }
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

    fn rtp_packet(ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96, 0, 1];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p
    }

    #[test]
    fn rtp_times_are_unwrapped_and_carried_as_a_meta() {
        gst::init().unwrap();
        let mut s = RtpStamper::new(90_000);
        let t0 = s.time(&rtp_packet(u32::MAX - 2999, 7)).unwrap();
        // Across the wrap: one frame period (3000 ticks = 33.33 ms) on.
        let t1 = s.time(&rtp_packet(0, 7)).unwrap();
        assert_eq!(t1.ns - t0.ns, 33_333_333);
        // A reordered packet goes back.
        let t2 = s.time(&rtp_packet(u32::MAX - 5999, 7)).unwrap();
        assert_eq!(t0.ns - t2.ns, 33_333_333);
        // Not RTP.
        assert!(s.time(&[0u8; 8]).is_none());
        assert!(s.time(&[0u8; 16]).is_none());
        // Stamped on a buffer and read back; a buffer without it has none.
        let mut b = gst::Buffer::from_slice(rtp_packet(90_000, 9));
        s.stamp(b.get_mut().unwrap());
        let r = rtp_timestamp(&b).unwrap();
        assert_eq!(r.ssrc, 9);
        assert_eq!(r.ns, (90_000 + (1i64 << 32)) * 1_000_000_000 / 90_000);
        assert_eq!(r.ticks(), 90_000 + (1i64 << 32));
        // The ticks come back exactly from the nanoseconds, whatever the rounding.
        for ticks in [1i64, 2, 3, 7, 89_999, (1i64 << 32) + 12_345] {
            for rate in [8_000u32, 90_000, 48_000, 1_000_000] {
                let ns = (ticks as i128 * 1_000_000_000 / rate as i128) as i64;
                let t = RtpTime {
                    ssrc: 1,
                    ns,
                    clock_rate: rate,
                };
                assert_eq!(t.ticks(), ticks, "{ticks} at {rate}");
            }
        }
        assert!(rtp_timestamp(&with_meta("timestamp/x-ntp", 5)).is_none());
        // Not a capture time.
        assert!(reference_timestamp(&b).is_none());
    }
}
