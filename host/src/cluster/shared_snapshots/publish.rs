//! Publishing: the newest local snapshot of each placed projector this node holds a
//! lease for goes to the shared bucket, off the engine's path (see the module above).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::{self, ObjectMetadata};
use tokio::sync::watch;

use super::{PUBLISH_TICK, SharedSnapshot, list, to_prune};
use crate::cluster::deploys::{Deploys, lock};
use crate::snapshots::store::{SnapshotEntry, Store};

/// The longest pause before a failed publish of one projector is tried again: NATS
/// down for a while costs one warning and one failure counted per pause, not per tick.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the publisher remembers of one projector version.
#[derive(Debug, Default)]
struct Published {
    /// The checkpoint done with: in the bucket, or given up on (too big, or an upload
    /// that started and failed); only a newer snapshot is published.
    checkpoint: u64,
    /// After a failure before any upload began: when to try again, and the pause after
    /// that.
    retry: Option<(Instant, Duration)>,
}

impl Published {
    /// Whether the snapshot at `checkpoint` is to be published now.
    fn due(&self, checkpoint: u64, now: Instant) -> bool {
        checkpoint > self.checkpoint && self.retry.is_none_or(|(at, _)| now >= at)
    }

    /// The snapshot at `checkpoint` is in the bucket.
    fn done(&mut self, checkpoint: u64) {
        *self = Published {
            checkpoint,
            retry: None,
        };
    }

    /// Publishing the snapshot at `checkpoint` failed.
    fn failed(&mut self, checkpoint: u64, next: Next, now: Instant) {
        match next {
            Next::NewerSnapshot => self.done(checkpoint),
            Next::RetrySoon => {
                let pause = self
                    .retry
                    .map_or(PUBLISH_TICK, |(_, pause)| (pause * 2).min(RETRY_MAX));
                self.retry = Some((now + pause, pause));
            }
        }
    }
}

/// Publishes new local snapshots of the projectors placed here, every [`PUBLISH_TICK`].
pub(crate) async fn run(deploys: Arc<Deploys>, mut stop: watch::Receiver<bool>) {
    let mut published: BTreeMap<(String, String), Published> = BTreeMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PUBLISH_TICK) => {}
            _ = stop.changed() => return,
        }
        let here: Vec<String> = lock(&deploys.placed_here)
            .iter()
            .filter(|(_, here)| **here)
            .map(|(projector, _)| projector.clone())
            .collect();
        for projector in here {
            for entry in newest_per_version(&deploys, &projector).await {
                let key = (projector.clone(), entry.version.clone());
                let state = published.entry(key).or_default();
                if !state.due(entry.checkpoint, Instant::now()) {
                    continue;
                }
                match publish_one(&deploys, &projector, &entry).await {
                    Ok(Outcome::Published | Outcome::AlreadyThere) => state.done(entry.checkpoint),
                    Ok(Outcome::Vanished) => {}
                    Err(Failure { message, next }) => {
                        tracing::warn!(node = %deploys.cluster.config.node, %projector, snapshot = %entry.id(), "shared snapshots: cannot publish ({message}); the local snapshot is kept");
                        deploys
                            .cluster
                            .shared_snapshots
                            .publish_failed(format!("{projector} {}: {message}", entry.id()));
                        state.failed(entry.checkpoint, next, Instant::now());
                    }
                }
            }
        }
    }
}

/// The newest local snapshot of each version of `projector`.
async fn newest_per_version(deploys: &Deploys, projector: &str) -> Vec<SnapshotEntry> {
    let store = Store::new(deploys.engine.data_dir());
    let name = projector.to_owned();
    // The manifest is a file read: kept off the async runtime.
    let entries = tokio::task::spawn_blocking(move || store.list(&name).unwrap_or_default())
        .await
        .unwrap_or_default();
    let mut newest: BTreeMap<String, SnapshotEntry> = BTreeMap::new();
    for entry in entries {
        match newest.get(&entry.version) {
            Some(kept) if kept.checkpoint >= entry.checkpoint => {}
            _ => {
                newest.insert(entry.version.clone(), entry);
            }
        }
    }
    newest.into_values().collect()
}

enum Outcome {
    Published,
    /// The bucket has it already (published by this node before a restart, or by the
    /// node it was restored from).
    AlreadyThere,
    /// The local file was pruned meanwhile; a newer snapshot replaces it.
    Vanished,
}

struct Failure {
    message: String,
    next: Next,
}

/// What follows a failed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing was uploaded (NATS unreachable, the file unreadable): the same snapshot
    /// again after a pause.
    RetrySoon,
    /// Not this snapshot again: it is too big, or its upload began and failed or timed
    /// out. The client publishes an object's chunks before its metadata and does not
    /// remove them when it fails or is dropped, so each such attempt may leave up to
    /// the snapshot's size in orphan chunks; one attempt per snapshot bounds that (and
    /// the bucket's `shared_snapshot_bucket_max_bytes` bounds the total). A newer
    /// snapshot gets its own attempt.
    NewerSnapshot,
}

fn retry(message: String) -> Failure {
    Failure {
        message,
        next: Next::RetrySoon,
    }
}

fn give_up(message: String) -> Failure {
    Failure {
        message,
        next: Next::NewerSnapshot,
    }
}

/// Publishes one snapshot, then prunes the version's older shared ones.
async fn publish_one(
    deploys: &Deploys,
    projector: &str,
    entry: &SnapshotEntry,
) -> Result<Outcome, Failure> {
    let config = &deploys.cluster.config;
    let limits = config.shared_snapshots;
    if entry.bytes > limits.max_bytes {
        return Err(give_up(format!(
            "it is {} bytes, more than cluster.shared_snapshot_max_bytes = {}; raise it on every node to share it",
            entry.bytes, limits.max_bytes
        )));
    }
    let path = Store::new(deploys.engine.data_dir()).snapshot_path(projector, entry);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Outcome::Vanished);
        }
        Err(error) => return Err(retry(format!("{}: {error}", path.display()))),
    };
    let bucket = super::node_bucket(deploys).await.map_err(retry)?;
    let shared = SharedSnapshot {
        name: super::object_name(projector, &entry.version, entry.checkpoint),
        projector: projector.to_owned(),
        entry: entry.clone(),
        node: config.node.clone(),
    };
    if let Ok(Ok(info)) =
        tokio::time::timeout(super::BUCKET_TIMEOUT, bucket.info(&shared.name)).await
        && !info.deleted
        && info.metadata.get("sha256") == Some(&entry.sha256)
    {
        return Ok(Outcome::AlreadyThere);
    }
    let meta = ObjectMetadata {
        name: shared.name.clone(),
        description: Some(format!(
            "read model of `{projector}` version {} at offset {}",
            entry.version, entry.checkpoint
        )),
        metadata: shared.metadata(),
        ..ObjectMetadata::default()
    };
    match tokio::time::timeout(limits.fetch_timeout, bucket.put(meta, &mut file)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            return Err(give_up(format!(
                "NATS refused the object ({error}); this snapshot is not tried again, the next one is (a full bucket: raise cluster.shared_snapshot_bucket_max_bytes)"
            )));
        }
        Err(_) => {
            return Err(give_up(format!(
                "the upload took more than cluster.shared_snapshot_fetch_timeout_ms = {}; this snapshot is not tried again, the next one is",
                limits.fetch_timeout.as_millis()
            )));
        }
    }
    tracing::info!(node = %config.node, %projector, snapshot = %entry.id(), bytes = entry.bytes, "shared snapshots: published");
    deploys
        .cluster
        .shared_snapshots
        .published(projector, entry.id());
    prune(&bucket, projector, &entry.version, limits.keep).await;
    Ok(Outcome::Published)
}

/// Deletes the version's shared snapshots beyond the newest `keep`. A failure is
/// logged: the next publish prunes again.
async fn prune(bucket: &object_store::ObjectStore, projector: &str, version: &str, keep: usize) {
    let all = match list(bucket, projector).await {
        Ok(all) => all,
        Err(error) => {
            tracing::debug!(%projector, "shared snapshots: cannot prune: {error}");
            return;
        }
    };
    for old in to_prune(&all, version, keep) {
        if let Err(error) = bucket.delete(&old.name).await {
            tracing::debug!(%projector, object = %old.name, "shared snapshots: cannot delete an old one: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_upload_waits_for_a_newer_snapshot_and_an_unreachable_bucket_retries_soon() {
        let start = Instant::now();
        let much_later = start + RETRY_MAX * 10;

        // An upload that began and failed (timeout, refusal) or a snapshot too big:
        // never the same snapshot again, however long we wait; the next one at once.
        let mut state = Published::default();
        assert!(state.due(10, start));
        state.failed(10, Next::NewerSnapshot, start);
        assert!(!state.due(10, start));
        assert!(!state.due(10, much_later));
        assert!(state.due(11, start));

        // Nothing uploaded (NATS down): the same snapshot again after a pause that
        // doubles up to RETRY_MAX.
        let mut state = Published::default();
        state.failed(10, Next::RetrySoon, start);
        assert!(!state.due(10, start));
        assert!(state.due(10, start + PUBLISH_TICK));
        state.failed(10, Next::RetrySoon, start);
        assert!(!state.due(10, start + PUBLISH_TICK));
        assert!(state.due(10, start + PUBLISH_TICK * 2));
        for _ in 0..20 {
            state.failed(10, Next::RetrySoon, start);
        }
        assert!(!state.due(10, start + RETRY_MAX - PUBLISH_TICK));
        assert!(state.due(10, start + RETRY_MAX));

        // Once published, only newer snapshots, and the pause is forgotten.
        state.done(10);
        assert!(!state.due(10, much_later));
        assert!(state.due(12, start));
    }
}
