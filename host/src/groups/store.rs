//! The groups' lasting state in `control.db`: each group's filter and committed
//! position, and its dead letters. Members, leases and the window are not stored: after
//! a restart a group reads again from its committed position, so events acked above it
//! (out of order, or in the last `commit_interval`) are delivered again. At least once.
//!
//! The tables come from [`MIGRATION`], one entry of `control.db`'s migration list
//! (`crate::engine::control`); like every migration it is never edited once released.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::config::GroupFilter;
use super::error::GroupError;
use super::state::DeadLetter;
use crate::engine::control::Control;

/// The `control.db` migration that adds the groups' tables.
pub const MIGRATION: &str = "
    CREATE TABLE consumer_groups (
        name TEXT PRIMARY KEY,
        filter TEXT NOT NULL,          -- JSON: {\"types\": [...], \"stream_prefixes\": [...]}
        committed INTEGER NOT NULL,    -- everything at or below is acked or dead-lettered
        redeliveries INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE consumer_group_dead_letters (
        group_name TEXT NOT NULL,
        log_offset INTEGER NOT NULL,
        stream TEXT NOT NULL,
        type TEXT NOT NULL,
        deliveries INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        member TEXT,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (group_name, log_offset)
    );
";

/// How long a write waits for another connection's lock on `control.db`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    /// Its name.
    pub name: String,
    /// Its filter.
    pub filter: GroupFilter,
    /// Its committed position.
    pub committed: u64,
    /// Redeliveries counted up to the last write.
    pub redeliveries: u64,
    /// Dead letters counted up to the last write.
    pub dead_lettered: u64,
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredDeadLetter {
    /// The event's offset.
    pub offset: u64,
    /// Its stream.
    pub stream: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// The last reason a delivery failed (a member's `nack` reason, or what ended the
    /// lease).
    pub last_error: String,
    /// The member of the last delivery.
    pub member: Option<String>,
    /// When it was dead-lettered.
    pub recorded_at: jiff::Timestamp,
}

/// A connection to `control.db` for the groups.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens `control.db` (creating and migrating it as needed).
    pub fn open(path: &Path) -> Result<Store, GroupError> {
        // The control database's own opener runs the migrations, ours included.
        drop(Control::open(path)?);
        let sqlite = |source| GroupError::Store {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> GroupError + '_ {
        |source| GroupError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// Every stored group, by name.
    pub fn groups(&self) -> Result<Vec<StoredGroup>, GroupError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT name, filter, committed, redeliveries, dead_lettered
                   FROM consumer_groups ORDER BY name",
            )
            .map_err(self.sqlite())?;
        let rows = statement
            .query_map([], |row| {
                let filter: String = row.get(1)?;
                Ok(StoredGroup {
                    name: row.get(0)?,
                    filter: serde_json::from_str(&filter).unwrap_or_default(),
                    committed: to_u64(row.get(2)?),
                    redeliveries: to_u64(row.get(3)?),
                    dead_lettered: to_u64(row.get(4)?),
                })
            })
            .map_err(self.sqlite())?;
        rows.collect::<Result<_, _>>().map_err(self.sqlite())
    }

    /// Stores a new group, or updates the filter of a known one (keeping its position).
    pub fn upsert(
        &self,
        name: &str,
        filter: &GroupFilter,
        committed: u64,
    ) -> Result<(), GroupError> {
        let filter = serde_json::to_string(filter).unwrap_or_default();
        let now = now_micros();
        self.conn
            .execute(
                "INSERT INTO consumer_groups (name, filter, committed, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (name) DO UPDATE SET filter = excluded.filter, updated_at = excluded.updated_at",
                params![name, filter, to_i64(committed), now],
            )
            .map_err(self.sqlite())?;
        Ok(())
    }

    /// Writes committed positions and counters, all in one transaction.
    pub fn save_positions(
        &mut self,
        positions: &[(String, u64, u64, u64)],
    ) -> Result<(), GroupError> {
        let path = self.path.clone();
        let sqlite = |source| GroupError::Store {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE consumer_groups SET committed = ?2, redeliveries = ?3,
                            dead_lettered = ?4, updated_at = ?5 WHERE name = ?1",
                )
                .map_err(sqlite)?;
            let now = now_micros();
            for (name, committed, redeliveries, dead_lettered) in positions {
                update
                    .execute(params![
                        name,
                        to_i64(*committed),
                        to_i64(*redeliveries),
                        to_i64(*dead_lettered),
                        now
                    ])
                    .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)
    }

    /// Records dead letters (an event dead-lettered twice keeps its first record).
    pub fn add_dead_letters(
        &mut self,
        group: &str,
        letters: &[DeadLetter],
    ) -> Result<(), GroupError> {
        if letters.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let sqlite = |source| GroupError::Store {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO consumer_group_dead_letters
                        (group_name, log_offset, stream, type, deliveries, last_error, member, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (group_name, log_offset) DO NOTHING",
                )
                .map_err(sqlite)?;
            let now = now_micros();
            for letter in letters {
                insert
                    .execute(params![
                        group,
                        to_i64(letter.offset),
                        letter.stream,
                        letter.event_type,
                        letter.deliveries,
                        letter.last_error,
                        letter.member,
                        now
                    ])
                    .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)
    }

    /// A group's dead letters, oldest offset first.
    pub fn dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, GroupError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT log_offset, stream, type, deliveries, last_error, member, recorded_at
                   FROM consumer_group_dead_letters WHERE group_name = ?1
                  ORDER BY log_offset LIMIT ?2",
            )
            .map_err(self.sqlite())?;
        let rows = statement
            .query_map(params![group, to_i64(limit as u64)], |row| {
                Ok(StoredDeadLetter {
                    offset: to_u64(row.get(0)?),
                    stream: row.get(1)?,
                    event_type: row.get(2)?,
                    deliveries: row.get(3)?,
                    last_error: row.get(4)?,
                    member: row.get(5)?,
                    recorded_at: crate::log::micros_to_timestamp(row.get(6)?),
                })
            })
            .map_err(self.sqlite())?;
        rows.collect::<Result<_, _>>().map_err(self.sqlite())
    }

    /// How many dead letters a group has.
    pub fn dead_letter_count(&self, group: &str) -> Result<u64, GroupError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM consumer_group_dead_letters WHERE group_name = ?1",
                [group],
                |row| row.get::<_, i64>(0),
            )
            .map(to_u64)
            .map_err(self.sqlite())
    }

    /// Whether a group is stored.
    pub fn exists(&self, group: &str) -> Result<bool, GroupError> {
        self.conn
            .query_row(
                "SELECT 1 FROM consumer_groups WHERE name = ?1",
                [group],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(self.sqlite())
    }

    /// Deletes a group and its dead letters.
    pub fn delete(&mut self, group: &str) -> Result<(), GroupError> {
        let path = self.path.clone();
        let sqlite = |source| GroupError::Store {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        tx.execute("DELETE FROM consumer_groups WHERE name = ?1", [group])
            .map_err(sqlite)?;
        tx.execute(
            "DELETE FROM consumer_group_dead_letters WHERE group_name = ?1",
            [group],
        )
        .map_err(sqlite)?;
        tx.commit().map_err(sqlite)
    }
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}
