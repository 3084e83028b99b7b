// SPDX-License-Identifier: MPL-2.0
//! What the buckets hold: cameras of the registry, leases, workers and statuses (JSON values).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Placeholders every worker fills itself; a camera's own parameters cannot use these names.
pub const RESERVED: &[&str] = &["CAMERA_ID", "URI", "NATS"];

/// A camera of the registry (`videoai-cameras`, key = camera id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Camera {
    pub uri: String,
    /// `${KEY}` placeholders of the pipeline file, for this camera.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A camera id: 1 to 64 of `A-Z a-z 0-9 _ -` (a key, a stream id and a subject token at once).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("camera id '{id}': 1 to 64 characters expected"));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(format!(
            "camera id '{id}': '{c}' is not allowed (letters, digits, '_' and '-' only)"
        )),
        None => Ok(()),
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "parameter '{key}': a name of letters, digits and '_' (not starting with a digit) expected"
        ));
    }
    if RESERVED.contains(&key) {
        return Err(format!(
            "parameter '{key}' is filled by the worker itself (reserved: {})",
            RESERVED.join(", ")
        ));
    }
    Ok(())
}

/// `KEY=VALUE` arguments into parameters.
pub fn parse_params<S: AsRef<str>>(args: &[S]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for a in args {
        let a = a.as_ref();
        let Some((k, v)) = a.split_once('=') else {
            return Err(format!("'{a}': KEY=VALUE expected"));
        };
        check_key(k)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("'{k}' is given twice: give each parameter once"));
        }
    }
    Ok(out)
}

impl Camera {
    pub fn new(uri: &str, params: BTreeMap<String, String>) -> Result<Camera, String> {
        let c = Camera {
            uri: uri.to_string(),
            params,
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if self.uri.trim().is_empty() {
            return Err("empty uri".into());
        }
        for k in self.params.keys() {
            check_key(k)?;
        }
        Ok(())
    }

    /// A registry entry; the error says what is wrong with it.
    pub fn decode(id: &str, value: &[u8]) -> Result<Camera, String> {
        check_id(id)?;
        let c: Camera = serde_json::from_slice(value).map_err(|e| {
            format!(
                "not a camera entry ({e}); expected {{\"uri\": \"…\", \"params\": {{\"KEY\": \"VALUE\"}}}}, found '{}'",
                String::from_utf8_lossy(value)
            )
        })?;
        c.check()?;
        Ok(c)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a camera serialises")
    }
}

/// A running camera's lease (`videoai-leases`, key = camera id), renewed by its holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Lease {
    pub worker: String,
    /// `starting`, `running` or `retrying`.
    pub state: String,
    /// The last warning or error of the camera's pipeline, if any.
    #[serde(default)]
    pub detail: String,
    /// Frames per second through the pipeline's sink, over the last renewal period.
    #[serde(default)]
    pub fps: f64,
    #[serde(default)]
    pub frames: u64,
    /// Wall-clock time of the last frame at the sink (ms since the epoch).
    #[serde(default)]
    pub last_frame_ms: Option<u64>,
    /// When this worker took the camera (ms since the epoch).
    pub since_ms: u64,
    /// The holder offers the camera to a worker with room (a fair share, or it is leaving):
    /// it keeps running it until a taker's pipeline stored its first frame.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offered: bool,
    /// Set by a taker of an offered camera: the worker it took it from, which runs it until
    /// `stored` (make-before-break).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The holder's pipeline has stored an event (in NATS, for a NATS location).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stored: bool,
}

/// A live worker (`videoai-workers`, key = worker name), renewed like a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WorkerInfo {
    pub capacity: usize,
    pub cameras: Vec<String>,
    pub claims: u64,
    pub releases: u64,
    pub takeovers: u64,
    pub at_ms: u64,
    /// Stopping (SIGTERM): hands its cameras over and takes none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
    /// Which process this is (`host:pid:start ms`): a worker name is unique while it lives, so
    /// a second process with the same name can tell it is not alone.
    #[serde(default)]
    pub instance: String,
}

/// Why a camera does not run (`videoai-status`, key = camera id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CameraStatus {
    /// `failed` or `retrying`.
    pub state: String,
    pub detail: String,
    pub worker: String,
    pub at_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_parameters_are_checked_with_a_reason() {
        let c = Camera::decode(
            "cam-1",
            br#"{"uri":"rtsp://h/s","params":{"MODEL":"m.onnx"}}"#,
        )
        .unwrap();
        assert_eq!(c.params["MODEL"], "m.onnx");
        assert_eq!(Camera::decode("cam-1", &c.encode()).unwrap(), c);
        let bad = Camera::decode("cam-1", b"rtsp://h/s").unwrap_err();
        assert!(bad.contains("not a camera entry"), "{bad}");
        assert!(
            Camera::decode("cam.1", &c.encode())
                .unwrap_err()
                .contains("'.'")
        );
        assert!(
            Camera::decode("c", br#"{"uri":" "}"#)
                .unwrap_err()
                .contains("empty uri")
        );
        assert!(parse_params(&["URI=x"]).unwrap_err().contains("reserved"));
        assert!(parse_params(&["1X=y"]).is_err());
        assert!(
            parse_params(&["noequals"])
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        assert_eq!(parse_params(&["A=b=c"]).unwrap()["A"], "b=c");
        assert!(parse_params(&["A=1", "A=2"]).unwrap_err().contains("twice"));
    }
}
