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

use crate::eventlog::event::{Detection, FrameEvent, SCHEMA_VERSION};
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

/// An event NATS refused for good, kept aside in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub stream: String,
    pub seq: i64,
    pub reason: String,
    pub parked_ns: i64,
}

/// A row that could not be read as an event.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub id: i64,
    pub stream: String,
    pub seq: i64,
    pub why: String,
}

/// An outbox row: the event (or why it cannot be read) and whether it was published before.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub stream: String,
    pub seq: i64,
    pub event: Result<FrameEvent, String>,
    /// Published in an earlier round or run without its acknowledgement being recorded.
    pub published: bool,
}

pub struct EventStore {
    path: PathBuf,
    conn: Connection,
    /// The file's identity when it was opened (device, inode), to notice it being replaced.
    identity: Option<(u64, u64)>,
}

const SELECT_EVENT: &str =
    "SELECT id, stream, seq, pts_ns, capture_ns, model, detections, schema FROM events";

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
        })
    }

    /// Opens an existing log read-only. Needs no write access: where SQLite cannot create its
    /// shared-memory file (a read-only directory or mount), the file is read as immutable.
    pub fn open_for_reading(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::new(path, "no such file"));
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
            _ => Ok(Self {
                path: path.to_path_buf(),
                identity: identity_of(path),
                conn,
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

    /// Stores `events` in one transaction (durable when it returns: WAL, synchronous=FULL).
    /// Returns how many were new; the rest were already stored.
    pub fn insert_batch(&mut self, events: &[EncodedEvent]) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sql(&path, e))?;
        let mut inserted = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (stream, seq, pts_ns, capture_ns, model, detections, schema)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| StoreError::sql(&path, e))?;
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
                    .map_err(|e| StoreError::sql(&path, e))?;
            }
        }
        tx.commit().map_err(|e| StoreError::sql(&path, e))?;
        Ok(inserted)
    }

    /// Calls `each` with every event of `sql` (rows as `SELECT_EVENT` gives them), in its
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
                "{SELECT_EVENT} WHERE (?1 IS NULL OR stream = ?1) AND (?2 IS NULL OR capture_ns >= ?2)
                 AND (?3 IS NULL OR capture_ns <= ?3) ORDER BY stream, capture_ns, seq"
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
            &format!("{SELECT_EVENT} WHERE id > ?1 ORDER BY id LIMIT ?2"),
            params![id, limit as i64],
            |id, ev| {
                out.push((id, ev));
                true
            },
            bad,
        )?;
        Ok(out)
    }

    /// The id of the newest event (0 when empty).
    pub fn last_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Outbox: the streams with events not yet acknowledged by NATS.
    pub fn pending_streams(&self) -> Result<Vec<String>, StoreError> {
        self.all_rows(
            "SELECT DISTINCT stream FROM events WHERE forwarded != 1",
            |r| r.get(0),
        )
    }

    /// Outbox: the oldest `limit` events of `stream` not yet acknowledged by NATS, in the order
    /// they were stored.
    pub fn unforwarded(&self, stream: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, stream, seq, pts_ns, capture_ns, model, detections, schema, forwarded
                 FROM events WHERE stream = ?1 AND forwarded != 1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| StoreError::sql(&self.path, e))?;
        let rows = stmt
            .query_map(params![stream, limit as i64], |r| {
                let (id, stream, seq, event) = row_event(r)?;
                let forwarded: i64 = r.get(8)?;
                Ok(OutboxRow {
                    id,
                    stream,
                    seq,
                    event,
                    published: forwarded == 2,
                })
            })
            .map_err(|e| StoreError::sql(&self.path, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    fn set_forwarded(&mut self, ids: &[i64], state: i64, only_new: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sql(&path, e))?;
        {
            let sql = if only_new {
                "UPDATE events SET forwarded = ?2 WHERE id = ?1 AND forwarded = 0"
            } else {
                "UPDATE events SET forwarded = ?2 WHERE id = ?1"
            };
            let mut stmt = tx
                .prepare_cached(sql)
                .map_err(|e| StoreError::sql(&path, e))?;
            for id in ids {
                stmt.execute(params![id, state])
                    .map_err(|e| StoreError::sql(&path, e))?;
            }
        }
        tx.commit().map_err(|e| StoreError::sql(&path, e))
    }

    /// Outbox: notes that events are about to be published (their acknowledgement may then be
    /// lost in a crash: see [`OutboxRow::published`]).
    pub fn mark_published(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        self.set_forwarded(ids, 2, true)
    }

    /// Outbox: marks events acknowledged.
    pub fn mark_forwarded(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        self.set_forwarded(ids, 1, false)
    }

    /// Outbox: moves an event NATS refused for good to the dead letters.
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
        tx.execute("DELETE FROM events WHERE id = ?1", params![id])
            .map_err(|e| StoreError::sql(&path, e))?;
        tx.commit().map_err(|e| StoreError::sql(&path, e))
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
        self.all_rows(
            "SELECT stream, seq, reason, parked_ns FROM dead_letters ORDER BY id",
            |r| {
                Ok(DeadLetter {
                    stream: r.get(0)?,
                    seq: r.get(1)?,
                    reason: r.get(2)?,
                    parked_ns: r.get(3)?,
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
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE (?1 IS NULL OR stream = ?1)",
                params![stream],
                |r| r.get(0),
            )
            .optional()
            .map(|n| n.unwrap_or(0))
            .map_err(|e| StoreError::sql(&self.path, e))
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
        EncodedEvent {
            stream: stream.into(),
            seq,
            pts_ns: Some(seq),
            capture_ns: seq,
            model: String::new(),
            detections: "[]".into(),
        }
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
        assert_eq!(s.pending_streams().unwrap(), vec!["a", "b"]);
        let rows = s.unforwarded("a", 10).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1]);
        assert!(rows.iter().all(|r| !r.published));
        s.mark_published(&[rows[0].id]).unwrap();
        assert!(s.unforwarded("a", 10).unwrap()[0].published);
        s.mark_forwarded(&[rows[0].id]).unwrap();
        s.park(rows[1].id, "message too large").unwrap();
        assert_eq!(s.pending_of(Some(&["a".into()])).unwrap(), 0);
        assert_eq!(s.pending().unwrap(), 1);
        let dead = s.dead_letters().unwrap();
        assert_eq!((dead[0].stream.as_str(), dead[0].seq), ("a", 1));
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
