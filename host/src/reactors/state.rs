//! The host-owned tables inside a reactor's state database, beside the checkpoint
//! tables every read model has.
//!
//! - `_refract_timers`: pending timers, one row per key, written by the `timers` import
//!   inside the batch's transaction, so they commit with the checkpoint.
//! - `_refract_reactor`: `emit_after`, the offset up to which this version's emits
//!   are suppressed (see [`super`] on versions and replays).
//!
//! The sandbox hides every `_refract_` table from the guest.

use rusqlite::{Connection, OptionalExtension, params};

/// `emit_after` of a version still replaying in a shadow: it emits nothing until it
/// takes over.
pub const SUPPRESS_ALL: u64 = i64::MAX as u64;

/// Creates the reactor's host tables. Runs inside the transaction of the reactor's
/// `init`, with the offset after which it emits.
pub(crate) fn create(conn: &Connection, emit_after: u64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE _refract_timers (
             key     TEXT PRIMARY KEY,
             due_at  INTEGER NOT NULL,
             payload TEXT NOT NULL,
             cause   INTEGER NOT NULL
         );
         CREATE INDEX _refract_timers_due ON _refract_timers (due_at);
         CREATE TABLE _refract_reactor (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    )?;
    set_emit_after(conn, emit_after)
}

/// Whether the reactor tables exist (a database from before they were created is a
/// read model, not a reactor's state).
pub(crate) fn exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) = 2 FROM sqlite_schema
          WHERE type = 'table' AND name IN ('_refract_timers', '_refract_reactor')",
        [],
        |row| row.get(0),
    )
}

/// The offset up to which emits are suppressed.
pub(crate) fn emit_after(conn: &Connection) -> rusqlite::Result<u64> {
    let value: Option<i64> = conn
        .query_row(
            "SELECT value FROM _refract_reactor WHERE key = 'emit_after'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

/// Sets the offset up to which emits are suppressed.
pub(crate) fn set_emit_after(conn: &Connection, offset: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO _refract_reactor (key, value) VALUES ('emit_after', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [i64::try_from(offset).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// How many timers are pending.
pub(crate) fn pending_timer_count(conn: &Connection) -> rusqlite::Result<usize> {
    let count: i64 =
        conn.query_row("SELECT count(*) FROM _refract_timers", [], |row| row.get(0))?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Removes the pending timer `key`; whether there was one.
pub(crate) fn cancel_timer(conn: &Connection, key: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM _refract_timers WHERE key = ?1")?
        .execute([key])?
        > 0)
}

/// Whether the timer `key` due at `due_at` is still pending; a timer event for one
/// that is not (cancelled or rescheduled after it fired) is not delivered.
pub(crate) fn timer_pending(conn: &Connection, key: &str, due_at: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM _refract_timers WHERE key = ?1 AND due_at = ?2")?
        .query_row(params![key, due_at], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Removes the timer `key` due at `due_at`: it has been delivered. Runs in the
/// transaction of the batch that delivers it.
pub(crate) fn timer_delivered(conn: &Connection, key: &str, due_at: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM _refract_timers WHERE key = ?1 AND due_at = ?2")?
        .execute(params![key, due_at])?;
    Ok(())
}

/// A pending timer that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The timer's key.
    pub key: String,
    /// When it is due, in microseconds since the epoch.
    pub due_at: i64,
    /// Its payload, JSON text.
    pub payload: String,
}

/// Up to `limit` timers due at or before `now` (microseconds), earliest first.
pub(crate) fn due_timers(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DueTimer>> {
    let mut statement = conn.prepare_cached(
        "SELECT key, due_at, payload FROM _refract_timers WHERE due_at <= ?1
          ORDER BY due_at, key LIMIT ?2",
    )?;
    let rows = statement.query_map(
        params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| {
            Ok(DueTimer {
                key: row.get(0)?,
                due_at: row.get(1)?,
                payload: row.get(2)?,
            })
        },
    )?;
    rows.collect()
}
