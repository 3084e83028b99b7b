// SPDX-License-Identifier: MPL-2.0
//! framesplit on its own (gst_check::Harness): batches in, one stream per source pad out.

use crate::common;

use gst::prelude::*;
use gstvideoai::formats::batch::{self, Entry, Status};

fn frame(pts_ms: u64) -> gst::Buffer {
    let mut b = gst::Buffer::with_size(64 * 48 * 3 / 2).unwrap();
    b.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(pts_ms));
    b
}

fn entry(pad: u32, id: &str, status: Status, buffer: Option<gst::Buffer>) -> Entry {
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", 64)
        .field("height", 48)
        .field("framerate", gst::Fraction::new(30, 1))
        .build();
    Entry {
        pad_index: pad,
        stream_id: id.into(),
        status,
        eos: false,
        pts: buffer.as_ref().and_then(|b| b.pts()),
        running_time: buffer.as_ref().and_then(|b| b.pts()),
        buffer,
        caps: Some(caps),
        segment: Some(gst::FormattedSegment::<gst::ClockTime>::new().upcast()),
        capture_ns: None,
    }
}

#[test]
fn a_stream_gets_its_pad_events_and_fresh_frames() {
    common::init();
    let split = gst::ElementFactory::make("framesplit").build().unwrap();
    // The harness takes src_1 once framesplit has made it (several streams are tested in full
    // pipelines, tests/framesync*.rs).
    let mut h = gst_check::Harness::with_element(&split, Some("sink"), None);
    h.set_src_caps(batch::caps(gst::Fraction::new(30, 1)));
    for i in 0..3u64 {
        let t = gst::ClockTime::from_mseconds(i * 33);
        let f1 = frame(i * 33 + 5);
        let entries = vec![
            // A missing stream gets no pad.
            entry(0, "cam-a", Status::Missing, None),
            // Stream 1 repeats its frame on tick 1 (not pushed: push-repeated is off).
            if i == 1 {
                entry(1, "cam-b", Status::Repeated, Some(frame(5)))
            } else {
                entry(1, "cam-b", Status::Fresh, Some(f1))
            },
        ];
        let res = h.push(batch::make(t, t, None, i, &entries));
        if i == 0 {
            // src_1 appeared with this batch, not linked yet.
            assert_eq!(res, Err(gst::FlowError::NotLinked));
            h.add_element_src_pad(&split.static_pad("src_1").expect("src_1 added"));
        } else {
            res.unwrap();
        }
    }
    // Stream 1 ends.
    let t = gst::ClockTime::from_mseconds(99);
    let end = vec![
        entry(0, "cam-a", Status::Missing, None),
        Entry {
            eos: true,
            ..Entry::missing(1, "cam-b".into())
        },
    ];
    h.push(batch::make(t, t, None, 3, &end)).unwrap();

    let mut pts = Vec::new();
    while let Some(b) = h.try_pull() {
        pts.push(b.pts().unwrap().mseconds());
    }
    assert_eq!(
        pts,
        vec![71],
        "cam-b's fresh frames (tick 1 repeats: not pushed)"
    );
    let mut kinds = Vec::new();
    let mut stream_id = None;
    while let Some(ev) = h.try_pull_event() {
        if let gst::EventView::StreamStart(s) = ev.view() {
            stream_id = Some(s.stream_id().to_string());
        }
        kinds.push(ev.type_());
    }
    assert_eq!(stream_id.as_deref(), Some("cam-b"));
    assert_eq!(
        kinds,
        vec![
            gst::EventType::StreamStart,
            gst::EventType::Caps,
            gst::EventType::Segment,
            gst::EventType::Eos
        ]
    );
    assert!(
        split.static_pad("src_1").is_some(),
        "named after the framesync pad"
    );
    assert!(
        split.static_pad("src_0").is_none(),
        "no pad for a stream without frames"
    );
    let stats = split.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("batches").unwrap(), 4);
}

#[test]
fn a_buffer_that_is_not_a_batch_is_an_error() {
    common::init();
    let split = gst::ElementFactory::make("framesplit").build().unwrap();
    let mut h = gst_check::Harness::with_element(&split, Some("sink"), None);
    h.set_src_caps(batch::caps(gst::Fraction::new(30, 1)));
    assert_eq!(h.push(frame(0)), Err(gst::FlowError::Error));
}
