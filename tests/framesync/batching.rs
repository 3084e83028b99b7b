// SPDX-License-Identifier: MPL-2.0
//! framesync: alignment of live sources at different rates and with a skew, stalls, pads
//! joining and leaving while playing, EOS and flushing seeks, all on real pipelines.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstvideoai::formats::batch::{self, Entry, Status};

const MS: u64 = 1_000_000;

/// One batch as the appsink got it.
#[derive(Debug, Clone)]
struct Got {
    tick: u64,
    entries: Vec<Entry>,
}

type Batches = Arc<Mutex<Vec<Got>>>;

/// Collects every batch reaching the appsink named `name`.
fn collect(pipeline: &gst::Pipeline, name: &str) -> Batches {
    let sink = pipeline
        .by_name(name)
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let got: Batches = Arc::default();
    let g = got.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().unwrap();
                let entries = batch::read(buf).expect("a batch");
                g.lock().unwrap().push(Got {
                    tick: buf.pts().unwrap().nseconds(),
                    entries,
                });
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    got
}

fn stats_streams(sync: &gst::Element) -> Vec<gst::Structure> {
    let stats = sync.property::<gst::Structure>("stats");
    stats
        .get::<gst::Array>("streams")
        .unwrap()
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .collect()
}

fn live_source(fps: u32, frames: u32) -> String {
    format!(
        "videotestsrc is-live=true num-buffers={frames} ! \
         video/x-raw,format=I420,width=64,height=48,framerate={fps}/1"
    )
}

#[test]
fn live_sources_at_different_rates_and_a_skew_batch_within_tolerance() {
    common::init();
    // 2 s of each: 25, 30, 15 and 30 fps, the last one 7 ms late (pad offset).
    let rates = [(25, 50), (30, 60), (15, 30), (30, 60)];
    let mut desc = String::from(
        // Default timeout: a batch waits for frames up to the tolerance after its tick.
        "framesync name=sync ! appsink name=out sync=false emit-signals=false ",
    );
    for (i, (fps, n)) in rates.iter().enumerate() {
        desc += &format!(
            " {} ! identity name=id{i} ! sync.sink_{i}",
            live_source(*fps, *n)
        );
    }
    let pipeline = common::parse(&desc);
    pipeline
        .by_name("id3")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .set_offset(7 * MS as i64);
    let got = collect(&pipeline, "out");
    let sync = pipeline.by_name("sync").unwrap();
    let outcome = common::run(&pipeline, Duration::from_secs(30));
    assert!(outcome.eos, "{:?}", outcome.errors);

    let batches = got.lock().unwrap().clone();
    assert!(batches.len() >= 55, "{} batches", batches.len());
    let tol = 1_000_000_000 / 30 / 2;
    let mut fresh = [0u64; 4];
    let mut repeated = [0u64; 4];
    let mut last_pts = [None; 4];
    for b in &batches {
        assert_eq!(
            b.entries.iter().map(|e| e.pad_index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3],
            "one entry per pad, by index"
        );
        for e in &b.entries {
            let i = e.pad_index as usize;
            match e.status {
                Status::Fresh => {
                    let rt = e.running_time.unwrap().nseconds();
                    assert!(
                        rt.abs_diff(b.tick) <= tol,
                        "stream {i}: frame at {rt} in the batch of {} (tolerance {tol})",
                        b.tick
                    );
                    assert!(
                        e.pts > last_pts[i],
                        "stream {i}: a frame came twice as fresh"
                    );
                    last_pts[i] = e.pts;
                    fresh[i] += 1;
                    assert!(e.buffer.is_some() && e.caps.is_some() && e.capture_ns.is_some());
                }
                Status::Repeated => {
                    repeated[i] += 1;
                    assert!(e.buffer.is_some());
                }
                Status::Missing => assert!(e.buffer.is_none()),
            }
        }
    }
    let streams = stats_streams(&sync);
    for (i, (_, n)) in rates.iter().enumerate() {
        let dropped = streams[i].get::<u64>("dropped").unwrap();
        assert_eq!(
            fresh[i] + dropped,
            *n as u64,
            "stream {i}: every frame is in a batch or counted as dropped"
        );
        assert!(
            fresh[i] * 10 >= *n as u64 * 9,
            "stream {i}: {} of {n} frames fresh",
            fresh[i]
        );
    }
    assert!(repeated[2] >= 20, "15 fps stream repeats: {}", repeated[2]);
    let skew = |i: usize| streams[i].get::<i64>("skew-ns").unwrap();
    assert!(
        (-10 * MS as i64..=-4 * MS as i64).contains(&skew(3)),
        "skew of the late stream: {} ns",
        skew(3)
    );
    assert!(
        skew(1).abs() <= 3 * MS as i64,
        "skew of an on-time stream: {} ns",
        skew(1)
    );
    println!(
        "batches {}, fresh {fresh:?}, repeated {repeated:?}, skew {} / {} ns",
        batches.len(),
        skew(1),
        skew(3)
    );
}

#[test]
fn drift_correction_aligns_a_skewed_camera() {
    common::init();
    let desc = format!(
        "framesync name=sync drift-correction=true timeout=200000000 ! appsink name=out sync=false \
         {} ! sync.sink_0  {} ! identity name=late ! sync.sink_1",
        live_source(30, 60),
        live_source(30, 60)
    );
    let pipeline = common::parse(&desc);
    pipeline
        .by_name("late")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .set_offset(25 * MS as i64);
    let got = collect(&pipeline, "out");
    let outcome = common::run(&pipeline, Duration::from_secs(30));
    assert!(outcome.eos, "{:?}", outcome.errors);
    let batches = got.lock().unwrap().clone();
    // Once the estimate has settled, the late camera's frames sit on the ticks.
    let settled: Vec<u64> = batches
        .iter()
        .skip(15)
        .filter_map(|b| {
            let e = &b.entries[1];
            (e.status == Status::Fresh).then(|| e.running_time.unwrap().nseconds().abs_diff(b.tick))
        })
        .collect();
    assert!(settled.len() >= 30, "{} fresh entries", settled.len());
    let worst = settled.iter().max().unwrap();
    assert!(*worst <= 4 * MS, "worst distance to the tick {worst} ns");
}

#[test]
fn paused_source_is_missing_then_rejoins() {
    common::init();
    let desc = "framesync name=sync timeout=100000000 ! appsink name=out sync=false \
         videotestsrc is-live=true ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 ! sync.sink_0 \
         videotestsrc name=cam1 is-live=true ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 ! sync.sink_1";
    let pipeline = common::parse(desc);
    let got = collect(&pipeline, "out");
    let cam1 = pipeline.by_name("cam1").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    cam1.set_state(gst::State::Paused).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cam1.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    pipeline.set_state(gst::State::Null).unwrap();

    let batches = got.lock().unwrap().clone();
    let s1: Vec<Status> = batches.iter().map(|b| b.entries[1].status).collect();
    let s0: Vec<Status> = batches.iter().map(|b| b.entries[0].status).collect();
    // The longest run of missing entries for the paused camera: about 2 s of ticks.
    let (mut run, mut longest, mut end) = (0, 0, 0);
    for (i, s) in s1.iter().enumerate() {
        if *s == Status::Missing {
            run += 1;
            if run > longest {
                longest = run;
                end = i;
            }
        } else {
            run = 0;
        }
    }
    assert!(
        (45..=75).contains(&longest),
        "missing for {longest} batches: {s1:?}"
    );
    let before = &s1[..end + 1 - longest];
    assert!(before.iter().filter(|s| **s == Status::Fresh).count() >= 20);
    let after = &s1[end + 1..];
    assert!(
        after.iter().filter(|s| **s == Status::Fresh).count() >= 20,
        "the camera rejoins: {after:?}"
    );
    assert!(
        s0.iter().skip(1).filter(|s| **s == Status::Missing).count() <= 2,
        "the other camera is unaffected"
    );
}

#[test]
fn pads_join_and_leave_while_playing() {
    common::init();
    let pipeline = common::parse(&format!(
        "framesync name=sync timeout=50000000 ! appsink name=out sync=false {} ! sync.sink_0",
        live_source(30, 100_000)
    ));
    let got = collect(&pipeline, "out");
    let sync = pipeline.by_name("sync").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let started = Instant::now();
    let mut weak_pads = Vec::new();
    let mut weak_bins = Vec::new();
    let mut joined_with_frames = 0;
    for round in 0..50 {
        let desc = format!("{} ! identity", live_source(30, 100_000));
        let bin = gst::parse::bin_from_description(&desc, true).unwrap();
        pipeline.add(&bin).unwrap();
        let pad = sync.request_pad_simple("sink_%u").unwrap();
        let index: u32 = pad.name().trim_start_matches("sink_").parse().unwrap();
        bin.static_pad("src").unwrap().link(&pad).unwrap();
        bin.sync_state_with_parent().unwrap();
        // Wait (bounded) until the new camera's frames are in a batch.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let seen = got.lock().unwrap().iter().rev().take(10).any(|b| {
                b.entries
                    .iter()
                    .any(|e| e.pad_index == index && e.status == Status::Fresh)
            });
            if seen {
                joined_with_frames += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Leave: stop the camera, unlink, release.
        bin.set_state(gst::State::Null).unwrap();
        bin.static_pad("src").unwrap().unlink(&pad).unwrap();
        sync.release_request_pad(&pad);
        pipeline.remove(&bin).unwrap();
        weak_pads.push(pad.downgrade());
        weak_bins.push(bin.downgrade());
        drop((pad, bin));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "round {round}: too slow, stuck?"
        );
    }
    // Still producing after all that.
    let before = got.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    let after = got.lock().unwrap().len();
    assert!(after >= before + 5, "batches stopped: {before} -> {after}");
    let last = got.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.entries.len(), 1, "only the first camera is left");
    // Released pads were reported once as ended.
    let ended = got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.entries.iter())
        .filter(|e| e.pad_index > 0 && e.eos)
        .count();
    assert_eq!(ended, 50);
    pipeline.set_state(gst::State::Null).unwrap();
    drop(got);
    assert_eq!(sync.sink_pads().len(), 1);
    assert!(
        joined_with_frames >= 45,
        "{joined_with_frames} of 50 joins had frames"
    );
    let leaked_pads = weak_pads.iter().filter(|w| w.upgrade().is_some()).count();
    let leaked_bins = weak_bins.iter().filter(|w| w.upgrade().is_some()).count();
    assert_eq!(
        (leaked_pads, leaked_bins),
        (0, 0),
        "released pads and bins are freed"
    );
}

#[test]
fn one_stream_ends_then_all_end() {
    common::init();
    let desc = "framesync name=sync ! tee name=t ! queue ! appsink name=out sync=false \
         t. ! queue ! framesplit name=split \
         videotestsrc num-buffers=60 ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 ! sync.sink_0 \
         videotestsrc num-buffers=30 pattern=ball ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 ! sync.sink_1 \
         split.src_0 ! queue ! fakesink name=f0 sync=true signal-handoffs=true \
         split.src_1 ! queue ! fakesink name=f1 sync=true signal-handoffs=true";
    let pipeline = common::parse(desc);
    let got = collect(&pipeline, "out");
    let counts = Arc::new(Mutex::new([0u32; 2]));
    // Frames each sink had when the other stream's EOS reached its sink.
    let eos_at = Arc::new(Mutex::new([None; 2]));
    for i in 0..2 {
        let sink = pipeline.by_name(&format!("f{i}")).unwrap();
        let c = counts.clone();
        sink.connect("handoff", false, move |_| {
            c.lock().unwrap()[i] += 1;
            None
        });
        let (c, e) = (counts.clone(), eos_at.clone());
        sink.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data
                    && ev.type_() == gst::EventType::Eos
                {
                    e.lock().unwrap()[i] = Some(c.lock().unwrap()[1 - i]);
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let outcome = common::run(&pipeline, Duration::from_secs(30));
    assert!(outcome.eos, "{:?}", outcome.errors);
    assert_eq!(
        *counts.lock().unwrap(),
        [60, 30],
        "every frame, once, on its own pad"
    );
    let eos_at = *eos_at.lock().unwrap();
    let when = eos_at[1].expect("stream 1 got EOS");
    assert!(
        when < 60,
        "stream 1 ended while stream 0 still ran ({when} frames of it)"
    );
    let batches = got.lock().unwrap().clone();
    assert_eq!(batches.len(), 60);
    let ended: Vec<bool> = batches.iter().map(|b| b.entries[1].eos).collect();
    assert!(!ended[..30].iter().any(|e| *e));
    assert!(
        ended[30..].iter().all(|e| *e),
        "ended flagged on every later batch"
    );
    assert!(
        batches[30..]
            .iter()
            .all(|b| b.entries[1].status == Status::Missing && b.entries[0].status == Status::Fresh)
    );
}

#[test]
fn flushing_seek_restarts_alignment() {
    common::init();
    let desc = "framesync name=sync ! appsink name=out sync=false max-buffers=4 \
         videotestsrc ! video/x-raw,format=I420,width=64,height=48,framerate=30/1 ! sync.sink_0 \
         videotestsrc pattern=ball ! video/x-raw,format=I420,width=64,height=48,framerate=15/1 ! sync.sink_1";
    let pipeline = common::parse(desc);
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    pipeline.state(gst::ClockTime::from_seconds(5)).0.unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let pull = || {
        let s = sink
            .try_pull_sample(gst::ClockTime::from_seconds(5))
            .expect("a batch");
        let b = s.buffer().unwrap();
        (s.segment().cloned(), batch::read(b).unwrap())
    };
    for _ in 0..10 {
        pull();
    }
    pipeline
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::ClockTime::from_seconds(5),
        )
        .unwrap();
    // The first batches after the flush: both streams from 5 s, aligned again.
    let (_, entries) = pull();
    for e in &entries {
        assert_eq!(e.status, Status::Fresh, "{e:?}");
        assert!(
            e.pts.unwrap() >= gst::ClockTime::from_seconds(5),
            "{:?}",
            e.pts
        );
    }
    let (_, next) = pull();
    assert_eq!(next[0].status, Status::Fresh);
    assert_eq!(next[1].status, Status::Repeated);
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn a_split_branch_that_refuses_its_caps_is_a_clear_error() {
    common::init();
    // The tee's other branch keeps flowing, so only framesplit can tell.
    let desc = "framesync name=sync ! tee name=t t. ! queue ! fakesink \
         t. ! queue ! framesplit name=split \
         videotestsrc is-live=true num-buffers=300 ! video/x-raw,width=64,height=48,format=ABGR64_LE ! sync.sink_0 \
         split.src_0 ! queue ! detectionoverlay ! fakesink";
    let pipeline = common::parse(desc);
    let outcome = common::run(&pipeline, Duration::from_secs(30));
    assert!(!outcome.eos);
    let err = outcome.first_error();
    assert!(
        err.contains("framesplit") && err.contains("src_0") && err.contains("NotNegotiated"),
        "{err}"
    );
}

#[test]
fn a_camera_that_never_sends_does_not_hold_the_others_back() {
    a_silent_camera(false);
}

#[test]
fn a_silent_camera_whose_source_cannot_say_its_latency_does_not_hold_the_others_back() {
    // The race behind the old hang, made certain: the silent camera's source cannot answer the
    // LATENCY query (it has no caps yet, as a camera that never connected): framesync must
    // still run on its timeout (it used to take itself for not live and wait forever).
    a_silent_camera(true);
}

/// sink_1's camera is live but not one frame gets through (with `mute`, its source does not
/// answer LATENCY queries either); sink_0's frames are batched on time regardless.
fn a_silent_camera(mute: bool) {
    common::init();
    let desc = format!(
        "framesync name=sync ! appsink name=out sync=false {} ! sync.sink_0 \
         {} ! valve name=v drop=true ! sync.sink_1",
        live_source(30, 45),
        live_source(30, 45)
    );
    let pipeline = common::parse(&desc);
    if mute {
        let valve = pipeline.by_name("v").unwrap();
        valve
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::QUERY_UPSTREAM, |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Query(q)) if q.type_() == gst::QueryType::Latency => {
                        gst::PadProbeReturn::Drop
                    }
                    _ => gst::PadProbeReturn::Ok,
                }
            });
    }
    let got = collect(&pipeline, "out");
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let batches = got.lock().unwrap().clone();
    assert!(batches.len() >= 30, "{} batches", batches.len());
    assert!(
        batches
            .iter()
            .all(|b| b.entries[1].status == Status::Missing)
    );
    let fresh = batches
        .iter()
        .filter(|b| b.entries[0].status == Status::Fresh)
        .count();
    assert!(fresh >= batches.len() - 1, "{fresh} of {}", batches.len());
}

#[test]
fn no_inputs_is_said_and_eos_still_ends_the_pipeline() {
    common::init();
    let p = common::parse("framesync name=s ! fakesink");
    let bus = p.bus().unwrap();
    // What gst-launch-1.0 -e does: PAUSED (the sink waits to preroll), then on Ctrl-C an EOS
    // sent from the thread that will set PLAYING once prerolled: it must not wait.
    let _ = p.set_state(gst::State::Paused);
    std::thread::sleep(Duration::from_millis(200));
    let (tx, rx) = std::sync::mpsc::channel();
    let p2 = p.clone();
    std::thread::spawn(move || {
        let _ = tx.send(p2.send_event(gst::event::Eos::new()));
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(2)),
        Ok(true),
        "sending EOS returned only once the pipeline played (or never)"
    );
    let _ = p.set_state(gst::State::Playing);
    let mut warned = false;
    let mut eos = false;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && !eos {
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
            match m.view() {
                gst::MessageView::Warning(w) => {
                    warned |= w.error().to_string().contains("no inputs")
                }
                gst::MessageView::Eos(_) => eos = true,
                gst::MessageView::Error(e) => panic!("{}", e.error()),
                _ => {}
            }
        }
    }
    p.set_state(gst::State::Null).unwrap();
    assert!(eos, "no EOS");
    assert!(warned, "no warning about the missing inputs");
}

#[test]
fn a_tolerance_near_its_maximum_ends_cleanly() {
    common::init();
    let p = common::parse(
        "videotestsrc is-live=true num-buffers=60 ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! framesync tolerance=9999000000 ! framesplit name=split ! fakesink name=sink sync=true",
    );
    // Nothing may follow EOS out of framesplit.
    let after_eos = Arc::new(Mutex::new(Vec::<String>::new()));
    let (a2, seen_eos) = (
        after_eos.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let s2 = seen_eos.clone();
    p.by_name("split")
        .unwrap()
        .connect_pad_added(move |_, pad| {
            let (a3, s3) = (a2.clone(), s2.clone());
            pad.add_probe(gst::PadProbeType::DATA_DOWNSTREAM, move |_, info| {
                let what = match &info.data {
                    Some(gst::PadProbeData::Buffer(_)) => "buffer".to_string(),
                    Some(gst::PadProbeData::Event(e)) => format!("{:?}", e.type_()),
                    _ => "other".into(),
                };
                if s3.load(std::sync::atomic::Ordering::SeqCst) {
                    a3.lock().unwrap().push(what);
                } else if what == "Eos" {
                    s3.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                gst::PadProbeReturn::Ok
            });
        });
    // Played to EOS, then a moment more for anything that would follow it.
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut errors = Vec::new();
    let mut eos = false;
    let end = Instant::now() + Duration::from_secs(40);
    while Instant::now() < end && !eos && errors.is_empty() {
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
            match m.view() {
                gst::MessageView::Eos(_) => eos = true,
                gst::MessageView::Error(e) => errors.push(e.error().to_string()),
                _ => {}
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    while let Some(m) = bus.pop() {
        if let gst::MessageView::Error(e) = m.view() {
            errors.push(format!("{} ({:?})", e.error(), e.debug()));
        }
    }
    p.set_state(gst::State::Null).unwrap();
    assert!(eos && errors.is_empty(), "eos {eos}, errors {errors:?}");
    assert!(
        after_eos.lock().unwrap().is_empty(),
        "pushed after EOS: {:?}",
        after_eos.lock().unwrap()
    );
}

#[test]
fn a_stalled_stream_delays_batches_by_the_tolerance_once() {
    // Two live streams at 10 fps, one stops after 10 frames: the batches that follow wait for
    // it until tick + tolerance + upstream latency, not twice the tolerance.
    common::init();
    let tol_ms = 300u64;
    let p = common::parse(&format!(
        "framesync name=sync tolerance={} ! appsink name=out sync=false \
         videotestsrc is-live=true num-buffers=60 ! video/x-raw,width=16,height=16,framerate=10/1 ! sync.sink_0 \
         videotestsrc is-live=true ! video/x-raw,width=16,height=16,framerate=10/1 ! valve name=v ! sync.sink_1",
        tol_ms * MS
    ));
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let delays = Arc::new(Mutex::new(Vec::new()));
    let d2 = delays.clone();
    let el = sink.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().unwrap();
                let entries = batch::read(buf).unwrap();
                let tick = batch::tick(buf).unwrap();
                if let Some(now) = el.current_running_time()
                    && entries
                        .iter()
                        .any(|e| e.pad_index == 1 && e.status == Status::Missing)
                {
                    d2.lock().unwrap().push(now.saturating_sub(tick));
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let valve = p.by_name("v").unwrap();
    p.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    valve.set_property("drop", true);
    std::thread::sleep(Duration::from_secs(3));
    p.set_state(gst::State::Null).unwrap();
    let delays = delays.lock().unwrap().clone();
    assert!(
        delays.len() >= 10,
        "{} batches with stream 1 missing",
        delays.len()
    );
    let mut sorted = delays.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    // One tolerance (and the live sources' latency, a frame or so), not two.
    assert!(
        median < gst::ClockTime::from_mseconds(tol_ms * 3 / 2),
        "median delay {median} with a tolerance of {tol_ms} ms: {delays:?}"
    );
}
