// SPDX-License-Identifier: MPL-2.0
//! Pipeline description files with `${NAME}` placeholders: lines starting with `#` are
//! comments, the rest is one `gst-launch-1.0` description (`scripts/run-pipeline.sh` reads the
//! same files).
//!
//! **Values are data, never pipeline text.** A registry entry is written by whoever may write
//! the registry; its values must not be able to add elements, links or caps. So a value is
//! pasted into the description only when it is made of characters the parser can never read as
//! structure (letters, digits and `_ . / : @ + -`). Any other value (quotes, `!`, spaces, `;`,
//! `,`, `=`, `$`, newlines …, or empty) is replaced by an opaque token of letters and digits;
//! the description is parsed with the tokens, and then each token is replaced by its value in
//! the string properties that hold it ([`bind`]), verbatim. A token that lands anywhere but in
//! a string property makes the pipeline fail to build, with the placeholder named.

use std::collections::BTreeMap;

use gst::prelude::*;

/// A description with its placeholders filled ([`fill`]): the text to parse, and the values
/// to set after parsing, by token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filled {
    pub description: String,
    /// (token, placeholder name, value).
    pub bound: Vec<(String, String, String)>,
}

/// Whether `value` can be pasted into a description as it is: no character of it can end a
/// property value or start another element, link, caps field or property.
pub fn pastable(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@+-".contains(c))
}

/// The description of `text` (comments dropped): its lines, joined.
fn description(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `${NAME}` or `${NAME:-DEFAULT}` of a description: its byte range, name and default.
struct Use<'a> {
    range: std::ops::Range<usize>,
    name: &'a str,
    default: Option<&'a str>,
}

/// Every placeholder use in `desc`, in order; an error for an unclosed `${` or a bad name.
fn uses(desc: &str) -> Result<Vec<Use<'_>>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = desc[from..].find("${").map(|i| from + i) {
        let Some(j) = desc[i..].find('}').map(|j| i + j) else {
            return Err(format!("unclosed placeholder at '{}'", &desc[i..]));
        };
        let inner = &desc[i + 2..j];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "'${{{inner}}}' is not a placeholder (a name of letters, digits and '_', and \
                 optionally :-DEFAULT)"
            ));
        }
        out.push(Use {
            range: i..j + 1,
            name,
            default,
        });
        from = j + 1;
    }
    Ok(out)
}

/// The placeholders `text` uses, in order of first use; an error for an unclosed `${` or an
/// empty description. `${NAME:-DEFAULT}` gives NAME a default, used when nothing else does.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let desc = description(text);
    if desc.trim().is_empty() {
        return Err(
            "the pipeline file has no pipeline description (only comments or nothing)".into(),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for u in uses(&desc)? {
        if !out.iter().any(|n| n == u.name) {
            out.push(u.name.to_string());
        }
    }
    Ok(out)
}

/// The description in `text` with every `${NAME}` filled from `vars`, or from its default in
/// the file (`${NAME:-DEFAULT}`: the file is the administrator's, but the default is still a
/// value, pasted or bound as the module's doc says); an error names the placeholders nothing
/// fills.
pub fn fill(text: &str, vars: &BTreeMap<String, String>) -> Result<Filled, String> {
    let names = placeholders(text)?;
    let desc = description(text);
    let found = uses(&desc)?;
    let value_of = |name: &str| -> Option<String> {
        vars.get(name).cloned().or_else(|| {
            found
                .iter()
                .find(|u| u.name == name && u.default.is_some())
                .and_then(|u| u.default.map(str::to_string))
        })
    };
    let missing: Vec<String> = names
        .iter()
        .filter(|n| value_of(n).is_none())
        .map(|n| format!("${{{n}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "no value for {} (give it as a camera parameter, KEY=VALUE, or to the worker with --set KEY=VALUE)",
            missing.join(", ")
        ));
    }
    let mut bound = Vec::new();
    // A token no description or value contains: letters and digits only.
    let salt = crate::util::hash::fnv1a(desc.as_bytes()) as u32;
    let mut text_of: BTreeMap<&str, String> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let value = value_of(name).expect("checked above");
        let text = if pastable(&value) {
            value
        } else {
            let token = format!("videoaiparam{i}x{salt:08x}");
            bound.push((token.clone(), name.clone(), value));
            token
        };
        text_of.insert(name.as_str(), text);
    }
    let mut out = String::with_capacity(desc.len());
    let mut at = 0;
    for u in &found {
        out.push_str(&desc[at..u.range.start]);
        out.push_str(&text_of[u.name]);
        at = u.range.end;
    }
    out.push_str(&desc[at..]);
    Ok(Filled {
        description: out,
        bound,
    })
}

/// Sets the values of a parsed pipeline's tokens: every string property of every element that
/// holds a token gets it replaced by its value. An error names a placeholder whose value went
/// nowhere (its token was not in a string property).
pub fn bind(pipeline: &gst::Bin, bound: &[(String, String, String)]) -> Result<(), String> {
    if bound.is_empty() {
        return Ok(());
    }
    let mut used = vec![false; bound.len()];
    for element in pipeline.iterate_recurse().into_iter().flatten() {
        for pspec in element.list_properties() {
            let flags = pspec.flags();
            // An element's name cannot change inside a bin: a token there stays unused.
            if pspec.value_type() != String::static_type()
                || pspec.name() == "name"
                || !flags.contains(gst::glib::ParamFlags::READABLE)
                || !flags.contains(gst::glib::ParamFlags::WRITABLE)
                || flags.contains(gst::glib::ParamFlags::CONSTRUCT_ONLY)
            {
                continue;
            }
            let Ok(Some(current)) = element.property_value(pspec.name()).get::<Option<String>>()
            else {
                continue;
            };
            let mut value = current.clone();
            for (k, (token, _, v)) in bound.iter().enumerate() {
                if value.contains(token.as_str()) {
                    value = value.replace(token.as_str(), v);
                    used[k] = true;
                }
            }
            if value != current {
                element.set_property(pspec.name(), value);
            }
        }
    }
    match bound.iter().zip(&used).find(|(_, u)| !**u) {
        Some(((_, name, value), _)) => Err(format!(
            "${{{name}}} is used where only a plain value fits (a number, a name, an enum), but its value '{}' holds other characters: such values go only into text properties such as uri or location",
            value.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Replaces the tokens in a parser's error message by their placeholders.
pub fn explain(message: &str, bound: &[(String, String, String)]) -> String {
    let mut m = message.to_string();
    for (token, name, _) in bound {
        m = m.replace(token.as_str(), &format!("${{{name}}}"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_are_filled_and_missing_ones_named() {
        let v = vars(&[("A", "1")]);
        assert_eq!(
            fill("# c\nx a=${A}\n ! y b=${A}", &v).unwrap().description,
            "x a=1  ! y b=1"
        );
        let e = fill("x ${A} ${B} ${C} ${B}", &v).unwrap_err();
        assert!(e.starts_with("no value for ${B}, ${C} ("), "{e}");
        assert!(fill("x ${A", &v).is_err());
        assert!(placeholders("# only a comment\n\n").is_err());
        assert!(placeholders("x ${a b}").is_err());
        // A default in the file, used only when nothing else gives a value.
        let t = "x gate=${GATE:-false} y=${A} z=${GATE}";
        assert_eq!(placeholders(t).unwrap(), ["GATE", "A"]);
        assert_eq!(fill(t, &v).unwrap().description, "x gate=false y=1 z=false");
        let on = vars(&[("A", "1"), ("GATE", "true")]);
        assert_eq!(fill(t, &on).unwrap().description, "x gate=true y=1 z=true");
        // A default is a value like any other: never pipeline text.
        let f = fill("x a=\"${T:-a ! b}\"", &v).unwrap();
        assert!(!f.description.contains('!') && f.bound.len() == 1, "{f:?}");
        assert!(placeholders("x ${:-1}").is_err());
    }

    #[test]
    fn values_that_could_be_read_as_pipeline_text_become_tokens() {
        let hostile = "a\" ! tee name=t ! queue ! filesink location=x.bin t. ! queue name=\"b";
        let v = vars(&[
            ("URI", "rtsp://h:554/s?x=1&y=2"),
            ("TAG", hostile),
            ("ID", "cam-1"),
        ]);
        let f = fill("src uri=\"${URI}\" ! sink name=\"${TAG}\" id=${ID}", &v).unwrap();
        assert!(f.description.contains("id=cam-1"), "{}", f.description);
        assert!(!f.description.contains('!') || f.description.matches('!').count() == 1);
        assert!(!f.description.contains("tee"));
        assert_eq!(f.bound.len(), 2);
        assert!(f.bound.iter().any(|b| b.2 == hostile));
        for (token, _, _) in &f.bound {
            assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
        }
        assert!(pastable("file:///dev/null"));
        assert!(!pastable(""));
        assert!(!pastable("a b"));
        assert!(!pastable("1,framerate=5/1"));
    }

    #[test]
    fn bound_values_arrive_verbatim_and_the_elements_are_the_template_s() {
        gst::init().unwrap();
        let hostile =
            "a\" ! tee name=t ! queue ! filesink location=x.bin t. ! queue name=\"b';${X}\nline2";
        let v = vars(&[("TAG", hostile), ("N", "5")]);
        let f = fill(
            "filesrc location=\"/tmp/${TAG}.mp4\" num-buffers=${N} ! identity ! fakesink",
            &v,
        )
        .unwrap();
        let p = gst::parse::launch(&f.description)
            .unwrap()
            .downcast::<gst::Bin>()
            .unwrap();
        bind(&p, &f.bound).unwrap();
        let names: Vec<String> = p
            .iterate_elements()
            .into_iter()
            .flatten()
            .map(|e| e.factory().unwrap().name().to_string())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let src = p
            .iterate_elements()
            .into_iter()
            .flatten()
            .find(|e| e.factory().unwrap().name() == "filesrc")
            .unwrap();
        assert_eq!(
            src.property::<Option<String>>("location").unwrap(),
            format!("/tmp/{hostile}.mp4")
        );
        // A value with other characters where only a number fits: refused, named.
        let v = vars(&[("N", "5 ! fakesink")]);
        let f = fill("videotestsrc num-buffers=${N} ! fakesink", &v).unwrap();
        let err = gst::parse::launch(&f.description).unwrap_err();
        assert!(
            explain(&err.to_string(), &f.bound).contains("${N}"),
            "{err}"
        );
    }
}
