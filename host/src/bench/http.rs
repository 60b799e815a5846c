//! Append throughput through the HTTP API: concurrent clients, each posting one event
//! per request to the real server, started in-process on a loopback port.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};

use crate::api::{self, ApiState, Token};
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Engine, EngineOptions, LogCheck};
use crate::log::EventLog;

/// Concurrent HTTP clients, as the issue's figure defines it.
pub const CLIENTS: usize = 32;

/// Appends `events` events through the API from [`CLIENTS`] threads, one event per
/// request, and returns events per second.
pub fn run(root: &Path, config: &Config, events: usize) -> Result<f64> {
    let data = DataDir::new(root);
    std::fs::create_dir_all(data.plugins())?;
    let log = EventLog::open(&data.events_db(), config.log_options())?;
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
    let url = format!("http://{}", listener.local_addr()?);
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

    let per_client = events.div_ceil(CLIENTS);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (url, bearer) = (url.clone(), format!("Bearer {}", token.secret()));
            thread::spawn(move || -> Result<usize> {
                let agent = ureq::Agent::config_builder()
                    .proxy(None)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .new_agent();
                let endpoint = format!("{url}/v1/streams/bench-{client}/events");
                for index in 0..per_client {
                    let body = format!(
                        r#"[{{"type":"money.deposited","data":{{"account":"bench-{client}","amount":{index}}}}}]"#
                    );
                    agent
                        .post(&endpoint)
                        .header("Authorization", &bearer)
                        .header("Content-Type", "application/json")
                        .send(body.as_str())
                        .with_context(|| format!("client {client}: append {index} failed"))?;
                }
                Ok(per_client)
            })
        })
        .collect();
    let mut appended = 0;
    for client in clients {
        appended += client
            .join()
            .map_err(|_| anyhow!("an HTTP client panicked"))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    runtime.block_on(server)??;
    engine.shutdown();
    ensure!(
        log.head()? == appended as u64,
        "the log holds {} events, not {appended}",
        log.head()?
    );
    Ok(appended as f64 / seconds)
}
