// SPDX-License-Identifier: MPL-2.0
//! cliprecorder: a line crossing in the still-camera scene (a real photo, a motorbike crossing)
//! becomes one clip, read back by GStreamer's discoverer and decoded frame by frame; triggers
//! that overlap make one clip; a replay makes no second one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::still_scene;
use gst::prelude::*;

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

/// The detector, the tracker and the recorder on `clip` through resilientsrc's two outputs;
/// the recorder's stats.
fn record(clip: &Path, clips: &Path, recorder: &str) -> gst::Structure {
    let uri = glib::filename_to_uri(clip, None).unwrap();
    let p = common::parse(&format!(
        "resilientsrc name=cam uri=\"{uri}\" encoded=true \
         cam.src ! videoconvert ! onnxinfer model-location=\"{}\" labels-location=\"{}\" \
         model-type=yolov5 iou-threshold=0.2 ! objecttracker lines=\"{}\" \
         ! cliprecorder name=rec location=\"{}\" stream-id=cam {recorder} ! fakesink sync=false \
         cam.encoded ! queue ! rec.encoded",
        common::coco_model().display(),
        common::coco_labels().display(),
        still_scene::LINES,
        clips.display()
    ));
    let o = common::run(&p, Duration::from_secs(180));
    assert!(o.eos && o.errors.is_empty(), "{o:?}");
    let stats = p
        .by_name("rec")
        .unwrap()
        .property::<gst::Structure>("stats");
    eprintln!("{stats}");
    stats
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
                f.lock().unwrap().push(b.map_readable().unwrap().to_vec());
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
    let written = files(&clips);
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

    // The same file again (a replay): no second clip, and the first is untouched.
    let before = std::fs::read(path).unwrap();
    let stats = record(&clip, &clips, &recorder);
    assert_eq!(stats.get::<u64>("clips"), Ok(0), "{stats}");
    assert_eq!(stats.get::<u64>("clips-existing"), Ok(1), "{stats}");
    assert_eq!(files(&clips), written);
    assert!(std::fs::read(path).unwrap() == before);
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
    let written = files(&clips);
    assert_eq!(written.len(), 1, "{written:?}");
    let long = discovered_duration(&written[0]);
    eprintln!("one clip for {triggers} triggers: {long} ns");
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
    let written = files(&clips);
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
}
