// SPDX-License-Identifier: MPL-2.0
//! `videoai-events`: reads a videoai event log (SQLite file or NATS JetStream).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gstvideoai::eventlog::event::{Detection, FrameEvent};
use gstvideoai::eventlog::nats;
use gstvideoai::eventlog::store::{BadRow, EventStore};
use gstvideoai::eventlog::tracks::{Counts, Tracks};

const USAGE: &str = "\
videoai-events: read the event log written by the videoai `raftsink` element

USAGE:
    videoai-events dump LOCATION [--stream ID]
    videoai-events timeline LOCATION --stream ID [--from T] [--to T]
    videoai-events follow LOCATION [--stream ID] [--from-start] [--count N]
    videoai-events stats LOCATION
    videoai-events summary LOCATION [--stream ID]
    videoai-events tracks LOCATION [--stream ID]
    videoai-events counts LOCATION [--stream ID] [--from T] [--to T]
    videoai-events collisions LOCATION [--stream ID]
    videoai-events --help

COMMANDS:
    dump      Every event as one JSON object per line, ordered by stream, then capture time
              (then seq). Fields: stream, seq, pts_ns, capture_ns, model, schema, detections
              (label, class_id, confidence, x, y, w, h in frame pixels; fresh: false for
              results carried over from an earlier frame; classification when a classifier
              ran on the region; track_id from objecttracker, with crossings and zone_events
              on the frame they happened).
    timeline  One stream's events between two capture times, sorted by capture time whatever
              order they arrived in.
    follow    Prints events as they are stored (insertion order), until interrupted or --count
              events were printed; --from-start prints the stored ones first.
    stats     Per stream: events, seq range, capture time range, and (outbox) events not yet
              acknowledged by NATS.
    summary   Per stream: frames, detections, models, and the places where objects were
              detected (boxes seen in several frames merged).
    tracks    One JSON line per track (objecttracker): stream, track_id, label,
              first_capture_ns, last_capture_ns, frames, first_box, last_box ([x, y, w, h])
              and mean_confidence.
    counts    JSON lines: one per (stream, line, direction) with stream, line, direction and
              count, then one per (stream, zone) with stream, zone, entries and exits
              (objecttracker lines and zones; each crossing is stored once with its frame).
    collisions
              SQLite log or outbox: JSON lines, one per frame that was not stored because its
              key already held another frame (capture time, or a file's PTS, more than half a
              period away): the frame's event fields, plus stored_capture_ns and stored_pts_ns
              (the frame the key holds), found_ns and place (log, or nats: the key held in NATS).

ARGUMENTS:
    LOCATION       the event log: the SQLite file given to raftsink's `location` (or its
                   outbox-location), or nats://host:port[,host:port...] for a NATS cluster
    --stream ID    only this stream (the stream-id shown by dump)
    --from T       capture time from, --to T until (inclusive): nanoseconds since the Unix
                   epoch, or a UTC time such as 2026-11-24T03:00:00Z or 2026-11-24T03:00:00.5Z
    --nats-stream NAME
                   the JetStream stream (default VIDEOAI_EVENTS)
    --wait SECONDS NATS: how long to wait for the stream to have a leader (a cluster electing
                   one after its leader died answers nothing for a few seconds); default 30

Reading never needs write access (an archived log on a read-only mount). dump, timeline,
follow and summary stream the log in constant memory. A row that cannot be read is reported
on stderr as `skipped (stream, seq): why` and the others are printed; the exit status stays 0.
With NATS, dump and timeline order events per stream as they were acknowledged (the capture
order of a camera), not re-sorted.

EXIT STATUS:
    0 on success, 1 when the log cannot be read, 2 on a usage error.
";

#[derive(Default)]
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

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch, or `YYYY-MM-DDTHH:MM:SS[.frac][Z]` in UTC.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ns) = s.parse::<i64>() {
        return Ok(ns);
    }
    let bad = || {
        format!("'{s}' is not a time: use nanoseconds since the epoch or e.g. 2026-11-24T03:00:00Z")
    };
    let s2 = s.trim_end_matches('Z');
    let (date, time) = s2.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 || frac.chars().any(|c| !c.is_ascii_digit()) {
        return Err(bad());
    }
    let frac_ns = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")[..9]
            .parse::<i64>()
            .map_err(|_| bad())?
    };
    let secs = days_from_civil(d[0], d[1], d[2]) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    Ok(secs * 1_000_000_000 + frac_ns)
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args::default();
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(None),
            "--stream" => a.stream = Some(value("--stream")?),
            "--from" => a.from = Some(parse_time(&value("--from")?)?),
            "--to" => a.to = Some(parse_time(&value("--to")?)?),
            "--from-start" => a.from_start = true,
            "--count" => {
                a.count = Some(
                    value("--count")?
                        .parse()
                        .map_err(|_| "--count needs a number".to_string())?,
                )
            }
            "--nats-stream" => a.nats_stream = Some(value("--nats-stream")?),
            "--wait" => {
                a.wait = Some(
                    value("--wait")?
                        .parse()
                        .map_err(|_| "--wait needs a number of seconds".to_string())?,
                )
            }
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'")),
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    a.command = positional.next().ok_or("no command given")?;
    if !matches!(
        a.command.as_str(),
        "dump" | "timeline" | "follow" | "stats" | "summary" | "tracks" | "counts" | "collisions"
    ) {
        return Err(format!("unknown command '{}'", a.command));
    }
    a.location = positional.next().ok_or("no LOCATION given")?;
    if let Some(extra) = positional.next() {
        return Err(format!("unexpected argument '{extra}'"));
    }
    if a.command == "timeline" && a.stream.is_none() {
        return Err("timeline needs --stream ID".into());
    }
    Ok(Some(a))
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
    Instant::now() + Duration::from_secs(args.wait.unwrap_or(30))
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
        let deadline = deadline(args);
        // A cluster whose leader just died refuses connections and requests for a few
        // seconds: try again until the deadline, as long as nothing was printed yet.
        let mut printed = 0u64;
        return nats::block_on(async {
            loop {
                let tried = async {
                    let client =
                        nats::connect(&urls, "videoai-events", Duration::from_secs(5), false)
                            .await?;
                    nats::for_each_event(
                        &async_nats::jetstream::new(client),
                        &name,
                        deadline,
                        |e| {
                            if !want(&e) {
                                return true;
                            }
                            printed += 1;
                            each(e)
                        },
                        |seq, why| eprintln!("videoai-events: skipped stream message {seq}: {why}"),
                    )
                    .await
                }
                .await;
                match tried {
                    Err(e) if printed == 0 && Instant::now() < deadline => {
                        eprintln!("videoai-events: {e}; trying again (--wait)");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => return other,
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
    writeln!(
        out,
        "stream\tevents\tmin_seq\tmax_seq\tfirst_capture_ns\tlast_capture_ns\tnot_in_nats"
    )
    .map_err(io)?;
    for s in store.stats().map_err(|e| e.to_string())? {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            s.stream,
            s.events,
            s.min_seq,
            s.max_seq,
            s.first_capture_ns,
            s.last_capture_ns,
            s.unforwarded
        )
        .map_err(io)?;
    }
    let dead = store.dead_letters().map_err(|e| e.to_string())?;
    if !dead.is_empty() {
        writeln!(
            out,
            "\n{} dead letter(s): events NATS refused for good, kept in the outbox's dead_letters table\nstream\tseq\tparked_ns\treason",
            dead.len()
        )
        .map_err(io)?;
        for d in dead {
            writeln!(
                out,
                "{}\t{}\t{}\t{}",
                d.stream, d.seq, d.parked_ns, d.reason
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
    match parse(std::env::args().skip(1)) {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("videoai-events: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("videoai-events: {e}\n\n{USAGE}");
            ExitCode::from(2)
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
    }
}
