//! The one error type of the event log.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::storage_fault::StorageFault;

/// Everything that can go wrong opening, appending to or reading the event log.
///
/// Messages name the thing, the place and, where there is one, the fix. Variants that wrap
/// a lower-level error expose it as [`source`](std::error::Error::source) rather than
/// repeating it in the message: print the whole chain (e.g. `anyhow`'s `{:#}`).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file or its directory could not be created or opened (permissions, a file
    /// where a directory should be, a missing mount, ...).
    #[error("cannot create or open `{}` (check the path and its permissions)", path.display())]
    Open {
        /// The file or directory that could not be opened or created.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The file exists but is not an SQLite database at all.
    #[error(
        "`{}` is not an SQLite database, so it is not a Refract event log; point the data directory elsewhere or move the file away",
        path.display()
    )]
    NotSqlite {
        /// The offending file.
        path: PathBuf,
    },

    /// The file is an SQLite database, but one that some other program wrote.
    #[error(
        "`{}` is an SQLite database but not a Refract event log ({reason}); refusing to touch it, point the data directory elsewhere",
        path.display()
    )]
    NotRefractLog {
        /// The offending file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },

    /// The log was written by a newer Refract with a schema this build does not know.
    /// The file is left exactly as it was.
    #[error(
        "`{}` was written by a newer Refract (schema {found}, this build supports {supported}); upgrade refract",
        path.display()
    )]
    NewerSchema {
        /// The log file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build understands.
        supported: i64,
    },

    /// An event of an append batch failed validation; nothing of the batch was appended.
    #[error("event {position} of {batch_len}: {field} {reason}")]
    InvalidEvent {
        /// The 1-based position of the event in the batch.
        position: usize,
        /// How many events the batch had.
        batch_len: usize,
        /// The field that is wrong.
        field: EventField,
        /// What is wrong with it, phrased to follow the field name.
        reason: String,
    },

    /// Optimistic concurrency: a stream was not at the version the append expected.
    /// Nothing of the batch was appended.
    #[error(
        "version conflict on stream `{stream}`: expected version {expected}, but it is at {actual}"
    )]
    VersionConflict {
        /// The stream.
        stream: String,
        /// The version the append required the stream to be at (0 = must not exist).
        expected: u64,
        /// The version the stream is actually at (0 = it does not exist).
        actual: u64,
    },

    /// A read query that cannot be answered as asked.
    #[error("invalid read query: {reason}")]
    InvalidQuery {
        /// What is wrong with the query.
        reason: String,
    },

    /// SQLite failed while doing something specific to one request. When the cause is
    /// a storage fault (a full disk, an unwritable or damaged file), the message says
    /// the fix.
    #[error("event log `{}`: {operation} failed{}", path.display(), advice(path, source))]
    Sqlite {
        /// The log file.
        path: PathBuf,
        /// What the log was doing, e.g. "appending an event".
        operation: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },

    /// A group commit failed as a whole (the write lock could not be taken within the busy
    /// timeout, the disk is full, ...). None of the requests in the group was appended;
    /// retrying is safe because appends with ids are idempotent.
    #[error("cannot write to the event log `{}`: {reason}", path.display())]
    Write {
        /// The log file.
        path: PathBuf,
        /// The underlying failure, already formatted (it is shared by every request of the group).
        reason: String,
    },

    /// A local append to a log that is a cluster node's mirror: its events come from the
    /// cluster only, or the nodes would disagree.
    #[error(
        "`{}` is a cluster node's mirror of the replicated log: append through a running cluster node (`refract run --cluster ...`) instead",
        path.display()
    )]
    Mirror {
        /// The log file.
        path: PathBuf,
    },

    /// Replicated messages that do not continue this mirror; nothing was applied.
    #[error("cannot apply the replicated log to `{}`: {reason}", path.display())]
    MirrorMismatch {
        /// The log file.
        path: PathBuf,
        /// What does not match, and the fix.
        reason: String,
    },

    /// The disk holding the log is full. Nothing of the append was written; it can be
    /// retried once space is freed.
    #[error(
        "cannot write to the event log `{}`: the disk holding it is full, so nothing was written; \
         free space on it (or move the data directory to a larger disk), then retry",
        path.display()
    )]
    DiskFull {
        /// The log file.
        path: PathBuf,
    },

    /// The archive of removed events (retention's cold tier) could not be read: a
    /// segment is missing, damaged or fails its checksum. Replays stop here rather than
    /// skip the events it holds.
    #[error(
        "cannot read the archive at `{}`: {reason}; restore the archive folder from a backup, \
         never delete its segments while the log refers to them",
        path.display()
    )]
    Archive {
        /// The archive folder or segment file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A read or count of archived events would decompress more archive segments than
    /// its [`ArchiveBudget`](super::ArchiveBudget) allows before it could answer even
    /// its first offset. The archive always allows the segments reaching the first
    /// offset ([`ArchiveBudget::charge_needed`](super::ArchiveBudget::charge_needed)),
    /// so only a cold tier that does not can cause it.
    #[error(
        "answering from offset {from_offset} needs more than the {segments} archive \
         segments one request may decompress (the archive's segments overlap there); \
         raise the budget, or read with `refract events`, which reads the whole archive"
    )]
    ArchiveBudget {
        /// Where the read or count had to start.
        from_offset: u64,
        /// The budget, in segments.
        segments: usize,
    },

    /// The log's writer thread is gone (it panicked or the process is shutting down).
    #[error("the event log writer for `{}` has stopped; reopen the log", path.display())]
    WriterStopped {
        /// The log file.
        path: PathBuf,
    },
}

/// The fix for a storage fault behind a SQLite error, as `: <advice>`, or nothing.
fn advice(path: &Path, source: &rusqlite::Error) -> String {
    StorageFault::of_sqlite(source).map_or_else(String::new, |fault| {
        format!(": {}", fault.advice(path, "the event log"))
    })
}

/// A field of a [`NewEvent`](super::NewEvent), named by validation errors.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventField {
    /// The client-supplied event id.
    Id,
    /// The stream name.
    Stream,
    /// The event type.
    Type,
    /// The JSON payload.
    Data,
    /// The optional JSON metadata.
    Metadata,
}

impl fmt::Display for EventField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventField::Id => "id",
            EventField::Stream => "stream",
            EventField::Type => "type",
            EventField::Data => "data",
            EventField::Metadata => "metadata",
        })
    }
}
