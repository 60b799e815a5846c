//! From this node to the cluster: a component deployed here goes into the components
//! object store, and its version becomes the projector's desired version.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use super::Deploys;
use super::records::{Action, Desired, RECORD_FORMAT, now_ms};
use crate::config::PromoteMode;
use crate::engine::LocalDeploy;

/// The key of a projector's desired record.
pub fn desired_key(projector: &str) -> String {
    format!("desired.{projector}")
}

/// Gives every local deploy to the cluster, in the order they happened.
pub(crate) async fn local_deploys(
    deploys: Arc<Deploys>,
    mut notices: UnboundedReceiver<LocalDeploy>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => notice,
            _ = stop.changed() => return,
        };
        let Some(notice) = notice else { return };
        let mut pause = crate::cluster::config::RETRY_INITIAL;
        // A deploy the cluster has not heard of is retried until NATS takes it: the
        // alternative is a node serving a version no other node will ever run.
        loop {
            match publish(&deploys, &notice, Action::Deploy).await {
                Ok(()) => {
                    deploys.set_error(&notice.projector, None);
                    break;
                }
                Err(error) => deploys.set_error(
                    &notice.projector,
                    Some(format!(
                        "version {} was deployed here but not yet given to the cluster: {error}; retrying",
                        notice.version
                    )),
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            pause = (pause * 2).min(crate::cluster::config::RETRY_MAX);
        }
    }
}

/// Publishes a rollback or an abort made on this node: `version` (read from this
/// node's stored component) becomes the desired version, with `action`. Retried until
/// NATS takes it.
pub(crate) async fn announce(deploys: &Deploys, projector: &str, version: &str, action: Action) {
    let path = deploys.engine.data_dir().version_wasm(projector, version);
    let wasm = match tokio::fs::read(&path).await {
        Ok(wasm) => wasm,
        Err(error) => {
            deploys.set_error(
                projector,
                Some(format!(
                    "cannot give this node's {action:?} to version {version} to the cluster: cannot read {}: {error}",
                    path.display()
                )),
            );
            return;
        }
    };
    let component = LocalDeploy {
        projector: projector.to_owned(),
        version: version.to_owned(),
        sha256: hex::encode(Sha256::digest(&wasm)),
        wasm,
        at_startup: false,
    };
    let mut pause = crate::cluster::config::RETRY_INITIAL;
    loop {
        match publish(deploys, &component, action.clone()).await {
            Ok(()) => {
                deploys.set_error(projector, None);
                return;
            }
            Err(error) => deploys.set_error(
                projector,
                Some(format!(
                    "this node's {action:?} is not yet given to the cluster: {error}; retrying"
                )),
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(crate::cluster::config::RETRY_MAX);
    }
}

/// Stores the component (unless the store has it) and writes the desired record.
///
/// # Errors
/// NATS unreachable or refusing, as text.
pub(crate) async fn publish(
    deploys: &Deploys,
    component: &LocalDeploy,
    action: Action,
) -> Result<(), String> {
    let buckets = deploys.buckets().await;
    if component.at_startup {
        let known = buckets
            .projectors
            .get(desired_key(&component.projector))
            .await
            .map_err(|error| format!("cannot read the desired version: {error}"))?;
        if known.is_some() {
            tracing::info!(node = %deploys.cluster.config.node, projector = %component.projector, version = %component.version, "cluster: the plugins folder's version at startup is not given to the cluster, which already has a desired version for this projector");
            return Ok(());
        }
    }
    let stored = buckets
        .components
        .info(&component.sha256)
        .await
        .is_ok_and(|info| !info.deleted && info.size == component.wasm.len());
    if !stored {
        let mut reader = std::io::Cursor::new(component.wasm.as_slice());
        buckets
            .components
            .put(component.sha256.as_str(), &mut reader)
            .await
            .map_err(|error| format!("cannot store the component: {error}"))?;
    }
    let promote = match deploys
        .engine
        .config()
        .projector(&component.projector)
        .promote
    {
        PromoteMode::Auto => "auto",
        PromoteMode::Manual => "manual",
    };
    let record = Desired {
        format: RECORD_FORMAT,
        projector: component.projector.clone(),
        version: component.version.clone(),
        sha256: component.sha256.clone(),
        size: u64::try_from(component.wasm.len()).unwrap_or(u64::MAX),
        action,
        promote: promote.to_owned(),
        origin: deploys.cluster.config.node.clone(),
        at_ms: now_ms(),
        coordinated: None,
    };
    let value = serde_json::to_vec(&record).map_err(|error| error.to_string())?;
    buckets
        .projectors
        .put(desired_key(&component.projector), Bytes::from(value))
        .await
        .map_err(|error| format!("cannot write the desired version: {error}"))?;
    tracing::info!(node = %deploys.cluster.config.node, projector = %component.projector, version = %component.version, ?record.action, "cluster: desired version written");
    Ok(())
}
