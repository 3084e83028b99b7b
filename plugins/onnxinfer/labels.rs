// SPDX-License-Identifier: MPL-2.0
//! Class labels: a text file with one label per line (line N = class id N).

use std::path::Path;

/// Reads a labels file. Blank lines are kept as `class-N` so that ids stay aligned; a trailing
/// newline does not add a class.
pub fn load(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read labels file '{}': {e}. Set labels-location to a text file with one label per line, or leave it unset to name classes class-N",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = l.trim();
            if l.is_empty() {
                format!("class-{i}")
            } else {
                l.to_string()
            }
        })
        .collect())
}

/// Whether a loaded labels file named no class at all (empty, or blank lines only).
pub fn all_unnamed(labels: &[String]) -> bool {
    labels
        .iter()
        .enumerate()
        .all(|(i, l)| *l == format!("class-{i}"))
}

/// The label of `class_id`, or `class-N` beyond the list.
pub fn label(labels: &[String], class_id: usize) -> String {
    labels
        .get(class_id)
        .cloned()
        .unwrap_or_else(|| format!("class-{class_id}"))
}
