//! Storage faults: recognising, in any error, that a disk is full, that a file cannot
//! be written, or that a database is damaged, and saying what to do about it.
//!
//! The log, the engine, the API and the CLI all meet the same few faults on the same
//! files; this module is where a fault is told apart and its fix is worded, once, so
//! that every message names the thing, the place and the fix.

use std::io;
use std::path::Path;

use rusqlite::ErrorCode;

/// A fault of the storage under a file, as opposed to a fault of the data in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageFault {
    /// No space is left on the file system.
    DiskFull,
    /// The file or its folder cannot be written: permissions, or a read-only mount.
    NotWritable,
    /// The file is not a readable SQLite database: damaged, truncated or overwritten.
    Damaged,
}

impl StorageFault {
    /// The fault an error (or any error in its `source` chain) reports, if any.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Option<StorageFault> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(fault) = error
                .downcast_ref::<rusqlite::Error>()
                .and_then(StorageFault::of_sqlite)
                .or_else(|| {
                    error
                        .downcast_ref::<io::Error>()
                        .and_then(StorageFault::of_io)
                })
            {
                return Some(fault);
            }
            cause = error.source();
        }
        None
    }

    /// The fault a SQLite error reports, if any.
    pub fn of_sqlite(error: &rusqlite::Error) -> Option<StorageFault> {
        match error.sqlite_error_code()? {
            ErrorCode::DiskFull => Some(StorageFault::DiskFull),
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied => Some(StorageFault::NotWritable),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => Some(StorageFault::Damaged),
            _ => None,
        }
    }

    /// The fault an I/O error reports, if any.
    pub fn of_io(error: &io::Error) -> Option<StorageFault> {
        match error.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Some(StorageFault::DiskFull)
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Some(StorageFault::NotWritable)
            }
            _ => None,
        }
    }

    /// The fault that keeps `file` from being opened for reading and writing, found by
    /// trying: for errors such as SQLite's "unable to open database file", which do not
    /// say whether a permission or a missing folder is to blame.
    pub fn probe(file: &Path) -> Option<StorageFault> {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
        {
            Ok(_) => None,
            Err(error) => StorageFault::of_io(&error),
        }
    }

    /// What happened to `file` and how to fix it, as one sentence to follow a colon.
    /// `role` says what the file is to Refract, e.g. "the event log".
    pub fn advice(self, file: &Path, role: &str) -> String {
        let folder = file.parent().unwrap_or(file);
        match self {
            StorageFault::DiskFull => format!(
                "the disk holding {} is full; free space on it (or move the data directory to a \
                 larger disk), and Refract carries on where it stopped",
                folder.display()
            ),
            StorageFault::NotWritable => format!(
                "refract may not write {} ({role}); give the user running refract write access \
                 to it and to {} (chown or chmod), or remount the file system read-write",
                file.display(),
                folder.display()
            ),
            StorageFault::Damaged => format!(
                "{} ({role}) is damaged or is not a SQLite database; stop refract and restore \
                 it from a backup",
                file.display()
            ),
        }
    }
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
///
/// # Errors
/// If the file system cannot be asked.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_found_anywhere_in_a_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] rusqlite::Error);
        let full = Outer(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        assert_eq!(StorageFault::of(&full), Some(StorageFault::DiskFull));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(StorageFault::of(&denied), Some(StorageFault::NotWritable));
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(StorageFault::of(&busy), None);
    }

    #[test]
    fn advice_names_the_place_and_the_fix() {
        let advice = StorageFault::DiskFull.advice(Path::new("/data/events.db"), "the event log");
        assert!(advice.contains("/data is full"), "{advice}");
        let advice = StorageFault::Damaged.advice(Path::new("/data/control.db"), "x");
        assert!(advice.contains("restore it from a backup"), "{advice}");
    }
}
