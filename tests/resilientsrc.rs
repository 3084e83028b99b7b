// SPDX-License-Identifier: MPL-2.0
//! resilientsrc: a real RTSP camera (gst-rtsp-server on 127.0.0.1) killed and restarted,
//! a camera that never comes back, typefinding of renamed files, the decoder choice, and
//! corrupt input.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rtsp::RtspCamera;
use gst::prelude::*;
use gstvideoai::resilientsrc::decoders::{self, Kind};

/// What came out of the source: per buffer (PTS, DISCONT), and the caps seen.
#[derive(Default)]
struct Frames {
    buffers: Vec<(Option<gst::ClockTime>, bool)>,
    caps: Vec<gst::Caps>,
}

/// A pipeline `<src> ! appsink` whose frames and bus messages are collected.
struct Run {
    pipeline: gst::Pipeline,
    src: gst::Element,
    frames: Arc<Mutex<Frames>>,
    /// Element messages (structures) and errors/warnings, as they came.
    messages: Vec<gst::Structure>,
    errors: Vec<String>,
    warnings: Vec<String>,
    eos: bool,
}

impl Run {
    fn new(src_desc: &str) -> Run {
        common::init();
        let pipeline = common::parse(&format!(
            "{src_desc} name=src ! appsink name=sink sync=false emit-signals=false"
        ));
        let src = pipeline.by_name("src").unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let frames = Arc::new(Mutex::new(Frames::default()));
        let f = frames.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut f = f.lock().unwrap();
                    if let Some(c) = sample.caps()
                        && f.caps.last().map(|l| l.as_ref()) != Some(c)
                    {
                        f.caps.push(c.to_owned());
                    }
                    if let Some(b) = sample.buffer() {
                        f.buffers
                            .push((b.pts(), b.flags().contains(gst::BufferFlags::DISCONT)));
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Run {
            pipeline,
            src,
            frames,
            messages: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            eos: false,
        }
    }

    fn frame_count(&self) -> usize {
        self.frames.lock().unwrap().buffers.len()
    }

    fn play(&self) {
        let _ = self.pipeline.set_state(gst::State::Playing);
    }

    /// Collects bus messages until `done` says so, an error, EOS, or `deadline`; true when
    /// `done` said so.
    fn pump_until(&mut self, deadline: Duration, mut done: impl FnMut(&Run) -> bool) -> bool {
        let bus = self.pipeline.bus().unwrap();
        let end = Instant::now() + deadline;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= end || !self.errors.is_empty() || self.eos {
                return false;
            }
            if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(20)) {
                self.take(&msg);
            }
        }
    }

    fn take(&mut self, msg: &gst::Message) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    self.messages.push(s.to_owned());
                }
            }
            gst::MessageView::Error(e) => self.errors.push(format!(
                "{}: {} ({})",
                e.src().map(|s| s.path_string()).unwrap_or_default(),
                e.error(),
                e.debug().unwrap_or_default()
            )),
            gst::MessageView::Warning(w) => self.warnings.push(format!(
                "{}: {} ({})",
                w.src().map(|s| s.path_string()).unwrap_or_default(),
                w.error(),
                w.debug().unwrap_or_default()
            )),
            gst::MessageView::Eos(_) => self.eos = true,
            _ => {}
        }
    }

    /// Plays to EOS or error, at most `deadline`.
    fn run_to_end(&mut self, deadline: Duration) {
        self.play();
        self.pump_until(deadline, |_| false);
    }

    /// Stops, bounded: going to NULL must not hang.
    fn stop(&mut self) {
        let start = Instant::now();
        self.pipeline.set_state(gst::State::Null).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "stopping took {:?}",
            start.elapsed()
        );
        let bus = self.pipeline.bus().unwrap();
        while let Some(m) = bus.pop() {
            self.take(&m);
        }
    }

    fn statuses(&self) -> Vec<&gst::StructureRef> {
        self.messages
            .iter()
            .filter(|s| s.name() == "resilientsrc-status")
            .map(|s| s.as_ref())
            .collect()
    }

    fn stats(&self) -> gst::Structure {
        self.src.property::<gst::Structure>("stats")
    }
}

#[test]
fn rtsp_server_child() {
    // The RTSP camera process of the tests below (does nothing when run as a test).
    common::rtsp::serve_if_child();
}

#[test]
fn camera_killed_and_restarted_ten_times() {
    let mut cam = RtspCamera::start("rtsp_server_child");
    // Backoff 200 ms doubling to at most 1 s, ±20 %.
    let mut run = Run::new(&format!(
        "resilientsrc uri={} protocols=tcp latency=100000000 stall-timeout=2000000000 \
         backoff-initial=200000000 backoff-max=1000000000 jitter=0.2",
        cam.uri()
    ));
    run.play();
    assert!(
        run.pump_until(Duration::from_secs(30), |r| r.frame_count() >= 15),
        "no frames from {}: {:?}",
        cam.uri(),
        run.errors
    );
    let mut resume = Vec::new();
    let mut firsts = Vec::new();
    for round in 1..=10u64 {
        cam.kill();
        // The loss is noticed (connection reset) and the source is retrying.
        assert!(
            run.pump_until(Duration::from_secs(10), |r| {
                r.statuses().iter().any(|s| {
                    s.get::<&str>("status") == Ok("retrying")
                        && s.get::<u64>("reconnects") == Ok(round - 1)
                })
            }),
            "round {round}: no retrying status: {:?} {:?}",
            run.errors,
            run.statuses()
        );
        std::thread::sleep(Duration::from_millis(300));
        let before = run.frame_count();
        firsts.push(before);
        cam.restart();
        let back = Instant::now();
        assert!(
            run.pump_until(Duration::from_secs(20), |r| r.frame_count() >= before + 15),
            "round {round}: frames did not resume: {:?} {:?}",
            run.errors,
            run.stats()
        );
        resume.push(back.elapsed());
    }
    let stats = run.stats();
    let status = run.src.property_value("status");
    run.stop();
    assert!(
        run.errors.is_empty(),
        "the pipeline never errors out: {:?}",
        run.errors
    );
    assert_eq!(stats.get::<u64>("reconnects"), Ok(10), "{stats}");
    assert_eq!(stats.get::<&str>("status"), Ok("running"), "{stats}");
    assert_eq!(
        stats.get::<&str>("decoder-kind"),
        Ok(if decoders::installed(Kind::Nvdec).is_empty() {
            "cpu"
        } else {
            "nvdec"
        }),
        "{stats}"
    );
    let status = status.get::<gstvideoai::resilientsrc::Status>().unwrap();
    assert_eq!(status, gstvideoai::resilientsrc::Status::Running);
    // Within the backoff bounds: a retry at most backoff-max · 1.2 after the loss, plus the
    // time a fresh server needs to serve its first frames.
    for (i, d) in resume.iter().enumerate() {
        assert!(
            *d < Duration::from_secs(8),
            "round {}: resumed after {d:?}",
            i + 1
        );
    }
    let f = run.frames.lock().unwrap();
    // Running time only increases, one caps for the whole run, a DISCONT after each gap.
    for w in f.buffers.windows(2) {
        let (a, b) = (w[0].0.unwrap(), w[1].0.unwrap());
        assert!(b > a, "PTS went from {a} to {b}");
    }
    assert_eq!(f.caps.len(), 1, "caps changed: {:?}", f.caps);
    // The first frame after each reconnect says so (the inner decoder may mark more, e.g.
    // after packets lost on a loaded machine).
    assert!(f.buffers[0].1);
    for (round, i) in firsts.iter().enumerate() {
        assert!(
            f.buffers[*i].1,
            "round {}: frame {i} lacks DISCONT",
            round + 1
        );
    }
    // Status changes were posted: connecting → running → retrying → connecting → running …
    let seq: Vec<&str> = run
        .statuses()
        .iter()
        .map(|s| s.get::<&str>("status").unwrap())
        .collect();
    assert_eq!(
        seq.iter().filter(|s| **s == "running").count(),
        11,
        "{seq:?}"
    );
    eprintln!("resume times after restart: {resume:?}");
}

#[test]
fn frozen_camera_is_detected_by_the_stall_timeout() {
    let mut cam = RtspCamera::start("rtsp_server_child");
    let mut run = Run::new(&format!(
        "resilientsrc uri={} protocols=udp stall-timeout=1000000000 backoff-initial=200000000",
        cam.uri()
    ));
    run.play();
    assert!(
        run.pump_until(Duration::from_secs(30), |r| r.frame_count() >= 15),
        "{:?}",
        run.errors
    );
    cam.freeze();
    // Over UDP with the RTSP connection still open, nothing says the camera hangs; the
    // packets just stop.
    assert!(
        run.pump_until(Duration::from_secs(10), |r| r.statuses().iter().any(|s| {
            s.get::<&str>("status") == Ok("retrying")
                && s.get::<&str>("reason")
                    .is_ok_and(|r| r.contains("stall-timeout"))
        })),
        "{:?}",
        run.statuses()
    );
    let before = run.frame_count();
    cam.restart();
    assert!(
        run.pump_until(Duration::from_secs(20), |r| r.frame_count() >= before + 15),
        "{:?} {}",
        run.errors,
        run.stats()
    );
    let stats = run.stats();
    run.stop();
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(stats.get::<u64>("reconnects"), Ok(1), "{stats}");
}

#[test]
fn hung_camera_is_given_up_on_and_stopping_does_not_hang() {
    // Accepts the connection, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in listener.incoming().take(50).flatten() {
            h.lock().unwrap().push(c);
        }
    });
    let mut run = Run::new(&format!(
        "resilientsrc uri=rtsp://127.0.0.1:{port}/cam stall-timeout=500000000 backoff-initial=100000000 \
         backoff-max=200000000"
    ));
    run.play();
    let retries = |r: &Run| {
        r.statuses()
            .iter()
            .filter(|s| s.get::<&str>("status") == Ok("retrying"))
            .count()
    };
    assert!(
        run.pump_until(Duration::from_secs(30), |r| retries(r) >= 2),
        "{:?} {:?}",
        run.errors,
        run.statuses()
    );
    run.stop();
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert!(held.lock().unwrap().len() >= 2, "it connected again");
}

#[test]
fn camera_that_never_returns_keeps_retrying_with_backoff() {
    // Nothing listens on this port.
    let port = common::free_port();
    let mut run = Run::new(&format!(
        "resilientsrc uri=rtsp://admin:s3cret@127.0.0.1:{port}/cam \
         backoff-initial=100000000 backoff-max=400000000 backoff-multiplier=2 jitter=0"
    ));
    run.play();
    let retry_ins = |r: &Run| -> Vec<u64> {
        r.statuses()
            .iter()
            .filter(|s| s.get::<&str>("status") == Ok("retrying"))
            .map(|s| s.get::<u64>("retry-in").unwrap())
            .collect()
    };
    assert!(
        run.pump_until(Duration::from_secs(30), |r| retry_ins(r).len() >= 5),
        "{:?} {:?}",
        run.errors,
        run.statuses()
    );
    assert_eq!(retry_ins(&run)[..5], [100, 200, 400, 400, 400]);
    let attempts: Vec<u32> = run
        .statuses()
        .iter()
        .filter(|s| s.get::<&str>("status") == Ok("retrying"))
        .map(|s| s.get::<u32>("attempt").unwrap())
        .collect();
    assert_eq!(attempts[..5], [1, 2, 3, 4, 5]);
    assert_eq!(
        run.src
            .property::<gstvideoai::resilientsrc::Status>("status")
            .to_value()
            .get::<gstvideoai::resilientsrc::Status>()
            .unwrap(),
        gstvideoai::resilientsrc::Status::Retrying
    );
    let stats = run.stats();
    run.stop();
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    // Credentials never appear in what the element says.
    let said = format!("{:?} {stats}", run.messages);
    assert!(!said.contains("s3cret"), "{said}");
    assert!(stats.get::<&str>("last-error").unwrap() != "", "{stats}");
}

#[test]
fn max_attempts_gives_up_with_a_clear_error() {
    let port = common::free_port();
    let mut run = Run::new(&format!(
        "resilientsrc uri=rtsp://127.0.0.1:{port}/cam backoff-initial=50000000 backoff-max=100000000 max-attempts=3"
    ));
    run.run_to_end(Duration::from_secs(30));
    let stats = run.stats();
    run.stop();
    assert_eq!(run.errors.len(), 1, "{:?}", run.errors);
    let e = &run.errors[0];
    assert!(
        e.contains("resilientsrc") && e.contains("giving up after 3 failed attempts"),
        "{e}"
    );
    let seq: Vec<String> = run
        .statuses()
        .iter()
        .map(|s| s.get::<String>("status").unwrap())
        .collect();
    assert_eq!(
        seq,
        [
            "connecting",
            "retrying",
            "connecting",
            "retrying",
            "connecting",
            "failed"
        ]
    );
    assert_eq!(stats.get::<&str>("status"), Ok("failed"), "{stats}");
    // Once stopped, the last run's figures stay readable.
    let after = run.stats();
    assert_eq!(after.get::<&str>("status"), Ok("stopped"), "{after}");
    assert!(
        after
            .get::<&str>("last-error")
            .unwrap()
            .contains("Could not open"),
        "{after}"
    );
}

/// The same 2 s clip in `mux`, written to `path` (no extension).
fn write_clip(path: &Path, mux: &str) {
    let p = common::parse(&format!(
        "videotestsrc num-buffers=60 pattern=ball ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! openh264enc ! h264parse ! {mux} ! filesink location=\"{}\"",
        path.display()
    ));
    let out = common::run(&p, Duration::from_secs(60));
    assert!(out.eos && out.errors.is_empty(), "{mux}: {out:?}");
}

#[test]
fn containers_found_from_the_bytes_not_the_name() {
    common::init();
    let dir = common::TempDir::new("typefind");
    for (mux, container) in [
        ("mp4mux", "video/quicktime"),
        ("matroskamux", "video/x-matroska"),
        ("avimux", "video/x-msvideo"),
        ("mpegtsmux", "video/mpegts"),
    ] {
        let path = dir.join(&format!("clip-{mux}"));
        write_clip(&path, mux);
        // A plain path, no extension.
        let mut run = Run::new(&format!("resilientsrc uri=\"{}\"", path.display()));
        run.run_to_end(Duration::from_secs(30));
        let stats = run.stats();
        run.stop();
        assert!(run.eos && run.errors.is_empty(), "{mux}: {:?}", run.errors);
        assert_eq!(run.frame_count(), 60, "{mux}");
        assert_eq!(stats.get::<&str>("container"), Ok(container), "{stats}");
        assert_eq!(stats.get::<&str>("codec"), Ok("video/x-h264"), "{stats}");
        assert_eq!(stats.get::<u64>("frames"), Ok(60), "{stats}");
        let found = run
            .messages
            .iter()
            .find(|s| s.name() == "resilientsrc-stream")
            .unwrap_or_else(|| panic!("{mux}: no resilientsrc-stream message"));
        assert_eq!(found.get::<&str>("container"), Ok(container));
        // A file plays once: connecting, running, ended.
        let seq: Vec<String> = run
            .statuses()
            .iter()
            .map(|s| s.get::<String>("status").unwrap())
            .collect();
        assert_eq!(seq, ["connecting", "running", "ended"], "{mux}");
        // File timestamps are kept: 30 fps from 0.
        let f = run.frames.lock().unwrap();
        assert_eq!(f.buffers[0].0, Some(gst::ClockTime::ZERO));
        assert_eq!(
            f.buffers[30].0,
            Some(gst::ClockTime::from_seconds(1)),
            "{mux}"
        );
    }
}

#[test]
fn decoder_auto_picks_the_cpu_here_and_says_so() {
    common::init();
    if !decoders::installed(Kind::Nvdec).is_empty() || !decoders::installed(Kind::Vaapi).is_empty()
    {
        eprintln!("a hardware decoder is installed: auto would pick it; nothing to check here");
        return;
    }
    let dir = common::TempDir::new("dec");
    let clip = dir.join("clip");
    write_clip(&clip, "mp4mux");
    let mut run = Run::new(&format!("resilientsrc uri=\"{}\"", clip.display()));
    run.run_to_end(Duration::from_secs(30));
    let stats = run.stats();
    run.stop();
    assert!(run.eos, "{:?}", run.errors);
    assert_eq!(stats.get::<&str>("decoder-kind"), Ok("cpu"), "{stats}");
    assert_eq!(stats.get::<&str>("decoder"), Ok("avdec_h264"), "{stats}");
    let m = run
        .messages
        .iter()
        .find(|s| s.name() == "resilientsrc-stream")
        .unwrap();
    assert_eq!(m.get::<&str>("decoder-kind"), Ok("cpu"));
}

#[test]
fn forced_nvdec_without_a_gpu_errors_or_falls_back() {
    common::init();
    if !decoders::installed(Kind::Nvdec).is_empty() {
        eprintln!("NVDEC decoders are installed here; the missing-NVDEC case cannot be shown");
        return;
    }
    let dir = common::TempDir::new("nvdec");
    let clip = dir.join("clip");
    write_clip(&clip, "matroskamux");
    // No fallback: a clear error that says what is missing and what to do.
    let mut run = Run::new(&format!(
        "resilientsrc uri=\"{}\" decoder=nvdec decoder-fallback=false",
        clip.display()
    ));
    run.run_to_end(Duration::from_secs(30));
    run.stop();
    assert!(!run.eos);
    let e = run.errors.first().cloned().unwrap_or_default();
    assert!(
        e.contains("decoder=nvdec")
            && e.contains("no NVDEC video decoder is installed")
            && e.contains("decoder=auto"),
        "{e}"
    );
    // Fallback (the default): a warning, then the CPU decodes.
    let mut run = Run::new(&format!(
        "resilientsrc uri=\"{}\" decoder=nvdec",
        clip.display()
    ));
    run.run_to_end(Duration::from_secs(30));
    let stats = run.stats();
    run.stop();
    assert!(run.eos && run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.frame_count(), 60);
    assert!(
        run.warnings
            .iter()
            .any(|w| w.contains("no NVDEC video decoder") && w.contains("decoder-fallback=true")),
        "{:?}",
        run.warnings
    );
    assert_eq!(stats.get::<&str>("decoder-kind"), Ok("cpu"), "{stats}");
}

#[test]
fn truncated_mp4_ends_or_fails_clearly() {
    common::init();
    let dir = common::TempDir::new("trunc");
    let clip = dir.join("clip");
    // Index at the end (cut: nothing playable) and at the front (cut: plays what is there).
    for (mux, plays) in [("mp4mux", false), ("mp4mux faststart=true", true)] {
        write_clip(&clip, mux);
        let bytes = std::fs::read(&clip).unwrap();
        for keep in [bytes.len() / 2, bytes.len() - 100] {
            let cut = dir.join("cut");
            std::fs::write(&cut, &bytes[..keep]).unwrap();
            let mut run = Run::new(&format!("resilientsrc uri=\"{}\"", cut.display()));
            run.run_to_end(Duration::from_secs(30));
            run.stop();
            assert!(
                run.eos || !run.errors.is_empty(),
                "no end and no error within 30 s"
            );
            eprintln!(
                "{keep} of {} bytes: eos {}, {} frames, errors {:?}",
                bytes.len(),
                run.eos,
                run.frame_count(),
                run.errors
            );
            if !run.eos {
                let e = &run.errors[0];
                // Says which element, which file, and why.
                assert!(e.contains("resilientsrc") && e.contains("cut"), "{e}");
            }
            assert!(
                run.statuses()
                    .last()
                    .is_some_and(|s| matches!(s.get::<&str>("status"), Ok("ended" | "failed"))),
                "{:?}",
                run.statuses()
            );
            if plays {
                assert!(run.eos && run.frame_count() > 0, "{mux}: {:?}", run.errors);
            }
        }
    }
}

#[test]
fn h264_with_flipped_bytes_plays_to_the_end() {
    common::init();
    let dir = common::TempDir::new("flip");
    let clip = dir.join("clip");
    // A raw H.264 byte stream, typefound as such.
    let p = common::parse(&format!(
        "videotestsrc num-buffers=90 pattern=ball ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! openh264enc gop-size=30 ! h264parse ! video/x-h264,stream-format=byte-stream \
         ! filesink location=\"{}\"",
        clip.display()
    ));
    assert!(common::run(&p, Duration::from_secs(60)).eos);
    let mut bytes = std::fs::read(&clip).unwrap();
    // Flip 1 byte in 200 after the first kilobyte (SPS/PPS intact), deterministically.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let flips = (bytes.len() - 1024) / 200;
    for _ in 0..flips {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = 1024 + (x as usize) % (bytes.len() - 1024);
        bytes[at] ^= 0xff;
    }
    std::fs::write(&clip, &bytes).unwrap();
    let mut run = Run::new(&format!("resilientsrc uri=\"{}\"", clip.display()));
    run.run_to_end(Duration::from_secs(30));
    run.stop();
    assert!(
        run.eos || !run.errors.is_empty(),
        "no end and no error within 30 s"
    );
    if run.eos {
        assert!(run.frame_count() > 0);
    } else {
        assert!(run.errors[0].contains("resilientsrc"), "{:?}", run.errors);
    }
    eprintln!(
        "{flips} bytes flipped: eos {}, {} frames, errors {:?}",
        run.eos,
        run.frame_count(),
        run.errors
    );
}

#[test]
fn no_uri_and_missing_file_are_clear_errors() {
    let mut run = Run::new("resilientsrc");
    run.run_to_end(Duration::from_secs(10));
    run.stop();
    assert!(
        run.errors.first().is_some_and(|e| e.contains("no uri set")),
        "{:?}",
        run.errors
    );
    let mut run = Run::new("resilientsrc uri=/nonexistent/clip.mp4");
    run.run_to_end(Duration::from_secs(10));
    run.stop();
    let e = run.errors.first().cloned().unwrap_or_default();
    assert!(
        e.contains("resilientsrc") && e.contains("/nonexistent/clip.mp4"),
        "{e}"
    );
}

#[test]
fn state_changes_while_connecting_do_not_hang() {
    let port = common::free_port();
    for _ in 0..5 {
        let mut run = Run::new(&format!(
            "resilientsrc uri=rtsp://127.0.0.1:{port}/cam backoff-initial=5000000000"
        ));
        run.play();
        run.pump_until(Duration::from_millis(300), |_| false);
        run.stop();
        run.pipeline.set_state(gst::State::Playing).unwrap();
        run.pump_until(Duration::from_millis(100), |_| false);
        run.stop();
        assert!(run.errors.is_empty(), "{:?}", run.errors);
    }
}

#[test]
fn bad_protocols_is_a_clear_error_not_an_abort() {
    common::init();
    let p = common::parse(
        "resilientsrc uri=rtsp://127.0.0.1:9/stream protocols=tcp+carrier-pigeon ! fakesink",
    );
    let outcome = common::run(&p, Duration::from_secs(20));
    let err = outcome.first_error();
    assert!(
        err.contains("protocols") && err.contains("carrier-pigeon") && err.contains("tcp"),
        "{err}"
    );
}

#[test]
fn pausing_a_live_camera_keeps_time_and_does_not_reconnect() {
    let cam = RtspCamera::start("rtsp_server_child");
    // A stall timeout shorter than the pauses: frames arriving while paused keep it quiet.
    let mut run = Run::new(&format!(
        "resilientsrc uri={} protocols=tcp latency=100000000 stall-timeout=1500000000",
        cam.uri()
    ));
    // Paused before it ever played (the camera connects and sends meanwhile), then played.
    run.pipeline.set_state(gst::State::Paused).unwrap();
    run.pump_until(Duration::from_millis(3000), |_| false);
    run.play();
    assert!(
        run.pump_until(Duration::from_secs(30), |r| r.frame_count() >= 10),
        "no frames: {:?}",
        run.errors
    );
    run.pipeline.set_state(gst::State::Paused).unwrap();
    run.pump_until(Duration::from_millis(3000), |_| false);
    let before = run.frame_count();
    run.play();
    assert!(
        run.pump_until(Duration::from_secs(10), |r| r.frame_count() >= before + 10),
        "frames after resuming: {:?}",
        run.errors
    );
    let stats = run.stats();
    run.stop();
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(stats.get::<u64>("reconnects"), Ok(0), "{stats}");
    let frames = run.frames.lock().unwrap();
    let pts: Vec<gst::ClockTime> = frames.buffers.iter().filter_map(|b| b.0).collect();
    assert!(
        pts.windows(2).all(|w| w[1] > w[0]),
        "PTS keep increasing across the pause"
    );
    // A frame after the pause starts a new run.
    assert!(
        frames.buffers[before.min(frames.buffers.len() - 1)..]
            .iter()
            .any(|b| b.1)
    );
}

fn restarts_resume(cam: &mut common::http::HttpCamera, uri: &str) {
    let mut run = Run::new(&format!(
        "resilientsrc uri={uri} stall-timeout=2000000000 backoff-initial=200000000 backoff-max=1000000000"
    ));
    run.play();
    assert!(
        run.pump_until(Duration::from_secs(30), |r| r.frame_count() >= 10),
        "no frames from {uri}: {:?} {:?}",
        run.errors,
        run.statuses()
    );
    for round in 1..=2u64 {
        cam.stop();
        assert!(
            run.pump_until(Duration::from_secs(10), |r| r
                .statuses()
                .iter()
                .any(|s| s.get::<&str>("status") == Ok("retrying")
                    && s.get::<u64>("reconnects") == Ok(round - 1))),
            "round {round}: {uri}: no retrying status: {:?} {:?} eos={}",
            run.errors,
            run.statuses(),
            run.eos
        );
        std::thread::sleep(Duration::from_millis(300));
        let before = run.frame_count();
        cam.start();
        assert!(
            run.pump_until(Duration::from_secs(20), |r| r.frame_count() >= before + 10),
            "round {round}: {uri}: frames did not resume: {:?} {:?} eos={}",
            run.errors,
            run.statuses(),
            run.eos
        );
    }
    let stats = run.stats();
    run.stop();
    assert!(
        run.errors.is_empty() && !run.eos,
        "{:?} eos={}",
        run.errors,
        run.eos
    );
    assert_eq!(stats.get::<u64>("reconnects"), Ok(2), "{stats}");
    assert!(
        !run.statuses()
            .iter()
            .any(|s| s.get::<&str>("status") == Ok("ended")),
        "{:?}",
        run.statuses()
    );
}

#[test]
fn http_mjpeg_camera_restarted_twice_resumes() {
    common::init();
    let jpegs = common::http::jpegs(15, 320, 240);
    let mut cam = common::http::HttpCamera::start_with(common::http::Content::Mjpeg {
        jpegs: Arc::new(jpegs),
        fps: 15,
    });
    let uri = cam.uri("video.mjpg");
    restarts_resume(&mut cam, &uri);
}

#[test]
fn http_mpegts_live_stream_restarted_twice_resumes() {
    common::init();
    let ts = common::http::mpegts(30);
    // About real time: 15 fps at the stream's bitrate.
    let rate = (ts.len() / 30 / (188 * 7)).max(1) as u32;
    let mut cam = common::http::HttpCamera::start_with(common::http::Content::Stream {
        content_type: "video/mp2t",
        bytes: Arc::new(ts),
        chunk: 188 * 7,
        chunks_per_second: rate,
    });
    let uri = cam.uri("live.ts");
    restarts_resume(&mut cam, &uri);
}

/// The plugin as gst-launch-1.0 loads it (the build puts it in target/release).
fn plugin_dir() -> std::path::PathBuf {
    let dir = common::root().join("target/release");
    assert!(
        dir.join("libgstvideoai.so").is_file(),
        "{}/libgstvideoai.so is missing: run `cargo build --release` first (make test does)",
        dir.display()
    );
    dir
}

/// Runs `gst-launch-1.0 <desc>` `runs` times with the CPU kept busy (so the element's threads
/// and gst-launch's main thread race as they do on a loaded machine); returns how many runs
/// did not end within 10 s, and the output of one run.
fn gst_launch_hangs(desc: &str, runs: usize) -> (usize, String) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    let mut hangs = 0;
    let mut said = String::new();
    for _ in 0..runs {
        let mut child = std::process::Command::new("gst-launch-1.0")
            .args(desc.split_whitespace())
            .env("GST_PLUGIN_PATH", plugin_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("gst-launch-1.0 runs");
        let start = Instant::now();
        let ended = loop {
            if let Some(_status) = child.try_wait().unwrap() {
                break true;
            }
            if start.elapsed() > Duration::from_secs(10) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !ended {
            hangs += 1;
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        said = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        let _ = b.join();
    }
    (hangs, said)
}

#[test]
fn gst_launch_ends_after_an_error_at_start() {
    let dir = common::TempDir::new("launcherr");
    let garbage = dir.join("garbage.mp4");
    std::fs::write(&garbage, vec![0x5au8; 4096]).unwrap();
    for (what, location) in [
        (
            "a missing file",
            "/nonexistent/videoai-missing.mp4".to_string(),
        ),
        ("a file that is no video", garbage.display().to_string()),
    ] {
        let (hangs, said) = gst_launch_hangs(
            &format!("resilientsrc uri={location} ! videoconvert ! fakesink"),
            40,
        );
        assert_eq!(
            hangs, 0,
            "{what}: gst-launch-1.0 hung in {hangs} of 40 runs"
        );
        assert!(said.contains("ERROR"), "{what}: {said}");
    }
}

#[test]
fn malformed_uris_are_refused_at_start() {
    for (uri, expect) in [
        ("rtsp://", "host"),
        ("rtsp:///cam", "host"),
        ("http://:8080/x", "host"),
        ("rtsp://127.0.0.1:99999/cam", "port"),
    ] {
        let mut run = Run::new(&format!("resilientsrc uri={uri}"));
        let start = Instant::now();
        run.run_to_end(Duration::from_secs(10));
        run.stop();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{uri}: took {:?}",
            start.elapsed()
        );
        assert_eq!(run.errors.len(), 1, "{uri}: {:?}", run.errors);
        assert!(
            run.errors[0].contains(expect) && run.errors[0].contains(uri),
            "{uri}: {}",
            run.errors[0]
        );
    }
}

/// Log lines of every debug category at levels up to `level` while `f` runs.
fn logged(level: gst::DebugLevel, f: impl FnOnce()) -> Vec<String> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let was = gst::log::get_default_threshold();
    // Not printed (the default handler writes to stderr), only collected.
    gst::log::remove_default_log_function();
    gst::log::set_default_threshold(level);
    gst::log::set_active(true);
    let id = gst::log::add_log_function(move |_cat, _lvl, _file, _fun, _line, obj, msg| {
        let who = obj.map(|o| o.to_string()).unwrap_or_default();
        if let Some(m) = msg.get() {
            l2.lock().unwrap().push(format!("{who}: {m}"));
        }
    });
    f();
    gst::log::remove_log_function(id);
    gst::log::set_default_threshold(was);
    std::mem::take(&mut *lines.lock().unwrap())
}

#[test]
fn rtmp_stream_key_never_appears_in_what_resilientsrc_says() {
    common::init();
    let port = common::free_port();
    let key = "sk-live-9f8e7d6c5b4a";
    let mut run = Run::new(&format!(
        "resilientsrc uri=rtmp://127.0.0.1:{port}/live/{key} backoff-initial=100000000 backoff-max=200000000"
    ));
    let lines = logged(gst::DebugLevel::Log, || {
        run.play();
        run.pump_until(Duration::from_secs(10), |r| {
            r.statuses()
                .iter()
                .filter(|s| s.get::<&str>("status") == Ok("retrying"))
                .count()
                >= 2
        });
    });
    let stats = run.stats();
    run.stop();
    let ours: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("resilientsrc") && l.contains(key))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    let said = format!("{:?} {:?} {stats}", run.messages, run.errors);
    assert!(!said.contains(key), "{said}");
    // The URI is still named, with the key masked.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("rtmp://127.0.0.1:{port}/live/***"))),
        "the source's log does not name it"
    );
}

#[test]
fn rtsp_credentials_reach_the_camera_but_no_log() {
    let cam = RtspCamera::start_with_auth("rtsp_server_child", Some(("viewer", "pw-Zx81Qk")));
    let uri = cam.uri().replace("rtsp://", "rtsp://viewer:pw-Zx81Qk@");
    let mut run = Run::new(&format!(
        "resilientsrc uri={uri} protocols=tcp latency=100000000"
    ));
    let mut got = false;
    let lines = logged(gst::DebugLevel::Debug, || {
        run.play();
        got = run.pump_until(Duration::from_secs(30), |r| r.frame_count() >= 10);
    });
    run.stop();
    assert!(
        got,
        "no frames with credentials: {:?} {:?}",
        run.errors,
        run.statuses()
    );
    let leaked: Vec<&String> = lines.iter().filter(|l| l.contains("pw-Zx81Qk")).collect();
    assert!(
        leaked.is_empty(),
        "{} lines: {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(3)]
    );
    // Without credentials the camera refuses: authentication really happened.
    let mut run = Run::new(&format!(
        "resilientsrc uri={} protocols=tcp max-attempts=1",
        cam.uri()
    ));
    run.run_to_end(Duration::from_secs(20));
    run.stop();
    assert_eq!(run.frame_count(), 0);
}

fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[test]
fn rtsp_sender_reports_give_wall_clock_capture_times() {
    // rtspsrc add-reference-timestamp-meta=true stamps frames with the camera's NTP time
    // (RTCP sender reports): nanoseconds since 1900, not 1970.
    let cam = RtspCamera::start("rtsp_server_child");
    let dir = common::TempDir::new("ntp");
    let db = dir.join("events.db");
    common::init();
    let p = common::parse(&format!(
        "rtspsrc location={} protocols=tcp latency=100 add-reference-timestamp-meta=true \
         ! rtph264depay ! h264parse ! avdec_h264 ! raftsink location=\"{}\" stream-id=cam",
        cam.uri(),
        db.display()
    ));
    let before = wall_ns();
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    // Long enough for a few sender reports.
    std::thread::sleep(Duration::from_secs(7));
    p.send_event(gst::event::Eos::new());
    let _ = bus.timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Eos]);
    p.set_state(gst::State::Null).unwrap();
    let after = wall_ns();
    let events = gstvideoai::eventlog::store::EventStore::open_for_reading(&db)
        .unwrap()
        .events(None)
        .unwrap();
    assert!(events.len() > 50, "{} events", events.len());
    let off: Vec<&gstvideoai::eventlog::event::FrameEvent> = events
        .iter()
        .filter(|e| e.capture_ns < before - 1_000_000_000 || e.capture_ns > after + 1_000_000_000)
        .collect();
    assert!(
        off.is_empty(),
        "{} of {} capture times more than 1 s off the wall clock, e.g. {}",
        off.len(),
        events.len(),
        off[0].capture_ns
    );
}

#[test]
fn framesync_aligns_rtsp_cameras_on_capture_time() {
    let mut cams = [
        RtspCamera::start("rtsp_server_child"),
        RtspCamera::start("rtsp_server_child"),
    ];
    common::init();
    let p = common::parse(&format!(
        "framesync name=sync align-on=capture-time tolerance=50000000 latency=500000000 ! appsink name=out sync=false \
         rtspsrc location={} protocols=tcp latency=100 add-reference-timestamp-meta=true ! rtph264depay ! h264parse ! avdec_h264 ! sync.sink_0 \
         rtspsrc location={} protocols=tcp latency=100 add-reference-timestamp-meta=true ! rtph264depay ! h264parse ! avdec_h264 ! sync.sink_1",
        cams[0].uri(),
        cams[1].uri()
    ));
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    // Per batch: the statuses of the two entries.
    let got = Arc::new(Mutex::new(Vec::<(Instant, [String; 2])>::new()));
    let g = got.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let entries = gstvideoai::formats::batch::read(sample.buffer().unwrap()).unwrap();
                let st = |i: usize| {
                    entries
                        .iter()
                        .find(|e| e.pad_index == i as u32)
                        .map_or("none".to_string(), |e| e.status.as_str().to_string())
                };
                g.lock().unwrap().push((Instant::now(), [st(0), st(1)]));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    p.set_state(gst::State::Playing).unwrap();
    // Both cameras send sender reports within a few seconds; then both are fresh together.
    std::thread::sleep(Duration::from_secs(8));
    let both_fresh = got
        .lock()
        .unwrap()
        .iter()
        .rev()
        .take(30)
        .filter(|(_, s)| s[0] == "fresh" && s[1] == "fresh")
        .count();
    // Camera 1 stalls: its entries go missing, and batches keep coming.
    cams[1].freeze();
    let frozen_at = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let after: Vec<(Instant, [String; 2])> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t > frozen_at)
        .cloned()
        .collect();
    p.set_state(gst::State::Null).unwrap();
    cams[1].kill();
    assert!(
        both_fresh >= 20,
        "both cameras fresh in {both_fresh} of the last 30 batches"
    );
    let first_missing = after.iter().find(|(_, s)| s[1] == "missing");
    let Some((t, _)) = first_missing else {
        panic!(
            "camera 1 never went missing; {} batches after the stall",
            after.len()
        );
    };
    assert!(
        *t - frozen_at < Duration::from_secs(2),
        "missing only after {:?}",
        *t - frozen_at
    );
    assert!(
        after.iter().filter(|(_, s)| s[0] == "fresh").count() >= 40,
        "camera 0 went on: {} batches",
        after.len()
    );
}

/// Buffers (with their caps) that leave one of the element's pads, collected by a probe.
fn collect(pad: &gst::Pad) -> Arc<Mutex<Vec<(gst::Buffer, gst::Caps)>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let (Some(gst::PadProbeData::Buffer(b)), Some(caps)) = (&info.data, pad.current_caps()) {
            g.lock().unwrap().push((b.clone(), caps));
        }
        gst::PadProbeReturn::Ok
    });
    got
}

/// `resilientsrc encoded=true`: both outputs to appsinks; the decoded and encoded buffers.
type Collected = Arc<Mutex<Vec<(gst::Buffer, gst::Caps)>>>;
fn with_encoded_output(src_desc: &str) -> (Run, Collected, Collected) {
    let run = Run::new(src_desc);
    // (An appsink nobody pulls from would hold EOS back.)
    let enc_sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .unwrap();
    run.pipeline.add(&enc_sink).unwrap();
    let encoded = run
        .src
        .static_pad("encoded")
        .expect("encoded=true makes the 'encoded' pad");
    encoded.link(&enc_sink.static_pad("sink").unwrap()).unwrap();
    let decoded = collect(&run.src.static_pad("src").unwrap());
    let access_units = collect(&encoded);
    (run, decoded, access_units)
}

/// The frames of `access_units` decoded by a decoder of this test's own (`h264parse !
/// avdec_h264`), by their RTP time.
fn decode_apart(
    access_units: &[(gst::Buffer, gst::Caps)],
) -> std::collections::HashMap<(u32, i64), Vec<u8>> {
    let (p, src) = common::from_appsrc(
        "video/x-h264",
        "h264parse ! avdec_h264 ! fakesink name=out sync=false",
    );
    let out = collect(&p.by_name("out").unwrap().static_pad("sink").unwrap());
    src.set_property("block", true);
    src.set_property("max-buffers", 8u64);
    p.set_state(gst::State::Playing).unwrap();
    for (b, caps) in access_units {
        if src.caps().as_ref() != Some(caps) {
            src.set_caps(Some(caps));
        }
        src.push_buffer(b.copy()).unwrap();
    }
    src.end_of_stream().unwrap();
    let o = common::run(&p, Duration::from_secs(60));
    assert!(o.eos && o.errors.is_empty(), "{o:?}");
    let frames = out.lock().unwrap();
    frames
        .iter()
        .filter_map(|(b, _)| {
            let t = gstvideoai::formats::capture_time::rtp_timestamp(b)?;
            Some(((t.ssrc, t.ns), b.map_readable().unwrap().to_vec()))
        })
        .collect()
}

#[test]
fn encoded_output_is_the_cameras_own_stream_from_the_same_connection_across_a_reconnect() {
    let mut cam = RtspCamera::start("rtsp_server_child");
    let (mut run, decoded, access_units) = with_encoded_output(&format!(
        "resilientsrc uri={} encoded=true protocols=tcp latency=100000000 \
         stall-timeout=2000000000 backoff-initial=200000000 backoff-max=1000000000",
        cam.uri()
    ));
    run.play();
    let enough = |n: usize| {
        let aus = access_units.clone();
        move |_: &Run| aus.lock().unwrap().len() >= n
    };
    assert!(
        run.pump_until(Duration::from_secs(30), enough(60)),
        "no access units from {}: {:?} {:?}",
        cam.uri(),
        run.errors,
        run.stats()
    );
    cam.kill();
    assert!(
        run.pump_until(Duration::from_secs(10), |r| r
            .statuses()
            .iter()
            .any(|s| s.get::<&str>("status") == Ok("retrying"))),
        "{:?}",
        run.statuses()
    );
    let before = access_units.lock().unwrap().len();
    cam.restart();
    assert!(
        run.pump_until(Duration::from_secs(20), enough(before + 60)),
        "access units did not resume: {:?} {:?}",
        run.errors,
        run.stats()
    );
    let stats = run.stats();
    run.stop();
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    // One connection to the camera at a time: the stream is counted once by the server…
    assert_eq!(stats.get::<u64>("reconnects"), Ok(1), "{stats}");
    let aus = access_units.lock().unwrap().clone();
    let frames = decoded.lock().unwrap().clone();
    eprintln!(
        "{stats}\n{} access units, {} decoded frames",
        aus.len(),
        frames.len()
    );
    assert!(stats.get::<u64>("encoded-frames").unwrap() >= aus.len() as u64);

    // Parsed, whole access units, with caps.
    let s = aus[0].1.structure(0).unwrap();
    assert_eq!(s.name(), "video/x-h264", "{}", aus[0].1);
    assert_eq!(s.get::<&str>("alignment"), Ok("au"), "{}", aus[0].1);
    // Each connection starts at a keyframe, with DISCONT; the decode time only increases.
    let starts: Vec<usize> = (0..aus.len())
        .filter(|i| aus[*i].0.flags().contains(gst::BufferFlags::DISCONT))
        .collect();
    assert_eq!(starts.len(), 2, "one DISCONT per connection: {starts:?}");
    assert_eq!(starts[0], 0);
    assert!(
        starts[1] >= 60 && starts[1] <= before,
        "{starts:?} ({before} before)"
    );
    for i in &starts {
        assert!(
            !aus[*i].0.flags().contains(gst::BufferFlags::DELTA_UNIT),
            "access unit {i} starts a connection but is not a keyframe"
        );
    }
    for w in aus.windows(2) {
        assert!(w[1].0.dts().unwrap() > w[0].0.dts().unwrap());
    }

    // What a decoder of the encoded output shows is, frame for frame, what the decoded output
    // carried at the same RTP time: the same stream, not re-encoded.
    let ours = decode_apart(&aus);
    let mut same = 0;
    for (b, _) in &frames {
        let Some(t) = gstvideoai::formats::capture_time::rtp_timestamp(b) else {
            continue;
        };
        if let Some(pixels) = ours.get(&(t.ssrc, t.ns)) {
            assert!(
                pixels.as_slice() == b.map_readable().unwrap().as_slice(),
                "frame at RTP time {t:?} differs"
            );
            same += 1;
        }
    }
    assert!(same >= 100, "{same} frames compared of {}", frames.len());
}

#[test]
fn encoded_output_of_a_file_ends_with_it_and_an_unlinked_one_costs_nothing() {
    common::init();
    let dir = common::TempDir::new("encoded-file");
    let clip = dir.join("clip");
    write_clip(&clip, "mp4mux");
    let (mut run, decoded, access_units) = with_encoded_output(&format!(
        "resilientsrc uri=\"{}\" encoded=true",
        clip.display()
    ));
    run.run_to_end(Duration::from_secs(60));
    let stats = run.stats();
    run.stop();
    assert!(run.eos && run.errors.is_empty(), "{:?}", run.errors);
    let (aus, frames) = (access_units.lock().unwrap(), decoded.lock().unwrap());
    assert_eq!(frames.len(), 60);
    assert_eq!(aus.len(), 60, "{stats}");
    assert!(!aus[0].0.flags().contains(gst::BufferFlags::DELTA_UNIT));
    // A file keeps its own time: each access unit has its frame's PTS.
    let pts = |v: &[(gst::Buffer, gst::Caps)]| v.iter().map(|(b, _)| b.pts()).collect::<Vec<_>>();
    assert_eq!(pts(&aus), pts(&frames));

    // The pad left unlinked: nothing is copied, nothing blocks, no error.
    let mut run = Run::new(&format!(
        "resilientsrc uri=\"{}\" encoded=true",
        clip.display()
    ));
    run.run_to_end(Duration::from_secs(60));
    let stats = run.stats();
    run.stop();
    assert!(run.eos && run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.frame_count(), 60);
    assert_eq!(stats.get::<u64>("encoded-frames"), Ok(0), "{stats}");
}
