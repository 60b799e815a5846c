//! `refract cluster init --from <data-dir>`: move a single-node log into a cluster.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use crate::cluster::{ClusterConfig, migrate};
use crate::config::Config;
use crate::data_dir::DataDir;

/// Cluster mode commands.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Publish an existing single-node log into the cluster's (empty) JetStream stream,
    /// keeping every offset; the data directory then continues as a cluster node's.
    Init(InitArgs),
}

/// `refract cluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The data directory whose log to publish (no host may be running on it).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,

    /// The NATS servers, comma-separated (replaces `cluster.urls`).
    #[arg(long, value_name = "URLS")]
    pub cluster: Option<String>,
}

/// Runs a cluster subcommand.
pub fn run(config: &Config, args: &ClusterArgs) -> Result<()> {
    match &args.command {
        ClusterCommand::Init(init) => run_init(config, init),
    }
}

fn run_init(config: &Config, args: &InitArgs) -> Result<()> {
    // The migration publishes as no node in particular; the name only labels its
    // NATS connection.
    let cluster = ClusterConfig::resolve(
        config.cluster.as_ref(),
        args.cluster.as_deref(),
        Some(
            config
                .cluster
                .as_ref()
                .and_then(|c| c.node.as_deref())
                .unwrap_or("init"),
        ),
    )?
    .context("no NATS server: pass --cluster nats://host:port[,...] or add a [cluster] section")?;
    let data = DataDir::new(&args.from);
    anyhow::ensure!(
        data.events_db().is_file(),
        "`{}` has no event log (events.db); point --from at a single-node data directory",
        data.root().display()
    );
    // No host may append while the log is published, nor after it is handed over.
    let _lock = data.lock_host()?;
    let log = super::open_log(&data, config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let migrated = runtime
        .block_on(migrate::init(&cluster, &log))
        .with_context(|| {
            format!(
                "cannot publish `{}` into the cluster",
                data.events_db().display()
            )
        })?;
    println!(
        "published {} events in {} messages into JetStream stream {} ({})",
        migrated.events, migrated.messages, cluster.stream, migrated.source
    );
    println!(
        "`{}` is now a cluster node's data directory: start it with `refract run --cluster {} --node <name>`; other nodes start empty and catch up",
        data.root().display(),
        cluster.urls.join(",")
    );
    Ok(())
}
