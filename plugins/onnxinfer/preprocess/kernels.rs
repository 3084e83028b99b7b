// SPDX-License-Identifier: MPL-2.0
//! The pixel kernels of the hot path: bilinear taps in fixed point (OpenCV `INTER_LINEAR`
//! weights), row access without bounds checks once a row is known to be long enough, the YUV
//! matrices, and how a value is stored in the tensor's element type.

use gst_video::{VideoColorMatrix, VideoColorRange};

use super::Layout;

/// One tap: offsets of the two neighbours (bytes) and the weight of the second.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tap {
    pub(super) i0: usize,
    pub(super) i1: usize,
    /// Weight of the second neighbour in 1/2048ths (OpenCV's 11-bit resize coefficients).
    pub(super) w: u32,
}

/// Fixed-point scale of tap weights.
pub(super) const WEIGHT_ONE: u32 = 2048;
/// Value of a bilinear sum (two weighted stages) per unit of input.
pub(super) const BILINEAR_SCALE: f32 = 1.0 / (WEIGHT_ONE * WEIGHT_ONE) as f32;

/// Taps for `dst_len` outputs over the source samples `[start, start + len)` (of a plane whose
/// samples are `step` bytes apart), OpenCV `INTER_LINEAR` geometry.
pub(super) fn taps(start: f64, len: f64, dst_len: usize, limit: usize, step: usize) -> Vec<Tap> {
    let scale = len / dst_len as f64;
    let lo = start.floor().max(0.0);
    let hi = ((start + len).ceil() - 1.0).clamp(lo, (limit - 1) as f64);
    (0..dst_len)
        .map(|d| {
            let s = (start + (d as f64 + 0.5) * scale - 0.5).clamp(lo, hi);
            let i0 = s.floor() as usize;
            let i1 = (i0 + 1).min(hi as usize);
            Tap {
                i0: i0 * step,
                i1: i1 * step,
                w: ((s - i0 as f64) * WEIGHT_ONE as f64).round() as u32,
            }
        })
        .collect()
}

#[inline(always)]
pub(super) fn lerp(a: u8, b: u8, w: u32) -> u32 {
    a as u32 * (WEIGHT_ONE - w) + b as u32 * w
}

/// Bilinear sample of one byte channel: rows `r0`/`r1`, horizontal tap `t`, channel offset `c`.
///
/// # Safety
/// `t.i0 + c` and `t.i1 + c` must be inside both rows. The row kernels guarantee it by checking
/// `Plan::x_limit`/`cx_limit` (the largest tap offset plus the sample size) against the row
/// lengths once per row.
#[inline(always)]
pub(super) unsafe fn bilinear(r0: &[u8], r1: &[u8], t: &Tap, c: usize, wy: u32) -> f32 {
    // SAFETY: see above.
    let (a, b, p, q) = unsafe {
        (
            *r0.get_unchecked(t.i0 + c),
            *r0.get_unchecked(t.i1 + c),
            *r1.get_unchecked(t.i0 + c),
            *r1.get_unchecked(t.i1 + c),
        )
    };
    // Integer arithmetic (at most 255 * 2048 * 2048 < 2^32), one conversion at the end.
    let v = lerp(a, b, t.w) * (WEIGHT_ONE - wy) + lerp(p, q, t.w) * wy;
    v as f32 * BILINEAR_SCALE
}

/// The two source rows of tap `t` in a plane of row `stride`, checked to hold `limit` bytes.
#[inline(always)]
pub(super) fn rows_of<'a>(
    data: &'a [u8],
    stride: usize,
    t: &Tap,
    limit: usize,
) -> (&'a [u8], &'a [u8]) {
    let (r0, r1) = (&data[t.i0 * stride..], &data[t.i1 * stride..]);
    assert!(
        r0.len() >= limit && r1.len() >= limit,
        "frame smaller than its caps say"
    );
    (r0, r1)
}

/// YUV to RGB coefficients with the range offsets folded in.
#[derive(Debug, Clone, Copy)]
pub(super) struct YuvMatrix {
    pub(super) y_off: f32,
    pub(super) y_mul: f32,
    pub(super) c_mul: f32,
    pub(super) r_v: f32,
    pub(super) g_u: f32,
    pub(super) g_v: f32,
    pub(super) b_u: f32,
}

impl YuvMatrix {
    pub(super) fn new(matrix: VideoColorMatrix, range: VideoColorRange) -> Self {
        let (kr, kb) = match matrix {
            VideoColorMatrix::Bt709 => (0.2126, 0.0722),
            VideoColorMatrix::Bt2020 => (0.2627, 0.0593),
            VideoColorMatrix::Smpte240m => (0.212, 0.087),
            VideoColorMatrix::Fcc => (0.30, 0.11),
            _ => (0.299, 0.114),
        };
        let kg = 1.0 - kr - kb;
        let (y_off, y_mul, c_mul) = match range {
            VideoColorRange::Range0_255 => (0.0, 1.0, 1.0),
            _ => (16.0, 255.0 / 219.0, 255.0 / 224.0),
        };
        YuvMatrix {
            y_off,
            y_mul,
            c_mul,
            r_v: 2.0 * (1.0 - kr),
            g_u: -2.0 * kb * (1.0 - kb) / kg,
            g_v: -2.0 * kr * (1.0 - kr) / kg,
            b_u: 2.0 * (1.0 - kb),
        }
    }

    #[inline(always)]
    pub(super) fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let y = (y - self.y_off) * self.y_mul;
        let u = (u - 128.0) * self.c_mul;
        let v = (v - 128.0) * self.c_mul;
        [
            (y + self.r_v * v).clamp(0.0, 255.0),
            (y + self.g_u * u + self.g_v * v).clamp(0.0, 255.0),
            (y + self.b_u * u).clamp(0.0, 255.0),
        ]
    }
}

/// How to read the frame's pixels.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reader {
    /// Packed 3 or 4 bytes per pixel; byte offsets of R, G, B.
    Packed { r: usize, g: usize, b: usize },
    /// One grey byte per pixel.
    Gray,
    /// Y plane + interleaved UV plane at half resolution.
    Nv12(YuvMatrix),
    /// Y, U, V planes, U and V at half resolution.
    I420(YuvMatrix),
}

/// Conversion of a computed channel value into the tensor's element type.
pub(super) trait Store: Copy + Send + Sync {
    fn store(v: f32) -> Self;
}

impl Store for f32 {
    #[inline(always)]
    fn store(v: f32) -> f32 {
        v
    }
}

impl Store for u8 {
    #[inline(always)]
    fn store(v: f32) -> u8 {
        (v + 0.5) as u8
    }
}

/// Output rows of one job: three plane slices (NCHW) or one interleaved slice (NHWC).
pub(super) enum Rows<'a, E> {
    Planar([&'a mut [E]; 3]),
    Interleaved(&'a mut [E]),
}

pub(super) fn fill<E: Copy>(entry: &mut [E], value: [E; 3], layout: Layout, pixels: usize) {
    match layout {
        Layout::Nchw => {
            for (c, plane) in entry.chunks_exact_mut(pixels).enumerate().take(3) {
                plane.fill(value[c]);
            }
        }
        Layout::Nhwc => {
            for px in entry.chunks_exact_mut(3) {
                px.copy_from_slice(&value);
            }
        }
    }
}
