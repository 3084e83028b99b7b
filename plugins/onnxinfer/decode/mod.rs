// SPDX-License-Identifier: MPL-2.0
//! Decoders of the model families: from output tensors to boxes (in tensor pixels) or class
//! scores, one batch entry at a time.
//!
//! Each output's first dimension is the batch; [`entry`] cuts out one entry's data.

pub mod classifier;
pub mod ssd;
pub mod yolo;

use super::nms::Candidate;

/// One output tensor as the model produced it.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub name: &'a str,
    pub shape: &'a [i64],
    pub data: &'a [f32],
}

/// The data of batch entry `index` of `batch` in an output whose first dimension is the batch.
pub fn entry<'a>(o: &Output<'a>, index: usize, batch: usize) -> Result<&'a [f32], String> {
    if batch == 0 || !o.data.len().is_multiple_of(batch) {
        return Err(format!(
            "output '{}' {} does not split into {batch} batch entries",
            o.name,
            shape_string(o.shape)
        ));
    }
    let n = o.data.len() / batch;
    Ok(&o.data[index * n..(index + 1) * n])
}

/// `[1,3,416,416]`, with `?` for dynamic dimensions.
pub fn shape_string(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", dims.join(","))
}

/// What a family's decoder gives for one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Candidate boxes in tensor coordinates, before NMS.
    Boxes(Vec<Candidate>),
    /// Top classes, best first: (class id, probability).
    Classes(Vec<(usize, f32)>),
}
