// SPDX-License-Identifier: MPL-2.0
//! The event log, shared by `raftsink` and `videoai-events`, with no GStreamer in it: the one
//! event schema ([`event`]), the SQLite log and outbox ([`store`]) and its schema ([`schema`]), and NATS JetStream access
//! ([`nats`]).

pub mod event;
pub mod nats;
pub mod schema;
pub mod store;
