//! Placement: a projector with `nodes = N` in `[projectors.<name>]` runs on N nodes,
//! not on all of them.
//!
//! # Leases
//! The `<stream>-leases` key-value bucket holds N slots per placed projector,
//! `<projector>.0` to `<projector>.<N-1>`, each a [`Lease`] naming the node that holds
//! it. Every [`HEARTBEAT_INTERVAL`] each node reads the slots and
//! - renews the slot it holds: an update on the revision it last wrote
//!   (compare-and-swap), so a node that lost its slot finds out on the spot;
//! - holds none: takes a free slot, or one whose revision has not changed for
//!   `cluster.lease_timeout_ms` on this node's own clock (its holder missed its
//!   renewals: down, or cut off from NATS), again by compare-and-swap on the revision
//!   it read, so of several nodes trying only one wins.
//!
//! A node holding a slot runs the projector (the cluster's desired version, deployed
//! as any other); one that holds none releases it ([`Engine::release`]) and answers
//! its queries by proxying them to a holder ([`query_route`]). A projector that moves
//! to a node starts from that node's newest snapshot of the version, where it has one,
//! else from offset 1. A node shutting down gives its slots up, so they move at once.
//!
//! Running a projector on more nodes than asked for, for a moment, is harmless: each
//! node's read model is derived from its own mirror of the log. What leases bound is
//! the time a placed projector runs nowhere: about the lease timeout after its holder
//! dies, plus the replay.
//!
//! [`Engine::release`]: crate::engine::Engine::release

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::records::{Lease, RECORD_FORMAT, now_ms};
use super::{Deploys, HEARTBEAT_INTERVAL, UNREACHABLE_AFTER, lock};

/// How long a node shutting down waits for NATS to take its given-up leases.
const GIVE_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// The key of one slot of a placed projector's leases.
pub fn lease_key(projector: &str, slot: usize) -> String {
    format!("{projector}.{slot}")
}

/// One slot as this node last read it.
#[derive(Debug, Clone)]
pub(crate) struct SeenLease {
    /// Its holder.
    pub(crate) node: Option<String>,
    /// Its revision (0: never written).
    pub(crate) revision: u64,
    /// When this node saw the revision change, on its own clock.
    pub(crate) changed: Instant,
}

/// Where a projector runs, as far as this node is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Not placed: every node runs it.
    Everywhere,
    /// Placed, and this node holds one of its leases.
    Here,
    /// Placed on other nodes.
    Elsewhere,
    /// Placed, and this node has not read its leases yet.
    Undecided,
}

/// The number of nodes `projector` should run on, if it is placed.
pub(crate) fn wanted(deploys: &Deploys, projector: &str) -> Option<usize> {
    deploys.engine.config().projector(projector).nodes
}

/// Where `projector` runs.
pub(crate) fn placement(deploys: &Deploys, projector: &str) -> Placement {
    if wanted(deploys, projector).is_none() {
        return Placement::Everywhere;
    }
    match lock(&deploys.placed_here).get(projector) {
        Some(true) => Placement::Here,
        Some(false) => Placement::Elsewhere,
        None => Placement::Undecided,
    }
}

/// Takes, renews and gives up leases, every [`HEARTBEAT_INTERVAL`].
pub(crate) async fn run(deploys: Arc<Deploys>, mut stop: watch::Receiver<bool>) {
    let buckets = tokio::select! {
        buckets = deploys.buckets() => buckets,
        _ = stop.changed() => return,
    };
    loop {
        let placed: Vec<(String, usize)> = lock(&deploys.desired)
            .keys()
            .filter_map(|name| Some((name.clone(), wanted(&deploys, name)?)))
            .collect();
        for (projector, wanted) in placed {
            let Some(here) = round(&deploys, &buckets.leases, &projector, wanted).await else {
                continue;
            };
            let before = lock(&deploys.placed_here).insert(projector.clone(), here);
            if before != Some(here) {
                tracing::info!(node = %deploys.cluster.config.node, %projector, here, "placement: {}", if here { "this node runs it" } else { "other nodes run it" });
                deploys.changed.notify_one();
            }
        }
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = stop.changed() => {
                give_up(&deploys, &buckets.leases).await;
                return;
            }
        }
    }
}

/// One round for one projector: reads its slots, renews this node's or takes one.
/// Whether this node holds one now; `None` when NATS did not answer (nothing changes).
async fn round(
    deploys: &Deploys,
    leases: &kv::Store,
    projector: &str,
    wanted: usize,
) -> Option<bool> {
    let me = deploys.cluster.config.node.as_str();
    let timeout = deploys.cluster.config.lease_timeout;
    let previous = lock(&deploys.leases)
        .get(projector)
        .cloned()
        .unwrap_or_default();
    let now = Instant::now();
    let mut seen = Vec::with_capacity(wanted);
    for slot in 0..wanted {
        let entry = match leases.entry(lease_key(projector, slot)).await {
            Ok(entry) => entry,
            Err(error) => {
                tracing::debug!(%projector, "cannot read the leases: {error}");
                return None;
            }
        };
        let (node, revision) = match entry {
            Some(entry) if entry.operation == Operation::Put => (
                serde_json::from_slice::<Lease>(&entry.value)
                    .ok()
                    .and_then(|lease| lease.node),
                entry.revision,
            ),
            Some(entry) => (None, entry.revision),
            None => (None, 0),
        };
        let changed = match previous.get(slot) {
            Some(before) if before.revision == revision => before.changed,
            _ => now,
        };
        seen.push(SeenLease {
            node,
            revision,
            changed,
        });
    }
    let value = |node: Option<&str>| {
        Bytes::from(
            serde_json::to_vec(&Lease {
                format: RECORD_FORMAT,
                projector: projector.to_owned(),
                node: node.map(str::to_owned),
                at_ms: now_ms(),
            })
            .unwrap_or_default(),
        )
    };
    let mut holds = false;
    if let Some(slot) = seen.iter().position(|s| s.node.as_deref() == Some(me)) {
        match leases
            .update(
                lease_key(projector, slot),
                value(Some(me)),
                seen[slot].revision,
            )
            .await
        {
            Ok(revision) => {
                seen[slot].revision = revision;
                seen[slot].changed = now;
                holds = true;
            }
            // Another node took it over (this node missed its renewals).
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(node = %me, %projector, slot, "placement: lost the lease ({error})");
            }
            // NATS did not answer: no change until it does; the lease expires
            // meanwhile only if this lasts the lease timeout.
            Err(error) => {
                tracing::debug!(node = %me, %projector, slot, "placement: cannot renew the lease: {error}");
                lock(&deploys.leases).insert(projector.to_owned(), seen);
                return None;
            }
        }
    } else {
        let free = seen.iter().position(|s| s.node.is_none());
        let expired = seen
            .iter()
            .position(|s| now.saturating_duration_since(s.changed) >= timeout);
        if let Some(slot) = free.or(expired) {
            let key = lease_key(projector, slot);
            let taken = if seen[slot].revision == 0 {
                leases
                    .create(&key, value(Some(me)))
                    .await
                    .map_err(|e| e.to_string())
            } else {
                leases
                    .update(&key, value(Some(me)), seen[slot].revision)
                    .await
                    .map_err(|e| e.to_string())
            };
            match taken {
                Ok(revision) => {
                    tracing::info!(node = %me, %projector, slot, from = ?seen[slot].node, "placement: took the lease");
                    seen[slot] = SeenLease {
                        node: Some(me.to_owned()),
                        revision,
                        changed: now,
                    };
                    holds = true;
                }
                // Another node was faster; its lease shows on the next round.
                Err(error) => {
                    tracing::debug!(%projector, slot, "placement: lease not taken: {error}");
                }
            }
        }
    }
    lock(&deploys.leases).insert(projector.to_owned(), seen);
    Some(holds)
}

/// Gives up this node's leases (a node shutting down), so they move at once.
async fn give_up(deploys: &Deploys, leases: &kv::Store) {
    let me = deploys.cluster.config.node.clone();
    let held: Vec<(String, usize, u64)> = lock(&deploys.leases)
        .iter()
        .flat_map(|(projector, slots)| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, seen)| seen.node.as_deref() == Some(me.as_str()))
                .map(|(slot, seen)| (projector.clone(), slot, seen.revision))
        })
        .collect();
    let give = async {
        for (projector, slot, revision) in held {
            let lease = Lease {
                format: RECORD_FORMAT,
                projector: projector.clone(),
                node: None,
                at_ms: now_ms(),
            };
            let value = Bytes::from(serde_json::to_vec(&lease).unwrap_or_default());
            // On the revision this node wrote: a lease taken over meanwhile stays.
            let _ = leases
                .update(lease_key(&projector, slot), value, revision)
                .await;
        }
    };
    let _ = tokio::time::timeout(GIVE_UP_TIMEOUT, give).await;
}

/// Stops running `projector` here if this node does.
pub(crate) async fn release(deploys: &Deploys, projector: &str) {
    let runs = deploys
        .engine
        .projector(projector)
        .is_some_and(|view| view.versions.iter().any(|v| v.status.is_some()));
    if !runs {
        return;
    }
    let engine = Arc::clone(&deploys.engine);
    let name = projector.to_owned();
    match tokio::task::spawn_blocking(move || engine.release(&name)).await {
        Ok(Ok(())) => deploys.set_error(projector, None),
        Ok(Err(error)) => deploys.set_error(
            projector,
            Some(format!(
                "cannot stop running it here (placed on other nodes): {error}"
            )),
        ),
        Err(error) => deploys.set_error(projector, Some(error.to_string())),
    }
}

/// Where a query for a projector goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRoute {
    /// This node answers it.
    Local,
    /// `node` runs it: proxy the query to its API at `url`.
    Proxy {
        /// The node.
        node: String,
        /// Its API.
        url: String,
    },
    /// No live node serves it now; why, and what to do.
    Nowhere(String),
}

/// Where a query for `projector` goes from this node: here unless the projector is
/// placed on other nodes, then to a live holder of one of its leases that serves it.
pub(crate) fn query_route(deploys: &Deploys, projector: &str) -> QueryRoute {
    if placement(deploys, projector) != Placement::Elsewhere {
        return QueryRoute::Local;
    }
    let leases = lock(&deploys.leases)
        .get(projector)
        .cloned()
        .unwrap_or_default();
    let reports = lock(&deploys.reports).clone();
    let mut why = Vec::new();
    for lease in &leases {
        let Some(node) = &lease.node else { continue };
        let Some(seen) = reports.get(node) else {
            why.push(format!("{node}: no heartbeat seen"));
            continue;
        };
        if seen.changed.elapsed() >= UNREACHABLE_AFTER {
            why.push(format!("{node}: unreachable"));
            continue;
        }
        let serves = seen
            .report
            .projectors
            .iter()
            .any(|p| p.name == projector && p.active_version.is_some());
        match (&seen.report.api_url, serves) {
            (Some(url), true) => {
                return QueryRoute::Proxy {
                    node: node.clone(),
                    url: url.clone(),
                };
            }
            (None, _) => why.push(format!("{node}: publishes no API address")),
            (_, false) => why.push(format!("{node}: no active version yet (replaying)")),
        }
    }
    if why.is_empty() {
        why.push("no node holds its lease".to_owned());
    }
    QueryRoute::Nowhere(format!(
        "projector `{projector}` runs on other nodes (projectors.{projector}.nodes) and none serves it now ({}); a lease unrenewed for {}s moves to a live node, which replays it: retry shortly",
        why.join("; "),
        deploys.cluster.config.lease_timeout.as_secs()
    ))
}

/// One lease in the cluster view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseView {
    /// The slot (`0` to `nodes - 1`).
    pub slot: usize,
    /// The node holding it, if any.
    pub node: Option<String>,
    /// `held`, `expired` (unrenewed for the lease timeout: another node takes it) or
    /// `free`.
    pub state: String,
    /// Milliseconds since this node saw it renewed.
    pub renewed_ms_ago: u64,
}

/// The leases of `projector` as this node last read them.
pub(crate) fn lease_views(deploys: &Deploys, projector: &str) -> Vec<LeaseView> {
    let timeout = deploys.cluster.config.lease_timeout;
    let leases: BTreeMap<String, Vec<SeenLease>> = lock(&deploys.leases).clone();
    leases
        .get(projector)
        .map(|slots| {
            slots
                .iter()
                .enumerate()
                .map(|(slot, seen)| {
                    let age = seen.changed.elapsed();
                    LeaseView {
                        slot,
                        node: seen.node.clone(),
                        state: match &seen.node {
                            None => "free",
                            Some(_) if age >= timeout => "expired",
                            Some(_) => "held",
                        }
                        .to_owned(),
                        renewed_ms_ago: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}
