//! From the cluster to this node: the desired version of every projector, watched in
//! the projectors bucket and applied to the local engine.
//!
//! Applying is idempotent and derived from the record alone, so a node that missed
//! any number of changes (down, disconnected) converges by applying the newest one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

use super::placement::{Placement, placement};
use super::records::{Action, Desired, NodeSwap, PromoteRecord, RECORD_FORMAT};
use super::{Deploys, RECONCILE_INTERVAL, SeenDesired, lock};
use crate::cluster::config::{RETRY_INITIAL, RETRY_MAX};
use crate::engine::control::Role;
use crate::engine::{EngineError, ProjectorView};

/// Watches the desired records and keeps [`Deploys::desired`] current.
pub(crate) async fn watch_desired(deploys: Arc<Deploys>, mut stop: watch::Receiver<bool>) {
    let mut pause = RETRY_INITIAL;
    loop {
        let buckets = tokio::select! {
            buckets = deploys.buckets() => buckets,
            _ = stop.changed() => return,
        };
        match buckets.projectors.watch_with_history(">").await {
            Ok(mut entries) => loop {
                let entry = tokio::select! {
                    entry = entries.next() => entry,
                    _ = stop.changed() => return,
                };
                match entry {
                    Some(Ok(entry)) => {
                        pause = RETRY_INITIAL;
                        if !entry.key.starts_with("desired.") {
                            other_record(&deploys, &entry);
                            continue;
                        }
                        let projector = entry.key.trim_start_matches("desired.").to_owned();
                        if entry.operation != Operation::Put {
                            lock(&deploys.desired).remove(&projector);
                            continue;
                        }
                        match serde_json::from_slice::<Desired>(&entry.value) {
                            Ok(record) if record.format <= RECORD_FORMAT => {
                                lock(&deploys.desired).insert(
                                    projector,
                                    SeenDesired {
                                        record,
                                        revision: entry.revision,
                                        since: Instant::now(),
                                    },
                                );
                                deploys.changed.notify_one();
                            }
                            Ok(record) => deploys.set_error(
                                &projector,
                                Some(format!(
                                    "the desired record (revision {}) has format {}, newer than this node's {RECORD_FORMAT}: upgrade this node",
                                    entry.revision, record.format
                                )),
                            ),
                            Err(error) => deploys.set_error(
                                &projector,
                                Some(format!(
                                    "the desired record (revision {}) is not a Refract record: {error}",
                                    entry.revision
                                )),
                            ),
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(node = %deploys.cluster.config.node, "watching the desired versions: {error}; watching again");
                        break;
                    }
                    None => break,
                }
            },
            Err(error) => {
                tracing::warn!(node = %deploys.cluster.config.node, "cannot watch the desired versions: {error}; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Keeps a promote or swap record.
fn other_record(deploys: &Deploys, entry: &async_nats::jetstream::kv::Entry) {
    if entry.operation != Operation::Put {
        return;
    }
    if entry.key.starts_with("promote.") {
        if let Ok(record) = serde_json::from_slice::<PromoteRecord>(&entry.value) {
            lock(&deploys.promotes).insert(record.projector.clone(), (entry.revision, record));
            deploys.changed.notify_one();
        }
    } else if entry.key.starts_with("swap.")
        && let Ok(record) = serde_json::from_slice::<NodeSwap>(&entry.value)
    {
        lock(&deploys.swaps).insert((record.projector.clone(), record.node.clone()), record);
    }
}

/// Applies the desired records to the local engine whenever they change, and every
/// [`RECONCILE_INTERVAL`] (retrying what failed).
pub(crate) async fn reconcile(deploys: Arc<Deploys>, mut stop: watch::Receiver<bool>) {
    // The revision of each projector's record this node has carried out.
    let mut applied: BTreeMap<String, u64> = BTreeMap::new();
    // The revision of each projector's promote record this node has carried out.
    let mut promoted: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        // While a promote waits for the offset, look again soon.
        let waiting = lock(&deploys.promotes).len() > promoted.len();
        let tick = if waiting {
            RECONCILE_INTERVAL / 10
        } else {
            RECONCILE_INTERVAL
        };
        tokio::select! {
            () = deploys.changed.notified() => {}
            () = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let desired: Vec<SeenDesired> = lock(&deploys.desired).values().cloned().collect();
        for seen in desired {
            let projector = seen.record.projector.clone();
            match placement(&deploys, &projector) {
                Placement::Everywhere | Placement::Here => {}
                Placement::Undecided => continue,
                Placement::Elsewhere => {
                    // Applied afresh should its lease come to this node.
                    applied.remove(&projector);
                    super::placement::release(&deploys, &projector).await;
                    continue;
                }
            }
            if applied.get(&projector) == Some(&seen.revision) {
                continue;
            }
            match apply_one(&deploys, &seen.record).await {
                Ok(()) => {
                    applied.insert(projector.clone(), seen.revision);
                    deploys.set_error(&projector, None);
                }
                Err(Failure::Final(error)) => {
                    applied.insert(projector.clone(), seen.revision);
                    deploys.set_error(&projector, Some(error));
                }
                Err(Failure::Retry(error)) => deploys.set_error(&projector, Some(error)),
            }
        }
        // Promotes of the version the cluster still asks for.
        let promotes: Vec<(u64, PromoteRecord)> =
            lock(&deploys.promotes).values().cloned().collect();
        for (revision, record) in promotes {
            if promoted.get(&record.projector) == Some(&revision) {
                continue;
            }
            let current = lock(&deploys.desired)
                .get(&record.projector)
                .is_some_and(|seen| seen.record.version == record.version);
            match placement(&deploys, &record.projector) {
                Placement::Undecided => continue,
                // Not run here: nothing to hold or swap.
                Placement::Elsewhere => {
                    promoted.insert(record.projector.clone(), revision);
                    continue;
                }
                Placement::Everywhere | Placement::Here => {}
            }
            if !current {
                promoted.insert(record.projector.clone(), revision);
                continue;
            }
            match super::promote::apply(&deploys, &record).await {
                Ok(true) => {
                    promoted.insert(record.projector.clone(), revision);
                }
                Ok(false) => {}
                Err(error) => deploys.set_error(
                    &record.projector,
                    Some(format!(
                        "cannot carry out the promote to {}: {error}",
                        record.version
                    )),
                ),
            }
        }
    }
}

/// Why a desired record was not carried out.
enum Failure {
    /// It never will be on this node (a component this node refuses); reported.
    Final(String),
    /// It may be on the next attempt (NATS unreachable, the engine busy).
    Retry(String),
}

/// Makes the local projector match one desired record.
async fn apply_one(deploys: &Deploys, record: &Desired) -> Result<(), Failure> {
    let name = record.projector.as_str();
    let view = deploys.engine.projector(name);
    let active = view.as_ref().and_then(|v| v.active_version.clone());
    let shadow = view.as_ref().and_then(|v| version_in(v, Role::Shadow));
    let runs = active.is_some() || shadow.is_some();
    match &record.action {
        // Where it runs; elsewhere (placement moved it here), the active version is
        // deployed below.
        Action::Abort { aborted } if runs => {
            if shadow.as_deref() == Some(aborted.as_str()) {
                let engine = Arc::clone(&deploys.engine);
                let name = name.to_owned();
                blocking(move || engine.abort(&name)).await?;
                tracing::info!(node = %deploys.cluster.config.node, projector = %record.projector, version = %aborted, "cluster: shadow aborted");
            }
            Ok(())
        }
        _ if active.as_deref() == Some(record.version.as_str())
            || shadow.as_deref() == Some(record.version.as_str()) =>
        {
            Ok(())
        }
        // Carried out by its promote record, at one offset on every node.
        Action::Rollback if record.coordinated.is_some() && runs => Ok(()),
        Action::Rollback
            if view
                .as_ref()
                .and_then(|v| version_in(v, Role::Previous))
                .as_deref()
                == Some(record.version.as_str()) =>
        {
            let engine = Arc::clone(&deploys.engine);
            let name = name.to_owned();
            blocking(move || engine.rollback(&name)).await?;
            tracing::info!(node = %deploys.cluster.config.node, projector = %record.projector, version = %record.version, "cluster: rolled back");
            Ok(())
        }
        Action::Rollback | Action::Deploy | Action::Abort { .. } => {
            let wasm = fetch(deploys, record).await?;
            if !runs && placement(deploys, name) == Placement::Here {
                // The lease just came here: start from the newest shared snapshot
                // rather than offset 1, where one is usable.
                crate::cluster::shared_snapshots::restore::before_deploy(
                    deploys,
                    name,
                    &record.version,
                )
                .await;
            }
            let engine = Arc::clone(&deploys.engine);
            let name = name.to_owned();
            let deployment = blocking(move || engine.deploy_replicated(&name, &wasm)).await?;
            tracing::info!(node = %deploys.cluster.config.node, projector = %record.projector, version = %deployment.version, outcome = ?deployment.outcome, "cluster: desired version deployed");
            Ok(())
        }
    }
}

/// The newest version of `projector` in `role` (the engine lists running ones first,
/// then the others newest first).
fn version_in(view: &ProjectorView, role: Role) -> Option<String> {
    view.versions
        .iter()
        .find(|version| version.role == role)
        .map(|version| version.version.clone())
}

/// Runs an engine command off the async runtime (it waits for the controller).
async fn blocking<T: Send + 'static>(
    command: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(
            error @ (EngineError::InvalidComponent(_)
            | EngineError::NameMismatch { .. }
            | EngineError::UnknownProjector(_)),
        )) => Err(Failure::Final(error.to_string())),
        Ok(Err(error)) => Err(Failure::Retry(error.to_string())),
        Err(error) => Err(Failure::Retry(error.to_string())),
    }
}

/// Fetches a component from the object store, bounded by this node's
/// `limits.max_component_bytes`, and checks it is the one the record names.
async fn fetch(deploys: &Deploys, record: &Desired) -> Result<Vec<u8>, Failure> {
    let limit = deploys.engine.sandbox_limits().max_component_bytes;
    let too_big = |size: u64| {
        Failure::Final(format!(
            "version {} of `{}` is {size} bytes, more than this node's limits.max_component_bytes = {limit}; raise it on this node",
            record.version, record.projector
        ))
    };
    if record.size > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(too_big(record.size));
    }
    let buckets = deploys
        .buckets_now()
        .ok_or_else(|| Failure::Retry("the cluster's buckets are not open yet".into()))?;
    let object = buckets
        .components
        .get(&record.sha256)
        .await
        .map_err(|error| {
            Failure::Retry(format!(
                "cannot fetch component {} of `{}` from the object store: {error}",
                record.sha256, record.projector
            ))
        })?;
    let mut wasm = Vec::new();
    // One byte past the limit is enough to know it is too big.
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    object
        .take(bound)
        .read_to_end(&mut wasm)
        .await
        .map_err(|error| {
            Failure::Retry(format!(
                "cannot read component {} of `{}`: {error}",
                record.sha256, record.projector
            ))
        })?;
    if wasm.len() > limit {
        return Err(too_big(u64::try_from(wasm.len()).unwrap_or(u64::MAX)));
    }
    let sha256 = hex::encode(Sha256::digest(&wasm));
    if sha256 != record.sha256 {
        return Err(Failure::Final(format!(
            "the component stored for version {} of `{}` has SHA-256 {sha256}, not {} as the desired record says: refusing it; deploy it again",
            record.version, record.projector, record.sha256
        )));
    }
    Ok(wasm)
}
