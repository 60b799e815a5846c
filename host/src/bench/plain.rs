//! The plain native rebuild (`replay_vs_plain_native`): what a user gets by writing
//! "just a program" instead of a projector, the bar issue 16 sets for Refract's replay.
//!
//! Unlike [`super::native`], which reads through Refract's own [`LogReader`] and so
//! shares every cost of the log's read path, this baseline owns its log: a minimal table
//! `log ("offset" INTEGER PRIMARY KEY, stream, type, data)` holding the same events,
//! read with one sequential scan in offset order. It parses and upserts exactly as the
//! guest does (the same typed, borrowed serde structs and the same SQL, through
//! `prepare_cached`), commits one transaction per [`PLAIN_COMMIT_EVENTS`] events with
//! the checkpoint in it, and writes into a read model opened with the same settings, so
//! its result can be checked against the WASM read model by checksum.
//!
//! [`LogReader`]: crate::log::LogReader

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use rusqlite::{CachedStatement, Connection, OpenFlags, params};

use super::native::{self, CHECKPOINT_SQL, MOVE_SQL, Movement, OPEN_SQL, Opened};
use crate::runtime::{DbOptions, SandboxLimits};

/// Events per transaction of the plain rebuild, as the issue's reference program does.
pub const PLAIN_COMMIT_EVENTS: usize = 1000;

/// Copies the events of the Refract log at `log_path` (up to `head`) into a fresh
/// minimal log table at `plain_path`. Untimed: it is the plain program's own log.
pub fn write_plain_log(log_path: &Path, plain_path: &Path, head: u64) -> Result<()> {
    ensure!(
        !plain_path.exists(),
        "{} already exists",
        plain_path.display()
    );
    let conn = Connection::open(plain_path)
        .with_context(|| format!("cannot create {}", plain_path.display()))?;
    conn.execute_batch(
        r#"PRAGMA journal_mode = WAL;
           CREATE TABLE log ("offset" INTEGER PRIMARY KEY, stream TEXT NOT NULL,
                             type TEXT NOT NULL, data TEXT NOT NULL);"#,
    )?;
    let source = log_path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", log_path.display()))?;
    conn.execute("ATTACH DATABASE ?1 AS source", [source])?;
    conn.execute_batch("BEGIN")?;
    conn.execute(
        r#"INSERT INTO log ("offset", stream, type, data)
           SELECT "offset", stream, type, data FROM source.events
           WHERE "offset" <= ?1 ORDER BY "offset""#,
        [i64::try_from(head)?],
    )?;
    conn.execute_batch("COMMIT; DETACH DATABASE source; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// Rebuilds `balances` from the minimal log at `plain_path` into the fresh database
/// `db`, timed like the other replays (the scan, parse, upserts, commits and the final
/// sync; not creating the schema).
pub fn replay_plain(
    plain_path: &Path,
    db: &Path,
    limits: &SandboxLimits,
    head: u64,
) -> Result<Duration> {
    ensure!(!db.exists(), "{} already exists", db.display());
    let model = native::open_read_model(db, DbOptions::replay(), limits)
        .with_context(|| format!("cannot open {}", db.display()))?;
    native::create_schema(&model)?;
    let log = Connection::open_with_flags(
        plain_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", plain_path.display()))?;

    let started = Instant::now();
    let mut scan = log.prepare(r#"SELECT "offset", type, data FROM log ORDER BY "offset""#)?;
    let mut rows = scan.query([])?;
    model.execute_batch("BEGIN")?;
    let mut open = model.prepare_cached(OPEN_SQL)?;
    let mut movement = model.prepare_cached(MOVE_SQL)?;
    let mut checkpoint = model.prepare_cached(CHECKPOINT_SQL)?;
    let (mut in_transaction, mut last) = (0usize, 0i64);
    while let Some(row) = rows.next()? {
        let offset: i64 = row.get(0)?;
        let event_type = row.get_ref(1)?.as_str()?;
        let data = row.get_ref(2)?.as_str()?;
        handle(&mut open, &mut movement, event_type, data, offset)
            .with_context(|| format!("event {offset}"))?;
        last = offset;
        in_transaction += 1;
        if in_transaction == PLAIN_COMMIT_EVENTS {
            checkpoint.execute([offset])?;
            model.execute_batch("COMMIT; BEGIN")?;
            in_transaction = 0;
        }
    }
    if in_transaction > 0 {
        checkpoint.execute([last])?;
    }
    model.execute_batch("COMMIT")?;
    drop((open, movement, checkpoint));
    model.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA synchronous = NORMAL;",
    )?;
    let elapsed = started.elapsed();
    ensure!(
        u64::try_from(last)? == head,
        "the plain rebuild stopped at {last} instead of {head}"
    );
    Ok(elapsed)
}

/// The guest's `handle` for one event, as plain code writes it.
fn handle(
    open: &mut CachedStatement<'_>,
    movement: &mut CachedStatement<'_>,
    event_type: &str,
    data: &str,
    offset: i64,
) -> Result<()> {
    match event_type {
        "account.opened" => {
            let e: Opened<'_> = serde_json::from_str(data)?;
            open.execute(params![e.account.as_ref(), e.owner.as_ref(), offset])?;
        }
        "money.deposited" => {
            let e: Movement<'_> = serde_json::from_str(data)?;
            movement.execute(params![e.account.as_ref(), e.amount, offset])?;
        }
        "money.withdrawn" => {
            let e: Movement<'_> = serde_json::from_str(data)?;
            let delta = e
                .amount
                .checked_neg()
                .ok_or_else(|| anyhow!("withdrawal amount out of range"))?;
            movement.execute(params![e.account.as_ref(), delta, offset])?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::replay::{checksum, replay_native};
    use crate::engine::BatchLimits;
    use crate::log::{EventLog, LogOptions};

    #[test]
    fn the_plain_rebuild_builds_the_same_read_model_as_the_native_baseline() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let log = EventLog::open(&dir.path().join("events.db"), LogOptions::default())?;
        // More than one commit's worth, and a type `balances` does not subscribe to.
        let mut events: Vec<_> = crate::workload::balances(7, 2_345).collect();
        events.push(crate::log::NewEvent::new(
            "account-x",
            "account.audited",
            "{}",
        ));
        log.append(events)?;
        let head = log.head()?;
        let plain_log = dir.path().join("plain-log.db");
        write_plain_log(&dir.path().join("events.db"), &plain_log, head)?;
        let (plain_db, native_db) = (dir.path().join("plain.db"), dir.path().join("native.db"));
        replay_plain(&plain_log, &plain_db, &SandboxLimits::default(), head)?;
        replay_native(
            &log,
            &native_db,
            &SandboxLimits::default(),
            BatchLimits::default(),
            head,
        )?;
        let plain = checksum(&plain_db)?;
        assert_eq!(plain, checksum(&native_db)?);
        assert_eq!(plain.checkpoint, head);
        assert!(plain.rows > 0);
        Ok(())
    }
}
