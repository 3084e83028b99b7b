// SPDX-License-Identifier: MPL-2.0
//! The per-stream rules of `onnxinfer`, with one cursor per stream (a single stream is a batch
//! of one): which frames are inferred (`interval`), which model infers them (the canary's share,
//! by stream or by frame), and the last result, carried to the frames in between and to
//! repeated batch entries.

use std::collections::HashMap;

use super::CanaryBy;
use super::engine::FrameResult;

/// A result kept for the frames that follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Carried {
    /// `name@version` of the model that produced it.
    pub model: String,
    pub result: FrameResult,
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
}

#[derive(Debug, Default)]
struct Cursor {
    seen: u64,
    /// A frame of this stream was picked for inference: a result exists, or will by the time
    /// the frames after it leave.
    inferred: bool,
    last: Option<Carried>,
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

    /// Decides for the next frame of `stream`.
    pub fn pick(&mut self, stream: &str, rules: &Rules) -> Pick {
        let cursor = self.streams.entry(stream.to_string()).or_default();
        let n = cursor.seen;
        cursor.seen += 1;
        if rules.interval > 1 && !n.is_multiple_of(rules.interval as u64) && cursor.inferred {
            return Pick::Carry;
        }
        cursor.inferred |= rules.carries;
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
        Pick::Infer { canary }
    }

    /// Keeps `result` as the stream's last.
    pub fn remember(&mut self, stream: &str, result: Carried) {
        self.streams.entry(stream.to_string()).or_default().last = Some(result);
    }

    /// The stream's last result.
    pub fn last(&self, stream: &str) -> Option<&Carried> {
        self.streams.get(stream)?.last.as_ref()
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
        };
        assert_eq!(c.pick("a", &rules), Pick::Infer { canary: false });
        // Carried although the result is not there yet (pipelining): it is when the frame
        // leaves.
        assert_eq!(c.pick("a", &rules), Pick::Carry);
        c.remember("a", carried("m@1"));
        assert_eq!(c.pick("a", &rules), Pick::Carry);
        assert_eq!(c.last("a"), Some(&carried("m@1")));
        assert_eq!(c.pick("a", &rules), Pick::Infer { canary: false });
        // Another stream counts on its own.
        assert_eq!(c.pick("b", &rules), Pick::Infer { canary: false });
        c.restart("a");
        assert_eq!(c.last("a"), None);
        // roi-only: nothing is carried, every frame is inferred.
        let roi = Rules {
            carries: false,
            ..rules
        };
        assert!((0..4).all(|_| c.pick("r", &roi) == Pick::Infer { canary: false }));
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
        };
        let picks: Vec<bool> = (0..8)
            .map(|_| c.pick("x", &by_frame) == Pick::Infer { canary: true })
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
        };
        for s in ["cam-1", "cam-2", "cam-3"] {
            let want = stream_fraction(s) < 0.5;
            for _ in 0..3 {
                assert_eq!(c.pick(s, &by_stream), Pick::Infer { canary: want });
            }
        }
    }
}
