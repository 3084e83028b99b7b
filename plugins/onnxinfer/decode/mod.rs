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

/// Drops candidates that cannot be detections: a score or a coordinate that is not finite
/// (fp16 overflow, a broken export), or a box reaching more than one input size beyond the
/// input (`width`×`height` tensor pixels). Returns the valid ones and how many were dropped.
pub fn sanitize(
    candidates: Vec<Candidate>,
    width: usize,
    height: usize,
) -> (Vec<Candidate>, usize) {
    let (w, h) = (width as f32, height as f32);
    let inside = |v: f32, size: f32| v.is_finite() && v >= -size && v <= 2.0 * size;
    let before = candidates.len();
    let valid: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| {
            c.score.is_finite()
                && inside(c.x1, w)
                && inside(c.x2, w)
                && inside(c.y1, h)
                && inside(c.y2, h)
        })
        .collect();
    let dropped = before - valid.len();
    (valid, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnxinfer::nms::tests::b;

    #[test]
    fn sanitize_drops_non_finite_and_absurd_values() {
        let (valid, dropped) = sanitize(
            vec![
                b(10.0, 10.0, 20.0, 20.0, 0.9, 0),
                b(10.0, 10.0, 20.0, 20.0, f32::INFINITY, 0),
                b(10.0, 10.0, 20.0, 20.0, f32::NAN, 0),
                b(f32::NEG_INFINITY, 10.0, 20.0, 20.0, 0.9, 0),
                b(-1e30, 10.0, 1e30, 20.0, 0.9, 0),
                b(-50.0, -20.0, 150.0, 120.0, 0.5, 0),
            ],
            100,
            100,
        );
        assert_eq!(valid.len(), 2);
        assert_eq!(dropped, 4);
    }
}
