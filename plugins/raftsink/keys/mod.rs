// SPDX-License-Identifier: MPL-2.0
//! Frame keys: the `seq` of `(stream, seq)`, decided here and nowhere else.
//!
//! One [`StreamKeys`] per stream takes each frame ([`StreamKeys::offer`]: what the frame says
//! about itself, [`Frame`]) and gives back the frames it can key now, in order, each with its
//! key, capture time and [`KeyBasis`]; a frame that waits for the camera's clock comes back
//! later (a later offer, or [`StreamKeys::flush`]). The policy comes from the element:
//!
//! * [`Policy::Position`] (not live: a file): `seq = round(pts × fps)` ([`sequence`]), so the
//!   same frame of the same file gets the same key in every run and after any seek;
//! * [`Policy::CaptureTime`] (live): the capture time in frame periods (the camera's timestamp
//!   when the frame has one, else the running time on this machine's wall clock), continuing
//!   after what the log holds;
//! * [`Policy::Camera`] (live, `capture-time-wait`): the camera's own clock ([`camera`]), the
//!   same key on every reader of the camera. A frame the clock cannot place yet *waits*, at most
//!   the wait; one that waited longer, and every waiting frame at a flush (EOS, a new stream, a
//!   FLUSH_STOP, a stop), gets a **local** key: `LOCAL_KEY_BASE + µs` of this machine's
//!   clock, a space no camera key can ever reach, marked `key_basis: local` in its event. No
//!   frame is ever dropped here.
//!
//! Pure: no GStreamer, no clock of its own (the element passes each frame's running time and
//! its capture time on this machine's clock).

pub mod camera;
pub mod sequence;

use crate::eventlog::event::{ClockMark, KeyBasis, LOCAL_KEY_BASE};
use camera::{CameraClock, Rtp, Stamp};
use sequence::{Basis, Sequencer};

/// How a stream's frames are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Position,
    CaptureTime,
    /// Frames wait at most `wait_ns` (running time) for the camera's clock.
    Camera {
        wait_ns: u64,
    },
}

/// What a frame says about itself (read from its buffer and caps by the element).
#[derive(Debug, Clone, Copy, Default)]
pub struct Frame {
    pub pts_ns: Option<u64>,
    pub running_ns: Option<u64>,
    /// The camera's capture time (a reference timestamp meta, or a batch entry's), ns since
    /// the Unix epoch.
    pub camera_ns: Option<i64>,
    pub rtp: Option<Rtp>,
    /// Its capture time as this machine knows it now: `camera_ns`, else its running time on
    /// the wall clock.
    pub estimate_ns: i64,
    /// The caps' frame rate (numerator, denominator), when it is not 0/1.
    pub framerate: Option<(i32, i32)>,
}

/// A frame with its key.
#[derive(Debug)]
pub struct Keyed<T> {
    pub seq: i64,
    pub capture_ns: i64,
    pub basis: KeyBasis,
    /// Camera keys: the camera's clock at this frame (stored with the event).
    pub mark: Option<ClockMark>,
    /// Two events under one key are one frame when their capture times (position keys: their
    /// PTS) differ by at most this; else they collide.
    pub same_frame_ns: i64,
    pub payload: T,
}

/// The last key stored for a stream, as the log has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub seq: i64,
    pub capture_ns: i64,
    pub basis: Option<KeyBasis>,
    pub mark: Option<ClockMark>,
}

/// What the camera's clock is doing, for `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    /// Not keyed by the camera's clock.
    Off,
    /// Frames wait for it, or none came yet.
    Waiting,
    /// Frames are keyed by it.
    Known,
    /// The last frames got local keys.
    Local,
}

impl ClockState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockState::Off => "off",
            ClockState::Waiting => "waiting",
            ClockState::Known => "known",
            ClockState::Local => "local",
        }
    }
}

#[derive(Debug)]
struct Waiting<T> {
    frame: Frame,
    payload: T,
}

#[derive(Debug)]
pub struct StreamKeys<T> {
    policy: Policy,
    sequencer: Sequencer,
    clock: CameraClock,
    waiting: Vec<Waiting<T>>,
    last_local: Option<i64>,
    local_keyed: u64,
    /// Whether the last frame keyed got a camera key.
    on_camera_clock: bool,
}

/// Most frames that wait for the camera's clock, whatever the wait.
pub const MAX_WAITING: usize = 1000;

impl<T> StreamKeys<T> {
    pub fn new(policy: Policy) -> Self {
        let mut sequencer = Sequencer::new();
        sequencer.set_basis(match policy {
            Policy::Position => Basis::Pts,
            _ => Basis::CaptureTime,
        });
        StreamKeys {
            policy,
            sequencer,
            clock: CameraClock::default(),
            waiting: Vec::new(),
            last_local: None,
            local_keyed: 0,
            on_camera_clock: false,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// What the log holds for the stream: the highest camera key (camera keys go on from it:
    /// the same frame grid as the reader that stored it), the highest local key, and the
    /// highest other key (live numbers continue after it).
    pub fn continue_from(
        &mut self,
        camera: Option<Stored>,
        local: Option<i64>,
        other: Option<Stored>,
    ) {
        if let Some(s) = camera {
            self.clock.continue_from(s.seq, s.capture_ns, s.mark);
        }
        self.last_local = self.last_local.max(local);
        if self.policy == Policy::CaptureTime {
            self.sequencer.continue_after(other.map(|s| s.seq));
        }
    }

    /// A frame: the frames keyed now (earlier waiting ones first), possibly none.
    pub fn offer(&mut self, frame: Frame, payload: T) -> Vec<Keyed<T>> {
        let Policy::Camera { wait_ns } = self.policy else {
            return vec![self.numbered(frame, payload)];
        };
        self.clock.observe(Stamp {
            camera_ns: frame.camera_ns,
            rtp: frame.rtp,
        });
        self.waiting.push(Waiting { frame, payload });
        let mut out = Vec::new();
        // In order: a frame the clock cannot place holds back the ones after it.
        let mut placed = 0;
        for w in &self.waiting {
            match self.clock.place(stamp(&w.frame)) {
                Some(k) => {
                    out.push(k);
                    placed += 1;
                }
                None => break,
            }
        }
        let mut keyed: Vec<Keyed<T>> = self
            .waiting
            .drain(..placed)
            .zip(out)
            .map(|(w, (seq, capture_ns, mark))| Keyed {
                seq,
                capture_ns,
                basis: KeyBasis::Camera,
                mark: Some(mark),
                same_frame_ns: mark.period_ns / 2,
                payload: w.payload,
            })
            .collect();
        if !keyed.is_empty() {
            self.on_camera_clock = true;
        }
        // Waited too long (or too many wait): local keys for all that wait.
        let waited = match (self.waiting.first(), frame.running_ns) {
            (Some(first), Some(now)) => now.saturating_sub(first.frame.running_ns.unwrap_or(now)),
            _ => 0,
        };
        if !self.waiting.is_empty() && (waited >= wait_ns || self.waiting.len() >= MAX_WAITING) {
            keyed.extend(self.local_keys());
        }
        keyed
    }

    /// Every waiting frame, now: placed on the camera's clock if it can be, else with a local
    /// key (end of stream, a new stream, a flush, a stop).
    pub fn flush(&mut self) -> Vec<Keyed<T>> {
        let mut out = Vec::new();
        while !self.waiting.is_empty() {
            match self.clock.place(stamp(&self.waiting[0].frame)) {
                Some((seq, capture_ns, mark)) => {
                    let w = self.waiting.remove(0);
                    out.push(Keyed {
                        seq,
                        capture_ns,
                        basis: KeyBasis::Camera,
                        mark: Some(mark),
                        same_frame_ns: mark.period_ns / 2,
                        payload: w.payload,
                    });
                }
                None => break,
            }
        }
        out.extend(self.local_keys());
        out
    }

    /// Local keys for every waiting frame.
    fn local_keys(&mut self) -> Vec<Keyed<T>> {
        let waiting = std::mem::take(&mut self.waiting);
        self.local_keyed += waiting.len() as u64;
        self.on_camera_clock = false;
        waiting
            .into_iter()
            .map(|w| {
                let micros = w.frame.estimate_ns.max(0) / 1000;
                let mut seq = LOCAL_KEY_BASE + micros;
                if let Some(last) = self.last_local
                    && seq <= last
                {
                    seq = last + 1;
                }
                self.last_local = Some(seq);
                Keyed {
                    seq,
                    capture_ns: w.frame.estimate_ns,
                    basis: KeyBasis::Local,
                    mark: None,
                    same_frame_ns: 500,
                    payload: w.payload,
                }
            })
            .collect()
    }

    /// Position and capture-time keys.
    fn numbered(&mut self, frame: Frame, payload: T) -> Keyed<T> {
        let (num, den) = frame.framerate.unwrap_or((0, 1));
        self.sequencer.set_framerate(num, den);
        let seq = self.sequencer.next(frame.pts_ns, frame.estimate_ns);
        let basis = match self.policy {
            Policy::Position => KeyBasis::Position,
            _ => KeyBasis::CaptureTime,
        };
        let same_frame_ns = match frame.framerate {
            Some((n, d)) if n > 0 && d > 0 => (d as i64 * 1_000_000_000 / n as i64) / 2,
            // Keys in microseconds.
            _ => 500,
        };
        Keyed {
            seq,
            capture_ns: frame.estimate_ns,
            basis,
            mark: None,
            same_frame_ns,
            payload,
        }
    }

    /// A new segment or a flush: position keys forget the last number (the position jumped).
    pub fn reset_position(&mut self) {
        self.sequencer.reset();
    }

    /// Frames waiting for the camera's clock.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Frames given local keys so far.
    pub fn local_keyed(&self) -> u64 {
        self.local_keyed
    }

    pub fn clock_state(&self) -> ClockState {
        match self.policy {
            Policy::Camera { .. } if !self.waiting.is_empty() => ClockState::Waiting,
            Policy::Camera { .. } if self.on_camera_clock => ClockState::Known,
            Policy::Camera { .. } if self.local_keyed > 0 => ClockState::Local,
            Policy::Camera { .. } => ClockState::Waiting,
            _ => ClockState::Off,
        }
    }
}

fn stamp(f: &Frame) -> Stamp {
    Stamp {
        camera_ns: f.camera_ns,
        rtp: f.rtp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 33_333_333;
    const T0: i64 = 1_796_000_000_000_000_000;

    fn rtp(i: i64) -> Rtp {
        Rtp {
            ssrc: 5,
            ticks: (1i64 << 32) + i * 3000,
            clock_rate: 90_000,
        }
    }

    /// Camera frame `i`, arriving at running time `rt`; with its capture time when `ntp`.
    fn frame(i: i64, rt: u64, ntp: bool) -> Frame {
        Frame {
            pts_ns: Some(rt),
            running_ns: Some(rt),
            camera_ns: ntp.then(|| T0 + i * P as i64),
            rtp: Some(rtp(i)),
            estimate_ns: T0 + 777_000 + rt as i64,
            framerate: None,
        }
    }

    fn camera(wait_s: u64) -> StreamKeys<i64> {
        StreamKeys::new(Policy::Camera {
            wait_ns: wait_s * 1_000_000_000,
        })
    }

    #[test]
    fn frames_wait_for_the_clock_and_one_capture_time_places_them_all() {
        let mut k = camera(10);
        for i in 0..5 {
            // A burst: 0.2 ms apart.
            assert!(k.offer(frame(i, i as u64 * 200_000, false), i).is_empty());
        }
        assert_eq!((k.waiting(), k.clock_state()), (5, ClockState::Waiting));
        let out = k.offer(frame(5, 1_000_000, true), 5);
        let keys: Vec<(i64, i64)> = out.iter().map(|k| (k.payload, k.seq)).collect();
        assert_eq!(keys.len(), 6);
        assert!(keys.windows(2).all(|w| w[1].1 == w[0].1 + 1), "{keys:?}");
        for k in &out {
            assert_eq!(k.basis, KeyBasis::Camera);
            assert!((k.capture_ns - (T0 + k.payload * P as i64)).abs() <= 1);
        }
        assert_eq!(k.clock_state(), ClockState::Known);
    }

    #[test]
    fn frames_that_wait_too_long_or_are_flushed_get_local_keys_never_dropped() {
        let mut k = camera(1);
        let rt = |i: i64| i as u64 * 34_000_000;
        for i in 0..10 {
            assert!(k.offer(frame(i, rt(i), false), i).is_empty());
        }
        // 1 s after the first: all 31 get local keys, in order, distinct, above the base.
        let mut out = Vec::new();
        for i in 10..31 {
            out.extend(k.offer(frame(i, rt(i), false), i));
        }
        assert_eq!(out.len(), 31);
        assert!(
            out.iter()
                .all(|k| k.basis == KeyBasis::Local && k.seq >= LOCAL_KEY_BASE)
        );
        assert!(out.windows(2).all(|w| w[1].seq > w[0].seq));
        assert_eq!(k.local_keyed(), 31);
        assert_eq!(k.clock_state(), ClockState::Local);
        // A flush keys whatever waits, the same way.
        assert!(k.offer(frame(31, rt(31), false), 31).is_empty());
        let flushed = k.flush();
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].basis, KeyBasis::Local);
        // Frames of a burst on one microsecond still get distinct keys.
        let mut b = camera(10);
        for i in 0..3 {
            let mut f = frame(i, 5, false);
            f.estimate_ns = T0;
            assert!(b.offer(f, i).is_empty());
        }
        let keys: Vec<i64> = b.flush().iter().map(|k| k.seq).collect();
        assert_eq!(keys[1], keys[0] + 1);
        assert_eq!(keys[2], keys[0] + 2);
    }

    #[test]
    fn a_reader_continues_the_keys_the_log_holds() {
        let mut a = camera(10);
        let mut last = None;
        for i in 0..10 {
            for k in a.offer(frame(i, i as u64 * P, true), i) {
                last = Some(Stored {
                    seq: k.seq,
                    capture_ns: k.capture_ns,
                    basis: Some(k.basis),
                    mark: k.mark,
                });
            }
        }
        let last = last.unwrap();
        let mut b = camera(10);
        b.continue_from(Some(last), None, None);
        // No capture time: placed by RTP from the stored frame, at once.
        let out = b.offer(frame(12, 0, false), 12);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].seq, last.seq + 3);
    }

    #[test]
    fn files_and_live_sources_without_the_camera_clock_are_numbered() {
        let mut f: StreamKeys<()> = StreamKeys::new(Policy::Position);
        let fr = |pts: u64| Frame {
            pts_ns: Some(pts),
            framerate: Some((25, 1)),
            estimate_ns: T0,
            ..Frame::default()
        };
        let k = f.offer(fr(80_000_000), ()).remove(0);
        assert_eq!(
            (k.seq, k.basis, k.same_frame_ns),
            (2, KeyBasis::Position, 20_000_000)
        );
        let mut live: StreamKeys<()> = StreamKeys::new(Policy::CaptureTime);
        live.continue_from(
            None,
            None,
            Some(Stored {
                seq: (T0 as i128 * 25 / 1_000_000_000) as i64 + 5,
                capture_ns: 0,
                basis: None,
                mark: None,
            }),
        );
        let k = live.offer(fr(0), ()).remove(0);
        assert_eq!(k.basis, KeyBasis::CaptureTime);
        assert_eq!(k.seq, (T0 as i128 * 25 / 1_000_000_000) as i64 + 6);
        assert_eq!(live.clock_state(), ClockState::Off);
    }
}
