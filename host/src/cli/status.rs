//! `refract status`: every projector version, as a table.
//!
//! With a host running (see `--url`) that accepts the token, the figures come from its
//! API, live. Otherwise they come straight from `control.db`, each read model's
//! checkpoint and the log head; events/s needs a running host and shows `-`.

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use super::client::{Client, ClientError, wire};
use crate::cluster::ClusterStatus;
use crate::data_dir::DataDir;
use crate::engine::{StatusRow, offline_status};

/// Show the status of every projector version.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (one object per version) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Show every node of the cluster and which version each serves, from the
    /// running cluster node at `--url`, and what diverges.
    #[arg(long)]
    pub cluster: bool,
}

/// One version's row: the fields of [`StatusRow`], with the figures a stopped version
/// does not have left empty.
#[derive(Debug, Clone, Serialize)]
struct Row {
    projector: String,
    version: String,
    role: String,
    /// The contract the component implements; known only from a running host.
    contract: Option<String>,
    state: String,
    checkpoint: Option<u64>,
    head: Option<u64>,
    lag: Option<u64>,
    events_per_second: Option<f64>,
    dead_letters: Option<u64>,
    last_error: Option<String>,
}

impl From<StatusRow> for Row {
    fn from(row: StatusRow) -> Row {
        Row {
            projector: row.projector,
            version: row.version,
            role: row.role,
            contract: None,
            state: row.state,
            checkpoint: Some(row.checkpoint),
            head: Some(row.head),
            lag: Some(row.lag),
            events_per_second: row.events_per_second,
            dead_letters: Some(row.dead_letters),
            last_error: row.last_error,
        }
    }
}

/// Runs `refract status`.
///
/// The host at `--url` is asked only with a token (from `--token`, `REFRACT_TOKEN` or
/// this data directory's token file); one that refuses it is some other data
/// directory's host, so the status then comes from disk, as with no host at all.
pub fn run(data: &DataDir, args: &StatusArgs, client: &Client) -> Result<()> {
    if args.cluster {
        return super::cluster_status::run(args.json, client);
    }
    let live = if client.has_token() {
        match client.get::<wire::Projectors>("/v1/projectors", &[]) {
            Ok(answer) => Some(live_rows(answer)),
            Err(ClientError::Unreachable { .. }) => None,
            Err(ClientError::Api { status: 401, .. }) => {
                eprintln!(
                    "note: the host at {} does not accept this data directory's token; \
                     showing the status read from disk",
                    client.url()
                );
                None
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "the host at {} answered, but not with the status (check --url)",
                    client.url()
                )));
            }
        }
    } else {
        None
    };
    let cluster = match &live {
        Some(_) => match client.get::<ClusterStatus>("/v1/cluster", &[]) {
            Ok(status) => Some(describe_cluster(&status)),
            Err(_) => None,
        },
        None => offline_cluster(data),
    };
    let retention = match &live {
        Some(_) => client
            .get::<serde_json::Value>("/v1/retention", &[])
            .ok()
            .and_then(|status| describe_retention(&status)),
        None => None,
    };
    let (rows, rejected) = match live {
        Some(live) => live,
        None => {
            let rows = offline_status(data).with_context(|| {
                format!("cannot read the status of `{}`", data.root().display())
            })?;
            (rows.into_iter().map(Row::from).collect(), Vec::new())
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        for row in &rows {
            serde_json::to_writer(&mut out, row)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        return Ok(());
    }
    if let Some(line) = &cluster {
        println!("{line}");
    }
    if let Some(lines) = &retention {
        println!("{lines}");
    }
    for file in &rejected {
        eprintln!("refused plugin file {}: {}", file.path, file.reason);
    }
    if rows.is_empty() {
        println!(
            "no projectors yet: put a projector component (.wasm) in {} and start `refract run`",
            data.plugins().display()
        );
        return Ok(());
    }
    let header = [
        "PROJECTOR",
        "VERSION",
        "ROLE",
        "CONTRACT",
        "STATE",
        "CHECKPOINT",
        "HEAD",
        "LAG",
        "EVENTS/S",
        "DEAD",
        "LAST ERROR",
    ];
    let number = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let table: Vec<[String; 11]> = rows
        .iter()
        .map(|row| {
            [
                row.projector.clone(),
                row.version.clone(),
                row.role.clone(),
                row.contract
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), short_contract),
                row.state.clone(),
                number(row.checkpoint),
                number(row.head),
                number(row.lag),
                row.events_per_second
                    .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}")),
                number(row.dead_letters),
                row.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!("{}", render_table(&header, &table));
    print_snapshots(data);
    Ok(())
}

/// A contract's package id without the `refract:` namespace: `projector@0.2.0`.
fn short_contract(contract: &str) -> String {
    contract
        .strip_prefix("refract:")
        .unwrap_or(contract)
        .to_owned()
}

/// Retention in a line or two, or `None` when it has no policy and removed nothing.
fn describe_retention(status: &serde_json::Value) -> Option<String> {
    let number = |pointer: &str| {
        status
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let policies = status
        .get("policies")
        .and_then(|p| p.as_array())
        .map_or(0, Vec::len);
    let (archived, deleted) = (
        number("/horizon/archived_events"),
        number("/horizon/deleted_events"),
    );
    if policies == 0 && archived == 0 && deleted == 0 {
        return None;
    }
    let mut line = format!(
        "retention: {policies} policies; archived {archived} events ({} bytes in {} segments), \
         deleted {deleted}, reclaimed {} bytes; events before offset {} may be gone from events.db",
        number("/archive_bytes"),
        number("/archive_segments"),
        number("/horizon/reclaimed_bytes"),
        number("/truncated_before"),
    );
    if let Some(holder) = status.pointer("/floor/held_by").and_then(|h| h.as_str()) {
        line.push_str(&format!(
            "; held at offset {} by {holder}",
            number("/floor/offset")
        ));
    }
    if let Some(error) = status.get("last_error").and_then(|e| e.as_str()) {
        line.push_str(&format!("\nretention: last pass failed: {error}"));
    }
    let partial: Vec<&str> = status
        .get("partial_history")
        .and_then(|p| p.as_array())
        .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !partial.is_empty() {
        line.push_str(&format!(
            "\nretention: built from partial history (deleted events missing): {}",
            partial.join(", ")
        ));
    }
    Some(line)
}

/// One line per version with read-model snapshots, read from the data directory.
fn print_snapshots(data: &DataDir) {
    let store = crate::snapshots::store::Store::new(data);
    for projector in store.projectors() {
        for summary in store.summaries(&projector) {
            println!(
                "snapshots of {projector} {}: {}, newest at checkpoint {}, {} bytes",
                summary.version, summary.count, summary.newest_checkpoint, summary.bytes
            );
        }
    }
}

/// One line on a running node's place in the cluster.
fn describe_cluster(status: &ClusterStatus) -> String {
    let stream_head = status
        .stream_head
        .map_or_else(|| "unknown".to_owned(), |head| head.to_string());
    let lag = status
        .lag
        .map_or_else(|| "unknown".to_owned(), |lag| lag.to_string());
    let mut line = format!(
        "cluster: node {}, NATS {} ({}), mirror {} at JetStream sequence {} of {stream_head} (lag {lag}), log head offset {}",
        status.node,
        status.nats,
        status.urls.join(","),
        status.mirror.as_str(),
        status.mirror_position,
        status.mirror_head
    );
    if let Some(error) = &status.last_error {
        line.push_str(&format!("; last problem: {error}"));
    }
    line
}

/// With no host running: where the data directory's mirror stands, if it is one.
fn offline_cluster(data: &DataDir) -> Option<String> {
    if !data.events_db().is_file() {
        return None;
    }
    let log =
        crate::log::EventLog::open(&data.events_db(), crate::log::LogOptions::default()).ok()?;
    let position = log.mirror_position().ok()??;
    Some(format!(
        "cluster: a node's mirror of {} at JetStream sequence {}, log head offset {} (no host running: the stream's head is not known)",
        position.source, position.position, position.head
    ))
}

/// The rows of a running host's answer, one per version.
fn live_rows(answer: wire::Projectors) -> (Vec<Row>, Vec<wire::Rejected>) {
    let mut rows = Vec::new();
    for projector in answer.projectors {
        for version in projector.versions {
            let status = version.status.as_ref();
            rows.push(Row {
                projector: projector.name.clone(),
                role: version.role.clone(),
                contract: version.contract.clone(),
                state: status.map_or_else(|| "stopped".to_owned(), |s| s.state.clone()),
                checkpoint: status.map(|s| s.checkpoint),
                head: status.map(|s| s.head),
                lag: status.map(wire::Status::lag),
                events_per_second: status.map(|s| s.events_per_second),
                dead_letters: status.map(|s| s.dead_letters),
                last_error: status.and_then(|s| s.last_error.clone()),
                version: version.version,
            });
        }
    }
    (rows, answer.rejected)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub(crate) fn render_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.to_vec()).collect();
    render_rows(&header, &rows)
}

/// [`render_table`] for a number of columns known only at run time.
pub(crate) fn render_rows(header: &[String], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate().take(columns) {
            if index + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align() {
        let table = render_table(
            &["A", "LONGER", "LAST"],
            &[
                ["x".into(), "y".into(), "z z".into()],
                ["wide cell".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(
            table,
            "A          LONGER  LAST\nx          y       z z\nwide cell\n"
        );
    }
}
