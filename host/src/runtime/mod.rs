//! The WebAssembly projector runtime and its sandbox.
//!
//! A projector is a component implementing the WIT world `refract:projector/projector`,
//! version 0.1.0 (`wit/projector.wit`) or 0.2.0 (`wit/projector-0.2/`): two worlds, one
//! host. A component implements one version or the other, told apart at load from the
//! `refract:projector` interfaces it imports (or, if it imports none, from its exports);
//! a component that mixes versions is refused.
//! The runtime compiles it (once, cached on disk), links it against a sandbox that grants
//! only its own read model and a log, and calls it one batch at a time, each batch in a
//! transaction the host commits together with its checkpoint.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use refract::runtime::{DbOptions, EventBatch, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let loaded = runtime.load(&std::fs::read("balances.wasm")?)?;
//! println!("{} (version {})", loaded.info().name, loaded.version());
//! let mut projector = loaded.instantiate("balances.db".as_ref(), DbOptions::live())?;
//! projector.init(|_host| Ok(()))?;
//!
//! let mut batch = EventBatch::new();
//! batch.push(1, "e-1", "account-1", 1, "account.opened", r#"{"account":"a","owner":"Ann"}"#, None, 0);
//! projector.apply(&batch, |_host| Ok(()))?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `projector`: [`Runtime`] and loading — header and size checks, import checks
//!   before any compile, compile or cache, export checks, pre-linking — into a
//!   [`LoadedProjector`], whose instances may run under limits of their own.
//! - `imports`: a component's imports, read from its binary without compiling it.
//! - [`compile`]: compiling within `limits.compile_timeout_ms` and
//!   `limits.max_compile_memory_bytes`, in a child process the `refract` binary runs.
//! - `refusals`: refused components remembered by content hash.
//! - `instance`: [`ProjectorInstance`] — instantiation, `metadata` validation, and the
//!   `init`/`apply` calls inside host-owned transactions.
//! - `batch`: the packed [`EventBatch`], with reusable buffers.
//! - `limits`: every sandbox limit, a documented default and a `[limits]` key.
//! - `engine`: the wasmtime configuration and the epoch ticker behind deadlines.
//! - `cache`: compiled components on disk, checksummed, written atomically.
//! - `wasi`: WASI 0.2 linked deny-by-default, frozen clocks, fixed randomness, captured
//!   stderr (its tail), and the import allowlist.
//! - `wasi_http`: `wasi:http` 0.2 linked with every request denied, so default
//!   componentize-js builds load.
//! - `sql`: the read-model connection and its confinement (authorizer, SQLite limits,
//!   deadlines) and the mapping of SQLite errors to `sql-error` kinds.
//! - `sql_functions`: the date and time functions, refusing the clock and time zone.
//! - `sql_cost`: what one SQL step can cost: the audit of SQLite's functions, the
//!   limits on sizes, and linear replacements for the quadratic built-ins; shared with
//!   the API's query endpoint.
//! - `temp_vfs`: a VFS per connection that caps its temporary files.
//! - `host_sql`, `host_log`: the host side of the contract's `sql` and `log` interfaces.
//! - `store`: the per-instance store data and the memory/table limiter.
//!
//! A reactor (`refract:reactor/reactor`, see [`crate::reactors`]) is loaded and run by
//! the same code: its world includes the projector world, the linker also provides its
//! `emit` and `timers` imports (implemented in `reactors::effects`), and a component
//! that exports `reactor-info` is a reactor ([`LoadedProjector::reactor`]). Only a
//! reactor may import those interfaces.
//! - `bindings`: the `bindgen!` of each contract version (`v0_1`, `v0_2`), the types
//!   they share, and the per-version pre-linked component and exports
//!   ([`ContractVersion`]).
//! - `packed_writes`: 0.2.0's packed `write-batch`, decoded and checked in place.
//! - `error`: [`RuntimeError`] (loading) and [`ProjectorError`] (calls), poison or
//!   transient.

mod batch;
pub(crate) mod bindings;
mod cache;
pub mod compile;
mod engine;
mod error;
mod host_log;
mod host_sql;
mod imports;
mod instance;
mod limits;
mod packed_writes;
mod projector;
mod refusals;
mod sql;
mod sql_cost;
mod sql_functions;
mod store;
mod temp_vfs;
mod wasi;
mod wasi_http;

pub use batch::{BatchEvent, EventBatch, EventFields};
pub use bindings::ContractVersion;
pub use engine::EPOCH_TICK;
pub use error::{Position, ProjectorError, RuntimeError, TrapKind};
pub use host_log::LOG_TARGET;
pub use instance::{HostWriteError, ProjectorInfo, ProjectorInstance, Subscriptions};
pub use limits::*;
pub use projector::{LoadedProjector, Runtime, RuntimeConfig, VERSION_HEX_LEN};
pub use refusals::MAX_REMEMBERED_REFUSALS;
pub use sql::{
    DENIED_FUNCTIONS, DbOptions, HIDDEN_TABLES, HOST_TABLE_PREFIX, PRAGMAS_ANY_ARGUMENT,
    PRAGMAS_READ_ONLY, ReadModelConnection, STATEMENT_CACHE_CAPACITY, Synchronous,
    VIRTUAL_TABLE_MODULES, costly_function, open_read_model,
};
pub use sql_cost::COSTLY_FUNCTIONS;
pub(crate) use store::StoreState;
pub use wasi::{ALLOWED_WASI_PACKAGES, REFRACT_INTERFACES};
pub use wasi_http::DENIED_WASI_PACKAGES;
