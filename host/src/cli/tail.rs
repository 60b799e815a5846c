//! `refract tail [filters]`: follows the running host's event stream (SSE) and prints
//! each event as one JSON line. Reconnects after a dropped connection, resuming after
//! the last event printed, so nothing is skipped or repeated.
//!
//! As a replay: `--rate` paces it, `--until-offset` / `--until-time` end it once the
//! window is sent, and `--progress` draws a progress bar on stderr from the host's
//! `progress` messages. The rate and the window are part of the request, so a
//! reconnect resumes the same replay.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use super::events::EventFilter;
use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Client, ClientError};
use crate::replay::ProgressReport;

/// How long to wait before reconnecting after the stream dropped.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Follow the event stream of the running host.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Start at this offset (default: with `--from-time`, the start of the log; else
    /// only events appended from now on).
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,

    /// End after the event at this offset (inclusive): a replay of a window that ends.
    #[arg(long, value_name = "N")]
    pub until_offset: Option<u64>,

    /// At most this many events per second (the host may cap it lower: `replay.max_rate`).
    #[arg(long, value_name = "EVENTS_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// Draw a progress bar on stderr: events sent of the window's total, events/s, ETA.
    #[arg(long)]
    pub progress: bool,

    #[command(flatten)]
    pub filter: EventFilter,
}

impl TailArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        let filter = &self.filter;
        let mut query = Vec::new();
        if let Some(time) = filter.from_time {
            query.push(("from_time", time.to_string()));
        }
        if let Some(time) = filter.until_time {
            query.push(("until_time", time.to_string()));
        }
        query.extend(filter.types.iter().map(|t| ("type", t.clone())));
        if let Some(stream) = &filter.stream {
            query.push(("stream", stream.clone()));
        }
        query.extend(
            filter
                .stream_prefix
                .iter()
                .map(|p| ("stream_prefix", p.clone())),
        );
        if let Some(until) = self.until_offset {
            query.push(("until_offset", until.to_string()));
        }
        if let Some(rate) = self.rate {
            query.push(("rate", rate.to_string()));
        }
        if self.progress {
            query.push(("progress", "true".to_owned()));
        }
        query
    }
}

/// Runs `refract tail`.
pub fn run(client: &Client, args: &TailArgs) -> Result<()> {
    let filters = args.query();
    // Without a start, a tail shows what happens next: it starts at the head. A time
    // window starts where its time does.
    let mut last = match (args.from_offset, args.filter.from_time) {
        (Some(offset), _) => offset.saturating_sub(1),
        (None, Some(_)) => 0,
        (None, None) => head(client)?,
    };
    let mut remaining = args.filter.limit;
    let mut out = std::io::stdout().lock();
    let bar = args.progress.then(progress_bar);
    loop {
        let mut query = filters.clone();
        if let Some(remaining) = remaining {
            query.push(("limit", remaining.to_string()));
        }
        let stream = match client.stream("/v1/events/subscribe", &query, Some(last)) {
            Ok(stream) => stream,
            Err(ClientError::Unreachable { url, .. }) => bail!(
                "`refract tail` needs a running host, and none answers at {url}; start one \
                 with `refract run` (or pass --url)"
            ),
            Err(error) => return Err(error.into()),
        };
        let mut sink = Sink {
            out: &mut out,
            bar: bar.as_ref(),
        };
        let ended = follow(BufReader::new(stream), &mut sink, &mut last, &mut remaining)?;
        if ended || remaining == Some(0) {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(());
        }
        eprintln!(
            "connection to {} lost; reconnecting after offset {last}",
            client.url()
        );
        std::thread::sleep(RECONNECT_DELAY);
    }
}

/// The progress bar of `--progress`, on stderr.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:32}] {pos}/{len} events  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("replay");
    bar
}

/// Shows one `progress` message on the bar.
fn show_progress(bar: &ProgressBar, report: &ProgressReport) {
    bar.set_length(report.total);
    bar.set_position(report.sent.min(report.total));
    let eta = match report.eta_seconds {
        Some(seconds) => format!("{seconds:.0}s"),
        None => "?".to_owned(),
    };
    let estimate = if report.total_exact { "" } else { " (live)" };
    bar.set_message(format!(
        "{:.0}%{estimate}  {:.0} events/s  ETA {eta}  at offset {}",
        report.percent, report.events_per_second, report.offset
    ));
}

/// Where a stream's messages go: events to stdout, progress to the bar.
struct Sink<'a, W: Write> {
    out: &'a mut W,
    bar: Option<&'a ProgressBar>,
}

/// The log head: the offset the tail starts after (not the count: once retention has
/// removed events, offsets and counts part).
fn head(client: &Client) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Count {
        head: u64,
    }
    match client.get::<Count>("/v1/events/count", &[]) {
        Ok(count) => Ok(count.head),
        Err(ClientError::Unreachable { url, .. }) => bail!(
            "`refract tail` needs a running host, and none answers at {url}; start one with \
             `refract run` (or pass --url)"
        ),
        Err(error) => Err(error.into()),
    }
}

/// Prints events from one connection until it ends. Returns whether the host ended the
/// stream on purpose (limit reached, `until_time` passed, an `error` event), as
/// opposed to the connection dropping.
fn follow<W: Write>(
    reader: impl BufRead,
    sink: &mut Sink<'_, W>,
    last: &mut u64,
    remaining: &mut Option<u64>,
) -> Result<bool> {
    let mut id: Option<u64> = None;
    let mut event_name = String::new();
    let mut data = String::new();
    for line in reader.lines() {
        let Ok(line) = line else {
            return Ok(false);
        };
        if line.is_empty() {
            // A blank line dispatches the message.
            if event_name == "error" {
                bail!("the host ended the stream: {data}");
            }
            if event_name == "progress" {
                if let (Some(bar), Ok(report)) =
                    (sink.bar, serde_json::from_str::<ProgressReport>(&data))
                {
                    show_progress(bar, &report);
                }
            } else if !data.is_empty() {
                let out = &mut *sink.out;
                out.write_all(data.as_bytes())?;
                out.write_all(b"\n")?;
                out.flush()?;
                if let Some(id) = id {
                    *last = id;
                }
                if let Some(remaining) = remaining.as_mut() {
                    *remaining = remaining.saturating_sub(1);
                    if *remaining == 0 {
                        return Ok(true);
                    }
                }
            }
            id = None;
            event_name.clear();
            data.clear();
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = value.parse().ok(),
            "event" => event_name = value.to_owned(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {} // comments (keep-alives) and unknown fields
        }
    }
    // The host closes the stream itself only when no event can match any more.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_become_lines_and_the_last_id_is_kept() {
        let input =
            ": keep-alive\n\nid: 4\ndata: {\"offset\":4}\n\nid: 5\ndata: {\"offset\":5}\n\n";
        let mut out = Vec::new();
        let mut last = 0;
        let mut remaining = None;
        let mut sink = Sink {
            out: &mut out,
            bar: None,
        };
        follow(input.as_bytes(), &mut sink, &mut last, &mut remaining).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"offset\":4}\n{\"offset\":5}\n"
        );
        assert_eq!(last, 5);
    }

    #[test]
    fn an_error_event_ends_the_tail() {
        let input = "event: error\ndata: {\"error\":{}}\n\n";
        let mut last = 0;
        let mut out = Vec::new();
        let mut sink = Sink {
            out: &mut out,
            bar: None,
        };
        assert!(follow(input.as_bytes(), &mut sink, &mut last, &mut None).is_err());
    }

    #[test]
    fn progress_messages_are_not_printed_as_events() {
        let input = "event: progress\ndata: {\"sent\":1,\"total\":2,\"total_exact\":true,\"percent\":50.0,\"events_per_second\":1.0,\"eta_seconds\":1.0,\"offset\":3,\"rate\":null,\"done\":false}\n\nid: 4\ndata: {}\n\n";
        let mut out = Vec::new();
        let mut last = 0;
        let bar = progress_bar();
        let mut sink = Sink {
            out: &mut out,
            bar: Some(&bar),
        };
        follow(input.as_bytes(), &mut sink, &mut last, &mut None).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{}\n");
        assert_eq!(bar.length(), Some(2));
        assert_eq!(bar.position(), 1);
    }
}
