//! The projection engine: joins the event log to projector instances.
//!
//! - [`projection`]: one projector version driven through the log, batch by batch,
//!   with its checkpoint committed in the same transaction as its writes.
//! - `checkpoint`: the host-owned `_refract_` tables inside every read model.
//! - [`worker`]: one thread per running version; waiting, retries, poison policy.
//! - [`supervisor`]: the engine: a controller thread that deploys, swaps, rolls back
//!   and aborts versions, and watches the plugins folder.
//! - `swap`: the file side of swaps: the stable symlink, stored components, pruning,
//!   the diff gate.
//! - [`control`]: `control.db`, the host's own state.
//! - [`diff`]: table-by-table comparison of two read models (`refract diff`).
//! - [`status`]: live status of each version; [`report`]: status read from disk.

mod checkpoint;
pub mod control;
pub mod diff;
pub mod projection;
pub mod report;
pub mod status;
pub mod supervisor;
mod swap;
pub(crate) mod worker;

pub use projection::{BatchLimits, Projection, ProjectionError, Step};
pub use report::{StatusRow, offline_status};
pub use status::{State, VersionStatus};
pub use supervisor::{
    DeadLetter, DeployOutcome, Deployment, Engine, EngineError, EngineOptions, ProjectorView,
    ReadModel, Rejected, VersionView,
};
