//! [`EngineError`]: why the engine could not start, or refused a command.

use std::path::PathBuf;

use crate::engine::control::ControlError;
use crate::engine::integrity::LogBehindReadModels;
use crate::engine::views::ReadOnly;
use crate::log::LogError;
use crate::runtime::RuntimeError;
use crate::storage_fault::StorageFault;

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
    /// A file or folder could not be read or written. A storage fault (a full disk,
    /// a permission) comes with its fix.
    #[error("{}: {source}{}", path.display(), io_advice(path, source))]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A folder Refract needs is a file.
    #[error("{} is a file, but it must be {role}; move the file away, or {fix}", path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
        /// What the folder is for.
        role: &'static str,
        /// Where to point Refract instead.
        fix: &'static str,
    },
    /// The plugins folder cannot be watched.
    #[error("cannot watch the plugins folder {path}: {message}")]
    Watch {
        /// The folder.
        path: PathBuf,
        /// What the watcher said.
        message: String,
    },
    /// A read model has projected events the log does not hold.
    #[error(transparent)]
    LogBehindReadModels(#[from] LogBehindReadModels),
    /// The event log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The engine runs read-only and cannot carry out the command.
    #[error("the host is read-only: {}", .0.reason)]
    ReadOnly(ReadOnly),
    /// The engine has shut down.
    #[error("the engine has shut down")]
    Stopped,
}

/// The fix for a storage fault behind an I/O error, as `; <advice>`, or nothing.
fn io_advice(path: &std::path::Path, source: &std::io::Error) -> String {
    StorageFault::of_io(source).map_or_else(String::new, |fault| {
        format!("; {}", fault.advice(path, "a file of the data directory"))
    })
}
