// SPDX-License-Identifier: MPL-2.0
//! The motion detector, without GStreamer: one camera's luma plane in, moving regions out.
//!
//! Per frame:
//! 1. **Cells.** The luma plane is averaged over cells of `cell`×`cell` pixels, reading two rows
//!    of each cell (a quarter and three quarters down it): an object that moves changes them as
//!    it changes the rest, and reading a quarter of the plane (for 8-pixel cells) is what keeps a
//!    1080p frame under half a millisecond. Pixels past the last whole cell on the right and at the bottom
//!    are not watched.
//! 2. **Light.** Each cell's difference from the background, less the median difference over
//!    the watched cells: a change of light on the whole picture (a cloud, the camera's exposure,
//!    a slow ramp) moves the median and nothing else.
//! 3. **Foreground.** Cells that differ from the background by more than `threshold` luma
//!    levels (sensor noise is averaged away over a cell's pixels). Ignore zones are never
//!    foreground.
//! 4. **Moving.** Foreground cells joined into regions (8-connected); a region is moving when it
//!    covers at least `min_cells` and some of its cells also changed since the previous frame
//!    (by more than half the threshold). A foreground region that did not change is something
//!    that stopped, or the ghost of something that left: it is learnt into the background at the
//!    full rate, so it stops being foreground within about a background time.
//! 5. **Background.** A running average of the cells: `bg += rate * (cell - bg)`, with `rate`
//!    the frame's share of the background time; cells of a moving region learn
//!    [`MOVING_SLOWDOWN`] times slower, so a passing object leaves (almost) no ghost behind.
//!
//! More than `shake_fraction` of the watched cells moving at once is a shaking camera: the
//! frame is marked `shaking` (and, being full of motion, is inferred).

use crate::formats::motion::{FrameMotion, Region};
use crate::formats::places::Zone;

/// How much slower the cells of a moving region are learnt into the background.
pub const MOVING_SLOWDOWN: f32 = 8.0;
/// Largest cell side.
pub const MAX_CELL: u32 = 64;
/// Regions reported per frame at most (the largest first); more only make the frame `moving`.
pub const MAX_REGIONS: usize = 32;

/// The detector's settings (the element's properties).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Cell side in pixels (≥ 2).
    pub cell: u32,
    /// Luma levels (0–255) a cell's mean must differ from the background's.
    pub threshold: f32,
    /// Share of the picture a region must cover to count.
    pub min_area: f64,
    /// Share of the watched picture moving at once above which the camera is shaking.
    pub shake_fraction: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cell: 8,
            threshold: 10.0,
            min_area: 0.001,
            shake_fraction: 0.5,
        }
    }
}

/// One camera's detector; made for one frame size.
pub struct Detector {
    config: Config,
    cols: usize,
    rows: usize,
    /// Watched cells (not in an ignore zone) and their count.
    watched: Vec<bool>,
    watched_count: usize,
    min_cells: usize,
    bg: Vec<f32>,
    prev: Vec<f32>,
    means: Vec<f32>,
    sums: Vec<u32>,
    /// Per cell: 0 = background, else the region's number + 1 (scratch).
    label: Vec<u32>,
    stack: Vec<usize>,
    histogram: Vec<u32>,
    started: bool,
}

impl Detector {
    /// A detector for `width`×`height` frames; cells whose centre lies in one of `ignore` are
    /// not watched.
    pub fn new(config: Config, width: u32, height: u32, ignore: &[Zone]) -> Result<Self, String> {
        if !(2..=MAX_CELL).contains(&config.cell) {
            return Err(format!(
                "cell size {} is outside 2 to {MAX_CELL} pixels",
                config.cell
            ));
        }
        let (cols, rows) = (
            (width / config.cell) as usize,
            (height / config.cell) as usize,
        );
        if cols == 0 || rows == 0 {
            return Err(format!(
                "a {width}x{height} frame holds no whole {c}x{c} cell (lower cell-size)",
                c = config.cell
            ));
        }
        let n = cols * rows;
        let c = config.cell as f64;
        let watched: Vec<bool> = (0..n)
            .map(|i| {
                let centre = (((i % cols) as f64 + 0.5) * c, ((i / cols) as f64 + 0.5) * c);
                !ignore.iter().any(|z| z.contains(centre))
            })
            .collect();
        let watched_count = watched.iter().filter(|w| **w).count();
        let min_cells = ((config.min_area * n as f64).ceil() as usize).max(1);
        Ok(Detector {
            config,
            cols,
            rows,
            watched,
            watched_count,
            min_cells,
            bg: vec![0.0; n],
            prev: vec![0.0; n],
            means: vec![0.0; n],
            sums: vec![0; n],
            label: vec![0; n],
            stack: Vec::new(),
            histogram: vec![0; 511],
            started: false,
        })
    }

    /// New thresholds (the cell size stays): the background is kept.
    pub fn set_config(&mut self, config: Config) {
        let cell = self.config.cell;
        self.config = Config { cell, ..config };
        let n = self.cols * self.rows;
        self.min_cells = ((config.min_area * n as f64).ceil() as usize).max(1);
    }

    /// Share of the cells that are watched (1.0 without ignore zones).
    pub fn watched_share(&self) -> f64 {
        self.watched_count as f64 / self.watched.len() as f64
    }

    /// Forgets the background (the next frame is learnt as it is: a seek, a new stream).
    pub fn reset(&mut self) {
        self.started = false;
    }

    /// Looks at one frame: `luma` is the luma plane with `stride` bytes per row, `rate` the
    /// share of the background time this frame stands for (its duration over the background
    /// time, at most 1).
    pub fn analyse(&mut self, luma: &[u8], stride: usize, rate: f32) -> (FrameMotion, Vec<Region>) {
        self.cell_means(luma, stride);
        if !self.started {
            self.started = true;
            self.bg.copy_from_slice(&self.means);
            self.prev.copy_from_slice(&self.means);
            return (FrameMotion::default(), Vec::new());
        }
        let offset = self.light_offset();
        let threshold = self.config.threshold;
        let mut foreground = 0usize;
        for (((label, m), b), w) in self
            .label
            .iter_mut()
            .zip(&self.means)
            .zip(&self.bg)
            .zip(&self.watched)
        {
            let fg = *w && (m - b - offset).abs() > threshold;
            // u32::MAX: foreground, not labelled yet.
            *label = if fg { u32::MAX } else { 0 };
            foreground += fg as usize;
        }
        let mut regions = Vec::new();
        let mut moving_cells = 0usize;
        let mut moving_regions = Vec::new();
        if foreground > 0 {
            let mut next = 0u32;
            for start in 0..self.label.len() {
                if self.label[start] != u32::MAX {
                    continue;
                }
                next += 1;
                let (cells, changed, bbox) = self.fill(start, next);
                if cells >= self.min_cells && changed {
                    moving_cells += cells;
                    moving_regions.push(next);
                    let (x0, y0, x1, y1) = bbox;
                    let c = self.config.cell;
                    let area = (x1 - x0 + 1) * (y1 - y0 + 1);
                    regions.push(Region {
                        rect: (
                            x0 as u32 * c,
                            y0 as u32 * c,
                            (x1 - x0 + 1) as u32 * c,
                            (y1 - y0 + 1) as u32 * c,
                        ),
                        fraction: cells as f64 / area as f64,
                    });
                }
            }
        }
        // Learn: moving regions slowly, the rest (background, stopped objects, ghosts) at the
        // full rate.
        let rate = rate.clamp(0.0, 1.0);
        let slow = rate / MOVING_SLOWDOWN;
        if moving_regions.is_empty() {
            for (b, m) in self.bg.iter_mut().zip(&self.means) {
                *b += rate * (m - *b);
            }
        } else {
            for ((b, m), l) in self.bg.iter_mut().zip(&self.means).zip(&self.label) {
                let r = if *l != 0 && moving_regions.binary_search(l).is_ok() {
                    slow
                } else {
                    rate
                };
                *b += r * (m - *b);
            }
        }
        std::mem::swap(&mut self.prev, &mut self.means);
        let fraction = if self.watched_count == 0 {
            0.0
        } else {
            moving_cells as f64 / self.watched_count as f64
        };
        let count = regions.len() as u32;
        if regions.len() > MAX_REGIONS {
            regions.sort_by(|a, b| {
                let area = |r: &Region| r.rect.2 as u64 * r.rect.3 as u64;
                area(b).cmp(&area(a))
            });
            regions.truncate(MAX_REGIONS);
        }
        let motion = FrameMotion {
            moving: count > 0,
            fraction,
            regions: count,
            shaking: fraction > self.config.shake_fraction,
        };
        (motion, regions)
    }

    /// The mean of every cell into `means`, from two of its rows (a quarter and three quarters
    /// down the cell).
    fn cell_means(&mut self, luma: &[u8], stride: usize) {
        let cell = self.config.cell as usize;
        let width = self.cols * cell;
        let sampled = [cell / 4, cell * 3 / 4];
        let scale = 1.0 / (2 * cell) as f32;
        for r in 0..self.rows {
            let sums = &mut self.sums[r * self.cols..(r + 1) * self.cols];
            sums.fill(0);
            for k in sampled {
                let y = r * cell + k;
                let row = &luma[y * stride..y * stride + width];
                add_row(sums, row, cell);
            }
            for (m, s) in self.means[r * self.cols..(r + 1) * self.cols]
                .iter_mut()
                .zip(sums.iter())
            {
                *m = *s as f32 * scale;
            }
        }
    }

    /// The median difference between the cells and the background over the watched cells
    /// (whole luma levels, from a histogram: no sort).
    fn light_offset(&mut self) -> f32 {
        self.histogram.fill(0);
        for ((m, b), w) in self.means.iter().zip(&self.bg).zip(&self.watched) {
            if *w {
                // Rounded by the cast of a non-negative value (f32::round is a libm call
                // on baseline x86-64).
                let d = (m - b).clamp(-255.0, 255.0) + 255.5;
                self.histogram[(d as usize).min(510)] += 1;
            }
        }
        let half = self.watched_count.div_ceil(2) as u32;
        let mut seen = 0u32;
        for (bin, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= half {
                return bin as f32 - 255.0;
            }
        }
        0.0
    }

    /// Labels the foreground region holding cell `start` with `label`: its size, whether any
    /// of its cells changed since the previous frame, and its bounding box in cells.
    fn fill(&mut self, start: usize, label: u32) -> (usize, bool, (usize, usize, usize, usize)) {
        let (cols, rows) = (self.cols, self.rows);
        let half = self.config.threshold / 2.0;
        let mut cells = 0usize;
        let mut changed = false;
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        self.stack.clear();
        self.stack.push(start);
        self.label[start] = label;
        while let Some(i) = self.stack.pop() {
            cells += 1;
            changed |= (self.means[i] - self.prev[i]).abs() > half;
            let (x, y) = (i % cols, i / cols);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            for ny in y.saturating_sub(1)..=(y + 1).min(rows - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(cols - 1) {
                    let j = ny * cols + nx;
                    if self.label[j] == u32::MAX {
                        self.label[j] = label;
                        self.stack.push(j);
                    }
                }
            }
        }
        (cells, changed, (x0, y0, x1, y1))
    }
}

/// Adds each run of `cell` bytes of `row` to its cell's sum: the hot loop of the detector.
/// Cells of a multiple of 8 pixels take 16 bytes at a time on x86-64 (SSE2's sum of absolute
/// differences against zero gives the sums of both 8-byte halves in one instruction; SSE2 is
/// part of x86-64, so no run-time check); other cells and other machines add bytes one by one.
#[inline]
fn add_row(sums: &mut [u32], row: &[u8], cell: usize) {
    #[cfg(target_arch = "x86_64")]
    if cell.is_multiple_of(8) {
        add_row_sse2(sums, row, cell);
        return;
    }
    for (s, chunk) in sums.iter_mut().zip(row.chunks_exact(cell)) {
        *s += chunk.iter().map(|&b| b as u32).sum::<u32>();
    }
}

#[cfg(target_arch = "x86_64")]
fn add_row_sse2(sums: &mut [u32], row: &[u8], cell: usize) {
    use std::arch::x86_64::{
        __m128i, _mm_cvtsi128_si32, _mm_extract_epi16, _mm_loadu_si128, _mm_sad_epu8,
        _mm_setzero_si128,
    };
    let groups_per_cell = cell / 8;
    let groups = (sums.len() * cell / 8).min(row.len() / 8);
    let pairs = groups / 2;
    // SAFETY: SSE2 is always there on x86-64; each load reads the 16 bytes at 16 * k, and
    // 16 * k + 16 <= 8 * groups <= row.len().
    unsafe {
        let zero = _mm_setzero_si128();
        for k in 0..pairs {
            let v = _mm_loadu_si128(row.as_ptr().add(16 * k) as *const __m128i);
            let sad = _mm_sad_epu8(v, zero);
            let low = _mm_cvtsi128_si32(sad) as u32;
            let high = _mm_extract_epi16::<4>(sad) as u32;
            sums[2 * k / groups_per_cell] += low;
            sums[(2 * k + 1) / groups_per_cell] += high;
        }
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        sums[g / groups_per_cell] += row[8 * g..8 * g + 8].iter().map(|&b| b as u32).sum::<u32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::places::parse_zones;

    const W: usize = 320;
    const H: usize = 240;

    /// A frame: a textured background (so motion is visible), `light` added, sensor noise of
    /// ±`noise` from `seed`, and a bright square at `square` (x, y, side).
    fn frame(light: i32, noise: i32, seed: u64, square: Option<(usize, usize, usize)>) -> Vec<u8> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut out = vec![0u8; W * H];
        for y in 0..H {
            for x in 0..W {
                // 16-pixel squares (coarser than a cell, as a real scene's edges are) and fine
                // texture.
                let block = ((x / 16) as u64 * 7919 + (y / 16) as u64 * 104729) % 9973;
                let base = 50 + (block % 130) as i32 + ((x * 7 + y * 3) % 20) as i32;
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let n = if noise > 0 {
                    (s % (2 * noise as u64 + 1)) as i32 - noise
                } else {
                    0
                };
                let mut v = base + light + n;
                if let Some((sx, sy, side)) = square
                    && (sx..sx + side).contains(&x)
                    && (sy..sy + side).contains(&y)
                {
                    v = 230 + n;
                }
                out[y * W + x] = v.clamp(0, 255) as u8;
            }
        }
        out
    }

    fn detector(ignore: &str) -> Detector {
        Detector::new(
            Config::default(),
            W as u32,
            H as u32,
            &parse_zones(ignore).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn noise_and_a_slow_light_ramp_are_not_motion() {
        let mut d = detector("");
        for i in 0..300u64 {
            // 0 to +60 luma levels over 300 frames, with ±12 levels of noise.
            let (m, regions) = d.analyse(&frame(i as i32 / 5, 12, i, None), W, 1.0 / 30.0);
            assert!(
                !m.moving && regions.is_empty(),
                "frame {i}: {m:?} {regions:?}"
            );
        }
    }

    #[test]
    fn a_moving_square_is_a_region_where_it_is() {
        let mut d = detector("");
        for i in 0..10u64 {
            d.analyse(&frame(0, 4, i, None), W, 1.0 / 30.0);
        }
        for step in 0..20usize {
            let (x, y) = (40 + 6 * step, 100);
            let (m, regions) = d.analyse(
                &frame(0, 4, 100 + step as u64, Some((x, y, 40))),
                W,
                1.0 / 30.0,
            );
            assert!(m.moving && !m.shaking, "step {step}: {m:?}");
            assert_eq!(regions.len(), 1, "step {step}: {regions:?}");
            let (rx, ry, rw, rh) = regions[0].rect;
            // The square, to a cell (8 pixels) either way.
            assert!(
                (rx as i64 - x as i64).abs() <= 8 && (ry as i64 - y as i64).abs() <= 8,
                "{regions:?} at {x},{y}"
            );
            assert!(
                (rw as i64 - 40).abs() <= 16 && (rh as i64 - 40).abs() <= 16,
                "{regions:?}"
            );
        }
    }

    #[test]
    fn something_that_stops_stops_being_motion_and_leaves_no_ghost_when_it_goes() {
        let mut d = detector("");
        for i in 0..10u64 {
            d.analyse(&frame(0, 4, i, None), W, 1.0 / 30.0);
        }
        // It arrives and stays: motion on arrival only.
        let (m, _) = d.analyse(&frame(0, 4, 10, Some((100, 100, 40))), W, 1.0 / 30.0);
        assert!(m.moving);
        let still: Vec<bool> = (11..41u64)
            .map(|i| {
                d.analyse(&frame(0, 4, i, Some((100, 100, 40))), W, 1.0 / 30.0)
                    .0
                    .moving
            })
            .collect();
        assert!(still.iter().all(|m| !m), "{still:?}");
        // Learnt within a background time (30 frames at 1/30): it leaving is motion once,
        // then nothing.
        for i in 41..80u64 {
            d.analyse(&frame(0, 4, i, Some((100, 100, 40))), W, 1.0 / 30.0);
        }
        assert!(d.analyse(&frame(0, 4, 80, None), W, 1.0 / 30.0).0.moving);
        let after: Vec<bool> = (81..120u64)
            .map(|i| d.analyse(&frame(0, 4, i, None), W, 1.0 / 30.0).0.moving)
            .collect();
        assert!(after.iter().all(|m| !m), "{after:?}");
    }

    #[test]
    fn ignore_zones_hold_and_a_shaking_camera_is_flagged() {
        let mut d = detector("clock:0,0,160,0,160,240,0,240");
        assert!((d.watched_share() - 0.5).abs() < 0.01);
        for i in 0..10u64 {
            d.analyse(&frame(0, 4, i, None), W, 1.0 / 30.0);
        }
        for step in 0..10usize {
            let (m, _) = d.analyse(
                &frame(0, 4, 20 + step as u64, Some((20 + 5 * step, 100, 40))),
                W,
                1.0 / 30.0,
            );
            assert!(!m.moving, "in the ignore zone, step {step}: {m:?}");
        }
        // The whole picture jumps: shaking.
        let mut d = detector("");
        for i in 0..10u64 {
            d.analyse(&frame(0, 4, i, None), W, 1.0 / 30.0);
        }
        let shifted: Vec<u8> = frame(0, 4, 50, None)
            .chunks(W)
            .flat_map(|row| {
                row[12..]
                    .iter()
                    .chain(&row[..12])
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        let (m, _) = d.analyse(&shifted, W, 1.0 / 30.0);
        assert!(m.moving && m.shaking, "{m:?}");
    }

    #[test]
    fn cells_sum_the_same_both_ways() {
        let row: Vec<u8> = (0..200u32).map(|i| (i * 37 % 256) as u8).collect();
        for cell in [8usize, 16, 24, 40] {
            let n = row.len() / cell;
            let (mut fast, mut slow) = (vec![0u32; n], vec![0u32; n]);
            add_row(&mut fast, &row, cell);
            for (s, c) in slow.iter_mut().zip(row.chunks_exact(cell)) {
                *s = c.iter().map(|&b| b as u32).sum();
            }
            assert_eq!(fast, slow, "cell {cell}");
        }
        let full = vec![255u8; MAX_CELL as usize];
        let mut one = vec![0u32; 1];
        add_row(&mut one, &full, MAX_CELL as usize);
        assert_eq!(one[0], 255 * MAX_CELL);
        assert!(Detector::new(Config::default(), 4, 4, &[]).is_err());
    }
}
