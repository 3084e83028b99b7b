// SPDX-License-Identifier: MPL-2.0
//! The event log in NATS JetStream, as `raftsink` writes it and `videoai-events` reads it.
//!
//! * One JetStream stream (default `VIDEOAI_EVENTS`, file storage) holding the subjects
//!   `videoai.events.>`; each video stream publishes on its own subject
//!   `videoai.events.<stream-id, made subject-safe>_<8 hex of a hash of the stream-id>`.
//! * Each message is one [`FrameEvent`] as JSON, with header `Nats-Msg-Id: <stream-id>:<seq>`
//!   so JetStream drops duplicates within its duplicate window; beyond it, writers read the last
//!   message of the subject (the stream's high-water mark) and skip what is already stored.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::event::FrameEvent;

pub const DEFAULT_STREAM: &str = "VIDEOAI_EVENTS";
pub const SUBJECT_PREFIX: &str = "videoai.events";

/// The server URLs of a `nats://host:port[,host:port…]` location; `None` for anything else.
pub fn parse_location(location: &str) -> Option<Vec<String>> {
    let rest = location.strip_prefix("nats://")?;
    let urls: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with("nats://") {
                s.to_string()
            } else {
                format!("nats://{s}")
            }
        })
        .collect();
    (!urls.is_empty()).then_some(urls)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The subject a video stream's events go to.
pub fn subject(stream_id: &str) -> String {
    let safe: String = stream_id
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{SUBJECT_PREFIX}.{safe}_{:08x}", fnv(stream_id) >> 32)
}

/// The JetStream deduplication id of an event.
pub fn msg_id(stream_id: &str, seq: i64) -> String {
    format!("{stream_id}:{seq}")
}

/// Connects to the servers. With `retry`, keeps trying the first connection too (a writer);
/// without, fails after `timeout` (a reader).
pub async fn connect(
    urls: &[String],
    name: &str,
    timeout: Duration,
    retry: bool,
) -> Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((100 * 2u64.saturating_pow(attempt.min(5) as u32)).min(2000))
        });
    if retry {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(urls.to_vec())
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", urls.join(",")))
}

/// Gets the event stream, creating it (file storage, `replicas` copies) if missing.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<jetstream::stream::Stream, String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot get or create JetStream stream '{name}': {e}"))
}

/// The highest event seq stored on `subject`, if any (the stream's high-water mark).
pub async fn last_seq(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<i64>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => {
            let from_header = msg
                .headers
                .get("Nats-Msg-Id")
                .and_then(|v| v.as_str().rsplit_once(':').map(|(_, s)| s.to_string()))
                .and_then(|s| s.parse::<i64>().ok());
            let seq = from_header.or_else(|| {
                serde_json::from_slice::<FrameEvent>(&msg.payload)
                    .ok()
                    .map(|e| e.seq)
            });
            Ok(seq)
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("cannot read the last event on {subject}: {e}")),
    }
}

/// Every event in the stream, in stream order (the order they were acknowledged).
pub async fn read_all(js: &jetstream::Context, name: &str) -> Result<Vec<FrameEvent>, String> {
    let mut stream = js
        .get_stream(name)
        .await
        .map_err(|e| format!("cannot open JetStream stream '{name}': {e}"))?;
    let last = stream
        .info()
        .await
        .map_err(|e| format!("cannot read stream '{name}': {e}"))?
        .state
        .last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| format!("cannot read stream '{name}': {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot read stream '{name}': {e}"))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| format!("reading stream '{name}': {e}"))?;
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(last);
        let ev: FrameEvent = serde_json::from_slice(&msg.payload)
            .map_err(|e| format!("stream '{name}' message {seq}: not an event: {e}"))?;
        out.push(ev);
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// The process-wide runtime the `raftsink` forwarders run on (one worker thread; SQLite work goes
/// to its blocking pool).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("videoai-nats")
            .enable_all()
            .build()
            .expect("a tokio runtime can be built")
    });
    &RUNTIME
}

type Clients = std::collections::HashMap<String, (async_nats::Client, usize)>;

fn clients() -> &'static std::sync::Mutex<Clients> {
    static CLIENTS: std::sync::LazyLock<std::sync::Mutex<Clients>> =
        std::sync::LazyLock::new(Default::default);
    &CLIENTS
}

/// A connection shared by every writer in the process that uses the same servers (one TCP
/// connection however many cameras); give it back with [`release_client`].
pub async fn shared_client(
    urls: &[String],
    timeout: Duration,
) -> Result<async_nats::Client, String> {
    let key = urls.join(",");
    if let Some((c, n)) = clients().lock().unwrap().get_mut(&key) {
        *n += 1;
        return Ok(c.clone());
    }
    let client = connect(urls, "videoai-raftsink", timeout, true).await?;
    let mut map = clients().lock().unwrap();
    let entry = map.entry(key).or_insert((client, 0));
    entry.1 += 1;
    Ok(entry.0.clone())
}

/// Gives back a connection from [`shared_client`]; the last user closes it.
pub fn release_client(urls: &[String]) {
    let key = urls.join(",");
    let mut map = clients().lock().unwrap();
    if let Some((_, n)) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// Runs `f` on a single-threaded runtime (for synchronous callers).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_subjects() {
        assert_eq!(
            parse_location("nats://127.0.0.1:4222,127.0.0.1:4223"),
            Some(vec![
                "nats://127.0.0.1:4222".to_string(),
                "nats://127.0.0.1:4223".to_string()
            ])
        );
        assert_eq!(parse_location("events.db"), None);
        let s = subject("a.b c*>/001");
        assert!(s.starts_with("videoai.events.a_b_c___001_"), "{s}");
        assert_eq!(s.matches('.').count(), 2);
        assert_ne!(subject("a.b"), subject("a_b"), "the hash keeps them apart");
        assert_eq!(msg_id("cam", 7), "cam:7");
    }
}
