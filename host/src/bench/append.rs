//! Append throughput through the library: batches from one thread, and single events
//! from many threads at once (which is what group commit is for).

use std::io::Write as _;
use std::path::Path;
use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, ensure};
use rusqlite::{Connection, OpenFlags};

use crate::log::{EventLog, LogOptions, NewEvent};
use crate::workload;

/// Events per `append` call in the batched figure, as the issue specifies.
pub const APPEND_BATCH_EVENTS: usize = 1_000;

/// Threads appending one event per call at once in the group-commit figure.
pub const SINGLE_APPEND_THREADS: usize = 16;

/// Events appended one per call in the group-commit figure, at most: enough for a
/// steady state of a second or more, few enough that the figure does not dominate a
/// large run.
pub const SINGLE_APPEND_MAX_EVENTS: usize = 50_000;

/// Removes a log file and its WAL and shared-memory files, if present.
pub fn remove_log(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {name:?}")),
        }
    }
    Ok(())
}

/// The stream every event goes to in the one-stream variant of the batched figure.
pub const ONE_STREAM: &str = "account-all";

/// Appends the first `events` events of the seeded `balances` workload to a fresh log
/// at `path`, [`APPEND_BATCH_EVENTS`] per call from one thread, and returns events per
/// second. The events are generated before the clock starts; the log is left on disk.
///
/// With `one_stream`, every event goes to the stream [`ONE_STREAM`] instead of its
/// account's: the same rows, but appended at the right edge of the `(stream,
/// stream_version)` index instead of at a random one of a thousand places, which shows
/// what that index costs.
pub fn batch_eps(
    path: &Path,
    options: &LogOptions,
    seed: u64,
    events: usize,
    one_stream: bool,
) -> Result<f64> {
    let mut batches: Vec<Vec<NewEvent>> = Vec::with_capacity(events / APPEND_BATCH_EVENTS + 1);
    let mut batch = Vec::with_capacity(APPEND_BATCH_EVENTS);
    for mut event in workload::balances(seed, events) {
        if one_stream {
            ONE_STREAM.clone_into(&mut event.stream);
        }
        batch.push(event);
        if batch.len() == APPEND_BATCH_EVENTS {
            batches.push(std::mem::replace(
                &mut batch,
                Vec::with_capacity(APPEND_BATCH_EVENTS),
            ));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    remove_log(path)?;
    let log = EventLog::open(path, options.clone())?;
    let started = Instant::now();
    for batch in batches {
        log.append(batch)?;
    }
    let elapsed = started.elapsed();
    ensure!(
        log.head()? == events as u64,
        "the log holds {} events, not {events}",
        log.head()?
    );
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// What [`single_eps`] measured.
pub struct SingleAppends {
    /// Events per second.
    pub events_per_second: f64,
    /// Events per group commit, on average: how well group commit amortised the fsync.
    pub events_per_commit: f64,
}

/// Appends `events` events of the seeded workload to a fresh log at `path`, one event
/// per call from [`SINGLE_APPEND_THREADS`] threads started together.
pub fn single_eps(
    path: &Path,
    options: &LogOptions,
    seed: u64,
    events: usize,
) -> Result<SingleAppends> {
    let mut shares: Vec<Vec<NewEvent>> = vec![Vec::new(); SINGLE_APPEND_THREADS];
    for (index, event) in workload::balances(seed, events).enumerate() {
        shares[index % SINGLE_APPEND_THREADS].push(event);
    }
    remove_log(path)?;
    let log = EventLog::open(path, options.clone())?;
    let start = Barrier::new(SINGLE_APPEND_THREADS + 1);
    let elapsed = std::thread::scope(|scope| -> Result<_> {
        let threads: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let (log, start) = (&log, &start);
                scope.spawn(move || -> Result<()> {
                    start.wait();
                    for event in share {
                        log.append(vec![event])?;
                    }
                    Ok(())
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        for thread in threads {
            thread
                .join()
                .map_err(|_| anyhow!("an appending thread panicked"))??;
        }
        Ok(started.elapsed())
    })?;
    ensure!(
        log.head()? == events as u64,
        "the log holds {} events, not {events}",
        log.head()?
    );
    drop(log);
    Ok(SingleAppends {
        events_per_second: events as f64 / elapsed.as_secs_f64(),
        events_per_commit: events as f64 / commits(path)? as f64,
    })
}

/// How many group commits wrote the log at `path`. Every event of a group gets the
/// same `recorded_at` and later groups a later one (equal only if the clock did not
/// move in between, which would undercount), so this is the number of distinct values.
fn commits(path: &Path) -> Result<u64> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let commits: i64 = conn.query_row(
        "SELECT count(DISTINCT recorded_at) FROM events",
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(commits)?.max(1))
}

/// Bytes written before each fsync in [`fsync_ms`]: a small WAL commit.
const FSYNC_PROBE_BYTES: usize = 8 * 1024;

/// Writes of the fsync probe.
const FSYNC_PROBES: usize = 200;

/// The disk's commit latency in `dir`: the median time, in milliseconds, to write
/// [`FSYNC_PROBE_BYTES`] and `fdatasync` them, as `dd oflag=dsync bs=8k` does. With
/// `synchronous=FULL`, every group commit pays about this once.
pub fn fsync_ms(dir: &Path) -> Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = vec![0u8; FSYNC_PROBE_BYTES];
    let mut times = Vec::with_capacity(FSYNC_PROBES);
    for _ in 0..FSYNC_PROBES {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(super::median(&times))
}
