//! Restoring: before a placed projector is deployed on a node its lease just came to,
//! the newest usable shared snapshot of the version is fetched into the local snapshot
//! store, where the engine's deploy finds it (see the module above).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{RestoreRecord, SharedSnapshot, choose, list};
use crate::cluster::deploys::Deploys;
use crate::snapshots::store::Store;

/// Brings the newest shared snapshot of `version` of `projector` into the local
/// snapshot store when it is newer than the node's own and its mirror has reached it.
/// Never fails: whatever goes wrong is logged with the projector, the snapshot and the
/// reason, recorded for `GET /v1/cluster`, and the local store is left as it was, so
/// the engine starts from the node's own newest snapshot or offset 1.
pub(crate) async fn before_deploy(deploys: &Deploys, projector: &str, version: &str) {
    let data = deploys.engine.data_dir().clone();
    if data.version_db(projector, version).exists() {
        // The engine keeps an existing read model; nothing to seed.
        return;
    }
    let store = Store::new(&data);
    let local = {
        let store = store.clone();
        let (name, version) = (projector.to_owned(), version.to_owned());
        tokio::task::spawn_blocking(move || {
            store
                .newest_good(&name, Some(&version), None)
                .map(|entry| entry.checkpoint)
        })
        .await
        .ok()
        .flatten()
    };
    let mirror_head = deploys.cluster.progress().head;
    let node = deploys.cluster.config.node.clone();
    let record = match attempt(deploys, &store, projector, version, mirror_head, local).await {
        Ok(Some(shared)) => {
            tracing::info!(%node, %projector, snapshot = %shared.entry.id(), published_by = %shared.node, "shared snapshots: restored; the projector replays only the events after offset {}", shared.entry.checkpoint);
            RestoreRecord {
                version: version.to_owned(),
                outcome: "restored".to_owned(),
                started_from: shared.entry.checkpoint,
                snapshot: Some(shared.entry.id()),
                published_by: Some(shared.node),
                reason: None,
            }
        }
        Ok(None) => {
            tracing::info!(%node, %projector, %version, mirror_head, "shared snapshots: none newer than this node's own at or below its mirror's head; starting from {}", local.map_or_else(|| "offset 1".to_owned(), |c| format!("the local snapshot at offset {c}")));
            RestoreRecord {
                version: version.to_owned(),
                outcome: "local".to_owned(),
                started_from: local.unwrap_or(0),
                snapshot: None,
                published_by: None,
                reason: None,
            }
        }
        Err(Refused { shared, reason }) => {
            let id = shared.as_ref().map(|s| s.entry.id());
            tracing::warn!(%node, %projector, snapshot = id.as_deref().unwrap_or("-"), "shared snapshots: cannot restore ({reason}); starting from {} instead", local.map_or_else(|| "offset 1".to_owned(), |c| format!("the local snapshot at offset {c}")));
            RestoreRecord {
                version: version.to_owned(),
                outcome: "fell_back".to_owned(),
                started_from: local.unwrap_or(0),
                snapshot: id,
                published_by: shared.map(|s| s.node),
                reason: Some(reason),
            }
        }
    };
    deploys
        .cluster
        .shared_snapshots
        .restore_decided(projector, record);
}

/// Why a shared snapshot was not used, and which one, if one was chosen.
struct Refused {
    shared: Option<SharedSnapshot>,
    reason: String,
}

/// Lists, chooses, fetches and imports; the snapshot imported, or `None` when the
/// bucket has none worth it.
async fn attempt(
    deploys: &Deploys,
    store: &Store,
    projector: &str,
    version: &str,
    mirror_head: u64,
    local: Option<u64>,
) -> Result<Option<SharedSnapshot>, Refused> {
    let config = &deploys.cluster.config;
    let refused = |shared: Option<&SharedSnapshot>, reason: String| Refused {
        shared: shared.cloned(),
        reason,
    };
    let bucket = super::node_bucket(deploys)
        .await
        .map_err(|error| refused(None, error))?;
    let all = list(&bucket, projector)
        .await
        .map_err(|error| refused(None, error))?;
    let Some(chosen) = choose(&all, version, mirror_head, local) else {
        return Ok(None);
    };
    let limits = config.shared_snapshots;
    let folder = store.projector_dir(projector).join(version);
    let temp = temp_file(&folder);
    let fetched = tokio::time::timeout(
        limits.fetch_timeout,
        fetch(&bucket, chosen, &folder, &temp, limits.max_bytes),
    )
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "fetching it took more than cluster.shared_snapshot_fetch_timeout_ms = {}",
            limits.fetch_timeout.as_millis()
        ))
    });
    if let Err(reason) = fetched {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(refused(Some(chosen), reason));
    }
    let keep = deploys.engine.config().projector(projector).snapshots.keep;
    let (importer, name, entry) = (store.clone(), projector.to_owned(), chosen.entry.clone());
    // Checksum, SQLite identity check and renames: blocking work, off the runtime.
    let imported =
        tokio::task::spawn_blocking(move || importer.import(&name, &entry, &temp, keep)).await;
    match imported {
        Ok(Ok(_)) => Ok(Some(chosen.clone())),
        Ok(Err(error)) => Err(refused(Some(chosen), error.to_string())),
        Err(error) => Err(refused(Some(chosen), error.to_string())),
    }
}

/// Fetches one object to `temp`, refusing it past `max_bytes` or when its size is not
/// the one its metadata records.
async fn fetch(
    bucket: &async_nats::jetstream::object_store::ObjectStore,
    shared: &SharedSnapshot,
    folder: &Path,
    temp: &Path,
    max_bytes: u64,
) -> Result<(), String> {
    let too_big = |bytes: u64| {
        format!(
            "the object is {bytes} bytes, more than cluster.shared_snapshot_max_bytes = {max_bytes}; refused (raise the limit on this node to use it)"
        )
    };
    if shared.entry.bytes > max_bytes {
        return Err(too_big(shared.entry.bytes));
    }
    let mut object = bucket
        .get(&shared.name)
        .await
        .map_err(|error| format!("cannot fetch object {}: {error}", shared.name))?;
    let size = u64::try_from(object.info.size).unwrap_or(u64::MAX);
    if size > max_bytes {
        return Err(too_big(size));
    }
    tokio::fs::create_dir_all(folder)
        .await
        .map_err(|error| format!("{}: {error}", folder.display()))?;
    let mut file = tokio::fs::File::create(temp)
        .await
        .map_err(|error| format!("{}: {error}", temp.display()))?;
    let written = copy_bounded(&mut object, &mut file, max_bytes)
        .await
        .map_err(|error| match error {
            CopyError::TooBig(bytes) => too_big(bytes),
            CopyError::Read(error) => format!("cannot read object {}: {error}", shared.name),
            CopyError::Write(error) => format!("{}: {error}", temp.display()),
        })?;
    if written != shared.entry.bytes {
        return Err(format!(
            "object {} holds {written} bytes, but its metadata says {}: refused",
            shared.name, shared.entry.bytes
        ));
    }
    Ok(())
}

/// Why a bounded copy stopped.
#[derive(Debug)]
enum CopyError {
    /// More than the limit arrived (at least this many bytes): refused, not read on.
    TooBig(u64),
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `from` to `to`, stopping as soon as more than `max_bytes` arrived: a hostile
/// object's size in its info is not trusted, the bytes are counted. Returns the bytes
/// copied.
async fn copy_bounded(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    max_bytes: u64,
) -> Result<u64, CopyError> {
    let mut buffer = vec![0_u8; 1 << 16];
    let mut written: u64 = 0;
    loop {
        let read = from.read(&mut buffer).await.map_err(CopyError::Read)?;
        if read == 0 {
            break;
        }
        written += u64::try_from(read).unwrap_or(u64::MAX);
        if written > max_bytes {
            return Err(CopyError::TooBig(written));
        }
        to.write_all(&buffer[..read])
            .await
            .map_err(CopyError::Write)?;
    }
    to.flush().await.map_err(CopyError::Write)?;
    Ok(written)
}

/// A temporary file in the version's snapshot folder (on the store's file system, so
/// the import is a rename); the store's stray cleaner removes any a crash leaves.
fn temp_file(folder: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    folder.join(format!(
        ".shared-{}-{}.db.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::{CopyError, copy_bounded};

    #[tokio::test]
    async fn an_object_past_the_limit_is_refused_without_being_read_to_its_end() {
        // An "object" far larger than the limit: the copy stops within one buffer.
        let mut endless = tokio::io::repeat(7).take(u64::MAX);
        let mut sink = Vec::new();
        let error = copy_bounded(&mut endless, &mut sink, 100_000)
            .await
            .unwrap_err();
        assert!(
            matches!(error, CopyError::TooBig(bytes) if bytes > 100_000 && bytes <= 100_000 + (1 << 16)),
            "{error:?}"
        );
        assert!(sink.len() <= 100_000, "nothing past the limit is written");
        // At the limit exactly it passes whole.
        let mut exact = tokio::io::repeat(7).take(100_000);
        let mut sink = Vec::new();
        assert_eq!(
            copy_bounded(&mut exact, &mut sink, 100_000).await.ok(),
            Some(100_000)
        );
        assert_eq!(sink.len(), 100_000);
    }
}
