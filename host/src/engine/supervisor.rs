//! The engine: loads the projectors in the plugins folder and runs one worker per
//! active version until shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::control::{Control, ControlError, Role};
use crate::engine::projection::BatchLimits;
use crate::engine::status::{StatusCell, VersionStatus};
use crate::engine::worker::{self, WorkerSpec};
use crate::log::EventLog;
use crate::runtime::{DbOptions, Runtime, RuntimeConfig, RuntimeError};

/// Where the engine keeps and finds things.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The data directory.
    pub data_dir: DataDir,
    /// The folder of projector components (`*.wasm`).
    pub plugins_dir: PathBuf,
    /// The configuration.
    pub config: Config,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The WebAssembly runtime could not start.
    #[error("cannot start the WebAssembly runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// `control.db` failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A file or folder could not be read or created.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Two components in the plugins folder declare the same projector name.
    #[error(
        "{first} and {second} both declare the projector `{name}`; keep one file per projector in the plugins folder"
    )]
    DuplicateProjector {
        /// The projector name.
        name: String,
        /// One file.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
}

/// A component in the plugins folder that could not be loaded. The engine runs the
/// others and reports these.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// Why it was refused.
    pub reason: String,
}

/// The running engine.
pub struct Engine {
    workers: Vec<(StatusCell, JoinHandle<()>)>,
    rejected: Vec<Rejected>,
    shutdown: watch::Sender<bool>,
}

impl Engine {
    /// Loads every projector component in the plugins folder and starts a worker for
    /// each. A component that cannot be loaded is reported in [`Engine::rejected`]
    /// and skipped; the others run.
    pub fn start(
        options: &EngineOptions,
        log: &EventLog,
        runtime: &Handle,
    ) -> Result<Engine, EngineError> {
        let config = &options.config;
        let data = &options.data_dir;
        let wasm_runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(data.cache()),
            limits: config.limits.clone(),
        })?;
        let control_path = data.control_db();
        let mut control = Control::open(&control_path)?;
        create_dir(&data.projections())?;
        create_dir(&options.plugins_dir)?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut engine = Engine {
            workers: Vec::new(),
            rejected: Vec::new(),
            shutdown,
        };
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in plugin_files(&options.plugins_dir)? {
            let loaded = match std::fs::read(&path)
                .map_err(|error| error.to_string())
                .and_then(|bytes| {
                    let loaded = wasm_runtime
                        .load(&bytes)
                        .map_err(|error| error.to_string())?;
                    Ok((bytes, loaded))
                }) {
                Ok(loaded) => loaded,
                Err(reason) => {
                    tracing::error!(path = %path.display(), "projector component refused: {reason}");
                    engine.rejected.push(Rejected { path, reason });
                    continue;
                }
            };
            let (bytes, loaded) = loaded;
            let name = loaded.info().name.clone();
            if let Some(first) = seen.insert(name.clone(), path.clone()) {
                return Err(EngineError::DuplicateProjector {
                    name,
                    first,
                    second: path,
                });
            }
            let version = loaded.version().to_owned();
            let dir = data.projector_dir(&name);
            create_dir(&dir)?;
            keep_component(&data.version_wasm(&name, &version), &bytes)?;
            control.register_version(&name, &version, loaded.sha256(), Role::Active)?;
            control.activate(&name, &version)?;

            let section = config.projector(&name);
            let spec = WorkerSpec {
                projector: name.clone(),
                db_path: data.version_db(&name, &version),
                loaded,
                db_options: DbOptions::default(),
                control_path: control_path.clone(),
                policy: section.on_poison,
                batch: BatchLimits {
                    max_events: section.batch_size.unwrap_or(config.engine.batch_size),
                    max_bytes: config.engine.batch_bytes,
                },
                retry: (
                    Duration::from_millis(config.engine.retry_initial_ms),
                    Duration::from_millis(config.engine.retry_max_ms),
                ),
                external_poll: Duration::from_millis(config.engine.external_poll_ms),
            };
            let status = StatusCell::new(&name, &version);
            let thread = worker::spawn(
                spec,
                log,
                status.clone(),
                shutdown_rx.clone(),
                runtime.clone(),
            )
            .map_err(|source| EngineError::Io {
                path: dir.clone(),
                source,
            })?;
            engine.workers.push((status, thread));
        }
        Ok(engine)
    }

    /// The status of every running version.
    pub fn status(&self) -> Vec<VersionStatus> {
        self.workers
            .iter()
            .map(|(status, _)| status.snapshot())
            .collect()
    }

    /// Components in the plugins folder that could not be loaded.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// Stops every worker after its batch in flight, and waits for them.
    pub fn shutdown(self) {
        self.shutdown.send_replace(true);
        for (status, thread) in self.workers {
            if thread.join().is_err() {
                let snapshot = status.snapshot();
                tracing::error!(projector = %snapshot.projector, "worker thread panicked");
            }
        }
    }
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
        if path.extension().is_some_and(|ext| ext == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Stores a version's component beside its read model, written whole (temp file, then
/// rename) so a crash never leaves a torn copy.
fn keep_component(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    if path.exists() {
        return Ok(());
    }
    let io = |source| EngineError::Io {
        path: path.to_owned(),
        source,
    };
    let temp = path.with_extension("wasm.tmp");
    std::fs::write(&temp, bytes).map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

fn create_dir(path: &Path) -> Result<(), EngineError> {
    std::fs::create_dir_all(path).map_err(|source| EngineError::Io {
        path: path.to_owned(),
        source,
    })
}
