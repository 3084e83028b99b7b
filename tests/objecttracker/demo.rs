// SPDX-License-Identifier: MPL-2.0
//! The object demo of `make demo`: a real COCO detector (darknet's yolov3-tiny, converted to
//! ONNX at set-up) on the clip of real photos moving across the frame
//! (pipelines/objects-clip.json, made by scripts/objects-clip.py), through
//! pipelines/demo-objects.pipeline into an event log: one track per object, following it from
//! its first frame to its last, and line counts equal to the truth the clip was made from.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use super::{common, events_tool};

/// `python3 scripts/objects-clip.py ARGS…`: its standard output, or the test fails with its
/// standard error.
fn objects_clip(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new("python3")
        .arg(common::root().join("scripts/objects-clip.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "objects-clip.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The clip's truth (`objects-clip.py truth --json`).
fn truth() -> serde_json::Value {
    serde_json::from_slice(&objects_clip(&["truth".as_ref(), "--json".as_ref()])).unwrap()
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_coco_demo_gives_one_track_per_object_and_exact_line_counts() {
    common::init();
    let dir = common::TempDir::new("coco-demo");
    let clip = dir.join("objects.mp4");
    objects_clip(&["make".as_ref(), clip.as_os_str()]);
    let truth = truth();
    let db = dir.join("events.db");
    let vars = HashMap::from([
        ("INPUT", clip.display().to_string()),
        ("MODEL", common::coco_model().display().to_string()),
        ("LABELS", common::coco_labels().display().to_string()),
        ("LINES", truth["lines"].as_str().unwrap().to_string()),
        ("EVENTS", db.display().to_string()),
        ("STREAM", "objects-demo".to_string()),
    ]);
    let desc = common::pipeline_file("demo-objects.pipeline", &vars);
    let out = common::run(&common::parse(&desc), Duration::from_secs(300));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");

    let location = db.display().to_string();
    let tracks = events_tool(&["tracks", &location, "--stream", "objects-demo"]);
    let objects = truth["objects"].as_array().unwrap();
    assert_eq!(
        tracks.len(),
        objects.len(),
        "one track per object: {tracks:#?}"
    );
    for o in objects {
        let label = o["label"].as_str().unwrap();
        let mine: Vec<_> = tracks.iter().filter(|t| t["label"] == label).collect();
        assert_eq!(mine.len(), 1, "{label}: {tracks:#?}");
        let t = mine[0];
        // Followed from (about) its first frame to its last: min-hits and a missed detection
        // may cost a frame or two at the start.
        let frames = num(&o["frames"]);
        assert!(num(&t["frames"]) >= frames - 3.0, "{label}: {t} vs {o}");
        assert!(num(&t["frames"]) <= frames, "{label}: {t} vs {o}");
        // And it is this object: the first and last boxes are where the photo was then (the
        // detector's box lies within the photo, give or take a quarter of its width).
        let w = num(&o["width"]);
        for (key, x) in [("first_box", &o["x_from"]), ("last_box", &o["x_to"])] {
            let b = t[key].as_array().unwrap();
            let centre = num(&b[0]) + num(&b[2]) / 2.0;
            let want = num(x) + w / 2.0;
            assert!((centre - want).abs() < w / 4.0, "{label} {key}: {t} vs {o}");
        }
    }
    let counts = events_tool(&["counts", &location, "--stream", "objects-demo"]);
    for want in truth["counts"].as_array().unwrap() {
        let got = counts
            .iter()
            .find(|c| c["line"] == want["line"] && c["direction"] == want["direction"])
            .map(|c| num(&c["count"]))
            .unwrap_or(0.0);
        assert_eq!(got, num(&want["count"]), "{want} in {counts:?}");
    }
}
