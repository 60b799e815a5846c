//! `refract run`: the long-running host. Keeps every projector in the plugins folder
//! up to date with the log and serves the HTTP API until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::api::{self, ApiState, Token};
use crate::cluster::{ClusterConfig, ClusterNode};
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Engine, EngineHooks, EngineOptions, LogCheck, integrity};
use crate::groups::Groups;
use crate::log::EventLog;

/// Run the host.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The folder of projector components (default: `<data-dir>/plugins`, or
    /// `plugins_dir` in the configuration file).
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,

    /// The address to serve the HTTP API on (default: `server.bind` in the
    /// configuration file, else 127.0.0.1:7070).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,

    /// Allow binding an address other than loopback, which makes the API reachable
    /// from the network (every endpoint but /health still needs the token).
    #[arg(long)]
    pub allow_remote: bool,

    /// Run as a cluster node: the NATS servers holding the replicated log,
    /// comma-separated, e.g. `nats://h1:4222,nats://h2:4222` (replaces `cluster.urls`).
    #[arg(long, value_name = "URLS")]
    pub cluster: Option<String>,

    /// This node's name in the cluster, unique among its nodes (replaces
    /// `cluster.node`).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// Runs the host until a shutdown signal. `token` is `--token` / `REFRACT_TOKEN`;
/// without it the data directory's token file is used, generated on the first start.
pub fn run(data: &DataDir, config: Config, args: &RunArgs, token: Option<&str>) -> Result<()> {
    let plugins_dir = args
        .plugins
        .clone()
        .or_else(|| config.plugins_dir.clone())
        .unwrap_or_else(|| data.plugins());
    config
        .server
        .validate()
        .map_err(|problem| anyhow::anyhow!("invalid configuration: {problem}"))?;
    let bind = args
        .bind
        .clone()
        .unwrap_or_else(|| config.server.bind.clone());
    let cluster_config = ClusterConfig::resolve(
        config.cluster.as_ref(),
        args.cluster.as_deref(),
        args.node.as_deref(),
    )?;
    let _lock = data.lock_host()?;
    let token = match token {
        Some(secret) => Token::new(secret).context("invalid --token / REFRACT_TOKEN")?,
        None => {
            let (token, created) =
                Token::load_or_create(data).context("cannot set up the API token file")?;
            if created {
                tracing::info!(path = %Token::file(data).display(), "generated the API token");
            }
            token
        }
    };
    // Before the log is opened, which would create a missing one. A cluster node's log is
    // a mirror that catches up from JetStream, so there a missing one is only behind.
    if cluster_config.is_none() {
        integrity::check_log_exists(data)?;
    }
    let log_check = if cluster_config.is_some() {
        LogCheck::MayTrail
    } else {
        LogCheck::Strict
    };
    let log = EventLog::open(&data.events_db(), config.log_options())
        .with_context(|| format!("cannot use the data directory `{}`", data.root().display()))?;
    // Before any reader exists: replays must see the archive from their first batch.
    crate::retention::attach_archive(&log, data.root())
        .with_context(|| format!("cannot use the archive of `{}`", data.root().display()))?;
    // The async runtime waits (signals, worker wake-ups) and serves HTTP; guest calls
    // run on each projector's own thread and SQLite on the blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("refract-async")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Signals are caught from here on: a SIGTERM during startup still ends in an
    // orderly shutdown instead of killing the process mid-write.
    let signal = {
        let _context = runtime.enter();
        shutdown_signal()?
    };
    let listener = runtime.block_on(bind_listener(&bind, args.allow_remote))?;
    let address = listener
        .local_addr()
        .context("cannot read the address the API listens on")?;
    let server_config = config.server.clone();
    // In cluster mode the mirror starts before the engine: an empty data directory
    // starts catching up at once, and the engine's workers follow the mirror's head.
    let cluster = cluster_config
        .map(|mut cluster| {
            // Where the other nodes proxy queries for projectors placed here.
            cluster
                .api_url
                .get_or_insert_with(|| format!("http://{address}"));
            runtime.block_on(ClusterNode::start(cluster, log.clone()))
        })
        .transpose()
        .context("cannot start cluster mode")?;
    let options = EngineOptions {
        data_dir: data.clone(),
        plugins_dir: plugins_dir.clone(),
        config,
        log_check,
    };
    // A cluster node hears of every local deploy, to give it to the whole cluster.
    // and of every swap, for its swap records; and it starts the active versions of
    // projectors in the middle of a coordinated swap held at its offset.
    let (deploy_hooks, receivers) = match &cluster {
        Some((node, _)) => {
            let (deploys, local) = tokio::sync::mpsc::unbounded_channel();
            let (swaps, swapped) = tokio::sync::mpsc::unbounded_channel();
            let hooks = EngineHooks {
                deploys: Some(deploys),
                swaps: Some(swaps),
                holds: runtime.block_on(crate::cluster::deploys::promote::startup_holds(node)),
            };
            (hooks, Some((local, swapped)))
        }
        None => (EngineHooks::default(), None),
    };
    let engine = Arc::new(
        Engine::start_with_hooks(&options, &log, runtime.handle(), deploy_hooks)
            .context("cannot start the projection engine")?,
    );
    let mut cluster = cluster;
    if let (Some((node, tasks)), Some((local, swapped))) = (cluster.as_mut(), receivers) {
        let _context = runtime.enter();
        node.start_deploys(Arc::clone(&engine), local, swapped, tasks);
    }

    println!("refract is running on {}", data.root().display());
    println!("  event log:   {}", data.events_db().display());
    println!("  plugins:     {}", plugins_dir.display());
    println!("  http api:    http://{address}");
    println!("  console:     http://{address}/  (sign in with the api token)");
    if let Some((node, _)) = &cluster {
        let config = node.config();
        println!(
            "  cluster:     node {} on JetStream stream {} via {}",
            config.node,
            config.stream,
            config.urls.join(",")
        );
    }
    match Token::read_file(data) {
        Ok(Some(file)) if file.secret() == token.secret() => {
            println!("  api token:   {}", Token::file(data).display());
        }
        _ => println!("  api token:   from --token / REFRACT_TOKEN"),
    }
    for projector in engine.projectors() {
        println!(
            "  projector:   {} (active version {})",
            projector.name,
            projector.active_version.as_deref().unwrap_or("none yet")
        );
    }
    for rejected in engine.rejected() {
        println!(
            "  refused:     {}: {}",
            rejected.path.display(),
            rejected.reason
        );
    }
    println!(
        "Stop with Ctrl-C. In another terminal: `refract status`, `refract tail`, `refract deploy ...`."
    );

    // In cluster mode each node serves its own groups, from its mirror of the log.
    // Groups keep their positions in `control.db`: a host that started read-only
    // (that file cannot be written) serves everything else and answers group calls
    // with 503 until it is restarted with space to write.
    let groups = match Groups::start(&log, &data.control_db(), engine.config()) {
        Ok(groups) => Some(groups),
        Err(error) if engine.read_only().is_some() => {
            tracing::warn!(
                "consumer groups are not served while the host is read-only: {}",
                crate::error_text::one_line(&error)
            );
            None
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context("cannot start the consumer groups"));
        }
    };
    let (state, cluster_tasks) = match cluster {
        Some((node, tasks)) => (
            ApiState::clustered(log, node, Arc::clone(&engine), server_config, token),
            Some(tasks),
        ),
        None => (
            ApiState::new(log, Arc::clone(&engine), server_config, token),
            None,
        ),
    };
    if let Some(groups) = &groups {
        state.attach_groups(Arc::clone(groups));
    }
    let retention = start_retention(&engine, groups.as_ref(), data)?;
    if let Some(retention) = &retention {
        state.attach_retention(Arc::clone(retention));
    }
    let served = runtime.block_on(async {
        api::serve(listener, state, signal)
            .await
            .context("the HTTP API failed")
    });
    tracing::info!("shutting down: finishing the batches in flight");
    if let Some(retention) = retention {
        retention.shutdown();
    }
    if let Some(groups) = groups {
        groups.shutdown();
    }
    if let Some(tasks) = cluster_tasks {
        runtime.block_on(tasks.shutdown());
    }
    engine.shutdown();
    served
}

/// Starts retention's background passes, holding back for every running projector
/// version and every group that holds retention. Not in cluster mode (each node's log is
/// a mirror of JetStream, whose own retention applies) nor on a read-only host.
fn start_retention(
    engine: &Arc<Engine>,
    groups: Option<&Arc<Groups>>,
    data: &DataDir,
) -> Result<Option<Arc<crate::retention::Retention>>> {
    let config = &engine.config().retention;
    if engine.config().cluster.is_some() || engine.read_only().is_some() {
        if !config.prefixes.is_empty() {
            tracing::warn!(
                "retention policies are not applied on a cluster node or a read-only host"
            );
        }
        return Ok(None);
    }
    let holders = crate::retention::engine_holders(Arc::clone(engine), groups.cloned());
    let retention = crate::retention::Retention::start(engine.log(), data.root(), config, holders)
        .context("cannot start retention")?;
    Ok(Some(Arc::new(retention)))
}

/// Binds the API's listener, refusing a non-loopback address unless allowed.
pub(super) async fn bind_listener(
    bind: &str,
    allow_remote: bool,
) -> Result<tokio::net::TcpListener> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(bind)
        .await
        .with_context(|| {
            format!("cannot resolve the API address `{bind}`; use host:port, e.g. 127.0.0.1:7070")
        })?
        .collect();
    let Some(first) = addresses.first().copied() else {
        bail!("the API address `{bind}` resolves to nothing; use host:port, e.g. 127.0.0.1:7070");
    };
    let remote = addresses.iter().any(|address| !address.ip().is_loopback());
    if remote && !allow_remote {
        bail!(
            "refusing to serve the API on {first}, which other machines can reach; \
             pass --allow-remote to do it anyway, or bind 127.0.0.1"
        );
    }
    if remote {
        tracing::warn!(
            address = %first,
            "the HTTP API is reachable from the network: keep the token secret, and put TLS in front of it"
        );
        eprintln!(
            "warning: the HTTP API listens on {first}, reachable from the network; keep the token secret and put TLS in front of it"
        );
    }
    tokio::net::TcpListener::bind(first)
        .await
        .with_context(|| format!("cannot listen on {first} (is another host running there?)"))
}

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM. Installs the handlers now, so
/// a failure to do so is reported before the host starts serving.
pub(super) fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
