// SPDX-License-Identifier: MPL-2.0
//! Source locations: plain paths to `file://` URIs, which schemes are live, and URIs with the
//! credentials taken out for logs and messages.

/// Schemes whose sources are live: they are reconnected on errors, EOS and stalls. Everything
/// else (files, HTTP downloads) ends with EOS, and an error ends the stream.
const LIVE_SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "rtspt", "rtsph", "rtmp", "rtmps", "v4l2", "udp", "rtp", "srt", "srtp",
];

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
    LIVE_SCHEMES.contains(&scheme(uri).as_str())
}

/// The URI with any `user:password@` replaced by `***@`, for logs and messages.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_string(),
    }
}

/// `text` with the credentials of `uri` (if it has any) replaced by `***`: for messages from
/// inner elements, which may quote the URI.
pub fn scrub(text: &str, uri: &str) -> String {
    let Some((_, rest)) = uri.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_string();
    };
    let userinfo = &rest[..at];
    let mut out = text.replace(userinfo, "***");
    if let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        out = out.replace(password, "***");
    }
    out
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
    }

    #[test]
    fn paths_become_uris_and_liveness() {
        gst::init().unwrap();
        assert_eq!(normalize("/tmp/a b.mp4").unwrap(), "file:///tmp/a%20b.mp4");
        assert!(normalize("clip.bin").unwrap().starts_with("file:///"));
        assert_eq!(normalize("rtsp://cam/1").unwrap(), "rtsp://cam/1");
        assert!(is_live("RTSP://cam/1") && is_live("v4l2:///dev/video0"));
        assert!(!is_live("file:///x") && !is_live("https://x/y.mp4"));
    }
}
