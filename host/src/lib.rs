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
//! - [`replay`]: pacing and progress of consumer replays (`GET /v1/events/subscribe`,
//!   `refract tail`).
//! - [`groups`]: consumer groups: members, partitions, leases, acks, dead letters and
//!   committed positions (in `control.db`).
//! - [`retention`]: retention policies per stream prefix, in the background: events
//!   past them are archived (zstd segments that replays, reads and counts still
//!   see) or deleted.
//! - [`cluster`]: cluster mode: the log replicated by NATS JetStream, appends on any
//!   node, every node a read replica with its own mirror of the log; one deploy for
//!   the whole cluster, coordinated swaps and cluster-wide status (`cluster::deploys`);
//!   read-model snapshots shared between nodes for placement (`cluster::shared_snapshots`).
//! - [`reactors`]: reactors (sagas): components that react to events by emitting
//!   events, exactly once, with timers that need no clock.
//! - [`snapshots`]: read-model snapshots (recovery, rollback to a pruned version,
//!   point-in-time queries) and stream snapshots (loading an aggregate).
//! - [`config`]: the optional `refract.toml`.
//! - [`data_dir`]: where everything lives inside a data directory.
//! - [`error_text`]: an error and its causes as one line, each said once.
//! - [`repeats`]: a failure that repeats is logged once, then counted.
//! - [`storage_fault`]: a full disk, an unwritable file or a damaged database, told
//!   apart in any error, with the fix to say.
//! - [`devkit`]: the projector author's tools: `projector.toml`, `refract new`
//!   templates, golden fixtures (`refract test`) and the dev loop (`refract dev`).
//! - [`guest_build`]: builds the example projectors from this source tree (for
//!   `refract demo` and `refract bench`; tests use the same build).
//! - [`workload`]: seeded event generators for the demo and the benchmark.
//! - [`bench`]: `refract bench`, Refract measured against a native-Rust baseline.
//! - [`api`]: the HTTP API `refract run` serves: events, projectors, queries,
//!   subscriptions, health and metrics.
//! - [`console`]: the web console `refract run` serves at `/`, embedded in the binary;
//!   a client of the public API only.
//! - [`cli`]: the `refract` command line.

pub mod api;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod data_dir;
pub mod devkit;
pub mod engine;
pub mod error_text;
pub mod groups;
pub mod guest_build;
pub mod log;
pub mod reactors;
pub mod repeats;
pub mod replay;
pub mod retention;
pub mod runtime;
pub mod snapshots;
pub mod storage_fault;
pub mod workload;
