//! The controller thread: the one owner of every projector's slot (its active, shadow
//! and warm previous workers).
//!
//! Deploys, promotions, rollbacks, aborts and plugin-folder changes are [`Command`]s
//! sent to it, so no two of them ever interleave; between commands it checks whether a
//! shadow has caught up and swaps it in, then publishes what changed for readers.
//!
//! - `mod.rs`: the loop, its command dispatch, restoring from `control.db`, starting
//!   workers and publishing views.
//! - `deploy`: new versions coming in (deploy, replace a shadow) and old ones going
//!   (retire, prune).
//! - `swap`: which version serves: the swap itself, promote, rollback, abort.
//! - `plugins_folder`: deploying what changes in the watched folder.
//! - `release`: a projector this node stops running (cluster placement moved it to
//!   other nodes).
//! - `rebuild`: a read model deleted from under the host, rebuilt aside and moved
//!   into place when whole.
//! - `read_only`: an engine that cannot write `control.db`: what it serves, and
//!   waiting until it can write.

mod deploy;
mod plugins_folder;
pub(in crate::engine) mod read_only;
mod rebuild;
mod release;
mod restore;
mod swap;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::config::Config;
use crate::engine::control::{Control, Role};
use crate::engine::error::EngineError;
use crate::engine::integrity::LogCheck;
use crate::engine::shared::{Shared, VersionEntry, write};
use crate::engine::version_files;
use crate::engine::views::{Deployment, ReadModel};
use crate::engine::worker::{self, Mode, WorkerHandle, WorkerSpec};
use crate::runtime::{DbOptions, LoadedProjector, Runtime};

pub use plugins_folder::PLUGIN_DEBOUNCE;
use plugins_folder::plugin_files;
pub(in crate::engine) use plugins_folder::watch_plugins;

/// How often the controller looks at shadows when no command arrives.
const CONTROLLER_TICK: Duration = Duration::from_millis(20);

/// What the engine asks of its controller.
pub(in crate::engine) enum Command {
    Deploy {
        wasm: Vec<u8>,
        expected_name: Option<String>,
        /// Report the deploy to the engine's hooks (not for one the cluster asked for).
        announce: bool,
        reply: mpsc::Sender<Result<Deployment, EngineError>>,
    },
    Promote(String, mpsc::Sender<Result<String, EngineError>>),
    Rollback(String, mpsc::Sender<Result<String, EngineError>>),
    Abort(String, mpsc::Sender<Result<String, EngineError>>),
    /// Hold the active version at an offset (`None` lifts it); answers with its
    /// checkpoint once the hold is in force.
    Hold(String, Option<u64>, mpsc::Sender<Result<u64, EngineError>>),
    /// Restore a projector from one of its snapshots (`<version>/<checkpoint>`).
    Restore(String, String, mpsc::Sender<Result<String, EngineError>>),
    /// Stop running a projector on this node (see `release`).
    Release(String, mpsc::Sender<Result<(), EngineError>>),
    PluginChanged(PathBuf),
    Shutdown,
}

impl Command {
    /// Answers the command with `error` without carrying it out.
    fn refuse(self, error: impl Fn() -> EngineError) {
        // Whoever asked may have given up waiting; nothing to tell them then.
        match self {
            Command::Deploy { reply, .. } => drop(reply.send(Err(error()))),
            Command::Promote(_, reply)
            | Command::Rollback(_, reply)
            | Command::Abort(_, reply)
            | Command::Restore(_, _, reply) => {
                drop(reply.send(Err(error())));
            }
            Command::Hold(_, _, reply) => drop(reply.send(Err(error()))),
            Command::Release(_, reply) => drop(reply.send(Err(error()))),
            Command::PluginChanged(_) | Command::Shutdown => {}
        }
    }
}

/// One projector's running versions.
#[derive(Default)]
struct Slot {
    active: Option<WorkerHandle>,
    shadow: Option<WorkerHandle>,
    /// The replaced version, still tailing (`keep_previous = true`).
    warm: Option<WorkerHandle>,
    /// The shadow is a rollback target: swap it in when caught up, whatever the
    /// promote mode or diff gate say.
    shadow_forced: bool,
    /// The diff gate refused this shadow version; it waits for `refract promote`.
    gated: Option<String>,
    /// The active version, rebuilding its deleted read model (see `rebuild`).
    rebuild: Option<WorkerHandle>,
    /// Why the projector's queries are refused, while they are.
    unavailable: Option<String>,
}

/// Everything a controller needs besides `control.db`, kept while the engine waits to
/// be able to write it (see `read_only`).
#[derive(Clone)]
pub(in crate::engine) struct ControllerParts {
    /// What the controller publishes for readers.
    pub(in crate::engine) shared: Arc<Shared>,
    /// The configuration.
    pub(in crate::engine) config: Config,
    /// The WebAssembly runtime the workers run on.
    pub(in crate::engine) wasm_runtime: Runtime,
    /// The async runtime workers wait on.
    pub(in crate::engine) runtime: Handle,
    /// The plugins folder, canonical.
    pub(in crate::engine) plugins_dir: PathBuf,
    /// Whether a checkpoint past the log's head is an error.
    pub(in crate::engine) log_check: LogCheck,
}

/// The controller thread's state.
pub(in crate::engine) struct Controller {
    shared: Arc<Shared>,
    config: Config,
    wasm_runtime: Runtime,
    control: Control,
    runtime: Handle,
    log_check: LogCheck,
    slots: BTreeMap<String, Slot>,
    /// When the active read models were last checked to be on disk.
    read_models_checked: Instant,
    /// The slots changed since they were last published.
    dirty: bool,
    /// Still in [`Controller::start`] (deploys then are reported as `at_startup`).
    starting: bool,
    /// Active versions held at an offset (see `swap::hold`), from the hooks at start:
    /// the offset, and the version being promoted (which is never held).
    holds: BTreeMap<String, (u64, String)>,
}

impl Controller {
    /// A controller over `control`: starts the workers `control.db` says should run,
    /// repairs the stable paths, deploys whatever changed in the plugins folder, and
    /// publishes the result for readers.
    pub(in crate::engine) fn start(
        parts: ControllerParts,
        control: Control,
    ) -> Result<Controller, EngineError> {
        let ControllerParts {
            shared,
            config,
            wasm_runtime,
            runtime,
            plugins_dir,
            log_check,
        } = parts;
        let mut controller = Controller {
            shared,
            config,
            wasm_runtime,
            control,
            runtime,
            log_check,
            slots: BTreeMap::new(),
            read_models_checked: Instant::now(),
            dirty: true,
            starting: true,
            holds: BTreeMap::new(),
        };
        controller.holds = controller.shared.hooks.holds.clone();
        controller.restore()?;
        for path in plugin_files(&plugins_dir)? {
            controller.plugin_changed(&path);
        }
        controller.starting = false;
        controller.publish();
        Ok(controller)
    }

    pub(in crate::engine) fn run(mut self, inbox: &mpsc::Receiver<Command>) {
        loop {
            let received = inbox.recv_timeout(CONTROLLER_TICK);
            if received.is_ok() {
                self.dirty = true;
            }
            match received {
                Ok(Command::Deploy {
                    wasm,
                    expected_name,
                    announce,
                    reply,
                }) => {
                    let result = self.deploy(&wasm, expected_name.as_deref(), announce);
                    self.answer(&reply, result);
                }
                Ok(Command::Promote(name, reply)) => {
                    let result = self.promote(&name);
                    self.answer(&reply, result);
                }
                Ok(Command::Rollback(name, reply)) => {
                    let result = self.rollback(&name);
                    self.answer(&reply, result);
                }
                Ok(Command::Abort(name, reply)) => {
                    let result = self.abort(&name);
                    self.answer(&reply, result);
                }
                Ok(Command::Hold(name, ceiling, reply)) => {
                    let result = self.hold(&name, ceiling);
                    self.answer(&reply, result);
                }
                Ok(Command::Restore(name, id, reply)) => {
                    let result = self.restore_snapshot(&name, &id);
                    self.answer(&reply, result);
                }
                Ok(Command::Release(name, reply)) => {
                    let result = self.release(&name);
                    self.answer(&reply, result);
                }
                Ok(Command::PluginChanged(path)) => self.plugin_changed(&path),
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_read_models();
            self.check_rebuilds();
            self.check_shadows();
            if self.dirty {
                self.publish();
            }
        }
        // Shutting down: every call in flight ends now (rolled back, applied again on
        // the next start), and a worker stuck in one SQLite step is not waited for.
        self.wasm_runtime.cancel_calls();
        let workers: Vec<WorkerHandle> = std::mem::take(&mut self.slots)
            .into_values()
            .flat_map(|slot| [slot.shadow, slot.active, slot.warm, slot.rebuild])
            .flatten()
            .collect();
        for worker in &workers {
            worker.request_stop();
        }
        let deadline = Instant::now() + worker::SHUTDOWN_GRACE;
        for worker in workers {
            worker.stop_by(deadline);
        }
    }

    /// Publishes the new state, then replies: whoever asked sees the command's
    /// effect in `Engine::projectors` as soon as the call returns.
    fn answer<T>(
        &mut self,
        reply: &mpsc::Sender<Result<T, EngineError>>,
        result: Result<T, EngineError>,
    ) {
        self.publish();
        // The caller may have given up waiting; the command took effect anyway.
        let _ = reply.send(result);
    }

    /// Starts the workers `control.db` says should run, and repairs the stable paths.
    fn restore(&mut self) -> Result<(), EngineError> {
        let versions = self.control.versions()?;
        for record in &versions {
            let name = record.projector.clone();
            let has_active = versions
                .iter()
                .any(|other| other.projector == name && other.role == Role::Active);
            let mode = match record.role {
                Role::Active => Mode::Active,
                Role::Shadow if has_active => Mode::Shadow,
                Role::Shadow => Mode::Initial,
                Role::Previous if self.config.projector(&name).keep_previous => Mode::Warm,
                _ => continue,
            };
            let loaded = match self.load_stored(&name, &record.version) {
                Ok(loaded) => loaded,
                Err(reason) => {
                    tracing::error!(projector = %name, version = %record.version, "cannot restore version: {reason}");
                    self.control.set_state(
                        &name,
                        &record.version,
                        &format!("failed: {reason}"),
                        Some(&reason),
                    )?;
                    continue;
                }
            };
            if mode == Mode::Active && !self.shared.data.version_db(&name, &record.version).exists()
            {
                // Deleted while the host was down: never recreated in place.
                version_files::repoint(&self.shared.data, &name, &record.version).map_err(
                    |source| EngineError::Io {
                        path: self.shared.data.stable_db(&name),
                        source,
                    },
                )?;
                self.start_rebuild(&name, loaded)?;
                continue;
            }
            let worker = self.spawn(&name, loaded, mode)?;
            let slot = self.slots.entry(name.clone()).or_default();
            match mode {
                Mode::Active => {
                    version_files::repoint(&self.shared.data, &name, &record.version).map_err(
                        |source| EngineError::Io {
                            path: self.shared.data.stable_db(&name),
                            source,
                        },
                    )?;
                    write(&self.shared.routes).insert(
                        name.clone(),
                        ReadModel {
                            projector: name.clone(),
                            version: record.version.clone(),
                            path: self.shared.data.version_db(&name, &record.version),
                        },
                    );
                    slot.active = Some(worker);
                }
                Mode::Shadow | Mode::Initial => {
                    slot.shadow = Some(worker);
                    slot.shadow_forced = record.rollback;
                }
                Mode::Warm => slot.warm = Some(worker),
            }
        }
        for name in versions.iter().map(|record| record.projector.clone()) {
            self.slots.entry(name.clone()).or_default();
            version_files::remove_strays(&self.shared.data, &name, &self.kept_versions(&name)?);
        }
        Ok(())
    }

    /// Loads a version's stored component.
    fn load_stored(&self, name: &str, version: &str) -> Result<LoadedProjector, String> {
        let path = self.shared.data.version_wasm(name, version);
        let bytes = std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        self.wasm_runtime
            .load(&bytes)
            .map_err(|error| error.to_string())
    }

    /// Starts a worker running `loaded` on its version's read model.
    fn spawn(
        &self,
        name: &str,
        loaded: LoadedProjector,
        mode: Mode,
    ) -> Result<WorkerHandle, EngineError> {
        let db_path = self.shared.data.version_db(name, loaded.version());
        self.spawn_at(name, loaded, mode, db_path)
    }

    /// Starts a worker running `loaded` on the read model at `db_path`.
    fn spawn_at(
        &self,
        name: &str,
        loaded: LoadedProjector,
        mode: Mode,
        db_path: PathBuf,
    ) -> Result<WorkerHandle, EngineError> {
        let config = &self.config;
        let section = config.projector(name);
        // The projector's own `[projectors.<name>.limits]` (validated with the config).
        let limits = config
            .projector_limits(name)
            .map_err(|(key, problem)| EngineError::Conflict(format!("`{key}` {problem}")))?;
        let loaded = loaded
            .with_limits(limits)
            .map_err(EngineError::InvalidComponent)?;
        // A held active version (a cluster's coordinated swap) starts held.
        let hold = match mode {
            Mode::Active => self
                .holds
                .get(name)
                .filter(|(_, promoted)| promoted != loaded.version())
                .map(|(offset, _)| *offset),
            Mode::Shadow | Mode::Initial | Mode::Warm => None,
        };
        // A reactor's shadow never replays past the active version's checkpoint, so
        // that it takes over emitting exactly where the active version stopped.
        let follow = match mode {
            Mode::Shadow if loaded.reactor().is_some() => self
                .slots
                .get(name)
                .and_then(|slot| slot.active.as_ref())
                .map(|active| self.shared.data.version_db(name, &active.version)),
            _ => None,
        };
        let spec = WorkerSpec {
            follow,
            projector: name.to_owned(),
            db_path,
            db_options: match mode {
                Mode::Shadow | Mode::Initial => DbOptions::replay(),
                Mode::Active | Mode::Warm => DbOptions::live(),
            },
            loaded,
            control_path: self.shared.data.control_db(),
            policy: section.on_poison,
            batch: config.projector_batch(name),
            retry: (
                Duration::from_millis(config.engine.retry_initial_ms),
                Duration::from_millis(config.engine.retry_max_ms),
            ),
            external_poll: Duration::from_millis(config.engine.external_poll_ms),
            mode,
            replay_rate_limit: section.replay_rate_limit,
            log_check: self.log_check,
            hold,
        };
        worker::spawn(spec, &self.shared.log, self.runtime.clone()).map_err(|source| {
            EngineError::Io {
                path: self.shared.data.projector_dir(name),
                source,
            }
        })
    }

    /// Publishes the slots for readers: running versions with their live status,
    /// then the others `control.db` knows.
    fn publish(&mut self) {
        let records = match self.control.versions() {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!("cannot list versions: {error}");
                return;
            }
        };
        let mut views: BTreeMap<String, Vec<VersionEntry>> = BTreeMap::new();
        for (name, slot) in &self.slots {
            let entries = views.entry(name.clone()).or_default();
            for (role, worker) in [
                (Role::Active, &slot.active),
                // The active version, replaying into its rebuild file.
                (Role::Active, &slot.rebuild),
                (Role::Shadow, &slot.shadow),
                (Role::Previous, &slot.warm),
            ] {
                if let Some(worker) = worker {
                    entries.push(VersionEntry {
                        version: worker.version.clone(),
                        role,
                        status: Some(worker.status.clone()),
                        contract: Some(worker.loaded.contract()),
                    });
                }
            }
        }
        for record in records.into_iter().rev() {
            let entries = views.entry(record.projector.clone()).or_default();
            if !entries.iter().any(|entry| entry.version == record.version) {
                entries.push(VersionEntry {
                    version: record.version,
                    role: record.role,
                    status: None,
                    contract: None,
                });
            }
        }
        *write(&self.shared.views) = views;
        *write(&self.shared.unavailable) = self
            .slots
            .iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.unavailable.clone()?)))
            .collect();
        self.dirty = false;
    }
}

/// Creates a folder and its parents; `role` and `fix` say what it is for and where
/// to point Refract instead, should a file be in the way.
pub(in crate::engine) fn create_dir(
    path: &Path,
    role: &'static str,
    fix: &'static str,
) -> Result<(), EngineError> {
    if path.exists() && !path.is_dir() {
        return Err(EngineError::NotAFolder {
            path: path.to_owned(),
            role,
            fix,
        });
    }
    std::fs::create_dir_all(path).map_err(|source| EngineError::Io {
        path: path.to_owned(),
        source,
    })
}
