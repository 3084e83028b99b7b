// SPDX-License-Identifier: MPL-2.0
//! raftsink and videoai-events: the integration tests, one binary with a module per topic (one link of
//! GStreamer, ONNX Runtime, SQLite and tokio instead of one per file).

#[path = "../common/mod.rs"]
mod common;

mod durability;
mod keys;
mod log;
mod mqtt;
mod nats;
mod webhook;

/// Runs `videoai-events` with `args`; its output.
fn events_tool(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_videoai-events"))
        .args(args)
        .output()
        .expect("videoai-events runs")
}
