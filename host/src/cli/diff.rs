//! `refract diff <name>`: compares a projector's shadow (or previous version) with its
//! active version, table by table. It reads the databases directly, so it works
//! whether or not a host is running.

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::data_dir::DataDir;
use crate::engine::control::{Control, Role};
use crate::engine::diff::compare;

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
}

/// Runs `refract diff`.
pub fn run(data: &DataDir, args: &DiffArgs) -> Result<()> {
    if !data.control_db().exists() {
        bail!(
            "no projectors in `{}` yet: start `refract run` with a projector first",
            data.root().display()
        );
    }
    let control = Control::open(&data.control_db())?;
    let versions = control.versions_of(&args.name)?;
    if versions.is_empty() {
        bail!(
            "no projector named `{}`; `refract status` lists the projectors",
            args.name
        );
    }
    let active = versions
        .iter()
        .find(|record| record.role == Role::Active)
        .with_context(|| {
            format!(
                "projector `{}` has no active version to compare with",
                args.name
            )
        })?;
    let other = match &args.version {
        Some(version) => versions
            .iter()
            .find(|record| &record.version == version)
            .with_context(|| format!("projector `{}` has no version `{version}`", args.name))?,
        None => versions
            .iter()
            .find(|record| record.role == Role::Shadow)
            .or_else(|| versions.iter().find(|record| record.role == Role::Previous))
            .with_context(|| {
                format!(
                    "projector `{}` has no shadow or previous version; name one with --version",
                    args.name
                )
            })?,
    };
    let base_db = data.version_db(&args.name, &active.version);
    let other_db = data.version_db(&args.name, &other.version);
    if !other_db.exists() {
        bail!(
            "the read model of version {} was deleted ({})",
            other.version,
            other_db.display()
        );
    }
    let diffs = compare(&base_db, &other_db, args.sample).with_context(|| {
        format!(
            "cannot compare {} with {}",
            base_db.display(),
            other_db.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diffs)?);
        return Ok(());
    }
    let label = |role: Role, version: &str| format!("{} {version}", role.as_str());
    let base_label = label(active.role, &active.version);
    let other_label = label(other.role, &other.version);
    println!("{}: {base_label} vs {other_label}", args.name);
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
    let header = [
        "TABLE",
        base_label.as_str(),
        other_label.as_str(),
        "CONTENT",
    ];
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
    Ok(())
}
