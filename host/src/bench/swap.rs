//! The swap figures, through the real engine: how long a hot swap takes once the
//! shadow has caught up, and how many reads fail or go stale while a query loop runs
//! through a whole deploy.
//!
//! The new version is the same `balances` component with one custom section added:
//! different bytes, so a different version and a full shadow replay, but the same
//! logic, so the figure measures the swap and not a change of projector.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use rusqlite::{Connection, OpenFlags};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{Engine, EngineOptions, LogCheck};
use crate::log::EventLog;
use crate::workload;

/// How long the engine may take to catch up, or to finish the deploy.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// One deploy, measured.
pub struct SwapRun {
    /// From the shadow being found caught up to the new version serving, as the
    /// engine timed it.
    pub swap: Duration,
    /// Reads made during the deploy.
    pub reads: u64,
    /// Reads that failed, saw an empty table, or saw the checkpoint go backwards.
    pub failed_reads: u64,
}

/// `wasm` with a custom section appended: a new version that behaves the same.
pub fn retag(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let low = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(low);
                return;
            }
            out.push(low | 0x80);
        }
    }
    let name = b"refract-version-tag";
    let mut section = Vec::new();
    leb128(name.len(), &mut section);
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    let mut bytes = wasm.to_vec();
    bytes.push(0); // custom section id
    leb128(section.len(), &mut bytes);
    bytes.extend_from_slice(&section);
    bytes
}

/// Runs the engine on a fresh data directory `root` with `events` events of the
/// workload, waits for `balances` to serve them, then deploys a retagged copy while a
/// reader queries the active read model in a loop.
pub fn run(root: &Path, wasm: &[u8], config: &Config, seed: u64, events: usize) -> Result<SwapRun> {
    let data = DataDir::new(root);
    std::fs::create_dir_all(data.plugins())?;
    std::fs::write(data.plugins().join("balances.wasm"), wasm)?;
    let log = EventLog::open(&data.events_db(), config.log_options())?;
    let workload: Vec<_> = workload::balances(seed, events).collect();
    for chunk in workload.chunks(1000) {
        log.append(chunk.to_vec())?;
    }
    let head = log.head()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let options = EngineOptions {
        data_dir: data.clone(),
        plugins_dir: data.plugins(),
        config: config.clone(),
        log_check: LogCheck::Strict,
    };
    let engine = Arc::new(Engine::start(&options, &log, runtime.handle())?);
    wait(TIMEOUT, "balances to serve the whole log", || {
        read_once(&engine).is_ok_and(|(checkpoint, _)| checkpoint == head)
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
        thread::spawn(move || {
            let (mut reads, mut failed, mut last) = (0_u64, 0_u64, 0_u64);
            while !stop.load(Ordering::Relaxed) {
                reads += 1;
                match read_once(&engine) {
                    Ok((checkpoint, rows)) if rows > 0 && checkpoint >= last => last = checkpoint,
                    _ => failed += 1,
                }
            }
            (reads, failed)
        })
    };
    let deployed = engine.deploy(&retag(wasm, "bench"))?;
    let outcome = wait(TIMEOUT, "the new version to serve", || {
        engine
            .read_model("balances")
            .is_some_and(|model| model.version == deployed.version)
    });
    stop.store(true, Ordering::Relaxed);
    let (reads, failed_reads) = reader.join().map_err(|_| anyhow!("the reader panicked"))?;
    outcome?;
    let swap = engine
        .last_swap_duration()
        .context("the engine did not time the swap")?;
    engine.shutdown();
    Ok(SwapRun {
        swap,
        reads,
        failed_reads,
    })
}

/// The active read model's checkpoint and row count, read in one transaction, the way
/// the API's query endpoint reads.
fn read_once(engine: &Engine) -> Result<(u64, u64)> {
    let model = engine
        .read_model("balances")
        .context("no active version yet")?;
    let mut conn = Connection::open_with_flags(&model.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let tx = conn.transaction()?;
    let checkpoint: i64 =
        tx.query_row("SELECT log_offset FROM _refract_checkpoint", [], |row| {
            row.get(0)
        })?;
    let rows: i64 = tx.query_row("SELECT count(*) FROM balances", [], |row| row.get(0))?;
    Ok((u64::try_from(checkpoint)?, u64::try_from(rows)?))
}

fn wait(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
