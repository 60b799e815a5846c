//! The projection engine: joins the event log to projector instances.
//!
//! - [`projection`]: one projector version driven through the log, batch by batch,
//!   with its checkpoint committed in the same transaction as its writes.
//! - `checkpoint`: the host-owned `_refract_` tables inside every read model.
//! - [`worker`]: one thread per running version; waiting, retries, poison policy.
//! - [`supervisor`]: loads the plugins folder and runs the workers.
//! - [`control`]: `control.db`, the host's own state.
//! - [`status`]: live status of each version; [`report`]: status read from disk.

mod checkpoint;
pub mod control;
pub mod projection;
pub mod report;
pub mod status;
pub mod supervisor;
pub(crate) mod worker;

pub use projection::{BatchLimits, Projection, ProjectionError, Step};
pub use report::{StatusRow, offline_status};
pub use status::{State, VersionStatus};
pub use supervisor::{Engine, EngineError, EngineOptions};
