// SPDX-License-Identifier: MPL-2.0
//! Batched inference: N streams → framesync → onnxinfer (one model run per batch) →
//! framesplit / raftsink, each stream keeping its own frames and detections.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstvideoai::eventlog::store::EventStore;

/// Grey level of stream `i` and where the model's box lands for it (x of the box's left edge,
/// frame pixels): `cx = 40 + 240·g/255`, width 40.
fn grey(i: usize) -> u32 {
    [0x00, 0x55, 0xaa, 0xff][i]
}

fn expected_x(i: usize) -> f64 {
    40.0 + 240.0 * grey(i) as f64 / 255.0 - 20.0
}

fn source(i: usize, frames: u32, fps: u32) -> String {
    let g = grey(i);
    format!(
        "videotestsrc num-buffers={frames} pattern=solid-color foreground-color=0xff{g:02x}{g:02x}{g:02x} \
         ! video/x-raw,format=RGB,width=320,height=320,framerate={fps}/1"
    )
}

fn onnxinfer_stats(p: &gst::Pipeline) -> gst::Structure {
    p.by_name("inf")
        .unwrap()
        .property::<gst::Structure>("stats")
}

#[test]
fn four_streams_one_inference_per_batch_split_back_with_their_detections() {
    common::init();
    let dir = common::TempDir::new("framesync-infer");
    let model = dir.join("brightness.onnx");
    common::onnx_model::brightness_box_model(&model, 320, 0);
    let pipeline = common::parse(&split_desc(&model, "", 20));
    let frames = collect_detections(&pipeline);
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    for i in 0..4 {
        let sink = pipeline.by_name(&format!("out{i}")).unwrap();
        let seen = ids.clone();
        sink.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data
                    && let gst::EventView::StreamStart(s) = ev.view()
                {
                    seen.lock().unwrap().push(s.stream_id().to_string());
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let outcome = common::run(&pipeline, Duration::from_secs(60));
    assert!(outcome.eos, "{:?}", outcome.errors);
    for (i, f) in frames.iter().enumerate() {
        let f = f.lock().unwrap();
        assert_eq!(f.len(), 20, "stream {i}: every frame on its own pad");
        for dets in f.iter() {
            assert_eq!(dets.len(), 1, "stream {i}: one box per frame: {dets:?}");
            let d = &dets[0];
            assert!(
                (d.x as f64 - expected_x(i)).abs() <= 3.0,
                "stream {i}: box at x={} (expected {}): another stream's result?",
                d.x,
                expected_x(i)
            );
            assert!((d.confidence - 0.81).abs() < 0.01);
        }
    }
    let ids = ids.lock().unwrap();
    assert_eq!(ids.len(), 4, "one stream-start per output: {ids:?}");
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        4,
        "each output carries its source's stream id"
    );
    let stats = onnxinfer_stats(&pipeline);
    assert_eq!(stats.get::<u64>("batches").unwrap(), 20);
    assert_eq!(
        stats.get::<u64>("batch-runs").unwrap(),
        20,
        "one model run per batch of 4"
    );
    assert_eq!(stats.get::<u64>("inferred").unwrap(), 80);
}

#[test]
fn batches_store_one_event_per_entry_under_its_stream() {
    common::init();
    let dir = common::TempDir::new("framesync-raftsink");
    let model = dir.join("brightness.onnx");
    common::onnx_model::brightness_box_model(&model, 320, 0);
    let db = dir.join("events.db");
    // Streams at 30 and 15 fps: the slower one's repeated entries are not stored again.
    let mut desc = format!(
        "framesync name=sync ! onnxinfer name=inf model-location=\"{}\" model-type=yolov5 \
         ! raftsink location=\"{}\" ",
        model.display(),
        db.display()
    );
    desc += &format!(" {} ! sync.sink_0", source(0, 20, 30));
    desc += &format!(" {} ! sync.sink_1", source(1, 10, 15));
    desc += &format!(" {} ! sync.sink_2", source(2, 20, 30));
    let pipeline = common::parse(&desc);
    let names = ["cam-zero", "cam-one", "cam-two"];
    for (i, name) in names.iter().enumerate() {
        let pad = pipeline
            .by_name("sync")
            .unwrap()
            .static_pad(&format!("sink_{i}"))
            .unwrap();
        pad.set_property("stream-id", *name);
    }
    let outcome = common::run(&pipeline, Duration::from_secs(60));
    assert!(outcome.eos, "{:?}", outcome.errors);

    let store = EventStore::open_for_reading(&db).unwrap();
    let events = store.events(None).unwrap();
    let mut by_stream: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in &events {
        by_stream.entry(e.stream.clone()).or_default().push(e.seq);
        let i = names
            .iter()
            .position(|n| *n == e.stream)
            .expect("a known stream");
        assert_eq!(e.detections.len(), 1, "{e:?}");
        assert!(
            (e.detections[0].x as f64 - expected_x(i)).abs() <= 3.0,
            "{}: box at {} (expected {})",
            e.stream,
            e.detections[0].x,
            expected_x(i)
        );
    }
    assert_eq!(by_stream.len(), 3, "{:?}", by_stream.keys());
    let sizes: Vec<usize> = names.iter().map(|n| by_stream[*n].len()).collect();
    assert_eq!(sizes, vec![20, 10, 20], "fresh entries only, each once");
    for seqs in by_stream.values() {
        let n = seqs.len() as i64;
        assert_eq!(
            *seqs,
            (0..n).collect::<Vec<_>>(),
            "seq = frame number of its stream"
        );
    }
}

#[test]
fn fixed_batch_model_runs_entry_by_entry() {
    common::init();
    // The real detector has a fixed batch of 1.
    let desc = format!(
        "framesync name=sync ! onnxinfer name=inf model-location=\"{}\" ! fakesink \
         videotestsrc num-buffers=3 ! video/x-raw,format=NV12,width=320,height=240,framerate=10/1 ! sync.sink_0 \
         videotestsrc num-buffers=3 pattern=ball ! video/x-raw,format=I420,width=416,height=416,framerate=10/1 ! sync.sink_1",
        common::model().display()
    );
    let pipeline = common::parse(&desc);
    let outcome = common::run(&pipeline, Duration::from_secs(60));
    assert!(outcome.eos, "{:?}", outcome.errors);
    let stats = onnxinfer_stats(&pipeline);
    assert_eq!(stats.get::<u64>("batches").unwrap(), 3);
    assert_eq!(stats.get::<u64>("inferred").unwrap(), 6);
    assert_eq!(
        stats.get::<u64>("batch-runs").unwrap(),
        6,
        "one run per entry"
    );
}

#[test]
fn unreadable_entry_format_is_a_warning_not_a_failure() {
    common::init();
    let dir = common::TempDir::new("framesync-format");
    let model = dir.join("brightness.onnx");
    common::onnx_model::brightness_box_model(&model, 320, 0);
    let desc = format!(
        "framesync name=sync ! onnxinfer name=inf model-location=\"{}\" model-type=yolov5 ! fakesink \
         {} ! sync.sink_0 \
         videotestsrc num-buffers=5 ! video/x-raw,format=Y444,width=320,height=320,framerate=30/1 ! sync.sink_1",
        model.display(),
        source(1, 5, 30)
    );
    let pipeline = common::parse(&desc);
    let outcome = common::run(&pipeline, Duration::from_secs(60));
    assert!(outcome.eos, "{:?}", outcome.errors);
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("Y444") && w.contains("videoconvert")),
        "{:?}",
        outcome.warnings
    );
    let stats = onnxinfer_stats(&pipeline);
    assert_eq!(stats.get::<u64>("inferred").unwrap(), 5);
    assert_eq!(stats.get::<u64>("skipped").unwrap(), 5);
}

#[test]
fn repeated_entries_pushed_at_the_tick_rate_with_the_last_result() {
    common::init();
    let dir = common::TempDir::new("framesync-repeated");
    let model = dir.join("brightness.onnx");
    common::onnx_model::brightness_box_model(&model, 320, 0);
    // 30 and 15 fps: with push-repeated the slow stream comes out at 30 fps too.
    let desc = format!(
        "framesync name=sync ! onnxinfer name=inf model-location=\"{}\" model-type=yolov5 \
         ! framesplit name=split push-repeated=true \
         {} ! sync.sink_0  {} ! sync.sink_1 \
         split.src_0 ! queue ! fakesink \
         split.src_1 ! queue ! appsink name=slow sync=false",
        model.display(),
        source(0, 30, 30),
        source(1, 15, 15)
    );
    let pipeline = common::parse(&desc);
    type Got = Arc<Mutex<Vec<(u64, Vec<gstvideoai::eventlog::event::Detection>)>>>;
    let got: Got = Arc::default();
    let g = got.clone();
    pipeline
        .by_name("slow")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let b = sample.buffer().unwrap();
                    g.lock().unwrap().push((
                        b.pts().unwrap().nseconds(),
                        gstvideoai::formats::detection::read_detections(b),
                    ));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    let outcome = common::run(&pipeline, Duration::from_secs(60));
    assert!(outcome.eos, "{:?}", outcome.errors);
    let got = got.lock().unwrap();
    assert!(got.len() >= 28, "{} frames at the tick rate", got.len());
    assert!(
        got.windows(2).all(|w| w[1].0 > w[0].0),
        "repeated frames are re-timestamped: {:?}",
        got.iter().map(|g| g.0).collect::<Vec<_>>()
    );
    let carried = got
        .iter()
        .filter(|(_, d)| d.len() == 1 && !d[0].fresh)
        .count();
    assert!(
        carried >= 13,
        "{carried} repeated frames carry the last result"
    );
    assert!(
        got.iter()
            .all(|(_, d)| d.len() == 1 && (d[0].x as f64 - expected_x(1)).abs() <= 3.0),
        "every frame has its stream's box"
    );
}

#[test]
fn pipelined_batches_give_the_same_results() {
    // The batched path with pipelining: the same detections per stream as without.
    let plain = four_streams_detections("");
    let piped = four_streams_detections("pipelining=true");
    assert_eq!(piped, plain);
}

/// `framesync ! onnxinfer name=inf <extra> ! framesplit` over the four sources (`frames`
/// frames each), each stream split back into `appsink name=outN`.
fn split_desc(model: &std::path::Path, extra: &str, frames: u32) -> String {
    let mut desc = format!(
        "framesync name=sync ! onnxinfer name=inf model-location=\"{}\" model-type=yolov5 {extra} ! framesplit name=split ",
        model.display()
    );
    for i in 0..4 {
        desc += &format!(
            " {} ! sync.sink_{i} split.src_{i} ! queue ! appsink name=out{i} sync=false",
            source(i, frames, 30)
        );
    }
    desc
}

type Frames = Arc<Mutex<Vec<Vec<gstvideoai::eventlog::event::Detection>>>>;

/// Per `appsink name=outN`: the detections of each frame it gets.
fn collect_detections(pipeline: &gst::Pipeline) -> Vec<Frames> {
    let frames: Vec<Frames> = (0..4).map(|_| Frames::default()).collect();
    for (i, f) in frames.iter().enumerate() {
        let sink = pipeline
            .by_name(&format!("out{i}"))
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let f = f.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let dets =
                        gstvideoai::formats::detection::read_detections(sample.buffer().unwrap());
                    f.lock().unwrap().push(dets);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    frames
}

/// Four streams through `framesync ! onnxinfer <extra> ! framesplit`: per stream, each frame's
/// detections.
fn four_streams_detections(extra: &str) -> Vec<Vec<Vec<gstvideoai::eventlog::event::Detection>>> {
    common::init();
    let dir = common::TempDir::new("framesync-pipelined");
    let model = dir.join("brightness.onnx");
    common::onnx_model::brightness_box_model(&model, 320, 1);
    let pipeline = common::parse(&split_desc(&model, extra, 12));
    let frames = collect_detections(&pipeline);
    let outcome = common::run(&pipeline, Duration::from_secs(60));
    assert!(outcome.eos && outcome.errors.is_empty(), "{outcome:?}");
    assert_eq!(
        onnxinfer_stats(&pipeline).get::<u64>("inferred").unwrap(),
        48
    );
    frames
        .iter()
        .map(|f| std::mem::take(&mut *f.lock().unwrap()))
        .collect()
}
