// SPDX-License-Identifier: MPL-2.0
//! Fused preprocessing: one pass from a raw video frame (RGB*, BGR*, NV12, I420) to the model's
//! f32 input tensor: colour conversion, bilinear resize (letterbox or stretch), channel order,
//! normalisation and layout (NCHW or NHWC).
//!
//! Resampling matches OpenCV's `INTER_LINEAR` (pixel centres aligned: `src = (dst + 0.5) *
//! src_len / dst_len - 0.5`), which is what most detectors were trained with. YUV is
//! interpolated per plane and then converted with the matrix and range of the caps'
//! colorimetry (BT.601, BT.709 or BT.2020; limited or full range); chroma is taken centre-sited.
//!
//! Per caps change, [`Preprocessor::configure`] builds the tap tables and paints the letterbox
//! padding once; per frame, [`Preprocessor::run`] only writes the picture area.

use gst_video::prelude::*;
use gst_video::{VideoColorMatrix, VideoColorRange, VideoFormat};

/// Order of the three colour channels in the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Memory layout of the tensor (batch of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[1, 3, H, W]`
    Nchw,
    /// `[1, H, W, 3]`
    Nhwc,
}

/// Where the scaled picture sits in a letterboxed tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    TopLeft,
    Center,
}

/// How the frame is fitted to the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Keep the aspect ratio, pad the rest.
    Letterbox(Anchor),
    /// Scale each axis independently to fill the tensor.
    Stretch,
}

/// What the model expects as input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorSpec {
    pub width: usize,
    pub height: usize,
    pub layout: Layout,
    pub order: ChannelOrder,
    /// Per channel (in tensor order): `value = (pixel - mean) / std`, pixel in 0..=255.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Value of the letterbox padding, 0..=255 before normalisation.
    pub pad_value: u8,
    pub fit: Fit,
}

/// Where the frame landed in the tensor, and the way back to frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Tensor pixels per frame pixel, per axis.
    pub scale_x: f64,
    pub scale_y: f64,
    /// Top-left corner of the picture in the tensor.
    pub offset_x: usize,
    pub offset_y: usize,
    /// Size of the picture in the tensor.
    pub width: usize,
    pub height: usize,
    pub frame_width: usize,
    pub frame_height: usize,
}

impl Placement {
    pub fn new(
        frame_width: usize,
        frame_height: usize,
        tensor_width: usize,
        tensor_height: usize,
        fit: Fit,
    ) -> Self {
        match fit {
            Fit::Stretch => Placement {
                scale_x: tensor_width as f64 / frame_width as f64,
                scale_y: tensor_height as f64 / frame_height as f64,
                offset_x: 0,
                offset_y: 0,
                width: tensor_width,
                height: tensor_height,
                frame_width,
                frame_height,
            },
            Fit::Letterbox(anchor) => {
                let r = f64::min(
                    tensor_width as f64 / frame_width as f64,
                    tensor_height as f64 / frame_height as f64,
                );
                // Truncation, as YOLOX/ultralytics preprocessing does.
                let width = ((frame_width as f64 * r) as usize).clamp(1, tensor_width);
                let height = ((frame_height as f64 * r) as usize).clamp(1, tensor_height);
                let (offset_x, offset_y) = match anchor {
                    Anchor::TopLeft => (0, 0),
                    Anchor::Center => ((tensor_width - width) / 2, (tensor_height - height) / 2),
                };
                Placement {
                    scale_x: width as f64 / frame_width as f64,
                    scale_y: height as f64 / frame_height as f64,
                    offset_x,
                    offset_y,
                    width,
                    height,
                    frame_width,
                    frame_height,
                }
            }
        }
    }

    /// Maps a point from tensor coordinates to frame coordinates, clamped to the frame.
    #[inline]
    pub fn to_frame(&self, x: f32, y: f32) -> (f64, f64) {
        let fx = (x as f64 - self.offset_x as f64) / self.scale_x;
        let fy = (y as f64 - self.offset_y as f64) / self.scale_y;
        (
            fx.clamp(0.0, self.frame_width as f64),
            fy.clamp(0.0, self.frame_height as f64),
        )
    }
}

/// Formats the preprocessor reads.
pub const SUPPORTED_FORMATS: &[VideoFormat] = &[
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Nv12,
    VideoFormat::I420,
];

/// One horizontal tap: byte offsets of the two neighbours in a row and the weight of the second.
#[derive(Debug, Clone, Copy, Default)]
struct Tap {
    i0: usize,
    i1: usize,
    f: f32,
}

/// Taps for `dst_len` outputs from `src_len` inputs, OpenCV `INTER_LINEAR` geometry;
/// offsets are multiplied by `step` (bytes per sample).
fn taps(src_len: usize, dst_len: usize, src_scale: f64, step: usize) -> Vec<Tap> {
    // `src_scale` is source samples per destination sample (differs from src_len/dst_len for
    // chroma planes, which cover the same area at half resolution).
    (0..dst_len)
        .map(|d| {
            let s = ((d as f64 + 0.5) * src_scale - 0.5).clamp(0.0, (src_len - 1) as f64);
            let i0 = s.floor() as usize;
            let i1 = (i0 + 1).min(src_len - 1);
            Tap {
                i0: i0 * step,
                i1: i1 * step,
                f: (s - i0 as f64) as f32,
            }
        })
        .collect()
}

#[inline(always)]
fn lerp(a: u8, b: u8, f: f32) -> f32 {
    let a = a as f32;
    a + (b as f32 - a) * f
}

/// Bilinear sample of one byte channel: rows `r0`/`r1`, horizontal tap `t`, channel offset `c`.
#[inline(always)]
fn bilinear(r0: &[u8], r1: &[u8], t: &Tap, c: usize, fy: f32) -> f32 {
    let top = lerp(r0[t.i0 + c], r0[t.i1 + c], t.f);
    let bot = lerp(r1[t.i0 + c], r1[t.i1 + c], t.f);
    top + (bot - top) * fy
}

/// YUV to RGB coefficients with the range offsets folded in.
#[derive(Debug, Clone, Copy)]
struct YuvMatrix {
    y_off: f32,
    y_mul: f32,
    c_mul: f32,
    r_v: f32,
    g_u: f32,
    g_v: f32,
    b_u: f32,
}

impl YuvMatrix {
    fn new(matrix: VideoColorMatrix, range: VideoColorRange) -> Self {
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
    fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
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
enum Reader {
    /// Packed 3 or 4 bytes per pixel; byte offsets of R, G, B.
    Packed { r: usize, g: usize, b: usize },
    /// Y plane + interleaved UV plane at half resolution.
    Nv12(YuvMatrix),
    /// Y, U, V planes, U and V at half resolution.
    I420(YuvMatrix),
}

/// Errors of the preprocessor (unsupported input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedFormat(pub VideoFormat);

impl std::fmt::Display for UnsupportedFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = SUPPORTED_FORMATS
            .iter()
            .map(|f| f.to_str().as_str())
            .collect();
        write!(
            f,
            "video format {} is not supported (supported: {}); put `videoconvert` in front",
            self.0.to_str(),
            names.join(", ")
        )
    }
}

/// Writes frames into a reusable tensor buffer.
#[derive(Debug)]
pub struct Preprocessor {
    spec: TensorSpec,
    placement: Placement,
    reader: Reader,
    /// Luma / packed taps, and chroma taps (empty for packed formats).
    xtaps: Vec<Tap>,
    ytaps: Vec<Tap>,
    cxtaps: Vec<Tap>,
    cytaps: Vec<Tap>,
    /// `1/std` and `-mean/std` per tensor channel.
    mul: [f32; 3],
    add: [f32; 3],
    tensor: Vec<f32>,
}

impl Preprocessor {
    /// Prepares for frames described by `info`.
    pub fn new(spec: TensorSpec, info: &gst_video::VideoInfo) -> Result<Self, UnsupportedFormat> {
        let (fw, fh) = (info.width() as usize, info.height() as usize);
        let placement = Placement::new(fw, fh, spec.width, spec.height, spec.fit);
        let colorimetry = info.colorimetry();
        let yuv = || YuvMatrix::new(colorimetry.matrix(), colorimetry.range());
        let (reader, step) = match info.format() {
            VideoFormat::Rgb => (Reader::Packed { r: 0, g: 1, b: 2 }, 3),
            VideoFormat::Bgr => (Reader::Packed { r: 2, g: 1, b: 0 }, 3),
            VideoFormat::Rgba | VideoFormat::Rgbx => (Reader::Packed { r: 0, g: 1, b: 2 }, 4),
            VideoFormat::Bgra | VideoFormat::Bgrx => (Reader::Packed { r: 2, g: 1, b: 0 }, 4),
            VideoFormat::Nv12 => (Reader::Nv12(yuv()), 1),
            VideoFormat::I420 => (Reader::I420(yuv()), 1),
            other => return Err(UnsupportedFormat(other)),
        };
        let sx = fw as f64 / placement.width as f64;
        let sy = fh as f64 / placement.height as f64;
        let xtaps = taps(fw, placement.width, sx, step);
        let ytaps = taps(fh, placement.height, sy, 1);
        let (cxtaps, cytaps) = match reader {
            Reader::Packed { .. } => (Vec::new(), Vec::new()),
            Reader::Nv12(_) => (
                taps(fw.div_ceil(2), placement.width, sx / 2.0, 2),
                taps(fh.div_ceil(2), placement.height, sy / 2.0, 1),
            ),
            Reader::I420(_) => (
                taps(fw.div_ceil(2), placement.width, sx / 2.0, 1),
                taps(fh.div_ceil(2), placement.height, sy / 2.0, 1),
            ),
        };
        let mul = [0, 1, 2].map(|c| 1.0 / spec.std[c]);
        let add = [0, 1, 2].map(|c| -spec.mean[c] / spec.std[c]);
        let mut me = Preprocessor {
            spec,
            placement,
            reader,
            xtaps,
            ytaps,
            cxtaps,
            cytaps,
            mul,
            add,
            tensor: vec![0.0; spec.width * spec.height * 3],
        };
        me.paint_padding();
        Ok(me)
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn spec(&self) -> &TensorSpec {
        &self.spec
    }

    /// The tensor data, in the spec's layout, batch of one.
    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }

    /// The tensor's shape, batch of one.
    pub fn shape(&self) -> [usize; 4] {
        match self.spec.layout {
            Layout::Nchw => [1, 3, self.spec.height, self.spec.width],
            Layout::Nhwc => [1, self.spec.height, self.spec.width, 3],
        }
    }

    fn paint_padding(&mut self) {
        let pad = [0, 1, 2].map(|c| self.spec.pad_value as f32 * self.mul[c] + self.add[c]);
        let (w, h) = (self.spec.width, self.spec.height);
        for row in 0..h {
            for col in 0..w {
                for (c, v) in pad.iter().enumerate() {
                    let i = self.index(row, col, c);
                    self.tensor[i] = *v;
                }
            }
        }
    }

    #[inline(always)]
    fn index(&self, row: usize, col: usize, c: usize) -> usize {
        let (w, h) = (self.spec.width, self.spec.height);
        match self.spec.layout {
            Layout::Nchw => c * w * h + row * w + col,
            Layout::Nhwc => (row * w + col) * 3 + c,
        }
    }

    /// Fills the tensor's picture area from `frame` (whose info matches the one given to `new`).
    pub fn run(&mut self, frame: &gst_video::VideoFrameRef<&gst::BufferRef>) {
        match self.reader {
            Reader::Packed { r, g, b } => {
                let data = frame.plane_data(0).unwrap_or(&[]);
                let stride = frame.plane_stride()[0] as usize;
                self.write(|ty, tx, _, _| {
                    let r0 = &data[ty.i0 * stride..];
                    let r1 = &data[ty.i1 * stride..];
                    [
                        bilinear(r0, r1, tx, r, ty.f),
                        bilinear(r0, r1, tx, g, ty.f),
                        bilinear(r0, r1, tx, b, ty.f),
                    ]
                });
            }
            Reader::Nv12(m) => {
                let y = frame.plane_data(0).unwrap_or(&[]);
                let uv = frame.plane_data(1).unwrap_or(&[]);
                let ys = frame.plane_stride()[0] as usize;
                let uvs = frame.plane_stride()[1] as usize;
                self.write(|ty, tx, cy, cx| {
                    let l = bilinear(&y[ty.i0 * ys..], &y[ty.i1 * ys..], tx, 0, ty.f);
                    let c0 = &uv[cy.i0 * uvs..];
                    let c1 = &uv[cy.i1 * uvs..];
                    m.rgb(
                        l,
                        bilinear(c0, c1, cx, 0, cy.f),
                        bilinear(c0, c1, cx, 1, cy.f),
                    )
                });
            }
            Reader::I420(m) => {
                let y = frame.plane_data(0).unwrap_or(&[]);
                let u = frame.plane_data(1).unwrap_or(&[]);
                let v = frame.plane_data(2).unwrap_or(&[]);
                let [ys, us, vs] = [0, 1, 2].map(|p| frame.plane_stride()[p] as usize);
                self.write(|ty, tx, cy, cx| {
                    let l = bilinear(&y[ty.i0 * ys..], &y[ty.i1 * ys..], tx, 0, ty.f);
                    m.rgb(
                        l,
                        bilinear(&u[cy.i0 * us..], &u[cy.i1 * us..], cx, 0, cy.f),
                        bilinear(&v[cy.i0 * vs..], &v[cy.i1 * vs..], cx, 0, cy.f),
                    )
                });
            }
        }
    }

    /// The per-pixel loop: `sample(ytap, xtap, chroma ytap, chroma xtap)` gives R, G, B.
    #[inline(always)]
    fn write(&mut self, sample: impl Fn(&Tap, &Tap, &Tap, &Tap) -> [f32; 3]) {
        let zero = Tap::default();
        let p = self.placement;
        let (w, h) = (self.spec.width, self.spec.height);
        let order = match self.spec.order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let (mul, add) = (self.mul, self.add);
        let has_chroma = !self.cxtaps.is_empty();
        for (dy, ty) in self.ytaps.iter().enumerate() {
            let cy = if has_chroma { &self.cytaps[dy] } else { &zero };
            let row = p.offset_y + dy;
            match self.spec.layout {
                Layout::Nchw => {
                    let plane = w * h;
                    let base = row * w + p.offset_x;
                    let (c0, rest) = self.tensor.split_at_mut(plane);
                    let (c1, c2) = rest.split_at_mut(plane);
                    let out = [
                        &mut c0[base..base + p.width],
                        &mut c1[base..base + p.width],
                        &mut c2[base..base + p.width],
                    ];
                    let [o0, o1, o2] = out;
                    for (dx, tx) in self.xtaps.iter().enumerate() {
                        let cx = if has_chroma { &self.cxtaps[dx] } else { &zero };
                        let rgb = sample(ty, tx, cy, cx);
                        o0[dx] = rgb[order[0]] * mul[0] + add[0];
                        o1[dx] = rgb[order[1]] * mul[1] + add[1];
                        o2[dx] = rgb[order[2]] * mul[2] + add[2];
                    }
                }
                Layout::Nhwc => {
                    let base = (row * w + p.offset_x) * 3;
                    let out = &mut self.tensor[base..base + p.width * 3];
                    for (dx, tx) in self.xtaps.iter().enumerate() {
                        let cx = if has_chroma { &self.cxtaps[dx] } else { &zero };
                        let rgb = sample(ty, tx, cy, cx);
                        for c in 0..3 {
                            out[dx * 3 + c] = rgb[order[c]] * mul[c] + add[c];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_top_left_maps_back() {
        let p = Placement::new(1280, 720, 416, 416, Fit::Letterbox(Anchor::TopLeft));
        assert_eq!(
            (p.width, p.height, p.offset_x, p.offset_y),
            (416, 234, 0, 0)
        );
        let (x, y) = p.to_frame(208.0, 117.0);
        assert!(
            (x - 640.0).abs() < 1e-6 && (y - 360.0).abs() < 1.0,
            "{x} {y}"
        );
    }

    #[test]
    fn letterbox_center_maps_back() {
        let p = Placement::new(640, 480, 640, 640, Fit::Letterbox(Anchor::Center));
        assert_eq!(
            (p.width, p.height, p.offset_x, p.offset_y),
            (640, 480, 0, 80)
        );
        assert_eq!(p.to_frame(10.0, 80.0), (10.0, 0.0));
        assert_eq!(p.to_frame(10.0, 0.0), (10.0, 0.0), "clamped into the frame");
    }

    #[test]
    fn stretch_maps_back() {
        let p = Placement::new(1920, 1080, 640, 640, Fit::Stretch);
        let (x, y) = p.to_frame(320.0, 320.0);
        assert!((x - 960.0).abs() < 1e-9 && (y - 540.0).abs() < 1e-9);
    }

    #[test]
    fn taps_identity_and_halving() {
        let t = taps(4, 4, 1.0, 3);
        assert_eq!(
            t.iter().map(|t| (t.i0, t.f)).collect::<Vec<_>>(),
            vec![(0, 0.0), (3, 0.0), (6, 0.0), (9, 0.0)]
        );
        let t = taps(4, 2, 2.0, 1);
        // dst 0 -> src 0.5, dst 1 -> src 2.5
        assert_eq!((t[0].i0, t[0].i1, t[0].f), (0, 1, 0.5));
        assert_eq!((t[1].i0, t[1].i1, t[1].f), (2, 3, 0.5));
    }

    #[test]
    fn yuv_white_black_grey() {
        let m = YuvMatrix::new(VideoColorMatrix::Bt601, VideoColorRange::Range16_235);
        let w = m.rgb(235.0, 128.0, 128.0);
        let b = m.rgb(16.0, 128.0, 128.0);
        assert!(w.iter().all(|v| (v - 255.0).abs() < 0.01), "{w:?}");
        assert!(b.iter().all(|v| v.abs() < 0.01), "{b:?}");
        // Pure red in BT.709 full range: Y = 0.2126*255, V = 128 + 0.5*255*... check round trip.
        let m = YuvMatrix::new(VideoColorMatrix::Bt709, VideoColorRange::Range0_255);
        let (r, g, b) = (255.0f32, 0.0f32, 0.0f32);
        let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        let u = (b - y) / (2.0 * (1.0 - 0.0722)) + 128.0;
        let v = (r - y) / (2.0 * (1.0 - 0.2126)) + 128.0;
        let back = m.rgb(y, u, v);
        assert!(
            (back[0] - 255.0).abs() < 0.5 && back[1].abs() < 0.5 && back[2].abs() < 0.5,
            "{back:?}"
        );
    }

    fn spec(w: usize, h: usize, fit: Fit, order: ChannelOrder) -> TensorSpec {
        TensorSpec {
            width: w,
            height: h,
            layout: Layout::Nchw,
            order,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad_value: 114,
            fit,
        }
    }

    /// Runs the preprocessor on a frame of `format` filled by `fill(plane, data, stride)`.
    fn run_on(
        format: VideoFormat,
        w: u32,
        h: u32,
        spec: TensorSpec,
        fill: impl Fn(usize, &mut [u8], usize),
    ) -> Preprocessor {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(format, w, h).build().unwrap();
        let mut buf = gst::Buffer::with_size(info.size()).unwrap();
        {
            let mut frame =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buf.get_mut().unwrap(), &info)
                    .unwrap();
            for p in 0..frame.n_planes() as usize {
                let stride = frame.plane_stride()[p] as usize;
                fill(p, frame.plane_data_mut(p as u32).unwrap(), stride);
            }
        }
        let mut pre = Preprocessor::new(spec, &info).unwrap();
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        pre.run(&frame);
        pre
    }

    #[test]
    fn uniform_rgb_letterboxed_bgr_with_padding() {
        let pre = run_on(
            VideoFormat::Rgb,
            100,
            50,
            spec(64, 64, Fit::Letterbox(Anchor::TopLeft), ChannelOrder::Bgr),
            |_, data, _| {
                for px in data.chunks_exact_mut(3) {
                    px.copy_from_slice(&[10, 20, 30]);
                }
            },
        );
        let t = pre.tensor();
        let plane = 64 * 64;
        // Picture: 64x32 at the top; B, G, R planes.
        for row in 0..64 {
            for col in 0..64 {
                let i = row * 64 + col;
                let want = if row < 32 {
                    [30.0, 20.0, 10.0]
                } else {
                    [114.0; 3]
                };
                assert_eq!(
                    [t[i], t[plane + i], t[2 * plane + i]],
                    want,
                    "row {row} col {col}"
                );
            }
        }
    }

    #[test]
    fn bilinear_downscale_matches_opencv_geometry() {
        // 8x2 RGB, value = 10 * x; halving gives the mean of each pair: 20d + 5.
        let mut sp = spec(4, 1, Fit::Stretch, ChannelOrder::Rgb);
        sp.std = [2.0; 3];
        sp.mean = [5.0; 3];
        let pre = run_on(VideoFormat::Rgb, 8, 2, sp, |_, data, stride| {
            for row in data.chunks_mut(stride) {
                for (x, px) in row[..24].chunks_exact_mut(3).enumerate() {
                    px.fill(10 * x as u8);
                }
            }
        });
        // ((20d + 5) - 5) / 2 = 10 d
        assert_eq!(&pre.tensor()[..4], &[0.0, 10.0, 20.0, 30.0]);
    }

    #[test]
    fn nv12_and_i420_grey_and_colour() {
        // Limited range BT.601 (the default for SD sizes): Y=126 is (126-16)*255/219 = 128.08.
        let grey = |format| {
            run_on(
                format,
                32,
                16,
                spec(32, 16, Fit::Stretch, ChannelOrder::Rgb),
                |p, data, _| data.fill(if p == 0 { 126 } else { 128 }),
            )
        };
        for format in [VideoFormat::Nv12, VideoFormat::I420] {
            let pre = grey(format);
            for v in pre.tensor() {
                assert!((v - 128.08).abs() < 0.01, "{format:?}: {v}");
            }
        }
        // Pure-ish red: Y=81, U=90, V=240 in BT.601 limited range is about (255, 0, 0).
        let pre = run_on(
            VideoFormat::I420,
            16,
            16,
            spec(16, 16, Fit::Stretch, ChannelOrder::Rgb),
            |p, data, _| data.fill([81, 90, 240][p]),
        );
        let t = pre.tensor();
        let n = 16 * 16;
        assert!(
            t[0] > 250.0 && t[n] < 5.0 && t[2 * n] < 5.0,
            "{} {} {}",
            t[0],
            t[n],
            t[2 * n]
        );
    }

    #[test]
    fn nhwc_layout_interleaves() {
        let mut sp = spec(2, 2, Fit::Stretch, ChannelOrder::Rgb);
        sp.layout = Layout::Nhwc;
        let pre = run_on(VideoFormat::Bgrx, 2, 2, sp, |_, data, _| {
            for px in data.chunks_exact_mut(4) {
                px.copy_from_slice(&[3, 2, 1, 0]);
            }
        });
        assert_eq!(pre.shape(), [1, 2, 2, 3]);
        assert_eq!(
            pre.tensor(),
            &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
    }
}
