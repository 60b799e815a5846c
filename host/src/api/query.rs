//! `POST /v1/projectors/{name}/query`: one read-only SQL statement against the active
//! version's read model.
//!
//! ```json
//! {"sql": "SELECT account, balance FROM balances WHERE balance > ?1", "params": [100]}
//! ```
//! answers
//! ```json
//! {"columns": ["account", "balance"], "rows": [["a-1", 250]], "checkpoint": 1042,
//!  "version": "3f9c2a1b", "truncated": false}
//! ```
//!
//! `checkpoint` is the log offset the rows reflect: it is read in the same read
//! transaction as the query, so the two always agree. Integers, reals, text and null
//! map to JSON as themselves; a blob becomes `{"hex": "..."}`.
//!
//! # Confinement
//! - The connection is opened read-only (`SQLITE_OPEN_READ_ONLY`), per query.
//! - An authorizer allows reads and nothing else, deny by default: no writes or schema
//!   changes (temporary ones included), no `ATTACH`/`DETACH`, no `PRAGMA`, no
//!   transactions or savepoints, no `load_extension`; attached databases are also
//!   limited to zero.
//! - One statement per request.
//!
//! # Cost
//! A query gets the same bounds as a projector's SQL (`refract::runtime`'s `sql_cost`
//! and temporary-storage budget, from `[limits]`): values of at most
//! `limits.max_value_bytes`, `LIKE` patterns of `limits.max_like_pattern_bytes`,
//! `limits.max_columns` columns, the linear versions of SQLite's quadratic functions
//! and the costly ones denied, and `limits.max_temp_bytes` of temporary files.
//! - A progress handler interrupts the statement after `server.query_timeout_ms`, and a
//!   timer then calls `sqlite3_interrupt` for the loops inside one step; a single step
//!   is bounded by the limits above.
//! - The answer stops at `server.max_query_rows` rows or `server.max_query_result_bytes`
//!   bytes of JSON, with `truncated: true`. Each value is measured before it is
//!   converted, so the body never passes the cap; a first row larger than the cap alone
//!   is refused (422 `query_too_big`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;

use super::error::ApiError;
use super::extract::{ApiJson, ProjectorName};
use super::limits::{QUERY_PROGRESS_OPS, ServerConfig};
use super::state::{ApiState, blocking};
use crate::runtime::{COSTLY_FUNCTIONS, ReadModelConnection, SandboxLimits, costly_function};

/// SQL functions a query may not call even though they read nothing: they reach
/// outside the database. (The functions whose cost cannot be bounded,
/// [`COSTLY_FUNCTIONS`], are refused too.)
pub const DENIED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer", "sqlite_log"];

/// A query request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    /// One SQL statement.
    sql: String,
    /// Positional parameters: null, booleans, numbers or strings.
    #[serde(default)]
    params: Vec<JsonValue>,
    /// Answer from the read model as it was at this log offset (see
    /// [`crate::snapshots::point_in_time`]).
    #[serde(default)]
    at_offset: Option<u64>,
    /// Answer from the read model as it was at this instant (RFC 3339): at the last
    /// offset recorded at or before it.
    #[serde(default)]
    at_time: Option<String>,
}

/// A query's answer.
#[derive(Debug, Serialize)]
pub(crate) struct QueryAnswer {
    /// The result's column names.
    columns: Vec<String>,
    /// The rows, each an array in column order.
    rows: Vec<Vec<JsonValue>>,
    /// The log offset the read model reflected when the query ran.
    checkpoint: u64,
    /// The version that answered.
    version: String,
    /// Whether rows were left out because of the row or byte cap.
    truncated: bool,
}

/// `POST /v1/projectors/{name}/query`.
pub(crate) async fn run(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Json<QueryAnswer>, ApiError> {
    let params = request
        .params
        .iter()
        .enumerate()
        .map(|(index, value)| to_sql(index, value))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = Arc::clone(state.engine());
    let config = state.config().clone();
    let limits = engine.sandbox_limits().clone();
    if request.at_offset.is_some() || request.at_time.is_some() {
        let point_in_time = state.point_in_time();
        // A replay and a query: blocking, bounded by the point-in-time limits.
        return blocking(move || {
            super::snapshots::query_at(
                &engine,
                &point_in_time,
                &name,
                &request.at_offset,
                &request.at_time,
                |path, version| run_query(path, &request.sql, &params, &config, &limits, version),
            )
            .map(Json)
        })
        .await;
    }
    // SQLite blocks; a query may run up to the time limit.
    blocking(move || {
        let Some(model) = engine.read_model(&name) else {
            if let Some(why) = engine.read_model_unavailable(&name) {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_model_unavailable",
                    format!("projector `{name}` cannot be queried now: {why}; retry later"),
                ));
            }
            return Err(match engine.projector(&name) {
                Some(_) => ApiError::new(
                    StatusCode::CONFLICT,
                    "no_active_version",
                    format!(
                        "projector `{name}` has no active version yet (its first version is \
                         still replaying); retry when `GET /v1/projectors/{name}` shows one"
                    ),
                ),
                None => ApiError::not_found(
                    "unknown_projector",
                    format!("no projector named `{name}`; `GET /v1/projectors` lists them"),
                ),
            });
        };
        let started = Instant::now();
        let answer = run_query(
            &model.path,
            &request.sql,
            &params,
            &config,
            &limits,
            model.version,
        )
        .map_err(|error| {
            // Deleted from under the host: the engine is about to rebuild it aside.
            if error.status.is_server_error() && !model.path.exists() {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_model_unavailable",
                    format!(
                        "projector `{name}` cannot be queried now: its read model {} was \
                         deleted; the host rebuilds it from the log; retry later",
                        model.path.display()
                    ),
                )
            } else {
                error
            }
        });
        match &answer {
            Ok(answer) => tracing::debug!(
                projector = %name,
                rows = answer.rows.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "read-model query"
            ),
            Err(error) => tracing::debug!(projector = %name, code = error.code, "read-model query refused: {}", error.message),
        }
        answer.map(Json)
    })
    .await
}

/// A JSON parameter as an SQLite value.
fn to_sql(index: usize, value: &JsonValue) -> Result<Value, ApiError> {
    Ok(match value {
        JsonValue::Null => Value::Null,
        JsonValue::Bool(b) => Value::Integer(i64::from(*b)),
        JsonValue::String(text) => Value::Text(text.clone()),
        JsonValue::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => Value::Integer(integer),
            (None, Some(real)) if number.is_f64() => Value::Real(real),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_params",
                    format!("params[{index}] = {number} does not fit in a 64-bit integer"),
                ));
            }
        },
        JsonValue::Array(_) | JsonValue::Object(_) => {
            return Err(ApiError::bad_request(
                "invalid_params",
                format!("params[{index}] must be null, a boolean, a number or a string"),
            ));
        }
    })
}

/// Opens the read model read-only and runs one statement under the authorizer, the
/// time limit and the caps. Blocking.
fn run_query(
    path: &Path,
    sql: &str,
    params: &[Value],
    config: &ServerConfig,
    limits: &SandboxLimits,
    version: String,
) -> Result<QueryAnswer, ApiError> {
    let host = |e: rusqlite::Error| ApiError::internal("opening the read model", &e);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // Read-only, `DEFENSIVE`, an untrusted schema (functions named in the read model's
    // own views and triggers run only if innocuous), and the sandbox's cost bounds.
    let mut conn = ReadModelConnection::open(path, flags, limits).map_err(host)?;
    conn.busy_timeout(config.query_timeout()).map_err(host)?;

    let deadline = Instant::now() + config.query_timeout();
    conn.conn_mut()
        .progress_handler(QUERY_PROGRESS_OPS, Some(move || Instant::now() >= deadline))
        .map_err(host)?;
    // The progress handler runs between SQLite's steps; past the deadline an interrupt
    // also stops the loops inside one (counting a whole table, say).
    let _interrupt = InterruptAt::start(deadline, conn.get_interrupt_handle());

    // The checkpoint and the rows come from one read transaction, so they agree.
    conn.execute_batch("BEGIN").map_err(host)?;
    let checkpoint: Option<i64> = conn
        .query_row(
            "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| ApiError::internal("reading the read model's checkpoint", &e))?;
    let checkpoint = checkpoint.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);

    let denied = Arc::new(Mutex::new(None::<String>));
    let reason = Arc::clone(&denied);
    conn.conn_mut()
        .authorizer(Some(move |context: AuthContext<'_>| {
            match allow(context.action) {
                Ok(()) => Authorization::Allow,
                Err(why) => {
                    reason
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(why);
                    Authorization::Deny
                }
            }
        }))
        .map_err(host)?;

    let failure = |error: rusqlite::Error| {
        let denial = denied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let temp_full = conn.take_temp_refusal();
        sql_error(&error, denial, temp_full, limits)
    };
    let result = execute(&conn, sql, params, config, &failure).map(|(columns, rows, truncated)| {
        QueryAnswer {
            columns,
            rows,
            checkpoint,
            version,
            truncated,
        }
    });
    // Dropping the connection ends the read transaction; nothing was written.
    drop(conn);
    result
}

/// Calls `sqlite3_interrupt` on a connection at a deadline, from a thread of its own,
/// unless dropped first.
struct InterruptAt {
    cancel: Option<std::sync::mpsc::Sender<()>>,
}

impl InterruptAt {
    fn start(deadline: Instant, handle: rusqlite::InterruptHandle) -> Self {
        let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("refract-query-timer".into())
            .spawn(move || {
                let left = deadline.saturating_duration_since(Instant::now());
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    cancelled.recv_timeout(left)
                {
                    handle.interrupt();
                }
            });
        // Without the timer the progress handler still ends the query between steps.
        if let Err(err) = spawned {
            tracing::warn!("cannot start a query's interrupt timer: {err}");
        }
        Self {
            cancel: Some(cancel),
        }
    }
}

impl Drop for InterruptAt {
    fn drop(&mut self) {
        // Wakes the timer, which then ends without interrupting.
        drop(self.cancel.take());
    }
}

/// Prepares, binds and steps the statement, collecting rows within the caps.
#[allow(
    clippy::type_complexity,
    reason = "a private helper's (columns, rows, truncated) triple"
)]
fn execute(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    config: &ServerConfig,
    failed: &dyn Fn(rusqlite::Error) -> ApiError,
) -> Result<(Vec<String>, Vec<Vec<JsonValue>>, bool), ApiError> {
    let mut stmt = conn.prepare(sql).map_err(failed)?;
    if !stmt.readonly() {
        return Err(not_allowed("the statement would write".to_owned()));
    }
    if stmt.parameter_count() != params.len() {
        return Err(ApiError::bad_request(
            "invalid_params",
            format!(
                "the statement has {} parameter(s) but {} value(s) were given in `params`",
                stmt.parameter_count(),
                params.len()
            ),
        ));
    }
    for (index, value) in params.iter().enumerate() {
        stmt.raw_bind_parameter(index + 1, value).map_err(failed)?;
    }
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let width = columns.len();
    let max_bytes = config.max_query_result_bytes;
    let mut rows = Vec::new();
    // The JSON around the rows: column names and the other fields, roughly.
    let mut bytes = columns
        .iter()
        .map(|name| json_text_len(name.as_bytes()))
        .sum::<usize>()
        + 128;
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next().map_err(failed)? {
        if rows.len() >= config.max_query_rows {
            return Ok((columns, rows, true));
        }
        // Measure the whole row before converting any of it, so a row that does not
        // fit costs nothing but SQLite's own copy.
        let mut row_bytes = 2;
        for index in 0..width {
            row_bytes += 1 + json_len(row.get_ref(index).map_err(failed)?);
        }
        if bytes.saturating_add(row_bytes) > max_bytes {
            if rows.is_empty() {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "query_too_big",
                    format!(
                        "the first row alone is {row_bytes} bytes of JSON, more than the {max_bytes} an answer may hold (`server.max_query_result_bytes`); select fewer or smaller columns"
                    ),
                ));
            }
            return Ok((columns, rows, true));
        }
        bytes += row_bytes;
        let mut values = Vec::with_capacity(width);
        for index in 0..width {
            values.push(match row.get_ref(index).map_err(failed)? {
                ValueRef::Null => JsonValue::Null,
                ValueRef::Integer(integer) => JsonValue::from(integer),
                // Non-finite reals have no JSON form; serde_json writes them as null.
                ValueRef::Real(real) => JsonValue::from(real),
                ValueRef::Text(text) => {
                    JsonValue::String(String::from_utf8_lossy(text).into_owned())
                }
                ValueRef::Blob(blob) => serde_json::json!({"hex": hex::encode(blob)}),
            });
        }
        rows.push(values);
    }
    Ok((columns, rows, false))
}

/// The most bytes `value` takes in the answer's JSON.
fn json_len(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => 4,
        // `-9223372036854775808`, or a real in its shortest round-trip form.
        ValueRef::Integer(_) | ValueRef::Real(_) => 24,
        ValueRef::Text(text) => json_text_len(text),
        // `{"hex":"…"}`
        ValueRef::Blob(blob) => 10 + 2 * blob.len(),
    }
}

/// The bytes of `text` as a JSON string: quotes, and escapes for quotes, backslashes
/// and control characters (at most `\u00XX`, six bytes). Invalid UTF-8 becomes U+FFFD,
/// three bytes for each bad byte at most.
fn json_text_len(text: &[u8]) -> usize {
    2 + text
        .iter()
        .map(|&byte| match byte {
            b'"' | b'\\' => 2,
            0x00..=0x1f => 6,
            0x80..=0xff => 3,
            _ => 1,
        })
        .sum::<usize>()
}

/// What the authorizer allows: reading, and nothing else.
fn allow(action: AuthAction<'_>) -> Result<(), String> {
    match action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => Ok(()),
        AuthAction::Function { function_name } => {
            if DENIED_FUNCTIONS
                .iter()
                .any(|denied| denied.eq_ignore_ascii_case(function_name))
            {
                Err(format!(
                    "the SQL function {function_name}() is not allowed in a query"
                ))
            } else if COSTLY_FUNCTIONS
                .iter()
                .any(|denied| denied.eq_ignore_ascii_case(function_name))
            {
                Err(costly_function(function_name))
            } else {
                Ok(())
            }
        }
        AuthAction::Pragma { pragma_name, .. } => Err(format!(
            "PRAGMA {pragma_name} is not allowed in a query; read `sqlite_schema` to see the schema"
        )),
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Err("ATTACH and DETACH are not allowed: a query reads one read model".to_owned())
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Err(
            "transactions are not allowed: every query already runs in its own read transaction"
                .to_owned(),
        ),
        other => Err(format!(
            "queries are read-only; {} is not allowed",
            describe(other)
        )),
    }
}

/// A short name for a denied action.
fn describe(action: AuthAction<'_>) -> String {
    match action {
        AuthAction::Insert { table_name } => format!("INSERT into `{table_name}`"),
        AuthAction::Update { table_name, .. } => format!("UPDATE of `{table_name}`"),
        AuthAction::Delete { table_name } => format!("DELETE from `{table_name}`"),
        AuthAction::CreateTable { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateIndex { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateView { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::CreateTrigger { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateVtable { .. } => "CREATE".to_owned(),
        AuthAction::DropTable { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropIndex { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropView { .. }
        | AuthAction::DropTempView { .. }
        | AuthAction::DropTrigger { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropVtable { .. } => "DROP".to_owned(),
        AuthAction::AlterTable { .. } => "ALTER TABLE".to_owned(),
        AuthAction::Reindex { .. } => "REINDEX".to_owned(),
        AuthAction::Analyze { .. } => "ANALYZE".to_owned(),
        _ => "this statement".to_owned(),
    }
}

fn not_allowed(reason: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "query_not_allowed", reason)
}

/// Maps an SQLite error from the user's statement to the client error it is.
/// `temp_full` says the temporary-storage budget refused a write (SQLite reports it as
/// a full disk).
fn sql_error(
    error: &rusqlite::Error,
    denied: Option<String>,
    temp_full: bool,
    limits: &SandboxLimits,
) -> ApiError {
    let too_costly = |message: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_too_costly",
            message,
        )
    };
    let code = error.sqlite_error_code();
    let message = match error {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    };
    match code {
        Some(ErrorCode::AuthorizationForStatementDenied) => {
            not_allowed(denied.unwrap_or_else(|| "queries are read-only".to_owned()))
        }
        // A function refused in the authorizer surfaces as a plain error.
        _ if denied.is_some() => not_allowed(denied.unwrap_or_default()),
        Some(ErrorCode::ReadOnly) => not_allowed("queries are read-only".to_owned()),
        Some(ErrorCode::OperationInterrupted) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_timeout",
            "the query ran past the time limit (`server.query_timeout_ms`) and was stopped; \
             narrow it, or add an index in the projector",
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the read model is busy; retry",
        ),
        Some(ErrorCode::TooBig | ErrorCode::DiskFull) if temp_full => too_costly(format!(
            "the query needs more than {} bytes of temporary storage for its sorts and \
             temporary tables (`limits.max_temp_bytes`); narrow it, or add an index in the projector",
            limits.max_temp_bytes
        )),
        Some(ErrorCode::TooBig) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_too_big",
            format!(
                "a value in the query or its result is larger than {} bytes (`limits.max_value_bytes`)",
                limits.max_value_bytes
            ),
        ),
        _ if matches!(error, rusqlite::Error::MultipleStatement) => {
            ApiError::bad_request("invalid_sql", "send one SQL statement per query")
        }
        _ if message.contains("`limits.") => too_costly(message),
        _ if message.contains("LIKE or GLOB pattern too complex") => too_costly(format!(
            "{message}: a pattern may be at most {} bytes (`limits.max_like_pattern_bytes`)",
            limits.max_like_pattern_bytes
        )),
        _ if message.contains("too many columns") => too_costly(format!(
            "{message}: at most {} (`limits.max_columns`)",
            limits.max_columns
        )),
        _ => ApiError::bad_request("invalid_sql", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_params_become_sqlite_values() {
        let values: Vec<JsonValue> = serde_json::from_str(r#"[1, "x", null, 2.5, true]"#).unwrap();
        let converted: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| to_sql(i, v).unwrap())
            .collect();
        assert_eq!(
            converted,
            vec![
                Value::Integer(1),
                Value::Text("x".into()),
                Value::Null,
                Value::Real(2.5),
                Value::Integer(1)
            ]
        );
        assert!(to_sql(0, &serde_json::json!([1])).is_err());
        assert!(to_sql(0, &serde_json::json!(u64::MAX)).is_err());
    }

    fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE _refract_checkpoint (id INTEGER PRIMARY KEY, log_offset INTEGER);
             INSERT INTO _refract_checkpoint VALUES (1, 42);
             CREATE TABLE t (k TEXT, v INTEGER, b BLOB);
             INSERT INTO t VALUES ('a', 1, x'00ff'), ('b', 2, NULL), ('c', 3, NULL);",
        )
        .unwrap();
        (dir, path)
    }

    fn query(path: &Path, sql: &str, params: &[Value]) -> Result<QueryAnswer, ApiError> {
        run_query(
            path,
            sql,
            params,
            &ServerConfig::default(),
            &SandboxLimits::default(),
            "v".into(),
        )
    }

    #[test]
    fn reads_rows_with_the_checkpoint() {
        let (_dir, path) = fixture();
        let answer = query(
            &path,
            "SELECT k, v, b FROM t WHERE v >= ?1 ORDER BY v",
            &[Value::Integer(1)],
        )
        .unwrap();
        assert_eq!(answer.columns, ["k", "v", "b"]);
        assert_eq!(answer.rows.len(), 3);
        assert_eq!(answer.rows[0][2], serde_json::json!({"hex": "00ff"}));
        assert_eq!(answer.checkpoint, 42);
        assert!(!answer.truncated);
    }

    #[test]
    fn everything_but_reading_is_refused() {
        let (_dir, path) = fixture();
        for sql in [
            "INSERT INTO t VALUES ('x', 1, NULL)",
            "DELETE FROM t",
            "UPDATE t SET v = 0",
            "CREATE TEMP TABLE x (a)",
            "DROP TABLE t",
            "ATTACH DATABASE 'other.db' AS other",
            "DETACH DATABASE main",
            "PRAGMA table_info(t)",
            "PRAGMA journal_mode = DELETE",
            "BEGIN",
            "SAVEPOINT s",
            "SELECT load_extension('x')",
            "VACUUM",
        ] {
            let error = query(&path, sql, &[]).unwrap_err();
            assert!(
                error.status == StatusCode::FORBIDDEN || error.status == StatusCode::BAD_REQUEST,
                "{sql}: {error}"
            );
        }
        let error = query(&path, "SELECT 1; DELETE FROM t", &[]).unwrap_err();
        assert!(error.status.is_client_error(), "{error}");
        assert_eq!(
            query(&path, "SELECT count(*) FROM t", &[]).unwrap().rows[0][0],
            3
        );
    }

    #[test]
    fn a_runaway_query_is_stopped() {
        let (_dir, path) = fixture();
        let config = ServerConfig {
            query_timeout_ms: 50,
            ..ServerConfig::default()
        };
        let started = Instant::now();
        let error = run_query(
            &path,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
            &[],
            &config,
            &SandboxLimits::default(),
            "v".into(),
        )
        .unwrap_err();
        assert_eq!(error.code, "query_timeout");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn rows_stop_at_the_cap() {
        let (_dir, path) = fixture();
        let config = ServerConfig {
            max_query_rows: 2,
            ..ServerConfig::default()
        };
        let answer = run_query(
            &path,
            "SELECT * FROM t",
            &[],
            &config,
            &SandboxLimits::default(),
            "v".into(),
        )
        .unwrap();
        assert_eq!(answer.rows.len(), 2);
        assert!(answer.truncated);
    }

    #[test]
    fn bytes_stop_at_the_cap_before_they_are_spent() {
        let (_dir, path) = fixture();
        let config = ServerConfig {
            max_query_result_bytes: 100_000,
            ..ServerConfig::default()
        };
        let limits = SandboxLimits::default();
        // Forty rows of 40 KB each: the cap holds two.
        let answer = run_query(
            &path,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40)
             SELECT x, printf('%.*c', 40000, 'a') FROM c",
            &[],
            &config,
            &limits,
            "v".into(),
        )
        .unwrap();
        assert_eq!(answer.rows.len(), 2);
        assert!(answer.truncated);
        let body = serde_json::to_string(&answer).unwrap();
        assert!(body.len() <= 100_000, "{}", body.len());
        // A first row that cannot fit is refused, not answered empty.
        let error = run_query(
            &path,
            "SELECT printf('%.*c', 60000, 'a'), printf('%.*c', 60000, 'b')",
            &[],
            &config,
            &limits,
            "v".into(),
        )
        .unwrap_err();
        assert_eq!(error.code, "query_too_big", "{error}");
        assert!(
            error.message.contains("server.max_query_result_bytes"),
            "{error}"
        );
    }

    #[test]
    fn queries_get_the_sandbox_bounds() {
        let (_dir, path) = fixture();
        let limits = SandboxLimits {
            max_temp_bytes: 1 << 20,
            ..SandboxLimits::default()
        };
        let config = ServerConfig::default();
        let run = |sql: &str| run_query(&path, sql, &[], &config, &limits, "v".into());
        // SQLite's own replace() took 20 s for this; the bounded one is linear.
        let started = Instant::now();
        let answer = run(
            "SELECT length(replace(printf('%.*c', 1000000, 'a'), printf('%.*c', 500000, 'a') || 'b', 'x'))",
        )
        .unwrap();
        assert_eq!(answer.rows[0][0], 1_000_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        for (sql, code) in [
            ("SELECT zeroblob(2000000)", "query_too_big"),
            ("SELECT json_group_array(k) FROM t", "query_not_allowed"),
            ("SELECT json_pretty('[1]')", "query_not_allowed"),
            (
                "SELECT 'a' LIKE printf('%.*c', 200, '%')",
                "query_too_costly",
            ),
            (
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
                 SELECT count(*) FROM (SELECT printf('%.*c', 1000, x) AS v FROM c ORDER BY v)",
                "query_too_costly",
            ),
        ] {
            let error = run(sql).unwrap_err();
            assert_eq!(error.code, code, "{sql}: {error}");
            assert!(
                error.message.contains("limits.") || code == "query_not_allowed",
                "{sql}: {error}"
            );
        }
    }
}
