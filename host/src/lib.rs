//! Refract: an embedded event log with sandboxed WebAssembly projections.
//!
//! # Layout
//! - [`log`]: the append-only event log in SQLite. Knows nothing of wasm or HTTP.
//! - [`runtime`]: compiles and runs projector components in a wasmtime sandbox.
//! - [`cli`]: the `refract` command line.

pub mod cli;
pub mod log;
pub mod runtime;
