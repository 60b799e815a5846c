//! [`Engine`]: the handle the host and the API hold on the running engine.
//!
//! Readers never talk to the controller: they read what it publishes into `Shared`
//! (the routes to each active read model, every version's status, refused plugin
//! files). Commands (deploy, promote, rollback, abort) are sent to the controller
//! thread, and each call waits for its answer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::control::{Control, Role};
use crate::engine::controller::read_only;
use crate::engine::controller::{Command, Controller, ControllerParts, create_dir, watch_plugins};
use crate::engine::error::EngineError;
use crate::engine::hooks::EngineHooks;
use crate::engine::integrity::{self, LogCheck};
use crate::engine::shared::{Shared, lock, read};
use crate::engine::status::VersionStatus;
use crate::engine::views::{
    DeadLetter, Deployment, ProjectorView, ReadModel, ReadOnly, Rejected, VersionView,
};
use crate::log::EventLog;
use crate::runtime::{Runtime, RuntimeConfig};

/// Where the engine keeps and finds things.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The data directory.
    pub data_dir: DataDir,
    /// The folder of projector components (`*.wasm`), watched for changes.
    pub plugins_dir: PathBuf,
    /// The configuration.
    pub config: Config,
    /// Whether the log may trail the read models: [`LogCheck::Strict`] but for a cluster
    /// node's mirror (see [`integrity`](crate::engine::integrity)).
    pub log_check: LogCheck,
}

/// The running engine. Share it behind an `Arc`; every method takes `&self`.
pub struct Engine {
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    controller: Mutex<Option<JoinHandle<()>>>,
    /// The snapshot schedule, when a projector has a snapshot policy.
    snapshots: Mutex<Option<crate::snapshots::schedule::Scheduler>>,
    _watcher: Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>>,
}

impl Engine {
    /// Restores every projector from `control.db` (active versions, shadows that were
    /// replaying, warm previous versions), repairs the stable paths, deploys whatever
    /// changed in the plugins folder, and starts watching it.
    pub fn start(
        options: &EngineOptions,
        log: &EventLog,
        runtime: &Handle,
    ) -> Result<Engine, EngineError> {
        Engine::start_with_hooks(options, log, runtime, EngineHooks::default())
    }

    /// [`Engine::start`], reporting to `hooks` from the first deploy on (the plugins
    /// folder is deployed during the start).
    pub fn start_with_hooks(
        options: &EngineOptions,
        log: &EventLog,
        runtime: &Handle,
        hooks: EngineHooks,
    ) -> Result<Engine, EngineError> {
        let data = options.data_dir.clone();
        if options.log_check == LogCheck::Strict {
            integrity::check_log_covers_read_models(&data, log.head()?)?;
        }
        let wasm_runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(data.cache()),
            limits: options.config.limits.clone(),
        })
        .map_err(EngineError::Runtime)?;
        create_dir(
            &data.projections(),
            "the folder of read models",
            "point --data-dir at a Refract data directory",
        )?;
        create_dir(
            &options.plugins_dir,
            "the plugins folder",
            "point --plugins (or plugins_dir in refract.toml) at a folder",
        )?;
        // One spelling of every plugin path, so the watcher's absolute paths and the
        // startup scan's agree in `control.db`.
        let plugins_dir = options
            .plugins_dir
            .canonicalize()
            .map_err(|source| EngineError::Io {
                path: options.plugins_dir.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            data: data.clone(),
            config: options.config.clone(),
            log: log.clone(),
            routes: RwLock::new(BTreeMap::new()),
            views: RwLock::new(BTreeMap::new()),
            rejected: RwLock::new(BTreeMap::new()),
            swaps_total: AtomicU64::new(0),
            last_swap: Mutex::new(None),
            unavailable: RwLock::new(BTreeMap::new()),
            read_only: RwLock::new(None),
            hooks,
        });
        // Watched before anything is deployed, so no change in between is missed.
        let (commands, inbox) = mpsc::channel();
        let watcher = watch_plugins(&plugins_dir, commands.clone())?;
        let parts = ControllerParts {
            shared: Arc::clone(&shared),
            config: options.config.clone(),
            wasm_runtime,
            runtime: runtime.clone(),
            plugins_dir,
            log_check: options.log_check,
        };
        let started = match Control::open(&data.control_db()) {
            Ok(control) => Ok(Controller::start(parts, control)?),
            Err(error) => match read_only::fault_allows_read_only(&error) {
                Some(fault) if data.control_db().exists() => {
                    read_only::enter(&shared, &error, fault)?;
                    Err(parts)
                }
                _ => return Err(error.into()),
            },
        };
        let thread = std::thread::Builder::new()
            .name("refract-controller".into())
            .spawn(move || match started {
                Ok(controller) => controller.run(&inbox),
                Err(parts) => read_only::run_when_writable(&parts, &inbox),
            })
            .map_err(|source| EngineError::Io {
                path: data.root().to_owned(),
                source,
            })?;
        let snapshots = crate::snapshots::schedule::Scheduler::start(
            &data,
            &options.config,
            active_models(&shared),
        )
        .map_err(|source| EngineError::Io {
            path: data.root().to_owned(),
            source,
        })?;
        Ok(Engine {
            shared,
            commands: Mutex::new(Some(commands)),
            controller: Mutex::new(Some(thread)),
            snapshots: Mutex::new(snapshots),
            _watcher: Some(watcher),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.shared.data
    }

    /// The configuration the engine started with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Why the engine runs read-only, while it does (see [`ReadOnly`]).
    pub fn read_only(&self) -> Option<ReadOnly> {
        read(&self.shared.read_only).clone()
    }

    /// The sandbox limits in force (`[limits]`), which the API's queries are bounded
    /// by too.
    pub fn sandbox_limits(&self) -> &crate::runtime::SandboxLimits {
        &self.shared.config.limits
    }

    /// The event log; appends made through it wake the workers at once.
    pub fn log(&self) -> &EventLog {
        &self.shared.log
    }

    /// Every projector, by name.
    pub fn projectors(&self) -> Vec<ProjectorView> {
        let routes = read(&self.shared.routes);
        let unavailable = read(&self.shared.unavailable);
        read(&self.shared.views)
            .iter()
            .map(|(name, versions)| ProjectorView {
                name: name.clone(),
                active_version: routes.get(name).map(|model| model.version.clone()),
                unavailable: unavailable.get(name).cloned(),
                versions: versions
                    .iter()
                    .map(|entry| VersionView {
                        version: entry.version.clone(),
                        role: entry.role,
                        contract: entry.contract.clone(),
                        status: entry.status.as_ref().map(|status| status.snapshot()),
                        replay: match (entry.role, &entry.status) {
                            (Role::Shadow, Some(status)) => Some(status.replay_progress()),
                            _ => None,
                        },
                    })
                    .collect(),
            })
            .collect()
    }

    /// The live status of every running version (active, shadow and warm).
    pub fn status(&self) -> Vec<VersionStatus> {
        self.projectors()
            .into_iter()
            .flat_map(|projector| projector.versions)
            .filter_map(|version| version.status)
            .collect()
    }

    /// One projector.
    pub fn projector(&self, name: &str) -> Option<ProjectorView> {
        self.projectors().into_iter().find(|view| view.name == name)
    }

    /// Plugins-folder files that could not be loaded.
    pub fn rejected(&self) -> Vec<Rejected> {
        read(&self.shared.rejected)
            .iter()
            .map(|(path, reason)| Rejected {
                path: path.clone(),
                reason: reason.clone(),
            })
            .collect()
    }

    /// The read model serving a projector's queries: the active version's database.
    pub fn read_model(&self, name: &str) -> Option<ReadModel> {
        read(&self.shared.routes).get(name).cloned()
    }

    /// Why a projector's queries are refused now, if they are: its read model was
    /// deleted and is being rebuilt.
    pub fn read_model_unavailable(&self, name: &str) -> Option<String> {
        read(&self.shared.unavailable).get(name).cloned()
    }

    /// How long the last swap took: from the shadow being found caught up (the
    /// active worker is stopped then) to the new version serving.
    pub fn last_swap_duration(&self) -> Option<Duration> {
        *lock(&self.shared.last_swap)
    }

    /// Swaps completed since the host started.
    pub fn swaps_total(&self) -> u64 {
        self.shared.swaps_total.load(Ordering::Relaxed)
    }

    /// A projector's dead letters, oldest first, across its versions.
    pub fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>, EngineError> {
        if !read(&self.shared.views).contains_key(name) {
            return Err(EngineError::UnknownProjector(name.to_owned()));
        }
        let control = Control::open(&self.shared.data.control_db())?;
        let mut letters = Vec::new();
        for version in control.versions_of(name)? {
            for (offset, error, micros) in control.dead_letters(name, &version.version, limit)? {
                letters.push(DeadLetter {
                    offset,
                    version: version.version.clone(),
                    error,
                    recorded_at: crate::log::micros_to_timestamp(micros),
                });
            }
        }
        letters.sort_by_key(|letter| letter.offset);
        letters.truncate(limit);
        Ok(letters)
    }

    /// Deploys a component: validates it and starts a shadow replay of the whole log
    /// into a fresh read model, or does nothing if these exact bytes are already
    /// active or replaying. Blocks while the component compiles.
    pub fn deploy(&self, wasm: &[u8]) -> Result<Deployment, EngineError> {
        self.ask(|reply| Command::Deploy {
            wasm: wasm.to_vec(),
            expected_name: None,
            announce: true,
            reply,
        })
    }

    /// [`Engine::deploy`], refusing (before anything starts) a component that declares
    /// a projector other than `name`.
    pub fn deploy_as(&self, name: &str, wasm: &[u8]) -> Result<Deployment, EngineError> {
        self.ask(|reply| Command::Deploy {
            wasm: wasm.to_vec(),
            expected_name: Some(name.to_owned()),
            announce: true,
            reply,
        })
    }

    /// [`Engine::deploy_as`] for a component the cluster asks this node to run: the
    /// same deploy, not reported to [`EngineHooks::deploys`] (it came from there).
    pub fn deploy_replicated(&self, name: &str, wasm: &[u8]) -> Result<Deployment, EngineError> {
        self.ask(|reply| Command::Deploy {
            wasm: wasm.to_vec(),
            expected_name: Some(name.to_owned()),
            announce: false,
            reply,
        })
    }

    /// Swaps a caught-up shadow in now: for `promote = "manual"`, or past a failing
    /// diff gate. Returns the version now active.
    pub fn promote(&self, name: &str) -> Result<String, EngineError> {
        self.ask(|reply| Command::Promote(name.to_owned(), reply))
    }

    /// Re-activates the previous version: at once if it was kept warm, otherwise
    /// after it catches up. Returns that version.
    pub fn rollback(&self, name: &str) -> Result<String, EngineError> {
        self.ask(|reply| Command::Rollback(name.to_owned(), reply))
    }

    /// Restores a projector's read model from its snapshot `id` (`<version>/<checkpoint>`)
    /// and catches it up with the log; queries are refused, never answered from partial
    /// data, until it has. Returns the snapshot's version.
    pub fn restore(&self, name: &str, id: &str) -> Result<String, EngineError> {
        self.ask(|reply| Command::Restore(name.to_owned(), id.to_owned(), reply))
    }

    /// Drops a running shadow. Returns its version.
    pub fn abort(&self, name: &str) -> Result<String, EngineError> {
        self.ask(|reply| Command::Abort(name.to_owned(), reply))
    }

    /// Holds a projector's active version at `ceiling`: it projects no event past
    /// that offset until the hold is lifted (`None`) or a swap replaces it. Returns its
    /// checkpoint once the hold is in force, which stays put if it is at or past the
    /// ceiling. A cluster's coordinated swap uses it so that every node swaps at one
    /// offset.
    pub fn hold(&self, name: &str, ceiling: Option<u64>) -> Result<u64, EngineError> {
        self.ask(|reply| Command::Hold(name.to_owned(), ceiling, reply))
    }

    /// Stops running a projector on this node: every version's worker stops, its
    /// queries are no longer served here, and its read models are deleted (its
    /// snapshots are kept, to start from should it come back). Cluster placement uses
    /// it when the projector's lease is held by other nodes. A projector this node
    /// does not run is no error.
    pub fn release(&self, name: &str) -> Result<(), EngineError> {
        self.ask(|reply| Command::Release(name.to_owned(), reply))
    }

    /// Stops every worker after its batch in flight and waits for them. Idempotent.
    pub fn shutdown(&self) {
        if let Some(mut schedule) = lock(&self.snapshots).take() {
            schedule.stop();
        }
        if let Some(commands) = lock(&self.commands).take() {
            // The controller may already be gone; then there is nothing to stop.
            let _ = commands.send(Command::Shutdown);
        }
        if let Some(thread) = lock(&self.controller).take()
            && thread.join().is_err()
        {
            tracing::error!("the engine's controller thread panicked");
        }
    }

    fn ask<T>(
        &self,
        command: impl FnOnce(mpsc::Sender<Result<T, EngineError>>) -> Command,
    ) -> Result<T, EngineError> {
        if let Some(read_only) = self.read_only() {
            return Err(EngineError::ReadOnly(read_only));
        }
        let (reply, answer) = mpsc::channel();
        lock(&self.commands)
            .as_ref()
            .ok_or(EngineError::Stopped)?
            .send(command(reply))
            .map_err(|_| EngineError::Stopped)?;
        answer.recv().map_err(|_| EngineError::Stopped)?
    }
}

/// What the snapshot schedule needs to see: each active read model and its checkpoint,
/// read from what the controller publishes (never from the workers).
fn active_models(
    shared: &Arc<Shared>,
) -> impl Fn() -> Option<Vec<crate::snapshots::schedule::ActiveModel>> + Send + 'static {
    let shared = Arc::downgrade(shared);
    move || {
        let shared = shared.upgrade()?;
        let routes = read(&shared.routes);
        let views = read(&shared.views);
        Some(
            routes
                .iter()
                .filter_map(|(name, model)| {
                    let status = views
                        .get(name)?
                        .iter()
                        .find(|entry| entry.role == Role::Active && entry.version == model.version)?
                        .status
                        .as_ref()?
                        .snapshot();
                    Some(crate::snapshots::schedule::ActiveModel {
                        projector: name.clone(),
                        version: model.version.clone(),
                        path: model.path.clone(),
                        checkpoint: status.checkpoint,
                    })
                })
                .collect(),
        )
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
