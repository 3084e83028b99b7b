// SPDX-License-Identifier: MPL-2.0
//! Lines and zones, without GStreamer (`objecttracker` counts on them, `motiondetect` ignores its
//! zones): parsing `lines="door:100,400,600,400;…"` and
//! `zones="bay:x1,y1,x2,y2,x3,y3,…;…"`, and turning each track's anchor point, frame after
//! frame, into line crossings (with a direction) and zone entries and exits.
//!
//! Hysteresis: a track's side of a line (inside or outside a zone) only changes once its anchor
//! is at least [`HYSTERESIS`] pixels past the line (the zone's edge), so a box jittering on the
//! line counts once. A crossing counts when the anchor went from one side to the other through
//! the segment itself (not its extension), even if the track was lost in between.

use std::collections::HashMap;

use crate::formats::detection::{LineCount, ZoneCount};

/// Pixels past a line or a zone's edge before a side changes.
pub const HYSTERESIS: f64 = 4.0;

/// Coordinates beyond this many pixels either way are refused: no frame is that large, and a
/// line or zone drawn there is a typo (the distances of points from it would lose all
/// precision, or overflow to infinity and count nothing).
pub const MAX_COORDINATE: f64 = 1_000_000.0;

pub type Point = (f64, f64);

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub a: Point,
    pub b: Point,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub points: Vec<Point>,
}

/// Direction of a crossing. For a line from (x1,y1) to (x2,y2), `in` is from its left to its
/// right as seen looking from the first point to the second, in the picture (y down): for a
/// line drawn left to right, `in` is downward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

fn numbers(what: &str, name: &str, text: &str) -> Result<Vec<f64>, String> {
    text.split(',')
        .map(|n| {
            let v = n
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{what} '{name}': '{}' is not a number", n.trim()))?;
            if v.abs() > MAX_COORDINATE {
                return Err(format!(
                    "{what} '{name}': {} is outside ±{MAX_COORDINATE} pixels; coordinates are the frame's pixels",
                    n.trim()
                ));
            }
            Ok(v)
        })
        .collect()
}

/// Twice the signed area of a polygon (shoelace).
fn doubled_area(points: &[Point]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum()
}

/// Whether the segment a–b passes through the frame `width`×`height` (touching counts):
/// Liang–Barsky clipping of the segment to the frame.
fn segment_meets_frame(a: Point, b: Point, width: f64, height: f64) -> bool {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    // Each edge as (p, q): the segment is inside where p·t <= q.
    for (p, q) in [
        (-dx, a.0),
        (dx, width - a.0),
        (-dy, a.1),
        (dy, height - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    t0 <= t1
}

impl Line {
    /// Whether any of the line lies in a `width`×`height` frame.
    pub fn meets_frame(&self, width: f64, height: f64) -> bool {
        segment_meets_frame(self.a, self.b, width, height)
    }
}

impl Zone {
    /// Whether `p` lies inside the polygon (even-odd rule).
    pub fn contains(&self, p: Point) -> bool {
        inside(self, p)
    }

    /// Whether any of the zone lies in a `width`×`height` frame.
    pub fn meets_frame(&self, width: f64, height: f64) -> bool {
        let n = self.points.len();
        (0..n).any(|i| segment_meets_frame(self.points[i], self.points[(i + 1) % n], width, height))
            || inside(self, (width / 2.0, height / 2.0))
    }
}

/// `name:x,y,…` parts separated by `;` (empty parts ignored).
fn parts<'a>(what: &str, text: &'a str) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut names = Vec::new();
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, coords) = part
            .split_once(':')
            .ok_or_else(|| format!("{what} '{part}': expected NAME:x,y,…"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("{what} '{part}': the name is empty"));
        }
        if names.contains(&name) {
            return Err(format!("{what} '{name}' is given twice"));
        }
        names.push(name);
        out.push((name, coords));
    }
    Ok(out)
}

/// Parses `lines`: `name:x1,y1,x2,y2` separated by `;`.
pub fn parse_lines(text: &str) -> Result<Vec<Line>, String> {
    parts("line", text)?
        .into_iter()
        .map(|(name, coords)| {
            let v = numbers("line", name, coords)?;
            if v.len() != 4 {
                return Err(format!(
                    "line '{name}': expected 4 numbers x1,y1,x2,y2, found {}",
                    v.len()
                ));
            }
            if v[0] == v[2] && v[1] == v[3] {
                return Err(format!("line '{name}': its two points are the same"));
            }
            Ok(Line {
                name: name.to_string(),
                a: (v[0], v[1]),
                b: (v[2], v[3]),
            })
        })
        .collect()
}

/// Parses `zones`: `name:x1,y1,x2,y2,x3,y3[,…]` (a polygon of 3 points or more) separated by `;`.
pub fn parse_zones(text: &str) -> Result<Vec<Zone>, String> {
    parts("zone", text)?
        .into_iter()
        .map(|(name, coords)| {
            let v = numbers("zone", name, coords)?;
            if v.len() < 6 || v.len() % 2 != 0 {
                return Err(format!(
                    "zone '{name}': expected an even count of at least 6 numbers (3 points or more), found {}",
                    v.len()
                ));
            }
            let points: Vec<Point> = v.chunks(2).map(|c| (c[0], c[1])).collect();
            // Less than half a pixel: the points are (nearly) on one line, as a zero-length
            // line would be; nothing could ever be inside.
            if doubled_area(&points).abs() < 1.0 {
                return Err(format!(
                    "zone '{name}': its points enclose no area (they are all on one line)"
                ));
            }
            Ok(Zone {
                name: name.to_string(),
                points,
            })
        })
        .collect()
}

/// Signed distance of `p` from the line through `l` (positive on its right, see [`Direction`]).
fn side_distance(l: &Line, p: Point) -> f64 {
    let (dx, dy) = (l.b.0 - l.a.0, l.b.1 - l.a.1);
    (dx * (p.1 - l.a.1) - dy * (p.0 - l.a.0)) / dx.hypot(dy)
}

/// Whether the segments p1–p2 and q1–q2 intersect (touching counts).
fn segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool {
    let orient =
        |a: Point, b: Point, c: Point| (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0);
    let d1 = orient(q1, q2, p1);
    let d2 = orient(q1, q2, p2);
    let d3 = orient(p1, p2, q1);
    let d4 = orient(p1, p2, q2);
    (d1 * d2 <= 0.0) && (d3 * d4 <= 0.0)
}

fn inside(z: &Zone, p: Point) -> bool {
    let mut inside = false;
    let n = z.points.len();
    for i in 0..n {
        let (a, b) = (z.points[i], z.points[(i + 1) % n]);
        if (a.1 > p.1) != (b.1 > p.1) && p.0 < (b.0 - a.0) * (p.1 - a.1) / (b.1 - a.1) + a.0 {
            inside = !inside;
        }
    }
    inside
}

fn distance_to_edge(z: &Zone, p: Point) -> f64 {
    let n = z.points.len();
    (0..n)
        .map(|i| {
            let (a, b) = (z.points[i], z.points[(i + 1) % n]);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len2 = dx * dx + dy * dy;
            let t = if len2 == 0.0 {
                0.0
            } else {
                (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
            };
            ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Something that happened to a track.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Crossed { line: usize, direction: Direction },
    Entered { zone: usize },
    Exited { zone: usize },
}

/// A track's last settled side of each line (and the point it was last seen there) and
/// whether it is in each zone.
#[derive(Debug, Default, Clone)]
struct TrackPlaces {
    sides: Vec<Option<(bool, Point)>>,
    zones: Vec<Option<bool>>,
}

/// Counts of one stream's lines and zones.
#[derive(Debug, Default)]
pub struct Places {
    pub lines: Vec<Line>,
    pub zones: Vec<Zone>,
    tracks: HashMap<u64, TrackPlaces>,
    /// Per line: crossings in, out.
    pub crossings: Vec<(u64, u64)>,
    /// Per zone: entries, exits.
    pub zone_counts: Vec<(u64, u64)>,
}

impl Places {
    pub fn new(lines: Vec<Line>, zones: Vec<Zone>) -> Places {
        Places {
            crossings: vec![(0, 0); lines.len()],
            zone_counts: vec![(0, 0); zones.len()],
            lines,
            zones,
            tracks: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.zones.is_empty()
    }

    /// Each line with its counts so far, as the `videoai-analytics` meta carries it.
    pub fn line_counts(&self) -> Vec<LineCount> {
        let px = |p: Point| (p.0.round() as i32, p.1.round() as i32);
        self.lines
            .iter()
            .zip(&self.crossings)
            .map(|(l, &(crossed_in, crossed_out))| LineCount {
                name: l.name.clone(),
                from: px(l.a),
                to: px(l.b),
                crossed_in,
                crossed_out,
            })
            .collect()
    }

    /// Each zone with `occupancy` (from [`Places::occupancy`]) and its counts so far.
    pub fn zone_counts(&self, occupancy: &[u64]) -> Vec<ZoneCount> {
        self.zones
            .iter()
            .zip(&self.zone_counts)
            .zip(occupancy)
            .map(|((z, &(entries, exits)), &inside)| ZoneCount {
                name: z.name.clone(),
                points: z
                    .points
                    .iter()
                    .map(|p| (p.0.round() as i32, p.1.round() as i32))
                    .collect(),
                inside,
                entries,
                exits,
            })
            .collect()
    }

    /// Track `id` is at `p` now: what it crossed, entered or left.
    pub fn moved(&mut self, id: u64, p: Point) -> Vec<Event> {
        if self.is_empty() {
            return Vec::new();
        }
        let (nl, nz) = (self.lines.len(), self.zones.len());
        let places = self.tracks.entry(id).or_insert_with(|| TrackPlaces {
            sides: vec![None; nl],
            zones: vec![None; nz],
        });
        let mut events = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            let d = side_distance(line, p);
            if d.abs() < HYSTERESIS {
                continue;
            }
            let right = d > 0.0;
            match places.sides[i] {
                Some((was_right, from)) if was_right != right => {
                    if segments_cross(from, p, line.a, line.b) {
                        let direction = if right { Direction::In } else { Direction::Out };
                        let c = &mut self.crossings[i];
                        match direction {
                            Direction::In => c.0 += 1,
                            Direction::Out => c.1 += 1,
                        }
                        events.push(Event::Crossed { line: i, direction });
                    }
                    places.sides[i] = Some((right, p));
                }
                _ => places.sides[i] = Some((right, p)),
            }
        }
        for (i, zone) in self.zones.iter().enumerate() {
            if distance_to_edge(zone, p) < HYSTERESIS {
                continue;
            }
            let now_inside = inside(zone, p);
            let was = places.zones[i].replace(now_inside);
            match (was, now_inside) {
                // A track first seen inside has entered.
                (Some(false) | None, true) => {
                    self.zone_counts[i].0 += 1;
                    events.push(Event::Entered { zone: i });
                }
                (Some(true), false) => {
                    self.zone_counts[i].1 += 1;
                    events.push(Event::Exited { zone: i });
                }
                _ => {}
            }
        }
        events
    }

    /// Confirmed tracks inside each zone now.
    pub fn occupancy(&self) -> Vec<u64> {
        (0..self.zones.len())
            .map(|i| {
                self.tracks
                    .values()
                    .filter(|t| t.zones.get(i).copied().flatten() == Some(true))
                    .count() as u64
            })
            .collect()
    }

    /// The track ended: it no longer counts (an exit is not invented for it).
    pub fn forget(&mut self, id: u64) {
        self.tracks.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_zones_parse_and_bad_parts_are_named() {
        let l = parse_lines("door:100,400,600,400; gate:0,0,0,10").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].a, (100.0, 400.0));
        assert!(parse_lines("").unwrap().is_empty());
        let err = |r: Result<Vec<Line>, String>| r.unwrap_err();
        assert!(err(parse_lines("door:1,2,3")).contains("line 'door': expected 4 numbers"));
        assert!(err(parse_lines("door:1,2,x,4")).contains("'x' is not a number"));
        assert!(err(parse_lines("1,2,3,4")).contains("expected NAME:x,y"));
        assert!(err(parse_lines("a:1,1,1,1")).contains("the same"));
        assert!(err(parse_lines("a:0,0,1,1;a:0,0,2,2")).contains("given twice"));
        let z = parse_zones("bay:0,0,100,0,100,100,0,100").unwrap();
        assert_eq!(z[0].points.len(), 4);
        assert!(
            parse_zones("bay:0,0,1,1")
                .unwrap_err()
                .contains("zone 'bay'")
        );
        assert!(err(parse_lines("h:320,-1e200,320,1e200")).contains("-1e200 is outside"));
        assert!(
            parse_zones("flat:0,0,100,100,200,200")
                .unwrap_err()
                .contains("no area")
        );
    }

    #[test]
    fn lines_and_zones_outside_a_frame_are_found() {
        let l = parse_lines(
            "in:10,10,20,20;across:-100,50,900,50;out:700,0,800,0;corner:-10,20,20,-10",
        )
        .unwrap();
        let meets: Vec<bool> = l.iter().map(|l| l.meets_frame(640.0, 480.0)).collect();
        assert_eq!(meets, vec![true, true, false, true]);
        let z = parse_zones("around:-10,-10,1000,-10,1000,1000,-10,1000;away:700,0,800,0,800,100")
            .unwrap();
        let meets: Vec<bool> = z.iter().map(|z| z.meets_frame(640.0, 480.0)).collect();
        assert_eq!(meets, vec![true, false]);
    }

    #[test]
    fn a_crossing_counts_once_despite_jitter_and_only_on_the_segment() {
        let mut p = Places::new(parse_lines("door:100,400,600,400").unwrap(), vec![]);
        // Down through the line, jittering on it.
        let mut events = Vec::new();
        for y in [
            380.0, 390.0, 398.0, 402.0, 399.0, 401.0, 403.0, 410.0, 420.0,
        ] {
            events.extend(p.moved(1, (300.0, y)));
        }
        assert_eq!(
            events,
            vec![Event::Crossed {
                line: 0,
                direction: Direction::In
            }]
        );
        // Back up: out.
        assert!(p.moved(1, (300.0, 380.0)).contains(&Event::Crossed {
            line: 0,
            direction: Direction::Out
        }));
        // Beside the segment: no crossing.
        p.moved(2, (700.0, 380.0));
        assert!(p.moved(2, (700.0, 420.0)).is_empty());
        // Lost near the line and seen again far below: still one crossing.
        p.moved(3, (200.0, 300.0));
        assert_eq!(p.moved(3, (210.0, 500.0)).len(), 1);
        assert_eq!(p.crossings, vec![(2, 1)]);
    }

    #[test]
    fn zones_count_entries_exits_and_occupancy() {
        let mut p = Places::new(vec![], parse_zones("bay:0,0,100,0,100,100,0,100").unwrap());
        p.moved(1, (-50.0, 50.0));
        assert_eq!(p.moved(1, (50.0, 50.0)), vec![Event::Entered { zone: 0 }]);
        assert!(p.moved(1, (98.0, 50.0)).is_empty(), "within the hysteresis");
        assert_eq!(p.occupancy(), vec![1]);
        assert_eq!(p.moved(1, (150.0, 50.0)), vec![Event::Exited { zone: 0 }]);
        assert_eq!(p.zone_counts, vec![(1, 1)]);
        assert_eq!(p.occupancy(), vec![0]);
    }
}
