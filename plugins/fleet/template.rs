// SPDX-License-Identifier: MPL-2.0
//! Pipeline description files with `${NAME}` placeholders: lines starting with `#` are
//! comments, the rest is one `gst-launch-1.0` description (`scripts/run-pipeline.sh` reads the
//! same files).

use std::collections::BTreeMap;

/// The description in `text` with every `${NAME}` replaced from `vars`; an error names the
/// placeholders nothing fills.
pub fn fill(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let desc = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = String::with_capacity(desc.len());
    let mut missing = Vec::new();
    let mut rest = desc.as_str();
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else {
            return Err(format!("unclosed placeholder at '{}'", &rest[i..]));
        };
        let name = &rest[i + 2..i + j];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                if !missing.contains(&name) {
                    missing.push(name);
                }
            }
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "no value for {} (give it as a camera parameter, KEY=VALUE, or to the worker with --set KEY=VALUE)",
            missing
                .iter()
                .map(|m| format!("${{{m}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_missing_ones_named() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(
            fill("# c\nx a=${A}\n ! y b=${A}", &vars).unwrap(),
            "x a=1  ! y b=1"
        );
        let e = fill("x ${A} ${B} ${C} ${B}", &vars).unwrap_err();
        assert!(e.starts_with("no value for ${B}, ${C} ("), "{e}");
        assert!(fill("x ${A", &vars).is_err());
    }
}
