//! Issue 16's deferred stream index (log schema 5), measured in `refract bench --only
//! levers` on the shipped log, beside two references, all on the same events in one run.
//!
//! The shipped log writes `(stream id, version) -> offset` into `stream_index` in sorted
//! chunks once the unindexed tail reaches [`LogOptions::stream_index_chunk`]. With chunk
//! 1 it indexes after every group commit (in a transaction of its own, so one more
//! commit per group than the schema-4 log, whose UNIQUE index was written inside the
//! group's commit): the cost of a per-commit index. With [`DEFAULT_STREAM_INDEX_CHUNK`]
//! it is the shipped default. The exact-stream read is timed twice on the same events:
//! with the unindexed tail at its bound (chunk − 1 events, which a reader scans by
//! offset) and with the log fully indexed.
//!
//! The references: the same rows into one stream through the shipped log, and the plain
//! native insert into a minimal table `("offset" INTEGER PRIMARY KEY, stream, type,
//! data)`, 1000 rows per transaction.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use rusqlite::{Connection, params};

use super::append::{self, APPEND_BATCH_EVENTS};
use crate::log::{
    DEFAULT_STREAM_INDEX_CHUNK, Durability, EventLog, LogOptions, NewEvent, ReadQuery, StreamFilter,
};
use crate::workload;

/// Exact-stream reads timed per measurement (the median is reported).
const READS: usize = 21;

/// The seed of the events appended to make a full tail (any other than the run's).
const TAIL_SEED_OFFSET: u64 = 0x7A11;

/// What one repetition measured, in events per second unless named otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamIndexLevers {
    /// The shipped log, every event into one stream.
    pub one_stream_eps: f64,
    /// The shipped log indexing after every group (chunk 1).
    pub per_commit_eps: f64,
    /// The shipped log with the default chunk.
    pub deferred_eps: f64,
    /// The plain native insert into a minimal table.
    pub minimal_eps: f64,
    /// An exact-stream read with the unindexed tail at its bound, in ms.
    pub tail_read_ms: f64,
    /// The same read with the whole log indexed, in ms.
    pub indexed_read_ms: f64,
}

/// One repetition: every setting on the same `events` events of the seeded workload.
pub fn round(
    path: &Path,
    options: &LogOptions,
    seed: u64,
    events: usize,
) -> Result<StreamIndexLevers> {
    let with_chunk = |chunk| LogOptions {
        stream_index_chunk: chunk,
        ..options.clone()
    };
    let mut levers = StreamIndexLevers {
        one_stream_eps: append::batch_eps(path, options, seed, events, true)?,
        per_commit_eps: append::batch_eps(path, &with_chunk(1), seed, events, false)?,
        deferred_eps: append::batch_eps(
            path,
            &with_chunk(DEFAULT_STREAM_INDEX_CHUNK),
            seed,
            events,
            false,
        )?,
        ..StreamIndexLevers::default()
    };
    let stream = workload::balances(seed, 1)
        .next()
        .map(|event| event.stream)
        .unwrap_or_default();
    (levers.tail_read_ms, levers.indexed_read_ms) = read_times(path, options, seed, &stream)?;
    append::remove_log(path)?;
    levers.minimal_eps = minimal_eps(path, options, seed, events)?;
    append::remove_log(path)?;
    Ok(levers)
}

/// On the log `batch_eps` left at `path` (closed, so fully indexed): appends a tail of
/// chunk − 1 events that stays unindexed, times the read of `stream`, has the tail
/// indexed, and times the same read again. Returns both medians in ms.
fn read_times(path: &Path, options: &LogOptions, seed: u64, stream: &str) -> Result<(f64, f64)> {
    let tail_len = usize::try_from(DEFAULT_STREAM_INDEX_CHUNK - 1)?;
    let unindexed = LogOptions {
        stream_index_chunk: u64::MAX,
        stream_index_when_idle: false,
        ..options.clone()
    };
    let log = EventLog::open(path, unindexed)?;
    let tail: Vec<NewEvent> = workload::balances(seed ^ TAIL_SEED_OFFSET, tail_len).collect();
    for batch in tail.chunks(APPEND_BATCH_EVENTS) {
        log.append(batch.to_vec())?;
    }
    let (tail_ms, tail_rows) = read_ms(&log, stream)?;
    drop(log);
    // Chunk 1: the open indexes any tail before serving.
    let log = EventLog::open(
        path,
        LogOptions {
            stream_index_chunk: 1,
            ..options.clone()
        },
    )?;
    let (indexed_ms, indexed_rows) = read_ms(&log, stream)?;
    ensure!(
        tail_rows == indexed_rows && tail_rows > 0,
        "the stream read with a full tail found {tail_rows} events, the indexed one {indexed_rows}"
    );
    Ok((tail_ms, indexed_ms))
}

/// Reads every event of `stream` [`READS`] times; the median time in ms and the events
/// read.
fn read_ms(log: &EventLog, stream: &str) -> Result<(f64, usize)> {
    let query = ReadQuery {
        stream: StreamFilter::Exact(stream.to_owned()),
        ..ReadQuery::default()
    };
    let mut times = Vec::with_capacity(READS);
    let mut count = 0;
    for _ in 0..READS {
        let started = Instant::now();
        count = 0;
        for event in log.read(&query)? {
            std::hint::black_box(event?.data);
            count += 1;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((super::median(&times), count))
}

/// Inserts the workload's events into a minimal table, [`APPEND_BATCH_EVENTS`] per
/// transaction; events per second.
fn minimal_eps(path: &Path, options: &LogOptions, seed: u64, events: usize) -> Result<f64> {
    let all: Vec<NewEvent> = workload::balances(seed, events).collect();
    let conn = open_with_log_pragmas(path, options)?;
    conn.execute_batch(
        r#"CREATE TABLE events ("offset" INTEGER PRIMARY KEY, stream TEXT, type TEXT, data TEXT)"#,
    )?;
    let started = Instant::now();
    let mut offset = 0i64;
    for batch in all.chunks(APPEND_BATCH_EVENTS) {
        conn.prepare_cached("BEGIN")?.execute([])?;
        {
            let mut insert = conn.prepare_cached(
                r#"INSERT INTO events ("offset", stream, type, data) VALUES (?1, ?2, ?3, ?4)"#,
            )?;
            for event in batch {
                offset += 1;
                insert.execute(params![offset, event.stream, event.event_type, event.data])?;
            }
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
    }
    Ok(offset as f64 / started.elapsed().as_secs_f64())
}

/// A plain SQLite connection to a fresh file at `path`, with the log's durability,
/// checkpoint and cache settings: what the bench's bare-SQLite references write with.
pub(super) fn open_with_log_pragmas(path: &Path, options: &LogOptions) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "wal_autocheckpoint", options.checkpoint_pages.max(1))?;
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_size_kib))?;
    Ok(conn)
}
