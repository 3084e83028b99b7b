// SPDX-License-Identifier: MPL-2.0
//! `cliprecorder` implementation: decoded frames pass from `sink` to `src` untouched and are
//! read for triggers; the camera's encoded access units come in on `encoded` and are kept in
//! a ring ([`Ring`]) or written to the clip being recorded ([`Writer`]).
//!
//! The two inputs are joined on a key per buffer ([`key_ns`]): the RTP time resilientsrc puts
//! on both outputs of an RTSP camera, else the PTS (equal on both outputs of a file).
//!
//! Threads: the `sink` pad's streaming thread (triggers, pass-through), the `encoded` pad's
//! (ring, clip writing; for a file it waits for the decoded frames so that the ring holds only
//! the pre-roll), the application's (properties, `trigger` signal, state changes), and one
//! thread per finishing clip that waits for its file to be closed. Each clip's writer runs a
//! pipeline of its own.
//!
//! What the recorder did goes into the event log with the frames it happened on: a trigger's
//! clip (path, first and last capture time, the trigger) on the triggering frame; a clip
//! deleted by retention or failed to write on the next decoded frame (`State::records`).
//!
//! Lock order: `settings`, then `state`, then `counts`. None is held while pushing downstream
//! or while a clip's file is finished; retention's directory scan runs without them.

use std::path::PathBuf;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::retention::{self, Kind, Limits};
use super::ring::{Ring, Unit, Window};
use super::snapshot::{self, Book, Live, Seen};
use super::writer::Writer;
use crate::eventlog::event::{ClipRecord, Detection};
use crate::formats::{capture_time, detection};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "cliprecorder",
        gst::DebugColorFlags::empty(),
        Some("videoai clip recorder"),
    )
});

const SECOND: u64 = 1_000_000_000;
const DEFAULT_PRE_ROLL: u64 = 5 * SECOND;
const DEFAULT_POST_ROLL: u64 = 5 * SECOND;
const DEFAULT_MAX_DURATION: u64 = 60 * SECOND;
const DEFAULT_CONFIDENCE: f64 = 0.5;
const DEFAULT_LOCATION: &str = "clips";
const DEFAULT_STREAM: &str = "stream";
/// How far a file's encoded stream may run ahead of its decoded frames (its pad waits).
const MAX_LEAD_NS: i64 = 2 * SECOND as i64;
/// How long EOS on `sink` waits for the encoded stream to end (the clip to be complete).
const EOS_WAIT: Duration = Duration::from_secs(10);
/// How long one access unit of a file waits for the decoded frames to catch up before the
/// encoded stream goes on regardless (keys that never meet: warned once).
const LEAD_WAIT: Duration = Duration::from_secs(5);
/// The ring never spans more than pre-roll + this (decoded frames that stopped coming, a
/// stream with one keyframe and intra refresh after it).
const RING_SLACK_NS: i64 = 10 * SECOND as i64;
/// How often retention looks at the clips' directory besides after each clip (for max-age).
const RETENTION_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Settings {
    location: String,
    stream_id: String,
    pre_roll: u64,
    post_roll: u64,
    max_duration: u64,
    trigger_lines: Vec<String>,
    trigger_zones: Vec<String>,
    trigger_labels: Vec<String>,
    trigger_confidence: f64,
    max_size_bytes: u64,
    max_age: u64,
    snapshots: bool,
}

impl Settings {
    /// The clips' directory, absolute: the event log says where a clip is, whoever reads it
    /// from where.
    fn dir(&self) -> PathBuf {
        std::path::absolute(&self.location).unwrap_or_else(|_| PathBuf::from(&self.location))
    }

    fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_size_bytes,
            max_age: Duration::from_nanos(self.max_age),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: DEFAULT_LOCATION.into(),
            stream_id: DEFAULT_STREAM.into(),
            pre_roll: DEFAULT_PRE_ROLL,
            post_roll: DEFAULT_POST_ROLL,
            max_duration: DEFAULT_MAX_DURATION,
            trigger_lines: Vec::new(),
            trigger_zones: Vec::new(),
            trigger_labels: Vec::new(),
            trigger_confidence: DEFAULT_CONFIDENCE,
            max_size_bytes: 0,
            max_age: 0,
            snapshots: true,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Counts {
    triggers: u64,
    clips: u64,
    clips_existing: u64,
    clips_missed: u64,
    write_errors: u64,
    deleted: u64,
    snapshots: u64,
    snapshot_errors: u64,
    units: u64,
    units_before_keyframe: u64,
    last_clip: String,
}

/// The clip being written.
struct Clip {
    writer: Writer,
    window: Window,
    path: PathBuf,
    /// The arrival number of the last access unit written.
    last_written: u64,
}

impl Clip {
    /// Writes the ring's access units that belong to the clip and are not written yet (those
    /// that came before a trigger extended it).
    fn catch_up(&mut self, ring: &Ring<Item>) {
        for u in ring.units_from(0) {
            if u.item.seq > self.last_written && self.window.contains(u.key_ns) {
                self.writer.push(&u.item.buffer, &u.item.caps);
                self.last_written = u.item.seq;
            }
        }
    }

    /// Whether nothing can be added any more: the decoded frames (which bring the triggers
    /// that extend it) and the encoded ones are past its end.
    fn complete(&self, st: &State) -> bool {
        let past = |k: Option<i64>| k.is_some_and(|k| !self.window.contains(k));
        (st.decoded_eos || past(st.decoded_key)) && (st.encoded_eos || past(st.ring.newest_key()))
    }
}

/// What the ring keeps of an access unit: the buffer, its caps, its arrival number (keys are
/// PTS, out of order with B-frames; what was written is tracked by arrival).
struct Item {
    buffer: gst::Buffer,
    caps: gst::Caps,
    seq: u64,
}

#[derive(Default)]
struct State {
    ring: Ring<Item>,
    /// Arrival number of the next access unit.
    next_seq: u64,
    caps: Option<gst::Caps>,
    clip: Option<Clip>,
    /// The last decoded frame's key, and the first access unit's.
    decoded_key: Option<i64>,
    first_key: Option<i64>,
    decoded_eos: bool,
    encoded_eos: bool,
    /// Whether the encoded stream is live (asked upstream at its first access unit).
    live: Option<bool>,
    /// Each input's flushing (and both when stopping).
    sink_flushing: bool,
    encoded_flushing: bool,
    /// The encoded stream ran ahead of keys the decoded frames never reached (warned once).
    lead_unbounded: bool,
    /// A clip whose file existed already (a replay, a second reader of the camera): triggers
    /// within its window make no other, and are recorded with it (the reader whose frame
    /// event is stored first may be this one).
    skipped: Option<(PathBuf, Window)>,
    /// The last decoded frame's capture time (what the `trigger` signal's clip is named after).
    decoded_name: Option<i64>,
    finishing: Vec<std::thread::JoinHandle<()>>,
    /// What goes into the event log with the next decoded frame.
    records: Vec<ClipRecord>,
    /// When retention last looked at the directory.
    retention_at: Option<std::time::Instant>,
    /// The decoded frames' format (for snapshots).
    video_info: Option<gst_video::VideoInfo>,
    /// Live tracks and their best view (snapshots).
    tracks: Book<Crop>,
    /// Snapshots not made (a frame that cannot be mapped): warned once.
    crop_warned: bool,
}

/// A track's best view: the box, in RGB.
type Crop = (gst::Buffer, gst_video::VideoInfo);

pub struct ClipRecorder {
    sinkpad: gst::Pad,
    encodedpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Wakes the encoded pad's thread when decoded frames advance, end or flush.
    advanced: Condvar,
    counts: Mutex<Counts>,
}

/// The key that joins an access unit and its decoded frame: the RTP time (RTSP, through
/// resilientsrc), else the PTS.
fn key_ns(b: &gst::BufferRef) -> Option<i64> {
    capture_time::rtp_timestamp(b)
        .map(|t| t.ns)
        .or_else(|| b.pts().map(|t| t.nseconds() as i64))
}

/// The time a clip is named after: the camera's capture time (NTP) when known, the same for
/// every reader of the camera; else the key.
fn name_ns(b: &gst::BufferRef, key: i64) -> i64 {
    capture_time::reference_timestamp(b)
        .map(|t| t.nseconds() as i64)
        .unwrap_or(key)
}

/// The record of a trigger at `key` (captured at `name_key`) for a clip spanning `window`.
fn trigger_record(
    path: &std::path::Path,
    window: &Window,
    key: i64,
    name_key: i64,
    reason: &str,
) -> ClipRecord {
    ClipRecord {
        kind: "trigger".into(),
        path: path.display().to_string(),
        first_capture_ns: Some(name_key.saturating_sub(key.saturating_sub(window.start_ns))),
        last_capture_ns: Some(name_key.saturating_add(window.end_ns.saturating_sub(key))),
        reason: reason.into(),
        ..Default::default()
    }
}

fn list(value: &glib::Value) -> Vec<String> {
    value
        .get::<Option<String>>()
        .expect("type checked upstream")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn matches(names: &[String], name: &str) -> bool {
    names.iter().any(|n| n == "*" || n == name)
}

/// What in this frame's detections triggers a clip, as the clip's trigger says it.
fn triggers(detections: &[Detection], s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for d in detections {
        for c in &d.crossings {
            if matches(&s.trigger_lines, &c.line) {
                out.push(format!("line {} {}", c.line, c.direction));
            }
        }
        for z in &d.zone_events {
            if z.event == "entry" && matches(&s.trigger_zones, &z.zone) {
                out.push(format!("zone {} entry", z.zone));
            }
        }
        if d.fresh && d.confidence >= s.trigger_confidence && matches(&s.trigger_labels, &d.label) {
            out.push(format!("label {} {:.2}", d.label, d.confidence));
        }
    }
    out
}

impl ClipRecorder {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        if let Some(key) = key_ns(&buffer) {
            // Read once, for the triggers and the snapshots.
            let detections = detection::read_detections(&buffer);
            let name_key = name_ns(&buffer, key);
            let (settings, reasons) = {
                let s = self.settings.lock().unwrap();
                let r = triggers(&detections, &s);
                (s.clone(), r)
            };
            let mut st = self.state();
            st.decoded_key = Some(key);
            st.decoded_name = Some(name_key);
            let warning = if reasons.is_empty() {
                None
            } else {
                self.trigger(&mut st, &settings, key, name_key, &reasons.join(", "))
            };
            self.finish_if_complete(&mut st);
            self.prune(&mut st, &settings);
            if settings.snapshots {
                let frame = (key, name_key);
                self.follow_tracks(&mut st, &settings, &buffer, frame, detections);
            }
            let retention_due = settings.limits().any()
                && st
                    .retention_at
                    .is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
            if retention_due {
                st.retention_at = Some(std::time::Instant::now());
            }
            let records = std::mem::take(&mut st.records);
            drop(st);
            self.advanced.notify_all();
            self.post_warning(warning);
            if retention_due {
                self.apply_retention(&settings);
            }
            if !records.is_empty() {
                let mut buffer = buffer;
                detection::add_clip_records(buffer.make_mut(), &records);
                return self.srcpad.push(buffer);
            }
        }
        self.srcpad.push(buffer)
    }

    /// Snapshots: the tracks on this frame, their best view, and the JPEGs of those that ended.
    /// `frame`: the frame's key and capture time.
    fn follow_tracks(
        &self,
        st: &mut State,
        s: &Settings,
        buffer: &gst::BufferRef,
        (key, name_key): (i64, i64),
        detections: Vec<Detection>,
    ) {
        let Some(info) = st.video_info.clone() else {
            return;
        };
        let seen: Vec<Seen> = detections
            .into_iter()
            .filter(|d| d.fresh && d.confidence.is_finite())
            .filter_map(|d| {
                Some(Seen {
                    track_id: d.track_id?,
                    label: d.label,
                    confidence: d.confidence,
                    rect: (d.x, d.y, d.w, d.h),
                })
            })
            .collect();
        let mut crop_error = None;
        let (new, ended) = st.tracks.frame(
            key,
            &seen,
            // Only for a track seen for the first time.
            |t| {
                s.dir().join(format!(
                    "{}-{name_key}-track{}.jpg",
                    s.stream_id, t.track_id
                ))
            },
            |t| match snapshot::crop(buffer, &info, t.rect) {
                Ok(c) => Some(c),
                Err(e) => {
                    crop_error = Some(e);
                    None
                }
            },
        );
        if let Some(e) = crop_error
            && !std::mem::replace(&mut st.crop_warned, true)
        {
            gst::warning!(CAT, imp = self, "no snapshot of a track: {e}");
        }
        for (t, path) in new {
            st.records.push(ClipRecord {
                kind: "snapshot".into(),
                path: path.display().to_string(),
                reason: t.label,
                track_id: Some(t.track_id),
                ..Default::default()
            });
        }
        self.write_snapshots(st, ended);
    }

    /// Writes the snapshots of the tracks that ended, on a thread of their own (JPEG encoding
    /// takes a few ms).
    fn write_snapshots(&self, st: &mut State, ended: Vec<Live<Crop>>) {
        let mut with_view = Vec::new();
        for l in ended {
            match l.best {
                Some(b) => with_view.push((l.track_id, l.path, b.crop)),
                // Its path is in the log already: say why there is no file.
                None => {
                    self.counts.lock().unwrap().snapshot_errors += 1;
                    st.records.push(ClipRecord {
                        kind: "failed".into(),
                        path: l.path.display().to_string(),
                        reason: "no view of the track could be cropped (frames not in system \
                                 memory?)"
                            .into(),
                        track_id: Some(l.track_id),
                        ..Default::default()
                    });
                }
            }
        }
        let ended = with_view;
        if ended.is_empty() {
            return;
        }
        let weak = self.obj().downgrade();
        let handle = std::thread::Builder::new()
            .name("cliprecorder-snapshot".into())
            .spawn(move || {
                for (track_id, path, (crop, info)) in ended {
                    let result = snapshot::write_jpeg(&crop, &info, &path);
                    let Some(obj) = weak.upgrade() else {
                        return;
                    };
                    let imp = obj.imp();
                    match result {
                        Ok(true) => {
                            gst::debug!(CAT, obj = obj, "snapshot {}", path.display());
                            imp.counts.lock().unwrap().snapshots += 1;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            imp.counts.lock().unwrap().snapshot_errors += 1;
                            imp.state().records.push(ClipRecord {
                                kind: "failed".into(),
                                path: path.display().to_string(),
                                reason: e.clone(),
                                track_id: Some(track_id),
                                ..Default::default()
                            });
                            gst::element_warning!(
                                obj,
                                gst::ResourceError::Write,
                                ["snapshot {} not written: {e}", path.display()]
                            );
                        }
                    }
                }
            });
        self.keep_thread(st, handle);
    }

    /// Deletes this stream's oldest clips beyond max-size-bytes and max-age; each deletion
    /// goes into the event log with the next frame.
    fn apply_retention(&self, s: &Settings) {
        let dir = s.dir();
        let now = std::time::SystemTime::now();
        let files = match retention::scan(&dir, &s.stream_id, now) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "retention cannot read {}: {e}",
                    dir.display()
                );
                return;
            }
        };
        let mut records = Vec::new();
        for (file, limit) in retention::plan(files, s.limits(), now) {
            match std::fs::remove_file(&file.path) {
                Ok(()) => {
                    gst::info!(CAT, imp = self, "{} deleted ({limit})", file.path.display());
                    // A leftover .partial is its clip's; a snapshot is its track's.
                    let (path, track_id) = match file.kind {
                        Kind::Partial => (file.path.with_extension(""), None),
                        Kind::Snapshot(id) => (file.path.clone(), Some(id)),
                        Kind::Clip => (file.path.clone(), None),
                    };
                    records.push(ClipRecord {
                        kind: "deleted".into(),
                        path: path.display().to_string(),
                        reason: format!("retention {limit}"),
                        track_id,
                        ..Default::default()
                    });
                }
                // Deleted meanwhile by another reader of the camera: its record says so.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => gst::warning!(
                    CAT,
                    imp = self,
                    "retention cannot delete {}: {e}",
                    file.path.display()
                ),
            }
        }
        if !records.is_empty() {
            self.counts.lock().unwrap().deleted += records.len() as u64;
            self.state().records.extend(records);
        }
    }

    /// Drops what no clip can need any more: older than the pre-roll before the decoded
    /// frames (or the newest access unit, if it is behind them), and in any case older than
    /// pre-roll + 10 s before the newest access unit.
    fn prune(&self, st: &mut State, s: &Settings) {
        let Some(newest) = st.ring.newest_key() else {
            return;
        };
        let at = st.decoded_key.map_or(newest, |d| d.min(newest));
        let pre_roll = s.pre_roll as i64;
        st.ring.prune(at.saturating_sub(pre_roll));
        st.ring
            .trim(newest.saturating_sub(pre_roll.saturating_add(RING_SLACK_NS)));
    }

    fn post_warning(&self, warning: Option<String>) {
        if let Some(w) = warning {
            gst::element_imp_warning!(self, gst::ResourceError::OpenWrite, ["{w}"]);
        }
    }

    /// A trigger at `key`: extends the clip being written, or starts one. A clip that cannot
    /// be written gives the warning to post (once the state lock is released).
    fn trigger(
        &self,
        st: &mut State,
        s: &Settings,
        key: i64,
        name_key: i64,
        reason: &str,
    ) -> Option<String> {
        self.counts.lock().unwrap().triggers += 1;
        gst::debug!(CAT, imp = self, "trigger at {key}: {reason}");
        let State {
            clip,
            ring,
            records,
            ..
        } = st;
        if let Some(clip) = clip.as_mut() {
            if clip.window.extend(key, s.post_roll as i64) {
                clip.catch_up(ring);
                records.push(trigger_record(
                    &clip.path,
                    &clip.window,
                    key,
                    name_key,
                    reason,
                ));
                return None;
            }
            // After its end (or at its longest): finished with what has arrived.
            self.finish_clip(st);
        }
        if let Some((path, window)) = st.skipped.as_mut() {
            if window.extend(key, s.post_roll as i64) {
                let r = trigger_record(path, window, key, name_key, reason);
                st.records.push(r);
                return None;
            }
            st.skipped = None;
        }
        let start = st.ring.start_for(key.saturating_sub(s.pre_roll as i64));
        let (Some(start), Some(caps)) = (start, st.caps.clone()) else {
            self.counts.lock().unwrap().clips_missed += 1;
            gst::warning!(
                CAT,
                imp = self,
                "trigger ({reason}) but no keyframe of the encoded stream yet: no clip (is the \
                 'encoded' pad linked to resilientsrc's encoded output?)"
            );
            return None;
        };
        let start_key = st
            .ring
            .units_from(start)
            .next()
            .expect("start_for gives an index in the ring")
            .key_ns;
        let name = format!("{}-{name_key}.mp4", s.stream_id);
        let dir = s.dir();
        let path = dir.join(&name);
        let partial = PathBuf::from(format!("{}.partial", path.display()));
        let claimed = std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot make the clip directory {}: {e}", dir.display()))
            .and_then(|_| {
                if path.exists() {
                    return Ok(false);
                }
                // Claimed by creating the .partial file: another reader of the camera writing
                // the same clip now has it.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&partial)
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(format!("cannot create {}: {e}", partial.display())),
                }
            });
        let writer = match claimed {
            Ok(false) => {
                // Written (or being written) by an earlier run or another reader.
                self.counts.lock().unwrap().clips_existing += 1;
                gst::info!(CAT, imp = self, "{} exists: no second clip", path.display());
                let window = Window::new(start_key, key, s.post_roll as i64, s.max_duration as i64);
                st.records
                    .push(trigger_record(&path, &window, key, name_key, reason));
                st.skipped = Some((path, window));
                return None;
            }
            Ok(true) => Writer::start(&path, &caps),
            Err(e) => Err(e),
        };
        let mut writer = match writer {
            Ok(w) => w,
            Err(e) => {
                self.counts.lock().unwrap().write_errors += 1;
                return Some(format!("clip for {reason} not written: {e}"));
            }
        };
        let window = Window::new(start_key, key, s.post_roll as i64, s.max_duration as i64);
        let mut last_written = 0;
        for u in st.ring.units_from(start) {
            if window.contains(u.key_ns) {
                writer.push(&u.item.buffer, &u.item.caps);
                last_written = u.item.seq;
            }
        }
        {
            let mut c = self.counts.lock().unwrap();
            c.clips += 1;
            c.last_clip = path.display().to_string();
        }
        gst::info!(CAT, imp = self, "clip {} for {reason}", path.display());
        st.records
            .push(trigger_record(&path, &window, key, name_key, reason));
        st.clip = Some(Clip {
            writer,
            window,
            path,
            last_written,
        });
        None
    }

    /// Finishes the clip being written once nothing can be added to it any more.
    fn finish_if_complete(&self, st: &mut State) {
        let done = st.clip.as_ref().is_some_and(|c| c.complete(st));
        if done {
            self.finish_clip(st);
        }
    }

    /// Finishes the clip being written, on a thread of its own (the file is closed by its
    /// pipeline).
    fn finish_clip(&self, st: &mut State) {
        let Some(clip) = st.clip.take() else {
            return;
        };
        let weak = self.obj().downgrade();
        let path = clip.path;
        let writer = clip.writer;
        let handle = std::thread::Builder::new()
            .name("cliprecorder-finish".into())
            .spawn(move || {
                let result = writer.finish();
                let Some(obj) = weak.upgrade() else {
                    return;
                };
                let imp = obj.imp();
                match result {
                    Ok(path) => {
                        gst::info!(CAT, obj = obj, "clip {} written", path.display());
                        let settings = imp.settings.lock().unwrap().clone();
                        if settings.limits().any() {
                            imp.apply_retention(&settings);
                        }
                    }
                    Err(e) => {
                        imp.counts.lock().unwrap().write_errors += 1;
                        imp.state().records.push(ClipRecord {
                            kind: "failed".into(),
                            path: path.display().to_string(),
                            first_capture_ns: None,
                            last_capture_ns: None,
                            reason: e.clone(),
                            ..Default::default()
                        });
                        gst::element_warning!(
                            obj,
                            gst::ResourceError::Write,
                            ["clip {} not written whole: {e}", path.display()]
                        );
                    }
                }
            });
        self.keep_thread(st, handle);
    }

    /// Keeps a clip's or snapshots' thread, to be joined at EOS and stop.
    fn keep_thread(&self, st: &mut State, handle: std::io::Result<std::thread::JoinHandle<()>>) {
        st.finishing.retain(|h| !h.is_finished());
        match handle {
            Ok(h) => st.finishing.push(h),
            Err(e) => gst::error!(CAT, imp = self, "cannot start a thread: {e}"),
        }
    }

    /// Waits for the clips being finished (each bounded by the writer's own timeout).
    fn join_finishing(&self) {
        let handles = std::mem::take(&mut self.state().finishing);
        for h in handles {
            let _ = h.join();
        }
    }

    fn encoded_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(key) = key_ns(&buffer) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        if self.state().live.is_none() {
            let mut q = gst::query::Latency::new();
            let live = self.encodedpad.peer_query(&mut q) && q.result().0;
            self.state().live = Some(live);
        }
        let settings = self.settings.lock().unwrap().clone();
        let mut st = self.state();
        // A new connection (resilientsrc marks it DISCONT; an RTSP camera's RTP times start
        // anew): what came before is another timeline.
        if buffer.flags().contains(gst::BufferFlags::DISCONT) && !st.ring.is_empty() {
            self.finish_clip(&mut st);
            st.ring.clear();
            st.first_key = None;
        }
        st.first_key.get_or_insert(key);
        // A file's access units wait for its decoded frames: the ring then holds only what a
        // trigger can still need. Bounded: keys the decoded frames never reach (another
        // timeline) must not stop the source.
        let waited = std::time::Instant::now();
        while st.live == Some(false)
            && !st.encoded_flushing
            && !st.decoded_eos
            && !st.lead_unbounded
        {
            let reference = st.decoded_key.or(st.first_key).unwrap_or(key);
            if key <= reference.saturating_add(MAX_LEAD_NS) {
                break;
            }
            if waited.elapsed() > LEAD_WAIT {
                st.lead_unbounded = true;
                gst::warning!(
                    CAT,
                    imp = self,
                    "the encoded stream is more than {} s ahead of the decoded frames and they                      have not caught up in {} s: no longer waiting for them (do both inputs come                      from the same source?)",
                    MAX_LEAD_NS / SECOND as i64,
                    LEAD_WAIT.as_secs()
                );
                break;
            }
            st = self
                .advanced
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap()
                .0;
        }
        if st.encoded_flushing {
            return Err(gst::FlowError::Flushing);
        }
        let Some(caps) = st.caps.clone() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let seq = st.next_seq;
        st.next_seq += 1;
        let kept = st.ring.push(Unit {
            key_ns: key,
            keyframe,
            bytes: buffer.size(),
            item: Item {
                buffer: buffer.clone(),
                caps: caps.clone(),
                seq,
            },
        });
        {
            let mut c = self.counts.lock().unwrap();
            c.units += 1;
            if !kept {
                c.units_before_keyframe += 1;
            }
        }
        let failed = match st.clip.as_mut() {
            Some(clip) => {
                if kept && clip.window.contains(key) && seq > clip.last_written {
                    clip.writer.push(&buffer, &caps);
                    clip.last_written = seq;
                }
                // A full disk: the clip ends here (what is written plays), the pipeline goes
                // on; finishing it says why.
                clip.writer.failed().is_some()
            }
            None => false,
        };
        if failed {
            self.finish_clip(&mut st);
        }
        self.finish_if_complete(&mut st);
        self.prune(&mut st, &settings);
        Ok(gst::FlowSuccess::Ok)
    }

    fn encoded_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Caps(c) => self.state().caps = Some(c.caps_owned()),
            gst::EventView::Eos(_) => {
                // No more access units; the clip being written is finished once no trigger
                // can extend it (the decoded frames past its end, or ended).
                let mut st = self.state();
                st.encoded_eos = true;
                self.finish_if_complete(&mut st);
                drop(st);
                self.advanced.notify_all();
            }
            gst::EventView::FlushStart(_) => {
                self.state().encoded_flushing = true;
                self.advanced.notify_all();
            }
            gst::EventView::FlushStop(_) => {
                let mut st = self.state();
                st.encoded_flushing = false;
                self.finish_clip(&mut st);
                st.ring.clear();
                st.first_key = None;
                st.encoded_eos = false;
            }
            _ => {}
        }
        // The encoded stream ends here: nothing of it goes downstream.
        true
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Eos(_) => {
                // The clip being written gets its post-roll: the encoded stream ends too
                // (bounded), then the file is finished before EOS goes on.
                let mut st = self.state();
                st.decoded_eos = true;
                self.finish_if_complete(&mut st);
                self.advanced.notify_all();
                let deadline = std::time::Instant::now() + EOS_WAIT;
                while st.clip.is_some() && !st.encoded_eos && !st.sink_flushing {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "the encoded stream did not end within {} s of the decoded one: the \
                             clip ends here",
                            EOS_WAIT.as_secs()
                        );
                        break;
                    }
                    st = self
                        .advanced
                        .wait_timeout(st, left.min(Duration::from_millis(100)))
                        .unwrap()
                        .0;
                }
                self.finish_clip(&mut st);
                let live = st.tracks.drain();
                self.write_snapshots(&mut st, live);
                drop(st);
                self.join_finishing();
                // What happened after the last frame has no frame to go into the log with.
                let left = std::mem::take(&mut self.state().records);
                if !left.is_empty() {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "{} clip records after the last frame are not in the event log: {:?}",
                        left.len(),
                        left.iter()
                            .map(|r| format!("{} {} ({})", r.kind, r.path, r.reason))
                            .collect::<Vec<_>>()
                    );
                }
            }
            gst::EventView::FlushStart(_) => {
                self.state().sink_flushing = true;
                self.advanced.notify_all();
            }
            gst::EventView::Caps(c) => {
                self.state().video_info = gst_video::VideoInfo::from_caps(c.caps()).ok();
            }
            gst::EventView::FlushStop(_) => {
                let mut st = self.state();
                st.sink_flushing = false;
                st.decoded_eos = false;
                st.decoded_key = None;
            }
            _ => {}
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn stats(&self) -> gst::Structure {
        let c = self.counts.lock().unwrap().clone();
        let st = self.state();
        let span = match (st.ring.units_from(0).next(), st.ring.newest_key()) {
            (Some(first), Some(newest)) => (newest - first.key_ns).max(0) as u64,
            _ => 0,
        };
        gst::Structure::builder("cliprecorder-stats")
            .field("triggers", c.triggers)
            .field("clips", c.clips)
            .field("clips-existing", c.clips_existing)
            .field("clips-missed", c.clips_missed)
            .field("write-errors", c.write_errors)
            .field("deleted", c.deleted)
            .field("snapshots", c.snapshots)
            .field("snapshot-errors", c.snapshot_errors)
            .field("access-units", c.units)
            .field("before-keyframe", c.units_before_keyframe)
            .field("ring-units", st.ring.len() as u64)
            .field("ring-bytes", st.ring.bytes() as u64)
            .field("ring-ns", span)
            .field("recording", st.clip.is_some())
            .field("last-clip", c.last_clip)
            .build()
    }

    /// The application's trigger (`trigger` action signal): at the last decoded frame.
    fn trigger_now(&self, reason: &str) {
        let settings = self.settings.lock().unwrap().clone();
        let mut st = self.state();
        let Some(key) = st.decoded_key else {
            self.counts.lock().unwrap().clips_missed += 1;
            gst::warning!(
                CAT,
                imp = self,
                "trigger ({reason}) before any frame: no clip"
            );
            return;
        };
        let name_key = st.decoded_name.unwrap_or(key);
        let warning = self.trigger(
            &mut st,
            &settings,
            key,
            name_key,
            &format!("signal {reason}"),
        );
        drop(st);
        self.post_warning(warning);
    }
}

#[glib::object_subclass]
impl ObjectSubclass for ClipRecorder {
    const NAME: &'static str = "GstClipRecorder";
    type Type = super::ClipRecorder;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|_pad, parent, buffer| {
                ClipRecorder::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                ClipRecorder::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            // Caps, allocation, seeks and QoS go between sink and src only, never to the
            // encoded input.
            .iterate_internal_links_function(|_pad, parent| {
                ClipRecorder::catch_panic_pad_function(
                    parent,
                    || gst::Iterator::from_vec(vec![]),
                    |imp| gst::Iterator::from_vec(vec![imp.srcpad.clone()]),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        let encodedpad = gst::Pad::builder_from_template(&klass.pad_template("encoded").unwrap())
            .chain_function(|_pad, parent, buffer| {
                ClipRecorder::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.encoded_chain(buffer),
                )
            })
            .event_function(|_pad, parent, event| {
                ClipRecorder::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.encoded_event(event),
                )
            })
            .iterate_internal_links_function(|_pad, _parent| gst::Iterator::from_vec(vec![]))
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .iterate_internal_links_function(|_pad, parent| {
                ClipRecorder::catch_panic_pad_function(
                    parent,
                    || gst::Iterator::from_vec(vec![]),
                    |imp| gst::Iterator::from_vec(vec![imp.sinkpad.clone()]),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        ClipRecorder {
            sinkpad,
            encodedpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            advanced: Condvar::new(),
            counts: Mutex::new(Counts::default()),
        }
    }
}

impl ObjectImpl for ClipRecorder {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.encodedpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb(
                        "Directory the clips and snapshots are written to (made if missing), one \
                         file per clip named STREAM-TIME.mp4 (TIME: the triggering frame's capture \
                         time in ns, the same for every reader of the camera; a file that exists \
                         already is not written again). Each clip's absolute path goes into the \
                         event log with the triggering frame (videoai-events clips). Default: clips",
                    )
                    .default_value(Some(DEFAULT_LOCATION))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-id")
                    .nick("Stream id")
                    .blurb("The camera's name, first in each clip's file name. Default: stream")
                    .default_value(Some(DEFAULT_STREAM))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("pre-roll")
                    .nick("Pre-roll")
                    .blurb(
                        "Time before the trigger a clip shows, in ns: it starts at the last \
                         keyframe at or before it, so up to one GOP more. The ring of encoded \
                         access units holds about this much. Default: 5000000000 (5 s)",
                    )
                    .default_value(DEFAULT_PRE_ROLL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("post-roll")
                    .nick("Post-roll")
                    .blurb(
                        "Time after the last trigger a clip goes on, in ns; a trigger within a \
                         clip extends it. Default: 5000000000 (5 s)",
                    )
                    .default_value(DEFAULT_POST_ROLL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-duration")
                    .nick("Maximum duration")
                    .blurb(
                        "Longest a clip lasts, in ns, however many triggers extend it. \
                         Default: 60000000000 (60 s)",
                    )
                    .minimum(SECOND)
                    .default_value(DEFAULT_MAX_DURATION)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("trigger-lines")
                    .nick("Trigger lines")
                    .blurb(
                        "objecttracker lines whose crossings (either direction) start a clip, \
                         comma-separated; * for every line. Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("trigger-zones")
                    .nick("Trigger zones")
                    .blurb(
                        "objecttracker zones whose entries start a clip, comma-separated; * for \
                         every zone. Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("trigger-labels")
                    .nick("Trigger labels")
                    .blurb(
                        "Labels whose fresh detections at trigger-confidence or above start a \
                         clip, comma-separated; * for any. Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("trigger-confidence")
                    .nick("Trigger confidence")
                    .blurb("Lowest confidence of a detection in trigger-labels. Default: 0.5")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_CONFIDENCE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-size-bytes")
                    .nick("Maximum size")
                    .blurb(
                        "Most bytes this stream's files in location may take (its clips, \
                         snapshots, and .partial clips left by a writer that died, once not \
                         written for a minute): the oldest are deleted first, and each deletion \
                         is stored in the event log with the next frame (clips kind 'deleted'). \
                         The newest file is always kept. 0: no limit. Default: 0",
                    )
                    .default_value(0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-age")
                    .nick("Maximum age")
                    .blurb(
                        "This stream's files (clips, snapshots, leftover .partial clips) older \
                         than this (ns, since written) are deleted, looked at after each clip and \
                         every 5 s; each deletion is stored in the event log. The newest file is \
                         always kept. 0: no limit. Default: 0",
                    )
                    .default_value(0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("snapshots")
                    .nick("Snapshots")
                    .blurb(
                        "For each confirmed objecttracker track, one JPEG of its most confident \
                         fresh detection (the box only), written once when the track has not \
                         been seen for 5 s, or when the stream ends, as \
                         location/STREAM-TIME-trackID.jpg (TIME: the frame it was confirmed on). \
                         Its path goes into the event log with that frame (videoai-events tracks \
                         shows it). Default: true",
                    )
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only 'cliprecorder-stats': triggers, clips, clips-existing (not \
                         written again), clips-missed (a trigger before the first keyframe), \
                         write-errors (a full disk, a directory that cannot be made), deleted \
                         (by retention), snapshots (written), snapshot-errors, access-units, before-keyframe, ring-units, ring-bytes, ring-ns, \
                         recording, last-clip",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                // g_signal_emit_by_name (rec, "trigger", "doorbell"): a clip around the last
                // frame, like a line crossing would.
                glib::subclass::Signal::builder("trigger")
                    .param_types([String::static_type()])
                    .action()
                    .class_handler(|args| {
                        let obj = args[0].get::<super::ClipRecorder>().expect("signal arg");
                        let reason = args[1].get::<String>().unwrap_or_default();
                        obj.imp().trigger_now(&reason);
                        None
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "location" => {
                s.location = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| DEFAULT_LOCATION.into())
            }
            "stream-id" => {
                s.stream_id = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| DEFAULT_STREAM.into())
            }
            "pre-roll" => s.pre_roll = value.get().expect("type checked upstream"),
            "post-roll" => s.post_roll = value.get().expect("type checked upstream"),
            "max-duration" => s.max_duration = value.get().expect("type checked upstream"),
            "trigger-lines" => s.trigger_lines = list(value),
            "trigger-zones" => s.trigger_zones = list(value),
            "trigger-labels" => s.trigger_labels = list(value),
            "trigger-confidence" => {
                s.trigger_confidence = value.get().expect("type checked upstream")
            }
            "max-size-bytes" => s.max_size_bytes = value.get().expect("type checked upstream"),
            "max-age" => s.max_age = value.get().expect("type checked upstream"),
            "snapshots" => s.snapshots = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats().to_value();
        }
        let s = self.settings.lock().unwrap();
        let joined = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
        match pspec.name() {
            "location" => s.location.to_value(),
            "stream-id" => s.stream_id.to_value(),
            "pre-roll" => s.pre_roll.to_value(),
            "post-roll" => s.post_roll.to_value(),
            "max-duration" => s.max_duration.to_value(),
            "trigger-lines" => joined(&s.trigger_lines).to_value(),
            "trigger-zones" => joined(&s.trigger_zones).to_value(),
            "trigger-labels" => joined(&s.trigger_labels).to_value(),
            "trigger-confidence" => s.trigger_confidence.to_value(),
            "max-size-bytes" => s.max_size_bytes.to_value(),
            "max-age" => s.max_age.to_value(),
            "snapshots" => s.snapshots.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for ClipRecorder {}

impl ElementImpl for ClipRecorder {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Event clip recorder",
                "Filter/Video",
                "Keeps a ring of the camera's encoded access units (link 'encoded' to \
                 resilientsrc encoded=true) and, when a line is crossed, a zone entered, a \
                 chosen label detected or the 'trigger' signal emitted, writes a fragmented MP4 \
                 clip with pre-roll and post-roll, without re-encoding; and a JPEG snapshot of \
                 each track. Decoded frames pass from sink to src, with a videoai-clips meta \
                 on those a clip was started, extended, deleted or failed on (raftsink stores \
                 it with their events)",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let raw = gst::Caps::builder("video/x-raw").any_features().build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &raw,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &raw,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "encoded",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::builder_full()
                        .structure(
                            gst::Structure::builder("video/x-h264")
                                .field("alignment", "au")
                                .build(),
                        )
                        .structure(
                            gst::Structure::builder("video/x-h265")
                                .field("alignment", "au")
                                .build(),
                        )
                        .structure(gst::Structure::new_empty("image/jpeg"))
                        .build(),
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        match transition {
            gst::StateChange::ReadyToPaused => {
                *self.state() = State::default();
                *self.counts.lock().unwrap() = Counts::default();
            }
            gst::StateChange::PausedToReady => {
                // Unblock the streaming threads before the pads are deactivated.
                let mut st = self.state();
                st.sink_flushing = true;
                st.encoded_flushing = true;
                drop(st);
                self.advanced.notify_all();
            }
            _ => {}
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            let mut st = self.state();
            self.finish_clip(&mut st);
            let live = st.tracks.drain();
            self.write_snapshots(&mut st, live);
            drop(st);
            self.join_finishing();
            let mut st = self.state();
            st.ring.clear();
        }
        Ok(res)
    }
}
