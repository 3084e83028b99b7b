// SPDX-License-Identifier: MPL-2.0
//! SSD-style outputs, already decoded by the model: boxes `[N, 4]`, scores `[N]` (or per-class
//! scores `[N, C]`), classes `[N]`, and optionally a valid count `[1]`.
//!
//! Outputs are told apart by name (`box`, `score`, `class`, `num`/`count` in the name), else by
//! shape (`[…, 4]` boxes, a one-value count) and, for the two `[N]` outputs, by their values:
//! class ids are whole numbers, scores are not. Boxes are `ymin, xmin, ymax, xmax` (the
//! TensorFlow convention) or `xmin, ymin, xmax, ymax` (`box-order`), normalised to 0..1 when no
//! coordinate exceeds 1.5, else in input pixels.

use super::{Output, entry, shape_string};
use crate::onnxinfer::nms::Candidate;

/// Which class is "background" (never a detection). SSD exports that softmax over background
/// and the classes (MobileNet-SSD, pytorch-ssd, the TensorFlow object detection API) put it in
/// score column 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// Per-class scores: column 0 is background when the first label names it, when there is
    /// one more column than labels (ids then follow the labels file: column k is class k−1),
    /// or when there is no labels file. A classes output: class 0 when the first label names
    /// it.
    Auto {
        labels: usize,
        first_is_background: bool,
    },
    /// Every class is a class.
    None,
    /// This class id (score column) is background.
    Class(usize),
}

/// Whether a label names the background class.
pub fn is_background_label(label: &str) -> bool {
    matches!(
        label.trim().to_ascii_lowercase().as_str(),
        "background" | "__background__" | "bg" | "__bg__"
    )
}

impl Background {
    /// For per-class scores of `columns` columns: the background column, and how much to take
    /// off a column to get its class id.
    fn per_class(self, columns: usize) -> (Option<usize>, usize) {
        match self {
            Background::Auto {
                first_is_background: true,
                ..
            } => (Some(0), 0),
            Background::Auto { labels: 0, .. } => (Some(0), 0),
            Background::Auto { labels, .. } if labels + 1 == columns => (Some(0), 1),
            Background::Auto { .. } | Background::None => (None, 0),
            Background::Class(c) => (Some(c), 0),
        }
    }

    /// For a classes output: the class id that is background.
    fn class(self) -> Option<usize> {
        match self {
            Background::Auto {
                first_is_background: true,
                ..
            } => Some(0),
            Background::Auto { .. } | Background::None => None,
            Background::Class(c) => Some(c),
        }
    }
}

/// Order of the four box coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxOrder {
    Yxyx,
    Xyxy,
}

/// Which output is which (indices into the model's outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub boxes: usize,
    /// `None`: told apart from `classes` at run time by the values.
    pub scores: Option<usize>,
    pub classes: Option<usize>,
    /// The two `[N]` outputs when names did not say which is which.
    pub unnamed_pair: Option<(usize, usize)>,
    pub count: Option<usize>,
}

/// Finds the SSD outputs from names and shapes; `None` if they are not there.
pub fn layout(names: &[&str], shapes: &[Vec<i64>]) -> Option<Layout> {
    let named = |keys: &[&str]| {
        names
            .iter()
            .position(|n| keys.iter().any(|k| n.to_ascii_lowercase().contains(k)))
    };
    let boxes = named(&["box"]).or_else(|| {
        shapes
            .iter()
            .position(|s| s.len() >= 2 && s.last() == Some(&4))
    })?;
    let count = named(&["num", "count"]).or_else(|| {
        shapes
            .iter()
            .position(|s| s.iter().product::<i64>() == 1 && !s.is_empty())
    });
    let scores = named(&["score", "conf"]).filter(|i| *i != boxes);
    let classes = named(&["class", "label"]).filter(|i| *i != boxes && Some(*i) != scores);
    let rest: Vec<usize> = (0..shapes.len())
        .filter(|i| *i != boxes && Some(*i) != count && Some(*i) != scores && Some(*i) != classes)
        .collect();
    match (scores, classes) {
        (Some(_), _) => Some(Layout {
            boxes,
            scores,
            classes: classes.or(rest.first().copied()),
            unnamed_pair: None,
            count,
        }),
        (None, Some(c)) => Some(Layout {
            boxes,
            scores: rest.first().copied(),
            classes: Some(c),
            unnamed_pair: None,
            count,
        })
        .filter(|l| l.scores.is_some()),
        (None, None) if rest.len() >= 2 => Some(Layout {
            boxes,
            scores: None,
            classes: None,
            unnamed_pair: Some((rest[0], rest[1])),
            count,
        }),
        (None, None) if rest.len() == 1 && shapes[rest[0]].len() == 3 => Some(Layout {
            // Per-class scores [1, N, C] and no class output.
            boxes,
            scores: Some(rest[0]),
            classes: None,
            unnamed_pair: None,
            count,
        }),
        _ => None,
    }
}

fn is_whole(v: &[f32]) -> bool {
    v.iter().all(|x| x.fract() == 0.0)
}

/// Decodes batch entry `index` of `batch` into candidates in tensor pixels
/// (`width`×`height`).
#[allow(clippy::too_many_arguments)]
pub fn decode(
    l: &Layout,
    outputs: &[Output<'_>],
    index: usize,
    batch: usize,
    width: usize,
    height: usize,
    order: BoxOrder,
    threshold: f32,
    background: Background,
) -> Result<Vec<Candidate>, String> {
    let get = |i: usize| -> Result<&[f32], String> {
        let o = outputs
            .get(i)
            .ok_or_else(|| format!("output {i} missing"))?;
        entry(o, index, batch)
    };
    let shape = |i: usize| shape_string(outputs[i].shape);
    let boxes = get(l.boxes)?;
    let n = boxes.len() / 4;
    let (scores, scores_at, classes) = match (l.scores, l.classes, l.unnamed_pair) {
        (_, _, Some((a, b))) => {
            let (da, db) = (get(a)?, get(b)?);
            if is_whole(da) && !is_whole(db) {
                (db, b, Some((da, a)))
            } else {
                (da, a, Some((db, b)))
            }
        }
        (Some(s), c, None) => (get(s)?, s, c.map(|c| get(c).map(|d| (d, c))).transpose()?),
        (None, _, None) => return Err("SSD: no scores output".into()),
    };
    let per_class = scores.len() != n;
    if per_class && (n == 0 || !scores.len().is_multiple_of(n)) {
        return Err(format!(
            "SSD: output '{}' {} holds {} scores for the {n} boxes of '{}' {}: expected {n} or a multiple (one per class)",
            outputs[scores_at].name,
            shape(scores_at),
            scores.len(),
            outputs[l.boxes].name,
            shape(l.boxes)
        ));
    }
    if let Some((c, at)) = classes
        && !per_class
        && c.len() < n
    {
        return Err(format!(
            "SSD: output '{}' {} holds {} class ids for the {n} boxes of '{}' {}: expected one per box. Check model-type and the model's outputs",
            outputs[at].name,
            shape(at),
            c.len(),
            outputs[l.boxes].name,
            shape(l.boxes)
        ));
    }
    let classes = classes.map(|c| c.0);
    let columns = if per_class { scores.len() / n } else { 1 };
    let (bg_column, shift) = background.per_class(columns);
    let bg_class = background.class();
    let valid = match l.count {
        Some(c) => get(c)?
            .first()
            .map(|v| (v.max(0.0) as usize).min(n))
            .unwrap_or(n),
        None => n,
    };
    // Normalised (0..1) unless a coordinate of a finite box says pixels.
    let normalised = boxes[..valid * 4]
        .iter()
        .filter(|v| v.is_finite())
        .all(|v| *v <= 1.5);
    let (sx, sy) = if normalised {
        (width as f32, height as f32)
    } else {
        (1.0, 1.0)
    };
    let mut out = Vec::new();
    for i in 0..valid {
        let (class_id, score) = if per_class {
            let row = &scores[i * columns..(i + 1) * columns];
            let best = row
                .iter()
                .copied()
                .enumerate()
                .filter(|(k, _)| Some(*k) != bg_column)
                .fold((usize::MAX, f32::MIN), |a, (k, v)| {
                    if v > a.1 || v.is_nan() { (k, v) } else { a }
                });
            if best.0 == usize::MAX {
                continue;
            }
            (best.0.saturating_sub(shift), best.1)
        } else {
            let c = classes.map(|c| c[i]).unwrap_or(0.0);
            let class_id = c.max(0.0) as usize;
            if Some(class_id) == bg_class {
                continue;
            }
            (class_id, scores[i])
        };
        // A NaN score is not below the threshold: it goes on, to be counted and dropped with
        // the other invalid values (see `decode::sanitize`).
        if score < threshold {
            continue;
        }
        let b = &boxes[i * 4..i * 4 + 4];
        let (x1, y1, x2, y2) = match order {
            BoxOrder::Yxyx => (b[1], b[0], b[3], b[2]),
            BoxOrder::Xyxy => (b[0], b[1], b[2], b[3]),
        };
        out.push(Candidate {
            x1: x1 * sx,
            y1: y1 * sy,
            x2: x2 * sx,
            y2: y2 * sy,
            score,
            class_id,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_by_name_and_by_values() {
        let shapes = vec![vec![1, 10, 4], vec![1, 10], vec![1, 10], vec![1]];
        let l = layout(
            &[
                "detection_boxes",
                "detection_classes",
                "detection_scores",
                "num_detections",
            ],
            &shapes,
        )
        .unwrap();
        assert_eq!(
            (l.boxes, l.scores, l.classes, l.count),
            (0, Some(2), Some(1), Some(3))
        );
        let l = layout(&["a", "b", "c", "d"], &shapes).unwrap();
        assert_eq!(
            (l.boxes, l.unnamed_pair, l.count),
            (0, Some((1, 2)), Some(3))
        );
        assert!(layout(&["x"], &[vec![1, 1000]]).is_none());
    }

    #[test]
    fn decodes_normalised_yxyx_with_count() {
        let names = ["boxes", "x", "y", "n"];
        let shapes = vec![vec![1, 3, 4], vec![1, 3], vec![1, 3], vec![1]];
        let l = layout(&names, &shapes).unwrap();
        let boxes = [0.1, 0.2, 0.5, 0.6, 0.0, 0.0, 1.0, 1.0, 0.3, 0.3, 0.4, 0.4];
        let classes = [3.0, 1.0, 2.0];
        let scores = [0.9, 0.2, 0.8];
        let count = [2.0];
        let outs = [
            Output {
                name: "boxes",
                shape: &shapes[0],
                data: &boxes,
            },
            Output {
                name: "x",
                shape: &shapes[1],
                data: &classes,
            },
            Output {
                name: "y",
                shape: &shapes[2],
                data: &scores,
            },
            Output {
                name: "n",
                shape: &shapes[3],
                data: &count,
            },
        ];
        let c = decode(
            &l,
            &outs,
            0,
            1,
            100,
            200,
            BoxOrder::Yxyx,
            0.5,
            Background::None,
        )
        .unwrap();
        // Third box is beyond the count; the second is below the threshold.
        assert_eq!(c.len(), 1);
        let got = [c[0].x1, c[0].y1, c[0].x2, c[0].y2];
        assert!(
            got.iter()
                .zip([20.0, 20.0, 60.0, 100.0])
                .all(|(a, b)| (a - b).abs() < 1e-4),
            "{got:?}"
        );
        assert_eq!(c[0].class_id, 3);
    }
}
