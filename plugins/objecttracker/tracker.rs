// SPDX-License-Identifier: MPL-2.0
//! Tracks of one stream, without GStreamer: ByteTrack (Zhang et al., 2022) or a greedy IoU
//! tracker.
//!
//! ByteTrack, per frame with detections:
//! 1. every track's Kalman filter predicts where its object is now;
//! 2. high-confidence detections (≥ `high`) are matched to confirmed, lost and tentative
//!    tracks (optimal assignment on IoU, at least `match_iou`, within the motion model's gate,
//!    see [`GATE`](super::kalman::GATE), maximising the overlap above the threshold as
//!    ByteTrack's `lapjv` does, see [`assign::optimal_above`]; a lost track's overlap weighs
//!    0.9, see [`LOST_WEIGHT`]; tentative tracks take part, see [`Tracker::update`]);
//! 3. low-confidence detections (≥ `low`) are matched to the confirmed tracks still unmatched
//!    (IoU ≥ 0.5, within the gate): an object half hidden keeps its track instead of being
//!    dropped;
//! 4. confirmed tracks still unmatched become lost (their box keeps its height from then on,
//!    as in ByteTrack), tentative ones end (ByteTrack matches them in a stage of their own
//!    after the first; here they are in the first);
//! 5. remaining high detections of at least `start` (ByteTrack's `det_thresh`: `high` +
//!    `new-track-margin`, 0.6 by default) start tentative tracks, confirmed from their second
//!    matched frame on (tracks started on the stream's first frame at once, as in ByteTrack)
//!    and reported confirmed after `min_hits` ([`Track::shown`]);
//! 6. tracks lost longer than `max_lost_ns` end.
//!
//! `iou` mode matches greedily on the last seen box, one stage, no motion model.
//! A frame without new detections (`onnxinfer interval`) only moves the motion model on.

use super::assign::{self, Pair};
use super::kalman::{Gate, Kalman, Rect};

/// A lost track's overlap counts this much against a followed track's: where a lost track's
/// prediction passes over a visible object followed by another track (two people crossing,
/// one hidden), the visible one keeps its track; a lost track whose object is back still
/// overlaps its detection far better than any neighbour does. Measured (ID switches on the
/// crossing scene of tests/objecttracker; at 100 objects in `make bench-objecttracker`): plain
/// IoU as ByteTrack, 2 and 1; followed tracks matched first, 0 and 48; this weight, 0 and 1.
const LOST_WEIGHT: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    ByteTrack,
    Iou,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    Tentative,
    Confirmed,
    Lost,
}

impl TrackState {
    pub fn name(self) -> &'static str {
        match self {
            TrackState::Tentative => "tentative",
            TrackState::Confirmed => "confirmed",
            TrackState::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub algorithm: Algorithm,
    pub high: f64,
    pub low: f64,
    /// Least confidence for a high detection left unmatched to start a track (≥ `high`).
    pub start: f64,
    pub match_iou: f64,
    pub max_lost_ns: u64,
    pub min_hits: u32,
    pub class_aware: bool,
}

/// A detection as the tracker sees it.
#[derive(Debug, Clone)]
pub struct Det {
    pub rect: Rect,
    pub class_id: i32,
    pub label: String,
    pub confidence: f64,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    kalman: Kalman,
    /// The last box a detection gave.
    pub last: Rect,
    pub class_id: i32,
    pub label: String,
    pub confidence: f64,
    hits: u32,
    pub state: TrackState,
    /// When it was last matched (ns, the stream's running time).
    pub seen_ns: u64,
}

impl Track {
    /// The state to report with `min_hits`: a track matched like a confirmed one but seen on
    /// fewer than `min_hits` frames is still tentative. Reporting a track late does not
    /// change whom it follows, only that its first, least certain frames (in a crowd, before it
    /// has a velocity) do not carry its id.
    pub fn shown(&self, min_hits: u32) -> TrackState {
        if self.state == TrackState::Confirmed && self.hits < min_hits {
            TrackState::Tentative
        } else {
            self.state
        }
    }

    /// Where the track is now: the motion model's box (ByteTrack) or the last one seen.
    pub fn rect(&self, algorithm: Algorithm) -> Rect {
        match algorithm {
            Algorithm::ByteTrack => self.kalman.rect(),
            Algorithm::Iou => self.last,
        }
    }
}

/// What became of a frame's detections: per detection, the index in [`Tracker::tracks`] of
/// the track it belongs to.
pub type Matches = Vec<Option<usize>>;

pub struct Tracker {
    pub config: Config,
    pub tracks: Vec<Track>,
    next_id: u64,
    /// Tracks started so far (ids are never reused).
    pub created: u64,
    /// Ids of the tracks the last frame ended.
    pub ended: Vec<u64>,
    /// Frames with detections so far.
    updates: u64,
    /// Per track, its gate on this frame (ByteTrack; taken after the prediction).
    gates: Vec<Option<Gate>>,
}

impl Tracker {
    pub fn new(config: Config) -> Tracker {
        Tracker {
            config,
            tracks: Vec::new(),
            next_id: 1,
            created: 0,
            ended: Vec::new(),
            updates: 0,
            gates: Vec::new(),
        }
    }

    /// The id the next track will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Ids from here on start at `next` (never reusing an id after a reset).
    pub fn skip_ids_to(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    /// The pairs of the tracks `ts` and the detections `ds` that may be matched at `min_iou`
    /// (as indices into `ts` and `ds`): boxes that overlap, of one class when class-aware,
    /// within the track's gate; a lost track's overlap weighs [`LOST_WEIGHT`].
    fn candidates(&self, ts: &[usize], ds: &[usize], dets: &[Det], min_iou: f64) -> Vec<Pair> {
        let rows: Vec<Rect> = ts
            .iter()
            .map(|&t| self.tracks[t].rect(self.config.algorithm))
            .collect();
        let cols: Vec<Rect> = ds.iter().map(|&d| dets[d].rect).collect();
        assign::overlapping(&rows, &cols)
            .into_iter()
            .filter_map(|Pair { row, col, overlap }| {
                let (t, d) = (ts[row], &dets[ds[col]]);
                let track = &self.tracks[t];
                if self.config.class_aware && d.class_id != track.class_id {
                    return None;
                }
                let gate = self.gates.get(t).and_then(Option::as_ref);
                if gate.is_some_and(|g| !g.admits(&d.rect)) {
                    return None;
                }
                let overlap = if track.state == TrackState::Lost {
                    overlap * LOST_WEIGHT
                } else {
                    overlap
                };
                assign::candidate(overlap, min_iou).then_some(Pair { row, col, overlap })
            })
            .collect()
    }

    /// Matches the tracks `ts` to the detections `ds`; the pairs (track, detection) as indices
    /// into `tracks` and `dets`.
    fn stage(&self, ts: &[usize], ds: &[usize], dets: &[Det], min_iou: f64) -> Vec<(usize, usize)> {
        let pairs = self.candidates(ts, ds, dets, min_iou);
        let (rows, cols) = (ts.len(), ds.len());
        let pairs = match self.config.algorithm {
            Algorithm::ByteTrack => assign::optimal_above(rows, cols, &pairs, min_iou),
            Algorithm::Iou => assign::greedy(rows, cols, pairs, min_iou),
        };
        pairs.into_iter().map(|(r, c)| (ts[r], ds[c])).collect()
    }

    fn hit(&mut self, t: usize, det: &Det, now_ns: u64) {
        // Matched like a confirmed track after two frames (see `Track::shown` for reporting).
        let min_hits = self.config.min_hits.min(2);
        let track = &mut self.tracks[t];
        if self.config.algorithm == Algorithm::ByteTrack {
            track.kalman.update(&det.rect);
        }
        track.last = det.rect;
        track.confidence = det.confidence;
        track.hits += 1;
        track.seen_ns = now_ns;
        track.state = if track.hits >= min_hits || track.state != TrackState::Tentative {
            TrackState::Confirmed
        } else {
            TrackState::Tentative
        };
    }

    /// A frame with new detections at `now_ns` (the stream's running time).
    pub fn update(&mut self, dets: &[Det], now_ns: u64) -> Matches {
        let cfg = self.config;
        if cfg.algorithm == Algorithm::ByteTrack {
            for t in &mut self.tracks {
                t.kalman.predict();
            }
            self.gates.clear();
            self.gates
                .extend(self.tracks.iter().map(|t| t.kalman.gate()));
        }
        let mut matches: Matches = vec![None; dets.len()];
        let high: Vec<usize> = (0..dets.len())
            .filter(|&d| dets[d].confidence >= cfg.high)
            .collect();
        let low: Vec<usize> = (0..dets.len())
            .filter(|&d| dets[d].confidence >= cfg.low && dets[d].confidence < cfg.high)
            .collect();
        let of_state = |tracks: &[Track], s: &[TrackState]| -> Vec<usize> {
            (0..tracks.len())
                .filter(|&t| s.contains(&tracks[t].state))
                .collect()
        };
        let mut matched_tracks = vec![false; self.tracks.len()];
        let take = |tracker: &mut Tracker,
                    pairs: Vec<(usize, usize)>,
                    matches: &mut Matches,
                    matched_tracks: &mut [bool]| {
            for (t, d) in pairs {
                tracker.hit(t, &dets[d], now_ns);
                matched_tracks[t] = true;
                matches[d] = Some(t);
            }
        };

        // Stage 1: high detections against confirmed, lost and tentative tracks (a lost track's
        // overlap weighs LOST_WEIGHT); the IoU tracker: every track, one stage.
        //
        // Tentative tracks (started on the last frame) take part, unlike ByteTrack, which
        // matches them only to the detections stage 1 left: an object that comes out from
        // behind another, or is first seen beside an object that is missed for a frame, was
        // followed for one frame by its new track and then lost its detection to the lost
        // track whose prediction passed over it (which then followed the wrong object). In the
        // pool, the new track keeps the detection it overlaps best. Measured on the scenes of
        // tests/objecttracker (parting pairs: 11 -> 5 identity switches over 40 pairs, before
        // the gate; a mix of 16 objects with gaps: 10 -> 7 over 8 scenes) and at 1000 objects in
        // `make bench-objecttracker` (69 -> 66 on its own).
        match cfg.algorithm {
            Algorithm::ByteTrack => {
                let pool = of_state(
                    &self.tracks,
                    &[
                        TrackState::Confirmed,
                        TrackState::Lost,
                        TrackState::Tentative,
                    ],
                );
                let pairs = self.stage(&pool, &high, dets, cfg.match_iou);
                take(self, pairs, &mut matches, &mut matched_tracks);
            }
            Algorithm::Iou => {
                let all: Vec<usize> = (0..self.tracks.len()).collect();
                let pairs = self.stage(&all, &high, dets, cfg.match_iou);
                take(self, pairs, &mut matches, &mut matched_tracks);
            }
        }

        if cfg.algorithm == Algorithm::ByteTrack {
            // Stage 2: low detections keep confirmed tracks going.
            let confirmed: Vec<usize> = of_state(&self.tracks, &[TrackState::Confirmed])
                .into_iter()
                .filter(|&t| !matched_tracks[t])
                .collect();
            let pairs = self.stage(&confirmed, &low, dets, 0.5);
            take(self, pairs, &mut matches, &mut matched_tracks);
        }

        // Unmatched tracks: confirmed ones are lost, tentative ones dropped (ByteTrack; the IoU
        // tracker keeps them lost too).
        let mut keep = vec![true; self.tracks.len()];
        for (t, track) in self.tracks.iter_mut().enumerate() {
            if matched_tracks[t] {
                continue;
            }
            match track.state {
                TrackState::Tentative if cfg.algorithm == Algorithm::ByteTrack => keep[t] = false,
                TrackState::Tentative | TrackState::Confirmed => {
                    track.state = TrackState::Lost;
                    // ByteTrack: an object out of sight does not keep growing or shrinking
                    // (also on the frames `carry` moves on).
                    track.kalman.hold_height();
                }
                TrackState::Lost => {}
            }
            if track.state == TrackState::Lost
                && now_ns.saturating_sub(track.seen_ns) > cfg.max_lost_ns
            {
                keep[t] = false;
            }
        }

        // New tracks from the high detections left that are sure enough (`start`).
        for &d in &high {
            if matches[d].is_some() {
                continue;
            }
            let det = &dets[d];
            // Written to refuse NaN too.
            if !(det.rect[2] > 0.0 && det.rect[3] > 0.0 && det.confidence >= cfg.start) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.created += 1;
            self.tracks.push(Track {
                id,
                kalman: Kalman::new(&det.rect),
                last: det.rect,
                class_id: det.class_id,
                label: det.label.clone(),
                confidence: det.confidence,
                hits: 1,
                // ByteTrack: the objects of the first frame are tracks at once (no frame before
                // could have started them).
                state: if cfg.min_hits <= 1 || self.updates == 0 {
                    TrackState::Confirmed
                } else {
                    TrackState::Tentative
                },
                seen_ns: now_ns,
            });
            keep.push(true);
            matches[d] = Some(self.tracks.len() - 1);
        }

        self.updates += 1;
        // Drop the ended tracks, renumbering the matches.
        self.ended.clear();
        self.ended.extend(
            self.tracks
                .iter()
                .zip(&keep)
                .filter(|(_, k)| !**k)
                .map(|(t, _)| t.id),
        );
        let mut new_index = vec![None; self.tracks.len()];
        let mut n = 0;
        for (i, k) in keep.iter().enumerate() {
            if *k {
                new_index[i] = Some(n);
                n += 1;
            }
        }
        let mut i = 0;
        self.tracks.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        for m in &mut matches {
            *m = m.and_then(|t| new_index[t]);
        }
        matches
    }

    /// A frame without new detections (results carried over): the motion model moves on;
    /// nothing is matched, aged or lost. The carried-over boxes get the tracks whose last box
    /// they are.
    pub fn carry(&mut self, dets: &[Det]) -> Matches {
        self.ended.clear();
        if self.config.algorithm == Algorithm::ByteTrack {
            for t in &mut self.tracks {
                t.kalman.predict();
            }
        }
        let active: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| self.tracks[t].state != TrackState::Lost)
            .collect();
        let lasts: Vec<Rect> = active.iter().map(|&t| self.tracks[t].last).collect();
        let rects: Vec<Rect> = dets.iter().map(|d| d.rect).collect();
        let pairs = assign::overlapping(&lasts, &rects);
        let mut matches = vec![None; dets.len()];
        for (r, c) in assign::greedy(active.len(), dets.len(), pairs, 0.5) {
            matches[c] = Some(active[r]);
        }
        matches
    }

    /// Tracks lost for at most `within_ns` that were reported confirmed before (for
    /// `emit-lost`).
    pub fn recently_lost(&self, now_ns: u64, within_ns: u64) -> impl Iterator<Item = &Track> {
        let min_hits = self.config.min_hits;
        self.tracks.iter().filter(move |t| {
            t.state == TrackState::Lost
                && t.hits >= min_hits
                && now_ns.saturating_sub(t.seen_ns) <= within_ns
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f64, y: f64) -> Det {
        Det {
            rect: [x, y, 40.0, 80.0],
            class_id: 0,
            label: "person".into(),
            confidence: 0.9,
        }
    }

    #[test]
    fn a_missed_object_s_track_does_not_take_a_neighbour_across_its_path() {
        let mut t = Tracker::new(Config {
            algorithm: Algorithm::ByteTrack,
            high: 0.5,
            low: 0.1,
            start: 0.6,
            match_iou: 0.2,
            max_lost_ns: 1_000_000_000,
            min_hits: 2,
            class_aware: true,
        });
        // Walking right at 2 px a frame.
        for i in 0..16u64 {
            let m = t.update(&[det(100.0 + 2.0 * i as f64, 100.0)], i * 40_000_000);
            assert_eq!(m[0].map(|k| t.tracks[k].id), Some(1));
        }
        // Missed; a neighbour 35 px across its path overlaps its prediction (IoU 0.39, above
        // the match threshold) but is outside its gate: it starts a track of its own.
        let m = t.update(&[det(132.0, 135.0)], 16 * 40_000_000);
        let id = m[0].map(|k| t.tracks[k].id);
        assert_eq!(id, Some(2), "{:?}", t.tracks);
        // The walker, seen again on its path, is still track 1.
        let m = t.update(&[det(134.0, 100.0), det(132.0, 135.0)], 17 * 40_000_000);
        assert_eq!(m[0].map(|k| t.tracks[k].id), Some(1));
        assert_eq!(m[1].map(|k| t.tracks[k].id), Some(2));
    }
}
