//! The per-instance store data, and the resource limiter that caps memory and tables.
//!
//! Each WIT interface's host functions see only their own part of [`StoreState`]: `sql`
//! the [`SqlHost`], `log` the [`LogHost`], WASI its context and table.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::host_log::LogHost;
use super::host_sql::SqlHost;
use super::limits::{LimitExceeded, SandboxLimits, format_bytes};
use super::wasi::StderrCapture;
use super::wasi_http::DeniedHttp;
use crate::reactors::EffectsHost;

/// Everything a projector instance's host functions need.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    /// `wasi:http`, every request denied.
    http: DeniedHttp,
    table: ResourceTable,
    /// Memory, table and instance caps.
    pub(crate) limiter: Limiter,
    /// The `refract:projector/sql` implementation.
    pub(crate) sql: SqlHost,
    /// The `refract:projector/log` implementation.
    pub(crate) log: LogHost,
    /// The guest's stderr, for panic messages.
    pub(crate) stderr: StderrCapture,
    /// A reactor's `emit` and `timers` (unused by a projector).
    pub(crate) effects: EffectsHost,
}

impl StoreState {
    pub(crate) fn new(
        wasi: WasiCtx,
        stderr: StderrCapture,
        limits: &Arc<SandboxLimits>,
        sql: SqlHost,
        log: LogHost,
        effects: EffectsHost,
    ) -> Self {
        Self {
            wasi,
            http: DeniedHttp::default(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits),
            sql,
            log,
            stderr,
            effects,
        }
    }

    /// Starts a guest call: forgets the previous call's stderr and refused growth.
    pub(crate) fn start_call(&mut self) {
        self.stderr.clear();
        self.limiter.refused = None;
        self.log.start_call();
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

/// Caps linear memory, tables and instance counts.
///
/// Growing past a cap fails the way wasm defines it (`memory.grow` returns -1), so a
/// guest that allocates fallibly (`try_reserve`) sees the failure as a value and carries
/// on. The refusal is remembered as a [`LimitExceeded`] naming the configuration key: when
/// the guest then aborts, as Rust does on a failed infallible allocation, the trap's
/// error says which limit it ran into instead of only "unreachable".
#[derive(Debug)]
pub(crate) struct Limiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    max_memories: usize,
    max_tables: usize,
    /// The last growth refused during the current call.
    refused: Option<LimitExceeded>,
}

impl Limiter {
    fn new(limits: &SandboxLimits) -> Self {
        Self {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements,
            max_instances: limits.max_instances,
            max_memories: limits.max_memories,
            max_tables: limits.max_tables,
            refused: None,
        }
    }

    /// The last growth refused during the current call.
    pub(crate) fn refused(&self) -> Option<&LimitExceeded> {
        self.refused.as_ref()
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.refused = Some(LimitExceeded::bytes(
                format!("growing linear memory to {}", format_bytes(desired)),
                self.max_memory_bytes,
                "max_memory_bytes",
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.refused = Some(LimitExceeded::count(
                format!("growing a table to {desired} elements"),
                self.max_table_elements,
                "max_table_elements",
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn tables(&self) -> usize {
        self.max_tables
    }

    fn memories(&self) -> usize {
        self.max_memories
    }
}
