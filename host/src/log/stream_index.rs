//! The deferred stream index (schema 5): which offsets hold the versions of a stream.
//!
//! Up to schema 4 a UNIQUE `(stream, stream_version)` index on `events` answered that,
//! and every commit wrote one of its leaf pages per distinct stream: at 1000 streams a
//! 1000-event commit dirtied about 630 scattered pages, each fsynced with the WAL
//! (measured in BENCHMARKS.md, issue 16). Now `stream_index` maps `(streams.id, version)`
//! to the offset, `WITHOUT ROWID`, and the writer fills it in sorted chunks: whenever the
//! unindexed tail reaches [`LogOptions::stream_index_chunk`] events, one
//! `INSERT … SELECT … ORDER BY stream, version` writes each leaf page once for many
//! entries. The one-row `stream_indexed` table holds the watermark, `indexed_through`,
//! moved in the same transaction as the entries it accounts for.
//!
//! Readers (in any process: the watermark is in the file) find a stream's events in the
//! index up to the watermark and by a scan of the offsets above it, read in the same
//! snapshot (see `query.rs`). That scan is what the deferred index costs a reader, and it
//! is bounded: after every group commit the writer indexes the tail once it reaches the
//! chunk, so a reader scans fewer than `stream_index_chunk` events plus one group.
//! When the writer has been idle for [`STREAM_INDEX_IDLE_AFTER`], and when it shuts down,
//! it indexes whatever is left; a log opened with a tail longer than the chunk (a writer
//! killed between chunks, a log written with a larger chunk) is indexed before the
//! writer serves anything (if the file can be written then; reads are exact either
//! way). Large tails are indexed in transactions of at most
//! [`STREAM_INDEX_PIECE_EVENTS`] events.
//!
//! Retention deletes a removed event's index entry in the same transaction (see
//! `horizon.rs`); an event removed while still in the tail simply never gets one.
//!
//! [`STREAM_INDEX_IDLE_AFTER`]: super::STREAM_INDEX_IDLE_AFTER

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::append::OpenTransaction;
use super::query::{get_u64, to_sql_int};
use super::schema::sqlite_error;
use super::{LogError, LogOptions, STREAM_INDEX_PIECE_EVENTS};

/// The watermark: every event at or below this offset is in `stream_index`.
pub(super) const INDEXED_THROUGH_SQL: &str =
    "SELECT indexed_through FROM stream_indexed WHERE singleton = 1";

/// Indexes the events with offsets in `(?1, ?2]`, sorted by key so that each leaf page
/// is written once per pass. Driven by the offset range (a rowid range), each event's
/// stream id looked up by name.
const INDEX_RANGE_SQL: &str = r#"INSERT INTO stream_index (stream, version, "offset")
    SELECT s.id, e.stream_version, e."offset"
    FROM events AS e NOT INDEXED CROSS JOIN streams AS s ON s.name = e.stream
    WHERE e."offset" > ?1 AND e."offset" <= ?2
    ORDER BY 1, 2"#;

const SET_INDEXED_THROUGH_SQL: &str =
    "UPDATE stream_indexed SET indexed_through = ?1 WHERE singleton = 1";

/// The watermark as `conn` sees it now (0 for an empty log).
pub(super) fn indexed_through(conn: &Connection) -> rusqlite::Result<u64> {
    Ok(conn
        .prepare_cached(INDEXED_THROUGH_SQL)?
        .query_row([], |row| get_u64(row, 0))
        .optional()?
        .unwrap_or(0))
}

/// The writer's side of the stream index: when to index, and the indexing itself.
#[derive(Debug)]
pub(super) struct StreamIndexer {
    /// [`LogOptions::stream_index_chunk`], at least 1.
    chunk: u64,
    /// [`LogOptions::stream_index_when_idle`].
    when_idle: bool,
    /// The watermark as this writer last saw it. Only ever behind the file's (another
    /// process may have indexed since), never ahead: it only grows.
    indexed_through: u64,
    /// The head as this writer last saw it.
    head: u64,
    /// After a failed pass: the head at which the next one may run, one chunk further
    /// on, so that a pass that keeps failing (a full disk) costs what passes cost when
    /// they succeed, instead of one failed pass after every group commit. 0 when the
    /// last pass succeeded.
    retry_at: u64,
}

impl StreamIndexer {
    /// Reads where the index stands in the file and, if the tail is longer than the
    /// chunk, indexes it before the writer serves anything.
    pub(super) fn open(
        conn: &Connection,
        path: &Path,
        options: &LogOptions,
    ) -> Result<StreamIndexer, LogError> {
        let sqlite = |source| sqlite_error(path, "reading the stream index's watermark", source);
        let mut indexer = StreamIndexer {
            chunk: options.stream_index_chunk.max(1),
            when_idle: options.stream_index_when_idle,
            indexed_through: indexed_through(conn).map_err(sqlite)?,
            head: super::read::head(conn).map_err(sqlite)?,
            retry_at: 0,
        };
        // Best effort: a log that cannot be written now (a full disk) still opens, and
        // its reads stay exact; they scan the longer tail until a pass succeeds.
        if indexer.due()
            && let Err(error) = indexer.index_tail(conn)
        {
            indexer.failed();
            tracing::warn!(
                path = %path.display(),
                %error,
                "could not index the stream index's tail at open; retrying after one more chunk of appends"
            );
        }
        Ok(indexer)
    }

    /// Events committed but not yet indexed, as far as this writer knows.
    fn tail(&self) -> u64 {
        self.head.saturating_sub(self.indexed_through)
    }

    /// Notes a commit of this writer that left the head at `head`.
    pub(super) fn committed(&mut self, head: u64) {
        self.head = self.head.max(head);
    }

    /// Whether the tail has reached the chunk (and, after a failed pass, the head has
    /// moved one more chunk).
    pub(super) fn due(&self) -> bool {
        self.tail() >= self.chunk && self.head >= self.retry_at
    }

    /// Whether an idle writer has a tail to index. Not after a failed pass until the
    /// head has moved one more chunk: an idle writer would otherwise retry (and warn)
    /// every [`STREAM_INDEX_IDLE_AFTER`](super::STREAM_INDEX_IDLE_AFTER).
    pub(super) fn idle_work(&self) -> bool {
        self.when_idle && self.tail() > 0 && self.head >= self.retry_at
    }

    /// Notes a failed pass: the next one waits for one more chunk of commits.
    pub(super) fn failed(&mut self) {
        self.retry_at = self.head.saturating_add(self.chunk);
    }

    /// Indexes every unindexed event in the file (whoever appended it), in transactions
    /// of at most [`STREAM_INDEX_PIECE_EVENTS`] events, each moving the watermark.
    ///
    /// The watermark and the head are read inside each transaction, so another process
    /// indexing or appending meanwhile is accounted for.
    pub(super) fn index_tail(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let control = |sql: &str| conn.prepare_cached(sql)?.execute([]).map(drop);
        loop {
            control("BEGIN IMMEDIATE")?;
            let mut open = OpenTransaction {
                conn,
                finished: false,
            };
            let through = indexed_through(conn)?;
            let head = super::read::head(conn)?;
            self.head = self.head.max(head);
            if head <= through {
                control("ROLLBACK")?;
                open.finished = true;
                self.indexed_through = through;
                return Ok(());
            }
            let upto = head.min(through.saturating_add(STREAM_INDEX_PIECE_EVENTS));
            conn.prepare_cached(INDEX_RANGE_SQL)?
                .execute([to_sql_int(through), to_sql_int(upto)])?;
            conn.prepare_cached(SET_INDEXED_THROUGH_SQL)?
                .execute([to_sql_int(upto)])?;
            control("COMMIT")?;
            open.finished = true;
            self.indexed_through = upto;
            self.retry_at = 0;
            if upto == head {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StreamIndexer;

    #[test]
    fn a_failed_pass_waits_for_one_more_chunk_of_commits_then_tries_again() {
        let mut indexer = StreamIndexer {
            chunk: 10,
            when_idle: true,
            indexed_through: 0,
            head: 10,
            retry_at: 0,
        };
        assert!(indexer.due() && indexer.idle_work());

        indexer.failed();
        assert!(!indexer.due(), "retried at once after a failure");
        assert!(
            !indexer.idle_work(),
            "an idle writer would retry every idle spell"
        );
        indexer.committed(19);
        assert!(!indexer.due() && !indexer.idle_work());
        indexer.committed(20);
        assert!(indexer.due() && indexer.idle_work());
    }
}
