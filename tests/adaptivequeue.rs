// SPDX-License-Identifier: MPL-2.0
//! adaptivequeue: each drop rule on a single element (harness, downstream held by a blocking
//! probe), then real pipelines: H.264 under a slow decoder consumer, overload, recovery.

mod common;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

const MS: u64 = 1_000_000;

/// Frame `i` of a 25 fps stream: a 16-byte buffer at `i` × 40 ms, 40 ms long.
fn frame(i: u64) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(16).unwrap();
    {
        let b = b.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(i * 40 * MS));
        b.set_duration(gst::ClockTime::from_nseconds(40 * MS));
    }
    b
}

/// A harness around an adaptivequeue whose output is held back until `release`; what comes
/// out is recorded in order by a probe on the queue's source pad.
struct Held {
    h: gst_check::Harness,
    queue: gst::Element,
    probe: Option<gst::PadProbeId>,
    /// Set once the first buffer is held at the output.
    held: Arc<std::sync::atomic::AtomicBool>,
    out: Arc<Mutex<Vec<Out>>>,
}

impl Held {
    fn new(caps: &str, props: &[(&str, &str)]) -> Self {
        common::init();
        let queue = gst::ElementFactory::make("adaptivequeue").build().unwrap();
        // The harness source is not live: let the queue drop anyway.
        queue.set_property("live-only", false);
        for (k, v) in props {
            queue.set_property_from_str(k, v);
        }
        let mut h = gst_check::Harness::with_element(&queue, Some("sink"), Some("src"));
        // Not live: ages count from the newest buffer, not from the (system) clock.
        h.set_live(false);
        h.set_src_caps_str(caps);
        let srcpad = queue.static_pad("src").unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let out2 = out.clone();
        srcpad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => out2.lock().unwrap().push(Out::of(b)),
                    Some(gst::PadProbeData::Event(e)) => match e.type_() {
                        gst::EventType::CustomDownstream => out2
                            .lock()
                            .unwrap()
                            .push(Out::Event(e.structure().unwrap().name().to_string())),
                        gst::EventType::Eos => out2.lock().unwrap().push(Out::Event("eos".into())),
                        _ => {}
                    },
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held2 = held.clone();
        let probe = srcpad.add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            move |_, _| {
                held2.store(true, std::sync::atomic::Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            },
        );
        Held {
            h,
            queue,
            probe,
            held,
            out,
        }
    }

    fn push(&mut self, i: u64, delta: bool) {
        let mut b = frame(i);
        {
            let b = b.get_mut().unwrap();
            b.set_offset(i);
            if delta {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        assert_eq!(self.h.push(b), Ok(gst::FlowSuccess::Ok));
    }

    fn stats(&self) -> gst::Structure {
        self.queue.property("stats")
    }

    /// Waits until the first buffer is held at the output.
    fn wait_held(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.held.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "nothing reached the output");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn release(&mut self) {
        if let Some(p) = self.probe.take() {
            self.queue.static_pad("src").unwrap().remove_probe(p);
        }
    }

    /// Releases the output, sends EOS and returns everything that came out, in order.
    fn drain(&mut self) -> Vec<Out> {
        self.release();
        assert!(self.h.push_event(gst::event::Eos::new()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let out = self.out.lock().unwrap();
                if out.last() == Some(&Out::Event("eos".into())) {
                    return out[..out.len() - 1].to_vec();
                }
            }
            assert!(Instant::now() < deadline, "no EOS out of the queue");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Out {
    Buffer {
        offset: u64,
        discont: bool,
        delta: bool,
    },
    Event(String),
}

impl Out {
    fn of(b: &gst::BufferRef) -> Out {
        Out::Buffer {
            offset: b.offset(),
            discont: b.flags().contains(gst::BufferFlags::DISCONT),
            delta: b.flags().contains(gst::BufferFlags::DELTA_UNIT),
        }
    }
}

fn buffers(out: &[Out]) -> Vec<(u64, bool, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Buffer {
                offset,
                discont,
                delta,
            } => Some((*offset, *discont, *delta)),
            _ => None,
        })
        .collect()
}

fn custom(name: &str) -> gst::Event {
    gst::event::CustomDownstream::new(gst::Structure::new_empty(name))
}

#[test]
fn raw_video_thinned_evenly_with_discont() {
    let mut q = Held::new(
        "video/x-raw,format=RGB,width=4,height=4,framerate=25/1",
        &[("mode", "fixed"), ("max-latency", "0")],
    );
    for i in 0..60 {
        q.push(i, false);
        if i == 10 {
            assert!(q.h.push_event(custom("marker-10")));
        }
    }
    let stats = q.stats();
    let dropped = stats.get::<u64>("dropped-watermark").unwrap();
    assert!(dropped > 0, "{stats}");
    // A fraction of the 60 frames is left (nothing came out yet: downstream is held).
    assert!(
        stats.get::<u32>("current-level-buffers").unwrap() <= 22,
        "{stats}"
    );
    let out = q.drain();
    let b = buffers(&out);
    assert_eq!(b.len() as u64 + dropped, 60, "{b:?}");
    // The newest 200 ms (5 frames) are all there, in order.
    let offsets: Vec<u64> = b.iter().map(|x| x.0).collect();
    assert_eq!(&offsets[offsets.len() - 5..], &[55, 56, 57, 58, 59]);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    // Drops are spread: every 4th frame kept (k = high / low), never 4 in a row missing.
    let max_gap = offsets.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap();
    assert_eq!(max_gap, 3, "{offsets:?}");
    // DISCONT exactly on the frames that follow a gap.
    for w in b.windows(2) {
        assert_eq!(w[1].1, w[1].0 != w[0].0 + 1, "{w:?}");
    }
    // The event is delivered, after frame 10's predecessors and before anything newer.
    let pos = out
        .iter()
        .position(|o| *o == Out::Event("marker-10".into()))
        .expect("event kept");
    let before = buffers(&out[..pos]);
    let after = buffers(&out[pos..]);
    assert!(
        before.iter().all(|x| x.0 <= 10) && after.iter().all(|x| x.0 > 10),
        "{out:?}"
    );
}

#[test]
fn frames_older_than_max_latency_never_leave() {
    let mut q = Held::new(
        "video/x-raw,format=RGB,width=4,height=4,framerate=25/1",
        &[
            ("mode", "fixed"),
            ("max-latency", "1000000000"),
            ("high-watermark", "5000000000"),
        ],
    );
    for i in 0..100 {
        q.push(i, false);
    }
    let stats = q.stats();
    assert!(stats.get::<u64>("dropped-expired").unwrap() > 0, "{stats}");
    let b = buffers(&q.drain());
    // Frame 0 was already on its way out; every other frame that left was at most 1 s older
    // than the newest (frame 99 ends at 4 s).
    for &(offset, _, _) in &b[1..] {
        assert!(
            4000 - (offset * 40) <= 1000,
            "frame {offset} is {} ms old",
            4000 - offset * 40
        );
    }
}

/// Checks that every delta unit that came out follows its GOP's keyframe and all frames in
/// between: decoding never misses a reference.
fn assert_whole_gops(b: &[(u64, bool, bool)], gop: u64) {
    let mut last: Option<u64> = None;
    for &(offset, _, delta) in b {
        if delta {
            let prev = last
                .unwrap_or_else(|| panic!("delta {offset} without a keyframe before it: {b:?}"));
            assert_eq!(offset, prev + 1, "hole inside a GOP before {offset}: {b:?}");
            assert_eq!(offset / gop, prev / gop);
        } else {
            assert_eq!(offset % gop, 0, "{b:?}");
        }
        last = Some(offset);
    }
}

#[test]
fn encoded_video_drops_only_whole_gop_tails() {
    let gop = 10;
    let mut q = Held::new(
        "video/x-h264,stream-format=byte-stream,alignment=au",
        &[("mode", "fixed"), ("max-latency", "0")],
    );
    for i in 0..75 {
        q.push(i, i % gop != 0);
    }
    let stats = q.stats();
    assert!(stats.get::<u64>("dropped").unwrap() > 0, "{stats}");
    let out = q.drain();
    let b = buffers(&out);
    assert_whole_gops(&b, gop);
    // The newest keyframe (70) and its deltas are kept.
    let offsets: Vec<u64> = b.iter().map(|x| x.0).collect();
    assert!(offsets.ends_with(&[70, 71, 72, 73, 74]), "{offsets:?}");
    // The keyframe after a gap says so.
    for w in b.windows(2) {
        if w[1].0 != w[0].0 + 1 {
            assert!(w[1].1 && !w[1].2, "{w:?}");
        }
    }
}

#[test]
fn long_gop_tail_is_cut_until_the_next_keyframe() {
    // One keyframe, then deltas for longer than the high watermark: the tail goes, and the
    // deltas that keep coming are dropped until the next keyframe.
    let mut q = Held::new(
        "video/x-h264,stream-format=byte-stream,alignment=au",
        &[("mode", "fixed"), ("max-latency", "0")],
    );
    q.push(0, false);
    // Frame 0 is on its way out (held downstream) before the rest arrives.
    q.wait_held();
    for i in 1..40 {
        q.push(i, i != 35);
    }
    let stats = q.stats();
    assert!(stats.get::<u64>("dropped-gop-tail").unwrap() > 0, "{stats}");
    let b = buffers(&q.drain());
    assert_whole_gops(&b, 35);
    assert_eq!(b.first().map(|x| x.0), Some(0), "{b:?}");
    assert!(
        b.iter().any(|x| x.0 == 35) && b.last().unwrap().0 == 39,
        "{b:?}"
    );
}

#[test]
fn adaptive_mode_thins_before_the_watermark() {
    // Downstream is slow (probe sleeps 60 ms per frame, input every 40 ms in running time and
    // pushed as fast as possible): the controller learns the push time and thins the input.
    common::init();
    let queue = gst::ElementFactory::make("adaptivequeue")
        .property("live-only", false)
        .property("target-latency", 200 * MS)
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&queue, Some("sink"), Some("src"));
    h.set_live(false);
    h.set_src_caps_str("video/x-raw,format=RGB,width=4,height=4,framerate=25/1");
    queue
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, |_, _| {
            std::thread::sleep(Duration::from_millis(60));
            gst::PadProbeReturn::Ok
        });
    for i in 0..60u64 {
        h.push(frame(i)).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    // Judged on the whole run, not on `pass-ratio` at the end: the ratio cycles between the
    // sustainable share and +5 % steps back up (0.69 to 0.96 at the last frame in six runs), so a
    // snapshot of it says nothing. Downstream takes 40 of 60 frames; the thinning must drop
    // a good part of the other 20 and the watermark (800 ms) none.
    let stats = queue.property::<gst::Structure>("stats");
    assert!(
        stats.get::<u64>("dropped-adaptive").unwrap() >= 8,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("dropped-watermark").unwrap(), 0, "{stats}");
    assert!(
        stats.get::<u64>("ewma-processing-time").unwrap() >= 55 * MS,
        "{stats}"
    );
}

#[test]
fn non_live_upstream_is_blocked_not_dropped() {
    common::init();
    let queue = gst::ElementFactory::make("adaptivequeue")
        .property("max-latency", 400 * MS)
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&queue, Some("sink"), Some("src"));
    // Answer the queue's latency query as a non-live source does.
    h.set_live(false);
    h.set_src_caps_str("video/x-raw,format=RGB,width=4,height=4,framerate=25/1");
    let srcpad = queue.static_pad("src").unwrap();
    let probe = srcpad
        .add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            |_, _| gst::PadProbeReturn::Ok,
        )
        .unwrap();
    let pushed = Arc::new(Mutex::new(0u64));
    let pushed2 = pushed.clone();
    let pusher = std::thread::spawn(move || {
        for i in 0..30u64 {
            h.push(frame(i)).unwrap();
            *pushed2.lock().unwrap() += 1;
        }
        h
    });
    std::thread::sleep(Duration::from_millis(300));
    let blocked_at = *pushed.lock().unwrap();
    assert!(
        (9..=13).contains(&blocked_at),
        "upstream should block near 400 ms queued: {blocked_at}"
    );
    srcpad.remove_probe(probe);
    let mut h = pusher.join().unwrap();
    let stats = queue.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("dropped").unwrap(), 0, "{stats}");
    for i in 0..30 {
        assert_eq!(
            h.pull().unwrap().pts(),
            Some(gst::ClockTime::from_nseconds(i * 40 * MS))
        );
    }
}

#[test]
fn flush_empties_and_restarts() {
    let mut q = Held::new(
        "video/x-raw,format=RGB,width=4,height=4,framerate=25/1",
        &[],
    );
    for i in 0..10 {
        q.push(i, false);
    }
    assert!(q.h.push_event(gst::event::FlushStart::new()));
    assert!(q.h.push_event(gst::event::FlushStop::new(true)));
    let stats = q.stats();
    assert_eq!(
        stats.get::<u32>("current-level-buffers").unwrap(),
        0,
        "{stats}"
    );
    q.h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    q.push(100, false);
    let b = buffers(&q.drain());
    assert!(
        b.iter().any(|x| x.0 == 100),
        "data flows after the flush: {b:?}"
    );
    assert!(b.len() <= 2, "{b:?}");
}

#[test]
fn serialized_query_waits_for_earlier_data() {
    let mut q = Held::new(
        "video/x-raw,format=RGB,width=4,height=4,framerate=25/1",
        &[],
    );
    for i in 0..5 {
        q.push(i, false);
    }
    let sinkpad = q.queue.static_pad("sink").unwrap();
    let peer = sinkpad.peer().unwrap();
    let answered = Arc::new(Mutex::new(false));
    let answered2 = answered.clone();
    let t = std::thread::spawn(move || {
        let mut query = gst::query::Drain::new();
        peer.peer_query(&mut query);
        *answered2.lock().unwrap() = true;
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !*answered.lock().unwrap(),
        "answered before the queued buffers went out"
    );
    q.release();
    t.join().unwrap();
    assert!(*answered.lock().unwrap());
    // All five buffers were out before the query was answered.
    assert_eq!(buffers(&q.out.lock().unwrap()).len(), 5);
}

/// What one decoding branch produced: a hash of each decoded frame by PTS, and the worst
/// latency seen.
#[derive(Default)]
struct Decoded {
    frames: std::collections::BTreeMap<u64, u64>,
    worst: Duration,
}

fn frame_hash(buf: &gst::BufferRef) -> u64 {
    let map = buf.map_readable().unwrap();
    map.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn record_frames(p: &gst::Pipeline, sink: &str, into: Arc<Mutex<Decoded>>) {
    p.by_name(sink)
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let (Some(buf), Some(el)) = (info.buffer(), pad.parent_element()) {
                let mut d = into.lock().unwrap();
                d.frames
                    .insert(buf.pts().unwrap().nseconds(), frame_hash(buf));
                if let Some(l) = latency(&el, pad, buf) {
                    d.worst = d.worst.max(l);
                }
            }
            gst::PadProbeReturn::Ok
        });
}

/// Live H.264 (GOP 15) is decoded twice: in full behind an unbounded queue (the reference),
/// and through `element` with a consumer 3x slower than real time. Returns both.
fn h264_through(element: &str) -> (Decoded, Decoded, common::Outcome) {
    common::init();
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers=150 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! videoconvert ! openh264enc gop-size=15 ! h264parse ! tee name=t \
         t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! avdec_h264 ! fakesink name=reference sync=false \
         t. ! {element} ! avdec_h264 ! identity sleep-time=100000 ! fakesink name=slow sync=false"
    ));
    let reference = Arc::new(Mutex::new(Decoded::default()));
    let slow = Arc::new(Mutex::new(Decoded::default()));
    record_frames(&p, "reference", reference.clone());
    record_frames(&p, "slow", slow.clone());
    let out = common::run(&p, Duration::from_secs(60));
    drop(p);
    let take = |d: Arc<Mutex<Decoded>>| std::mem::take(&mut *d.lock().unwrap());
    (take(reference), take(slow), out)
}

/// Frames of `slow` that differ from the reference decode of the same PTS.
fn corrupted(reference: &Decoded, slow: &Decoded) -> Vec<u64> {
    slow.frames
        .iter()
        .filter(|(pts, hash)| reference.frames.get(pts) != Some(hash))
        .map(|(pts, _)| *pts)
        .collect()
}

#[test]
fn h264_with_slow_consumer_decodes_cleanly() {
    let (reference, slow, out) = h264_through("adaptivequeue name=q");
    assert!(
        out.eos && out.errors.is_empty() && out.warnings.is_empty(),
        "{out:?}"
    );
    assert_eq!(reference.frames.len(), 150);
    // Frames were dropped (the consumer runs at a third of real time) ...
    let n = slow.frames.len();
    assert!((20..120).contains(&n), "{n} frames decoded");
    // ... yet every decoded frame is bit-identical to the full decode: no missing reference.
    let bad = corrupted(&reference, &slow);
    assert!(
        bad.is_empty(),
        "{} of {n} frames decoded differently: {bad:?}",
        bad.len()
    );
    assert!(
        slow.worst < Duration::from_millis(1500),
        "worst latency {:?}",
        slow.worst
    );
}

#[test]
fn h264_through_a_leaky_queue_breaks_decode() {
    // The same stream through `queue leaky=downstream` loses arbitrary frames, and frames that
    // lost their references decode wrong. (This shows the check above can fail.)
    let (reference, slow, _out) = h264_through(
        "queue leaky=downstream max-size-time=300000000 max-size-buffers=0 max-size-bytes=0",
    );
    assert!(
        !corrupted(&reference, &slow).is_empty(),
        "expected broken frames behind a leaky queue"
    );
}

/// Sink running time now minus the buffer's running time.
fn latency(el: &gst::Element, pad: &gst::Pad, buf: &gst::BufferRef) -> Option<Duration> {
    let seg = pad.sticky_event::<gst::event::Segment>(0)?;
    let seg = seg.segment().downcast_ref::<gst::ClockTime>()?.clone();
    let rt = seg.to_running_time(buf.pts()?)?;
    let now = el.clock()?.time().checked_sub(el.base_time()?)?;
    Some(Duration::from_nanos(now.saturating_sub(rt).nseconds()))
}

/// The latency of every buffer reaching the sink `name`, in arrival order.
fn record_latencies(p: &gst::Pipeline, name: &str) -> Arc<Mutex<Vec<Duration>>> {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let lat2 = lat.clone();
    p.by_name(name)
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let (Some(buf), Some(el)) = (info.buffer(), pad.parent_element())
                && let Some(l) = latency(&el, pad, buf)
            {
                lat2.lock().unwrap().push(l);
            }
            gst::PadProbeReturn::Ok
        });
    lat
}

/// Live 30 fps raw video into `element`, consumer at 10 fps, for `secs`; returns the sink
/// latencies in arrival order.
fn overload(element: &str, secs: u64) -> Vec<Duration> {
    common::init();
    let frames = secs * 30;
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! {element} ! identity name=slow sleep-time=100000 ! fakesink name=sink sync=false"
    ));
    let lat = record_latencies(&p, "sink");
    // The unbounded queue never reaches EOS within the run: stop at the deadline.
    let out = common::run(&p, Duration::from_secs(secs + 2));
    assert!(out.errors.iter().all(|e| e.contains("deadline")), "{out:?}");
    lat.lock().unwrap().clone()
}

fn p99(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[((s.len() as f64 * 0.99) as usize).min(s.len() - 1)]
}

#[test]
fn overload_latency_stays_bounded_where_queue_grows() {
    let ours = overload("adaptivequeue", 6);
    let plain = overload(
        "queue max-size-buffers=0 max-size-bytes=0 max-size-time=0",
        6,
    );
    assert!(
        ours.len() > 30 && plain.len() > 30,
        "{} {}",
        ours.len(),
        plain.len()
    );
    let (ours_p99, plain_p99) = (p99(&ours), p99(&plain));
    assert!(
        ours_p99 < Duration::from_millis(1500),
        "adaptivequeue p99 {ours_p99:?}"
    );
    // The plain queue falls further behind with every frame.
    let (first, last) = (plain[plain.len() / 4], plain[plain.len() - 1]);
    assert!(
        last > first + Duration::from_secs(2),
        "queue latency {first:?} -> {last:?}"
    );
    assert!(
        plain_p99 > Duration::from_millis(2500),
        "queue p99 {plain_p99:?}"
    );
}

#[test]
fn fixed_mode_bounds_latency_too() {
    let fixed = overload("adaptivequeue mode=fixed", 5);
    assert!(
        p99(&fixed) < Duration::from_millis(1500),
        "p99 {:?}",
        p99(&fixed)
    );
}

#[test]
fn pass_ratio_recovers_when_the_consumer_speeds_up() {
    common::init();
    let p = common::parse(
        "videotestsrc is-live=true num-buffers=240 ! video/x-raw,width=160,height=120,framerate=30/1 \
         ! adaptivequeue name=q ! identity name=slow sleep-time=100000 ! fakesink sync=false",
    );
    let q = p.by_name("q").unwrap();
    let slow = p.by_name("slow").unwrap();
    let levels = Arc::new(Mutex::new(Vec::new()));
    let levels2 = levels.clone();
    let bus = p.bus().unwrap();
    bus.enable_sync_message_emission();
    bus.connect_sync_message(None, move |_, msg| {
        if let Some(s) = msg.structure()
            && s.name() == "adaptivequeue-level"
        {
            levels2
                .lock()
                .unwrap()
                .push(s.get::<String>("level").unwrap());
        }
    });
    let q2 = q.clone();
    let watcher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let during = q2.property::<gst::Structure>("stats");
        slow.set_property("sleep-time", 0u32);
        during
    });
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let during = watcher.join().unwrap();
    let after = q.property::<gst::Structure>("stats");
    assert!(
        during.get::<f64>("pass-ratio").unwrap() < 0.6,
        "slow phase: {during}"
    );
    assert!(during.get::<u64>("dropped").unwrap() > 0, "{during}");
    assert_eq!(
        after.get::<f64>("pass-ratio").unwrap(),
        1.0,
        "after: {after}"
    );
    // Nothing more was dropped once downstream kept up (a short catch-up aside).
    let extra = after.get::<u64>("dropped").unwrap() - during.get::<u64>("dropped").unwrap();
    assert!(
        extra < 20,
        "dropped {extra} after the consumer sped up: {after}"
    );
    assert!(
        !levels.lock().unwrap().is_empty(),
        "level messages were posted"
    );
}

#[test]
fn caps_changes_stay_in_order() {
    let mut q = Held::new(
        "video/x-raw,format=RGB,width=4,height=4,framerate=25/1",
        &[],
    );
    q.push(0, false);
    q.push(1, false);
    assert!(q.h.push_event(gst::event::Caps::new(
        &gst::Caps::from_str("video/x-raw,format=RGB,width=8,height=8,framerate=25/1").unwrap()
    )));
    q.push(2, false);
    // Record which caps each buffer went out with.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    q.queue
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let width = pad
                .current_caps()
                .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("width").ok()))
                .unwrap_or(0);
            seen2
                .lock()
                .unwrap()
                .push((info.buffer().unwrap().offset(), width));
            gst::PadProbeReturn::Ok
        });
    q.drain();
    assert_eq!(*seen.lock().unwrap(), vec![(0, 4), (1, 4), (2, 8)]);
}

#[test]
fn state_changes_never_hang() {
    common::init();
    // Upstream blocked on a full queue, downstream blocked in a probe: going to NULL returns.
    let p = common::parse(
        "videotestsrc ! video/x-raw,width=64,height=48 ! adaptivequeue max-size-buffers=2 ! fakesink name=sink",
    );
    let sinkpad = p.by_name("sink").unwrap().static_pad("sink").unwrap();
    sinkpad.add_probe(
        gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
        |_, _| gst::PadProbeReturn::Ok,
    );
    let _ = p.set_state(gst::State::Playing);
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    p.set_state(gst::State::Null).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "NULL took {:?}",
        start.elapsed()
    );

    // PLAYING -> PAUSED -> PLAYING with data queued still reaches EOS, nothing lost when nothing
    // needs dropping.
    let p = common::parse(
        "videotestsrc num-buffers=60 ! video/x-raw,width=64,height=48,framerate=30/1 ! adaptivequeue name=q \
         ! identity sleep-time=5000 ! fakesink sync=true",
    );
    let q = p.by_name("q").unwrap();
    let pipeline = p.clone();
    let toggler = std::thread::spawn(move || {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            pipeline.set_state(gst::State::Paused).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            pipeline.set_state(gst::State::Playing).unwrap();
        }
    });
    let out = common::run(&p, Duration::from_secs(30));
    toggler.join().unwrap();
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let stats = q.property::<gst::Structure>("stats");
    assert_eq!(
        (
            stats.get::<u64>("out").unwrap(),
            stats.get::<u64>("dropped").unwrap()
        ),
        (60, 0),
        "{stats}"
    );
}

#[test]
fn seek_flushes_and_continues() {
    common::init();
    let dir = common::TempDir::new("aqseek");
    let clip = dir.join("clip.mp4");
    common::make_clip(&clip, 160, 120, 90);
    let p = common::parse(&format!(
        "filesrc location=\"{}\" ! qtdemux ! h264parse ! adaptivequeue ! avdec_h264 ! fakesink name=sink sync=false",
        clip.display()
    ));
    let frames = Arc::new(Mutex::new(Vec::new()));
    let frames2 = frames.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            frames2
                .lock()
                .unwrap()
                .push(info.buffer().unwrap().pts().unwrap());
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Paused).unwrap();
    let (res, _, _) = p.state(gst::ClockTime::from_seconds(10));
    res.unwrap();
    p.seek_simple(
        gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
        gst::ClockTime::from_seconds(2),
    )
    .unwrap();
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let f = frames.lock().unwrap();
    assert!(
        f.iter().any(|t| *t >= gst::ClockTime::from_mseconds(2900)),
        "reached the end after the seek"
    );
    // The preroll frame plus at most the whole clip again (KEY_UNIT snaps back to a keyframe).
    assert!(f.len() <= 91, "{}", f.len());
}

#[test]
fn a_query_queued_when_downstream_ends_is_answered() {
    let mut q = Held::new(
        "video/x-raw,format=RGB,width=4,height=4,framerate=25/1",
        &[],
    );
    q.push(0, false);
    q.wait_held();
    q.push(1, false);
    // A serialized query waits behind buffer 1 ...
    let peer = q.queue.static_pad("sink").unwrap().peer().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut query = gst::query::Drain::new();
        let res = peer.peer_query(&mut query);
        let _ = tx.send(res);
    });
    std::thread::sleep(Duration::from_millis(100));
    // ... when downstream returns EOS for buffer 0: the queue stops pushing, and the query
    // must be answered (failed) rather than wait for ever.
    q.queue
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, |_, info| {
            info.data.take();
            info.flow_res = Err(gst::FlowError::Eos);
            gst::PadProbeReturn::Handled
        });
    q.release();
    let answered = rx.recv_timeout(Duration::from_secs(5));
    assert_eq!(answered, Ok(false), "the query was not answered");
}

#[test]
fn max_latency_none_means_no_limit() {
    // -1 is GStreamer's "none" for a time (GST_CLOCK_TIME_NONE), and the property takes it.
    common::init();
    let p = common::parse(
        "videotestsrc is-live=true num-buffers=20 ! video/x-raw,width=64,height=48,framerate=30/1 \
         ! adaptivequeue name=q max-latency=-1 target-latency=-1 low-watermark=-1 high-watermark=-1 \
         ! fakesink sync=false",
    );
    let out = common::run(&p, Duration::from_secs(20));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    let q = p.by_name("q").unwrap();
    assert_eq!(
        q.property::<gst::Structure>("stats")
            .get::<u64>("out")
            .unwrap(),
        20
    );
    assert_eq!(q.property::<u64>("max-latency"), u64::MAX);
}

/// Live H.264 at 30 fps with a GOP of `gop` frames, decoded in full (the reference) and through
/// adaptivequeue in front of a consumer 3x slower than real time (100 ms per frame), for 10 s.
/// Returns the frames the slow branch decoded (PTS, hash), the reference, its latencies and
/// the outcome.
fn gop_run(gop: u32) -> (Decoded, Decoded, Vec<Duration>, common::Outcome) {
    common::init();
    let p = common::parse(&format!(
        "videotestsrc is-live=true num-buffers=300 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! videoconvert ! openh264enc gop-size={gop} ! h264parse ! tee name=t \
         t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! avdec_h264 ! fakesink name=reference sync=false \
         t. ! adaptivequeue ! avdec_h264 ! identity sleep-time=100000 ! fakesink name=slow sync=false"
    ));
    let reference = Arc::new(Mutex::new(Decoded::default()));
    let slow = Arc::new(Mutex::new(Decoded::default()));
    record_frames(&p, "reference", reference.clone());
    record_frames(&p, "slow", slow.clone());
    let lat = record_latencies(&p, "slow");
    let out = common::run(&p, Duration::from_secs(60));
    drop(p);
    let take = |d: Arc<Mutex<Decoded>>| std::mem::take(&mut *d.lock().unwrap());
    let lat = lat.lock().unwrap().clone();
    (take(reference), take(slow), lat, out)
}

fn check_gop_delivery(gop: u32) {
    let (reference, slow, lat, out) = gop_run(gop);
    assert!(
        out.eos && out.errors.is_empty() && out.warnings.is_empty(),
        "{out:?}"
    );
    assert_eq!(reference.frames.len(), 300);
    // 300 frames over 10 s; the consumer sustains a third of them.
    let sustainable = 100.0;
    let delivered = slow.frames.len() as f64;
    eprintln!(
        "GOP {gop}: {delivered} frames delivered of {sustainable} sustainable, p99 latency {:?}",
        p99(&lat)
    );
    assert!(
        delivered >= 0.7 * sustainable,
        "GOP {gop}: {delivered} frames delivered, the consumer sustains {sustainable}"
    );
    let bad = corrupted(&reference, &slow);
    assert!(
        bad.is_empty(),
        "GOP {gop}: frames decoded differently: {bad:?}"
    );
    assert!(
        p99(&lat) <= Duration::from_millis(1500),
        "GOP {gop}: p99 latency {:?} over max-latency",
        p99(&lat)
    );
}

#[test]
fn encoded_video_delivers_what_the_consumer_sustains_gop_30() {
    check_gop_delivery(30);
}

#[test]
fn encoded_video_delivers_what_the_consumer_sustains_gop_60() {
    check_gop_delivery(60);
}
