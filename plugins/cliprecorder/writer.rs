// SPDX-License-Identifier: MPL-2.0
//! One clip's file: a pipeline of its own, `appsrc ! <parser> ! mp4mux fragment-duration=1000
//! ! filesink`, fed with the access units as they are (no re-encoding). Fragmented MP4: every
//! second is written out as a fragment, so a file cut short (the process killed, the disk
//! full) still plays up to its last fragment. The file is written as `NAME.partial` and renamed
//! to `NAME` once the muxer has finished it.
//!
//! Timestamps are moved so that the clip starts at 0 (the first access unit's decode time).

use std::path::{Path, PathBuf};
use std::time::Duration;

use gst::prelude::*;

/// How long a clip's pipeline may take to finish its file after the last access unit.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Writer {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    partial: PathBuf,
    path: PathBuf,
    /// The first access unit's decode (or presentation) time: the clip's zero.
    base: Option<gst::ClockTime>,
    /// The error that stopped the file, once seen.
    error: Option<String>,
}

/// The parser that gives mp4mux what it takes from access units with `caps`.
fn parser_for(caps: &gst::Caps) -> Result<&'static str, String> {
    let name = caps.structure(0).map(|s| s.name().as_str()).unwrap_or("");
    match name {
        "video/x-h264" => Ok("h264parse"),
        "video/x-h265" => Ok("h265parse"),
        "image/jpeg" => Ok("jpegparse"),
        _ => Err(format!(
            "the encoded stream is {name:?}: clips are written for H.264, H.265 and MJPEG \
             (link cliprecorder's encoded pad to resilientsrc encoded=true, or to a parser)"
        )),
    }
}

impl Writer {
    /// Starts writing `path` (as `path.partial`) for access units with `caps`.
    pub fn start(path: &Path, caps: &gst::Caps) -> Result<Writer, String> {
        let parser = parser_for(caps)?;
        let partial = PathBuf::from(format!("{}.partial", path.display()));
        let pipeline = gst::Pipeline::with_name("cliprecorder-writer");
        let src = gst_app::AppSrc::builder()
            .name("src")
            .caps(caps)
            .format(gst::Format::Time)
            .max_bytes(0)
            .build();
        let make = |factory: &str| {
            gst::ElementFactory::make(factory)
                .build()
                .map_err(|_| format!("{factory} is missing (GStreamer's good and bad plugins)"))
        };
        let parse = make(parser)?;
        let mux = make("mp4mux")?;
        mux.set_property("fragment-duration", 1000u32);
        let sink = make("filesink")?;
        sink.set_property("location", partial.display().to_string());
        sink.set_property("async", false);
        let src_element = src.upcast_ref::<gst::Element>();
        pipeline
            .add_many([src_element, &parse, &mux, &sink])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([src_element, &parse, &mux, &sink])
            .map_err(|e| format!("cannot link the clip writer: {e}"))?;
        if pipeline.set_state(gst::State::Playing).is_err() {
            let why = error_on(&pipeline).unwrap_or_else(|| "it did not start".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(format!("cannot write {}: {why}", partial.display()));
        }
        Ok(Writer {
            pipeline,
            src,
            partial,
            path: path.to_path_buf(),
            base: None,
            error: None,
        })
    }

    /// Adds one access unit (its timestamps moved to the clip's time).
    pub fn push(&mut self, buffer: &gst::Buffer, caps: &gst::Caps) {
        if self.src.caps().as_ref() != Some(caps) {
            self.src.set_caps(Some(caps));
        }
        let base = *self
            .base
            .get_or_insert_with(|| buffer.dts_or_pts().unwrap_or(gst::ClockTime::ZERO));
        let mut b = buffer.copy();
        {
            let b = b.get_mut().expect("a fresh copy");
            b.set_pts(buffer.pts().map(|t| t.saturating_sub(base)));
            b.set_dts(buffer.dts().map(|t| t.saturating_sub(base)));
        }
        // A failed write shows on the pipeline's bus, read when the clip is finished.
        let _ = self.src.push_buffer(b);
    }

    /// The error that stopped the file, if it failed already (a full disk, a directory that
    /// went away).
    pub fn failed(&mut self) -> Option<&str> {
        if self.error.is_none() {
            self.error = error_on(&self.pipeline);
        }
        self.error.as_deref()
    }

    /// Ends the file and renames it to its name; the error that stopped it otherwise (the
    /// `.partial` file stays: it plays up to its last fragment).
    pub fn finish(mut self) -> Result<PathBuf, String> {
        self.close()
    }

    fn close(&mut self) -> Result<PathBuf, String> {
        if let Some(e) = self.failed().map(str::to_string) {
            let _ = self.pipeline.set_state(gst::State::Null);
            return Err(format!("writing {} failed: {e}", self.partial.display()));
        }
        let _ = self.src.end_of_stream();
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(FINISH_TIMEOUT.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let _ = self.pipeline.set_state(gst::State::Null);
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => {
                std::fs::rename(&self.partial, &self.path).map_err(|e| {
                    format!(
                        "cannot rename {} to {}: {e}",
                        self.partial.display(),
                        self.path.display()
                    )
                })?;
                Ok(self.path.clone())
            }
            Some(gst::MessageView::Error(e)) => Err(format!(
                "writing {} failed: {}",
                self.partial.display(),
                e.error()
            )),
            _ => Err(format!(
                "{} was not finished within {} s",
                self.partial.display(),
                FINISH_TIMEOUT.as_secs()
            )),
        }
    }
}

impl Drop for Writer {
    /// A writer dropped unfinished (its finishing thread could not start) stops its pipeline.
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The first error posted on `pipeline`'s bus so far, if any.
fn error_on(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    }
}
