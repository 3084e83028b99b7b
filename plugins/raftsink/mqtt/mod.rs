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
//! with `deliver-empty`), `…/crossings/<line>` and `…/zones/<zone>` (one message per
//! crossing, entry or exit), `…/counts/<line>` (retained: the line's counts over the whole log,
//! as `videoai-events counts` sums them), `…/status` (retained `online`; `offline` at stop, and
//! through the last will when the process dies).
//!
//! Threads: one per element with MQTT, running a current-thread tokio runtime: the delivery
//! loop ([`run`]) and rumqttc's event loop ([`session`]), which take turns (the delivery loop
//! publishes at most [`REFILL`] events a turn); reads of the log ahead ([`prefetch`]) on that
//! runtime's blocking pool, with a reader of their own. Locks: `Shared::stats` and
//! [`Progress`]'s, never nested, never held across an await or a store call.

pub mod config;
mod prefetch;
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
/// Rows published in one turn of the delivery task at most, and the room the window needs
/// before it takes more.
const REFILL: usize = 32;
/// How often the marks are written to the log while events are acknowledged.
pub const PERSIST_EVERY: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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
    /// Frames without detections left off the broker (`deliver-empty=false`).
    pub left_out: u64,
    /// Sessions started again after a lost connection (or a failed connect).
    pub retries: u64,
    /// Events the broker refused for good (kept in the log's dead letters).
    pub dead_letters: u64,
    /// Rows that could not be read as events (counted, passed over).
    pub unreadable: u64,
    pub connected: bool,
    pub last_error: Option<String>,
    /// From an event's first message published to its last acknowledged.
    pub ack_latency: Histogram,
}

/// What the task tells the element.
pub struct Reports {
    /// The broker refused the client (credentials, an untrusted certificate), or the log cannot
    /// be read.
    pub on_error: Box<dyn Fn(String) + Send + Sync>,
    /// The first event of the run the broker did not take (later ones are counted).
    pub on_dead_letter: Box<dyn Fn(String) + Send + Sync>,
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
    let key = config.target.name();
    TargetThread::spawn("videoai-mqtt", name, (log, key), move |s: &Shared| {
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
/// None when it is left out (no detections); an error when the row is not an event. The row's
/// JSON is moved into the event's message (no copy on the hot path).
fn messages(
    target: &Target,
    events_topic: &str,
    row: &mut OutboxRow,
    counts: &mut Counts,
) -> Result<Option<EventMessages>, String> {
    if row.no_detections && !target.publish_empty {
        return Ok(None);
    }
    let json = std::mem::replace(&mut row.json, Ok(String::new()))?;
    if !json.contains("\"crossings\"") && !json.contains("\"zone_events\"") {
        return Ok(Some((
            vec![Message {
                topic: events_topic.to_string(),
                retain: false,
                payload: json.into_bytes(),
            }],
            None,
        )));
    }
    let ev: FrameEvent = serde_json::from_str(&json)
        .map_err(|e| format!("the stored event is not readable: {e}"))?;
    let mut out = vec![Message {
        topic: events_topic.to_string(),
        retain: false,
        payload: json.into_bytes(),
    }];
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

fn shutting_down(shared: &Shared) -> bool {
    shared.progress.stopping()
}

/// Waits `d` unless the element stops first (new events do not cut it short: a backoff stays
/// a backoff); whether it stops.
async fn sleep_unless_stopped(shared: &Shared, d: Duration) -> bool {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end {
        if shutting_down(shared) {
            return true;
        }
        tokio::time::sleep_until(end.min(tokio::time::Instant::now() + Duration::from_millis(50)))
            .await;
    }
    shutting_down(shared)
}

/// What outlives a session: per stream, the highest row the broker acknowledged (written to
/// the log or not yet) and the line counts over the acknowledged events.
#[derive(Default)]
struct Acked {
    marks: HashMap<String, i64>,
    counts: HashMap<String, Counts>,
}

/// How a session ended.
enum Ended {
    Stopped,
    /// The connection was lost; whether anything was acknowledged on it (else the next
    /// session waits longer).
    Lost {
        progressed: bool,
    },
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
    let mut sessions = 0u64;
    let mut refused_said = false;
    let mut acked = Acked::default();
    let mut dead = DeadLetters::default();
    let mut registered: HashSet<String> = HashSet::new();
    loop {
        if shutting_down(shared) {
            return;
        }
        let own = shared.progress.own();
        if own.is_empty() {
            let _ =
                tokio::time::timeout(Duration::from_millis(200), shared.progress.wake.notified())
                    .await;
            continue;
        }
        // Each stream has its row in the deliveries table from the start, so that what waits
        // for this target shows (videoai-events stats) also before anything was delivered.
        for st in &own {
            if !registered.contains(st) && store.set_delivered(&name, &[(st.clone(), 0)]).is_ok() {
                registered.insert(st.clone());
            }
        }
        if attempt > 0
            && sleep_unless_stopped(shared, BACKOFF.delay(attempt, backoff::random_unit())).await
        {
            return;
        }
        attempt = attempt.saturating_add(1);
        sessions += 1;
        if sessions > 1 {
            shared.stats.lock().unwrap().retries += 1;
        }
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
                        "MQTT {}: {why}; check mqtt-credentials-file (or {} and {}) and mqtt-ca-file",
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
        let mut ctx = Ctx {
            shared,
            config,
            name: &name,
            store: &mut store,
            acked: &mut acked,
            dead: &mut dead,
            reports,
        };
        match deliver(&mut ctx, &mut session).await {
            Ended::Stopped => {
                // Offline on every status topic, then DISCONNECT (no last will).
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
            Ended::Lost { progressed } => {
                if progressed {
                    attempt = 0;
                }
            }
        }
    }
}

/// Events the broker refused for good (a publish refused with a reason code, an event larger
/// than [`session::MAX_PAYLOAD`]): kept in the log's dead letters with this target.
#[derive(Default)]
struct DeadLetters {
    said: bool,
}

/// What a session works with.
struct Ctx<'a> {
    shared: &'a Shared,
    config: &'a Config,
    name: &'a str,
    store: &'a mut EventStore,
    acked: &'a mut Acked,
    dead: &'a mut DeadLetters,
    reports: &'a Reports,
}

impl Ctx<'_> {
    /// Records that the broker will not take row `id` of `stream`, and why.
    fn dead_letter(&mut self, stream: &str, id: i64, why: &str) {
        let row = self
            .store
            .rows_after(stream, id - 1, 1)
            .ok()
            .and_then(|r| r.into_iter().next());
        let (seq, json) = match row {
            Some(r) if r.id == id => (r.seq, r.json.unwrap_or_default()),
            _ => (0, String::new()),
        };
        let _ = self.store.park_delivery(self.name, stream, seq, why, &json);
        self.shared.stats.lock().unwrap().dead_letters += 1;
        if !self.dead.said {
            self.dead.said = true;
            (self.reports.on_dead_letter)(format!(
                "the MQTT broker {} did not take the event {stream}/{seq}: {why}. It is kept in the log's dead letters (videoai-events stats lists them) and the next events go on. Later ones are only counted (stats mqtt-dead-letters)",
                self.config.target.address()
            ));
        }
    }

    /// Writes the marks of what was acknowledged; kept for the next try if the log is busy.
    fn persist(&mut self, dirty: &mut HashMap<std::sync::Arc<str>, i64>) {
        if dirty.is_empty() {
            return;
        }
        let marks: Vec<(String, i64)> = dirty.drain().map(|(s, id)| (s.to_string(), id)).collect();
        match self.store.set_delivered(self.name, &marks) {
            Ok(()) => self.shared.progress.marked(&marks),
            Err(e) => {
                self.shared.stats.lock().unwrap().last_error =
                    Some(format!("writing the delivery marks: {e}"));
                dirty.extend(marks.into_iter().map(|(s, id)| (s.into(), id)));
            }
        }
    }
}

/// Delivers on a connected session until it is lost or the element stops.
async fn deliver(ctx: &mut Ctx<'_>, session: &mut Session) -> Ended {
    let (shared, target) = (ctx.shared, &ctx.config.target);
    let mut w = Window::default();
    let mut sent_to: HashMap<String, i64> = HashMap::new();
    let mut counts_sent: HashMap<String, Counts> = HashMap::new();
    let mut online: HashSet<String> = HashSet::new();
    let mut dirty: HashMap<std::sync::Arc<str>, i64> = HashMap::new();
    let mut last_persist = Instant::now();
    // The log is read ahead, off this thread.
    let mut ahead = prefetch::Prefetch::new(ctx.config.log.clone());
    let mut turn = 0usize;
    let mut progressed = false;
    // Events on their way with crossings or zone events: added to the acknowledged counts when
    // done.
    let mut counted: HashMap<i64, FrameEvent> = HashMap::new();
    let mut stop_by: Option<Instant> = None;
    // Writes marks at least this often.
    let tick = tokio::time::sleep(PERSIST_EVERY);
    tokio::pin!(tick);
    // Every way out writes the marks of what was acknowledged first.
    macro_rules! end {
        ($how:expr) => {{
            ctx.persist(&mut dirty);
            return $how;
        }};
    }
    loop {
        let (own, shutdown) = (shared.progress.own(), shared.progress.stopping());
        // New streams: their mark (the log's, or higher if acknowledged and not written yet),
        // counts and status.
        for s in &own {
            if !sent_to.contains_key(s) {
                let stored = match ctx.store.delivered_to(ctx.name, s) {
                    Ok(m) => m,
                    Err(e) => {
                        // Not from 0 (the whole history again): tried next round.
                        note_error(shared, &format!("reading the delivery mark of {s}: {e}"));
                        continue;
                    }
                };
                let mark = stored.max(ctx.acked.marks.get(s).copied().unwrap_or(0));
                sent_to.insert(s.clone(), mark);
                ahead.add(s, mark);
                shared.progress.start_at(s, stored);
                let store = &*ctx.store;
                let counts = ctx
                    .acked
                    .counts
                    .entry(s.clone())
                    .or_insert_with(|| counts_upto(store, s, stored));
                counts_sent.insert(s.clone(), counts.clone());
            }
            if !online.contains(s) {
                online.insert(s.clone());
                if let Err(e) =
                    session.publish(target.topic(s, "status"), 1, true, b"online".to_vec(), None)
                {
                    note_error(shared, &e);
                    end!(Ended::Lost { progressed });
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
        // Refill a little at a time: the connection's task runs on this thread too, and a
        // long turn here leaves the broker with nothing in flight.
        let refill = w.len() + REFILL <= WINDOW;
        let mut budget = REFILL;
        // Streams take turns at going first.
        turn = turn.wrapping_add(1);
        let first = turn % own.len().max(1);
        let ready: Vec<&String> = own[first..]
            .iter()
            .chain(&own[..first])
            .filter(|s| !shutdown && refill && sent_to.contains_key(*s))
            .collect();
        for s in ready {
            while w.len() < WINDOW {
                let rows = ahead.take(s, (WINDOW - w.len()).min(budget));
                budget -= rows.len();
                if rows.is_empty() {
                    break;
                }
                let counts = counts_sent.get_mut(s).unwrap();
                let events_topic = target.topic(s, "events");
                let name: std::sync::Arc<str> = s.as_str().into();
                // One clock reading per chunk: they are asked for together.
                let asked = Instant::now();
                let mut last = sent_to[s];
                let mut rows = rows.into_iter();
                while let Some(mut row) = rows.next() {
                    let id = row.id;
                    let mut msgs = match messages(target, &events_topic, &mut row, counts) {
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
                    let before = msgs.len();
                    msgs.retain(|m| m.payload.len() <= session::MAX_PAYLOAD);
                    if msgs.len() < before {
                        ctx.dead_letter(
                            s,
                            id,
                            &format!(
                                "larger than {} bytes, the most one MQTT message carries here",
                                session::MAX_PAYLOAD
                            ),
                        );
                    }
                    dones.extend(w.add_row(&name, id, msgs.len() as u32, asked));
                    let key = format!("{}/{}", row.stream, row.seq);
                    for m in msgs {
                        if let Err(e) =
                            session.publish(m.topic, target.qos, m.retain, m.payload, Some(&key))
                        {
                            note_error(shared, &e);
                            end!(Ended::Lost { progressed });
                        }
                        w.ask(Owner::Row {
                            stream: name.clone(),
                            id,
                        });
                        published += 1;
                    }
                    last = id;
                    if w.len() >= WINDOW {
                        // The rest waits for room, read already.
                        ahead.unread(s, rows);
                        break;
                    }
                }
                if let Some(m) = sent_to.get_mut(s) {
                    *m = last;
                }
            }
        }
        if !shutdown {
            ahead.fill();
        }
        let mut lost = None;
        let mut heard = Vec::new();
        if !shutdown || !w.is_empty() {
            // In this order (no random pick): new events first, so streams read to their end
            // are read again while acknowledgements keep coming.
            tokio::select! {
                biased;
                _ = shared.progress.wake.notified() => ahead.wake(),
                read = ahead.done() => if let Err(e) = read {
                    note_error(shared, &format!("reading the log: {e}"));
                },
                h = session.heard.recv() => match h {
                    Some(h) => heard.push(h),
                    None => lost = Some("the connection ended".to_string()),
                },
                _ = &mut tick => {
                    tick.as_mut().reset(tokio::time::Instant::now() + PERSIST_EVERY);
                    // A read that failed is tried again.
                    ahead.wake();
                }
            }
            // Take everything already heard before deciding again.
            while let Ok(h) = session.heard.try_recv() {
                heard.push(h);
            }
        }
        for h in heard {
            match h {
                Heard::Sent(p) => dones.extend(w.sent(p)),
                Heard::Acked(p) => dones.extend(w.acked(p)),
                Heard::Refused(p, why) => {
                    if let Some(Owner::Row { stream, id }) = w.owner(p) {
                        ctx.dead_letter(&stream, id, &format!("the broker refused it ({why})"));
                    }
                    dones.extend(w.acked(p));
                }
                Heard::Connected => {}
                Heard::Lost { why, .. } => lost = Some(why),
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
        progressed |= !dones.is_empty();
        for d in dones {
            if !counted.is_empty()
                && let Some(ev) = counted.remove(&d.id)
                && let Some(c) = ctx.acked.counts.get_mut(&*d.stream)
            {
                c.add(&ev);
            }
            ctx.acked.marks.insert(d.stream.to_string(), d.id);
            dirty.insert(d.stream, d.id);
        }
        // Also as soon as nothing is on its way: EOS waits for the marks, not for the next tick.
        if !dirty.is_empty()
            && (last_persist.elapsed() >= PERSIST_EVERY || shutdown || w.is_empty())
        {
            ctx.persist(&mut dirty);
            last_persist = Instant::now();
        }
        if let Some(why) = lost {
            note_error(shared, &why);
            end!(Ended::Lost { progressed });
        }
        if shutdown && (w.is_empty() || stop_by.is_some_and(|t| now >= t)) {
            end!(Ended::Stopped);
        }
    }
}
