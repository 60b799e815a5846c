//! Retention: policies per stream prefix that keep the log from growing forever, with an
//! archive that replays, reads and counts still read (tiered storage).
//!
//! - **Policies** (`[retention.prefixes."<prefix>"]`, see [`config`]): `max_age`,
//!   `max_events_per_stream`, `max_bytes`, and `mode = "archive" | "delete"`. No policy
//!   keeps everything forever, the default.
//! - **Archive mode** moves events past their policy into immutable zstd segments under
//!   `<data-dir>/archive/` ([`segment`], [`archive`]). The log reads them back through its
//!   [`ColdTier`](crate::log::ColdTier) seam, so a new projector version's shadow replay,
//!   `refract project` and a consumer replay from offset 1 see the whole history, and so
//!   do `refract events` and `GET /v1/events` (and their counts), within a per-request
//!   budget of segments decompressed ([`ArchiveBudget`](crate::log::ArchiveBudget)).
//! - **Delete mode** drops them for good. Versions deployed after the first deletion are
//!   reported as built from partial history.
//! - **Safety**: nothing above the [`Floor`] leaves the log: the lowest checkpoint of any
//!   running projector version and the lowest committed position of any declared group
//!   with `retention = "hold"` ([`Holder`]). The newest event of each stream and the
//!   log's head event always stay (see [`crate::log::Pruner`]).
//! - **In the background**: a thread runs a pass every `retention.interval_ms`; each
//!   removal is a transaction of at most [`PRUNE_CHUNK_EVENTS`](crate::log::PRUNE_CHUNK_EVENTS)
//!   events, then incremental vacuum gives the space back in steps of
//!   [`VACUUM_STEP_PAGES`](crate::log::VACUUM_STEP_PAGES) pages.
//!
//! # Crash safety
//! A segment is written to a temporary file, fsynced, renamed into place and its folder
//! fsynced before any of its events is removed from the log; removals move the log's
//! horizon in the same transaction. A crash before the rename leaves a temporary file,
//! removed on the next start (its events never left the log). A crash after it leaves
//! events in both places: replays read each offset once, and the next start removes
//! what is left ([`Archive::reconcile`]). Offsets never change and are never reused.
//!
//! # Layout
//! - [`config`]: `[retention]` in `refract.toml`.
//! - [`segment`]: one segment file.
//! - [`archive`]: the archive folder, and reading it as the log's cold tier.
//! - [`pass`]: one pass over the log.
//! - `error.rs`: [`RetentionError`].

pub mod archive;
pub mod config;
mod error;
pub mod pass;
pub mod segment;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::log::{EventLog, Horizon};

pub use archive::{ARCHIVE_DIR_NAME, Archive};
pub use config::{Mode, Policy, RetentionConfig};
pub use error::RetentionError;
pub use pass::{Floor, PassReport};

/// The file, in the data directory, naming the projector versions that saw the whole
/// history before delete mode first removed events.
pub const HISTORY_FILE_NAME: &str = "retention-history.json";

/// Something that still needs events: a running projector version or a group that holds
/// retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A running projector version, processed through `position`.
    Projector {
        /// The projector.
        name: String,
        /// Its version.
        version: String,
        /// Its checkpoint.
        position: u64,
    },
    /// A declared consumer group with `retention = "hold"`, committed through `position`.
    Group {
        /// The group.
        name: String,
        /// Its committed position.
        position: u64,
    },
}

impl Holder {
    fn position(&self) -> u64 {
        match self {
            Holder::Projector { position, .. } | Holder::Group { position, .. } => *position,
        }
    }

    fn describe(&self) -> String {
        match self {
            Holder::Projector { name, version, .. } => format!("projector {name}@{version}"),
            Holder::Group { name, .. } => format!("group {name}"),
        }
    }
}

/// Where retention learns what still needs events, asked before every pass.
pub type HolderSource = Box<dyn Fn() -> Vec<Holder> + Send + Sync>;

/// What still needs events in a host: every running projector version of `engine`,
/// and the lowest committed position of the groups that hold retention.
pub fn engine_holders(
    engine: Arc<crate::engine::Engine>,
    groups: Option<Arc<crate::groups::Groups>>,
) -> HolderSource {
    Box::new(move || {
        let mut holders: Vec<Holder> = engine
            .status()
            .into_iter()
            .map(|version| Holder::Projector {
                name: version.projector,
                version: version.version,
                position: version.checkpoint,
            })
            .collect();
        if let Some((position, name)) = groups.as_ref().and_then(|g| g.retention_floor()) {
            holders.push(Holder::Group { name, position });
        }
        holders
    })
}

/// The archive folder of a data directory.
pub fn archive_dir(data_root: &Path) -> PathBuf {
    data_root.join(ARCHIVE_DIR_NAME)
}

/// Attaches the data directory's archive to `log`, if there is one (or the log says
/// events were archived), so its replays read the whole history. For every command that
/// replays a data directory's log.
pub fn attach_archive(
    log: &EventLog,
    data_root: &Path,
) -> Result<Option<Arc<Archive>>, RetentionError> {
    let dir = archive_dir(data_root);
    if !dir.exists() && log.horizon()?.archived_through == 0 {
        return Ok(None);
    }
    let archive = Arc::new(
        Archive::open(&dir).map_err(|source| RetentionError::OpenArchive {
            dir: dir.clone(),
            source,
        })?,
    );
    log.attach_cold_tier(Arc::clone(&archive) as Arc<dyn crate::log::ColdTier>);
    Ok(Some(archive))
}

/// A policy, as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// The stream prefix.
    pub prefix: String,
    /// `max_age` in seconds.
    pub max_age_seconds: Option<u64>,
    /// `max_events_per_stream`.
    pub max_events_per_stream: Option<u64>,
    /// `max_bytes`.
    pub max_bytes: Option<u64>,
    /// `archive` or `delete`.
    pub mode: Mode,
}

/// What retention is doing, for `refract status`, `GET /v1/retention` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionStatus {
    /// The policies (empty: everything is kept forever).
    pub policies: Vec<PolicyView>,
    /// The floor of the last pass.
    pub floor: Option<Floor>,
    /// How far removals reached, and what they removed and reclaimed.
    pub horizon: Horizon,
    /// Events below this offset may be gone from the live log.
    pub truncated_before: u64,
    /// The archive's size on disk, in bytes.
    pub archive_bytes: u64,
    /// Segments in the archive.
    pub archive_segments: usize,
    /// Passes run since the host started.
    pub passes: u64,
    /// The last pass.
    pub last_pass: Option<PassReport>,
    /// The last failure, kept until a pass succeeds.
    pub last_error: Option<String>,
    /// Running projector versions built from partial history: deployed after delete
    /// mode first removed events, so their read models lack them.
    pub partial_history: Vec<String>,
}

/// The running retention of `refract run`: a background thread and its status.
#[derive(Debug)]
pub struct Retention {
    shared: Arc<Shared>,
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    log: EventLog,
    archive: Option<Arc<Archive>>,
    policies: Vec<Policy>,
    history_file: PathBuf,
    status: Mutex<RetentionStatus>,
    holders: HolderSource,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

/// Who saw the whole history before delete mode first removed events.
#[derive(Debug, Default, serde::Deserialize, Serialize)]
struct History {
    /// Whether delete mode has removed anything yet.
    deleted: bool,
    /// `projector@version` of the versions running then.
    complete: BTreeSet<String>,
}

impl Retention {
    /// Opens the archive (settling what a crash left half done), switches the log to
    /// incremental vacuum if it has policies, and starts the background passes.
    pub fn start(
        log: &EventLog,
        data_root: &Path,
        config: &RetentionConfig,
        holders: HolderSource,
    ) -> Result<Retention, RetentionError> {
        let policies = config.policies().unwrap_or_default();
        let archive = if policies.iter().any(|p| p.mode == Mode::Archive) {
            let dir = archive_dir(data_root);
            let archive = Arc::new(
                Archive::open(&dir)
                    .map_err(|source| RetentionError::OpenArchive { dir, source })?,
            );
            log.attach_cold_tier(Arc::clone(&archive) as Arc<dyn crate::log::ColdTier>);
            Some(archive)
        } else {
            attach_archive(log, data_root)?
        };
        let mut pruner = log.pruner()?;
        if let Some(archive) = &archive {
            let settled = archive.reconcile(&mut pruner)?;
            if settled > 0 {
                tracing::info!(
                    events = settled,
                    "retention: removed events an interrupted pass had archived already"
                );
            }
        }
        if !policies.is_empty() && !pruner.vacuum_enabled()? {
            let started = Instant::now();
            pruner.enable_vacuum()?;
            tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "retention: switched events.db to incremental auto-vacuum (a one-time VACUUM)"
            );
        }
        let shared = Arc::new(Shared {
            log: log.clone(),
            archive,
            policies,
            history_file: data_root.join(HISTORY_FILE_NAME),
            status: Mutex::new(RetentionStatus::default()),
            holders,
        });
        shared.refresh(None, None);
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = config.interval();
        let thread = if shared.policies.is_empty() {
            None
        } else {
            let shared = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("refract-retention".to_owned())
                    .spawn(move || {
                        let mut cursor = 0;
                        loop {
                            match stopped.recv_timeout(interval) {
                                Err(RecvTimeoutError::Timeout) => {}
                                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                            }
                            cursor = shared.pass(&mut pruner, cursor);
                        }
                    })
                    .map_err(|source| RetentionError::Spawn { source })?,
            )
        };
        Ok(Retention {
            shared,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(thread),
        })
    }

    /// What retention is doing now.
    pub fn status(&self) -> RetentionStatus {
        self.shared.refresh(None, None);
        self.shared
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The prefixes of delete-mode policies: a projector subscribing to streams under
    /// them replays without what was deleted.
    pub fn deleting_prefixes(&self) -> Vec<String> {
        self.shared
            .policies
            .iter()
            .filter(|p| p.mode == Mode::Delete)
            .map(|p| p.prefix.clone())
            .collect()
    }

    /// Stops the background passes, waiting for one in progress to finish.
    pub fn shutdown(&self) {
        drop(
            self.stop
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(thread) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    /// Runs one pass; returns the cursor for the next.
    fn pass(&self, pruner: &mut crate::log::Pruner, cursor: u64) -> u64 {
        let holders = (self.holders)();
        let floor = match holders.iter().min_by_key(|h| h.position()) {
            Some(holder) => Floor {
                offset: holder.position(),
                held_by: Some(holder.describe()),
            },
            None => Floor {
                offset: u64::MAX,
                held_by: None,
            },
        };
        // A pass that failed between writing a segment and removing its events left
        // them in both places: remove them here first, so this pass does not archive
        // them into a second segment (every archived offset is in one segment only,
        // which counts of the archive rely on).
        let settled = match &self.archive {
            Some(archive) => archive.reconcile(pruner).map(drop),
            None => Ok(()),
        };
        let outcome = settled.map_err(RetentionError::from).and_then(|()| {
            pass::Pass {
                log: &self.log,
                pruner,
                archive: self.archive.as_deref(),
                policies: &self.policies,
                floor: floor.offset,
                now: SystemTime::now(),
            }
            .run(cursor)
        });
        match outcome {
            Ok((report, next)) => {
                if report.deleted > 0 {
                    self.note_deletion(&holders);
                }
                if report.archived + report.deleted > 0 {
                    tracing::info!(
                        archived = report.archived,
                        deleted = report.deleted,
                        reclaimed_bytes = report.reclaimed_bytes,
                        "retention pass"
                    );
                }
                self.refresh(Some(floor), Some(Ok(report)));
                next
            }
            Err(error) => {
                let message = crate::error_text::one_line(&error);
                tracing::warn!("retention pass failed: {message}");
                self.refresh(Some(floor), Some(Err(message)));
                cursor
            }
        }
    }

    fn history(&self) -> History {
        std::fs::read(&self.history_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records, the first time delete mode removes events, which versions saw everything.
    fn note_deletion(&self, holders: &[Holder]) {
        if self.history().deleted {
            return;
        }
        let history = History {
            deleted: true,
            complete: holders
                .iter()
                .filter_map(|h| match h {
                    Holder::Projector { name, version, .. } => Some(format!("{name}@{version}")),
                    Holder::Group { .. } => None,
                })
                .collect(),
        };
        let temp = segment::temp_path(&self.history_file);
        let written = serde_json::to_vec_pretty(&history)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temp, bytes))
            .and_then(|()| std::fs::rename(&temp, &self.history_file));
        if let Err(error) = written {
            tracing::warn!(
                "cannot record which projector versions saw the whole history in {}: {error}",
                self.history_file.display()
            );
        }
    }

    /// Updates the status: always the horizon and the archive's size; the floor and
    /// the pass's outcome when given.
    fn refresh(&self, floor: Option<Floor>, outcome: Option<Result<PassReport, String>>) {
        let horizon = self.log.horizon();
        let (archive_bytes, archive_segments) = self
            .archive
            .as_ref()
            .map_or((0, 0), |archive| archive.size());
        let history = self.history();
        let partial_history = if history.deleted {
            (self.holders)()
                .into_iter()
                .filter_map(|h| match h {
                    Holder::Projector { name, version, .. } => Some(format!("{name}@{version}")),
                    Holder::Group { .. } => None,
                })
                .filter(|id| !history.complete.contains(id))
                .collect()
        } else {
            Vec::new()
        };
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.policies = self
            .policies
            .iter()
            .map(|p| PolicyView {
                prefix: p.prefix.clone(),
                max_age_seconds: p.max_age.map(|age| age.as_secs()),
                max_events_per_stream: p.max_events_per_stream,
                max_bytes: p.max_bytes,
                mode: p.mode,
            })
            .collect();
        if let Ok(horizon) = horizon {
            status.horizon = horizon;
            status.truncated_before = horizon.truncated_before();
        }
        status.archive_bytes = archive_bytes;
        status.archive_segments = archive_segments;
        status.partial_history = partial_history;
        if let Some(floor) = floor {
            status.floor = Some(floor);
        }
        match outcome {
            Some(Ok(report)) => {
                status.passes += 1;
                status.last_pass = Some(report);
                status.last_error = None;
            }
            Some(Err(message)) => {
                status.passes += 1;
                status.last_error = Some(message);
            }
            None => {}
        }
    }
}
