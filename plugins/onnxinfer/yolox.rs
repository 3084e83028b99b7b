// SPDX-License-Identifier: MPL-2.0
//! YOLOX head decoding.
//!
//! Output `[1, N, 5 + C]`, one row per grid cell over strides 8, 16 and 32 (so
//! `N = Σ (H/s)·(W/s)`), raw (not decoded in the model): `cx = (o0 + gx)·s`, `cy = (o1 + gy)·s`,
//! `w = exp(o2)·s`, `h = exp(o3)·s`; objectness and class scores already through a sigmoid;
//! score = objectness × best class score.

use super::nms::Candidate;

pub const STRIDES: [usize; 3] = [8, 16, 32];

/// Number of rows a YOLOX head has for an input of `width`×`height`.
pub fn expected_rows(width: usize, height: usize) -> usize {
    STRIDES.iter().map(|s| (width / s) * (height / s)).sum()
}

/// Decodes `data` (`rows × (5 + classes)`, row-major) into candidates scoring at least
/// `threshold`.
pub fn decode(
    data: &[f32],
    width: usize,
    height: usize,
    classes: usize,
    threshold: f32,
) -> Vec<Candidate> {
    let row_len = 5 + classes;
    let mut out = Vec::new();
    let mut rows = data.chunks_exact(row_len);
    for stride in STRIDES {
        let (gw, gh) = (width / stride, height / stride);
        let s = stride as f32;
        for gy in 0..gh {
            for gx in 0..gw {
                let Some(row) = rows.next() else {
                    return out;
                };
                let obj = row[4];
                if obj < threshold {
                    continue;
                }
                let (class_id, best) =
                    row[5..]
                        .iter()
                        .copied()
                        .enumerate()
                        .fold(
                            (0, f32::MIN),
                            |acc, (i, v)| if v > acc.1 { (i, v) } else { acc },
                        );
                let score = obj * best;
                if score < threshold {
                    continue;
                }
                let cx = (row[0] + gx as f32) * s;
                let cy = (row[1] + gy as f32) * s;
                let w = row[2].exp() * s;
                let h = row[3].exp() * s;
                out.push(Candidate {
                    x1: cx - w / 2.0,
                    y1: cy - h / 2.0,
                    x2: cx + w / 2.0,
                    y2: cy + h / 2.0,
                    score,
                    class_id,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_for_416() {
        assert_eq!(expected_rows(416, 416), 3549);
        assert_eq!(expected_rows(640, 640), 8400);
    }

    #[test]
    fn decodes_one_cell() {
        // 64x64 input: 64 + 16 + 4 rows, 2 classes.
        let rows = expected_rows(64, 64);
        let mut data = vec![0.0f32; rows * 7];
        // Stride-16 grid starts after the 64 stride-8 cells; cell (gx=1, gy=2) is row 64 + 2*4 + 1.
        let r = (64 + 2 * 4 + 1) * 7;
        data[r..r + 7].copy_from_slice(&[0.5, 0.25, 0.0, (2.0f32).ln(), 0.9, 0.1, 0.8]);
        let c = decode(&data, 64, 64, 2, 0.25);
        assert_eq!(c.len(), 1);
        let c = c[0];
        assert_eq!(c.class_id, 1);
        assert!((c.score - 0.72).abs() < 1e-6);
        // cx = 1.5*16 = 24, cy = 2.25*16 = 36, w = 16, h = 32
        assert_eq!((c.x1, c.y1, c.x2, c.y2), (16.0, 20.0, 32.0, 52.0));
    }
}
