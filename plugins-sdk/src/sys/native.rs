//! The native stand-in for the host: the same calls, backed by an in-memory SQLite,
//! so projector logic unit-tests with `cargo test` and no wasm build.
//!
//! It approximates the host's SQL sandbox with an authorizer (no ATTACH, no
//! transaction control, no writing PRAGMAs, no `_refract_` tables, no
//! `load_extension`) so that a statement the host would deny fails in native tests
//! too. The host's rules are the authority.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, ToSql, params_from_iter};

use crate::db::WriteBuffer;
use crate::log::Level;
use crate::{Rows, SqlError, SqlErrorKind, Statement, Value};

/// Natively, a statement is named by its SQL text, so its handle carries nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Handle;

/// Prepared statements kept per connection; more than any projector declares.
const STATEMENT_CACHE: usize = 256;

/// PRAGMAs a projector may read, as the host allows.
const READ_ONLY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "user_version",
    "page_count",
    "page_size",
];

/// The prefix of host-owned tables.
const HOST_TABLE_PREFIX: &str = "_refract_";

/// An in-memory read model.
pub(crate) struct Backend {
    conn: Connection,
    /// While set, the authorizer allows everything: the test harness itself runs
    /// BEGIN/COMMIT and free-form queries.
    trusted: Arc<AtomicBool>,
}

impl Backend {
    /// Opens a fresh in-memory database with the sandbox approximation installed.
    pub(crate) fn open() -> Result<Self, SqlError> {
        let mut conn = Connection::open_in_memory().map_err(sql_error)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let trusted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&trusted);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if flag.load(Ordering::Relaxed) || !denied(&ctx.action) {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }))
        .map_err(sql_error)?;
        Ok(Backend { conn, trusted })
    }

    /// Runs `f` with the sandbox lifted, as the host does for its own statements.
    pub(crate) fn trusted<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        self.trusted.store(true, Ordering::Relaxed);
        let result = f(&self.conn);
        self.trusted.store(false, Ordering::Relaxed);
        result
    }

    pub(crate) fn prepare(&mut self, statement: &Statement) -> Result<Handle, SqlError> {
        self.conn
            .prepare_cached(statement.sql())
            .map(|_| Handle)
            .map_err(sql_error)
    }

    pub(crate) fn execute_batch(&mut self, buffer: &WriteBuffer) -> Result<(), (usize, SqlError)> {
        for (index, (sql, params)) in buffer.decoded().into_iter().enumerate() {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut statement| statement.execute(params_from_iter(&params)))
                .map_err(|e| (index, sql_error(e)))?;
        }
        Ok(())
    }

    pub(crate) fn execute(
        &mut self,
        _handle: Handle,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<u64, SqlError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(sql_error)?;
        let changed = statement
            .execute(params_from_iter(params))
            .map_err(sql_error)?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    pub(crate) fn query(
        &mut self,
        _handle: Handle,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Rows, SqlError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(sql_error)?;
        query(&mut statement, params)
    }

    pub(crate) fn execute_script(&mut self, sql: &str) -> Result<(), SqlError> {
        self.conn.execute_batch(sql).map_err(sql_error)
    }
}

/// Runs a prepared query and collects its rows.
pub(crate) fn query(
    statement: &mut rusqlite::Statement<'_>,
    params: &[Value<'_>],
) -> Result<Rows, SqlError> {
    let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let width = columns.len();
    let mut rows = statement
        .query(params_from_iter(params))
        .map_err(sql_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(owned(row.get_ref(i).map_err(sql_error)?));
        }
        out.push(values);
    }
    Ok(Rows::new(columns, out))
}

/// Writes one line to standard error, where `cargo test` captures it.
pub(crate) fn log(level: Level, message: &str) {
    eprintln!("[projector {}] {message}", level.as_str());
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn owned(value: ValueRef<'_>) -> Value<'static> {
    use std::borrow::Cow;
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(Cow::Owned(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Blob(b) => Value::Blob(Cow::Owned(b.to_vec())),
    }
}

/// Maps a rusqlite error onto the kinds the host reports.
#[expect(
    clippy::needless_pass_by_value,
    reason = "shaped for `map_err(sql_error)`"
)]
pub(crate) fn sql_error(e: rusqlite::Error) -> SqlError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::ConstraintViolation => SqlErrorKind::Constraint,
            ErrorCode::TooBig | ErrorCode::DiskFull => SqlErrorKind::Limit,
            ErrorCode::OperationInterrupted => SqlErrorKind::Interrupted,
            ErrorCode::AuthorizationForStatementDenied => SqlErrorKind::Denied,
            // SQLITE_ERROR: a syntax error, an unknown table or column.
            ErrorCode::Unknown => SqlErrorKind::Invalid,
            _ => SqlErrorKind::Other,
        },
        rusqlite::Error::InvalidParameterCount(..)
        | rusqlite::Error::InvalidParameterName(_)
        | rusqlite::Error::MultipleStatement
        | rusqlite::Error::ExecuteReturnedResults
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::InvalidColumnName(_) => SqlErrorKind::Invalid,
        _ => SqlErrorKind::Other,
    };
    SqlError::new(kind, e.to_string())
}

/// Whether the host's sandbox would deny this action.
fn denied(action: &AuthAction<'_>) -> bool {
    match action {
        AuthAction::Attach { .. }
        | AuthAction::Detach { .. }
        | AuthAction::Transaction { .. }
        | AuthAction::Savepoint { .. } => true,
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            pragma_value.is_some()
                || !READ_ONLY_PRAGMAS
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(pragma_name))
        }
        AuthAction::Function { function_name } => {
            function_name.eq_ignore_ascii_case("load_extension")
        }
        other => table_of(other).is_some_and(|table| {
            table
                .get(..HOST_TABLE_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(HOST_TABLE_PREFIX))
        }),
    }
}

/// The table an action touches, if any.
fn table_of<'c>(action: &AuthAction<'c>) -> Option<&'c str> {
    match *action {
        AuthAction::CreateIndex { table_name, .. }
        | AuthAction::CreateTable { table_name }
        | AuthAction::CreateTempIndex { table_name, .. }
        | AuthAction::CreateTempTable { table_name }
        | AuthAction::CreateTempTrigger { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::DropIndex { table_name, .. }
        | AuthAction::DropTable { table_name }
        | AuthAction::DropTempIndex { table_name, .. }
        | AuthAction::DropTempTable { table_name }
        | AuthAction::DropTempTrigger { table_name, .. }
        | AuthAction::DropTrigger { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Read { table_name, .. }
        | AuthAction::Update { table_name, .. }
        | AuthAction::AlterTable { table_name, .. }
        | AuthAction::Analyze { table_name }
        | AuthAction::CreateVtable { table_name, .. }
        | AuthAction::DropVtable { table_name, .. } => Some(table_name),
        _ => None,
    }
}
