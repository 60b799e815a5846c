//! A measured prototype of issue 16's deferred stream index, in `refract bench --only
//! levers`, beside the shipped log and two references, all on the same events in one run.
//!
//! The shipped log (schema 4) keeps stream heads in `streams` but still has the UNIQUE
//! `(stream, stream_version)` index, which dirties one leaf page per distinct stream per
//! commit. The prototype writes the same events with plain SQL into the schema the
//! deferred index would have: no per-stream index on `events`; `(stream id, version) →
//! offset` in a `WITHOUT ROWID` table filled in chunks, sorted, whenever the unindexed
//! tail reaches `chunk` events. With `chunk` = 1 it indexes in every commit, which is the
//! old cost (the ablation); with [`PROTOTYPE_CHUNK`] it is the proposed design. Its exact
//! stream read is the indexed part plus a scan of the unindexed tail, measured with the
//! tail at its bound: that is what the chunk costs a reader.
//!
//! The references: the same rows into one stream through the shipped log (no scattered
//! index writes at all), and the plain native insert into a minimal table
//! `("offset" INTEGER PRIMARY KEY, stream, type, data)`, 1000 rows per transaction.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use rusqlite::{Connection, OptionalExtension, params};

use super::append::{self, APPEND_BATCH_EVENTS};
use crate::log::{Durability, LogOptions, NewEvent};
use crate::workload;

/// The prototype's chunk: the unindexed tail's bound, in events. At 1000 streams a chunk
/// gives each stream about 16 index entries per leaf write instead of about 1.6, and a
/// stream read scans at most this many tail rows.
pub const PROTOTYPE_CHUNK: u64 = 16_384;

/// Exact-stream reads timed per measurement (the median is reported).
const READS: usize = 21;

/// What one repetition measured, in events per second unless named otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamIndexLevers {
    /// The shipped log, every event into one stream.
    pub one_stream_eps: f64,
    /// The prototype with the stream index written in every commit (chunk 1).
    pub per_commit_eps: f64,
    /// The prototype with the deferred index ([`PROTOTYPE_CHUNK`]).
    pub deferred_eps: f64,
    /// The plain native insert into a minimal table.
    pub minimal_eps: f64,
    /// An exact-stream read from the prototype with its tail at the bound, in ms.
    pub tail_read_ms: f64,
    /// The same read with the whole stream indexed, in ms.
    pub indexed_read_ms: f64,
}

/// One repetition: every setting on the same `events` events of the seeded workload.
pub fn round(
    path: &Path,
    options: &LogOptions,
    seed: u64,
    events: usize,
) -> Result<StreamIndexLevers> {
    let batches = workload_batches(seed, events);
    let mut levers = StreamIndexLevers {
        one_stream_eps: append::batch_eps(path, options, seed, events, true)?,
        ..StreamIndexLevers::default()
    };
    append::remove_log(path)?;
    levers.per_commit_eps = prototype_eps(path, options, &batches, 1)?;
    append::remove_log(path)?;
    levers.deferred_eps = prototype_eps(path, options, &batches, PROTOTYPE_CHUNK)?;
    let stream = &batches[0][0].stream;
    let (tail_read_ms, tail_rows) = read_ms(path, stream, PROTOTYPE_CHUNK)?;
    let (indexed_read_ms, indexed_rows) = read_ms(path, stream, 0)?;
    ensure!(
        tail_rows == indexed_rows && tail_rows > 0,
        "the stream read with a full tail found {tail_rows} events, the indexed one {indexed_rows}"
    );
    levers.tail_read_ms = tail_read_ms;
    levers.indexed_read_ms = indexed_read_ms;
    append::remove_log(path)?;
    levers.minimal_eps = minimal_eps(path, options, &batches)?;
    append::remove_log(path)?;
    Ok(levers)
}

fn workload_batches(seed: u64, events: usize) -> Vec<Vec<NewEvent>> {
    let all: Vec<NewEvent> = workload::balances(seed, events).collect();
    all.chunks(APPEND_BATCH_EVENTS).map(<[_]>::to_vec).collect()
}

fn open(path: &Path, options: &LogOptions) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "wal_autocheckpoint", options.checkpoint_pages.max(1))?;
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_size_kib))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// The deferred design's tables (the shipped schema 4 without `events_stream_version`).
const PROTOTYPE_SCHEMA: &str = r#"
    CREATE TABLE events (
        "offset" INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL,
        stream_version INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,
        metadata TEXT, recorded_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX events_type_offset ON events (type, "offset");
    CREATE INDEX events_recorded_at ON events (recorded_at);
    CREATE TABLE streams (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE stream_index (
        stream INTEGER NOT NULL, version INTEGER NOT NULL, "offset" INTEGER NOT NULL,
        PRIMARY KEY (stream, version)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE stream_indexed (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1), through INTEGER NOT NULL
    ) STRICT;
    INSERT INTO stream_indexed VALUES (1, 0);
"#;

/// Indexes every event after `?1`, sorted by key so each leaf is written once.
const INDEX_TAIL_SQL: &str = r#"INSERT INTO stream_index (stream, version, "offset")
    SELECT s.id, e.stream_version, e."offset" FROM events e JOIN streams s ON s.name = e.stream
    WHERE e."offset" > ?1 ORDER BY 1, 2"#;

/// Appends the batches as the writer would in the deferred design, one transaction per
/// batch, indexing whenever the tail reaches `chunk`; returns events per second.
fn prototype_eps(
    path: &Path,
    options: &LogOptions,
    batches: &[Vec<NewEvent>],
    chunk: u64,
) -> Result<f64> {
    let conn = open(path, options)?;
    conn.execute_batch(PROTOTYPE_SCHEMA)?;
    let mut heads: HashMap<String, (i64, u64)> = HashMap::new();
    let mut head = 0u64;
    let mut through = 0u64;
    let started = Instant::now();
    for batch in batches {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let now = crate::log::timestamp_to_micros(jiff::Timestamp::now());
        let mut touched: HashMap<i64, u64> = HashMap::new();
        {
            let mut find =
                conn.prepare_cached("SELECT id, version FROM streams WHERE name = ?1")?;
            let mut add = conn.prepare_cached(
                "INSERT INTO streams (name, version) VALUES (?1, 0) RETURNING id",
            )?;
            let mut insert = conn.prepare_cached(
                r#"INSERT INTO events ("offset", id, stream, stream_version, type, data, metadata, recorded_at)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"#,
            )?;
            for event in batch {
                let entry = match heads.get_mut(&event.stream) {
                    Some(entry) => entry,
                    None => {
                        let found: Option<(i64, i64)> = find
                            .query_row([&event.stream], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()?;
                        let (id, version) = match found {
                            Some(found) => found,
                            None => (add.query_row([&event.stream], |r| r.get(0))?, 0),
                        };
                        heads
                            .entry(event.stream.clone())
                            .or_insert((id, u64::try_from(version)?))
                    }
                };
                entry.1 += 1;
                touched.insert(entry.0, entry.1);
                head += 1;
                let id = uuid::Uuid::now_v7().to_string();
                insert.execute(params![
                    i64::try_from(head)?,
                    id,
                    event.stream,
                    i64::try_from(entry.1)?,
                    event.event_type,
                    event.data,
                    event.metadata,
                    now,
                ])?;
            }
            let mut write = conn.prepare_cached("UPDATE streams SET version = ?2 WHERE id = ?1")?;
            for (id, version) in touched {
                write.execute(params![id, i64::try_from(version)?])?;
            }
        }
        if head - through >= chunk {
            conn.prepare_cached(INDEX_TAIL_SQL)?
                .execute([i64::try_from(through)?])?;
            through = head;
            conn.prepare_cached("UPDATE stream_indexed SET through = ?1")?
                .execute([i64::try_from(through)?])?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
    }
    let elapsed = started.elapsed();
    // What a stream read needs: the index up to `through`, the tail after it.
    if through < head {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.execute(INDEX_TAIL_SQL, [i64::try_from(through)?])?;
        conn.execute(
            "UPDATE stream_indexed SET through = ?1",
            [i64::try_from(head)?],
        )?;
        conn.execute_batch("COMMIT")?;
    }
    let indexed: i64 = conn.query_row("SELECT count(*) FROM stream_index", [], |r| r.get(0))?;
    ensure!(
        u64::try_from(indexed)? == head,
        "the prototype indexed {indexed} of {head} events"
    );
    Ok(head as f64 / elapsed.as_secs_f64())
}

/// Reads every event of `stream` as the deferred design would, taking the last
/// `tail` events of the log as not yet indexed; returns the median time in ms and the
/// events read.
fn read_ms(path: &Path, stream: &str, tail: u64) -> Result<(f64, usize)> {
    let conn = Connection::open(path)?;
    let head: i64 = conn.query_row(r#"SELECT max("offset") FROM events"#, [], |r| r.get(0))?;
    let through = head - i64::try_from(tail)?;
    let sql = r#"SELECT "offset", id, stream, stream_version, type, data, metadata, recorded_at
        FROM events WHERE "offset" IN (
            SELECT i."offset" FROM stream_index i JOIN streams s ON i.stream = s.id
            WHERE s.name = ?1 AND i."offset" <= ?2)
        UNION ALL
        SELECT "offset", id, stream, stream_version, type, data, metadata, recorded_at
        FROM events WHERE "offset" > ?2 AND stream = ?1
        ORDER BY 1"#;
    let mut times = Vec::with_capacity(READS);
    let mut count = 0;
    for _ in 0..READS {
        let started = Instant::now();
        let mut statement = conn.prepare_cached(sql)?;
        let mut rows = statement.query(params![stream, through])?;
        count = 0;
        while let Some(row) = rows.next()? {
            let data: &str = row.get_ref(5)?.as_str()?;
            std::hint::black_box(data);
            count += 1;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((super::median(&times), count))
}

/// Inserts the batches into a minimal table, one transaction per batch; events per
/// second.
fn minimal_eps(path: &Path, options: &LogOptions, batches: &[Vec<NewEvent>]) -> Result<f64> {
    let conn = open(path, options)?;
    conn.execute_batch(
        r#"CREATE TABLE events ("offset" INTEGER PRIMARY KEY, stream TEXT, type TEXT, data TEXT)"#,
    )?;
    let started = Instant::now();
    let mut offset = 0i64;
    for batch in batches {
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
