// SPDX-License-Identifier: MPL-2.0
//! The event log in NATS JetStream, as `raftsink` writes it and `videoai-events` reads it.
//!
//! * One JetStream stream (default `VIDEOAI_EVENTS`, file storage) holding the subjects
//!   `videoai.events.>`; each video stream publishes on its own subject
//!   `videoai.events.<stream-id, made subject-safe>_<8 hex of a hash of the stream-id>`.
//! * Each message is one [`FrameEvent`] as JSON, with headers
//!   `Videoai-Key: <seq> <capture-ns> [<pts-ns>]` ([`key_header`]: a writer tells from the
//!   headers alone whether a key holds the same frame) and
//!   `Nats-Expected-Last-Subject-Sequence`: JetStream stores a message only when
//!   the subject's last message is the one the writer saw last, so two writers of one video
//!   stream can never both append, at any age of the key. A refused writer reads where the
//!   subject stands ([`last_on_subject`]) and appends a key at or below the subject's last one
//!   only after checking the subject does not hold it ([`keys_on_subject`]).
//! * To servers older than 2.11 also `Nats-Msg-Id: <stream-id>:<seq>` ([`msg_id`]; JetStream
//!   drops a repeat within its duplicate window): they check the expected sequence against
//!   applied messages only, so a publish sent again during a leader election, while the first
//!   is still in flight, would pass it ([`refuses_in_flight_repeats`]).

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::eventlog::event::FrameEvent;

pub const DEFAULT_STREAM: &str = "VIDEOAI_EVENTS";
pub const SUBJECT_PREFIX: &str = "videoai.events";

/// The server URLs of a `nats://host:port[,host:port…]` location: `None` when the location is
/// not a NATS one (a file path), `Some(Err(why))` when it names no usable server (no host, a
/// port that is not a number). A missing port means NATS's 4222.
pub fn parse_location(location: &str) -> Option<Result<Vec<String>, String>> {
    let scheme = location.get(..5)?;
    if !scheme.eq_ignore_ascii_case("nats:") {
        return None;
    }
    let usage = "write nats://host:port, or several servers as nats://host:port,host:port";
    let Some(rest) = location[5..].strip_prefix("//") else {
        return Some(Err(format!("'{location}' is not a NATS location: {usage}")));
    };
    let mut urls = Vec::new();
    for server in rest.split(',').map(str::trim) {
        let server = server.strip_prefix("nats://").unwrap_or(server);
        if server.is_empty() || server.starts_with(':') {
            return Some(Err(format!(
                "'{location}' names a server without a host: {usage}"
            )));
        }
        if server.ends_with(':') {
            return Some(Err(format!(
                "'{location}': '{server}' has no port after its ':' (leave the ':' out for NATS's 4222): {usage}"
            )));
        }
        let url = match url::Url::parse(&format!("nats://{server}")) {
            Ok(u) => u,
            Err(url::ParseError::InvalidPort) => {
                return Some(Err(format!(
                    "'{location}': the port of '{server}' is not a port number (1-65535): {usage}"
                )));
            }
            Err(e) => return Some(Err(format!("'{location}': '{server}': {e}; {usage}"))),
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Some(Err(format!(
                "'{location}' names a server without a host: {usage}"
            )));
        };
        if url.path().len() > 1 || url.query().is_some() {
            return Some(Err(format!(
                "'{location}': '{server}' has a path or query, a NATS server has neither: {usage}"
            )));
        }
        let auth = match (url.username(), url.password()) {
            ("", _) => String::new(),
            (u, None) => format!("{u}@"),
            (u, Some(p)) => format!("{u}:{p}@"),
        };
        urls.push(format!(
            "nats://{auth}{host}:{}",
            url.port().unwrap_or(4222)
        ));
    }
    Some(Ok(urls))
}

/// The host:port pairs of `urls` (for a plain TCP probe).
pub fn host_ports(urls: &[String]) -> Vec<String> {
    urls.iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .filter_map(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(4222))))
        .collect()
}

/// Why the servers cannot be used, asked of TCP itself (the NATS client only says that a
/// request timed out): `None` when one of them accepts a connection and greets as a NATS
/// server does (`INFO {…}`). Otherwise, per server: the connection refused, no answer, or an
/// answer that is not NATS (an HTTP server, say).
pub async fn probe(urls: &[String]) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut why = Vec::new();
    for hp in host_ports(urls) {
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(&hp))
            .await
        {
            Ok(Ok(mut conn)) => {
                let mut greeting = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut greeting)).await
                {
                    Ok(Ok(n)) if greeting[..n].starts_with(b"INFO ") => return None,
                    Ok(Ok(0)) | Ok(Err(_)) => why.push(format!(
                        "{hp}: accepts connections but closed this one without a word: not a NATS server?"
                    )),
                    Ok(Ok(n)) => why.push(format!(
                        "{hp}: not a NATS server (it said '{}' where NATS says 'INFO {{…}}')",
                        String::from_utf8_lossy(&greeting[..n])
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .trim()
                    )),
                    Err(_) => why.push(format!(
                        "{hp}: accepts connections but says nothing within 1 s: not a NATS server (an HTTP server waits for a request)?"
                    )),
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => why.push(format!(
                "{hp}: connection refused (no NATS server listening)"
            )),
            Ok(Err(e)) => why.push(format!("{hp}: {e}")),
            Err(_) => why.push(format!("{hp}: no answer within 1 s")),
        }
    }
    Some(format!("cannot connect to NATS: {}", why.join("; ")))
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
    format!(
        "{SUBJECT_PREFIX}.{safe}_{:08x}",
        crate::util::hash::fnv1a(stream_id.as_bytes()) >> 32
    )
}

/// Whether a server of this version (its INFO `version`, e.g. `2.15.1`) refuses a second publish
/// with the same `Nats-Expected-Last-Subject-Sequence` while the first is still in flight: from
/// 2.11.0 the stream leader tracks the publishes in flight per subject. Before, it checks
/// applied messages only, so two publishes of one key sent during a leader election can both be
/// stored, and only `Nats-Msg-Id` (deduplication, applied in order) keeps the second out. An
/// unreadable version counts as an old one.
pub fn refuses_in_flight_repeats(version: &str) -> bool {
    at_least(version, (2, 11))
}

/// Whether a server of this version takes atomic batches (a subject's events in one proposal,
/// all stored or none: 2.12.0 and later, on a stream that allows them, see [`ensure_stream`]).
/// An unreadable version counts as an old one.
pub fn takes_atomic_batches(version: &str) -> bool {
    at_least(version, (2, 12))
}

/// Whether `version` (`2.15.1`, `v2.12.0-beta`) is at least `major.minor`.
fn at_least(version: &str, want: (u32, u32)) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (next(), next()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// Whether publishes must carry `Nats-Msg-Id`, given the version of the server a client is
/// connected to: yes for a server older than 2.11 ([`refuses_in_flight_repeats`]), and from
/// then on for the life of the process. A cluster being upgraded has old and new servers, and
/// the stream leader, which makes the check, may be an old one while the client talks to a new
/// one; a process that has seen an old server keeps the id.
pub fn msg_id_needed(version: &str) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static OLD_SEEN: AtomicBool = AtomicBool::new(false);
    if !refuses_in_flight_repeats(version) {
        OLD_SEEN.store(true, Ordering::Relaxed);
    }
    OLD_SEEN.load(Ordering::Relaxed)
}

/// Whether a refused publish is worth sending again as it is, at once: servers from 2.11 refuse
/// a publish with `Nats-Expected-Last-Subject-Sequence` while another publish of the subject is
/// still being applied (10164, "wrong last sequence" without a number: often the writer's own
/// previous one, whose acknowledgement can come first) and while a new stream leader cannot
/// check yet (10163); with `Nats-Msg-Id`, while a publish with the same id is (10158).
/// Unlike 10071 ("wrong last sequence: N") none says the subject moved on: the server answers
/// them before comparing sequences.
pub fn subject_busy(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| {
            use jetstream::ErrorCode;
            let code = api.error_code();
            code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
                || code == ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY
                || code == ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
        })
}

/// Whether an atomic batch was refused in a way every later batch would be too: its stream
/// does not allow them (10174), or the servers take smaller batches (10199, `max_batch_size`
/// set lower than the default).
pub fn atomic_batches_refused_for_good(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| matches!(api.error_code().0, 10174 | 10199))
}

/// The JetStream deduplication id of an event.
pub fn msg_id(stream_id: &str, seq: i64) -> String {
    format!("{stream_id}:{seq}")
}

/// The header with an event's key and frame: `<seq> <capture-ns> [<pts-ns>]` (see
/// [`key_header`]). One header instead of one per value as before: each header costs every
/// server of the stream parsing time per message (the benchmark measured 10-20% of the
/// throughput for four).
pub const KEY_HEADER: &str = "Videoai-Key";
/// Headers of messages written before [`KEY_HEADER`]: capture time and PTS, seq in `Nats-Msg-Id`.
const OLD_CAPTURE_HEADER: &str = "Videoai-Capture-Ns";
const OLD_PTS_HEADER: &str = "Videoai-Pts-Ns";

/// The value of [`KEY_HEADER`] for an event.
pub fn key_header(seq: i64, capture_ns: i64, pts_ns: Option<i64>) -> String {
    match pts_ns {
        Some(p) => format!("{seq} {capture_ns} {p}"),
        None => format!("{seq} {capture_ns}"),
    }
}

/// (seq, capture, PTS) from a [`KEY_HEADER`] value.
fn parse_key_header(value: &str) -> Option<(i64, i64, Option<i64>)> {
    let mut parts = value.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let capture = parts.next()?.parse().ok()?;
    let pts = match parts.next() {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    parts.next().is_none().then_some((seq, capture, pts))
}

/// The event seq in an old message's `Nats-Msg-Id` header (see [`msg_id`]).
fn seq_of(headers: &async_nats::HeaderMap) -> Option<i64> {
    let id = headers.get("Nats-Msg-Id")?;
    id.as_str().rsplit_once(':')?.1.parse().ok()
}

fn header_i64(headers: &async_nats::HeaderMap, name: &str) -> Option<i64> {
    headers.get(name)?.as_str().parse().ok()
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

/// Gets the event stream, creating it (file storage, `replicas` copies) if missing; created on a
/// server from 2.12 it allows atomic batches (`allow_atomic`). A stream that exists is taken as
/// it is: its configuration may hold what an operator set.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<jetstream::stream::Stream, String> {
    let missing = match js.get_stream(name).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    // A client that retries its first connection has no server's INFO until it is connected:
    // the answer above came from a server, unless it failed for want of one.
    let Some(server) = js.client().try_server_info() else {
        return Err(format!("cannot get JetStream stream '{name}': {missing}"));
    };
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        duplicate_window: Duration::from_secs(120),
        allow_atomic_publish: takes_atomic_batches(&server.version),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot get or create JetStream stream '{name}': {e}"))
}

/// A message on a subject, as a writer needs it: its stream sequence, its key, and the frame it
/// holds (capture time and PTS, from the headers; from the payload for messages written before
/// the headers existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOnSubject {
    pub stream_seq: u64,
    pub seq: i64,
    pub capture_ns: Option<i64>,
    pub pts_ns: Option<i64>,
}

fn key_on_subject(
    stream_seq: u64,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Option<KeyOnSubject> {
    let from_headers = headers.and_then(|h| {
        if let Some((seq, capture, pts)) =
            h.get(KEY_HEADER).and_then(|v| parse_key_header(v.as_str()))
        {
            return Some(KeyOnSubject {
                stream_seq,
                seq,
                capture_ns: Some(capture),
                pts_ns: pts,
            });
        }
        Some(KeyOnSubject {
            stream_seq,
            seq: seq_of(h)?,
            capture_ns: header_i64(h, OLD_CAPTURE_HEADER),
            pts_ns: header_i64(h, OLD_PTS_HEADER),
        })
    });
    from_headers
        .filter(|k| k.capture_ns.is_some() || payload.is_empty())
        .or_else(|| {
            let e = serde_json::from_slice::<FrameEvent>(payload).ok()?;
            Some(KeyOnSubject {
                stream_seq,
                seq: e.seq,
                capture_ns: Some(e.capture_ns),
                pts_ns: e.pts_ns,
            })
        })
        .or(from_headers)
}

/// The last message on `subject` (`None` when it has none).
pub async fn last_on_subject(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<KeyOnSubject>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => Ok(
            key_on_subject(msg.sequence, Some(&msg.headers), &msg.payload).or(Some(KeyOnSubject {
                stream_seq: msg.sequence,
                seq: i64::MIN,
                capture_ns: None,
                pts_ns: None,
            })),
        ),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("cannot read the last event on {subject}: {e}")),
    }
}

/// The last event on `subject`, whole (`None` when it has none).
pub async fn last_event_on_subject(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<FrameEvent>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => Ok(serde_json::from_slice(&msg.payload).ok()),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("cannot read the last event on {subject}: {e}")),
    }
}

/// Where a scan of a subject starts.
#[derive(Debug, Clone, Copy)]
pub enum ScanFrom {
    /// Its first message.
    Start,
    /// The first message stored at or after this time (ns since the Unix epoch).
    Time(i64),
    /// This stream sequence.
    Sequence(u64),
}

/// The keys on `subject` from `from` up to stream sequence `upto` (headers only: constant
/// memory per message), in subject order.
pub async fn keys_on_subject(
    stream: &jetstream::stream::Stream,
    subject: &str,
    from: ScanFrom,
    upto: u64,
) -> Result<Vec<KeyOnSubject>, String> {
    use jetstream::consumer::DeliverPolicy;
    let deliver_policy = match from {
        ScanFrom::Start => DeliverPolicy::All,
        ScanFrom::Time(ns) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        },
        ScanFrom::Sequence(s) => DeliverPolicy::ByStartSequence {
            start_sequence: s.max(1),
        },
    };
    let mut out = Vec::new();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            headers_only: true,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot read the events on {subject}: {e}"))?;
    // A scan that starts past the end sees nothing (and would wait for new messages).
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot read the events on {subject}: {e}"))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let msg = match next {
            Ok(Some(m)) => m.map_err(|e| format!("reading the events on {subject}: {e}"))?,
            Ok(None) => break,
            Err(_) => {
                return Err(format!(
                    "reading the events on {subject}: no message within 5 s before sequence {upto}"
                ));
            }
        };
        let info = msg
            .info()
            .map_err(|e| format!("reading the events on {subject}: {e}"))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > upto {
            break;
        }
        if let Some(k) = key_on_subject(seq, msg.headers.as_ref(), &[]) {
            out.push(k);
        }
        if seq >= upto || pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// Whether a JetStream API error says the server has no JetStream at all (nothing answers its
/// API: "no responders", which async-nats 0.51 words as "requested JetStream resource does not
/// exist"), rather than a stream without a leader for now.
pub fn no_jetstream(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("no responders")
        || e.contains("jetstream not enabled")
        || e.contains("requested jetstream resource does not exist")
}

/// The stream, once it has a leader: a cluster electing one (its leader was just killed)
/// answers nothing for a few seconds, so this asks again until `deadline`.
pub async fn stream_with_leader(
    js: &jetstream::Context,
    name: &str,
    deadline: std::time::Instant,
) -> Result<jetstream::stream::Stream, String> {
    // No JetStream at all for 3 s (not a server restarting): said at once, not at the deadline.
    let mut no_js_since: Option<std::time::Instant> = None;
    loop {
        let why = match js.get_stream(name).await {
            Err(e) if no_jetstream(&e.to_string()) => {
                let since = *no_js_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_secs(3) {
                    return Err(format!(
                        "the NATS server has no JetStream ({e}): start nats-server with -js (or a jetstream {{}} block in its configuration)"
                    ));
                }
                format!("no JetStream answers yet: {e}")
            }
            Ok(mut s) => match s.info().await {
                Ok(info) if info.cluster.as_ref().is_none_or(|c| c.leader.is_some()) => {
                    return Ok(s);
                }
                Ok(_) => format!("stream '{name}' has no leader"),
                Err(e) => format!("cannot read stream '{name}': {e}"),
            },
            Err(e) => format!("cannot open JetStream stream '{name}': {e}"),
        };
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "{why} (waited for a leader until the deadline, --wait)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long a read waits for the next message of a stream that has more before it gives up on
/// its consumer: an ordered consumer whose stream leader froze or changed notices only after
/// two missed heartbeats (2 × 15 s here) and then retries without end, so it is not waited for.
const STALL: Duration = Duration::from_secs(5);

/// Where a read of a stream stopped before its end, and why: call
/// [`for_each_event_from`] again (on a new connection: the old one may be to a frozen server)
/// from `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub next: u64,
    pub why: String,
}

/// Calls `each` with every event in the stream, in stream order (the order they were
/// acknowledged), one at a time (constant memory); `each` returns false to stop. Messages that
/// are not events go to `bad` with their stream sequence. Waits for a leader until `deadline`.
/// One attempt on one connection: a stall ends it (see [`for_each_event_from`]).
pub async fn for_each_event(
    js: &jetstream::Context,
    name: &str,
    deadline: std::time::Instant,
    each: impl FnMut(FrameEvent) -> bool,
    bad: impl FnMut(u64, String),
) -> Result<(), String> {
    for_each_event_from(js, name, 1, deadline, each, bad)
        .await
        .map_err(|s| s.why)
}

/// [`for_each_event`] from stream sequence `from` on (to the stream's last message when the
/// read started). A read that gets no message for 5 s while the stream has more (its leader
/// froze or changed), or whose consumer fails, stops with where it was ([`Stopped`]), so the
/// caller can go on from there on a new connection: each message is handed over once.
pub async fn for_each_event_from(
    js: &jetstream::Context,
    name: &str,
    from: u64,
    deadline: std::time::Instant,
    mut each: impl FnMut(FrameEvent) -> bool,
    mut bad: impl FnMut(u64, String),
) -> Result<(), Stopped> {
    let from = from.max(1);
    let stopped = |why: String| Stopped { next: from, why };
    let mut stream = stream_with_leader(js, name, deadline)
        .await
        .map_err(stopped)?;
    let state = stream
        .info()
        .await
        .map_err(|e| stopped(format!("cannot read stream '{name}': {e}")))?
        .state
        .clone();
    let last = state.last_sequence;
    // An empty (purged) stream keeps its last sequence: nothing to wait for.
    if state.messages == 0 || last < from {
        return Ok(());
    }
    let from = from.max(state.first_sequence);
    let deliver_policy = if from == 1 {
        jetstream::consumer::DeliverPolicy::All
    } else {
        jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| stopped(format!("cannot read stream '{name}': {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| stopped(format!("cannot read stream '{name}': {e}")))?;
    let mut next = from;
    loop {
        let at = |why: String| Stopped { next, why };
        let msg = match tokio::time::timeout(STALL, messages.next()).await {
            Err(_) => {
                return Err(at(format!(
                    "no message of stream '{name}' for {} s at sequence {next} of {last} (its \
                     leader froze or changed)",
                    STALL.as_secs()
                )));
            }
            Ok(None) => return Err(at(format!("the read of stream '{name}' ended at {next}"))),
            Ok(Some(Err(e))) => return Err(at(format!("reading stream '{name}': {e}"))),
            Ok(Some(Ok(msg))) => msg,
        };
        let seq = match msg.info() {
            Ok(i) => i.stream_sequence,
            Err(e) => {
                return Err(at(format!(
                    "a message of stream '{name}' without its sequence: {e}"
                )));
            }
        };
        if seq < next {
            continue;
        }
        next = seq + 1;
        match serde_json::from_slice::<FrameEvent>(&msg.payload) {
            Ok(ev) => {
                if !each(ev) {
                    return Ok(());
                }
            }
            Err(e) => bad(seq, format!("not an event: {e}")),
        }
        if seq >= last {
            return Ok(());
        }
    }
}

/// Every event in the stream, in stream order (the order they were acknowledged).
pub async fn read_all(js: &jetstream::Context, name: &str) -> Result<Vec<FrameEvent>, String> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for_each_event(
        js,
        name,
        deadline,
        |e| {
            out.push(e);
            true
        },
        |_, _| {},
    )
    .await?;
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
            Some(Ok(vec![
                "nats://127.0.0.1:4222".to_string(),
                "nats://127.0.0.1:4223".to_string()
            ]))
        );
        assert_eq!(
            parse_location("NATS://nats.local"),
            Some(Ok(vec!["nats://nats.local:4222".to_string()]))
        );
        assert_eq!(parse_location("events.db"), None);
        for bad in [
            "nats://",
            "nats:",
            "nats://:4222",
            "nats://h:notaport",
            "nats://a,,b",
            "nats://127.0.0.1:",
        ] {
            assert!(matches!(parse_location(bad), Some(Err(_))), "{bad}");
        }
        let s = subject("a.b c*>/001");
        assert!(s.starts_with("videoai.events.a_b_c___001_"), "{s}");
        assert_eq!(s.matches('.').count(), 2);
        assert_ne!(subject("a.b"), subject("a_b"), "the hash keeps them apart");
        assert_eq!(msg_id("cam", 7), "cam:7");
        for (version, tracks) in [
            ("2.9.10", false),
            ("2.10.29", false),
            ("2.11.0", true),
            ("2.15.1", true),
            ("v2.12.0-beta.1", true),
            ("3.0.0", true),
            ("1.99.0", false),
            ("", false),
            ("nightly", false),
        ] {
            assert_eq!(refuses_in_flight_repeats(version), tracks, "{version}");
        }
        assert_eq!(key_header(7, 1_000, Some(33)), "7 1000 33");
        assert_eq!(parse_key_header("7 1000 33"), Some((7, 1000, Some(33))));
        assert_eq!(
            parse_key_header(&key_header(-3, 5, None)),
            Some((-3, 5, None))
        );
        for bad in ["", "7", "7 x", "7 1 2 3", "7  1"] {
            assert_eq!(parse_key_header(bad), None, "{bad:?}");
        }
    }
}
