// SPDX-License-Identifier: MPL-2.0
//! Non-maximum suppression over candidate boxes.

/// A box proposed by a decoder, in tensor (model input) coordinates, corners form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class_id: usize,
}

impl Candidate {
    #[inline]
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Intersection over union with `other`.
    #[inline]
    pub fn iou(&self, other: &Candidate) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// Greedy NMS: keeps the best-scoring boxes, dropping any box whose IoU with a kept box of the
/// same class (or of any class when `class_agnostic`) exceeds `iou_threshold`. Returns the kept
/// boxes by descending score, at most `max_detections`.
pub fn nms(
    mut candidates: Vec<Candidate>,
    iou_threshold: f32,
    class_agnostic: bool,
    max_detections: usize,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() >= max_detections {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| (class_agnostic || k.class_id == c.class_id) && k.iou(&c) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A candidate box (also for the decoders' tests).
    pub(crate) fn b(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class_id: usize) -> Candidate {
        Candidate {
            x1,
            y1,
            x2,
            y2,
            score,
            class_id,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = b(0.0, 0.0, 10.0, 10.0, 1.0, 0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&b(10.0, 10.0, 20.0, 20.0, 1.0, 0)), 0.0);
        let half = a.iou(&b(5.0, 0.0, 15.0, 10.0, 1.0, 0));
        assert!((half - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn suppresses_overlaps_per_class() {
        let out = nms(
            vec![
                b(0.0, 0.0, 10.0, 10.0, 0.5, 0),
                b(1.0, 0.0, 11.0, 10.0, 0.9, 0),
                b(1.0, 0.0, 11.0, 10.0, 0.8, 1),
                b(50.0, 50.0, 60.0, 60.0, 0.3, 0),
            ],
            0.45,
            false,
            100,
        );
        let scores: Vec<f32> = out.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.3]);
        let agnostic = nms(out, 0.45, true, 100);
        assert_eq!(
            agnostic.iter().map(|c| c.score).collect::<Vec<_>>(),
            vec![0.9, 0.3]
        );
    }

    #[test]
    fn caps_the_count() {
        let many = (0..10)
            .map(|i| {
                b(
                    i as f32 * 20.0,
                    0.0,
                    i as f32 * 20.0 + 10.0,
                    10.0,
                    i as f32,
                    0,
                )
            })
            .collect();
        assert_eq!(nms(many, 0.5, false, 3).len(), 3);
    }
}
