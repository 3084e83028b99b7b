// SPDX-License-Identifier: MPL-2.0
//! The element: ids written into the regions, frames with carried-over results, odd input,
//! batches of four streams, zones, lost tracks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::{Boxed, Tracked, common, frame, harness, run, stats};

fn person(x: f64, y: f64) -> Boxed {
    Boxed {
        rect: (x, y, 40.0, 80.0),
        class_id: 0,
        confidence: 0.9,
    }
}

#[test]
fn ids_hold_across_frames_whose_results_were_carried_over() {
    // onnxinfer interval=3: fresh detections every third frame, the same boxes carried over on
    // the two frames between (fresh=false).
    let mut h = harness("");
    let mut frames = Vec::new();
    for i in 0..30u64 {
        let fresh_at = i - i % 3;
        let boxes = [
            person(10.0 + 4.0 * fresh_at as f64, 100.0),
            person(400.0, 300.0 - 2.0 * fresh_at as f64),
        ];
        frames.push(frame(i, &boxes, i % 3 == 0));
    }
    let out = run(&mut h, frames);
    // From the second fresh frame on (min-hits 2), both are confirmed with the same ids.
    for (i, regions) in out.iter().enumerate().skip(3) {
        let ids: Vec<Option<u64>> = regions.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![Some(1), Some(2)], "frame {i}: {regions:?}");
        assert!(
            regions
                .iter()
                .all(|r| r.state.as_deref() == Some("confirmed")),
            "frame {i}: {regions:?}"
        );
    }
    assert_eq!(stats(&h).get::<u64>("tracks-created").unwrap(), 2);
}

#[test]
fn regions_without_a_detection_structure_are_tracked_too() {
    let mut h = harness("");
    let mut frames = Vec::new();
    for i in 0..5u64 {
        let mut b = gst::Buffer::with_size(1).unwrap();
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * super::PERIOD_NS));
            gst_video::VideoRegionOfInterestMeta::add(b, "face", (100 + 2 * i as u32, 50, 30, 30));
        }
        frames.push(b);
    }
    let out = run(&mut h, frames);
    assert_eq!(out[4][0].id, Some(1), "{out:?}");
    assert_eq!(out[4][0].state.as_deref(), Some("confirmed"));
}

#[test]
fn zero_size_boxes_and_frames_without_regions_are_passed_on() {
    let mut h = harness("");
    let empty = Boxed {
        rect: (10.0, 10.0, 0.0, 0.0),
        class_id: 0,
        confidence: 0.9,
    };
    let out = run(&mut h, (0..4).map(|i| frame(i, &[empty], true)).collect());
    assert!(out.iter().flatten().all(|r| r.id.is_none()), "{out:?}");
    let out = run(&mut h, (4..8).map(|i| frame(i, &[], true)).collect());
    assert!(out.iter().all(Vec::is_empty));
    let st = stats(&h);
    assert_eq!(st.get::<u64>("skipped").unwrap(), 4, "{st}");
    assert_eq!(st.get::<u64>("tracks-created").unwrap(), 0, "{st}");
    assert_eq!(st.get::<u64>("frames").unwrap(), 8, "{st}");
}

#[test]
fn malformed_lines_and_zones_are_an_error_at_start_naming_the_part() {
    common::init();
    for (prop, value, expected) in [
        (
            "lines",
            "door:100,400,600",
            "line 'door': expected 4 numbers x1,y1,x2,y2, found 3",
        ),
        ("lines", "door:100,400,six,400", "'six' is not a number"),
        ("zones", "bay:0,0,10,10", "zone 'bay'"),
        ("zones", "0,0,10,0,10,10", "expected NAME:x,y"),
    ] {
        let p = common::parse(&format!(
            "videotestsrc num-buffers=2 ! objecttracker {prop}=\"{value}\" ! fakesink"
        ));
        let out = common::run(&p, super::DEADLINE);
        assert!(
            out.first_error().contains(expected) && out.first_error().contains("Syntax"),
            "{prop}={value}: {}",
            out.first_error()
        );
    }
}

#[test]
fn thousands_of_boxes_a_frame_take_bounded_time() {
    // A broken detector: 5000 boxes a frame, 10 frames. Up to 4096 are tracked, the rest
    // passed on untracked and counted.
    let mut h = harness("");
    let frames: Vec<gst::Buffer> = (0..10u64)
        .map(|i| {
            let boxes: Vec<Boxed> = (0..5000)
                .map(|k| person((k % 100) as f64 * 6.0, (k / 100) as f64 * 9.0 + i as f64))
                .collect();
            frame(i, &boxes, true)
        })
        .collect();
    let started = Instant::now();
    let out = run(&mut h, frames);
    let took = started.elapsed();
    assert_eq!(out.len(), 10);
    assert_eq!(stats(&h).get::<u64>("skipped").unwrap(), 10 * (5000 - 4096));
    // Generous: the point is that it ends (an O(n³) assignment on 4096 boxes would not).
    assert!(took < Duration::from_secs(60), "{took:?}");
    eprintln!("10 frames of 5000 boxes: {took:?}");
}

#[test]
fn zones_count_entries_exits_and_lost_tracks_are_emitted_on_request() {
    let mut h = harness("zones=\"bay:200,0,400,0,400,480,200,480\" emit-lost=true anchor=centre");
    // One person walks through the bay, then vanishes for 5 frames.
    let mut frames: Vec<gst::Buffer> = (0..60u64)
        .map(|i| frame(i, &[person(100.0 + 8.0 * i as f64, 200.0)], true))
        .collect();
    frames.extend((60..65u64).map(|i| frame(i, &[], true)));
    let out = run(&mut h, frames);
    let st = stats(&h);
    let bay = st
        .get::<gst::Array>("zones")
        .unwrap()
        .first()
        .unwrap()
        .get::<gst::Structure>()
        .unwrap();
    assert_eq!(
        (
            bay.get::<u64>("entries").unwrap(),
            bay.get::<u64>("exits").unwrap()
        ),
        (1, 1),
        "{st}"
    );
    // While lost, its predicted box comes with track-state=lost.
    let lost = &out[61];
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        (lost[0].id, lost[0].state.as_deref()),
        (Some(1), Some("lost"))
    );
}

/// Four streams of the same scene through framesync: each stream's tracker numbers its own
/// objects from 1 (no id leaks across streams).
#[test]
fn four_batched_streams_are_tracked_apart() {
    common::init();
    let mut desc =
        String::from("framesync name=sync ! objecttracker name=tracker ! framesplit name=split");
    for i in 0..4 {
        desc += &format!(
            " videotestsrc num-buffers=20 ! video/x-raw,format=GRAY8,width=320,height=240,framerate=25/1 \
             ! identity name=in{i} ! sync.sink_{i} split.src_{i} ! queue ! appsink name=out{i} sync=false"
        );
    }
    let p = common::parse(&desc);
    for i in 0..4 {
        // Stream i shows i + 1 people walking right.
        p.by_name(&format!("in{i}"))
            .unwrap()
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = info.data.as_mut() {
                    let n = b.pts().map_or(0, |t| t.nseconds() / super::PERIOD_NS);
                    let boxes: Vec<Boxed> = (0..=i)
                        .map(|k| person(10.0 + 4.0 * n as f64, 10.0 + 55.0 * k as f64))
                        .collect();
                    let with = frame(n, &boxes, true);
                    let b = b.make_mut();
                    for m in with.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
                        let mut roi =
                            gst_video::VideoRegionOfInterestMeta::add(b, m.roi_type(), m.rect());
                        for param in m.params() {
                            roi.add_param(param.to_owned());
                        }
                    }
                }
                gst::PadProbeReturn::Ok
            });
    }
    let seen: Arc<Mutex<Vec<std::collections::BTreeSet<u64>>>> =
        Arc::new(Mutex::new(vec![Default::default(); 4]));
    for i in 0..4 {
        let seen = seen.clone();
        let sink = p
            .by_name(&format!("out{i}"))
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    for r in super::tracked(sample.buffer().unwrap()) {
                        if let Some(id) = r.id {
                            seen.lock().unwrap()[i].insert(id);
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    let out = common::run(&p, super::DEADLINE);
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let seen = seen.lock().unwrap();
    for (i, ids) in seen.iter().enumerate() {
        let expected: std::collections::BTreeSet<u64> = (1..=i as u64 + 1).collect();
        assert_eq!(*ids, expected, "stream {i}");
    }
}

/// `appsrc ! objecttracker <props> ! raftsink` into `db` (stream `cam`), and its appsrc.
fn into_log(props: &str, db: &std::path::Path) -> (gst::Pipeline, gst_app::AppSrc) {
    common::from_appsrc(
        common::TRACKER_CAPS,
        &format!(
            "objecttracker {props} ! raftsink location=\"{}\" stream-id=cam",
            db.display()
        ),
    )
}

#[test]
fn stored_events_carry_the_track_ids() {
    common::init();
    let dir = common::TempDir::new("tracked-events");
    let db = dir.join("events.db");
    let (p, src) = into_log("", &db);
    for i in 0..10u64 {
        src.push_buffer(frame(
            i,
            &[person(10.0 + 5.0 * i as f64, 100.0), person(300.0, 100.0)],
            true,
        ))
        .unwrap();
    }
    src.end_of_stream().unwrap();
    let out = common::run(&p, super::DEADLINE);
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let events = gstvideoai::eventlog::store::EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    assert_eq!(events.len(), 10);
    for (i, e) in events.iter().enumerate() {
        let ids: Vec<Option<u64>> = e.detections.iter().map(|d| d.track_id).collect();
        // No id on a track's first frame: tentative until min-hits (2) frames.
        let expected = if i == 0 {
            [None, None]
        } else {
            [Some(1), Some(2)]
        };
        assert_eq!(ids, expected, "{e:?}");
    }
    let raw = std::process::Command::new(env!("CARGO_BIN_EXE_videoai-events"))
        .args(["dump", &db.display().to_string()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&raw.stdout).contains("\"track_id\":2"));
}

#[test]
fn a_flush_ends_the_tracks_and_ids_are_never_reused() {
    let mut h = harness("");
    let out = run(
        &mut h,
        (0..4)
            .map(|i| frame(i, &[person(10.0 + 4.0 * i as f64, 100.0)], true))
            .collect(),
    );
    assert_eq!(out[3][0].id, Some(1));
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=640,height=480,framerate=25/1");
    let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
    seg.set_start(gst::ClockTime::ZERO);
    assert!(h.push_event(gst::event::Segment::new(&seg)));
    // The same object again: a new track, a new id.
    let out = run(
        &mut h,
        (0..4)
            .map(|i| frame(i, &[person(10.0 + 4.0 * i as f64, 100.0)], true))
            .collect(),
    );
    assert_eq!(out[3][0].id, Some(2), "{out:?}");
    assert_eq!(stats(&h).get::<u64>("tracks-created").unwrap(), 2);
}

/// Runs six people crossing `door` (three down, three up) through `objecttracker ! raftsink`
/// into `db`.
fn store_crossings(db: &std::path::Path) {
    let (p, src) = into_log("lines=\"door:0,240,640,240\"", db);
    for i in 0..90u64 {
        let boxes: Vec<Boxed> = (0..6)
            .map(|k| {
                let down = k % 2 == 0;
                let feet = if down {
                    150.0 + 2.0 * i as f64
                } else {
                    330.0 - 2.0 * i as f64
                };
                person(20.0 + 100.0 * k as f64, feet - 80.0)
            })
            .collect();
        src.push_buffer(frame(i, &boxes, true)).unwrap();
    }
    src.end_of_stream().unwrap();
    let out = common::run(&p, super::DEADLINE);
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
}

#[test]
fn crossings_are_stored_once_and_counted_by_videoai_events() {
    common::init();
    let dir = common::TempDir::new("crossing-events");
    let db = dir.join("events.db");
    store_crossings(&db);
    // The same frames again (a replay): stored once, counted once.
    store_crossings(&db);
    let location = db.display().to_string();
    let counts = super::events_tool(&["counts", &location]);
    assert_eq!(
        counts,
        vec![
            serde_json::json!({"stream": "cam", "line": "door", "direction": "in", "count": 3}),
            serde_json::json!({"stream": "cam", "line": "door", "direction": "out", "count": 3}),
        ]
    );
    let tracks = super::events_tool(&["tracks", &location, "--stream", "cam"]);
    assert_eq!(tracks.len(), 6, "{tracks:?}");
    for t in &tracks {
        // 90 frames in the picture, the first one tentative (no id).
        assert_eq!(t["frames"], 89, "{t}");
        assert_eq!(t["label"], "class-0", "{t}");
    }
    // A time window before anyone reached the line counts nothing.
    let first = tracks[0]["first_capture_ns"].as_i64().unwrap();
    let early = super::events_tool(&[
        "counts",
        &location,
        "--from",
        &first.to_string(),
        "--to",
        &(first + 1).to_string(),
    ]);
    assert!(early.is_empty(), "{early:?}");
}

#[test]
fn hostile_lines_zones_and_thresholds_are_an_error_at_start() {
    common::init();
    for (props, expected) in [
        // The squared coordinates overflowed to infinity: nobody crossing x=320 was counted.
        (
            "lines=\"h:320,-1e200,320,1e200\"",
            "line 'h': -1e200 is outside",
        ),
        ("lines=\"d:0,0,1e300,1e300\"", "line 'd': 1e300 is outside"),
        ("zones=\"z:0,0,1e7,0,0,1e7\"", "zone 'z': 1e7 is outside"),
        // All points on one line: no area, like a zero-length line.
        (
            "zones=\"flat:0,0,100,100,200,200\"",
            "zone 'flat': its points enclose no area",
        ),
        (
            "low-threshold=0.7 high-threshold=0.5",
            "low-threshold 0.7 is above high-threshold 0.5",
        ),
        // No detection could ever start a track.
        (
            "high-threshold=0.95 new-track-margin=0.1",
            "high-threshold 0.95 + new-track-margin 0.1 is above 1",
        ),
    ] {
        let p = common::parse(&format!(
            "videotestsrc num-buffers=2 ! objecttracker {props} ! fakesink"
        ));
        let out = common::run(&p, super::DEADLINE);
        assert!(
            out.first_error().contains(expected),
            "{props}: expected an error with '{expected}', found: '{}'",
            out.first_error()
        );
    }
}

#[test]
fn a_walker_crossing_a_line_with_far_away_ends_is_counted() {
    // Ends far outside the frame but within range: the side is computed without overflow.
    let mut h = harness("lines=\"h:320,-100000,320,100000\"");
    let frames: Vec<gst::Buffer> = (0..40)
        .map(|i| frame(i, &[person(200.0 + 8.0 * i as f64, 200.0)], true))
        .collect();
    run(&mut h, frames);
    let st = stats(&h);
    let lines = st.get::<gst::Array>("lines").unwrap();
    let h_line = lines.first().unwrap().get::<gst::Structure>().unwrap();
    assert_eq!(
        h_line.get::<u64>("in").unwrap() + h_line.get::<u64>("out").unwrap(),
        1,
        "{st}"
    );
}

#[test]
fn detections_whose_confidence_is_not_a_number_are_counted_as_skipped() {
    let mut h = harness("");
    let bus = gst::Bus::new();
    super::tracker(&h).set_bus(Some(&bus));
    let mut bad = [
        person(100.0, 100.0),
        person(300.0, 100.0),
        person(500.0, 100.0),
    ];
    bad[0].confidence = f64::NAN;
    bad[1].confidence = f64::INFINITY;
    let out = run(&mut h, (0..3).map(|i| frame(i, &bad, true)).collect());
    let st = stats(&h);
    assert_eq!(st.get::<u64>("skipped").unwrap(), 6, "{st}");
    // The good one is tracked.
    assert!(out[2].iter().any(|r| r.id.is_some()), "{out:?}");
    let warned = std::iter::from_fn(|| bus.pop())
        .filter(|m| m.type_() == gst::MessageType::Warning)
        .count();
    assert_eq!(warned, 1, "one warning for the stream");
}

#[test]
fn a_line_or_zone_outside_the_frame_is_warned_also_after_a_resolution_change() {
    let warnings = |bus: &gst::Bus| -> Vec<String> {
        std::iter::from_fn(|| bus.pop())
            .filter_map(|m| match m.view() {
                gst::MessageView::Warning(w) => Some(w.error().to_string()),
                _ => None,
            })
            .collect()
    };
    // 640×480: the line at y=600 and the zone right of x=700 cannot be reached.
    common::init();
    let mut h = gst_check::Harness::new_parse(
        "objecttracker name=tracker lines=\"below:0,600,640,600;door:0,240,640,240\" zones=\"away:700,0,800,0,800,100\"",
    );
    let bus = gst::Bus::new();
    super::tracker(&h).set_bus(Some(&bus));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=640,height=480,framerate=25/1");
    run(&mut h, vec![frame(0, &[person(10.0, 10.0)], true)]);
    let w = warnings(&bus);
    assert!(
        w.iter()
            .any(|m| m.contains("line 'below'") && m.contains("640x480"))
            && w.iter().any(|m| m.contains("zone 'away'"))
            && !w.iter().any(|m| m.contains("'door'")),
        "{w:?}"
    );
    // Smaller frames: the door line is now outside too.
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=320,height=200,framerate=25/1");
    run(&mut h, vec![frame(1, &[person(10.0, 10.0)], true)]);
    let w = warnings(&bus);
    assert!(
        w.iter()
            .any(|m| m.contains("line 'door'") && m.contains("320x200")),
        "{w:?}"
    );
}

#[test]
fn a_detection_just_above_high_threshold_keeps_a_track_but_starts_none() {
    // Confidence 0.55: above high-threshold (0.5), below high-threshold + new-track-margin
    // (0.6, ByteTrack's det_thresh).
    common::init();
    let at = |x: f64, confidence: f64| Boxed {
        confidence,
        ..person(x, 100.0)
    };
    let mut frames: Vec<gst::Buffer> = (0..4u64)
        .map(|i| frame(i, &[at(10.0 + 4.0 * i as f64, 0.9)], true))
        .collect();
    // The followed object seen at 0.55 now, and a new one at 0.55 far from it.
    for i in 4..8u64 {
        frames.push(frame(
            i,
            &[at(10.0 + 4.0 * i as f64, 0.55), at(400.0, 0.55)],
            true,
        ));
    }
    let mut h = harness("");
    let out = run(&mut h, frames);
    for (i, regions) in out.iter().enumerate().skip(4) {
        assert_eq!(regions[0].id, Some(1), "frame {i}: {regions:?}");
        // Not even a tentative track.
        assert_eq!(
            (regions[1].id, regions[1].state.as_deref()),
            (None, None),
            "frame {i}: {regions:?}"
        );
    }
    assert_eq!(stats(&h).get::<u64>("tracks-created").unwrap(), 1);
    // With no margin, the new one starts a track.
    let mut h = harness("new-track-margin=0");
    let frames = (0..3u64)
        .map(|i| frame(i, &[at(400.0, 0.55)], true))
        .collect();
    let out = run(&mut h, frames);
    assert_eq!(out[2][0].id, Some(1), "{out:?}");
}

#[test]
fn a_track_carries_its_id_only_once_it_is_confirmed() {
    // A walker from the stream's first frame and an object first seen on its 3rd frame: each
    // is tentative on its first frame, with no track-id (a reader of the ids would otherwise
    // see an id that may end a frame later, or that another track takes over), and confirmed
    // and numbered from its min-hits-th frame.
    let frames = || -> Vec<gst::Buffer> {
        (0..5u64)
            .map(|i| {
                let walker = person(10.0 + 4.0 * i as f64, 100.0);
                if i < 2 {
                    frame(i, &[walker], true)
                } else {
                    frame(i, &[walker, person(400.0, 100.0)], true)
                }
            })
            .collect()
    };
    let shown = |r: &Tracked| (r.id, r.state.clone().unwrap_or_default());
    let tentative = || (None, "tentative".to_string());
    let confirmed = |id: u64| (Some(id), "confirmed".to_string());
    let out = run(&mut harness(""), frames());
    assert_eq!(shown(&out[0][0]), tentative(), "{out:?}");
    assert_eq!(shown(&out[1][0]), confirmed(1), "{out:?}");
    assert_eq!(shown(&out[2][1]), tentative(), "{out:?}");
    assert_eq!(shown(&out[3][1]), confirmed(2), "{out:?}");
    // min-hits=3: two frames without an id; min-hits=1: an id at once.
    let out = run(&mut harness("min-hits=3"), frames());
    assert_eq!(shown(&out[3][1]), tentative(), "{out:?}");
    assert_eq!(shown(&out[4][1]), confirmed(2), "{out:?}");
    let out = run(&mut harness("min-hits=1"), frames());
    assert_eq!(shown(&out[0][0]), confirmed(1), "{out:?}");
    assert_eq!(shown(&out[2][1]), confirmed(2), "{out:?}");
}
