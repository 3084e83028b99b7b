// SPDX-License-Identifier: MPL-2.0
//! The report at stop: percentiles on a pipeline with a known delay, lost frames, bounded
//! memory.
//!
//! The tracer is created here as `GST_TRACERS` would create it (tracers are global: one per
//! process, and the tests take turns).

use crate::common;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use gst::prelude::*;

struct Tracer {
    json: PathBuf,
    _dir: common::TempDir,
    _tracer: gst::Tracer,
}

static TRACER: OnceLock<Mutex<Tracer>> = OnceLock::new();

fn tracer() -> MutexGuard<'static, Tracer> {
    TRACER
        .get_or_init(|| {
            common::init();
            let dir = common::TempDir::new("trace");
            let json = dir.join("trace.json");
            let ty = glib::Type::from_name("GstVideoAiTrace").expect("videoaitrace registered");
            let tracer = glib::Object::with_type(ty)
                .downcast::<gst::Tracer>()
                .unwrap();
            tracer.set_property("file", json.display().to_string());
            Mutex::new(Tracer {
                json,
                _dir: dir,
                _tracer: tracer,
            })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Runs `desc` to EOS and returns the tracer's report.
fn traced(t: &Tracer, desc: &str) -> serde_json::Value {
    let _ = std::fs::remove_file(&t.json);
    let p = common::parse(desc);
    let out = common::run(&p, Duration::from_secs(120));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let text = std::fs::read_to_string(&t.json).expect("a report at stop");
    serde_json::from_str(&text).unwrap()
}

fn path<'a>(r: &'a serde_json::Value, sink: &str) -> &'a serde_json::Value {
    r["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sink"] == sink)
        .unwrap_or_else(|| panic!("no path to {sink}: {r}"))
}

fn element<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["element"] == name)
        .unwrap_or_else(|| panic!("no element {name}: {r}"))
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn percentiles_reflect_a_known_delay() {
    let t = tracer();
    // 10 ms per frame in identity; everything else is near instant.
    let r = traced(
        &t,
        "videotestsrc num-buffers=100 ! video/x-raw,width=64,height=48,framerate=1000/1 \
         ! identity name=slow sleep-time=10000 ! fakesink name=out sync=false",
    );
    let p = path(&r, "out");
    assert_eq!(p["source"], "videotestsrc0");
    assert_eq!(
        (p["frames"].as_u64(), p["lost"].as_u64()),
        (Some(100), Some(0))
    );
    let q: Vec<f64> = [
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p99.9_ms",
        "p99.99_ms",
        "max_ms",
    ]
    .iter()
    .map(|k| f(p, k))
    .collect();
    assert!(q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
    // Sleeping at least 10 ms, and (even on a loaded machine) well under 10 frames' worth.
    assert!((10.0..40.0).contains(&q[0]), "p50 {q:?}");
    assert!(q[2] >= 10.0 && q[2] < 100.0, "p99 {q:?}");
    let e = element(&r, "slow");
    assert!((10.0..40.0).contains(&f(e, "p50_ms")), "{e}");
    assert_eq!(e["frames"].as_u64(), Some(100));
    // The elements that do nothing take (nearly) nothing.
    assert!(f(element(&r, "capsfilter0"), "p50_ms") < 5.0, "{r}");
}

#[test]
fn frames_lost_between_source_and_sink_are_counted() {
    let t = tracer();
    let r = traced(
        &t,
        "videotestsrc num-buffers=400 ! video/x-raw,width=16,height=16,framerate=1000/1 \
         ! tee name=t ! queue ! fakesink name=all sync=false \
         t. ! queue ! identity drop-probability=0.5 ! fakesink name=half sync=false",
    );
    let all = path(&r, "all");
    assert_eq!(
        (all["frames"].as_u64(), all["lost"].as_u64()),
        (Some(400), Some(0))
    );
    let half = path(&r, "half");
    let (got, lost) = (
        half["frames"].as_u64().unwrap(),
        half["lost"].as_u64().unwrap(),
    );
    assert_eq!(got + lost, 400);
    assert!((100..300).contains(&lost), "about half lost: {lost}");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn memory_stays_flat_over_100k_frames() {
    let t = tracer();
    let desc = |n: u32| {
        format!(
            "videotestsrc num-buffers={n} ! video/x-raw,width=16,height=16,framerate=10000/1 \
             ! identity ! fakesink name=out sync=false"
        )
    };
    traced(&t, &desc(10_000));
    let before = rss_kib();
    let r = traced(&t, &desc(100_000));
    let after = rss_kib();
    let p = path(&r, "out");
    assert_eq!(p["frames"].as_u64(), Some(100_000));
    // At most IN_FLIGHT frames remembered per source and per element (source, capsfilter,
    // identity), however many went through.
    let tracked = r["tracked_frames"].as_u64().unwrap();
    assert!(tracked <= 3 * 4096, "{tracked} frames tracked");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    eprintln!("RSS {before} → {after} KiB over 100k frames, {tracked} frames tracked at the end");
}

#[test]
fn a_sink_inside_a_bin_counts_each_frame_once() {
    let t = tracer();
    // The frame reaches the bin's ghost sink pad, then the fakesink inside: one arrival.
    let r = traced(
        &t,
        "videotestsrc name=src num-buffers=40 ! video/x-raw,width=64,height=48 \
         ! bin.( name=outbin queue ! fakesink )",
    );
    let p = path(&r, "outbin");
    assert_eq!(f(p, "frames"), 40.0, "{p}");
    assert_eq!(f(p, "lost"), 0.0, "{p}");
}

#[test]
fn a_pipeline_that_passed_no_frame_still_gets_a_report() {
    let t = tracer();
    let r = traced(
        &t,
        "videotestsrc num-buffers=0 ! fakesink name=out sync=false",
    );
    assert_eq!(r["paths"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(r["elements"].as_array().map(Vec::len), Some(0), "{r}");
}
