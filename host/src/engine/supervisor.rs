//! The engine: runs every projector's versions and moves them between roles.
//!
//! One controller thread owns every projector's slot (its active, shadow and warm
//! previous workers). Deploys, promotions, rollbacks, aborts and plugin-folder changes
//! are commands sent to it, so no two of them ever interleave; between commands it
//! checks whether a shadow has caught up and swaps it in. Readers never talk to the
//! controller: they take the active read model from [`Engine::read_model`], which the
//! controller updates as the last step of a swap.
//!
//! # The swap, and why readers never go backwards
//! 1. The active worker is stopped after its batch in flight; its checkpoint `A` is
//!    final, and readers keep reading its (complete, consistent) read model.
//! 2. The shadow keeps running until its checkpoint is at least `A`.
//! 3. The shadow makes its read model durable (it replays with `synchronous=OFF`).
//! 4. `control.db` flips the active version in one transaction: this is the commit
//!    point. A crash before it leaves the old version active and the shadow resuming
//!    from its own checkpoint; a crash after it leaves the new version active.
//! 5. The stable path `projections/<name>.db` is re-pointed (a symlink replaced by
//!    rename), and the host's own queries are routed to the new version.
//!
//! A reader that saw offset `A` from the old version therefore sees at least `A` from
//! the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::runtime::Handle;

use crate::config::{Config, PromoteMode};
use crate::data_dir::DataDir;
use crate::engine::control::{Control, ControlError, Role};
use crate::engine::status::{ReplayProgress, State, VersionStatus};
use crate::engine::swap;
use crate::engine::worker::{self, Mode, WorkerHandle, WorkerSpec};
use crate::log::EventLog;
use crate::runtime::{DbOptions, LoadedProjector, Runtime, RuntimeConfig, RuntimeError};

/// How often the controller looks at shadows when no command arrives.
const CONTROLLER_TICK: Duration = Duration::from_millis(20);

/// How long a swap waits for the shadow to reach the stopped active version's
/// checkpoint before giving up and restarting the active version.
const SWAP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a swap waits for the shadow to make its read model durable.
const SWAP_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Quiet time after the last change to a plugins-folder file before it is read, so
/// a file being written in chunks is only used once whole.
pub const PLUGIN_DEBOUNCE: Duration = Duration::from_millis(400);

/// Where the engine keeps and finds things.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The data directory.
    pub data_dir: DataDir,
    /// The folder of projector components (`*.wasm`), watched for changes.
    pub plugins_dir: PathBuf,
    /// The configuration.
    pub config: Config,
}

/// Why the engine could not start, or refused a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No projector of that name is known.
    #[error("no projector named `{0}`; `refract status` lists the projectors")]
    UnknownProjector(String),
    /// The component is not a valid projector.
    #[error("invalid projector component: {0}")]
    InvalidComponent(#[source] RuntimeError),
    /// The command does not apply to the projector's current versions.
    #[error("{0}")]
    Conflict(String),
    /// A component was deployed under one projector's name but declares another.
    #[error(
        "the component declares the projector `{declared}`, not `{expected}`; deploy it as `{declared}`"
    )]
    NameMismatch {
        /// The name it was deployed as.
        expected: String,
        /// The name the component declares.
        declared: String,
    },
    /// The WebAssembly runtime could not start.
    #[error("cannot start the WebAssembly runtime: {0}")]
    Runtime(#[source] RuntimeError),
    /// `control.db` failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The plugins folder cannot be watched.
    #[error("cannot watch the plugins folder {path}: {message}")]
    Watch {
        /// The folder.
        path: PathBuf,
        /// What the watcher said.
        message: String,
    },
    /// The engine has shut down.
    #[error("the engine has shut down")]
    Stopped,
}

/// A plugins-folder component that could not be loaded. The engine runs the others
/// and reports these until the file changes.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// Why it was refused.
    pub reason: String,
}

/// The outcome of a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployOutcome {
    /// A shadow replay started (or the first version of a new projector).
    Started,
    /// That exact component is already the active version: nothing to do.
    AlreadyActive,
    /// That exact component is already replaying as the shadow: nothing to do.
    AlreadyDeploying,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    /// The projector the component declares.
    pub projector: String,
    /// The component's version (short content hash).
    pub version: String,
    /// What happened.
    pub outcome: DeployOutcome,
}

/// One version of a projector, as reported by [`Engine::projectors`].
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// The short content hash.
    pub version: String,
    /// Its role.
    pub role: Role,
    /// Live status, while a worker runs it.
    pub status: Option<VersionStatus>,
    /// Replay progress, for a shadow.
    pub replay: Option<ReplayProgress>,
}

/// A projector and its versions.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectorView {
    /// The projector's name.
    pub name: String,
    /// The version serving reads, if any has caught up yet.
    pub active_version: Option<String>,
    /// Every known version, the running ones first.
    pub versions: Vec<VersionView>,
}

/// The read model that serves a projector's queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadModel {
    /// The projector.
    pub projector: String,
    /// The active version.
    pub version: String,
    /// Its database file. Open it read-only, per query.
    pub path: PathBuf,
}

/// An event a projector version could not apply, recorded under the `skip` policy.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The event's log offset.
    pub offset: u64,
    /// The version that failed on it.
    pub version: String,
    /// Why.
    pub error: String,
    /// When it was recorded.
    pub recorded_at: jiff::Timestamp,
}

/// The running engine. Share it behind an `Arc`; every method takes `&self`.
pub struct Engine {
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    controller: Mutex<Option<JoinHandle<()>>>,
    _watcher: Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>>,
}

/// State readable without the controller.
struct Shared {
    data: DataDir,
    log: EventLog,
    routes: RwLock<BTreeMap<String, ReadModel>>,
    views: RwLock<BTreeMap<String, Vec<VersionEntry>>>,
    rejected: RwLock<BTreeMap<PathBuf, String>>,
    swaps_total: AtomicU64,
    /// How long the last swap took, from the shadow being found caught up to the new
    /// version serving.
    last_swap: Mutex<Option<Duration>>,
}

/// A version as published for readers; `status` is live while a worker runs it.
#[derive(Clone)]
struct VersionEntry {
    version: String,
    role: Role,
    status: Option<crate::engine::status::StatusCell>,
}

enum Command {
    Deploy {
        wasm: Vec<u8>,
        expected_name: Option<String>,
        reply: mpsc::Sender<Result<Deployment, EngineError>>,
    },
    Promote(String, mpsc::Sender<Result<String, EngineError>>),
    Rollback(String, mpsc::Sender<Result<String, EngineError>>),
    Abort(String, mpsc::Sender<Result<String, EngineError>>),
    PluginChanged(PathBuf),
    Shutdown,
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
        let data = options.data_dir.clone();
        let wasm_runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(data.cache()),
            limits: options.config.limits.clone(),
        })
        .map_err(EngineError::Runtime)?;
        create_dir(&data.projections())?;
        create_dir(&options.plugins_dir)?;
        // One spelling of every plugin path, so the watcher's absolute paths and the
        // startup scan's agree in `control.db`.
        let plugins_dir = options
            .plugins_dir
            .canonicalize()
            .map_err(|source| EngineError::Io {
                path: options.plugins_dir.clone(),
                source,
            })?;
        let control = Control::open(&data.control_db())?;
        let shared = Arc::new(Shared {
            data: data.clone(),
            log: log.clone(),
            routes: RwLock::new(BTreeMap::new()),
            views: RwLock::new(BTreeMap::new()),
            rejected: RwLock::new(BTreeMap::new()),
            swaps_total: AtomicU64::new(0),
            last_swap: Mutex::new(None),
        });
        let mut controller = Controller {
            shared: shared.clone(),
            config: options.config.clone(),
            wasm_runtime,
            control,
            runtime: runtime.clone(),
            slots: BTreeMap::new(),
            dirty: true,
        };
        controller.restore()?;
        for path in plugin_files(&plugins_dir)? {
            controller.plugin_changed(&path);
        }
        controller.publish();

        let (commands, inbox) = mpsc::channel();
        let watcher = watch_plugins(&plugins_dir, commands.clone())?;
        let thread = std::thread::Builder::new()
            .name("refract-controller".into())
            .spawn(move || controller.run(&inbox))
            .map_err(|source| EngineError::Io {
                path: data.root().to_owned(),
                source,
            })?;
        Ok(Engine {
            shared,
            commands: Mutex::new(Some(commands)),
            controller: Mutex::new(Some(thread)),
            _watcher: Some(watcher),
        })
    }

    /// The event log; appends made through it wake the workers at once.
    pub fn log(&self) -> &EventLog {
        &self.shared.log
    }

    /// Every projector, by name.
    pub fn projectors(&self) -> Vec<ProjectorView> {
        let routes = read(&self.shared.routes);
        read(&self.shared.views)
            .iter()
            .map(|(name, versions)| ProjectorView {
                name: name.clone(),
                active_version: routes.get(name).map(|model| model.version.clone()),
                versions: versions
                    .iter()
                    .map(|entry| VersionView {
                        version: entry.version.clone(),
                        role: entry.role,
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
            reply,
        })
    }

    /// [`Engine::deploy`], refusing (before anything starts) a component that declares
    /// a projector other than `name`.
    pub fn deploy_as(&self, name: &str, wasm: &[u8]) -> Result<Deployment, EngineError> {
        self.ask(|reply| Command::Deploy {
            wasm: wasm.to_vec(),
            expected_name: Some(name.to_owned()),
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

    /// Drops a running shadow. Returns its version.
    pub fn abort(&self, name: &str) -> Result<String, EngineError> {
        self.ask(|reply| Command::Abort(name.to_owned(), reply))
    }

    /// Stops every worker after its batch in flight and waits for them. Idempotent.
    pub fn shutdown(&self) {
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
        let (reply, answer) = mpsc::channel();
        lock(&self.commands)
            .as_ref()
            .ok_or(EngineError::Stopped)?
            .send(command(reply))
            .map_err(|_| EngineError::Stopped)?;
        answer.recv().map_err(|_| EngineError::Stopped)?
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
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
}

/// What [`Controller::verdict`] decided about a shadow.
enum Verdict {
    /// Still replaying, or waiting for `refract promote`.
    Wait,
    /// It failed; drop it.
    Failed { version: String, message: String },
    /// The diff gate refused it.
    Gated(String),
    /// Swap it in.
    Swap,
}

/// The controller thread's state.
struct Controller {
    shared: Arc<Shared>,
    config: Config,
    wasm_runtime: Runtime,
    control: Control,
    runtime: Handle,
    slots: BTreeMap<String, Slot>,
    /// The slots changed since they were last published.
    dirty: bool,
}

impl Controller {
    fn run(mut self, inbox: &mpsc::Receiver<Command>) {
        loop {
            let received = inbox.recv_timeout(CONTROLLER_TICK);
            if received.is_ok() {
                self.dirty = true;
            }
            match received {
                Ok(Command::Deploy {
                    wasm,
                    expected_name,
                    reply,
                }) => {
                    let result = self.deploy(&wasm, expected_name.as_deref());
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
                Ok(Command::PluginChanged(path)) => self.plugin_changed(&path),
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_shadows();
            if self.dirty {
                self.publish();
            }
        }
        for slot in std::mem::take(&mut self.slots).into_values() {
            for worker in [slot.shadow, slot.active, slot.warm].into_iter().flatten() {
                worker.stop();
            }
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
            let worker = self.spawn(&name, loaded, mode)?;
            let slot = self.slots.entry(name.clone()).or_default();
            match mode {
                Mode::Active => {
                    swap::repoint(&self.shared.data, &name, &record.version).map_err(|source| {
                        EngineError::Io {
                            path: self.shared.data.stable_db(&name),
                            source,
                        }
                    })?;
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
            swap::remove_strays(&self.shared.data, &name, &self.kept_versions(&name)?);
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

    fn spawn(
        &self,
        name: &str,
        loaded: LoadedProjector,
        mode: Mode,
    ) -> Result<WorkerHandle, EngineError> {
        let config = &self.config;
        let section = config.projector(name);
        let version = loaded.version().to_owned();
        // The projector's own `[projectors.<name>.limits]` (validated with the config).
        let limits = config
            .projector_limits(name)
            .map_err(|(key, problem)| EngineError::Conflict(format!("`{key}` {problem}")))?;
        let loaded = loaded
            .with_limits(limits)
            .map_err(EngineError::InvalidComponent)?;
        let spec = WorkerSpec {
            projector: name.to_owned(),
            db_path: self.shared.data.version_db(name, &version),
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
        };
        worker::spawn(spec, &self.shared.log, self.runtime.clone()).map_err(|source| {
            EngineError::Io {
                path: self.shared.data.projector_dir(name),
                source,
            }
        })
    }

    /// A plugins-folder file appeared or changed: deploy it if its content is new.
    /// A file that does not load yet may still be being written; it is retried on its
    /// next change and reported as rejected meanwhile.
    fn plugin_changed(&mut self, path: &Path) {
        if !is_plugin_file(path) {
            return;
        }
        let Ok(bytes) = std::fs::read(path) else {
            // Deleted or renamed away: the deployed versions stay as they are.
            read_write_remove(&self.shared.rejected, path);
            return;
        };
        let sha = swap::sha256_hex(&bytes);
        if self.control.plugin_sha(path).ok().flatten().as_deref() == Some(sha.as_str()) {
            return;
        }
        match self.deploy(&bytes, None) {
            Ok(deployment) => {
                tracing::info!(file = %path.display(), projector = %deployment.projector, version = %deployment.version, outcome = ?deployment.outcome, "plugin file deployed");
                read_write_remove(&self.shared.rejected, path);
                if let Err(error) = self.control.record_plugin(path, &sha) {
                    tracing::warn!(file = %path.display(), "cannot record the deployed plugin: {error}");
                }
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), "plugin file not deployed: {error}");
                write(&self.shared.rejected).insert(path.to_owned(), error.to_string());
            }
        }
    }

    fn deploy(
        &mut self,
        bytes: &[u8],
        expected_name: Option<&str>,
    ) -> Result<Deployment, EngineError> {
        let loaded = self
            .wasm_runtime
            .load(bytes)
            .map_err(EngineError::InvalidComponent)?;
        let name = loaded.info().name.clone();
        if let Some(expected) = expected_name
            && expected != name
        {
            return Err(EngineError::NameMismatch {
                expected: expected.to_owned(),
                declared: name,
            });
        }
        let version = loaded.version().to_owned();
        let deployment = |outcome| Deployment {
            projector: name.clone(),
            version: version.clone(),
            outcome,
        };
        let slot = self.slots.entry(name.clone()).or_default();
        if slot
            .active
            .as_ref()
            .is_some_and(|worker| worker.version == version)
        {
            return Ok(deployment(DeployOutcome::AlreadyActive));
        }
        if slot
            .shadow
            .as_ref()
            .is_some_and(|worker| worker.version == version)
        {
            return Ok(deployment(DeployOutcome::AlreadyDeploying));
        }
        create_dir(&self.shared.data.projector_dir(&name))?;
        swap::keep_component(&self.shared.data.version_wasm(&name, &version), bytes).map_err(
            |source| EngineError::Io {
                path: self.shared.data.version_wasm(&name, &version),
                source,
            },
        )?;
        self.replace_shadow(&name, loaded, false)?;
        tracing::info!(projector = %name, %version, "shadow replay started");
        Ok(deployment(DeployOutcome::Started))
    }

    /// Makes `loaded` the projector's shadow, dropping any other shadow. A version that
    /// is running warm moves over to shadow duty (one worker per read model, always).
    fn replace_shadow(
        &mut self,
        name: &str,
        loaded: LoadedProjector,
        forced: bool,
    ) -> Result<(), EngineError> {
        let version = loaded.version().to_owned();
        self.drop_shadow(name, "replaced by a newer deploy")?;
        let slot = self.slots.entry(name.to_owned()).or_default();
        if let Some(warm) = slot.warm.take_if(|warm| warm.version == version) {
            warm.stop();
        }
        self.control
            .register_version(name, &version, loaded.sha256(), Role::Shadow)?;
        self.control
            .set_role_as(name, &version, Role::Shadow, forced)?;
        let has_active = self
            .slots
            .get(name)
            .is_some_and(|slot| slot.active.is_some());
        let mode = if has_active {
            Mode::Shadow
        } else {
            Mode::Initial
        };
        let worker = self.spawn(name, loaded, mode)?;
        let slot = self.slots.entry(name.to_owned()).or_default();
        slot.shadow = Some(worker);
        slot.shadow_forced = forced;
        slot.gated = None;
        Ok(())
    }

    /// Marks a dropped shadow: a rollback target goes back to being the previous
    /// version; any other is retired and its files deleted.
    fn retire_shadow(
        &mut self,
        name: &str,
        version: &str,
        rollback_target: bool,
        why: &str,
    ) -> Result<(), EngineError> {
        if rollback_target {
            self.control.set_role(name, version, Role::Previous)?;
        } else {
            self.control.set_role(name, version, Role::Retired)?;
            self.control
                .set_state(name, version, "retired", Some(why))?;
            swap::remove_version_files(&self.shared.data, name, version);
        }
        Ok(())
    }

    /// The version a rollback returns to: the most recently replaced one.
    fn previous_version(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self.control.previous_versions(name)?.into_iter().next())
    }

    /// The projector's slot and its shadow, or why `action` cannot apply.
    fn slot_with_shadow(
        &self,
        name: &str,
        action: &str,
    ) -> Result<(&Slot, &WorkerHandle), EngineError> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| EngineError::UnknownProjector(name.to_owned()))?;
        let shadow = slot.shadow.as_ref().ok_or_else(|| {
            EngineError::Conflict(format!(
                "projector `{name}` has no shadow to {action}; deploy a new version first"
            ))
        })?;
        Ok((slot, shadow))
    }

    fn promote(&mut self, name: &str) -> Result<String, EngineError> {
        let (slot, shadow) = self.slot_with_shadow(name, "promote")?;
        let status = shadow.status.snapshot();
        let active_checkpoint = slot
            .active
            .as_ref()
            .map_or(0, |active| active.status.snapshot().checkpoint);
        if status.checkpoint < active_checkpoint {
            return Err(EngineError::Conflict(format!(
                "the shadow of `{name}` (version {}) is at offset {}, behind the active version at {active_checkpoint}; \
                 wait until it has caught up (`refract status`), then promote",
                status.version, status.checkpoint
            )));
        }
        self.swap(name)
    }

    fn rollback(&mut self, name: &str) -> Result<String, EngineError> {
        if !self.slots.contains_key(name) {
            return Err(EngineError::UnknownProjector(name.to_owned()));
        }
        let Some(previous) = self.previous_version(name)? else {
            return Err(EngineError::Conflict(format!(
                "projector `{name}` has no previous version to roll back to"
            )));
        };
        let loaded = self.load_stored(name, &previous).map_err(|reason| {
            EngineError::Conflict(format!("cannot roll back to version {previous}: {reason}"))
        })?;
        let warm = self
            .slots
            .get(name)
            .and_then(|slot| slot.warm.as_ref())
            .is_some_and(|warm| warm.version == previous);
        if warm {
            // Instant: the warm worker has been tailing the log all along. It becomes
            // the shadow (same worker, same read model) and is swapped in right away.
            self.drop_shadow(name, "replaced by a rollback")?;
            let slot = self.slots.entry(name.to_owned()).or_default();
            slot.shadow = slot.warm.take();
            slot.shadow_forced = true;
            self.control
                .set_role_as(name, &previous, Role::Shadow, true)?;
            return self.swap(name);
        }
        self.replace_shadow(name, loaded, true)?;
        tracing::info!(projector = %name, version = %previous, "rolling back: the previous version is catching up");
        Ok(previous)
    }

    fn abort(&mut self, name: &str) -> Result<String, EngineError> {
        let version = self.slot_with_shadow(name, "abort")?.1.version.clone();
        // An aborted rollback leaves the previous version as it was.
        self.drop_shadow(name, "aborted by an operator")?;
        tracing::info!(projector = %name, %version, "shadow aborted");
        Ok(version)
    }

    /// Stops the projector's shadow, if it has one, and records why: a rollback target
    /// goes back to being the previous version; any other is retired, files deleted.
    fn drop_shadow(&mut self, name: &str, why: &str) -> Result<(), EngineError> {
        let slot = self.slots.entry(name.to_owned()).or_default();
        let rollback_target = std::mem::take(&mut slot.shadow_forced);
        slot.gated = None;
        let Some(shadow) = slot.shadow.take() else {
            return Ok(());
        };
        let version = shadow.version.clone();
        shadow.stop();
        self.retire_shadow(name, &version, rollback_target, why)
    }

    /// Swaps in every shadow that has caught up, and drops failed ones.
    fn check_shadows(&mut self) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            match self.verdict(&name) {
                Verdict::Wait => {}
                Verdict::Failed { version, message } => {
                    let slot = self.slots.entry(name.clone()).or_default();
                    if let Some(shadow) = slot.shadow.take() {
                        shadow.stop();
                    }
                    slot.shadow_forced = false;
                    if let Err(error) = self.control.set_role(&name, &version, Role::Failed) {
                        tracing::error!(projector = %name, "cannot record the failed shadow: {error}");
                    }
                    tracing::error!(projector = %name, %version, "shadow failed; the active version is untouched: {message}");
                    self.dirty = true;
                }
                Verdict::Gated(message) => {
                    let slot = self.slots.entry(name.clone()).or_default();
                    if let Some(shadow) = &slot.shadow {
                        shadow
                            .status
                            .update(|status| status.last_error = Some(message.clone()));
                    }
                    tracing::warn!(projector = %name, "{message}");
                    slot.gated = Some(message);
                }
                Verdict::Swap => {
                    if let Err(error) = self.swap(&name) {
                        tracing::error!(projector = %name, "swap failed: {error}");
                    }
                }
            }
        }
    }

    /// What to do about a projector's shadow now.
    fn verdict(&self, name: &str) -> Verdict {
        let Some(slot) = self.slots.get(name) else {
            return Verdict::Wait;
        };
        let Some(shadow) = &slot.shadow else {
            return Verdict::Wait;
        };
        let status = shadow.status.snapshot();
        if let State::Failed { message } = status.state {
            return Verdict::Failed {
                version: status.version,
                message,
            };
        }
        // Caught up: live at the head, and at or past what readers of the active
        // version see.
        let caught_up = status.state == State::Live
            && slot
                .active
                .as_ref()
                .is_none_or(|active| status.checkpoint >= active.status.snapshot().checkpoint);
        let section = self.config.projector(name);
        let automatic =
            slot.active.is_none() || slot.shadow_forced || section.promote == PromoteMode::Auto;
        if !caught_up || !automatic || slot.gated.is_some() {
            return Verdict::Wait;
        }
        if let (Some(gate), false, Some(active)) =
            (&section.diff_gate, slot.shadow_forced, &slot.active)
        {
            let active_db = self.shared.data.version_db(name, &active.version);
            let shadow_db = self.shared.data.version_db(name, &status.version);
            if let Err(reason) = swap::run_gate(gate, &shadow_db, Some(&active_db)) {
                return Verdict::Gated(format!(
                    "diff gate {} refused the swap to version {}: {reason}; fix the projector, or `refract promote {name}` to swap anyway",
                    gate.display(),
                    status.version
                ));
            }
        }
        Verdict::Swap
    }

    /// Swaps the shadow in: the sequence in the module documentation.
    fn swap(&mut self, name: &str) -> Result<String, EngineError> {
        let started = Instant::now();
        let slot = self.slots.entry(name.to_owned()).or_default();
        let shadow = slot
            .shadow
            .take()
            .ok_or_else(|| EngineError::Conflict(format!("projector `{name}` has no shadow")))?;
        let old = slot.active.take();
        let old_checkpoint = old
            .as_ref()
            .map_or(0, |active| active.status.snapshot().checkpoint);
        // 1. Stop the active worker; its checkpoint is then final.
        let old_loaded = old.as_ref().map(|active| active.loaded.clone());
        let final_checkpoint = match old {
            Some(active) => {
                let status = active.status.clone();
                active.stop();
                status.snapshot().checkpoint.max(old_checkpoint)
            }
            None => 0,
        };
        // 2. Let the shadow reach it.
        let deadline = Instant::now() + SWAP_CATCH_UP_TIMEOUT;
        while shadow.status.snapshot().checkpoint < final_checkpoint {
            if Instant::now() > deadline || shadow.is_finished() {
                return self.abandon_swap(
                    name,
                    shadow,
                    old_loaded,
                    "the shadow did not catch up with the active version",
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // 3. Durable before it is trusted.
        if let Err(reason) = shadow.sync(SWAP_SYNC_TIMEOUT) {
            return self.abandon_swap(name, shadow, old_loaded, &reason);
        }
        let version = shadow.version.clone();
        // 4. The commit point.
        if let Err(error) = self.control.activate(name, &version) {
            return self.abandon_swap(name, shadow, old_loaded, &error.to_string());
        }
        // 5. The stable path and the host's own queries.
        if let Err(error) = swap::repoint(&self.shared.data, name, &version) {
            tracing::error!(projector = %name, "cannot re-point {}: {error}", self.shared.data.stable_db(name).display());
        }
        write(&self.shared.routes).insert(
            name.to_owned(),
            ReadModel {
                projector: name.to_owned(),
                version: version.clone(),
                path: self.shared.data.version_db(name, &version),
            },
        );
        shadow.set_mode(Mode::Active);
        let keep_previous = self.config.projector(name).keep_previous;
        let warm = match (&old_loaded, keep_previous) {
            (Some(loaded), true) => Some(self.spawn(name, loaded.clone(), Mode::Warm)?),
            _ => None,
        };
        let slot = self.slots.entry(name.to_owned()).or_default();
        if let Some(stale) = slot.warm.take() {
            stale.stop();
        }
        slot.active = Some(shadow);
        slot.warm = warm;
        slot.shadow_forced = false;
        slot.gated = None;
        if old_loaded.is_some() {
            // A first version's activation replaces nothing: not a swap.
            self.shared.swaps_total.fetch_add(1, Ordering::Relaxed);
            *lock(&self.shared.last_swap) = Some(started.elapsed());
        }
        self.dirty = true;
        self.prune(name);
        tracing::info!(projector = %name, %version, took_ms = started.elapsed().as_millis() as u64, "swapped in");
        Ok(version)
    }

    /// A swap that cannot finish: the old version goes back to serving, the shadow keeps
    /// replaying, and the caller hears why.
    fn abandon_swap(
        &mut self,
        name: &str,
        shadow: WorkerHandle,
        old: Option<LoadedProjector>,
        reason: &str,
    ) -> Result<String, EngineError> {
        let restarted = old
            .map(|loaded| self.spawn(name, loaded, Mode::Active))
            .transpose()?;
        let slot = self.slots.entry(name.to_owned()).or_default();
        slot.active = restarted;
        slot.shadow = Some(shadow);
        Err(EngineError::Conflict(format!(
            "the swap of `{name}` did not happen, and the active version keeps serving: {reason}"
        )))
    }

    /// The versions whose read models stay on disk: the active one and the shadow,
    /// plus the most recently replaced previous versions, so that `keep_versions`
    /// read models are kept besides the shadow.
    fn kept_versions(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let keep = self.config.projector(name).keep_versions;
        let mut kept: Vec<String> = self
            .control
            .versions_of(name)?
            .into_iter()
            .filter(|record| matches!(record.role, Role::Active | Role::Shadow))
            .map(|record| record.version)
            .collect();
        let previous = self.control.previous_versions(name)?;
        kept.extend(previous.into_iter().take(keep.saturating_sub(1)));
        Ok(kept)
    }

    /// Retires previous versions beyond `keep_versions` after a swap, and deletes
    /// their read models.
    fn prune(&mut self, name: &str) {
        let kept = match self.kept_versions(name) {
            Ok(kept) => kept,
            Err(error) => {
                tracing::warn!(projector = %name, "cannot list versions to prune: {error}");
                return;
            }
        };
        let Ok(previous) = self.control.previous_versions(name) else {
            return;
        };
        for version in previous
            .into_iter()
            .filter(|version| !kept.contains(version))
        {
            if let Some(warm) = self
                .slots
                .get_mut(name)
                .and_then(|slot| slot.warm.take_if(|warm| warm.version == version))
            {
                warm.stop();
            }
            if let Err(error) = self.control.set_role(name, &version, Role::Retired) {
                tracing::warn!(projector = %name, %version, "cannot retire an old version: {error}");
                continue;
            }
            swap::remove_version_files(&self.shared.data, name, &version);
        }
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
                (Role::Shadow, &slot.shadow),
                (Role::Previous, &slot.warm),
            ] {
                if let Some(worker) = worker {
                    entries.push(VersionEntry {
                        version: worker.version.clone(),
                        role,
                        status: Some(worker.status.clone()),
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
                });
            }
        }
        *write(&self.shared.views) = views;
        self.dirty = false;
    }
}

/// Watches the plugins folder; each debounced change becomes a controller command.
fn watch_plugins(
    dir: &Path,
    commands: mpsc::Sender<Command>,
) -> Result<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>, EngineError> {
    let watch_error = |error: notify::Error| EngineError::Watch {
        path: dir.to_owned(),
        message: error.to_string(),
    };
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        PLUGIN_DEBOUNCE,
        move |result: notify_debouncer_mini::DebounceEventResult| match result {
            Ok(events) => {
                for event in events {
                    // The controller is gone only during shutdown.
                    let _ = commands.send(Command::PluginChanged(event.path));
                }
            }
            Err(error) => tracing::warn!("plugins folder watcher: {error}"),
        },
    )
    .map_err(watch_error)?;
    debouncer
        .watcher()
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    Ok(debouncer)
}

/// A projector component in the plugins folder: `*.wasm`, not hidden (editors and
/// `cp --backup` write hidden or suffixed temporary files).
fn is_plugin_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_none_or(|name| name.starts_with('.'));
    !hidden && path.extension().is_some_and(|ext| ext == "wasm")
}

/// The `*.wasm` files in the plugins folder, sorted by name.
fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let io = |source| EngineError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if is_plugin_file(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn create_dir(path: &Path) -> Result<(), EngineError> {
    std::fs::create_dir_all(path).map_err(|source| EngineError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_write_remove(map: &RwLock<BTreeMap<PathBuf, String>>, path: &Path) {
    write(map).remove(path);
}
