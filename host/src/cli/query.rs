//! `refract query <name> "SELECT ..."`: one read-only query against a projector's
//! active read model on the running host; a table, or JSON with `--json`.

use std::io::Write as _;

use anyhow::Result;
use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::client::{Client, ClientError};
use super::status::render_rows;

/// Query a projector's read model.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The projector's name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// One read-only SQL statement; `?1`, `?2`, ... take the `--param` values.
    #[arg(value_name = "SQL")]
    pub sql: String,

    /// A parameter, in order: JSON (`42`, `2.5`, `null`, `"text"`), or else taken as text.
    #[arg(long = "param", value_name = "VALUE", allow_hyphen_values = true)]
    pub params: Vec<String>,

    /// Answer from the read model as it was at this log offset, or at this instant (RFC
    /// 3339, such as `2026-11-25T23:00:00Z`): made from the newest snapshot before it
    /// and a replay of the log up to it.
    #[arg(long, value_name = "OFFSET|TIME")]
    pub at: Option<String>,

    /// Print the host's JSON answer (`columns`, `rows`, `checkpoint`, ...) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The parts of the answer the table needs.
#[derive(Debug, Deserialize)]
struct Answer {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    checkpoint: u64,
    version: String,
    truncated: bool,
}

/// Runs `refract query`.
pub fn run(client: &Client, args: &QueryArgs) -> Result<()> {
    let params: Vec<Value> = args
        .params
        .iter()
        .map(|text| serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
        .collect();
    let mut body = serde_json::json!({"sql": args.sql, "params": params});
    match args.at.as_deref().map(|at| (at, at.parse::<u64>())) {
        Some((_, Ok(offset))) => body["at_offset"] = offset.into(),
        Some((time, Err(_))) => body["at_time"] = time.into(),
        None => {}
    }
    let path = format!("/v1/projectors/{}/query", args.name);
    let answer: Value = match client.post_json(&path, &body) {
        Ok(answer) => answer,
        Err(ClientError::Unreachable { url, .. }) => anyhow::bail!(
            "`refract query` needs a running host, and none answers at {url}; start one with \
             `refract run` (or pass --url)"
        ),
        Err(error) => return Err(error.into()),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &answer)?;
        writeln!(out)?;
        return Ok(());
    }
    let answer: Answer = serde_json::from_value(answer)?;
    let rows: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|row| row.iter().map(cell).collect())
        .collect();
    write!(out, "{}", render_rows(&answer.columns, &rows))?;
    out.flush()?;
    eprintln!(
        "({} row{}{}, version {} at checkpoint {})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if answer.truncated {
            ", truncated at the host's row cap"
        } else {
            ""
        },
        answer.version,
        answer.checkpoint
    );
    Ok(())
}

/// A value as a table cell: text bare, null empty, everything else as JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
