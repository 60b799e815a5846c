//! `refract project`: a one-shot replay of the log through one projector into a fresh
//! database file. It is the batch form of what `refract run` does continuously.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{BatchLimits, Projection, Step};
use crate::runtime::{DbOptions, Runtime, RuntimeConfig};

/// Arguments of `refract project`.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// The projector component to run (a `.wasm` file built for wasm32-wasip2).
    #[arg(long, value_name = "PATH")]
    plugin: PathBuf,
    /// The read-model database to create. It must not exist yet.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// The first log offset to replay (default: the start of the log).
    #[arg(long, value_name = "N")]
    from_offset: Option<u64>,
    /// The last log offset to replay, inclusive (default: the log head when the
    /// command starts).
    #[arg(long, value_name = "N")]
    until_offset: Option<u64>,
    /// Events per call into the projector.
    #[arg(long, value_name = "N", default_value_t = crate::config::DEFAULT_BATCH_EVENTS)]
    batch_size: usize,
}

/// Runs `refract project`.
pub fn run(data: &DataDir, config: &Config, args: &ProjectArgs) -> Result<()> {
    if args.out.exists() {
        bail!(
            "{} already exists; `refract project` builds a fresh read model, so remove the file or choose another --out",
            args.out.display()
        );
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let wasm = std::fs::read(&args.plugin).with_context(|| {
        format!(
            "cannot read the projector component {}",
            args.plugin.display()
        )
    })?;
    let log = super::open_log(data, config)?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(data.cache()),
        limits: config.limits.clone(),
    })
    .context("cannot start the WebAssembly runtime")?;
    let loaded = runtime
        .load(&wasm)
        .with_context(|| format!("cannot load {}", args.plugin.display()))?;

    let until = match args.until_offset {
        Some(until) => until,
        None => log.head().context("cannot read the log head")?,
    };
    let mut projection = Projection::open(
        loaded,
        &args.out,
        DbOptions::replay(),
        log.reader().context("cannot open a log reader")?,
        BatchLimits {
            max_events: args.batch_size,
            ..BatchLimits::default()
        },
    )
    .with_context(|| format!("cannot create the read model {}", args.out.display()))?;
    if let Some(from) = args.from_offset {
        projection
            .fast_forward(from.saturating_sub(1))
            .context("cannot set the starting offset")?;
    }

    let started = Instant::now();
    let mut projected: u64 = 0;
    loop {
        match projection.step(Some(until))? {
            Step::Applied { events, .. } => projected += events as u64,
            Step::Skipped { .. } => {}
            Step::CaughtUp => break,
        }
    }
    projection
        .sync()
        .context("cannot flush the read model to disk")?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        projected as f64 / seconds
    } else {
        0.0
    };
    println!(
        "projected {projected} events into {} in {seconds:.2} s ({rate:.0} events/s); checkpoint {}",
        args.out.display(),
        projection.checkpoint()
    );
    Ok(())
}
