//! `refract diff <name> --node a --node b`: the same projector's read model on two
//! cluster nodes, compared table by table with the code that compares two versions
//! (`refract::engine::diff::compare`). Each node sends a consistent copy of its active
//! read model (`GET /v1/projectors/{name}/read-model`), downloaded into a temporary
//! folder that is deleted afterwards.

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::client::Client;
use super::diff::{DiffArgs, print_tables};
use crate::api::read_model::{CHECKPOINT_HEADER, VERSION_HEADER};
use crate::cluster::deploys::view::ClusterView;
use crate::engine::diff::{TableDiff, compare};

/// One side of the comparison.
#[derive(Debug, Serialize)]
struct NodeSide {
    /// The node's name, or the URL given.
    node: String,
    /// Its API.
    url: String,
    /// The version its read model is of.
    version: String,
    /// The offset its copy holds.
    checkpoint: u64,
}

/// The comparison, as `--json` prints it.
#[derive(Debug, Serialize)]
struct NodesDiff {
    projector: String,
    base: NodeSide,
    other: NodeSide,
    tables: Vec<TableDiff>,
}

/// Runs `refract diff <name> --node a --node b`; `client` reaches the node of `--url`.
pub fn run(args: &DiffArgs, client: &Client) -> Result<()> {
    let [first, second] = args.nodes.as_slice() else {
        bail!(
            "--node compares two nodes: give it twice, e.g. --node n1 --node n2 (node names or API URLs)"
        );
    };
    let mut view: Option<ClusterView> = None;
    let mut url_of = |node: &str| -> Result<String> {
        if node.starts_with("http://") || node.starts_with("https://") {
            return Ok(node.to_owned());
        }
        if view.is_none() {
            view = Some(client.get("/v1/cluster/projectors", &[]).with_context(|| {
                format!(
                    "cannot read the cluster view from {} to find node {node}'s API (is it a cluster node?); or give its URL",
                    client.url()
                )
            })?);
        }
        let known = view
            .as_ref()
            .map(|v| v.nodes.as_slice())
            .unwrap_or_default();
        let found = known.iter().find(|n| n.node == node).with_context(|| {
            format!(
                "the cluster knows no node `{node}` (it knows {}); give a node name or its API URL",
                known
                    .iter()
                    .map(|n| n.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        found.api_url.clone().with_context(|| {
            format!("node {node} publishes no API address (cluster.api_url); give its URL instead")
        })
    };
    let urls = [url_of(first)?, url_of(second)?];
    let folder = tempfile::tempdir().context("cannot make a temporary folder for the copies")?;
    let mut sides = Vec::new();
    for (index, (node, url)) in [first, second].into_iter().zip(urls).enumerate() {
        let path = folder.path().join(format!("{index}.db"));
        let headers = client
            .for_url(&url)
            .download(&format!("/v1/projectors/{}/read-model", args.name), &path)
            .with_context(|| {
                format!(
                    "cannot copy `{}`'s read model from node {node} at {url}",
                    args.name
                )
            })?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        sides.push((
            NodeSide {
                node: node.clone(),
                url,
                version: header(VERSION_HEADER),
                checkpoint: header(CHECKPOINT_HEADER).parse().unwrap_or(0),
            },
            path,
        ));
    }
    let (other, other_path) = sides.pop().context("two copies")?;
    let (base, base_path) = sides.pop().context("two copies")?;
    let tables =
        compare(&base_path, &other_path, args.sample).context("cannot compare the two copies")?;
    let compared = NodesDiff {
        projector: args.name.clone(),
        base,
        other,
        tables,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&compared)?);
        return Ok(());
    }
    let label = |side: &NodeSide| format!("{} {}@{}", side.node, side.version, side.checkpoint);
    let (base_label, other_label) = (label(&compared.base), label(&compared.other));
    println!("{}: {base_label} vs {other_label}", args.name);
    print_tables(&compared.tables, &base_label, &other_label);
    if compared.base.checkpoint != compared.other.checkpoint {
        println!(
            "\nthe copies hold different offsets ({} and {}): a node that lags has not projected every event yet",
            compared.base.checkpoint, compared.other.checkpoint
        );
    }
    Ok(())
}
