//! Stream snapshots, the write side: an application that loads an aggregate by reading
//! its stream stores the state it computed at some stream version, and later loads the
//! stream as that snapshot plus only the events after it. Refract never computes the
//! state; it keeps it, bounds it, and says when a stream has grown far past its last
//! snapshot (`snapshot_due` in the append answer).
//!
//! Stored in `<data-dir>/snapshots/streams.db`, a database of this room's own: one row
//! per (stream, version), the newest `snapshots.stream_keep` kept per stream. A load
//! reads the snapshot and the events in one read transaction (the log attached
//! read-only to the snapshots' connection), so the two always agree.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::data_dir::DataDir;
use crate::log::{Event, micros_to_timestamp};
use crate::snapshots::SnapshotsConfig;

/// The most events one load returns after the snapshot; a longer tail is cut there
/// (`truncated: true`) and the rest read with `GET /v1/events?stream=`.
pub const MAX_LOAD_EVENTS: usize = 10_000;

/// The file of stream snapshots, under `<data-dir>/snapshots`.
pub const FILE: &str = "streams.db";

/// Why a stream snapshot could not be stored or a stream loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamSnapshotError {
    /// The version is past the stream's head (or the stream does not exist).
    #[error(
        "stream `{stream}` is at version {head}, so a snapshot at version {version} would \
         describe events that do not exist; snapshot at a version from 1 to {head}"
    )]
    BeyondHead {
        /// The stream.
        stream: String,
        /// The version asked for.
        version: u64,
        /// The stream's head version (0: no such stream).
        head: u64,
    },
    /// The state is larger than the named bound.
    #[error(
        "the state is {bytes} bytes of JSON, more than snapshots.stream_max_state_bytes = \
         {limit}; store less, or raise the limit"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The bound.
        limit: usize,
    },
    /// A folder could not be created, or a stored state is not JSON any more.
    #[error("stream snapshots {path}: {message}")]
    Storage {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// SQLite failed.
    #[error("stream snapshots {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// A stored snapshot of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSnapshot {
    /// The stream version the state reflects.
    pub version: u64,
    /// The application's state, as it sent it.
    pub state: Box<RawValue>,
    /// When it was stored (RFC 3339).
    pub taken_at: String,
}

/// A stream loaded from its latest snapshot.
#[derive(Debug, Serialize)]
pub struct Loaded {
    /// The stream.
    pub stream: String,
    /// The latest snapshot, if any.
    pub snapshot: Option<StreamSnapshot>,
    /// The events after it (all of the stream's without one), oldest first.
    pub events: Vec<Event>,
    /// Whether the tail was cut at [`MAX_LOAD_EVENTS`].
    pub truncated: bool,
}

/// The stream snapshots of a data directory.
pub struct StreamSnapshots {
    path: PathBuf,
    events_db: PathBuf,
    limits: SnapshotsConfig,
    writer: Mutex<Connection>,
}

impl StreamSnapshots {
    /// Opens (creating) `<data-dir>/snapshots/streams.db`.
    ///
    /// # Errors
    /// The database cannot be created or opened.
    pub fn open(data: &DataDir, limits: &SnapshotsConfig) -> Result<Self, StreamSnapshotError> {
        let path = data.root().join("snapshots").join(FILE);
        let sqlite = sqlite_at(&path);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|error| StreamSnapshotError::Storage {
                path: folder.to_owned(),
                message: error.to_string(),
            })?;
        }
        let conn = Connection::open(&path).map_err(sqlite)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS stream_snapshots (
                 stream   TEXT    NOT NULL,
                 version  INTEGER NOT NULL,
                 state    TEXT    NOT NULL,
                 taken_at INTEGER NOT NULL, -- microseconds since the Unix epoch
                 PRIMARY KEY (stream, version)
             ) STRICT, WITHOUT ROWID;",
        )
        .map_err(sqlite_at(&path))?;
        Ok(StreamSnapshots {
            events_db: data.events_db(),
            limits: limits.clone(),
            writer: Mutex::new(conn),
            path,
        })
    }

    /// Stores `state` as the snapshot of `stream` at `version`, then keeps the newest
    /// `snapshots.stream_keep`. Refused past the stream's head.
    ///
    /// # Errors
    /// See [`StreamSnapshotError`].
    pub fn put(
        &self,
        stream: &str,
        version: u64,
        state: &RawValue,
    ) -> Result<(), StreamSnapshotError> {
        let bytes = state.get().len();
        if bytes > self.limits.stream_max_state_bytes {
            return Err(StreamSnapshotError::TooLarge {
                bytes,
                limit: self.limits.stream_max_state_bytes,
            });
        }
        let head = self.head_version(stream)?;
        if version == 0 || version > head {
            return Err(StreamSnapshotError::BeyondHead {
                stream: stream.to_owned(),
                version,
                head,
            });
        }
        let conn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let keep = i64::try_from(self.limits.stream_keep).unwrap_or(i64::MAX);
        let store = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO stream_snapshots (stream, version, state, taken_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![stream, to_i64(version), state.get(), now_micros()],
            )?;
            tx.execute(
                "DELETE FROM stream_snapshots WHERE stream = ?1 AND version NOT IN (
                     SELECT version FROM stream_snapshots WHERE stream = ?1
                      ORDER BY version DESC LIMIT ?2)",
                params![stream, keep],
            )?;
            tx.commit()
        };
        store().map_err(sqlite_at(&self.path))
    }

    /// The latest snapshot of `stream` and the events after it, in one read
    /// transaction.
    ///
    /// # Errors
    /// A database cannot be read.
    pub fn load(&self, stream: &str) -> Result<Loaded, StreamSnapshotError> {
        let sqlite = sqlite_at(&self.events_db);
        let conn = open_read_only(&self.events_db).map_err(&sqlite)?;
        conn.execute(
            "ATTACH DATABASE ?1 AS snapshots",
            [uri_read_only(&self.path)],
        )
        .map_err(&sqlite)?;
        let tx = conn.unchecked_transaction().map_err(&sqlite)?;
        let snapshot = tx
            .query_row(
                "SELECT version, state, taken_at FROM snapshots.stream_snapshots
                  WHERE stream = ?1 ORDER BY version DESC LIMIT 1",
                [stream],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(&sqlite)?;
        let after = snapshot.as_ref().map_or(0, |(version, _, _)| *version);
        let mut statement = tx.prepare(STREAM_EVENTS_AFTER_SQL).map_err(&sqlite)?;
        let limit = i64::try_from(MAX_LOAD_EVENTS + 1).unwrap_or(i64::MAX);
        let mut events: Vec<Event> = statement
            .query_map(params![stream, after, limit], |row| {
                Ok(Event {
                    offset: to_u64(row.get(0)?),
                    id: row.get(1)?,
                    stream: row.get(2)?,
                    stream_version: to_u64(row.get(3)?),
                    event_type: row.get(4)?,
                    data: row.get(5)?,
                    metadata: row.get(6)?,
                    recorded_at: micros_to_timestamp(row.get(7)?),
                })
            })
            .map_err(&sqlite)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&sqlite)?;
        drop(statement);
        tx.commit().map_err(&sqlite)?;
        let truncated = events.len() > MAX_LOAD_EVENTS;
        events.truncate(MAX_LOAD_EVENTS);
        let snapshot = match snapshot {
            Some((version, state, taken_at)) => Some(StreamSnapshot {
                version: to_u64(version),
                state: RawValue::from_string(state).map_err(|error| {
                    StreamSnapshotError::Storage {
                        path: self.path.clone(),
                        message: format!("the stored state of `{stream}` is not JSON: {error}"),
                    }
                })?,
                taken_at: micros_to_timestamp(taken_at).to_string(),
            }),
            None => None,
        };
        Ok(Loaded {
            stream: stream.to_owned(),
            snapshot,
            events,
            truncated,
        })
    }

    /// Whether `stream` has grown `snapshots.stream_hint_every` events or more past its
    /// last snapshot (or from its start, without one); `None` when the hint is off.
    ///
    /// # Errors
    /// A database cannot be read.
    pub fn due(&self, stream: &str) -> Result<Option<bool>, StreamSnapshotError> {
        let every = self.limits.stream_hint_every;
        if every == 0 {
            return Ok(None);
        }
        let head = self.head_version(stream)?;
        let last: Option<i64> = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .query_row(
                "SELECT max(version) FROM stream_snapshots WHERE stream = ?1",
                [stream],
                |row| row.get(0),
            )
            .map_err(sqlite_at(&self.path))?;
        Ok(Some(head.saturating_sub(last.map_or(0, to_u64)) >= every))
    }

    /// Deletes the snapshots of `stream` at or below `version`: for retention, when the
    /// events they summarise are deleted.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn delete_through(&self, stream: &str, version: u64) -> Result<usize, StreamSnapshotError> {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .execute(
                "DELETE FROM stream_snapshots WHERE stream = ?1 AND version <= ?2",
                params![stream, to_i64(version)],
            )
            .map_err(sqlite_at(&self.path))
    }

    /// The stream's head version, 0 when it has no events.
    fn head_version(&self, stream: &str) -> Result<u64, StreamSnapshotError> {
        let sqlite = sqlite_at(&self.events_db);
        let conn = open_read_only(&self.events_db).map_err(&sqlite)?;
        let head: Option<i64> = conn
            .query_row(
                "SELECT version FROM streams WHERE name = ?1",
                [stream],
                |row| row.get(0),
            )
            .optional()
            .map_err(&sqlite)?;
        Ok(head.map_or(0, to_u64))
    }
}

/// The events of stream `?1` after version `?2`, at most `?3`, in version order: the
/// log's stream index up to its watermark, then the unindexed tail above it by offset
/// (the log's schema 5; see `crate::log`'s `stream_index.rs`). UNION ALL with a LIMIT
/// reads the tail only when the indexed events leave the page short; each part orders
/// itself along the index it reads, so the order does not depend on SQLite's scan order.
const STREAM_EVENTS_AFTER_SQL: &str = r#"
    SELECT * FROM (SELECT e."offset", e.id, e.stream, e.stream_version, e.type, e.data,
                          e.metadata, e.recorded_at
        FROM stream_index AS i CROSS JOIN events AS e NOT INDEXED ON e."offset" = i."offset"
        WHERE i.stream = (SELECT id FROM streams WHERE name = ?1) AND i.version > ?2
        ORDER BY i.version LIMIT ?3)
    UNION ALL
    SELECT * FROM (SELECT "offset", id, stream, stream_version, type, data, metadata, recorded_at
        FROM events NOT INDEXED
        WHERE "offset" > (SELECT indexed_through FROM stream_indexed WHERE singleton = 1)
          AND stream = ?1 AND stream_version > ?2
        ORDER BY "offset" LIMIT ?3)
    LIMIT ?3"#;

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// A `file:` URI that opens `path` read-only, for `ATTACH`.
fn uri_read_only(path: &Path) -> String {
    let text = path.display().to_string();
    let escaped = text
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{escaped}?mode=ro")
}

fn sqlite_at(path: &Path) -> impl Fn(rusqlite::Error) -> StreamSnapshotError + '_ {
    move |source| StreamSnapshotError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}
