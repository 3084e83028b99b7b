// SPDX-License-Identifier: MPL-2.0
//! Cameras per machine: `make bench-density` (`cargo bench --bench density`).
//!
//! One process, N cameras. Each camera is the still-camera scene of the motion tests
//! (tests/common/still_scene.rs: a table with a cup, a motorbike crossing during a fifth of the
//! time, noise, a brightness ramp), as a 1280×720 15 fps H.264 file played at its own pace
//! (`identity sync=true`: a camera sends its frames when they happen, whatever follows), decoded
//! on the CPU (`avdec_h264`), detected by yolov3-tiny (`onnxinfer threads=1`: one inference thread
//! a camera) and tracked (`objecttracker` with the counting line). The clip holds the scene twice;
//! camera k starts about `k × 137` frames into it (mod the scene's 400, down to a keyframe), so the
//! cameras' motion comes
//! at different times, as a site's does (each camera still moves a fifth of the time).
//!
//! For each configuration the largest N at which every camera keeps up is found (N = 1, 2, …):
//! over `BENCH_SECONDS` (default 20) the p99 of each frame's latency from its camera's pace to the
//! end of the pipeline stays ≤ 1 s, and no more frames are missing at the end than one second's
//! worth (frames still on their way). The configurations:
//! - (a) FP32 on every frame (today's default);
//! - (b) FP32 with `interval=3` (5 fps of detection);
//! - (c) INT8 (`scripts/quantize.py` on the same clip: Conv layers, checked against FP32);
//! - (d) INT8 with `motiondetect ! … onnxinfer motion-gate=true`.
//!
//! Prints, per configuration: cameras kept up with, the share of frames inferred, the worst p99
//! latency and the line counts of the cameras at that N (a camera whose trial covered the
//! motorbike's crossing counts `out 1`, others `out 0`), and where one camera's CPU goes (a
//! trial of one camera alone: process CPU time, and inference, preprocessing and motion detection
//! from the elements' stats, which are CPU time there; decoding from a trial of the same camera
//! decoded alone, paced the same way, into a fakesink; the rest is parsing, tracking, conversion
//! and GStreamer). Goal: (d) ≥ 4× the cameras of (a).
//!
//! The latency is measured by the benchmark's own pad probes, from the moment a frame leaves its
//! camera's pacing to the end of the pipeline, rather than by videoaitrace, whose latency starts
//! at the source element: here a `filesrc` that reads ahead of the pacing. Nothing in these
//! pipelines drops a frame (no leaky queue); the frames missing at the end of a trial are those
//! still on their way.
//!
//! Environment: `BENCH_SECONDS` (trial length), `BENCH_MAX` (cameras tried at most, default 16),
//! `BENCH_CONFIGS` (letters, default `abcd`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::still_scene;
use gst::prelude::*;

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Fp32,
    Fp32Interval3,
    Int8,
    Int8Gated,
}

impl Config {
    fn letter(self) -> char {
        match self {
            Config::Fp32 => 'a',
            Config::Fp32Interval3 => 'b',
            Config::Int8 => 'c',
            Config::Int8Gated => 'd',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Config::Fp32 => "(a) FP32, every frame",
            Config::Fp32Interval3 => "(b) FP32, interval=3",
            Config::Int8 => "(c) INT8, every frame",
            Config::Int8Gated => "(d) INT8 + motion gate",
        }
    }
}

/// What one trial measured.
struct Trial {
    kept_up: bool,
    worst_p99_ms: f64,
    missing: u64,
    counts: Vec<String>,
    cpu_s: f64,
    inference_s: f64,
    preprocess_s: f64,
    motion_s: f64,
    inferred: u64,
    frames: u64,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Camera `i`: its clip parsed, paced and decoded (what every configuration and the decoding
/// trial share).
fn decoded(i: usize, clip: &Path) -> String {
    format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse name=parse{i} ! identity name=pace{i} sync=true \
         ! queue ! avdec_h264",
        clip.display()
    )
}

fn branch(i: usize, clip: &Path, model: &Path, config: Config) -> String {
    let (motion, gate, interval) = match config {
        Config::Int8Gated => (
            format!(
                "motiondetect name=m{i} ignore-zones=\"{}\" ! ",
                still_scene::IGNORE_ZONES
            ),
            "motion-gate=true",
            1,
        ),
        Config::Fp32Interval3 => (String::new(), "", 3),
        _ => (String::new(), "", 1),
    };
    format!(
        "{} ! {motion}videoconvert ! onnxinfer name=i{i} model-location=\"{}\" \
         model-type=yolov5 iou-threshold=0.2 threads=1 interval={interval} {gate} \
         ! objecttracker name=t{i} lines=\"{}\" ! fakesink name=s{i} sync=false ",
        decoded(i, clip),
        model.display(),
        still_scene::LINES
    )
}

/// CPU seconds of one camera's decoding alone over `seconds`: the same clip, paced the same way,
/// decoded by the same `avdec_h264` into a fakesink.
fn decode_alone(clip: &Path, seconds: u64) -> f64 {
    let p = common::parse(&format!("{} ! fakesink sync=false", decoded(0, clip)));
    let bus = p.bus().unwrap();
    let cpu0 = cpu_seconds();
    p.set_state(gst::State::Playing).unwrap();
    if let Some(m) = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(seconds),
        &[gst::MessageType::Error, gst::MessageType::Eos],
    ) {
        panic!("the decoding trial stopped early: {m:?}");
    }
    let cpu_s = cpu_seconds() - cpu0;
    p.set_state(gst::State::Null).unwrap();
    cpu_s
}

fn trial(n: usize, clip: &Path, model: &Path, config: Config, seconds: u64) -> Trial {
    let desc: String = (0..n).map(|i| branch(i, clip, model, config)).collect();
    let p = common::parse(&desc);
    // Per camera: when each frame (by PTS) left its camera, and the latencies at the end.
    let sent: Arc<Mutex<Vec<HashMap<u64, Instant>>>> =
        Arc::new(Mutex::new(vec![HashMap::new(); n]));
    let lat: Arc<Mutex<Vec<Vec<f64>>>> = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let paced = Arc::new(Mutex::new(vec![0u64; n]));
    for i in 0..n {
        let pace = p.by_name(&format!("pace{i}")).unwrap();
        let (sent_, paced_) = (sent.clone(), paced.clone());
        pace.static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                    sent_.lock().unwrap()[i].insert(pts.nseconds(), Instant::now());
                    paced_.lock().unwrap()[i] += 1;
                }
                gst::PadProbeReturn::Ok
            });
        let sink = p.by_name(&format!("s{i}")).unwrap();
        let (sent_, lat_) = (sent.clone(), lat.clone());
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(pts) = info.buffer().and_then(|b| b.pts())
                    && let Some(t) = sent_.lock().unwrap()[i].remove(&pts.nseconds())
                {
                    lat_.lock().unwrap()[i].push(t.elapsed().as_secs_f64() * 1e3);
                }
                gst::PadProbeReturn::Ok
            });
    }
    // Each camera from its own place in the scene: the frames before it (to a keyframe, every
    // 2 s) are dropped before they are paced, and the pacing runs from there (a pad offset).
    for i in 0..n {
        let gop = 2 * still_scene::FPS as usize;
        let offset = (i * 137) % still_scene::FRAMES / gop * gop;
        let offset_ns = offset as u64 * 1_000_000_000 / still_scene::FPS;
        let pace = p.by_name(&format!("pace{i}")).unwrap();
        pace.static_pad("sink")
            .unwrap()
            .set_offset(-(offset_ns as i64));
        let parsed = p.by_name(&format!("parse{i}")).unwrap();
        parsed
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                match info.buffer().and_then(|b| b.pts()) {
                    Some(pts) if pts.nseconds() < offset_ns => gst::PadProbeReturn::Drop,
                    _ => gst::PadProbeReturn::Ok,
                }
            });
    }
    let bus = p.bus().unwrap();
    let cpu0 = cpu_seconds();
    p.set_state(gst::State::Playing).unwrap();
    let end = Instant::now() + Duration::from_secs(seconds);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(m) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        ) {
            panic!("the pipeline stopped early: {m:?}");
        }
    }
    let cpu_s = cpu_seconds() - cpu0;
    let stats = |name: String| {
        p.by_name(&name)
            .map(|e| e.property::<gst::Structure>("stats"))
    };
    let (mut inference_s, mut preprocess_s, mut motion_s, mut inferred, mut frames) =
        (0.0, 0.0, 0.0, 0u64, 0u64);
    let mut counts = Vec::new();
    for i in 0..n {
        let s = stats(format!("i{i}")).unwrap();
        let inf = s.get::<u64>("inferred").unwrap();
        inferred += inf;
        frames += s.get::<u64>("frames").unwrap();
        inference_s += inf as f64 * s.get::<f64>("inference-mean-ms").unwrap() / 1e3;
        preprocess_s += inf as f64 * s.get::<f64>("preprocess-mean-ms").unwrap() / 1e3;
        if let Some(m) = stats(format!("m{i}")) {
            motion_s +=
                m.get::<u64>("frames").unwrap() as f64 * m.get::<f64>("mean-ms").unwrap() / 1e3;
        }
        let t = stats(format!("t{i}")).unwrap();
        let line = t.get::<gst::Array>("lines").unwrap();
        let l = line.first().unwrap().get::<gst::Structure>().unwrap();
        counts.push(format!(
            "in {} out {}",
            l.get::<u64>("in").unwrap(),
            l.get::<u64>("out").unwrap()
        ));
    }
    p.set_state(gst::State::Null).unwrap();
    let lat = lat.lock().unwrap();
    let paced = paced.lock().unwrap();
    let mut worst_p99_ms: f64 = 0.0;
    let mut missing = 0u64;
    for i in 0..n {
        let mut l = lat[i].clone();
        l.sort_by(f64::total_cmp);
        let p99 = l
            .get(((l.len() as f64 * 0.99) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::INFINITY);
        worst_p99_ms = worst_p99_ms.max(p99);
        missing = missing.max(paced[i].saturating_sub(l.len() as u64));
    }
    Trial {
        kept_up: worst_p99_ms <= 1000.0 && missing <= still_scene::FPS,
        worst_p99_ms,
        missing,
        counts,
        cpu_s,
        inference_s,
        preprocess_s,
        motion_s,
        inferred,
        frames,
    }
}

/// The INT8 model for the clip (scripts/quantize.py, kept in `dir`), or why there is none.
fn int8_model(dir: &Path, clip: &Path) -> Result<PathBuf, String> {
    let out = dir.join("yolov3-tiny-int8.onnx");
    if out.is_file() {
        return Ok(out);
    }
    let run = common::quantize_command()
        .args(["--model", common::coco_model().to_str().unwrap()])
        .args(["--source", clip.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args(["--frames", "32", "--props", "iou-threshold=0.2"])
        .output()
        .map_err(|e| e.to_string())?;
    eprint!("{}", String::from_utf8_lossy(&run.stdout));
    if run.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&run.stderr).trim().to_string())
    }
}

fn main() {
    common::init();
    let seconds = common::env_u64("BENCH_SECONDS", 20);
    let max = common::env_u64("BENCH_MAX", 16) as usize;
    let configs: String = std::env::var("BENCH_CONFIGS").unwrap_or_else(|_| "abcd".into());
    let dir = common::root().join("target/bench-density");
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("still-720p15-twice.mp4");
    if !clip.is_file() {
        eprintln!("[density] making the clip {}", clip.display());
        still_scene::write_clip(&clip, 2 * still_scene::FRAMES);
    }
    let fp32 = common::coco_model();
    let int8 = int8_model(&dir, &clip);
    if let Err(why) = &int8 {
        eprintln!("[density] no INT8 model: {why}");
    }
    let decode_s = decode_alone(&clip, seconds);
    let mut rows: Vec<(Config, usize, Option<(Trial, Trial)>)> = Vec::new();
    for config in [
        Config::Fp32,
        Config::Fp32Interval3,
        Config::Int8,
        Config::Int8Gated,
    ] {
        if !configs.contains(config.letter()) {
            continue;
        }
        let model = match config {
            Config::Fp32 | Config::Fp32Interval3 => fp32.clone(),
            _ => match &int8 {
                Ok(m) => m.clone(),
                Err(_) => {
                    rows.push((config, 0, None));
                    continue;
                }
            },
        };
        let mut best: Option<(usize, Trial)> = None;
        let mut alone: Option<Trial> = None;
        for n in 1..=max {
            let t = trial(n, &clip, &model, config, seconds);
            if n == 1 {
                // Where the CPU goes: from one camera alone, where the elements' times (wall
                // clock) are their CPU time (one inference thread, nothing else waiting).
                alone = Some(trial(1, &clip, &model, config, seconds));
            }
            eprintln!(
                "[density] {} with {n} cameras: p99 {:.0} ms, {} frames missing, {}",
                config.name(),
                t.worst_p99_ms,
                t.missing,
                if t.kept_up { "kept up" } else { "fell behind" }
            );
            if !t.kept_up {
                break;
            }
            best = Some((n, t));
        }
        match best {
            Some((n, t)) => rows.push((config, n, Some((t, alone.expect("tried alone"))))),
            None => rows.push((config, 0, None)),
        }
    }

    println!(
        "\n## Cameras per machine: 1280x720 15 fps H.264 still-camera scene, yolov3-tiny, {} s a trial\n",
        seconds
    );
    println!(
        "| configuration | cameras | vs (a) | frames inferred | p99 latency | line counts (each camera) | one camera's CPU | inference | preprocess | motion | decode | the rest (parse, convert, track, GStreamer) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let base = rows
        .iter()
        .find(|r| r.0 == Config::Fp32)
        .map(|r| r.1)
        .unwrap_or(0);
    for (config, n, t) in &rows {
        let ratio = if base > 0 {
            format!("{:.1}x", *n as f64 / base as f64)
        } else {
            "-".into()
        };
        match t {
            Some((t, a)) => {
                let pct = |s: f64| format!("{:.0} %", 100.0 * s / a.cpu_s.max(1e-9));
                let rest = a.cpu_s - a.inference_s - a.preprocess_s - a.motion_s - decode_s;
                let mut counts = t.counts.clone();
                counts.sort();
                counts.dedup();
                println!(
                    "| {} | {n} | {ratio} | {:.0} % | {:.0} ms | {} | {:.0} % of a core | {} | {} | {} | {} | {} |",
                    config.name(),
                    100.0 * t.inferred as f64 / t.frames.max(1) as f64,
                    t.worst_p99_ms,
                    counts.join("; "),
                    100.0 * a.cpu_s / seconds as f64,
                    pct(a.inference_s),
                    pct(a.preprocess_s),
                    pct(a.motion_s),
                    pct(decode_s),
                    pct(rest.max(0.0))
                );
            }
            None => println!(
                "| {} | {n} | {ratio} | - | - | - | - | - | - | - | - | - |",
                config.name()
            ),
        }
    }
    // The same counts: camera i (the same part of the scene) counted the same in every
    // configuration that ran it.
    let most = rows.iter().map(|r| r.1).max().unwrap_or(0);
    let differ: Vec<usize> = (0..most)
        .filter(|&i| {
            let counts: Vec<&String> = rows
                .iter()
                .filter_map(|r| r.2.as_ref().and_then(|(t, _)| t.counts.get(i)))
                .collect();
            counts.windows(2).any(|w| w[0] != w[1])
        })
        .collect();
    println!(
        "\nLine counts, camera by camera, equal in every configuration that ran the camera: {}",
        if differ.is_empty() {
            "yes".to_string()
        } else {
            format!("NO (cameras {differ:?})")
        }
    );
    let d = rows.iter().find(|r| r.0 == Config::Int8Gated).map(|r| r.1);
    if let (Some(d), true) = (d, base > 0) {
        println!(
            "\nGoal: (d) >= 4x the cameras of (a): {} ({d} against {base})",
            if d >= 4 * base { "met" } else { "NOT met" }
        );
    }
}
