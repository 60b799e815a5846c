//! The retention horizon, and the [`Pruner`] that removes events under it.
//!
//! Retention (see [`crate::retention`]) decides which events leave the log; this file is
//! the log's side of it: the one-row `horizon` table that says how far removals reached,
//! and the connection that removes events in small transactions, each of which moves the
//! horizon in the same commit. Readers read the horizon inside their own snapshot, so
//! what they see of the log and of the horizon always agree.
//!
//! Two rules keep the log's own invariants true without the writer knowing anything of
//! retention: the newest event of every stream and the log's head event are never
//! removed (retention's pass chooses only other events, and the pruner is only ever
//! handed those). The writer computes the next offset and the next `recorded_at` from
//! the head event, so offsets are never reused and times never go backwards. A stream's
//! next version comes from its row in `streams` (schema 4), which removals never touch,
//! so versions would not be reused even if every event of a stream were removed; keeping
//! the newest event also keeps a stream's reads able to find where its versions end.
//! Removing an event also deletes its `stream_index` entry (schema 5) in the same
//! transaction; an event still in the unindexed tail has none, and is never indexed
//! once gone.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::query::{STREAM_HEAD_SQL, get_u64, prefix_upper_bound, to_sql_int};
use super::schema::{configure_writer_like, sqlite_error};
use super::{LogError, LogOptions};

/// Events removed per transaction at most: a removal holds the write lock for about as
/// long as a group commit of this many events, so appends wait milliseconds, not seconds.
pub const PRUNE_CHUNK_EVENTS: usize = 500;

/// Free pages given back to the file system per incremental-vacuum step (4 MiB of 4 KiB
/// pages), each step its own short write transaction.
pub const VACUUM_STEP_PAGES: u64 = 1024;

/// Event text of the streams in `[?1, ?2)`: indexed events through the stream index,
/// then the unindexed tail (above the watermark) by offset.
const PREFIX_RANGE_BYTES_SQL: &str = r#"SELECT
    coalesce((SELECT sum(length(e.data) + coalesce(length(e.metadata), 0))
      FROM streams AS s CROSS JOIN stream_index AS i ON i.stream = s.id
        CROSS JOIN events AS e NOT INDEXED ON e."offset" = i."offset"
      WHERE s.name >= ?1 AND s.name < ?2), 0)
  + coalesce((SELECT sum(length(data) + coalesce(length(metadata), 0)) FROM events NOT INDEXED
      WHERE "offset" > (SELECT indexed_through FROM stream_indexed WHERE singleton = 1)
        AND stream >= ?1 AND stream < ?2), 0)"#;

/// [`PREFIX_RANGE_BYTES_SQL`] for the streams from `?1` on.
const PREFIX_FROM_BYTES_SQL: &str = r#"SELECT
    coalesce((SELECT sum(length(e.data) + coalesce(length(e.metadata), 0))
      FROM streams AS s CROSS JOIN stream_index AS i ON i.stream = s.id
        CROSS JOIN events AS e NOT INDEXED ON e."offset" = i."offset"
      WHERE s.name >= ?1), 0)
  + coalesce((SELECT sum(length(data) + coalesce(length(metadata), 0)) FROM events NOT INDEXED
      WHERE "offset" > (SELECT indexed_through FROM stream_indexed WHERE singleton = 1)
        AND stream >= ?1), 0)"#;

/// How far retention has removed events from the log, and what it removed. Read inside a
/// reader's snapshot, so it always agrees with the events that reader sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Horizon {
    /// The highest offset moved to the archive; 0 if none.
    pub archived_through: u64,
    /// The highest offset deleted for good; 0 if none.
    pub deleted_through: u64,
    /// The last archive segment (by sequence number) whose events are all gone from here.
    pub settled_segment: u64,
    /// Events moved to the archive, in all.
    pub archived_events: u64,
    /// Events deleted for good, in all.
    pub deleted_events: u64,
    /// Event text (data and metadata) removed, in bytes.
    pub removed_bytes: u64,
    /// File space given back to the file system by incremental vacuum, in bytes.
    pub reclaimed_bytes: u64,
}

impl Horizon {
    /// Events below this offset may have been removed from the log (archived or deleted);
    /// every event at or above it is still here. 1 when nothing was ever removed.
    pub fn truncated_before(&self) -> u64 {
        self.archived_through.max(self.deleted_through) + 1
    }
}

/// Reads the horizon as `conn` sees it now. A log created before the table existed
/// cannot be open here: opening migrates it.
pub(super) fn read(conn: &Connection) -> rusqlite::Result<Horizon> {
    conn.prepare_cached(
        "SELECT archived_through, deleted_through, settled_segment, archived_events, \
         deleted_events, removed_bytes, reclaimed_bytes FROM horizon WHERE singleton = 1",
    )?
    .query_row([], |row| {
        Ok(Horizon {
            archived_through: get_u64(row, 0)?,
            deleted_through: get_u64(row, 1)?,
            settled_segment: get_u64(row, 2)?,
            archived_events: get_u64(row, 3)?,
            deleted_events: get_u64(row, 4)?,
            removed_bytes: get_u64(row, 5)?,
            reclaimed_bytes: get_u64(row, 6)?,
        })
    })
    .optional()
    .map(Option::unwrap_or_default)
}

/// Why a set of events is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// They are in archive segment `segment`, durably, already.
    Archived {
        /// The segment's sequence number.
        segment: u64,
        /// Whether this is the segment's last chunk: the segment is settled with it.
        last_chunk: bool,
    },
    /// They are dropped for good.
    Deleted,
}

/// A write connection of its own that removes events for retention, in transactions of
/// at most [`PRUNE_CHUNK_EVENTS`] events, and gives the space back.
///
/// SQLite lets one writer in at a time: while a removal commits, the log's writer waits
/// (up to its busy timeout), which is why every transaction here is small.
pub struct Pruner {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Pruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pruner")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Pruner {
    pub(super) fn open(path: &Path, options: &LogOptions) -> Result<Pruner, LogError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| sqlite_error(path, "opening the retention connection", e))?;
        configure_writer_like(&conn, path, options)?;
        Ok(Pruner {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn sqlite(&self, operation: &'static str) -> impl Fn(rusqlite::Error) -> LogError + '_ {
        move |source| sqlite_error(&self.path, operation, source)
    }

    /// The horizon now.
    pub fn horizon(&self) -> Result<Horizon, LogError> {
        read(&self.conn).map_err(self.sqlite("reading the retention horizon"))
    }

    /// The head version of `stream` (its newest event's), 0 if it never had an event.
    pub fn stream_version(&self, stream: &str) -> Result<u64, LogError> {
        self.conn
            .prepare_cached(STREAM_HEAD_SQL)
            .and_then(|mut stmt| stmt.query_row([stream], |row| get_u64(row, 0)).optional())
            .map(Option::unwrap_or_default)
            .map_err(self.sqlite("reading a stream's version"))
    }

    /// Bytes of event text (data and metadata) in the streams starting with `prefix`.
    /// Reads every such event (the indexed ones through the stream index, then the
    /// unindexed tail by offset): retention calls it once per pass and policy.
    pub fn prefix_bytes(&self, prefix: &str) -> Result<u64, LogError> {
        let upper = prefix_upper_bound(prefix);
        let sql = if upper.is_some() {
            PREFIX_RANGE_BYTES_SQL
        } else {
            PREFIX_FROM_BYTES_SQL
        };
        let result = match &upper {
            Some(upper) => self.conn.query_row(sql, [prefix, upper], |r| get_u64(r, 0)),
            None => self.conn.query_row(sql, [prefix], |r| get_u64(r, 0)),
        };
        result.map_err(self.sqlite("measuring a stream prefix"))
    }

    /// Removes the events at `offsets` (ascending), [`PRUNE_CHUNK_EVENTS`] per
    /// transaction, moving the horizon in each. Offsets no longer here are skipped (a
    /// retry after a crash removes only what is left). Returns the events removed.
    pub fn remove(&mut self, offsets: &[u64], removal: Removal) -> Result<u64, LogError> {
        let chunks: Vec<&[u64]> = offsets.chunks(PRUNE_CHUNK_EVENTS).collect();
        let mut removed = 0;
        if chunks.is_empty() {
            if let Removal::Archived {
                segment,
                last_chunk: true,
            } = removal
            {
                self.settle(segment)?;
            }
            return Ok(0);
        }
        let last = chunks.len() - 1;
        for (index, chunk) in chunks.into_iter().enumerate() {
            let removal = match removal {
                Removal::Archived {
                    segment,
                    last_chunk,
                } => Removal::Archived {
                    segment,
                    last_chunk: last_chunk && index == last,
                },
                Removal::Deleted => Removal::Deleted,
            };
            removed += self.remove_chunk(chunk, removal)?;
        }
        Ok(removed)
    }

    fn remove_chunk(&mut self, offsets: &[u64], removal: Removal) -> Result<u64, LogError> {
        let path = self.path.clone();
        let sqlite = move |operation| {
            let path = path.clone();
            move |source| sqlite_error(&path, operation, source)
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("starting a retention removal"))?;
        let mut removed = 0u64;
        let mut bytes = 0u64;
        let mut through = 0u64;
        {
            let mut size = tx
                .prepare_cached(
                    r#"SELECT length(data) + coalesce(length(metadata), 0), stream, stream_version
                       FROM events WHERE "offset" = ?1"#,
                )
                .map_err(sqlite("measuring an event"))?;
            let mut delete = tx
                .prepare_cached(r#"DELETE FROM events WHERE "offset" = ?1"#)
                .map_err(sqlite("removing an event"))?;
            // An event still in the unindexed tail has no entry: deleting none is right,
            // and the writer's next pass will not index an event that is gone.
            let mut unindex = tx
                .prepare_cached(
                    "DELETE FROM stream_index \
                     WHERE stream = (SELECT id FROM streams WHERE name = ?1) AND version = ?2",
                )
                .map_err(sqlite("removing an event's stream index entry"))?;
            for &offset in offsets {
                let Some((length, stream, version)) = size
                    .query_row([to_sql_int(offset)], |row| {
                        Ok((
                            get_u64(row, 0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()
                    .map_err(sqlite("measuring an event"))?
                else {
                    continue;
                };
                delete
                    .execute([to_sql_int(offset)])
                    .map_err(sqlite("removing an event"))?;
                unindex
                    .execute(rusqlite::params![stream, version])
                    .map_err(sqlite("removing an event's stream index entry"))?;
                removed += 1;
                bytes += length;
                through = through.max(offset);
            }
        }
        let (column, counter) = match removal {
            Removal::Archived { .. } => ("archived_through", "archived_events"),
            Removal::Deleted => ("deleted_through", "deleted_events"),
        };
        let settled = match removal {
            Removal::Archived {
                segment,
                last_chunk: true,
            } => to_sql_int(segment),
            _ => 0,
        };
        tx.execute(
            &format!(
                "UPDATE horizon SET {column} = max({column}, ?1), {counter} = {counter} + ?2, \
                 removed_bytes = removed_bytes + ?3, settled_segment = max(settled_segment, ?4) \
                 WHERE singleton = 1"
            ),
            [
                to_sql_int(through),
                to_sql_int(removed),
                to_sql_int(bytes),
                settled,
            ],
        )
        .map_err(sqlite("moving the retention horizon"))?;
        tx.commit()
            .map_err(sqlite("committing a retention removal"))?;
        Ok(removed)
    }

    /// Marks archive segment `segment` as settled: none of its events are here any more.
    pub fn settle(&mut self, segment: u64) -> Result<(), LogError> {
        self.conn
            .execute(
                "UPDATE horizon SET settled_segment = max(settled_segment, ?1) WHERE singleton = 1",
                [to_sql_int(segment)],
            )
            .map(drop)
            .map_err(self.sqlite("settling an archive segment"))
    }

    /// Whether the file gives freed pages back ([`incremental`](Pruner::vacuum_step)
    /// auto-vacuum).
    pub fn vacuum_enabled(&self) -> Result<bool, LogError> {
        self.conn
            .pragma_query_value(None, "auto_vacuum", |row| row.get::<_, i64>(0))
            .map(|mode| mode == 2)
            .map_err(self.sqlite("reading auto_vacuum"))
    }

    /// Switches the file to incremental auto-vacuum. SQLite needs a full `VACUUM` for
    /// that on a file that has tables: it rewrites the whole file, and appends wait for
    /// it. Retention does it once, the first time it runs on a log.
    pub fn enable_vacuum(&mut self) -> Result<(), LogError> {
        self.conn
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .map_err(self.sqlite("switching the log to incremental auto-vacuum"))
    }

    /// Gives up to [`VACUUM_STEP_PAGES`] free pages back, in one short write transaction;
    /// the bytes given back are added to the horizon's `reclaimed_bytes`. Returns them
    /// (0 when there is nothing left to give back).
    pub fn vacuum_step(&mut self) -> Result<u64, LogError> {
        let path = self.path.clone();
        let sqlite = move |operation| {
            let path = path.clone();
            move |source| sqlite_error(&path, operation, source)
        };
        let page_size: u64 = self
            .conn
            .pragma_query_value(None, "page_size", |row| get_u64(row, 0))
            .map_err(sqlite("reading the page size"))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("starting an incremental vacuum"))?;
        let free: u64 = tx
            .pragma_query_value(None, "freelist_count", |row| get_u64(row, 0))
            .map_err(sqlite("reading the free list"))?;
        if free == 0 {
            tx.finish()
                .map_err(sqlite("ending an incremental vacuum"))?;
            return Ok(0);
        }
        let before: u64 = tx
            .pragma_query_value(None, "page_count", |row| get_u64(row, 0))
            .map_err(sqlite("reading the page count"))?;
        // The pragma returns a row per page freed; stepping through them is what runs it.
        {
            let mut stmt = tx
                .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_STEP_PAGES})"))
                .map_err(sqlite("running an incremental vacuum"))?;
            let mut rows = stmt.raw_query();
            while rows
                .next()
                .map_err(sqlite("running an incremental vacuum"))?
                .is_some()
            {}
        }
        let after: u64 = tx
            .pragma_query_value(None, "page_count", |row| get_u64(row, 0))
            .map_err(sqlite("reading the page count"))?;
        let reclaimed = before.saturating_sub(after) * page_size;
        tx.execute(
            "UPDATE horizon SET reclaimed_bytes = reclaimed_bytes + ?1 WHERE singleton = 1",
            [to_sql_int(reclaimed)],
        )
        .map_err(sqlite("counting reclaimed space"))?;
        tx.commit()
            .map_err(sqlite("committing an incremental vacuum"))?;
        Ok(reclaimed)
    }

    /// Copies the WAL back into the file without waiting for readers, so the space
    /// vacuum gave back leaves the file (in WAL mode the file shrinks at checkpoints).
    pub fn checkpoint(&self) -> Result<(), LogError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.sqlite("checkpointing the WAL"))
    }
}
