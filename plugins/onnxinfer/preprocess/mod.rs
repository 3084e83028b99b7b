// SPDX-License-Identifier: MPL-2.0
//! Fused preprocessing: one pass from a raw video frame (RGB*, BGR*, NV12, I420, GRAY8) to the
//! model's input tensor: colour conversion, bilinear resize (letterbox or stretch) of the whole
//! frame or of a region, channel order, normalisation and layout (NCHW or NHWC), into f32 or u8.
//!
//! Resampling matches OpenCV's `INTER_LINEAR` (pixel centres aligned: `src = (dst + 0.5) *
//! src_len / dst_len - 0.5`), which is what most models were trained with. YUV is interpolated
//! per plane and then converted with the matrix and range of the caps' colorimetry (BT.601,
//! BT.709 or BT.2020; limited or full range); chroma is taken centre-sited.
//!
//! f32 values are `((pixel × scale) − mean) / std` per channel (pixel in 0..=255); u8 tensors
//! take the pixel values as they are. A [`Plan`] (tap tables for one source rectangle) is made
//! once per caps for the whole frame, and per region for region crops; rows are split across
//! threads when the picture is large enough for that to pay.

mod geometry;
mod kernels;

use std::ops::Range;

use gst_video::VideoFormat;
use gst_video::prelude::*;

pub use geometry::*;
use kernels::*;

/// Formats the preprocessor reads.
pub const SUPPORTED_FORMATS: &[VideoFormat] = &[
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Argb,
    VideoFormat::Abgr,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Nv12,
    VideoFormat::I420,
    VideoFormat::Gray8,
];

/// The format is not one the preprocessor reads.
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

/// Tap tables for one source rectangle.
#[derive(Debug, Clone)]
pub struct Plan {
    placement: Placement,
    xtaps: Vec<Tap>,
    ytaps: Vec<Tap>,
    cxtaps: Vec<Tap>,
    cytaps: Vec<Tap>,
    /// Bytes a source row must have for every horizontal tap (and its channels) to be inside
    /// it: the row kernels check this once per row and then index without bounds checks.
    x_limit: usize,
    cx_limit: usize,
}

impl Plan {
    pub fn placement(&self) -> &Placement {
        &self.placement
    }
}

/// A mutable view of one tensor entry.
pub enum EntryMut<'a> {
    F32(&'a mut [f32]),
    U8(&'a mut [u8]),
}

/// Pictures with at least this many tensor pixels are split across threads.
const THREADING_MIN_PIXELS: usize = 96 * 1024;

/// The preprocessing threads of the process: one pool (rayon) shared by every onnxinfer, as
/// many threads as cores. Splitting a frame queues its parts on the pool and the streaming
/// thread takes a part itself; no thread is started per frame, and many pipelines on a
/// many-core host share the cores instead of each starting its own threads.
static POOL: std::sync::LazyLock<Option<rayon::ThreadPool>> = std::sync::LazyLock::new(|| {
    rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .thread_name(|i| format!("videoai-pre-{i}"))
        .build()
        .ok()
});

/// Threads in the shared preprocessing pool (1 when it could not be started: then frames
/// are preprocessed on the streaming thread alone).
pub fn pool_threads() -> usize {
    POOL.as_ref().map_or(1, |p| p.current_num_threads())
}

/// Writes frames into tensor entries.
#[derive(Debug)]
pub struct Preprocessor {
    spec: TensorSpec,
    reader: Reader,
    step: usize,
    frame_width: usize,
    frame_height: usize,
    /// `mul` and `add` per tensor channel: value = channel_value * mul + add.
    mul: [f32; 3],
    add: [f32; 3],
    threads: usize,
    full: Plan,
}

impl Preprocessor {
    /// Prepares for frames described by `info`, splitting work over up to `threads` threads.
    pub fn new(
        spec: TensorSpec,
        info: &gst_video::VideoInfo,
        threads: usize,
    ) -> Result<Self, UnsupportedFormat> {
        let colorimetry = info.colorimetry();
        let yuv = || YuvMatrix::new(colorimetry.matrix(), colorimetry.range());
        let (reader, step) = match info.format() {
            VideoFormat::Rgb => (Reader::Packed { r: 0, g: 1, b: 2 }, 3),
            VideoFormat::Bgr => (Reader::Packed { r: 2, g: 1, b: 0 }, 3),
            VideoFormat::Rgba | VideoFormat::Rgbx => (Reader::Packed { r: 0, g: 1, b: 2 }, 4),
            VideoFormat::Bgra | VideoFormat::Bgrx => (Reader::Packed { r: 2, g: 1, b: 0 }, 4),
            VideoFormat::Argb | VideoFormat::Xrgb => (Reader::Packed { r: 1, g: 2, b: 3 }, 4),
            VideoFormat::Abgr | VideoFormat::Xbgr => (Reader::Packed { r: 3, g: 2, b: 1 }, 4),
            VideoFormat::Gray8 => (Reader::Gray, 1),
            VideoFormat::Nv12 => (Reader::Nv12(yuv()), 1),
            VideoFormat::I420 => (Reader::I420(yuv()), 1),
            other => return Err(UnsupportedFormat(other)),
        };
        let (mul, add) = match spec.elem {
            Elem::U8 => ([1.0; 3], [0.0; 3]),
            Elem::F32 => (
                [0, 1, 2].map(|c| spec.scale / spec.std[c]),
                [0, 1, 2].map(|c| -spec.mean[c] / spec.std[c]),
            ),
        };
        let (fw, fh) = (info.width() as usize, info.height() as usize);
        let mut me = Preprocessor {
            spec,
            reader,
            step,
            frame_width: fw,
            frame_height: fh,
            mul,
            add,
            threads: threads.max(1),
            full: Plan {
                placement: Placement::new(
                    Rect {
                        x: 0,
                        y: 0,
                        w: fw,
                        h: fh,
                    },
                    1,
                    1,
                    Fit::Stretch,
                ),
                xtaps: Vec::new(),
                ytaps: Vec::new(),
                cxtaps: Vec::new(),
                cytaps: Vec::new(),
                x_limit: 0,
                cx_limit: 0,
            },
        };
        me.full = me.plan(Rect {
            x: 0,
            y: 0,
            w: fw,
            h: fh,
        });
        Ok(me)
    }

    pub fn spec(&self) -> &TensorSpec {
        &self.spec
    }

    /// The plan for the whole frame.
    pub fn full(&self) -> &Plan {
        &self.full
    }

    /// Clamps `rect` to the frame; `None` when nothing of it is inside.
    pub fn clamp_rect(&self, rect: Rect) -> Option<Rect> {
        let x = rect.x.min(self.frame_width);
        let y = rect.y.min(self.frame_height);
        let w = rect.w.min(self.frame_width - x);
        let h = rect.h.min(self.frame_height - y);
        (w > 0 && h > 0).then_some(Rect { x, y, w, h })
    }

    /// Tap tables for a source rectangle (inside the frame).
    pub fn plan(&self, source: Rect) -> Plan {
        let placement = Placement::new(source, self.spec.width, self.spec.height, self.spec.fit);
        let (fw, fh) = (self.frame_width, self.frame_height);
        let (x, y, w, h) = (
            source.x as f64,
            source.y as f64,
            source.w as f64,
            source.h as f64,
        );
        let xtaps = taps(x, w, placement.width, fw, self.step);
        let ytaps = taps(y, h, placement.height, fh, 1);
        let (cxtaps, cytaps) = match self.reader {
            Reader::Nv12(_) => (
                taps(x / 2.0, w / 2.0, placement.width, fw.div_ceil(2), 2),
                taps(y / 2.0, h / 2.0, placement.height, fh.div_ceil(2), 1),
            ),
            Reader::I420(_) => (
                taps(x / 2.0, w / 2.0, placement.width, fw.div_ceil(2), 1),
                taps(y / 2.0, h / 2.0, placement.height, fh.div_ceil(2), 1),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let limit = |taps: &[Tap], step: usize| {
            taps.iter()
                .map(|t| t.i0.max(t.i1) + step)
                .max()
                .unwrap_or(0)
        };
        let cstep = if matches!(self.reader, Reader::Nv12(_)) {
            2
        } else {
            1
        };
        Plan {
            x_limit: limit(&xtaps, self.step),
            cx_limit: limit(&cxtaps, cstep),
            placement,
            xtaps,
            ytaps,
            cxtaps,
            cytaps,
        }
    }

    /// Fills a whole entry with the (normalised) padding value.
    pub fn paint_padding(&self, entry: EntryMut<'_>) {
        let pad = [0, 1, 2].map(|c| self.spec.pad_value as f32 * self.mul[c] + self.add[c]);
        let (w, h) = (self.spec.width, self.spec.height);
        match entry {
            EntryMut::F32(e) => fill(e, pad, self.spec.layout, w * h),
            EntryMut::U8(e) => fill(e, pad.map(u8::store), self.spec.layout, w * h),
        }
    }

    /// Writes the picture area of `plan` from `frame` (whose info matches the one given to
    /// `new`) into `entry`. The padding around it is left as it is.
    pub fn run(
        &self,
        plan: &Plan,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        entry: EntryMut<'_>,
    ) {
        match entry {
            EntryMut::F32(e) => self.dispatch(plan, frame, e),
            EntryMut::U8(e) => self.dispatch(plan, frame, e),
        }
    }

    fn dispatch<E: Store>(
        &self,
        plan: &Plan,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        out: &mut [E],
    ) {
        let stride = |p: usize| frame.plane_stride()[p] as usize;
        let plane = |p: u32| frame.plane_data(p).unwrap_or(&[]);
        // Row kernels: sample tensor row `dy` into RGB triples, one per picture column.
        match self.reader {
            Reader::Packed { r, g, b } => {
                let (data, s) = (plane(0), stride(0));
                self.split(plan, out, &|dy: usize, rgb: &mut [[f32; 3]]| {
                    let ty = &plan.ytaps[dy];
                    let (r0, r1) = rows_of(data, s, ty, plan.x_limit);
                    for (o, tx) in rgb.iter_mut().zip(&plan.xtaps) {
                        // SAFETY: rows_of checked x_limit, which covers every tap and channel.
                        *o = unsafe {
                            [
                                bilinear(r0, r1, tx, r, ty.w),
                                bilinear(r0, r1, tx, g, ty.w),
                                bilinear(r0, r1, tx, b, ty.w),
                            ]
                        };
                    }
                });
            }
            Reader::Gray => {
                let (data, s) = (plane(0), stride(0));
                self.split(plan, out, &|dy: usize, rgb: &mut [[f32; 3]]| {
                    let ty = &plan.ytaps[dy];
                    let (r0, r1) = rows_of(data, s, ty, plan.x_limit);
                    for (o, tx) in rgb.iter_mut().zip(&plan.xtaps) {
                        // SAFETY: rows_of checked x_limit.
                        let v = unsafe { bilinear(r0, r1, tx, 0, ty.w) };
                        *o = [v, v, v];
                    }
                });
            }
            Reader::Nv12(m) => {
                let (y, ys) = (plane(0), stride(0));
                let (uv, uvs) = (plane(1), stride(1));
                self.split(plan, out, &|dy: usize, rgb: &mut [[f32; 3]]| {
                    let (ty, cy) = (&plan.ytaps[dy], &plan.cytaps[dy]);
                    let (y0, y1) = rows_of(y, ys, ty, plan.x_limit);
                    let (c0, c1) = rows_of(uv, uvs, cy, plan.cx_limit);
                    for ((o, tx), cx) in rgb.iter_mut().zip(&plan.xtaps).zip(&plan.cxtaps) {
                        // SAFETY: rows_of checked x_limit and cx_limit (2-byte UV samples).
                        *o = unsafe {
                            m.rgb(
                                bilinear(y0, y1, tx, 0, ty.w),
                                bilinear(c0, c1, cx, 0, cy.w),
                                bilinear(c0, c1, cx, 1, cy.w),
                            )
                        };
                    }
                });
            }
            Reader::I420(m) => {
                let (y, ys) = (plane(0), stride(0));
                let (u, us) = (plane(1), stride(1));
                let (v, vs) = (plane(2), stride(2));
                self.split(plan, out, &|dy: usize, rgb: &mut [[f32; 3]]| {
                    let (ty, cy) = (&plan.ytaps[dy], &plan.cytaps[dy]);
                    let (y0, y1) = rows_of(y, ys, ty, plan.x_limit);
                    let (u0, u1) = rows_of(u, us, cy, plan.cx_limit);
                    let (v0, v1) = rows_of(v, vs, cy, plan.cx_limit);
                    for ((o, tx), cx) in rgb.iter_mut().zip(&plan.xtaps).zip(&plan.cxtaps) {
                        // SAFETY: rows_of checked x_limit and cx_limit.
                        *o = unsafe {
                            m.rgb(
                                bilinear(y0, y1, tx, 0, ty.w),
                                bilinear(u0, u1, cx, 0, cy.w),
                                bilinear(v0, v1, cx, 0, cy.w),
                            )
                        };
                    }
                });
            }
        }
    }

    /// Splits the picture rows over threads (when it pays) and writes each part.
    fn split<E: Store, K>(&self, plan: &Plan, out: &mut [E], kernel: &K)
    where
        K: Fn(usize, &mut [[f32; 3]]) + Sync,
    {
        let p = &plan.placement;
        let rows = p.height;
        let parts = if p.width * p.height >= THREADING_MIN_PIXELS {
            self.threads.min(rows).max(1)
        } else {
            1
        };
        let (w, h) = (self.spec.width, self.spec.height);
        // Tensor rows [first, end) of each part, and the matching slices of the output.
        let bounds: Vec<Range<usize>> = (0..parts)
            .map(|i| (rows * i / parts)..(rows * (i + 1) / parts))
            .collect();
        let mut jobs = Vec::with_capacity(parts);
        match self.spec.layout {
            Layout::Nchw => {
                let (c0, rest) = out.split_at_mut(w * h);
                let (c1, c2) = rest.split_at_mut(w * h);
                let mut planes =
                    [c0, c1, c2].map(|c| &mut c[p.offset_y * w..(p.offset_y + rows) * w]);
                for b in &bounds {
                    let n = (b.end - b.start) * w;
                    let [a0, a1, a2] = planes;
                    let (h0, t0) = a0.split_at_mut(n);
                    let (h1, t1) = a1.split_at_mut(n);
                    let (h2, t2) = a2.split_at_mut(n);
                    jobs.push((b.clone(), Rows::Planar([h0, h1, h2])));
                    planes = [t0, t1, t2];
                }
            }
            Layout::Nhwc => {
                let mut rest = &mut out[p.offset_y * w * 3..(p.offset_y + rows) * w * 3];
                for b in &bounds {
                    let (head, tail) = rest.split_at_mut((b.end - b.start) * w * 3);
                    jobs.push((b.clone(), Rows::Interleaved(head)));
                    rest = tail;
                }
            }
        }
        let pool = match POOL.as_ref() {
            Some(pool) if jobs.len() > 1 => pool,
            _ => {
                for (range, rows) in jobs {
                    self.write_rows(plan, range, rows, kernel);
                }
                return;
            }
        };
        let first = jobs.remove(0);
        pool.in_place_scope(|s| {
            for (range, rows) in jobs {
                s.spawn(move |_| self.write_rows(plan, range, rows, kernel));
            }
            self.write_rows(plan, first.0, first.1, kernel);
        });
    }

    /// Samples each tensor picture row in `dys` (relative to the picture's top) with `kernel`
    /// and stores it normalised in the tensor's order and layout.
    fn write_rows<E: Store, K>(&self, plan: &Plan, dys: Range<usize>, rows: Rows<'_, E>, kernel: &K)
    where
        K: Fn(usize, &mut [[f32; 3]]),
    {
        let p = &plan.placement;
        let w = self.spec.width;
        let [o0, o1, o2] = match self.spec.order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let (mul, add) = (self.mul, self.add);
        let mut rgb = vec![[0.0f32; 3]; p.width];
        match rows {
            Rows::Planar([c0, c1, c2]) => {
                for (i, dy) in dys.enumerate() {
                    kernel(dy, &mut rgb);
                    let base = i * w + p.offset_x;
                    let r0 = &mut c0[base..base + p.width];
                    let r1 = &mut c1[base..base + p.width];
                    let r2 = &mut c2[base..base + p.width];
                    for (((px, a), b), c) in rgb.iter().zip(r0).zip(r1).zip(r2) {
                        *a = E::store(px[o0] * mul[0] + add[0]);
                        *b = E::store(px[o1] * mul[1] + add[1]);
                        *c = E::store(px[o2] * mul[2] + add[2]);
                    }
                }
            }
            Rows::Interleaved(o) => {
                for (i, dy) in dys.enumerate() {
                    kernel(dy, &mut rgb);
                    let base = (i * w + p.offset_x) * 3;
                    let row = &mut o[base..base + p.width * 3];
                    for (px, out) in rgb.iter().zip(row.chunks_exact_mut(3)) {
                        out[0] = E::store(px[o0] * mul[0] + add[0]);
                        out[1] = E::store(px[o1] * mul[1] + add[1]);
                        out[2] = E::store(px[o2] * mul[2] + add[2]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gst_video::{VideoColorMatrix, VideoColorRange};

    fn full(w: usize, h: usize) -> Rect {
        Rect { x: 0, y: 0, w, h }
    }

    #[test]
    fn letterbox_top_left_maps_back() {
        let p = Placement::new(
            full(1280, 720),
            416,
            416,
            Fit::Letterbox(Anchor::TopLeft, Rounding::Truncate),
        );
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
        let p = Placement::new(
            full(640, 480),
            640,
            640,
            Fit::Letterbox(Anchor::Center, Rounding::Round),
        );
        assert_eq!(
            (p.width, p.height, p.offset_x, p.offset_y),
            (640, 480, 0, 80)
        );
        assert_eq!(p.to_frame(10.0, 80.0), (10.0, 0.0));
        assert_eq!(p.to_frame(10.0, 0.0), (10.0, 0.0), "clamped into the frame");
    }

    #[test]
    fn stretch_and_region_map_back() {
        let p = Placement::new(full(1920, 1080), 640, 640, Fit::Stretch);
        let (x, y) = p.to_frame(320.0, 320.0);
        assert!((x - 960.0).abs() < 1e-9 && (y - 540.0).abs() < 1e-9);
        let r = Placement::new(
            Rect {
                x: 100,
                y: 50,
                w: 200,
                h: 100,
            },
            64,
            32,
            Fit::Stretch,
        );
        assert_eq!(r.to_frame(32.0, 16.0), (200.0, 100.0));
        assert_eq!(
            r.to_frame(64.0, 40.0),
            (300.0, 150.0),
            "clamped into the region"
        );
    }

    #[test]
    fn taps_identity_halving_and_region() {
        let t = taps(0.0, 4.0, 4, 4, 3);
        assert_eq!(
            t.iter().map(|t| (t.i0, t.w)).collect::<Vec<_>>(),
            vec![(0, 0), (3, 0), (6, 0), (9, 0)]
        );
        let t = taps(0.0, 4.0, 2, 4, 1);
        // dst 0 -> src 0.5, dst 1 -> src 2.5
        assert_eq!((t[0].i0, t[0].i1, t[0].w), (0, 1, 1024));
        assert_eq!((t[1].i0, t[1].i1, t[1].w), (2, 3, 1024));
        // A region [10, 14) never reads outside it.
        let t = taps(10.0, 4.0, 8, 100, 1);
        assert!(
            t.iter()
                .all(|t| (10..=13).contains(&t.i0) && (10..=13).contains(&t.i1))
        );
    }

    #[test]
    fn yuv_white_black_grey() {
        let m = YuvMatrix::new(VideoColorMatrix::Bt601, VideoColorRange::Range16_235);
        let w = m.rgb(235.0, 128.0, 128.0);
        let b = m.rgb(16.0, 128.0, 128.0);
        assert!(w.iter().all(|v| (v - 255.0).abs() < 0.01), "{w:?}");
        assert!(b.iter().all(|v| v.abs() < 0.01), "{b:?}");
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
            elem: Elem::F32,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad_value: 114,
            fit,
        }
    }

    fn frame(
        format: VideoFormat,
        w: u32,
        h: u32,
        fill: impl Fn(usize, &mut [u8], usize),
    ) -> (gst_video::VideoInfo, gst::Buffer) {
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
        (info, buf)
    }

    /// Preprocesses the whole frame into a fresh f32 entry (padding painted first).
    fn run_on(
        format: VideoFormat,
        w: u32,
        h: u32,
        spec: TensorSpec,
        threads: usize,
        fill: impl Fn(usize, &mut [u8], usize),
    ) -> Vec<f32> {
        let (info, buf) = frame(format, w, h, fill);
        let pre = Preprocessor::new(spec, &info, threads).unwrap();
        let mut t = vec![0.0f32; spec.entry_len()];
        pre.paint_padding(EntryMut::F32(&mut t));
        let f = gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        pre.run(pre.full(), &f, EntryMut::F32(&mut t));
        t
    }

    #[test]
    fn uniform_rgb_letterboxed_bgr_with_padding() {
        let t = run_on(
            VideoFormat::Rgb,
            100,
            50,
            spec(
                64,
                64,
                Fit::Letterbox(Anchor::TopLeft, Rounding::Truncate),
                ChannelOrder::Bgr,
            ),
            1,
            |_, data, _| {
                for px in data.chunks_exact_mut(3) {
                    px.copy_from_slice(&[10, 20, 30]);
                }
            },
        );
        let plane = 64 * 64;
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
        let t = run_on(VideoFormat::Rgb, 8, 2, sp, 1, |_, data, stride| {
            for row in data.chunks_mut(stride) {
                for (x, px) in row[..24].chunks_exact_mut(3).enumerate() {
                    px.fill(10 * x as u8);
                }
            }
        });
        // ((20d + 5) - 5) / 2 = 10 d
        assert_eq!(&t[..4], &[0.0, 10.0, 20.0, 30.0]);
    }

    #[test]
    fn nv12_and_i420_grey_and_colour() {
        for format in [VideoFormat::Nv12, VideoFormat::I420] {
            let t = run_on(
                format,
                32,
                16,
                spec(32, 16, Fit::Stretch, ChannelOrder::Rgb),
                1,
                |p, data, _| data.fill(if p == 0 { 126 } else { 128 }),
            );
            // Limited range BT.601: (126 - 16) * 255 / 219 = 128.08.
            assert!(t.iter().all(|v| (v - 128.08).abs() < 0.01), "{format:?}");
        }
        // Y=81, U=90, V=240 in BT.601 limited range is about pure red.
        let t = run_on(
            VideoFormat::I420,
            16,
            16,
            spec(16, 16, Fit::Stretch, ChannelOrder::Rgb),
            1,
            |p, data, _| data.fill([81, 90, 240][p]),
        );
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
    fn gray_scale_offset_and_argb() {
        let mut sp = spec(4, 4, Fit::Stretch, ChannelOrder::Rgb);
        sp.scale = 1.0 / 255.0;
        sp.mean = [0.5; 3];
        sp.std = [0.5; 3];
        let t = run_on(VideoFormat::Gray8, 4, 4, sp, 1, |_, data, _| data.fill(255));
        assert!(t.iter().all(|v| (v - 1.0).abs() < 1e-6), "{t:?}");
        let t = run_on(
            VideoFormat::Argb,
            2,
            2,
            spec(2, 2, Fit::Stretch, ChannelOrder::Rgb),
            1,
            |_, data, _| {
                for px in data.chunks_exact_mut(4) {
                    px.copy_from_slice(&[255, 1, 2, 3]);
                }
            },
        );
        assert_eq!(
            t,
            vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]
        );
    }

    #[test]
    fn nhwc_layout_and_u8_output() {
        let mut sp = spec(2, 2, Fit::Stretch, ChannelOrder::Rgb);
        sp.layout = Layout::Nhwc;
        sp.elem = Elem::U8;
        sp.scale = 1.0 / 255.0; // ignored for u8
        let (info, buf) = frame(VideoFormat::Bgrx, 2, 2, |_, data, _| {
            for px in data.chunks_exact_mut(4) {
                px.copy_from_slice(&[3, 2, 1, 0]);
            }
        });
        let pre = Preprocessor::new(sp, &info, 1).unwrap();
        let mut t = vec![0u8; sp.entry_len()];
        let f = gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        pre.run(pre.full(), &f, EntryMut::U8(&mut t));
        assert_eq!(sp.shape(1), [1, 2, 2, 3]);
        assert_eq!(t, vec![1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn threads_give_the_same_tensor() {
        let fill = |p: usize, data: &mut [u8], stride: usize| {
            for (r, row) in data.chunks_mut(stride).enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = ((r * 7 + c * 3 + p * 50) % 251) as u8;
                }
            }
        };
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let mut sp = spec(
                640,
                640,
                Fit::Letterbox(Anchor::Center, Rounding::Round),
                ChannelOrder::Rgb,
            );
            sp.layout = layout;
            let one = run_on(VideoFormat::Nv12, 1920, 1080, sp, 1, fill);
            let three = run_on(VideoFormat::Nv12, 1920, 1080, sp, 3, fill);
            assert!(one == three, "{layout:?}");
        }
    }

    /// A thread id handed out now (Linux gives them in increasing order, process-wide, so the
    /// difference between two is how many threads and processes were started in between).
    fn new_tid() -> i64 {
        std::thread::spawn(|| unsafe { libc::gettid() } as i64)
            .join()
            .unwrap()
    }

    #[test]
    fn frames_start_no_threads() {
        // 300 frames split in two parts each: a thread per frame would take 300 thread ids;
        // the pool takes none. Other processes on the machine start threads too, so the least
        // of three tries is compared.
        let (info, buf) = frame(VideoFormat::Nv12, 1280, 720, |_, d, _| d.fill(100));
        let sp = spec(
            640,
            640,
            Fit::Letterbox(Anchor::Center, Rounding::Round),
            ChannelOrder::Rgb,
        );
        let pre = Preprocessor::new(sp, &info, 2).unwrap();
        let f = gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        let mut t = vec![0.0f32; sp.entry_len()];
        pre.run(pre.full(), &f, EntryMut::F32(&mut t));
        let started = (0..3)
            .filter_map(|_| {
                let before = new_tid();
                for _ in 0..300 {
                    pre.run(pre.full(), &f, EntryMut::F32(&mut t));
                }
                (new_tid() - before - 1).try_into().ok()
            })
            .min()
            .unwrap_or(u64::MAX);
        assert!(started < 100, "{started} threads started for 300 frames");
    }

    #[test]
    fn region_crop() {
        // Left half red, right half blue; crop the right half.
        let (info, buf) = frame(VideoFormat::Rgb, 8, 4, |_, data, stride| {
            for row in data.chunks_mut(stride) {
                for (x, px) in row[..24].chunks_exact_mut(3).enumerate() {
                    px.copy_from_slice(if x < 4 { &[255, 0, 0] } else { &[0, 0, 255] });
                }
            }
        });
        let sp = spec(2, 2, Fit::Stretch, ChannelOrder::Rgb);
        let pre = Preprocessor::new(sp, &info, 1).unwrap();
        let plan = pre.plan(
            pre.clamp_rect(Rect {
                x: 4,
                y: 0,
                w: 10,
                h: 10,
            })
            .unwrap(),
        );
        assert_eq!(
            plan.placement().source,
            Rect {
                x: 4,
                y: 0,
                w: 4,
                h: 4
            }
        );
        let mut t = vec![0.0f32; sp.entry_len()];
        let f = gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        pre.run(&plan, &f, EntryMut::F32(&mut t));
        assert_eq!(
            t,
            vec![
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 255.0, 255.0, 255.0, 255.0
            ]
        );
        assert_eq!(
            pre.clamp_rect(Rect {
                x: 9,
                y: 0,
                w: 2,
                h: 2
            }),
            None
        );
    }
}
