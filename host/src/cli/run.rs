//! `refract run`: the long-running host. Keeps every projector in the plugins folder
//! up to date with the log until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Engine, EngineOptions};
use crate::log::EventLog;

/// Run the host.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The folder of projector components (default: `<data-dir>/plugins`, or
    /// `plugins_dir` in the configuration file).
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,
}

/// Runs the host until a shutdown signal.
pub fn run(data: &DataDir, config: Config, args: &RunArgs) -> Result<()> {
    let plugins_dir = args
        .plugins
        .clone()
        .or_else(|| config.plugins_dir.clone())
        .unwrap_or_else(|| data.plugins());
    let _lock = data.lock_host()?;
    let log = EventLog::open(&data.events_db(), config.log_options())
        .with_context(|| format!("cannot use the data directory `{}`", data.root().display()))?;
    // The async runtime only waits (signals, worker wake-ups); guest calls and SQLite run
    // on each projector's own thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("refract-async")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = EngineOptions {
        data_dir: data.clone(),
        plugins_dir: plugins_dir.clone(),
        config,
    };
    let engine = Engine::start(&options, &log, runtime.handle())
        .context("cannot start the projection engine")?;

    println!("refract is running on {}", data.root().display());
    println!("  event log:   {}", data.events_db().display());
    println!("  plugins:     {}", plugins_dir.display());
    for status in engine.status() {
        println!(
            "  projector:   {} (version {}) -> {}",
            status.projector,
            status.version,
            data.version_db(&status.projector, &status.version)
                .display()
        );
    }
    for rejected in engine.rejected() {
        println!(
            "  refused:     {}: {}",
            rejected.path.display(),
            rejected.reason
        );
    }
    println!("Stop with Ctrl-C. In another terminal: `refract status`, `refract append ...`.");

    runtime.block_on(shutdown_signal())?;
    tracing::info!("shutting down: finishing the batches in flight");
    engine.shutdown();
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
