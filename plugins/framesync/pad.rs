// SPDX-License-Identifier: MPL-2.0
//! `framesync`'s sink pad: the `stream-id` property, and what the element knows of the stream.
//!
//! `state` is locked by upstream's streaming thread (arrival times) and by the aggregate
//! thread; the element's `state` lock is always taken before it, never after.

use std::collections::VecDeque;
use std::sync::Mutex;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::align::{OffsetEstimator, Stream};

/// A frame taken from the pad's queue, with what the batch entry needs to say about it.
#[derive(Debug, Clone)]
pub struct Held {
    pub buffer: gst::Buffer,
    pub caps: Option<gst::Caps>,
    pub segment: gst::Segment,
    pub pts: Option<gst::ClockTime>,
    pub running_time: Option<gst::ClockTime>,
    pub capture_ns: i64,
    /// The time it is matched on (running or capture time, after any correction), ns.
    pub time: i64,
}

/// How many arrival times are remembered for frames still queued.
const MAX_ARRIVALS: usize = 512;

#[derive(Debug, Default)]
pub struct PadState {
    /// From STREAM_START.
    pub stream_id: Option<String>,
    pub caps: Option<gst::Caps>,
    /// The stream's own frame period from its caps (ns), if fixed.
    pub period: Option<u64>,
    /// (PTS, pipeline running time at arrival) of frames queued on the pad.
    pub arrivals: VecDeque<(Option<gst::ClockTime>, i64)>,
    pub stream: Stream<Held>,
    pub offset: OffsetEstimator,
    /// ((buffer address, PTS), time) of the queued head last looked at.
    pub head_time: Option<((usize, Option<gst::ClockTime>), i64)>,
    /// The end of the stream went out in a batch (eos set for the first time).
    pub ended_sent: bool,
    /// The latest estimate, kept over flushes and stops for `stats`.
    pub last_offset: Option<i64>,
}

#[derive(Default)]
pub struct FrameSyncPad {
    stream_id: Mutex<Option<String>>,
    pub(super) state: Mutex<PadState>,
}

#[glib::object_subclass]
impl ObjectSubclass for FrameSyncPad {
    const NAME: &'static str = "GstFrameSyncPad";
    type Type = super::FrameSyncPad;
    type ParentType = gst_base::AggregatorPad;
}

impl FrameSyncPad {
    /// The `N` of `sink_N`.
    pub fn index(&self) -> u32 {
        let name = self.obj().name();
        name.rsplit('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The stream id entries carry: the property, else STREAM_START's, else the pad name.
    pub fn stream_id(&self, state: &PadState) -> String {
        self.stream_id
            .lock()
            .unwrap()
            .clone()
            .or_else(|| state.stream_id.clone())
            .unwrap_or_else(|| self.obj().name().to_string())
    }

    /// Running time at arrival of the queued frame with `pts` (`None` when not recorded).
    pub fn take_arrival(state: &mut PadState, pts: Option<gst::ClockTime>) -> Option<i64> {
        while let Some((p, a)) = state.arrivals.pop_front() {
            if p == pts {
                return Some(a);
            }
        }
        None
    }
}

impl ObjectImpl for FrameSyncPad {
    /// Arrival times for the clock-offset estimate, noted on upstream's streaming thread as
    /// each buffer comes in (before any GstAggregator lock is taken).
    fn constructed(&self) {
        self.parent_constructed();
        // The LATENCY query GstAggregator sends upstream through every sink pad fails as a whole
        // when one upstream cannot answer yet (a camera that never sent, whose source has no
        // caps): the aggregator then takes itself for not live, waits for a frame on every pad
        // instead of its timeout, and asks again only when a pad gets its first buffer, which
        // the silent camera never gives (framesync hung about 1 run in 4). Such an upstream
        // answers "not live, no latency" here instead: the others' answer stands; this pad's
        // own counts once its camera sends (a pad's first buffer asks again).
        self.obj()
            .add_probe(gst::PadProbeType::QUERY_UPSTREAM, |pad, info| {
                let Some(gst::PadProbeData::Query(q)) = &mut info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                let gst::QueryViewMut::Latency(l) = q.view_mut() else {
                    return gst::PadProbeReturn::Ok;
                };
                let Some(peer) = pad.peer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut up = gst::query::Latency::new();
                if peer.query(&mut up) {
                    let (live, min, max) = up.result();
                    l.set(live, min, max);
                } else {
                    gst::debug!(
                        super::imp::CAT,
                        obj = pad,
                        "upstream cannot say its latency yet: taken as not live until it sends"
                    );
                    l.set(false, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                }
                gst::PadProbeReturn::Handled
            });
        let weak = self.obj().downgrade();
        self.obj()
            .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                if let (Some(this), Some(gst::PadProbeData::Buffer(buffer))) =
                    (weak.upgrade(), &info.data)
                    && let Some(element) = pad.parent_element()
                    && let (Some(clock), Some(base)) = (element.clock(), element.base_time())
                {
                    let now = clock.time().nseconds() as i64 - base.nseconds() as i64;
                    let mut st = this.imp().state.lock().unwrap();
                    if st.arrivals.len() >= MAX_ARRIVALS {
                        st.arrivals.pop_front();
                    }
                    st.arrivals.push_back((buffer.pts(), now));
                }
                gst::PadProbeReturn::Ok
            });
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: std::sync::LazyLock<Vec<glib::ParamSpec>> =
            std::sync::LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("stream-id")
                        .nick("Stream id")
                        .blurb(
                            "Stream id that batch entries of this pad carry (and raftsink stores), \
                             instead of the stream-id of upstream's STREAM_START event. \
                             Default: none (use upstream's)",
                        )
                        .mutable_playing()
                        .build(),
                ]
            });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "stream-id" {
            *self.stream_id.lock().unwrap() = value
                .get::<Option<String>>()
                .unwrap()
                .filter(|s| !s.is_empty());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "stream-id" => self.stream_id.lock().unwrap().to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for FrameSyncPad {}
impl PadImpl for FrameSyncPad {}

impl AggregatorPadImpl for FrameSyncPad {
    fn flush(&self, aggregator: &gst_base::Aggregator) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut st = self.state.lock().unwrap();
        st.stream.clear();
        st.arrivals.clear();
        st.offset.reset();
        st.head_time = None;
        st.ended_sent = false;
        drop(st);
        self.parent_flush(aggregator)
    }
}
