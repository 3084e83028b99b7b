// SPDX-License-Identifier: MPL-2.0
//! The embedded event log: an SQLite file in WAL mode with `synchronous=FULL`.
//!
//! The schema, its versions and migrations are in [`super::schema`].
//!
//! Inserts are `INSERT OR IGNORE`, so writing the same frame twice (a replay, a restart) stores
//! it once. Version 1 and 2 files are migrated when opened for writing; the schema is checked
//! and created inside one write transaction, so processes opening the same new file at the
//! same moment (several pipelines sharing an outbox) agree on it. A file that is not an SQLite
//! database, or an SQLite database that is not an event log, is refused before anything in it
//! is changed. Errors say their cause: locked by another process, read-only, disk full, not a
//! database.
//!
//! Reading never needs write access (an archived log on a read-only mount), and a row that
//! cannot be read (a log damaged by hand, or written by a version that stored a non-finite
//! number as `null`) is reported on its own and skipped: it never hides the other rows.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use crate::eventlog::event::{
    ClipRecord, ClockMark, Detection, FrameEvent, KeyBasis, SCHEMA_VERSION,
};
pub use crate::eventlog::schema::StoreError;
use crate::eventlog::schema::{self, cause, is_busy};

/// An event ready to store: the detections already serialised.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub stream: String,
    pub seq: i64,
    pub pts_ns: Option<i64>,
    pub capture_ns: i64,
    pub model: String,
    pub detections: String,
    pub key_basis: Option<KeyBasis>,
    pub clock: Option<ClockMark>,
    /// What `cliprecorder` did on the frame: a JSON array of [`ClipRecord`] (None: nothing).
    pub clips: Option<String>,
    /// Not stored: an event already under this key is the same frame when its capture time
    /// (position keys: its PTS) is at most this far from this one's; else they collide.
    pub same_frame_ns: i64,
}

#[cfg(test)]
impl EncodedEvent {
    /// An event of `stream` without detections whose times are `seq` (unit tests).
    pub(crate) fn for_test(stream: &str, seq: i64) -> Self {
        EncodedEvent {
            stream: stream.into(),
            seq,
            pts_ns: Some(seq),
            capture_ns: seq,
            model: String::new(),
            detections: "[]".into(),
            key_basis: None,
            clock: None,
            clips: None,
            same_frame_ns: 0,
        }
    }
}

impl EncodedEvent {
    pub fn new(ev: &FrameEvent) -> Self {
        EncodedEvent {
            stream: ev.stream.clone(),
            seq: ev.seq,
            pts_ns: ev.pts_ns,
            capture_ns: ev.capture_ns,
            model: ev.model.clone(),
            detections: serde_json::to_string(&ev.detections).unwrap_or_else(|_| "[]".into()),
            key_basis: ev.key_basis,
            clock: ev.clock,
            clips: (!ev.clips.is_empty())
                .then(|| serde_json::to_string(&ev.clips).ok())
                .flatten(),
            same_frame_ns: 0,
        }
    }

    /// Whether an event stored under the same key, captured at `capture_ns` with `pts_ns`, is
    /// another frame (not this one stored before).
    pub fn is_other_frame(&self, capture_ns: i64, pts_ns: Option<i64>) -> bool {
        let far = |a: i64, b: i64| (a as i128 - b as i128).abs() > self.same_frame_ns as i128;
        match self.key_basis {
            // A file's frame is where it is: the same PTS, whenever it was read.
            Some(KeyBasis::Position) | None => match (self.pts_ns, pts_ns) {
                (Some(a), Some(b)) => far(a, b),
                (a, b) => a != b,
            },
            // A live frame is when it was taken: each reader has its own PTS.
            _ => far(self.capture_ns, capture_ns),
        }
    }

    /// The event as JSON (what a collision keeps, and what NATS gets).
    pub fn to_json(&self) -> String {
        let detections: serde_json::Value =
            serde_json::from_str(&self.detections).unwrap_or(serde_json::Value::Null);
        let mut v = serde_json::json!({
            "stream": self.stream,
            "seq": self.seq,
            "pts_ns": self.pts_ns,
            "capture_ns": self.capture_ns,
            "model": self.model,
            "detections": detections,
            "schema": SCHEMA_VERSION,
        });
        if let Some(b) = self.key_basis {
            v["key_basis"] = b.as_str().into();
        }
        if let Some(c) = &self.clock {
            v["clock"] = serde_json::to_value(c).unwrap_or_default();
        }
        if let Some(c) = self
            .clips
            .as_deref()
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        {
            v["clips"] = c;
        }
        v.to_string()
    }
}

/// What one [`EventStore::insert_batch`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Stored now.
    pub new: usize,
    /// The same frame was stored already (a replay, a second reader).
    pub duplicates: usize,
    /// The key held another frame: these (stream, seq) were kept in the collisions table.
    pub collisions: Vec<(String, i64)>,
}

/// A frame whose key already held another frame, kept aside.
#[derive(Debug, Clone, PartialEq)]
pub struct Collision {
    pub stream: String,
    pub seq: i64,
    /// The frame that was not stored under the key (its event JSON).
    pub event: String,
    /// The frame the key holds: its capture time and PTS.
    pub stored_capture_ns: Option<i64>,
    pub stored_pts_ns: Option<i64>,
    pub found_ns: i64,
    /// Where the key was found taken: `log` (this file) or `nats`.
    pub place: String,
}

/// Per-stream summary.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    pub stream: String,
    pub events: i64,
    pub first_capture_ns: i64,
    pub last_capture_ns: i64,
    pub min_seq: i64,
    pub max_seq: i64,
    pub unforwarded: i64,
}

/// How far a delivery target (an MQTT broker, a webhook) has come with one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub target: String,
    pub stream: String,
    pub delivered: i64,
    pub waiting: i64,
}

/// An event NATS refused for good, kept aside in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Who refused it: `None` for NATS, else the delivery target (a webhook).
    pub target: Option<String>,
    pub stream: String,
    pub seq: i64,
    pub reason: String,
    pub parked_ns: i64,
}

/// A stored key, with what the element continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastKey {
    pub seq: i64,
    pub capture_ns: i64,
    pub clock: Option<ClockMark>,
}

/// The highest keys of a stream, by basis ([`EventStore::last_keys`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastKeys {
    pub camera: Option<LastKey>,
    pub local: Option<i64>,
    pub other: Option<i64>,
}

/// A row that could not be read as an event.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub id: i64,
    pub stream: String,
    pub seq: i64,
    pub why: String,
}

/// An outbox row, ready to publish: the event as JSON (or why it cannot be read).
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub stream: String,
    pub seq: i64,
    pub capture_ns: i64,
    pub pts_ns: Option<i64>,
    pub key_basis: Option<KeyBasis>,
    /// The frame period of the camera's clock stored with it (ns), if any.
    pub period_ns: Option<i64>,
    /// The event's JSON (as `videoai-events dump` prints it), built from the row without
    /// decoding its detections.
    pub json: Result<String, String>,
    /// Its detections are `[]`.
    pub no_detections: bool,
}

pub struct EventStore {
    path: PathBuf,
    conn: Connection,
    /// The file's identity when it was opened (device, inode), to notice it being replaced.
    identity: Option<(u64, u64)>,
    /// Its schema version (files opened for writing are migrated to the current one).
    version: i64,
}

/// The columns every event read selects, in the order [`row_event`] takes them.
const EVENT_COLUMNS: &str =
    "id, stream, seq, pts_ns, capture_ns, model, detections, schema, key_basis, clock, clips";
/// The same from a file of version 4 or 5 (no clips).
const EVENT_COLUMNS_V5: &str =
    "id, stream, seq, pts_ns, capture_ns, model, detections, schema, key_basis, clock, NULL";
/// The same from a file older than version 4 (no key basis, no clock, no clips).
const EVENT_COLUMNS_V3: &str =
    "id, stream, seq, pts_ns, capture_ns, model, detections, schema, NULL, NULL, NULL";

/// The device and inode of the file at `path`.
fn identity_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// An event as JSON, built from its columns (the detections and clock are stored as JSON
/// already: checked, not decoded); an error when they are not JSON.
#[allow(clippy::too_many_arguments)]
fn event_json(
    stream: &str,
    seq: i64,
    pts_ns: Option<i64>,
    capture_ns: i64,
    model: &str,
    detections: &str,
    schema: i64,
    key_basis: Option<&str>,
    clock: Option<&str>,
    clips: Option<&str>,
) -> Result<String, String> {
    use std::fmt::Write;
    serde_json::from_str::<serde::de::IgnoredAny>(detections)
        .map_err(|e| format!("its detections are not valid JSON ({e})"))?;
    let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(detections.len() + 160);
    let _ = write!(
        out,
        "{{\"stream\":{},\"seq\":{seq},\"pts_ns\":{},\"capture_ns\":{capture_ns},\"model\":{},\"detections\":{detections},\"schema\":{schema}",
        text(stream),
        pts_ns.map_or("null".to_string(), |p| p.to_string()),
        text(model),
    );
    if let Some(b) = key_basis.and_then(KeyBasis::parse) {
        let _ = write!(out, ",\"key_basis\":\"{}\"", b.as_str());
    }
    if let Some(c) = clock.filter(|c| serde_json::from_str::<ClockMark>(c).is_ok()) {
        let _ = write!(out, ",\"clock\":{c}");
    }
    if let Some(c) = clips.filter(|c| serde_json::from_str::<Vec<ClipRecord>>(c).is_ok()) {
        let _ = write!(out, ",\"clips\":{c}");
    }
    out.push('}');
    Ok(out)
}

/// An event row read into an event, or why it cannot be.
fn row_event(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, i64, Result<FrameEvent, String>)> {
    let id: i64 = row.get(0)?;
    let stream: String = row.get(1)?;
    let seq: i64 = row.get(2)?;
    let dets: String = row.get(6).unwrap_or_default();
    let event = serde_json::from_str::<Vec<Detection>>(&dets)
        .map_err(|e| format!("its detections are not valid JSON ({e})"))
        .map(|detections| FrameEvent {
            stream: stream.clone(),
            seq,
            pts_ns: row.get(3).unwrap_or(None),
            capture_ns: row.get(4).unwrap_or(0),
            model: row.get(5).unwrap_or_default(),
            detections,
            schema: row.get(7).unwrap_or(SCHEMA_VERSION),
            key_basis: row
                .get::<_, Option<String>>(8)
                .ok()
                .flatten()
                .and_then(|b| KeyBasis::parse(&b)),
            clock: row
                .get::<_, Option<String>>(9)
                .ok()
                .flatten()
                .and_then(|c| serde_json::from_str(&c).ok()),
            clips: row
                .get::<_, Option<String>>(10)
                .ok()
                .flatten()
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or_default(),
        });
    Ok((id, stream, seq, event))
}

impl EventStore {
    /// Opens (creating if missing) the log for writing, migrating older schemas. Several
    /// processes may open the same file at the same moment: switching a new file to WAL and
    /// creating its schema take its lock, so whoever finds it taken tries again (for up to
    /// 10 s).
    pub fn open_for_writing(path: &Path) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        loop {
            match Self::open_for_writing_once(path) {
                Err(e) if e.busy && started.elapsed() < std::time::Duration::from_secs(10) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_for_writing_once(path: &Path) -> Result<Self, StoreError> {
        if path.is_dir() {
            return Err(StoreError::new(
                path,
                "is a directory: give a file path for the event log (e.g. events.db inside it)",
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(StoreError::new(
                path,
                format!(
                    "its directory '{}' does not exist: create it, or choose a location in a writable directory",
                    dir.display()
                ),
            ));
        }
        let conn = Connection::open(path).map_err(|e| StoreError::sql(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| StoreError::sql(path, e))?;
        // Refuse a file that is no event log before anything changes it (in one read
        // transaction: a consistent view while another process may be creating it).
        conn.execute_batch("BEGIN")
            .map_err(|e| StoreError::sql(path, e))?;
        let checked = schema::inspect(path, &conn);
        let _ = conn.execute_batch("COMMIT");
        checked?;
        // Checked again inside the write lock: another process may have created it meanwhile.
        conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
            let mut err = StoreError::new(path, format!("cannot lock it: {}", cause(&e)));
            err.busy = is_busy(&e);
            err
        })?;
        let created = (|| {
            let version = schema::inspect(path, &conn)?;
            let script = schema::upgrade_script(version);
            if !script.is_empty() {
                conn.execute_batch(&script).map_err(|e| {
                    StoreError::new(
                        path,
                        format!("cannot create or migrate the schema: {}", cause(&e)),
                    )
                })?;
            }
            Ok(())
        })();
        let end = if created.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = conn
            .execute_batch(end)
            .map_err(|e| StoreError::sql(path, e));
        created?;
        ended?;
        // WAL only now: the schema above was written to the file itself, so every process
        // that opens it from here on sees the same header (a new file's first commit in WAL
        // mode would sit in the -wal file, and another process would take the empty file for
        // a rollback-mode database it must switch). Already WAL: nothing to do.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| {
                let mut err =
                    StoreError::new(path, format!("cannot enable WAL mode: {}", cause(&e)));
                err.busy = is_busy(&e);
                err
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Also what SQLite answers when another connection held the file at that moment.
            return Err(StoreError {
                busy: true,
                ..StoreError::new(
                    path,
                    format!(
                        "journal mode is '{mode}', expected 'wal' (is the file on a network filesystem?)"
                    ),
                )
            });
        }
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(|e| StoreError::sql(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            identity: identity_of(path),
            conn,
            version: schema::STORE_VERSION,
        })
    }

    /// Opens an existing log read-only. Needs no write access: where SQLite cannot create its
    /// shared-memory file (a read-only directory or mount), the file is read as immutable.
    pub fn open_for_reading(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::new(path, "no such file"));
        }
        if path.is_dir() {
            return Err(StoreError::new(
                path,
                "is a directory, not an event log: give the log file (raftsink's location or outbox-location)",
            ));
        }
        let abs = std::fs::canonicalize(path).map_err(|e| StoreError::new(path, e))?;
        let uri = url::Url::from_file_path(&abs)
            .map_err(|_| StoreError::new(path, "cannot be named as a URI"))?;
        let open = |query: &str| -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open_with_flags(
                format!("{uri}?{query}"),
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            // Reading needs the WAL index: fails here when it cannot be made.
            conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
            Ok(conn)
        };
        let conn = match open("mode=ro") {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen)
                ) =>
            {
                open("immutable=1").map_err(|e| StoreError::sql(path, e))?
            }
            Err(e) => return Err(StoreError::sql(path, e)),
        };
        match schema::inspect(path, &conn)? {
            0 => Err(StoreError::new(
                path,
                "is an empty database, not an event log",
            )),
            1 => Err(StoreError::new(
                path,
                "has schema version 1; open it once with raftsink (or any writer) to migrate it",
            )),
            version => Ok(Self {
                path: path.to_path_buf(),
                identity: identity_of(path),
                conn,
                version,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the log's path is still the one this store has open (not deleted
    /// or replaced since it was opened).
    pub fn still_at_its_path(&self) -> bool {
        self.identity.is_some() && identity_of(&self.path) == self.identity
    }

    /// The clips column, or NULL in a file older than version 6.
    fn clips_column(&self) -> &'static str {
        if self.version >= 6 { "clips" } else { "NULL" }
    }

    /// The columns of an event read, for this file's version.
    fn event_columns(&self) -> &'static str {
        match self.version {
            6.. => EVENT_COLUMNS,
            4 | 5 => EVENT_COLUMNS_V5,
            _ => EVENT_COLUMNS_V3,
        }
    }

    /// Stores `events` in one transaction (durable when it returns: WAL, synchronous=FULL).
    /// An event whose key is taken is a duplicate when it is the same frame (a replay, another
    /// reader of the camera), else a collision: kept in the collisions table (once), the key's
    /// frame untouched.
    pub fn insert_batch(&mut self, events: &[EncodedEvent]) -> Result<Inserted, StoreError> {
        let path = self.path.clone();
        let fail = |e| StoreError::sql(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        let mut out = Inserted::default();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (stream, seq, pts_ns, capture_ns, model, detections, schema, key_basis, clock, clips)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(fail)?;
            for ev in events {
                let clock = ev
                    .clock
                    .as_ref()
                    .and_then(|c| serde_json::to_string(c).ok());
                let n = insert
                    .execute(params![
                        ev.stream,
                        ev.seq,
                        ev.pts_ns,
                        ev.capture_ns,
                        ev.model,
                        ev.detections,
                        SCHEMA_VERSION,
                        ev.key_basis.map(KeyBasis::as_str),
                        clock,
                        ev.clips
                    ])
                    .map_err(fail)?;
                if n == 1 {
                    out.new += 1;
                    continue;
                }
                let (stored_capture, stored_pts): (i64, Option<i64>) = tx
                    .prepare_cached(
                        "SELECT capture_ns, pts_ns FROM events WHERE stream = ?1 AND seq = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![ev.stream, ev.seq], |r| Ok((r.get(0)?, r.get(1)?)))
                    })
                    .map_err(fail)?;
                if !ev.is_other_frame(stored_capture, stored_pts) {
                    out.duplicates += 1;
                    continue;
                }
                if Self::kept_collision(&tx, ev).map_err(fail)? {
                    out.duplicates += 1;
                    continue;
                }
                tx.execute(
                    "INSERT INTO collisions (stream, seq, event, stored_capture_ns, stored_pts_ns, found_ns, place)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'log')",
                    params![ev.stream, ev.seq, ev.to_json(), stored_capture, stored_pts, now_ns()],
                )
                .map_err(fail)?;
                out.collisions.push((ev.stream.clone(), ev.seq));
            }
        }
        tx.commit().map_err(fail)?;
        Ok(out)
    }

    /// Whether `ev` (the same frame) is in the collisions table already.
    fn kept_collision(tx: &rusqlite::Transaction<'_>, ev: &EncodedEvent) -> rusqlite::Result<bool> {
        let mut stmt =
            tx.prepare_cached("SELECT event FROM collisions WHERE stream = ?1 AND seq = ?2")?;
        let kept: Vec<String> = stmt
            .query_map(params![ev.stream, ev.seq], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(kept.iter().any(|json| {
            serde_json::from_str::<FrameEvent>(json)
                .is_ok_and(|k| !ev.is_other_frame(k.capture_ns, k.pts_ns))
        }))
    }

    /// Keeps `ev` aside as a collision found in NATS (the key there holds another frame, captured
    /// at `stored_capture_ns`); returns false when it was kept already.
    pub fn keep_collision(
        &mut self,
        ev: &FrameEvent,
        stored_capture_ns: Option<i64>,
    ) -> Result<bool, StoreError> {
        let path = self.path.clone();
        let fail = |e| StoreError::sql(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        let enc = EncodedEvent::new(ev);
        let kept = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM collisions WHERE stream = ?1 AND seq = ?2 AND place = 'nats'",
            )
            .and_then(|mut s| s.query_row(params![ev.stream, ev.seq], |r| r.get::<_, i64>(0)))
            .map_err(fail)?;
        if kept == 0 {
            tx.execute(
                "INSERT INTO collisions (stream, seq, event, stored_capture_ns, stored_pts_ns, found_ns, place)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, 'nats')",
                params![ev.stream, ev.seq, enc.to_json(), stored_capture_ns, now_ns()],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(kept == 0)
    }

    /// Notes that this file is the outbox in front of the NATS `location`.
    pub fn mark_outbox(&mut self, location: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('outbox', ?1)",
                params![location],
            )
            .map(|_| ())
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// The NATS location this file is the outbox of, if it is an outbox.
    pub fn outbox_of(&self) -> Result<Option<String>, StoreError> {
        if self.version < 4 {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'outbox'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// The frames kept aside because their key held another frame, oldest first.
    pub fn collisions(&self) -> Result<Vec<Collision>, StoreError> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        self.all_rows(
            "SELECT stream, seq, event, stored_capture_ns, stored_pts_ns, found_ns, place
             FROM collisions ORDER BY id",
            |r| {
                Ok(Collision {
                    stream: r.get(0)?,
                    seq: r.get(1)?,
                    event: r.get(2)?,
                    stored_capture_ns: r.get(3)?,
                    stored_pts_ns: r.get(4)?,
                    found_ns: r.get(5)?,
                    place: r.get(6)?,
                })
            },
        )
    }

    /// The highest key of `stream` with each basis the element continues from: the camera key
    /// (with its capture time and clock), the local key, and the highest other key (position
    /// or capture time, or stored before keys had a basis).
    pub fn last_keys(&self, stream: &str) -> Result<LastKeys, StoreError> {
        let fail = |e| StoreError::sql(&self.path, e);
        let mut out = LastKeys::default();
        if self.version >= 4 {
            out.camera = self
                .conn
                .query_row(
                    "SELECT seq, capture_ns, clock FROM events
                     WHERE stream = ?1 AND key_basis = 'camera' ORDER BY seq DESC LIMIT 1",
                    params![stream],
                    |r| {
                        Ok(LastKey {
                            seq: r.get(0)?,
                            capture_ns: r.get(1)?,
                            clock: r
                                .get::<_, Option<String>>(2)?
                                .and_then(|c| serde_json::from_str(&c).ok()),
                        })
                    },
                )
                .optional()
                .map_err(fail)?;
            out.local = self
                .conn
                .query_row(
                    "SELECT MAX(seq) FROM events WHERE stream = ?1 AND key_basis = 'local'",
                    params![stream],
                    |r| r.get(0),
                )
                .map_err(fail)?;
        }
        let other = if self.version >= 4 {
            "SELECT MAX(seq) FROM events WHERE stream = ?1
             AND (key_basis IS NULL OR key_basis NOT IN ('camera', 'local'))"
        } else {
            "SELECT MAX(seq) FROM events WHERE stream = ?1"
        };
        out.other = self
            .conn
            .query_row(other, params![stream], |r| r.get(0))
            .map_err(fail)?;
        Ok(out)
    }

    /// Calls `each` with every event of `sql` (rows as [`Self::event_columns`] gives them), in its
    /// order, without holding them all; rows that are not events go to `bad`.
    fn each(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        mut each: impl FnMut(i64, FrameEvent) -> bool,
        mut bad: impl FnMut(BadRow),
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare(sql)
            .map_err(|e| StoreError::sql(&self.path, e))?;
        let mut rows = stmt
            .query(args)
            .map_err(|e| StoreError::sql(&self.path, e))?;
        while let Some(row) = rows.next().map_err(|e| StoreError::sql(&self.path, e))? {
            match row_event(row) {
                Ok((id, _, _, Ok(ev))) => {
                    if !each(id, ev) {
                        break;
                    }
                }
                Ok((id, stream, seq, Err(why))) => bad(BadRow {
                    id,
                    stream,
                    seq,
                    why,
                }),
                Err(e) => bad(BadRow {
                    id: 0,
                    stream: String::new(),
                    seq: 0,
                    why: cause(&e),
                }),
            }
        }
        Ok(())
    }

    /// Events ordered by stream, then capture time (then seq), optionally of one stream and
    /// within `[from, to]` capture times (ns since the epoch), one at a time to `each` (which
    /// returns false to stop); unreadable rows to `bad`.
    pub fn for_each_in_timeline(
        &self,
        stream: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        mut each: impl FnMut(FrameEvent) -> bool,
        bad: impl FnMut(BadRow),
    ) -> Result<(), StoreError> {
        self.each(
            &format!(
                "SELECT {} FROM events WHERE (?1 IS NULL OR stream = ?1) AND (?2 IS NULL OR capture_ns >= ?2)
                 AND (?3 IS NULL OR capture_ns <= ?3) ORDER BY stream, capture_ns, seq",
                self.event_columns()
            ),
            params![stream, from, to],
            |_, ev| each(ev),
            bad,
        )
    }

    /// Events ordered by stream, then capture time (then seq), optionally of one stream and
    /// within `[from, to]` capture times; unreadable rows are left out.
    pub fn timeline(
        &self,
        stream: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<FrameEvent>, StoreError> {
        let mut out = Vec::new();
        self.for_each_in_timeline(
            stream,
            from,
            to,
            |e| {
                out.push(e);
                true
            },
            |_| {},
        )?;
        Ok(out)
    }

    /// Events ordered by stream, then capture time (then seq), optionally of one stream.
    pub fn events(&self, stream: Option<&str>) -> Result<Vec<FrameEvent>, StoreError> {
        self.timeline(stream, None, None)
    }

    /// Events stored after `id` (insertion order), at most `limit`, with their ids; unreadable
    /// rows to `bad`.
    pub fn after(
        &self,
        id: i64,
        limit: usize,
        bad: impl FnMut(BadRow),
    ) -> Result<Vec<(i64, FrameEvent)>, StoreError> {
        let mut out = Vec::new();
        self.each(
            &format!(
                "SELECT {} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
                self.event_columns()
            ),
            params![id, limit as i64],
            |id, ev| {
                out.push((id, ev));
                true
            },
            bad,
        )?;
        Ok(out)
    }

    /// Deliveries: the last row of `stream` that `target` acknowledged (0: none yet). A log
    /// older than version 5 (opened for reading) has delivered nothing.
    pub fn delivered_to(&self, target: &str, stream: &str) -> Result<i64, StoreError> {
        if self.version < 5 {
            return Ok(0);
        }
        self.integer(
            "SELECT delivered_id FROM deliveries WHERE target = ?1 AND stream = ?2",
            params![target, stream],
        )
    }

    /// Deliveries: records that `target` acknowledged every event of each stream up to its
    /// row id, in one transaction. A mark never goes back.
    pub fn set_delivered(
        &mut self,
        target: &str,
        marks: &[(String, i64)],
    ) -> Result<(), StoreError> {
        self.execute_each(
            "INSERT INTO deliveries (target, stream, delivered_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (target, stream) DO UPDATE
             SET delivered_id = MAX(delivered_id, excluded.delivered_id)",
            marks
                .iter()
                .map(|(stream, id)| (target, stream.as_str(), *id)),
        )
    }

    /// Deliveries: how many events of `streams` wait for `target`.
    pub fn undelivered(&self, target: &str, streams: &[String]) -> Result<i64, StoreError> {
        let mut n = 0;
        for s in streams {
            let from = self.delivered_to(target, s)?;
            n += self.integer(
                "SELECT COUNT(*) FROM events WHERE +stream = ?1 AND id > ?2",
                params![s, from],
            )?;
        }
        Ok(n)
    }

    /// Deliveries: per target and stream, the events delivered and waiting (for `stats`).
    pub fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        self.all_rows(
            "SELECT d.target, d.stream,
                    (SELECT COUNT(*) FROM events e WHERE e.stream = d.stream AND e.id <= d.delivered_id),
                    (SELECT COUNT(*) FROM events e WHERE e.stream = d.stream AND e.id > d.delivered_id)
             FROM deliveries d ORDER BY d.target, d.stream",
            |r| {
                Ok(Delivery {
                    target: r.get(0)?,
                    stream: r.get(1)?,
                    delivered: r.get(2)?,
                    waiting: r.get(3)?,
                })
            },
        )
    }

    /// The id of `stream`'s newest event (0 when it has none).
    pub fn last_id_of(&self, stream: &str) -> Result<i64, StoreError> {
        self.integer(
            "SELECT id FROM events WHERE +stream = ?1 ORDER BY id DESC LIMIT 1",
            params![stream],
        )
    }

    /// The integer `sql` selects (0 when it selects no row, or NULL).
    fn integer(&self, sql: &str, args: impl rusqlite::Params) -> Result<i64, StoreError> {
        self.conn
            .query_row(sql, args, |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map(|n| n.flatten().unwrap_or(0))
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// The id of the newest event (0 when empty).
    pub fn last_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Outbox: the streams with events not yet acknowledged by NATS, each with its newest such
    /// row's id.
    pub fn pending_streams(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.all_rows(
            "SELECT stream, MAX(id) FROM events WHERE forwarded != 1 GROUP BY stream",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Outbox: the event of row `id`, if it is there and readable.
    pub fn outbox_event(&self, id: i64) -> Result<Option<FrameEvent>, StoreError> {
        let sql = format!("SELECT {} FROM events WHERE id = ?1", self.event_columns());
        self.conn
            .query_row(&sql, params![id], |r| {
                row_event(r).map(|(_, _, _, e)| e.ok())
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Outbox: the oldest `limit` events of `stream` stored after row `after` (0: from the
    /// start) and not yet acknowledged by NATS, in the order they were stored.
    pub fn unforwarded(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_rows(
            &format!(
                "SELECT id, seq, pts_ns, capture_ns, model, detections, schema, key_basis, clock, {}
                 FROM events WHERE stream = ?1 AND forwarded != 1 AND id > ?2 ORDER BY id LIMIT ?3",
                self.clips_column()
            ),
            params![stream, after, limit as i64],
            stream,
        )
    }

    /// Deliveries: the events of `stream` stored after row `after`, at most `limit`, in the order
    /// they were stored, as JSON built from their columns (no decoding).
    pub fn rows_after(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // `+stream`: walk the rowids from the mark, never the stream's whole index.
        self.outbox_rows(
            &format!(
                "SELECT id, seq, pts_ns, capture_ns, model, detections, schema, key_basis, clock, {}
                 FROM events WHERE +stream = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                self.clips_column()
            ),
            params![stream, after, limit as i64],
            stream,
        )
    }

    fn outbox_rows(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        stream: &str,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| StoreError::sql(&self.path, e))?;
        let rows = stmt
            .query_map(args, |r| {
                let id: i64 = r.get(0)?;
                let seq: i64 = r.get(1)?;
                let pts_ns: Option<i64> = r.get(2)?;
                let capture_ns: i64 = r.get(3)?;
                let model: String = r.get(4)?;
                let detections: String = r.get(5)?;
                let schema: i64 = r.get(6)?;
                let key_basis: Option<String> = r.get(7)?;
                let clock: Option<String> = r.get(8)?;
                let clips: Option<String> = r.get(9)?;
                let json = event_json(
                    stream,
                    seq,
                    pts_ns,
                    capture_ns,
                    &model,
                    &detections,
                    schema,
                    key_basis.as_deref(),
                    clock.as_deref(),
                    clips.as_deref(),
                );
                Ok(OutboxRow {
                    id,
                    stream: stream.to_string(),
                    seq,
                    capture_ns,
                    pts_ns,
                    key_basis: key_basis.as_deref().and_then(KeyBasis::parse),
                    period_ns: clock
                        .as_deref()
                        .and_then(|c| serde_json::from_str::<ClockMark>(c).ok())
                        .map(|c| c.period_ns),
                    // A frame with clip records is delivered like one with detections.
                    no_detections: detections.trim() == "[]" && clips.is_none(),
                    json,
                })
            })
            .map_err(|e| StoreError::sql(&self.path, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Outbox: marks events acknowledged.
    pub fn mark_forwarded(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        self.execute_each(
            "UPDATE events SET forwarded = 1 WHERE id = ?1",
            ids.iter().map(|id| (*id,)),
        )
    }

    /// Runs `sql` once per parameter set, in one transaction.
    fn execute_each<P: rusqlite::Params>(
        &mut self,
        sql: &str,
        each: impl IntoIterator<Item = P>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sql(&path, e))?;
        {
            let mut stmt = tx
                .prepare_cached(sql)
                .map_err(|e| StoreError::sql(&path, e))?;
            for p in each {
                stmt.execute(p).map_err(|e| StoreError::sql(&path, e))?;
            }
        }
        tx.commit().map_err(|e| StoreError::sql(&path, e))
    }

    /// Outbox, for the forwarder's own connection: commits need not reach the disk at once
    /// (`synchronous=NORMAL`; WAL keeps the file consistent). An acknowledgement lost in a power
    /// cut is only a check against NATS the next time.
    pub fn relax_durability(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Outbox: records an event NATS refused for good in the dead letters, and counts it done
    /// for NATS. The row stays (as forwarded ones do): deleting it let SQLite reuse its row id
    /// for the next event when it was the newest, which a delivery target's mark already at that
    /// id would pass over.
    pub fn park(&mut self, id: i64, reason: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sql(&path, e))?;
        tx.execute(
            "INSERT INTO dead_letters (stream, seq, reason, event, parked_ns)
             SELECT stream, seq, ?2, json_object('stream', stream, 'seq', seq, 'pts_ns', pts_ns,
                    'capture_ns', capture_ns, 'model', model, 'detections',
                    CASE WHEN json_valid(detections) THEN json(detections) ELSE detections END), ?3
             FROM events WHERE id = ?1",
            params![id, reason, now_ns()],
        )
        .map_err(|e| StoreError::sql(&path, e))?;
        tx.execute("UPDATE events SET forwarded = 1 WHERE id = ?1", params![id])
            .map_err(|e| StoreError::sql(&path, e))?;
        tx.commit().map_err(|e| StoreError::sql(&path, e))
    }

    /// Deliveries: records that `target` refused the event `json` of (`stream`, `seq`) for good
    /// (the event stays in the log).
    pub fn park_delivery(
        &mut self,
        target: &str,
        stream: &str,
        seq: i64,
        reason: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO dead_letters (stream, seq, reason, event, parked_ns, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![stream, seq, reason, json, now_ns(), target],
            )
            .map(|_| ())
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Every row `sql` (without parameters) selects, as `row` makes them.
    fn all_rows<T>(
        &self,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let fail = |e| StoreError::sql(&self.path, e);
        let mut stmt = self.conn.prepare(sql).map_err(fail)?;
        let rows = stmt.query_map([], row).map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// Outbox: the dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let target = if self.version >= 5 { "target" } else { "NULL" };
        self.all_rows(
            &format!(
                "SELECT stream, seq, reason, parked_ns, {target} FROM dead_letters ORDER BY id"
            ),
            |r| {
                Ok(DeadLetter {
                    stream: r.get(0)?,
                    seq: r.get(1)?,
                    reason: r.get(2)?,
                    parked_ns: r.get(3)?,
                    target: r.get(4)?,
                })
            },
        )
    }

    /// Outbox: how many events wait for NATS (of `streams` only, when given).
    pub fn pending_of(&self, streams: Option<&[String]>) -> Result<i64, StoreError> {
        match streams {
            None => self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE forwarded != 1",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| StoreError::sql(&self.path, e)),
            Some(streams) => {
                let mut n = 0;
                let mut stmt = self
                    .conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM events WHERE stream = ?1 AND forwarded != 1",
                    )
                    .map_err(|e| StoreError::sql(&self.path, e))?;
                for s in streams {
                    n += stmt
                        .query_row(params![s], |r| r.get::<_, i64>(0))
                        .map_err(|e| StoreError::sql(&self.path, e))?;
                }
                Ok(n)
            }
        }
    }

    /// Outbox: how many events wait for NATS.
    pub fn pending(&self) -> Result<i64, StoreError> {
        self.pending_of(None)
    }

    /// Number of events stored for `stream` (all streams when `None`).
    pub fn count(&self, stream: Option<&str>) -> Result<i64, StoreError> {
        self.integer(
            "SELECT COUNT(*) FROM events WHERE (?1 IS NULL OR stream = ?1)",
            params![stream],
        )
    }

    /// The highest seq stored for `stream`.
    pub fn max_seq(&self, stream: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT MAX(seq) FROM events WHERE stream = ?1",
                params![stream],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Per-stream counts and ranges.
    pub fn stats(&self) -> Result<Vec<StreamStats>, StoreError> {
        self.all_rows(
            "SELECT stream, COUNT(*), MIN(capture_ns), MAX(capture_ns), MIN(seq), MAX(seq),
                    SUM(forwarded != 1) FROM events GROUP BY stream ORDER BY stream",
            |r| {
                Ok(StreamStats {
                    stream: r.get(0)?,
                    events: r.get(1)?,
                    first_capture_ns: r.get(2)?,
                    last_capture_ns: r.get(3)?,
                    min_seq: r.get(4)?,
                    max_seq: r.get(5)?,
                    unforwarded: r.get(6)?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str, seq: i64) -> EncodedEvent {
        EncodedEvent::for_test(stream, seq)
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("videoai-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("events.db")
    }

    #[test]
    fn concurrent_creators_agree_on_the_schema() {
        let path = temp("race");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let p = path.clone();
                std::thread::spawn(move || {
                    let mut s = EventStore::open_for_writing(&p)?;
                    s.insert_batch(&[event(&format!("cam{i}"), 0)])
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        assert_eq!(
            EventStore::open_for_reading(&path)
                .unwrap()
                .count(None)
                .unwrap(),
            8
        );
    }

    #[test]
    fn outbox_states_and_dead_letters() {
        let path = temp("outbox");
        let mut s = EventStore::open_for_writing(&path).unwrap();
        s.insert_batch(&[event("a", 0), event("a", 1), event("b", 0)])
            .unwrap();
        let streams: Vec<String> = s
            .pending_streams()
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(streams, vec!["a", "b"]);
        let rows = s.unforwarded("a", 0, 10).unwrap();
        assert_eq!(
            s.unforwarded("a", rows[0].id, 10).unwrap()[0].id,
            rows[1].id
        );
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1]);
        let json: FrameEvent = serde_json::from_str(rows[0].json.as_ref().unwrap()).unwrap();
        assert_eq!((json.stream.as_str(), json.seq), ("a", 0));
        s.mark_forwarded(&[rows[0].id]).unwrap();
        s.park(rows[1].id, "message too large").unwrap();
        assert_eq!(s.pending_of(Some(&["a".into()])).unwrap(), 0);
        assert_eq!(s.pending().unwrap(), 1);
        let dead = s.dead_letters().unwrap();
        assert_eq!((dead[0].stream.as_str(), dead[0].seq), ("a", 1));
    }

    /// An event NATS refused for good stays in the outbox (done for NATS, listed as a dead
    /// letter): deleting it let SQLite give its row id to the next event when it was the
    /// newest, and an MQTT or webhook mark already at that id then passed over the new event.
    #[test]
    fn a_parked_event_keeps_its_row_id_from_the_next_event() {
        let path = temp("park-rowid");
        let mut s = EventStore::open_for_writing(&path).unwrap();
        s.insert_batch(&[event("a", 0), event("a", 1)]).unwrap();
        let parked = s.unforwarded("a", 0, 10).unwrap()[1].id;
        // Another target delivered up to the newest row before NATS refused it.
        s.set_delivered("mqtt://broker", &[("a".into(), parked)])
            .unwrap();
        s.park(parked, "message too large").unwrap();
        s.insert_batch(&[event("a", 2)]).unwrap();
        let after: Vec<i64> = s
            .rows_after("a", s.delivered_to("mqtt://broker", "a").unwrap(), 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(
            after,
            vec![2],
            "the event after the parked one is still delivered"
        );
        assert_eq!(
            s.pending_of(Some(&["a".into()])).unwrap(),
            2,
            "seq 0 and 2 wait for NATS, the parked one does not"
        );
        assert_eq!(s.dead_letters().unwrap().len(), 1);
    }

    #[test]
    fn replaced_files_are_noticed() {
        let path = temp("replaced");
        let s = EventStore::open_for_writing(&path).unwrap();
        assert!(s.still_at_its_path());
        std::fs::remove_file(&path).unwrap();
        assert!(!s.still_at_its_path());
    }
}
