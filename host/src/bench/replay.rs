//! Replay throughput: the WASM `balances` through the engine's own replay loop, the
//! native baseline, the read-model checksum that proves both computed the same thing,
//! and the two floors (log scan only, upsert only).

use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params};
use sha2::{Digest, Sha256};

use super::native::{self, CHECKPOINT_SQL, MOVE_SQL, Movement, NativeBalances, OPEN_SQL, Opened};
use crate::engine::{BatchLimits, Projection, Step};
use crate::log::EventLog;
use crate::runtime::{DbOptions, LoadedProjector, SandboxLimits};

/// A read model's content, as rows and a digest of `SELECT * FROM balances ORDER BY
/// account`, plus its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// Rows in `balances`.
    pub rows: u64,
    /// Hex sha256 over every value of every row, typed.
    pub sha256: String,
    /// The checkpoint in `_refract_checkpoint`.
    pub checkpoint: u64,
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows, checkpoint {}, sha256 {}",
            self.rows, self.checkpoint, self.sha256
        )
    }
}

/// Computes the [`Checksum`] of the read model at `path`.
pub fn checksum(path: &Path) -> Result<Checksum> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    let mut stmt = conn.prepare("SELECT * FROM balances ORDER BY account")?;
    let columns = stmt.column_count();
    let mut query = stmt.query([])?;
    while let Some(row) = query.next()? {
        rows += 1;
        for index in 0..columns {
            // A type tag and a length prefix, so that no two different rows hash alike.
            match row.get_ref(index)? {
                ValueRef::Null => hasher.update([0]),
                ValueRef::Integer(i) => {
                    hasher.update([1]);
                    hasher.update(i.to_le_bytes());
                }
                ValueRef::Real(r) => {
                    hasher.update([2]);
                    hasher.update(r.to_le_bytes());
                }
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                    hasher.update([3]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
            }
        }
    }
    let checkpoint: i64 = conn.query_row(
        "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
        [],
        |row| row.get(0),
    )?;
    Ok(Checksum {
        rows,
        sha256: hex::encode(hasher.finalize()),
        checkpoint: u64::try_from(checkpoint)?,
    })
}

/// Fails loudly unless the two read models hold the same rows and checkpoint.
pub fn verify_identical(wasm_db: &Path, native_db: &Path) -> Result<Checksum> {
    let wasm = checksum(wasm_db)?;
    let native = checksum(native_db)?;
    if wasm != native {
        bail!(
            "the WASM and native read models differ, so no figure can be trusted:\n  \
             WASM   ({}): {wasm}\n  native ({}): {native}",
            wasm_db.display(),
            native_db.display()
        );
    }
    Ok(wasm)
}

/// Replays the log up to `head` through the WASM projector with the engine's
/// [`Projection`], as `refract project` does, into the fresh database `db`. Times
/// the steps and the final sync (not opening, which [`super::cold_start`] measures).
pub fn replay_wasm(
    loaded: &LoadedProjector,
    log: &EventLog,
    db: &Path,
    batch: BatchLimits,
    head: u64,
) -> Result<Duration> {
    replay_wasm_with(loaded, log, db, batch, head, true)
}

/// [`replay_wasm`], with the engine's read-ahead on or off (off: each batch is read
/// only once the previous one is committed, as before issue 16).
pub fn replay_wasm_with(
    loaded: &LoadedProjector,
    log: &EventLog,
    db: &Path,
    batch: BatchLimits,
    head: u64,
    read_ahead: bool,
) -> Result<Duration> {
    let mut projection = Projection::open(
        loaded.clone(),
        db,
        DbOptions::replay(),
        log.reader()?,
        batch,
    )?;
    projection.set_read_ahead(read_ahead);
    let started = Instant::now();
    while projection.step(Some(head))? != Step::CaughtUp {}
    projection.sync()?;
    let elapsed = started.elapsed();
    ensure!(
        projection.checkpoint() == head,
        "the WASM replay stopped at {} instead of {head}",
        projection.checkpoint()
    );
    Ok(elapsed)
}

/// Replays the log up to `head` through [`NativeBalances`] into the fresh database
/// `db`, timed like [`replay_wasm`].
pub fn replay_native(
    log: &EventLog,
    db: &Path,
    limits: &SandboxLimits,
    batch: BatchLimits,
    head: u64,
) -> Result<Duration> {
    let mut balances = NativeBalances::create(
        db,
        DbOptions::replay(),
        limits,
        log.reader()?,
        batch.max_events,
    )?;
    let started = Instant::now();
    while balances.step(head)?.is_some() {}
    balances.sync()?;
    let elapsed = started.elapsed();
    ensure!(
        balances.checkpoint() == head,
        "the native replay stopped at {} instead of {head}",
        balances.checkpoint()
    );
    Ok(elapsed)
}

/// The log-scan floor: nanoseconds per event to read the log up to `head` with the
/// projector's query and batch size, visiting every field and doing nothing else.
pub fn scan_floor_ns(log: &EventLog, batch_events: usize, head: u64) -> Result<f64> {
    let mut reader = log.reader()?;
    let mut query = native::subscribed_query();
    query.to_offset = Some(head);
    let (mut after, mut visited) = (0u64, 0usize);
    let started = Instant::now();
    while after < head {
        let scan = reader.read_batch(&query, after, batch_events, |event| {
            black_box(&event);
            ControlFlow::Continue(())
        })?;
        visited += scan.visited;
        if scan.scanned_through <= after {
            break;
        }
        after = scan.scanned_through.min(head);
    }
    let elapsed = started.elapsed();
    ensure!(visited > 0, "the log-scan floor read no events");
    Ok(per_event_ns(elapsed, visited))
}

/// One upsert, decoded ahead of time.
enum Write {
    Open { owner: String },
    Move { delta: i64 },
}

/// The upsert floor: nanoseconds per event to run `balances`' upserts and the
/// checkpoint, committed per batch, into a fresh read model with the replay settings,
/// from parameters decoded before the clock starts (no log, no JSON).
pub fn upsert_floor_ns(
    log: &EventLog,
    db: &Path,
    limits: &SandboxLimits,
    batch_events: usize,
    head: u64,
) -> Result<f64> {
    let mut writes: Vec<(String, Write, i64)> = Vec::new();
    let mut reader = log.reader()?;
    let mut query = native::subscribed_query();
    query.to_offset = Some(head);
    let mut after = 0;
    while after < head {
        let mut failure = None;
        let scan = reader.read_batch(&query, after, 10_000, |event| {
            match decode(event.event_type, event.data) {
                Ok(Some((account, write))) => {
                    writes.push((account, write, i64::try_from(event.offset).unwrap_or(0)));
                }
                Ok(None) => {}
                Err(err) => failure = Some(err),
            }
            ControlFlow::Continue(())
        })?;
        if let Some(err) = failure {
            return Err(err);
        }
        if scan.scanned_through <= after {
            break;
        }
        after = scan.scanned_through.min(head);
    }
    ensure!(!writes.is_empty(), "the upsert floor has no events");

    let conn = native::open_read_model(db, DbOptions::replay(), limits)?;
    native::create_schema(&conn)?;
    let started = Instant::now();
    for chunk in writes.chunks(batch_events.max(1)) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut open = conn.prepare_cached(OPEN_SQL)?;
        let mut movement = conn.prepare_cached(MOVE_SQL)?;
        for (account, write, offset) in chunk {
            match write {
                Write::Open { owner } => open.execute(params![account, owner, offset])?,
                Write::Move { delta } => movement.execute(params![account, delta, offset])?,
            };
        }
        let through = chunk.last().map_or(0, |(_, _, offset)| *offset);
        conn.prepare_cached(CHECKPOINT_SQL)?.execute([through])?;
        conn.execute_batch("COMMIT")?;
    }
    let elapsed = started.elapsed();
    Ok(per_event_ns(elapsed, writes.len()))
}

/// Decodes one event into the upsert `balances` would run.
fn decode(event_type: &str, data: &str) -> Result<Option<(String, Write)>> {
    Ok(match event_type {
        "account.opened" => {
            let e: Opened<'_> = serde_json::from_str(data)?;
            Some((
                e.account.into_owned(),
                Write::Open {
                    owner: e.owner.into_owned(),
                },
            ))
        }
        "money.deposited" => {
            let e: Movement<'_> = serde_json::from_str(data)?;
            Some((e.account.into_owned(), Write::Move { delta: e.amount }))
        }
        "money.withdrawn" => {
            let e: Movement<'_> = serde_json::from_str(data)?;
            let delta = e.amount.checked_neg().unwrap_or(i64::MIN);
            Some((e.account.into_owned(), Write::Move { delta }))
        }
        _ => None,
    })
}

fn per_event_ns(elapsed: Duration, events: usize) -> f64 {
    elapsed.as_nanos() as f64 / events.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogOptions, NewEvent};

    type Row = (String, Option<String>, i64, i64, i64);

    fn rows(db: &Path) -> Result<Vec<Row>> {
        let conn = Connection::open(db)?;
        let mut stmt = conn.prepare(
            "SELECT account, owner, balance, tx_count, last_offset FROM balances ORDER BY account",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A log of `balances` events, including a type the projector ignores.
    fn log(dir: &Path) -> Result<EventLog> {
        let log = EventLog::open(&dir.join("events.db"), LogOptions::default())?;
        let event = |account: &str, kind: &str, data: String| {
            NewEvent::new(format!("account-{account}"), kind, data)
        };
        log.append(vec![
            event(
                "a",
                "account.opened",
                r#"{"account":"a","owner":"Zoë \"Z\""}"#.into(),
            ),
            event(
                "a",
                "money.deposited",
                r#"{"account":"a","amount":1000}"#.into(),
            ),
            event(
                "b",
                "money.deposited",
                r#"{"account":"b","amount":5}"#.into(),
            ),
            event("a", "account.audited", "{}".into()),
            event(
                "a",
                "money.withdrawn",
                r#"{"account":"a","amount":250}"#.into(),
            ),
        ])?;
        Ok(log)
    }

    #[test]
    fn the_native_baseline_computes_balances() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let log = log(dir.path())?;
        let db = dir.path().join("native.db");
        let batch = BatchLimits {
            max_events: 2,
            ..BatchLimits::default()
        };
        replay_native(&log, &db, &SandboxLimits::default(), batch, 5)?;
        assert_eq!(
            rows(&db)?,
            [
                ("a".into(), Some("Zoë \"Z\"".into()), 750, 2, 5),
                ("b".into(), None, 5, 1, 3),
            ]
        );
        assert_eq!(checksum(&db)?.checkpoint, 5);
        Ok(())
    }

    #[test]
    fn different_read_models_are_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let log = log(dir.path())?;
        let (one, two) = (dir.path().join("one.db"), dir.path().join("two.db"));
        for db in [&one, &two] {
            replay_native(
                &log,
                db,
                &SandboxLimits::default(),
                BatchLimits::default(),
                5,
            )?;
        }
        assert_eq!(verify_identical(&one, &two)?.rows, 2);
        Connection::open(&two)?.execute("UPDATE balances SET balance = balance + 1", [])?;
        let err = verify_identical(&one, &two).expect_err("the models differ");
        assert!(err.to_string().contains("differ"), "{err}");
        Ok(())
    }
}
