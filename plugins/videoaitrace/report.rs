// SPDX-License-Identifier: MPL-2.0
//! The tracer's report: a table for people, JSON for programs.

use std::fmt::Write as _;

use crate::util::histogram::{Histogram, ms};

/// End-to-end figures of one (source, sink) pair.
pub struct PathFigures<'a> {
    pub source: &'a str,
    pub sink: &'a str,
    pub produced: u64,
    pub latency: &'a Histogram,
}

/// Time spent in one element.
pub struct ElementFigures<'a> {
    pub element: &'a str,
    pub time: &'a Histogram,
}

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

fn lost(p: &PathFigures) -> u64 {
    p.produced.saturating_sub(p.latency.count())
}

pub fn table(paths: &[PathFigures], elements: &[ElementFigures]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "videoaitrace: source → sink latency (ms)");
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "sink", "source", "frames", "lost", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for p in paths {
        let _ = write!(
            out,
            "{:<24} {:<24} {:>8} {:>7}",
            p.sink,
            p.source,
            p.latency.count(),
            lost(p)
        );
        for (_, q) in QUANTILES {
            let _ = write!(out, " {:>8.3}", ms(p.latency.percentile(q)));
        }
        let _ = writeln!(out, " {:>8.3}", ms(p.latency.max()));
    }
    let _ = writeln!(out, "videoaitrace: time in element (ms)");
    let _ = writeln!(
        out,
        "{:<32} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "element", "frames", "mean", "p50", "p90", "p99", "max"
    );
    for e in elements {
        let _ = writeln!(
            out,
            "{:<32} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            e.element,
            e.time.count(),
            ms(e.time.mean()),
            ms(e.time.percentile(0.5)),
            ms(e.time.percentile(0.9)),
            ms(e.time.percentile(0.99)),
            ms(e.time.max())
        );
    }
    out
}

fn quantiles_json(h: &Histogram) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("frames".into(), h.count().into());
    m.insert("mean_ms".into(), ms(h.mean()).into());
    for (name, q) in QUANTILES {
        m.insert(format!("{name}_ms"), ms(h.percentile(q)).into());
    }
    m.insert("max_ms".into(), ms(h.max()).into());
    m
}

pub fn json(paths: &[PathFigures], elements: &[ElementFigures], tracked: usize) -> String {
    let paths: Vec<_> = paths
        .iter()
        .map(|p| {
            let mut m = quantiles_json(p.latency);
            m.insert("source".into(), p.source.into());
            m.insert("sink".into(), p.sink.into());
            m.insert("produced".into(), p.produced.into());
            m.insert("lost".into(), lost(p).into());
            serde_json::Value::Object(m)
        })
        .collect();
    let elements: Vec<_> = elements
        .iter()
        .map(|e| {
            let mut m = quantiles_json(e.time);
            m.insert("element".into(), e.element.into());
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::json!({
        "paths": paths,
        "elements": elements,
        "tracked_frames": tracked,
    })
    .to_string()
}
