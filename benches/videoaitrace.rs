// SPDX-License-Identifier: MPL-2.0
//! videoaitrace benchmark: `make bench-videoaitrace` (`cargo bench --bench videoaitrace`).
//!
//! The tracer's per-buffer cost on `fakesrc ! identity ×5 ! fakesink` (1M buffers of 16 bytes,
//! timestamped by fakesrc's `datarate`, six pushes a buffer), each variant a `gst-launch-1.0`
//! process (tracers are per process), timed from start to exit:
//!
//! | variant | `GST_TRACERS` |
//! |---|---|
//! | untraced | unset |
//! | any tracer | `factories`: GStreamer's own tracer with no per-buffer hook. Once any tracer is loaded, GStreamer dispatches every hook point (pushes, refs, queries…) through its tracer tables: this is the floor every tracer pays |
//! | videoaitrace | `videoaitrace` |
//! | + exporter | `videoaitrace(prometheus=127.0.0.1:PORT)`, scraped 10 times a second meanwhile |
//!
//! Rounds are interleaved (the variants share the machine's noise alike); the best round of
//! each counts. Prints a markdown table with ratios to untraced and to "any tracer".
//!
//! Environment: `BENCH_BUFFERS` (default 1000000), `BENCH_ROUNDS` (default 5).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::env_u64 as env;

fn run(tracers: Option<&str>, buffers: u64) -> Duration {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q");
    cmd.args(
        format!(
            "fakesrc num-buffers={buffers} sizetype=fixed sizemax=16 filltype=nothing datarate=16000 \
             ! identity ! identity ! identity ! identity ! identity ! fakesink"
        )
        .split_whitespace(),
    );
    cmd.env("GST_PLUGIN_PATH", common::root().join("target/release"));
    cmd.env_remove("GST_TRACERS");
    if let Some(t) = tracers {
        cmd.env("GST_TRACERS", t);
    }
    cmd.stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::null());
    let started = Instant::now();
    let status = cmd.status().expect("gst-launch-1.0");
    assert!(status.success(), "{tracers:?}: {status}");
    started.elapsed()
}

fn main() {
    let buffers = env("BENCH_BUFFERS", 1_000_000);
    let rounds = env("BENCH_ROUNDS", 5);
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let exporter = format!("videoaitrace(prometheus={addr})");
    let variants: [(&str, Option<&str>); 4] = [
        ("untraced", None),
        ("any tracer (factories)", Some("factories")),
        ("videoaitrace", Some("videoaitrace")),
        ("videoaitrace + exporter, scraped 10/s", Some(&exporter)),
    ];

    // 10 scrapes a second whenever the exporter is up.
    let scraper = common::prometheus::Scraper::start(&addr, Duration::from_millis(100), false);

    let mut best = [Duration::MAX; 4];
    for round in 0..rounds {
        for (i, (name, tracers)) in variants.iter().enumerate() {
            let t = run(*tracers, buffers);
            eprintln!("round {round}: {name}: {:.3} s", t.as_secs_f64());
            best[i] = best[i].min(t);
        }
    }
    let scrapes = scraper.stop();

    let per_buffer = |d: Duration| d.as_nanos() as f64 / buffers as f64;
    println!(
        "\n### videoaitrace overhead: {buffers} buffers, fakesrc ! identity x5 ! fakesink (best of {rounds})\n"
    );
    println!("| variant | time (s) | ns per buffer | vs untraced | vs any tracer |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "| {name} | {:.3} | {:.0} | {:.2}x | {:.2}x |",
            best[i].as_secs_f64(),
            per_buffer(best[i]),
            best[i].as_secs_f64() / best[0].as_secs_f64(),
            best[i].as_secs_f64() / best[1].as_secs_f64(),
        );
    }
    println!(
        "\nScrapes during the exporter runs: {}. Goal: videoaitrace + exporter within 1.3x of any tracer.",
        scrapes
    );
}
