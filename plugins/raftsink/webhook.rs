// SPDX-License-Identifier: MPL-2.0
//! Webhook delivery from the log: each stored event (frames with detections, unless
//! `deliver-empty`) is POSTed as the JSON `videoai-events dump` prints, with the header
//! `Idempotency-Key: <stream>/<seq>`, once durable, per stream in log order.
//!
//! An answer 2xx delivers it. 5xx, 408, 429, a timeout and a connection failure are tried again
//! with backoff (0.2 s doubling to 30 s, ±20 %) for as long as the element runs, with the same
//! key every time; another answer (4xx, a redirect) is for good: the event is recorded in the
//! log's dead letters with this target (`videoai-events stats` lists it), counted, warned about
//! once, and the stream goes on. The log keeps a mark per stream (as for MQTT), so a restart
//! posts again only the event whose answer never came.
//!
//! Threads: one per element with a webhook (blocking HTTP with ureq). Locks: `Shared::stats`
//! and [`Progress`]'s, never nested, never held across a request or a store call.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::eventlog::store::EventStore;
use crate::util::backoff::{self, Backoff};
use crate::util::histogram::Histogram;

use super::progress::TargetThread;

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(30),
    multiplier: 2.0,
    jitter: 0.2,
};
const CHUNK: usize = 64;
/// Marks are written at most this often while events are delivered.
const PERSIST_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub timeout: Duration,
    pub deliver_empty: bool,
    pub log: PathBuf,
}

impl Config {
    /// The target's name in the log (deliveries and dead letters).
    pub fn target(&self) -> String {
        format!("webhook:{}", self.url)
    }
}

/// Checks a webhook URL: http:// or https:// with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| {
        format!("webhook-url '{url}' is not a URL ({e}): expected http(s)://host[:port]/path")
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "webhook-url '{url}': expected http(s)://host[:port]/path"
        ));
    }
    Ok(())
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Events answered 2xx (frames left out included; dead letters and unreadable rows not).
    pub delivered: u64,
    pub left_out: u64,
    /// Requests tried again.
    pub retries: u64,
    pub dead_letters: u64,
    /// Rows that could not be read as events (counted, passed over).
    pub unreadable: u64,
    pub last_error: Option<String>,
    /// First attempt to the 2xx answer.
    pub ack_latency: Histogram,
}

pub struct Reports {
    /// The first dead letter of the run (later ones are counted).
    pub on_dead_letter: Box<dyn Fn(String) + Send + Sync>,
    pub on_error: Box<dyn Fn(String) + Send + Sync>,
}

type Shared = super::progress::Shared<Stats>;

/// Webhook delivery: see the module's documentation.
pub type Webhook = TargetThread<Stats>;

/// Starts posting to `config.url` from `config.log`, on a thread of its own.
pub fn start(config: Config, reports: Reports) -> Webhook {
    let (name, log) = (config.url.clone(), config.log.clone());
    let key = config.target();
    TargetThread::spawn("videoai-webhook", name, (log, key), move |s: &Shared| {
        run(s, &config, &reports)
    })
}

/// What one POST came to.
enum Answer {
    Delivered,
    /// Refused for good, with why.
    Refused(String),
    /// Try again, with why.
    Again(String),
}

fn post(agent: &ureq::Agent, url: &str, key: &str, body: &str) -> Answer {
    let sent = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", key)
        .send(body);
    match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            match status {
                200..=299 => Answer::Delivered,
                408 | 429 | 500..=599 => Answer::Again(format!("{url} answered {status}")),
                _ => Answer::Refused(format!("{url} answered {status}")),
            }
        }
        Err(e) => Answer::Again(format!("{url}: {e}")),
    }
}

/// Sleeps `d` unless the element stops first; whether it stops.
fn pause(shared: &Shared, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if shared.progress.stopping() {
            return true;
        }
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
    shared.progress.stopping()
}

fn run(shared: &Shared, config: &Config, reports: &Reports) {
    let target = config.target();
    let mut store = match EventStore::open_for_writing(&config.log) {
        Ok(s) => s,
        Err(e) => {
            (reports.on_error)(format!("webhook delivery cannot open the log: {e}"));
            return;
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(config.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut marks: std::collections::HashMap<String, i64> = Default::default();
    let mut dirty: Vec<(String, i64)> = Vec::new();
    let mut last_persist = Instant::now();
    let mut nudges = 0;
    let mut said_dead = false;
    loop {
        if shared.progress.stopping() {
            break;
        }
        let own = shared.progress.own();
        let mut worked = false;
        for s in &own {
            let mark = match marks.get(s) {
                Some(m) => *m,
                None => match store.delivered_to(&target, s) {
                    Ok(m) => {
                        marks.insert(s.clone(), m);
                        shared.progress.start_at(s, m);
                        m
                    }
                    Err(e) => {
                        // Not from 0 (the whole history again): tried next round.
                        shared.stats.lock().unwrap().last_error = Some(e.to_string());
                        continue;
                    }
                },
            };
            let rows = match store.rows_after(s, mark, CHUNK) {
                Ok(r) => r,
                Err(e) => {
                    shared.stats.lock().unwrap().last_error = Some(e.to_string());
                    continue;
                }
            };
            for row in rows {
                worked = true;
                let id = row.id;
                if row.no_detections && !config.deliver_empty {
                    let mut st = shared.stats.lock().unwrap();
                    st.left_out += 1;
                    st.delivered += 1;
                } else if let Err(why) = &row.json {
                    // Counted and passed over: a row no reader can use.
                    gst::warning!(super::CAT, "webhook: row {id} of {s}: {why}");
                    shared.stats.lock().unwrap().unreadable += 1;
                } else if let Ok(body) = &row.json {
                    let key = format!("{}/{}", row.stream, row.seq);
                    let first = Instant::now();
                    let mut attempt = 0;
                    loop {
                        match post(&agent, &config.url, &key, body) {
                            Answer::Delivered => {
                                let mut st = shared.stats.lock().unwrap();
                                st.ack_latency.record(first.elapsed());
                                st.last_error = None;
                                st.delivered += 1;
                                break;
                            }
                            Answer::Refused(why) => {
                                // Recorded before the mark moves past it (the log busy: again).
                                let mut tries = 0;
                                while let Err(e) =
                                    store.park_delivery(&target, &row.stream, row.seq, &why, body)
                                {
                                    tries += 1;
                                    shared.stats.lock().unwrap().last_error =
                                        Some(format!("recording a dead letter: {e}"));
                                    if pause(shared, BACKOFF.delay(tries, backoff::random_unit())) {
                                        persist(shared, &mut store, &target, &mut dirty);
                                        return;
                                    }
                                }
                                shared.stats.lock().unwrap().dead_letters += 1;
                                if !said_dead {
                                    said_dead = true;
                                    (reports.on_dead_letter)(format!(
                                        "the webhook refused the event {key} for good ({why}): it is kept in the log's dead letters (videoai-events stats lists them) and the next events go on. Later refusals are only counted (stats webhook-dead-letters)"
                                    ));
                                }
                                break;
                            }
                            Answer::Again(why) => {
                                attempt += 1;
                                {
                                    let mut st = shared.stats.lock().unwrap();
                                    st.retries += 1;
                                    st.last_error = Some(why);
                                }
                                // Marks so far first: a long outage keeps them.
                                if !dirty.is_empty() && store.set_delivered(&target, &dirty).is_ok()
                                {
                                    shared.progress.marked(&dirty);
                                    dirty.clear();
                                }
                                if pause(shared, BACKOFF.delay(attempt, backoff::random_unit())) {
                                    // Stopping: this event stays undelivered (its mark not moved).
                                    persist(shared, &mut store, &target, &mut dirty);
                                    return;
                                }
                            }
                        }
                    }
                }
                marks.insert(s.clone(), id);
                dirty.retain(|(d, _)| d != s);
                dirty.push((s.clone(), id));
                if last_persist.elapsed() >= PERSIST_EVERY {
                    break;
                }
            }
            if !dirty.is_empty() && last_persist.elapsed() >= PERSIST_EVERY {
                persist(shared, &mut store, &target, &mut dirty);
                last_persist = Instant::now();
            }
        }
        if !dirty.is_empty() && !worked {
            persist(shared, &mut store, &target, &mut dirty);
            last_persist = Instant::now();
        }
        if !worked {
            nudges = shared
                .progress
                .wait_nudge(nudges, Duration::from_millis(200));
        }
    }
    persist(shared, &mut store, &target, &mut dirty);
}

fn persist(shared: &Shared, store: &mut EventStore, target: &str, dirty: &mut Vec<(String, i64)>) {
    if dirty.is_empty() {
        return;
    }
    match store.set_delivered(target, dirty) {
        Ok(()) => {
            shared.progress.marked(dirty);
            dirty.clear();
        }
        Err(e) => {
            shared.stats.lock().unwrap().last_error =
                Some(format!("writing the delivery marks: {e}"))
        }
    }
}
