// SPDX-License-Identifier: MPL-2.0
//! `videoai-events`: reads a videoai event log (SQLite file or NATS JetStream).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gstvideoai::eventlog::clips::Clips;
use gstvideoai::eventlog::event::{Detection, FrameEvent};
use gstvideoai::eventlog::nats;
use gstvideoai::eventlog::store::{BadRow, EventStore};
use gstvideoai::eventlog::tracks::{Counts, Tracks};

use clap::Parser;

/// What every subcommand reads.
#[derive(clap::Args, Debug, Clone)]
struct Log {
    /// The event log: the SQLite file given to raftsink's `location` (or its outbox-location),
    /// or nats://host:port[,host:port...] for a NATS cluster.
    location: String,
    /// NATS: the JetStream stream.
    #[arg(long, value_name = "NAME", default_value = "VIDEOAI_EVENTS")]
    nats_stream: String,
    /// NATS: how long to wait for the stream to have a leader and take requests, in seconds (a
    /// 3-node cluster whose stream leader was killed took 5 to 40 s here). A read that gets no
    /// message for 5 s (its server froze, its leader changed) goes on from where it was on a new
    /// connection, each event printed once, until this long has passed without progress.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WAIT_S, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    wait: u64,
}

/// `--wait`'s default: a cluster re-electing the leader of a stream (and of its metadata) after a
/// kill answered requests again after 5 to 40 s on this 2-core machine (30 s was too short in
/// 3 of 40 tries of `events_tool_waits_for_a_new_leader`).
const DEFAULT_WAIT_S: u64 = 60;

/// A time range of capture times.
#[derive(clap::Args, Debug, Clone, Default)]
struct Range {
    /// Capture time from (inclusive): nanoseconds since the Unix epoch, or an RFC 3339 UTC time
    /// such as 2026-11-24T03:00:00Z or 2026-11-24T03:00:00.5Z (years 1970 to 2262).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<i64>,
    /// Capture time until (inclusive), as --from.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<i64>,
}

#[derive(Parser, Debug)]
#[command(
    name = "videoai-events",
    version,
    about = "Reads the event log written by the videoai raftsink element (SQLite or NATS JetStream)",
    long_about = "Reads the event log written by the videoai raftsink element: an SQLite file (the \
        log, or a NATS outbox) or a NATS JetStream cluster. Reading never needs write access. \
        dump, timeline, follow and summary stream the log in constant memory. A row that cannot \
        be read is reported on stderr as `skipped (stream, seq): why` and the others are \
        printed; the exit status stays 0. With NATS, dump and timeline order events per \
        stream as they were acknowledged (the capture order of a camera).\n\n\
        Exit status: 0 on success, 1 when the log cannot be read, 2 on a usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Every event as one JSON object per line, ordered by stream, then capture time (then
    /// seq). Fields: stream, seq, pts_ns, capture_ns, model, schema, key_basis, detections
    /// (label, class_id, confidence, x, y, w, h in frame pixels; fresh: false for results
    /// carried over from an earlier frame; classification; track_id, crossings, zone_events).
    Dump {
        #[command(flatten)]
        log: Log,
        /// Only this stream (the stream id shown by dump).
        #[arg(long, value_name = "ID")]
        stream: Option<String>,
    },
    /// One stream's events between two capture times, sorted by capture time.
    Timeline {
        #[command(flatten)]
        log: Log,
        /// The stream.
        #[arg(long, value_name = "ID")]
        stream: String,
        #[command(flatten)]
        range: Range,
    },
    /// Prints events as they are stored (insertion order), until interrupted or --count were
    /// printed.
    Follow {
        #[command(flatten)]
        log: Log,
        #[arg(long, value_name = "ID")]
        stream: Option<String>,
        /// Print the stored events first.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many events (at least 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Per stream: events, seq range, capture time range, and (outbox) events not yet
    /// acknowledged by NATS; dead letters.
    Stats {
        #[command(flatten)]
        log: Log,
    },
    /// Per stream: frames, detections, models, and the places where objects were detected.
    Summary {
        #[command(flatten)]
        log: Log,
        #[arg(long, value_name = "ID")]
        stream: Option<String>,
    },
    /// One JSON line per objecttracker track: stream, track_id, label, first_capture_ns,
    /// last_capture_ns, frames, first_box, last_box ([x, y, w, h]) and mean_confidence; from
    /// the frame it was confirmed on (objecttracker min-hits), the first with its id.
    Tracks {
        #[command(flatten)]
        log: Log,
        #[arg(long, value_name = "ID")]
        stream: Option<String>,
        #[command(flatten)]
        range: Range,
    },
    /// One JSON line per cliprecorder clip: stream, path, first_capture_ns, last_capture_ns,
    /// triggers (seq, capture_ns and reason of each trigger that started or extended it), file
    /// (complete; incomplete: only NAME.partial is there, still being written or its writer was
    /// killed, playable up to its last fragment; deleted: by retention; missing), and deleted
    /// or failed with the reason. --from/--to keep the clips that overlap the range.
    Clips {
        #[command(flatten)]
        log: Log,
        #[arg(long, value_name = "ID")]
        stream: Option<String>,
        #[command(flatten)]
        range: Range,
    },
    /// JSON lines: one per (stream, line, direction) with its count, then one per (stream,
    /// zone) with entries and exits (objecttracker lines and zones).
    Counts {
        #[command(flatten)]
        log: Log,
        #[arg(long, value_name = "ID")]
        stream: Option<String>,
        #[command(flatten)]
        range: Range,
    },
    /// SQLite log or outbox: one JSON line per frame not stored because its key already held
    /// another frame (capture time, or a file's PTS, more than half a period away), with
    /// stored_capture_ns, stored_pts_ns, found_ns and place (log, or nats).
    Collisions {
        #[command(flatten)]
        log: Log,
        #[arg(long, value_name = "ID")]
        stream: Option<String>,
    },
}

#[derive(Default, Clone)]
struct Args {
    command: String,
    location: String,
    stream: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    from_start: bool,
    count: Option<u64>,
    nats_stream: Option<String>,
    wait: Option<u64>,
}

/// Nanoseconds since the epoch, or an RFC 3339 time (`Z` may be left out: UTC); an error for a
/// date or time that does not exist, and for one an i64 of nanoseconds cannot hold.
fn parse_time(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let usage = "use nanoseconds since the Unix epoch, or a UTC time such as 2026-11-24T03:00:00Z";
    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        return s.parse::<i64>().map_err(|_| {
            format!("'{s}' is too large for nanoseconds since the epoch (years past 2262); {usage}")
        });
    }
    let parsed = time::OffsetDateTime::parse(s, &Rfc3339).or_else(|e| {
        // Without an offset: taken as UTC.
        let has_offset =
            s.ends_with('Z') || s.ends_with('z') || s.rfind(['+', '-']).is_some_and(|i| i > 10);
        if has_offset {
            Err(e)
        } else {
            time::OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339)
        }
    });
    let t = parsed.map_err(|e| format!("'{s}' is not a valid time ({e}); {usage}"))?;
    i64::try_from(t.unix_timestamp_nanos())
        .ok()
        .filter(|ns| *ns >= 0)
        .ok_or_else(|| format!("'{s}' is outside what the log can hold (1970 to 2262); {usage}"))
}

impl Args {
    fn from_cli(cli: Cli) -> Result<Args, String> {
        let log_args = |log: Log| (log.location, Some(log.nats_stream), Some(log.wait));
        let (command, (location, nats_stream, wait), stream, range, from_start, count) = match cli
            .command
        {
            Command::Dump { log, stream } => {
                ("dump", log_args(log), stream, Range::default(), false, None)
            }
            Command::Timeline { log, stream, range } => {
                ("timeline", log_args(log), Some(stream), range, false, None)
            }
            Command::Follow {
                log,
                stream,
                from_start,
                count,
            } => (
                "follow",
                log_args(log),
                stream,
                Range::default(),
                from_start,
                count,
            ),
            Command::Stats { log } => ("stats", log_args(log), None, Range::default(), false, None),
            Command::Summary { log, stream } => (
                "summary",
                log_args(log),
                stream,
                Range::default(),
                false,
                None,
            ),
            Command::Tracks { log, stream, range } => {
                ("tracks", log_args(log), stream, range, false, None)
            }
            Command::Counts { log, stream, range } => {
                ("counts", log_args(log), stream, range, false, None)
            }
            Command::Clips { log, stream, range } => {
                ("clips", log_args(log), stream, range, false, None)
            }
            Command::Collisions { log, stream } => (
                "collisions",
                log_args(log),
                stream,
                Range::default(),
                false,
                None,
            ),
        };
        if let (Some(f), Some(t)) = (range.from, range.to)
            && f > t
        {
            return Err(format!(
                "--from is after --to ({f} > {t} ns): nothing could match; swap them"
            ));
        }
        Ok(Args {
            command: command.to_string(),
            location,
            stream,
            from: range.from,
            to: range.to,
            from_start,
            count,
            nats_stream,
            wait,
        })
    }
}

/// A place where detections were seen: a running mean of the boxes merged into it.
struct Place {
    label: String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    count: u64,
    confidence_sum: f64,
}

impl Place {
    fn iou(&self, d: &Detection) -> f64 {
        let (ax2, ay2) = (self.x + self.w, self.y + self.h);
        let (bx2, by2) = ((d.x + d.w) as f64, (d.y + d.h) as f64);
        let iw = (ax2.min(bx2) - self.x.max(d.x as f64)).max(0.0);
        let ih = (ay2.min(by2) - self.y.max(d.y as f64)).max(0.0);
        let inter = iw * ih;
        let union = self.w * self.h + (d.w * d.h) as f64 - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    fn merge(&mut self, d: &Detection) {
        self.count += 1;
        let n = self.count as f64;
        self.x += (d.x as f64 - self.x) / n;
        self.y += (d.y as f64 - self.y) / n;
        self.w += (d.w as f64 - self.w) / n;
        self.h += (d.h as f64 - self.h) / n;
        self.confidence_sum += d.confidence;
    }
}

/// One stream's summary, built one event at a time.
#[derive(Default)]
struct Summary {
    stream: String,
    frames: usize,
    with: usize,
    total: usize,
    models: std::collections::BTreeSet<String>,
    places: Vec<Place>,
}

impl Summary {
    fn add(&mut self, e: &FrameEvent) {
        self.frames += 1;
        self.with += usize::from(!e.detections.is_empty());
        self.total += e.detections.len();
        if !e.model.is_empty() && !self.models.contains(&e.model) {
            self.models.insert(e.model.clone());
        }
        for d in &e.detections {
            let best = self
                .places
                .iter_mut()
                .filter(|p| p.label == d.label)
                .map(|p| (p.iou(d), p))
                .filter(|(iou, _)| *iou >= 0.3)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((_, p)) => p.merge(d),
                None => {
                    let mut p = Place {
                        label: d.label.clone(),
                        x: 0.0,
                        y: 0.0,
                        w: 0.0,
                        h: 0.0,
                        count: 0,
                        confidence_sum: 0.0,
                    };
                    p.merge(d);
                    self.places.push(p);
                }
            }
        }
    }

    fn write(mut self, out: &mut impl Write) -> std::io::Result<()> {
        let (frames, with, total) = (self.frames, self.with, self.total);
        let per_frame = if frames == 0 {
            0.0
        } else {
            total as f64 / frames as f64
        };
        writeln!(out, "stream {}", self.stream)?;
        writeln!(
            out,
            "  frames: {frames}, frames with detections: {with}, detections: {total} ({per_frame:.1} per frame)"
        )?;
        let models = if self.models.is_empty() {
            "-".to_string()
        } else {
            self.models.into_iter().collect::<Vec<_>>().join(", ")
        };
        writeln!(out, "  models: {models}")?;
        let places = &mut self.places;
        places.sort_by(|a, b| b.count.cmp(&a.count).then(a.x.total_cmp(&b.x)));
        writeln!(
            out,
            "  places (box x,y w×h in frame pixels, frames seen, mean confidence):"
        )?;
        for p in places.iter().take(20) {
            writeln!(
                out,
                "    {:<12} at {:>5.0},{:<5.0} {:>4.0}×{:<4.0} in {:>5} frames, confidence {:.2}",
                p.label,
                p.x,
                p.y,
                p.w,
                p.h,
                p.count,
                p.confidence_sum / p.count as f64
            )?;
        }
        if places.len() > 20 {
            writeln!(
                out,
                "    … and {} more places seen less often",
                places.len() - 20
            )?;
        }
        Ok(())
    }
}

fn json_line(out: &mut impl Write, ev: &FrameEvent) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, ev)?;
    out.write_all(b"\n")
}

/// A NATS location's servers, `None` for a file; a bad NATS location is an error.
fn nats_urls(location: &str) -> Result<Option<Vec<String>>, String> {
    nats::parse_location(location).transpose()
}

fn nats_name(args: &Args) -> String {
    args.nats_stream
        .clone()
        .unwrap_or_else(|| nats::DEFAULT_STREAM.into())
}

fn deadline(args: &Args) -> Instant {
    Instant::now() + Duration::from_secs(args.wait.unwrap_or(DEFAULT_WAIT_S))
}

/// A row that cannot be read: said on stderr, the others go on.
fn skipped(b: BadRow) {
    eprintln!(
        "videoai-events: skipped ({}, {}): {}",
        b.stream, b.seq, b.why
    );
}

fn open(args: &Args) -> Result<EventStore, String> {
    EventStore::open_for_reading(std::path::Path::new(&args.location)).map_err(|e| e.to_string())
}

/// Every event matching the filters, one at a time, in timeline order (SQLite) or per stream
/// in acknowledgement order (NATS); `each` returns false to stop.
fn for_each(args: &Args, mut each: impl FnMut(FrameEvent) -> bool) -> Result<(), String> {
    let want = |e: &FrameEvent| {
        args.stream.as_ref().is_none_or(|s| &e.stream == s)
            && args.from.is_none_or(|f| e.capture_ns >= f)
            && args.to.is_none_or(|t| e.capture_ns <= t)
    };
    if let Some(urls) = nats_urls(&args.location)? {
        let name = nats_name(args);
        let mut give_up = deadline(args);
        // A cluster whose leader just died refuses connections and requests for a few
        // seconds, and a read whose stream leader froze or changed stalls: try again on a new
        // connection, from the message after the last one read, until --wait has passed
        // without progress.
        let mut next = 1u64;
        return nats::block_on(async {
            loop {
                let tried = async {
                    let client =
                        nats::connect(&urls, "videoai-events", Duration::from_secs(5), false)
                            .await
                            .map_err(|why| nats::Stopped { next, why })?;
                    nats::for_each_event_from(
                        &async_nats::jetstream::new(client),
                        &name,
                        next,
                        give_up,
                        |e| if want(&e) { each(e) } else { true },
                        |seq, why| eprintln!("videoai-events: skipped stream message {seq}: {why}"),
                    )
                    .await
                }
                .await;
                match tried {
                    Ok(()) => return Ok(()),
                    Err(stopped) => {
                        if stopped.next > next {
                            give_up = deadline(args);
                        }
                        next = stopped.next;
                        // A server without JetStream is not a cluster electing a leader: said
                        // at once.
                        if Instant::now() >= give_up || stopped.why.contains("has no JetStream") {
                            return Err(stopped.why);
                        }
                        eprintln!("videoai-events: {}; trying again (--wait)", stopped.why);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }
    open(args)?
        .for_each_in_timeline(args.stream.as_deref(), args.from, args.to, each, skipped)
        .map_err(|e| e.to_string())
}

fn print_stats(out: &mut impl Write, args: &Args) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    if nats_urls(&args.location)?.is_some() {
        writeln!(
            out,
            "stream\tevents\tmin_seq\tmax_seq\tfirst_capture_ns\tlast_capture_ns"
        )
        .map_err(io)?;
        let mut per: std::collections::BTreeMap<String, (u64, i64, i64, i64, i64)> =
            Default::default();
        for_each(args, |e| {
            let s =
                per.entry(e.stream.clone())
                    .or_insert((0, i64::MAX, i64::MIN, i64::MAX, i64::MIN));
            *s = (
                s.0 + 1,
                s.1.min(e.seq),
                s.2.max(e.seq),
                s.3.min(e.capture_ns),
                s.4.max(e.capture_ns),
            );
            true
        })?;
        for (stream, (n, a, b, c, d)) in per {
            writeln!(out, "{stream}\t{n}\t{a}\t{b}\t{c}\t{d}").map_err(io)?;
        }
        return Ok(());
    }
    let store = open(args)?;
    // The column of events not yet in NATS only for an outbox (a file raftsink forwards).
    let outbox = store.outbox_of().map_err(|e| e.to_string())?.is_some();
    // A column per delivery target (MQTT, webhook) the file delivers to: its events of each
    // stream not yet acknowledged there ('-': the stream is not delivered there).
    let deliveries = store.deliveries().map_err(|e| e.to_string())?;
    let mut targets: Vec<&str> = deliveries.iter().map(|d| d.target.as_str()).collect();
    targets.dedup();
    let mut header = String::new();
    if outbox {
        header.push_str("\tnot_in_nats");
    }
    for t in &targets {
        header.push_str(&format!("\tnot_in {t}"));
    }
    writeln!(
        out,
        "stream\tevents\tmin_seq\tmax_seq\tfirst_capture_ns\tlast_capture_ns{header}"
    )
    .map_err(io)?;
    for s in store.stats().map_err(|e| e.to_string())? {
        write!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            s.stream, s.events, s.min_seq, s.max_seq, s.first_capture_ns, s.last_capture_ns,
        )
        .map_err(io)?;
        if outbox {
            write!(out, "\t{}", s.unforwarded).map_err(io)?;
        }
        for t in &targets {
            match deliveries
                .iter()
                .find(|d| d.target == *t && d.stream == s.stream)
            {
                Some(d) => write!(out, "\t{}", d.waiting).map_err(io)?,
                None => write!(out, "\t-").map_err(io)?,
            }
        }
        writeln!(out).map_err(io)?;
    }
    let dead = store.dead_letters().map_err(|e| e.to_string())?;
    if !dead.is_empty() {
        writeln!(
            out,
            "\n{} dead letter(s): events a target refused for good, kept in the dead_letters table\ntarget\tstream\tseq\tparked_ns\treason",
            dead.len()
        )
        .map_err(io)?;
        for d in dead {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                d.target.as_deref().unwrap_or("nats"),
                d.stream,
                d.seq,
                d.parked_ns,
                d.reason
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

fn follow(out: &mut impl Write, args: &Args) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let want = |e: &FrameEvent| args.stream.as_ref().is_none_or(|s| &e.stream == s);
    let mut printed = 0u64;
    let done = |n: u64| args.count.is_some_and(|c| n >= c);
    if let Some(urls) = nats_urls(&args.location)? {
        use futures_util::StreamExt;
        let name = nats_name(args);
        let deadline = deadline(args);
        return nats::block_on(async {
            let client =
                nats::connect(&urls, "videoai-events", Duration::from_secs(5), false).await?;
            let js = async_nats::jetstream::new(client);
            let stream = nats::stream_with_leader(&js, &name, deadline).await?;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: if args.from_start {
                        async_nats::jetstream::consumer::DeliverPolicy::All
                    } else {
                        async_nats::jetstream::consumer::DeliverPolicy::New
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot follow stream '{name}': {e}"))?;
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            while let Some(msg) = messages.next().await {
                let msg = msg.map_err(|e| e.to_string())?;
                match serde_json::from_slice::<FrameEvent>(&msg.payload) {
                    Ok(ev) if want(&ev) => {
                        json_line(out, &ev).map_err(io)?;
                        out.flush().map_err(io)?;
                        printed += 1;
                        if done(printed) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("videoai-events: skipped a message that is not an event: {e}")
                    }
                }
            }
            Ok(())
        });
    }
    let store = open(args)?;
    let mut last = if args.from_start {
        0
    } else {
        store.last_id().map_err(|e| e.to_string())?
    };
    let mut idle_since = Instant::now();
    loop {
        let mut bad_ids = Vec::new();
        let batch = store
            .after(last, 1000, |b| {
                bad_ids.push(b.id);
                skipped(b)
            })
            .map_err(|e| e.to_string())?;
        let bad_last = bad_ids.iter().copied().max().unwrap_or(0);
        if batch.is_empty() && bad_last == 0 {
            std::thread::sleep(Duration::from_millis(
                if idle_since.elapsed() < Duration::from_secs(1) {
                    20
                } else {
                    200
                },
            ));
            continue;
        }
        idle_since = Instant::now();
        last = last.max(bad_last);
        for (id, ev) in batch {
            last = last.max(id);
            if want(&ev) {
                json_line(out, &ev).map_err(io)?;
                printed += 1;
                if done(printed) {
                    return out.flush().map_err(io);
                }
            }
        }
        out.flush().map_err(io)?;
    }
}

/// The frames kept aside because their key held another frame (SQLite log or outbox).
fn print_collisions(out: &mut impl Write, args: &Args) -> Result<(), String> {
    if nats::parse_location(&args.location).is_some() {
        return Err(
            "collisions are kept in the SQLite outbox of the writer that found them: give its outbox-location"
                .into(),
        );
    }
    let store = EventStore::open_for_reading(std::path::Path::new(&args.location))
        .map_err(|e| e.to_string())?;
    for c in store.collisions().map_err(|e| e.to_string())? {
        if args.stream.as_ref().is_some_and(|s| *s != c.stream) {
            continue;
        }
        let mut v: serde_json::Value =
            serde_json::from_str(&c.event).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("stored_capture_ns".into(), c.stored_capture_ns.into());
            o.insert("stored_pts_ns".into(), c.stored_pts_ns.into());
            o.insert("found_ns".into(), c.found_ns.into());
            o.insert("place".into(), c.place.into());
        }
        writeln!(out, "{v}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn run(args: Args) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let io = |e: std::io::Error| e.to_string();
    let res = match args.command.as_str() {
        "follow" => follow(&mut out, &args),
        "stats" => print_stats(&mut out, &args),
        "collisions" => print_collisions(&mut out, &args),
        "tracks" | "counts" => {
            let (mut tracks, mut counts) = (Tracks::default(), Counts::default());
            let tracking = args.command == "tracks";
            for_each(&args, |e| {
                if tracking {
                    tracks.add(&e);
                } else {
                    counts.add(&e);
                }
                true
            })?;
            let rows = if tracking {
                tracks.rows()
            } else {
                counts.rows()
            };
            rows.iter()
                .try_for_each(|r| writeln!(out, "{r}"))
                .and_then(|()| out.flush())
                .map_err(io)
        }
        "clips" => {
            // Every event of the stream: a clip's deletion comes after its range.
            let (from, to) = (args.from, args.to);
            let all = Args {
                from: None,
                to: None,
                ..args.clone()
            };
            let mut clips = Clips::default();
            for_each(&all, |e| {
                clips.add(&e);
                true
            })?;
            clips
                .rows(from, to)
                .iter()
                .try_for_each(|r| writeln!(out, "{r}"))
                .and_then(|()| out.flush())
                .map_err(io)
        }
        "summary" => {
            // Per stream, in stream order (SQLite; NATS: streams kept apart as they come).
            let mut open: std::collections::BTreeMap<String, Summary> = Default::default();
            let mut failed = None;
            for_each(&args, |e| {
                open.entry(e.stream.clone())
                    .or_insert_with(|| Summary {
                        stream: e.stream.clone(),
                        ..Default::default()
                    })
                    .add(&e);
                true
            })?;
            if open.is_empty() {
                let which = args
                    .stream
                    .as_ref()
                    .map(|s| format!(" for stream {s}"))
                    .unwrap_or_default();
                writeln!(out, "no events{which}").map_err(io)?;
            }
            for (_, s) in open {
                if let Err(e) = s.write(&mut out) {
                    failed = Some(e);
                    break;
                }
            }
            match failed {
                Some(e) => Err(e.to_string()),
                None => out.flush().map_err(io),
            }
        }
        _ => {
            let mut failed = None;
            for_each(&args, |ev| match json_line(&mut out, &ev) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })?;
            match failed {
                Some(e) => Err(e.to_string()),
                None => out.flush().map_err(io),
            }
        }
    };
    match res {
        // The reader went away (`| head`): not an error.
        Err(e) if e.contains("Broken pipe") => Ok(()),
        other => other,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and succeed; usage errors exit 2.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    let args = match Args::from_cli(cli) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("videoai-events: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("videoai-events: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_time("1764000000000000000").unwrap(),
            1_764_000_000_000_000_000
        );
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        assert_eq!(
            parse_time("2000-03-01T00:00:00Z").unwrap(),
            951_868_800 * 1_000_000_000
        );
        assert_eq!(
            parse_time("2026-11-24T03:00:00.5Z").unwrap(),
            1_795_489_200_500_000_000
        );
        assert!(parse_time("yesterday").is_err());
        // Without Z: UTC.
        assert_eq!(parse_time("1970-01-01T00:00:01").unwrap(), 1_000_000_000);
        // Times that do not exist, and times an i64 of nanoseconds cannot hold.
        for bad in [
            "2026-13-45T99:00:00Z",
            "2026-02-31T00:00:00Z",
            "2300-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "99999999999999999999",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
