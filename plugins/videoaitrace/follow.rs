// SPDX-License-Identifier: MPL-2.0
//! Following frames, without GStreamer: per source the frames born there (PTS, time, birth
//! index), per element the frames that entered it, per (source, sink) path the frames that
//! arrived, and the figures made of them (the report's histograms and, with `prometheus=`,
//! the exported series). Elements, pads and pipelines are known by their ids (object
//! addresses); the tracer ([`super::imp`]) finds out what they are and tells this state.
//!
//! This runs on every buffer push, under the tracer's state lock: the maps use FxHash (ids
//! and PTS are not attacker-chosen), a frame makes a handful of lookups, and nothing is
//! allocated once a path is known.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap as Map, FxHashSet as Set};

use super::metrics::{self, LossCursor, PathSeries, TracerMetrics};
use crate::util::histogram::Histogram;

/// Frames remembered per source, per element and per path (the oldest are forgotten beyond).
pub const IN_FLIGHT: usize = 4096;

/// When each PTS was seen (and, at a source, the how-many-th frame it was), for the last
/// [`IN_FLIGHT`] PTS.
#[derive(Default)]
pub struct Recent {
    at: Map<u64, (u64, u64)>,
    order: VecDeque<u64>,
}

impl Recent {
    /// Remembers the first time `pts` was seen; true if it is new.
    fn insert_first(&mut self, pts: u64, ts: u64, index: u64) -> bool {
        if self.at.contains_key(&pts) {
            return false;
        }
        if self.order.len() >= IN_FLIGHT
            && let Some(old) = self.order.pop_front()
        {
            self.at.remove(&old);
        }
        self.order.push_back(pts);
        self.at.insert(pts, (ts, index));
        true
    }

    /// When `pts` was first seen, and its birth index.
    fn get(&self, pts: u64) -> Option<(u64, u64)> {
        self.at.get(&pts).copied()
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }
}

/// What a pad's element is, for following frames (element ids are object addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No sink pads (an element, or the outermost bin around it that has none either).
    Source(usize),
    /// No src pads.
    Sink(usize),
    Filter(usize),
    /// Not an element's pad (ghost pads' internal pads).
    Skip,
}

#[derive(Default)]
pub struct Source {
    pub recent: Recent,
    /// The PTS born last: a frame going on through filters shows it again and again, and is
    /// known at once.
    last_born: Option<u64>,
    /// Frames born so far (the next one's birth index).
    pub produced: u64,
    series: Option<Arc<metrics::Counter>>,
}

#[derive(Default)]
pub struct Filter {
    /// The frame that entered last (PTS, time, whether it left): most elements pass a frame
    /// on before the next one comes, so most frames never need `entered`.
    last: Option<(u64, u64, bool)>,
    /// Frames that entered while an earlier one was still inside (queues).
    pub entered: Recent,
    /// Time in element (only frames that left it with the PTS they came in with).
    pub time: Histogram,
    series: Option<Arc<metrics::Histogram>>,
}

impl Filter {
    fn enter(&mut self, pts: u64, ts: u64) {
        match self.last {
            // Already inside: the first time counts.
            Some((p, _, false)) if p == pts => return,
            // The one before is still inside: remembered with the others.
            Some((p, t, false)) => {
                self.entered.insert_first(p, t, 0);
            }
            _ => {}
        }
        if self.entered.get(pts).is_none() {
            self.last = Some((pts, ts, false));
        }
    }

    /// A frame with `pts` left: when it entered.
    fn left(&mut self, pts: u64) -> Option<u64> {
        match &mut self.last {
            Some((p, t, left)) if *p == pts => {
                *left = true;
                Some(*t)
            }
            _ => self.entered.get(pts).map(|(t, _)| t),
        }
    }

    /// Frames remembered inside.
    pub fn inside(&self) -> usize {
        self.entered.len() + usize::from(matches!(self.last, Some((_, _, false))))
    }
}

#[derive(Default)]
pub struct Path {
    /// Frames that arrived (a frame reaches a sink bin twice: at its ghost pad and at the
    /// element inside; it counts once).
    arrived: Recent,
    pub latency: Histogram,
    series: Option<(Arc<PathSeries>, LossCursor)>,
}

#[derive(Default)]
pub struct State {
    /// Per pad: its role and its peer's (what a push needs), for the current topology.
    pub pads: Map<usize, (Role, Role)>,
    /// Per pad: its role, for the current topology.
    pub roles: Map<usize, Role>,
    pub names: Map<usize, String>,
    /// Per element: its top-level pipeline (reports are per pipeline), and their names.
    pub tops: Map<usize, usize>,
    pub top_names: Map<usize, String>,
    /// Per sink and per filter: the sources upstream, for the current topology.
    pub upstream: Map<usize, Vec<usize>>,
    /// Every (source, sink) pair seen (kept across topology changes, for the report).
    pub path_set: Set<(usize, usize)>,
    pub sources: Map<usize, Source>,
    pub filters: Map<usize, Filter>,
    pub paths: Map<(usize, usize), Path>,
    /// The topology generation `pads` and `upstream` were built for.
    generation: u64,
}

impl State {
    /// Forgets what depends on the topology when it changed since the last call.
    pub fn topology(&mut self, generation: u64) {
        if self.generation != generation {
            self.generation = generation;
            self.pads.clear();
            self.roles.clear();
            self.upstream.clear();
        }
    }

    fn labels(
        names: &Map<usize, String>,
        tops: &Map<usize, usize>,
        top_names: &Map<usize, String>,
        e: usize,
    ) -> (String, String) {
        let pipeline = tops
            .get(&e)
            .and_then(|t| top_names.get(t))
            .cloned()
            .unwrap_or_default();
        (pipeline, names.get(&e).cloned().unwrap_or_default())
    }

    /// A frame pushed from source `s` or from a filter fed by it: born at `s` if it is the
    /// first time `s`'s frames show this PTS.
    #[allow(clippy::too_many_arguments)]
    fn born(
        sources: &mut Map<usize, Source>,
        names: &Map<usize, String>,
        tops: &Map<usize, usize>,
        top_names: &Map<usize, String>,
        s: usize,
        pts: u64,
        ts: u64,
        prom: Option<&TracerMetrics>,
    ) {
        let source = sources.entry(s).or_default();
        if source.last_born == Some(pts) {
            return;
        }
        source.last_born = Some(pts);
        if !source.recent.insert_first(pts, ts, source.produced) {
            return;
        }
        source.produced += 1;
        if let Some(prom) = prom {
            source
                .series
                .get_or_insert_with(|| {
                    let (pipeline, name) = Self::labels(names, tops, top_names, s);
                    prom.source(&pipeline, &name)
                })
                .add(1);
        }
    }

    /// A frame pushed by source `s`.
    pub fn pushed_by_source(&mut self, s: usize, pts: u64, ts: u64, prom: Option<&TracerMetrics>) {
        let State {
            sources,
            names,
            tops,
            top_names,
            ..
        } = self;
        Self::born(sources, names, tops, top_names, s, pts, ts, prom);
    }

    /// A frame left filter `e` (whose upstream sources are known): its time in the element,
    /// and born at those sources if they never showed this PTS (a source of untimed data,
    /// e.g. filesrc: the frame is born where its timestamp first appears).
    pub fn left_filter(&mut self, e: usize, pts: u64, ts: u64, prom: Option<&TracerMetrics>) {
        let State {
            filters,
            sources,
            upstream,
            names,
            tops,
            top_names,
            ..
        } = self;
        if let Some(f) = filters.get_mut(&e)
            && let Some(t0) = f.left(pts)
        {
            let took = ts.saturating_sub(t0);
            f.time.record_ns(took);
            if let Some(prom) = prom {
                f.series
                    .get_or_insert_with(|| {
                        let (pipeline, name) = Self::labels(names, tops, top_names, e);
                        prom.element(&pipeline, &name)
                    })
                    .record_ns(took);
            }
        }
        for &s in upstream.get(&e).into_iter().flatten() {
            Self::born(sources, names, tops, top_names, s, pts, ts, prom);
        }
    }

    /// A frame entered filter `e`.
    pub fn entered_filter(&mut self, e: usize, pts: u64, ts: u64) {
        self.filters.entry(e).or_default().enter(pts, ts);
    }

    /// A frame arrived at sink `k` (whose upstream sources are known): one latency sample per
    /// source that gave birth to it, and the frames of those sources now known lost.
    pub fn arrived(&mut self, k: usize, pts: u64, ts: u64, prom: Option<&TracerMetrics>) {
        let State {
            upstream,
            sources,
            paths,
            names,
            tops,
            top_names,
            ..
        } = self;
        let Some(ups) = upstream.get(&k) else {
            return;
        };
        for &s in ups {
            let path = paths.entry((s, k)).or_default();
            if !path.arrived.insert_first(pts, ts, 0) {
                continue;
            }
            let Some((t0, index)) = sources.get(&s).and_then(|src| src.recent.get(pts)) else {
                continue;
            };
            let took = ts.saturating_sub(t0);
            path.latency.record_ns(took);
            if let Some(prom) = prom {
                let (series, cursor) = path.series.get_or_insert_with(|| {
                    let (pipeline, source) = Self::labels(names, tops, top_names, s);
                    let (_, sink) = Self::labels(names, tops, top_names, k);
                    (prom.path(&pipeline, &source, &sink), LossCursor::default())
                });
                series.latency.record_ns(took);
                series.out.add(1);
                let lost = cursor.arrived(index);
                if lost > 0 {
                    series.lost.add(lost);
                }
            }
        }
    }

    /// Takes out everything of the pipeline `top` (for its report); other pipelines' figures
    /// stay. Topology caches are dropped: they are rebuilt on the next push.
    pub fn take_pipeline(&mut self, top: usize) -> State {
        let mine: Set<usize> = self
            .tops
            .iter()
            .filter(|(_, t)| **t == top)
            .map(|(e, _)| *e)
            .collect();
        self.pads.clear();
        self.roles.clear();
        self.upstream.clear();
        let mut st = State {
            names: self.names.clone(),
            ..Default::default()
        };
        st.path_set = self
            .path_set
            .iter()
            .filter(|(_, k)| mine.contains(k))
            .copied()
            .collect();
        self.path_set.retain(|(_, k)| !mine.contains(k));
        fn split<K: Copy + Eq + std::hash::Hash, V>(
            from: &mut Map<K, V>,
            keep: impl Fn(&K) -> bool,
        ) -> Map<K, V> {
            let keys: Vec<K> = from.keys().filter(|k| keep(k)).copied().collect();
            keys.into_iter()
                .filter_map(|k| from.remove(&k).map(|v| (k, v)))
                .collect()
        }
        st.sources = split(&mut self.sources, |e| mine.contains(e));
        st.filters = split(&mut self.filters, |e| mine.contains(e));
        st.paths = split(&mut self.paths, |(_, k)| mine.contains(k));
        self.top_names.remove(&top);
        self.tops.retain(|e, _| !mine.contains(e));
        self.names.retain(|e, _| !mine.contains(e));
        st
    }
}
