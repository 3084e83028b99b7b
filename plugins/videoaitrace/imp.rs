// SPDX-License-Identifier: MPL-2.0
//! `videoaitrace` implementation. All figures sit behind one mutex (`state`), taken once per
//! buffer push; the hooks do a few hash lookups and one histogram increment (with
//! `prometheus=`, also a few atomic increments on series handles cached in `state`).
//!
//! Threads: streaming threads run the hooks; with `prometheus=`, the exporter's thread serves
//! scrapes from the series' atomics and the elements' `stats` ([`super::exporter`]), never
//! taking `state`. Lock order: `settings`, then `exporter`; `state` is taken alone.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::element_metrics::{self, Watched};
use super::exporter::{self, Exporter};
use super::follow::{Role, State};
use super::metrics::TracerMetrics;
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

/// The top-level object `obj` is in (itself when it has no parent).
fn top_of(obj: gst::Object) -> gst::Object {
    let mut top = obj;
    while let Some(p) = top.parent() {
        top = p;
    }
    top
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
            if !st.tops.contains_key(&k) {
                let top = top_of(e.clone().upcast());
                st.top_names
                    .entry(id(&top))
                    .or_insert_with(|| top.name().to_string());
                st.tops.insert(k, id(&top));
            }
            k
        })
        .collect()
}

#[derive(Default)]
struct Settings {
    file: Option<String>,
    prometheus: Option<String>,
}

/// What `prometheus=` adds: the tracer's series and the videoai elements whose `stats` are
/// exported (shared with the exporter's thread).
#[derive(Default)]
pub struct Prometheus {
    metrics: TracerMetrics,
    watched: Watched,
}

impl Prometheus {
    /// The exposition: the tracer's series, the elements', then what the process registered in
    /// the `prometheus` crate's default registry (`videoai-worker`'s own series).
    fn render(&self) -> String {
        let mut families = self.metrics.gather();
        families.extend(element_metrics::gather(&self.watched));
        families.extend(prometheus::gather());
        exporter::encode(&families)
    }
}

#[derive(Default)]
pub struct VideoAiTrace {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Set once, when `prometheus=` is given; read without a lock by the hooks.
    prometheus: OnceLock<Arc<Prometheus>>,
    /// The server (`None` before `prometheus=`, or when it could not start).
    exporter: Mutex<Option<Exporter>>,
    /// Why the server could not start: posted as an error on every pipeline that starts.
    exporter_error: Mutex<Option<String>>,
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
            if !st.tops.contains_key(&e) {
                let top = pad.parent().map(top_of);
                if let Some(t) = &top {
                    st.top_names
                        .entry(id(t))
                        .or_insert_with(|| t.name().to_string());
                }
                st.tops.insert(e, top.map(|t| id(&t)).unwrap_or(0));
            }
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
        let prom = self.prometheus.get().map(|p| &p.metrics);
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.topology(self.topology.load(std::sync::atomic::Ordering::Acquire));
        let (own, peer) = match st.pads.get(&id(pad)) {
            Some(roles) => *roles,
            None => {
                let Some(peer) = pad.peer() else {
                    return;
                };
                Self::learn(st, pad, &peer)
            }
        };
        match own {
            Role::Source(s) => st.pushed_by_source(s, pts, ts, prom),
            Role::Filter(e) => st.left_filter(e, pts, ts, prom),
            _ => {}
        }
        match peer {
            Role::Sink(k) => st.arrived(k, pts, ts, prom),
            Role::Filter(e) => st.entered_filter(e, pts, ts),
            _ => {}
        }
    }

    /// Finds out what `pad` and its `peer` are, and the sources upstream of a filter pushing
    /// or a sink receiving (once per topology).
    fn learn(st: &mut State, pad: &gst::Pad, peer: &gst::Pad) -> (Role, Role) {
        let roles = (Self::role(st, pad), Self::role(st, peer));
        if let Role::Filter(e) = roles.0
            && !st.upstream.contains_key(&e)
        {
            let ups = note_all(st, sources_of(pad, e));
            st.upstream.insert(e, ups);
        }
        if let Role::Sink(k) = roles.1
            && !st.upstream.contains_key(&k)
        {
            let ups = note_all(st, sources_of(peer, k));
            for s in &ups {
                st.path_set.insert((*s, k));
            }
            st.upstream.insert(k, ups);
        }
        st.pads.insert(id(pad), roles);
        roles
    }

    /// Starts the Prometheus endpoint on `addr` (once; a later address is refused).
    fn serve(&self, addr: &str) {
        let mut settings = self.settings.lock().unwrap();
        if let Some(old) = &settings.prometheus {
            gst::warning!(
                CAT,
                imp = self,
                "already serving on {old}: prometheus={addr} ignored"
            );
            return;
        }
        settings.prometheus = Some(addr.to_string());
        let prom = self.prometheus.get_or_init(Default::default).clone();
        match Exporter::start(addr, move || prom.render()) {
            Ok(e) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "serving Prometheus metrics on http://{}/metrics",
                    e.addr()
                );
                *self.exporter.lock().unwrap() = Some(e);
            }
            Err(why) => {
                let why = format!("videoaitrace: {why}");
                gst::error!(CAT, imp = self, "{why}");
                eprintln!("{why}");
                *self.exporter_error.lock().unwrap() = Some(why);
            }
        }
    }

    /// A tracer parameter that cannot be used: said now, and an error of every pipeline that
    /// starts (nothing runs unwatched by mistake).
    fn refuse(&self, why: &str) {
        let why = format!("videoaitrace: {why}");
        gst::error!(CAT, imp = self, "{why}");
        eprintln!("{why}");
        self.exporter_error.lock().unwrap().get_or_insert(why);
    }

    /// Forgets what the topology looked like (pads linked, unlinked, added or removed).
    fn topology_changed(&self) {
        self.topology
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Prints the table of the pipeline `top`, writes the JSON file if asked, and forgets that
    /// pipeline's figures (other pipelines' stay).
    fn report(&self, top: usize, internal: bool) {
        let st = self.state.lock().unwrap().take_pipeline(top);
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
                produced: st.sources.get(s).map(|r| r.produced).unwrap_or(0),
                latency: st.paths.get(&(*s, *k)).map_or(&empty, |p| &p.latency),
            })
            .collect();
        // Elements that passed frames on with their PTS (not those that re-timestamp).
        let mut element_keys: Vec<_> = st
            .filters
            .iter()
            .filter(|(_, f)| f.time.count() > 0)
            .map(|(e, _)| *e)
            .collect();
        element_keys.sort_by_key(name);
        let element_names: Vec<String> = element_keys.iter().map(name).collect();
        let elements: Vec<ElementFigures> = element_keys
            .iter()
            .zip(&element_names)
            .map(|(e, n)| ElementFigures {
                element: n,
                time: &st.filters[e].time,
            })
            .collect();
        if internal {
            // videoai's own inner pipelines (resilientsrc's): their frames are followed in the
            // pipeline the element is in.
            return;
        }
        // Also when nothing passed: an empty table says the pipeline ran and passed no frame.
        eprint!("{}", report::table(&paths, &elements));
        let tracked = st.sources.values().map(|r| r.recent.len()).sum::<usize>()
            + st.filters.values().map(|f| f.inside()).sum::<usize>();
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
                glib::ParamSpecString::builder("prometheus")
                    .nick("Prometheus address")
                    .blurb(
                        "Serve Prometheus metrics on http://ADDR/metrics while the process runs \
                         (HOST:PORT, e.g. GST_TRACERS=\"videoaitrace(prometheus=127.0.0.1:9464)\"; \
                         port 0 picks a free port, logged at INFO): latency and time-in-element \
                         histograms, frames in/out/lost, and every videoai element's stats. \
                         An address that cannot be served is an error on every pipeline that \
                         starts. Set once, when the tracer is created. Default: none (no server)",
                    )
                    .build(),
                glib::ParamSpecString::builder("prometheus-address")
                    .nick("Prometheus address served")
                    .blurb(
                        "The address actually served, HOST:PORT (the port chosen when \
                         prometheus= asked for port 0); empty when not serving",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("prometheus-error")
                    .nick("Prometheus error")
                    .blurb(
                        "Why prometheus= is not served (the same message every pipeline's error \
                         gives); empty when it is, or was not asked for",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let text = value
            .get::<Option<String>>()
            .expect("type checked upstream")
            .filter(|f| !f.is_empty());
        match pspec.name() {
            "file" => self.settings.lock().unwrap().file = text,
            "prometheus" => {
                if let Some(addr) = text {
                    self.serve(&addr);
                }
            }
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "file" => self.settings.lock().unwrap().file.to_value(),
            "prometheus" => self.settings.lock().unwrap().prometheus.to_value(),
            "prometheus-address" => self
                .exporter
                .lock()
                .unwrap()
                .as_ref()
                .map(|e| e.addr().to_string())
                .to_value(),
            "prometheus-error" => self.exporter_error.lock().unwrap().clone().to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // GST_TRACERS parameters, read here (see `params`): an unusable one is an error of
        // every pipeline, as an address that cannot be served is.
        let params: Option<String> = self.obj().property("params");
        if let Some(params) = params.filter(|p| !p.trim().is_empty()) {
            match super::params::parse(&params) {
                Ok(pairs) => {
                    for (key, value) in pairs {
                        match key.as_str() {
                            "file" | "prometheus" => self.obj().set_property(&key, &value),
                            other => self.refuse(&format!(
                                "unknown parameter '{other}' (videoaitrace takes file= and prometheus=)"
                            )),
                        }
                    }
                }
                Err(why) => self.refuse(&format!(
                    "cannot read GST_TRACERS parameters '{params}': {why}"
                )),
            }
        }
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
    /// The parameters are read by the tracer itself (`params.rs`): GStreamer's reading refuses
    /// an unquoted IPv6 address and leaves the tracer inert.
    const USE_STRUCTURE_PARAMS: bool = false;

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
        if change == gst::StateChange::NullToReady
            && element.parent().is_none()
            && let Some(prom) = self.prometheus.get()
        {
            prom.watched.note_top(element);
        }
        if change == gst::StateChange::NullToReady
            && element.parent().is_none()
            && let Some(why) = self.exporter_error.lock().unwrap().clone()
        {
            // A tracer has no bus of its own: the pipelines that start carry its error.
            let msg = gst::message::Error::builder(gst::ResourceError::OpenReadWrite, &why)
                .src(element)
                .build();
            let _ = element.post_message(msg);
        }
        if change == gst::StateChange::PausedToReady && element.parent().is_none() {
            let internal = element.name().starts_with(INNER_PIPELINE_PREFIX);
            self.report(id(element), internal);
        }
    }
}
