//! `refract bench --only levers`: issue 16's levers, each measured off and on in the same
//! run, on the same log, by the same binary. Within a repetition the settings take turns
//! in a rotating order, so that none always runs on the warmest caches.
//!
//! - Replay: the WASM `balances` replay through the engine with the engine's read-ahead
//!   and the log's sequential scan for dense type filters each on or off (four
//!   settings). Every read model is checked against the run's agreed checksum.
//! - Batched appends: the writer's stream-version cache kept across group commits, or
//!   started over at every group (as before issue 16); WAL checkpoints every
//!   [`LogOptions::checkpoint_pages`] pages, or every 1000 (SQLite's default, as before).
//! - Single-event appends from 16 threads: the writer waking every appender itself (the
//!   default), or a reply thread doing it; larger checkpoints, or SQLite's default;
//!   groups written whole first ([`LogOptions::optimistic_groups`]), or with a savepoint
//!   per request always.
//! - The contract ([`contract_round`]): the same `balances` source built for
//!   `refract:projector@0.1.0` (writes as `execute-batch`), for 0.2.0 reading every
//!   field (packed writes on), and for 0.2.0 reading neither ids nor metadata (packed
//!   writes, and the log read without those columns). Each read model is checked
//!   against the run's agreed checksum.
//! - Replay commits ([`batch_round`]): the WASM `balances` replay with the engine's
//!   batch of [`crate::config::DEFAULT_BATCH_EVENTS`] events (one guest call and one
//!   commit each), or of [`LARGE_BATCH_EVENTS`]: fewer commits, so fewer WAL frames of
//!   the same hot pages, and fewer calls.

use std::path::Path;

use anyhow::{Result, ensure};

use super::replay::{self, Checksum};
use super::{append, remove_db};
use crate::engine::BatchLimits;
use crate::log::{EventLog, LogOptions};

/// SQLite's own `wal_autocheckpoint`, the setting before issue 16.
pub const SQLITE_CHECKPOINT_PAGES: u32 = 1_000;
use crate::runtime::LoadedProjector;

/// The larger replay batch of [`batch_round`]: four times the default, and still
/// within the Rust SDK's `FLUSH_WRITES` (4096), so the guest sends one `execute-packed`
/// per batch in both settings.
pub const LARGE_BATCH_EVENTS: usize = 4_000;

/// The two batch sizes of [`batch_round`], in events per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchLevers {
    /// The run's batch (`--batch-size`, by default [`crate::config::DEFAULT_BATCH_EVENTS`]).
    pub default_batch: f64,
    /// [`LARGE_BATCH_EVENTS`] per batch.
    pub large_batch: f64,
}

/// One repetition of the WASM replay with the run's batch and with
/// [`LARGE_BATCH_EVENTS`], in an order that rotates with `rep`, read-ahead and the
/// sequential scan on. Each read model is checked against the run's agreed checksum.
pub fn batch_round(
    loaded: &LoadedProjector,
    log: &EventLog,
    dir: &Path,
    batch: BatchLimits,
    head: u64,
    rep: usize,
    agreed: &Checksum,
) -> Result<BatchLevers> {
    let mut levers = BatchLevers::default();
    for turn in 0..2 {
        let setting = (rep + turn) % 2;
        let limits = if setting == 0 {
            batch
        } else {
            BatchLimits {
                max_events: LARGE_BATCH_EVENTS,
                ..batch
            }
        };
        let db = dir.join(format!("batch-{rep}-{setting}.db"));
        let what = format!("the replay with {} events per batch", limits.max_events);
        let eps = checked_replay_eps(loaded, log, &db, limits, head, agreed, &what)?;
        if setting == 0 {
            levers.default_batch = eps;
        } else {
            levers.large_batch = eps;
        }
    }
    Ok(levers)
}

/// Replays `log` up to `head` into a fresh `db` with read-ahead on, checks the read
/// model against the run's `agreed` checksum (`what` names the setting in the error),
/// removes it, and returns events per second.
fn checked_replay_eps(
    loaded: &LoadedProjector,
    log: &EventLog,
    db: &Path,
    limits: BatchLimits,
    head: u64,
    agreed: &Checksum,
    what: &str,
) -> Result<f64> {
    let took = replay::replay_wasm_with(loaded, log, db, limits, head, true)?;
    let checksum = replay::checksum(db)?;
    ensure!(
        checksum == *agreed,
        "{what} built a different read model ({checksum}) than the run's replays ({agreed})"
    );
    remove_db(db)?;
    Ok(head as f64 / took.as_secs_f64())
}

/// The four replay settings, in events per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayLevers {
    /// Read-ahead and sequential scan both on (the shipped default).
    pub both_on: f64,
    /// Read-ahead off, sequential scan on.
    pub read_ahead_off: f64,
    /// Read-ahead on, sequential scan off (merged index probes per type).
    pub scan_off: f64,
    /// Both off: the replay as it was before issue 16.
    pub both_off: f64,
}

/// One repetition of the four replay settings over the log at `log_path` up to `head`.
/// `log` is the shipped configuration; a second handle with the sequential scan off is
/// opened on the same file. Read models go to `dir` and are removed after their check.
pub fn replay_round(
    loaded: &LoadedProjector,
    log: &EventLog,
    dir: &Path,
    batch: BatchLimits,
    head: u64,
    rep: usize,
    agreed: &Checksum,
) -> Result<ReplayLevers> {
    let no_scan = EventLog::open(
        log.path(),
        LogOptions {
            sequential_scan: false,
            ..log.options().clone()
        },
    )?;
    let mut levers = ReplayLevers::default();
    for turn in 0..4 {
        let setting = (rep + turn) % 4;
        let (handle, read_ahead) = match setting {
            0 => (log, true),
            1 => (log, false),
            2 => (&no_scan, true),
            _ => (&no_scan, false),
        };
        let db = dir.join(format!("lever-{rep}-{setting}.db"));
        let took = replay::replay_wasm_with(loaded, handle, &db, batch, head, read_ahead)?;
        let checksum = replay::checksum(&db)?;
        ensure!(
            checksum == *agreed,
            "the replay with read-ahead {read_ahead} and sequential scan {} built a different \
             read model ({checksum}) than the run's replays ({agreed})",
            setting < 2
        );
        remove_db(&db)?;
        let eps = head as f64 / took.as_secs_f64();
        match setting {
            0 => levers.both_on = eps,
            1 => levers.read_ahead_off = eps,
            2 => levers.scan_off = eps,
            _ => levers.both_off = eps,
        }
    }
    Ok(levers)
}

/// The three append settings, in events per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendLevers {
    /// The stream-version cache and larger checkpoints both on (the default).
    pub both_on: f64,
    /// The stream-version cache started over at every group.
    pub cache_off: f64,
    /// Checkpoints every [`SQLITE_CHECKPOINT_PAGES`] (SQLite's default).
    pub checkpoints_off: f64,
}

/// One repetition of batched appends of `events` events in the three settings, in an
/// order that rotates with `rep`.
pub fn append_round(
    path: &Path,
    options: &LogOptions,
    seed: u64,
    events: usize,
    rep: usize,
) -> Result<AppendLevers> {
    let mut levers = AppendLevers::default();
    for turn in 0..3 {
        let setting = (rep + turn) % 3;
        let options = LogOptions {
            stream_version_cache: setting != 1,
            checkpoint_pages: if setting == 2 {
                SQLITE_CHECKPOINT_PAGES
            } else {
                options.checkpoint_pages
            },
            ..options.clone()
        };
        let eps = append::batch_eps(path, &options, seed, events, false)?;
        match setting {
            0 => levers.both_on = eps,
            1 => levers.cache_off = eps,
            _ => levers.checkpoints_off = eps,
        }
    }
    append::remove_log(path)?;
    Ok(levers)
}

/// The single-event append settings ([`append::single_eps`], 16 threads), in events per
/// second.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleLevers {
    /// The shipped defaults: every lever on but the reply thread.
    pub defaults: f64,
    /// The appenders woken by a reply thread of their own (off by default).
    pub reply_thread_on: f64,
    /// Checkpoints every [`SQLITE_CHECKPOINT_PAGES`] (SQLite's default).
    pub checkpoints_off: f64,
    /// Every group of several requests written with a savepoint per request (as before
    /// [`LogOptions::optimistic_groups`]).
    pub optimistic_groups_off: f64,
}

/// Single-event settings of [`single_round`].
const SINGLE_SETTINGS: usize = 4;

/// One repetition of single-event appends in the four settings, in an order that
/// rotates with `rep`.
pub fn single_round(
    path: &Path,
    options: &LogOptions,
    seed: u64,
    events: usize,
    rep: usize,
) -> Result<SingleLevers> {
    let mut levers = SingleLevers::default();
    for turn in 0..SINGLE_SETTINGS {
        let setting = (rep + turn) % SINGLE_SETTINGS;
        let options = LogOptions {
            reply_thread: setting == 1,
            optimistic_groups: setting != 3,
            checkpoint_pages: if setting == 2 {
                SQLITE_CHECKPOINT_PAGES
            } else {
                options.checkpoint_pages
            },
            ..options.clone()
        };
        let eps = append::single_eps(path, &options, seed, events)?.events_per_second;
        match setting {
            0 => levers.defaults = eps,
            1 => levers.reply_thread_on = eps,
            2 => levers.checkpoints_off = eps,
            _ => levers.optimistic_groups_off = eps,
        }
    }
    append::remove_log(path)?;
    Ok(levers)
}

/// The `balances` builds of [`contract_round`], by package name: 0.1.0, 0.2.0 declaring
/// that it reads every field, and 0.2.0 reading neither ids nor metadata (the example).
pub const CONTRACT_GUESTS: [&str; 3] = ["balances-v01", "balances-all-fields", "balances"];

/// The three contract settings, in events per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContractLevers {
    /// 0.1.0: writes as `execute-batch(list<write>)`, every column read.
    pub packed_off: f64,
    /// 0.2.0, packed writes, every column read.
    pub packed_on: f64,
    /// 0.2.0, packed writes, and neither id nor metadata read from the log.
    pub fewer_columns: f64,
}

/// One repetition of the three contract settings (`loaded` in [`CONTRACT_GUESTS`]'
/// order) over `log` up to `head`, in an order that rotates with `rep`, with the
/// engine's read-ahead on.
pub fn contract_round(
    loaded: &[LoadedProjector; 3],
    log: &EventLog,
    dir: &Path,
    batch: BatchLimits,
    head: u64,
    rep: usize,
    agreed: &Checksum,
) -> Result<ContractLevers> {
    let mut levers = ContractLevers::default();
    for turn in 0..3 {
        let setting = (rep + turn) % 3;
        let db = dir.join(format!("contract-{rep}-{setting}.db"));
        let what = format!("the replay of `{}`", CONTRACT_GUESTS[setting]);
        let eps = checked_replay_eps(&loaded[setting], log, &db, batch, head, agreed, &what)?;
        match setting {
            0 => levers.packed_off = eps,
            1 => levers.packed_on = eps,
            _ => levers.fewer_columns = eps,
        }
    }
    Ok(levers)
}
