// SPDX-License-Identifier: MPL-2.0
//! What elements exchange on buffers: the detection meta `onnxinfer` attaches ([`detection`]),
//! the batch format of `framesync`/`framesplit` ([`batch`]), and the capture-time metas of
//! cameras ([`capture_time`]).

pub mod batch;
pub mod capture_time;
pub mod detection;
pub mod motion;
pub mod places;
