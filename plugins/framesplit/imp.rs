// SPDX-License-Identifier: MPL-2.0
//! `framesplit` implementation.
//!
//! Threads: upstream's streaming thread runs the sink pad (chain and events) and is the only
//! one that adds source pads; the application thread reads properties. Lock order:
//! `settings`, then `state`. No pad is added and nothing is pushed with `state` held.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::formats::batch::{self, Status};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "framesplit",
        gst::DebugColorFlags::empty(),
        Some("videoai batch splitter"),
    )
});

#[derive(Debug, Clone, Copy, Default)]
struct Settings {
    push_repeated: bool,
}

/// One source pad and what was last sent on it.
struct Out {
    pad: gst::Pad,
    stream_id: Option<String>,
    caps: Option<gst::Caps>,
    segment: Option<gst::Segment>,
    eos: bool,
    pushed: u64,
}

#[derive(Default)]
struct State {
    outs: BTreeMap<u32, Out>,
    flow: gst_base::UniqueFlowCombiner,
    group_id: Option<gst::GroupId>,
    batches: u64,
}

pub struct FrameSplit {
    sinkpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for FrameSplit {
    const NAME: &'static str = "GstFrameSplit";
    type Type = super::FrameSplit;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                FrameSplit::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |this| this.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                FrameSplit::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.sink_event(pad, event),
                )
            })
            .build();
        FrameSplit {
            sinkpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
        }
    }
}

impl FrameSplit {
    /// The source pad for `index`, created (and added) on first use.
    fn out_pad(&self, index: u32) -> gst::Pad {
        if let Some(o) = self.state.lock().unwrap().outs.get(&index) {
            return o.pad.clone();
        }
        let templ = self.obj().pad_template("src_%u").unwrap();
        let pad = gst::Pad::builder_from_template(&templ)
            .name(format!("src_{index}"))
            .query_function(|pad, parent, query| {
                FrameSplit::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.src_query(pad, query),
                )
            })
            .event_function(|pad, parent, event| {
                FrameSplit::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.src_event(pad, event),
                )
            })
            .build();
        pad.set_active(true).ok();
        {
            let mut st = self.state.lock().unwrap();
            st.flow.add_pad(&pad);
            st.outs.insert(
                index,
                Out {
                    pad: pad.clone(),
                    stream_id: None,
                    caps: None,
                    segment: None,
                    eos: false,
                    pushed: 0,
                },
            );
        }
        gst::debug!(CAT, imp = self, "new stream on src_{index}");
        if let Err(e) = self.obj().add_pad(&pad) {
            gst::warning!(CAT, imp = self, "cannot add src_{index}: {e}");
        }
        pad
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        // The streams' formats are fixed upstream of framesync: a branch asking to
        // renegotiate cannot be served, and passing it on would renegotiate every stream.
        if event.type_() == gst::EventType::Reconfigure {
            return true;
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Caps(q) = query.view_mut() {
            // The stream's caps once known, anything before.
            let caps = pad.current_caps().unwrap_or_else(gst::Caps::new_any);
            let caps = match q.filter() {
                Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
                None => caps,
            };
            q.set_result(&caps);
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(entries) = batch::read(&buffer) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::WrongType,
                ("got a buffer without a VideoAIBatchMeta; framesplit takes the batches of framesync (framesync ! ... ! framesplit)")
            );
            return Err(gst::FlowError::Error);
        };
        let push_repeated = self.settings.lock().unwrap().push_repeated;
        let tick = batch::tick(&buffer);
        self.state.lock().unwrap().batches += 1;
        let mut result = Ok(gst::FlowSuccess::Ok);
        for mut e in entries {
            let wanted = match e.status {
                Status::Fresh => true,
                Status::Repeated => push_repeated,
                Status::Missing => false,
            };
            let ended = e.eos;
            let index = e.pad_index;
            let frame = e.buffer.take().filter(|_| wanted).map(|f| {
                if e.status == Status::Repeated {
                    retimed(f, &e, tick)
                } else {
                    f
                }
            });
            // Nothing follows a stream's EOS (a new stream on the pad, or a flush, starts
            // it again).
            let over = {
                let st = self.state.lock().unwrap();
                st.outs
                    .get(&index)
                    .is_some_and(|o| o.eos && o.stream_id.as_deref() == Some(e.stream_id.as_str()))
            };
            if over {
                continue;
            }
            if let Some(frame) = frame
                && let Err(err) = self.push_entry(e, frame)
            {
                result = Err(err);
                break;
            }
            if ended {
                self.end_stream(index);
            }
        }
        result
    }

    /// The stream of `framesync` pad `index` ended: EOS on its pad, once.
    fn end_stream(&self, index: u32) {
        let pad = self
            .state
            .lock()
            .unwrap()
            .outs
            .get_mut(&index)
            .and_then(|o| {
                (!o.eos).then(|| {
                    o.eos = true;
                    o.pad.clone()
                })
            });
        if let Some(pad) = pad {
            gst::debug!(CAT, obj = pad, "stream ended");
            pad.push_event(gst::event::Eos::new());
        }
    }

    /// Pushes one entry's frame on its pad, after whatever events the pad has not had yet.
    fn push_entry(
        &self,
        e: crate::formats::batch::Entry,
        frame: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let pad = self.out_pad(e.pad_index);
        {
            // What this pad has not been told yet.
            let mut events = Vec::new();
            {
                let mut st = self.state.lock().unwrap();
                let group = *st.group_id.get_or_insert_with(gst::GroupId::next);
                let o = st.outs.get_mut(&e.pad_index).unwrap();
                if o.eos || o.stream_id.as_deref() != Some(e.stream_id.as_str()) {
                    o.eos = false;
                    o.caps = None;
                    o.segment = None;
                    o.stream_id = Some(e.stream_id.clone());
                    events.push(
                        gst::event::StreamStart::builder(&e.stream_id)
                            .group_id(group)
                            .build(),
                    );
                }
                if let Some(caps) = e.caps.filter(|c| o.caps.as_ref() != Some(c)) {
                    o.caps = Some(caps.clone());
                    events.push(gst::event::Caps::new(&caps));
                }
                let segment = e
                    .segment
                    .unwrap_or_else(|| gst::FormattedSegment::<gst::ClockTime>::new().upcast());
                if o.segment.as_ref() != Some(&segment) {
                    o.segment = Some(segment.clone());
                    events.push(gst::event::Segment::new(&segment));
                }
                o.pushed += 1;
            }
            for ev in events {
                pad.push_event(ev);
            }
        }
        let res = pad.push(frame);
        let combined = self.state.lock().unwrap().flow.update_pad_flow(&pad, res);
        match combined {
            // A branch that cannot go on stops everything: say which and why, as demuxers do
            // (nobody else may: a tee or queue upstream would not).
            Err(
                err @ (gst::FlowError::NotNegotiated
                | gst::FlowError::Error
                | gst::FlowError::NotSupported),
            ) => {
                let caps = pad
                    .current_caps()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    (
                        "the branch of {} (stream {}) stopped: {err:?}",
                        pad.name(),
                        e.stream_id
                    ),
                    [
                        "caps {caps}; for not-negotiated, convert (videoconvert) before framesync or in that branch"
                    ]
                );
            }
            Err(err) => gst::debug!(CAT, obj = pad, "flow {err:?}"),
            Ok(_) => {}
        }
        combined
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        match event.view() {
            // The batch's own stream: each output pad gets its stream's instead.
            gst::EventView::StreamStart(_)
            | gst::EventView::Segment(_)
            | gst::EventView::Tag(_) => true,
            gst::EventView::Caps(c) => {
                let ok = batch::is_batch_caps(c.caps());
                if !ok {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("expected {} caps, got {}", batch::CAPS_NAME, c.caps())
                    );
                }
                ok
            }
            gst::EventView::FlushStop(_) => {
                {
                    let mut st = self.state.lock().unwrap();
                    st.flow.reset();
                    for o in st.outs.values_mut() {
                        o.segment = None;
                        o.eos = false;
                    }
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            gst::EventView::Eos(_) => {
                let pads: Vec<gst::Pad> = {
                    let mut st = self.state.lock().unwrap();
                    if st.outs.is_empty() {
                        gst::warning!(CAT, imp = self, "EOS before any stream had a frame");
                    }
                    st.outs
                        .values_mut()
                        .filter(|o| !o.eos)
                        .map(|o| {
                            o.eos = true;
                            o.pad.clone()
                        })
                        .collect()
                };
                for p in pads {
                    p.push_event(event.clone());
                }
                true
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn stats(&self) -> gst::Structure {
        let st = self.state.lock().unwrap();
        let streams = gst::Array::new(st.outs.iter().map(|(i, o)| {
            gst::Structure::builder("stream")
                .field("pad", format!("src_{i}"))
                .field("stream-id", o.stream_id.clone().unwrap_or_default())
                .field("frames", o.pushed)
                .field("eos", o.eos)
                .build()
                .to_send_value()
        }));
        gst::Structure::builder("framesplit-stats")
            .field("batches", st.batches)
            .field("streams", streams)
            .build()
    }
}

/// A repeated frame as a new frame at the batch's tick: a copy (pixels shared) timestamped at
/// the tick's position in the stream's segment, so that encoders and muxers see time advance.
fn retimed(
    frame: gst::Buffer,
    e: &crate::formats::batch::Entry,
    tick: Option<gst::ClockTime>,
) -> gst::Buffer {
    let pts = e
        .segment
        .as_ref()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .zip(tick)
        .and_then(|(s, t)| s.position_from_running_time(t));
    let Some(pts) = pts else {
        return frame;
    };
    let mut frame = frame;
    let b = frame.make_mut();
    b.set_pts(pts);
    b.set_dts(gst::ClockTime::NONE);
    b.set_flags(gst::BufferFlags::DELTA_UNIT);
    frame
}

impl ObjectImpl for FrameSplit {
    fn constructed(&self) {
        self.parent_constructed();
        self.obj().add_pad(&self.sinkpad).unwrap();
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoolean::builder("push-repeated")
                    .nick("Push repeated")
                    .blurb(
                        "Also push entries that repeat a stream's previous frame (the stream is \
                         slower than framesync's tick rate), re-timestamped at the tick, with \
                         onnxinfer's last result for that stream (fresh=false); each stream then \
                         runs at the tick rate. Off: each stream gets its own frames once. \
                         Default: false",
                    )
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only. batches, and streams: one structure per source pad with \
                         pad, stream-id, frames (pushed) and eos",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            "push-repeated" => self.settings.lock().unwrap().push_repeated = value.get().unwrap(),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "push-repeated" => self.settings.lock().unwrap().push_repeated.to_value(),
            "stats" => self.stats().to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for FrameSplit {}

impl ElementImpl for FrameSplit {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Batch splitter",
                "Video/Demuxer",
                "Turns framesync batches (video/x-videoai-batch) back into one stream per \
                 source: each fresh entry's frame, with all its metas (ROIs included), on the \
                 sometimes pad src_N (N = the framesync sink pad index), with that stream's own \
                 stream-start, caps and segment; EOS on a pad when its stream ends",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder(batch::CAPS_NAME).build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src_%u",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &gst::Caps::new_any(),
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            let pads: Vec<gst::Pad> = {
                let mut st = self.state.lock().unwrap();
                let pads = st.outs.values().map(|o| o.pad.clone()).collect();
                st.outs.clear();
                st.flow.clear();
                st.group_id = None;
                pads
            };
            for p in pads {
                p.set_active(false).ok();
                self.obj().remove_pad(&p).ok();
            }
        }
        Ok(ret)
    }
}
