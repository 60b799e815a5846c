//! `refract events`: read the log as JSON Lines, or count.

use std::io::{self, BufWriter, Write};

use clap::Args;
use jiff::Timestamp;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::log::{ReadQuery, StreamFilter};

/// Print events from the log.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Start at this offset (inclusive).
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,

    /// Stop at this offset (inclusive).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,

    #[command(flatten)]
    pub filter: EventFilter,

    /// Print only the number of matching events.
    #[arg(long)]
    pub count: bool,
}

/// The event filters shared by `refract events` and `refract tail`.
#[derive(Debug, Args)]
pub struct EventFilter {
    /// Only events recorded at or after this time (RFC 3339, e.g. 2025-01-31T12:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub from_time: Option<Timestamp>,

    /// Only events recorded before this time (RFC 3339; exclusive).
    #[arg(long, value_name = "TIME")]
    pub until_time: Option<Timestamp>,

    /// Only events of this type; repeat for any of several types.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,

    /// Only events of this stream.
    #[arg(long, conflicts_with = "stream_prefix")]
    pub stream: Option<String>,

    /// Only events of streams starting with this prefix; repeat for any of several.
    #[arg(long, value_name = "PREFIX")]
    pub stream_prefix: Vec<String>,

    /// At most this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

impl EventFilter {
    /// The stream part of the filter.
    pub fn stream_filter(&self) -> StreamFilter {
        match (&self.stream, self.stream_prefix.is_empty()) {
            (Some(stream), _) => StreamFilter::Exact(stream.clone()),
            (None, false) => StreamFilter::Prefixes(self.stream_prefix.clone()),
            (None, true) => StreamFilter::Any,
        }
    }
}

impl EventsArgs {
    fn query(&self) -> ReadQuery {
        let filter = &self.filter;
        ReadQuery {
            from_offset: self.from_offset.unwrap_or(0),
            to_offset: self.to_offset,
            from_time: filter.from_time,
            until_time: filter.until_time,
            types: filter.types.clone(),
            stream: filter.stream_filter(),
            limit: filter.limit,
            batch_size: 0,
        }
    }
}

/// Runs `refract events`.
pub fn run(data: &DataDir, config: &Config, args: &EventsArgs) -> anyhow::Result<()> {
    let log = super::open_log(data, config)?;
    let query = args.query();
    // Never silence: a read reaching below what retention deleted says what it lacks.
    // Archived events are read back (the whole archive: this is the operator's own
    // process, as a replay is, so no per-request budget applies).
    let horizon = log.horizon()?;
    let before = if log.has_cold_tier() {
        horizon.deleted_through + 1
    } else {
        horizon.truncated_before()
    };
    if before > 1 && query.from_offset < before {
        eprintln!(
            "truncated_before: {before} (retention deleted events before offset {before}; \
             they are gone)"
        );
    }
    let mut out = BufWriter::new(io::stdout().lock());
    if args.count {
        writeln!(out, "{}", log.count_with_archive(&query, None)?.count)?;
    } else {
        for event in log.read_with_archive(&query, None)? {
            // Through io::Error, so that a closed stdout is recognisable as one.
            serde_json::to_writer(&mut out, &event?).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}
