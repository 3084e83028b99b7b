// SPDX-License-Identifier: MPL-2.0
//! `framesync` implementation.
//!
//! Threads: each upstream streaming thread queues buffers on its pad (GstAggregator's queue)
//! and notes arrival times ([`FrameSyncPad`]'s `skip_buffer`); the aggregator's source pad
//! task runs `aggregate`, which picks one frame per pad for the next tick and pushes the
//! batch. The application thread may request and release pads and read `stats`.
//!
//! Deciding a tick: a pad is *decided* for tick `t` when the frame for `t` cannot change any
//! more: its queued head is after `t + tolerance`, or the head is in the window and the
//! stream's next frame (one frame period later, from its caps) would be farther from `t`, or
//! the pad is EOS. Decided heads stay queued (the pad stays "ready" for GstAggregator) until the
//! batch goes out. The batch goes out as soon as every pad is decided, or on GstAggregator's
//! timeout (live: the tick's running time plus `latency`), with what is there by then.
//!
//! Lock order: `settings`, then `state`, then a pad's `state`. No pad method
//! (peek/drop buffer) is called with a pad's `state` held, and nothing is pushed with any lock
//! held.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::AlignOn;
use super::align::Pick;
use super::pad::Held;
use super::settings::Settings;
use super::tick::{self, PadView};
use crate::formats::batch::{self, Entry, Status};
use crate::formats::capture_time::{self, CaptureClock};
use crate::util::cpu_time;

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "framesync",
        gst::DebugColorFlags::empty(),
        Some("videoai multi-stream batcher"),
    )
});

/// Formats offered first to upstream: those `onnxinfer` reads, the cheapest to convert to
/// first.
const PREFERRED_FORMATS: [&str; 13] = [
    "NV12", "I420", "RGB", "BGR", "RGBx", "BGRx", "RGBA", "BGRA", "xRGB", "xBGR", "ARGB", "ABGR",
    "GRAY8",
];

/// Created in `start`, dropped in `stop`.
#[derive(Default)]
struct State {
    /// Running time (ns) of the next batch; `None` until the first frame.
    tick: Option<i64>,
    sequence: u64,
    capture: CaptureClock,
    /// Pads released since the last batch: (index, stream id), reported once with `eos`.
    released: Vec<(u32, String)>,
    src_caps: Option<gst::Caps>,
    /// Tolerance last reported as our latency (ns).
    reported_tol: Option<i64>,
    batches: u64,
    skipped_ticks: u64,
    busy_total: Duration,
    busy_max: Duration,
}

#[derive(Default)]
pub struct FrameSync {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for FrameSync {
    const NAME: &'static str = "GstFrameSync";
    type Type = super::FrameSync;
    type ParentType = gst_base::Aggregator;
    // Pads as children: `framesync sink_0::stream-id=cam1` in gst-launch-1.0.
    type Interfaces = (gst::ChildProxy,);
}

impl FrameSync {
    /// Running time of `buffer` on `pad` before correction (ns), and what the entry keeps.
    fn hold(
        &self,
        state: &mut State,
        settings: &Settings,
        pad: &super::FrameSyncPad,
        buffer: gst::Buffer,
    ) -> (i64, Held) {
        let segment = pad.segment();
        let ts = buffer.pts().or(buffer.dts());
        let running_time = segment
            .downcast_ref::<gst::ClockTime>()
            .and_then(|s| s.to_running_time(ts));
        let element = self.obj();
        let element = element.upcast_ref::<gst::Element>();
        let capture_ns = state.capture.capture_ns(element, &buffer, running_time);
        let time = match settings.align_on {
            AlignOn::CaptureTime if capture_time::reference_timestamp(&buffer).is_some() => {
                state.capture.running_ns(element, capture_ns)
            }
            _ => match running_time {
                Some(rt) => rt.nseconds() as i64,
                // No timestamp: the clock's running time now, else the tick it arrives for.
                None => match (element.clock(), element.base_time()) {
                    (Some(c), Some(b)) => c.time().nseconds() as i64 - b.nseconds() as i64,
                    _ => state.tick.unwrap_or(0),
                },
            },
        };
        let caps = pad.imp().state.lock().unwrap().caps.clone();
        (
            time,
            Held {
                buffer,
                caps,
                segment,
                pts: ts,
                running_time,
                capture_ns,
                time,
            },
        )
    }

    /// The time of the pad's queued head `buffer` before correction (computed once per
    /// buffer: a head is looked at several times before it is taken).
    fn head_time(
        &self,
        state: &mut State,
        settings: &Settings,
        pad: &super::FrameSyncPad,
        buffer: gst::Buffer,
    ) -> i64 {
        let key = (buffer.as_ptr() as usize, buffer.pts());
        if let Some((k, t)) = pad.imp().state.lock().unwrap().head_time
            && k == key
        {
            return t;
        }
        let (t, _) = self.hold(state, settings, pad, buffer);
        pad.imp().state.lock().unwrap().head_time = Some((key, t));
        t
    }

    /// Takes the pad's head into its stream's pending frames.
    fn take_head(&self, state: &mut State, settings: &Settings, view: &PadView) -> bool {
        let Some(buffer) = view.pad.pop_buffer() else {
            return false;
        };
        if buffer.flags().contains(gst::BufferFlags::GAP) && buffer.size() == 0 {
            // A GAP event (GstAggregator makes it an empty buffer): no frame for this tick.
            return true;
        }
        let (time, held) = self.hold(state, settings, &view.pad, buffer);
        let mut st = view.pad.imp().state.lock().unwrap();
        if let Some(arrival) = super::pad::FrameSyncPad::take_arrival(&mut st, held.pts) {
            st.offset.add(arrival, time);
            st.last_offset = st.offset.offset();
        }
        st.stream.push(
            time + view.correction,
            Held {
                time: time + view.correction,
                ..held
            },
        );
        true
    }

    /// Moves frames that cannot be the pad's pick for `tick` into its pending frames; says
    /// whether the pad is decided for `tick`.
    fn pull(
        &self,
        state: &mut State,
        settings: &Settings,
        view: &PadView,
        tick: i64,
        tol: i64,
    ) -> bool {
        loop {
            let Some(head) = view.pad.peek_buffer() else {
                return view.pad.is_eos();
            };
            let t = self
                .head_time(state, settings, &view.pad, head)
                .saturating_add(view.correction);
            if t > tick.saturating_add(tol) {
                return true;
            }
            if t >= tick.saturating_sub(tol)
                && let Some(p) = view.period
                && t.saturating_add(p).saturating_sub(tick) >= t.saturating_sub(tick).abs()
            {
                // The stream's next frame cannot be closer: this one is the pick.
                return true;
            }
            self.take_head(state, settings, view);
        }
    }

    fn stats(&self) -> gst::Structure {
        let settings = *self.settings.lock().unwrap();
        let views = tick::pad_views(&self.obj(), &settings);
        let fps = tick::tick_rate(&settings, &views);
        let st = self.state.lock().unwrap();
        let reference = views
            .iter()
            .find_map(|v| v.pad.imp().state.lock().unwrap().last_offset);
        let streams = views.iter().map(|v| {
            let imp = v.pad.imp();
            let ps = imp.state.lock().unwrap();
            let c = ps.stream.counts;
            let skew = match (ps.last_offset, reference) {
                (Some(o), Some(r)) => o - r,
                _ => 0,
            };
            gst::Structure::builder("stream")
                .field("pad", v.pad.name().as_str())
                .field("stream-id", imp.stream_id(&ps))
                .field("fresh", c.fresh)
                .field("repeated", c.repeated)
                .field("missing", c.missing)
                .field("dropped", c.dropped)
                .field("skew-ns", skew)
                .build()
                .to_send_value()
        });
        let streams = gst::Array::new(streams);
        let mean_us = if st.batches > 0 {
            st.busy_total.as_secs_f64() * 1e6 / st.batches as f64
        } else {
            0.0
        };
        gst::Structure::builder("framesync-stats")
            .field("batches", st.batches)
            .field("skipped-ticks", st.skipped_ticks)
            .field("framerate", fps)
            .field("overhead-us-mean", mean_us)
            .field("overhead-us-max", st.busy_max.as_secs_f64() * 1e6)
            .field("streams", streams)
            .build()
    }
}

impl ObjectImpl for FrameSync {
    fn constructed(&self) {
        self.parent_constructed();
        self.update_source_flag();
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> =
            LazyLock::new(super::settings::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "framerate" => s.framerate = value.get().unwrap(),
            "tolerance" => s.tolerance = value.get().unwrap(),
            "align-on" => s.align_on = value.get().unwrap(),
            "drift-correction" => s.drift_correction = value.get().unwrap(),
            "timeout" => {
                drop(s);
                self.obj()
                    .set_property("latency", value.get::<u64>().unwrap());
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "stats" => return self.stats().to_value(),
            "timeout" => return self.obj().property::<u64>("latency").to_value(),
            _ => {}
        }
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "framerate" => s.framerate.to_value(),
            "tolerance" => s.tolerance.to_value(),
            "align-on" => s.align_on.to_value(),
            "drift-correction" => s.drift_correction.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for FrameSync {}

impl ElementImpl for FrameSync {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Frame synchroniser / batcher",
                "Video/Aggregator",
                "Aligns the frames of N streams (request pads sink_%u) by running time or \
                 capture time within a tolerance and pushes one batch per tick: a \
                 video/x-videoai-batch buffer whose VideoAIBatchMeta references one frame per \
                 stream (no pixel copy) with pad-index, stream-id, status \
                 (fresh/repeated/missing), eos, buffer, caps, segment, pts, running-time and \
                 capture-time. Late or stalled live streams are marked missing after the \
                 timeout and rejoin when they come back; pads may be requested and released \
                 while playing. onnxinfer infers a batch in one call, raftsink stores one event \
                 per entry, framesplit turns batches back into streams",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let src_caps = gst::Caps::builder(batch::CAPS_NAME)
                .field(
                    "framerate",
                    gst::FractionRange::new(
                        gst::Fraction::new(0, 1),
                        gst::Fraction::new(i32::MAX, 1),
                    ),
                )
                .build();
            let sink_caps = gst::Caps::builder("video/x-raw").any_features().build();
            vec![
                gst::PadTemplate::with_gtype(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &src_caps,
                    gst_base::AggregatorPad::static_type(),
                )
                .unwrap(),
                gst::PadTemplate::with_gtype(
                    "sink_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &sink_caps,
                    super::FrameSyncPad::static_type(),
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    /// EOS sent to the element (as `gst-launch-1.0 -e` does on Ctrl-C) goes to the sink pads;
    /// with none, there is no stream to end it: it goes downstream at once, from a thread of
    /// its own (a sink that is still prerolling holds the EOS until PLAYING, and the thread
    /// that sent it must not wait for that).
    fn send_event(&self, event: gst::Event) -> bool {
        if event.type_() == gst::EventType::Eos && self.obj().num_sink_pads() == 0 {
            gst::debug!(CAT, imp = self, "EOS with no inputs: ending the output");
            let pad = self.obj().src_pad().clone();
            return std::thread::Builder::new()
                .name("framesync-eos".into())
                .spawn(move || {
                    pad.push_event(event);
                })
                .is_ok();
        }
        self.parent_send_event(event)
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let pad = self.parent_request_new_pad(templ, name, caps)?;
        self.update_source_flag();
        self.obj()
            .child_added(pad.upcast_ref::<glib::Object>(), &pad.name());
        Some(pad)
    }

    fn release_pad(&self, pad: &gst::Pad) {
        if let Some(p) = pad.downcast_ref::<super::FrameSyncPad>() {
            let id = {
                let st = p.imp().state.lock().unwrap();
                p.imp().stream_id(&st)
            };
            gst::debug!(CAT, imp = self, "releasing {} ({id})", pad.name());
            self.state
                .lock()
                .unwrap()
                .released
                .push((p.imp().index(), id));
        }
        let name = pad.name();
        self.parent_release_pad(pad);
        self.update_source_flag();
        self.obj()
            .child_removed(pad.upcast_ref::<glib::Object>(), &name);
    }
}

impl FrameSync {
    /// Without inputs framesync is where its output starts: a bin sends it the events it sends
    /// its sources (EOS from `gst-launch-1.0 -e`).
    fn update_source_flag(&self) {
        let obj = self.obj();
        if obj.num_sink_pads() == 0 {
            obj.set_element_flags(gst::ElementFlags::SOURCE);
        } else {
            obj.unset_element_flags(gst::ElementFlags::SOURCE);
        }
    }
}

impl ChildProxyImpl for FrameSync {
    fn child_by_index(&self, index: u32) -> Option<glib::Object> {
        self.obj()
            .sink_pads()
            .into_iter()
            .nth(index as usize)
            .map(|p| p.upcast())
    }

    fn child_by_name(&self, name: &str) -> Option<glib::Object> {
        self.obj()
            .sink_pads()
            .into_iter()
            .find(|p| p.name() == name)
            .map(|p| p.upcast())
    }

    fn children_count(&self) -> u32 {
        self.obj().num_sink_pads() as u32
    }
}

impl AggregatorImpl for FrameSync {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        crate::formats::batch::register_meta();
        *self.state.lock().unwrap() = State::default();
        if self.obj().num_sink_pads() == 0 {
            gst::element_imp_warning!(
                self,
                gst::CoreError::Pad,
                ("framesync has no inputs: no batch goes out until a sink pad is requested \
                     (e.g. 'framesync name=s ! … cam1 ! s.sink_0 cam2 ! s.sink_1')")
            );
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Keep the counters for `stats` after the run; drop the frames.
        let mut st = self.state.lock().unwrap();
        st.tick = None;
        st.released.clear();
        drop(st);
        for pad in self.obj().sink_pads() {
            if let Ok(p) = pad.downcast::<super::FrameSyncPad>() {
                let mut ps = p.imp().state.lock().unwrap();
                ps.stream.clear();
                ps.arrivals.clear();
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut st = self.state.lock().unwrap();
        st.tick = None;
        st.capture.reset();
        drop(st);
        self.parent_flush()
    }

    /// The running time after which (plus latency) a live batch goes out with what is there:
    /// the tick; before the first tick, the earliest queued frame's, so a camera that never
    /// sends anything does not hold the others back. The tolerance is counted once, in the
    /// latency framesync reports (`aggregate`), so a batch with a stalled stream goes out at
    /// tick + tolerance + upstream latency.
    fn next_time(&self) -> Option<gst::ClockTime> {
        let settings = *self.settings.lock().unwrap();
        let views = tick::pad_views(&self.obj(), &settings);
        let mut state = self.state.lock().unwrap();
        let tick = match state.tick {
            Some(t) => t,
            None => {
                let mut first: Option<i64> = None;
                for v in &views {
                    if let Some(head) = v.pad.peek_buffer() {
                        let t = self
                            .head_time(&mut state, &settings, &v.pad, head)
                            .saturating_add(v.correction);
                        first = Some(first.map_or(t, |f| f.min(t)));
                    }
                }
                first?
            }
        };
        Some(gst::ClockTime::from_nseconds(tick.max(0) as u64))
    }

    /// No allocation query: batches hold no memory of their own, and a serialized query
    /// downstream could wait behind a sink that is prerolling (through a tee and a queue).
    fn negotiate(&self) -> bool {
        let settings = *self.settings.lock().unwrap();
        let views = tick::pad_views(&self.obj(), &settings);
        let caps = batch::caps(tick::tick_rate(&settings, &views));
        let changed = {
            let mut st = self.state.lock().unwrap();
            let changed = st.src_caps.as_ref() != Some(&caps);
            st.src_caps = Some(caps.clone());
            changed
        };
        if changed || self.obj().src_pad().current_caps().is_none() {
            gst::debug!(CAT, imp = self, "output caps {caps}");
            self.obj().set_src_caps(&caps);
        }
        true
    }

    fn update_src_caps(&self, _caps: &gst::Caps) -> Result<gst::Caps, gst::FlowError> {
        let settings = *self.settings.lock().unwrap();
        let views = tick::pad_views(&self.obj(), &settings);
        Ok(batch::caps(tick::tick_rate(&settings, &views)))
    }

    fn sink_event(&self, pad: &gst_base::AggregatorPad, event: gst::Event) -> bool {
        if let Some(p) = pad.downcast_ref::<super::FrameSyncPad>() {
            match event.view() {
                gst::EventView::StreamStart(s) => {
                    p.imp().state.lock().unwrap().stream_id = Some(s.stream_id().to_string());
                }
                gst::EventView::Caps(c) => {
                    let caps = c.caps_owned();
                    let period = caps
                        .structure(0)
                        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
                        .and_then(tick::period_of)
                        .map(|p| p as u64);
                    gst::debug!(CAT, obj = pad, "caps {caps}");
                    let mut st = p.imp().state.lock().unwrap();
                    st.caps = Some(caps);
                    st.period = period;
                }
                _ => {}
            }
        }
        self.parent_sink_event(pad, event)
    }

    fn sink_query(&self, pad: &gst_base::AggregatorPad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            // Any raw video (the streams need not agree on anything), the formats onnxinfer
            // reads first so that a videoconvert in front picks one of them.
            gst::QueryViewMut::Caps(q) => {
                let mut templ = gst::Caps::builder("video/x-raw")
                    .field("format", gst::List::new(PREFERRED_FORMATS))
                    .build();
                templ.merge(pad.pad_template_caps());
                let caps = match q.filter() {
                    Some(f) => f.intersect_with_mode(&templ, gst::CapsIntersectMode::First),
                    None => templ,
                };
                q.set_result(&caps);
                true
            }
            gst::QueryViewMut::AcceptCaps(q) => {
                let ok = q.caps().is_subset(&pad.pad_template_caps());
                q.set_result(ok);
                true
            }
            _ => self.parent_sink_query(pad, query),
        }
    }

    fn aggregate(&self, timeout: bool) -> Result<gst::FlowSuccess, gst::FlowError> {
        let started = cpu_time::of_this_thread();
        let settings = *self.settings.lock().unwrap();
        let views = tick::pad_views(&self.obj(), &settings);
        let fps = tick::tick_rate(&settings, &views);
        let period = tick::period_of(fps).unwrap_or(1_000_000_000 / 30);
        let tol = tick::tolerance(&settings, &views);
        let mut state = self.state.lock().unwrap();
        // Batches wait up to the tolerance after their tick: say so in the latency.
        if state.reported_tol != Some(tol) {
            state.reported_tol = Some(tol);
            drop(state);
            let t = gst::ClockTime::from_nseconds(tol as u64);
            self.obj().set_latency(t, Some(t));
            state = self.state.lock().unwrap();
        }

        if state.tick.is_none() {
            let mut first: Option<i64> = None;
            for v in &views {
                if let Some(head) = v.pad.peek_buffer() {
                    let t = self
                        .head_time(&mut state, &settings, &v.pad, head)
                        .saturating_add(v.correction);
                    first = Some(first.map_or(t, |f| f.min(t)));
                }
            }
            match first {
                Some(t) => {
                    let t = t.max(0);
                    gst::debug!(CAT, imp = self, "first tick at {t} ns, {fps} batches/s");
                    state.tick = Some(t);
                }
                None if !views.is_empty() && views.iter().all(|v| v.pad.is_eos()) => {
                    return Err(gst::FlowError::Eos);
                }
                None => return Err(gst_base::AGGREGATOR_FLOW_NEED_DATA),
            }
        }
        let tick = state.tick.unwrap();

        let mut decided = true;
        for v in &views {
            decided &= self.pull(&mut state, &settings, v, tick, tol);
        }
        if !decided && !timeout {
            return Err(gst_base::AGGREGATOR_FLOW_NEED_DATA);
        }

        let mut entries = Vec::with_capacity(views.len() + state.released.len());
        let mut all_ended = !views.is_empty();
        let mut any_frame = false;
        let mut newly_ended = false;
        for v in &views {
            // Decided heads in the window join the pick.
            while let Some(head) = v.pad.peek_buffer() {
                let t = self.head_time(&mut state, &settings, &v.pad, head);
                if t.saturating_add(v.correction) > tick.saturating_add(tol) {
                    break;
                }
                self.take_head(&mut state, &settings, v);
            }
            let imp = v.pad.imp();
            let eos = v.pad.is_eos() && !v.pad.has_buffer();
            let mut ps = imp.state.lock().unwrap();
            let stream_id = imp.stream_id(&ps);
            // Ended: EOS and nothing left for later ticks.
            let ended = eos && ps.stream.pending_until(tick.saturating_add(tol));
            // Once its end went out, a stream has no frame any more (however wide the
            // tolerance, its last one is not repeated after its EOS).
            let pick = if ps.ended_sent {
                Pick::Missing
            } else {
                ps.stream.pick(tick, tol, v.period.unwrap_or(period), ended)
            };
            newly_ended |= ended && !ps.ended_sent;
            ps.ended_sent |= ended;
            drop(ps);
            all_ended &= ended;
            let (status, held) = match pick {
                Pick::Fresh(h) => (Status::Fresh, Some(h)),
                Pick::Repeated(h) => (Status::Repeated, Some(h)),
                Pick::Missing => (Status::Missing, None),
            };
            let mut entry = Entry::missing(v.index, stream_id);
            entry.status = status;
            entry.eos = ended;
            if let Some(h) = held {
                any_frame = true;
                entry.running_time = Some(gst::ClockTime::from_nseconds(h.time.max(0) as u64));
                entry.buffer = Some(h.buffer);
                entry.caps = h.caps;
                entry.segment = Some(h.segment);
                entry.pts = h.pts;
                entry.capture_ns = Some(h.capture_ns);
            }
            entries.push(entry);
        }
        let had_released = !state.released.is_empty();
        for (index, id) in state.released.drain(..) {
            entries.push(Entry {
                eos: true,
                ..Entry::missing(index, id)
            });
        }
        if all_ended && !any_frame && !had_released {
            gst::debug!(CAT, imp = self, "all streams ended");
            return Err(gst::FlowError::Eos);
        }
        state.tick = Some(tick.saturating_add(period));
        if !any_frame && !newly_ended && !had_released {
            // Every stream missing: nothing to batch for this tick.
            state.skipped_ticks += 1;
            gst::log!(CAT, imp = self, "tick {tick}: no stream has a frame");
            return Ok(gst::FlowSuccess::Ok);
        }
        let seg = self.obj().src_pad().segment();
        let pts = seg.downcast_ref::<gst::ClockTime>().and_then(|s| {
            s.position_from_running_time(gst::ClockTime::from_nseconds(tick.max(0) as u64))
        });
        let Some(pts) = pts else {
            state.skipped_ticks += 1;
            return Ok(gst::FlowSuccess::Ok);
        };
        let buffer = batch::make(
            gst::ClockTime::from_nseconds(tick.max(0) as u64),
            pts,
            Some(gst::ClockTime::from_nseconds(period as u64)),
            state.sequence,
            &entries,
        );
        state.sequence += 1;
        state.batches += 1;
        let busy = cpu_time::of_this_thread().saturating_sub(started);
        state.busy_total += busy;
        state.busy_max = state.busy_max.max(busy);
        let caps = batch::caps(fps);
        let new_caps = (state.src_caps.as_ref() != Some(&caps)).then(|| {
            state.src_caps = Some(caps.clone());
            caps
        });
        drop(state);
        if let Some(caps) = new_caps {
            gst::debug!(CAT, imp = self, "output caps {caps}");
            self.obj().set_src_caps(&caps);
        }
        gst::trace!(
            CAT,
            imp = self,
            "batch at {tick} ns: {}",
            entries
                .iter()
                .map(|e| e.status.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        self.finish_buffer(buffer)
    }
}
