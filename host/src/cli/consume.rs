//! `refract consume <group>`: a consumer-group member on the command line. It joins the
//! group on the running host, long-polls for the events of its partitions and prints
//! each as one JSON line (the event plus `delivery`, 2 or more for a redelivery).
//!
//! By default an event is acked once its line is written and flushed: a consumer that
//! dies mid-batch leaves the events it has not printed to be redelivered, never the
//! reverse. The acks of one batch go in one request, after its last line.
//!
//! With `--manual` nothing is acked automatically; commands on stdin do it, one per
//! line: `ack <offset> [<offset>...]` or `nack <offset> <reason...>`. A script can then
//! process each line and answer for it.

use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Client, ClientError};

/// How long one poll waits for events by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// How long one poll waits in `--manual` mode, so stdin's commands are sent promptly.
const MANUAL_WAIT: Duration = Duration::from_millis(300);

/// How long to wait before polling again after the host could not be reached.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Consume a group's share of the log as a member.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The group (created on first join if it is not declared in refract.toml).
    #[arg(value_name = "GROUP")]
    pub group: String,

    /// This member's name in the group (default: `consume-<pid>`).
    #[arg(long, value_name = "NAME")]
    pub member: Option<String>,

    /// The group's filter: only events of this type (repeat for several). Creates the
    /// group with it, or must match the group's.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,

    /// The group's filter: only streams starting with this (repeat for several).
    #[arg(long, value_name = "PREFIX")]
    pub stream_prefix: Vec<String>,

    /// Events per poll (the host caps it: consumers.max_poll_events).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub batch: usize,

    /// Lease each event this long, in milliseconds (default: the group's lease; the
    /// host refuses more than consumers.max_lease_ms).
    #[arg(long, value_name = "MS")]
    pub lease_ms: Option<u64>,

    /// Exit (leaving the group) after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Do not ack automatically: read `ack <offset>...` and `nack <offset> <reason>`
    /// commands from stdin.
    #[arg(long)]
    pub manual: bool,
}

/// A poll's answer.
#[derive(Debug, Deserialize)]
struct Polled {
    events: Vec<Value>,
}

/// A command read from stdin in `--manual` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Ack(Vec<u64>),
    Nack(u64, String),
}

/// Parses one stdin line; `Err` says what is wrong with it.
fn parse_command(line: &str) -> Result<Option<Command>, String> {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else {
        return Ok(None);
    };
    let offset = |word: &str| {
        word.parse::<u64>()
            .map_err(|_| format!("{word:?} is not an offset"))
    };
    match verb {
        "ack" => {
            let offsets = words.map(offset).collect::<Result<Vec<u64>, String>>()?;
            if offsets.is_empty() {
                return Err("`ack` needs at least one offset".to_owned());
            }
            Ok(Some(Command::Ack(offsets)))
        }
        "nack" => {
            let target = offset(words.next().ok_or("`nack` needs an offset and a reason")?)?;
            let reason = words.collect::<Vec<_>>().join(" ");
            if reason.is_empty() {
                return Err("`nack` needs a reason after the offset".to_owned());
            }
            Ok(Some(Command::Nack(target, reason)))
        }
        other => Err(format!(
            "unknown command {other:?}; use `ack <offset>...` or `nack <offset> <reason>`"
        )),
    }
}

/// Runs `refract consume`.
pub fn run(client: &Client, args: &ConsumeArgs) -> Result<()> {
    let member = args
        .member
        .clone()
        .unwrap_or_else(|| format!("consume-{}", std::process::id()));
    let commands = args.manual.then(spawn_stdin_reader);
    let wait = if args.manual {
        MANUAL_WAIT
    } else {
        DEFAULT_WAIT
    };
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let group_path = |action: &str| format!("/v1/groups/{}/{action}", args.group);
    loop {
        if let Some(commands) = &commands {
            while let Ok(command) = commands.try_recv() {
                send_command(client, &group_path, &member, command)?;
            }
        }
        let want = args
            .limit
            .map_or(args.batch, |limit| {
                usize::try_from(limit - printed).map_or(args.batch, |left| left.min(args.batch))
            })
            .max(1);
        let mut body = json!({
            "member": member,
            "max_events": want,
            "wait_ms": u64::try_from(wait.as_millis()).unwrap_or(0),
        });
        if let Some(lease) = args.lease_ms {
            body["lease_ms"] = json!(lease);
        }
        if !args.types.is_empty() || !args.stream_prefix.is_empty() {
            body["types"] = json!(args.types);
            body["stream_prefixes"] = json!(args.stream_prefix);
        }
        let polled: Polled = match client.post_json(&group_path("poll"), &body) {
            Ok(polled) => polled,
            Err(ClientError::Unreachable { url, .. }) => {
                eprintln!("no host answers at {url}; trying again");
                std::thread::sleep(RECONNECT_DELAY);
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let mut offsets = Vec::with_capacity(polled.events.len());
        for event in &polled.events {
            serde_json::to_writer(&mut out, event).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            out.flush()?;
            printed += 1;
            if let Some(offset) = event["offset"].as_u64() {
                offsets.push(offset);
            }
        }
        if !args.manual && !offsets.is_empty() {
            let _: Value = client
                .post_json(
                    &group_path("ack"),
                    &json!({"member": member, "offsets": offsets}),
                )
                .with_context(|| format!("cannot ack offsets {offsets:?}"))?;
        }
        if args.limit.is_some_and(|limit| printed >= limit) {
            let _: Value = client
                .post_json(&group_path("leave"), &json!({"member": member}))
                .context("cannot leave the group")?;
            return Ok(());
        }
    }
}

/// Sends one `--manual` command to the host.
fn send_command(
    client: &Client,
    group_path: &impl Fn(&str) -> String,
    member: &str,
    command: Command,
) -> Result<()> {
    let answer: Value = match command {
        Command::Ack(offsets) => client.post_json(
            &group_path("ack"),
            &json!({"member": member, "offsets": offsets}),
        )?,
        Command::Nack(offset, reason) => client.post_json(
            &group_path("nack"),
            &json!({"member": member, "offsets": [offset], "reason": reason}),
        )?,
    };
    if let Some(unknown) = answer["unknown"].as_array().filter(|u| !u.is_empty()) {
        eprintln!("note: the host does not know these as this member's deliveries: {unknown:?}");
    }
    Ok(())
}

/// Reads `--manual` commands from stdin on a thread of its own; a bad line is reported
/// on stderr and skipped.
fn spawn_stdin_reader() -> mpsc::Receiver<Command> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match parse_command(&line) {
                Ok(Some(command)) => {
                    if sender.send(command).is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(problem) => eprintln!("error: {problem}"),
            }
        }
    });
    receiver
}

/// Checks the arguments before anything is sent.
pub fn check(args: &ConsumeArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_commands_parse() {
        assert_eq!(parse_command("ack 3 4"), Ok(Some(Command::Ack(vec![3, 4]))));
        assert_eq!(
            parse_command("nack 7 smtp said no"),
            Ok(Some(Command::Nack(7, "smtp said no".into())))
        );
        assert_eq!(parse_command("   "), Ok(None));
        assert!(parse_command("ack").is_err());
        assert!(parse_command("nack 7").is_err());
        assert!(parse_command("ack x").is_err());
        assert!(parse_command("drop 7").is_err());
    }
}
