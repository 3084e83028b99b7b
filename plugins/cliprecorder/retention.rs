// SPDX-License-Identifier: MPL-2.0
//! Retention: which of a stream's files to delete so that they stay within `max-size-bytes`
//! and `max-age`, oldest first: its finished clips, its snapshots, and the `.partial` clips left
//! by a writer that died or failed (not written for a minute). [`scan`] reads the directory;
//! [`plan`] decides (pure, unit-tested); the element deletes and records each deletion in the
//! event log.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// What a file of the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Clip,
    /// A track's snapshot (its track id).
    Snapshot(u64),
    /// A clip's `.partial` left behind.
    Partial,
}

/// A file of the stream on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    pub path: std::path::PathBuf,
    pub kind: Kind,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// The limits (0 / zero: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.max_bytes > 0 || !self.max_age.is_zero()
    }
}

/// A `.partial` not written for this long is a leftover (a writer writes a fragment a second).
pub const PARTIAL_LEFT_AFTER: Duration = Duration::from_secs(60);

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// What `name` is, if it is one of `stream`'s files (`STREAM-TIME.mp4`,
/// `STREAM-TIME.mp4.partial`, `STREAM-TIME-trackID.jpg`; TIME and ID digits only, so a camera
/// named "door" never counts "door-2-….mp4", nor "door--5.mp4" of a camera named "door-").
fn kind_of(name: &str, stream: &str) -> Option<Kind> {
    let rest = name.strip_prefix(stream)?.strip_prefix('-')?;
    if let Some(time) = rest.strip_suffix(".mp4") {
        return digits(time).then_some(Kind::Clip);
    }
    if let Some(time) = rest.strip_suffix(".mp4.partial") {
        return digits(time).then_some(Kind::Partial);
    }
    let (time, id) = rest.strip_suffix(".jpg")?.split_once("-track")?;
    if !digits(time) || !digits(id) {
        return None;
    }
    id.parse().ok().map(Kind::Snapshot)
}

/// The files of `stream` in `dir` ([`kind_of`]). A `.partial` written to in the last
/// [`PARTIAL_LEFT_AFTER`] is being written: not counted.
pub fn scan(dir: &Path, stream: &str, now: SystemTime) -> std::io::Result<Vec<OnDisk>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(kind) = name.to_str().and_then(|n| kind_of(n, stream)) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if kind == Kind::Partial
            && now
                .duration_since(modified)
                .is_ok_and(|a| a < PARTIAL_LEFT_AFTER)
        {
            continue;
        }
        out.push(OnDisk {
            path: entry.path(),
            kind,
            bytes: meta.len(),
            modified,
        });
    }
    Ok(out)
}

/// The files to delete, oldest first, each with the limit it went for: older than `max_age`,
/// then the oldest until the rest fit in `max_bytes`. The newest file is always kept (even
/// alone over `max_bytes`): retention never deletes what was just written.
pub fn plan(
    mut files: Vec<OnDisk>,
    limits: Limits,
    now: SystemTime,
) -> Vec<(OnDisk, &'static str)> {
    files.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.path.cmp(&b.path))
    });
    let Some(newest) = files.pop() else {
        return Vec::new();
    };
    let mut total: u64 = files.iter().map(|c| c.bytes).sum::<u64>() + newest.bytes;
    let mut out = Vec::new();
    for f in files {
        let old = !limits.max_age.is_zero()
            && now
                .duration_since(f.modified)
                .is_ok_and(|age| age > limits.max_age);
        let over = limits.max_bytes > 0 && total > limits.max_bytes;
        if old || over {
            total -= f.bytes;
            out.push((f, if old { "max-age" } else { "max-size-bytes" }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(name: &str, bytes: u64, secs: u64) -> OnDisk {
        OnDisk {
            path: name.into(),
            kind: Kind::Clip,
            bytes,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn names(v: Vec<(OnDisk, &'static str)>) -> Vec<(String, &'static str)> {
        v.into_iter()
            .map(|(c, l)| (c.path.display().to_string(), l))
            .collect()
    }

    #[test]
    fn the_oldest_go_first_until_the_rest_fit() {
        let clips = vec![
            clip("c", 30, 3),
            clip("a", 30, 1),
            clip("b", 30, 2),
            clip("d", 30, 4),
        ];
        let limits = Limits {
            max_bytes: 70,
            max_age: Duration::ZERO,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(
            names(plan(clips, limits, now)),
            vec![
                ("a".into(), "max-size-bytes"),
                ("b".into(), "max-size-bytes")
            ]
        );
    }

    #[test]
    fn old_clips_go_and_the_newest_stays_whatever_its_size() {
        let clips = vec![clip("a", 10, 1), clip("b", 10, 50), clip("c", 500, 60)];
        let limits = Limits {
            max_bytes: 100,
            max_age: Duration::from_secs(30),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(61);
        assert_eq!(
            names(plan(clips, limits, now)),
            vec![("a".into(), "max-age"), ("b".into(), "max-size-bytes")]
        );
        assert!(plan(vec![clip("x", 1000, 0)], limits, now).is_empty());
        assert!(plan(Vec::new(), limits, now).is_empty());
    }

    #[test]
    fn scan_takes_only_this_streams_files_and_partials_left_behind() {
        let dir = std::env::temp_dir().join(format!("retention-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "door-100.mp4",
            "door-200.mp4.partial",
            "door-300-track7.jpg",
            "door-2-300.mp4",
            "door--5.mp4",
            "door-+5.mp4",
            "door-1-trackx.jpg",
            "yard-100.mp4",
            "door-notes.txt",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let found = |now| {
            let mut v: Vec<_> = scan(&dir, "door", now)
                .unwrap()
                .into_iter()
                .map(|c| {
                    (
                        c.path.file_name().unwrap().to_string_lossy().into_owned(),
                        c.kind,
                    )
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        // The .partial was just written: being written, not counted.
        assert_eq!(
            found(SystemTime::now()),
            vec![
                ("door-100.mp4".to_string(), Kind::Clip),
                ("door-300-track7.jpg".to_string(), Kind::Snapshot(7))
            ]
        );
        // A minute later it is a leftover.
        let later = SystemTime::now() + PARTIAL_LEFT_AFTER + Duration::from_secs(1);
        assert_eq!(found(later).len(), 3);
        assert_eq!(
            found(later)[1],
            ("door-200.mp4.partial".to_string(), Kind::Partial)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
