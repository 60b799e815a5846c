//! `refract diff <name>`: compares a projector's shadow (or previous version) with its
//! active version, table by table, and runs its diff gate on the pair. It reads the
//! databases directly, so it works whether or not a host is running. With `--node a
//! --node b`, it compares two cluster nodes' read models instead (see `diff_nodes`).

use anyhow::{Result, bail};
use clap::Args;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::diff::{ComparedVersion, DiffError, DiffRequest, TableDiff, diff_versions};

/// Compare two versions' read models.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The projector.
    pub name: String,
    /// The version to compare with the active one (default: the shadow, else the
    /// previous version).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Differing rows to show per table and side.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub sample: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Cluster mode: compare the active read model of two nodes instead, each named
    /// by its node name (its API address read from the cluster view of `--url`) or its
    /// API URL: `--node n1 --node n2`.
    #[arg(long = "node", value_name = "NODE|URL", conflicts_with = "version")]
    pub nodes: Vec<String>,
}

/// Runs `refract diff`.
pub fn run(data: &DataDir, config: &Config, args: &DiffArgs) -> Result<()> {
    if !data.control_db().exists() {
        bail!(
            "no projectors in `{}` yet: start `refract run` with a projector first",
            data.root().display()
        );
    }
    let gate = config.projector(&args.name).diff_gate;
    let request = DiffRequest {
        projector: &args.name,
        version: args.version.as_deref(),
        sample: args.sample,
        gate: gate.as_deref(),
        deadline: None,
    };
    let compared = match diff_versions(data, &request) {
        Err(DiffError::NothingToCompare(name)) => {
            bail!("projector `{name}` has no shadow or previous version; name one with --version")
        }
        other => other?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&compared)?);
        return Ok(());
    }
    let label = |side: &ComparedVersion| format!("{} {}", side.role.as_str(), side.version);
    let base_label = label(&compared.base);
    let other_label = label(&compared.other);
    println!("{}: {base_label} vs {other_label}", args.name);
    print_tables(&compared.tables, &base_label, &other_label);
    if let Some(gate) = &compared.gate {
        match &gate.reason {
            None => println!("\ndiff gate {}: passed", gate.file.display()),
            Some(reason) => println!("\ndiff gate {}: refused: {reason}", gate.file.display()),
        }
    }
    Ok(())
}

/// Prints the tables compared, then the sampled rows only one side has.
pub(super) fn print_tables(diffs: &[TableDiff], base_label: &str, other_label: &str) {
    let rows: Vec<[String; 4]> = diffs
        .iter()
        .map(|diff| {
            let count = |rows: Option<u64>| {
                rows.map_or_else(|| "(no table)".to_owned(), |rows| rows.to_string())
            };
            let verdict = if diff.same() {
                "same"
            } else if diff.schema_differs {
                "columns differ"
            } else {
                "differs"
            };
            [
                diff.table.clone(),
                count(diff.base_rows),
                count(diff.other_rows),
                verdict.to_owned(),
            ]
        })
        .collect();
    let header = ["TABLE", base_label, other_label, "CONTENT"];
    print!("{}", super::status::render_table(&header, &rows));
    for diff in diffs
        .iter()
        .filter(|diff| !diff.only_in_base.is_empty() || !diff.only_in_other.is_empty())
    {
        println!("\n{}:", diff.table);
        for row in &diff.only_in_base {
            println!("  only in {base_label}: ({})", row.join(", "));
        }
        for row in &diff.only_in_other {
            println!("  only in {other_label}: ({})", row.join(", "));
        }
    }
}
