//! Events as JSON Lines: the format `refract append --file` reads and golden fixtures
//! (`refract test`) are written in, one event per line:
//!
//! ```text
//! {"stream": "account-1", "type": "money.deposited", "data": {"amount": 500}}
//! {"stream": "account-1", "type": "money.withdrawn", "data": {"amount": 20}, "metadata": {"by": "atm"}, "id": "w-1"}
//! ```
//!
//! `expected_version` may be given too. Blank lines are skipped; any other bad line fails
//! the whole input, naming its line and column.

use std::io::BufRead;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::NewEvent;

/// A line that could not be read as an event.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} line {line}: {message}")]
pub struct JsonlError {
    /// What was read, for messages: a quoted path, or `stdin`.
    pub source_name: String,
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The events of a JSON Lines input, with the line number of each.
#[derive(Debug, Default)]
pub struct JsonlEvents {
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// The line each event came from.
    pub lines: Vec<usize>,
}

/// One line of an events file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEvent {
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    expected_version: Option<u64>,
}

impl From<FileEvent> for NewEvent {
    fn from(line: FileEvent) -> NewEvent {
        NewEvent {
            id: line.id,
            stream: line.stream,
            event_type: line.event_type,
            data: Box::<str>::from(line.data).into(),
            metadata: line.metadata.map(|m| Box::<str>::from(m).into()),
            expected_version: line.expected_version,
        }
    }
}

/// Reads every event of `input`; `source_name` names it in errors.
pub fn read_events(mut input: impl BufRead, source_name: &str) -> Result<JsonlEvents, JsonlError> {
    let mut read = JsonlEvents::default();
    let mut line = String::new();
    let mut number = 0;
    let error = |line: usize, message: String| JsonlError {
        source_name: source_name.to_owned(),
        line,
        message,
    };
    loop {
        line.clear();
        number += 1;
        let bytes = input
            .read_line(&mut line)
            .map_err(|e| error(number, format!("cannot read it: {e}")))?;
        if bytes == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let event: FileEvent =
            serde_json::from_str(&line).map_err(|e| error(number, describe_json_error(&e)))?;
        read.events.push(event.into());
        read.lines.push(number);
    }
    Ok(read)
}

/// A serde_json error without its "at line 1 column N" suffix (every input is one line),
/// but with the column.
fn describe_json_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_events_and_bad_lines_are_named() {
        let text = "{\"stream\":\"s\",\"type\":\"t\",\"data\":{\"a\":1}}\n\n{\"stream\":\"s\",\"type\":\"t\",\"data\":2,\"id\":\"x\"}\n";
        let read = read_events(text.as_bytes(), "`f.jsonl`").expect("valid");
        assert_eq!(read.events.len(), 2);
        assert_eq!(read.lines, [1, 3]);
        assert_eq!(read.events[0].data, "{\"a\":1}");
        let error =
            read_events("{\"stream\":\"s\"}\n".as_bytes(), "`f.jsonl`").expect_err("no type");
        assert!(
            error
                .to_string()
                .starts_with("`f.jsonl` line 1: missing field"),
            "{error}"
        );
    }
}
