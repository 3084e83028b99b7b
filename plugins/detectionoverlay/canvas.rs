// SPDX-License-Identifier: MPL-2.0
//! Drawing filled rectangles and 8×8 bitmap text into a mapped video frame of any 8-bit
//! RGB/YUV layout, through `GstVideoFormatInfo` (plane, byte offset, pixel stride and
//! subsampling of each component), so one code path serves RGB, BGRx, NV12, I420, ….

use gst_video::prelude::*;

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Relative luminance in 0..=255 (BT.601 weights).
    pub fn luma(self) -> u32 {
        (299 * self.0 as u32 + 587 * self.1 as u32 + 114 * self.2 as u32) / 1000
    }
}

/// Class colours: distinct, saturated, readable with black or white text.
const PALETTE: [Rgb; 16] = [
    Rgb(230, 25, 75),
    Rgb(60, 180, 75),
    Rgb(255, 225, 25),
    Rgb(0, 130, 200),
    Rgb(245, 130, 48),
    Rgb(145, 30, 180),
    Rgb(70, 240, 240),
    Rgb(240, 50, 230),
    Rgb(210, 245, 60),
    Rgb(250, 190, 212),
    Rgb(0, 128, 128),
    Rgb(220, 190, 255),
    Rgb(170, 110, 40),
    Rgb(255, 250, 200),
    Rgb(128, 0, 0),
    Rgb(170, 255, 195),
];

/// The colour of a class: by class id, or (id < 0: ROIs from other elements) by label.
pub fn class_colour(class_id: i32, label: &str) -> Rgb {
    let i = if class_id >= 0 {
        class_id as usize
    } else {
        label
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
    };
    PALETTE[i % PALETTE.len()]
}

/// Where one component of a pixel lives.
#[derive(Debug, Clone, Copy)]
struct Component {
    plane: usize,
    offset: usize,
    pixel_stride: usize,
    w_sub: u32,
    h_sub: u32,
}

/// A colour as the bytes of each component of the frame's format.
#[derive(Debug, Clone, Copy)]
pub struct Pen {
    values: [u8; 4],
}

pub struct Canvas<'a, 'b> {
    frame: &'a mut gst_video::VideoFrameRef<&'b mut gst::BufferRef>,
    components: Vec<Component>,
    yuv: bool,
    width: u32,
    height: u32,
}

impl<'a, 'b> Canvas<'a, 'b> {
    /// A canvas on `frame`; `None` for formats that are not 8 bits per component.
    pub fn new(frame: &'a mut gst_video::VideoFrameRef<&'b mut gst::BufferRef>) -> Option<Self> {
        let finfo = frame.format_info();
        if finfo.bits() != 8 {
            return None;
        }
        let components = (0..finfo.n_components() as usize)
            .map(|c| Component {
                plane: finfo.plane()[c] as usize,
                offset: finfo.poffset()[c] as usize,
                pixel_stride: finfo.pixel_stride()[c] as usize,
                w_sub: finfo.w_sub()[c],
                h_sub: finfo.h_sub()[c],
            })
            .collect();
        Some(Canvas {
            yuv: finfo.is_yuv(),
            width: frame.width(),
            height: frame.height(),
            components,
            frame,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The component values of `c` in this format (YUV: BT.601, limited range; alpha opaque).
    pub fn pen(&self, c: Rgb) -> Pen {
        let (r, g, b) = (c.0 as f32, c.1 as f32, c.2 as f32);
        let values = if self.yuv {
            let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
            let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
            let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
            [y.round() as u8, u.round() as u8, v.round() as u8, 255]
        } else {
            [c.0, c.1, c.2, 255]
        };
        Pen { values }
    }

    /// Fills the rectangle `[x0, x1) × [y0, y1)` (clipped to the frame).
    pub fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, pen: Pen) {
        let x0 = x0.clamp(0, self.width as i64) as u32;
        let x1 = x1.clamp(0, self.width as i64) as u32;
        let y0 = y0.clamp(0, self.height as i64) as u32;
        let y1 = y1.clamp(0, self.height as i64) as u32;
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        for (i, c) in self.components.clone().into_iter().enumerate() {
            let value = pen.values[i.min(3)];
            let stride = self.frame.plane_stride()[c.plane] as usize;
            let Ok(data) = self.frame.plane_data_mut(c.plane as u32) else {
                continue;
            };
            // Subsampled components: every sample the rectangle touches.
            let (cx0, cx1) = (x0 >> c.w_sub, (x1 - 1) >> c.w_sub);
            let (cy0, cy1) = (y0 >> c.h_sub, (y1 - 1) >> c.h_sub);
            for cy in cy0..=cy1 {
                let row = cy as usize * stride + c.offset;
                let start = row + cx0 as usize * c.pixel_stride;
                let end = row + cx1 as usize * c.pixel_stride;
                if end >= data.len() {
                    break;
                }
                if c.pixel_stride == 1 {
                    data[start..=end].fill(value);
                } else {
                    data[start..=end]
                        .iter_mut()
                        .step_by(c.pixel_stride)
                        .for_each(|p| *p = value);
                }
            }
        }
    }

    /// The outline of the rectangle `(x, y, w, h)`, `line` pixels wide, inside it.
    pub fn outline(&mut self, (x, y, w, h): (i64, i64, i64, i64), line: i64, pen: Pen) {
        let line = line.max(1).min(w.max(1)).min(h.max(1));
        self.fill(x, y, x + w, y + line, pen);
        self.fill(x, y + h - line, x + w, y + h, pen);
        self.fill(x, y + line, x + line, y + h - line, pen);
        self.fill(x + w - line, y + line, x + w, y + h - line, pen);
    }

    /// A straight segment from `a` to `b`, `width` pixels wide (square pen), clipped to the
    /// frame first so that far-away end points cost nothing.
    pub fn segment(&mut self, a: (i64, i64), b: (i64, i64), width: i64, pen: Pen) {
        let w = width.max(1);
        let margin = w as f64;
        let bounds = (
            -margin,
            -margin,
            self.width as f64 + margin,
            self.height as f64 + margin,
        );
        let Some((a, b)) = clip_segment((a.0 as f64, a.1 as f64), (b.0 as f64, b.1 as f64), bounds)
        else {
            return;
        };
        let (x0, y0) = (a.0.round() as i64, a.1.round() as i64);
        let (x1, y1) = (b.0.round() as i64, b.1.round() as i64);
        let (dx, dy) = (x1 - x0, y1 - y0);
        let half = w / 2;
        if dx == 0 || dy == 0 {
            // Horizontal or vertical: one rectangle.
            self.fill(
                x0.min(x1) - half,
                y0.min(y1) - half,
                x0.max(x1) - half + w,
                y0.max(y1) - half + w,
                pen,
            );
            return;
        }
        let steps = dx.abs().max(dy.abs());
        for i in 0..=steps {
            let x = x0 + dx * i / steps;
            let y = y0 + dy * i / steps;
            self.fill(x - half, y - half, x - half + w, y - half + w, pen);
        }
    }

    /// Text in the 8×8 font, each font pixel `scale`×`scale`, top-left at (x, y). Characters
    /// outside ASCII are drawn as `?`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, pen: Pen) {
        for (i, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                b'?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            let gx = x + i as i64 * 8 * scale;
            if gx >= self.width as i64 {
                break;
            }
            for (row, bits) in glyph.iter().enumerate() {
                let mut col = 0;
                while col < 8 {
                    if bits >> col & 1 == 0 {
                        col += 1;
                        continue;
                    }
                    // A run of set bits: one rectangle.
                    let run_start = col;
                    while col < 8 && bits >> col & 1 == 1 {
                        col += 1;
                    }
                    let py = y + row as i64 * scale;
                    self.fill(
                        gx + run_start as i64 * scale,
                        py,
                        gx + col as i64 * scale,
                        py + scale,
                        pen,
                    );
                }
            }
        }
    }
}

/// The part of the segment `a`–`b` inside `(x0, y0, x1, y1)` (Liang–Barsky), if any.
fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    (x0, y0, x1, y1): (f64, f64, f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
            continue;
        }
        let t = q / p;
        if p < 0.0 {
            t0 = t0.max(t);
        } else {
            t1 = t1.min(t);
        }
        if t0 > t1 {
            return None;
        }
    }
    Some((
        (a.0 + t0 * dx, a.1 + t0 * dy),
        (a.0 + t1 * dx, a.1 + t1 * dy),
    ))
}

/// Colour of objecttracker's counting lines.
pub const LINE_COLOUR: Rgb = Rgb(255, 214, 0);
/// Colour of objecttracker's zones.
pub const ZONE_COLOUR: Rgb = Rgb(0, 200, 255);

/// Width and height in pixels of `text` at `scale`.
pub fn text_size(text: &str, scale: i64) -> (i64, i64) {
    (text.chars().count() as i64 * 8 * scale, 8 * scale)
}

#[cfg(test)]
mod tests {
    use super::clip_segment;

    #[test]
    fn segments_are_clipped_to_the_frame() {
        let frame = (0.0, 0.0, 100.0, 50.0);
        // Inside: unchanged.
        assert_eq!(
            clip_segment((10.0, 10.0), (90.0, 40.0), frame),
            Some(((10.0, 10.0), (90.0, 40.0)))
        );
        // Far beyond both edges: cut at them.
        assert_eq!(
            clip_segment((-1e9, 25.0), (1e9, 25.0), frame),
            Some(((0.0, 25.0), (100.0, 25.0)))
        );
        // Wholly outside.
        assert_eq!(clip_segment((-10.0, -5.0), (200.0, -1.0), frame), None);
    }
}
