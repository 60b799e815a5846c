//! `refract stream snapshot <stream> --version N --state JSON` and `refract stream load
//! <stream>`: stream snapshots on the running host.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, ClientError};

/// Stream snapshots: store an application's state of a stream, or load a stream from
/// its latest snapshot.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: StreamAction,
}

/// The stream actions.
#[derive(Debug, Subcommand)]
pub enum StreamAction {
    /// Store `--state` as the snapshot of a stream at `--version`.
    Snapshot {
        /// The stream.
        #[arg(value_name = "STREAM")]
        stream: String,
        /// The stream version the state reflects (at most the stream's head).
        #[arg(long, value_name = "N")]
        version: u64,
        /// The state, as JSON.
        #[arg(long, value_name = "JSON")]
        state: String,
    },
    /// Print the stream's latest snapshot and the events after it, as JSON.
    Load {
        /// The stream.
        #[arg(value_name = "STREAM")]
        stream: String,
    },
}

/// Runs `refract stream`.
pub fn run(client: &Client, args: &StreamArgs) -> Result<()> {
    let unreachable = |error: ClientError| match error {
        ClientError::Unreachable { url, .. } => anyhow::anyhow!(
            "`refract stream` needs a running host, and none answers at {url}; start one with \
             `refract run` (or pass --url)"
        ),
        error => error.into(),
    };
    match &args.action {
        StreamAction::Snapshot {
            stream,
            version,
            state,
        } => {
            let state: Value = serde_json::from_str(state)
                .context("--state must be JSON, such as '{\"balance\": 10}'")?;
            let _: Value = client
                .put_json(
                    &format!("/v1/streams/{stream}/snapshot"),
                    &serde_json::json!({"version": version, "state": state}),
                )
                .map_err(unreachable)?;
            println!("stored the snapshot of `{stream}` at version {version}");
        }
        StreamAction::Load { stream } => {
            let loaded: Value = client
                .get(&format!("/v1/streams/{stream}/load"), &[])
                .map_err(unreachable)?;
            println!("{loaded}");
        }
    }
    Ok(())
}
