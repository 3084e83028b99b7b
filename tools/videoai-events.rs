// SPDX-License-Identifier: MPL-2.0
//! `videoai-events`: reads a videoai event log (SQLite file or NATS JetStream).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gstvideoai::event::{Detection, FrameEvent};
use gstvideoai::event_store::EventStore;
use gstvideoai::nats_log;

const USAGE: &str = "\
videoai-events: read the event log written by the videoai `raftsink` element

USAGE:
    videoai-events dump LOCATION [--stream ID]
    videoai-events timeline LOCATION --stream ID [--from T] [--to T]
    videoai-events follow LOCATION [--stream ID] [--from-start] [--count N]
    videoai-events stats LOCATION
    videoai-events summary LOCATION [--stream ID]
    videoai-events --help

COMMANDS:
    dump      Every event as one JSON object per line, ordered by stream, then capture time
              (then seq). Fields: stream, seq, pts_ns, capture_ns, model, schema, detections
              (label, class_id, confidence, x, y, w, h in frame pixels; fresh: false for
              results carried over from an earlier frame; classification when a classifier
              ran on the region).
    timeline  One stream's events between two capture times, sorted by capture time whatever
              order they arrived in.
    follow    Prints events as they are stored (insertion order), until interrupted or --count
              events were printed; --from-start prints the stored ones first.
    stats     Per stream: events, seq range, capture time range, and (outbox) events not yet
              acknowledged by NATS.
    summary   Per stream: frames, detections, models, and the places where objects were
              detected (boxes seen in several frames merged).

ARGUMENTS:
    LOCATION       the event log: the SQLite file given to raftsink's `location` (or its
                   outbox-location), or nats://host:port[,host:port...] for a NATS cluster
    --stream ID    only this stream (the stream-id shown by dump)
    --from T       capture time from, --to T until (inclusive): nanoseconds since the Unix
                   epoch, or a UTC time such as 2026-11-24T03:00:00Z or 2026-11-24T03:00:00.5Z
    --nats-stream NAME
                   the JetStream stream (default VIDEOAI_EVENTS)

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
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'")),
            _ => positional.push(arg),
        }
    }
    let mut positional = positional.into_iter();
    a.command = positional.next().ok_or("no command given")?;
    if !matches!(
        a.command.as_str(),
        "dump" | "timeline" | "follow" | "stats" | "summary"
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

fn summarize(out: &mut impl Write, stream: &str, events: &[FrameEvent]) -> std::io::Result<()> {
    let frames = events.len();
    let with = events.iter().filter(|e| !e.detections.is_empty()).count();
    let total: usize = events.iter().map(|e| e.detections.len()).sum();
    let mut models: Vec<&str> = events
        .iter()
        .map(|e| e.model.as_str())
        .filter(|m| !m.is_empty())
        .collect();
    models.sort();
    models.dedup();
    let per_frame = if frames == 0 {
        0.0
    } else {
        total as f64 / frames as f64
    };
    writeln!(out, "stream {stream}")?;
    writeln!(
        out,
        "  frames: {frames}, frames with detections: {with}, detections: {total} ({per_frame:.1} per frame)"
    )?;
    let models = if models.is_empty() {
        "-".to_string()
    } else {
        models.join(", ")
    };
    writeln!(out, "  models: {models}")?;
    let mut places: Vec<Place> = Vec::new();
    for d in events.iter().flat_map(|e| e.detections.iter()) {
        let best = places
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
                places.push(p);
            }
        }
    }
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

fn json_line(out: &mut impl Write, ev: &FrameEvent) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, ev)?;
    out.write_all(b"\n")
}

/// Sorts as timelines are rebuilt: by stream, capture time, seq.
fn sort_timeline(events: &mut [FrameEvent]) {
    events.sort_by(|a, b| {
        a.stream
            .cmp(&b.stream)
            .then(a.capture_ns.cmp(&b.capture_ns))
            .then(a.seq.cmp(&b.seq))
    });
}

/// All events matching the filters, in timeline order.
fn load(args: &Args) -> Result<Vec<FrameEvent>, String> {
    if let Some(urls) = nats_log::parse_location(&args.location) {
        let name = args
            .nats_stream
            .clone()
            .unwrap_or_else(|| nats_log::DEFAULT_STREAM.into());
        let mut events = nats_log::block_on(async {
            let client =
                nats_log::connect(&urls, "videoai-events", Duration::from_secs(5), false).await?;
            nats_log::read_all(&async_nats::jetstream::new(client), &name).await
        })?;
        events.retain(|e| {
            args.stream.as_ref().is_none_or(|s| &e.stream == s)
                && args.from.is_none_or(|f| e.capture_ns >= f)
                && args.to.is_none_or(|t| e.capture_ns <= t)
        });
        sort_timeline(&mut events);
        return Ok(events);
    }
    let store = EventStore::open_for_reading(std::path::Path::new(&args.location))
        .map_err(|e| e.to_string())?;
    store
        .timeline(args.stream.as_deref(), args.from, args.to)
        .map_err(|e| e.to_string())
}

fn print_stats(out: &mut impl Write, args: &Args) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    if nats_log::parse_location(&args.location).is_some() {
        let events = load(args)?;
        writeln!(
            out,
            "stream\tevents\tmin_seq\tmax_seq\tfirst_capture_ns\tlast_capture_ns"
        )
        .map_err(io)?;
        for chunk in events.chunk_by(|a, b| a.stream == b.stream) {
            let seqs = chunk.iter().map(|e| e.seq);
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}",
                chunk[0].stream,
                chunk.len(),
                seqs.clone().min().unwrap_or(0),
                seqs.max().unwrap_or(0),
                chunk.first().map_or(0, |e| e.capture_ns),
                chunk.last().map_or(0, |e| e.capture_ns)
            )
            .map_err(io)?;
        }
        return Ok(());
    }
    let store = EventStore::open_for_reading(std::path::Path::new(&args.location))
        .map_err(|e| e.to_string())?;
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
    Ok(())
}

fn follow(out: &mut impl Write, args: &Args) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let want = |e: &FrameEvent| args.stream.as_ref().is_none_or(|s| &e.stream == s);
    let mut printed = 0u64;
    let done = |n: u64| args.count.is_some_and(|c| n >= c);
    if let Some(urls) = nats_log::parse_location(&args.location) {
        use futures_util::StreamExt;
        let name = args
            .nats_stream
            .clone()
            .unwrap_or_else(|| nats_log::DEFAULT_STREAM.into());
        return nats_log::block_on(async {
            let client =
                nats_log::connect(&urls, "videoai-events", Duration::from_secs(5), false).await?;
            let js = async_nats::jetstream::new(client);
            let stream = js
                .get_stream(&name)
                .await
                .map_err(|e| format!("cannot open stream '{name}': {e}"))?;
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
                if let Ok(ev) = serde_json::from_slice::<FrameEvent>(&msg.payload)
                    && want(&ev)
                {
                    json_line(out, &ev).map_err(io)?;
                    out.flush().map_err(io)?;
                    printed += 1;
                    if done(printed) {
                        break;
                    }
                }
            }
            Ok(())
        });
    }
    let path = std::path::Path::new(&args.location);
    let store = EventStore::open_for_reading(path).map_err(|e| e.to_string())?;
    let mut last = if args.from_start {
        0
    } else {
        store
            .after(0, usize::MAX)
            .map_err(|e| e.to_string())?
            .last()
            .map_or(0, |(id, _)| *id)
    };
    let mut idle_since = Instant::now();
    loop {
        let batch = store.after(last, 1000).map_err(|e| e.to_string())?;
        if batch.is_empty() {
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
        for (id, ev) in batch {
            last = id;
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

fn run(args: Args) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let res = match args.command.as_str() {
        "follow" => follow(&mut out, &args),
        "stats" => print_stats(&mut out, &args),
        command => {
            let events = load(&args)?;
            let io = |e: std::io::Error| e.to_string();
            if command == "summary" {
                if events.is_empty() {
                    let which = args
                        .stream
                        .as_ref()
                        .map(|s| format!(" for stream {s}"))
                        .unwrap_or_default();
                    writeln!(out, "no events{which}").map_err(io)?;
                }
                for chunk in events.chunk_by(|a, b| a.stream == b.stream) {
                    summarize(&mut out, &chunk[0].stream, chunk).map_err(io)?;
                }
            } else {
                for ev in &events {
                    json_line(&mut out, ev).map_err(io)?;
                }
            }
            out.flush().map_err(io)
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
