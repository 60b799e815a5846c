//! Peak memory of a replay, measured in a child process so that one measurement does not
//! inherit another's high-water mark (nor the benchmark's own buffers).
//!
//! The parent re-executes the `refract` binary as `refract bench --rss-probe-log <log>
//! --rss-probe-until <n> ...` (hidden flags); the child replays the log up to offset
//! `n` through the WASM projector, exactly as `refract project` does, and prints its
//! peak resident set (`VmHWM` in `/proc/self/status`) as one line: `vmhwm_kib <n>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::config::Config;
use crate::engine::{BatchLimits, Projection, Step};
use crate::log::EventLog;
use crate::runtime::{DbOptions, Runtime, RuntimeConfig};

/// The prefix of the child's one line of output.
const REPORT_PREFIX: &str = "vmhwm_kib ";

/// What the child process replays.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The event log to replay.
    pub log: PathBuf,
    /// The last offset to replay.
    pub until: u64,
    /// The projector component.
    pub plugin: PathBuf,
    /// The compile cache (warm, so the child does not measure Cranelift).
    pub cache: PathBuf,
    /// The read model to create; it must not exist.
    pub out: PathBuf,
}

/// The process's peak resident set so far, in KiB (`VmHWM`), on Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs in the child: replays as [`Probe`] says and returns the line to print.
pub fn run_probe(probe: &Probe, config: &Config) -> Result<String> {
    let wasm = std::fs::read(&probe.plugin)
        .with_context(|| format!("cannot read {}", probe.plugin.display()))?;
    let log = EventLog::open(&probe.log, config.log_options())?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(probe.cache.clone()),
        limits: config.limits.clone(),
    })?;
    let loaded = runtime.load(&wasm)?;
    let batch = BatchLimits {
        max_events: config.engine.batch_size,
        max_bytes: config.engine.batch_bytes,
    };
    let mut projection = Projection::open(
        loaded,
        &probe.out,
        DbOptions::replay(),
        log.reader()?,
        batch,
    )?;
    while projection.step(Some(probe.until))? != Step::CaughtUp {}
    projection.sync()?;
    ensure!(
        projection.checkpoint() == probe.until,
        "the replay stopped at {} instead of {}",
        projection.checkpoint(),
        probe.until
    );
    let peak = peak_rss_kib().ok_or_else(|| anyhow!("VmHWM is not in /proc/self/status"))?;
    Ok(format!("{REPORT_PREFIX}{peak}"))
}

/// The child's command line for `probe`.
fn command(exe: &Path, probe: &Probe) -> Command {
    let mut command = Command::new(exe);
    command
        .arg("bench")
        .arg("--rss-probe-log")
        .arg(&probe.log)
        .arg("--rss-probe-until")
        .arg(probe.until.to_string())
        .arg("--rss-probe-cache")
        .arg(&probe.cache)
        .arg("--rss-probe-out")
        .arg(&probe.out)
        .arg("--plugin")
        .arg(&probe.plugin);
    command
}

/// Runs `probe` in a child process of the `refract` binary `exe` and returns its peak
/// resident set in MiB.
pub fn measure(exe: &Path, probe: &Probe) -> Result<f64> {
    let output = command(exe, probe)
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !output.status.success() {
        bail!(
            "the memory probe ({}) failed ({}): {}",
            exe.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let kib: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix(REPORT_PREFIX))
        .ok_or_else(|| anyhow!("the memory probe printed no `{REPORT_PREFIX}` line: {stdout}"))?
        .trim()
        .parse()?;
    Ok(kib as f64 / 1024.0)
}
