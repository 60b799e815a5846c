//! `refract:projector/sql`: the guest's access to its read model, for every contract
//! version (0.1.0 sends writes as `execute-batch(list<write>)`, 0.2.0 as
//! `execute-packed(write-batch)`, decoded by `packed_writes`; the rest is shared).
//!
//! The functions are defined directly on the linker rather than through the generated
//! `Host` trait so that arguments stay in guest memory: a `list<write>` arrives as a
//! [`WasmList`], each text parameter as a [`WasmStr`], and values are bound to SQLite
//! straight from the guest's memory. Nothing is copied into host-owned strings, and every
//! size is checked against its limit before SQLite sees it.
//!
//! A failure the guest can handle is returned as an `sql-error` value; only a broken
//! canonical ABI (invalid UTF-8, say) traps.
//!
//! Memory is counted before it is spent: a query's rows are charged value by value
//! against `limits.max_query_bytes` before each value is copied, and the SQL text the
//! instance keeps for its statements against `limits.max_prepared_sql_bytes`.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::fallible_iterator::FallibleIterator as _;
use rusqlite::types::{Null, ValueRef};
use rusqlite::{Batch, CachedStatement, Statement};
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};
use wasmtime::{AsContext, StoreContext, StoreContextMut};

use super::bindings::{ContractVersion, Rows, SqlError, SqlErrorKind, SqlValue, WriteError};
use super::limits::{SandboxLimits, format_bytes};
use super::packed_writes::{PackedValue, PackedWrites};
use super::sql::{HOST_TABLE_PREFIX, SandboxedDb};
use super::store::StoreState;

/// A `write` as it lies in guest memory.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawWrite {
    #[component(name = "statement")]
    statement: u32,
    #[component(name = "params")]
    params: WasmList<RawValue>,
}

/// A 0.2.0 `write-batch` as it lies in guest memory: its lists are read in place.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawWriteBatch {
    #[component(name = "statements")]
    statements: WasmList<u32>,
    #[component(name = "param-ends")]
    param_ends: WasmList<u32>,
    #[component(name = "kinds")]
    kinds: WasmList<u8>,
    #[component(name = "numbers")]
    numbers: WasmList<i64>,
    #[component(name = "bytes")]
    bytes: WasmList<u8>,
}

/// An `sql-value` as it lies in guest memory: text and blobs are not copied.
#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawValue {
    #[component(name = "null")]
    Null,
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "real")]
    Real(f64),
    #[component(name = "text")]
    Text(WasmStr),
    #[component(name = "blob")]
    Blob(WasmList<u8>),
}

/// Bytes charged per returned value on top of its payload: its slot in guest memory.
const VALUE_OVERHEAD_BYTES: usize = 16;

/// The host side of the `sql` interface for one instance.
pub(crate) struct SqlHost {
    db: SandboxedDb,
    limits: Arc<SandboxLimits>,
    /// Statement texts by handle, and whether each is an `ALTER TABLE`.
    statements: Vec<(Box<str>, bool)>,
    /// Handles by statement text, so the same text gets the same handle.
    handles: HashMap<Box<str>, u32>,
    /// The bytes of SQL text in `statements`.
    statement_bytes: usize,
    /// Whether the host has opened the transaction the guest's SQL runs in.
    in_transaction: bool,
    /// The first host-side failure (I/O, busy, full disk) seen during the current call.
    /// It fails the batch as transient whatever the guest does with its error.
    host_failure: Cell<Option<rusqlite::Error>>,
}

/// Why a request failed: an error for the guest, or a trap.
enum Failure {
    Sql(SqlError),
    Trap(wasmtime::Error),
}

impl From<SqlError> for Failure {
    fn from(error: SqlError) -> Self {
        Self::Sql(error)
    }
}

fn sql_error(kind: SqlErrorKind, message: impl Into<String>) -> SqlError {
    SqlError {
        kind,
        message: message.into(),
    }
}

impl SqlHost {
    pub(crate) fn new(db: SandboxedDb, limits: Arc<SandboxLimits>) -> Self {
        Self {
            db,
            limits,
            statements: Vec::new(),
            handles: HashMap::new(),
            statement_bytes: 0,
            in_transaction: false,
            host_failure: Cell::new(None),
        }
    }

    /// The sandboxed connection.
    pub(crate) fn db(&self) -> &SandboxedDb {
        &self.db
    }

    /// Marks whether the host's transaction is open for the guest, and forgets the
    /// previous call's host failure.
    pub(crate) fn set_in_transaction(&mut self, open: bool) {
        self.in_transaction = open;
        self.host_failure.set(None);
    }

    /// The host-side failure seen during the current call, if any.
    pub(crate) fn take_host_failure(&self) -> Option<rusqlite::Error> {
        self.host_failure.take()
    }

    /// Turns a SQLite failure into the guest's error, remembering host-side failures.
    fn fail(&self, err: rusqlite::Error) -> Failure {
        let (error, host_side) = self.db.classify(&err);
        if host_side {
            let first = self.host_failure.take().unwrap_or(err);
            self.host_failure.set(Some(first));
        }
        Failure::Sql(error)
    }

    fn ensure_transaction(&self) -> Result<(), SqlError> {
        if !self.in_transaction {
            return Err(sql_error(
                SqlErrorKind::Denied,
                "SQL runs only inside `init` and `handle`, in the host's transaction",
            ));
        }
        if self.db.conn().is_autocommit() {
            return Err(sql_error(
                SqlErrorKind::Other,
                "SQLite rolled back this call's transaction after an earlier failure; no more SQL runs in this call",
            ));
        }
        Ok(())
    }

    fn check_sql_len(&self, len: usize) -> Result<(), SqlError> {
        if len > self.limits.max_sql_bytes {
            return Err(sql_error(
                SqlErrorKind::Limit,
                format!(
                    "the SQL text is {len} bytes; the limit is {} (`limits.max_sql_bytes`)",
                    format_bytes(self.limits.max_sql_bytes)
                ),
            ));
        }
        Ok(())
    }

    /// `prepare`: the existing handle for this text, or the compiled text to register
    /// and whether it alters a table.
    fn prepare(&self, sql: &str) -> Result<Result<u32, (Box<str>, bool)>, Failure> {
        self.check_sql_len(sql.len())?;
        self.ensure_transaction()?;
        if let Some(&handle) = self.handles.get(sql) {
            return Ok(Ok(handle));
        }
        if self.statements.len() >= self.limits.max_statements {
            return Err(sql_error(
                SqlErrorKind::Limit,
                format!(
                    "this instance already prepared {} statements, the limit (`limits.max_statements`)",
                    self.limits.max_statements
                ),
            )
            .into());
        }
        let max_bytes = self.limits.max_prepared_sql_bytes;
        if self.statement_bytes.saturating_add(sql.len()) > max_bytes {
            return Err(sql_error(
                SqlErrorKind::Limit,
                format!(
                    "this instance already holds {} of prepared SQL; {} more would pass the limit of {} (`limits.max_prepared_sql_bytes`)",
                    format_bytes(self.statement_bytes),
                    format_bytes(sql.len()),
                    format_bytes(max_bytes)
                ),
            )
            .into());
        }
        // Compile now, so a denial or a syntax error is reported by `prepare` itself; the
        // compiled statement stays in the connection's cache for the first use.
        self.db.start_statement();
        self.db.guard().take_altered();
        self.db
            .conn()
            .prepare_cached(sql)
            .map_err(|err| self.fail(err))?;
        Ok(Err((sql.into(), self.db.guard().take_altered())))
    }

    fn register(&mut self, (sql, alters): (Box<str>, bool)) -> wasmtime::Result<u32> {
        let handle = u32::try_from(self.statements.len())?;
        self.statement_bytes += sql.len();
        self.statements.push((sql.clone(), alters));
        self.handles.insert(sql, handle);
        Ok(handle)
    }

    /// Whether the statement behind `handle` is an `ALTER TABLE`.
    fn alters(&self, handle: u32) -> bool {
        usize::try_from(handle)
            .ok()
            .and_then(|index| self.statements.get(index))
            .is_some_and(|(_, alters)| *alters)
    }

    /// Runs an `ALTER TABLE` so that a rename into the host's namespace is undone and
    /// denied: SQLite's authorizer is told the table's old name only. The statement
    /// runs in a savepoint; if the host's objects grew in number, it is rolled back.
    fn guard_rename<T>(&self, run: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
        let before = self.db.host_object_count().map_err(|err| self.fail(err))?;
        self.db
            .host_turn(|conn| conn.execute_batch("SAVEPOINT refract_alter"))
            .map_err(|err| self.fail(err))?;
        let outcome = run();
        let after = self.db.host_object_count();
        let end = |keep: bool| {
            // After SQLite rolled the whole transaction back, the savepoint is gone
            // and there is nothing to undo; the call then fails as aborted.
            self.db.host_turn(|conn| {
                if !keep {
                    let _ = conn.execute_batch("ROLLBACK TO refract_alter");
                }
                let _ = conn.execute_batch("RELEASE refract_alter");
            });
        };
        match (outcome, after) {
            (Ok(value), Ok(after)) if after <= before => {
                end(true);
                Ok(value)
            }
            (Ok(_), Ok(_)) => {
                end(false);
                Err(sql_error(
                    SqlErrorKind::Denied,
                    format!(
                        "renaming a table to a name prefixed `{HOST_TABLE_PREFIX}` is not allowed: those names belong to the host (the rename was undone)"
                    ),
                )
                .into())
            }
            (Err(failure), _) => {
                end(false);
                Err(failure)
            }
            (Ok(_), Err(err)) => {
                end(false);
                Err(self.fail(err))
            }
        }
    }

    fn statement(&self, handle: u32) -> Result<CachedStatement<'_>, Failure> {
        let Some((text, _)) = usize::try_from(handle)
            .ok()
            .and_then(|index| self.statements.get(index))
        else {
            return Err(sql_error(
                SqlErrorKind::UnknownStatement,
                format!("statement handle {handle} was never returned by `prepare`"),
            )
            .into());
        };
        self.ensure_transaction()?;
        self.db.start_statement();
        self.db
            .conn()
            .prepare_cached(text)
            .map_err(|err| self.fail(err))
    }

    /// Binds `params` straight from guest memory.
    fn bind(
        &self,
        statement: &mut Statement<'_>,
        params: &[RawValue],
        store: &StoreContext<'_, StoreState>,
    ) -> Result<(), Failure> {
        self.check_param_count(statement, params.len())?;
        for (index, value) in params.iter().enumerate() {
            let value = match value {
                RawValue::Null => PackedValue::Null,
                RawValue::Integer(value) => PackedValue::Integer(*value),
                RawValue::Real(value) => PackedValue::Real(*value),
                RawValue::Text(text) => {
                    let text = text.to_str(store).map_err(Failure::Trap)?;
                    // A `WasmStr` borrows guest memory but lends it only through a Cow;
                    // bind while it is alive.
                    self.bind_one(statement, index + 1, PackedValue::Text(&text))?;
                    continue;
                }
                RawValue::Blob(blob) => PackedValue::Blob(blob.as_le_slice(store)),
            };
            self.bind_one(statement, index + 1, value)?;
        }
        Ok(())
    }

    /// Binds a packed write's parameters, already decoded in place.
    fn bind_packed(
        &self,
        statement: &mut Statement<'_>,
        params: &[PackedValue<'_>],
    ) -> Result<(), Failure> {
        self.check_param_count(statement, params.len())?;
        for (index, &value) in params.iter().enumerate() {
            self.bind_one(statement, index + 1, value)?;
        }
        Ok(())
    }

    fn check_param_count(&self, statement: &Statement<'_>, given: usize) -> Result<(), Failure> {
        let expected = statement.parameter_count();
        if given != expected {
            return Err(sql_error(
                SqlErrorKind::Invalid,
                format!("the statement takes {expected} parameters, but {given} were given"),
            )
            .into());
        }
        Ok(())
    }

    /// Binds one value to `?position`, checking text and blobs against
    /// `limits.max_value_bytes`.
    fn bind_one(
        &self,
        statement: &mut Statement<'_>,
        position: usize,
        value: PackedValue<'_>,
    ) -> Result<(), Failure> {
        let max = self.limits.max_value_bytes;
        let too_big = |what: &str, len: usize| {
            Failure::Sql(sql_error(
                SqlErrorKind::Limit,
                format!(
                    "parameter {position} is a {what} of {len} bytes; the limit is {} (`limits.max_value_bytes`)",
                    format_bytes(max)
                ),
            ))
        };
        let bound = match value {
            PackedValue::Null => statement.raw_bind_parameter(position, Null),
            PackedValue::Integer(value) => statement.raw_bind_parameter(position, value),
            PackedValue::Real(value) => statement.raw_bind_parameter(position, value),
            PackedValue::Text(text) => {
                if text.len() > max {
                    return Err(too_big("text", text.len()));
                }
                statement.raw_bind_parameter(position, text)
            }
            PackedValue::Blob(bytes) => {
                if bytes.len() > max {
                    return Err(too_big("blob", bytes.len()));
                }
                statement.raw_bind_parameter(position, bytes)
            }
        };
        bound.map_err(|err| self.fail(err))
    }

    /// `execute` of one statement with lifted parameters.
    fn execute(
        &self,
        handle: u32,
        params: &[RawValue],
        store: &StoreContext<'_, StoreState>,
    ) -> Result<u64, Failure> {
        let mut statement = self.statement(handle)?;
        self.bind(&mut statement, params, store)?;
        let mut run = || statement.raw_execute().map_err(|err| self.fail(err));
        let changed = if self.alters(handle) {
            self.guard_rename(run)?
        } else {
            run()?
        };
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    /// `execute` for `execute-batch` and `execute-packed`: keeps each statement it uses
    /// in `held`, by handle, for the next write of the same call; `bind` binds the
    /// write's parameters.
    fn execute_held<'c>(
        &'c self,
        held: &mut Vec<Option<CachedStatement<'c>>>,
        handle: u32,
        bind: impl FnOnce(&mut Statement<'_>) -> Result<(), Failure>,
    ) -> Result<u64, Failure> {
        let slot = usize::try_from(handle).unwrap_or(usize::MAX);
        let statement = match held.get_mut(slot) {
            Some(Some(statement)) => {
                self.ensure_transaction()?;
                self.db.start_statement();
                statement
            }
            _ => {
                let statement = self.statement(handle)?;
                if held.len() <= slot {
                    held.resize_with(slot + 1, || None);
                }
                held[slot].insert(statement)
            }
        };
        bind(statement)?;
        let mut run = || statement.raw_execute().map_err(|err| self.fail(err));
        let changed = if self.alters(handle) {
            self.guard_rename(run)?
        } else {
            run()?
        };
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    /// `query`, capped in rows and bytes. Each value is charged before it is copied, so
    /// the cap is never passed by more than nothing: a query over it copies at most
    /// `limits.max_query_bytes` before it fails.
    fn query(
        &self,
        handle: u32,
        params: &[RawValue],
        store: &StoreContext<'_, StoreState>,
    ) -> Result<Rows, Failure> {
        let mut statement = self.statement(handle)?;
        self.bind(&mut statement, params, store)?;
        if self.alters(handle) {
            // An `ALTER TABLE` returns no rows; run it where a rename can be undone.
            return self.guard_rename(|| {
                let mut rows = statement.raw_query();
                while rows.next().map_err(|err| self.fail(err))?.is_some() {}
                Ok(Rows {
                    columns: Vec::new(),
                    rows: Vec::new(),
                })
            });
        }
        let columns = statement
            .column_names()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let (max_rows, max_bytes) = (self.limits.max_query_rows, self.limits.max_query_bytes);
        let over_bytes = || {
            Failure::Sql(sql_error(
                SqlErrorKind::Limit,
                format!(
                    "the query returns more than {} (`limits.max_query_bytes`); select fewer columns or rows",
                    format_bytes(max_bytes)
                ),
            ))
        };
        let mut bytes = columns.iter().map(String::len).sum::<usize>();
        let mut out = Vec::new();
        let mut rows = statement.raw_query();
        while let Some(row) = rows.next().map_err(|err| self.fail(err))? {
            if out.len() == max_rows {
                return Err(sql_error(
                    SqlErrorKind::Limit,
                    format!(
                        "the query returns more than {max_rows} rows (`limits.max_query_rows`); add a LIMIT or page through the results"
                    ),
                )
                .into());
            }
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                let value = row.get_ref(index).map_err(|err| self.fail(err))?;
                let size = match value {
                    ValueRef::Null => 0,
                    ValueRef::Integer(_) | ValueRef::Real(_) => 8,
                    ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.len(),
                };
                bytes = bytes.saturating_add(size + VALUE_OVERHEAD_BYTES);
                if bytes > max_bytes {
                    return Err(over_bytes());
                }
                values.push(match value {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(value) => SqlValue::Integer(value),
                    ValueRef::Real(value) => SqlValue::Real(value),
                    ValueRef::Text(text) => {
                        SqlValue::Text(String::from_utf8_lossy(text).into_owned())
                    }
                    ValueRef::Blob(blob) => SqlValue::Blob(blob.to_vec()),
                });
            }
            out.push(values);
        }
        Ok(Rows { columns, rows: out })
    }

    /// `execute-script`: several statements, no parameters, each run as
    /// `execute_batch` would (stepped once), each under its own statement deadline.
    fn execute_script(&self, sql: &str) -> Result<(), Failure> {
        self.check_sql_len(sql.len())?;
        self.ensure_transaction()?;
        let mut batch = Batch::new(self.db.conn(), sql);
        loop {
            self.db.start_statement();
            self.db.guard().take_altered();
            let Some(mut statement) = batch.next().map_err(|err| self.fail(err))? else {
                return Ok(());
            };
            let mut run = || {
                let mut rows = statement.raw_query();
                rows.next().map(drop).map_err(|err| self.fail(err))
            };
            if self.db.guard().take_altered() {
                self.guard_rename(run)?;
            } else {
                run()?;
            }
        }
    }

    fn too_many_params(&self, count: usize) -> Option<SqlError> {
        let max = self.limits.max_params_per_statement;
        (count > max).then(|| {
            sql_error(
                SqlErrorKind::Limit,
                format!(
                    "{count} parameters exceed the limit of {max} (`limits.max_params_per_statement`)"
                ),
            )
        })
    }
}

/// Links the `sql` interface of every contract version: the functions both versions
/// share are the same host functions (their types have the same shape), and each
/// version adds its own way to send a batch of writes.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    for version in ContractVersion::ALL {
        let mut sql = linker.instance(&format!("refract:projector/sql@{}", version.semver()))?;
        sql.func_wrap("prepare", prepare)?;
        match version {
            ContractVersion::V0_1 => sql.func_wrap("execute-batch", execute_batch)?,
            ContractVersion::V0_2 => sql.func_wrap("execute-packed", |store, params| {
                execute_packed(&store, params)
            })?,
        }
        sql.func_wrap("execute", execute)?;
        sql.func_wrap("query", query)?;
        sql.func_wrap("execute-script", |store, params| {
            execute_script(&store, params)
        })?;
    }
    Ok(())
}

/// Splits a request's outcome into the guest's result and a trap.
fn settle<T>(outcome: Result<T, Failure>) -> wasmtime::Result<(Result<T, SqlError>,)> {
    match outcome {
        Ok(value) => Ok((Ok(value),)),
        Err(Failure::Sql(error)) => Ok((Err(error),)),
        Err(Failure::Trap(trap)) => Err(trap),
    }
}

fn prepare(
    mut store: StoreContextMut<'_, StoreState>,
    (sql,): (WasmStr,),
) -> wasmtime::Result<(Result<u32, SqlError>,)> {
    let outcome = {
        let context = store.as_context();
        let text = sql.to_str(&context)?;
        context.data().sql.prepare(&text)
    };
    match outcome {
        Ok(Ok(handle)) => Ok((Ok(handle),)),
        Ok(Err(text)) => Ok((Ok(store.data_mut().sql.register(text)?),)),
        Err(failure) => settle(Err(failure)),
    }
}

fn execute_batch(
    mut store: StoreContextMut<'_, StoreState>,
    (writes,): (WasmList<RawWrite>,),
) -> wasmtime::Result<(Result<(), WriteError>,)> {
    let write_error = |index: usize, error: SqlError| -> wasmtime::Result<_> {
        Ok((Err(WriteError {
            index: u32::try_from(index)?,
            error,
        }),))
    };
    let max_writes = store.data().sql.limits.max_writes_per_call;
    if writes.len() > max_writes {
        return write_error(
            0,
            sql_error(
                SqlErrorKind::Limit,
                format!(
                    "execute-batch got {} writes; the limit is {max_writes} (`limits.max_writes_per_call`). Nothing was applied; send smaller batches",
                    writes.len()
                ),
            ),
        );
    }
    let writes = writes
        .iter(&mut store)?
        .collect::<wasmtime::Result<Vec<RawWrite>>>()?;
    // Lift every write's parameters first, into one flat list, so that the statements
    // below can be held from one write to the next: taking a statement out of the
    // connection's cache and putting it back hashes its SQL text twice, per write.
    let mut params = Vec::new();
    let mut ranges = Vec::with_capacity(writes.len());
    let mut refused = None;
    for (index, write) in writes.iter().enumerate() {
        if let Some(error) = store.data().sql.too_many_params(write.params.len()) {
            // The writes before it still run, as the contract says.
            refused = Some((index, error));
            break;
        }
        let start = params.len();
        for value in write.params.iter(&mut store)? {
            params.push(value?);
        }
        ranges.push(start..params.len());
    }
    let context = store.as_context();
    let sql = &context.data().sql;
    let mut held = Vec::new();
    for (index, (write, range)) in writes.iter().zip(ranges).enumerate() {
        let bind = |statement: &mut Statement<'_>| sql.bind(statement, &params[range], &context);
        match sql.execute_held(&mut held, write.statement, bind) {
            Ok(_) => {}
            Err(Failure::Sql(error)) => return write_error(index, error),
            Err(Failure::Trap(trap)) => return Err(trap),
        }
    }
    match refused {
        Some((index, error)) => write_error(index, error),
        None => Ok((Ok(()),)),
    }
}

/// `execute-packed` (0.2.0): decodes the `write-batch` in place (see `packed_writes`)
/// and runs each write as it is decoded, holding statements from one write to the next
/// as `execute-batch` does.
fn execute_packed(
    store: &StoreContextMut<'_, StoreState>,
    (writes,): (RawWriteBatch,),
) -> wasmtime::Result<(Result<(), WriteError>,)> {
    let write_error = |index: usize, error: SqlError| -> wasmtime::Result<_> {
        Ok((Err(WriteError {
            index: u32::try_from(index)?,
            error,
        }),))
    };
    let context = store.as_context();
    let sql = &context.data().sql;
    let packed = PackedWrites {
        statements: writes.statements.as_le_slice(&context),
        param_ends: writes.param_ends.as_le_slice(&context),
        kinds: writes.kinds.as_le_slice(&context),
        numbers: writes.numbers.as_le_slice(&context),
        bytes: writes.bytes.as_le_slice(&context),
    };
    if let Err(error) = packed
        .check_limits(&sql.limits)
        .and_then(|()| packed.check_shape())
    {
        return write_error(0, error);
    }
    let max_params = sql.limits.max_params_per_statement;
    let mut decoder = packed.decoder();
    // One list of decoded parameters, reused by every write of the call.
    let mut params = Vec::new();
    let mut held = Vec::new();
    while let Some(next) = decoder.next_write(&mut params, max_params) {
        let index = decoder.index();
        let statement = match next {
            Ok(statement) => statement,
            Err(error) => return write_error(index, error),
        };
        let bind = |prepared: &mut Statement<'_>| sql.bind_packed(prepared, &params);
        match sql.execute_held(&mut held, statement, bind) {
            Ok(_) => {}
            Err(Failure::Sql(error)) => return write_error(index, error),
            Err(Failure::Trap(trap)) => return Err(trap),
        }
    }
    Ok((Ok(()),))
}

/// Lifts a parameter list, checking its length first.
fn lift_params(
    store: &mut StoreContextMut<'_, StoreState>,
    params: &WasmList<RawValue>,
) -> Result<Vec<RawValue>, Failure> {
    if let Some(error) = store.data().sql.too_many_params(params.len()) {
        return Err(error.into());
    }
    params
        .iter(store)
        .and_then(Iterator::collect)
        .map_err(Failure::Trap)
}

fn execute(
    mut store: StoreContextMut<'_, StoreState>,
    (statement, params): (u32, WasmList<RawValue>),
) -> wasmtime::Result<(Result<u64, SqlError>,)> {
    let outcome = lift_params(&mut store, &params).and_then(|params| {
        let context = store.as_context();
        context.data().sql.execute(statement, &params, &context)
    });
    settle(outcome)
}

fn query(
    mut store: StoreContextMut<'_, StoreState>,
    (statement, params): (u32, WasmList<RawValue>),
) -> wasmtime::Result<(Result<Rows, SqlError>,)> {
    let outcome = lift_params(&mut store, &params).and_then(|params| {
        let context = store.as_context();
        context.data().sql.query(statement, &params, &context)
    });
    settle(outcome)
}

fn execute_script(
    store: &StoreContextMut<'_, StoreState>,
    (sql,): (WasmStr,),
) -> wasmtime::Result<(Result<(), SqlError>,)> {
    let context = store.as_context();
    let text = sql.to_str(&context)?;
    settle(context.data().sql.execute_script(&text))
}
