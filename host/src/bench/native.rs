//! The `balances` projector written natively in Rust: the physical limit the WASM
//! replay is measured against.
//!
//! It mirrors `example-plugins/balances` and the engine's replay loop
//! (`engine::projection`) step for step, so that the only difference left is the
//! sandbox:
//! - the same SQL: the guest's schema, its two upserts, and the host's `_refract_`
//!   checkpoint tables and checkpoint `UPDATE`;
//! - the same parsing: typed, borrowed serde structs (`Cow<str>` with `#[serde(borrow)]`);
//! - the same SQLite settings as the sandboxed read model (see [`open_read_model`]);
//! - the same reading: [`LogReader::read_batch`] with the query the engine builds from
//!   the projector's subscriptions, the same batch size;
//! - the same commits: one `BEGIN IMMEDIATE ... COMMIT` per batch, holding the batch's
//!   writes and the checkpoint.
//!
//! What it leaves out is exactly what the sandbox costs: copying each batch into the
//! packed `event-batch`, the call into the guest, the guest's write buffer and the
//! `execute-batch` host call, and the authorizer and progress handler (the
//! `runtime::sql` confinement).

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use rusqlite::{CachedStatement, Connection, params};
use serde::Deserialize;

use crate::log::{EventRef, LogReader, ReadQuery};
use crate::runtime::{DbOptions, ReadModelConnection, SandboxLimits};

/// The event types `balances` subscribes to, as its `info()` declares them.
pub const SUBSCRIBED_TYPES: [&str; 3] = ["account.opened", "money.deposited", "money.withdrawn"];

/// The guest's schema, verbatim.
const SCHEMA: &str = "
    CREATE TABLE balances (
        account     TEXT PRIMARY KEY,
        owner       TEXT,
        balance     INTEGER NOT NULL,
        tx_count    INTEGER NOT NULL,
        last_offset INTEGER NOT NULL
    );
";

/// The host's tables, as `engine::checkpoint::create` makes them.
const HOST_TABLES: &str = "
    CREATE TABLE _refract_checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        log_offset INTEGER NOT NULL
    );
    INSERT INTO _refract_checkpoint (id, log_offset) VALUES (1, 0);
    CREATE TABLE _refract_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO _refract_meta (key, value) VALUES
        ('projector', 'balances'), ('version', 'native'), ('sha256', 'native');
";

/// The engine's checkpoint write, as `engine::checkpoint::write` runs it.
pub const CHECKPOINT_SQL: &str = "UPDATE _refract_checkpoint SET log_offset = ?1 WHERE id = 1";

/// The guest's `OPEN`, verbatim.
pub const OPEN_SQL: &str = "INSERT INTO balances (account, owner, balance, tx_count, last_offset)
     VALUES (?1, ?2, 0, 0, ?3)
     ON CONFLICT (account) DO UPDATE SET
         owner = excluded.owner,
         last_offset = excluded.last_offset";

/// The guest's `MOVE`, verbatim.
pub const MOVE_SQL: &str = "INSERT INTO balances (account, owner, balance, tx_count, last_offset)
     VALUES (?1, NULL, ?2, 1, ?3)
     ON CONFLICT (account) DO UPDATE SET
         balance = balance + excluded.balance,
         tx_count = tx_count + 1,
         last_offset = excluded.last_offset";

/// `account.opened`: `{account, owner}`.
#[derive(Deserialize)]
pub(super) struct Opened<'a> {
    #[serde(borrow)]
    pub(super) account: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) owner: Cow<'a, str>,
}

/// `money.deposited` and `money.withdrawn`: `{account, amount}`, amount in cents.
#[derive(Deserialize)]
pub(super) struct Movement<'a> {
    #[serde(borrow)]
    pub(super) account: Cow<'a, str>,
    pub(super) amount: i64,
}

/// Opens (creating) a read-model database through the runtime's own opener
/// ([`crate::runtime::open_read_model`]), so the baseline gets every setting the
/// sandbox gives a projector's database by construction. The authorizer and the
/// progress handler are left out: they are the sandbox's cost.
pub fn open_read_model(
    path: &Path,
    options: DbOptions,
    limits: &SandboxLimits,
) -> rusqlite::Result<ReadModelConnection> {
    crate::runtime::open_read_model(path, options, limits)
}

/// Creates the guest's schema and the host's tables in one transaction, as the
/// engine's first `init` does.
pub fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let created = conn
        .execute_batch(SCHEMA)
        .and_then(|()| conn.execute_batch(HOST_TABLES));
    match created {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

/// The query the engine reads with for a projector subscribed to
/// [`SUBSCRIBED_TYPES`] (see `Projection::open`).
pub fn subscribed_query() -> ReadQuery {
    ReadQuery {
        types: SUBSCRIBED_TYPES.iter().map(|&t| t.to_owned()).collect(),
        ..ReadQuery::default()
    }
}

/// The native `balances`, bound to its read model and a log reader.
pub struct NativeBalances {
    conn: ReadModelConnection,
    reader: LogReader,
    query: ReadQuery,
    batch_events: usize,
    checkpoint: u64,
}

impl NativeBalances {
    /// Creates a fresh read model at `path` (which must not exist) with `options`, as a
    /// replay into a new database does.
    pub fn create(
        path: &Path,
        options: DbOptions,
        limits: &SandboxLimits,
        reader: LogReader,
        batch_events: usize,
    ) -> Result<Self> {
        if path.exists() {
            bail!("{} already exists", path.display());
        }
        let conn = open_read_model(path, options, limits)
            .with_context(|| format!("cannot open {}", path.display()))?;
        create_schema(&conn).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            conn,
            reader,
            query: subscribed_query(),
            batch_events: batch_events.max(1),
            checkpoint: 0,
        })
    }

    /// The last log offset reflected in the read model.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Applies the next batch after the checkpoint, reading no further than `until`,
    /// as `Projection::step` does. Returns how many events it applied, or `None` once
    /// caught up.
    pub fn step(&mut self, until: u64) -> Result<Option<usize>> {
        if self.checkpoint >= until {
            return Ok(None);
        }
        self.query.to_offset = Some(until);
        let conn = &self.conn;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let outcome = (|| -> Result<Option<usize>> {
            let mut open = conn.prepare_cached(OPEN_SQL)?;
            let mut movement = conn.prepare_cached(MOVE_SQL)?;
            let mut failure = None;
            let scan = self.reader.read_batch(
                &self.query,
                self.checkpoint,
                self.batch_events,
                |event| match handle(&mut open, &mut movement, &event) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(err) => {
                        failure = Some(err.context(format!("event {}", event.offset)));
                        ControlFlow::Break(())
                    }
                },
            )?;
            if let Some(err) = failure {
                return Err(err);
            }
            let through = scan.scanned_through.min(until);
            if through <= self.checkpoint {
                return Ok(None);
            }
            conn.prepare_cached(CHECKPOINT_SQL)?
                .execute([i64::try_from(through)?])?;
            self.checkpoint = through;
            Ok(Some(scan.visited))
        })();
        match outcome {
            Ok(Some(events)) => {
                conn.execute_batch("COMMIT")?;
                Ok(Some(events))
            }
            other => {
                conn.execute_batch("ROLLBACK")?;
                other
            }
        }
    }

    /// Makes the read model durable, as `Projection::sync` does after a replay.
    pub fn sync(&self) -> Result<()> {
        self.conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA synchronous = NORMAL;",
        )?;
        Ok(())
    }
}

/// The guest's `handle`, for one event.
fn handle(
    open: &mut CachedStatement<'_>,
    movement: &mut CachedStatement<'_>,
    event: &EventRef<'_>,
) -> Result<()> {
    let offset = i64::try_from(event.offset)?;
    match event.event_type {
        "account.opened" => {
            let e: Opened<'_> = serde_json::from_str(event.data)?;
            open.execute(params![e.account.as_ref(), e.owner.as_ref(), offset])?;
        }
        "money.deposited" => {
            let e: Movement<'_> = serde_json::from_str(event.data)?;
            movement.execute(params![e.account.as_ref(), e.amount, offset])?;
        }
        "money.withdrawn" => {
            let e: Movement<'_> = serde_json::from_str(event.data)?;
            let delta = e
                .amount
                .checked_neg()
                .ok_or_else(|| anyhow!("withdrawal amount out of range"))?;
            movement.execute(params![e.account.as_ref(), delta, offset])?;
        }
        // Not subscribed: the query never returns other types.
        _ => {}
    }
    Ok(())
}
