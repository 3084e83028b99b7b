// SPDX-License-Identifier: MPL-2.0
//! The tracer's parameters, `GST_TRACERS="videoaitrace(key=value,key=value)"`, read by the
//! tracer itself.
//!
//! GStreamer 1.22 reads them as a GstStructure, where an unquoted IPv6 address
//! (`prometheus=[::1]:9464`) is an array that does not parse: the tracer was then created
//! inert, with only a warning, and nothing watched the pipelines although the user asked for
//! metrics. Here a value is the text up to the next comma, or a quoted string (`"…"` with `\"`
//! and `\\`) holding anything; a type cast GStreamer users write (`(string)…`) is dropped.
//! Anything else is an error the tracer makes every pipeline's.

/// The `key=value` pairs of `params`.
pub fn parse(params: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return Err(format!(
                "'{rest}' is not key=value (e.g. prometheus=127.0.0.1:9464)"
            ));
        };
        let key = rest[..eq].trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("'{key}' is not a parameter name"));
        }
        rest = rest[eq + 1..].trim_start();
        if let Some(r) = rest.strip_prefix("(string)") {
            rest = r.trim_start();
        }
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let Some(end) = end else {
                return Err(format!("the value of {key} has no closing '\"'"));
            };
            value = v;
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key.to_string(), value));
        rest = match rest.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err(format!("'{rest}' after the value of {key}: expected ','")),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_plain_quoted_and_ipv6() {
        assert_eq!(
            parse("prometheus=[::1]:9464").unwrap(),
            pairs(&[("prometheus", "[::1]:9464")])
        );
        assert_eq!(
            parse("file=/tmp/a.json, prometheus=\"127.0.0.1:0\"").unwrap(),
            pairs(&[("file", "/tmp/a.json"), ("prometheus", "127.0.0.1:0")])
        );
        assert_eq!(
            parse("file=(string)\"/tmp/a, b.json\"").unwrap(),
            pairs(&[("file", "/tmp/a, b.json")])
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("prometheus").is_err());
        assert!(parse("prometheus=\"[::1]:0").is_err());
        assert!(parse("=x").is_err());
    }
}
