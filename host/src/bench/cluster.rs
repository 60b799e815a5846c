//! `refract bench --cluster`: cluster mode measured on loopback.
//!
//! Starts three `nats-server` processes (JetStream, one cluster, streams with three
//! replicas) in the scratch directory, and cluster nodes in this process (each its own
//! mirror log, no HTTP and no projectors: this measures the replicated append path and
//! the mirrors, not the API, which `append_http_eps` covers). Each measurement uses a
//! fresh stream, so every mirror starts empty.
//!
//! - `cluster_append_single_eps_{1,3}n`: single-event appends from
//!   [`SINGLE_APPENDERS`] concurrent tasks spread over 1 or 3 nodes.
//! - `cluster_append_batch_eps_{1,3}n`: batches of [`BATCH_EVENTS`] from
//!   [`BATCH_APPENDERS`] tasks per node.
//! - `cluster_mirror_lag_p50_msgs` / `_p99_msgs`: every node's replication lag (stream
//!   head minus mirror position, as `/metrics` reports it), sampled every
//!   [`LAG_SAMPLE`] during the three-node single-event run.
//! - `cluster_visible_elsewhere_p50_ms` / `_p99_ms`: from starting an append on one
//!   node to the event being in another node's mirror, one append at a time.
//! - `cluster_catch_up_eps`: a node that joins with an empty data directory after the
//!   three-node batched run, copying the whole stream into its mirror.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::report::{Figure, quantile};
use crate::cluster::config::Credentials;
use crate::cluster::status::MirrorState;
use crate::cluster::{ClusterConfig, ClusterNode, ClusterTasks};
use crate::log::{Durability, EventLog, LogOptions, NewEvent};

/// Concurrent single-event appenders, in total, spread over the nodes.
pub const SINGLE_APPENDERS: usize = 32;

/// Concurrent batch appenders per node.
pub const BATCH_APPENDERS: usize = 4;

/// Events per batch in the batched figures.
pub const BATCH_EVENTS: usize = 100;

/// How often the lag sampler reads every node's status.
pub const LAG_SAMPLE: Duration = Duration::from_millis(5);

/// Appends timed one at a time for the visibility figure.
pub const VISIBILITY_SAMPLES: usize = 300;

/// How long the NATS cluster and each node get to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `nats-server` processes, killed when dropped.
struct LocalNats {
    children: Vec<Child>,
    urls: Vec<String>,
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn nats_binary() -> Result<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin/nats-server")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    candidates
        .into_iter()
        .find(|candidate| candidate.is_file())
        .context("`refract bench --cluster` needs nats-server: apt-get install -y nats-server")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalNats {
    /// Three clustered servers with JetStream, stores under `dir`.
    fn start(dir: &Path) -> Result<LocalNats> {
        let binary = nats_binary()?;
        let clients = [free_port()?, free_port()?, free_port()?];
        let routes = [free_port()?, free_port()?, free_port()?];
        let route_urls: Vec<String> = routes
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect();
        let mut nats = LocalNats {
            children: Vec::new(),
            urls: clients
                .iter()
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect(),
        };
        for index in 0..3 {
            let store = dir.join(format!("nats{index}"));
            std::fs::create_dir_all(&store)?;
            let config = format!(
                "server_name: bench{index}\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: refract-bench\n listen: 127.0.0.1:{}\n routes: [{}] }}\n",
                clients[index],
                store.display(),
                routes[index],
                route_urls.join(", ")
            );
            let path = dir.join(format!("nats{index}.conf"));
            std::fs::write(&path, config)?;
            let child = Command::new(&binary)
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            nats.children.push(child);
        }
        Ok(nats)
    }
}

/// Cluster nodes on one fresh stream.
struct Nodes {
    nodes: Vec<(ClusterNode, ClusterTasks, EventLog)>,
}

impl Nodes {
    async fn start(nats: &LocalNats, dir: &Path, stream: &str, count: usize) -> Result<Nodes> {
        let mut nodes = Nodes { nodes: Vec::new() };
        nodes.add(nats, dir, stream, count).await?;
        Ok(nodes)
    }

    /// Starts `count` more nodes and waits until every node follows the stream.
    async fn add(
        &mut self,
        nats: &LocalNats,
        dir: &Path,
        stream: &str,
        count: usize,
    ) -> Result<()> {
        let first = self.nodes.len();
        let nodes = &mut self.nodes;
        for index in first..first + count {
            let log = EventLog::open(
                &dir.join(format!("{stream}-n{index}/events.db")),
                LogOptions {
                    durability: Durability::Normal,
                    ..LogOptions::default()
                },
            )?;
            let config = ClusterConfig {
                urls: nats.urls.clone(),
                node: format!("n{index}"),
                stream: stream.to_owned(),
                replicas: 3,
                credentials: Credentials::None,
                publish_timeout: Duration::from_secs(30),
                lease_timeout: crate::cluster::config::DEFAULT_LEASE_TIMEOUT,
                api_url: None,
                shared_snapshots: crate::cluster::config::SharedSnapshotLimits::default(),
            };
            let (node, tasks) = ClusterNode::start(config, log.clone()).await?;
            nodes.push((node, tasks, log));
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !nodes
            .iter()
            .all(|(node, _, _)| node.status().mirror == MirrorState::Following)
        {
            if Instant::now() > deadline {
                let views: Vec<_> = nodes.iter().map(|(node, _, _)| node.status()).collect();
                bail!("the cluster nodes did not start following the stream: {views:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn stop(self) {
        for (_, tasks, _) in self.nodes {
            tasks.shutdown().await;
        }
    }
}

fn deposit(account: &str) -> NewEvent {
    NewEvent::new(
        account,
        "money.deposited",
        format!(r#"{{"account":"{account}","amount":1}}"#),
    )
}

/// Appends `total` events from `appenders` tasks (round-robin over the nodes), in
/// requests of `per_request` events; returns events per second.
async fn throughput(
    nodes: &Nodes,
    total: usize,
    appenders: usize,
    per_request: usize,
) -> Result<f64> {
    let per_task = total.div_ceil(appenders).div_ceil(per_request);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..appenders {
        let node = nodes.nodes[task % nodes.nodes.len()].0.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..per_task {
                let batch = (0..per_request)
                    .map(|i| deposit(&format!("acct-{task}-{}", (round + i) % 50)))
                    .collect();
                node.append(batch).await?;
            }
            Ok::<usize, crate::cluster::AppendError>(per_task * per_request)
        }));
    }
    let mut appended = 0;
    for task in tasks {
        appended += task.await??;
    }
    Ok(appended as f64 / started.elapsed().as_secs_f64())
}

/// Samples every node's lag until `stop` is set.
async fn sample_lag(nodes: Vec<ClusterNode>, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<f64> {
    let mut samples = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for node in &nodes {
            if let Some(lag) = node.status().lag {
                samples.push(lag as f64);
            }
        }
        tokio::time::sleep(LAG_SAMPLE).await;
    }
    samples
}

/// One append at a time on the first node; the time until the second node's mirror
/// has it, in milliseconds.
async fn visibility(nodes: &Nodes) -> Result<Vec<f64>> {
    let (writer, _, _) = &nodes.nodes[0];
    let (_, _, reader) = &nodes.nodes[1];
    let mut head = reader.watch_head();
    let mut samples = Vec::with_capacity(VISIBILITY_SAMPLES);
    for round in 0..VISIBILITY_SAMPLES {
        let started = Instant::now();
        let offsets = writer
            .append(vec![deposit(&format!("vis-{}", round % 10))])
            .await?;
        let offset = offsets.first().copied().unwrap_or(0);
        while *head.borrow_and_update() < offset {
            tokio::time::timeout(READY_TIMEOUT, head.changed())
                .await
                .context("the other node's mirror did not move")??;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(samples)
}

/// Adds a node with an empty mirror and returns how fast it copies the stream, in
/// events per second.
async fn join_and_catch_up(
    nodes: &mut Nodes,
    nats: &LocalNats,
    dir: &Path,
    stream: &str,
) -> Result<f64> {
    let target = *nodes.nodes[0].2.watch_head().borrow();
    let started = Instant::now();
    nodes.add(nats, dir, stream, 1).await?;
    let (_, _, joined) = nodes.nodes.last().context("the joined node")?;
    let mut head = joined.watch_head();
    while *head.borrow_and_update() < target {
        tokio::time::timeout(READY_TIMEOUT, head.changed())
            .await
            .context("the joining node stopped catching up")??;
    }
    Ok(target as f64 / started.elapsed().as_secs_f64())
}

/// Runs the cluster benchmark: `events` per throughput figure, `reps` repetitions.
///
/// # Errors
/// nats-server missing or not coming up, or an append failing.
pub fn run(
    events: usize,
    reps: usize,
    work_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Figure>> {
    let dir = work_dir.join(format!("refract-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let nats = LocalNats::start(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut single = [Vec::new(), Vec::new()];
    let mut batch = [Vec::new(), Vec::new()];
    let mut lags = Vec::new();
    let mut visible = Vec::new();
    let mut catch_up = Vec::new();
    let result = runtime.block_on(async {
        for rep in 0..reps {
            for (slot, count) in [(0, 1), (1, 3)] {
                progress(&format!(
                    "cluster rep {}/{reps}: {count} node(s), single events",
                    rep + 1
                ));
                let nodes =
                    Nodes::start(&nats, &dir, &format!("BENCH_S{rep}_{count}"), count).await?;
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let sampler = (count == 3).then(|| {
                    let all = nodes
                        .nodes
                        .iter()
                        .map(|(node, _, _)| node.clone())
                        .collect();
                    tokio::spawn(sample_lag(all, Arc::clone(&stop)))
                });
                single[slot].push(throughput(&nodes, events, SINGLE_APPENDERS, 1).await?);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Some(sampler) = sampler {
                    lags.extend(sampler.await?);
                    progress("cluster: append-to-visible on another node");
                    visible.extend(visibility(&nodes).await?);
                }
                nodes.stop().await;

                progress(&format!(
                    "cluster rep {}/{reps}: {count} node(s), batches",
                    rep + 1
                ));
                let stream = format!("BENCH_B{rep}_{count}");
                let mut nodes = Nodes::start(&nats, &dir, &stream, count).await?;
                batch[slot].push(
                    throughput(&nodes, events * 5, BATCH_APPENDERS * count, BATCH_EVENTS).await?,
                );
                if count == 3 {
                    progress("cluster: a new node catching up");
                    catch_up.push(join_and_catch_up(&mut nodes, &nats, &dir, &stream).await?);
                }
                nodes.stop().await;
            }
        }
        Ok::<(), anyhow::Error>(())
    });
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let [single_1, single_3] = single;
    let [batch_1, batch_3] = batch;
    Ok(vec![
        Figure::measured("cluster_append_single_eps_1n", "events/s", 0, single_1),
        Figure::measured("cluster_append_single_eps_3n", "events/s", 0, single_3),
        Figure::measured("cluster_append_batch_eps_1n", "events/s", 0, batch_1),
        Figure::measured("cluster_append_batch_eps_3n", "events/s", 0, batch_3),
        Figure::measured(
            "cluster_mirror_lag_p50_msgs",
            "messages",
            0,
            vec![quantile(&lags, 0.5)],
        ),
        Figure::measured(
            "cluster_mirror_lag_p99_msgs",
            "messages",
            0,
            vec![quantile(&lags, 0.99)],
        ),
        Figure::measured(
            "cluster_visible_elsewhere_p50_ms",
            "ms",
            2,
            vec![quantile(&visible, 0.5)],
        ),
        Figure::measured(
            "cluster_visible_elsewhere_p99_ms",
            "ms",
            2,
            vec![quantile(&visible, 0.99)],
        ),
        Figure::measured("cluster_catch_up_eps", "events/s", 0, catch_up),
    ])
}

/// The figures as a table: name, median, unit, every repetition.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::from("cluster mode on loopback (3 nats-server, replicas 3)\n");
    for figure in figures {
        let (median, reps) = match &figure.measurement {
            super::Measurement::Measured { median, reps } => (*median, reps.clone()),
            super::Measurement::NotMeasured(why) => {
                out.push_str(&format!("{:<36} not measured: {why}\n", figure.name));
                continue;
            }
        };
        let reps: Vec<String> = reps
            .iter()
            .map(|value| format!("{value:.prec$}", prec = figure.decimals))
            .collect();
        out.push_str(&format!(
            "{:<36} {:>12.prec$} {:<9} reps: {}\n",
            figure.name,
            median,
            figure.unit,
            reps.join(", "),
            prec = figure.decimals
        ));
    }
    out
}
