//! The HTTP API that `refract run` serves: events, projectors, read-model queries,
//! subscriptions, health and metrics. Versioned under `/v1`; every endpoint but
//! `/health` needs the bearer token.
//!
//! | Method and path | What it does |
//! |---|---|
//! | `POST /v1/streams/{stream}/events` | append a batch, optionally with `expected_version` |
//! | `PUT /v1/streams/{stream}/snapshot` | store an application's snapshot of a stream at a version |
//! | `GET /v1/streams/{stream}/load` | the stream's latest snapshot and only the events after it |
//! | `GET /v1/events` | read a page of events (filters: offsets, times, `type`, `stream`, `stream_prefix`, `limit`) |
//! | `GET /v1/events/count` | count them |
//! | `GET /v1/events/subscribe` | follow them as Server-Sent Events, resumable with `Last-Event-ID` |
//! | `GET /v1/projectors` | every projector and refused plugin file |
//! | `GET /v1/projectors/{name}` | one projector's versions, status and replay progress |
//! | `POST /v1/projectors/{name}/versions` | deploy a component (the body is the `.wasm`) |
//! | `POST /v1/projectors/{name}/promote`, `/rollback`, `/abort` | change which version serves |
//! | `GET /v1/projectors/{name}/dead-letters` | events the projector skipped |
//! | `GET /v1/projectors/{name}/read-model` | a consistent copy of the active read model (an SQLite file) |
//! | `POST /v1/projectors/{name}/query` | one read-only SQL statement on the active read model |
//! | `GET`/`POST /v1/projectors/{name}/snapshots` | list the read model's snapshots; take one now |
//! | `POST /v1/projectors/{name}/restore` | restore the read model from a snapshot and catch it up |
//! | `GET /v1/projectors/{name}/diff` | the shadow (or previous) version against the active one: tables, sample rows, the diff gate |
//! | `GET /v1/groups`, `/v1/groups/{group}/...` | consumer groups: poll, subscribe, ack, nack, reset, delete, dead letters (see `groups`) |
//! | `GET /v1/retention` | retention: policies, safety floor, archived/deleted/reclaimed, archive size, partial history |
//! | `GET /v1/cluster` | cluster mode: NATS connectivity, the mirror against the stream's head |
//! | `GET /health` | `ok` (200) or `degraded` (503) with the reasons |
//! | `GET /metrics` | Prometheus text format |
//!
//! # Layout
//! - [`server`]: the router and [`serve`], the accept loop.
//! - `admission`: the connection caps, and which connection makes room for a new one.
//! - `connection`: serving one connection, with its idle, head and body timeouts.
//! - [`state`]: [`ApiState`], what every handler may use.
//! - [`auth`]: the bearer [`Token`], its file, the middleware.
//! - [`error`]: [`ApiError`], the one error shape and its statuses.
//! - [`extract`]: extractors that turn bad input into [`ApiError`]s.
//! - [`limits`]: every limit, and the `[server]` configuration section.
//! - `events`: append, read and count. `sse`: subscriptions, with rate, window and
//!   progress. `groups`: consumer groups.
//! - `projectors`: projector management. `query`: read-model queries. `diff`: two
//!   versions compared. [`read_model`]: a copy of a read model, for comparing nodes.
//! - `operations`: health and metrics; `metrics`: the Prometheus encoding.
//! - `cluster`: `GET /v1/cluster`. [`proxy`]: queries for a projector placed on
//!   other cluster nodes, proxied to one that runs it.
//! - `snapshots`: read-model snapshots: list, take, restore.
//!
//! This module knows nothing of wasm: it talks to the [`EventLog`](crate::log::EventLog)
//! and the [`Engine`](crate::engine::Engine) only.

mod admission;
pub mod auth;
mod cluster;
mod connection;
mod consumer_metrics;
pub mod diff;
pub mod error;
mod events;
pub mod extract;
mod groups;
pub mod limits;
mod metrics;
mod operations;
mod projectors;
pub mod proxy;
mod query;
pub mod read_model;
mod retention;
pub mod server;
mod snapshot_metrics;
mod snapshots;
mod sse;
pub mod state;

pub use auth::Token;
pub use error::ApiError;
pub use limits::ServerConfig;
pub use server::{router, serve};
pub use state::ApiState;
