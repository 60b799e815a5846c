//! Archive replay against live-log replay: the same events replayed through the WASM
//! projector from a log whose history is in the archive, and from the log itself.
//!
//! Method: the benchmark's log is copied (`VACUUM INTO`), and retention archives every
//! event of the copy but each stream's newest (a policy of `max_events_per_stream = 1`
//! on every stream): with the workload's 1000 accounts, all but 1000 events move into
//! zstd segments. Each repetition then replays both logs into fresh read models, in
//! alternating order, and the two read models must be identical (checksum) or the run
//! fails. The archiving itself is not timed.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, Result, ensure};
use rusqlite::{Connection, OpenFlags};

use crate::engine::BatchLimits;
use crate::log::{ColdTier, EventLog, LogOptions};
use crate::retention::pass::Pass;
use crate::retention::{Archive, Mode, Policy};
use crate::runtime::LoadedProjector;

use super::replay::{checksum, replay_wasm};

/// A copy of the log at `log_path` in `root`, with everything but each stream's newest
/// event archived. Returns the copy and how many events were archived.
pub fn archived_copy(log_path: &Path, root: &Path) -> Result<(EventLog, u64)> {
    let copy = root.join("events.db");
    let source = Connection::open_with_flags(log_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    source
        .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
        .context("cannot copy the benchmark's log")?;
    drop(source);
    let log = EventLog::open(&copy, LogOptions::default())?;
    let archive = Arc::new(Archive::open(&root.join("archive"))?);
    log.attach_cold_tier(Arc::clone(&archive) as Arc<dyn ColdTier>);
    let policies = [Policy {
        prefix: String::new(),
        max_age: None,
        max_events_per_stream: Some(1),
        max_bytes: None,
        mode: Mode::Archive,
    }];
    let mut pruner = log.pruner()?;
    let mut cursor = 0;
    loop {
        let (report, next) = Pass {
            log: &log,
            pruner: &mut pruner,
            archive: Some(&archive),
            policies: &policies,
            floor: u64::MAX,
            now: SystemTime::now(),
        }
        .run(cursor)?;
        cursor = next;
        if report.complete {
            break;
        }
    }
    let archived = log.horizon()?.archived_events;
    ensure!(
        archived > 0,
        "retention archived nothing of the benchmark's log"
    );
    Ok((log, archived))
}

/// One repetition: events/s of the live-log replay and of the archive replay of the
/// first `head` events, into fresh databases in `root`, checked identical.
pub fn replay_both(
    loaded: &LoadedProjector,
    live: &EventLog,
    archived: &EventLog,
    root: &Path,
    batch: BatchLimits,
    head: u64,
    archive_first: bool,
) -> Result<(f64, f64)> {
    let live_db = root.join("live.db");
    let archive_db = root.join("archive.db");
    let run_live = || replay_wasm(loaded, live, &live_db, batch, head);
    let run_archive = || replay_wasm(loaded, archived, &archive_db, batch, head);
    let (live_time, archive_time) = if archive_first {
        let archive_time = run_archive()?;
        (run_live()?, archive_time)
    } else {
        let live_time = run_live()?;
        (live_time, run_archive()?)
    };
    let (a, b) = (checksum(&live_db)?, checksum(&archive_db)?);
    ensure!(
        a == b,
        "the archive replay built a different read model:\n  live:    {a}\n  archive: {b}"
    );
    for db in [&live_db, &archive_db] {
        std::fs::remove_file(db).with_context(|| format!("cannot remove {}", db.display()))?;
    }
    let rate = |seconds: f64| head as f64 / seconds;
    Ok((
        rate(live_time.as_secs_f64()),
        rate(archive_time.as_secs_f64()),
    ))
}
