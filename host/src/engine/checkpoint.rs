//! The host-owned tables inside every read-model database.
//!
//! A projector's writes and its checkpoint commit in one SQLite transaction, so the
//! checkpoint lives in the projector's own database rather than in `control.db`: after
//! a crash, the read model and the offset it reflects can never disagree. The tables
//! are prefixed `_refract_`, which the sandbox's authorizer hides from the guest.

use rusqlite::{Connection, OptionalExtension, params};

/// Creates the host's tables in a fresh read model and records which projector
/// version built it. Runs inside the transaction of the projector's `init`.
pub(crate) fn create(conn: &Connection, identity: &Identity<'_>) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE _refract_checkpoint (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             log_offset INTEGER NOT NULL
         );
         INSERT INTO _refract_checkpoint (id, log_offset) VALUES (1, 0);
         CREATE TABLE _refract_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    let mut insert = conn.prepare("INSERT INTO _refract_meta (key, value) VALUES (?1, ?2)")?;
    insert.execute(params!["projector", identity.projector])?;
    insert.execute(params!["version", identity.version])?;
    insert.execute(params!["sha256", identity.sha256])?;
    Ok(())
}

/// Which projector version a read model belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity<'a> {
    /// The projector's name.
    pub projector: &'a str,
    /// The short version id.
    pub version: &'a str,
    /// The full sha256 of the component.
    pub sha256: &'a str,
}

/// What an existing read model says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The projector that built it.
    pub projector: String,
    /// The version that built it.
    pub version: String,
    /// The offset up to which the log is reflected.
    pub checkpoint: u64,
}

/// Reads the identity and checkpoint of a read model, or `None` if the host's tables
/// were never created (a fresh or foreign database).
pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Option<Stored>> {
    let exists: bool = conn.query_row(
        "SELECT count(*) = 2 FROM sqlite_schema
          WHERE type = 'table' AND name IN ('_refract_checkpoint', '_refract_meta')",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    let meta = |key: &str| -> rusqlite::Result<String> {
        conn.query_row(
            "SELECT value FROM _refract_meta WHERE key = ?1",
            [key],
            |row| row.get(0),
        )
        .optional()
        .map(Option::unwrap_or_default)
    };
    let checkpoint: i64 = conn.query_row(
        "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
        [],
        |row| row.get(0),
    )?;
    Ok(Some(Stored {
        projector: meta("projector")?,
        version: meta("version")?,
        checkpoint: u64::try_from(checkpoint).unwrap_or(0),
    }))
}

/// Moves the checkpoint. Runs inside the same transaction as the batch it covers.
pub(crate) fn write(conn: &Connection, offset: u64) -> rusqlite::Result<()> {
    let offset =
        i64::try_from(offset).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, i64::MAX))?;
    conn.prepare_cached("UPDATE _refract_checkpoint SET log_offset = ?1 WHERE id = 1")?
        .execute([offset])?;
    Ok(())
}
