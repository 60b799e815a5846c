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
//! - [`devkit`]: the projector author's tools: `projector.toml`, `refract new`
//!   templates, golden fixtures (`refract test`) and the dev loop (`refract dev`).
//! - [`guest_build`]: builds the example projectors from this source tree (for
//!   `refract demo` and `refract bench`; tests use the same build).
//! - [`workload`]: seeded event generators for the demo and the benchmark.
//! - [`bench`]: `refract bench`, Refract measured against a native-Rust baseline.
//! - [`api`]: the HTTP API `refract run` serves: events, projectors, queries,
//!   subscriptions, health and metrics.
//! - [`cli`]: the `refract` command line.

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod devkit;
pub mod engine;
pub mod guest_build;
pub mod log;
pub mod runtime;
pub mod workload;
