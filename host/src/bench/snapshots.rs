//! Snapshots of the `balances` read model: taking one, recovering from one against a
//! full replay, and point-in-time queries, cold and warm.
//!
//! Method, on the benchmark's log of `--events` events:
//! - a read model is replayed to `snapshot_at` = head minus [`recovery_tail`]; the
//!   figure `snapshot_ms` is one [`Store::take`] of it (`VACUUM INTO`, sync, sha256,
//!   manifest), `snapshot_mib` the file's size;
//! - `recovery_snapshot_ms` seeds a fresh file from that snapshot (checksum verified)
//!   and replays the tail to the head; `recovery_replay_ms` replays the whole log into
//!   a fresh file: what a lost read model costs with and without a snapshot;
//! - `pit_query_cold_ms` is a point-in-time query halfway through the tail on an empty
//!   cache (seed, replay, query; the component's compile cache is warm), and
//!   `pit_query_warm_ms` the same query again, answered from the materialised copy.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::engine::{BatchLimits, Projection, Step};
use crate::log::EventLog;
use crate::runtime::{DbOptions, LoadedProjector};
use crate::snapshots::point_in_time::PointInTime;
use crate::snapshots::store::{Reason, SnapshotEntry, Store};

/// The projector measured.
const NAME: &str = "balances";

/// The query a point-in-time figure runs.
const QUERY: &str = "SELECT count(*), sum(balance) FROM balances";

/// Events replayed on top of the snapshot: a tenth of the log, at most 100k.
pub fn recovery_tail(head: u64) -> u64 {
    (head / 10).clamp(1, 100_000)
}

/// What one repetition measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Taking the snapshot.
    pub snapshot: Duration,
    /// Its size.
    pub snapshot_bytes: u64,
    /// Seeding from it and catching up to the head.
    pub recovery_snapshot: Duration,
    /// Replaying the whole log instead.
    pub recovery_replay: Duration,
    /// A point-in-time query on an empty cache.
    pub pit_cold: Duration,
    /// The same query again.
    pub pit_warm: Duration,
}

/// One repetition in `root` (a fresh folder), on `log`; `plugin` is the component's
/// file and `cache` the warm compile cache.
pub fn run(
    root: &Path,
    loaded: &LoadedProjector,
    plugin: &Path,
    cache: &Path,
    log: &EventLog,
    batch: BatchLimits,
    config: &Config,
) -> Result<Measured> {
    let head = log.head()?;
    ensure!(head >= 2, "the snapshot figures need at least two events");
    let snapshot_at = head - recovery_tail(head).min(head - 1);
    let data = DataDir::new(root);
    std::fs::create_dir_all(root)?;
    std::os::unix::fs::symlink(cache, data.cache()).context("cannot share the compile cache")?;
    let version = loaded.version().to_owned();

    let source = root.join("source.db");
    replay(loaded, log, &source, batch, snapshot_at)?;
    let store = Store::new(&data);
    let started = Instant::now();
    let entry = store.take(NAME, &version, &source, Some(plugin), Reason::OnDemand, 1)?;
    let snapshot = started.elapsed();
    ensure!(
        entry.checkpoint == snapshot_at,
        "the snapshot is at {}, not {snapshot_at}",
        entry.checkpoint
    );

    let from_snapshot = root.join("from-snapshot.db");
    let started = Instant::now();
    recover(&store, &entry, loaded, log, &from_snapshot, batch, head)?;
    let recovery_snapshot = started.elapsed();

    let from_scratch = root.join("from-scratch.db");
    let started = Instant::now();
    replay(loaded, log, &from_scratch, batch, head)?;
    let recovery_replay = started.elapsed();

    let point_in_time = PointInTime::new(&data, config);
    let at = snapshot_at + (head - snapshot_at) / 2;
    let started = Instant::now();
    let cold = query(&point_in_time, log, &version, at)?;
    let pit_cold = started.elapsed();
    let started = Instant::now();
    let warm = query(&point_in_time, log, &version, at)?;
    let pit_warm = started.elapsed();
    ensure!(
        cold == warm,
        "the warm answer {warm:?} differs from the cold one {cold:?}"
    );
    Ok(Measured {
        snapshot,
        snapshot_bytes: entry.bytes,
        recovery_snapshot,
        recovery_replay,
        pit_cold,
        pit_warm,
    })
}

fn replay(
    loaded: &LoadedProjector,
    log: &EventLog,
    db: &Path,
    batch: BatchLimits,
    until: u64,
) -> Result<()> {
    let mut projection = Projection::open(
        loaded.clone(),
        db,
        DbOptions::replay(),
        log.reader()?,
        batch,
    )?;
    while projection.step(Some(until))? != Step::CaughtUp {}
    projection.sync()?;
    ensure!(
        projection.checkpoint() == until,
        "the replay stopped at {}",
        projection.checkpoint()
    );
    Ok(())
}

fn recover(
    store: &Store,
    entry: &SnapshotEntry,
    loaded: &LoadedProjector,
    log: &EventLog,
    db: &Path,
    batch: BatchLimits,
    head: u64,
) -> Result<()> {
    store.seed(NAME, entry, db)?;
    replay(loaded, log, db, batch, head)
}

fn query(
    point_in_time: &PointInTime,
    log: &EventLog,
    version: &str,
    at: u64,
) -> Result<(i64, i64)> {
    let materialised = point_in_time.at_offset(log, NAME, Some(version), at)?;
    let conn = rusqlite::Connection::open_with_flags(
        &materialised.path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    Ok(conn.query_row(QUERY, [], |row| {
        Ok((row.get(0)?, row.get::<_, Option<i64>>(1)?.unwrap_or(0)))
    })?)
}
