//! `refract append`: one event from flags, or a JSON Lines file as one atomic batch.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::Args;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::log::jsonl::read_events;
use crate::log::{LogError, NewEvent};

/// Append events to the log.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Read events from a JSON Lines file (`-` for stdin), one
    /// `{"stream":..,"type":..,"data":..,"metadata"?:..,"id"?:..,"expected_version"?:..}`
    /// per line; blank lines are skipped. The whole file is one atomic batch.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["stream", "event_type", "data", "metadata", "id", "expected_version"]
    )]
    pub file: Option<PathBuf>,

    /// The stream to append to.
    #[arg(long, required_unless_present = "file")]
    pub stream: Option<String>,

    /// The event type.
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "file")]
    pub event_type: Option<String>,

    /// The event's data, as JSON.
    #[arg(
        long,
        value_name = "JSON",
        required_unless_present = "file",
        allow_hyphen_values = true
    )]
    pub data: Option<String>,

    /// The event's metadata, as JSON.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
    pub metadata: Option<String>,

    /// A unique id for the event; appending an id that is already stored does nothing and
    /// prints the original offset. Default: a generated UUID.
    #[arg(long)]
    pub id: Option<String>,

    /// Fail unless the stream is at this version (0: the stream must not exist yet).
    #[arg(long, value_name = "N")]
    pub expected_version: Option<u64>,
}

/// Runs `refract append`.
pub fn run(data: &DataDir, config: &Config, args: &AppendArgs) -> anyhow::Result<()> {
    let (events, lines, source) = match &args.file {
        Some(path) => {
            let (events, lines) = read_file(path)?;
            (events, Some(lines), describe(path))
        }
        None => (vec![single(args)?], None, String::new()),
    };
    let log = super::open_log(data, config)?;
    let offsets = log
        .append(events)
        .map_err(|e| with_line(e, lines.as_deref(), &source))?;
    let mut out = BufWriter::new(io::stdout().lock());
    for offset in offsets {
        writeln!(out, "{offset}")?;
    }
    out.flush()?;
    Ok(())
}

/// The event given by flags.
fn single(args: &AppendArgs) -> anyhow::Result<NewEvent> {
    // clap enforces these when there is no --file; this is only a second line of defence.
    let missing = |flag| anyhow!("--{flag} is required unless --file is given");
    Ok(NewEvent {
        id: args.id.clone(),
        stream: args.stream.clone().ok_or_else(|| missing("stream"))?,
        event_type: args.event_type.clone().ok_or_else(|| missing("type"))?,
        data: args.data.clone().ok_or_else(|| missing("data"))?,
        metadata: args.metadata.clone(),
        expected_version: args.expected_version,
    })
}

fn describe(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".to_owned()
    } else {
        format!("`{}`", path.display())
    }
}

/// Reads an events file (or stdin for `-`) line by line into a batch, with the line
/// number of each event. Any bad line fails the whole file.
fn read_file(path: &Path) -> anyhow::Result<(Vec<NewEvent>, Vec<usize>)> {
    let source = describe(path);
    if path == Path::new("-") {
        read_lines(io::stdin().lock(), &source)
    } else {
        let file = File::open(path).with_context(|| format!("cannot open {source}"))?;
        read_lines(BufReader::new(file), &source)
    }
}

fn read_lines(input: impl BufRead, source: &str) -> anyhow::Result<(Vec<NewEvent>, Vec<usize>)> {
    let read = read_events(input, source)?;
    Ok((read.events, read.lines))
}

/// Adds the line number to an error about one event of an events file.
fn with_line(error: LogError, lines: Option<&[usize]>, source: &str) -> anyhow::Error {
    let line = match (&error, lines) {
        (LogError::InvalidEvent { position, .. }, Some(lines)) => {
            position.checked_sub(1).and_then(|i| lines.get(i))
        }
        _ => None,
    };
    match line {
        Some(line) => anyhow::Error::new(error).context(format!("{source} line {line}")),
        None => error.into(),
    }
}
