// SPDX-License-Identifier: MPL-2.0
//! Source locations: plain paths to `file://` URIs, which are malformed, which schemes are
//! live, credentials taken out of the URI (for the source's own properties), and URIs with
//! their secrets masked for logs and messages.

/// Schemes whose sources are live: they are reconnected on errors, EOS and stalls.
const LIVE_SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "rtspt", "rtsph", "rtmp", "rtmps", "v4l2", "udp", "rtp", "srt", "srtp",
];

/// Schemes whose live-ness only the source can tell: an HTTP camera (MJPEG, a live MPEG-TS) or
/// a file on a web server.
const HTTP_SCHEMES: &[&str] = &["http", "https"];

/// Schemes that name a host (`scheme://host[:port]/…`).
const NETWORK_SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "rtspt", "rtsph", "rtmp", "rtmps", "http", "https", "srt", "srtp",
];

/// Whether a source is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A camera: reconnected on errors, EOS and stalls.
    Live,
    /// A file: ends with EOS; its errors are final.
    File,
    /// HTTP: the response tells (see `probe::http_is_live`).
    AskTheSource,
}

/// A URI for `location`: URIs as they are, paths (relative or absolute) as `file://` URIs.
pub fn normalize(location: &str) -> Result<String, String> {
    if has_scheme(location) {
        return Ok(location.to_string());
    }
    let path = std::path::Path::new(location);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve '{location}': {e}"))?
            .join(path)
    };
    gst::glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| format!("'{location}' is neither a URI nor a usable path: {e}"))
}

/// `scheme://…` with an RFC 3986 scheme (a letter, then letters, digits, `+`, `-`, `.`).
fn has_scheme(location: &str) -> bool {
    location.split_once("://").is_some_and(|(s, _)| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic())
            && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '+' | '-' | '.'))
    })
}

pub fn scheme(uri: &str) -> String {
    uri.split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default()
}

pub fn is_live(uri: &str) -> bool {
    liveness(uri) == Liveness::Live
}

pub fn liveness(uri: &str) -> Liveness {
    let scheme = scheme(uri);
    if LIVE_SCHEMES.contains(&scheme.as_str()) {
        Liveness::Live
    } else if HTTP_SCHEMES.contains(&scheme.as_str()) {
        Liveness::AskTheSource
    } else {
        Liveness::File
    }
}

/// Checks what can be checked before connecting: a network URI names a host and a port that
/// can exist; a file exists and can be read. The error says what is wrong with which URI.
pub fn validate(uri: &str) -> Result<(), String> {
    let shown = redact(uri);
    let scheme = scheme(uri);
    if NETWORK_SCHEMES.contains(&scheme.as_str()) {
        let parsed = url::Url::parse(uri).map_err(|e| match e {
            url::ParseError::EmptyHost => {
                format!("'{shown}' has no host: write {scheme}://host[:port]/path")
            }
            url::ParseError::InvalidPort => {
                format!("'{shown}': the port is not a number from 1 to 65535")
            }
            e => format!("'{shown}' is not a valid URI: {e}"),
        })?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "'{shown}' has no host: write {scheme}://host[:port]/path"
            ));
        }
    } else if scheme == "file" {
        let path = gst::glib::filename_from_uri(uri)
            .map(|(p, _)| p)
            .map_err(|e| format!("'{shown}' is not a file URI: {e}"))?;
        std::fs::File::open(&path).map_err(|e| {
            format!(
                "cannot open '{}': {e}. Check the path (uri=/path/to/clip.mp4 or file:///path/to/clip.mp4)",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// The URI without `user:password@`, and the user and password it had (decoded): the source
/// gets them as properties (`user-id`/`user-pw`), so they are never in a URI another element
/// logs.
pub fn split_credentials(uri: &str) -> (String, Option<(String, String)>) {
    let Ok(mut parsed) = url::Url::parse(uri) else {
        return (uri.to_string(), None);
    };
    if parsed.username().is_empty() && parsed.password().is_none() {
        return (uri.to_string(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(parsed.username());
    let password = decode(parsed.password().unwrap_or(""));
    if parsed.set_username("").is_err() || parsed.set_password(None).is_err() {
        return (uri.to_string(), None);
    }
    (parsed.to_string(), Some((user, password)))
}

/// Query parameters whose values are secrets (names compared without case).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "token",
    "access_token",
    "auth",
    "auth_token",
    "secret",
    "apikey",
    "api_key",
    "key",
    "sig",
    "signature",
    "credential",
    "credentials",
];

/// Secrets shorter than this are only masked inside the URI itself (replacing a short string
/// everywhere in a message would mangle addresses and numbers).
const MIN_BARE_SECRET: usize = 4;

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// The URI with its credentials (`user:password@`, secret query parameter values) replaced
/// by `***`, rebuilt from its parts; for logs and messages.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = stream_key_masked(scheme, tail);
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, value)) if is_secret_param(name) && !value.is_empty() => {
                        format!("{name}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            let mut t = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
    };
    format!("{scheme}://{authority}{tail}")
}

/// RTMP: `rtmp://host/app/<stream key>`: the key is a secret (whoever has it can publish).
/// Returns where the key is in `path` (the URI after the authority).
fn stream_key(scheme: &str, path: &str) -> Option<(usize, usize)> {
    if !scheme.to_ascii_lowercase().starts_with("rtmp") {
        return None;
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let trimmed = path[..end].trim_start_matches('/');
    let app_end = trimmed.find('/')?;
    let start = end - trimmed.len() + app_end + 1;
    (start < end).then_some((start, end))
}

fn stream_key_masked(scheme: &str, path: &str) -> String {
    match stream_key(scheme, path) {
        Some((a, b)) => format!("{}***{}", &path[..a], &path[b..]),
        None => path.to_string(),
    }
}

/// The secrets of `uri` long enough to be masked on their own.
fn bare_secrets(uri: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some((_, rest)) = uri.split_once("://") else {
        return out;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_end].rfind('@') {
        let userinfo = &rest[..at];
        out.push(userinfo.to_string());
        if let Some((_, password)) = userinfo.split_once(':') {
            out.push(password.to_string());
        }
    }
    if let Some((scheme, _)) = uri.split_once("://")
        && let Some((a, b)) = stream_key(scheme, &rest[authority_end..])
    {
        out.push(rest[authority_end..][a..b].to_string());
    }
    if let Some((_, query)) = rest.split_once('?') {
        let query = query.split('#').next().unwrap_or("");
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_secret_param(name)
            {
                out.push(value.to_string());
            }
        }
    }
    out.retain(|s| s.len() >= MIN_BARE_SECRET);
    // Longest first, so that `user:pass` goes before `pass`.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// `text` with the credentials of `uri` (if it has any) replaced by `***`: for messages from
/// inner elements, which may quote the URI (or parts of it).
pub fn scrub(text: &str, uri: &str) -> String {
    let redacted = redact(uri);
    if redacted == uri {
        return text.to_string();
    }
    let mut out = text.replace(uri, &redacted);
    for secret in bare_secrets(uri) {
        out = out.replace(&secret, "***");
    }
    out
}

/// rtspsrc's lower transports (GstRTSPLowerTrans nicks).
const PROTOCOLS: &[&str] = &["udp", "udp-mcast", "tcp", "http", "tls"];

/// Checks a `protocols` value before it reaches rtspsrc (which would abort on a bad one).
pub fn check_protocols(value: &str) -> Result<(), String> {
    // rtspsrc takes exactly `a+b` (no spaces, no other separator).
    let bad: Vec<&str> = value
        .split('+')
        .filter(|t| !PROTOCOLS.contains(t))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "protocols=\"{value}\": {} not a transport; use {} joined with +, e.g. protocols=tcp or protocols=udp+tcp",
            bad.iter()
                .map(|b| format!("'{b}'"))
                .collect::<Vec<_>>()
                .join(", "),
            PROTOCOLS.join(", ")
        ))
    }
}

/// The URI to give the inner source, and the credentials it gets as properties instead (RTSP
/// and HTTP sources take `user-id`/`user-pw`; a URI with a password would be logged by every
/// element it passes through at `GST_DEBUG=5`).
pub fn source_uri(uri: &str) -> (String, Option<(String, String)>) {
    let scheme = scheme(uri);
    if scheme.starts_with("rtsp") || scheme.starts_with("http") {
        split_credentials(uri)
    } else {
        (uri.to_string(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_only() {
        assert_eq!(
            redact("rtsp://admin:s3cret@10.0.0.5:554/stream1"),
            "rtsp://***@10.0.0.5:554/stream1"
        );
        assert_eq!(redact("rtsp://10.0.0.5/a@b"), "rtsp://10.0.0.5/a@b");
        assert_eq!(redact("file:///tmp/x.mp4"), "file:///tmp/x.mp4");
        let uri = "rtsp://admin:s3cret@cam/1";
        assert_eq!(
            scrub("cannot open rtsp://admin:s3cret@cam/1 (s3cret)", uri),
            "cannot open rtsp://***@cam/1 (***)"
        );
        assert_eq!(scrub("x s3cret", "rtsp://cam/1"), "x s3cret");
        // Secrets in the query string too.
        assert_eq!(
            redact("srt://cam:9000?mode=caller&passphrase=hunter22&latency=200"),
            "srt://cam:9000?mode=caller&passphrase=***&latency=200"
        );
        assert_eq!(
            redact("https://cam/live.m3u8?token=abc123&x=1"),
            "https://cam/live.m3u8?token=***&x=1"
        );
        assert_eq!(
            redact("rtsp://u:p4ss@cam/1?Password=p4ss"),
            "rtsp://***@cam/1?Password=***"
        );
        // Short or empty secrets do not mangle the rest; harmless names stay.
        let uri = "srt://10.0.0.16:9000?passphrase=x&pbkeylen=16&keyint=2";
        assert_eq!(
            redact(uri),
            "srt://10.0.0.16:9000?passphrase=***&pbkeylen=16&keyint=2"
        );
        assert_eq!(
            scrub(
                "cannot reach 10.0.0.16:9000 via srt://10.0.0.16:9000?passphrase=x&pbkeylen=16&keyint=2",
                uri
            ),
            "cannot reach 10.0.0.16:9000 via srt://10.0.0.16:9000?passphrase=***&pbkeylen=16&keyint=2"
        );
        assert_eq!(scrub("error at cam", "rtsp://@cam/1"), "error at cam");
    }

    #[test]
    fn rtmp_stream_keys_and_credentials() {
        let uri = "rtmp://ingest.example:1935/live/sk-9f8e7d6c?x=1";
        assert_eq!(redact(uri), "rtmp://ingest.example:1935/live/***?x=1");
        assert_eq!(
            scrub("publishing to live/sk-9f8e7d6c failed", uri),
            "publishing to live/*** failed"
        );
        assert_eq!(redact("rtmp://host/live"), "rtmp://host/live");
        assert_eq!(
            split_credentials("rtsp://ad%40min:p%3Ass@cam:554/s?a=1"),
            (
                "rtsp://cam:554/s?a=1".to_string(),
                Some(("ad@min".to_string(), "p:ss".to_string()))
            )
        );
        assert_eq!(
            split_credentials("rtsp://cam/s"),
            ("rtsp://cam/s".into(), None)
        );
    }

    #[test]
    fn malformed_uris() {
        gst::init().unwrap();
        for bad in ["rtsp://", "rtsp:///cam", "http://:8080/x", "rtsp://u:p@/x"] {
            let e = validate(bad).unwrap_err();
            assert!(
                e.contains("no host") || e.contains("not a valid URI"),
                "{bad}: {e}"
            );
        }
        assert!(validate("rtsp://h:99999/").unwrap_err().contains("port"));
        assert!(validate("rtsp://[::1]:554/x").is_ok());
        assert!(validate("rtsp://cam/x").is_ok());
        assert!(
            validate("file:///nonexistent/videoai.mp4")
                .unwrap_err()
                .contains("/nonexistent/videoai.mp4")
        );
    }

    #[test]
    fn paths_become_uris_and_liveness() {
        gst::init().unwrap();
        assert_eq!(normalize("/tmp/a b.mp4").unwrap(), "file:///tmp/a%20b.mp4");
        assert!(normalize("clip.bin").unwrap().starts_with("file:///"));
        assert_eq!(normalize("rtsp://cam/1").unwrap(), "rtsp://cam/1");
        assert!(is_live("RTSP://cam/1") && is_live("v4l2:///dev/video0"));
        assert!(!is_live("file:///x") && !is_live("https://x/y.mp4"));
        assert_eq!(liveness("https://x/y.mp4"), Liveness::AskTheSource);
    }
}
