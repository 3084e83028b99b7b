// SPDX-License-Identifier: MPL-2.0
//! The per-stream rules of `onnxinfer`, with one cursor per stream (a single stream is a batch
//! of one): which frames are inferred (`interval`), which model infers them (the canary's share,
//! by stream or by frame), the motion gate (`motion-gate`: which of those frames are worth
//! inferring), and the last result, carried to the frames in between and to repeated batch
//! entries.

use std::collections::HashMap;

use super::CanaryBy;
use super::engine::{FrameBox, FrameResult};
use crate::formats::motion::FrameMotion;

/// A result kept for the frames that follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Carried {
    /// `name@version` of the model that produced it.
    pub model: String,
    pub result: FrameResult,
}

/// Boxes of two results are the same object when they have one class and overlap this much
/// (IoU): a detector's boxes on a still object jitter by a few pixels, far less than this.
pub const STILL_IOU: f64 = 0.7;

/// The motion gate's settings (`motion-gate=true`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// A frame is inferred at least this often (ns of stream time), motion or not.
    pub still_interval: u64,
}

/// What the gate knows of a frame: its timestamp and what `motiondetect` saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Seen {
    pub pts: Option<u64>,
    pub motion: Option<FrameMotion>,
}

/// Why the gate let a frame be inferred, or that it held it back (counted in `stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gated {
    /// `motiondetect` saw motion.
    Motion,
    /// ... so much that the camera is shaking.
    Shaking,
    /// The last two results differ: the objects are still moving.
    TracksMoving,
    /// `still-interval` passed since the last inferred frame (or the time is unknown).
    StillInterval,
    /// No `motiondetect` looked at the frame: inferred, as without the gate.
    NoMotionMeta,
    /// Held back: nothing moves.
    Skipped,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// Not inferred (`interval`): it carries the stream's last result, marked `fresh=false`
    /// (with pipelining, that result may still be on its way: it is looked up when the frame
    /// leaves, [`Cursors::last`]).
    Carry,
    /// Inferred, by the canary or the primary model.
    Infer { canary: bool },
}

/// How the canary takes its share (`None` in [`Rules`]: no canary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryShare {
    pub fraction: f64,
    pub by: CanaryBy,
}

/// The settings the rules follow, read for each frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub interval: u32,
    pub canary: Option<CanaryShare>,
    /// Results can be carried (whole-frame results; not `roi-only` classifications, whose
    /// regions change from frame to frame: there every frame is inferred).
    pub carries: bool,
    /// The motion gate (`None`: off).
    pub gate: Option<Gate>,
}

#[derive(Debug, Default)]
struct Cursor {
    seen: u64,
    /// A frame of this stream was picked for inference: a result exists, or will by the time
    /// the frames after it leave.
    inferred: bool,
    last: Option<Carried>,
    /// The timestamp of the last frame inferred.
    inferred_pts: Option<u64>,
    /// The last two results differ (the objects moved between them).
    changing: bool,
}

/// The cursors of every stream seen since the last reset.
#[derive(Debug, Default)]
pub struct Cursors {
    streams: HashMap<String, Cursor>,
    /// `canary-by=frame`: share accumulated over all streams' frames.
    credit: f64,
}

/// The stream's place in [0, 1): FNV-1a 64 of its id, modulo 10⁶, over 10⁶ (documented, so a
/// user can tell in advance which cameras a fraction sends to the canary).
pub fn stream_fraction(stream_id: &str) -> f64 {
    let h = crate::util::hash::fnv1a(stream_id.as_bytes());
    (h % 1_000_000) as f64 / 1_000_000.0
}

impl Cursors {
    /// Forgets every stream (new batch caps, restart).
    pub fn reset(&mut self) {
        self.streams.clear();
        self.credit = 0.0;
    }

    /// A stream starts again (STREAM-START): counting restarts, no result is carried.
    pub fn restart(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    /// Forgets the results kept (the frame size changed: old boxes do not fit).
    pub fn forget_results(&mut self) {
        for c in self.streams.values_mut() {
            c.last = None;
            c.inferred = false;
        }
    }

    /// Decides for the next frame of `stream`, and what the gate said (`None`: not asked).
    pub fn pick(&mut self, stream: &str, rules: &Rules, seen: Seen) -> (Pick, Option<Gated>) {
        let cursor = self.streams.entry(stream.to_string()).or_default();
        let n = cursor.seen;
        cursor.seen += 1;
        if rules.interval > 1 && !n.is_multiple_of(rules.interval as u64) && cursor.inferred {
            return (Pick::Carry, None);
        }
        let gated = match rules.gate {
            Some(gate) if rules.carries && cursor.inferred => {
                let why = gate_says(cursor, gate, seen);
                if why == Gated::Skipped {
                    return (Pick::Carry, Some(why));
                }
                Some(why)
            }
            _ => None,
        };
        cursor.inferred |= rules.carries;
        cursor.inferred_pts = seen.pts.or(cursor.inferred_pts);
        let canary = match rules.canary {
            Some(c) if c.fraction > 0.0 => match c.by {
                CanaryBy::Stream => stream_fraction(stream) < c.fraction,
                CanaryBy::Frame => {
                    self.credit += c.fraction;
                    if self.credit >= 1.0 {
                        self.credit -= 1.0;
                        true
                    } else {
                        false
                    }
                }
            },
            _ => false,
        };
        (Pick::Infer { canary }, gated)
    }

    /// Keeps `result` as the stream's last (and notes whether it differs from the one before).
    pub fn remember(&mut self, stream: &str, result: Carried) {
        let cursor = self.streams.entry(stream.to_string()).or_default();
        cursor.changing = cursor
            .last
            .as_ref()
            .is_none_or(|last| !same_objects(&last.result, &result.result));
        cursor.last = Some(result);
    }

    /// The stream's last result.
    pub fn last(&self, stream: &str) -> Option<&Carried> {
        self.streams.get(stream)?.last.as_ref()
    }
}

/// The gate on a frame of a stream that has a result.
fn gate_says(cursor: &Cursor, gate: Gate, seen: Seen) -> Gated {
    let Some(motion) = seen.motion else {
        return Gated::NoMotionMeta;
    };
    if motion.shaking {
        return Gated::Shaking;
    }
    if motion.moving {
        return Gated::Motion;
    }
    // No result to carry yet (the gate was switched on while playing, or the first result is
    // still on its way), or the last two differ: the objects are (still) moving.
    if cursor.changing || cursor.last.is_none() {
        return Gated::TracksMoving;
    }
    match (seen.pts, cursor.inferred_pts) {
        // A timestamp that went back (a seek, a loop) counts as time passed.
        (Some(now), Some(then)) if now >= then && now - then < gate.still_interval => {
            Gated::Skipped
        }
        _ => Gated::StillInterval,
    }
}

fn box_iou(a: &FrameBox, b: &FrameBox) -> f64 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let area = |r: &FrameBox| (r.x2 - r.x1).max(0.0) * (r.y2 - r.y1).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Whether two results show the same objects where they were: as many boxes, each with one of
/// the same class in the other overlapping it by [`STILL_IOU`] or more (classifications: the
/// same best class).
fn same_objects(a: &FrameResult, b: &FrameResult) -> bool {
    match (a, b) {
        (FrameResult::Boxes(a), FrameResult::Boxes(b)) => {
            a.len() == b.len()
                && a.iter().all(|x| {
                    b.iter()
                        .any(|y| y.class_id == x.class_id && box_iou(x, y) >= STILL_IOU)
                })
        }
        (FrameResult::Classes(a), FrameResult::Classes(b)) => {
            a.first().map(|c| c.0) == b.first().map(|c| c.0)
        }
        // Raw tensors name no objects: the gate goes by motion and still-interval alone.
        (FrameResult::Tensors(_), FrameResult::Tensors(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried(model: &str) -> Carried {
        Carried {
            model: model.into(),
            result: FrameResult::Boxes(Vec::new()),
        }
    }

    #[test]
    fn interval_carries_the_last_result_per_stream() {
        let mut c = Cursors::default();
        let rules = Rules {
            interval: 3,
            canary: None,
            carries: true,
            gate: None,
        };
        assert_eq!(
            c.pick("a", &rules, Seen::default()).0,
            Pick::Infer { canary: false }
        );
        // Carried although the result is not there yet (pipelining): it is when the frame
        // leaves.
        assert_eq!(c.pick("a", &rules, Seen::default()).0, Pick::Carry);
        c.remember("a", carried("m@1"));
        assert_eq!(c.pick("a", &rules, Seen::default()).0, Pick::Carry);
        assert_eq!(c.last("a"), Some(&carried("m@1")));
        assert_eq!(
            c.pick("a", &rules, Seen::default()).0,
            Pick::Infer { canary: false }
        );
        // Another stream counts on its own.
        assert_eq!(
            c.pick("b", &rules, Seen::default()).0,
            Pick::Infer { canary: false }
        );
        c.restart("a");
        assert_eq!(c.last("a"), None);
        // roi-only: nothing is carried, every frame is inferred.
        let roi = Rules {
            carries: false,
            ..rules
        };
        assert!(
            (0..4).all(|_| c.pick("r", &roi, Seen::default()).0 == Pick::Infer { canary: false })
        );
    }

    fn boxes(x: f64) -> Carried {
        Carried {
            model: "m@1".into(),
            result: FrameResult::Boxes(vec![FrameBox {
                x1: x,
                y1: 10.0,
                x2: x + 50.0,
                y2: 110.0,
                score: 0.9,
                class_id: 0,
            }]),
        }
    }

    #[test]
    fn the_gate_infers_on_motion_on_moving_results_and_every_still_interval() {
        let mut c = Cursors::default();
        let rules = Rules {
            interval: 1,
            canary: None,
            carries: true,
            gate: Some(Gate {
                still_interval: 1_000,
            }),
        };
        let still = |pts| Seen {
            pts: Some(pts),
            motion: Some(FrameMotion::default()),
        };
        let moving = |pts| Seen {
            pts: Some(pts),
            motion: Some(FrameMotion {
                moving: true,
                fraction: 0.01,
                regions: 1,
                shaking: false,
            }),
        };
        let infer = Pick::Infer { canary: false };
        // The first frame has no result to carry: inferred, the gate not asked.
        assert_eq!(c.pick("a", &rules, still(0)), (infer, None));
        c.remember("a", boxes(0.0));
        // A first result differs from none: inferred once more.
        assert_eq!(
            c.pick("a", &rules, still(100)),
            (infer, Some(Gated::TracksMoving))
        );
        c.remember("a", boxes(2.0));
        // Same objects (IoU > 0.7), no motion: held back until still-interval passed.
        assert_eq!(
            c.pick("a", &rules, still(200)),
            (Pick::Carry, Some(Gated::Skipped))
        );
        assert_eq!(
            c.pick("a", &rules, still(1_099)),
            (Pick::Carry, Some(Gated::Skipped))
        );
        assert_eq!(
            c.pick("a", &rules, still(1_100)),
            (infer, Some(Gated::StillInterval))
        );
        c.remember("a", boxes(1.0));
        assert_eq!(
            c.pick("a", &rules, moving(1_200)),
            (infer, Some(Gated::Motion))
        );
        // The object moved between the last two results: inferred without motion too.
        c.remember("a", boxes(40.0));
        assert_eq!(
            c.pick("a", &rules, still(1_300)),
            (infer, Some(Gated::TracksMoving))
        );
        c.remember("a", boxes(40.0));
        assert_eq!(
            c.pick("a", &rules, still(1_400)),
            (Pick::Carry, Some(Gated::Skipped))
        );
        // A shaking camera, a frame no motiondetect saw, a timestamp that went back.
        let shaking = Seen {
            pts: Some(1_500),
            motion: Some(FrameMotion {
                moving: true,
                fraction: 0.9,
                regions: 20,
                shaking: true,
            }),
        };
        assert_eq!(c.pick("a", &rules, shaking), (infer, Some(Gated::Shaking)));
        let unseen = Seen {
            pts: Some(1_600),
            motion: None,
        };
        assert_eq!(
            c.pick("a", &rules, unseen),
            (infer, Some(Gated::NoMotionMeta))
        );
        assert_eq!(
            c.pick("a", &rules, still(10)),
            (infer, Some(Gated::StillInterval))
        );
        // Switched on while playing: frames were inferred but, the gate being off, no result
        // was kept to carry. The gate infers until there is one.
        let off = Rules {
            gate: None,
            ..rules
        };
        assert_eq!(c.pick("c", &off, still(0)), (infer, None));
        assert_eq!(
            c.pick("c", &rules, still(10)),
            (infer, Some(Gated::TracksMoving))
        );
        // interval still applies first.
        let both = Rules {
            interval: 2,
            ..rules
        };
        assert_eq!(c.pick("b", &both, moving(0)), (infer, None));
        assert_eq!(c.pick("b", &both, moving(1)), (Pick::Carry, None));
    }

    #[test]
    fn canary_by_frame_spreads_its_share_and_by_stream_is_stable() {
        let mut c = Cursors::default();
        let by_frame = Rules {
            interval: 1,
            canary: Some(CanaryShare {
                fraction: 0.25,
                by: CanaryBy::Frame,
            }),
            carries: true,
            gate: None,
        };
        let picks: Vec<bool> = (0..8)
            .map(|_| c.pick("x", &by_frame, Seen::default()).0 == Pick::Infer { canary: true })
            .collect();
        assert_eq!(
            picks,
            [false, false, false, true, false, false, false, true]
        );
        let by_stream = Rules {
            interval: 1,
            canary: Some(CanaryShare {
                fraction: 0.5,
                by: CanaryBy::Stream,
            }),
            carries: true,
            gate: None,
        };
        for s in ["cam-1", "cam-2", "cam-3"] {
            let want = stream_fraction(s) < 0.5;
            for _ in 0..3 {
                assert_eq!(
                    c.pick(s, &by_stream, Seen::default()).0,
                    Pick::Infer { canary: want }
                );
            }
        }
    }
}
