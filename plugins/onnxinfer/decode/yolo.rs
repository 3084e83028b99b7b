// SPDX-License-Identifier: MPL-2.0
//! YOLO heads.
//!
//! * YOLOv5 (`[N, 5+C]` per entry): `cx, cy, w, h` in input pixels, objectness, class scores;
//!   score = objectness × best class score.
//! * YOLOv8/v11 (`[4+C, N]` per entry, transposed): `cx, cy, w, h`, class scores; score = best
//!   class score.
//! * YOLOX (`[N, 5+C]` per entry, raw head): one row per grid cell over strides 8, 16 and 32
//!   (`N = Σ (H/s)·(W/s)`); `cx = (o0 + gx)·s`, `cy = (o1 + gy)·s`, `w = exp(o2)·s`,
//!   `h = exp(o3)·s`; objectness and class scores already through a sigmoid.

use crate::onnxinfer::nms::Candidate;

pub const STRIDES: [usize; 3] = [8, 16, 32];

/// Number of rows a YOLOX head has for an input of `width`×`height`.
pub fn yolox_rows(width: usize, height: usize) -> usize {
    STRIDES.iter().map(|s| (width / s) * (height / s)).sum()
}

#[inline]
fn best_class(scores: impl Iterator<Item = f32>) -> (usize, f32) {
    scores.enumerate().fold(
        (0, f32::MIN),
        |acc, (i, v)| if v > acc.1 { (i, v) } else { acc },
    )
}

#[inline]
fn candidate(cx: f32, cy: f32, w: f32, h: f32, score: f32, class_id: usize) -> Candidate {
    Candidate {
        x1: cx - w / 2.0,
        y1: cy - h / 2.0,
        x2: cx + w / 2.0,
        y2: cy + h / 2.0,
        score,
        class_id,
    }
}

/// YOLOv5: `rows × row_len` values, `row_len = 5 + classes`.
pub fn yolov5(data: &[f32], row_len: usize, threshold: f32) -> Vec<Candidate> {
    let mut out = Vec::new();
    if row_len < 6 {
        return out;
    }
    for row in data.chunks_exact(row_len) {
        let obj = row[4];
        if obj < threshold {
            continue;
        }
        let (class_id, best) = best_class(row[5..].iter().copied());
        let score = obj * best;
        // A NaN score is not below the threshold: it goes on, to be counted and dropped with
        // the other invalid values (see `decode::sanitize`).
        if score.partial_cmp(&threshold) != Some(std::cmp::Ordering::Less) {
            out.push(candidate(row[0], row[1], row[2], row[3], score, class_id));
        }
    }
    out
}

/// YOLOv8: `attrs × n` values (attribute-major), `attrs = 4 + classes`.
pub fn yolov8(data: &[f32], attrs: usize, threshold: f32) -> Vec<Candidate> {
    let mut out = Vec::new();
    if attrs < 5 || !data.len().is_multiple_of(attrs) {
        return out;
    }
    let n = data.len() / attrs;
    let at = |a: usize, i: usize| data[a * n + i];
    for i in 0..n {
        let (class_id, score) = best_class((4..attrs).map(|a| at(a, i)));
        if score.partial_cmp(&threshold) != Some(std::cmp::Ordering::Less) {
            out.push(candidate(
                at(0, i),
                at(1, i),
                at(2, i),
                at(3, i),
                score,
                class_id,
            ));
        }
    }
    out
}

/// YOLOX: `rows × (5 + classes)` values for an input of `width`×`height`.
pub fn yolox(
    data: &[f32],
    width: usize,
    height: usize,
    row_len: usize,
    threshold: f32,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    if row_len < 6 {
        return out;
    }
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
                let (class_id, best) = best_class(row[5..].iter().copied());
                let score = obj * best;
                if score < threshold {
                    continue;
                }
                out.push(candidate(
                    (row[0] + gx as f32) * s,
                    (row[1] + gy as f32) * s,
                    row[2].exp() * s,
                    row[3].exp() * s,
                    score,
                    class_id,
                ));
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
        assert_eq!(yolox_rows(416, 416), 3549);
        assert_eq!(yolox_rows(640, 640), 8400);
    }

    #[test]
    fn yolox_decodes_one_cell() {
        // 64x64 input: 64 + 16 + 4 rows, 2 classes.
        let rows = yolox_rows(64, 64);
        let mut data = vec![0.0f32; rows * 7];
        // Stride-16 grid starts after the 64 stride-8 cells; cell (gx=1, gy=2) is row 64 + 2*4 + 1.
        let r = (64 + 2 * 4 + 1) * 7;
        data[r..r + 7].copy_from_slice(&[0.5, 0.25, 0.0, (2.0f32).ln(), 0.9, 0.1, 0.8]);
        let c = yolox(&data, 64, 64, 7, 0.25);
        assert_eq!(c.len(), 1);
        let c = c[0];
        assert_eq!(c.class_id, 1);
        assert!((c.score - 0.72).abs() < 1e-6);
        // cx = 1.5*16 = 24, cy = 2.25*16 = 36, w = 16, h = 32
        assert_eq!((c.x1, c.y1, c.x2, c.y2), (16.0, 20.0, 32.0, 52.0));
    }

    #[test]
    fn yolov5_and_yolov8_agree_on_the_same_box() {
        // One box at (100, 50) 40x20, class 2 of 3 with 0.9, objectness 0.8.
        let v5 = [
            100.0, 50.0, 40.0, 20.0, 0.8, 0.1, 0.2, 0.9, 0.0, 0.0, 0.0, 0.0, 0.1, 0.9, 0.9, 0.9,
        ];
        let c5 = yolov5(&v5, 8, 0.25);
        assert_eq!(c5.len(), 1);
        assert_eq!(
            (c5[0].x1, c5[0].y1, c5[0].x2, c5[0].y2, c5[0].class_id),
            (80.0, 40.0, 120.0, 60.0, 2)
        );
        assert!((c5[0].score - 0.72).abs() < 1e-6);
        // v8: attributes x n=2; second candidate below threshold.
        let v8 = [
            100.0, 0.0, 50.0, 0.0, 40.0, 1.0, 20.0, 1.0, 0.1, 0.1, 0.2, 0.1, 0.9, 0.2,
        ];
        let c8 = yolov8(&v8, 7, 0.25);
        assert_eq!(c8.len(), 1);
        assert_eq!(
            (c8[0].x1, c8[0].y1, c8[0].x2, c8[0].y2, c8[0].class_id),
            (80.0, 40.0, 120.0, 60.0, 2)
        );
        assert!((c8[0].score - 0.9).abs() < 1e-6);
    }
}
