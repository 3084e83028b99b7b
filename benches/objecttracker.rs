// SPDX-License-Identifier: MPL-2.0
//! objecttracker benchmark: `make bench-objecttracker` (`cargo bench --bench objecttracker`).
//!
//! The same synthetic detections (objects moving across a 1920×1080 picture and bouncing off
//! its edges, ±2 px jitter, 5 % dropped, false positives: 5 % of the object count a frame at
//! confidence 0.3–0.6) through videoai's ByteTrack (`objecttracker`'s tracker, in process)
//! and through the reference, the Python `supervision` package's `sv.ByteTrack` (installed by
//! `scripts/setup-bench.sh` into `.deps/bench-track`), with the same settings (high threshold
//! 0.5, a new track from 0.6 (supervision's `det_thresh`, our default `new-track-margin`),
//! match IoU 0.2, lost for 1 s = 25 frames, a track reported on its 3rd detection: supervision's
//! `minimum_consecutive_frames=2`, our `min-hits=3`).
//! Prints per-frame time at 10, 100 and 1000 objects (the tracker's update alone, each side
//! timing its own call, and ours through the whole element: region metas read, `track-id`s
//! written, a line and a zone counted, the analytics meta attached; the speed-up is the
//! element's) and MOTA, IDF1, ID switches and tracks per object against the truth, scored by the same code
//! (`tests/common/mot.rs`, CLEAR MOT).
//!
//! Environment: `BENCH_FRAMES` (frames per scene, default 300; 1000 objects: a third),
//! `BENCH_SIZES` (object counts, default `10,100,1000`), `BENCH_SEED` (another random scene of
//! the same kind; default 0, the scenes the README's table was measured on).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::env_u64 as env;
use common::mot::{Boxed, Object, Rng, Scores, Tracked, scene, score};
use gstvideoai::objecttracker::tracker::{Algorithm, Config, Det, TrackState, Tracker};

const FPS: u64 = 25;
/// Detections before a track is reported: supervision's `minimum_consecutive_frames=2`
/// counts matches after the one that started the track, so it reports on the third.
const MIN_HITS: u32 = 3;

fn objects(n: usize, frames: usize, rng: &mut Rng) -> Vec<Object> {
    (0..n)
        .map(|_| {
            let (w, h) = (30.0 + 30.0 * rng.next(), 60.0 + 80.0 * rng.next());
            let (mut x, mut y) = (rng.next() * (1920.0 - w), rng.next() * (1080.0 - h));
            let (mut vx, mut vy) = (rng.jitter(8.0), rng.jitter(5.0));
            let path = (0..frames)
                .map(|_| {
                    let r = (x, y, w, h);
                    x += vx;
                    y += vy;
                    if x < 0.0 || x > 1920.0 - w {
                        vx = -vx;
                    }
                    if y < 0.0 || y > 1080.0 - h {
                        vy = -vy;
                    }
                    Some(r)
                })
                .collect();
            Object { class_id: 0, path }
        })
        .collect()
}

/// videoai's ByteTrack on `detections`: per-frame outputs (confirmed tracks) and mean ms per
/// update.
fn ours(detections: &[Vec<Boxed>]) -> (Vec<Vec<Tracked>>, f64) {
    let mut t = Tracker::new(Config {
        algorithm: Algorithm::ByteTrack,
        high: 0.5,
        low: 0.1,
        // Our default `new-track-margin` (0.1): supervision's `det_thresh`.
        start: 0.6,
        match_iou: 0.2,
        max_lost_ns: 1_000_000_000,
        min_hits: MIN_HITS,
        class_aware: true,
    });
    let mut out = Vec::new();
    let mut spent = 0.0;
    for (i, frame) in detections.iter().enumerate() {
        let dets: Vec<Det> = frame
            .iter()
            .map(|b| Det {
                rect: [b.rect.0, b.rect.1, b.rect.2, b.rect.3],
                class_id: b.class_id,
                label: String::new(),
                confidence: b.confidence,
            })
            .collect();
        let started = Instant::now();
        let matches = t.update(&dets, i as u64 * 1_000_000_000 / FPS);
        spent += started.elapsed().as_secs_f64() * 1e3;
        out.push(
            matches
                .iter()
                .zip(frame)
                .filter_map(|(m, b)| {
                    let track = &t.tracks[(*m)?];
                    let c = |v: f64| v.max(0.0).round() as u32;
                    // As the element reports it: an id once the track is confirmed.
                    let confirmed = track.shown(MIN_HITS) == TrackState::Confirmed;
                    Some(Tracked {
                        rect: (c(b.rect.0), c(b.rect.1), c(b.rect.2), c(b.rect.3)),
                        id: confirmed.then_some(track.id),
                        state: Some(if confirmed { "confirmed" } else { "tentative" }.to_string()),
                    })
                })
                .collect(),
        );
    }
    (out, spent / detections.len() as f64)
}

/// Mean ms per frame through the `objecttracker` element (the harness pushing each frame with
/// its detections as region metas, the element reading them, tracking, writing `track-id`s,
/// counting a line and a zone and attaching the analytics meta); frames are built beforehand.
fn through_element(detections: &[Vec<Boxed>]) -> f64 {
    use gstvideoai::eventlog::event::Detection;
    use gstvideoai::formats::detection;
    common::init();
    let mut h = gst_check::Harness::new_parse(
        "objecttracker high-threshold=0.5 match-threshold=0.2 max-lost=1000000000 min-hits=3 \
         lines=\"door:0,540,1920,540\" zones=\"left:0,0,960,0,960,1080,0,1080\"",
    );
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=1920,height=1080,framerate=25/1");
    let period = 1_000_000_000 / FPS;
    let frames: Vec<gst::Buffer> = detections
        .iter()
        .enumerate()
        .map(|(i, boxes)| {
            let mut b = gst::Buffer::with_size(1).unwrap();
            {
                let b = b.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(i as u64 * period));
                b.set_duration(gst::ClockTime::from_nseconds(period));
                for bx in boxes {
                    let c = |v: f64| v.max(0.0).round() as u32;
                    let r = bx.rect;
                    let d = Detection::new(
                        "person",
                        bx.class_id,
                        bx.confidence,
                        (c(r.0), c(r.1), c(r.2), c(r.3)),
                    );
                    detection::attach(b, &d, "bench@0");
                }
                detection::attach_inference(b, "bench@0", true, boxes.len() as u32);
            }
            b
        })
        .collect();
    let n = frames.len();
    let started = Instant::now();
    for f in frames {
        h.push_and_pull(f).expect("a frame out");
    }
    started.elapsed().as_secs_f64() * 1e3 / n as f64
}

/// supervision's ByteTrack on `detections`: outputs, mean ms per update, its version.
fn reference(detections: &[Vec<Boxed>]) -> (Vec<Vec<Tracked>>, f64, String) {
    let dir = common::TempDir::new("bench-track");
    let (input, output) = (dir.join("in.json"), dir.join("out.json"));
    let frames: Vec<Vec<[f64; 6]>> = detections
        .iter()
        .map(|f| {
            f.iter()
                .map(|b| {
                    [
                        b.rect.0,
                        b.rect.1,
                        b.rect.2,
                        b.rect.3,
                        b.confidence,
                        b.class_id as f64,
                    ]
                })
                .collect()
        })
        .collect();
    let spec = serde_json::json!({
        "frame_rate": FPS, "high": 0.5, "lost_frames": FPS, "min_hits": 2, "match_iou": 0.2,
        "frames": frames,
    });
    std::fs::write(&input, spec.to_string()).unwrap();
    let root = common::root();
    let path = format!(
        "{}:{}",
        root.join(".deps/bench-track").display(),
        root.join(".deps/bench-py").display()
    );
    let status = std::process::Command::new("python3")
        .arg(root.join("benches/supervision_bytetrack.py"))
        .arg(&input)
        .arg(&output)
        .env("PYTHONPATH", path)
        .env("PYTHONWARNINGS", "ignore")
        .status()
        .expect("python3");
    assert!(
        status.success(),
        "supervision failed: run scripts/setup-bench.sh"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    let times: Vec<f64> = v["update_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    let out = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f.as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let c = |i: usize| b[i].as_f64().unwrap().max(0.0).round() as u32;
                    Tracked {
                        rect: (c(0), c(1), c(2), c(3)),
                        id: Some(b[4].as_u64().unwrap()),
                        state: Some("confirmed".into()),
                    }
                })
                .collect()
        })
        .collect();
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    (out, mean, v["version"].as_str().unwrap_or("?").to_string())
}

fn main() {
    let frames = env("BENCH_FRAMES", 300) as usize;
    let seed = env("BENCH_SEED", 0);
    println!("\n### objecttracker vs supervision's ByteTrack (same detections, same scorer)\n");
    println!(
        "| objects | frames | videoai ms/frame: update / through the element | supervision ms/frame | speed-up through the element | videoai MOTA / IDF1 / IDsw / tracks per object | supervision MOTA / IDF1 / IDsw / tracks per object |"
    );
    println!("|---:|---:|---:|---:|---:|---|---|");
    let mut version = String::new();
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_SIZES: numbers separated by commas")
        })
        .collect();
    for n in sizes {
        let frames = if n >= 1000 { frames / 3 } else { frames };
        let mut rng = Rng(0x5eed ^ n as u64 ^ (seed << 20));
        let objs = objects(n, frames, &mut rng);
        let fps = n as f64 * 0.05;
        let s = scene(&objs, frames, &mut rng, 2.0, 0.05, 0.0, |_, _| false);
        // False positives: about 5 % of the object count a frame.
        let mut detections = s.detections.clone();
        for d in &mut detections {
            let k = (fps + rng.next()).floor() as usize;
            for _ in 0..k {
                d.push(Boxed {
                    rect: (rng.next() * 1860.0, rng.next() * 960.0, 40.0, 100.0),
                    class_id: 0,
                    confidence: 0.3 + 0.3 * rng.next(),
                });
            }
        }
        let (our_out, our_ms) = ours(&detections);
        let element_ms = through_element(&detections);
        let (ref_out, ref_ms, v) = reference(&detections);
        version = v;
        let fmt = |s: &Scores| {
            format!(
                "{:.3} / {:.3} / {} / {:.3}",
                s.mota, s.idf1, s.id_switches, s.tracks_per_object
            )
        };
        let (a, b) = (score(&s.truth, &our_out), score(&s.truth, &ref_out));
        println!(
            "| {n} | {frames} | {our_ms:.3} / {element_ms:.3} | {ref_ms:.3} | {:.0}× | {} | {} |",
            ref_ms / element_ms,
            fmt(&a),
            fmt(&b)
        );
    }
    println!(
        "\nReference: supervision {version} (sv.ByteTrack). Goal: equal or better MOTA and IDF1, at least 20× less time per frame."
    );
}
