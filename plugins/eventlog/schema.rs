// SPDX-License-Identifier: MPL-2.0
//! What an event log file must be: its SQLite schema and versions, the migrations from older
//! versions, the check that refuses a file that is no event log, and what SQLite's errors mean
//! for a person ([`StoreError`]). The store itself ([`super::store`]) opens, reads and writes.
//!
//! Schema version 6 (`PRAGMA user_version`):
//!
//! ```sql
//! events (id INTEGER PRIMARY KEY,            -- insertion order, for `follow`
//!         stream TEXT, seq INTEGER, pts_ns INTEGER, capture_ns INTEGER,
//!         model TEXT, detections TEXT (JSON), schema INTEGER,
//!         forwarded INTEGER,                 -- outbox: 0 new, 2 published (not yet
//!                                            -- acknowledged), 1 acknowledged by NATS
//!         key_basis TEXT,                    -- what seq comes from (v4; NULL before)
//!         clock TEXT,                        -- camera keys: the camera's clock (JSON, v4)
//!         clips TEXT,                        -- what cliprecorder did on the frame (JSON
//!                                            -- array of ClipRecord, v6; NULL: nothing)
//!         UNIQUE (stream, seq))
//! dead_letters (id INTEGER PRIMARY KEY, stream TEXT, seq INTEGER, reason TEXT,
//!               event TEXT, parked_ns INTEGER,  -- events a target refused for good: NATS
//!               target TEXT)                    -- (target NULL; the event leaves the
//!                                               -- outbox), a webhook (v5; the event stays)
//! collisions (id INTEGER PRIMARY KEY, stream TEXT, seq INTEGER, event TEXT,
//!             stored_capture_ns INTEGER, stored_pts_ns INTEGER, found_ns INTEGER,
//!             place TEXT)                    -- frames whose key already held another frame
//!                                            -- (here, or in NATS: place 'log' / 'nats')
//! meta (key TEXT PRIMARY KEY, value TEXT)    -- 'outbox': the NATS location, for an outbox
//! deliveries (target TEXT, stream TEXT,      -- v5: how far each delivery target (an MQTT
//!             delivered_id INTEGER,          -- broker, a webhook) has acknowledged each
//!             PRIMARY KEY (target, stream))  -- stream: every event with id <= delivered_id
//! ```
//!
//! The migration SQL repeats the table definitions on purpose: a migration is frozen history
//! and must not change when the current schema does.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

/// The version of the SQLite schema (not of the event JSON, [`SCHEMA_VERSION`]).
pub(crate) const STORE_VERSION: i64 = 6;

const CREATE_EVENTS: &str = "
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
";

const CREATE_V3_EXTRAS: &str = "
CREATE INDEX events_unforwarded ON events (stream, id) WHERE forwarded != 1;
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    stream      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    parked_ns   INTEGER NOT NULL
);
";

/// Version 3 to 4: what each key comes from, the camera's clock, and frames whose key already
/// held another frame.
const MIGRATE_V3_V4: &str = "
ALTER TABLE events ADD COLUMN key_basis TEXT;
ALTER TABLE events ADD COLUMN clock TEXT;
CREATE INDEX events_by_key_basis ON events (stream, key_basis, seq);
CREATE TABLE collisions (
    id                  INTEGER PRIMARY KEY,
    stream              TEXT    NOT NULL,
    seq                 INTEGER NOT NULL,
    event               TEXT    NOT NULL,
    stored_capture_ns   INTEGER,
    stored_pts_ns       INTEGER,
    found_ns            INTEGER NOT NULL,
    place               TEXT    NOT NULL
);
CREATE INDEX collisions_by_key ON collisions (stream, seq);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Version 4 to 5: how far each delivery target (MQTT, webhooks) has come, per stream: one row
/// per (target, stream), never one per event; which target refused a dead letter.
const MIGRATE_V4_V5: &str = "
CREATE TABLE deliveries (
    target          TEXT    NOT NULL,
    stream          TEXT    NOT NULL,
    delivered_id    INTEGER NOT NULL,
    PRIMARY KEY (target, stream)
) WITHOUT ROWID;
ALTER TABLE dead_letters ADD COLUMN target TEXT;
";

/// Version 5 to 6: the clips `cliprecorder` started, extended, deleted or failed to write on a
/// frame.
const MIGRATE_V5_V6: &str = "ALTER TABLE events ADD COLUMN clips TEXT;";

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
";

/// Version 2 to 3: the outbox's dead letters, and its index by stream.
const MIGRATE_V2_V3: &str = "DROP INDEX IF EXISTS events_unforwarded;";

/// Errors of the store, each naming the file and the cause.
#[derive(Debug, Clone)]
pub struct StoreError {
    pub path: PathBuf,
    pub what: String,
    /// Another connection held the lock (worth trying again).
    pub busy: bool,
    /// The write may succeed later as it is: busy, locked, or the disk full for now.
    pub transient: bool,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event log '{}': {}", self.path.display(), self.what)
    }
}

impl std::error::Error for StoreError {}

/// What an SQLite error means for a person: the cause first, then SQLite's own words.
pub(crate) fn cause(e: &rusqlite::Error) -> String {
    let why = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
            "locked by another process (another writer held it for more than 5 s)"
        }
        Some(ErrorCode::ReadOnly) => "read-only: no write access to the file or its directory",
        Some(ErrorCode::DiskFull) => "the disk is full",
        Some(ErrorCode::NotADatabase) => "not an SQLite database",
        Some(ErrorCode::CannotOpen) => {
            "cannot be opened: check that its directory exists and is writable"
        }
        Some(ErrorCode::PermissionDenied) => "permission denied",
        Some(ErrorCode::SystemIoFailure) => {
            "an I/O error (a failing disk, or a file deleted meanwhile)"
        }
        _ => return e.to_string(),
    };
    format!("{why} ({e})")
}

pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

impl StoreError {
    pub(crate) fn new(path: &Path, what: impl std::fmt::Display) -> Self {
        StoreError {
            path: path.to_path_buf(),
            what: what.to_string(),
            busy: false,
            transient: false,
        }
    }

    /// An SQLite error, with its cause said for a person and whether trying again may help.
    pub(crate) fn sql(path: &Path, e: rusqlite::Error) -> Self {
        let mut err = Self::new(path, cause(&e));
        err.busy = is_busy(&e);
        err.transient = err.busy || e.sqlite_error_code() == Some(ErrorCode::DiskFull);
        err
    }
}

/// The script that brings a file at `version` (0: new and empty) to [`STORE_VERSION`]; empty
/// when it is there already.
pub(crate) fn upgrade_script(version: i64) -> String {
    let script = match version {
        0 => format!(
            "{CREATE_EVENTS}{CREATE_V3_EXTRAS}{MIGRATE_V3_V4}{MIGRATE_V4_V5}{MIGRATE_V5_V6}"
        ),
        1 => format!(
            "{MIGRATE_V1_V2}{MIGRATE_V2_V3}{CREATE_V3_EXTRAS}{MIGRATE_V3_V4}{MIGRATE_V4_V5}{MIGRATE_V5_V6}"
        ),
        2 => format!(
            "{MIGRATE_V2_V3}{CREATE_V3_EXTRAS}{MIGRATE_V3_V4}{MIGRATE_V4_V5}{MIGRATE_V5_V6}"
        ),
        3 => format!("{MIGRATE_V3_V4}{MIGRATE_V4_V5}{MIGRATE_V5_V6}"),
        4 => format!("{MIGRATE_V4_V5}{MIGRATE_V5_V6}"),
        5 => MIGRATE_V5_V6.to_string(),
        _ => return String::new(),
    };
    format!("{script} PRAGMA user_version = {STORE_VERSION};")
}

/// Checks what the file is before anything is written to it; returns its schema version
/// (0 for a new, empty database).
pub(crate) fn inspect(path: &Path, conn: &Connection) -> Result<i64, StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => StoreError::new(
                path,
                format!(
                    "is not an SQLite database ({e}); it was left untouched. Choose another location"
                ),
            ),
            _ => StoreError::sql(path, e),
        })?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| StoreError::new(path, format!("cannot read the schema: {}", cause(&e))))?;
    let foreign = || {
        StoreError::new(
            path,
            format!(
                "is an SQLite database but not a videoai event log (tables: {}); it was left untouched. Choose another location",
                tables.join(", ")
            ),
        )
    };
    match version {
        0 if tables.is_empty() => Ok(0),
        // Our tables without our version: seen (rarely) while another process creates
        // the file; try again, and call it foreign if it stays so.
        0 if tables
            .iter()
            .all(|t| ["events", "dead_letters", "collisions", "meta"].contains(&t.as_str())) =>
        {
            Err(StoreError {
                busy: true,
                ..foreign()
            })
        }
        0 => Err(foreign()),
        1..=STORE_VERSION if tables.iter().any(|t| t == "events") => Ok(version),
        1..=STORE_VERSION => Err(foreign()),
        v => Err(StoreError::new(
            path,
            format!(
                "has schema version {v}, newer than this videoai's ({STORE_VERSION}); use a newer videoai"
            ),
        )),
    }
}
