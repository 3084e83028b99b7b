// SPDX-License-Identifier: MPL-2.0
//! The embedded event log: an SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Schema version 2 (`PRAGMA user_version`):
//!
//! ```sql
//! events (id INTEGER PRIMARY KEY,            -- insertion order, for `follow`
//!         stream TEXT, seq INTEGER, pts_ns INTEGER, capture_ns INTEGER,
//!         model TEXT, detections TEXT (JSON), schema INTEGER,
//!         forwarded INTEGER,                 -- 1 once acknowledged by NATS (outbox)
//!         UNIQUE (stream, seq))
//! ```
//!
//! Inserts are `INSERT OR IGNORE`, so writing the same frame twice (a replay, a restart) stores
//! it once. Version 1 files (no `id`, no `forwarded`) are migrated when opened for writing.
//! A file that is not an SQLite database, or an SQLite database that is not an event log, is
//! refused before anything in it is changed.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::event::{Detection, FrameEvent, SCHEMA_VERSION};

const CREATE_V2: &str = "
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    stream      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    pts_ns      INTEGER,
    capture_ns  INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    detections  TEXT    NOT NULL,
    schema      INTEGER NOT NULL,
    forwarded   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (stream, seq)
);
CREATE INDEX events_by_capture ON events (stream, capture_ns, seq);
CREATE INDEX events_unforwarded ON events (id) WHERE forwarded = 0;
";

/// Version 1 to 2: a rowid table (insertion order) with the outbox flag. Version 1 logs were
/// local only, so their events count as forwarded.
const MIGRATE_V1_V2: &str = "
ALTER TABLE events RENAME TO events_v1;
DROP INDEX IF EXISTS events_by_capture;
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    stream      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    pts_ns      INTEGER,
    capture_ns  INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    detections  TEXT    NOT NULL,
    schema      INTEGER NOT NULL,
    forwarded   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (stream, seq)
);
INSERT INTO events (stream, seq, pts_ns, capture_ns, model, detections, schema, forwarded)
    SELECT stream, seq, pts_ns, capture_ns, model, detections, schema, 1 FROM events_v1
    ORDER BY stream, capture_ns, seq;
DROP TABLE events_v1;
CREATE INDEX events_by_capture ON events (stream, capture_ns, seq);
CREATE INDEX events_unforwarded ON events (id) WHERE forwarded = 0;
";

/// Errors of the store, each naming the file.
#[derive(Debug, Clone)]
pub struct StoreError {
    pub path: PathBuf,
    pub what: String,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event log '{}': {}", self.path.display(), self.what)
    }
}

impl std::error::Error for StoreError {}

/// An event ready to store: the detections already serialised.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub stream: String,
    pub seq: i64,
    pub pts_ns: Option<i64>,
    pub capture_ns: i64,
    pub model: String,
    pub detections: String,
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
        }
    }
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

pub struct EventStore {
    path: PathBuf,
    conn: Connection,
}

const SELECT_EVENT: &str =
    "SELECT id, stream, seq, pts_ns, capture_ns, model, detections, schema FROM events";

impl EventStore {
    fn err(path: &Path, what: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: path.to_path_buf(),
            what: what.to_string(),
        }
    }

    /// Checks what the file is before anything is written to it; returns its schema version
    /// (0 for a new, empty database).
    fn inspect(path: &Path, conn: &Connection) -> Result<i64, StoreError> {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| {
                Self::err(
                    path,
                    format!("is not an SQLite database ({e}); it was left untouched. Choose another location"),
                )
            })?;
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| Self::err(path, format!("cannot read the schema: {e}")))?;
        let foreign = || {
            Self::err(
                path,
                format!(
                    "is an SQLite database but not a videoai event log (tables: {}); it was left untouched. Choose another location",
                    tables.join(", ")
                ),
            )
        };
        match version {
            0 if tables.is_empty() => Ok(0),
            0 => Err(foreign()),
            1 | 2 if tables.iter().any(|t| t == "events") => Ok(version),
            1 | 2 => Err(foreign()),
            v => Err(Self::err(
                path,
                format!(
                    "has schema version {v}, newer than this videoai's ({SCHEMA_VERSION}); use a newer videoai"
                ),
            )),
        }
    }

    /// Opens (creating if missing) the log for writing, migrating older schemas.
    pub fn open_for_writing(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| Self::err(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Self::err(path, e))?;
        let version = Self::inspect(path, &conn)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| Self::err(path, format!("cannot enable WAL mode: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Self::err(
                path,
                format!(
                    "journal mode is '{mode}', expected 'wal' (is the file on a network filesystem?)"
                ),
            ));
        }
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(|e| Self::err(path, e))?;
        let script = match version {
            0 => Some(CREATE_V2),
            1 => Some(MIGRATE_V1_V2),
            _ => None,
        };
        if let Some(script) = script {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {script} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| Self::err(path, format!("cannot create or migrate the schema: {e}")))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn,
        })
    }

    /// Opens an existing log read-only.
    pub fn open_for_reading(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(Self::err(path, "no such file"));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Self::err(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Self::err(path, e))?;
        match Self::inspect(path, &conn)? {
            0 => Err(Self::err(path, "is an empty database, not an event log")),
            1 => Err(Self::err(
                path,
                "has schema version 1; open it once with raftsink (or any writer) to migrate it",
            )),
            _ => Ok(Self {
                path: path.to_path_buf(),
                conn,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `events` in one transaction (durable when it returns: WAL, synchronous=FULL).
    /// Returns how many were new; the rest were already stored.
    pub fn insert_batch(&mut self, events: &[EncodedEvent]) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| Self::err(&self.path, e))?;
        let mut inserted = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (stream, seq, pts_ns, capture_ns, model, detections, schema)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| Self::err(&self.path, e))?;
            for ev in events {
                inserted += stmt
                    .execute(params![
                        ev.stream,
                        ev.seq,
                        ev.pts_ns,
                        ev.capture_ns,
                        ev.model,
                        ev.detections,
                        SCHEMA_VERSION
                    ])
                    .map_err(|e| Self::err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| Self::err(&self.path, e))?;
        Ok(inserted)
    }

    fn row_to_event(
        path: &Path,
        row: &rusqlite::Row<'_>,
    ) -> rusqlite::Result<(i64, Result<FrameEvent, StoreError>)> {
        let id: i64 = row.get(0)?;
        let stream: String = row.get(1)?;
        let seq: i64 = row.get(2)?;
        let dets: String = row.get(6)?;
        let detections: Result<Vec<Detection>, StoreError> =
            serde_json::from_str(&dets).map_err(|e| {
                Self::err(
                    path,
                    format!("event ({stream}, {seq}): bad detections JSON: {e}"),
                )
            });
        Ok((
            id,
            detections.map(|detections| FrameEvent {
                stream,
                seq,
                pts_ns: row.get(3).unwrap_or(None),
                capture_ns: row.get(4).unwrap_or(0),
                model: row.get(5).unwrap_or_default(),
                detections,
                schema: row.get(7).unwrap_or(SCHEMA_VERSION),
            }),
        ))
    }

    fn query(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<(i64, FrameEvent)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(sql)
            .map_err(|e| Self::err(&self.path, e))?;
        let rows = stmt
            .query_map(args, |r| Self::row_to_event(&self.path, r))
            .map_err(|e| Self::err(&self.path, e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, ev) = row.map_err(|e| Self::err(&self.path, e))?;
            out.push((id, ev?));
        }
        Ok(out)
    }

    /// Events ordered by stream, then capture time (then seq), optionally of one stream and
    /// within `[from, to]` capture times (ns since the epoch).
    pub fn timeline(
        &self,
        stream: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<FrameEvent>, StoreError> {
        Ok(self
            .query(
                &format!(
                    "{SELECT_EVENT} WHERE (?1 IS NULL OR stream = ?1) AND (?2 IS NULL OR capture_ns >= ?2)
                     AND (?3 IS NULL OR capture_ns <= ?3) ORDER BY stream, capture_ns, seq"
                ),
                params![stream, from, to],
            )?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// Events ordered by stream, then capture time (then seq), optionally of one stream.
    pub fn events(&self, stream: Option<&str>) -> Result<Vec<FrameEvent>, StoreError> {
        self.timeline(stream, None, None)
    }

    /// Events stored after `id` (insertion order), at most `limit`, with their ids.
    pub fn after(&self, id: i64, limit: usize) -> Result<Vec<(i64, FrameEvent)>, StoreError> {
        self.query(
            &format!("{SELECT_EVENT} WHERE id > ?1 ORDER BY id LIMIT ?2"),
            params![id, limit as i64],
        )
    }

    /// Outbox: events not yet acknowledged by NATS, oldest first, at most `limit`.
    pub fn unforwarded(&self, limit: usize) -> Result<Vec<(i64, FrameEvent)>, StoreError> {
        self.query(
            &format!("{SELECT_EVENT} WHERE forwarded = 0 ORDER BY id LIMIT ?1"),
            params![limit as i64],
        )
    }

    /// Outbox: marks events acknowledged.
    pub fn mark_forwarded(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| Self::err(&self.path, e))?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE events SET forwarded = 1 WHERE id = ?1")
                .map_err(|e| Self::err(&self.path, e))?;
            for id in ids {
                stmt.execute(params![id])
                    .map_err(|e| Self::err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| Self::err(&self.path, e))
    }

    /// Outbox: how many events wait for NATS.
    pub fn pending(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM events WHERE forwarded = 0", [], |r| {
                r.get(0)
            })
            .map_err(|e| Self::err(&self.path, e))
    }

    /// Number of events stored for `stream` (all streams when `None`).
    pub fn count(&self, stream: Option<&str>) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE (?1 IS NULL OR stream = ?1)",
                params![stream],
                |r| r.get(0),
            )
            .optional()
            .map(|n| n.unwrap_or(0))
            .map_err(|e| Self::err(&self.path, e))
    }

    /// The highest seq stored for `stream`.
    pub fn max_seq(&self, stream: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT MAX(seq) FROM events WHERE stream = ?1",
                params![stream],
                |r| r.get(0),
            )
            .map_err(|e| Self::err(&self.path, e))
    }

    /// Per-stream counts and ranges.
    pub fn stats(&self) -> Result<Vec<StreamStats>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT stream, COUNT(*), MIN(capture_ns), MAX(capture_ns), MIN(seq), MAX(seq),
                        SUM(forwarded = 0) FROM events GROUP BY stream ORDER BY stream",
            )
            .map_err(|e| Self::err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StreamStats {
                    stream: r.get(0)?,
                    events: r.get(1)?,
                    first_capture_ns: r.get(2)?,
                    last_capture_ns: r.get(3)?,
                    min_seq: r.get(4)?,
                    max_seq: r.get(5)?,
                    unforwarded: r.get(6)?,
                })
            })
            .map_err(|e| Self::err(&self.path, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| Self::err(&self.path, e))
    }
}
