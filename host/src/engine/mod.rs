//! The projection engine: joins the event log to projector instances.
//!
//! - [`projection`]: one projector version driven through the log, batch by batch,
//!   with its checkpoint committed in the same transaction as its writes.
//! - `checkpoint`: the host-owned `_refract_` tables inside every read model.
//! - [`worker`]: one thread per running version; waiting, retries, poison policy.
//! - `handle`: [`Engine`], the handle the host holds: what readers see, and the
//!   commands it sends to the controller. `shared`: what the controller publishes
//!   for readers.
//! - `controller`: the one thread that deploys, swaps, rolls back and aborts
//!   versions, and deploys what changes in the plugins folder.
//! - `views`: what the engine reports (projectors, versions, read models, dead
//!   letters); `error`: [`EngineError`].
//! - `version_files`: the files of versions: the stable symlink, stored components,
//!   pruning.
//! - [`control`]: `control.db`, the host's own state.
//! - [`hooks`]: what the engine reports to a listener outside it (cluster mode).
//! - [`integrity`]: no read model may be ahead of the log.
//! - [`diff`]: comparing two read models (`refract diff`, the diff gate).
//! - [`status`]: live status of each version; [`report`]: status read from disk.

pub(crate) mod checkpoint;
pub mod control;
mod controller;
pub mod diff;
mod error;
mod handle;
pub mod hooks;
pub mod integrity;
pub mod projection;
mod read_ahead;
pub mod report;
mod shared;
pub mod status;
mod version_files;
mod views;
pub(crate) mod worker;

pub use controller::PLUGIN_DEBOUNCE;
pub use error::EngineError;
pub use handle::{Engine, EngineOptions};
pub use hooks::{EngineHooks, LocalDeploy, SwapRecord};
pub use integrity::{LogBehindReadModels, LogCheck};
pub use projection::{BatchLimits, Projection, ProjectionError, Step};
pub use report::{StatusRow, offline_status};
pub use status::{State, VersionStatus};
pub use views::{
    DeadLetter, DeployOutcome, Deployment, ProjectorView, ReadModel, ReadOnly, Rejected,
    VersionView,
};
