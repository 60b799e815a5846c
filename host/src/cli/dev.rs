//! `refract dev [DIR]`: a local host for one projector project, rebuilt on every save
//! (see [`crate::devkit::dev`] for the loop). The host runs on a data folder of its own,
//! `<DIR>/.refract-dev` unless `--data-dir` names one, with the HTTP API on loopback.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::api::{self, ApiState, Token};
use crate::config::{Config, PromoteMode};
use crate::data_dir::DataDir;
use crate::devkit::dev::{self, DevEvent, DevLoop};
use crate::devkit::fixture;
use crate::devkit::manifest::Manifest;
use crate::engine::{Engine, EngineOptions, LogCheck};
use crate::log::EventLog;

/// Run a projector project on a local host, rebuilding and swapping on every save.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The project folder holding `projector.toml`.
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Wait for Enter (or `refract promote`) before each swap, after the diff.
    #[arg(long)]
    pub manual: bool,
    /// The loopback address to serve the HTTP API on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub bind: String,
    /// Leave an empty log empty, instead of appending the project's fixture events.
    #[arg(long)]
    pub no_seed: bool,
}

/// Runs `refract dev`; `data_dir` is the one given with `--data-dir`, if any.
pub fn run(
    data_dir: Option<&Path>,
    config: Config,
    args: &DevArgs,
    token: Option<&str>,
) -> Result<()> {
    let manifest = Manifest::load(&args.dir)?;
    manifest.require_projector("dev")?;
    let root = manifest
        .root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.root.display()))?;
    let manifest = Manifest::load(&root)?;
    let data =
        DataDir::new(data_dir.map_or_else(|| root.join(dev::DEFAULT_DEV_DIR), Path::to_path_buf));
    std::fs::create_dir_all(data.root())
        .with_context(|| format!("cannot create {}", data.root().display()))?;
    let _lock = data.lock_host()?;

    let mut config = config;
    // The loop swaps, after it has shown the diff; the engine must not swap first.
    config
        .projectors
        .entry(manifest.name.clone())
        .or_default()
        .promote = PromoteMode::Manual;

    let token = match token {
        Some(secret) => Token::new(secret).context("invalid --token / REFRACT_TOKEN")?,
        None => {
            Token::load_or_create(&data)
                .context("cannot set up the API token file")?
                .0
        }
    };
    let log = EventLog::open(&data.events_db(), config.log_options())
        .with_context(|| format!("cannot use the data directory `{}`", data.root().display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("refract-async")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let signal = {
        let _context = runtime.enter();
        super::run::shutdown_signal()?
    };
    let listener = runtime.block_on(super::run::bind_listener(&args.bind, false))?;
    let address = listener
        .local_addr()
        .context("cannot read the address the API listens on")?;
    let server_config = config.server.clone();
    let options = EngineOptions {
        data_dir: data.clone(),
        plugins_dir: data.plugins(),
        config,
        log_check: LogCheck::Strict,
    };
    let engine = Arc::new(
        Engine::start(&options, &log, runtime.handle())
            .context("cannot start the projection engine")?,
    );

    println!("dev: `{}` in {}", manifest.name, root.display());
    println!("dev: data in {}", data.root().display());
    println!(
        "dev: http api on http://{address} (token in {})",
        Token::file(&data).display()
    );
    if !args.no_seed {
        seed(&log, &manifest)?;
    }

    let (events, inbox) = mpsc::channel();
    let _watcher = dev::watch(&manifest.watch, events.clone()).map_err(anyhow::Error::msg)?;
    let watched: Vec<String> = manifest
        .watch
        .iter()
        .map(|path| {
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    println!(
        "dev: watching {} (Ctrl-C to stop)",
        if watched.is_empty() {
            bail!(
                "projector.toml lists nothing to `watch`; add the source folder, e.g. watch = [\"src\"]"
            )
        } else {
            watched.join(", ")
        }
    );
    if args.manual {
        let keys = events.clone();
        // Each line on stdin is a keypress of Enter; a closed stdin just stops this.
        std::thread::spawn(move || {
            for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
                if keys.send(DevEvent::Enter).is_err() {
                    break;
                }
            }
        });
    }
    let promote_command = format!(
        "refract --data-dir {} --url http://{address} promote {}",
        data.root().display(),
        manifest.name
    );
    let loop_engine = Arc::clone(&engine);
    let loop_data = data;
    let manual = args.manual;
    let looper = std::thread::Builder::new()
        .name("refract-dev".into())
        .spawn(move || {
            let mut say = |line: &str| println!("{line}");
            DevLoop::new(
                &loop_engine,
                loop_data,
                manifest,
                manual,
                promote_command,
                &mut say,
            )
            .run(&inbox);
        })
        .context("cannot start the dev loop")?;

    let state = ApiState::new(log, Arc::clone(&engine), server_config, token);
    let served = runtime.block_on(async {
        api::serve(listener, state, signal)
            .await
            .context("the HTTP API failed")
    });
    let _ = events.send(DevEvent::Stop);
    let _ = looper.join();
    println!("dev: stopping");
    engine.shutdown();
    served
}

/// Appends the events of the project's fixtures to an empty log, so the first version
/// has something to project and every later one a diff to show.
fn seed(log: &EventLog, manifest: &Manifest) -> Result<()> {
    if log.head().context("cannot read the log head")? > 0 || manifest.tests.is_empty() {
        return Ok(());
    }
    let Ok(paths) = fixture::discover(&manifest.tests) else {
        return Ok(());
    };
    for path in paths {
        let loaded = fixture::load(&path)?;
        let count = loaded.events.len();
        if count > 0 {
            log.append(loaded.events)
                .with_context(|| format!("cannot seed the log from {}", path.display()))?;
            println!(
                "dev: seeded the log with {count} events from {}",
                path.display()
            );
        }
    }
    Ok(())
}
