//! Every node's heartbeat: its report written to the nodes bucket every
//! [`HEARTBEAT_INTERVAL`], and every other node's watched.
//!
//! Whether a node is reachable is judged by when this node last saw its heartbeat
//! *change* (a revision it had not seen), on this node's own monotonic clock, so clocks
//! that disagree between machines do not matter. The first sighting of a report is
//! dated by the server's timestamp of the entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::records::{NodeReport, ProjectorReport, RECORD_FORMAT, VersionReport, now_ms};
use super::{Deploys, HEARTBEAT_INTERVAL, SeenReport, lock};
use crate::cluster::config::{RETRY_INITIAL, RETRY_MAX};
use crate::config::PromoteMode;

/// The key of a node's heartbeat.
pub fn node_key(node: &str) -> String {
    format!("node.{node}")
}

/// This node's report now.
pub(crate) fn report(deploys: &Deploys) -> NodeReport {
    let cluster = super::super::status::snapshot(&deploys.cluster);
    let errors = lock(&deploys.errors).clone();
    let held = lock(&deploys.held).clone();
    let config = deploys.engine.config();
    let mut projectors: Vec<ProjectorReport> = deploys
        .engine
        .projectors()
        .into_iter()
        // Released here: placed on other nodes.
        .filter(|view| {
            super::placement::placement(deploys, &view.name)
                != super::placement::Placement::Elsewhere
        })
        .map(|view| ProjectorReport {
            promote: promote_name(config.projector(&view.name).promote).to_owned(),
            cluster_error: errors.get(&view.name).cloned(),
            held: held.get(&view.name).cloned(),
            previous_version: view
                .versions
                .iter()
                .find(|version| version.role == crate::engine::control::Role::Previous)
                .map(|version| version.version.clone()),
            active_version: view.active_version.clone(),
            versions: view
                .versions
                .iter()
                .filter_map(|version| {
                    let status = version.status.as_ref()?;
                    Some(VersionReport {
                        version: version.version.clone(),
                        role: version.role.as_str().to_owned(),
                        state: status.state.to_string(),
                        checkpoint: status.checkpoint,
                        events_per_second: status.events_per_second,
                        last_error: status.last_error.clone(),
                    })
                })
                .collect(),
            name: view.name,
        })
        .collect();
    // A projector the cluster asked for that this node does not run at all.
    for (name, error) in errors {
        if !projectors.iter().any(|p| p.name == name) {
            projectors.push(ProjectorReport {
                name: name.clone(),
                active_version: None,
                promote: promote_name(config.projector(&name).promote).to_owned(),
                versions: Vec::new(),
                cluster_error: Some(error),
                held: None,
                previous_version: None,
            });
        }
    }
    NodeReport {
        format: RECORD_FORMAT,
        node: cluster.node,
        at_ms: now_ms(),
        log_head: cluster.mirror_head,
        lag: cluster.lag,
        projectors,
        api_url: deploys.cluster.config.api_url.clone(),
    }
}

/// `auto` or `manual`.
pub(crate) fn promote_name(mode: PromoteMode) -> &'static str {
    match mode {
        PromoteMode::Auto => "auto",
        PromoteMode::Manual => "manual",
    }
}

/// Writes this node's report every [`HEARTBEAT_INTERVAL`].
pub(crate) async fn beat(deploys: Arc<Deploys>, mut stop: watch::Receiver<bool>) {
    let buckets = tokio::select! {
        buckets = deploys.buckets() => buckets,
        _ = stop.changed() => return,
    };
    let key = node_key(&deploys.cluster.config.node);
    let mut failing = false;
    loop {
        let value = serde_json::to_vec(&report(&deploys)).unwrap_or_default();
        match buckets.nodes.put(&key, Bytes::from(value)).await {
            Ok(_) => failing = false,
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(node = %deploys.cluster.config.node, "cannot write the heartbeat: {error}");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Watches every node's heartbeat into [`Deploys::reports`].
pub(crate) async fn watch_nodes(deploys: Arc<Deploys>, mut stop: watch::Receiver<bool>) {
    let mut pause = RETRY_INITIAL;
    loop {
        let buckets = tokio::select! {
            buckets = deploys.buckets() => buckets,
            _ = stop.changed() => return,
        };
        match buckets.nodes.watch_with_history("node.>").await {
            Ok(mut entries) => loop {
                let entry = tokio::select! {
                    entry = entries.next() => entry,
                    _ = stop.changed() => return,
                };
                let entry = match entry {
                    Some(Ok(entry)) => entry,
                    Some(Err(error)) => {
                        tracing::debug!("watching the heartbeats: {error}; watching again");
                        break;
                    }
                    None => break,
                };
                pause = RETRY_INITIAL;
                let node = entry.key.trim_start_matches("node.").to_owned();
                if entry.operation != Operation::Put {
                    lock(&deploys.reports).remove(&node);
                    continue;
                }
                let Ok(report) = serde_json::from_slice::<NodeReport>(&entry.value) else {
                    continue;
                };
                let mut reports = lock(&deploys.reports);
                let changed = match reports.get(&node) {
                    Some(seen) if seen.revision == entry.revision => seen.changed,
                    Some(_) => Instant::now(),
                    None => first_sighting(entry.created.unix_timestamp_nanos()),
                };
                reports.insert(
                    node,
                    SeenReport {
                        report,
                        revision: entry.revision,
                        changed,
                    },
                );
            },
            Err(error) => {
                tracing::debug!("cannot watch the heartbeats: {error}; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// When a heartbeat first seen now was written, on this node's monotonic clock: its
/// age by the server's timestamp against this node's wall clock.
fn first_sighting(created_nanos: i128) -> Instant {
    let age = jiff::Timestamp::now().as_nanosecond() - created_nanos;
    let age = Duration::from_nanos(u64::try_from(age).unwrap_or(0));
    Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
}
