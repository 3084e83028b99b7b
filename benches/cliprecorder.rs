// SPDX-License-Identifier: MPL-2.0
//! cliprecorder benchmark: `make bench-cliprecorder` (`cargo bench --bench cliprecorder`).
//!
//! What recording costs a camera: the still-camera scene (1280×720, 15 fps, a keyframe every
//! 2 s unless `BENCH_GOP` says otherwise) encoded at 4 Mb/s, its access units and a decoded frame per access unit pushed as a
//! live camera's two outputs (`resilientsrc encoded=true`) would bring them, as fast as they go,
//!
//! - baseline: both into `fakesink` (what the pipeline pays without a recorder);
//! - recorder: through `cliprecorder pre-roll=10 s post-roll=5 s`, with a trigger every 15 s
//!   of stream time (so the clip writer runs too, a clip of some 17 s per 15 s), then `fakesink`.
//!
//! Prints the process CPU time of each (median of the runs, alternated), the recorder's CPU
//! time per second of video (its share of one core at real time: goal < 2%), and the ring's
//! largest and mean size against bitrate × pre-roll (goal ≤ 1.2).
//!
//! Environment: `BENCH_SECONDS` (stream length, default 60), `BENCH_RUNS` (default 3),
//! `BENCH_GOP` (frames between keyframes, default 30: 2 s at 15 fps).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use gst::prelude::*;

const S: u64 = 1_000_000_000;
const PRE_ROLL: u64 = 10 * S;
const POST_ROLL: u64 = 5 * S;
const TRIGGER_EVERY: u64 = 15 * S;

/// The process's CPU time (user + system), seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The access units of the scene encoded for `seconds` with a keyframe every `gop` frames, and
/// their caps.
fn access_units(dir: &common::TempDir, seconds: u64, gop: u64) -> (Vec<gst::Buffer>, gst::Caps) {
    let path = dir.join("scene.mp4");
    // The encoder gives some 3/4 of its target on this scene: aimed so that it gives 4 Mb/s.
    common::still_scene::write_clip_at(
        &path,
        (seconds * common::still_scene::FPS) as usize,
        5_300_000,
        gop,
    );
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false",
        path.display()
    ));
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut units = Vec::new();
    let mut caps = None;
    while let Ok(sample) = sink.pull_sample() {
        caps.get_or_insert_with(|| sample.caps().unwrap().to_owned());
        units.push(sample.buffer_owned().unwrap());
    }
    p.set_state(gst::State::Null).unwrap();
    (units, caps.expect("an encoded stream"))
}

struct Run {
    cpu: f64,
    ring_max: u64,
    ring_mean: f64,
    /// The longest span of the ring (ns), and the largest ratio of the ring's bytes to the
    /// bytes of the pre-roll just before the same frame (the least a ring can hold).
    span_max: u64,
    local_max: f64,
    clips: u64,
}

/// Pushes every access unit and a small decoded frame per unit through `recorder` (or straight
/// into fakesinks); `sample_ring`: read the ring's size every 15 units (not in timed runs). The
/// decoded frames' queue holds two frames: they keep up with the access units as a decoder's
/// do (the ring covers the pre-roll before the decoded frames, so a lag would add to it).
fn run(
    units: &[gst::Buffer],
    caps: &gst::Caps,
    recorder: bool,
    clips: &std::path::Path,
    sample_ring: bool,
) -> Run {
    let raw_caps = "video/x-raw,format=I420,width=16,height=16,framerate=15/1";
    let desc = if recorder {
        format!(
            "appsrc name=raw is-live=true format=time caps=\"{raw_caps}\" block=true \
             max-bytes=800 ! cliprecorder name=rec location=\"{}\" stream-id=bench \
             pre-roll={PRE_ROLL} post-roll={POST_ROLL} ! fakesink sync=false \
             appsrc name=enc is-live=true format=time block=true max-bytes=4000000 ! rec.encoded",
            clips.display()
        )
    } else {
        format!(
            "appsrc name=raw is-live=true format=time caps=\"{raw_caps}\" block=true \
             max-bytes=800 ! fakesink sync=false \
             appsrc name=enc is-live=true format=time block=true max-bytes=4000000 \
             ! fakesink sync=false"
        )
    };
    let p = common::parse(&desc);
    let appsrc = |n: &str| p.by_name(n).unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let (raw, enc) = (appsrc("raw"), appsrc("enc"));
    enc.set_caps(Some(caps));
    let rec = p.by_name("rec");
    let frame = gst::Buffer::from_mut_slice(vec![16u8; 16 * 16 * 3 / 2]);
    p.set_state(gst::State::Playing).unwrap();
    let (mut ring_max, mut ring_sum, mut samples) = (0u64, 0u64, 0u64);
    let (mut span_max, mut local_max) = (0u64, 0f64);
    // Bytes of the units before each index, for the pre-roll's own bytes.
    let mut before = vec![0usize];
    for u in units {
        before.push(before.last().unwrap() + u.size());
    }
    let mut next_trigger = TRIGGER_EVERY;
    let start = cpu_seconds();
    for (i, u) in units.iter().enumerate() {
        let pts = u.pts().unwrap_or(gst::ClockTime::ZERO);
        enc.push_buffer(u.clone()).unwrap();
        let mut f = frame.copy();
        f.get_mut().unwrap().set_pts(pts);
        raw.push_buffer(f).unwrap();
        if let Some(rec) = &rec {
            if pts.nseconds() >= next_trigger {
                rec.emit_by_name::<()>("trigger", &[&"bench"]);
                next_trigger += TRIGGER_EVERY;
            }
            if sample_ring && i % 15 == 14 {
                let stats = rec.property::<gst::Structure>("stats");
                let bytes = stats.get::<u64>("ring-bytes").unwrap();
                ring_max = ring_max.max(bytes);
                span_max = span_max.max(stats.get::<u64>("ring-ns").unwrap());
                let from = units
                    .iter()
                    .position(|x| {
                        x.pts().unwrap_or_default().nseconds() + PRE_ROLL > pts.nseconds()
                    })
                    .unwrap_or(i);
                let least = (before[i + 1] - before[from]) as f64;
                // Once the pre-roll is full.
                if pts.nseconds() > PRE_ROLL + 2 * S {
                    ring_sum += bytes;
                    samples += 1;
                    local_max = local_max.max(bytes as f64 / least);
                }
            }
        }
    }
    enc.end_of_stream().unwrap();
    raw.end_of_stream().unwrap();
    // Ends the pipeline (EOS, then NULL); the counts stay readable.
    let o = common::run(&p, std::time::Duration::from_secs(120));
    let cpu = cpu_seconds() - start;
    let clips_written = rec
        .as_ref()
        .map(|r| {
            r.property::<gst::Structure>("stats")
                .get::<u64>("clips")
                .unwrap()
        })
        .unwrap_or(0);
    assert!(o.eos && o.errors.is_empty(), "{o:?}");
    Run {
        cpu,
        ring_max,
        ring_mean: ring_sum as f64 / samples.max(1) as f64,
        span_max,
        local_max,
        clips: clips_written,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    common::init();
    let seconds = common::env_u64("BENCH_SECONDS", 60).max(20);
    let runs = common::env_u64("BENCH_RUNS", 3).max(1);
    let dir = common::TempDir::new("bench-cliprecorder");
    let made = Instant::now();
    let gop = common::env_u64("BENCH_GOP", 2 * common::still_scene::FPS).max(1);
    let (units, caps) = access_units(&dir, seconds, gop);
    let bytes: usize = units.iter().map(|u| u.size()).sum();
    let bitrate = bytes as f64 * 8.0 / seconds as f64;
    println!(
        "stream: {} access units, {seconds} s, a keyframe every {gop} frames ({:.1} s), {:.2} Mb/s \
         (made in {:.1} s)",
        units.len(),
        gop as f64 / common::still_scene::FPS as f64,
        bitrate / 1e6,
        made.elapsed().as_secs_f64()
    );

    let (mut base, mut with) = (Vec::new(), Vec::new());
    let mut clips = 0;
    for r in 0..runs {
        base.push(run(&units, &caps, false, &dir.join("none"), false).cpu);
        let out = dir.join(&format!("clips-{r}"));
        let w = run(&units, &caps, true, &out, false);
        clips = w.clips;
        with.push(w.cpu);
        let _ = std::fs::remove_dir_all(&out);
    }
    let (base, with) = (median(base), median(with));
    let share = (with - base) / seconds as f64;
    println!("baseline (no recorder): {base:.3} s CPU for {seconds} s of video");
    println!("with cliprecorder:      {with:.3} s CPU ({clips} clips written)");
    println!(
        "recorder: {:.3} s CPU per second of video = {:.2}% of one core (goal < 2%) {}",
        share,
        share * 100.0,
        if share < 0.02 { "ok" } else { "MISSED" }
    );

    let m = run(&units, &caps, true, &dir.join("clips-m"), true);
    let budget = bitrate / 8.0 * (PRE_ROLL / S) as f64;
    println!(
        "ring: largest {:.2} MB, mean {:.2} MB; bitrate x pre-roll = {:.2} MB: {:.2}x largest, \
         {:.2}x mean (goal <= 1.2) {}",
        m.ring_max as f64 / 1e6,
        m.ring_mean / 1e6,
        budget / 1e6,
        m.ring_max as f64 / budget,
        m.ring_mean / budget,
        if m.ring_max as f64 <= 1.2 * budget {
            "ok"
        } else {
            "MISSED"
        }
    );
    println!(
        "ring: longest {:.2} s for a pre-roll of {} s (from the keyframe before: at most one GOP \
         more); at most {:.2}x the bytes of the pre-roll before the same frame (the local bitrate)",
        m.span_max as f64 / 1e9,
        PRE_ROLL / S,
        m.local_max
    );
}
