// SPDX-License-Identifier: MPL-2.0
//! framesync benchmark: `make bench-framesync` (`cargo bench --bench framesync`).
//!
//! 1. Throughput of 8 streams of 640×640 NV12 frames through `framesync ! onnxinfer` (all 8
//!    frames of a tick preprocessed into one `[8,3,640,640]` tensor, one `session.run`) vs 8
//!    independent `onnxinfer` pipelines on the same model, in the same process, run in the
//!    same way. The model is a synthetic detector with a dynamic batch dimension and three
//!    stride-2 3×3 convolutions (16/32/64 channels, about 0.56 GFLOP per frame), written by the
//!    benchmark (`tests/common/onnx_model.rs`), since no batch-capable detector ships in a
//!    registry package.
//! 2. framesync's own cost per batch (aggregate: picking frames and building the batch,
//!    pushing excluded), from its `stats`, with and without inference downstream.
//!
//! The independent pipelines run once with ONNX Runtime's default threads (one per core, per
//! session) and once with `threads=1` per session (no oversubscription); the better of the two
//! is the baseline.
//!
//! Environment: `BENCH_FRAMES` (frames per stream, default 32), `BENCH_ROUNDS` (default 2; the
//! best round counts), `BENCH_STREAMS` (default 8).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use common::env_u64 as env;

fn source(i: u64, frames: u64, size: u32) -> String {
    format!(
        "videotestsrc num-buffers={frames} pattern={} ! \
         video/x-raw,format=NV12,width={size},height={size},framerate=30/1",
        ["smpte", "ball", "snow", "circular"][i as usize % 4]
    )
}

/// Plays `p`; returns frames per second over the time between the first and the last output
/// (so model loading and warm-up are not counted), counting `per_buffer` frames per buffer
/// reaching any element named `sink*`.
fn throughput(p: &gst::Pipeline, sinks: &[&str], per_buffer: u64) -> f64 {
    let times = Arc::new(Mutex::new(Vec::<Instant>::new()));
    for name in sinks {
        let t = times.clone();
        p.by_name(name)
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                t.lock().unwrap().push(Instant::now());
                gst::PadProbeReturn::Ok
            });
    }
    let out = common::run(p, Duration::from_secs(1200));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let mut t = times.lock().unwrap().clone();
    t.sort();
    let span = *t.last().unwrap() - t[0];
    ((t.len() as u64 - 1) * per_buffer) as f64 / span.as_secs_f64()
}

fn main() {
    common::init();
    let frames = env("BENCH_FRAMES", 32);
    let rounds = env("BENCH_ROUNDS", 2);
    let streams = env("BENCH_STREAMS", 8);
    let dir = common::TempDir::new("bench-framesync");
    let model = dir.join("conv3-batch.onnx");
    common::onnx_model::brightness_box_model(&model, 640, 3);
    let infer = format!(
        "onnxinfer model-location=\"{}\" model-type=yolov5",
        model.display()
    );

    let mut best_batched: f64 = 0.0;
    let mut best_piped: f64 = 0.0;
    let mut best_single: f64 = 0.0;
    let mut best_single_t1: f64 = 0.0;
    let mut overhead_infer = 0.0;
    for round in 0..rounds {
        // Batched: N streams → framesync → one onnxinfer.
        let mut desc = format!("framesync name=sync ! {infer} name=inf ! fakesink name=sink0 ");
        for i in 0..streams {
            desc += &format!(" {} ! sync.sink_{i}", source(i, frames, 640));
        }
        let p = common::parse(&desc);
        let fps = throughput(&p, &["sink0"], streams);
        let stats = p
            .by_name("sync")
            .unwrap()
            .property::<gst::Structure>("stats");
        let inf = p
            .by_name("inf")
            .unwrap()
            .property::<gst::Structure>("stats");
        let runs = inf.get::<u64>("batch-runs").unwrap();
        let pre_ms = inf.get::<f64>("preprocess-mean-ms").unwrap();
        let inf_ms = inf.get::<f64>("inference-mean-ms").unwrap();
        let batches = inf.get::<u64>("batches").unwrap();
        overhead_infer = stats.get::<f64>("overhead-us-mean").unwrap();
        best_batched = best_batched.max(fps);

        // The same, preprocessing batch N+1 while batch N is inferred.
        let mut desc =
            format!("framesync name=sync ! {infer} pipelining=true ! fakesink name=sink0 ");
        for i in 0..streams {
            desc += &format!(" {} ! sync.sink_{i}", source(i, frames, 640));
        }
        let piped = throughput(&common::parse(&desc), &["sink0"], streams);
        best_piped = best_piped.max(piped);

        // Independent: N pipelines (branches) each with its own onnxinfer.
        let names: Vec<String> = (0..streams).map(|i| format!("sink{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut single = [0.0; 2];
        for (k, threads) in ["", " threads=1"].iter().enumerate() {
            let mut desc = String::new();
            for i in 0..streams {
                desc += &format!(
                    " {} ! {infer}{threads} ! fakesink name=sink{i}",
                    source(i, frames, 640)
                );
            }
            single[k] = throughput(&common::parse(&desc), &refs, 1);
        }
        best_single = best_single.max(single[0]);
        best_single_t1 = best_single_t1.max(single[1]);
        println!(
            "round {round}: batched {fps:.1} frames/s ({batches} batches, {runs} model runs, \
             per frame: preprocess {pre_ms:.2} ms, inference {inf_ms:.2} ms), pipelined \
             {piped:.1}, independent {:.1} frames/s (threads=1: {:.1})",
            single[0], single[1]
        );
    }

    // framesync alone: its cost per batch without inference behind it. The batch holds
    // references, so the frame size does not matter to framesync; small frames keep the
    // sources from taking the CPU away from it.
    let mut desc = String::from("framesync name=sync ! fakesink name=sink0 ");
    for i in 0..streams {
        desc += &format!(" {} ! sync.sink_{i}", source(i, 2000, 16));
    }
    let p = common::parse(&desc);
    let batches_per_s = throughput(&p, &["sink0"], 1);
    let stats = p
        .by_name("sync")
        .unwrap()
        .property::<gst::Structure>("stats");
    let overhead_alone = stats.get::<f64>("overhead-us-mean").unwrap();
    let overhead_max = stats.get::<f64>("overhead-us-max").unwrap();

    println!();
    println!(
        "{streams} streams × {frames} frames of 640×640 NV12, synthetic 3-conv detector with a dynamic batch, CPU ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| setup | frames/s | ratio |");
    println!("|---|---|---|");
    let baseline = best_single.max(best_single_t1);
    println!(
        "| {streams} independent onnxinfer pipelines, default threads | {best_single:.1} | {:.2} |",
        best_single / baseline
    );
    println!(
        "| {streams} independent onnxinfer pipelines, threads=1 each | {best_single_t1:.1} | {:.2} |",
        best_single_t1 / baseline
    );
    println!(
        "| framesync ! onnxinfer (one run per batch of {streams}) | {best_batched:.1} | **{:.2}** |",
        best_batched / baseline
    );
    println!(
        "| framesync ! onnxinfer pipelining=true | {best_piped:.1} | **{:.2}** |",
        best_piped / baseline
    );
    println!();
    println!("| framesync per batch of {streams} | µs |");
    println!("|---|---|");
    println!("| with onnxinfer downstream (mean) | {overhead_infer:.1} |");
    println!("| alone (16×16 frames), {batches_per_s:.0} batches/s (mean) | {overhead_alone:.1} |");
    println!("| alone (max) | {overhead_max:.1} |");
    println!();
    println!("GPU: none on this machine; run the same command where the CUDA provider is built.");
}
