// SPDX-License-Identifier: MPL-2.0
//! motiondetect benchmark: `make bench-motiondetect` (`cargo bench --bench motiondetect`).
//!
//! The cost of looking for motion on one 1920×1080 NV12 frame, on one thread (the streaming
//! thread is one): a textured picture with ±6 levels of noise and a square moving across it.
//! Prints the time per frame of
//! - the baseline: reading the whole luma plane once (the sum of its bytes), the least any
//!   detector that looks at every pixel pays;
//! - the detector alone (`motiondetect`'s [`Detector::analyse`]);
//! - the whole element (`appsrc ! motiondetect ! fakesink`: mapping, metas, stats);
//!
//! with the ratio to the baseline, and checks the goal: ≤ 0.5 ms per frame through the element.
//!
//! Environment: `BENCH_FRAMES` (frames timed, default 600).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use gst::prelude::*;
use gstvideoai::motiondetect::detector::{Config, Detector};

const W: usize = 1920;
const H: usize = 1080;
/// Distinct frames made (the square's positions); the timed frames cycle through them.
const MADE: usize = 60;

/// NV12 frames: a textured picture, noise, a 120-pixel square moving right.
fn frames() -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..MADE)
        .map(|f| {
            let mut out = vec![128u8; W * H * 3 / 2];
            let sx = 100 + f * 25;
            for y in 0..H {
                for x in 0..W {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let noise = (seed % 13) as i32 - 6;
                    let mut v = 60 + ((x * 7 + y * 3) % 90) as i32 + noise;
                    if (sx..sx + 120).contains(&x) && (400..520).contains(&y) {
                        v = 235;
                    }
                    out[y * W + x] = v.clamp(0, 255) as u8;
                }
            }
            out
        })
        .collect()
}

fn per_frame(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e3 / n as f64
}

fn main() {
    common::init();
    let n = common::env_u64("BENCH_FRAMES", 600) as usize;
    let frames = frames();

    // Baseline: one read of the luma plane.
    let start = Instant::now();
    let mut sink = 0u64;
    for i in 0..n {
        let luma = &frames[i % MADE][..W * H];
        sink = sink.wrapping_add(luma.iter().map(|&b| b as u64).sum::<u64>());
    }
    let baseline = per_frame(start.elapsed(), n);
    std::hint::black_box(sink);

    // The detector alone.
    let mut d = Detector::new(Config::default(), W as u32, H as u32, &[]).unwrap();
    let mut moving = 0;
    let start = Instant::now();
    for i in 0..n {
        let (m, _) = d.analyse(&frames[i % MADE][..W * H], W, 1.0 / 15.0);
        moving += m.moving as usize;
    }
    let detector = per_frame(start.elapsed(), n);

    // The element.
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=video/x-raw,format=NV12,width=1920,height=1080,framerate=15/1 \
         ! motiondetect name=m ! fakesink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let buffers: Vec<gst::Buffer> = frames
        .iter()
        .map(|f| gst::Buffer::from_slice(f.clone()))
        .collect();
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in 0..n {
        let mut b = buffers[i % MADE].copy();
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * 66_666_667));
            b.set_duration(gst::ClockTime::from_nseconds(66_666_667));
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    let stats = pipeline
        .by_name("m")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    let element = stats.get::<f64>("mean-ms").unwrap();
    let element_moving = stats.get::<u64>("moving-frames").unwrap();

    println!("\n## motiondetect: one 1920x1080 NV12 frame, one thread ({n} frames)\n");
    println!("| what | ms per frame | vs reading the luma plane once |");
    println!("|---|---|---|");
    println!("| baseline: sum of the luma plane's bytes | {baseline:.3} | 1.00x |");
    println!(
        "| detector alone (frames with motion: {moving} of {n}) | {detector:.3} | {:.2}x |",
        detector / baseline
    );
    println!(
        "| motiondetect element, transform_ip (frames with motion: {element_moving} of {n}) | {element:.3} | {:.2}x |",
        element / baseline
    );
    let goal = 0.5;
    println!(
        "\nGoal: <= {goal} ms per 1080p NV12 frame through the element: {} ({element:.3} ms)",
        if element <= goal { "met" } else { "NOT met" }
    );
}
