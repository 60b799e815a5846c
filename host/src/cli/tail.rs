//! `refract tail [filters]`: follows the running host's event stream (SSE) and prints
//! each event as one JSON line. Reconnects after a dropped connection, resuming after
//! the last event printed, so nothing is skipped or repeated.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use super::events::EventFilter;
use anyhow::{Result, bail};
use clap::Args;

use super::client::{Client, ClientError};

/// How long to wait before reconnecting after the stream dropped.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Follow the event stream of the running host.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Start at this offset (default: only events appended from now on).
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,

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
        query
    }
}

/// Runs `refract tail`.
pub fn run(client: &Client, args: &TailArgs) -> Result<()> {
    let filters = args.query();
    // Without --from-offset, start at the head: a tail shows what happens next.
    let mut last = match args.from_offset {
        Some(offset) => offset.saturating_sub(1),
        None => head(client)?,
    };
    let mut remaining = args.filter.limit;
    let mut out = std::io::stdout().lock();
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
        let ended = follow(BufReader::new(stream), &mut out, &mut last, &mut remaining)?;
        if ended || remaining == Some(0) {
            return Ok(());
        }
        eprintln!(
            "connection to {} lost; reconnecting after offset {last}",
            client.url()
        );
        std::thread::sleep(RECONNECT_DELAY);
    }
}

/// The log head: the offset the tail starts after. Offsets are gap-free from 1, so
/// it is the number of events, which the host counts from an index.
fn head(client: &Client) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Count {
        count: u64,
    }
    match client.get::<Count>("/v1/events/count", &[]) {
        Ok(count) => Ok(count.count),
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
fn follow(
    reader: impl BufRead,
    out: &mut impl Write,
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
            if !data.is_empty() {
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
        follow(input.as_bytes(), &mut out, &mut last, &mut remaining).unwrap();
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
        assert!(follow(input.as_bytes(), &mut Vec::new(), &mut last, &mut None).is_err());
    }
}
