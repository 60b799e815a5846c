//! What can go wrong in retention.

use std::path::PathBuf;

use crate::log::LogError;

/// A retention failure. A failed pass changes nothing it has not finished: the next
/// pass (or the next start) picks up from what the log and the archive say.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Reading or removing events, or reading the archive, failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The archive folder cannot be opened or listed.
    #[error(
        "cannot open the archive folder `{}`: {source}; check that it exists and is writable",
        dir.display()
    )]
    OpenArchive {
        /// The archive folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A segment could not be written (its events stay in the log).
    #[error(
        "cannot write an archive segment in `{}`: {source}; the events stay in the log until \
         there is room (free some disk space)",
        dir.display()
    )]
    WriteSegment {
        /// The archive folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The background thread could not be started.
    #[error("cannot start the retention thread: {source}")]
    Spawn {
        /// Why.
        source: std::io::Error,
    },
    /// An archive-mode policy ran without an archive folder (a bug: the archive is opened
    /// whenever a policy archives).
    #[error("retention has an archive-mode policy but no archive folder open; restart the host")]
    NoArchive,
}
