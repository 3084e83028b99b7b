// SPDX-License-Identifier: MPL-2.0
//! What an MQTT target is, from raftsink's properties: the broker's address (`mqtt://` or
//! `mqtts://`), the credentials (from a file or the environment, never from a property value
//! or a log line), TLS roots, and the topics each event goes to. Pure: unit-tested here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The topic template's default: `{stream}` is the stream id (see [`topic_level`]).
pub const DEFAULT_TOPIC: &str = "videoai/{stream}";
/// Environment variables read for the credentials when no credentials file is given.
pub const USERNAME_ENV: &str = "VIDEOAI_MQTT_USERNAME";
pub const PASSWORD_ENV: &str = "VIDEOAI_MQTT_PASSWORD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V311,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "5" | "5.0" => Some(Protocol::V5),
            "3.1.1" | "4" => Some(Protocol::V311),
            _ => None,
        }
    }
}

/// A password: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// A broker to deliver to.
#[derive(Debug, Clone)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
    /// 1 or 2.
    pub qos: u8,
    pub topic: String,
    pub credentials: Option<Credentials>,
    pub ca_file: Option<PathBuf>,
    /// Frames without detections are published too.
    pub publish_empty: bool,
}

impl Target {
    /// The name of this target in the log's deliveries table: where events went, so that the
    /// same log delivered to two brokers keeps two marks.
    pub fn name(&self) -> String {
        format!(
            "{}://{}:{}/{}",
            if self.tls { "mqtts" } else { "mqtt" },
            self.host,
            self.port,
            self.topic
        )
    }

    /// `mqtt://host:port` for messages (no credentials in it, ever).
    pub fn address(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls { "mqtts" } else { "mqtt" },
            self.host,
            self.port
        )
    }

    /// The topic of `stream`'s `kind` (`events`, `status`, `crossings/<line>`, …).
    pub fn topic(&self, stream: &str, kind: &str) -> String {
        format!(
            "{}/{kind}",
            self.topic.replace("{stream}", &topic_level(stream))
        )
    }
}

/// A name as one topic level: `/`, `+`, `#` and NUL (which MQTT gives a meaning, or forbids in a
/// published topic) become `_`; an empty name becomes `_`.
pub fn topic_level(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    name.chars()
        .map(|c| match c {
            '/' | '+' | '#' | '\0' => '_',
            c => c,
        })
        .collect()
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (ports 1883 and 8883 by default).
/// Credentials in it are refused: they would show in `gst-inspect`, `ps` and logs.
pub fn parse_location(location: &str) -> Result<(bool, String, u16), String> {
    // Whatever is wrong with it, a password in it is never repeated in a message.
    let shown = redact(location);
    let url = url::Url::parse(location).map_err(|e| {
        format!("'{shown}' is not a URL ({e}): expected mqtt://host[:port] or mqtts://host[:port]")
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the MQTT location has credentials in it: put them in a file (mqtt-credentials-file, lines username=… and password=…) or in {USERNAME_ENV} and {PASSWORD_ENV}, never in the location"
        ));
    }
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "'{shown}' has the scheme '{other}': expected mqtt://host[:port] or mqtts://host[:port]"
            ));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("'{shown}' names no host: expected mqtt://host[:port]"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return Err(format!(
            "'{shown}' has a path or query: expected mqtt://host[:port] (topics come from mqtt-topic)"
        ));
    }
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    Ok((tls, host, port))
}

/// `location` with whatever stands between `//` and the last `@` (credentials) as `***`.
fn redact(location: &str) -> String {
    let start = location.find("//").map_or(0, |i| i + 2);
    match location[start..].rfind('@') {
        Some(at) => format!("{}***{}", &location[..start], &location[start + at..]),
        None => location.to_string(),
    }
}

/// Reads the credentials from `file` (lines `username=…` and `password=…`; `#` comments), else
/// from the environment ([`USERNAME_ENV`], [`PASSWORD_ENV`]); `None` when neither has any.
pub fn credentials(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, String> {
    let (mut user, mut pass) = (None, None);
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "cannot read the MQTT credentials file '{}': {e}",
                file.display()
            )
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some(("username", v)) => user = Some(v.trim().to_string()),
                Some(("password", v)) => pass = Some(v.trim().to_string()),
                _ => {
                    return Err(format!(
                        "the MQTT credentials file '{}', line {}: expected username=… or password=… (the line is not shown: it may hold a secret)",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
        if user.is_none() {
            return Err(format!(
                "the MQTT credentials file '{}' has no username=… line",
                file.display()
            ));
        }
    } else {
        user = env(USERNAME_ENV).filter(|u| !u.is_empty());
        pass = env(PASSWORD_ENV);
    }
    Ok(user.map(|username| Credentials {
        username,
        password: Secret(pass.unwrap_or_default()),
    }))
}

/// The TLS client configuration: the CA file's certificates, else the system's store; ring as
/// the crypto provider (as NATS uses).
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let pem = std::fs::read(file)
                .map_err(|e| format!("cannot read the MQTT CA file '{}': {e}", file.display()))?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    format!(
                        "the MQTT CA file '{}' is not PEM certificates: {e}",
                        file.display()
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    format!(
                        "the MQTT CA file '{}' holds a certificate rustls refuses: {e}",
                        file.display()
                    )
                })?;
                n += 1;
            }
            if n == 0 {
                return Err(format!(
                    "the MQTT CA file '{}' holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                    file.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "TLS: no CA certificates in the system's store (Debian: ca-certificates); give mqtt-ca-file"
                        .into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("mqtt://127.0.0.1").unwrap(),
            (false, "127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_location("mqtts://broker.example:8884/").unwrap(),
            (true, "broker.example".into(), 8884)
        );
        for bad in [
            "mqtt//x",
            "http://x",
            "mqtt://",
            "mqtt://user:pw@x",
            "mqtt://x/topic",
            "mqtt://x:99999",
            "mqtt://cam:pw@x:99999",
            "http://cam:pw@x",
            "mqtt://cam:p@w@x/topic",
        ] {
            let e = parse_location(bad).unwrap_err();
            assert!(!e.contains("pw") && !e.contains("p@w"), "{e}");
        }
    }

    #[test]
    fn credentials_from_a_file_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("videoai-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c");
        std::fs::write(&f, "# site broker\nusername=cam\npassword= s3cret \n").unwrap();
        let c = credentials(Some(&f), |_| None).unwrap().unwrap();
        assert_eq!(c.username, "cam");
        assert_eq!(c.password.0, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(&f, "user cam\n").unwrap();
        let e = credentials(Some(&f), |_| None).unwrap_err();
        assert!(e.contains("line 1") && !e.contains("user cam"), "{e}");
        let env = |k: &str| match k {
            USERNAME_ENV => Some("u".to_string()),
            PASSWORD_ENV => Some("p".to_string()),
            _ => None,
        };
        assert_eq!(credentials(None, env).unwrap().unwrap().username, "u");
        assert_eq!(credentials(None, |_| None).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn topics_keep_names_on_one_level() {
        let t = Target {
            tls: false,
            host: "h".into(),
            port: 1883,
            protocol: Protocol::V5,
            qos: 1,
            topic: DEFAULT_TOPIC.into(),
            credentials: None,
            ca_file: None,
            publish_empty: false,
        };
        assert_eq!(t.topic("cam-1", "events"), "videoai/cam-1/events");
        assert_eq!(
            t.topic("site/a+b#", "crossings/door"),
            "videoai/site_a_b_/crossings/door"
        );
        assert_eq!(topic_level(""), "_");
    }
}
