//! A read model deleted from under the host is rebuilt from the log into a file of its
//! own, `<version>.rebuild.db`, and moved into place only once it has caught up with the
//! log, as a deploy's shadow is swapped in. Until then the projector's queries are
//! refused with the reason: readers get an error, never an empty or partial table.
//!
//! Found at start (the active version's read model is missing) and while running (the
//! controller looks every [`READ_MODEL_CHECK`]). The active worker, which would only
//! write into the deleted file, is stopped; the rebuild replays like a first version
//! (`replay_rate_limit` applies). Once it is live at the log head:
//! 1. it makes its read model durable (the WAL checkpointed into the file) and stops;
//! 2. any `-wal`/`-shm` files left at the version's path are deleted, so nothing of the
//!    deleted database can be replayed into the new one;
//! 3. `<version>.rebuild.db` is renamed to `<version>.db` and the folder synced;
//! 4. an active worker starts on it, and queries are routed to it again.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::controller::Controller;
use crate::engine::error::EngineError;
use crate::engine::shared::write;
use crate::engine::status::State;
use crate::engine::views::ReadModel;
use crate::engine::worker::Mode;
use crate::runtime::LoadedProjector;

/// How often the controller checks that every active read model is still on disk.
pub const READ_MODEL_CHECK: Duration = Duration::from_millis(500);

/// How long a finished rebuild may take to make its read model durable.
const REBUILD_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

impl Controller {
    /// Starts a rebuild for every active version whose read model has disappeared, at
    /// most every [`READ_MODEL_CHECK`].
    pub(super) fn check_read_models(&mut self) {
        if self.read_models_checked.elapsed() < READ_MODEL_CHECK {
            return;
        }
        self.read_models_checked = Instant::now();
        let missing: Vec<(String, LoadedProjector)> = self
            .slots
            .iter()
            .filter_map(|(name, slot)| {
                let active = slot.active.as_ref()?;
                let path = self.shared.data.version_db(name, &active.version);
                let lost = !path.exists() || crate::snapshots::recovery::is_damaged(&path);
                lost.then(|| (name.clone(), active.loaded.clone()))
            })
            .collect();
        for (name, loaded) in missing {
            if let Err(error) = self.start_rebuild(&name, loaded) {
                tracing::error!(projector = %name, "cannot start rebuilding the read model: {error}");
            }
        }
    }

    /// Rebuilds `loaded`'s read model from the log into its rebuild file, resuming
    /// one left by an interrupted rebuild. The active worker, if any, is stopped and
    /// queries are refused until the rebuild is moved into place.
    pub(super) fn start_rebuild(
        &mut self,
        name: &str,
        loaded: LoadedProjector,
    ) -> Result<(), EngineError> {
        let version = loaded.version().to_owned();
        let data = &self.shared.data;
        let (path, rebuild_path) = (
            data.version_db(name, &version),
            data.rebuild_db(name, &version),
        );
        let why = format!(
            "the read model {} was deleted from under the host; it is being rebuilt from the log \
             into {}, and queries are refused until it has caught up (progress: \
             `refract status`)",
            path.display(),
            rebuild_path.display()
        );
        tracing::error!(projector = %name, %version, "{why}");
        // The reason first, then the route: a reader finds one or the other.
        write(&self.shared.unavailable).insert(name.to_owned(), why.clone());
        write(&self.shared.routes).remove(name);
        let slot = self.slots.entry(name.to_owned()).or_default();
        slot.unavailable = Some(why);
        if let Some(active) = slot.active.take() {
            active.stop();
        }
        if !rebuild_path.exists() {
            // From the newest good snapshot, when there is one: only the events after
            // its checkpoint are replayed.
            crate::snapshots::recovery::seed_newest(
                &self.shared.data,
                name,
                &version,
                &rebuild_path,
            );
        }
        let worker = self.spawn_at(name, loaded, Mode::Initial, rebuild_path)?;
        self.slots.entry(name.to_owned()).or_default().rebuild = Some(worker);
        self.dirty = true;
        Ok(())
    }

    /// Moves every rebuild that has caught up into place.
    pub(super) fn check_rebuilds(&mut self) {
        let done: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                slot.rebuild
                    .as_ref()
                    .is_some_and(|rebuild| rebuild.status.snapshot().state == State::Live)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in done {
            if let Err(error) = self.finish_rebuild(&name) {
                tracing::error!(projector = %name, "the rebuilt read model could not be put in place, retrying: {error}");
            }
        }
    }

    /// Steps 1 to 4 of the module documentation.
    fn finish_rebuild(&mut self, name: &str) -> Result<(), EngineError> {
        let slot = self.slots.entry(name.to_owned()).or_default();
        let Some(rebuild) = slot.rebuild.take() else {
            return Ok(());
        };
        let loaded = rebuild.loaded.clone();
        let version = rebuild.version.clone();
        let data = self.shared.data.clone();
        let (path, rebuild_path) = (
            data.version_db(name, &version),
            data.rebuild_db(name, &version),
        );
        let synced = rebuild.sync(REBUILD_SYNC_TIMEOUT);
        rebuild.stop();
        let moved = synced
            .map_err(|reason| {
                EngineError::Conflict(format!("the rebuild could not be synced: {reason}"))
            })
            .and_then(|_| {
                move_into_place(&rebuild_path, &path).map_err(|source| EngineError::Io {
                    path: path.clone(),
                    source,
                })
            });
        if let Err(error) = moved {
            // Resume the rebuild from its own checkpoint and try again once it is live.
            let worker = self.spawn_at(name, loaded, Mode::Initial, rebuild_path)?;
            self.slots.entry(name.to_owned()).or_default().rebuild = Some(worker);
            return Err(error);
        }
        let active = self.spawn(name, loaded, Mode::Active)?;
        let slot = self.slots.entry(name.to_owned()).or_default();
        slot.active = Some(active);
        slot.unavailable = None;
        // The route first, then the reason goes: a reader finds one or the other.
        write(&self.shared.routes).insert(
            name.to_owned(),
            ReadModel {
                projector: name.to_owned(),
                version: version.clone(),
                path: path.clone(),
            },
        );
        write(&self.shared.unavailable).remove(name);
        self.dirty = true;
        tracing::info!(projector = %name, %version, read_model = %path.display(), "read model rebuilt from the log; queries are served again");
        Ok(())
    }
}

/// Renames a durable, closed database over `path`, removing first any `-wal` and
/// `-shm` files at `path` (from the deleted database) and at `from`.
fn move_into_place(from: &Path, path: &Path) -> io::Result<()> {
    for leftover in [
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
        from.with_extension("db-wal"),
        from.with_extension("db-shm"),
    ] {
        match fs::remove_file(&leftover) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    fs::rename(from, path)?;
    match path.parent() {
        Some(folder) => File::open(folder)?.sync_all(),
        None => Ok(()),
    }
}
