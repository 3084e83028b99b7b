// SPDX-License-Identifier: MPL-2.0
//! MQTT delivery from the log: every event raftsink stores goes, once it is durable, to an MQTT
//! broker, read back from the SQLite file (the log itself, or the outbox in front of NATS), so
//! a broker outage loses nothing and a restart publishes nothing twice that the broker
//! acknowledged.
//!
//! **Exactly what.** Per stream the log keeps a mark in its `deliveries` table: every event up to
//! that row was acknowledged by the broker (PUBACK for QoS 1, PUBCOMP for QoS 2). A session
//! publishes the rows after the mark in order, up to [`WINDOW`] messages unacknowledged; the mark
//! moves over the acknowledged prefix only ([`window`]) and is written at most every
//! [`PERSIST_EVERY`]. A lost connection starts a new clean session from the mark, so a message
//! is published again only when its acknowledgement never came (or came in the last
//! [`PERSIST_EVERY`] before a crash). Every message carries its key (`stream/seq`) in its JSON
//! and, with MQTT 5, as the user property `idempotency-key`, for QoS 1 consumers to drop repeats.
//!
//! **Topics** (`{stream}` in `mqtt-topic` is the stream id as one topic level):
//! `…/events` (the event as `videoai-events dump` prints it; frames without detections only
//! with `mqtt-publish-empty`), `…/crossings/<line>` and `…/zones/<zone>` (one message per
//! crossing, entry or exit), `…/counts/<line>` (retained: the line's counts over the whole log,
//! as `videoai-events counts` sums them), `…/status` (retained `online`; `offline` at stop, and
//! through the last will when the process dies).
//!
//! Threads: one per element with MQTT, running a current-thread tokio runtime: the delivery
//! loop ([`run`]) and rumqttc's event loop ([`session`]). Locks: `Shared::stats` and [`Progress`]'s, never nested,
//! never held across an await or a store call.

pub mod config;
mod session;
pub mod window;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, Instant};

use serde_json::json;

use crate::eventlog::event::FrameEvent;
use crate::eventlog::store::{EventStore, OutboxRow};
use crate::eventlog::tracks::Counts;
use crate::util::backoff::{self, Backoff};
use crate::util::histogram::Histogram;

use super::progress::TargetThread;

use config::Target;
use session::{Heard, Session};
use window::{Done, Owner, Window};

/// Messages published and not yet acknowledged, at most (rumqttc also keeps to the broker's
/// receive maximum).
pub const WINDOW: usize = 512;
/// How often the marks are written to the log while events are acknowledged.
pub const PERSIST_EVERY: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows read from the log at a time.
const CHUNK: usize = 256;
const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
    multiplier: 2.0,
    jitter: 0.2,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    /// The SQLite file events are read from: the log, or the NATS outbox.
    pub log: PathBuf,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events acknowledged by the broker (frames left out by the filter included).
    pub delivered: u64,
    /// Messages published (an event, its crossings, zone events and counts).
    pub messages: u64,
    /// Frames without detections left off the broker (`mqtt-publish-empty=false`).
    pub left_out: u64,
    /// This element's events in the log the broker has not acknowledged.
    pub pending: i64,
    /// Sessions started again after a lost connection (or a failed connect).
    pub retries: u64,
    /// Rows that could not be read as events (counted, passed over).
    pub unreadable: u64,
    pub connected: bool,
    pub last_error: Option<String>,
    /// From an event's first message published to its last acknowledged.
    pub ack_latency: Histogram,
}

/// What the task tells the element.
pub struct Reports {
    /// The broker refused the client (credentials), or the log cannot be read: delivery stops.
    pub on_error: Box<dyn Fn(String) + Send + Sync>,
}

type Shared = super::progress::Shared<Stats>;

/// MQTT delivery: see the module's documentation.
pub type Delivery = TargetThread<Stats>;

/// A client id unique in the process and across processes (the broker drops an older
/// connection with the same id).
fn client_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "videoai-{}-{}-{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        (backoff::random_unit() * 65535.0) as u32
    )
}

/// Connects once and disconnects, at most `timeout`: an error when the broker refuses the
/// client (credentials, not authorized) or TLS cannot be set up; a broker that does not answer
/// is not an error (events wait in the log until it does).
pub fn probe(target: &Target, timeout: Duration) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut s = Session::open(target, &client_id(), None, 16)?;
        let answer = tokio::time::timeout(timeout, s.heard.recv()).await;
        match answer {
            Ok(Some(Heard::Lost { why, refused: true })) => Err(why),
            Ok(Some(Heard::Connected)) => {
                s.close(Duration::from_millis(200)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    })
}

/// Starts delivering to `config.target` from `config.log`, on a thread of its own.
pub fn start(config: Config, reports: Reports) -> Delivery {
    let (name, log) = (config.target.address(), config.log.clone());
    TargetThread::spawn("videoai-mqtt", name, log, move |s: &Shared| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run(s, &config, &reports)),
            Err(e) => (reports.on_error)(format!("MQTT: cannot start a runtime: {e}")),
        }
        s.stats.lock().unwrap().connected = false;
    })
}

fn note_error(shared: &Shared, msg: &str) {
    gst::debug!(super::CAT, "MQTT: {msg}");
    let mut st = shared.stats.lock().unwrap();
    st.last_error = Some(msg.to_string());
    st.connected = false;
}

/// One message of an event.
struct Message {
    topic: String,
    retain: bool,
    payload: Vec<u8>,
}

/// An event's messages, and the event decoded when it has crossings or zone events.
type EventMessages = (Vec<Message>, Option<FrameEvent>);

/// The messages of one stored event: the event (its JSON as stored), its crossings and zone
/// events, and the counts of the lines it crossed (with `counts` brought up to it); the event
/// decoded when it has crossings or zone events (they are counted once it is acknowledged).
/// None when it is left out (no detections); an error when the row is not an event.
fn messages(
    target: &Target,
    events_topic: &str,
    row: &OutboxRow,
    counts: &mut Counts,
) -> Result<Option<EventMessages>, String> {
    if row.no_detections && !target.publish_empty {
        return Ok(None);
    }
    let json = row.json.as_ref().map_err(Clone::clone)?;
    let mut out = vec![Message {
        topic: events_topic.to_string(),
        retain: false,
        payload: json.clone().into_bytes(),
    }];
    if !json.contains("\"crossings\"") && !json.contains("\"zone_events\"") {
        return Ok(Some((out, None)));
    }
    let ev: FrameEvent =
        serde_json::from_str(json).map_err(|e| format!("the stored event is not readable: {e}"))?;
    let key = format!("{}/{}", ev.stream, ev.seq);
    // A message on `<kind>/<name>`: `fields` added to what every one carries.
    let message = |kind: &str, name: &str, retain: bool, mut fields: serde_json::Value| {
        for (k, v) in [
            ("key", json!(key)),
            ("stream", json!(ev.stream)),
            ("seq", json!(ev.seq)),
            ("capture_ns", json!(ev.capture_ns)),
        ] {
            fields[k] = v;
        }
        Message {
            topic: target.topic(&ev.stream, &format!("{kind}/{}", config::topic_level(name))),
            retain,
            payload: fields.to_string().into_bytes(),
        }
    };
    let mut lines = Vec::new();
    for d in &ev.detections {
        let who = |what: serde_json::Value| {
            let mut v = json!({"track_id": d.track_id, "label": d.label});
            v.as_object_mut()
                .unwrap()
                .extend(what.as_object().cloned().unwrap_or_default());
            v
        };
        for c in &d.crossings {
            let what = json!({"line": c.line, "direction": c.direction});
            out.push(message("crossings", &c.line, false, who(what)));
            if !lines.contains(&c.line) {
                lines.push(c.line.clone());
            }
        }
        for z in &d.zone_events {
            let what = json!({"zone": z.zone, "event": z.event});
            out.push(message("zones", &z.zone, false, who(what)));
        }
    }
    counts.add(&ev);
    for line in lines {
        out.push(message(
            "counts",
            &line,
            true,
            counts.line(&ev.stream, &line),
        ));
    }
    Ok(Some((out, Some(ev))))
}

/// The counts of `stream` over its rows up to `upto` (what the broker already has).
fn counts_upto(store: &EventStore, stream: &str, upto: i64) -> Counts {
    let mut counts = Counts::default();
    let mut from = 0;
    while from < upto {
        let Ok(rows) = store.rows_after(stream, from, 10_000) else {
            break;
        };
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            if row.id > upto {
                return counts;
            }
            from = row.id;
            if let Ok(json) = &row.json
                && (json.contains("\"crossings\"") || json.contains("\"zone_events\""))
                && let Ok(ev) = serde_json::from_str::<FrameEvent>(json)
            {
                counts.add(&ev);
            }
        }
    }
    counts
}

async fn pause(shared: &Shared, d: Duration) {
    let _ = tokio::time::timeout(d, shared.progress.wake.notified()).await;
}

fn shutting_down(shared: &Shared) -> bool {
    shared.progress.stopping()
}

async fn run(shared: &Shared, config: &Config, reports: &Reports) {
    let target = &config.target;
    let name = target.name();
    let mut store = match EventStore::open_for_writing(&config.log) {
        // Marks need no fsync of their own: one lost in a power cut only publishes again
        // (with the same keys) what was acknowledged since the last checkpoint.
        Ok(s) => {
            let _ = s.relax_durability();
            s
        }
        Err(e) => {
            (reports.on_error)(format!("MQTT delivery cannot open the log: {e}"));
            return;
        }
    };
    let mut attempt = 0u32;
    let mut refused_said = false;
    // Per stream: the counts over what the broker acknowledged.
    let mut counts_acked: HashMap<String, Counts> = HashMap::new();
    loop {
        if shutting_down(shared) {
            return;
        }
        let own = shared.progress.own();
        if own.is_empty() {
            pause(shared, Duration::from_millis(200)).await;
            continue;
        }
        if attempt > 0 {
            shared.stats.lock().unwrap().retries += 1;
            pause(shared, BACKOFF.delay(attempt, backoff::random_unit())).await;
            if shutting_down(shared) {
                return;
            }
        }
        attempt = attempt.saturating_add(1);
        let will = Some((target.topic(&own[0], "status"), "offline"));
        let mut session = match Session::open(target, &client_id(), will, WINDOW as u16) {
            Ok(s) => s,
            Err(e) => {
                (reports.on_error)(format!("MQTT {}: {e}", target.address()));
                return;
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, session.heard.recv()).await {
            Ok(Some(Heard::Connected)) => {}
            Ok(Some(Heard::Lost { why, refused })) => {
                note_error(shared, &why);
                if refused && !refused_said {
                    refused_said = true;
                    (reports.on_error)(format!(
                        "MQTT {}: {why}; check mqtt-credentials-file (or {} and {})",
                        target.address(),
                        config::USERNAME_ENV,
                        config::PASSWORD_ENV
                    ));
                }
                continue;
            }
            _ => {
                note_error(
                    shared,
                    &format!("{}: no answer within {CONNECT_TIMEOUT:?}", target.address()),
                );
                continue;
            }
        }
        gst::info!(super::CAT, "MQTT: connected to {}", target.address());
        {
            let mut st = shared.stats.lock().unwrap();
            st.connected = true;
            st.last_error = None;
        }
        attempt = 0;
        if deliver(
            shared,
            config,
            &name,
            &mut store,
            &mut session,
            &mut counts_acked,
        )
        .await
        {
            // Shutting down: offline on every status topic, then DISCONNECT (no last will).
            for s in &shared.progress.own() {
                let _ = session.publish(
                    target.topic(s, "status"),
                    1,
                    true,
                    b"offline".to_vec(),
                    None,
                );
            }
            session.close(Duration::from_secs(1)).await;
            return;
        }
    }
}

/// Delivers on a connected session until it is lost (false) or the element stops (true).
async fn deliver(
    shared: &Shared,
    config: &Config,
    name: &str,
    store: &mut EventStore,
    session: &mut Session,
    counts_acked: &mut HashMap<String, Counts>,
) -> bool {
    let target = &config.target;
    let mut w = Window::default();
    let mut sent_to: HashMap<String, i64> = HashMap::new();
    let mut counts_sent: HashMap<String, Counts> = HashMap::new();
    let mut online: HashSet<String> = HashSet::new();
    let mut dirty: HashMap<std::sync::Arc<str>, i64> = HashMap::new();
    let mut last_persist = Instant::now();
    let mut last_pending = Instant::now() - Duration::from_secs(1);
    let mut exhausted: HashSet<String> = HashSet::new();
    // Events on their way with crossings or zone events: added to `counts_acked` when done.
    let mut counted: HashMap<i64, FrameEvent> = HashMap::new();
    let mut stop_by: Option<Instant> = None;
    // Looks at the log again (and writes marks) at least this often.
    let tick = tokio::time::sleep(PERSIST_EVERY);
    tokio::pin!(tick);
    loop {
        let (own, shutdown) = (shared.progress.own(), shared.progress.stopping());
        // New streams: their mark, counts and status.
        for s in &own {
            if !sent_to.contains_key(s) {
                let mark = store.delivered_to(name, s).unwrap_or(0);
                sent_to.insert(s.clone(), mark);
                shared.progress.start_at(s, mark);
                let acked = counts_acked
                    .entry(s.clone())
                    .or_insert_with(|| counts_upto(store, s, mark));
                counts_sent.insert(s.clone(), acked.clone());
            }
            if !online.contains(s) {
                online.insert(s.clone());
                if let Err(e) =
                    session.publish(target.topic(s, "status"), 1, true, b"online".to_vec(), None)
                {
                    note_error(shared, &e);
                    return false;
                }
                w.ask(Owner::Status);
            }
        }
        // Publish what waits, up to the window.
        let mut published = 0u64;
        let mut dones: Vec<Done> = Vec::new();
        let mut left_out = 0u64;
        let mut unreadable = 0u64;
        if shutdown && stop_by.is_none() {
            // Stopping: what is on its way may still be acknowledged, briefly; nothing new goes.
            stop_by = Some(Instant::now() + Duration::from_secs(1));
        }
        // Refill once half the window is free: reads of the log in chunks, not per event.
        let refill = w.len() <= WINDOW / 2;
        for s in own.iter().filter(|_| !shutdown && refill) {
            while w.len() < WINDOW && !exhausted.contains(s) {
                let from = sent_to[s];
                let want = CHUNK.min(WINDOW - w.len());
                let rows = match store.rows_after(s, from, want) {
                    Ok(r) => r,
                    Err(e) => {
                        note_error(shared, &format!("reading the log: {e}"));
                        break;
                    }
                };
                if rows.is_empty() {
                    exhausted.insert(s.clone());
                    break;
                }
                let counts = counts_sent.get_mut(s).unwrap();
                let events_topic = target.topic(s, "events");
                let name: std::sync::Arc<str> = s.as_str().into();
                for row in rows {
                    let id = row.id;
                    let msgs = match messages(target, &events_topic, &row, counts) {
                        Ok(Some((msgs, ev))) => {
                            if let Some(ev) = ev {
                                counted.insert(id, ev);
                            }
                            msgs
                        }
                        Ok(None) => {
                            left_out += 1;
                            Vec::new()
                        }
                        Err(why) => {
                            // Counted and passed over: a row no reader can use.
                            gst::warning!(super::CAT, "MQTT: row {id} of {s}: {why}");
                            unreadable += 1;
                            Vec::new()
                        }
                    };
                    dones.extend(w.add_row(&name, id, msgs.len() as u32, Instant::now()));
                    let key = format!("{}/{}", row.stream, row.seq);
                    for m in msgs {
                        if let Err(e) =
                            session.publish(m.topic, target.qos, m.retain, m.payload, Some(&key))
                        {
                            note_error(shared, &e);
                            return false;
                        }
                        w.ask(Owner::Row {
                            stream: name.clone(),
                            id,
                        });
                        published += 1;
                    }
                    sent_to.insert(s.clone(), id);
                    if w.len() >= WINDOW {
                        break;
                    }
                }
            }
        }
        let mut lost = None;
        if !shutdown || !w.is_empty() {
            tokio::select! {
                h = session.heard.recv() => match h {
                    Some(Heard::Sent(p)) => dones.extend(w.sent(p)),
                    Some(Heard::Acked(p)) => dones.extend(w.acked(p)),
                    Some(Heard::Connected) => {}
                    Some(Heard::Lost { why, .. }) => lost = Some(why),
                    None => lost = Some("the connection ended".into()),
                },
                _ = shared.progress.wake.notified() => exhausted.clear(),
                _ = &mut tick => {
                    exhausted.clear();
                    tick.as_mut().reset(tokio::time::Instant::now() + PERSIST_EVERY);
                }
            }
            // Take everything already heard before deciding again.
            while let Ok(h) = session.heard.try_recv() {
                match h {
                    Heard::Sent(p) => dones.extend(w.sent(p)),
                    Heard::Acked(p) => dones.extend(w.acked(p)),
                    Heard::Connected => {}
                    Heard::Lost { why, .. } => lost = Some(why),
                }
            }
        }
        let now = Instant::now();
        {
            let mut st = shared.stats.lock().unwrap();
            st.messages += published;
            st.left_out += left_out;
            st.unreadable += unreadable;
            st.delivered += dones.len() as u64;
            for d in &dones {
                st.ack_latency.record(now.duration_since(d.asked));
            }
        }
        for d in dones {
            if !counted.is_empty()
                && let Some(ev) = counted.remove(&d.id)
                && let Some(c) = counts_acked.get_mut(&*d.stream)
            {
                c.add(&ev);
            }
            dirty.insert(d.stream, d.id);
        }
        let persist_now = !dirty.is_empty()
            && (last_persist.elapsed() >= PERSIST_EVERY || shutdown || lost.is_some());
        if persist_now {
            let marks: Vec<(String, i64)> =
                dirty.drain().map(|(s, id)| (s.to_string(), id)).collect();
            match store.set_delivered(name, &marks) {
                Ok(()) => shared.progress.marked(&marks),
                Err(e) => {
                    // Kept for the next try (the log busy: the writer holds it).
                    shared.stats.lock().unwrap().last_error =
                        Some(format!("writing the delivery marks: {e}"));
                    dirty.extend(marks.into_iter().map(|(s, id)| (s.into(), id)));
                }
            }
            last_persist = Instant::now();
        }
        if persist_now || last_pending.elapsed() >= Duration::from_millis(500) || shutdown {
            let pending = store.undelivered(name, &own).unwrap_or(-1);
            shared.stats.lock().unwrap().pending = pending;
            last_pending = Instant::now();
        }
        if let Some(why) = lost {
            note_error(shared, &why);
            return false;
        }
        if shutdown && (w.is_empty() || stop_by.is_some_and(|t| now >= t)) {
            return true;
        }
    }
}
