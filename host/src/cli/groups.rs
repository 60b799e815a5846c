//! `refract groups`: consumer groups: list them (members, partitions, committed offset,
//! lag, redeliveries), show one, reset one to an offset or a time, delete one, list its
//! dead letters.
//!
//! The list comes from the running host's API, live; with no host running, from
//! `control.db` (committed positions, lag and dead letters; no members). The other
//! actions need a running host, which owns the groups' state.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use jiff::Timestamp;

use super::client::{Client, ClientError};
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::groups::{GroupView, StoredDeadLetter};

/// List, reset or delete consumer groups.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// What to do (default: list every group).
    #[command(subcommand)]
    pub action: Option<GroupsAction>,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What `refract groups` does.
#[derive(Debug, Subcommand)]
pub enum GroupsAction {
    /// List every group (the default).
    List,
    /// Show one group: its settings, members and their partitions.
    Show {
        /// The group.
        group: String,
    },
    /// Move a group: the next event delivered is the first at or after the offset or
    /// time. Leases in flight are void.
    Reset {
        /// The group.
        group: String,
        /// Deliver from this offset on.
        #[arg(
            long,
            value_name = "N",
            conflicts_with = "to_time",
            required_unless_present = "to_time"
        )]
        to_offset: Option<u64>,
        /// Deliver from the first event recorded at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        to_time: Option<Timestamp>,
    },
    /// Delete a group that is not declared in refract.toml: its members are dropped,
    /// its committed position and dead letters erased.
    Delete {
        /// The group.
        group: String,
    },
    /// List a group's dead letters, with the last reason a delivery failed.
    DeadLetters {
        /// The group.
        group: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

/// Runs `refract groups`.
pub fn run(data: &DataDir, config: &Config, args: &GroupsArgs, client: &Client) -> Result<()> {
    match &args.action {
        None | Some(GroupsAction::List) => list(data, config, args.json, client),
        Some(GroupsAction::Show { group }) => {
            let view: GroupView = host(client.get(&format!("/v1/groups/{group}"), &[]))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_table(std::slice::from_ref(&view), true);
            }
            Ok(())
        }
        Some(GroupsAction::Reset {
            group,
            to_offset,
            to_time,
        }) => {
            let body = match (to_offset, to_time) {
                (Some(offset), _) => serde_json::json!({ "to_offset": offset }),
                (None, Some(time)) => serde_json::json!({ "to_time": time.to_string() }),
                (None, None) => bail!("give --to-offset or --to-time"),
            };
            let changed: serde_json::Value =
                host(client.post_json(&format!("/v1/groups/{group}/reset"), &body))?;
            println!(
                "group {group} reset: committed offset {}, the next event delivered comes after it",
                changed["committed"]
            );
            Ok(())
        }
        Some(GroupsAction::Delete { group }) => {
            let _: serde_json::Value = host(client.delete(&format!("/v1/groups/{group}")))?;
            println!("group {group} deleted");
            Ok(())
        }
        Some(GroupsAction::DeadLetters { group, limit }) => {
            #[derive(serde::Deserialize)]
            struct Answer {
                dead_letters: Vec<StoredDeadLetter>,
            }
            let answer: Answer = host(client.get(
                &format!("/v1/groups/{group}/dead-letters"),
                &[("limit", limit.to_string())],
            ))?;
            if args.json {
                for letter in &answer.dead_letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else if answer.dead_letters.is_empty() {
                println!("group {group} has no dead letters");
            } else {
                println!(
                    "{:>10}  {:>10}  {:<24} {:<24} LAST ERROR",
                    "OFFSET", "DELIVERIES", "STREAM", "TYPE"
                );
                for letter in &answer.dead_letters {
                    println!(
                        "{:>10}  {:>10}  {:<24} {:<24} {}",
                        letter.offset,
                        letter.deliveries,
                        letter.stream,
                        letter.event_type,
                        letter.last_error
                    );
                }
            }
            Ok(())
        }
    }
}

/// The host's answer, or an error that says a host is needed.
fn host<T>(answer: Result<T, ClientError>) -> Result<T> {
    match answer {
        Ok(value) => Ok(value),
        Err(ClientError::Unreachable { url, .. }) => bail!(
            "this needs a running host, and none answers at {url}; start one with `refract run` \
             (or pass --url)"
        ),
        Err(error) => Err(error.into()),
    }
}

fn list(data: &DataDir, config: &Config, json: bool, client: &Client) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Answer {
        groups: Vec<GroupView>,
    }
    let live = if client.has_token() {
        match client.get::<Answer>("/v1/groups", &[]) {
            Ok(answer) => Some(answer.groups),
            Err(ClientError::Unreachable { .. } | ClientError::Api { status: 401, .. }) => None,
            Err(error) => return Err(error.into()),
        }
    } else {
        None
    };
    let (views, offline) = match live {
        Some(views) => (views, false),
        None => {
            let log = super::open_log(data, config)?;
            (
                crate::groups::offline_views(&log, &data.control_db(), config)?,
                true,
            )
        }
    };
    if json {
        for view in &views {
            println!("{}", serde_json::to_string(view)?);
        }
        return Ok(());
    }
    if views.is_empty() {
        println!("no consumer groups; a member creates one by joining (`refract consume <group>`)");
        return Ok(());
    }
    if offline {
        println!("(no host running: positions as last written to control.db; no members)");
    }
    print_table(&views, true);
    Ok(())
}

fn print_table(views: &[GroupView], members: bool) {
    println!(
        "{:<20} {:>7} {:>10} {:>10} {:>10} {:>8} {:>9} {:>12} {:>6}",
        "GROUP",
        "MEMBERS",
        "PARTITIONS",
        "COMMITTED",
        "HEAD",
        "LAG",
        "IN-FLIGHT",
        "REDELIVERIES",
        "DEAD"
    );
    for view in views {
        println!(
            "{:<20} {:>7} {:>10} {:>10} {:>10} {:>8} {:>9} {:>12} {:>6}",
            view.name,
            view.members.len(),
            view.partitions,
            view.committed,
            view.head,
            view.lag,
            view.in_flight,
            view.redeliveries,
            view.dead_letters
        );
        if members {
            for member in &view.members {
                let partitions: Vec<String> =
                    member.partitions.iter().map(u32::to_string).collect();
                println!(
                    "  member {:<24} partitions {:<30} in flight {:>5}  idle {} ms",
                    member.name,
                    if partitions.is_empty() {
                        "(none)".to_owned()
                    } else {
                        partitions.join(",")
                    },
                    member.in_flight,
                    member.idle_ms
                );
            }
        }
    }
}
