// SPDX-License-Identifier: MPL-2.0
//! raftsink and videoai-events: the integration tests, one binary with a module per topic (one link of
//! GStreamer, ONNX Runtime, SQLite and tokio instead of one per file).

#[path = "../common/mod.rs"]
mod common;

mod durability;
mod log;
mod nats;
