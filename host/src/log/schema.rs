//! Opening the database file: recognising a Refract log, refusing anything else, and
//! migrating the schema.
//!
//! The file carries two markers in its header: `PRAGMA application_id` says "this is a
//! Refract log" and `PRAGMA user_version` says which schema it has. Migration `n` (the
//! `n`-th entry of [`MIGRATIONS`]) takes a log from version `n` to `n + 1`. Nothing is
//! written to a file until it has been recognised as a Refract log of a version this build
//! knows (or as an empty database), so a foreign or newer file is never altered.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::{Durability, LogError, LogOptions, READER_CACHE_SIZE_KIB};

/// The `PRAGMA application_id` of every Refract log: "RFCT" in ASCII.
pub const APPLICATION_ID: i32 = 0x5246_4354;

/// The newest schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Schema migrations, in order: entry `n` takes a log from version `n` to `n + 1`. Released
/// entries are never edited; a change is a new entry.
const MIGRATIONS: &[&str] = &[
    // 1: the events table. Offsets are assigned by the writer inside its write transaction
    // (the highest offset plus one), never by AUTOINCREMENT, so they stay gap-free.
    r#"
    CREATE TABLE events (
        "offset"       INTEGER PRIMARY KEY,
        id             TEXT    NOT NULL UNIQUE,
        stream         TEXT    NOT NULL,
        stream_version INTEGER NOT NULL,
        type           TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT,
        recorded_at    INTEGER NOT NULL -- microseconds since the Unix epoch, UTC
    ) STRICT;
    -- UNIQUE (stream, stream_version), named so that queries can insist on it.
    CREATE UNIQUE INDEX events_stream_version ON events (stream, stream_version);
    CREATE INDEX events_type_offset ON events (type, "offset");
    CREATE INDEX events_recorded_at ON events (recorded_at);
    "#,
    // 2: the mirror position of a cluster node's log (see `mirror.rs`): at most one row,
    // written in the same transaction as the events it accounts for. Empty in a
    // single-node log.
    r#"
    CREATE TABLE mirror (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        source    TEXT    NOT NULL, -- the source stream's identity
        position  INTEGER NOT NULL, -- the last source position applied
        head      INTEGER NOT NULL  -- the log's head offset after it
    ) STRICT;
    "#,
    // 3: the retention horizon (see `horizon.rs`): one row, written in the same
    // transaction as the removals it accounts for. All zeros until retention removes
    // anything.
    r#"
    CREATE TABLE horizon (
        singleton        INTEGER PRIMARY KEY CHECK (singleton = 1),
        archived_through INTEGER NOT NULL, -- the highest offset moved to the archive
        deleted_through  INTEGER NOT NULL, -- the highest offset deleted for good
        settled_segment  INTEGER NOT NULL, -- the last archive segment fully removed from here
        archived_events  INTEGER NOT NULL,
        deleted_events   INTEGER NOT NULL,
        removed_bytes    INTEGER NOT NULL, -- event text (data and metadata) removed
        reclaimed_bytes  INTEGER NOT NULL  -- file space given back by incremental vacuum
    ) STRICT;
    INSERT INTO horizon VALUES (1, 0, 0, 0, 0, 0, 0, 0);
    "#,
    // 4: stream heads in a table of their own (see `append.rs`): the writer checks and
    // advances a stream's version here, in the transaction that appends its events,
    // instead of probing the newest `(stream, stream_version)` entry. Integer ids are
    // given in order of each stream's first event. Filled from the events already here.
    r#"
    CREATE TABLE streams (
        id      INTEGER PRIMARY KEY,
        name    TEXT    NOT NULL UNIQUE,
        version INTEGER NOT NULL -- the stream's head: the version of its newest event
    ) STRICT;
    INSERT INTO streams (name, version)
        SELECT stream, max(stream_version) FROM events GROUP BY stream ORDER BY min("offset");
    "#,
    // 5: the deferred stream index (see `stream_index.rs`). The UNIQUE
    // `events_stream_version` index dirtied a leaf page per stream per commit; instead,
    // `(stream id, version) -> offset` is written in sorted chunks, and the watermark
    // says how far: events above it (the tail) are found by a bounded scan by offset.
    // Versions stay unique per stream without the UNIQUE index: the writer assigns them
    // from `streams.version` inside its write transaction (one writer at a time, in any
    // process), and the index's primary key refuses a duplicate when it is indexed.
    // Filled from the events already here, so a migrated log starts fully indexed.
    r#"
    DROP INDEX events_stream_version;
    CREATE TABLE stream_index (
        stream    INTEGER NOT NULL, -- streams.id
        version   INTEGER NOT NULL,
        "offset"  INTEGER NOT NULL,
        PRIMARY KEY (stream, version)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE stream_indexed (
        singleton       INTEGER PRIMARY KEY CHECK (singleton = 1),
        indexed_through INTEGER NOT NULL -- every event at or below this offset is indexed
    ) STRICT;
    INSERT INTO stream_index (stream, version, "offset")
        SELECT s.id, e.stream_version, e."offset"
        FROM events AS e NOT INDEXED CROSS JOIN streams AS s ON s.name = e.stream
        ORDER BY 1, 2;
    INSERT INTO stream_indexed VALUES (1, (SELECT coalesce(max("offset"), 0) FROM events));
    "#,
    // 6: no index on `recorded_at`. The writer stamps events in order (`recorded_at` never
    // decreases along offsets), so a time bound is found by a binary search over offsets,
    // a few rowid lookups per query (see `query.rs`), and the index only cost every
    // append a b-tree insert per event (`refract bench --only levers`,
    // `lever_row_indexes_*`).
    r#"
    DROP INDEX events_recorded_at;
    "#,
];

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Opens the write connection: creates the file (and its directory) if needed, refuses
/// anything that is not a Refract log of a known version, migrates, and configures WAL and
/// durability.
pub(super) fn open_writer(path: &Path, options: &LogOptions) -> Result<Connection, LogError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| LogError::Open {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    check_header(path)?;

    let sqlite = |operation| move |source| sqlite_error(path, operation, source);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite("opening the file"))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(sqlite("setting the busy timeout"))?;

    // Recognise the file before writing anything to it: switching to WAL already writes.
    let found = identify(&conn, path)?;
    refuse_newer(path, found)?;

    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .map_err(sqlite("switching to WAL mode"))?;
    conn.pragma_update(None, "synchronous", synchronous(options.durability))
        .map_err(sqlite("setting synchronous"))?;
    conn.pragma_update(None, "wal_autocheckpoint", options.checkpoint_pages.max(1))
        .map_err(sqlite("setting wal_autocheckpoint"))?;
    // Savepoints of a group commit keep their undo pages in memory, not in a temp file.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sqlite("setting temp_store"))?;
    configure_common(&conn, path, options)?;

    // Identify again under the write lock: another process may have created or upgraded
    // the log since the first look.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite("locking the log for migration"))?;
    let version = identify(&tx, path)?;
    refuse_newer(path, version)?;
    if version < SCHEMA_VERSION {
        let from = usize::try_from(version).unwrap_or(0);
        for migration in &MIGRATIONS[from..] {
            tx.execute_batch(migration)
                .map_err(sqlite("migrating the schema"))?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sqlite("setting the application id"))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite("setting the schema version"))?;
    }
    tx.commit().map_err(sqlite("committing the migration"))?;
    Ok(conn)
}

fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    }
}

/// Opens a read-only connection to a log that [`open_writer`] has already set up.
pub(super) fn open_reader(path: &Path, options: &LogOptions) -> Result<Connection, LogError> {
    let sqlite = |operation| move |source| sqlite_error(path, operation, source);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(sqlite("opening a read connection"))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(sqlite("setting the busy timeout"))?;
    configure_common(&conn, path, options)?;
    let cache_kib = options.cache_size_kib.min(READER_CACHE_SIZE_KIB);
    conn.pragma_update(None, "cache_size", -i64::from(cache_kib))
        .map_err(sqlite("setting the cache size"))?;
    Ok(conn)
}

/// Settings every connection gets.
fn configure_common(conn: &Connection, path: &Path, options: &LogOptions) -> Result<(), LogError> {
    // Negative means KiB rather than pages.
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_size_kib))
        .map_err(|e| sqlite_error(path, "setting the cache size", e))?;
    // Query planner stability: without it SQLite re-prepares some cached statements on
    // every execution when a bound value might allow a better plan (measured: the stream
    // version probe was re-parsed on each append). Our plans never depend on values.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| sqlite_error(path, "enabling query planner stability", e))?;
    // Queries are built per filter shape (number of types, prefixes); keep them all.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Refuses a non-empty file that does not start with the SQLite header, before SQLite
/// gets a chance to treat it as anything.
fn check_header(path: &Path) -> Result<(), LogError> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LogError::Open {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let open_error = |source| LogError::Open {
        path: path.to_path_buf(),
        source,
    };
    let metadata = file.metadata().map_err(open_error)?;
    if metadata.is_dir() {
        return Err(open_error(io::Error::other(
            "it is a directory, but the event log must be a file",
        )));
    }
    if metadata.len() == 0 {
        return Ok(());
    }
    let mut header = [0u8; 16];
    match file.read_exact(&mut header) {
        Ok(()) if &header == SQLITE_HEADER => Ok(()),
        Ok(()) => Err(LogError::NotSqlite {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(LogError::NotSqlite {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(open_error(source)),
    }
}

/// Returns the schema version of a Refract log, or 0 for an empty database; refuses
/// anything else.
fn identify(conn: &Connection, path: &Path) -> Result<i64, LogError> {
    let read = |pragma: &str| {
        conn.pragma_query_value(None, pragma, |row| row.get::<_, i64>(0))
            .map_err(|e| {
                if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
                    LogError::NotSqlite {
                        path: path.to_path_buf(),
                    }
                } else {
                    sqlite_error(path, "reading the file header", e)
                }
            })
    };
    let application_id = read("application_id")?;
    let version = read("user_version")?;
    if application_id == i64::from(APPLICATION_ID) {
        return Ok(version);
    }
    if application_id != 0 {
        return Err(LogError::NotRefractLog {
            path: path.to_path_buf(),
            reason: format!("its application id is {application_id:#x}"),
        });
    }
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(|e| sqlite_error(path, "reading the schema", e))?;
    if objects > 0 || version != 0 {
        return Err(LogError::NotRefractLog {
            path: path.to_path_buf(),
            reason: "it already has tables but no Refract application id".to_owned(),
        });
    }
    Ok(0)
}

fn refuse_newer(path: &Path, found: i64) -> Result<(), LogError> {
    if found > SCHEMA_VERSION {
        return Err(LogError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

pub(super) fn configure_writer_like(
    conn: &Connection,
    path: &Path,
    options: &LogOptions,
) -> Result<(), LogError> {
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| sqlite_error(path, "setting the busy timeout", e))?;
    configure_common(conn, path, options)
}

pub(super) fn sqlite_error(
    path: &Path,
    operation: &'static str,
    source: rusqlite::Error,
) -> LogError {
    LogError::Sqlite {
        path: path.to_path_buf(),
        operation,
        source,
    }
}
