//! `refract status --cluster`: every node and every projector across the cluster, from
//! the running node's `GET /v1/cluster/projectors`, and what diverges.

use anyhow::{Context as _, Result};

use super::client::Client;
use super::status::render_table;
use crate::cluster::deploys::view::ClusterView;

/// Prints the cluster view (as JSON with `json`).
pub fn run(json: bool, client: &Client) -> Result<()> {
    let view: ClusterView = client.get("/v1/cluster/projectors", &[]).with_context(|| {
        format!(
            "cannot read the cluster view from the node at {} (is it running with --cluster?)",
            client.url()
        )
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let number = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let nodes: Vec<[String; 5]> = view
        .nodes
        .iter()
        .map(|node| {
            [
                node.node.clone(),
                node.state.clone(),
                format!("{:.1}s", node.heartbeat_age_ms as f64 / 1000.0),
                node.log_head.to_string(),
                number(node.lag),
            ]
        })
        .collect();
    println!("cluster seen from node {}:", view.node);
    print!(
        "{}",
        render_table(&["NODE", "STATE", "HEARTBEAT", "LOG HEAD", "LAG"], &nodes)
    );
    let mut rows: Vec<[String; 9]> = Vec::new();
    for projector in &view.projectors {
        for node in &projector.nodes {
            rows.push([
                projector.name.clone(),
                projector
                    .desired_version
                    .clone()
                    .unwrap_or_else(|| "-".into()),
                node.node.clone(),
                node.active_version.clone().unwrap_or_else(|| "-".into()),
                format!(
                    "{} {}",
                    node.active_state.as_deref().unwrap_or("-"),
                    number(node.checkpoint)
                ),
                node.shadow_version.clone().unwrap_or_else(|| "-".into()),
                format!(
                    "{} {}",
                    node.shadow_state.as_deref().unwrap_or("-"),
                    number(node.shadow_checkpoint)
                ),
                node.events_per_second
                    .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}")),
                node.cluster_error
                    .clone()
                    .or_else(|| node.last_error.clone())
                    .unwrap_or_default(),
            ]);
        }
    }
    println!();
    print!(
        "{}",
        render_table(
            &[
                "PROJECTOR",
                "DESIRED",
                "NODE",
                "ACTIVE",
                "STATE CHECKPOINT",
                "SHADOW",
                "SHADOW STATE",
                "EVENTS/S",
                "ERROR",
            ],
            &rows
        )
    );
    let leases: Vec<[String; 5]> = view
        .projectors
        .iter()
        .flat_map(|projector| {
            projector.leases.iter().map(|lease| {
                [
                    projector.name.clone(),
                    format!("{} of {}", lease.slot, projector.placed_on.unwrap_or(0)),
                    lease.node.clone().unwrap_or_else(|| "-".into()),
                    lease.state.clone(),
                    format!("{:.1}s", lease.renewed_ms_ago as f64 / 1000.0),
                ]
            })
        })
        .collect();
    if !leases.is_empty() {
        println!(
            "
placement (projectors.<name>.nodes):"
        );
        print!(
            "{}",
            render_table(
                &["PROJECTOR", "LEASE", "HELD BY", "STATE", "RENEWED"],
                &leases
            )
        );
    }
    if view.divergence.is_empty() {
        println!("\nno divergence: every reachable node agrees");
    } else {
        println!("\ndivergence:");
        for reason in &view.divergence {
            println!("  - {reason}");
        }
    }
    Ok(())
}
