// SPDX-License-Identifier: MPL-2.0
//! videoaitrace: the report at stop ([`report`]) and the Prometheus endpoint ([`prometheus`]),
//! one binary with a module per topic.

#[path = "../common/mod.rs"]
mod common;

mod prometheus;
mod report;
