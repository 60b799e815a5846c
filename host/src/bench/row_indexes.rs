//! What each of the events table's per-row indexes costs a batched append, measured in
//! `refract bench --only levers` as an ablation: the same rows, in the same batches, into
//! the log's own `events` table with each index alone, with those of schema 6 and of
//! schema 5, and with none.
//!
//! Up to schema 5 the log's `events` table kept three indexes that every commit wrote:
//! `UNIQUE (id)` (36-byte text ids), `(type, offset)` and `(recorded_at)`; schema 6
//! dropped the last (time bounds are binary searches over offsets). This
//! module inserts straight through SQLite, with the log's pragmas, so the figures hold
//! nothing of the writer's own work (streams, versions, the deferred stream index,
//! validation): the difference between two of them is the index alone. The ids are the
//! log's own shape (UUID v7 text, increasing) and are made before the clock starts.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use rusqlite::params;

use super::append::{self, APPEND_BATCH_EVENTS};
use crate::log::{LogOptions, NewEvent};
use crate::workload;

/// The events table's columns, as in the log's schema, without any index but the rowid.
const EVENTS_TABLE: &str = r#"
    CREATE TABLE events (
        "offset"       INTEGER PRIMARY KEY,
        id             TEXT    NOT NULL,
        stream         TEXT    NOT NULL,
        stream_version INTEGER NOT NULL,
        type           TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT,
        recorded_at    INTEGER NOT NULL
    ) STRICT;
"#;

/// The three per-row indexes of the shipped `events` table.
const ID_INDEX: &str = "CREATE UNIQUE INDEX events_id ON events (id);";
const TYPE_INDEX: &str = r#"CREATE INDEX events_type_offset ON events (type, "offset");"#;
const TIME_INDEX: &str = "CREATE INDEX events_recorded_at ON events (recorded_at);";

/// The settings, in the order [`round`] rotates through them.
const SETTINGS: [&[&str]; 6] = [
    &[],
    &[ID_INDEX],
    &[TYPE_INDEX],
    &[TIME_INDEX],
    &[ID_INDEX, TYPE_INDEX],
    &[ID_INDEX, TYPE_INDEX, TIME_INDEX],
];

/// What one repetition measured, in events per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowIndexLevers {
    /// The events table with no index but its rowid.
    pub none_eps: f64,
    /// With `UNIQUE (id)` only.
    pub id_eps: f64,
    /// With `(type, offset)` only.
    pub type_eps: f64,
    /// With `(recorded_at)` only.
    pub time_eps: f64,
    /// With `UNIQUE (id)` and `(type, offset)`: the table of schema 6.
    pub schema_6_eps: f64,
    /// With all three: the table up to schema 5.
    pub schema_5_eps: f64,
}

/// One row as the writer would bind it.
struct Row {
    id: String,
    stream_version: i64,
    event: NewEvent,
}

/// One repetition: every setting on the same `events` events of the seeded workload, in
/// an order that rotates with `rep`.
pub fn round(
    path: &Path,
    options: &LogOptions,
    seed: u64,
    events: usize,
    rep: usize,
) -> Result<RowIndexLevers> {
    let rows = rows(seed, events);
    let mut levers = RowIndexLevers::default();
    for turn in 0..SETTINGS.len() {
        let setting = (rep + turn) % SETTINGS.len();
        append::remove_log(path)?;
        let eps = insert_eps(path, options, SETTINGS[setting], &rows)?;
        let slot = match setting {
            0 => &mut levers.none_eps,
            1 => &mut levers.id_eps,
            2 => &mut levers.type_eps,
            3 => &mut levers.time_eps,
            4 => &mut levers.schema_6_eps,
            _ => &mut levers.schema_5_eps,
        };
        *slot = eps;
    }
    append::remove_log(path)?;
    Ok(levers)
}

/// The workload's events with the versions and ids the log would give them.
fn rows(seed: u64, events: usize) -> Vec<Row> {
    let mut versions = std::collections::HashMap::<String, i64>::new();
    workload::balances(seed, events)
        .map(|event| {
            let version = versions.entry(event.stream.clone()).or_default();
            *version += 1;
            Row {
                id: uuid::Uuid::now_v7().to_string(),
                stream_version: *version,
                event,
            }
        })
        .collect()
}

/// Inserts `rows` into a fresh events table with `indexes`, [`APPEND_BATCH_EVENTS`] per
/// transaction, with the log's pragmas; events per second.
fn insert_eps(path: &Path, options: &LogOptions, indexes: &[&str], rows: &[Row]) -> Result<f64> {
    let conn = super::stream_index::open_with_log_pragmas(path, options)?;
    conn.execute_batch(EVENTS_TABLE)?;
    for index in indexes {
        conn.execute_batch(index)?;
    }
    let started = Instant::now();
    let mut offset = 0i64;
    for batch in rows.chunks(APPEND_BATCH_EVENTS) {
        let recorded_at = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros(),
        )?;
        conn.prepare_cached("BEGIN")?.execute([])?;
        {
            let mut insert = conn.prepare_cached(
                r#"INSERT INTO events ("offset", id, stream, stream_version, type, data, metadata, recorded_at)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"#,
            )?;
            for row in batch {
                offset += 1;
                insert.execute(params![
                    offset,
                    row.id,
                    row.event.stream,
                    row.stream_version,
                    row.event.event_type,
                    row.event.data,
                    row.event.metadata,
                    recorded_at,
                ])?;
            }
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
    }
    Ok(offset as f64 / started.elapsed().as_secs_f64())
}
