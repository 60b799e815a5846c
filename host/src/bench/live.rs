//! Live latency: from the start of an `append` call to the event being visible in the
//! read model, through the real engine (`Engine::start` on a plugins folder holding
//! `balances.wasm`), read by a separate read-only connection the way a query would.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Engine, EngineOptions, LogCheck};
use crate::log::EventLog;
use crate::workload;

/// How often the reader looks at the read model while waiting for an event. It bounds
/// the figure's resolution; polling faster would steal a core from the writer and the
/// worker on a small machine.
pub const POLL_INTERVAL: Duration = Duration::from_micros(50);

/// How long one event may take to become visible before the measurement gives up.
pub const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the engine may take to catch up with the seed events.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Latencies of one live run, in the order measured.
pub struct LiveRun {
    /// Append-to-visible latency of each event.
    pub latencies: Vec<Duration>,
}

/// Runs the engine on a fresh data directory `root` holding a log with the
/// workload's account openings, waits for it to catch up, then appends `samples` events
/// one at a time, each after the previous one became visible, and times each.
pub fn run(
    root: &Path,
    wasm: &[u8],
    config: &Config,
    seed: u64,
    samples: usize,
) -> Result<LiveRun> {
    let data = DataDir::new(root);
    let plugins = data.plugins();
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create {}", plugins.display()))?;
    std::fs::write(plugins.join("balances.wasm"), wasm)?;
    let log = EventLog::open(&data.events_db(), config.log_options())?;
    let mut events = workload::balances(seed, workload::BALANCES_ACCOUNTS + samples);
    log.append(events.by_ref().take(workload::BALANCES_ACCOUNTS).collect())?;

    // The async runtime only wakes the worker; the worker runs on its own thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("refract-bench-async")
        .enable_all()
        .build()?;
    let options = EngineOptions {
        data_dir: data.clone(),
        plugins_dir: plugins,
        config: config.clone(),
        log_check: LogCheck::Strict,
    };
    let engine = Engine::start(&options, &log, runtime.handle())?;
    let measured = (|| {
        if let Some(rejected) = engine.rejected().first() {
            bail!(
                "the engine refused {}: {}",
                rejected.path.display(),
                rejected.reason
            );
        }
        let status = engine
            .status()
            .into_iter()
            .find(|status| status.projector == "balances")
            .ok_or_else(|| anyhow!("the engine runs no `balances` projector"))?;
        let db = data.version_db(&status.projector, &status.version);
        let reader = wait_caught_up(&db, log.head()?)?;
        let mut visible = reader.prepare("SELECT last_offset FROM balances WHERE account = ?1")?;

        let mut latencies = Vec::with_capacity(samples);
        for event in events {
            let account = account_of(&event.data)?;
            let started = Instant::now();
            let offset = log.append(vec![event])?[0];
            let offset = i64::try_from(offset)?;
            loop {
                let seen: Option<i64> =
                    visible.query_row([&account], |row| row.get(0)).optional()?;
                if seen.is_some_and(|seen| seen >= offset) {
                    break;
                }
                if started.elapsed() > VISIBLE_TIMEOUT {
                    bail!("event {offset} was not visible after {VISIBLE_TIMEOUT:?}");
                }
                thread::sleep(POLL_INTERVAL);
            }
            latencies.push(started.elapsed());
        }
        Ok(LiveRun { latencies })
    })();
    engine.shutdown();
    measured
}

/// Waits until the read model at `db` exists and reflects the log up to `head`, and
/// returns a read-only connection to it.
fn wait_caught_up(db: &Path, head: u64) -> Result<Connection> {
    let started = Instant::now();
    let head = i64::try_from(head)?;
    loop {
        if db.exists() {
            let conn = Connection::open_with_flags(
                db,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            let checkpoint: Option<i64> = conn
                .query_row(
                    "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
                    [],
                    |row| row.get(0),
                )
                .optional()
                .unwrap_or(None);
            if checkpoint.is_some_and(|checkpoint| checkpoint >= head) {
                return Ok(conn);
            }
        }
        ensure!(
            started.elapsed() < CATCH_UP_TIMEOUT,
            "the engine did not catch up with {head} events within {CATCH_UP_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The `account` field of a `balances` event's data.
fn account_of(data: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Account {
        account: String,
    }
    Ok(serde_json::from_str::<Account>(data)?.account)
}
