// SPDX-License-Identifier: MPL-2.0
//! adaptivequeue benchmark: `cargo bench --bench adaptivequeue` (or `make bench-adaptivequeue`).
//!
//! 1. Per-buffer overhead: `fakesrc num-buffers=N ! Q ! fakesink` with `queue` and with
//!    `adaptivequeue` (defaults), alternating runs, median wall time; prints the ratio (goal:
//!    adaptivequeue / queue <= 1.0).
//! 2. Latency under overload: a live 30 fps source, a consumer at 10 fps
//!    (`identity sleep-time=100000`), for `queue` (defaults: blocks the source), `queue
//!    leaky=downstream`, an unbounded `queue`, and `adaptivequeue`; prints the p50/p99/max of
//!    (sink running time - buffer running time) and how many frames reached the sink.
//!
//! Environment: `BENCH_BUFFERS` (default 1000000), `BENCH_RUNS` (5), `BENCH_SECONDS` (8).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use common::env_u64 as env;

fn throughput_run(element: &str, buffers: u64) -> Duration {
    let p = common::parse(&format!(
        "fakesrc num-buffers={buffers} ! {element} ! fakesink"
    ));
    let start = Instant::now();
    let out = common::run(&p, Duration::from_secs(600));
    let took = start.elapsed();
    assert!(out.eos && out.errors.is_empty(), "{element}: {out:?}");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn overload_run(element: &str, seconds: u64) -> (Vec<Duration>, u64) {
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers={} ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! {element} ! identity sleep-time=100000 ! fakesink name=sink sync=false",
        seconds * 30
    ));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let lat2 = lat.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(buf), Some(el)) = (info.buffer(), pad.parent_element()) else {
                return gst::PadProbeReturn::Ok;
            };
            let seg = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|s| s.segment().downcast_ref::<gst::ClockTime>().cloned());
            if let (Some(seg), Some(clock), Some(base)) = (seg, el.clock(), el.base_time())
                && let Some(rt) = buf.pts().and_then(|pts| seg.to_running_time(pts))
            {
                let now = clock.time().saturating_sub(base);
                lat2.lock()
                    .unwrap()
                    .push(Duration::from_nanos(now.saturating_sub(rt).nseconds()));
            }
            gst::PadProbeReturn::Ok
        });
    // Queues that fall behind do not reach EOS in time: stop at the deadline.
    common::run(&p, Duration::from_secs(seconds + 1));
    let mut v = lat.lock().unwrap().clone();
    v.sort();
    let n = v.len() as u64;
    (v, n)
}

fn main() {
    common::init();
    let buffers = env("BENCH_BUFFERS", 1_000_000);
    let runs = env("BENCH_RUNS", 5).max(1);
    let seconds = env("BENCH_SECONDS", 8).max(2);
    println!(
        "# adaptivequeue benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "## per-buffer overhead: fakesrc num-buffers={buffers} ! Q ! fakesink, median of {runs}"
    );
    let (mut q, mut aq) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        q.push(throughput_run("queue", buffers));
        aq.push(throughput_run("adaptivequeue", buffers));
    }
    let (q, aq) = (median(q), median(aq));
    let ns = |d: Duration| d.as_nanos() as f64 / buffers as f64;
    println!("| element | time | ns/buffer |");
    println!("|---|---|---|");
    println!("| queue | {:.3} s | {:.0} |", q.as_secs_f64(), ns(q));
    println!(
        "| adaptivequeue | {:.3} s | {:.0} |",
        aq.as_secs_f64(),
        ns(aq)
    );
    println!(
        "ratio adaptivequeue/queue = {:.2} (goal <= 1.0)",
        aq.as_secs_f64() / q.as_secs_f64()
    );
    println!();
    println!("## latency under overload: live 30 fps in, consumer 10 fps, {seconds} s");
    println!("| element | frames at sink | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for element in [
        "queue",
        "queue leaky=downstream",
        "queue max-size-buffers=0 max-size-bytes=0 max-size-time=0",
        "adaptivequeue",
        "adaptivequeue mode=fixed",
    ] {
        let (v, n) = overload_run(element, seconds);
        if v.is_empty() {
            println!("| {element} | 0 | - | - | - |");
            continue;
        }
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| `{element}` | {n} | {} | {} | {} |",
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
}
