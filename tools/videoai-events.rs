// SPDX-License-Identifier: MPL-2.0
//! `videoai-events`: reads a videoai event log.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use gstvideoai::event::{Detection, FrameEvent};
use gstvideoai::event_store::EventStore;

const USAGE: &str = "\
videoai-events: read the event log written by the videoai `raftsink` element

USAGE:
    videoai-events dump LOCATION [--stream ID]
    videoai-events summary LOCATION [--stream ID]
    videoai-events --help

COMMANDS:
    dump      Print every event as one JSON object per line, ordered by stream, then capture
              time. Fields: stream, seq, pts_ns, capture_ns, model, detections (label,
              class_id, confidence, x, y, w, h in frame pixels).
    summary   Print, per stream, the number of frames and detections, the models, and the
              places where objects were detected (boxes seen in several frames merged).

ARGUMENTS:
    LOCATION      the event log: the SQLite file given to raftsink's `location`
    --stream ID   only this stream (the stream-id shown by dump)

EXIT STATUS:
    0 on success, 1 when the log cannot be read, 2 on a usage error.
";

struct Args {
    command: String,
    location: PathBuf,
    stream: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut command = None;
    let mut location = None;
    let mut stream = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" | "help" => return Ok(None),
            "--stream" => {
                stream = Some(args.next().ok_or("--stream needs a stream id")?);
            }
            s if s.starts_with("--stream=") => stream = Some(s["--stream=".len()..].to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'")),
            _ if command.is_none() => command = Some(a),
            _ if location.is_none() => location = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument '{a}'")),
        }
    }
    let command = command.ok_or("no command given")?;
    if !matches!(command.as_str(), "dump" | "summary") {
        return Err(format!("unknown command '{command}'"));
    }
    let location = location.ok_or("no LOCATION given")?;
    Ok(Some(Args {
        command,
        location,
        stream,
    }))
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

fn write_output(
    out: &mut impl Write,
    command: &str,
    stream: Option<&str>,
    events: &[FrameEvent],
) -> std::io::Result<()> {
    if command == "dump" {
        for ev in events {
            serde_json::to_writer(&mut *out, ev)?;
            out.write_all(b"\n")?;
        }
        return out.flush();
    }
    if events.is_empty() {
        let which = stream
            .map(|s| format!(" for stream {s}"))
            .unwrap_or_default();
        writeln!(out, "no events{which}")?;
    }
    for chunk in events.chunk_by(|a, b| a.stream == b.stream) {
        summarize(out, &chunk[0].stream, chunk)?;
    }
    out.flush()
}

fn run(args: Args) -> Result<(), String> {
    let store = EventStore::open_for_reading(&args.location).map_err(|e| e.to_string())?;
    let events = store
        .events(args.stream.as_deref())
        .map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match write_output(&mut out, &args.command, args.stream.as_deref(), &events) {
        // The reader went away (`| head`): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| format!("cannot write to stdout: {e}")),
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
