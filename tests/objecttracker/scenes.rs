// SPDX-License-Identifier: MPL-2.0
//! Synthetic scenes with known truth (objects on known paths, crossing each other, occluded,
//! detections jittered, dropped at random, false positives), scored with the CLEAR-MOT MOTA,
//! IDF1 and ID switches.

use std::collections::HashMap;

use gst::prelude::*;

use gstvideoai::objecttracker::assign;

use super::{Boxed, Tracked, frame, harness, run};

/// A small deterministic random source (the scenes must be the same on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn jitter(&mut self, amount: f64) -> f64 {
        (self.next() * 2.0 - 1.0) * amount
    }
}

/// An object: its box at each frame (None: not in the picture).
struct Object {
    class_id: i32,
    path: Vec<Option<Rect>>,
}

/// A box: x, y, w, h.
type Rect = (f64, f64, f64, f64);
/// Per frame: the objects in the picture (index, box).
type Truth = Vec<Vec<(usize, Rect)>>;

/// The truth and the detections of a scene.
struct Scene {
    truth: Truth,
    detections: Vec<Vec<Boxed>>,
}

/// Makes the detections of `objects` over `frames`: jittered by `jitter` px, each dropped with
/// probability `drop`, hidden where `hidden(object, frame)` says, and a false positive with
/// probability `false_positives` a frame.
fn scene(
    objects: &[Object],
    frames: usize,
    rng: &mut Rng,
    jitter: f64,
    drop: f64,
    false_positives: f64,
    hidden: impl Fn(usize, usize) -> bool,
) -> Scene {
    let mut truth = Vec::new();
    let mut detections = Vec::new();
    for f in 0..frames {
        let mut t = Vec::new();
        let mut d = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            let Some(r) = o.path[f] else { continue };
            t.push((i, r));
            if hidden(i, f) || rng.next() < drop {
                continue;
            }
            d.push(Boxed {
                rect: (r.0 + rng.jitter(jitter), r.1 + rng.jitter(jitter), r.2, r.3),
                class_id: o.class_id,
                confidence: 0.6 + 0.35 * rng.next(),
            });
        }
        if rng.next() < false_positives {
            d.push(Boxed {
                rect: (rng.next() * 560.0, rng.next() * 400.0, 40.0, 80.0),
                class_id: 0,
                confidence: 0.3 + 0.4 * rng.next(),
            });
        }
        truth.push(t);
        detections.push(d);
    }
    Scene { truth, detections }
}

fn overlap(a: (f64, f64, f64, f64), b: (u32, u32, u32, u32)) -> f64 {
    assign::iou(
        &[a.0, a.1, a.2, a.3],
        &[b.0 as f64, b.1 as f64, b.2 as f64, b.3 as f64],
    )
}

#[derive(Debug)]
struct Scores {
    mota: f64,
    idf1: f64,
    id_switches: u64,
}

/// CLEAR-MOT and identity scores of the confirmed tracks `out` against `truth` (a match needs
/// IoU ≥ 0.5).
fn score(truth: &Truth, out: &[Vec<Tracked>]) -> Scores {
    let (mut fn_, mut fp, mut idsw, mut gt_total, mut out_total) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut last_id: HashMap<usize, u64> = HashMap::new();
    let mut together: HashMap<(usize, u64), u64> = HashMap::new();
    for (t, o) in truth.iter().zip(out) {
        let o: Vec<&Tracked> = o
            .iter()
            .filter(|r| r.state.as_deref() == Some("confirmed"))
            .collect();
        gt_total += t.len() as u64;
        out_total += o.len() as u64;
        let m: Vec<Vec<f64>> = t
            .iter()
            .map(|(_, r)| o.iter().map(|x| overlap(*r, x.rect)).collect())
            .collect();
        let pairs = assign::optimal(&m, 0.5);
        fn_ += (t.len() - pairs.len()) as u64;
        fp += (o.len() - pairs.len()) as u64;
        for (g, k) in pairs {
            let (gt, id) = (t[g].0, o[k].id.expect("confirmed regions have an id"));
            if let Some(prev) = last_id.insert(gt, id)
                && prev != id
            {
                if std::env::var_os("TRACK_DEBUG").is_some() {
                    eprintln!("switch: truth {gt} {prev} -> {id} at {:?}", t[g].1);
                }
                idsw += 1;
            }
            *together.entry((gt, id)).or_default() += 1;
        }
    }
    // IDF1: the one-to-one truth↔track pairing with the most frames together.
    let gts: Vec<usize> = {
        let mut v: Vec<usize> = together.keys().map(|k| k.0).collect();
        v.sort();
        v.dedup();
        v
    };
    let ids: Vec<u64> = {
        let mut v: Vec<u64> = together.keys().map(|k| k.1).collect();
        v.sort();
        v.dedup();
        v
    };
    let most = together.values().copied().max().unwrap_or(1) as f64;
    let m: Vec<Vec<f64>> = gts
        .iter()
        .map(|g| {
            ids.iter()
                .map(|i| together.get(&(*g, *i)).copied().unwrap_or(0) as f64 / most)
                .collect()
        })
        .collect();
    let idtp: u64 = assign::optimal(&m, 1e-9)
        .into_iter()
        .map(|(g, i)| together[&(gts[g], ids[i])])
        .sum();
    Scores {
        mota: 1.0 - (fn_ + fp + idsw) as f64 / gt_total as f64,
        idf1: 2.0 * idtp as f64 / (gt_total + out_total) as f64,
        id_switches: idsw,
    }
}

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

fn track(algorithm: &str, s: &Scene) -> Vec<Vec<Tracked>> {
    let mut h = harness(&format!("algorithm={algorithm}"));
    let frames = s
        .detections
        .iter()
        .enumerate()
        .map(|(i, d)| frame(i as u64, d, true))
        .collect();
    run(&mut h, frames)
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
    let frames = s
        .detections
        .iter()
        .enumerate()
        .map(|(i, d)| frame(i as u64, d, true))
        .collect();
    let out = run(&mut h, frames);
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
