//! Every sandbox limit, as a named default and a configuration key.
//!
//! A projector is untrusted code. Each resource it can consume, and each guest-controlled
//! size the host copies or stores, has a cap here. The defaults suit ordinary read models;
//! an operator raises one in `refract.toml`, under `[limits]`, with the key named on the
//! field (and in every error that reports the limit).
//!
//! Over a cap, the guest either gets a `sql-error` of kind `limit` (where it can
//! reasonably react, such as a query returning too many rows), or the call traps with a
//! [`LimitExceeded`] naming the limit and its key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default for [`SandboxLimits::batch_deadline_ms`]: 10 seconds per `init` or `handle`
/// call. Generous for a batch of a thousand events; an infinite loop ends here.
pub const DEFAULT_BATCH_DEADLINE_MS: u64 = 10_000;

/// Default for [`SandboxLimits::statement_deadline_ms`]: 5 seconds per SQL statement. A
/// runaway query (a recursive CTE without end) is interrupted here and the guest gets an
/// `interrupted` error it can handle, with time left in the call to record it.
pub const DEFAULT_STATEMENT_DEADLINE_MS: u64 = 5_000;

/// Default for [`SandboxLimits::max_memory_bytes`]: 128 MiB of linear memory per
/// instance. A projector holds one batch and its buffered writes, not its read model.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 128 << 20;

/// Default for [`SandboxLimits::max_table_elements`]: entries per wasm table. Rust
/// components use a few thousand for indirect calls.
pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 100_000;

/// Default for [`SandboxLimits::max_instances`]: core and component instances per store.
/// A Rust component is a handful; the cap stops a component built to instantiate
/// thousands.
pub const DEFAULT_MAX_INSTANCES: usize = 64;

/// Default for [`SandboxLimits::max_memories`]: linear memories per store.
pub const DEFAULT_MAX_MEMORIES: usize = 4;

/// Default for [`SandboxLimits::max_tables`]: wasm tables per store.
pub const DEFAULT_MAX_TABLES: usize = 16;

/// Default for [`SandboxLimits::max_wasm_stack_bytes`]: 512 KiB, wasmtime's own default.
/// Deep recursion traps here instead of overflowing the host thread's stack.
pub const DEFAULT_MAX_WASM_STACK_BYTES: usize = 512 << 10;

/// Default for [`SandboxLimits::max_hostcall_bytes`]: 64 MiB that wasmtime may copy out
/// of the guest for one call (the arguments of one import, or the result of one export).
/// It bounds the copy before any of the finer caps below can look at the data, including
/// a list whose entries all point at the same large string.
pub const DEFAULT_MAX_HOSTCALL_BYTES: usize = 64 << 20;

/// Default for [`SandboxLimits::max_sql_bytes`]: 256 KiB of SQL text for `prepare` and
/// `execute-script`. Also SQLite's `SQLITE_LIMIT_SQL_LENGTH`.
pub const DEFAULT_MAX_SQL_BYTES: usize = 256 << 10;

/// Default for [`SandboxLimits::max_statements`]: distinct statements one instance may
/// `prepare`. The host keeps every prepared text, so the count is bounded.
pub const DEFAULT_MAX_STATEMENTS: usize = 1_024;

/// Default for [`SandboxLimits::max_writes_per_call`]: writes in one `execute-batch`.
pub const DEFAULT_MAX_WRITES_PER_CALL: usize = 100_000;

/// Default for [`SandboxLimits::max_params_per_statement`]: parameters bound to one
/// statement. Also SQLite's `SQLITE_LIMIT_VARIABLE_NUMBER`.
pub const DEFAULT_MAX_PARAMS_PER_STATEMENT: usize = 999;

/// Default for [`SandboxLimits::max_value_bytes`]: 1 MiB for one text or blob, whether
/// bound as a parameter or built by SQL (`zeroblob`, `printf`). Also SQLite's
/// `SQLITE_LIMIT_LENGTH`.
///
/// It is the `n` in the cost of every SQL function: one call runs without a check of the
/// deadline in between, so its worst case must be short. At 1 MiB the worst function
/// (`LIKE` with a pattern at [`DEFAULT_MAX_LIKE_PATTERN_BYTES`]) takes well under a
/// second; at 16 MiB it took sixteen times longer, and the memory a statement can hold
/// (values times columns or arguments) grows the same way. An event's data is at most
/// 1 MiB by default too (`log.max_data_bytes`).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// Default for [`SandboxLimits::max_like_pattern_bytes`]: 100 bytes of `LIKE` or `GLOB`
/// pattern, SQLite's `SQLITE_LIMIT_LIKE_PATTERN_LENGTH` (SQLite's own default is
/// 50,000). SQLite matches a pattern in time up to the pattern's length times the
/// value's, inside one function call, and the host keeps SQLite's own `LIKE` so that
/// prefix patterns can still use an index.
pub const DEFAULT_MAX_LIKE_PATTERN_BYTES: usize = 100;

/// Default for [`SandboxLimits::max_function_cost`]: 2^28 (about 268 million) units for
/// one call of an SQL function whose cost is the product of two arguments' lengths:
/// `json_patch` (the target's bytes times the patch's), and `trim` or `unhex` with a
/// character list over text that is not valid UTF-8 (the text's bytes times the list's
/// characters). A call over it fails with a `limit` error instead of running for
/// minutes; at the cap one takes a fraction of a second.
pub const DEFAULT_MAX_FUNCTION_COST: u64 = 1 << 28;

/// Default for [`SandboxLimits::max_columns`]: 64 columns in a table, an index, a
/// result row, a `GROUP BY` or `ORDER BY`, SQLite's `SQLITE_LIMIT_COLUMN` (SQLite's own
/// default is 2,000). SQLite holds a result row whole before the host reads it, so a row
/// costs up to this many values of [`DEFAULT_MAX_VALUE_BYTES`], about twice over while
/// it is built: 128 MiB measured at the defaults, as much as a guest's whole memory.
pub const DEFAULT_MAX_COLUMNS: usize = 64;

/// Default for [`SandboxLimits::max_function_args`]: 64 arguments to one SQL function,
/// SQLite's `SQLITE_LIMIT_FUNCTION_ARG` (SQLite's own default is 1,000). SQLite computes
/// every argument before the call, so a call holds up to this many values.
pub const DEFAULT_MAX_FUNCTION_ARGS: usize = 64;

/// Default for [`SandboxLimits::max_prepared_sql_bytes`]: 4 MiB of SQL text across the
/// statements one instance has prepared. The host keeps each text for the instance's
/// life, and SQLite a compiled program a few times its size for the most recently used
/// [`STATEMENT_CACHE_CAPACITY`](super::STATEMENT_CACHE_CAPACITY) of them.
pub const DEFAULT_MAX_PREPARED_SQL_BYTES: usize = 4 << 20;

/// Default for [`SandboxLimits::max_temp_bytes`]: 256 MiB of temporary files one
/// connection may hold at once: the sorters, the temporary b-trees behind `ORDER BY`,
/// `GROUP BY`, `DISTINCT`, `UNION` and `IN`, materialised views and CTEs, and statement
/// journals. Past it the statement fails with a `limit` error.
pub const DEFAULT_MAX_TEMP_BYTES: u64 = 256 << 20;

/// Default for [`SandboxLimits::deadline_grace_ms`]: 2 seconds past `batch_deadline_ms`
/// before a call still running is reported as overrunning its deadline (the version's
/// status says so, and the host interrupts SQLite again).
pub const DEFAULT_DEADLINE_GRACE_MS: u64 = 2_000;

/// Default for [`SandboxLimits::max_expr_depth`]: SQL expression tree depth, SQLite's
/// `SQLITE_LIMIT_EXPR_DEPTH` (SQLite's own default is 1000; read models need far less).
pub const DEFAULT_MAX_EXPR_DEPTH: usize = 100;

/// Default for [`SandboxLimits::max_query_rows`]: rows one `query` may return.
pub const DEFAULT_MAX_QUERY_ROWS: usize = 10_000;

/// Default for [`SandboxLimits::max_query_bytes`]: 16 MiB of text, blobs and numbers one
/// `query` may return.
pub const DEFAULT_MAX_QUERY_BYTES: usize = 16 << 20;

/// Default for [`SandboxLimits::max_page_count`]: 2,097,152 pages, 8 GiB at SQLite's
/// default 4 KiB page size. SQLite's `PRAGMA max_page_count` on the read model.
pub const DEFAULT_MAX_PAGE_COUNT: u64 = 2 << 20;

/// Default for [`SandboxLimits::max_log_message_bytes`]: 8 KiB per log line; longer
/// messages are cut at the cap and marked as cut.
pub const DEFAULT_MAX_LOG_MESSAGE_BYTES: usize = 8 << 10;

/// Default for [`SandboxLimits::max_log_lines_per_call`]: log lines kept per `init` or
/// `handle` call. Later lines are dropped and counted, so a chatty projector cannot flood
/// the host's log.
pub const DEFAULT_MAX_LOG_LINES_PER_CALL: usize = 1_000;

/// Default for [`SandboxLimits::max_log_lines_per_second`]: log lines one projector
/// version may write per second, over all its calls. A burst of one second's worth is
/// allowed; lines past the rate are dropped and counted (the version's status and
/// `/metrics` show the count).
pub const DEFAULT_MAX_LOG_LINES_PER_SECOND: u64 = 100;

/// Default for [`SandboxLimits::max_log_bytes_per_second`]: bytes of log messages one
/// projector version may write per second, over all its calls, with a burst of one
/// second's worth. Together with the line rate it bounds the host's log over time, not
/// only per call.
pub const DEFAULT_MAX_LOG_BYTES_PER_SECOND: u64 = 64 << 10;

/// Default for [`SandboxLimits::max_emits_per_batch`]: events one reactor call may emit.
/// A saga step emits a handful per source event; a reactor stuck in an emit loop ends
/// here, before its buffered events cost the host memory and the log space.
pub const DEFAULT_MAX_EMITS_PER_BATCH: usize = 10_000;

/// Default for [`SandboxLimits::max_emits_per_second`]: events one reactor version may
/// emit per second, over all its calls, with a burst of one second's worth. It bounds
/// what a reactor can add to the log over time, including one that reacts to its own
/// events.
pub const DEFAULT_MAX_EMITS_PER_SECOND: u64 = 50_000;

/// Default for [`SandboxLimits::max_emit_bytes`]: 256 KiB for one emitted event (stream,
/// type, data and metadata together), well under the log's own `log.max_data_bytes`.
pub const DEFAULT_MAX_EMIT_BYTES: usize = 256 << 10;

/// Default for [`SandboxLimits::max_pending_timers`]: timers one reactor may have
/// pending at once. Each is a row of the reactor's database and a future event.
pub const DEFAULT_MAX_PENDING_TIMERS: usize = 100_000;

/// Default for [`SandboxLimits::max_error_message_bytes`]: 8 KiB for the message of a
/// `handle-error` or an `init` error; longer messages are cut at the cap.
pub const DEFAULT_MAX_ERROR_MESSAGE_BYTES: usize = 8 << 10;

/// Default for [`SandboxLimits::max_description_bytes`]: 1 KiB for the one-line
/// description in `metadata`.
pub const DEFAULT_MAX_DESCRIPTION_BYTES: usize = 1 << 10;

/// Default for [`SandboxLimits::max_subscriptions`]: entries in each subscription list.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 256;

/// Default for [`SandboxLimits::max_subscription_bytes`]: length of one event type or
/// stream prefix.
pub const DEFAULT_MAX_SUBSCRIPTION_BYTES: usize = 256;

/// Default for [`SandboxLimits::max_random_bytes`]: bytes one `wasi:random` call may ask
/// for. The bytes are deterministic; the cap bounds the host's allocation.
pub const DEFAULT_MAX_RANDOM_BYTES: usize = 64 << 10;

/// Default for [`SandboxLimits::max_component_bytes`]: 64 MiB of component binary. A
/// Rust projector is well under 1 MiB, a componentize-js build about 12 MiB and a
/// componentize-py build about 18 MiB; the cap bounds what the host reads, hashes and
/// hands to the compiler. The same as the API's `server.max_upload_bytes`.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Default for [`SandboxLimits::compile_timeout_ms`]: 60 seconds to compile one
/// component. A Rust projector compiles in well under a second and a componentize-py
/// build in 7–15 s on a 2-core machine; a component built to make Cranelift work for
/// minutes is refused here.
pub const DEFAULT_COMPILE_TIMEOUT_MS: u64 = 60_000;

/// Default for [`SandboxLimits::max_compile_memory_bytes`]: 1 GiB of heap for the
/// process that compiles one component. A componentize-py build takes about 380 MB.
pub const DEFAULT_MAX_COMPILE_MEMORY_BYTES: usize = 1 << 30;

/// Default for [`SandboxLimits::max_stderr_bytes`]: the last 8 KiB the guest wrote to
/// stderr during a call are kept, to explain a trap (a panic message, a Python
/// traceback, a JavaScript `console.error`).
pub const DEFAULT_MAX_STDERR_BYTES: usize = 8 << 10;

/// Default for [`SandboxLimits::max_stderr_lines`]: how many of the guest's last stderr
/// lines a trap's message carries.
pub const DEFAULT_MAX_STDERR_LINES: usize = 20;

/// The limits that apply to the whole engine or to loading, before a component's
/// projector name is known: they can be set under `[limits]` only, never per projector.
pub const ENGINE_WIDE_LIMITS: &[&str] = &[
    "max_wasm_stack_bytes",
    "max_component_bytes",
    "compile_timeout_ms",
    "max_compile_memory_bytes",
];

/// The longest projector name, fixed by the WIT contract (`[a-z0-9_-]{1,64}`).
pub const MAX_NAME_BYTES: usize = 64;

/// The sandbox limits applied to every projector, embedded in `refract.toml` as
/// `[limits]`. Every field is optional there; a missing one takes its default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// `limits.batch_deadline_ms`: wall-clock budget of one `init` or `handle` call,
    /// guest code and its SQL together. Enforced by epoch interruption in wasm and by a
    /// progress handler in SQLite.
    pub batch_deadline_ms: u64,
    /// `limits.statement_deadline_ms`: wall-clock budget of one SQL statement run by the
    /// guest; past it (or past the call's deadline, whichever comes first) SQLite
    /// interrupts the statement and the guest gets an `interrupted` error.
    pub statement_deadline_ms: u64,
    /// `limits.max_memory_bytes`: linear memory per instance. Growing past it fails
    /// (`memory.grow` returns -1); a guest that then aborts traps naming this limit.
    pub max_memory_bytes: usize,
    /// `limits.max_table_elements`: entries per wasm table.
    pub max_table_elements: usize,
    /// `limits.max_instances`: core and component instances per store.
    pub max_instances: usize,
    /// `limits.max_memories`: linear memories per store.
    pub max_memories: usize,
    /// `limits.max_tables`: wasm tables per store.
    pub max_tables: usize,
    /// `limits.max_wasm_stack_bytes`: native stack wasm may use. The thread calling the
    /// projector needs this much plus room for the host; see
    /// [`SandboxLimits::thread_stack_bytes`].
    pub max_wasm_stack_bytes: usize,
    /// `limits.max_hostcall_bytes`: data wasmtime may copy out of the guest for one
    /// import call or one export result.
    pub max_hostcall_bytes: usize,
    /// `limits.max_sql_bytes`: SQL text of one `prepare` or `execute-script`.
    pub max_sql_bytes: usize,
    /// `limits.max_statements`: distinct statements one instance may prepare.
    pub max_statements: usize,
    /// `limits.max_writes_per_call`: writes in one `execute-batch`.
    pub max_writes_per_call: usize,
    /// `limits.max_params_per_statement`: parameters of one statement.
    pub max_params_per_statement: usize,
    /// `limits.max_value_bytes`: one text or blob value, bound or computed.
    pub max_value_bytes: usize,
    /// `limits.max_like_pattern_bytes`: one `LIKE` or `GLOB` pattern.
    pub max_like_pattern_bytes: usize,
    /// `limits.max_function_cost`: one call of an SQL function whose cost grows as the
    /// product of two arguments' lengths.
    pub max_function_cost: u64,
    /// `limits.max_columns`: columns of a table, index or result row.
    pub max_columns: usize,
    /// `limits.max_function_args`: arguments of one SQL function call.
    pub max_function_args: usize,
    /// `limits.max_prepared_sql_bytes`: SQL text of all the statements one instance has
    /// prepared.
    pub max_prepared_sql_bytes: usize,
    /// `limits.max_temp_bytes`: temporary files one connection holds at once.
    pub max_temp_bytes: u64,
    /// `limits.deadline_grace_ms`: how long past `batch_deadline_ms` a call may still be
    /// running before its version is reported as overrunning.
    pub deadline_grace_ms: u64,
    /// `limits.max_expr_depth`: SQL expression tree depth.
    pub max_expr_depth: usize,
    /// `limits.max_query_rows`: rows one `query` may return.
    pub max_query_rows: usize,
    /// `limits.max_query_bytes`: bytes one `query` may return.
    pub max_query_bytes: usize,
    /// `limits.max_page_count`: size of the read model, in SQLite pages.
    pub max_page_count: u64,
    /// `limits.max_log_message_bytes`: one log line; longer ones are cut.
    pub max_log_message_bytes: usize,
    /// `limits.max_log_lines_per_call`: log lines kept per guest call.
    pub max_log_lines_per_call: usize,
    /// `limits.max_log_lines_per_second`: log lines per second per version.
    pub max_log_lines_per_second: u64,
    /// `limits.max_log_bytes_per_second`: log bytes per second per version.
    pub max_log_bytes_per_second: u64,
    /// `limits.max_emits_per_batch`: events one reactor call may emit.
    pub max_emits_per_batch: usize,
    /// `limits.max_emits_per_second`: events one reactor version may emit per second.
    pub max_emits_per_second: u64,
    /// `limits.max_emit_bytes`: one emitted event.
    pub max_emit_bytes: usize,
    /// `limits.max_pending_timers`: timers one reactor may have pending.
    pub max_pending_timers: usize,
    /// `limits.max_error_message_bytes`: an `init` or `handle` error message; longer ones
    /// are cut.
    pub max_error_message_bytes: usize,
    /// `limits.max_description_bytes`: the description in `metadata`.
    pub max_description_bytes: usize,
    /// `limits.max_subscriptions`: entries in each subscription list.
    pub max_subscriptions: usize,
    /// `limits.max_subscription_bytes`: one event type or stream prefix.
    pub max_subscription_bytes: usize,
    /// `limits.max_random_bytes`: one `wasi:random` request.
    pub max_random_bytes: usize,
    /// `limits.max_component_bytes`: the size of a component binary; a larger one is
    /// refused before it is hashed or compiled. Engine-wide.
    pub max_component_bytes: usize,
    /// `limits.compile_timeout_ms`: wall-clock budget to compile one component. The
    /// `refract` binary compiles in a child process that is killed at the deadline.
    /// Engine-wide.
    pub compile_timeout_ms: u64,
    /// `limits.max_compile_memory_bytes`: heap of the child process that compiles one
    /// component (its `RLIMIT_DATA`). Engine-wide.
    pub max_compile_memory_bytes: usize,
    /// `limits.max_stderr_bytes`: the tail of the guest's stderr kept per call.
    pub max_stderr_bytes: usize,
    /// `limits.max_stderr_lines`: the guest's last stderr lines a trap message carries.
    pub max_stderr_lines: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            batch_deadline_ms: DEFAULT_BATCH_DEADLINE_MS,
            statement_deadline_ms: DEFAULT_STATEMENT_DEADLINE_MS,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_memories: DEFAULT_MAX_MEMORIES,
            max_tables: DEFAULT_MAX_TABLES,
            max_wasm_stack_bytes: DEFAULT_MAX_WASM_STACK_BYTES,
            max_hostcall_bytes: DEFAULT_MAX_HOSTCALL_BYTES,
            max_sql_bytes: DEFAULT_MAX_SQL_BYTES,
            max_statements: DEFAULT_MAX_STATEMENTS,
            max_writes_per_call: DEFAULT_MAX_WRITES_PER_CALL,
            max_params_per_statement: DEFAULT_MAX_PARAMS_PER_STATEMENT,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_like_pattern_bytes: DEFAULT_MAX_LIKE_PATTERN_BYTES,
            max_function_cost: DEFAULT_MAX_FUNCTION_COST,
            max_columns: DEFAULT_MAX_COLUMNS,
            max_function_args: DEFAULT_MAX_FUNCTION_ARGS,
            max_prepared_sql_bytes: DEFAULT_MAX_PREPARED_SQL_BYTES,
            max_temp_bytes: DEFAULT_MAX_TEMP_BYTES,
            deadline_grace_ms: DEFAULT_DEADLINE_GRACE_MS,
            max_expr_depth: DEFAULT_MAX_EXPR_DEPTH,
            max_query_rows: DEFAULT_MAX_QUERY_ROWS,
            max_query_bytes: DEFAULT_MAX_QUERY_BYTES,
            max_page_count: DEFAULT_MAX_PAGE_COUNT,
            max_log_message_bytes: DEFAULT_MAX_LOG_MESSAGE_BYTES,
            max_log_lines_per_call: DEFAULT_MAX_LOG_LINES_PER_CALL,
            max_log_lines_per_second: DEFAULT_MAX_LOG_LINES_PER_SECOND,
            max_log_bytes_per_second: DEFAULT_MAX_LOG_BYTES_PER_SECOND,
            max_emits_per_batch: DEFAULT_MAX_EMITS_PER_BATCH,
            max_emits_per_second: DEFAULT_MAX_EMITS_PER_SECOND,
            max_emit_bytes: DEFAULT_MAX_EMIT_BYTES,
            max_pending_timers: DEFAULT_MAX_PENDING_TIMERS,
            max_error_message_bytes: DEFAULT_MAX_ERROR_MESSAGE_BYTES,
            max_description_bytes: DEFAULT_MAX_DESCRIPTION_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_subscription_bytes: DEFAULT_MAX_SUBSCRIPTION_BYTES,
            max_random_bytes: DEFAULT_MAX_RANDOM_BYTES,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            compile_timeout_ms: DEFAULT_COMPILE_TIMEOUT_MS,
            max_compile_memory_bytes: DEFAULT_MAX_COMPILE_MEMORY_BYTES,
            max_stderr_bytes: DEFAULT_MAX_STDERR_BYTES,
            max_stderr_lines: DEFAULT_MAX_STDERR_LINES,
        }
    }
}

/// Stack the host needs on top of the wasm stack while it runs a projector call: SQLite,
/// wasmtime's trampolines and the host functions.
const HOST_STACK_HEADROOM: usize = 1 << 20;

/// SQLite counts its limits in `int`.
const SQLITE_INT_MAX: usize = i32::MAX as usize;

impl SandboxLimits {
    /// The per-call deadline as a [`Duration`].
    pub fn batch_deadline(&self) -> Duration {
        Duration::from_millis(self.batch_deadline_ms)
    }

    /// How long past the call's deadline a call may run before it counts as overrunning.
    pub fn deadline_grace(&self) -> Duration {
        Duration::from_millis(self.deadline_grace_ms)
    }

    /// The compile deadline as a [`Duration`].
    pub fn compile_timeout(&self) -> Duration {
        Duration::from_millis(self.compile_timeout_ms)
    }

    /// The per-statement deadline as a [`Duration`].
    pub fn statement_deadline(&self) -> Duration {
        Duration::from_millis(self.statement_deadline_ms)
    }

    /// The stack size a thread that calls projectors should be spawned with: the wasm
    /// stack plus headroom for the host. Rust's default of 2 MiB covers the default limits.
    pub fn thread_stack_bytes(&self) -> usize {
        self.max_wasm_stack_bytes
            .saturating_add(HOST_STACK_HEADROOM)
    }

    /// Checks that every limit is usable, naming the first bad key.
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        let positive: [(&'static str, usize); 27] = [
            ("max_emits_per_batch", self.max_emits_per_batch),
            ("max_emit_bytes", self.max_emit_bytes),
            ("max_pending_timers", self.max_pending_timers),
            ("max_memory_bytes", self.max_memory_bytes),
            ("max_table_elements", self.max_table_elements),
            ("max_instances", self.max_instances),
            ("max_memories", self.max_memories),
            ("max_tables", self.max_tables),
            ("max_wasm_stack_bytes", self.max_wasm_stack_bytes),
            ("max_hostcall_bytes", self.max_hostcall_bytes),
            ("max_sql_bytes", self.max_sql_bytes),
            ("max_statements", self.max_statements),
            ("max_writes_per_call", self.max_writes_per_call),
            ("max_params_per_statement", self.max_params_per_statement),
            ("max_value_bytes", self.max_value_bytes),
            ("max_like_pattern_bytes", self.max_like_pattern_bytes),
            ("max_columns", self.max_columns),
            ("max_function_args", self.max_function_args),
            ("max_prepared_sql_bytes", self.max_prepared_sql_bytes),
            ("max_expr_depth", self.max_expr_depth),
            ("max_query_rows", self.max_query_rows),
            ("max_query_bytes", self.max_query_bytes),
            ("max_log_message_bytes", self.max_log_message_bytes),
            ("max_error_message_bytes", self.max_error_message_bytes),
            ("max_description_bytes", self.max_description_bytes),
            ("max_subscriptions", self.max_subscriptions),
            ("max_subscription_bytes", self.max_subscription_bytes),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(InvalidLimit::new(key, "must be at least 1"));
            }
        }
        if self.batch_deadline_ms == 0 {
            return Err(InvalidLimit::new("batch_deadline_ms", "must be at least 1"));
        }
        if self.statement_deadline_ms == 0 {
            return Err(InvalidLimit::new(
                "statement_deadline_ms",
                "must be at least 1",
            ));
        }
        let positive_u64: [(&'static str, u64); 5] = [
            ("max_emits_per_second", self.max_emits_per_second),
            ("max_function_cost", self.max_function_cost),
            ("max_log_lines_per_second", self.max_log_lines_per_second),
            ("max_log_bytes_per_second", self.max_log_bytes_per_second),
            ("max_temp_bytes", self.max_temp_bytes),
        ];
        for (key, value) in positive_u64 {
            if value == 0 {
                return Err(InvalidLimit::new(key, "must be at least 1"));
            }
        }
        if self.max_page_count == 0 || self.max_page_count > u64::from(u32::MAX) {
            return Err(InvalidLimit::new(
                "max_page_count",
                "must be between 1 and 4294967295",
            ));
        }
        let sqlite: [(&'static str, usize); 7] = [
            ("max_sql_bytes", self.max_sql_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("max_like_pattern_bytes", self.max_like_pattern_bytes),
            ("max_columns", self.max_columns),
            ("max_function_args", self.max_function_args),
            ("max_params_per_statement", self.max_params_per_statement),
            ("max_expr_depth", self.max_expr_depth),
        ];
        for (key, value) in sqlite {
            if value > SQLITE_INT_MAX {
                return Err(InvalidLimit::new(key, "must fit SQLite's 32-bit limits"));
            }
        }
        self.validate_loading()?;
        if self.max_wasm_stack_bytes > 256 << 20 {
            return Err(InvalidLimit::new(
                "max_wasm_stack_bytes",
                "must be at most 268435456 (256 MiB)",
            ));
        }
        Ok(())
    }
}

impl SandboxLimits {
    /// The checks of the loading and stderr limits.
    fn validate_loading(&self) -> Result<(), InvalidLimit> {
        let positive: [(&'static str, usize); 4] = [
            ("max_component_bytes", self.max_component_bytes),
            ("max_compile_memory_bytes", self.max_compile_memory_bytes),
            ("max_stderr_bytes", self.max_stderr_bytes),
            ("max_stderr_lines", self.max_stderr_lines),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(InvalidLimit::new(key, "must be at least 1"));
            }
        }
        if self.compile_timeout_ms == 0 {
            return Err(InvalidLimit::new(
                "compile_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.max_compile_memory_bytes < MIN_COMPILE_MEMORY_BYTES {
            return Err(InvalidLimit::new(
                "max_compile_memory_bytes",
                "must be at least 67108864 (64 MiB): the compiler itself needs that much",
            ));
        }
        Ok(())
    }
}

/// The least `limits.max_compile_memory_bytes` accepted: below it even an empty
/// component's compile fails, which would only confuse.
const MIN_COMPILE_MEMORY_BYTES: usize = 64 << 20;

/// A limit in the configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox limit `limits.{key}`: {reason}")]
pub struct InvalidLimit {
    /// The key under `[limits]`.
    pub key: &'static str,
    /// What is wrong with its value.
    pub reason: &'static str,
}

impl InvalidLimit {
    fn new(key: &'static str, reason: &'static str) -> Self {
        Self { key, reason }
    }
}

/// A guest went past a sandbox limit. Raised as a trap (the call fails and the instance
/// is discarded) where the guest could not reasonably have handled it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} exceeds the sandbox limit of {limit} (`limits.{key}`)")]
pub struct LimitExceeded {
    /// What went over, with its size when known: "linear memory of 256 MiB".
    pub what: String,
    /// The limit, formatted for people.
    pub limit: String,
    /// The key under `[limits]` that raises it.
    pub key: &'static str,
}

impl LimitExceeded {
    /// A breach of a limit measured in bytes.
    pub(crate) fn bytes(what: impl Into<String>, limit: usize, key: &'static str) -> Self {
        Self {
            what: what.into(),
            limit: format_bytes(limit),
            key,
        }
    }

    /// A breach of a limit that counts things.
    pub(crate) fn count(what: impl Into<String>, limit: usize, key: &'static str) -> Self {
        Self {
            what: what.into(),
            limit: limit.to_string(),
            key,
        }
    }
}

/// Formats a byte count for messages: exact bytes, plus KiB or MiB when round.
pub(crate) fn format_bytes(bytes: usize) -> String {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SandboxLimits::default().validate(), Ok(()));
    }

    #[test]
    fn config_keys_parse_and_unknown_keys_fail() {
        let limits: SandboxLimits =
            toml::from_str("batch_deadline_ms = 200\nmax_memory_bytes = 1048576")
                .expect("known keys parse");
        assert_eq!(limits.batch_deadline_ms, 200);
        assert_eq!(limits.max_memory_bytes, 1 << 20);
        assert_eq!(limits.max_sql_bytes, DEFAULT_MAX_SQL_BYTES);
        let err = toml::from_str::<SandboxLimits>("max_memroy_bytes = 1")
            .expect_err("a typo is an error");
        assert!(err.to_string().contains("max_memroy_bytes"), "{err}");
    }

    #[test]
    fn zero_is_rejected_with_the_key() {
        let limits = SandboxLimits {
            max_query_rows: 0,
            ..SandboxLimits::default()
        };
        let err = limits.validate().expect_err("zero rows is unusable");
        assert_eq!(err.key, "max_query_rows");
    }

    #[test]
    fn bytes_format_for_people() {
        assert_eq!(format_bytes(128 << 20), "128 MiB");
        assert_eq!(format_bytes(512 << 10), "512 KiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }
}
