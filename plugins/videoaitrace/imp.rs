// SPDX-License-Identifier: MPL-2.0
//! `videoaitrace` implementation. All figures sit behind one mutex (`state`), taken once per
//! buffer push; the hooks do a few hash lookups and one histogram increment.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::report::{self, ElementFigures, PathFigures};
use crate::util::histogram::Histogram;

/// Names of the pipelines videoai elements run inside themselves (resilientsrc).
const INNER_PIPELINE_PREFIX: &str = "resilientsrc-";

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "videoaitrace",
        gst::DebugColorFlags::empty(),
        Some("videoai latency tracer"),
    )
});

/// Frames remembered per source and per element (the oldest are forgotten beyond).
pub const IN_FLIGHT: usize = 4096;

/// When each PTS was seen, for the last [`IN_FLIGHT`] PTS.
#[derive(Default)]
struct Recent {
    at: HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl Recent {
    /// Remembers the first time `pts` was seen; true if it is new.
    fn insert_first(&mut self, pts: u64, ts: u64) -> bool {
        if self.at.contains_key(&pts) {
            return false;
        }
        if self.order.len() >= IN_FLIGHT
            && let Some(old) = self.order.pop_front()
        {
            self.at.remove(&old);
        }
        self.order.push_back(pts);
        self.at.insert(pts, ts);
        true
    }

    fn get(&self, pts: u64) -> Option<u64> {
        self.at.get(&pts).copied()
    }
}

/// What a pad's element is, for following frames (element ids are object addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// No sink pads (an element, or the outermost bin around it that has none either).
    Source(usize),
    /// No src pads.
    Sink(usize),
    Filter(usize),
    /// Not an element's pad (ghost pads' internal pads).
    Skip,
}

#[derive(Default)]
struct State {
    roles: HashMap<usize, Role>,
    names: HashMap<usize, String>,
    /// Per element: its top-level pipeline (reports are per pipeline).
    tops: HashMap<usize, usize>,
    /// Per sink: the sources upstream of it.
    upstream: HashMap<usize, Vec<usize>>,
    /// Every (source, sink) pair seen (kept across topology changes, for the report).
    path_set: HashSet<(usize, usize)>,
    /// Per filter element: the sources upstream of it.
    fed_by: HashMap<usize, Vec<usize>>,
    sources: HashMap<usize, (Recent, u64)>,
    entered: HashMap<usize, Recent>,
    /// Per (source, sink): frames that arrived (a frame reaches a sink bin twice: at its ghost
    /// pad and at the element inside; it counts once).
    arrived: HashMap<(usize, usize), Recent>,
    paths: HashMap<(usize, usize), Histogram>,
    elements: HashMap<usize, Histogram>,
    /// The topology generation the caches above were built for.
    generation: u64,
}

fn id(e: &impl IsA<gst::Object>) -> usize {
    e.as_ptr() as usize
}

/// The outermost bin around `e` that has no pads of `direction` either (so a source inside a
/// source bin such as `resilientsrc` counts as the bin), below the top-level pipeline.
fn outermost_without(e: gst::Element, direction: gst::PadDirection) -> gst::Element {
    let mut e = e;
    while let Some(parent) = e.parent().and_then(|p| p.downcast::<gst::Element>().ok()) {
        if parent.parent().is_none() || has_pads(&parent, direction) {
            break;
        }
        e = parent;
    }
    e
}

fn has_pads(e: &gst::Element, direction: gst::PadDirection) -> bool {
    match direction {
        gst::PadDirection::Sink => e.num_sink_pads() > 0,
        _ => e.num_src_pads() > 0,
    }
}

fn role_of(pad: &gst::Pad) -> Role {
    let Some(e) = pad.parent_element() else {
        return Role::Skip;
    };
    if !has_pads(&e, gst::PadDirection::Sink) {
        let e = outermost_without(e, gst::PadDirection::Sink);
        Role::Source(id(&e))
    } else if !has_pads(&e, gst::PadDirection::Src) {
        let e = outermost_without(e, gst::PadDirection::Src);
        Role::Sink(id(&e))
    } else {
        Role::Filter(id(&e))
    }
}

/// The element a sink pad gets its data from, looking through ghost pads.
fn upstream_element(sinkpad: &gst::Pad) -> Option<gst::Element> {
    let mut pad = sinkpad.peer()?;
    for _ in 0..16 {
        if let Some(e) = pad.parent_element() {
            return Some(e);
        }
        // The internal pad of a ghost sink pad: continue from the ghost pad's peer.
        let ghost = pad.parent()?.downcast::<gst::Pad>().ok()?;
        pad = ghost.peer()?;
    }
    None
}

/// The sources upstream of `sink` (walking sink pads; bins with ghost pads are black boxes).
fn sources_upstream(sink: &gst::Element) -> Vec<gst::Element> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![sink.clone()];
    while let Some(e) = todo.pop() {
        if !seen.insert(id(&e)) {
            continue;
        }
        for sp in e.sink_pads() {
            let Some(up) = upstream_element(&sp) else {
                continue;
            };
            if has_pads(&up, gst::PadDirection::Sink) {
                todo.push(up);
            } else {
                found.push(outermost_without(up, gst::PadDirection::Sink));
            }
        }
    }
    found
}

/// The sources upstream of the element `k` that `pad` belongs to (`k` may be a bin around the
/// pad's element).
fn sources_of(pad: &gst::Pad, k: usize) -> Vec<gst::Element> {
    let Some(mut e) = pad.parent_element() else {
        return Vec::new();
    };
    while id(&e) != k {
        match e.parent().and_then(|p| p.downcast::<gst::Element>().ok()) {
            Some(p) => e = p,
            None => break,
        }
    }
    sources_upstream(&e)
}

/// Remembers the names and pipelines of `elements`; their ids.
fn note_all(st: &mut State, elements: Vec<gst::Element>) -> Vec<usize> {
    elements
        .into_iter()
        .map(|e| {
            let k = id(&e);
            st.names.entry(k).or_insert_with(|| e.name().to_string());
            st.tops.entry(k).or_insert_with(|| {
                let mut top: gst::Object = e.clone().upcast();
                while let Some(p) = top.parent() {
                    top = p;
                }
                id(&top)
            });
            k
        })
        .collect()
}

#[derive(Default)]
struct Settings {
    file: Option<String>,
}

#[derive(Default)]
pub struct VideoAiTrace {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Bumped on every topology change, without taking `state`: a change can be announced
    /// from a dispose that runs while `state` is held (an element reference dropped there).
    topology: std::sync::atomic::AtomicU64,
}

#[glib::object_subclass]
impl ObjectSubclass for VideoAiTrace {
    const NAME: &'static str = "GstVideoAiTrace";
    type Type = super::VideoAiTrace;
    type ParentType = gst::Tracer;
}

impl VideoAiTrace {
    fn role(st: &mut State, pad: &gst::Pad) -> Role {
        if let Some(r) = st.roles.get(&id(pad)) {
            return *r;
        }
        let r = role_of(pad);
        if let Role::Source(e) | Role::Sink(e) | Role::Filter(e) = r {
            st.tops.entry(e).or_insert_with(|| {
                let mut top: Option<gst::Object> = pad.parent();
                while let Some(p) = top.as_ref().and_then(|t| t.parent()) {
                    top = Some(p);
                }
                top.map(|t| id(&t)).unwrap_or(0)
            });
            st.names.entry(e).or_insert_with(|| {
                // The element itself, or the bin it climbed to.
                let mut obj: Option<gst::Object> = pad.parent();
                while let Some(o) = obj {
                    if id(&o) == e {
                        return o.name().to_string();
                    }
                    obj = o.parent();
                }
                format!("{e:#x}")
            });
        }
        st.roles.insert(id(pad), r);
        r
    }

    fn on_buffer(&self, ts: u64, pad: &gst::Pad, buffer: &gst::BufferRef) {
        let Some(pts) = buffer.pts().or(buffer.dts()).map(|t| t.nseconds()) else {
            return;
        };
        let Some(peer) = pad.peer() else {
            return;
        };
        let mut st = self.state.lock().unwrap();
        let generation = self.topology.load(std::sync::atomic::Ordering::Acquire);
        if st.generation != generation {
            st.generation = generation;
            st.roles.clear();
            st.upstream.clear();
            st.fed_by.clear();
        }
        match Self::role(&mut st, pad) {
            Role::Source(s) => {
                let entry = st.sources.entry(s).or_default();
                if entry.0.insert_first(pts, ts) {
                    entry.1 += 1;
                }
            }
            Role::Filter(e) => {
                if let Some(t0) = st.entered.get(&e).and_then(|r| r.get(pts)) {
                    st.elements
                        .entry(e)
                        .or_default()
                        .record_ns(ts.saturating_sub(t0));
                }
                // A source of untimed data (filesrc): the frame is born where its timestamp
                // first appears (the demuxer or parser).
                if !st.fed_by.contains_key(&e) {
                    let ups = note_all(&mut st, sources_of(pad, e));
                    st.fed_by.insert(e, ups);
                }
                let ups = st.fed_by[&e].clone();
                for s in ups {
                    let entry = st.sources.entry(s).or_default();
                    if entry.0.insert_first(pts, ts) {
                        entry.1 += 1;
                    }
                }
            }
            _ => {}
        }
        match Self::role(&mut st, &peer) {
            Role::Sink(k) => {
                if !st.upstream.contains_key(&k) {
                    let ups = note_all(&mut st, sources_of(&peer, k));
                    for s in &ups {
                        st.path_set.insert((*s, k));
                    }
                    st.upstream.insert(k, ups);
                }
                let ups = st.upstream[&k].clone();
                for s in ups {
                    if !st.arrived.entry((s, k)).or_default().insert_first(pts, ts) {
                        continue;
                    }
                    if let Some(t0) = st.sources.get(&s).and_then(|r| r.0.get(pts)) {
                        st.paths
                            .entry((s, k))
                            .or_default()
                            .record_ns(ts.saturating_sub(t0));
                    }
                }
            }
            Role::Filter(e) => {
                st.entered.entry(e).or_default().insert_first(pts, ts);
            }
            _ => {}
        }
    }

    /// Forgets what the topology looked like (pads linked, unlinked, added or removed).
    fn topology_changed(&self) {
        self.topology
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Prints the table of the pipeline `top`, writes the JSON file if asked, and forgets that
    /// pipeline's figures (other pipelines' stay).
    fn report(&self, top: usize, internal: bool) {
        let st = {
            let mut all = self.state.lock().unwrap();
            let mine: HashSet<usize> = all
                .tops
                .iter()
                .filter(|(_, t)| **t == top)
                .map(|(e, _)| *e)
                .collect();
            let mut st = State {
                names: all.names.clone(),
                ..Default::default()
            };
            all.roles.clear();
            all.fed_by.clear();
            all.upstream.clear();
            st.path_set = all
                .path_set
                .iter()
                .filter(|(_, k)| mine.contains(k))
                .copied()
                .collect();
            all.path_set.retain(|(_, k)| !mine.contains(k));
            fn split<V>(from: &mut HashMap<usize, V>, mine: &HashSet<usize>) -> HashMap<usize, V> {
                let keys: Vec<usize> = from.keys().filter(|k| mine.contains(k)).copied().collect();
                keys.into_iter()
                    .filter_map(|k| from.remove(&k).map(|v| (k, v)))
                    .collect()
            }
            st.sources = split(&mut all.sources, &mine);
            st.entered = split(&mut all.entered, &mine);
            st.elements = split(&mut all.elements, &mine);
            all.arrived.retain(|(_, k), _| !mine.contains(k));
            let keys: Vec<(usize, usize)> = all
                .paths
                .keys()
                .filter(|(_, k)| mine.contains(k))
                .copied()
                .collect();
            for key in keys {
                if let Some(h) = all.paths.remove(&key) {
                    st.paths.insert(key, h);
                }
            }
            all.tops.retain(|e, _| !mine.contains(e));
            all.names.retain(|e, _| !mine.contains(e));
            st
        };
        let name = |id: &usize| st.names.get(id).cloned().unwrap_or_default();
        let mut path_keys: Vec<_> = st.path_set.iter().copied().collect();
        path_keys.sort_by_key(|(s, k)| (name(k), name(s)));
        path_keys.dedup();
        let empty = Histogram::new();
        let names: Vec<(String, String)> =
            path_keys.iter().map(|(s, k)| (name(s), name(k))).collect();
        let paths: Vec<PathFigures> = path_keys
            .iter()
            .zip(&names)
            .filter(|((s, _), _)| st.sources.contains_key(s))
            .map(|((s, k), (sn, kn))| PathFigures {
                source: sn,
                sink: kn,
                produced: st.sources.get(s).map(|r| r.1).unwrap_or(0),
                latency: st.paths.get(&(*s, *k)).unwrap_or(&empty),
            })
            .collect();
        let mut element_keys: Vec<_> = st.elements.keys().copied().collect();
        element_keys.sort_by_key(name);
        let element_names: Vec<String> = element_keys.iter().map(name).collect();
        let elements: Vec<ElementFigures> = element_keys
            .iter()
            .zip(&element_names)
            .map(|(e, n)| ElementFigures {
                element: n,
                time: &st.elements[e],
            })
            .collect();
        if internal {
            // videoai's own inner pipelines (resilientsrc's): their frames are followed in the
            // pipeline the element is in.
            return;
        }
        // Also when nothing passed: an empty table says the pipeline ran and passed no frame.
        eprint!("{}", report::table(&paths, &elements));
        let tracked = st.sources.values().map(|r| r.0.at.len()).sum::<usize>()
            + st.entered.values().map(|r| r.at.len()).sum::<usize>();
        let file = self.settings.lock().unwrap().file.clone();
        if let Some(file) = file {
            let json = report::json(&paths, &elements, tracked);
            if let Err(e) = std::fs::write(&file, json) {
                gst::error!(CAT, imp = self, "cannot write {file}: {e}");
                eprintln!("videoaitrace: cannot write the report to {file}: {e}");
            }
        }
    }
}

impl ObjectImpl for VideoAiTrace {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("file")
                    .nick("File")
                    .blurb(
                        "Also write each report as JSON to this file (overwritten), e.g. \
                         GST_TRACERS=\"videoaitrace(file=/tmp/latency.json)\". Default: none",
                    )
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "file" {
            self.settings.lock().unwrap().file = value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|f| !f.is_empty());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "file" => self.settings.lock().unwrap().file.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.register_hook(TracerHook::PadPushPre);
        self.register_hook(TracerHook::PadPushListPre);
        self.register_hook(TracerHook::PadLinkPost);
        self.register_hook(TracerHook::PadUnlinkPost);
        self.register_hook(TracerHook::ElementAddPad);
        self.register_hook(TracerHook::ElementRemovePad);
        self.register_hook(TracerHook::ElementChangeStatePost);
        gst::info!(CAT, imp = self, "tracing source → sink latency");
    }
}

impl GstObjectImpl for VideoAiTrace {}

impl TracerImpl for VideoAiTrace {
    const USE_STRUCTURE_PARAMS: bool = true;

    fn pad_push_pre(&self, ts: u64, pad: &gst::Pad, buffer: &gst::Buffer) {
        self.on_buffer(ts, pad, buffer);
    }

    fn pad_push_list_pre(&self, ts: u64, pad: &gst::Pad, list: &gst::BufferList) {
        for b in list.iter() {
            self.on_buffer(ts, pad, b);
        }
    }

    fn pad_link_post(
        &self,
        _ts: u64,
        _src: &gst::Pad,
        _sink: &gst::Pad,
        _result: Result<gst::PadLinkSuccess, gst::PadLinkError>,
    ) {
        self.topology_changed();
    }

    fn pad_unlink_post(&self, _ts: u64, _src: &gst::Pad, _sink: &gst::Pad, _success: bool) {
        self.topology_changed();
    }

    fn element_add_pad(&self, _ts: u64, _element: &gst::Element, _pad: &gst::Pad) {
        self.topology_changed();
    }

    fn element_remove_pad(&self, _ts: u64, _element: &gst::Element, _pad: &gst::Pad) {
        self.topology_changed();
    }

    fn element_change_state_post(
        &self,
        _ts: u64,
        element: &gst::Element,
        change: gst::StateChange,
        _result: Result<gst::StateChangeSuccess, gst::StateChangeError>,
    ) {
        if change == gst::StateChange::PausedToReady && element.parent().is_none() {
            let internal = element.name().starts_with(INNER_PIPELINE_PREFIX);
            self.report(id(element), internal);
        }
    }
}
