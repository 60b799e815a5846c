//! Consumer-group throughput: three members share the benchmark's log through the real
//! HTTP API, started in-process on a loopback port, each long-polling a batch and
//! acking it in one request, until the group has committed the whole log.
//!
//! Method: the three members first join (each polls and acks one event), so the
//! partitions are split before the clock starts. The figure is the events delivered
//! and acked after that, divided by the time from then until the group's committed
//! position reaches the log head. Every event must be acked exactly once with no
//! redelivery, or the run fails.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use serde_json::{Value, json};

use crate::api::{self, ApiState, Token};
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Engine, EngineOptions, LogCheck};
use crate::groups::Groups;
use crate::log::EventLog;

/// Members of the measured group, as the figure defines it.
pub const MEMBERS: usize = 3;

/// Events each poll asks for (the host caps it at `consumers.max_poll_events`).
pub const POLL_EVENTS: usize = 1000;

/// How long a poll waits for events when none is ready.
const POLL_WAIT_MS: u64 = 200;

/// The most events the figure consumes: enough for a steady rate, without doubling a
/// run at 1M events.
pub const MAX_EVENTS: u64 = 200_000;

/// The group's name.
const GROUP: &str = "bench";

/// How long one socket read, write or connect of a member may take before it gives up.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(60);

/// Consumes the log at `log_path` (its first [`MAX_EVENTS`] events) with [`MEMBERS`]
/// members over HTTP and returns events delivered and acked per second.
pub fn run(root: &Path, log_path: &Path, config: &Config) -> Result<f64> {
    let data = DataDir::new(root);
    std::fs::create_dir_all(data.plugins())?;
    let log = EventLog::open(log_path, config.log_options())?;
    let head = log.head()?.min(MAX_EVENTS);
    ensure!(
        head > MEMBERS as u64,
        "the consumer figure needs more than {MEMBERS} events"
    );
    let mut config = config.clone();
    config.consumers.max_poll_events = config.consumers.max_poll_events.max(POLL_EVENTS);
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
    let groups = Groups::start(&log, &data.control_db(), &config)?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let token = Token::generate();
    let state = ApiState::new(log, Arc::clone(&engine), config.server, token.clone());
    state.attach_groups(Arc::clone(&groups));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(api::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let joined = Arc::new(Barrier::new(MEMBERS + 1));
    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let members: Vec<_> = (0..MEMBERS)
        .map(|index| {
            let member = Member {
                // Per-socket timeouts, not a global one: with a global timeout ureq
                // resolves the host on a new thread for every request (see
                // `super::http`), CPU charged to the cores the server is measured on.
                agent: ureq::Agent::config_builder()
                    .proxy(None)
                    .timeout_connect(Some(MEMBER_TIMEOUT))
                    .timeout_per_read(Some(MEMBER_TIMEOUT))
                    .timeout_per_write(Some(MEMBER_TIMEOUT))
                    .build()
                    .new_agent(),
                url: url.clone(),
                bearer: format!("Bearer {}", token.secret()),
                name: format!("member-{index}"),
            };
            let (joined, done, acked) =
                (Arc::clone(&joined), Arc::clone(&done), Arc::clone(&acked));
            thread::spawn(move || member.consume(head, &joined, &done, &acked))
        })
        .collect();
    joined.wait();
    let started = Instant::now();
    let already = acked.load(Ordering::Acquire);
    let mut outcome = Ok(());
    for member in members {
        let result = member
            .join()
            .map_err(|_| anyhow!("a consumer-group member panicked"))
            .and_then(|result| result);
        if let Err(error) = result {
            done.store(true, Ordering::Release);
            outcome = Err(error);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let view = groups.view(GROUP, Instant::now());
    let _ = stop.send(());
    runtime.block_on(server)??;
    groups.shutdown();
    engine.shutdown();
    outcome?;
    let view = view?;
    ensure!(
        view.committed >= head,
        "the group committed {} of {head} events",
        view.committed
    );
    ensure!(
        view.redeliveries == 0,
        "{} events were delivered twice: the figure is not of a clean run",
        view.redeliveries
    );
    let consumed = acked.load(Ordering::Acquire) - already;
    Ok(consumed as f64 / seconds)
}

/// One member, over HTTP.
struct Member {
    agent: ureq::Agent,
    url: String,
    bearer: String,
    name: String,
}

impl Member {
    fn post(&self, action: &str, body: &Value) -> Result<Value> {
        let text = self
            .agent
            .post(format!("{}/v1/groups/{GROUP}/{action}", self.url))
            .header("Authorization", &self.bearer)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .with_context(|| format!("{}: {action} failed", self.name))?
            .into_body()
            .read_to_string()?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Polls `max` events, acks them; returns how many and the committed position.
    fn poll_and_ack(&self, max: usize, head: u64) -> Result<(u64, u64)> {
        let polled = self.post(
            "poll",
            &json!({"member": self.name, "max_events": max, "wait_ms": POLL_WAIT_MS}),
        )?;
        let offsets: Vec<u64> = polled["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|event| event["offset"].as_u64())
                    .filter(|offset| *offset <= head)
                    .collect()
            })
            .unwrap_or_default();
        if offsets.is_empty() {
            return Ok((0, polled["committed"].as_u64().unwrap_or(0)));
        }
        let answer = self.post("ack", &json!({"member": self.name, "offsets": offsets}))?;
        let acked = answer["acked"].as_u64().unwrap_or(0);
        ensure!(
            acked == offsets.len() as u64,
            "{}: acked {acked} of {} delivered events: {answer}",
            self.name,
            offsets.len()
        );
        Ok((acked, answer["committed"].as_u64().unwrap_or(0)))
    }

    /// Joins (one event), waits for the others, then consumes until the group has
    /// committed `head`.
    fn consume(
        &self,
        head: u64,
        joined: &Barrier,
        done: &AtomicBool,
        acked: &AtomicU64,
    ) -> Result<()> {
        let first = self.poll_and_ack(1, head);
        if let Ok((count, _)) = &first {
            acked.fetch_add(*count, Ordering::AcqRel);
        }
        // Waited for even after a failure, so the others are not left waiting.
        joined.wait();
        first?;
        while !done.load(Ordering::Acquire) {
            let (count, committed) = self.poll_and_ack(POLL_EVENTS, head)?;
            acked.fetch_add(count, Ordering::AcqRel);
            if committed >= head {
                done.store(true, Ordering::Release);
            }
        }
        self.post("leave", &json!({"member": self.name}))?;
        Ok(())
    }
}
