//! [`EngineError`]: why the engine could not start, or refused a command.

use std::path::PathBuf;

use crate::engine::control::ControlError;
use crate::runtime::RuntimeError;

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
