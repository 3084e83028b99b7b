// SPDX-License-Identifier: MPL-2.0
//! `adaptivequeue` implementation.
//!
//! Threads: upstream's streaming thread runs the sink pad (chain, events, queries); the element's
//! own task runs the source pad loop. They share one mutex, `state`, with two condition
//! variables: `item_added` (the task waits for data) and `item_removed` (upstream waits for
//! room, or for a serialized query to be answered). Each side only signals when the other side
//! said it is waiting, so the hand-off costs no system call while both are busy.
//!
//! Lock order: `settings`, then `state`. Nothing is pushed or queried with `state` held.

use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::Mode;
use super::state::{MS, Media, Settings, State, limit};
use super::store::{Item, PendingQuery, Queued};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "adaptivequeue",
        gst::DebugColorFlags::empty(),
        Some("videoai latency-bounded queue"),
    )
});

pub struct AdaptiveQueue {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    item_added: Condvar,
    item_removed: Condvar,
}

#[glib::object_subclass]
impl ObjectSubclass for AdaptiveQueue {
    const NAME: &'static str = "GstAdaptiveQueue";
    type Type = super::AdaptiveQueue;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                AdaptiveQueue::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |q| q.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                AdaptiveQueue::catch_panic_pad_function(
                    parent,
                    || false,
                    |q| q.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                AdaptiveQueue::catch_panic_pad_function(
                    parent,
                    || false,
                    |q| q.sink_query(pad, query),
                )
            })
            .activatemode_function(|pad, parent, mode, active| {
                AdaptiveQueue::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in sink activation")),
                    |q| q.sink_activate_mode(pad, mode, active),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .event_function(|pad, parent, event| {
                AdaptiveQueue::catch_panic_pad_function(
                    parent,
                    || false,
                    |q| q.src_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                AdaptiveQueue::catch_panic_pad_function(
                    parent,
                    || false,
                    |q| q.src_query(pad, query),
                )
            })
            .activatemode_function(|pad, parent, mode, active| {
                AdaptiveQueue::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in src activation")),
                    |q| q.src_activate_mode(pad, mode, active),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();
        let settings = Settings::default();
        AdaptiveQueue {
            sinkpad,
            srcpad,
            settings: Mutex::new(settings),
            state: Mutex::new(State::new(settings)),
            item_added: Condvar::new(),
            item_removed: Condvar::new(),
        }
    }
}

impl AdaptiveQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn wake_consumer(&self, st: &State) {
        if st.waiting_add {
            self.item_added.notify_one();
        }
    }

    fn post_level(&self, msg: Option<gst::Structure>) {
        if let Some(s) = msg {
            gst::debug!(CAT, imp = self, "level changed: {s}");
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
        }
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut st = self.lock();
        if st.flushing {
            return Err(gst::FlowError::Flushing);
        }
        if st.eos {
            return Err(gst::FlowError::Eos);
        }
        st.srcresult?;

        let ts = buffer.pts().or(buffer.dts());
        let rt = st.segment.to_running_time(ts).map(gst::ClockTime::nseconds);
        let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        st.stats.input += 1;

        if st.may_drop() {
            let encoded = st.media == Media::Encoded;
            let adaptive = st.settings.mode == Mode::Adaptive;
            // The input rate and GOP length count every frame that comes, dropped or not.
            if adaptive {
                st.control.record_arrival(rt);
                if encoded {
                    let alpha = st.settings.ewma_alpha;
                    st.gop.observe(key, alpha);
                }
            }
            // A GOP tail is being cut: delta units go until the next keyframe.
            if encoded && st.skip_until_key {
                if !key {
                    st.stats.dropped_gop_tail += 1;
                    st.store.mark_gap();
                    return Ok(gst::FlowSuccess::Ok);
                }
                st.skip_until_key = false;
            }
            if adaptive {
                if let Some(now) = rt {
                    let (level, target) = (st.store.level(), st.settings.target_latency);
                    st.control.adjust(level, target, now);
                }
                // Encoded video: the ratio is spent per GOP, and what is cut goes as a whole
                // GOP tail (or a whole GOP).
                let passes = if encoded {
                    let plan = st.gop_plan();
                    let passes = st.gop.admit(key, || plan);
                    if key {
                        gst::debug!(
                            CAT,
                            imp = self,
                            "keyframe: {plan:?}, {:?}: {}",
                            st.gop,
                            if passes { "passes" } else { "GOP dropped" }
                        );
                    }
                    passes
                } else {
                    st.control.admit()
                };
                if !passes {
                    st.stats.dropped_adaptive += 1;
                    st.store.mark_gap();
                    if encoded {
                        st.skip_until_key = true;
                    }
                    let msg = st.level_change(rt);
                    drop(st);
                    self.post_level(msg);
                    return Ok(gst::FlowSuccess::Ok);
                }
            }
        }

        // Wait for room (only reached when nothing can be dropped, or the buffer count limit).
        while st.is_full() && !st.flushing {
            st.waiting_del = true;
            st = self.item_removed.wait(st).unwrap();
            st.waiting_del = false;
        }
        if st.flushing {
            return Err(gst::FlowError::Flushing);
        }

        let duration = buffer.duration().map(gst::ClockTime::nseconds);
        st.store.push_buffer(Queued {
            buffer,
            rt,
            duration,
            key,
            discont: false,
            thinned: false,
        });

        let s = st.settings;
        if st.may_drop() && st.store.level() > s.high_watermark {
            let level = st.store.level();
            if st.media == Media::RawVideo {
                let keep_every = s.high_watermark.div_ceil(s.low_watermark.max(1)) as usize;
                let n = st.store.thin_oldest(s.low_watermark, keep_every);
                st.stats.dropped_watermark += n as u64;
            } else {
                let (n, tail) = st.store.drop_gop_tails(s.low_watermark);
                st.stats.dropped_watermark += n as u64;
                st.skip_until_key |= tail;
            }
            gst::debug!(
                CAT,
                imp = self,
                "level {} ms over the high watermark: now {} ms",
                level / MS,
                st.store.level() / MS
            );
        }
        if st.may_drop() {
            let now = self.obj().current_running_time();
            st.expire(now);
        }

        self.wake_consumer(&st);
        let msg = st.level_change(rt);
        drop(st);
        self.post_level(msg);
        Ok(gst::FlowSuccess::Ok)
    }

    /// Stores sticky events that were queued when a flush emptied the queue on the source pad,
    /// so they go out before the next data.
    fn keep_sticky(&self, events: Vec<gst::Event>) {
        for e in events {
            let _ = self.srcpad.store_sticky_event(&e);
        }
    }

    fn query_upstream_live(&self) -> Option<bool> {
        let mut q = gst::query::Latency::new();
        if self.sinkpad.peer_query(&mut q) {
            Some(q.result().0)
        } else {
            None
        }
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "event {:?}", event.type_());
        match event.view() {
            gst::EventView::FlushStart(_) => {
                let res = self.srcpad.push_event(event);
                let sticky = {
                    let mut st = self.lock();
                    st.flushing = true;
                    st.srcresult = Err(gst::FlowError::Flushing);
                    self.item_added.notify_all();
                    self.item_removed.notify_all();
                    st.clear()
                };
                let _ = self.srcpad.pause_task();
                self.keep_sticky(sticky);
                return res;
            }
            gst::EventView::FlushStop(_) => {
                let sticky = {
                    let mut st = self.lock();
                    let sticky = st.clear();
                    st.eos = false;
                    st.control.reset_input();
                    st.gop.reset();
                    if self.srcpad.mode() == gst::PadMode::Push {
                        st.flushing = false;
                        st.srcresult = Ok(gst::FlowSuccess::Ok);
                    }
                    sticky
                };
                self.keep_sticky(sticky);
                let res = self.srcpad.push_event(event);
                if self.srcpad.mode() == gst::PadMode::Push {
                    self.start_task();
                }
                return res;
            }
            _ => {}
        }
        if !event.is_serialized() {
            return self.srcpad.push_event(event);
        }

        let mut live_check = None;
        if let gst::EventView::Caps(c) = event.view() {
            // Liveness decides whether this stream may lose buffers (property live-only).
            live_check = self.query_upstream_live();
            let media = match c.caps().structure(0).map(|s| s.name().as_str()) {
                // framesync batches: decoded frames too, each batch independent of the others.
                Some("video/x-raw") | Some(crate::formats::batch::CAPS_NAME) => Media::RawVideo,
                Some(n) if n.starts_with("video/") || n.starts_with("image/") => Media::Encoded,
                _ => Media::Other,
            };
            gst::debug!(
                CAT,
                imp = self,
                "media {media:?}, upstream live: {live_check:?}"
            );
            self.lock().media = media;
        }

        let mut st = self.lock();
        if let Some(live) = live_check {
            st.upstream_live = Some(live);
        }
        if st.flushing {
            return false;
        }
        if let Err(err) = st.srcresult {
            // Like queue: sticky events are stored on the pad and sent once data flows again.
            let sticky = event.is_sticky() && event.type_() != gst::EventType::Eos;
            gst::debug!(
                CAT,
                imp = self,
                "refusing {:?}: downstream returned {err:?}",
                event.type_()
            );
            return sticky && err == gst::FlowError::NotLinked;
        }
        if st.eos {
            return false;
        }
        match event.view() {
            gst::EventView::Segment(s) => match s.segment().downcast_ref::<gst::ClockTime>() {
                Some(seg) => st.segment = seg.clone(),
                None => {
                    gst::debug!(CAT, imp = self, "non-time segment: level from durations");
                    st.segment = gst::FormattedSegment::new();
                    st.segment.set_start(gst::ClockTime::NONE);
                }
            },
            gst::EventView::StreamStart(_) => {
                st.skip_until_key = false;
                st.control.reset_input();
                st.gop.reset();
            }
            gst::EventView::Eos(_) => st.eos = true,
            _ => {}
        }
        st.store.push_other(Item::Event(event));
        self.wake_consumer(&st);
        true
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if !query.is_serialized() {
            return gst::Pad::query_default(pad, Some(&*self.obj()), query);
        }
        // Serialized (ALLOCATION, DRAIN, …): answered in order, after what is queued.
        let mut st = self.lock();
        if st.flushing || st.srcresult.is_err() || st.eos {
            return false;
        }
        st.next_query_id += 1;
        let id = st.next_query_id;
        st.store.push_other(Item::Query(PendingQuery {
            ptr: query.as_mut_ptr(),
            id,
        }));
        self.wake_consumer(&st);
        loop {
            if let Some((handled, res)) = st.handled_query
                && handled == id
            {
                return res;
            }
            // Flushing, or downstream ended (EOS, error): the task will not get to it. While
            // the task is answering it, though, the query must stay alive.
            if (st.flushing || st.srcresult.is_err()) && st.query_in_flight != Some(id) {
                st.store.remove_query(id);
                return false;
            }
            st.waiting_del = true;
            st = self.item_removed.wait(st).unwrap();
            st.waiting_del = false;
        }
    }

    fn sink_activate_mode(
        &self,
        _pad: &gst::Pad,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "only push mode is supported"));
        }
        if !active {
            let mut st = self.lock();
            st.flushing = true;
            st.srcresult = Err(gst::FlowError::Flushing);
            // Deactivation is a full flush: sticky events go too.
            drop(st.clear());
            self.item_added.notify_all();
            self.item_removed.notify_all();
        }
        Ok(())
    }

    fn src_activate_mode(
        &self,
        pad: &gst::Pad,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "only push mode is supported"));
        }
        if active {
            {
                let settings = *self.settings.lock().unwrap();
                let mut st = self.lock();
                *st = State::new(settings);
                st.flushing = false;
                st.srcresult = Ok(gst::FlowSuccess::Ok);
            }
            self.start_task();
            Ok(())
        } else {
            {
                let mut st = self.lock();
                st.flushing = true;
                st.srcresult = Err(gst::FlowError::Flushing);
                self.item_added.notify_all();
                self.item_removed.notify_all();
            }
            pad.stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "cannot stop the task: {e}"))
        }
    }

    fn start_task(&self) {
        let element = self.obj().downgrade();
        let res = self.srcpad.start_task(move || {
            let Some(element) = element.upgrade() else {
                return;
            };
            element.imp().src_loop();
        });
        if let Err(e) = res {
            gst::element_imp_error!(
                self,
                gst::CoreError::Thread,
                ("cannot start the queue thread: {e}")
            );
        }
    }

    fn src_loop(&self) {
        let mut st = self.lock();
        let item = loop {
            if st.flushing {
                drop(st);
                let _ = self.srcpad.pause_task();
                return;
            }
            let now = if st.may_drop() {
                self.obj().current_running_time()
            } else {
                None
            };
            let n = st.expire(now);
            if n > 0 {
                gst::debug!(
                    CAT,
                    imp = self,
                    "dropped {n} buffers older than {} ms",
                    st.max_output_age() / MS
                );
            }
            if let Some(item) = st.store.pop() {
                break item;
            }
            st.waiting_add = true;
            st = self.item_added.wait(st).unwrap();
            st.waiting_add = false;
        };
        let now = match &item {
            Item::Query(q) => {
                st.query_in_flight = Some(q.id);
                None
            }
            Item::Buffer(b) => b.rt,
            Item::Event(_) => None,
        };
        if st.waiting_del {
            self.item_removed.notify_all();
        }
        let msg = st.level_change(now);
        drop(st);
        self.post_level(msg);

        match item {
            Item::Buffer(q) => {
                let mut buffer = q.buffer;
                if q.discont {
                    buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
                }
                let start = Instant::now();
                let res = self.srcpad.push(buffer);
                let took = start.elapsed().as_secs_f64();
                let mut st = self.lock();
                st.stats.output += 1;
                st.control.record_processing(took);
                if let Err(err) = res {
                    self.handle_push_error(st, err);
                }
            }
            Item::Event(event) => {
                let is_eos = event.type_() == gst::EventType::Eos;
                self.srcpad.push_event(event);
                if is_eos {
                    let mut st = self.lock();
                    st.srcresult = Err(gst::FlowError::Eos);
                    // Queries queued behind the EOS will not be answered downstream.
                    self.item_removed.notify_all();
                    drop(st);
                    let _ = self.srcpad.pause_task();
                }
            }
            Item::Query(q) => {
                // SAFETY: the sink-pad thread that queued this query waits until `handled_query`
                // names it (see `sink_query`), so the query outlives this use.
                let res = self
                    .srcpad
                    .peer_query(unsafe { gst::QueryRef::from_mut_ptr(q.ptr) });
                let mut st = self.lock();
                st.query_in_flight = None;
                st.handled_query = Some((q.id, res));
                self.item_removed.notify_all();
            }
        }
    }

    fn handle_push_error(&self, mut st: MutexGuard<'_, State>, err: gst::FlowError) {
        st.srcresult = Err(err);
        let flushing = st.flushing;
        self.item_removed.notify_all();
        drop(st);
        let _ = self.srcpad.pause_task();
        if flushing || err == gst::FlowError::Flushing {
            return;
        }
        gst::debug!(CAT, imp = self, "downstream returned {err:?}, pausing");
        // NOT_LINKED and everything worse than EOS (not-negotiated, errors).
        if !matches!(err, gst::FlowError::Eos | gst::FlowError::Flushing) {
            // As queue does: report, and let downstream finish.
            gst::element_imp_error!(
                self,
                gst::StreamError::Failed,
                ("Internal data stream error."),
                ["streaming stopped, reason {err:?}"]
            );
            self.srcpad.push_event(gst::event::Eos::new());
        }
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        if let gst::EventView::Qos(q) = event.view() {
            let (_, proportion, _, _) = q.get();
            self.lock().control.record_qos(proportion);
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        let res = gst::Pad::query_default(pad, Some(&*self.obj()), query);
        if res && let gst::QueryViewMut::Latency(q) = query.view_mut() {
            // Data may wait here up to max-latency.
            let (live, min, max) = q.result();
            let max = match limit(self.settings.lock().unwrap().max_latency) {
                Some(ours) => max.map(|m| m + gst::ClockTime::from_nseconds(ours)),
                // Nothing older is dropped: data may wait here for ever.
                None => gst::ClockTime::NONE,
            };
            q.set(live, min, max);
        }
        res
    }

    fn stats(&self) -> gst::Structure {
        let st = self.lock();
        let s = st.stats;
        gst::Structure::builder("adaptivequeue-stats")
            .field("in", s.input)
            .field("out", s.output)
            .field("dropped", s.dropped())
            .field("dropped-watermark", s.dropped_watermark)
            .field("dropped-expired", s.dropped_expired)
            .field("dropped-adaptive", s.dropped_adaptive)
            .field("dropped-gop-tail", s.dropped_gop_tail)
            .field("level", st.level_class.name())
            .field("current-level-time", st.store.level())
            .field("current-level-buffers", st.store.buffers() as u32)
            .field(
                "ewma-processing-time",
                (st.control.processing.get().unwrap_or(0.0) * 1e9) as u64,
            )
            .field("pass-ratio", st.control.ratio())
            .field("upstream-live", st.upstream_live.unwrap_or(false))
            .build()
    }
}

impl ObjectImpl for AdaptiveQueue {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> =
            LazyLock::new(super::settings::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "low-watermark" => settings.low_watermark = value.get().expect("type checked upstream"),
            "high-watermark" => {
                settings.high_watermark = value.get().expect("type checked upstream")
            }
            "max-latency" => settings.max_latency = value.get().expect("type checked upstream"),
            "target-latency" => {
                settings.target_latency = value.get().expect("type checked upstream")
            }
            "max-size-buffers" => {
                settings.max_size_buffers = value.get().expect("type checked upstream")
            }
            "ewma-alpha" => settings.ewma_alpha = value.get().expect("type checked upstream"),
            "mode" => settings.mode = value.get().expect("type checked upstream"),
            "live-only" => settings.live_only = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
        let mut st = self.lock();
        st.settings = *settings;
        st.control.alpha = settings.ewma_alpha;
        // A raised limit may let a blocked upstream go on.
        self.item_removed.notify_all();
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "low-watermark" => s.low_watermark.to_value(),
            "high-watermark" => s.high_watermark.to_value(),
            "max-latency" => s.max_latency.to_value(),
            "target-latency" => s.target_latency.to_value(),
            "max-size-buffers" => s.max_size_buffers.to_value(),
            "ewma-alpha" => s.ewma_alpha.to_value(),
            "mode" => s.mode.to_value(),
            "live-only" => s.live_only.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for AdaptiveQueue {}

impl ElementImpl for AdaptiveQueue {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Adaptive latency-bounded queue",
                "Generic",
                "A queue with its own streaming thread that keeps latency bounded under \
                 overload: above the high watermark it drops raw video frames (spread out) or \
                 whole GOP tails of encoded video (never breaking decode), drops what is older \
                 than max-latency on the way out, and in adaptive mode thins the input to the \
                 rate downstream sustains. Events and queries are never dropped. Posts \
                 'adaptivequeue-level' element messages when the level changes between \
                 low/normal/high",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::new_any();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}
