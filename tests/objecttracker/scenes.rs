// SPDX-License-Identifier: MPL-2.0
//! Synthetic scenes with known truth (objects on known paths, crossing each other, occluded,
//! detections jittered, dropped at random, false positives), scored with the CLEAR-MOT MOTA,
//! IDF1 and ID switches.

use gst::prelude::*;

use crate::common::mot::{Object, Rng, Scene, scene, score};

use super::{Tracked, frame, harness, run};

/// Two people walking towards each other on the same line, one passing behind the other
/// (hidden for 8 frames), a third crossing their way diagonally; jitter, drops and false
/// positives.
fn crossing_scene() -> Scene {
    let frames = 100;
    let walk = |x0: f64, y0: f64, vx: f64, vy: f64| Object {
        class_id: 0,
        path: (0..frames)
            .map(|f| {
                let (x, y) = (x0 + vx * f as f64, y0 + vy * f as f64);
                (x > -40.0 && x < 640.0 && y > -80.0 && y < 480.0).then_some((x, y, 40.0, 80.0))
            })
            .collect(),
    };
    let objects = [
        walk(40.0, 200.0, 5.0, 0.0),
        walk(540.0, 200.0, -5.0, 0.0),
        walk(100.0, 40.0, 4.0, 3.0),
    ];
    // Object 1 passes behind object 0 while they overlap.
    let hidden = |i: usize, f: usize| {
        let (x0, x1) = (40.0 + 5.0 * f as f64, 540.0 - 5.0 * f as f64);
        i == 1 && (x0 - x1).abs() < 40.0
    };
    scene(
        &objects,
        frames,
        &mut Rng(0x9e37_79b9_7f4a_7c15),
        2.0,
        0.03,
        0.3,
        hidden,
    )
}

/// The scene's detections as frames, one a period.
fn frames_of(s: &Scene) -> Vec<gst::Buffer> {
    s.detections
        .iter()
        .enumerate()
        .map(|(i, d)| frame(i as u64, d, true))
        .collect()
}

fn track(algorithm: &str, s: &Scene) -> Vec<Vec<Tracked>> {
    let mut h = harness(&format!("algorithm={algorithm}"));
    run(&mut h, frames_of(s))
}

#[test]
fn bytetrack_keeps_ids_through_a_crossing_and_an_occlusion() {
    let s = crossing_scene();
    let bt = score(&s.truth, &track("bytetrack", &s));
    let iou = score(&s.truth, &track("iou", &s));
    eprintln!("bytetrack {bt:?}\niou {iou:?}");
    assert_eq!(bt.id_switches, 0, "bytetrack {bt:?}");
    assert!(bt.idf1 >= 0.9 && bt.mota >= 0.8, "bytetrack {bt:?}");
    // The greedy IoU tracker loses the hidden walker and gives it a new id.
    assert!(iou.id_switches >= 1, "iou {iou:?}");
    assert!(iou.idf1 < bt.idf1 - 0.05, "iou {iou:?} vs bytetrack {bt:?}");
}

#[test]
fn a_crossing_counts_once_per_object_with_detections_missing_near_the_line() {
    // Six people cross the line y=240 (their feet, the default anchor): three down, three up,
    // at different places and times; no detection while their feet are within 20 px of it.
    let frames = 120;
    let objects: Vec<Object> = (0..6)
        .map(|i| {
            let down = i % 2 == 0;
            let x = 40.0 + 95.0 * i as f64;
            let start = 5 * i as usize;
            Object {
                class_id: 0,
                path: (0..frames)
                    .map(|f| {
                        let t = f as f64 - start as f64;
                        if !(0.0..=80.0).contains(&t) {
                            return None;
                        }
                        let feet = if down {
                            120.0 + 3.0 * t
                        } else {
                            360.0 - 3.0 * t
                        };
                        Some((x, feet - 80.0, 40.0, 80.0))
                    })
                    .collect(),
            }
        })
        .collect();
    let s = scene(&objects, frames, &mut Rng(7), 1.5, 0.0, 0.0, |i, f| {
        objects[i].path[f].is_some_and(|r| (r.1 + r.3 - 240.0).abs() < 20.0)
    });
    let mut h = harness("lines=\"door:0,240,640,240\"");
    let bus = gst::Bus::new();
    super::tracker(&h).set_bus(Some(&bus));
    let out = run(&mut h, frames_of(&s));
    let st = super::stats(&h);
    let lines = st.get::<gst::Array>("lines").unwrap();
    let door = lines.first().unwrap().get::<gst::Structure>().unwrap();
    assert_eq!(
        (
            door.get::<u64>("in").unwrap(),
            door.get::<u64>("out").unwrap()
        ),
        (3, 3),
        "{st}"
    );
    let crossings = super::messages(&bus, "objecttracker-crossing");
    assert_eq!(crossings.len(), 6, "{crossings:?}");
    // One track per person, and each crossing names one of them.
    let ids: std::collections::BTreeSet<u64> = crossings
        .iter()
        .map(|c| c.get::<u64>("track-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "{crossings:?}");
    assert_eq!(st.get::<u64>("tracks-created").unwrap(), 6, "{st}");
    assert!(out.iter().flatten().all(|r| r.id.is_some()));
}
