// SPDX-License-Identifier: MPL-2.0
//! The chaos run: `make chaos` (or `cargo bench --bench chaos`), `CHAOS_MINUTES` (10) of faults
//! on a site of 3 NATS nodes, 3 `videoai-worker`s and 6 RTSP test cameras, all on 127.0.0.1;
//! `CHAOS_SEED` repeats a run. Prints, per camera, the frames stored, stored twice, keys off the
//! camera's frame grid and frames missing outside (and inside) the declared gaps, then the list
//! of faults; exits 1 unless the first three are 0 and there were at least 3 faults a minute.
//! See `tests/common/chaos.rs` for the faults and what each declares.

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    // The RTSP cameras are this binary again, in child processes.
    common::rtsp::serve_if_child();
    let minutes: f64 = std::env::var("CHAOS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10.0);
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| common::fleet::now_ns() as u64);
    println!("# chaos run: {minutes} minutes, seed {seed} (CHAOS_SEED={seed} repeats it)");
    let report = common::chaos::run(minutes, seed, "rtsp_server_child");
    println!("{}", report.table());
    let wanted = (minutes * 3.0).ceil() as usize;
    let ok = report.twice() == 0
        && report.off_grid() == 0
        && report.missing() == 0
        && report.faults.len() >= wanted
        && report.cameras.len() == 6;
    println!(
        "stored twice {}, off the grid {}, missing outside declared gaps {}, faults {} (goal: 0, 0, 0 over >= {wanted}): {}",
        report.twice(),
        report.off_grid(),
        report.missing(),
        report.faults.len(),
        if ok { "met" } else { "NOT met" }
    );
    if !ok {
        eprintln!("{}", report.logs);
        std::process::exit(1);
    }
}
