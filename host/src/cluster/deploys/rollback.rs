//! A cluster-wide rollback, at one log offset: the same promote record as a manual
//! promote (see [`promote`](super::promote)), of kind `rollback`.
//!
//! 1. Every live node that runs the projector must serve the desired version, with
//!    the same previous version to return to (the version the rollback names).
//! 2. The desired record becomes that previous version (`action: rollback`) with the
//!    promote's id (`coordinated`), so no node rolls back on its own account.
//! 3. The promote record goes through its phases: every node holds its active
//!    version, the promote offset `O` is the highest held checkpoint, and every node
//!    rolls back once its active version is at `O`: a warm previous version swaps in
//!    at once, another catches up with the held active version and swaps in there.
//!    Each node's swap record says `O`.
//! 4. Abandoned (a node did not hold in time), the desired record written in step 2
//!    is put back as it was, and every node goes on serving what it served.

use bytes::Bytes;

use super::promote::{self, Promoted};
use super::publish::desired_key;
use super::records::{Action, PromoteKind, now_ms};
use super::{Deploys, lock};

/// Rolls `projector` back on every node at one offset.
///
/// # Errors
/// Why the cluster cannot roll back now, with the fix.
pub(crate) async fn coordinate(deploys: &Deploys, projector: &str) -> Result<Promoted, String> {
    let desired = lock(&deploys.desired)
        .get(projector)
        .map(|seen| seen.record.clone())
        .ok_or_else(|| {
            format!("the cluster has no desired version of `{projector}`; nothing to roll back")
        })?;
    let from = desired.version.clone();
    let target = deploys
        .engine
        .projector(projector)
        .and_then(|view| {
            view.versions
                .iter()
                .find(|v| v.role == crate::engine::control::Role::Previous)
                .map(|v| v.version.clone())
        })
        .or_else(|| {
            // Not run here (placement): the previous version the nodes that run it report.
            super::view::build(deploys)
                .projectors
                .into_iter()
                .find(|p| p.name == projector)
                .and_then(|p| p.nodes.into_iter().find_map(|n| n.previous_version))
        })
        .ok_or_else(|| {
            format!("projector `{projector}` has no previous version to roll back to")
        })?;
    let participants = promote::participants(deploys, projector, |state| {
        if state.active_version.as_deref() != Some(from.as_str()) {
            return Some(format!(
                "serves {}, not the desired version {from}",
                state.active_version.as_deref().unwrap_or("nothing")
            ));
        }
        (state.previous_version.as_deref() != Some(target.as_str())).then(|| {
            format!(
                "its previous version is {}, not {target}",
                state.previous_version.as_deref().unwrap_or("none")
            )
        })
    })
    .map_err(|not_ready| {
        format!(
            "not every live node can roll `{projector}` back from {from} to {target}: {}; wait until the cluster converges (`refract status --cluster`), then roll back",
            not_ready.join("; ")
        )
    })?;
    let buckets = deploys
        .buckets_now()
        .ok_or("the cluster's buckets are not open yet")?;
    let key = desired_key(projector);
    let before = buckets
        .projectors
        .entry(key.clone())
        .await
        .map_err(|e| format!("cannot read the desired version: {e}"))?
        .ok_or_else(|| format!("the desired record of `{projector}` vanished"))?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut record = desired.clone();
    record.version.clone_from(&target);
    // The component of the version rolled back to: the record that brought it in
    // named it, and the nodes keep it; a node that must fetch it finds it by hash.
    let (sha256, size) = component_of(deploys, projector, &target)
        .await
        .ok_or_else(|| format!("cannot find the component of version {target} of `{projector}` on this node; roll back on a node that runs it"))?;
    record.sha256 = sha256;
    record.size = size;
    record.action = Action::Rollback;
    record.origin.clone_from(&deploys.cluster.config.node);
    record.at_ms = now_ms();
    record.coordinated = Some(id.clone());
    let value = Bytes::from(serde_json::to_vec(&record).map_err(|e| e.to_string())?);
    buckets
        .projectors
        .update(&key, value, before.revision)
        .await
        .map_err(|e| {
            format!("the desired version of `{projector}` changed meanwhile ({e}); retry")
        })?;
    let outcome = promote::carry_out(
        deploys,
        projector,
        &target,
        PromoteKind::Rollback,
        id,
        &participants,
    )
    .await;
    if outcome.is_err() {
        // Every node goes on serving `from`: the cluster asks for it again.
        let _ = buckets.projectors.put(&key, before.value).await;
    }
    outcome
}

/// The SHA-256 and size of `version`'s component: this node's stored copy, or the
/// snapshot store's.
async fn component_of(deploys: &Deploys, projector: &str, version: &str) -> Option<(String, u64)> {
    use sha2::{Digest as _, Sha256};
    let data = deploys.engine.data_dir().clone();
    let (projector, version) = (projector.to_owned(), version.to_owned());
    // File reads: off the async runtime.
    tokio::task::spawn_blocking(move || {
        let wasm = std::fs::read(data.version_wasm(&projector, &version))
            .ok()
            .or_else(|| crate::snapshots::recovery::component(&data, &projector, &version))?;
        Some((
            hex::encode(Sha256::digest(&wasm)),
            u64::try_from(wasm.len()).unwrap_or(u64::MAX),
        ))
    })
    .await
    .ok()
    .flatten()
}
