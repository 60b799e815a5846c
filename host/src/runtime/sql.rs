//! The projector's read-model connection, confined to what a projector may do.
//!
//! One SQLite connection per instance, shared by the guest (through the `sql` interface)
//! and the host (transactions, checkpoints). A [`Guard`] flag says whose turn it is: while
//! the guest runs, the authorizer, the progress-handler deadline and the error mapping
//! apply; while the host runs, its own statements pass. It must be a flag rather than a
//! check at `prepare` time because SQLite re-runs the authorizer whenever it re-prepares
//! a statement after a schema change.
//!
//! While the guest runs:
//! - ATTACH and DETACH are denied (always, for the host too), and `SQLITE_LIMIT_ATTACHED`
//!   is 0.
//! - PRAGMA is denied outside a read-only allowlist ([`PRAGMAS_ANY_ARGUMENT`],
//!   [`PRAGMAS_READ_ONLY`]).
//! - Transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is denied: the host
//!   owns the transaction and commits it with the checkpoint.
//! - Every access to a table, index, trigger or view whose name starts with `_refract_`
//!   (any case) is denied: those are the host's. So is a PRAGMA about one, and an
//!   `ALTER TABLE … RENAME TO` a `_refract_` name: SQLite's authorizer names only the
//!   old name, so a rename is run inside a savepoint and undone (and denied) if it
//!   brought a host name into being.
//! - The host's tables are also kept out of sight: the schema tables (`sqlite_schema`,
//!   `sqlite_master` and their `temp` forms), `dbstat` and `PRAGMA table_list` list
//!   them, so the guest may not read those. SQLite itself reads the schema table while
//!   it carries out the guest's `ALTER TABLE` and `DROP` (and its row ids for `CREATE`);
//!   those reads are allowed while such a statement is being prepared, never from a
//!   trigger or view, and never for a `CREATE TABLE … AS SELECT`.
//! - Temporary tables, views, triggers and virtual tables are denied: they would not
//!   survive a restart, so a replay could build a different read model, and they would
//!   grow temporary storage across calls.
//! - The nondeterministic functions in [`DENIED_FUNCTIONS`] are denied, as is
//!   `load_extension`; the date and time functions refuse `'now'`, `'localtime'` and
//!   `'utc'` (see `sql_functions`). The functions whose cost cannot be bounded
//!   ([`COSTLY_FUNCTIONS`]) are denied too, and the ones whose built-in cost is
//!   quadratic are replaced (see `sql_cost`).
//! - Writes to SQLite's schema tables (`sqlite_master`), which SQLite refuses itself, and
//!   VACUUM, which cannot run inside the host's transaction, are reported as denied.
//! - Virtual tables may use only the modules in [`VIRTUAL_TABLE_MODULES`].
//! - A statement running past `limits.statement_deadline_ms`, or past the call's
//!   deadline, is interrupted; the guest gets an `interrupted` error.
//!
//! SQLite's own limits (`sqlite3_limit`, set by `sql_cost`) cap value length, SQL length,
//! expression depth, parameter count, `LIKE` patterns, columns and function arguments;
//! `PRAGMA max_page_count` caps the database size, and the connection's own VFS
//! (`temp_vfs`) its temporary files. The connection runs in `SQLITE_DBCONFIG_DEFENSIVE`
//! mode with untrusted schema, so even a crafted schema cannot corrupt the file or run
//! functions it should not.
//!
//! Deadlines hold between SQLite's steps: the progress handler interrupts a statement
//! past its deadline, and the runtime's watchdog calls `sqlite3_interrupt` once the
//! call's deadline has passed, which also stops the loops SQLite runs inside one step
//! (counting a table, parsing). A step's own cost is bounded by `sql_cost`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};

use super::bindings::{SqlError, SqlErrorKind};
use super::engine::{TickClock, Watchdog, deadline_ticks};
use super::limits::{SandboxLimits, format_bytes};
use super::sql_cost::{self, COSTLY_FUNCTIONS};
use super::sql_functions;
use super::temp_vfs::{TempBudget, TempVfs};

/// PRAGMAs the guest may run with any argument but a host table: they only describe
/// the schema. (`table_list` is not among them: it lists the host's tables.)
pub const PRAGMAS_ANY_ARGUMENT: &[&str] = &[
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

/// PRAGMAs the guest may read but not set (no `= value`, no argument).
pub const PRAGMAS_READ_ONLY: &[&str] = &[
    "user_version",
    "data_version",
    "schema_version",
    "page_count",
    "page_size",
    "freelist_count",
];

/// SQL functions the guest may not call: their results differ from run to run, or they
/// reach outside the database.
pub const DENIED_FUNCTIONS: &[&str] = &[
    "random",
    "randomblob",
    "current_timestamp",
    "current_date",
    "current_time",
    "total_changes",
    "load_extension",
    "fts3_tokenizer",
    "sqlite_log",
];

/// Virtual-table modules the guest may create tables with (full-text search, R-trees).
pub const VIRTUAL_TABLE_MODULES: &[&str] = &["fts3", "fts4", "fts5", "rtree"];

/// The prefix of host-owned tables, compared case-insensitively.
pub const HOST_TABLE_PREFIX: &str = "_refract_";

/// Tables the guest may not read because they list the host's tables: SQLite's schema
/// tables (as the authorizer names them, whichever alias the SQL used) and `dbstat`.
pub const HIDDEN_TABLES: &[&str] = &[
    "sqlite_master",
    "sqlite_schema",
    "sqlite_temp_master",
    "sqlite_temp_schema",
    "dbstat",
];
/// The progress handler runs every this many SQLite VM instructions: often enough to stop
/// a runaway statement within a millisecond or so, rarely enough to cost nothing.
const PROGRESS_INTERVAL_OPS: i32 = 1_000;

/// How long the connection waits for a lock before reporting SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept compiled: the guest's handles plus the host's few statements.
/// Beyond it, the least recently used is recompiled on its next use.
pub const STATEMENT_CACHE_CAPACITY: usize = 256;

/// `PRAGMA synchronous` for the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// No fsync. Fast, for a replay that syncs once at the end; a crash may lose or
    /// corrupt the database.
    Off,
    /// fsync at WAL checkpoints. A crash may lose the last commits, never consistency.
    Normal,
    /// fsync at every commit.
    Full,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// How the read-model database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbOptions {
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// SQLite page cache, in KiB.
    pub cache_size_kib: u32,
}

impl DbOptions {
    /// A live projection: `synchronous=NORMAL`, 16 MiB of cache.
    pub fn live() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            cache_size_kib: 16 << 10,
        }
    }

    /// A replay into a fresh database: `synchronous=OFF` and 64 MiB of cache. The caller
    /// syncs once at the end before trusting the result.
    pub fn replay() -> Self {
        Self {
            synchronous: Synchronous::Off,
            cache_size_kib: 64 << 10,
        }
    }
}

impl Default for DbOptions {
    fn default() -> Self {
        Self::live()
    }
}

/// What the guest's statement being prepared may read of the schema tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SchemaReads {
    /// Nothing: the guest's own statements.
    None = 0,
    /// Row ids only: SQLite updates the schema row of a `CREATE` by its row id.
    RowIds = 1,
    /// Everything: SQLite rewrites the schema for an `ALTER TABLE` or a `DROP`, which
    /// carry no query of the guest's.
    All = 2,
}

/// Whose turn it is on the connection, shared with the authorizer, the progress
/// handler and the runtime's watchdog.
pub(crate) struct Guard {
    guest_active: AtomicBool,
    /// The tick at which the guest's call ends: its statements are interrupted from then.
    deadline_tick: AtomicU64,
    /// The tick at which the guest's current statement is interrupted.
    statement_deadline_tick: AtomicU64,
    /// Set when the host is shutting down: every call ends now.
    cancelled: Arc<AtomicBool>,
    /// Interrupts the connection from the watchdog's thread. The lock also orders an
    /// interrupt before the end of the guest's turn, so the host's own statements that
    /// follow (COMMIT, ROLLBACK) are never interrupted.
    interrupt: Mutex<Option<InterruptHandle>>,
    /// Whether the watchdog has interrupted the current call already.
    interrupted: AtomicBool,
    /// Why the authorizer last refused, for the guest's error message.
    denial: Mutex<Option<String>>,
    /// [`SchemaReads`] for the statement being prepared.
    schema_reads: AtomicU8,
    /// Set when the authorizer allows an `ALTER TABLE`, which may rename a table into
    /// the host's namespace (the authorizer sees only the old name).
    altered: AtomicBool,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("guest_active", &self.guest_active)
            .field("deadline_tick", &self.deadline_tick)
            .field("cancelled", &self.cancelled)
            .finish_non_exhaustive()
    }
}

impl Guard {
    fn new(cancelled: Arc<AtomicBool>) -> Self {
        Self {
            guest_active: AtomicBool::new(false),
            deadline_tick: AtomicU64::new(u64::MAX),
            statement_deadline_tick: AtomicU64::new(u64::MAX),
            cancelled,
            interrupt: Mutex::new(None),
            interrupted: AtomicBool::new(false),
            denial: Mutex::new(None),
            schema_reads: AtomicU8::new(SchemaReads::None as u8),
            altered: AtomicBool::new(false),
        }
    }

    /// Hands the connection to the guest until the returned scope is dropped.
    pub(crate) fn enter_guest(&self, deadline_tick: u64) -> GuestScope<'_> {
        self.take_denial();
        self.deadline_tick.store(deadline_tick, Ordering::Relaxed);
        self.statement_deadline_tick
            .store(u64::MAX, Ordering::Relaxed);
        self.interrupted.store(false, Ordering::Relaxed);
        self.guest_active.store(true, Ordering::Release);
        GuestScope { guard: self }
    }

    fn guest_active(&self) -> bool {
        self.guest_active.load(Ordering::Acquire)
    }

    /// Whether a guest statement running at `now` must be interrupted.
    fn expired(&self, now: u64) -> bool {
        self.guest_active()
            && (self.cancelled()
                || now
                    >= self
                        .deadline_tick
                        .load(Ordering::Relaxed)
                        .min(self.statement_deadline_tick.load(Ordering::Relaxed)))
    }

    /// Whether the call's deadline (not only a statement's) has passed at `now`.
    pub(crate) fn call_expired(&self, now: u64) -> bool {
        now >= self.deadline_tick.load(Ordering::Relaxed)
    }

    /// Whether the host has cancelled every call (it is shutting down).
    pub(crate) fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The watchdog's check, on its own thread: a guest call past its deadline, or
    /// cancelled, gets `sqlite3_interrupt`, once per call. SQLite checks that flag in
    /// loops the progress handler never sees (counting a table, parsing).
    pub(crate) fn watch(&self, now: u64) {
        let handle = self
            .interrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.guest_active()
            && (self.cancelled() || self.call_expired(now))
            && !self.interrupted.swap(true, Ordering::Relaxed)
            && let Some(handle) = handle.as_ref()
        {
            handle.interrupt();
        }
    }

    /// Starts the authorizer's view of one guest statement.
    fn start_statement(&self) {
        self.schema_reads
            .store(SchemaReads::None as u8, Ordering::Relaxed);
    }

    fn schema_reads(&self) -> SchemaReads {
        match self.schema_reads.load(Ordering::Relaxed) {
            2 => SchemaReads::All,
            1 => SchemaReads::RowIds,
            _ => SchemaReads::None,
        }
    }

    fn allow_schema_reads(&self, reads: SchemaReads) {
        self.schema_reads.fetch_max(reads as u8, Ordering::Relaxed);
    }

    /// Whether an `ALTER TABLE` was authorized since the last call, and forgets it.
    pub(crate) fn take_altered(&self) -> bool {
        self.altered.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn deny(&self, reason: String) -> Authorization {
        *self.denial.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        Authorization::Deny
    }

    fn take_denial(&self) -> Option<String> {
        self.denial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The guest's turn on the connection; dropping it gives the connection back to the host.
#[must_use = "the guest's turn ends when the scope is dropped"]
pub(crate) struct GuestScope<'a> {
    guard: &'a Guard,
}

impl Drop for GuestScope<'_> {
    fn drop(&mut self) {
        // Under the watchdog's lock: once this returns, no interrupt can still land.
        let _interrupt = self
            .guard
            .interrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.guard.guest_active.store(false, Ordering::Release);
        self.guard.deadline_tick.store(u64::MAX, Ordering::Relaxed);
        self.guard
            .statement_deadline_tick
            .store(u64::MAX, Ordering::Relaxed);
    }
}

/// A read-model connection opened with the sandbox's bounds, and the VFS that counts
/// its temporary files. Dereferences to the [`Connection`].
#[derive(Debug)]
pub struct ReadModelConnection {
    // Declared (so dropped) before the VFS it is opened through.
    conn: Connection,
    temp: TempVfs,
}

impl ReadModelConnection {
    /// Opens `path` through a VFS of its own that caps temporary files at
    /// `limits.max_temp_bytes`, in `DEFENSIVE` mode with an untrusted schema, with every
    /// cost bound of `sql_cost`: SQLite's limits and the bounded functions.
    ///
    /// # Errors
    /// SQLite's, if the file cannot be opened or configured.
    pub fn open(path: &Path, flags: OpenFlags, limits: &SandboxLimits) -> rusqlite::Result<Self> {
        let temp = TempVfs::register(limits.max_temp_bytes)?;
        // No SQLITE_OPEN_URI: the path is a path, never `file:...?vfs=...`.
        let conn = Connection::open_with_flags_and_vfs(path, flags, temp.name())?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, false)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, false)?;
        sql_cost::apply_limits(&conn, limits)?;
        sql_cost::install(&conn, limits)?;
        Ok(Self { conn, temp })
    }

    /// The connection's temporary storage: what it holds, and whether a write was
    /// refused for passing `limits.max_temp_bytes`.
    pub(crate) fn temp_budget(&self) -> &Arc<TempBudget> {
        self.temp.budget()
    }

    /// Whether the last failure was a temporary file refused at `limits.max_temp_bytes`
    /// (SQLite reports it as a full disk); forgets it.
    pub fn take_temp_refusal(&self) -> bool {
        self.temp.budget().take_refused()
    }

    /// The most temporary storage held at once, in bytes.
    pub fn temp_peak_bytes(&self) -> u64 {
        self.temp.budget().peak()
    }

    /// The connection, mutably (to install hooks).
    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl std::ops::Deref for ReadModelConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// Opens (creating if needed) a read model with every setting the sandbox uses: the
/// flags, `DEFENSIVE` and an untrusted schema, WAL, `synchronous` and the cache size
/// from `options`, foreign keys, the page budget, the temporary-storage budget, SQLite's
/// limits, the bounded functions and the statement cache; everything but the authorizer
/// and the progress handler, which [`SandboxedDb::open`] adds. The benchmark's native
/// baseline opens its database with this too, so the two compare on the same settings
/// by construction.
pub fn open_read_model(
    path: &Path,
    options: DbOptions,
    limits: &SandboxLimits,
) -> rusqlite::Result<ReadModelConnection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = ReadModelConnection::open(path, flags, limits)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", options.synchronous.pragma_value())?;
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_size_kib))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(
        None,
        "max_page_count",
        i64::try_from(limits.max_page_count).unwrap_or(i64::MAX),
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

/// A read-model connection with the sandbox installed.
#[derive(Debug)]
pub(crate) struct SandboxedDb {
    conn: ReadModelConnection,
    guard: Arc<Guard>,
    clock: TickClock,
    statement_ticks: u64,
    limits: SandboxLimits,
}

impl SandboxedDb {
    /// Opens (creating if needed) the database at `path`, installs the sandbox, and
    /// puts the connection under the runtime's watchdog.
    pub(crate) fn open(
        path: &Path,
        options: DbOptions,
        limits: &SandboxLimits,
        clock: TickClock,
        watchdog: &Watchdog,
    ) -> rusqlite::Result<Self> {
        let mut conn = open_read_model(path, options, limits)?;

        let guard = Arc::new(Guard::new(watchdog.cancelled()));
        *guard
            .interrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(conn.get_interrupt_handle());
        {
            let guard = Arc::clone(&guard);
            conn.conn_mut()
                .authorizer(Some(move |context: AuthContext<'_>| {
                    authorize(&guard, &context)
                }))?;
        }
        {
            let (guard, clock) = (Arc::clone(&guard), clock.clone());
            conn.conn_mut().progress_handler(
                PROGRESS_INTERVAL_OPS,
                Some(move || guard.expired(clock.now())),
            )?;
        }
        sql_functions::install(&conn, &guard)?;
        watchdog.watch(&guard);
        Ok(Self {
            conn,
            guard,
            clock,
            statement_ticks: deadline_ticks(limits.statement_deadline()),
            limits: limits.clone(),
        })
    }

    /// The connection.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The most temporary storage the connection has held at once, in bytes.
    pub(crate) fn temp_peak_bytes(&self) -> u64 {
        self.conn.temp_peak_bytes()
    }

    /// The guard deciding whose turn it is.
    pub(crate) fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// Starts one guest statement: its clock (`limits.statement_deadline_ms`) and the
    /// authorizer's view of it.
    pub(crate) fn start_statement(&self) {
        let deadline = self.clock.now().saturating_add(self.statement_ticks);
        self.guard
            .statement_deadline_tick
            .store(deadline, Ordering::Relaxed);
        self.guard.start_statement();
    }

    /// Runs `work` as the host in the middle of a guest call: the guest checks are off
    /// for it (the deadline still applies).
    pub(crate) fn host_turn<T>(&self, work: impl FnOnce(&Connection) -> T) -> T {
        let was_active = self.guard.guest_active.swap(false, Ordering::AcqRel);
        let result = work(&self.conn);
        self.guard.guest_active.store(was_active, Ordering::Release);
        result
    }

    /// How many schema objects belong to the host (by their name or their table's).
    /// Run as the host, since the guest may not read the schema table.
    pub(crate) fn host_object_count(&self) -> rusqlite::Result<i64> {
        self.host_turn(|conn| {
            conn.query_row(
                "SELECT count(*) FROM sqlite_schema
                  WHERE name LIKE '\\_refract\\_%' ESCAPE '\\'
                     OR tbl_name LIKE '\\_refract\\_%' ESCAPE '\\'",
                [],
                |row| row.get(0),
            )
        })
    }

    /// Maps a failure of guest SQL to the `sql-error` the guest sees, and says whether
    /// the failure is the host's (I/O, a busy or full disk, corruption): those fail the
    /// batch as transient, whatever the guest does with the error.
    pub(crate) fn classify(&self, err: &rusqlite::Error) -> (SqlError, bool) {
        let message = err.to_string();
        let error = |kind, message| (SqlError { kind, message }, false);
        // The authorizer refuses with a reason; SQLite reports it as SQLITE_AUTH or, for
        // functions, as a plain SQLITE_ERROR.
        if let Some(reason) = self.guard.take_denial() {
            return error(SqlErrorKind::Denied, reason);
        }
        let code = match err {
            rusqlite::Error::SqlInputError { error, .. } => Some(error.code),
            _ => err.sqlite_error_code(),
        };
        let Some(code) = code else {
            return match err {
                rusqlite::Error::MultipleStatement => error(
                    SqlErrorKind::Invalid,
                    "`prepare` takes one statement; use `execute-script` for several".into(),
                ),
                rusqlite::Error::ExecuteReturnedResults => error(
                    SqlErrorKind::Invalid,
                    "the statement returns rows; run it with `query`".into(),
                ),
                rusqlite::Error::InvalidParameterCount(..)
                | rusqlite::Error::Utf8Error(..)
                | rusqlite::Error::NulError(..)
                | rusqlite::Error::InvalidColumnIndex(..) => error(SqlErrorKind::Invalid, message),
                _ => error(SqlErrorKind::Other, message),
            };
        };
        match code {
            ErrorCode::AuthorizationForStatementDenied => error(SqlErrorKind::Denied, message),
            ErrorCode::ConstraintViolation => error(SqlErrorKind::Constraint, message),
            ErrorCode::TooBig | ErrorCode::DiskFull if self.conn.take_temp_refusal() => error(
                SqlErrorKind::Limit,
                format!(
                    "the statement needs more than {} of temporary storage (`limits.max_temp_bytes`) for its sorts and temporary tables; narrow it, or add an index",
                    format_bytes(
                        usize::try_from(self.conn.temp_budget().max()).unwrap_or(usize::MAX)
                    )
                ),
            ),
            ErrorCode::TooBig => error(SqlErrorKind::Limit, self.name_limit(message)),
            ErrorCode::OperationInterrupted => error(
                SqlErrorKind::Interrupted,
                if self.guard.call_expired(self.clock.now()) {
                    "the statement ran past the call's deadline (`limits.batch_deadline_ms`) and was interrupted"
                } else {
                    "the statement ran past its deadline (`limits.statement_deadline_ms`) and was interrupted"
                }
                .into(),
            ),
            ErrorCode::DiskFull if self.at_page_budget() => error(
                SqlErrorKind::Limit,
                format!(
                    "the read model reached its size limit of {} pages (`limits.max_page_count`)",
                    self.limits.max_page_count
                ),
            ),
            ErrorCode::TypeMismatch | ErrorCode::ParameterOutOfRange => {
                error(SqlErrorKind::Invalid, message)
            }
            // SQLite refuses these itself; to the guest they are denials like the rest.
            ErrorCode::Unknown if message.contains("may not be modified") => {
                error(SqlErrorKind::Denied, message)
            }
            ErrorCode::Unknown if message.contains("cannot VACUUM") => error(
                SqlErrorKind::Denied,
                "VACUUM is not allowed: the host owns the database file".into(),
            ),
            ErrorCode::Unknown if is_limit_message(&message) => {
                error(SqlErrorKind::Limit, self.name_limit(message))
            }
            ErrorCode::Unknown | ErrorCode::SchemaChanged | ErrorCode::ReadOnly => {
                error(SqlErrorKind::Invalid, message)
            }
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::PermissionDenied
            | ErrorCode::InternalMalfunction => (
                SqlError {
                    kind: SqlErrorKind::Other,
                    message: format!("the host's database failed ({message}); the batch will be retried"),
                },
                true,
            ),
            _ => error(SqlErrorKind::Other, message),
        }
    }

    /// Adds the configuration key to SQLite's message for one of the limits the host sets.
    fn name_limit(&self, message: String) -> String {
        let lower = message.to_ascii_lowercase();
        let limits = &self.limits;
        let (key, value) = if lower.contains("string or blob too big") {
            ("max_value_bytes", format_bytes(limits.max_value_bytes))
        } else if lower.contains("statement too long") {
            ("max_sql_bytes", format_bytes(limits.max_sql_bytes))
        } else if lower.contains("expression tree is too large") {
            ("max_expr_depth", limits.max_expr_depth.to_string())
        } else if lower.contains("too many sql variables") {
            (
                "max_params_per_statement",
                limits.max_params_per_statement.to_string(),
            )
        } else if lower.contains("like or glob pattern too complex") {
            (
                "max_like_pattern_bytes",
                format_bytes(limits.max_like_pattern_bytes),
            )
        } else if lower.contains("too many columns") {
            ("max_columns", limits.max_columns.to_string())
        } else if lower.contains("too many arguments on function") {
            ("max_function_args", limits.max_function_args.to_string())
        } else {
            return message;
        };
        // SQLite quotes the statement in some of these; the limit must not drown in it.
        const QUOTED_SQL_CHARS: usize = 200;
        let message = if message.chars().count() > QUOTED_SQL_CHARS {
            format!(
                "{}…",
                message.chars().take(QUOTED_SQL_CHARS).collect::<String>()
            )
        } else {
            message
        };
        format!("{message} (the limit is {value}, `limits.{key}`)")
    }

    /// Whether SQLITE_FULL means the page budget rather than the disk. The budget is
    /// checked before any I/O and fails only the statement; a disk that is really full
    /// fails a write, which puts SQLite's pager in its error state, where even a read of
    /// the schema fails until the transaction is rolled back.
    fn at_page_budget(&self) -> bool {
        self.host_turn(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
                row.get::<_, i64>(0)
            })
            .is_ok()
        })
    }
}

/// SQLite reports several limits (expression depth, compound terms, variables) as a
/// plain SQLITE_ERROR; their messages say so.
fn is_limit_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "too many",
        "too large",
        "too big",
        "too long",
        "too deep",
        "too complex",
        "recursion limit",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// The authorizer: every check in the module documentation.
fn authorize(guard: &Guard, context: &AuthContext<'_>) -> Authorization {
    let verdict = match context.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Err(
            "ATTACH and DETACH are not allowed: a projector reaches only its own read model"
                .to_owned(),
        ),
        _ if !guard.guest_active() => Ok(()),
        _ => check_guest_action(guard, context),
    };
    match verdict {
        Ok(()) => Authorization::Allow,
        Err(reason) => guard.deny(reason),
    }
}

/// Whether `name` is one of the host's: prefixed `_refract_` (any case), or the index
/// SQLite made for a host table's key.
fn host_owned(name: &str) -> bool {
    let prefixed = |name: &str| {
        name.get(..HOST_TABLE_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(HOST_TABLE_PREFIX))
    };
    const AUTOINDEX: &str = "sqlite_autoindex_";
    prefixed(name)
        || name
            .get(..AUTOINDEX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(AUTOINDEX))
            && name.get(AUTOINDEX.len()..).is_some_and(prefixed)
}

/// The guest-only checks, as `Err(reason)`.
fn check_guest_action(guard: &Guard, context: &AuthContext<'_>) -> Result<(), String> {
    let deny_host = |names: &[&str]| match names.iter().find(|name| host_owned(name)) {
        Some(name) => Err(format!(
            "`{name}` belongs to the host: tables prefixed `{HOST_TABLE_PREFIX}` are off limits to projectors"
        )),
        None => Ok(()),
    };
    let temporary = || {
        Err("temporary tables, views, triggers and virtual tables are not allowed: they would not survive a restart, so a replay could differ".to_owned())
    };
    let in_temp = context
        .database_name
        .is_some_and(|name| name.eq_ignore_ascii_case("temp"));
    match context.action {
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Err(
            "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is not allowed: the host owns the transaction".to_owned(),
        ),
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            let allowed = PRAGMAS_ANY_ARGUMENT.contains(&name.as_str())
                || (pragma_value.is_none() && PRAGMAS_READ_ONLY.contains(&name.as_str()));
            if !allowed {
                return Err(format!(
                    "PRAGMA {pragma_name}{} is not allowed: projectors may read only {} and {}",
                    if pragma_value.is_some() { " with a value" } else { "" },
                    PRAGMAS_ANY_ARGUMENT.join(", "),
                    PRAGMAS_READ_ONLY.join(", "),
                ));
            }
            deny_host(&[pragma_value.unwrap_or_default()])
        }
        AuthAction::Function { function_name } => {
            if DENIED_FUNCTIONS
                .iter()
                .any(|denied| denied.eq_ignore_ascii_case(function_name))
            {
                Err(format!(
                    "the SQL function {function_name}() is not allowed: a replay must compute the same read model, so no clock, randomness or extensions"
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
        AuthAction::CreateVtable { .. } if in_temp => temporary(),
        AuthAction::CreateVtable {
            table_name,
            module_name,
        } => {
            deny_host(&[table_name])?;
            guard.allow_schema_reads(SchemaReads::RowIds);
            if VIRTUAL_TABLE_MODULES
                .iter()
                .any(|module| module.eq_ignore_ascii_case(module_name))
            {
                Ok(())
            } else {
                Err(format!(
                    "virtual tables using `{module_name}` are not allowed; use one of {}",
                    VIRTUAL_TABLE_MODULES.join(", ")
                ))
            }
        }
        AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. } => temporary(),
        AuthAction::CreateIndex {
            index_name,
            table_name,
        } => {
            guard.allow_schema_reads(SchemaReads::RowIds);
            deny_host(&[index_name, table_name])
        }
        AuthAction::DropIndex {
            index_name,
            table_name,
        }
        | AuthAction::DropTempIndex {
            index_name,
            table_name,
        } => {
            guard.allow_schema_reads(SchemaReads::All);
            deny_host(&[index_name, table_name])
        }
        AuthAction::CreateTrigger {
            trigger_name,
            table_name,
        } => {
            guard.allow_schema_reads(SchemaReads::RowIds);
            deny_host(&[trigger_name, table_name])
        }
        AuthAction::DropTrigger {
            trigger_name,
            table_name,
        }
        | AuthAction::DropTempTrigger {
            trigger_name,
            table_name,
        } => {
            guard.allow_schema_reads(SchemaReads::All);
            deny_host(&[trigger_name, table_name])
        }
        AuthAction::CreateTable { table_name } => {
            guard.allow_schema_reads(SchemaReads::RowIds);
            deny_host(&[table_name])
        }
        AuthAction::CreateView { view_name } => {
            guard.allow_schema_reads(SchemaReads::RowIds);
            deny_host(&[view_name])
        }
        AuthAction::AlterTable { table_name, .. } => {
            deny_host(&[table_name])?;
            guard.allow_schema_reads(SchemaReads::All);
            guard.altered.store(true, Ordering::Release);
            Ok(())
        }
        AuthAction::DropTable { table_name }
        | AuthAction::DropTempTable { table_name }
        | AuthAction::DropVtable { table_name, .. } => {
            guard.allow_schema_reads(SchemaReads::All);
            deny_host(&[table_name])
        }
        AuthAction::DropView { view_name } | AuthAction::DropTempView { view_name } => {
            guard.allow_schema_reads(SchemaReads::All);
            deny_host(&[view_name])
        }
        AuthAction::Read {
            table_name,
            column_name,
        } if HIDDEN_TABLES
            .iter()
            .any(|hidden| hidden.eq_ignore_ascii_case(table_name)) =>
        {
            // SQLite's own reads while it carries out a schema change have no accessor;
            // a trigger's or a view's always have one.
            let by_sqlite = context.accessor.is_none()
                && !table_name.eq_ignore_ascii_case("dbstat")
                && match guard.schema_reads() {
                    SchemaReads::All => true,
                    SchemaReads::RowIds => column_name.eq_ignore_ascii_case("rowid"),
                    SchemaReads::None => false,
                };
            if by_sqlite {
                Ok(())
            } else {
                Err(format!(
                    "`{table_name}` lists the host's tables, so projectors may not read it; a projector knows its own schema (`PRAGMA table_info(name)` describes one of its tables)"
                ))
            }
        }
        AuthAction::Delete { table_name }
        | AuthAction::Insert { table_name }
        | AuthAction::Read { table_name, .. }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Analyze { table_name } => deny_host(&[table_name]),
        AuthAction::Reindex { index_name } => deny_host(&[index_name]),
        AuthAction::Select | AuthAction::Recursive => Ok(()),
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Err(
            "ATTACH and DETACH are not allowed: a projector reaches only its own read model"
                .to_owned(),
        ),
        other => Err(format!("{other:?} is not allowed")),
    }
}

/// Why a function in [`COSTLY_FUNCTIONS`] is refused, with what to use instead.
pub fn costly_function(name: &str) -> String {
    let instead = match name.to_ascii_lowercase().as_str() {
        "json_group_array" | "jsonb_group_array" => {
            "; `json('[' || group_concat(json_quote(x)) || ']')` builds the same array within the value limit"
        }
        "json_group_object" | "jsonb_group_object" => {
            "; `json('{' || group_concat(json_quote(k) || ':' || json_quote(v)) || '}')` builds the same object within the value limit"
        }
        "json_pretty" => "; format JSON where it is shown",
        "highlight" | "snippet" => "; mark up search results where they are shown",
        _ => "",
    };
    format!(
        "the SQL function {name}() is not allowed: one call of it can run or allocate without bound before SQLite checks its size{instead}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sandboxed database in a temp dir, inside a host transaction, with a host table.
    fn open() -> rusqlite::Result<(tempfile::TempDir, SandboxedDb)> {
        let dir = tempfile::tempdir()
            .map_err(|err| rusqlite::Error::InvalidPath(err.to_string().into()))?;
        let db = SandboxedDb::open(
            &dir.path().join("read.db"),
            DbOptions::live(),
            &SandboxLimits {
                max_value_bytes: 1 << 20,
                ..SandboxLimits::default()
            },
            TickClock::default(),
            &Watchdog::default(),
        )?;
        db.conn()
            .execute_batch("CREATE TABLE _refract_checkpoint (offset INTEGER); BEGIN;")?;
        Ok((dir, db))
    }

    /// Runs `sql` as the guest and returns the kind of error it got, if any.
    fn as_guest(db: &SandboxedDb, sql: &str) -> Option<(SqlErrorKind, String)> {
        let guard = Arc::clone(db.guard());
        let _scope = guard.enter_guest(u64::MAX);
        db.start_statement();
        db.conn().execute_batch(sql).err().map(|err| {
            let (error, _) = db.classify(&err);
            (error.kind, error.message)
        })
    }

    #[test]
    fn guest_may_build_its_own_schema() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        for sql in [
            "CREATE TABLE balances (account TEXT PRIMARY KEY, balance INTEGER)",
            "CREATE INDEX balances_by_balance ON balances (balance)",
            "INSERT INTO balances VALUES ('a', 1) ON CONFLICT (account) DO UPDATE SET balance = balance + 1",
            "SELECT * FROM pragma_table_info('balances')",
            "PRAGMA table_info(balances)",
            "PRAGMA user_version",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) SELECT count(*) FROM c",
            "CREATE VIRTUAL TABLE docs USING fts5(body)",
        ] {
            assert_eq!(as_guest(&db, sql), None, "{sql}");
        }
        Ok(())
    }

    #[test]
    fn guest_is_denied_the_dangerous_parts() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        for sql in [
            "ATTACH DATABASE '/tmp/other.db' AS other",
            "DETACH DATABASE main",
            "PRAGMA writable_schema = ON",
            "PRAGMA user_version = 7",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA max_page_count = 1000000000",
            "COMMIT",
            "BEGIN",
            "ROLLBACK",
            "SAVEPOINT s",
            "RELEASE s",
            "SELECT * FROM _refract_checkpoint",
            "INSERT INTO _REFRACT_checkpoint VALUES (1)",
            "UPDATE _refract_checkpoint SET offset = 9",
            "DELETE FROM _refract_checkpoint",
            "DROP TABLE _refract_checkpoint",
            "ALTER TABLE _refract_checkpoint RENAME TO mine",
            "CREATE TABLE _refract_mine (x)",
            "CREATE INDEX i ON _refract_checkpoint (offset)",
            "CREATE TRIGGER t AFTER INSERT ON _refract_checkpoint BEGIN SELECT 1; END",
            "CREATE TEMP TABLE scratch (x)",
            "SELECT random()",
            "SELECT randomblob(8)",
            "SELECT current_timestamp",
            "SELECT load_extension('/tmp/evil.so')",
            "CREATE VIRTUAL TABLE t USING dbstat",
            "SELECT * FROM dbstat",
            "SELECT name FROM sqlite_master",
            "UPDATE sqlite_master SET sql = 'x'",
            "VACUUM",
        ] {
            let (kind, message) = as_guest(&db, sql).unwrap_or_else(|| panic!("allowed: {sql}"));
            assert_eq!(kind, SqlErrorKind::Denied, "{sql}: {message}");
        }
        Ok(())
    }

    #[test]
    fn the_host_tables_stay_out_of_sight() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        db.conn()
            .execute_batch("CREATE TABLE _refract_meta (key TEXT PRIMARY KEY, value TEXT)")?;
        for sql in [
            "SELECT name FROM sqlite_master",
            "SELECT sql FROM sqlite_schema",
            "SELECT count(*) FROM main.sqlite_master",
            "SELECT name FROM sqlite_temp_master",
            "SELECT name FROM temp.sqlite_schema",
            "SELECT rowid FROM sqlite_schema",
            "SELECT * FROM dbstat",
            "SELECT name FROM dbstat('main')",
            "SELECT * FROM pragma_table_list",
            "PRAGMA table_list",
            "PRAGMA table_info(_refract_checkpoint)",
            "SELECT * FROM pragma_table_info('_REFRACT_meta')",
            "PRAGMA index_list('_refract_meta')",
            "PRAGMA index_info('sqlite_autoindex__refract_meta_1')",
            "CREATE TABLE copied AS SELECT name, sql FROM sqlite_schema",
        ] {
            let (kind, message) = as_guest(&db, sql).unwrap_or_else(|| panic!("allowed: {sql}"));
            assert_eq!(kind, SqlErrorKind::Denied, "{sql}: {message}");
        }
        // A trigger or a view cannot read the schema either, even when a DROP (whose
        // own schema reads are allowed) fires it.
        for sql in [
            "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE child (p REFERENCES parent ON DELETE CASCADE)",
            "CREATE TABLE leak (v)",
            "CREATE TRIGGER spy AFTER DELETE ON child BEGIN INSERT INTO leak SELECT name FROM sqlite_schema; END",
            "INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1)",
            "CREATE VIEW peek AS SELECT name FROM sqlite_schema",
        ] {
            assert_eq!(as_guest(&db, sql), None, "{sql}");
        }
        for sql in [
            "DELETE FROM parent",
            "DROP TABLE parent",
            "SELECT * FROM peek",
        ] {
            let (kind, message) = as_guest(&db, sql).unwrap_or_else(|| panic!("allowed: {sql}"));
            assert_eq!(kind, SqlErrorKind::Denied, "{sql}: {message}");
        }
        // The guest's own schema work still does what SQLite needs.
        for sql in [
            "CREATE TABLE t (a, b)",
            "CREATE INDEX t_a ON t (a)",
            "ALTER TABLE t ADD COLUMN c",
            "ALTER TABLE t RENAME COLUMN c TO d",
            "ALTER TABLE t DROP COLUMN d",
            "ALTER TABLE t RENAME TO u",
            "DROP INDEX t_a",
            "CREATE VIRTUAL TABLE docs USING fts5(body)",
            "DROP TABLE docs",
            "DROP VIEW peek",
            "PRAGMA table_info(u)",
            "DROP TABLE u",
        ] {
            assert_eq!(as_guest(&db, sql), None, "{sql}");
        }
        Ok(())
    }

    #[test]
    fn temporary_objects_and_costly_functions_are_denied() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        for sql in [
            "CREATE VIRTUAL TABLE temp.scratch USING fts5(body)",
            "CREATE VIRTUAL TABLE TEMP.scratch USING rtree(id, a, b)",
            "CREATE TEMP VIEW v AS SELECT 1",
            "SELECT json_pretty('[1]')",
            "SELECT json_group_array(1)",
            "SELECT jsonb_group_object('a', 1)",
            "SELECT sqlite_log(1, 'x')",
        ] {
            let (kind, message) = as_guest(&db, sql).unwrap_or_else(|| panic!("allowed: {sql}"));
            assert_eq!(kind, SqlErrorKind::Denied, "{sql}: {message}");
        }
        let (_, message) = as_guest(&db, "SELECT json_group_array(1)").expect("denied");
        assert!(message.contains("group_concat"), "{message}");
        Ok(())
    }

    #[test]
    fn a_trigger_cannot_reach_host_tables() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        assert_eq!(as_guest(&db, "CREATE TABLE mine (x)"), None);
        // The trigger body is authorized when a statement that fires it is prepared.
        let created = as_guest(
            &db,
            "CREATE TRIGGER sneaky AFTER INSERT ON mine BEGIN DELETE FROM _refract_checkpoint; END",
        );
        if created.is_none() {
            let (kind, _) = as_guest(&db, "INSERT INTO mine VALUES (1)").expect("denied");
            assert_eq!(kind, SqlErrorKind::Denied);
        }
        Ok(())
    }

    #[test]
    fn limits_map_to_limit_errors() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        let (kind, message) = as_guest(&db, "SELECT zeroblob(1000000000)").expect("too big");
        assert_eq!(kind, SqlErrorKind::Limit, "{message}");
        assert!(
            message.ends_with("(the limit is 1 MiB, `limits.max_value_bytes`)"),
            "{message}"
        );
        let deep = format!("SELECT 1{}", " + 1".repeat(500));
        let (kind, message) = as_guest(&db, &deep).expect("too deep");
        assert_eq!(kind, SqlErrorKind::Limit, "{message}");
        assert!(message.contains("`limits.max_expr_depth`"), "{message}");
        Ok(())
    }

    #[test]
    fn time_comes_from_events_not_the_clock() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        for sql in [
            "SELECT datetime('now')",
            "SELECT date()",
            "SELECT strftime('%s')",
            "SELECT strftime('%Y', 'NOW')",
            "SELECT julianday(' now ')",
            "SELECT unixepoch('2024-01-01', 'localtime')",
            "SELECT datetime(1700000000, 'unixepoch', 'utc')",
            "SELECT datetime(lower('NOW'))",
        ] {
            let (kind, message) = as_guest(&db, sql).unwrap_or_else(|| panic!("allowed: {sql}"));
            assert_eq!(kind, SqlErrorKind::Denied, "{sql}: {message}");
        }
        let guard = Arc::clone(db.guard());
        let _scope = guard.enter_guest(u64::MAX);
        let formatted: String = db.conn().query_row(
            "SELECT strftime('%Y-%m-%d %H:%M', ?1 / 1000000, 'unixepoch')",
            [1_700_000_000_000_000_i64],
            |row| row.get(0),
        )?;
        assert_eq!(formatted, "2023-11-14 22:13");
        let days: f64 = db
            .conn()
            .query_row("SELECT julianday('2000-01-01')", [], |row| row.get(0))?;
        assert!((days - 2_451_544.5).abs() < f64::EPSILON);
        Ok(())
    }

    #[test]
    fn defaults_cannot_read_the_clock_either() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        for (table, default) in [("a", "CURRENT_TIMESTAMP"), ("b", "(datetime('now'))")] {
            let created = as_guest(
                &db,
                &format!("CREATE TABLE {table} (x, at DEFAULT {default})"),
            );
            if created.is_none() {
                let (kind, message) = as_guest(&db, &format!("INSERT INTO {table} (x) VALUES (1)"))
                    .unwrap_or_else(|| panic!("a DEFAULT of {default} read the clock"));
                assert_eq!(kind, SqlErrorKind::Denied, "{default}: {message}");
            }
        }
        Ok(())
    }

    #[test]
    fn vacuum_into_cannot_write_files() -> rusqlite::Result<()> {
        let (dir, db) = open()?;
        let target = dir.path().join("copy.db");
        let sql = format!("VACUUM INTO '{}'", target.display());
        let (kind, message) = as_guest(&db, &sql).expect("VACUUM INTO must fail");
        assert_eq!(kind, SqlErrorKind::Denied, "{message}");
        assert!(!target.exists());
        Ok(())
    }

    #[test]
    fn the_host_passes_outside_guest_calls() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        db.conn().execute_batch(
            "INSERT INTO _refract_checkpoint VALUES (1); COMMIT; PRAGMA user_version = 3;",
        )?;
        assert!(
            db.conn()
                .execute_batch("ATTACH DATABASE ':memory:' AS m")
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn runaway_statements_are_interrupted_at_the_deadline() -> rusqlite::Result<()> {
        let (_dir, db) = open()?;
        let guard = Arc::clone(db.guard());
        let _scope = guard.enter_guest(0);
        let err = db
            .conn()
            .query_row(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                [],
                |row| row.get::<_, i64>(0),
            )
            .expect_err("interrupted");
        assert_eq!(db.classify(&err).0.kind, SqlErrorKind::Interrupted);
        Ok(())
    }
}
