// SPDX-License-Identifier: MPL-2.0
//! The still-camera scene of the motion tests (and of the density benchmark): what a fixed
//! camera sees most of the time, nothing moving. I420 frames made here from scikit-image's real
//! photos (`scripts/setup.sh` puts them in `.deps/photos`):
//! - the background: a table (a real photo's wood) with a coffee cup on it (that photo), with
//!   sensor noise (±`NOISE` luma levels,
//!   fresh every frame) and a slow brightness ramp (0 to +`RAMP` levels over the scene);
//! - a "clock" in the ignore zone (bottom left): a block whose brightness jumps every frame;
//! - a motorbike (the motorcycle photo) crossing the frame from left to right, over a counting line
//!   in the middle, during the frames `CROSSING` (a fifth of the scene);
//! - a cat (chelsea) that appears inside the ignore zone at `CAT_FROM` and stays still: the
//!   motion detector does not see it arrive; only `still-interval` finds it.

#![allow(dead_code)]

use std::ops::Range;
use std::path::Path;

use gst::prelude::*;

pub const WIDTH: usize = 1280;
pub const HEIGHT: usize = 720;
pub const FPS: u64 = 15;
pub const FRAMES: usize = 400;
/// The motorbike's frames: 20 % of the scene.
pub const CROSSING: Range<usize> = 100..180;
pub const CAT_FROM: usize = 300;
pub const NOISE: i32 = 4;
pub const RAMP: i32 = 30;
/// Where motion is ignored: the bottom-left corner (`motiondetect ignore-zones`).
pub const IGNORE_ZONES: &str = "corner:0,400,560,400,560,720,0,720";
/// The counting line (`objecttracker lines`): the motorbike crosses it once, left to right.
pub const LINES: &str = "middle:640,0,640,720";
/// The motorbike's size and path: top-left corner from (X_FROM, 40) to (X_TO, 40).
const MOTORBIKE: (usize, usize) = (432, 300);
const X_FROM: usize = 40;
const X_TO: usize = 800;
const MOTORBIKE_Y: usize = 40;
/// The cat's size and place (inside the ignore zone).
const CAT: (usize, usize) = (452, 300);
const CAT_AT: (usize, usize) = (0, 420);
/// The clock: a block in the ignore zone.
const CLOCK: (usize, usize, usize, usize) = (470, 430, 60, 40);

/// An I420 picture.
#[derive(Clone)]
pub struct Picture {
    pub w: usize,
    pub h: usize,
    pub data: Vec<u8>,
}

impl Picture {
    fn planes(&self) -> (usize, usize) {
        let y = self.w * self.h;
        (y, y + y / 4)
    }
}

/// A photo of `.deps/photos`, cropped to `crop` (x, y, w, h; None: whole) and scaled to `w`×`h`
/// I420, by GStreamer (pngdec, videocrop, videoscale, videoconvert).
pub fn photo(name: &str, crop: Option<(u32, u32, u32, u32)>, w: usize, h: usize) -> Picture {
    let path = super::root()
        .join(".deps/photos")
        .join(format!("{name}.png"));
    assert!(
        path.is_file(),
        "{} is missing: run `make deps` (or `make test`, which runs it) first",
        path.display()
    );
    let crop = match crop {
        Some((x, y, cw, ch)) => {
            let (pw, ph) = png_size(&path);
            format!(
                "videocrop left={x} top={y} right={} bottom={} ! ",
                pw - x - cw,
                ph - y - ch
            )
        }
        None => String::new(),
    };
    let p = super::parse(&format!(
        "filesrc location=\"{}\" ! pngdec ! videoconvert ! {crop}videoscale ! videoconvert \
         ! video/x-raw,format=I420,width={w},height={h} ! appsink name=out",
        path.display()
    ));
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(30))
        .expect("the photo decodes");
    p.set_state(gst::State::Null).unwrap();
    let buffer = sample.buffer().unwrap();
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
    // Unpadded planes.
    let mut data = Vec::with_capacity(w * h * 3 / 2);
    for plane in 0..3u32 {
        let (pw, ph) = if plane == 0 { (w, h) } else { (w / 2, h / 2) };
        let stride =
            gst_video::prelude::VideoFrameExt::plane_stride(&frame)[plane as usize] as usize;
        let bytes = frame.plane_data(plane).unwrap();
        for row in 0..ph {
            data.extend_from_slice(&bytes[row * stride..row * stride + pw]);
        }
    }
    Picture { w, h, data }
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Pastes `p` with its top-left corner at (x, y) (even).
fn paste(into: &mut Picture, p: &Picture, x: usize, y: usize) {
    let (x, y) = (x & !1, y & !1);
    let (iy, iu) = into.planes();
    let (py, pu) = p.planes();
    for r in 0..p.h.min(into.h - y) {
        let n = p.w.min(into.w - x);
        into.data[(y + r) * into.w + x..(y + r) * into.w + x + n]
            .copy_from_slice(&p.data[r * p.w..r * p.w + n]);
    }
    for (into_off, p_off) in [(iy, py), (iu, pu)] {
        for r in 0..(p.h / 2).min((into.h - y) / 2) {
            let n = (p.w / 2).min((into.w - x) / 2);
            let dst = into_off + (y / 2 + r) * (into.w / 2) + x / 2;
            let src = p_off + r * (p.w / 2);
            into.data[dst..dst + n].copy_from_slice(&p.data[src..src + n]);
        }
    }
}

/// The motorbike's top-left x on frame `i` (None when not in the picture).
pub fn motorbike_x(i: usize) -> Option<usize> {
    if !CROSSING.contains(&i) {
        return None;
    }
    let t = (i - CROSSING.start) as f64 / (CROSSING.len() - 1) as f64;
    Some(X_FROM + ((X_TO - X_FROM) as f64 * t).round() as usize)
}

/// The scene's pictures, ready to make its frames.
pub struct Scene {
    background: Picture,
    motorbike: Picture,
    cat: Picture,
}

impl Scene {
    pub fn new() -> Scene {
        // The table's wood (a strip of the coffee photo with nothing on it) stretched over the
        // frame, and the coffee cup on it at the bottom right: a still object.
        let mut background = photo("coffee", Some((480, 0, 120, 400)), WIDTH, HEIGHT);
        paste(&mut background, &photo("coffee", None, 480, 320), 800, 400);
        Scene {
            background,
            motorbike: photo(
                "motorcycle_left",
                Some((95, 50, 605, 420)),
                MOTORBIKE.0,
                MOTORBIKE.1,
            ),
            cat: photo("chelsea", None, CAT.0, CAT.1),
        }
    }

    /// Frame `i` (I420, unpadded).
    pub fn frame(&self, i: usize) -> Vec<u8> {
        let mut p = self.background.clone();
        if let Some(x) = motorbike_x(i) {
            paste(&mut p, &self.motorbike, x, MOTORBIKE_Y);
        }
        if i >= CAT_FROM {
            paste(&mut p, &self.cat, CAT_AT.0, CAT_AT.1);
        }
        let light = RAMP * i as i32 / FRAMES as i32;
        let mut s = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let clock = 40 + ((i * 97) % 180) as i32;
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let noise = (s % (2 * NOISE as u64 + 1)) as i32 - NOISE;
                let in_clock = (CLOCK.0..CLOCK.0 + CLOCK.2).contains(&x)
                    && (CLOCK.1..CLOCK.1 + CLOCK.3).contains(&y);
                let v = &mut p.data[y * WIDTH + x];
                let base = if in_clock { clock } else { *v as i32 };
                *v = (base + light + noise).clamp(0, 255) as u8;
            }
        }
        p.data
    }

    /// The caps of the frames.
    pub fn caps() -> String {
        format!("video/x-raw,format=I420,width={WIDTH},height={HEIGHT},framerate={FPS}/1")
    }

    /// Frame `i` as a buffer with its timestamp and duration.
    pub fn buffer(&self, i: usize) -> gst::Buffer {
        let mut b = gst::Buffer::from_mut_slice(self.frame(i));
        let d = 1_000_000_000 / FPS;
        let b_ = b.get_mut().unwrap();
        b_.set_pts(gst::ClockTime::from_nseconds(i as u64 * d));
        b_.set_duration(gst::ClockTime::from_nseconds(d));
        b
    }
}

/// Whether the rectangle (x, y, w, h) lies in the ignore zone (its centre does).
pub fn in_ignore_zone(r: (u32, u32, u32, u32)) -> bool {
    let (cx, cy) = (r.0 + r.2 / 2, r.1 + r.3 / 2);
    cx < 560 && cy >= 400
}

/// The scene's first `frames` frames (past the scene's end it starts again) as an H.264 MP4
/// file at `path` (openh264enc, 4 Mb/s, a keyframe every 2 s), as a camera would record it.
pub fn write_clip(path: &Path, frames: usize) {
    write_clip_at(path, frames, 4_000_000, 2 * FPS);
}

/// [`write_clip`] with the encoder's target `bitrate` (bit/s; what it gives is somewhat less)
/// and a keyframe every `gop` frames.
pub fn write_clip_at(path: &Path, frames: usize, bitrate: u32, gop: u64) {
    let scene = Scene::new();
    let (p, src) = super::from_appsrc(
        &Scene::caps(),
        &format!(
            "openh264enc bitrate={bitrate} gop-size={gop} ! h264parse ! mp4mux ! filesink location=\"{}\"",
            path.display()
        ),
    );
    src.set_max_bytes(16 * 1024 * 1024);
    src.set_block(true);
    p.set_state(gst::State::Playing).unwrap();
    for i in 0..frames {
        let mut b = scene.buffer(i % FRAMES);
        let d = 1_000_000_000 / FPS;
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(i as u64 * d));
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = p.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(300),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the clip is written");
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
}
