// SPDX-License-Identifier: MPL-2.0
//! onnxinfer: the integration tests, one binary with a module per topic (one link of
//! GStreamer, ONNX Runtime, SQLite and tokio instead of one per file).

#[path = "../common/mod.rs"]
mod common;

mod detect;
mod errors;
mod gate;
mod models;
mod quantize;
mod swap;

/// Three test frames of `caps` through `onnxinfer {props}`: what the pipeline said.
fn run_infer(props: &str, caps: &str) -> common::Outcome {
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=3 ! {caps} ! onnxinfer {props} ! fakesink"
    ));
    common::run(&p, std::time::Duration::from_secs(30))
}
