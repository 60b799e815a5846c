//! The watched plugins folder: each debounced change to a `*.wasm` file becomes a
//! command to the controller, which deploys the file if its content is new.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::engine::controller::{Command, Controller};
use crate::engine::error::EngineError;
use crate::engine::shared::write;
use crate::engine::version_files;

/// Quiet time after the last change to a plugins-folder file before it is read, so
/// a file being written in chunks is only used once whole.
pub const PLUGIN_DEBOUNCE: Duration = Duration::from_millis(400);

impl Controller {
    /// A plugins-folder file appeared or changed: deploy it if its content is new.
    /// A file that does not load yet may still be being written; it is retried on its
    /// next change and reported as rejected meanwhile.
    pub(super) fn plugin_changed(&mut self, path: &Path) {
        if !is_plugin_file(path) {
            return;
        }
        let Ok(bytes) = std::fs::read(path) else {
            // Deleted or renamed away: the deployed versions stay as they are.
            write(&self.shared.rejected).remove(path);
            return;
        };
        let sha = version_files::sha256_hex(&bytes);
        if self.control.plugin_sha(path).ok().flatten().as_deref() == Some(sha.as_str()) {
            return;
        }
        match self.deploy(&bytes, None, true) {
            Ok(deployment) => {
                tracing::info!(file = %path.display(), projector = %deployment.projector, version = %deployment.version, outcome = ?deployment.outcome, "plugin file deployed");
                write(&self.shared.rejected).remove(path);
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
}

/// Watches the plugins folder; each debounced change becomes a controller command.
pub(in crate::engine) fn watch_plugins(
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
pub(super) fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
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
