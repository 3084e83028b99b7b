// SPDX-License-Identifier: MPL-2.0
//! Small helpers several elements use: latency [`histogram`]s, a thread's [`cpu_time`], reconnect and retry
//! [`backoff`], FNV-1a [`hash`]ing, whether a pad's source is [`liveness`] live, and dropping
//! heavy things on a thread of their own ([`retire`]).

pub mod backoff;
pub mod cpu_time;
pub mod hash;
pub mod histogram;
pub mod liveness;
pub mod retire;
