//! The host-owned tables inside a reactor's state database, beside the checkpoint
//! tables every read model has.
//!
//! - `_refract_timers`: pending timers, one row per key, written by the `timers` import
//!   inside the batch's transaction, so they commit with the checkpoint. `fired` is the
//!   offset of the timer's event once the host has appended it.
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
             cause   INTEGER NOT NULL,
             fired   INTEGER
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

/// Removes the timers scheduled by events at or before `offset`: a first version's
/// timers from history, which must not act (see [`super`]). Runs in the batch's
/// transaction.
pub(crate) fn drop_timers_caused_through(conn: &Connection, offset: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM _refract_timers WHERE cause <= ?1")?
        .execute([i64::try_from(offset).unwrap_or(i64::MAX)])?;
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
    /// The offset of the event that scheduled it.
    pub cause: u64,
}

/// Up to `limit` timers due at or before `now` (microseconds) whose events are not
/// appended yet, earliest first.
pub(crate) fn due_timers(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DueTimer>> {
    let mut statement = conn.prepare_cached(
        "SELECT key, due_at, payload, cause FROM _refract_timers
          WHERE due_at <= ?1 AND fired IS NULL
          ORDER BY due_at, key LIMIT ?2",
    )?;
    let rows = statement.query_map(
        params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| {
            Ok(DueTimer {
                key: row.get(0)?,
                due_at: row.get(1)?,
                payload: row.get(2)?,
                cause: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
            })
        },
    )?;
    rows.collect()
}

/// Records the offsets the due timers' events were appended at (or found at), so they
/// are not appended again at every look, then removes the timers whose event the
/// reactor has passed without delivering it (a dead-lettered timer event): they would
/// otherwise stay pending for ever and count against `max_pending_timers`.
pub(crate) fn timers_fired(
    conn: &Connection,
    due: &[DueTimer],
    offsets: &[u64],
    checkpoint: u64,
) -> rusqlite::Result<()> {
    let transaction = conn.unchecked_transaction()?;
    {
        let mut mark = transaction.prepare_cached(
            "UPDATE _refract_timers SET fired = ?3 WHERE key = ?1 AND due_at = ?2",
        )?;
        for (timer, offset) in due.iter().zip(offsets) {
            mark.execute(params![
                timer.key,
                timer.due_at,
                i64::try_from(*offset).unwrap_or(i64::MAX)
            ])?;
        }
    }
    transaction
        .prepare_cached("DELETE FROM _refract_timers WHERE fired <= ?1")?
        .execute([i64::try_from(checkpoint).unwrap_or(i64::MAX)])?;
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(conn: &Connection, key: &str, due_at: i64, cause: u64) {
        conn.execute(
            "INSERT INTO _refract_timers (key, due_at, payload, cause) VALUES (?1, ?2, '{}', ?3)",
            params![key, due_at, i64::try_from(cause).unwrap()],
        )
        .unwrap();
    }

    #[test]
    fn fired_timers_are_not_due_again_and_passed_ones_are_dropped() {
        let conn = Connection::open_in_memory().unwrap();
        create(&conn, 0).unwrap();
        schedule(&conn, "a", 10, 1);
        schedule(&conn, "b", 20, 2);
        let due = due_timers(&conn, 100, 10).unwrap();
        assert_eq!(due.len(), 2);
        // "a"'s event landed at offset 5, which the reactor has passed without
        // delivering it (dead-lettered); "b"'s at 9, not read yet.
        timers_fired(&conn, &due, &[5, 9], 6).unwrap();
        assert!(due_timers(&conn, 100, 10).unwrap().is_empty(), "fired once");
        assert!(!timer_pending(&conn, "a", 10).unwrap(), "passed: dropped");
        assert!(
            timer_pending(&conn, "b", 20).unwrap(),
            "ahead: still pending"
        );
    }

    #[test]
    fn a_first_versions_history_timers_are_dropped() {
        let conn = Connection::open_in_memory().unwrap();
        create(&conn, 3).unwrap();
        schedule(&conn, "old", 10, 3);
        schedule(&conn, "new", 10, 4);
        drop_timers_caused_through(&conn, 3).unwrap();
        assert_eq!(pending_timer_count(&conn).unwrap(), 1);
        assert!(timer_pending(&conn, "new", 10).unwrap());
    }
}
