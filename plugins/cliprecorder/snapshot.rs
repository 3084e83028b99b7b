// SPDX-License-Identifier: MPL-2.0
//! Snapshots: per confirmed track, its most confident fresh detection, kept as a crop of the
//! frame (only the box, converted to RGB when it improves) until the track ends, then written
//! once as a JPEG. [`Book`] is the bookkeeping (pure, unit-tested, generic over the crop);
//! [`crop`] and [`write_jpeg`] do the pixels.
//!
//! A track has ended when it has not been seen for [`Book::end_after_ns`] of the stream's time
//! (objecttracker drops a lost track after `max-lost`; a track missing for a frame or two is
//! not over), when the stream's time jumps back (a new connection), or when the stream ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tracked object seen on a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub track_id: u64,
    pub label: String,
    pub confidence: f64,
    /// x, y, width, height in the frame's pixels.
    pub rect: (u32, u32, u32, u32),
}

/// A track's best view so far.
#[derive(Debug)]
pub struct Best<T> {
    pub confidence: f64,
    pub rect: (u32, u32, u32, u32),
    pub crop: T,
}

/// A live track: where its snapshot goes, and its best view.
#[derive(Debug)]
pub struct Live<T> {
    pub track_id: u64,
    pub path: PathBuf,
    pub best: Option<Best<T>>,
    last_key: i64,
}

/// The live tracks of a stream.
#[derive(Debug)]
pub struct Book<T> {
    live: BTreeMap<u64, Live<T>>,
    pub end_after_ns: i64,
}

/// How long a track is not seen before it counts as ended (stream time).
pub const END_AFTER_NS: i64 = 5_000_000_000;

impl<T> Default for Book<T> {
    fn default() -> Self {
        Book::new(END_AFTER_NS)
    }
}

impl<T> Book<T> {
    pub fn new(end_after_ns: i64) -> Self {
        Book {
            live: BTreeMap::new(),
            end_after_ns,
        }
    }

    /// A frame at `key` on which `seen` are tracked. New tracks get their path from `path_for`
    /// (returned, to be recorded with this frame); a view more confident than the track's best
    /// is cropped by `crop` (None: not croppable, the best stays). Returns the new tracks and
    /// the tracks that ended.
    pub fn frame(
        &mut self,
        key: i64,
        seen: &[Seen],
        mut path_for: impl FnMut(&Seen) -> PathBuf,
        mut crop: impl FnMut(&Seen) -> Option<T>,
    ) -> (Vec<(Seen, PathBuf)>, Vec<Live<T>>) {
        let mut new = Vec::new();
        for s in seen {
            let live = self.live.entry(s.track_id).or_insert_with(|| {
                let path = path_for(s);
                new.push((s.clone(), path.clone()));
                Live {
                    track_id: s.track_id,
                    path,
                    best: None,
                    last_key: key,
                }
            });
            live.last_key = key;
            if live
                .best
                .as_ref()
                .is_none_or(|b| s.confidence > b.confidence)
                && let Some(c) = crop(s)
            {
                live.best = Some(Best {
                    confidence: s.confidence,
                    rect: s.rect,
                    crop: c,
                });
            }
        }
        let after = self.end_after_ns;
        let ended_ids: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, l)| {
                key.saturating_sub(l.last_key) > after || l.last_key.saturating_sub(key) > after
            })
            .map(|(id, _)| *id)
            .collect();
        let ended = ended_ids
            .iter()
            .filter_map(|id| self.live.remove(id))
            .collect();
        (new, ended)
    }

    /// Every live track (the stream ended).
    pub fn drain(&mut self) -> Vec<Live<T>> {
        std::mem::take(&mut self.live).into_values().collect()
    }
}

/// The box `rect` of `frame` as a packed RGB buffer of the box's size, or why not.
pub fn crop(
    frame: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    rect: (u32, u32, u32, u32),
) -> Result<(gst::Buffer, gst_video::VideoInfo), String> {
    let (x, y, w, h) = rect;
    let x = x.min(info.width().saturating_sub(1));
    let y = y.min(info.height().saturating_sub(1));
    let w = w.min(info.width() - x).max(1);
    let h = h.min(info.height() - y).max(1);
    let out_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
        .fps(info.fps())
        .interlace_mode(info.interlace_mode())
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = gst_video::VideoConverterConfig::new();
    config.set_src_x(x as i32);
    config.set_src_y(y as i32);
    config.set_src_width(Some(w as i32));
    config.set_src_height(Some(h as i32));
    config.set_threads(1);
    let converter =
        gst_video::VideoConverter::new(info, &out_info, Some(config)).map_err(|e| e.to_string())?;
    let src = gst_video::VideoFrameRef::from_buffer_ref_readable(frame, info)
        .map_err(|_| "the frame cannot be mapped (not system memory?)".to_string())?;
    let mut out = gst::Buffer::with_size(out_info.size()).map_err(|e| e.to_string())?;
    {
        let out_ref = out.get_mut().expect("a new buffer is writable");
        let mut dest = gst_video::VideoFrameRef::from_buffer_ref_writable(out_ref, &out_info)
            .map_err(|_| "cannot map the crop".to_string())?;
        converter.frame_ref(&src, &mut dest);
    }
    Ok((out, out_info))
}

/// Writes `crop` as a JPEG at `path`, once: an existing file (a replay, another reader of the
/// camera) is left as it is (Ok(false)).
pub fn write_jpeg(
    crop: &gst::Buffer,
    info: &gst_video::VideoInfo,
    path: &Path,
) -> Result<bool, String> {
    if path.exists() {
        return Ok(false);
    }
    let caps = info.to_caps().map_err(|e| e.to_string())?;
    let sample = gst::Sample::builder().buffer(crop).caps(&caps).build();
    let jpeg = gst_video::convert_sample(
        &sample,
        &gst::Caps::builder("image/jpeg").build(),
        Some(gst::ClockTime::from_seconds(10)),
    )
    .map_err(|e| format!("cannot encode the JPEG (is jpegenc installed?): {e}"))?;
    let buffer = jpeg.buffer().ok_or("the JPEG encoder gave nothing")?;
    let map = buffer.map_readable().map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    use std::io::Write;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut f) => f
            .write_all(&map)
            .and_then(|()| f.sync_all())
            .map(|()| true)
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                format!("{}: {e}", path.display())
            }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: u64, confidence: f64, x: u32) -> Seen {
        Seen {
            track_id: id,
            label: "person".into(),
            confidence,
            rect: (x, 0, 10, 10),
        }
    }

    #[test]
    fn the_best_view_is_kept_and_a_track_ends_after_its_absence() {
        let mut book: Book<u32> = Book::new(100);
        let path = |s: &Seen| PathBuf::from(format!("t{}.jpg", s.track_id));
        let (new, ended) = book.frame(0, &[seen(1, 0.5, 0)], path, |s| Some(s.rect.0));
        assert_eq!(new.len(), 1);
        assert!(ended.is_empty());
        book.frame(10, &[seen(1, 0.9, 5), seen(2, 0.4, 50)], path, |s| {
            Some(s.rect.0)
        });
        // Less confident: the best stays.
        book.frame(20, &[seen(1, 0.7, 9)], path, |s| Some(s.rect.0));
        // Track 2 last seen at 10: ended after 100.
        let (new, ended) = book.frame(111, &[seen(1, 0.6, 12)], path, |s| Some(s.rect.0));
        assert!(new.is_empty());
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].path, PathBuf::from("t2.jpg"));
        let left = book.drain();
        assert_eq!(left.len(), 1);
        let best = left[0].best.as_ref().unwrap();
        assert_eq!((best.confidence, best.crop), (0.9, 5));
    }

    #[test]
    fn a_jump_back_in_time_ends_every_track() {
        let mut book: Book<()> = Book::new(100);
        let path = |_: &Seen| PathBuf::from("x.jpg");
        book.frame(1000, &[seen(1, 0.5, 0)], path, |_| Some(()));
        let (_, ended) = book.frame(5, &[], path, |_| Some(()));
        assert_eq!(ended.len(), 1);
    }
}
