//! One projector version driven through the log, a batch at a time.
//!
//! A [`Projection`] owns a sandboxed instance, its read-model database and a log
//! reader. Each [`Projection::step`] reads the next batch of subscribed events after
//! the checkpoint, hands it to the guest, and commits the guest's writes together with
//! the new checkpoint in one transaction. That single transaction is the whole
//! exactly-once argument: a crash before the commit loses both, a crash after keeps both.
//!
//! The one-shot `refract project`, the live workers and shadow replays all drive this
//! same type; they differ only in how they wait and what they do with failures.

use std::path::{Path, PathBuf};

use crate::config::{DEFAULT_BATCH_BYTES, DEFAULT_BATCH_EVENTS};
use crate::engine::checkpoint::{self, Identity};
use crate::engine::read_ahead::{ReadAhead, ReadKey};
use crate::log::{LogError, LogReader, ReadQuery, StreamFilter};
use crate::reactors::{Driver, EffectCounts};
use crate::runtime::{
    DbOptions, EventBatch, LoadedProjector, ProjectorError, ProjectorInstance, RuntimeError,
};

/// How a [`Projection`] batches its work.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// At most this many events per call into the guest.
    pub max_events: usize,
    /// A batch closes once its text reaches this many bytes.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_events: DEFAULT_BATCH_EVENTS,
            max_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

/// Why a projection could not be opened or advanced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The guest failed: a handler error, a trap, a deadline or a limit breach (see
    /// [`ProjectorError::is_poison`]), or the host failed around it.
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    /// The component could not be instantiated.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The event log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The host's own tables in the read model could not be read or written.
    #[error("read model {path}: the host's checkpoint tables failed: {source}")]
    Checkpoint {
        /// The read-model database.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Host state around the projection (for example `control.db`) failed.
    #[error("{0}")]
    Host(String),
    /// The read model was deleted while the projection ran. It is never recreated in
    /// place, where readers would see it empty and then partial: the engine rebuilds it
    /// aside (see the controller's `rebuild`).
    #[error(
        "read model {path} was deleted while its projector ran; it is rebuilt from the log \
         aside and moved into place when whole"
    )]
    ReadModelMissing {
        /// The read-model database.
        path: PathBuf,
    },
    /// The database at the path was built by another projector or version.
    #[error(
        "read model {path} belongs to projector `{found_projector}` version {found_version}, \
         not `{projector}` version {version}; give each version its own database file"
    )]
    WrongReadModel {
        /// The read-model database.
        path: PathBuf,
        /// The projector being opened.
        projector: String,
        /// The version being opened.
        version: String,
        /// The projector recorded in the database.
        found_projector: String,
        /// The version recorded in the database.
        found_version: String,
    },
}

/// What one [`Projection::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A batch was applied and the checkpoint moved to `through`.
    Applied {
        /// Events handed to the projector.
        events: usize,
        /// The new checkpoint.
        through: u64,
    },
    /// No subscribed events, but the checkpoint moved past events the projector does
    /// not subscribe to.
    Skipped {
        /// The new checkpoint.
        through: u64,
    },
    /// The checkpoint is at the log head (or the end bound): nothing to do.
    CaughtUp,
}

/// A projector version bound to its read model and a log reader.
pub struct Projection {
    loaded: LoadedProjector,
    db_path: PathBuf,
    db_options: DbOptions,
    instance: Option<ProjectorInstance>,
    /// The log reader, on a thread of its own (see `read_ahead`).
    reader: ReadAhead,
    /// Whether the next batch is read while the guest works on a full one.
    read_ahead: bool,
    checkpoint: u64,
    batch: EventBatch,
    /// A reactor's spare batch: what its filter keeps of `batch` is packed here, then
    /// the two swap.
    undelivered: EventBatch,
    limits: BatchLimits,
    /// The first and last offsets of the last batch handed to the guest.
    last_batch: Option<(u64, u64)>,
    /// A reactor's side: its emits, timers and takeover (see [`crate::reactors`]).
    reactor: Option<Driver>,
}

impl Projection {
    /// Opens the read model at `db_path`, creating and initialising it if it is new,
    /// and resumes from its checkpoint.
    pub fn open(
        loaded: LoadedProjector,
        db_path: &Path,
        db_options: DbOptions,
        mut reader: LogReader,
        limits: BatchLimits,
    ) -> Result<Self, ProjectionError> {
        let mut instance = loaded.instantiate(db_path, db_options)?;
        let info = instance.info().clone();
        let stored = checkpoint::load(instance.host_connection()).map_err(|source| {
            ProjectionError::Checkpoint {
                path: db_path.to_owned(),
                source,
            }
        })?;
        let checkpoint = match stored {
            Some(stored) => {
                if stored.projector != info.name || stored.version != loaded.version() {
                    return Err(ProjectionError::WrongReadModel {
                        path: db_path.to_owned(),
                        projector: info.name.clone(),
                        version: loaded.version().to_owned(),
                        found_projector: stored.projector,
                        found_version: stored.version,
                    });
                }
                stored.checkpoint
            }
            None => {
                let identity = Identity {
                    projector: &info.name,
                    version: loaded.version(),
                    sha256: loaded.sha256(),
                };
                let head = reader.head()?;
                let is_reactor = loaded.reactor().is_some();
                instance.init(|conn| {
                    checkpoint::create(conn, &identity)?;
                    if is_reactor {
                        Driver::create(conn, head)?;
                    }
                    Ok(())
                })?;
                0
            }
        };
        let reactor = match loaded.reactor() {
            Some(_) => {
                let mut driver = Driver::new(&info.name);
                driver.load(instance.host_connection()).map_err(|source| {
                    ProjectionError::Checkpoint {
                        path: db_path.to_owned(),
                        source,
                    }
                })?;
                Some(driver)
            }
            None => None,
        };
        let mut query = ReadQuery {
            types: info.subscriptions.event_types.clone(),
            stream: if info.subscriptions.stream_prefixes.is_empty() {
                StreamFilter::Any
            } else {
                StreamFilter::Prefixes(info.subscriptions.stream_prefixes.clone())
            },
            ..ReadQuery::default()
        };
        if let Some(driver) = &reactor {
            driver.widen(&mut query);
        }
        let reader = ReadAhead::start(reader, query, info.reads, format!("read-{}", info.name))
            .map_err(|err| {
                ProjectionError::Host(format!("cannot start the log reader thread: {err}"))
            })?;
        Ok(Self {
            loaded,
            db_path: db_path.to_owned(),
            db_options,
            instance: Some(instance),
            reader,
            read_ahead: true,
            checkpoint,
            batch: EventBatch::new(),
            undelivered: EventBatch::new(),
            limits,
            last_batch: None,
            reactor,
        })
    }

    /// A reactor's side, `None` for a projector.
    pub(crate) fn reactor_mut(&mut self) -> Option<&mut Driver> {
        self.reactor.as_mut()
    }

    /// What a reactor's effects have amounted to; `None` for a projector.
    pub fn effect_counts(&self) -> Option<EffectCounts> {
        self.reactor.as_ref().map(Driver::counts)
    }

    /// A reactor appends the `refract.timer` events due at `now` (microseconds since
    /// the epoch), if it emits; returns how many were due. Nothing for a projector.
    pub fn fire_due_timers(&mut self, now: i64) -> Result<usize, ProjectionError> {
        if self.reactor.is_none() {
            return Ok(0);
        }
        let instance = live_instance(
            &mut self.instance,
            &self.loaded,
            &self.db_path,
            self.db_options,
        )?;
        let conn = instance.host_connection();
        match self.reactor.as_mut() {
            Some(driver) => Ok(driver.fire_due(conn, now, self.checkpoint)?),
            None => Ok(0),
        }
    }

    /// The last log offset reflected in the read model.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// The projector version being run.
    pub fn loaded(&self) -> &LoadedProjector {
        &self.loaded
    }

    /// The read-model database.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The current log head, as this projection's reader sees it.
    pub fn log_head(&mut self) -> Result<u64, ProjectionError> {
        self.reader.head()
    }

    /// Whether the next batch is read from the log while the guest and SQLite work on a
    /// full one (on by default). Off, every read waits for the previous batch: the
    /// benchmark measures what reading ahead pays this way.
    pub fn set_read_ahead(&mut self, on: bool) {
        self.read_ahead = on;
    }

    /// Changes how the read model is opened when the instance is next created (after
    /// a trap): a shadow that becomes active moves from replay to live settings.
    pub fn set_db_options(&mut self, options: DbOptions) {
        self.db_options = options;
    }

    /// Changes how later steps batch events; used to replay a failed batch one event
    /// at a time.
    pub fn set_limits(&mut self, limits: BatchLimits) {
        self.limits = limits;
    }

    /// The first and last offsets of the last batch handed to the guest, successful or
    /// not: after a failure that does not name its event, this bounds the search.
    pub fn last_batch(&self) -> Option<(u64, u64)> {
        self.last_batch
    }

    /// Moves a fresh projection's checkpoint forward to `offset` without applying the
    /// events before it, so a replay starts in the middle of the log. A checkpoint
    /// never moves backwards.
    pub fn fast_forward(&mut self, offset: u64) -> Result<(), ProjectionError> {
        if offset > self.checkpoint {
            self.commit_checkpoint_only(offset)?;
        }
        Ok(())
    }

    /// Makes everything committed so far durable, whatever the synchronous mode the
    /// database was opened with: a replay runs with `synchronous=OFF` for speed and
    /// calls this before its read model is trusted.
    pub fn sync(&mut self) -> Result<(), ProjectionError> {
        let conn = self.host_connection()?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA synchronous = NORMAL;",
        )
        .map_err(|source| ProjectionError::Checkpoint {
            path: self.db_path.clone(),
            source,
        })
    }

    /// The live instance's host connection, instantiating again after a trap.
    fn host_connection(&mut self) -> Result<&rusqlite::Connection, ProjectionError> {
        Ok(self.instance_mut()?.host_connection())
    }

    fn instance_mut(&mut self) -> Result<&mut ProjectorInstance, ProjectionError> {
        live_instance(
            &mut self.instance,
            &self.loaded,
            &self.db_path,
            self.db_options,
        )
    }

    /// Moves the checkpoint in a transaction of its own, for stretches of the log with
    /// no subscribed events.
    fn commit_checkpoint_only(&mut self, through: u64) -> Result<(), ProjectionError> {
        let path = self.db_path.clone();
        let conn = self.host_connection()?;
        let advance = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            checkpoint::write(&tx, through)?;
            tx.commit()
        };
        advance().map_err(|source| ProjectionError::Checkpoint { path, source })?;
        self.checkpoint = through;
        Ok(())
    }

    /// Applies the next batch after the checkpoint, reading no further than
    /// `until` (inclusive) when given. A trap discards the instance; the next step
    /// instantiates afresh from the same read model.
    pub fn step(&mut self, until: Option<u64>) -> Result<Step, ProjectionError> {
        let follow = self.reactor.as_mut().and_then(Driver::bound);
        let until = match (until, follow) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if until.is_some_and(|until| self.checkpoint >= until) {
            return Ok(Step::CaughtUp);
        }
        let key = ReadKey::new(self.checkpoint, until, self.limits);
        let scan = self.reader.read(key, &mut self.batch)?;
        let through = until.map_or(scan.scanned_through, |until| {
            scan.scanned_through.min(until)
        });
        if through <= self.checkpoint {
            return Ok(Step::CaughtUp);
        }

        // Whether the batch filled before the reactor's filter below, which only thins it.
        let full = self.batch.len() >= self.limits.max_events
            || self.batch.byte_len() >= self.limits.max_bytes;
        if let Some(driver) = &self.reactor
            && !self.batch.is_empty()
        {
            // A reactor's timer events are checked against its state as it stands now,
            // after the previous batch committed, so a cancelled timer is not delivered.
            let instance = live_instance(
                &mut self.instance,
                &self.loaded,
                &self.db_path,
                self.db_options,
            )?;
            driver.keep_delivered(
                instance.host_connection(),
                &mut self.batch,
                &mut self.undelivered,
            );
        }
        let events = self.batch.len();
        if events == 0 {
            self.commit_checkpoint_only(through)?;
            return Ok(Step::Skipped { through });
        }
        self.last_batch = self.batch.first_offset().zip(self.batch.last_offset());
        // A full batch: more events likely follow, so read the next batch (after this
        // one's checkpoint) while this one is applied. It is used only if this one
        // commits and the next step asks for the same.
        if self.read_ahead && full && until.is_none_or(|until| through < until) {
            self.reader
                .start_read(ReadKey::new(through, until, self.limits))?;
        }
        let instance = live_instance(
            &mut self.instance,
            &self.loaded,
            &self.db_path,
            self.db_options,
        )?;
        match self.reactor.as_mut() {
            Some(driver) => {
                let batch = &self.batch;
                instance.set_emit_rate_after(driver.rate_after());
                instance.apply_with_effects(batch, |conn, emits| {
                    driver.commit(conn, batch, emits)?;
                    checkpoint::write(conn, through)?;
                    Ok(())
                })?;
            }
            None => instance.apply(&self.batch, |conn| checkpoint::write(conn, through))?,
        }
        self.checkpoint = through;
        Ok(Step::Applied { events, through })
    }
}

/// The instance in `slot`, or a fresh one if there is none or the last one trapped.
/// A poisoned instance is dropped (closing its connection) before the new one opens.
fn live_instance<'a>(
    slot: &'a mut Option<ProjectorInstance>,
    loaded: &LoadedProjector,
    db_path: &Path,
    db_options: DbOptions,
) -> Result<&'a mut ProjectorInstance, ProjectionError> {
    let instance = match slot.take().filter(|instance| !instance.is_poisoned()) {
        Some(instance) => instance,
        // Opening would create an empty database in its place.
        None if !db_path.exists() => {
            return Err(ProjectionError::ReadModelMissing {
                path: db_path.to_owned(),
            });
        }
        None => loaded.instantiate(db_path, db_options)?,
    };
    Ok(slot.insert(instance))
}
