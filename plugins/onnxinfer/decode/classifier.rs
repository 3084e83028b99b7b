// SPDX-License-Identifier: MPL-2.0
//! Classifier outputs: `[C]` per entry, logits or probabilities; the top `k` classes.

/// Probabilities from `values`: used as they are when they already form a distribution
/// (all in 0..=1, summing to 1 ± 1 %), else through a softmax.
pub fn probabilities(values: &[f32]) -> Vec<f32> {
    let sum: f32 = values.iter().sum();
    if values.iter().all(|v| (0.0..=1.0).contains(v)) && (sum - 1.0).abs() < 0.01 {
        return values.to_vec();
    }
    let max = values.iter().copied().fold(f32::MIN, f32::max);
    let exp: Vec<f32> = values.iter().map(|v| (v - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

/// The `k` most probable classes, best first: (class id, probability).
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let p = probabilities(values);
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|a, b| p[*b].total_cmp(&p[*a]).then(a.cmp(b)));
    idx.into_iter().take(k.max(1)).map(|i| (i, p[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_logits_and_probabilities_kept() {
        let t = top_k(&[1.0, 3.0, 2.0], 2);
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((t[0].1 - 0.6652).abs() < 1e-3, "{t:?}");
        let p = top_k(&[0.1, 0.7, 0.2], 3);
        assert_eq!(p, vec![(1, 0.7), (2, 0.2), (0, 0.1)]);
    }
}
