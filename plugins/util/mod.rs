// SPDX-License-Identifier: MPL-2.0
//! Small helpers several elements use: latency [`histogram`]s, reconnect and retry
//! [`backoff`], FNV-1a [`hash`]ing, and whether a pad's source is [`liveness`] live.

pub mod backoff;
pub mod hash;
pub mod histogram;
pub mod liveness;
