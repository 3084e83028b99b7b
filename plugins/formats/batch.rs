// SPDX-License-Identifier: MPL-2.0
//! Batches: the frames of several streams for one output tick, as `framesync` makes them and
//! `onnxinfer`, `raftsink` and `framesplit` read them.
//!
//! A batch is a buffer with caps `video/x-videoai-batch` (fields: `framerate`, the tick rate)
//! that holds no pixels. Its frames travel in a `VideoAIBatchMeta` custom meta (registered with
//! `gst_meta_register_custom`, readable from C with `gst_buffer_get_custom_meta (buf,
//! "VideoAIBatchMeta")` and `gst_custom_meta_get_structure`). The structure has:
//!
//! * `tick` (guint64): the batch's running time (the batch buffer's PTS is that running
//!   time's position in framesync's output segment),
//! * `sequence` (guint64): batch number since the element started,
//! * `entries` (GstValueArray of GstStructure `videoai-batch-entry`), one per sink pad of
//!   `framesync`, ordered by pad index, each with
//!   - `pad-index` (guint): the `N` of `framesync`'s `sink_N`,
//!   - `stream-id` (string): the stream-id of the pad's STREAM_START, or its `stream-id`
//!     property,
//!   - `status` (string): `fresh` (a new frame for this tick), `repeated` (the stream's last
//!     frame again: the stream is slower than the tick rate) or `missing` (no frame: late,
//!     stalled, not started, ended or released),
//!   - `eos` (gboolean): the stream has ended (set on every batch after its last frame), or
//!     its pad was released (set once, on the next batch),
//!   - `buffer` (GstBuffer, absent when missing): the frame itself, a reference, not a copy,
//!     with every meta it came with,
//!   - `caps` (GstCaps), `segment` (GstSegment): the frame's caps and segment,
//!   - `pts` (guint64, GST_CLOCK_TIME_NONE when absent): the frame's PTS in its segment,
//!   - `running-time` (guint64): the frame's running time, after clock-offset correction,
//!   - `capture-time` (gint64): when the frame was taken, ns since the Unix epoch
//!     (`GstReferenceTimestampMeta` when upstream gave one, else running time mapped to the
//!     wall clock).

use gst::prelude::*;

/// Media type of batch caps.
pub const CAPS_NAME: &str = "video/x-videoai-batch";
/// Name of the custom meta (and of its structure).
pub const META_NAME: &str = "VideoAIBatchMeta";
/// Name of each entry's structure.
pub const ENTRY_NAME: &str = "videoai-batch-entry";

/// What an entry holds for its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Fresh,
    Repeated,
    Missing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fresh => "fresh",
            Status::Repeated => "repeated",
            Status::Missing => "missing",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "fresh" => Status::Fresh,
            "repeated" => Status::Repeated,
            _ => Status::Missing,
        }
    }
}

/// One stream's place in a batch.
#[derive(Debug, Clone)]
pub struct Entry {
    pub pad_index: u32,
    pub stream_id: String,
    pub status: Status,
    pub eos: bool,
    pub buffer: Option<gst::Buffer>,
    pub caps: Option<gst::Caps>,
    pub segment: Option<gst::Segment>,
    pub pts: Option<gst::ClockTime>,
    pub running_time: Option<gst::ClockTime>,
    pub capture_ns: Option<i64>,
}

impl Entry {
    /// A missing entry for `pad_index`.
    pub fn missing(pad_index: u32, stream_id: String) -> Self {
        Entry {
            pad_index,
            stream_id,
            status: Status::Missing,
            eos: false,
            buffer: None,
            caps: None,
            segment: None,
            pts: None,
            running_time: None,
            capture_ns: None,
        }
    }

    fn to_structure(&self) -> gst::Structure {
        let none = u64::MAX;
        let mut b = gst::Structure::builder(ENTRY_NAME)
            .field("pad-index", self.pad_index)
            .field("stream-id", self.stream_id.as_str())
            .field("status", self.status.as_str())
            .field("eos", self.eos)
            .field("pts", self.pts.map_or(none, |t| t.nseconds()))
            .field(
                "running-time",
                self.running_time.map_or(none, |t| t.nseconds()),
            );
        if let Some(c) = self.capture_ns {
            b = b.field("capture-time", c);
        }
        if let Some(buf) = &self.buffer {
            b = b.field("buffer", buf);
        }
        if let Some(caps) = &self.caps {
            b = b.field("caps", caps);
        }
        if let Some(seg) = &self.segment {
            b = b.field("segment", seg);
        }
        b.build()
    }

    fn from_structure(s: &gst::StructureRef) -> Entry {
        let time = |name: &str| {
            s.get::<u64>(name)
                .ok()
                .filter(|t| *t != u64::MAX)
                .map(gst::ClockTime::from_nseconds)
        };
        Entry {
            pad_index: s.get("pad-index").unwrap_or(0),
            stream_id: s.get("stream-id").unwrap_or_default(),
            status: Status::parse(s.get::<&str>("status").unwrap_or("missing")),
            eos: s.get("eos").unwrap_or(false),
            buffer: s.get::<gst::Buffer>("buffer").ok(),
            caps: s.get::<gst::Caps>("caps").ok(),
            segment: s.get::<gst::Segment>("segment").ok(),
            pts: time("pts"),
            running_time: time("running-time"),
            capture_ns: s.get("capture-time").ok(),
        }
    }
}

/// Registers the meta once per process.
pub fn register_meta() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        if !gst::meta::CustomMeta::is_registered(META_NAME) {
            gst::meta::CustomMeta::register(META_NAME, &[]);
        }
    });
}

/// Batch caps at `framerate` (`0/1`: unknown yet).
pub fn caps(framerate: gst::Fraction) -> gst::Caps {
    gst::Caps::builder(CAPS_NAME)
        .field("framerate", framerate)
        .build()
}

/// Whether `caps` are batch caps.
pub fn is_batch_caps(caps: &gst::CapsRef) -> bool {
    caps.structure(0).is_some_and(|s| s.name() == CAPS_NAME)
}

fn entries_value(entries: &[Entry]) -> gst::Array {
    gst::Array::new(entries.iter().map(|e| e.to_structure().to_send_value()))
}

/// Makes a batch buffer for the tick at `running_time`, with PTS `tick` (its position in the
/// output segment) and duration one tick period.
pub fn make(
    running_time: gst::ClockTime,
    tick: gst::ClockTime,
    duration: Option<gst::ClockTime>,
    sequence: u64,
    entries: &[Entry],
) -> gst::Buffer {
    register_meta();
    let mut buffer = gst::Buffer::new();
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(tick);
        b.set_duration(duration);
        let mut meta = gst::meta::CustomMeta::add(b, META_NAME).expect("meta registered");
        let s = meta.mut_structure();
        s.set("tick", running_time.nseconds());
        s.set("sequence", sequence);
        s.set("entries", entries_value(entries));
    }
    buffer
}

/// The entries of a batch buffer (`None`: not a batch).
pub fn read(buffer: &gst::BufferRef) -> Option<Vec<Entry>> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, META_NAME).ok()?;
    let s = meta.structure();
    let entries = s.get::<gst::ArrayRef>("entries").ok()?;
    Some(
        entries
            .iter()
            .filter_map(|v| v.get::<gst::Structure>().ok())
            .map(|s| Entry::from_structure(&s))
            .collect(),
    )
}

/// The batch's running time.
pub fn tick(buffer: &gst::BufferRef) -> Option<gst::ClockTime> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, META_NAME).ok()?;
    meta.structure()
        .get::<u64>("tick")
        .ok()
        .map(gst::ClockTime::from_nseconds)
}

/// The batch's sequence number.
pub fn sequence(buffer: &gst::BufferRef) -> Option<u64> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, META_NAME).ok()?;
    meta.structure().get("sequence").ok()
}

/// Replaces the entries of a batch buffer (after changing their frames' metas).
pub fn write(buffer: &mut gst::BufferRef, entries: &[Entry]) -> Result<(), glib::BoolError> {
    let mut meta = gst::meta::CustomMeta::from_mut_buffer(buffer, META_NAME)?;
    meta.mut_structure().set("entries", entries_value(entries));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_without_copying_frames() {
        gst::init().unwrap();
        let mut frame = gst::Buffer::with_size(16).unwrap();
        frame
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40));
        let caps = gst::Caps::builder("video/x-raw").build();
        let entries = vec![
            Entry {
                pad_index: 0,
                stream_id: "cam0".into(),
                status: Status::Fresh,
                eos: false,
                buffer: Some(frame.clone()),
                caps: Some(caps.clone()),
                segment: Some(gst::FormattedSegment::<gst::ClockTime>::new().upcast()),
                pts: Some(gst::ClockTime::from_mseconds(40)),
                running_time: Some(gst::ClockTime::from_mseconds(40)),
                capture_ns: Some(1_700_000_000_000_000_000),
            },
            Entry {
                eos: true,
                ..Entry::missing(3, "cam3".into())
            },
        ];
        let t = gst::ClockTime::from_mseconds(40);
        let batch = make(t, t, None, 7, &entries);
        let back = read(&batch).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].stream_id, "cam0");
        assert_eq!(back[0].status, Status::Fresh);
        assert_eq!(back[0].caps.as_ref(), Some(&caps));
        assert_eq!(back[0].capture_ns, Some(1_700_000_000_000_000_000));
        let b = back[0].buffer.as_ref().unwrap();
        assert_eq!(
            b.as_ptr(),
            frame.as_ptr(),
            "the frame is referenced, not copied"
        );
        assert_eq!(back[1].pad_index, 3);
        assert_eq!(back[1].status, Status::Missing);
        assert!(back[1].eos && back[1].buffer.is_none() && back[1].pts.is_none());
        assert_eq!(sequence(&batch), Some(7));
        assert_eq!(tick(&batch), Some(t));
        assert!(read(&frame).is_none());
    }
}
