// SPDX-License-Identifier: MPL-2.0
//! The embedded event log: an SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Table `events`, primary key `(stream, seq)`; inserts are `INSERT OR IGNORE`, so writing the
//! same frame twice (a replay, a restart) stores it once. `PRAGMA user_version` holds the schema
//! version of the file.
//!
//! Writes go into an open transaction; [`EventStore::commit`] makes them durable. The caller
//! decides when (group commit).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::event::{Detection, FrameEvent, SCHEMA_VERSION};

const CREATE_V1: &str = "
CREATE TABLE IF NOT EXISTS events (
    stream      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    pts_ns      INTEGER,
    capture_ns  INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    detections  TEXT    NOT NULL,
    schema      INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_capture ON events (stream, capture_ns, seq);
";

/// Errors of the store, each naming the file.
#[derive(Debug)]
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

/// Result of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    Inserted,
    /// An event with the same `(stream, seq)` is already stored; nothing was written.
    Duplicate,
}

pub struct EventStore {
    path: PathBuf,
    conn: Connection,
    in_transaction: bool,
}

impl EventStore {
    fn err(path: &Path, what: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: path.to_path_buf(),
            what: what.to_string(),
        }
    }

    /// Opens (creating if missing) the log for writing.
    pub fn open_for_writing(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| Self::err(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| Self::err(path, e))?;
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
        Self::migrate(path, &conn)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn,
            in_transaction: false,
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
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| Self::err(path, format!("not an SQLite event log: {e}")))?;
        if version == 0 || version > SCHEMA_VERSION {
            return Err(Self::err(
                path,
                format!(
                    "schema version {version} found, this program reads versions 1 to {SCHEMA_VERSION}"
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn,
            in_transaction: false,
        })
    }

    fn migrate(path: &Path, conn: &Connection) -> Result<(), StoreError> {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| Self::err(path, format!("not an SQLite database: {e}")))?;
        match version {
            0 => conn
                .execute_batch(&format!(
                    "BEGIN; {CREATE_V1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(|e| Self::err(path, format!("cannot create the schema: {e}"))),
            SCHEMA_VERSION => Ok(()),
            v => Err(Self::err(
                path,
                format!(
                    "schema version {v} is newer than this plugin's ({SCHEMA_VERSION}); use a newer videoai"
                ),
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event inside the open transaction (one is begun if needed).
    pub fn append(&mut self, ev: &FrameEvent) -> Result<Append, StoreError> {
        if !self.in_transaction {
            self.conn
                .execute_batch("BEGIN")
                .map_err(|e| Self::err(&self.path, e))?;
            self.in_transaction = true;
        }
        let detections =
            serde_json::to_string(&ev.detections).map_err(|e| Self::err(&self.path, e))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO events (stream, seq, pts_ns, capture_ns, model, detections, schema)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(|e| Self::err(&self.path, e))?;
        let n = stmt
            .execute(params![
                ev.stream,
                ev.seq,
                ev.pts_ns,
                ev.capture_ns,
                ev.model,
                detections,
                SCHEMA_VERSION
            ])
            .map_err(|e| Self::err(&self.path, e))?;
        Ok(if n == 1 {
            Append::Inserted
        } else {
            Append::Duplicate
        })
    }

    /// Makes every appended event durable.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.in_transaction {
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| Self::err(&self.path, e))?;
            self.in_transaction = false;
        }
        Ok(())
    }

    /// Events ordered by stream, then capture time (then seq), optionally of one stream.
    pub fn events(&self, stream: Option<&str>) -> Result<Vec<FrameEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT stream, seq, pts_ns, capture_ns, model, detections FROM events
                 WHERE (?1 IS NULL OR stream = ?1) ORDER BY stream, capture_ns, seq",
            )
            .map_err(|e| Self::err(&self.path, e))?;
        let rows = stmt
            .query_map(params![stream], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(|e| Self::err(&self.path, e))?;
        let mut out = Vec::new();
        for row in rows {
            let (stream, seq, pts_ns, capture_ns, model, dets) =
                row.map_err(|e| Self::err(&self.path, e))?;
            let detections: Vec<Detection> = serde_json::from_str(&dets).map_err(|e| {
                Self::err(
                    &self.path,
                    format!("event ({stream}, {seq}): bad detections JSON: {e}"),
                )
            })?;
            out.push(FrameEvent {
                stream,
                seq,
                pts_ns,
                capture_ns,
                model,
                detections,
            });
        }
        Ok(out)
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
}

impl Drop for EventStore {
    fn drop(&mut self) {
        // Best effort: a store dropped without commit (an error path) still keeps what it can.
        let _ = self.commit();
    }
}
