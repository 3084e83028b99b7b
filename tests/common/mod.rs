// SPDX-License-Identifier: MPL-2.0
//! Helpers shared by the integration tests: plugin registration, the real model, pipelines
//! run to completion with a deadline, and the text places of pipelines/sample-text.txt.
#![allow(dead_code)]

pub mod chaos;
pub mod fleet;
pub mod http;
pub mod mot;
pub mod mqtt;
pub mod nats;
pub mod onnx_model;
pub mod prometheus;
pub mod rtsp;
pub mod still_scene;
pub mod webhook;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Initialises GStreamer and registers the videoai plugin statically (no GST_PLUGIN_PATH).
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstvideoai::plugin_register_static().expect("videoai plugin registers");
    });
}

/// The real demo model; `make deps` (run by `make test`) fetches it.
pub fn model() -> PathBuf {
    let p = root().join("models/common_det.onnx");
    assert!(
        p.is_file(),
        "{} is missing: run `make deps` (or `make test`, which runs it) first",
        p.display()
    );
    p
}

pub fn labels() -> PathBuf {
    root().join("models/common_det.labels")
}

/// The object demo's COCO detector (darknet's yolov3-tiny converted by `make deps`).
pub fn coco_model() -> PathBuf {
    let p = root().join("models/yolov3-tiny.onnx");
    assert!(
        p.is_file(),
        "{} is missing: run `make deps` (or `make test`, which runs it) first",
        p.display()
    );
    p
}

#[allow(dead_code)]
pub fn coco_labels() -> PathBuf {
    root().join("models/coco.labels")
}

/// `python3 scripts/quantize.py` (make quantize) with set-up's Python packages; add the
/// arguments.
#[allow(dead_code)]
pub fn quantize_command() -> std::process::Command {
    let root = root();
    let mut c = std::process::Command::new("python3");
    c.arg(root.join("scripts/quantize.py")).env(
        "PYTHONPATH",
        format!(
            "{}:{}",
            root.join(".deps/onnxruntime").display(),
            root.join(".deps/quantize-py").display()
        ),
    );
    c
}

/// A benchmark setting from the environment (`default` when unset or not a number).
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("videoai-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    /// Kept when `VIDEOAI_TEST_KEEP` is set (to read worker logs after a failure).
    fn drop(&mut self) {
        if std::env::var_os("VIDEOAI_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a pipeline run ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Error messages: "element: message (debug)".
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub eos: bool,
}

impl Outcome {
    pub fn first_error(&self) -> &str {
        self.errors.first().map(String::as_str).unwrap_or("")
    }
}

fn describe(src: Option<gst::Object>, msg: &str, debug: Option<&str>) -> String {
    format!(
        "{}: {} ({})",
        src.map(|s| s.path_string().to_string()).unwrap_or_default(),
        msg,
        debug.unwrap_or("")
    )
}

/// Plays `pipeline` until EOS or the first error, at most `deadline`; always ends in NULL.
pub fn run(pipeline: &gst::Pipeline, deadline: Duration) -> Outcome {
    let bus = pipeline.bus().unwrap();
    let mut out = Outcome::default();
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The error message on the bus says why.
    }
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            out.errors
                .push(format!("test deadline of {deadline:?} passed"));
            break;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                out.eos = true;
                break;
            }
            gst::MessageView::Error(e) => {
                out.errors.push(describe(
                    e.src().cloned(),
                    &e.error().to_string(),
                    e.debug().as_deref(),
                ));
                break;
            }
            gst::MessageView::Warning(w) => out.warnings.push(describe(
                w.src().cloned(),
                &w.error().to_string(),
                w.debug().as_deref(),
            )),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    // Collect errors posted while shutting down too.
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            out.errors.push(describe(
                e.src().cloned(),
                &e.error().to_string(),
                e.debug().as_deref(),
            ));
        }
    }
    out
}

pub fn parse(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("cannot parse '{desc}': {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline")
}

/// Reads a pipeline description file from pipelines/: comment lines dropped, `${NAME}`
/// placeholders filled from `vars` (every placeholder must be given, but `${NAME:-DEFAULT}`).
pub fn pipeline_file(name: &str, vars: &HashMap<&str, String>) -> String {
    let path = root().join("pipelines").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut desc: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    for (k, v) in vars {
        desc = desc.replace(&format!("${{{k}}}"), v);
    }
    // ${NAME:-DEFAULT}: the value given, else the default.
    while let Some(i) = desc.find("${") {
        let j = i + desc[i..].find('}').expect("a closed placeholder");
        let inner = desc[i + 2..j].to_string();
        let Some((name, default)) = inner.split_once(":-") else {
            break;
        };
        let value = vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string());
        desc.replace_range(i..=j, &value);
    }
    assert!(
        !desc.contains("${"),
        "unfilled placeholder in {}: {desc}",
        path.display()
    );
    desc
}

/// A text of pipelines/sample-text.txt placed in a frame: where textoverlay draws it and the
/// box its characters' ink lies in (textoverlay scales the 48 pt font with width / 640).
#[derive(Debug, Clone)]
pub struct TextPlace {
    pub text: String,
    pub px: i32,
    pub py: i32,
    pub ink: (f64, f64, f64, f64),
}

pub fn text_places(width: u32, height: u32) -> Vec<TextPlace> {
    let path = root().join("pipelines/sample-text.txt");
    let s = width as f64 / 640.0;
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (x, y): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            let (px, py) = ((x * width as f64) as i32, (y * height as f64) as i32);
            let n = f[0].chars().count() as f64;
            TextPlace {
                text: f[0].to_string(),
                px,
                py,
                ink: (
                    px as f64 + 3.0 * s,
                    py as f64 + 14.0 * s,
                    px as f64 + 3.0 * s + 46.0 * s * n,
                    py as f64 + 61.0 * s,
                ),
            }
        })
        .collect()
}

/// `! textoverlay …` for every text of pipelines/sample-text.txt.
pub fn overlays(width: u32, height: u32) -> String {
    text_places(width, height)
        .iter()
        .map(|t| {
            format!(
                " ! textoverlay text=\"{}\" font-desc=\"Sans Bold 48\" halignment=left valignment=top xpad=0 ypad=0 deltax={} deltay={}",
                t.text, t.px, t.py
            )
        })
        .collect()
}

/// The raw test picture: dark background with the sample text, `frames` frames at 30 fps.
pub fn text_source(width: u32, height: u32, frames: u32) -> String {
    format!(
        "videotestsrc num-buffers={frames} pattern=solid-color foreground-color=0xff203040 \
         ! video/x-raw,width={width},height={height},framerate=30/1{}",
        overlays(width, height)
    )
}

/// Writes an H.264 MP4 of the sample text to `path`.
pub fn make_clip(path: &Path, width: u32, height: u32, frames: u32) {
    let p = parse(&format!(
        "{} ! videoconvert ! video/x-raw,format=I420 ! openh264enc bitrate=4000000 ! h264parse \
         ! mp4mux ! filesink location=\"{}\"",
        text_source(width, height, frames),
        path.display()
    ));
    let out = run(&p, Duration::from_secs(60));
    assert!(
        out.eos && out.errors.is_empty(),
        "making {}: {out:?}",
        path.display()
    );
}

/// Fraction of box `a` (x, y, w, h) covered by region `b` (x1, y1, x2, y2).
pub fn covered(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> f64 {
    let (ax1, ay1, ax2, ay2) = (a.0, a.1, a.0 + a.2, a.1 + a.3);
    let iw = (ax2.min(b.2) - ax1.max(b.0)).max(0.0);
    let ih = (ay2.min(b.3) - ay1.max(b.1)).max(0.0);
    let area = a.2 * a.3;
    if area <= 0.0 { 0.0 } else { iw * ih / area }
}

/// `appsrc format=time caps=<caps> ! <rest>`, and its appsrc (named `src`).
pub fn from_appsrc(caps: &str, rest: &str) -> (gst::Pipeline, gst_app::AppSrc) {
    init();
    let p = parse(&format!("appsrc name=src format=time caps={caps} ! {rest}"));
    let src = p
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    (p, src)
}

/// The caps of the tracker tests' synthetic frames (boxes only, no pixels used).
pub const TRACKER_CAPS: &str = "video/x-raw,format=GRAY8,width=640,height=480,framerate=25/1";

/// A raw GRAY8 Matroska file of `frames` frames at a variable rate (gaps of 20, 45, 30 ms in
/// turn; caps framerate 0/1); returns the frames' positions in ns.
pub fn vfr_clip(path: &Path, frames: usize) -> Vec<u64> {
    init();
    let (p, src) = from_appsrc(
        "video/x-raw,format=GRAY8,width=16,height=16,framerate=0/1",
        &format!("matroskamux ! filesink location=\"{}\"", path.display()),
    );
    p.set_state(gst::State::Playing).unwrap();
    let mut positions = Vec::new();
    let mut t = 0u64;
    for i in 0..frames {
        positions.push(t);
        let mut b = gst::Buffer::with_size(256).unwrap();
        let step = [20, 45, 30][i % 3] * 1_000_000;
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(t));
            // With its duration, the last frame is inside the file's segment (a sink drops a
            // zero-length buffer at the segment's end).
            b.set_duration(gst::ClockTime::from_nseconds(step));
            b.map_writable().unwrap().fill((i % 250) as u8);
        }
        src.push_buffer(b).unwrap();
        t += step;
    }
    src.end_of_stream().unwrap();
    let bus = p.bus().unwrap();
    bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos])
        .expect("the clip was written");
    p.set_state(gst::State::Null).unwrap();
    positions
}

/// Plays `file` into `raftsink <sink>`, seeking back and forth while it plays: to 0.5 s once
/// 40 frames were stored, then forward to 2 s, then back to 0.
pub fn play_with_seeks(file: &Path, sink: &str) {
    init();
    let p = parse(&format!(
        "filesrc location=\"{}\" ! matroskademux ! identity sleep-time=2000 ! raftsink name=sink {sink}",
        file.display()
    ));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Paused).unwrap();
    let _ = p.state(gst::ClockTime::from_seconds(10));
    p.set_state(gst::State::Playing).unwrap();
    let wait_for = |n: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.load(std::sync::atomic::Ordering::SeqCst) < n
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let flags = gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE;
    wait_for(40);
    p.seek_simple(flags, gst::ClockTime::from_mseconds(500))
        .unwrap();
    wait_for(60);
    p.seek_simple(flags, gst::ClockTime::from_seconds(2))
        .unwrap();
    wait_for(80);
    p.seek_simple(flags, gst::ClockTime::ZERO).unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{}: {:?}", e.error(), e.debug());
    }
    p.set_state(gst::State::Null).unwrap();
}

/// The name libtest knows the test `name` of module `module_path` by (`module_path!()` at the
/// call site): the module path without the binary's name, then the function, e.g.
/// `durability::crash_child_entry`, for re-running one test as a child process (`--exact`).
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_string(),
    }
}
