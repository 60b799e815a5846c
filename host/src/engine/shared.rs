//! What the controller publishes and readers read, without talking to each other:
//! the route to each projector's active read model, every version's status, refused
//! plugin files and swap figures.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::control::Role;
use crate::engine::status::StatusCell;
use crate::engine::views::{ReadModel, ReadOnly};
use crate::log::EventLog;

/// State readable without the controller: the controller writes it, readers read it.
pub(in crate::engine) struct Shared {
    /// The data directory.
    pub(in crate::engine) data: DataDir,
    /// The configuration the engine started with.
    pub(in crate::engine) config: Config,
    /// The event log the workers project.
    pub(in crate::engine) log: EventLog,
    /// The read model serving each projector's queries.
    pub(in crate::engine) routes: RwLock<BTreeMap<String, ReadModel>>,
    /// Every projector's versions, as last published.
    pub(in crate::engine) views: RwLock<BTreeMap<String, Vec<VersionEntry>>>,
    /// Plugins-folder files that could not be loaded, with why.
    pub(in crate::engine) rejected: RwLock<BTreeMap<PathBuf, String>>,
    /// Swaps completed since the host started.
    pub(in crate::engine) swaps_total: AtomicU64,
    /// How long the last swap took, from the shadow being found caught up to the new
    /// version serving.
    pub(in crate::engine) last_swap: Mutex<Option<Duration>>,
    /// Why a projector's queries are refused, while they are (its read model is being
    /// rebuilt).
    pub(in crate::engine) unavailable: RwLock<BTreeMap<String, String>>,
    /// Set while the engine cannot write `control.db` and runs read-only.
    pub(in crate::engine) read_only: RwLock<Option<ReadOnly>>,
    /// The listeners the engine reports to (cluster mode).
    pub(in crate::engine) hooks: crate::engine::hooks::EngineHooks,
}

/// A version as published for readers; `status` is live while a worker runs it.
#[derive(Clone)]
pub(in crate::engine) struct VersionEntry {
    /// The short content hash.
    pub(in crate::engine) version: String,
    /// Its role.
    pub(in crate::engine) role: Role,
    /// Its live status, while a worker runs it.
    pub(in crate::engine) status: Option<StatusCell>,
    /// The contract its component implements, while a worker runs it.
    pub(in crate::engine) contract: Option<String>,
}

/// Locks for readers, also after a panic elsewhere: the published views stay usable.
pub(in crate::engine) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Locks for the writer, also after a panic elsewhere.
pub(in crate::engine) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Locks a mutex, also after a panic elsewhere.
pub(in crate::engine) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
