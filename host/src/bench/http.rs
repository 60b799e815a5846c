//! Append throughput through the HTTP API. The real server runs in this process on a
//! loopback port; the load comes from a **separate process** (this binary again, in its
//! hidden load-generator mode), so the clients' own work is not charged to the server's
//! two cores' bookkeeping inside one process and the figure is what an outside client
//! sees. Concurrency and events per request are swept.
//!
//! Both sides also report the CPU time they spent per event (the process CPU clock,
//! every thread), so the figure can be split between the server and its clients: on a
//! machine where both share the cores, that split is what says which one a faster
//! figure needs.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use super::cpu::CpuSpent;
use crate::api::{self, ApiState, Token};
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Engine, EngineOptions, LogCheck};
use crate::log::EventLog;

/// Concurrent HTTP clients of the headline figure `append_http_eps`.
pub const CLIENTS: usize = 32;

/// The client counts of the single-event sweep.
pub const SWEEP_CLIENTS: [usize; 3] = [4, 16, 64];

/// Events per request in the batched figures.
pub const BATCH_EVENTS: usize = 100;

/// The client counts of the batched sweep.
pub const BATCH_SWEEP_CLIENTS: [usize; 2] = [2, 8];

/// The environment variable that hands the bearer token to the load generator (not its
/// command line, which other users of the machine can read).
pub const TOKEN_ENV: &str = "REFRACT_BENCH_LOAD_TOKEN";

/// How long one socket read, write or connect of the load generator may take before it
/// gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the load generator is asked to do.
#[derive(Debug, Clone)]
pub struct Load {
    /// The server's base URL.
    pub url: String,
    /// Concurrent clients, each on a thread with a connection of its own.
    pub clients: usize,
    /// Events in all.
    pub events: usize,
    /// Events per request; 0 for the floor: each request an empty batch, which the
    /// server refuses (422) after authentication, admission and parsing, before the log.
    /// `events` then counts requests.
    pub batch: usize,
}

/// One HTTP run's throughput and where its CPU went.
#[derive(Debug, Clone, Copy)]
pub struct HttpRun {
    /// Events per second, as the load generator timed them.
    pub events_per_second: f64,
    /// CPU time of the server's process (every thread) per event, in microseconds.
    pub server_cpu_us_per_event: f64,
    /// CPU time of the load generator's process per event, in microseconds.
    pub client_cpu_us_per_event: f64,
}

/// The load generator's side (`refract bench --load-gen-url …`): posts `load.events`
/// events from `load.clients` threads and prints one line, `<events> <seconds>
/// <cpu seconds>`, the last being this process's CPU time over the run.
pub fn generate(load: &Load, token: &str) -> Result<String> {
    ensure!(
        load.clients >= 1,
        "the load generator needs at least one client"
    );
    let cpu = CpuSpent::now();
    let requests = load.events.div_ceil(load.batch.max(1));
    let per_client = requests.div_ceil(load.clients);
    let bearer = format!("Bearer {token}");
    let start = Arc::new(std::sync::Barrier::new(load.clients + 1));
    let clients: Vec<_> = (0..load.clients)
        .map(|client| {
            let (url, bearer, start, batch) =
                (load.url.clone(), bearer.clone(), start.clone(), load.batch);
            let first = client * per_client;
            let last = requests.min(first + per_client);
            let total = load.events;
            thread::spawn(move || -> Result<usize> {
                // Timeouts per socket read and write and per connect, not per request:
                // with a global or per-call timeout ureq resolves the host on a thread
                // of its own for every request, pooled connection or not, which cost
                // this process a thread creation (~200 µs of CPU) per request on the
                // very cores the server is measured on.
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .proxy(None)
                    .timeout_connect(Some(REQUEST_TIMEOUT))
                    .timeout_per_read(Some(REQUEST_TIMEOUT))
                    .timeout_per_write(Some(REQUEST_TIMEOUT))
                    .build()
                    .new_agent();
                let endpoint = format!("{url}/v1/streams/bench-{client}/events");
                start.wait();
                let mut sent = 0;
                let mut body = String::new();
                for request in first..last {
                    let events = batch.min(total.saturating_sub(request * batch));
                    body.clear();
                    body.push('[');
                    for index in 0..events {
                        if index > 0 {
                            body.push(',');
                        }
                        body.push_str(&format!(
                            r#"{{"type":"money.deposited","data":{{"account":"bench-{client}","amount":{request}}}}}"#
                        ));
                    }
                    body.push(']');
                    let response = agent
                        .post(&endpoint)
                        .header("Authorization", &bearer)
                        .header("Content-Type", "application/json")
                        .send(body.as_str())
                        .with_context(|| format!("client {client}: request {request} failed"))?;
                    let status = response.status().as_u16();
                    let expected = if batch == 0 { 422 } else { 200 };
                    ensure!(
                        status == expected,
                        "client {client}: request {request} was answered {status}, not {expected}"
                    );
                    // Reading the reply to its end is what hands the connection back to
                    // the agent's pool: an unread body closes it, and every request then
                    // pays a TCP connect and close, which no real client does.
                    response
                        .into_body()
                        .read_to_vec()
                        .with_context(|| format!("client {client}: reply {request} failed"))?;
                    // The floor counts requests.
                    sent += events.max(usize::from(batch == 0));
                }
                Ok(sent)
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut sent = 0;
    for client in clients {
        sent += client
            .join()
            .map_err(|_| anyhow!("an HTTP client panicked"))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu.elapsed().process;
    Ok(format!("{sent} {seconds} {cpu_seconds}"))
}

/// Starts the server in this process over a fresh data directory at `root`, runs the
/// load generator `exe` against it with `load` (its URL filled in), checks that the log
/// holds every event, and returns events per second as the load generator timed them,
/// with both processes' CPU time per event.
pub fn run(root: &Path, config: &Config, exe: &Path, mut load: Load) -> Result<HttpRun> {
    let data = DataDir::new(root);
    std::fs::create_dir_all(data.plugins())?;
    let log = EventLog::open(&data.events_db(), config.log_options())?;
    // The server's own runtime, sized like `refract serve` on this machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let options = EngineOptions {
        data_dir: data.clone(),
        plugins_dir: data.plugins(),
        config: config.clone(),
        log_check: LogCheck::Strict,
    };
    let engine = Arc::new(Engine::start(&options, &log, runtime.handle())?);
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    load.url = format!("http://{}", listener.local_addr()?);
    let token = Token::generate();
    let state = ApiState::new(
        log.clone(),
        Arc::clone(&engine),
        config.server.clone(),
        token.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(api::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let cpu = CpuSpent::now();
    let measured = run_generator(exe, &load, token.secret());
    let server_cpu_seconds = cpu.elapsed().process;
    let _ = stop.send(());
    runtime.block_on(server)??;
    engine.shutdown();
    let generated = measured?;
    let sent = generated.events;
    let logged = if load.batch == 0 { 0 } else { sent as u64 };
    ensure!(
        sent == load.events && log.head()? == logged,
        "the load generator sent {sent} of {} {} and the log holds {} events",
        load.events,
        if load.batch == 0 {
            "empty requests"
        } else {
            "events"
        },
        log.head()?
    );
    let per_event_us = |cpu_seconds: f64| cpu_seconds * 1e6 / sent as f64;
    Ok(HttpRun {
        events_per_second: sent as f64 / generated.seconds,
        server_cpu_us_per_event: per_event_us(server_cpu_seconds),
        client_cpu_us_per_event: per_event_us(generated.cpu_seconds),
    })
}

/// What the load generator printed.
struct Generated {
    events: usize,
    seconds: f64,
    cpu_seconds: f64,
}

/// Runs the load generator process and reads its `<events> <seconds> <cpu seconds>`
/// line.
fn run_generator(exe: &Path, load: &Load, token: &str) -> Result<Generated> {
    let output = Command::new(exe)
        .args(["bench", "--load-gen-url", &load.url])
        .args(["--load-gen-clients", &load.clients.to_string()])
        .args(["--load-gen-events", &load.events.to_string()])
        .args(["--load-gen-batch", &load.batch.to_string()])
        .env(TOKEN_ENV, token)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start the load generator {}", exe.display()))?;
    if !output.status.success() {
        let _ = std::io::stderr().write_all(&output.stderr);
        bail!("the load generator failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let parse = || -> Option<Generated> {
        let mut fields = line.split(' ');
        let generated = Generated {
            events: fields.next()?.parse().ok()?,
            seconds: fields.next()?.parse().ok()?,
            cpu_seconds: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(generated)
    };
    parse().ok_or_else(|| {
        anyhow!("the load generator printed {line:?}, not `<events> <seconds> <cpu seconds>`")
    })
}
