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
    /// The checkpoint known to be in the bucket (or refused for good: too big).
    checkpoint: u64,
    /// After a failure: when to try again, and the pause after that.
    retry: Option<(Instant, Duration)>,
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
                if entry.checkpoint <= state.checkpoint
                    || state.retry.is_some_and(|(at, _)| Instant::now() < at)
                {
                    continue;
                }
                match publish_one(&deploys, &projector, &entry).await {
                    Ok(Outcome::Published | Outcome::AlreadyThere) => {
                        *state = Published {
                            checkpoint: entry.checkpoint,
                            retry: None,
                        };
                    }
                    Ok(Outcome::Vanished) => {}
                    Err(Failure { message, lasting }) => {
                        tracing::warn!(node = %deploys.cluster.config.node, %projector, snapshot = %entry.id(), "shared snapshots: cannot publish ({message}); the local snapshot is kept");
                        deploys
                            .cluster
                            .shared_snapshots
                            .publish_failed(format!("{projector} {}: {message}", entry.id()));
                        if lasting {
                            state.checkpoint = entry.checkpoint;
                            state.retry = None;
                        } else {
                            let pause = state
                                .retry
                                .map_or(PUBLISH_TICK, |(_, pause)| (pause * 2).min(RETRY_MAX));
                            state.retry = Some((Instant::now() + pause, pause));
                        }
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
    /// It will not succeed on a retry (too big): not tried again.
    lasting: bool,
}

fn retry(message: String) -> Failure {
    Failure {
        message,
        lasting: false,
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
        return Err(Failure {
            message: format!(
                "it is {} bytes, more than cluster.shared_snapshot_max_bytes = {}; raise it on every node to share it",
                entry.bytes, limits.max_bytes
            ),
            lasting: true,
        });
    }
    let path = Store::new(deploys.engine.data_dir()).snapshot_path(projector, entry);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Outcome::Vanished);
        }
        Err(error) => return Err(retry(format!("{}: {error}", path.display()))),
    };
    let bucket = deploys
        .cluster
        .shared_snapshots
        .bucket(&deploys.cluster.jetstream, &config.stream, config.replicas)
        .await
        .map_err(retry)?;
    let shared = SharedSnapshot {
        name: super::object_name(projector, &entry.version, entry.checkpoint),
        projector: projector.to_owned(),
        entry: entry.clone(),
        node: config.node.clone(),
    };
    if let Ok(Ok(info)) =
        tokio::time::timeout(super::BUCKET_TIMEOUT, bucket.info(&shared.name)).await
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
        Ok(Err(error)) => return Err(retry(format!("NATS refused the object: {error}"))),
        Err(_) => {
            return Err(retry(format!(
                "the upload took more than cluster.shared_snapshot_fetch_timeout_ms = {}",
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
