//! The cluster view: every node's heartbeat and every projector across the nodes,
//! with what diverges. `GET /v1/cluster/projectors` serves it, `refract status
//! --cluster` prints it, and `/health` reports its divergence.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::records::{Action, ProjectorReport};
use super::{CONVERGE_GRACE, Deploys, UNREACHABLE_AFTER, lock};

/// The cluster as one node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// A node whose heartbeat has not changed for this long is `unreachable`.
    pub unreachable_after_ms: u64,
    /// Every node that ever wrote a heartbeat, by name.
    pub nodes: Vec<NodeView>,
    /// Every projector any node runs or the cluster asks for, by name.
    pub projectors: Vec<ClusterProjector>,
    /// What diverges, one sentence each; empty when the cluster agrees.
    pub divergence: Vec<String>,
}

/// One node, from its heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// Its name.
    pub node: String,
    /// `up`, or `unreachable` when its heartbeat stopped.
    pub state: String,
    /// Milliseconds since its heartbeat last changed.
    pub heartbeat_age_ms: u64,
    /// Its log head.
    pub log_head: u64,
    /// Its mirror's lag, if known.
    pub lag: Option<u64>,
    /// Where its HTTP API is reached (`cluster.api_url`).
    #[serde(default)]
    pub api_url: Option<String>,
}

/// One projector across the nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterProjector {
    /// The projector.
    pub name: String,
    /// The version the cluster asks every node to serve.
    pub desired_version: Option<String>,
    /// What brought it in: `deploy`, `rollback` or `abort`.
    pub desired_action: Option<String>,
    /// The promote mode recorded with the desired version.
    pub promote: Option<String>,
    /// Which nodes serve which version (reachable nodes only).
    pub serving: BTreeMap<String, Vec<String>>,
    /// Each node's view of the projector.
    pub nodes: Vec<NodeProjector>,
    /// Placement: the number of nodes it runs on (`projectors.<name>.nodes`), if not
    /// all.
    pub placed_on: Option<usize>,
    /// Placement: who holds its leases.
    #[serde(default)]
    pub leases: Vec<super::placement::LeaseView>,
}

/// One projector on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeProjector {
    /// The node.
    pub node: String,
    /// `up` or `unreachable`, as in [`NodeView::state`].
    pub node_state: String,
    /// The version serving its queries there.
    pub active_version: Option<String>,
    /// Its active version's state and checkpoint.
    pub active_state: Option<String>,
    /// The active version's checkpoint.
    pub checkpoint: Option<u64>,
    /// Events per second of the active version.
    pub events_per_second: Option<f64>,
    /// A shadow replaying there, its state and checkpoint.
    pub shadow_version: Option<String>,
    /// The shadow's state.
    pub shadow_state: Option<String>,
    /// The shadow's checkpoint.
    pub shadow_checkpoint: Option<u64>,
    /// The node's own promote mode for the projector.
    pub promote: String,
    /// Why the node could not apply the desired version, if it could not.
    pub cluster_error: Option<String>,
    /// The last error of any of its versions.
    pub last_error: Option<String>,
    /// Its hold for a coordinated swap in progress.
    pub held: Option<super::records::HeldFor>,
    /// Its last swap record.
    pub last_swap: Option<super::records::NodeSwap>,
    /// The version a rollback returns to there.
    #[serde(default)]
    pub previous_version: Option<String>,
}

/// The view now.
pub(crate) fn build(deploys: &Deploys) -> ClusterView {
    let now = Instant::now();
    let reports = lock(&deploys.reports).clone();
    let desired = lock(&deploys.desired).clone();
    let swaps = lock(&deploys.swaps).clone();
    let mut divergence = Vec::new();
    let mut nodes = Vec::new();
    let mut reachable = BTreeSet::new();
    for (name, seen) in &reports {
        let age = now.saturating_duration_since(seen.changed);
        let up = age < UNREACHABLE_AFTER;
        if up {
            reachable.insert(name.clone());
        } else {
            divergence.push(format!(
                "node {name} is unreachable: no heartbeat for {}s (a node is unreachable after {}s without one)",
                age.as_secs(),
                UNREACHABLE_AFTER.as_secs()
            ));
        }
        nodes.push(NodeView {
            node: name.clone(),
            state: if up { "up" } else { "unreachable" }.to_owned(),
            heartbeat_age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            log_head: seen.report.log_head,
            lag: seen.report.lag,
            api_url: seen.report.api_url.clone(),
        });
    }
    let mut names: BTreeSet<String> = desired.keys().cloned().collect();
    for seen in reports.values() {
        names.extend(seen.report.projectors.iter().map(|p| p.name.clone()));
    }
    let mut projectors = Vec::new();
    for name in names {
        let wanted = desired.get(&name);
        let mut serving: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut per_node = Vec::new();
        let mut modes = BTreeSet::new();
        for (node, seen) in &reports {
            let Some(report) = seen.report.projectors.iter().find(|p| p.name == name) else {
                continue;
            };
            let up = reachable.contains(node);
            let mut view = node_projector(node, up, report);
            view.last_swap = swaps.get(&(name.clone(), node.clone())).cloned();
            if let Some(swap) = &view.last_swap
                && let Some(missed) = swap.missed_offset
                && Some(&swap.version) == view.active_version.as_ref()
            {
                divergence.push(format!(
                    "node {node}: projector `{name}` swapped to {} at offset {}, not at the promote offset {missed} (it was down during the promote)",
                    swap.version, swap.offset
                ));
            }
            if up {
                if let Some(version) = &view.active_version {
                    serving
                        .entry(version.clone())
                        .or_default()
                        .push(node.clone());
                }
                modes.insert(view.promote.clone());
                if let Some(error) = &view.cluster_error {
                    divergence.push(format!("node {node}: projector `{name}`: {error}"));
                }
                for (version, state) in [
                    (&view.active_version, &view.active_state),
                    (&view.shadow_version, &view.shadow_state),
                ] {
                    if let (Some(version), Some(state)) = (version, state)
                        && is_stuck(state)
                    {
                        divergence.push(format!(
                            "node {node}: projector `{name}` version {version} is stuck: {state}"
                        ));
                    }
                }
            }
            per_node.push(view);
        }
        if modes.len() > 1 {
            divergence.push(format!(
                "projector `{name}` has different promote modes on the nodes ({}): set projectors.{name}.promote the same in every node's refract.toml",
                modes.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(wanted) = wanted
            && now.saturating_duration_since(wanted.since) > CONVERGE_GRACE
            && serving.len() > 1
        {
            divergence.push(format!(
                "projector `{name}`: the nodes serve different versions ({}) more than {}s after version {} was desired",
                serving
                    .iter()
                    .map(|(version, nodes)| format!("{version} on {}", nodes.join(",")))
                    .collect::<Vec<_>>()
                    .join("; "),
                CONVERGE_GRACE.as_secs(),
                wanted.record.version
            ));
        }
        let placed_on = super::placement::wanted(deploys, &name);
        let leases = super::placement::lease_views(deploys, &name);
        if let Some(wanted) = placed_on {
            let holding = leases
                .iter()
                .filter(|lease| {
                    lease.state == "held"
                        && lease.node.as_ref().is_some_and(|n| reachable.contains(n))
                })
                .count();
            if holding < wanted.min(reachable.len()) {
                divergence.push(format!(
                    "projector `{name}` runs on {holding} of the {wanted} nodes it is placed on (projectors.{name}.nodes): leases {}; an expired or free lease moves to a live node",
                    leases
                        .iter()
                        .map(|l| format!("{} {} ({})", l.slot, l.node.as_deref().unwrap_or("-"), l.state))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        projectors.push(ClusterProjector {
            placed_on,
            leases,
            name,
            desired_version: wanted.map(|w| w.record.version.clone()),
            desired_action: wanted.map(|w| {
                match &w.record.action {
                    Action::Deploy => "deploy",
                    Action::Rollback => "rollback",
                    Action::Abort { .. } => "abort",
                }
                .to_owned()
            }),
            promote: wanted.map(|w| w.record.promote.clone()),
            serving,
            nodes: per_node,
        });
    }
    ClusterView {
        node: deploys.cluster.config.node.clone(),
        unreachable_after_ms: u64::try_from(UNREACHABLE_AFTER.as_millis()).unwrap_or(u64::MAX),
        nodes,
        projectors,
        divergence,
    }
}

fn node_projector(node: &str, up: bool, report: &ProjectorReport) -> NodeProjector {
    let active = report.versions.iter().find(|v| v.role == "active");
    let shadow = report.versions.iter().find(|v| v.role == "shadow");
    NodeProjector {
        node: node.to_owned(),
        node_state: if up { "up" } else { "unreachable" }.to_owned(),
        active_version: report.active_version.clone(),
        active_state: active.map(|v| v.state.clone()),
        checkpoint: active.map(|v| v.checkpoint),
        events_per_second: active.map(|v| v.events_per_second),
        shadow_version: shadow.map(|v| v.version.clone()),
        shadow_state: shadow.map(|v| v.state.clone()),
        shadow_checkpoint: shadow.map(|v| v.checkpoint),
        promote: report.promote.clone(),
        cluster_error: report.cluster_error.clone(),
        last_error: report.versions.iter().find_map(|v| v.last_error.clone()),
        held: report.held.clone(),
        last_swap: None,
        previous_version: report.previous_version.clone(),
    }
}

/// A version state that is not doing its job (see `State::is_healthy`).
fn is_stuck(state: &str) -> bool {
    !(state == "live" || state == "catching-up" || state == "retired")
}
