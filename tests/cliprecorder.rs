// SPDX-License-Identifier: MPL-2.0
//! cliprecorder: a line crossing in the still-camera scene (a real photo, a motorbike crossing)
//! becomes one clip, read back by GStreamer's discoverer and decoded frame by frame; triggers
//! that overlap make one clip; a replay makes no second one. Each clip is in the event log
//! (raftsink) with the frame that triggered it, read back by `videoai-events clips`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::still_scene;
use gst::prelude::*;
use gst_video::prelude::*;

const S: u64 = 1_000_000_000;
/// The scene clip: 200 frames at 15 fps, a keyframe every 2 s; the motorbike crosses the
/// middle line once.
const FRAMES: usize = 200;
const GOP_NS: u64 = 2 * S;
const FRAME_NS: u64 = S / 15;

fn scene_clip(dir: &common::TempDir) -> PathBuf {
    let path = dir.join("scene.mp4");
    still_scene::write_clip(&path, FRAMES);
    path
}

/// The detector, the tracker and the recorder on `uri` through resilientsrc's two outputs,
/// into the event log of `clips` ([`log_of`]).
fn pipeline(uri: &str, clips: &Path, recorder: &str) -> String {
    pipeline_with(uri, clips, "", recorder)
}

/// [`pipeline`] with more objecttracker properties (`tracker`).
fn pipeline_with(uri: &str, clips: &Path, tracker: &str, recorder: &str) -> String {
    format!(
        "resilientsrc name=cam uri=\"{uri}\" encoded=true \
         cam.src ! videoconvert ! onnxinfer model-location=\"{}\" labels-location=\"{}\" \
         model-type=yolov5 iou-threshold=0.2 ! objecttracker lines=\"{}\" {tracker} \
         ! cliprecorder name=rec location=\"{}\" stream-id=cam {recorder} \
         ! raftsink location=\"{}\" stream-id=cam \
         cam.encoded ! queue ! rec.encoded",
        common::coco_model().display(),
        common::coco_labels().display(),
        still_scene::LINES,
        clips.display(),
        log_of(clips).display()
    )
}

/// [`pipeline`] on the file `clip`; the recorder's stats.
fn record(clip: &Path, clips: &Path, recorder: &str) -> gst::Structure {
    record_with(clip, clips, recorder).0
}

/// [`record`], and what the pipeline said (it ends with EOS and no error).
fn record_with(clip: &Path, clips: &Path, recorder: &str) -> (gst::Structure, common::Outcome) {
    let uri = glib::filename_to_uri(clip, None).unwrap();
    run_recorder(&common::parse(&pipeline(&uri, clips, recorder)))
}

/// The event log of the clips in `clips` (beside it).
fn log_of(clips: &Path) -> PathBuf {
    clips.with_extension("db")
}

/// `videoai-events clips` of the log of `clips`.
fn clips_in_log(clips: &Path) -> Vec<serde_json::Value> {
    events_json("clips", clips)
}

/// The files in `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every frame of an MP4, decoded (I420 bytes), and whether the first access unit was a
/// keyframe.
fn decode(path: &Path) -> (Vec<Vec<u8>>, bool) {
    let (frames, keyframe) = decode_timed(path);
    (frames.into_iter().map(|f| f.1).collect(), keyframe)
}

/// [`decode`], each frame with its PTS in the file.
fn decode_timed(path: &Path) -> (Vec<(u64, Vec<u8>)>, bool) {
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse name=parse ! avdec_h264 \
         ! video/x-raw,format=I420 ! fakesink name=out sync=false",
        path.display()
    ));
    let frames = Arc::new(Mutex::new(Vec::new()));
    let f = frames.clone();
    p.by_name("out")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                f.lock().unwrap().push((
                    b.pts().map_or(0, |t| t.nseconds()),
                    b.map_readable().unwrap().to_vec(),
                ));
            }
            gst::PadProbeReturn::Ok
        });
    let first_key = Arc::new(Mutex::new(None));
    let k = first_key.clone();
    p.by_name("parse")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                k.lock()
                    .unwrap()
                    .get_or_insert(!b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            }
            gst::PadProbeReturn::Ok
        });
    let o = common::run(&p, Duration::from_secs(60));
    assert!(o.eos && o.errors.is_empty(), "{}: {o:?}", path.display());
    let frames = std::mem::take(&mut *frames.lock().unwrap());
    let keyframe = first_key.lock().unwrap().unwrap_or(false);
    (frames, keyframe)
}

/// The duration GStreamer's discoverer gives the file.
fn discovered_duration(path: &Path) -> u64 {
    let discoverer = gst_pbutils::Discoverer::new(gst::ClockTime::from_seconds(30)).unwrap();
    let info = discoverer
        .discover_uri(&glib::filename_to_uri(path, None).unwrap())
        .unwrap_or_else(|e| panic!("{}: not playable: {e}", path.display()));
    assert!(
        !info.video_streams().is_empty(),
        "{}: no video",
        path.display()
    );
    info.duration().expect("a duration").nseconds()
}

#[test]
fn a_line_crossing_becomes_one_clip_of_the_cameras_own_frames_and_a_replay_makes_none() {
    common::init();
    let dir = common::TempDir::new("clip-crossing");
    let clip = scene_clip(&dir);
    let clips = dir.join("clips");
    let (pre, post) = (3 * S, 2 * S);
    let recorder = format!("pre-roll={pre} post-roll={post} trigger-lines=middle");
    let stats = record(&clip, &clips, &recorder);
    assert_eq!(stats.get::<u64>("clips"), Ok(1), "{stats}");
    assert_eq!(stats.get::<u64>("triggers"), Ok(1), "{stats}");
    assert_eq!(stats.get::<u64>("write-errors"), Ok(0), "{stats}");
    let written = clip_files(&clips).0;
    assert_eq!(written.len(), 1, "{written:?}");
    let path = &written[0];
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("cam-") && name.ends_with(".mp4"), "{name}");

    // Playable, pre-roll + post-roll long, give or take the GOP the pre-roll starts in.
    let d = discovered_duration(path);
    eprintln!("{name}: {d} ns");
    assert!(
        (pre + post - FRAME_NS..pre + post + GOP_NS + FRAME_NS).contains(&d),
        "clip of {d} ns for {} + {} ns",
        pre,
        post
    );
    // It starts with a keyframe, and its frames are the camera's own, byte for byte: the
    // same frames as decoding the camera's file, from the clip's first frame on.
    let (frames, keyframe) = decode(path);
    assert!(keyframe, "the clip starts with a delta unit");
    let (source, _) = decode(&clip);
    let at = source
        .iter()
        .position(|f| *f == frames[0])
        .expect("the clip's first frame is one of the camera's");
    assert!(
        source.len() >= at + frames.len(),
        "{} frames from {at}",
        frames.len()
    );
    for (i, f) in frames.iter().enumerate() {
        assert!(
            *f == source[at + i],
            "clip frame {i} differs from camera frame {}",
            at + i
        );
    }
    assert_eq!(
        at % 30,
        0,
        "the clip starts at a keyframe of the camera (every 30 frames)"
    );
    // The event log has it, with the crossing's frame: its path, its span, its trigger.
    let logged = clips_in_log(&clips);
    assert_eq!(logged.len(), 1, "{logged:?}");
    let c = &logged[0];
    assert_eq!(c["path"], path.to_str().unwrap(), "{c}");
    assert_eq!(c["file"], "complete", "{c}");
    assert_eq!(c["stream"], "cam", "{c}");
    let triggers = c["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1, "{c}");
    assert!(
        triggers[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("line middle "),
        "{c}"
    );
    // Where: from the keyframe before trigger − pre-roll to trigger + post-roll (the name has
    // the trigger's time: a file's PTS).
    let trigger: u64 = name["cam-".len()..name.len() - ".mp4".len()]
        .parse()
        .unwrap();
    let first = at as u64 * FRAME_NS;
    let last = (at + frames.len() - 1) as u64 * FRAME_NS;
    assert!(
        first <= trigger - pre + FRAME_NS && first + GOP_NS > trigger - pre,
        "clip from {first} ns for a trigger at {trigger} ns"
    );
    assert!(
        last + 2 * FRAME_NS >= trigger + post,
        "clip to {last} ns for a trigger at {trigger} ns"
    );
    // The log's span is the clip's: from its first frame to the trigger + post-roll.
    let logged_first = c["first_capture_ns"].as_i64().unwrap() as u64;
    assert!(
        logged_first.abs_diff(first) < S / 1000,
        "{c}: first frame at {first} ns"
    );
    assert_eq!(
        c["last_capture_ns"].as_i64().unwrap() as u64,
        trigger + post,
        "{c}"
    );

    // The same file again (a replay): no second clip, and the first is untouched.
    let before = std::fs::read(path).unwrap();
    let stats = record(&clip, &clips, &recorder);
    assert_eq!(stats.get::<u64>("clips"), Ok(0), "{stats}");
    assert_eq!(stats.get::<u64>("clips-existing"), Ok(1), "{stats}");
    assert_eq!(clip_files(&clips).0, written);
    assert!(std::fs::read(path).unwrap() == before);
    // And the log still has it once.
    let again = clips_in_log(&clips);
    assert_eq!(again, logged);
}

#[test]
fn triggers_that_overlap_make_one_clip_up_to_its_longest() {
    common::init();
    let dir = common::TempDir::new("clip-overlap");
    let clip = scene_clip(&dir);
    // The motorbike is detected on some 80 frames: a trigger on every one of them.
    let clips = dir.join("long");
    let stats = record(
        &clip,
        &clips,
        "pre-roll=1000000000 post-roll=1000000000 trigger-labels=motorbike",
    );
    let triggers = stats.get::<u64>("triggers").unwrap();
    assert!(triggers >= 40, "{stats}");
    assert_eq!(stats.get::<u64>("clips"), Ok(1), "{stats}");
    assert_eq!(stats.get::<u64>("write-errors"), Ok(0), "{stats}");
    let written = clip_files(&clips).0;
    assert_eq!(written.len(), 1, "{written:?}");
    let long = discovered_duration(&written[0]);
    eprintln!("one clip for {triggers} triggers: {long} ns");
    // One clip in the log, with every trigger that extended it.
    let logged = clips_in_log(&clips);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        logged[0]["triggers"].as_array().unwrap().len() as u64,
        triggers,
        "{}",
        logged[0]
    );
    // The motorbike is seen from about 6.7 s to 12 s: a clip from the keyframe at 4 s to the
    // end of the file (13.3 s).
    assert!(long >= 7 * S, "{long} ns for triggers over more than 5 s");

    // max-duration cuts it: the triggers after the cut start the next clip.
    let clips = dir.join("capped");
    let stats = record(
        &clip,
        &clips,
        "pre-roll=1000000000 post-roll=1000000000 max-duration=3000000000 trigger-labels=motorbike",
    );
    let written = clip_files(&clips).0;
    // About 6 s of triggers in clips of at most 3 s: a few clips, not one per trigger.
    let n = stats.get::<u64>("clips").unwrap();
    assert!((2..=4).contains(&n), "{stats}");
    assert_eq!(written.len() as u64, n);
    assert_eq!(stats.get::<u64>("write-errors"), Ok(0), "{stats}");
    for f in &written {
        assert_eq!(
            f.extension().and_then(|e| e.to_str()),
            Some("mp4"),
            "{}",
            f.display()
        );
        let d = discovered_duration(f);
        assert!(d <= 3 * S + FRAME_NS, "{}: {d} ns", f.display());
    }
    assert_eq!(clips_in_log(&clips).len() as u64, n);
}

#[test]
fn retention_deletes_the_oldest_clips_first_and_the_log_says_so() {
    common::init();
    let dir = common::TempDir::new("clip-retention");
    let clip = scene_clip(&dir);
    // Clips of at most 3 s (some 2 to 4), in at most 1 byte: each new clip deletes the ones
    // before it, the newest stays.
    let clips = dir.join("kept");
    let stats = record(
        &clip,
        &clips,
        "pre-roll=1000000000 post-roll=1000000000 max-duration=3000000000 \
         trigger-labels=motorbike max-size-bytes=1 snapshots=false",
    );
    let n = stats.get::<u64>("clips").unwrap();
    assert!(n >= 2, "{stats}");
    assert_eq!(stats.get::<u64>("deleted"), Ok(n - 1), "{stats}");
    let left = clip_files(&clips).0;
    assert_eq!(left.len(), 1, "{left:?}");
    // snapshots=false: clips only.
    assert_eq!(files(&clips).len(), 1, "{:?}", files(&clips));
    let logged = clips_in_log(&clips);
    assert_eq!(logged.len() as u64, n, "{logged:?}");
    // By capture time: every clip but the last deleted by retention, the last complete.
    let mut by_time = logged.clone();
    by_time.sort_by_key(|c| c["first_capture_ns"].as_i64());
    for c in &by_time[..by_time.len() - 1] {
        assert_eq!(c["file"], "deleted", "{c}");
        assert_eq!(c["deleted"], "retention max-size-bytes", "{c}");
    }
    let newest = by_time.last().unwrap();
    assert_eq!(newest["file"], "complete", "{newest}");
    assert_eq!(newest["path"], left[0].to_str().unwrap(), "{newest}");
}

/// Runs the recorder's pipeline `p` to EOS (no error): the recorder's stats and what the
/// pipeline said.
fn run_recorder(p: &gst::Pipeline) -> (gst::Structure, common::Outcome) {
    let o = common::run(p, Duration::from_secs(180));
    assert!(o.eos && o.errors.is_empty(), "{o:?}");
    let stats = p
        .by_name("rec")
        .unwrap()
        .property::<gst::Structure>("stats");
    eprintln!("{stats}");
    (stats, o)
}

/// `videoai-events clips` of the log of `clips` with `args` (filters).
fn clips_filtered(clips: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    events_json_with("clips", clips, args)
}

#[test]
fn a_zone_entry_and_the_trigger_signal_each_make_a_clip_and_clips_filters_them() {
    common::init();
    let dir = common::TempDir::new("clip-zone-signal");
    let clip = scene_clip(&dir);
    let uri = glib::filename_to_uri(&clip, None).unwrap();
    let clips = dir.join("clips");
    // The motorbike drives right along the top; its centre enters the zone over the frame's
    // top right at about 11 s (the cup on the table stays below it).
    let zone = "zones=\"right:900,0,1280,0,1280,380,900,380\"";
    let p = common::parse(&pipeline_with(
        &uri,
        &clips,
        zone,
        "pre-roll=1000000000 post-roll=1000000000 trigger-zones=right snapshots=false",
    ));
    let stats = run_recorder(&p).0;
    assert_eq!(stats.get::<u64>("triggers"), Ok(1), "{stats}");
    assert_eq!(stats.get::<u64>("clips"), Ok(1), "{stats}");
    let logged = clips_in_log(&clips);
    assert_eq!(logged.len(), 1, "{logged:?}");
    let zoned = logged[0].clone();
    assert_eq!(
        zoned["triggers"][0]["reason"], "zone right entry",
        "{zoned}"
    );
    assert_eq!(zoned["file"], "complete", "{zoned}");

    // Another camera (the same file under the stream id "door"), no trigger of its own: an
    // application's `trigger` signal at 5 s makes a clip around it, in the same log. (Under
    // "cam" its frames would be a replay, stored already.)
    let p = common::parse(&pipeline_with(
        &uri,
        &clips,
        zone,
        "pre-roll=1000000000 post-roll=1000000000 snapshots=false",
    ));
    for e in p.iterate_recurse().into_iter().flatten() {
        let factory = e.factory().map(|f| f.name().to_string());
        if matches!(factory.as_deref(), Some("raftsink" | "cliprecorder")) {
            e.set_property("stream-id", "door");
        }
    }
    let rec = p.by_name("rec").unwrap();
    let sent = Arc::new(Mutex::new(false));
    let (rec_, sent_) = (rec.clone(), sent.clone());
    rec.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let at = info.buffer().and_then(|b| b.pts()).map(|t| t.nseconds());
            let mut sent = sent_.lock().unwrap();
            if at.is_some_and(|t| t >= 5 * S) && !*sent {
                *sent = true;
                rec_.emit_by_name::<()>("trigger", &[&"doorbell"]);
            }
            gst::PadProbeReturn::Ok
        });
    let stats = run_recorder(&p).0;
    assert!(*sent.lock().unwrap(), "the signal was sent");
    assert_eq!(stats.get::<u64>("triggers"), Ok(1), "{stats}");
    assert_eq!(stats.get::<u64>("clips"), Ok(1), "{stats}");
    let all = clips_in_log(&clips);
    assert_eq!(all.len(), 2, "{all:?}");
    let signalled = all
        .iter()
        .find(|c| c["path"] != zoned["path"])
        .unwrap()
        .clone();
    assert_eq!(
        signalled["triggers"][0]["reason"], "signal doorbell",
        "{signalled}"
    );
    let (first, last) = (
        signalled["first_capture_ns"].as_i64().unwrap() as u64,
        signalled["last_capture_ns"].as_i64().unwrap() as u64,
    );
    // Around the last frame before 5 s (the clip's name): from the keyframe before it − the
    // pre-roll to it + the post-roll.
    let path = signalled["path"].as_str().unwrap();
    let at: u64 = path[path.rfind("door-").unwrap() + "door-".len()..path.len() - ".mp4".len()]
        .parse()
        .unwrap();
    assert!((5 * S - 2 * FRAME_NS..5 * S).contains(&at), "{signalled}");
    assert!(
        first <= at - S && first + GOP_NS > at - S && last == at + S,
        "{signalled}"
    );

    assert_eq!(signalled["stream"], "door", "{signalled}");
    // Filters: by stream, and by time (a file's capture times are its PTS: seconds after
    // the epoch). The signal's clip ends before 8 s, the zone's starts after it.
    assert_eq!(
        clips_filtered(&clips, &["--stream", "cam"]),
        vec![zoned.clone()]
    );
    assert_eq!(
        clips_filtered(&clips, &["--stream", "door"]),
        vec![signalled.clone()]
    );
    assert!(clips_filtered(&clips, &["--stream", "other"]).is_empty());
    let early = clips_filtered(&clips, &["--to", "1970-01-01T00:00:08Z"]);
    assert_eq!(early, vec![signalled.clone()]);
    let late = clips_filtered(&clips, &["--from", "1970-01-01T00:00:08Z"]);
    assert_eq!(late, vec![zoned.clone()]);
    let both = clips_filtered(
        &clips,
        &[
            "--from",
            "1970-01-01T00:00:05Z",
            "--to",
            "1970-01-01T00:00:11Z",
        ],
    );
    assert_eq!(both.len(), 2, "{both:?}");
}

/// The RTSP camera's process (see `common::rtsp`).
#[test]
fn rtsp_server_child() {
    common::rtsp::serve_if_child();
}

const RECORDER_ENV: &str = "VIDEOAI_TEST_RECORDER_PIPELINE";

/// In a child process: plays the pipeline named by the environment until it is killed (at
/// most 120 s). Returns at once in the test run itself.
#[test]
fn recorder_child() {
    let Ok(desc) = std::env::var(RECORDER_ENV) else {
        return;
    };
    common::init();
    let p = common::parse(&desc);
    p.set_state(gst::State::Playing).unwrap();
    let _ = p.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(120),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = p.set_state(gst::State::Null);
}

/// Polls `done` every 100 ms for at most `limit`; whether it became true.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// The clip files (`.mp4`) and the ones being written (`.partial`) in `dir`.
fn clip_files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let all = files(dir);
    let ext = |p: &PathBuf, e: &str| p.extension().and_then(|x| x.to_str()) == Some(e);
    (
        all.iter().filter(|p| ext(p, "mp4")).cloned().collect(),
        all.iter().filter(|p| ext(p, "partial")).cloned().collect(),
    )
}

#[test]
fn a_crossing_seen_by_an_rtsp_camera_becomes_one_clip_of_its_own_frames() {
    common::init();
    let dir = common::TempDir::new("clip-rtsp");
    let clip = scene_clip(&dir);
    let cam = common::rtsp::RtspCamera::start_file("rtsp_server_child", &clip);
    let clips = dir.join("clips");
    let (pre, post) = (3 * S, 2 * S);
    let p = common::parse(&pipeline(
        &cam.uri(),
        &clips,
        &format!("pre-roll={pre} post-roll={post} trigger-lines=middle"),
    ));
    // The camera's decoded frames as resilientsrc gives them, by capture time (RTP). A live
    // pipeline busier than real time drops some of them; the encoded stream keeps all.
    let decoded = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let d = decoded.clone();
    p.by_name("cam")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && let Some(t) = gstvideoai::formats::capture_time::rtp_timestamp(b)
            {
                d.lock()
                    .unwrap()
                    .insert(t.ns, b.map_readable().unwrap().to_vec());
            }
            gst::PadProbeReturn::Ok
        });
    let rec = p.by_name("rec").unwrap();
    p.set_state(gst::State::Playing).unwrap();
    // The camera sends its 13.3 s once; the clip is written after the crossing's post-roll.
    let written = wait_for(Duration::from_secs(60), || {
        let stats = rec.property::<gst::Structure>("stats");
        let (done, partial) = clip_files(&clips);
        stats.get::<u64>("clips") == Ok(1)
            && stats.get::<bool>("recording") == Ok(false)
            && done.len() == 1
            && partial.is_empty()
    });
    let stats = rec.property::<gst::Structure>("stats");
    eprintln!("{stats}");
    p.send_event(gst::event::Eos::new());
    let _ = p.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    p.set_state(gst::State::Null).unwrap();
    assert!(written, "no finished clip within 60 s: {stats}");
    assert_eq!(stats.get::<u64>("write-errors"), Ok(0), "{stats}");
    let (done, _) = clip_files(&clips);
    assert_eq!(done.len(), 1, "{done:?}");
    let path = &done[0];

    let d = discovered_duration(path);
    eprintln!("{}: {d} ns", path.display());
    assert!(
        (pre + post - FRAME_NS..pre + post + GOP_NS + FRAME_NS).contains(&d),
        "clip of {d} ns for {pre} + {post} ns"
    );
    // A keyframe first, and at each capture time the camera's own decoded frame, byte for
    // byte: some frame of the clip is the camera's at some capture time t0 + its PTS, and
    // every other frame of the clip is the camera's at t0 + its own PTS. (A live pipeline
    // slower than the camera drops whole decoded frames, the clip's first one among them
    // maybe: those are not compared.)
    let (frames, keyframe) = decode_timed(path);
    assert!(keyframe, "the clip starts with a delta unit");
    let source = decoded.lock().unwrap();
    let t0 = frames
        .iter()
        .find_map(|(pts, f)| {
            source
                .iter()
                .find(|(_, c)| *c == f)
                .map(|(t, _)| *t - *pts as i64)
        })
        .expect("no frame of the clip is one the camera sent");
    let mut compared = 0;
    for (i, (pts, f)) in frames.iter().enumerate() {
        let t = t0 + *pts as i64;
        let Some((_, camera)) = source
            .range(t - FRAME_NS as i64 / 2..=t + FRAME_NS as i64 / 2)
            .next()
        else {
            continue; // dropped on the decoded side
        };
        assert!(
            *f == *camera,
            "clip frame {i} differs from the camera's at {t} ns"
        );
        compared += 1;
    }
    eprintln!("{compared} of {} clip frames compared", frames.len());
    assert!(
        compared >= 10,
        "{compared} of {} frames compared",
        frames.len()
    );
    // In the log once, with the crossing.
    let logged = clips_in_log(&clips);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["path"], path.to_str().unwrap());
    assert_eq!(logged[0]["file"], "complete");
    let triggers = logged[0]["triggers"].as_array().unwrap();
    assert!(
        triggers.len() == 1
            && triggers[0]["reason"]
                .as_str()
                .unwrap()
                .starts_with("line middle"),
        "{}",
        logged[0]
    );
    let span = logged[0]["last_capture_ns"].as_i64().unwrap()
        - logged[0]["first_capture_ns"].as_i64().unwrap();
    assert!(
        (span as u64).abs_diff(d) <= FRAME_NS * 2,
        "logged span {span} ns, clip {d} ns"
    );
}

#[test]
fn a_recorder_killed_mid_clip_leaves_a_playable_file_and_the_log_says_incomplete() {
    common::init();
    let dir = common::TempDir::new("clip-kill");
    // The motorbike crosses every 13.3 s for 40 s: the camera is still sending when the
    // recorder is killed.
    let clip = dir.join("scene.mp4");
    still_scene::write_clip(&clip, 3 * FRAMES);
    let cam = common::rtsp::RtspCamera::start_file("rtsp_server_child", &clip);
    let clips = dir.join("clips");
    // A post-roll far longer than the scene: the clip is still open when the recorder dies.
    let desc = pipeline(
        &cam.uri(),
        &clips,
        "pre-roll=3000000000 post-roll=60000000000 trigger-lines=middle",
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "recorder_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RECORDER_ENV, &desc)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The clip is being written: its .partial has grown past its first fragments.
    let started = wait_for(Duration::from_secs(60), || {
        clip_files(&clips)
            .1
            .first()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() > 0)
    });
    if started {
        std::thread::sleep(Duration::from_secs(3));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(started, "no clip started within 60 s");
    let (done, partial) = clip_files(&clips);
    assert!(done.is_empty(), "{done:?}");
    assert_eq!(partial.len(), 1, "{partial:?}");
    // What was written plays: a keyframe first, and frames up to its last fragment.
    let (frames, keyframe) = decode(&partial[0]);
    eprintln!("{}: {} frames", partial[0].display(), frames.len());
    assert!(keyframe, "the clip starts with a delta unit");
    assert!(frames.len() >= 30, "{} frames", frames.len());
    // The log has the clip's trigger, and says the file is incomplete.
    let logged = clips_in_log(&clips);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["file"], "incomplete", "{}", logged[0]);
    assert_eq!(
        format!("{}.partial", logged[0]["path"].as_str().unwrap()),
        partial[0].to_str().unwrap()
    );
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "videoai-test"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a {size} tmpfs on {} failed: this test needs root (CAP_SYS_ADMIN), as the \
             set-up's test command has",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_gives_a_warning_and_every_event_is_still_stored() {
    common::init();
    let dir = common::TempDir::new("clip-full");
    let clip = scene_clip(&dir);
    // Clips on a 256 KiB disk (a clip of 5 s here is some 2.5 MB); the log beside it.
    let clips = dir.join("clips");
    let _disk = Tmpfs::mount(&clips, "256k");
    let (stats, o) = record_with(
        &clip,
        &clips,
        "pre-roll=3000000000 post-roll=2000000000 trigger-lines=middle",
    );
    assert_eq!(stats.get::<u64>("clips"), Ok(1), "{stats}");
    assert_eq!(stats.get::<u64>("write-errors"), Ok(1), "{stats}");
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("not written whole") && w.contains("space")),
        "{:?}",
        o.warnings
    );
    // Every frame's event is stored, and the clip with what became of it.
    let store = gstvideoai::eventlog::store::EventStore::open_for_reading(&log_of(&clips)).unwrap();
    assert_eq!(store.count(Some("cam")).unwrap(), FRAMES as i64);
    let logged = clips_in_log(&clips);
    assert_eq!(logged.len(), 1, "{logged:?}");
    let c = &logged[0];
    assert_eq!(c["file"], "incomplete", "{c}");
    assert!(
        c["failed"].as_str().is_some_and(|f| f.contains("space")),
        "{c}"
    );
}

/// Every frame of an MP4 (or one JPEG), decoded to RGB: (PTS, width, bytes).
fn rgb_frames(path: &Path) -> Vec<(u64, u32, Vec<u8>)> {
    let demux = if path.extension().and_then(|e| e.to_str()) == Some("jpg") {
        "jpegdec"
    } else {
        "qtdemux ! h264parse ! avdec_h264"
    };
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! {demux} ! videoconvert ! video/x-raw,format=RGB \
         ! fakesink name=out sync=false",
        path.display()
    ));
    let frames = Arc::new(Mutex::new(Vec::new()));
    let f = frames.clone();
    p.by_name("out")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                let caps = pad.current_caps().unwrap();
                let vi = gst_video::VideoInfo::from_caps(&caps).unwrap();
                let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(b, &vi).unwrap();
                // Packed rows, whatever the stride.
                let (w, h) = (vi.width() as usize, vi.height() as usize);
                let stride = frame.plane_stride()[0] as usize;
                let data = frame.plane_data(0).unwrap();
                let mut rows = Vec::with_capacity(w * h * 3);
                for y in 0..h {
                    rows.extend_from_slice(&data[y * stride..y * stride + w * 3]);
                }
                let pts = b.pts().map_or(0, |t| t.nseconds());
                f.lock().unwrap().push((pts, vi.width(), rows));
            }
            gst::PadProbeReturn::Ok
        });
    let o = common::run(&p, Duration::from_secs(60));
    assert!(o.eos && o.errors.is_empty(), "{}: {o:?}", path.display());
    std::mem::take(&mut *frames.lock().unwrap())
}

/// The mean absolute difference between `crop` (w × h RGB) and the box at (x, y) of `frame`.
fn difference(crop: &[u8], w: usize, frame: &[u8], frame_w: usize, x: usize, y: usize) -> f64 {
    let h = crop.len() / (w * 3);
    let mut sum = 0u64;
    for r in 0..h {
        let a = &crop[r * w * 3..(r + 1) * w * 3];
        let start = ((y + r) * frame_w + x) * 3;
        let b = &frame[start..start + w * 3];
        sum += a
            .iter()
            .zip(b)
            .map(|(p, q)| p.abs_diff(*q) as u64)
            .sum::<u64>();
    }
    sum as f64 / crop.len() as f64
}

/// `videoai-events SUBCOMMAND` on the log of `clips`, as JSON lines.
fn events_json(subcommand: &str, clips: &Path) -> Vec<serde_json::Value> {
    events_json_with(subcommand, clips, &[])
}

/// [`events_json`] with more arguments.
fn events_json_with(subcommand: &str, clips: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_videoai-events"))
        .args([subcommand, log_of(clips).to_str().unwrap()])
        .args(args)
        .output()
        .expect("videoai-events runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn each_track_gets_one_snapshot_of_its_most_confident_detection() {
    common::init();
    let dir = common::TempDir::new("clip-snapshot");
    let clip = scene_clip(&dir);
    let clips = dir.join("shots");
    let stats = record(&clip, &clips, "");
    let tracks = events_json("tracks", &clips);
    assert!(
        tracks.iter().any(|t| t["label"] == "motorbike"),
        "{tracks:?}"
    );
    assert_eq!(
        stats.get::<u64>("snapshots"),
        Ok(tracks.len() as u64),
        "{stats}"
    );
    let jpegs: Vec<_> = files(&clips)
        .into_iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("jpg"))
        .collect();
    assert_eq!(jpegs.len(), tracks.len(), "{jpegs:?}");
    // The camera's frames, and which PTS each capture time of the log is.
    let source = rgb_frames(&clip);
    let frame_w = source[0].1 as usize;
    let pts_at: std::collections::HashMap<i64, u64> = events_json("dump", &clips)
        .iter()
        .map(|e| {
            (
                e["capture_ns"].as_i64().unwrap(),
                e["pts_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    for t in &tracks {
        let path = PathBuf::from(t["snapshot"].as_str().unwrap_or_else(|| panic!("{t}")));
        assert!(jpegs.contains(&path), "{t}");
        let b: Vec<usize> = t["best_box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let shot = rgb_frames(&path);
        assert_eq!(shot.len(), 1);
        let (_, w, pixels) = &shot[0];
        // The box of the track's most confident detection, with its pixels at that frame.
        assert_eq!(
            (*w as usize, pixels.len() / (*w as usize * 3)),
            (b[2], b[3]),
            "{t}"
        );
        let pts = pts_at[&t["best_capture_ns"].as_i64().unwrap()];
        let (_, _, frame) = source
            .iter()
            .find(|(p, _, _)| p.abs_diff(pts) < FRAME_NS / 2)
            .unwrap();
        // JPEG and two colour conversions apart, and no frame of the camera matches the
        // snapshot better (by more than 1 of 255) than the one it was taken from: a moving
        // object's neighbouring frames differ by far more.
        let same = difference(pixels, b[2], frame, frame_w, b[0], b[1]);
        let closest = source
            .iter()
            .map(|(_, _, f)| difference(pixels, b[2], f, frame_w, b[0], b[1]))
            .fold(f64::INFINITY, f64::min);
        eprintln!("{t}: differs from its frame by {same:.1} (closest frame {closest:.1})");
        assert!(same < 25.0, "{t}: differs from its frame by {same:.1}");
        assert!(
            same <= closest + 1.0,
            "{t}: {same:.1}, another frame {closest:.1}"
        );
        if t["label"] == "motorbike" {
            // Not the background: the same box on the first frame (no motorbike yet).
            let empty = difference(pixels, b[2], &source[0].2, frame_w, b[0], b[1]);
            eprintln!("the empty scene differs by {empty:.1}");
            assert!(
                empty > 2.0 * same + 5.0,
                "{t}: the empty scene differs by {empty:.1}"
            );
        }
    }
}
