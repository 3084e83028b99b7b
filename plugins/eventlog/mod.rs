// SPDX-License-Identifier: MPL-2.0
//! The event log, shared by `raftsink` and `videoai-events`, with no GStreamer in it: the one
//! event schema ([`event`]), the SQLite log and outbox ([`store`]) and its schema ([`schema`]), and NATS JetStream access
//! ([`nats`]), and tracks and counts ([`tracks`]) and clips ([`clips`]) read back from events.

pub mod clips;
pub mod event;
pub mod nats;
pub mod schema;
pub mod store;
pub mod tracks;
