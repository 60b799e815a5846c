//! What the engine reports to its readers: projectors and their versions, the read
//! model serving each, dead letters, refused plugin files, and what a deploy did.

use std::path::PathBuf;

use serde::Serialize;

use crate::engine::control::Role;
use crate::engine::status::{ReplayProgress, VersionStatus};
use crate::storage_fault::StorageFault;

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
    /// The contract its component implements (`refract:projector@0.2.0`, …), while a
    /// worker runs it.
    pub contract: Option<String>,
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
    /// Why its queries are refused now, if they are (its read model is being rebuilt).
    pub unavailable: Option<String>,
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

/// Why the engine runs read-only: it could not write `control.db` when it started
/// (a full disk, a read-only mount, a permission). It serves reads and health, refuses
/// appends and commands, runs no projector, and leaves this mode by itself as soon as
/// `control.db` can be written again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadOnly {
    /// What could not be written, why, and the fix.
    pub reason: String,
    /// The fault behind it.
    #[serde(skip)]
    pub fault: StorageFault,
}
