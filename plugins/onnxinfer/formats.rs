// SPDX-License-Identifier: MPL-2.0
//! Which frames onnxinfer can read: the format upstream asked about and we refuse, what a
//! batch entry holds, and a once-per-format memory so each unreadable format is warned about
//! once per run. Pure decisions; the element posts the messages.

use std::collections::HashSet;
use std::sync::Mutex;

use super::preprocess::SUPPORTED_FORMATS;

/// The fixed format upstream asked about that made a caps query come back empty, when it is
/// one we cannot read (`None` for any other reason the query failed: nothing to say then).
pub(super) fn refused_format(
    filter: Option<&gst::CapsRef>,
    result: Option<&gst::CapsRef>,
) -> Option<gst_video::VideoFormat> {
    let (filter, result) = (filter?, result?);
    if !result.is_empty() || filter.is_empty() || filter.is_any() {
        return None;
    }
    let mut refused = None;
    for s in filter.iter() {
        if s.name() != "video/x-raw" {
            return None;
        }
        let fmt = gst_video::VideoFormat::from_string(s.get::<&str>("format").ok()?);
        if SUPPORTED_FORMATS.contains(&fmt) {
            return None;
        }
        refused.get_or_insert(fmt);
    }
    refused
}

/// What a fresh batch entry holds.
pub(super) enum EntryFrame {
    /// A frame onnxinfer reads.
    Readable(gst_video::VideoInfo),
    /// A supported format, but the buffer is too small for its caps (damaged or empty).
    Damaged(gst_video::VideoInfo),
    /// A format onnxinfer does not read (or no video caps), named.
    Unreadable(String),
}

/// Classifies a batch entry's frame from its caps and buffer.
pub(super) fn entry_frame(caps: Option<&gst::Caps>, buffer: &gst::Buffer) -> EntryFrame {
    match caps.and_then(|c| gst_video::VideoInfo::from_caps(c).ok()) {
        Some(info) if SUPPORTED_FORMATS.contains(&info.format()) => {
            if gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).is_ok() {
                EntryFrame::Readable(info)
            } else {
                EntryFrame::Damaged(info)
            }
        }
        Some(info) => EntryFrame::Unreadable(info.format().to_str().to_string()),
        None => EntryFrame::Unreadable(format!("{caps:?}")),
    }
}

/// Names already warned about in this run.
#[derive(Default)]
pub(super) struct WarnedOnce(Mutex<HashSet<String>>);

impl WarnedOnce {
    /// True the first time `what` is seen since the last [`clear`](Self::clear).
    pub(super) fn first(&self, what: &str) -> bool {
        let mut seen = self.0.lock().unwrap();
        !seen.contains(what) && seen.insert(what.to_string())
    }

    pub(super) fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(s: &str) -> gst::Caps {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_fixed_unreadable_video_format_is_refused() {
        gst::init().unwrap();
        let empty = gst::Caps::new_empty();
        let yuy2 = caps("video/x-raw,format=YUY2");
        assert_eq!(
            refused_format(Some(&yuy2), Some(&empty)),
            Some(gst_video::VideoFormat::Yuy2)
        );
        // Not refused: a format we read, a non-empty answer, no format, other media.
        let nv12 = caps("video/x-raw,format=NV12");
        assert_eq!(refused_format(Some(&nv12), Some(&empty)), None);
        assert_eq!(refused_format(Some(&yuy2), Some(&nv12)), None);
        let any_format = caps("video/x-raw");
        assert_eq!(refused_format(Some(&any_format), Some(&empty)), None);
        let audio = caps("audio/x-raw,format=S16LE");
        assert_eq!(refused_format(Some(&audio), Some(&empty)), None);
        assert_eq!(refused_format(None, Some(&empty)), None);
    }

    #[test]
    fn each_name_is_first_once_per_run() {
        let w = WarnedOnce::default();
        assert!(w.first("YUY2"));
        assert!(!w.first("YUY2"));
        assert!(w.first("UYVY"));
        w.clear();
        assert!(w.first("YUY2"));
    }
}
