// SPDX-License-Identifier: MPL-2.0
//! The queue's state and policy, apart from pads and threads: the settings in force, the
//! queued items, the drop decisions (watermarks, expiry, GOP plan), the level the queue reports
//! and its counters. `imp.rs` holds it in one mutex and does the GStreamer side.

use super::Mode;
use super::control::{Controller, GopBudget, GopPlan};
use super::store::{Item, Store};

pub(super) const MS: u64 = 1_000_000;
pub(super) const DEFAULT_LOW_WATERMARK: u64 = 200 * MS;
pub(super) const DEFAULT_HIGH_WATERMARK: u64 = 800 * MS;
pub(super) const DEFAULT_MAX_LATENCY: u64 = 1500 * MS;
pub(super) const DEFAULT_TARGET_LATENCY: u64 = 400 * MS;
pub(super) const DEFAULT_MAX_SIZE_BUFFERS: u32 = 200;
pub(super) const DEFAULT_EWMA_ALPHA: f64 = 0.2;
pub(super) const DEFAULT_MODE: Mode = Mode::Adaptive;
pub(super) const DEFAULT_LIVE_ONLY: bool = true;
/// How long (running time) a level class other than `high` must hold before it is reported.
pub(super) const LEVEL_DWELL: u64 = 250 * MS;

/// A time limit property: `None` for "no limit" (0, or -1 = GST_CLOCK_TIME_NONE as
/// gst-launch-1.0 writes it).
pub(super) fn limit(ns: u64) -> Option<u64> {
    (ns != 0 && ns != u64::MAX).then_some(ns)
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) low_watermark: u64,
    pub(super) high_watermark: u64,
    pub(super) max_latency: u64,
    pub(super) target_latency: u64,
    pub(super) max_size_buffers: u32,
    pub(super) ewma_alpha: f64,
    pub(super) mode: Mode,
    pub(super) live_only: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            low_watermark: DEFAULT_LOW_WATERMARK,
            high_watermark: DEFAULT_HIGH_WATERMARK,
            max_latency: DEFAULT_MAX_LATENCY,
            target_latency: DEFAULT_TARGET_LATENCY,
            max_size_buffers: DEFAULT_MAX_SIZE_BUFFERS,
            ewma_alpha: DEFAULT_EWMA_ALPHA,
            mode: DEFAULT_MODE,
            live_only: DEFAULT_LIVE_ONLY,
        }
    }
}

/// What flows, from the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Media {
    /// `video/x-raw` (or a framesync batch of raw frames): any frame may go.
    RawVideo,
    /// Other `video/*` and `image/*`: only whole GOP tails (by `DELTA_UNIT`) may go.
    Encoded,
    /// Anything else (or no caps yet): nothing is dropped.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LevelClass {
    Low,
    Normal,
    High,
}

impl LevelClass {
    pub(super) fn name(self) -> &'static str {
        match self {
            LevelClass::Low => "low",
            LevelClass::Normal => "normal",
            LevelClass::High => "high",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub(super) input: u64,
    pub(super) output: u64,
    pub(super) dropped_watermark: u64,
    pub(super) dropped_expired: u64,
    pub(super) dropped_adaptive: u64,
    pub(super) dropped_gop_tail: u64,
}

impl Stats {
    pub(super) fn dropped(&self) -> u64 {
        self.dropped_watermark
            + self.dropped_expired
            + self.dropped_adaptive
            + self.dropped_gop_tail
    }
}

pub(super) struct State {
    pub(super) settings: Settings,
    pub(super) store: Store,
    /// Set while flushing or while the source pad is inactive.
    pub(super) flushing: bool,
    /// EOS is queued: no more data until a flush.
    pub(super) eos: bool,
    /// The last flow return downstream.
    pub(super) srcresult: Result<gst::FlowSuccess, gst::FlowError>,
    pub(super) waiting_add: bool,
    pub(super) waiting_del: bool,
    pub(super) segment: gst::FormattedSegment<gst::ClockTime>,
    pub(super) media: Media,
    pub(super) upstream_live: Option<bool>,
    /// Delta units are dropped until the next keyframe (a GOP tail was cut).
    pub(super) skip_until_key: bool,
    pub(super) control: Controller,
    /// Adaptive mode, encoded video: the pass ratio spent per GOP.
    pub(super) gop: GopBudget,
    pub(super) level_class: LevelClass,
    /// A different class seen since this running time (ns), not reported yet.
    pub(super) level_candidate: Option<(LevelClass, u64)>,
    pub(super) next_query_id: u64,
    pub(super) query_in_flight: Option<u64>,
    pub(super) handled_query: Option<(u64, bool)>,
    pub(super) stats: Stats,
}

impl State {
    pub(super) fn new(settings: Settings) -> Self {
        State {
            settings,
            store: Store::with_capacity(settings.max_size_buffers.max(16) as usize),
            flushing: true,
            eos: false,
            srcresult: Err(gst::FlowError::Flushing),
            waiting_add: false,
            waiting_del: false,
            segment: gst::FormattedSegment::new(),
            media: Media::Other,
            upstream_live: None,
            skip_until_key: false,
            control: Controller::new(settings.ewma_alpha),
            gop: GopBudget::default(),
            level_class: LevelClass::Low,
            level_candidate: None,
            next_query_id: 0,
            query_in_flight: None,
            handled_query: None,
            stats: Stats::default(),
        }
    }

    /// Whether this stream may lose buffers.
    pub(super) fn may_drop(&self) -> bool {
        self.media != Media::Other && (!self.settings.live_only || self.upstream_live == Some(true))
    }

    /// Upstream waits while this holds. A stream that may lose buffers is kept under
    /// max-latency by dropping instead, so only the buffer count blocks it.
    pub(super) fn is_full(&self) -> bool {
        let s = &self.settings;
        (s.max_size_buffers > 0 && self.store.buffers() >= s.max_size_buffers as usize)
            || (!self.may_drop() && limit(s.max_latency).is_some_and(|m| self.store.level() >= m))
    }

    /// Drops head buffers too old to be worth pushing (see [`Self::max_output_age`]). `now` is
    /// the pipeline's running time, used when upstream is live (its buffers' running times
    /// are capture times); otherwise ages count from the newest buffer.
    pub(super) fn expire(&mut self, now: Option<gst::ClockTime>) -> usize {
        if !self.may_drop() || limit(self.settings.max_latency).is_none() {
            return 0;
        }
        let now = now
            .filter(|_| self.upstream_live == Some(true))
            .map(gst::ClockTime::nseconds);
        let max_age = self.max_output_age();
        let encoded = self.media == Media::Encoded;
        let mut total = 0;
        loop {
            let (n, tail) = self.store.expire_head(now, max_age, encoded);
            self.skip_until_key |= tail;
            total += n;
            if n == 0 {
                break;
            }
        }
        self.stats.dropped_expired += total as u64;
        total
    }

    /// What the next GOP may pass (encoded video, adaptive mode).
    pub(super) fn gop_plan(&self) -> GopPlan {
        let c = &self.control;
        let max_burst = match (
            c.interval.get(),
            c.processing.get(),
            limit(self.settings.max_latency),
        ) {
            // Frame k of a burst leaves k × (processing − interval) after it came; a fifth of
            // max-latency is kept for jitter.
            (Some(i), Some(p), Some(m)) if p > i => ((m as f64 / 1e9) * 0.8 - p).max(0.0) / (p - i),
            _ => f64::INFINITY,
        };
        GopPlan {
            share: c.sustainable_share(),
            leftover: self.store.buffers() as f64,
            max_burst,
        }
    }

    /// Oldest a buffer may be when it leaves: max-latency less the time downstream needs.
    pub(super) fn max_output_age(&self) -> u64 {
        let processing = self.control.processing.get().unwrap_or(0.0).max(0.0);
        self.settings
            .max_latency
            .saturating_sub((processing * 1e9) as u64)
    }

    /// Re-classifies the level; returns the message to post when the class changed. Going
    /// high is reported at once; other changes once they held for [`LEVEL_DWELL`] of running
    /// time, so a level hovering at a watermark does not flood the bus.
    pub(super) fn level_change(&mut self, now: Option<u64>) -> Option<gst::Structure> {
        let level = self.store.level();
        let class = if level < self.settings.low_watermark {
            LevelClass::Low
        } else if level > self.settings.high_watermark {
            LevelClass::High
        } else {
            LevelClass::Normal
        };
        if class == self.level_class {
            self.level_candidate = None;
            return None;
        }
        if class != LevelClass::High {
            let now = now?;
            match self.level_candidate {
                Some((c, since)) if c == class => {
                    if now.saturating_sub(since) < LEVEL_DWELL {
                        return None;
                    }
                }
                _ => {
                    self.level_candidate = Some((class, now));
                    return None;
                }
            }
        }
        self.level_candidate = None;
        self.level_class = class;
        Some(
            gst::Structure::builder("adaptivequeue-level")
                .field("level", class.name())
                .field("current-latency", level)
                .field("buffers", self.store.buffers() as u32)
                .field("dropped", self.stats.dropped())
                .field("dropped-watermark", self.stats.dropped_watermark)
                .field("dropped-expired", self.stats.dropped_expired)
                .field("dropped-adaptive", self.stats.dropped_adaptive)
                .field("dropped-gop-tail", self.stats.dropped_gop_tail)
                .field("pass-ratio", self.control.ratio())
                .build(),
        )
    }

    /// Forgets everything queued (flush or deactivation) and returns the sticky events among
    /// it other than SEGMENT and EOS: after a flush they still apply, so (like queue) the
    /// caller stores them on the source pad. Pending queries are answered `false` by their
    /// waiting threads, which see `flushing`.
    pub(super) fn clear(&mut self) -> Vec<gst::Event> {
        self.skip_until_key = false;
        self.store
            .clear()
            .into_iter()
            .filter_map(|item| match item {
                Item::Event(e)
                    if e.is_sticky()
                        && !matches!(e.type_(), gst::EventType::Segment | gst::EventType::Eos) =>
                {
                    Some(e)
                }
                _ => None,
            })
            .collect()
    }
}
