//! `refract status`: every projector version, as a table.
//!
//! With no host running, the figures come straight from `control.db`, each read
//! model's checkpoint and the log head; events/s needs a running host and shows `-`.

use anyhow::{Context as _, Result};
use clap::Args;

use crate::data_dir::DataDir;
use crate::engine::offline_status;

/// Show the status of every projector version.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (one object per version) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `refract status`.
pub fn run(data: &DataDir, args: &StatusArgs) -> Result<()> {
    let rows = offline_status(data)
        .with_context(|| format!("cannot read the status of `{}`", data.root().display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for row in &rows {
            serde_json::to_writer(&mut out, row)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        return Ok(());
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
        "STATE",
        "CHECKPOINT",
        "HEAD",
        "LAG",
        "EVENTS/S",
        "DEAD",
        "LAST ERROR",
    ];
    let table: Vec<[String; 10]> = rows
        .iter()
        .map(|row| {
            [
                row.projector.clone(),
                row.version.clone(),
                row.role.clone(),
                row.state.clone(),
                row.checkpoint.to_string(),
                row.head.to_string(),
                row.lag.to_string(),
                row.events_per_second
                    .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}")),
                row.dead_letters.to_string(),
                row.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!("{}", render_table(&header, &table));
    Ok(())
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub(crate) fn render_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (index, cell) in cells.enumerate() {
            if index + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
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
