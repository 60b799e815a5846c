//! `refract snapshot <name>` (take one now, or `--list` them) and `refract restore <name>
//! --from <version>/<checkpoint>`, on the running host.

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use super::client::{Client, ClientError};
use super::status::render_rows;

/// Take a snapshot of a projector's read model, or list its snapshots.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The projector's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// List the snapshots instead of taking one.
    #[arg(long)]
    pub list: bool,
    /// Print the host's JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// Restore a projector's read model from a snapshot, then catch it up.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The projector's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The snapshot, as `refract snapshot <name> --list` shows it: `<version>/<checkpoint>`.
    #[arg(long, value_name = "SNAPSHOT")]
    pub from: String,
}

fn needs_host(command: &str, error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Unreachable { url, .. } => anyhow::anyhow!(
            "`refract {command}` needs a running host, and none answers at {url}; start one \
             with `refract run` (or pass --url)"
        ),
        error => error.into(),
    }
}

/// Runs `refract snapshot`.
pub fn run_snapshot(client: &Client, args: &SnapshotArgs) -> Result<()> {
    let path = format!("/v1/projectors/{}/snapshots", args.name);
    let answer: Value = if args.list {
        client.get(&path, &[])
    } else {
        client.post_json(&path, &serde_json::json!({}))
    }
    .map_err(|error| needs_host("snapshot", error))?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    if !args.list {
        println!(
            "snapshot {} of `{}`: {} bytes, sha256 {}",
            answer["id"].as_str().unwrap_or_default(),
            args.name,
            answer["bytes"],
            answer["sha256"].as_str().unwrap_or_default()
        );
        return Ok(());
    }
    let header: Vec<String> = ["ID", "CHECKPOINT", "BYTES", "REASON", "TAKEN AT"]
        .map(str::to_owned)
        .to_vec();
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = answer["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            ["id", "checkpoint", "bytes", "reason", "taken_at"]
                .iter()
                .map(|key| text(&entry[key]))
                .collect()
        })
        .collect();
    print!("{}", render_rows(&header, &rows));
    Ok(())
}

/// Runs `refract restore`.
pub fn run_restore(client: &Client, args: &RestoreArgs) -> Result<()> {
    let path = format!("/v1/projectors/{}/restore", args.name);
    let answer: Value = client
        .post_json(&path, &serde_json::json!({"from": args.from}))
        .map_err(|error| needs_host("restore", error))?;
    println!(
        "restoring `{}` version {} from snapshot {}; it serves again once caught up (`refract status`)",
        args.name,
        answer["version"].as_str().unwrap_or_default(),
        args.from
    );
    Ok(())
}
