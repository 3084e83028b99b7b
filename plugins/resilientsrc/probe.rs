// SPDX-License-Identifier: MPL-2.0
//! Asking a source what it is before the element starts: whether an HTTP(S) stream is live.

use std::time::Duration;

use gst::prelude::*;

/// Asks an HTTP(S) server whether `uri` is a live stream: a multipart response (MJPEG) or one
/// without a length (a live MPEG-TS) is; a response with a length is a file. `None` when the
/// server did not answer within `timeout` (a camera that is down: retried as live).
pub fn http_is_live(uri: &str, timeout: Duration) -> Option<bool> {
    let (location, credentials) = super::uri::source_uri(uri);
    let src = gst::ElementFactory::make("souphttpsrc")
        .property("location", &location)
        .build()
        .ok()?;
    if let Some((user, password)) = &credentials {
        src.set_property("user-id", user);
        src.set_property("user-pw", password);
    }
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .ok()?;
    let pipeline = gst::Pipeline::with_name("resilientsrc-http-probe");
    pipeline.add_many([&src, &sink]).ok()?;
    src.link(&sink).ok()?;
    let _ = pipeline.set_state(gst::State::Paused);
    let bus = pipeline.bus()?;
    let prerolled = bus
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
            &[gst::MessageType::AsyncDone, gst::MessageType::Error],
        )
        .is_some_and(|m| m.type_() == gst::MessageType::AsyncDone);
    let answer = prerolled.then(|| {
        let multipart = src
            .static_pad("src")
            .and_then(|p| p.current_caps())
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("multipart/")))
            .unwrap_or(false);
        let length = src.query_duration::<gst::format::Bytes>();
        multipart || length.is_none()
    });
    let _ = pipeline.set_state(gst::State::Null);
    answer
}
