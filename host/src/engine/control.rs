//! `control.db`: the host's own state, in one place a newcomer can open with `sqlite3`.
//!
//! - `projectors`: one row per projector name, naming its active version.
//! - `versions`: every deployed component: its content hash, its role (active,
//!   shadow, previous, retired) and its last known state and error.
//! - `dead_letters`: events a projector could not apply under the `skip` policy.
//! - `plugin_files`: the content last deployed from each file in the plugins folder,
//!   so a file is deployed when it changes, not again after every restart or rollback.
//! - `consumer_groups`, `consumer_group_dead_letters`: consumer groups' committed
//!   positions and dead letters (see `crate::groups`).
//!
//! Checkpoints are deliberately NOT here: each lives inside its read model, in the same
//! transaction as the writes it covers (see `checkpoint`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::storage_fault::StorageFault;

/// Identifies a Refract control database (`PRAGMA application_id`), so `refract`
/// never mistakes another SQLite file for its own: ASCII "RFCT".
pub const CONTROL_APPLICATION_ID: i32 = 0x5246_4354;

/// How long a write waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, in order; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE projectors (
        name TEXT PRIMARY KEY,
        active_version TEXT,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE versions (
        projector TEXT NOT NULL,
        version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        role TEXT NOT NULL,
        state TEXT NOT NULL,
        last_error TEXT,
        deployed_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (projector, version)
    );
    CREATE TABLE dead_letters (
        projector TEXT NOT NULL,
        version TEXT NOT NULL,
        log_offset INTEGER NOT NULL,
        error TEXT NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (projector, version, log_offset)
    );
",
    "
    CREATE TABLE plugin_files (
        path TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        seen_at INTEGER NOT NULL
    );
",
    "
    ALTER TABLE versions ADD COLUMN rollback INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE versions ADD COLUMN role_changed_at INTEGER NOT NULL DEFAULT 0;
    UPDATE versions SET role_changed_at = updated_at;
",
    // 4: consumer groups, owned by `crate::groups`.
    crate::groups::store::MIGRATION,
];

/// Why the control database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// SQLite failed on the control database. When the cause is a storage fault (a
    /// full disk, an unwritable or damaged file), the message says the fix.
    #[error("control database {}: {source}{}", path.display(), advice(path, source))]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file is a SQLite database, but not Refract's control database.
    #[error(
        "{path} is not a Refract control database (application id {found:#x}); \
         point --data-dir at a Refract data directory"
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// The application id found.
        found: i32,
    },
    /// The file was written by a newer Refract.
    #[error(
        "control database {path} has schema version {found}, but this build of refract \
         supports up to {supported}; upgrade refract"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
}

impl ControlError {
    /// The storage fault behind this error, if it is one.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        match self {
            ControlError::Sqlite { source, .. } => StorageFault::of_sqlite(source),
            _ => None,
        }
    }
}

/// The fix for a storage fault behind a SQLite error on `control.db`, or nothing.
fn advice(path: &Path, source: &rusqlite::Error) -> String {
    match StorageFault::of_sqlite(source) {
        // Losing control.db loses history, not data: it can be rebuilt.
        Some(StorageFault::Damaged) => format!(
            "; the file is damaged or is not a SQLite database: restore it from a backup, or \
             move it away and start refract again, which recreates it and deploys the plugins \
             folder afresh (the version history and dead letters are lost; the event log is not \
             touched). {}",
            path.display()
        ),
        Some(fault) => format!("; {}", fault.advice(path, "the host's control database")),
        None => String::new(),
    }
}

/// The role a version plays for its projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serving reads; kept up to date with the log.
    Active,
    /// Replaying into a fresh read model, to replace the active version.
    Shadow,
    /// The version an active one replaced, kept for rollback.
    Previous,
    /// No longer used; its read model may be deleted.
    Retired,
    /// A shadow that failed; the reason is in `last_error`.
    Failed,
}

impl Role {
    /// The name stored in `control.db`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Shadow => "shadow",
            Role::Previous => "previous",
            Role::Retired => "retired",
            Role::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Role {
        match text {
            "active" => Role::Active,
            "shadow" => Role::Shadow,
            "previous" => Role::Previous,
            "failed" => Role::Failed,
            _ => Role::Retired,
        }
    }
}

/// A row of `versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// The projector's name.
    pub projector: String,
    /// The short content hash.
    pub version: String,
    /// The full sha256 of the component.
    pub sha256: String,
    /// Its role.
    pub role: Role,
    /// The last state the engine recorded: `catching-up`, `live`, `stalled at N: reason`, ...
    pub state: String,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// A shadow that is a rollback target: it swaps in when caught up, whatever the
    /// promote mode and diff gate say, and an abort returns it to `previous`.
    pub rollback: bool,
}

/// The open control database.
pub struct Control {
    conn: Connection,
    path: PathBuf,
}

impl Control {
    /// Opens `<data-dir>/control.db`, creating it and running migrations as needed.
    pub fn open(path: &Path) -> Result<Control, ControlError> {
        let wrap = |source| ControlError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(wrap)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        let found: i32 = conn
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .map_err(wrap)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(wrap)?;
        let supported = MIGRATIONS.len() as i64;
        if found != CONTROL_APPLICATION_ID && (found != 0 || version != 0) {
            return Err(ControlError::Foreign {
                path: path.to_owned(),
                found,
            });
        }
        if version > supported {
            return Err(ControlError::NewerSchema {
                path: path.to_owned(),
                found: version,
                supported,
            });
        }
        let tx = conn.transaction().map_err(wrap)?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(migration).map_err(wrap)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)
                .map_err(wrap)?;
        }
        tx.pragma_update(None, "application_id", CONTROL_APPLICATION_ID)
            .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(Control {
            conn,
            path: path.to_owned(),
        })
    }

    /// Opens an existing control database for reading only, writing nothing to it: for
    /// a host that cannot write it (a full disk, a read-only mount) and for
    /// `refract status`. Refuses a foreign or newer file as [`Control::open`] does.
    pub fn open_read_only(path: &Path) -> Result<Control, ControlError> {
        let wrap = |source| ControlError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(wrap)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(wrap)?;
        let found: i32 = conn
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .map_err(wrap)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(wrap)?;
        if found != CONTROL_APPLICATION_ID {
            return Err(ControlError::Foreign {
                path: path.to_owned(),
                found,
            });
        }
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(ControlError::NewerSchema {
                path: path.to_owned(),
                found: version,
                supported,
            });
        }
        Ok(Control {
            conn,
            path: path.to_owned(),
        })
    }

    fn wrap(&self) -> impl Fn(rusqlite::Error) -> ControlError + '_ {
        |source| ControlError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records a deployed version (a no-op if it is already known) with the given role.
    pub fn register_version(
        &self,
        projector: &str,
        version: &str,
        sha256: &str,
        role: Role,
    ) -> Result<(), ControlError> {
        let now = now_micros();
        self.conn
            .execute(
                "INSERT INTO projectors (name, active_version, updated_at) VALUES (?1, NULL, ?2)
                 ON CONFLICT (name) DO NOTHING",
                params![projector, now],
            )
            .map_err(self.wrap())?;
        self.conn
            .execute(
                "INSERT INTO versions (projector, version, sha256, role, state, deployed_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'catching-up', ?5, ?5)
                 ON CONFLICT (projector, version) DO NOTHING",
                params![projector, version, sha256, role.as_str(), now],
            )
            .map_err(self.wrap())?;
        Ok(())
    }

    /// Makes `version` the active version of `projector`, in one transaction: the old
    /// active version becomes `previous`. Which previous versions are kept is the
    /// engine's pruning decision (`keep_versions`), not this one.
    pub fn activate(&mut self, projector: &str, version: &str) -> Result<(), ControlError> {
        let now = now_micros();
        let path = self.path.clone();
        let wrap = |source| ControlError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        tx.execute(
            "UPDATE versions SET role = 'previous', role_changed_at = ?2, updated_at = ?2
              WHERE projector = ?1 AND role = 'active' AND version <> ?3",
            params![projector, now, version],
        )
        .map_err(wrap)?;
        tx.execute(
            "UPDATE versions SET role = 'active', rollback = 0, role_changed_at = ?3, updated_at = ?3
              WHERE projector = ?1 AND version = ?2",
            params![projector, version, now],
        )
        .map_err(wrap)?;
        tx.execute(
            "UPDATE projectors SET active_version = ?2, updated_at = ?3 WHERE name = ?1",
            params![projector, version, now],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)
    }

    /// The active version of `projector`, if it has one.
    pub fn active_version(&self, projector: &str) -> Result<Option<String>, ControlError> {
        self.conn
            .query_row(
                "SELECT active_version FROM projectors WHERE name = ?1",
                [projector],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(self.wrap())
    }

    /// Changes a version's role.
    pub fn set_role(&self, projector: &str, version: &str, role: Role) -> Result<(), ControlError> {
        self.set_role_as(projector, version, role, false)
    }

    /// Changes a version's role, marking whether it is a rollback target.
    pub fn set_role_as(
        &self,
        projector: &str,
        version: &str,
        role: Role,
        rollback: bool,
    ) -> Result<(), ControlError> {
        self.conn
            .execute(
                "UPDATE versions SET role = ?3, rollback = ?4, role_changed_at = ?5, updated_at = ?5
                  WHERE projector = ?1 AND version = ?2",
                params![projector, version, role.as_str(), rollback, now_micros()],
            )
            .map_err(self.wrap())?;
        Ok(())
    }

    /// A projector's `previous` versions, the most recently replaced first.
    pub fn previous_versions(&self, projector: &str) -> Result<Vec<String>, ControlError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT version FROM versions WHERE projector = ?1 AND role = 'previous'
                  ORDER BY role_changed_at DESC, version",
            )
            .map_err(self.wrap())?;
        let rows = statement
            .query_map([projector], |row| row.get(0))
            .map_err(self.wrap())?;
        rows.collect::<Result<_, _>>().map_err(self.wrap())
    }

    /// The versions of one projector, most recently deployed first.
    pub fn versions_of(&self, projector: &str) -> Result<Vec<VersionRecord>, ControlError> {
        Ok(self
            .versions()?
            .into_iter()
            .filter(|record| record.projector == projector)
            .rev()
            .collect())
    }

    /// The content last deployed from a plugins-folder file.
    pub fn plugin_sha(&self, path: &Path) -> Result<Option<String>, ControlError> {
        self.conn
            .query_row(
                "SELECT sha256 FROM plugin_files WHERE path = ?1",
                [path.to_string_lossy()],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.wrap())
    }

    /// Records the content deployed (or refused) from a plugins-folder file.
    pub fn record_plugin(&self, path: &Path, sha256: &str) -> Result<(), ControlError> {
        self.conn
            .execute(
                "INSERT INTO plugin_files (path, sha256, seen_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (path) DO UPDATE SET sha256 = excluded.sha256, seen_at = excluded.seen_at",
                params![path.to_string_lossy(), sha256, now_micros()],
            )
            .map_err(self.wrap())?;
        Ok(())
    }

    /// Records a version's state and last error, for `refract status` when no server runs.
    pub fn set_state(
        &self,
        projector: &str,
        version: &str,
        state: &str,
        last_error: Option<&str>,
    ) -> Result<(), ControlError> {
        self.conn
            .prepare_cached(
                "UPDATE versions SET state = ?3, last_error = ?4, updated_at = ?5
                  WHERE projector = ?1 AND version = ?2",
            )
            .and_then(|mut statement| {
                statement.execute(params![projector, version, state, last_error, now_micros()])
            })
            .map_err(self.wrap())?;
        Ok(())
    }

    /// Records an event that a version could not apply. Recording the same event twice
    /// (after a crash between this and the checkpoint moving past it) keeps one row.
    pub fn add_dead_letter(
        &self,
        projector: &str,
        version: &str,
        offset: u64,
        error: &str,
    ) -> Result<(), ControlError> {
        self.conn
            .execute(
                "INSERT INTO dead_letters (projector, version, log_offset, error, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (projector, version, log_offset) DO NOTHING",
                params![projector, version, offset as i64, error, now_micros()],
            )
            .map_err(self.wrap())?;
        Ok(())
    }

    /// How many dead letters a version has.
    pub fn dead_letter_count(&self, projector: &str, version: &str) -> Result<u64, ControlError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM dead_letters WHERE projector = ?1 AND version = ?2",
                [projector, version],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| count as u64)
            .map_err(self.wrap())
    }

    /// A version's dead letters, oldest first: (offset, error, recorded_at µs).
    pub fn dead_letters(
        &self,
        projector: &str,
        version: &str,
        limit: usize,
    ) -> Result<Vec<(u64, String, i64)>, ControlError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT log_offset, error, recorded_at FROM dead_letters
                  WHERE projector = ?1 AND version = ?2 ORDER BY log_offset LIMIT ?3",
            )
            .map_err(self.wrap())?;
        let rows = statement
            .query_map(params![projector, version, limit as i64], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?))
            })
            .map_err(self.wrap())?;
        rows.collect::<Result<_, _>>().map_err(self.wrap())
    }

    /// Every known version, by projector and deployment order.
    pub fn versions(&self) -> Result<Vec<VersionRecord>, ControlError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT projector, version, sha256, role, state, last_error, rollback FROM versions
                  ORDER BY projector, deployed_at, version",
            )
            .map_err(self.wrap())?;
        let rows = statement
            .query_map([], |row| {
                Ok(VersionRecord {
                    projector: row.get(0)?,
                    version: row.get(1)?,
                    sha256: row.get(2)?,
                    role: Role::parse(&row.get::<_, String>(3)?),
                    state: row.get(4)?,
                    last_error: row.get(5)?,
                    rollback: row.get(6)?,
                })
            })
            .map_err(self.wrap())?;
        rows.collect::<Result<_, _>>().map_err(self.wrap())
    }
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}
