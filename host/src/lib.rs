//! Refract: an embedded event log with sandboxed WebAssembly projections.
//!
//! Events are appended to a SQLite log. Projectors, written against the WIT contract in
//! `wit/` and compiled to WebAssembly components, turn them into SQLite read models,
//! each confined to its own database.
//!
//! # Layout
//! - [`log`]: the append-only event log. Knows nothing of wasm or HTTP.
//! - [`runtime`]: compiles and runs projector components in a wasmtime sandbox.
//! - [`engine`]: drives projectors through the log: checkpoints committed with their
//!   writes, one worker thread per version, poison policy, status, `control.db`.
//! - [`config`]: the optional `refract.toml`.
//! - [`data_dir`]: where everything lives inside a data directory.
//! - [`workload`]: seeded event generators for the demo and the benchmark.
//! - [`cli`]: the `refract` command line.

pub mod cli;
pub mod config;
pub mod data_dir;
pub mod engine;
pub mod log;
pub mod runtime;
pub mod workload;
