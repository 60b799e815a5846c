//! Point-in-time read models: what a projector's read model said at a past offset.
//!
//! 1. The newest snapshot at or before the offset (of any version) is copied to a
//!    temporary database, checked against its checksum; with none, an empty database
//!    and the active version.
//! 2. The log is replayed into it up to the offset, with that snapshot's version, in
//!    the same sandbox as every projection.
//! 3. The query runs on it, read-only, under the same bounds as any query.
//!
//! The result equals `refract project --until-offset <offset>` with that version.
//! A few are kept materialised for reuse, least recently used first out.
//!
//! # Bounds
//! The client picks the offset, so every cost it drives is named:
//! - `snapshots.point_in_time_max_replay` events replayed on top of the snapshot;
//! - `snapshots.point_in_time_cache` materialised databases kept, and
//!   `snapshots.point_in_time_max_bytes` of them on disk together (the one just built
//!   is always kept until it is answered);
//! - one materialisation at a time, host-wide, so concurrent requests queue instead of
//!   multiplying replays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Projection, ProjectionError, Step};
use crate::log::{EventLog, LogError};
use crate::runtime::{DbOptions, Runtime, RuntimeConfig};
use crate::snapshots::SnapshotsConfig;
use crate::snapshots::store::{SnapshotError, Store};

/// The folder of materialised point-in-time databases, emptied at every start.
pub const FOLDER: &str = ".point-in-time";

/// Why a point-in-time read model could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PointInTimeError {
    /// The offset is past the log's head.
    #[error("offset {offset} is past the log's head {head}; ask for an offset up to {head}")]
    BeyondHead {
        /// The offset asked for.
        offset: u64,
        /// The head.
        head: u64,
    },
    /// No event was recorded at or before the time asked for.
    #[error("no event was recorded at or before {time}; ask for a later time")]
    BeforeFirstEvent {
        /// The time asked for.
        time: String,
    },
    /// The replay from the nearest snapshot would pass the named bound.
    #[error(
        "offset {offset} is {distance} events past the nearest snapshot of `{projector}` \
         (at {from}), more than snapshots.point_in_time_max_replay = {limit}; set a snapshot \
         policy (`[projectors.{projector}.snapshots] every_events`) below {limit}, or raise \
         the limit"
    )]
    TooFar {
        /// The projector.
        projector: String,
        /// The offset asked for.
        offset: u64,
        /// Where the replay would start.
        from: u64,
        /// Events to replay.
        distance: u64,
        /// The bound.
        limit: u64,
    },
    /// No version to replay with: no snapshot at or before the offset and no active
    /// version.
    #[error(
        "projector `{0}` has no snapshot at or before that offset and no active version to \
         replay with; retry once it serves"
    )]
    NoVersion(String),
    /// The version's component is neither in the projector's folder nor with its
    /// snapshots.
    #[error("the component of `{projector}` version {version} is gone: {reason}")]
    NoComponent {
        /// The projector.
        projector: String,
        /// The version.
        version: String,
        /// Why it cannot be loaded.
        reason: String,
    },
    /// A snapshot could not be used.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The replay failed.
    #[error("replaying to the offset failed: {0}")]
    Replay(Box<ProjectionError>),
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A file of the materialised database could not be handled.
    #[error("point-in-time database {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl From<ProjectionError> for PointInTimeError {
    fn from(error: ProjectionError) -> Self {
        PointInTimeError::Replay(Box::new(error))
    }
}

/// A materialised read model at one offset; its file is deleted when the last user
/// drops it (after it left the cache).
#[derive(Debug)]
pub struct Materialised {
    /// The projector.
    pub projector: String,
    /// The database.
    pub path: PathBuf,
    /// The version that built it.
    pub version: String,
    /// The offset it reflects.
    pub offset: u64,
    /// The snapshot it started from (`<version>/<checkpoint>`), if any.
    pub snapshot: Option<String>,
    /// Its size once built.
    pub bytes: u64,
}

impl Drop for Materialised {
    fn drop(&mut self) {
        for file in [
            self.path.clone(),
            self.path.with_extension("db-wal"),
            self.path.with_extension("db-shm"),
        ] {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Point-in-time read models of a data directory, with their cache.
pub struct PointInTime {
    data: DataDir,
    config: Config,
    limits: SnapshotsConfig,
    runtime: OnceLock<Result<Runtime, String>>,
    /// Most recently used last.
    cache: Mutex<Vec<Arc<Materialised>>>,
    /// Held while one is built.
    building: Mutex<()>,
}

impl PointInTime {
    /// Point-in-time read models of `data`, under `config`'s limits. Empties the folder
    /// of materialised databases, which a previous run may have left.
    pub fn new(data: &DataDir, config: &Config) -> PointInTime {
        let folder = folder(data);
        let _ = std::fs::remove_dir_all(&folder);
        PointInTime {
            data: data.clone(),
            config: config.clone(),
            limits: config.snapshots.clone(),
            runtime: OnceLock::new(),
            cache: Mutex::new(Vec::new()),
            building: Mutex::new(()),
        }
    }

    /// The last offset recorded at or before `time`.
    ///
    /// # Errors
    /// No event that early, or the log cannot be read.
    pub fn offset_at_time(
        &self,
        log: &EventLog,
        time: jiff::Timestamp,
    ) -> Result<u64, PointInTimeError> {
        log.last_offset_recorded_by(time)?
            .ok_or_else(|| PointInTimeError::BeforeFirstEvent {
                time: time.to_string(),
            })
    }

    /// `projector`'s read model as it was at `offset`; `active` is the version to
    /// replay with when no snapshot is at or before it.
    ///
    /// # Errors
    /// See [`PointInTimeError`].
    pub fn at_offset(
        &self,
        log: &EventLog,
        projector: &str,
        active: Option<&str>,
        offset: u64,
    ) -> Result<Arc<Materialised>, PointInTimeError> {
        let head = log.head()?;
        if offset > head {
            return Err(PointInTimeError::BeyondHead { offset, head });
        }
        let store = Store::new(&self.data);
        let snapshot = store.newest_good(projector, None, Some(offset));
        let version = match (&snapshot, active) {
            (Some(entry), _) => entry.version.clone(),
            (None, Some(active)) => active.to_owned(),
            (None, None) => return Err(PointInTimeError::NoVersion(projector.to_owned())),
        };
        if let Some(hit) = self.cached(projector, &version, offset) {
            return Ok(hit);
        }
        let from = snapshot.as_ref().map_or(0, |entry| entry.checkpoint);
        let limit = self.limits.point_in_time_max_replay;
        if offset - from > limit {
            return Err(PointInTimeError::TooFar {
                projector: projector.to_owned(),
                offset,
                from,
                distance: offset - from,
                limit,
            });
        }
        let _building = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        // Another request may have built it while this one waited.
        if let Some(hit) = self.cached(projector, &version, offset) {
            return Ok(hit);
        }
        let folder = folder(&self.data);
        std::fs::create_dir_all(&folder).map_err(|source| PointInTimeError::Io {
            path: folder.clone(),
            source,
        })?;
        let path = folder.join(format!("{projector}-{version}-{offset}.db"));
        let mut built = Materialised {
            projector: projector.to_owned(),
            path,
            version: version.clone(),
            offset,
            snapshot: snapshot.as_ref().map(|entry| entry.id()),
            bytes: 0,
        };
        // Whatever a failed attempt left is deleted with `built`.
        drop(std::fs::remove_file(&built.path));
        if let Some(entry) = &snapshot {
            store.seed(projector, entry, &built.path)?;
        }
        self.replay(log, projector, &version, &built.path, offset)?;
        built.bytes = std::fs::metadata(&built.path).map_or(0, |meta| meta.len());
        let built = Arc::new(built);
        self.remember(Arc::clone(&built));
        Ok(built)
    }

    fn replay(
        &self,
        log: &EventLog,
        projector: &str,
        version: &str,
        path: &Path,
        offset: u64,
    ) -> Result<(), PointInTimeError> {
        let no_component = |reason: String| PointInTimeError::NoComponent {
            projector: projector.to_owned(),
            version: version.to_owned(),
            reason,
        };
        let bytes = std::fs::read(self.data.version_wasm(projector, version))
            .ok()
            .or_else(|| Store::new(&self.data).component(projector, version))
            .ok_or_else(|| no_component("no stored copy".to_owned()))?;
        let runtime = self
            .runtime
            .get_or_init(|| {
                Runtime::new(RuntimeConfig {
                    cache_dir: Some(self.data.cache()),
                    limits: self.config.limits.clone(),
                })
                .map_err(|error| error.to_string())
            })
            .as_ref()
            .map_err(|reason| no_component(reason.clone()))?;
        let limits = self
            .config
            .projector_limits(projector)
            .map_err(|(key, problem)| no_component(format!("`{key}` {problem}")))?;
        let loaded = runtime
            .load(&bytes)
            .and_then(|loaded| loaded.with_limits(limits))
            .map_err(|error| no_component(error.to_string()))?;
        let mut projection = Projection::open(
            loaded,
            path,
            DbOptions::replay(),
            log.reader()?,
            self.config.projector_batch(projector),
        )?;
        while projection.step(Some(offset))? != Step::CaughtUp {}
        projection.sync()?;
        Ok(())
    }

    fn cached(&self, projector: &str, version: &str, offset: u64) -> Option<Arc<Materialised>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let index = cache.iter().position(|entry| {
            entry.offset == offset && entry.version == version && entry.projector == projector
        })?;
        let hit = cache.remove(index);
        cache.push(Arc::clone(&hit));
        Some(hit)
    }

    /// Keeps `built` as the most recently used, and lets the least recently used go
    /// past the count and byte bounds.
    fn remember(&self, built: Arc<Materialised>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.push(built);
        while cache.len() > 1
            && (cache.len() > self.limits.point_in_time_cache
                || cache.iter().map(|entry| entry.bytes).sum::<u64>()
                    > self.limits.point_in_time_max_bytes)
        {
            cache.remove(0);
        }
    }

    /// How many are materialised now, and their bytes.
    pub fn cached_count_and_bytes(&self) -> (usize, u64) {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        (cache.len(), cache.iter().map(|entry| entry.bytes).sum())
    }
}

fn folder(data: &DataDir) -> PathBuf {
    Store::new(data).root().join(FOLDER)
}
