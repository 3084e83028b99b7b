// SPDX-License-Identifier: MPL-2.0
//! Multi-object tracking scenes and scores, shared by tests/objecttracker and
//! benches/objecttracker: synthetic scenes with known truth (objects on known paths, detections
//! jittered, dropped, hidden, false positives) and the CLEAR-MOT MOTA, IDF1 and ID switches.

use std::collections::HashMap;

use gstvideoai::objecttracker::assign;

/// One detection to put on a frame: (x, y, w, h), class id, confidence.
#[derive(Debug, Clone, Copy)]
pub struct Boxed {
    pub rect: (f64, f64, f64, f64),
    pub class_id: i32,
    pub confidence: f64,
}

/// What a tracker gave for one region: its box, track id and state.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub rect: (u32, u32, u32, u32),
    pub id: Option<u64>,
    pub state: Option<String>,
}

/// A small deterministic random source (the scenes must be the same on every run).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn jitter(&mut self, amount: f64) -> f64 {
        (self.next() * 2.0 - 1.0) * amount
    }
}

/// An object: its box at each frame (None: not in the picture).
pub struct Object {
    pub class_id: i32,
    pub path: Vec<Option<Rect>>,
}

/// A box: x, y, w, h.
pub type Rect = (f64, f64, f64, f64);
/// Per frame: the objects in the picture (index, box).
pub type Truth = Vec<Vec<(usize, Rect)>>;

/// The truth and the detections of a scene.
pub struct Scene {
    pub truth: Truth,
    pub detections: Vec<Vec<Boxed>>,
}

/// Makes the detections of `objects` over `frames`: jittered by `jitter` px, each dropped with
/// probability `drop`, hidden where `hidden(object, frame)` says, and a false positive with
/// probability `false_positives` a frame.
pub fn scene(
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
pub struct Scores {
    pub mota: f64,
    pub idf1: f64,
    pub id_switches: u64,
    /// Tracks per truth object (distinct track ids matched to it, averaged over the objects
    /// matched at all): 1 when no object's track was ever broken or swapped.
    pub tracks_per_object: f64,
}

/// CLEAR-MOT and identity scores of the tracks `out` against `truth` (a match needs IoU ≥
/// 0.5): every region that carries a track id, as a reader of the ids (an overlay, the event
/// log) sees them, whatever its `track-state` says. As CLEAR MOT (Bernardin and
/// Stiefelhagen, 2008) and motmetrics do, a truth object first keeps the track it was matched
/// to last while that track still overlaps it (≥ 0.5); only the others are assigned anew
/// (optimal on IoU). Without that step, two objects whose boxes coincide where they cross were
/// handed each other's tracks at random, and counted as switches however well the tracker did.
pub fn score(truth: &Truth, out: &[Vec<Tracked>]) -> Scores {
    let (mut fn_, mut fp, mut idsw, mut gt_total, mut out_total) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut last_id: HashMap<usize, u64> = HashMap::new();
    let mut together: HashMap<(usize, u64), u64> = HashMap::new();
    for (frame_no, (t, o)) in truth.iter().zip(out).enumerate() {
        let o: Vec<&Tracked> = o.iter().filter(|r| r.id.is_some()).collect();
        gt_total += t.len() as u64;
        out_total += o.len() as u64;
        let m: Vec<Vec<f64>> = t
            .iter()
            .map(|(_, r)| o.iter().map(|x| overlap(*r, x.rect)).collect())
            .collect();
        let mut pairs = Vec::new();
        let (mut g_used, mut k_used) = (vec![false; t.len()], vec![false; o.len()]);
        for (g, (gt, _)) in t.iter().enumerate() {
            let Some(prev) = last_id.get(gt) else {
                continue;
            };
            if let Some(k) =
                (0..o.len()).find(|&k| !k_used[k] && o[k].id == Some(*prev) && m[g][k] >= 0.5)
            {
                pairs.push((g, k));
                (g_used[g], k_used[k]) = (true, true);
            }
        }
        let rest_g: Vec<usize> = (0..t.len()).filter(|&g| !g_used[g]).collect();
        let rest_k: Vec<usize> = (0..o.len()).filter(|&k| !k_used[k]).collect();
        let sub: Vec<Vec<f64>> = rest_g
            .iter()
            .map(|&g| rest_k.iter().map(|&k| m[g][k]).collect())
            .collect();
        pairs.extend(
            assign::optimal(&sub, 0.5)
                .into_iter()
                .map(|(i, j)| (rest_g[i], rest_k[j])),
        );
        fn_ += (t.len() - pairs.len()) as u64;
        fp += (o.len() - pairs.len()) as u64;
        for (g, k) in pairs {
            let (gt, id) = (t[g].0, o[k].id.expect("only regions with an id are scored"));
            if let Some(prev) = last_id.insert(gt, id)
                && prev != id
            {
                if std::env::var_os("TRACK_DEBUG").is_some() {
                    let fresh = !together.keys().any(|k| k.1 == id);
                    let prev_here = o.iter().any(|x| x.id == Some(prev));
                    eprintln!(
                        "switch: frame {frame_no} truth {gt} {prev} -> {id} fresh={fresh} prev_here={prev_here} at {:?}",
                        t[g].1
                    );
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
        tracks_per_object: together.len() as f64 / gts.len().max(1) as f64,
    }
}
