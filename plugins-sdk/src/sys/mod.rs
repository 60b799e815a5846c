//! The one place that differs by target: on wasm, the component imports; natively,
//! an in-memory SQLite that stands in for the host. Both offer the same calls.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::{Backend, Handle, log};

#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::{Backend, Handle, log};
