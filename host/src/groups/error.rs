//! [`GroupError`]: why a consumer-group operation failed.

use std::path::PathBuf;

use crate::engine::control::ControlError;
use crate::log::LogError;

/// Why a consumer-group operation failed. Each message names the group or member and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A group or member name is not valid.
    #[error("{0}")]
    InvalidName(String),
    /// A request is malformed (a filter too large, an empty offset list...).
    #[error("{0}")]
    Invalid(String),
    /// No group of that name exists.
    #[error("no consumer group named `{0}`; `refract groups` lists them")]
    UnknownGroup(String),
    /// Creating the group would exceed `consumers.max_groups`.
    #[error(
        "cannot create group `{name}`: {max} groups exist, the most allowed \
         (`consumers.max_groups`); delete one with `refract groups delete`"
    )]
    TooManyGroups {
        /// The group that could not be created.
        name: String,
        /// The limit.
        max: usize,
    },
    /// A join named a filter other than the group's.
    #[error(
        "group `{group}` consumes {existing}, not {requested}; join without a filter, or \
         use another group name"
    )]
    FilterMismatch {
        /// The group.
        group: String,
        /// Its filter, described.
        existing: String,
        /// The join's filter, described.
        requested: String,
    },
    /// A declared group cannot be deleted through the API.
    #[error(
        "group `{0}` is declared in refract.toml ([groups.{0}]); remove it from the file \
         (and restart) instead of deleting it"
    )]
    Declared(String),
    /// The member or group state refused the call.
    #[error("group `{group}`: {source}")]
    State {
        /// The group.
        group: String,
        /// Why.
        source: super::state::StateError,
    },
    /// `control.db` failed.
    #[error("control database {path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Opening `control.db` failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}
