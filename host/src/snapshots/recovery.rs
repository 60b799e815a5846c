//! Snapshots used by the engine: a lost or damaged read model, and a rollback to a
//! version whose read model was pruned, start from the newest good snapshot of that
//! version instead of from offset 1. The engine then replays only the events after
//! the snapshot's checkpoint, into a file readers do not see until it has caught up.

use std::io::Read;
use std::path::Path;

use crate::data_dir::DataDir;
use crate::snapshots::store::{SnapshotEntry, Store};

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether the file at `path` exists but is not a SQLite database any more (its header
/// overwritten or the file truncated): the engine treats it as lost. Deeper damage
/// shows as errors from the worker, which retries and says so in `refract status`.
pub fn is_damaged(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut header = [0_u8; 16];
    match file.read_exact(&mut header) {
        Ok(()) => &header != SQLITE_HEADER,
        // A file shorter than a header is damaged; an empty one is too (a read model
        // always has its host tables).
        Err(_) => true,
    }
}

/// Copies the newest good snapshot of `version` to `dest` (which must not exist):
/// returns it, or `None` when there is none (the engine then replays from offset 1).
pub fn seed_newest(
    data: &DataDir,
    projector: &str,
    version: &str,
    dest: &Path,
) -> Option<SnapshotEntry> {
    let store = Store::new(data);
    let entry = store.newest_good(projector, Some(version), None)?;
    seed(&store, projector, entry, dest)
}

/// Copies the snapshot `id` (`<version>/<checkpoint>`) to `dest`.
///
/// # Errors
/// No such snapshot, a damaged one, or an I/O failure.
pub fn seed_from(
    data: &DataDir,
    projector: &str,
    id: &str,
    dest: &Path,
) -> Result<SnapshotEntry, crate::snapshots::SnapshotError> {
    let store = Store::new(data);
    let entry = store.find(projector, id)?;
    store.seed(projector, &entry, dest)?;
    Ok(entry)
}

fn seed(
    store: &Store,
    projector: &str,
    entry: SnapshotEntry,
    dest: &Path,
) -> Option<SnapshotEntry> {
    match store.seed(projector, &entry, dest) {
        Ok(()) => {
            tracing::info!(projector, snapshot = %entry.id(), dest = %dest.display(), "read model seeded from a snapshot; catching up from its checkpoint");
            Some(entry)
        }
        Err(error) => {
            tracing::warn!(projector, snapshot = %entry.id(), "cannot seed from the snapshot, replaying from the start of the log instead: {error}");
            None
        }
    }
}

/// Whether `version` has a snapshot to come back to.
pub fn has_snapshot(data: &DataDir, projector: &str, version: &str) -> bool {
    Store::new(data)
        .list(projector)
        .is_ok_and(|entries| entries.iter().any(|entry| entry.version == version))
        && Store::new(data).component(projector, version).is_some()
}

/// The component stored with `version`'s snapshots.
pub fn component(data: &DataDir, projector: &str, version: &str) -> Option<Vec<u8>> {
    Store::new(data).component(projector, version)
}

/// Deletes a retired version's snapshots.
pub fn forget_version(data: &DataDir, projector: &str, version: &str) {
    Store::new(data).forget_version(projector, version);
}
