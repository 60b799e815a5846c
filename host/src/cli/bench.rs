//! `refract bench`: the benchmark suite (see [`crate::bench`]). Prints a table, or one
//! JSON object per figure with `--json`; exits non-zero if the WASM and native read
//! models disagree.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::bench::{self, BenchOptions, Group, memory};
use crate::config::Config;

/// Arguments of `refract bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Events in the replayed log. The reference sizes are 100000 and 1000000; the memory
    /// figures need at least that many.
    #[arg(long, value_name = "N", default_value_t = bench::DEFAULT_EVENTS)]
    events: usize,
    /// Repetitions of each measurement; figures are medians. 1 for a quick run.
    #[arg(long, value_name = "R", default_value_t = bench::DEFAULT_REPS)]
    reps: usize,
    /// Measure only these groups of figures (comma-separated): append, replay, floors,
    /// live, swap, memory, cold-start, consumers, retention, snapshots, reactors, levers. The
    /// WASM/native checksum check always runs.
    #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
    only: Vec<Group>,
    /// Print one JSON object per measured figure, one per line, instead of the table.
    #[arg(long)]
    json: bool,
    /// The `balances` component (default: build it from the source tree).
    #[arg(long, value_name = "PATH")]
    plugin: Option<PathBuf>,
    /// Where to put the scratch directory (default: the system's temp directory). Use
    /// a folder on the disk you want measured: on a tmpfs, fsync costs nothing.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The workload's seed.
    #[arg(long, value_name = "SEED", default_value_t = bench::DEFAULT_SEED)]
    seed: u64,
    /// Measure cluster mode instead: starts three nats-server processes on loopback
    /// (needs `apt-get install -y nats-server`); `--events` single-event appends per
    /// throughput figure, five times as many in batches.
    #[arg(long, conflicts_with_all = ["only", "plugin", "component"])]
    cluster: bool,
    /// Also measure another build of `balances` (TypeScript, Python, …) on the same log:
    /// replay rate and ratio to native, size, compile time and cached cold start. May be
    /// repeated.
    #[arg(long, value_name = "LABEL=PATH")]
    component: Vec<bench::components::ComponentSpec>,

    // The memory probe: `refract bench` re-executes itself with these to measure one
    // replay's peak RSS in a process of its own.
    /// Internal: the log the memory probe replays.
    #[arg(long, hide = true, value_name = "PATH")]
    rss_probe_log: Option<PathBuf>,
    /// Internal: the last offset the memory probe replays.
    #[arg(long, hide = true, value_name = "N", requires = "rss_probe_log")]
    rss_probe_until: Option<u64>,
    /// Internal: the compile cache of the memory probe.
    #[arg(long, hide = true, value_name = "DIR", requires = "rss_probe_log")]
    rss_probe_cache: Option<PathBuf>,
    /// Internal: the read model the memory probe creates.
    #[arg(long, hide = true, value_name = "PATH", requires = "rss_probe_log")]
    rss_probe_out: Option<PathBuf>,

    // The HTTP load generator: `refract bench` runs itself with these, as a separate
    // process, to append through the API (the token comes in an environment variable).
    /// Internal: the server the load generator appends to.
    #[arg(long, hide = true, value_name = "URL")]
    load_gen_url: Option<String>,
    /// Internal: the load generator's concurrent clients.
    #[arg(long, hide = true, value_name = "N", default_value_t = 1)]
    load_gen_clients: usize,
    /// Internal: the events the load generator appends in all.
    #[arg(long, hide = true, value_name = "N", default_value_t = 1)]
    load_gen_events: usize,
    /// Internal: the events per request.
    #[arg(long, hide = true, value_name = "N", default_value_t = 1)]
    load_gen_batch: usize,
}

/// Runs `refract bench`.
pub fn run(config: &Config, args: &BenchArgs) -> Result<()> {
    if let Some(log) = &args.rss_probe_log {
        return probe(config, args, log);
    }
    if let Some(url) = &args.load_gen_url {
        return load_generator(args, url);
    }
    if args.cluster {
        return cluster(args);
    }
    let options = BenchOptions {
        events: args.events,
        reps: args.reps,
        only: args.only.clone(),
        plugin: args.plugin.clone(),
        work_dir: args.work_dir.clone(),
        seed: args.seed,
        config: config.clone(),
        exe: std::env::current_exe().ok(),
        components: args.component.clone(),
    };
    let report = bench::run(&options, &mut |line| eprintln!("bench: {line}"))?;
    let text = if args.json {
        report.json_lines()
    } else {
        report.table()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// `refract bench --cluster`.
fn cluster(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.events >= 1 && args.reps >= 1,
        "--events and --reps must be at least 1"
    );
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let figures = bench::cluster::run(args.events, args.reps, &work_dir, &mut |line| {
        eprintln!("bench: {line}");
    })?;
    let text = if args.json {
        figures
            .iter()
            .map(|figure| {
                let (value, reps) = match &figure.measurement {
                    bench::Measurement::Measured { median, reps } => (Some(*median), reps.clone()),
                    bench::Measurement::NotMeasured(_) => (None, Vec::new()),
                };
                serde_json::json!({"name": figure.name, "value": value, "unit": figure.unit, "reps": reps})
                    .to_string()
                    + "\n"
            })
            .collect()
    } else {
        bench::cluster::table(&figures)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The HTTP load generator's side: append, then print `<events> <seconds> <cpu seconds>`.
fn load_generator(args: &BenchArgs, url: &str) -> Result<()> {
    let token = std::env::var(bench::http::TOKEN_ENV).with_context(|| {
        format!(
            "the load generator reads the API token from {}",
            bench::http::TOKEN_ENV
        )
    })?;
    let load = bench::http::Load {
        url: url.to_owned(),
        clients: args.load_gen_clients,
        events: args.load_gen_events,
        batch: args.load_gen_batch,
    };
    let line = bench::http::generate(&load, &token).context("the load generator failed")?;
    println!("{line}");
    Ok(())
}

/// The memory probe's side: replay, then print the peak RSS.
fn probe(config: &Config, args: &BenchArgs, log: &std::path::Path) -> Result<()> {
    let missing = |flag: &str| anyhow::anyhow!("the memory probe needs --{flag}");
    let probe = memory::Probe {
        log: log.to_owned(),
        until: args
            .rss_probe_until
            .ok_or_else(|| missing("rss-probe-until"))?,
        plugin: args.plugin.clone().ok_or_else(|| missing("plugin"))?,
        cache: args
            .rss_probe_cache
            .clone()
            .ok_or_else(|| missing("rss-probe-cache"))?,
        out: args
            .rss_probe_out
            .clone()
            .ok_or_else(|| missing("rss-probe-out"))?,
    };
    let line = memory::run_probe(&probe, config).context("the memory probe failed")?;
    println!("{line}");
    Ok(())
}
