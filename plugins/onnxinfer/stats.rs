// SPDX-License-Identifier: MPL-2.0
//! `onnxinfer` statistics: overall counters and, per model version, latency histograms and
//! detections per frame, so a canary can be compared with the primary model.

use std::collections::BTreeMap;

use super::cursor::Gated;
use super::engine::Timings;
use crate::util::histogram::{Histogram, ms};

#[derive(Debug, Default, Clone)]
pub struct ModelStats {
    pub role: &'static str,
    pub frames: u64,
    pub detections: u64,
    pub preprocess: Histogram,
    pub inference: Histogram,
    pub postprocess: Histogram,
}

/// What the motion gate decided, frame by frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct GateCounts {
    pub motion: u64,
    pub shaking: u64,
    pub tracks_moving: u64,
    pub still_interval: u64,
    pub no_motion_meta: u64,
    pub skipped: u64,
}

impl GateCounts {
    pub fn count(&mut self, why: Gated) {
        let c = match why {
            Gated::Motion => &mut self.motion,
            Gated::Shaking => &mut self.shaking,
            Gated::TracksMoving => &mut self.tracks_moving,
            Gated::StillInterval => &mut self.still_interval,
            Gated::NoMotionMeta => &mut self.no_motion_meta,
            Gated::Skipped => &mut self.skipped,
        };
        *c += 1;
    }

    pub fn merge(&mut self, o: &GateCounts) {
        self.motion += o.motion;
        self.shaking += o.shaking;
        self.tracks_moving += o.tracks_moving;
        self.still_interval += o.still_interval;
        self.no_motion_meta += o.no_motion_meta;
        self.skipped += o.skipped;
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub frames: u64,
    pub inferred: u64,
    pub skipped: u64,
    pub swaps: u64,
    pub swaps_refused: u64,
    /// framesync batches, and model runs made for them.
    pub batches: u64,
    pub batch_runs: u64,
    pub primary: Option<String>,
    pub canary: Option<String>,
    /// Why the canary was switched off (it failed to load, run or decode).
    pub canary_disabled: Option<String>,
    /// Candidates dropped for non-finite or out-of-range values.
    pub invalid_outputs: u64,
    /// The motion gate: frames inferred for each reason, and held back.
    pub gate: GateCounts,
    pub models: BTreeMap<String, ModelStats>,
}

impl Stats {
    /// Starts counting again (a new run).
    pub fn reset(&mut self) {
        *self = Stats::default();
    }

    pub fn record(&mut self, model: &str, role: &'static str, t: &Timings, detections: usize) {
        self.inferred += 1;
        let m = self.models.entry(model.to_string()).or_default();
        m.role = role;
        m.frames += 1;
        m.detections += detections as u64;
        m.preprocess.record(t.preprocess);
        m.inference.record(t.inference);
        m.postprocess.record(t.postprocess);
    }

    fn merged(&self, pick: impl Fn(&ModelStats) -> &Histogram) -> Histogram {
        let mut h = Histogram::new();
        for m in self.models.values() {
            h.merge(pick(m));
        }
        h
    }

    pub fn structure(&self) -> gst::Structure {
        let pre = self.merged(|m| &m.preprocess);
        let inf = self.merged(|m| &m.inference);
        let post = self.merged(|m| &m.postprocess);
        let models: Vec<gst::Structure> = self
            .models
            .iter()
            .map(|(id, m)| {
                gst::Structure::builder("model")
                    .field("model", id.as_str())
                    .field("role", m.role)
                    .field("frames", m.frames)
                    .field("detections", m.detections)
                    .field(
                        "detections-per-frame",
                        if m.frames == 0 {
                            0.0
                        } else {
                            m.detections as f64 / m.frames as f64
                        },
                    )
                    .field("preprocess-mean-ms", ms(m.preprocess.mean()))
                    .field("inference-mean-ms", ms(m.inference.mean()))
                    .field("inference-p99-ms", ms(m.inference.percentile(0.99)))
                    .field("postprocess-mean-ms", ms(m.postprocess.mean()))
                    .build()
            })
            .collect();
        gst::Structure::builder("onnxinfer-stats")
            .field("frames", self.frames)
            .field("inferred", self.inferred)
            .field("skipped", self.skipped)
            .field("model", self.primary.clone().unwrap_or_default())
            .field("canary-model", self.canary.clone().unwrap_or_default())
            .field(
                "canary-disabled",
                self.canary_disabled.clone().unwrap_or_default(),
            )
            .field("invalid-outputs", self.invalid_outputs)
            .field("gate-motion", self.gate.motion)
            .field("gate-shaking", self.gate.shaking)
            .field("gate-tracks-moving", self.gate.tracks_moving)
            .field("gate-still-interval", self.gate.still_interval)
            .field("gate-no-motion-meta", self.gate.no_motion_meta)
            .field("gate-skipped", self.gate.skipped)
            .field("swaps", self.swaps)
            .field("swaps-refused", self.swaps_refused)
            .field("batches", self.batches)
            .field("batch-runs", self.batch_runs)
            .field("preprocess-mean-ms", ms(pre.mean()))
            .field("preprocess-p99-ms", ms(pre.percentile(0.99)))
            .field("inference-mean-ms", ms(inf.mean()))
            .field("inference-p99-ms", ms(inf.percentile(0.99)))
            .field("postprocess-mean-ms", ms(post.mean()))
            .field("postprocess-p99-ms", ms(post.percentile(0.99)))
            .field("models", gst::Array::new(models))
            .build()
    }
}
