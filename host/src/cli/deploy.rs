//! `refract deploy path.wasm [--wait]`: uploads a projector component to the running
//! host, which replays the log into a shadow and swaps it in. With `--wait`, follows
//! the replay with a progress bar (on a terminal) until the swap.
//!
//! With no host running, the component is validated here and copied into the plugins
//! folder (temporary file, then rename), where `refract run` picks it up.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Client, ClientError, wire};
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::runtime::{Runtime, RuntimeConfig};

/// How often `--wait` asks the host for progress.
const POLL: Duration = Duration::from_millis(250);

/// How long a caught-up shadow may stay a shadow before `--wait` stops waiting for an
/// automatic swap (it may be `promote = "manual"`, or held by a diff gate).
const SWAP_GRACE: Duration = Duration::from_secs(5);

/// Deploy a projector component.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The component (`.wasm`).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Wait for the replay and the swap, showing progress on a terminal.
    #[arg(long)]
    pub wait: bool,

    /// The plugins folder to copy into when no host is running (default:
    /// `<data-dir>/plugins`, or `plugins_dir` in the configuration file).
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,
}

/// Runs `refract deploy`.
pub fn run(data: &DataDir, config: &Config, args: &DeployArgs, client: &Client) -> Result<()> {
    let wasm = std::fs::read(&args.path)
        .with_context(|| format!("cannot read `{}`", args.path.display()))?;
    // Loading it here checks it before anything is sent or copied, and names the
    // projector. It fills the shared compile cache, so the host's load is quick.
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(data.cache()),
        limits: config.limits.clone(),
    })
    .context("cannot start the WebAssembly runtime")?;
    let loaded = runtime.load(&wasm).with_context(|| {
        format!(
            "`{}` is not a valid projector component",
            args.path.display()
        )
    })?;
    let name = loaded.info().name.clone();
    let deleting = crate::retention::config::deleting_overlap(
        &config.retention.policies().unwrap_or_default(),
        &loaded.info().subscriptions.stream_prefixes,
    );
    if !deleting.is_empty() {
        tracing::warn!(projector = %name, prefixes = ?deleting, "deploying a projector over streams retention deletes");
        eprintln!(
            "warning: projector `{name}` reads streams under {deleting:?}, where retention deletes \
             events for good (mode = \"delete\"): a new version's read model will not reflect \
             the deleted history. Use mode = \"archive\" to keep it replayable."
        );
    }

    let path = format!("/v1/projectors/{name}/versions");
    let deployment: wire::Deployment = match client.post_bytes(&path, &wasm) {
        Ok(deployment) => deployment,
        Err(ClientError::Unreachable { url, .. }) => {
            let plugins = args
                .plugins
                .clone()
                .or_else(|| config.plugins_dir.clone())
                .unwrap_or_else(|| data.plugins());
            let target = copy_into(&plugins, &name, &wasm)?;
            println!(
                "no refract host answers at {url}; copied projector `{name}` (version {}) to {}",
                loaded.version(),
                target.display()
            );
            println!(
                "`refract run` deploys it when it starts, or at once if it is watching that folder."
            );
            if args.wait {
                eprintln!("note: --wait needs a running host; nothing to wait for");
            }
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    match deployment.outcome.as_str() {
        "already-active" => {
            println!(
                "projector `{}` version {} is already active; nothing to do",
                deployment.projector, deployment.version
            );
            return Ok(());
        }
        "already-deploying" => println!(
            "projector `{}` version {} is already replaying",
            deployment.projector, deployment.version
        ),
        _ => println!(
            "deployed projector `{}` version {}: replaying the log into a fresh read model",
            deployment.projector, deployment.version
        ),
    }
    if args.wait {
        wait(client, &deployment.projector, &deployment.version)?;
    }
    Ok(())
}

/// Writes the component into the plugins folder as `<name>.wasm`, whole: a temporary
/// file first, then a rename, so the watching host never reads half a file.
fn copy_into(plugins: &Path, name: &str, wasm: &[u8]) -> Result<PathBuf> {
    std::fs::create_dir_all(plugins)
        .with_context(|| format!("cannot create the plugins folder `{}`", plugins.display()))?;
    let target = plugins.join(format!("{name}.wasm"));
    // Not `*.wasm`, so the host ignores it until the rename.
    let temp = plugins.join(format!(".{name}.wasm.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::write(&temp, wasm)?;
        std::fs::File::open(&temp)?.sync_all()?;
        std::fs::rename(&temp, &target)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
        .with_context(|| format!("cannot write `{}`", target.display()))?;
    Ok(target)
}

/// Follows a deployment until it is active, failed or waiting for a manual promote.
fn wait(client: &Client, name: &str, version: &str) -> Result<()> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:32}] {pos}/{len} events  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{name} {version}"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let path = format!("/v1/projectors/{name}");
    let mut caught_up_since: Option<Instant> = None;
    let outcome = loop {
        let view: wire::Projector = client.get(&path, &[])?;
        let Some(entry) = view.versions.iter().find(|v| v.version == version) else {
            break Err(anyhow::anyhow!(
                "version {version} of `{name}` is gone (aborted?)"
            ));
        };
        let status = entry.status.as_ref();
        let catching_up = status.is_some_and(|s| s.state == "catching-up");
        match entry.role.as_str() {
            "active" if !catching_up => {
                let state = status.map_or_else(String::new, |s| format!(" ({})", s.state));
                break Ok(format!(
                    "projector `{name}` now serves version {version}{state}"
                ));
            }
            "failed" => {
                let why = status
                    .and_then(|s| s.last_error.clone())
                    .unwrap_or_else(|| "see `refract status`".to_owned());
                break Err(anyhow::anyhow!(
                    "version {version} of `{name}` failed: {why}"
                ));
            }
            "retired" | "previous" => {
                break Err(anyhow::anyhow!(
                    "version {version} of `{name}` was {} before it was swapped in",
                    if entry.role == "retired" {
                        "retired"
                    } else {
                        "replaced"
                    }
                ));
            }
            "shadow" if status.is_some_and(|s| s.state == "live") => {
                let since = *caught_up_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SWAP_GRACE {
                    break Ok(format!(
                        "version {version} of `{name}` has caught up but is not swapped in \
                         (promote = \"manual\", or a diff gate holds it); run `refract promote {name}`"
                    ));
                }
            }
            _ => caught_up_since = None,
        }
        if let Some(bar) = &bar {
            show(bar, entry);
        }
        std::thread::sleep(POLL);
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!("{}", outcome?);
    Ok(())
}

/// Updates the bar from a version's replay progress (or status, for a first version).
fn show(bar: &ProgressBar, entry: &wire::Version) {
    let (done, total, rate, eta) = match (&entry.replay, &entry.status) {
        (Some(replay), _) => (
            replay.done,
            replay.total,
            replay.events_per_second,
            replay.eta_seconds,
        ),
        (None, Some(status)) => {
            let eta = (status.events_per_second > 0.0)
                .then(|| status.lag() as f64 / status.events_per_second);
            (
                status.checkpoint,
                status.head,
                status.events_per_second,
                eta,
            )
        }
        (None, None) => (0, 0, 0.0, None),
    };
    bar.set_length(total);
    bar.set_position(done.min(total));
    let eta = eta.map_or_else(|| "-".to_owned(), |s| format!("{}s", s.ceil() as u64));
    let state = entry
        .status
        .as_ref()
        .map_or_else(String::new, |s| format!("  {}", s.state));
    bar.set_message(format!("{rate:.0} events/s  ETA {eta}{state}"));
}
