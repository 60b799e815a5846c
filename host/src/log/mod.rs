//! The embedded event log: an append-only SQLite file (`events.db`) in WAL mode.
//!
//! Every event gets a global offset (gap-free, from 1), a unique id (client-supplied for
//! idempotent retries, or a generated UUID v7), a version within its stream (gap-free,
//! from 1, with optional optimistic concurrency), a type, JSON data and metadata, and a
//! `recorded_at` in microseconds that never decreases along offsets. This module knows
//! nothing of wasm or HTTP.
//!
//! ```no_run
//! use refract::log::{EventLog, LogOptions, NewEvent, ReadQuery};
//!
//! # fn main() -> Result<(), refract::log::LogError> {
//! let log = EventLog::open("refract-data/events.db".as_ref(), LogOptions::default())?;
//! let offsets = log.append(vec![NewEvent::new("order-1", "OrderPlaced", r#"{"total":42}"#)])?;
//! for event in log.read(&ReadQuery::default())? {
//!     println!("{}", serde_json::to_string(&event?).unwrap_or_default());
//! }
//! # let _ = offsets;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `mod.rs`: [`EventLog`], the facade.
//! - `options.rs`: [`LogOptions`] and every limit, as named constants.
//! - `model.rs`: [`NewEvent`], [`Event`], [`EventRef`] and the time helpers.
//! - `error.rs`: [`LogError`].
//! - `schema.rs`: recognising a Refract log, refusing anything else, migrations.
//! - `append.rs`: validation and the group-committing writer thread.
//! - `ids.rs`: generated UUID v7 event ids.
//! - `query.rs`: [`ReadQuery`] and how each filter maps to an index.
//! - `stream_index.rs`: the deferred stream index: `(stream, version) -> offset`,
//!   written by the writer in sorted chunks, and its watermark.
//! - `read.rs`: [`EventIter`], counts and the [`LogReader`] replay path.
//! - `mirror.rs`: the log as a cluster node's mirror: [`EventLog::apply_ordered`]
//!   applies already-ordered, replicated requests; local appends are then refused.
//! - `horizon.rs`: the retention [`Horizon`] and the [`Pruner`] that removes events
//!   under it in small transactions (retention's policies live in [`crate::retention`]).
//! - `cold.rs`: the [`ColdTier`] seam: replays read archived events, merged by offset.
//! - `tiered.rs`: reads and counts of both tiers at once ([`EventLog::read_with_archive`],
//!   [`EventLog::count_with_archive`]), within an [`ArchiveBudget`]; a client's read
//!   ([`EventLog::read_one_window`]) scans one [`SCAN_WINDOW`] of the live log at most.
//! - [`jsonl`]: events as JSON Lines (`refract append --file`, golden fixtures).
//!
//! # Threads and blocking
//! Every method blocks on SQLite (appends until their group commit is on disk). From async
//! code, call them through `tokio::task::spawn_blocking`; [`EventLog::watch_head`] is the
//! async-friendly way to learn about new events.

mod append;
mod cold;
mod error;
mod horizon;
mod ids;
pub mod jsonl;
mod mirror;
mod model;
mod options;
mod query;
mod read;
mod schema;
mod stream_index;
mod tiered;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use tokio::sync::watch;

pub use cold::{ArchiveBudget, ColdRange, ColdTier};
pub use error::{EventField, LogError};
pub use horizon::{Horizon, PRUNE_CHUNK_EVENTS, Pruner, Removal, VACUUM_STEP_PAGES};
pub use mirror::{MirrorBatch, MirrorOutcome, MirrorPosition, OrderedMessage, OrderedRequest};
pub use model::{
    Event, EventRef, NewEvent, correlation_id, format_timestamp, micros_to_timestamp,
    timestamp_to_micros,
};
pub use options::{
    COUNT_SCAN_WINDOW, DEFAULT_BATCH_SIZE, DEFAULT_BUSY_TIMEOUT, DEFAULT_CACHE_SIZE_KIB,
    DEFAULT_CHECKPOINT_PAGES, DEFAULT_MAX_DATA_BYTES, DEFAULT_MAX_GROUP_EVENTS,
    DEFAULT_MAX_METADATA_BYTES, DEFAULT_STREAM_INDEX_CHUNK, DENSITY_SAMPLE_OFFSETS, Durability,
    LogOptions, MAX_BATCH_SIZE, MAX_CACHED_STREAM_VERSIONS, MAX_FILTER_TERMS, MAX_IDLE_READERS,
    MAX_NAME_CHARS, READER_CACHE_SIZE_KIB, SCAN_WINDOW, SEQUENTIAL_SCAN_MIN_DENSITY,
    STREAM_INDEX_IDLE_AFTER, STREAM_INDEX_PIECE_EVENTS,
};
pub use query::{ReadQuery, StreamFilter};
pub use read::{EventIter, LogReader, ScanResult};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use tiered::{ReadScope, StopReason, TieredCount, TieredRead};

/// The file name of the log inside a data directory.
pub const LOG_FILE_NAME: &str = "events.db";

/// A handle on an open event log. Cheap to clone (all clones share one writer thread and
/// one pool of read connections); `Send + Sync`. The writer thread stops, after finishing
/// what is queued, when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct EventLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    options: LogOptions,
    /// The writer's queue; `None` only while dropping.
    requests: Option<Sender<append::Job>>,
    writer: Option<JoinHandle<()>>,
    head: watch::Receiver<u64>,
    readers: Arc<read::ReaderPool>,
    /// Events appended through this handle's writer since it opened.
    appended: Arc<AtomicU64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it and stop; waiting for it means the
        // write connection is closed (and the WAL checkpointed) when the last handle is gone.
        // Idle readers close first: SQLite checkpoints and removes the WAL only when the
        // last connection to the file closes.
        self.readers.close_idle();
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl EventLog {
    /// Opens the log file at `path` (the `events.db` file, see [`LOG_FILE_NAME`]),
    /// creating it and its parent directories if needed, migrating an older schema.
    ///
    /// Refuses, without altering it, a file that is not SQLite, an SQLite database that
    /// is not a Refract log, and a log written by a newer Refract.
    pub fn open(path: &Path, options: LogOptions) -> Result<EventLog, LogError> {
        let conn = schema::open_writer(path, &options)?;
        let path = path.to_path_buf();
        let head = read::head(&conn)
            .map_err(|source| schema::sqlite_error(&path, "reading the head", source))?;
        let (head_sender, head_receiver) = watch::channel(head);
        let appended = Arc::new(AtomicU64::new(0));
        let (requests, writer) =
            append::spawn_writer(conn, path.clone(), &options, head_sender, appended.clone())?;
        let readers = Arc::new(read::ReaderPool::new(path.clone(), options.clone()));
        Ok(EventLog {
            inner: Arc::new(Inner {
                path,
                options,
                requests: Some(requests),
                writer: Some(writer),
                head: head_receiver,
                readers,
                appended,
            }),
        })
    }

    /// Events appended through this `EventLog` (and its clones) since it was opened;
    /// repeats of an already stored id are not counted.
    pub fn appended_total(&self) -> u64 {
        self.inner.appended.load(Ordering::Relaxed)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.options
    }

    /// Appends a batch atomically: all events or none. Returns one offset per input event,
    /// in order, once the batch is durable (see [`Durability`]).
    ///
    /// An event whose client-supplied id is already stored (earlier, or earlier in this
    /// batch) is a no-op that yields the original offset, with no version check; if every
    /// event is such a duplicate, nothing is written.
    ///
    /// # Errors
    /// [`LogError::InvalidEvent`] (naming the event's position and field) before anything
    /// is written; [`LogError::VersionConflict`] when an `expected_version` does not hold;
    /// [`LogError::Write`] when the commit itself failed.
    pub fn append(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, replied) = mpsc::sync_channel(1);
        self.queue(events, append::ReplyTo::Blocking(reply))?;
        replied.recv().map_err(|_| self.writer_stopped())?
    }

    /// [`EventLog::append`] for async callers: the same batch semantics, but the task
    /// awaits the group commit instead of a thread blocking on it, so a server with many
    /// concurrent appends needs no thread per append. The batch is validated (its JSON
    /// parsed) on the calling task before it is queued.
    pub async fn append_async(&self, events: Vec<NewEvent>) -> Result<Vec<u64>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, replied) = tokio::sync::oneshot::channel();
        self.queue(events, append::ReplyTo::Async(reply))?;
        replied.await.map_err(|_| self.writer_stopped())?
    }

    /// Validates a batch and hands it to the writer, which answers through `reply`
    /// after the group commit. The queue is unbounded: this never blocks.
    fn queue(&self, events: Vec<NewEvent>, reply: append::ReplyTo) -> Result<(), LogError> {
        append::validate(&events, &self.inner.options)?;
        let requests = self
            .inner
            .requests
            .as_ref()
            .ok_or_else(|| self.writer_stopped())?;
        requests
            .send(append::Job::Append(append::Request { events, reply }))
            .map_err(|_| self.writer_stopped())
    }

    /// Checks a batch as [`append`](EventLog::append) would (names, JSON, the size
    /// limits of this log's options) without appending it: for callers that append
    /// elsewhere first, such as a cluster node publishing to the replicated log.
    pub fn validate(&self, events: &[NewEvent]) -> Result<(), LogError> {
        append::validate(events, &self.inner.options)
    }

    /// Where this log stands as a cluster node's mirror, or `None` for a single-node
    /// log. See [`apply_ordered`](EventLog::apply_ordered).
    pub fn mirror_position(&self) -> Result<Option<MirrorPosition>, LogError> {
        let pool = &self.inner.readers;
        let conn = pool.take()?;
        let position = mirror::stored_position(&conn).map_err(|source| {
            schema::sqlite_error(&self.inner.path, "reading the mirror position", source)
        });
        pool.give_back(conn);
        position
    }

    /// Applies messages of a replicated, totally ordered source (a cluster's JetStream
    /// stream) to this log, in one transaction, and records the source position reached.
    ///
    /// This is the only way events enter a mirror. Each request is applied exactly as a
    /// local append would be (ids first, then `expected_version`), so every node applying
    /// the same messages ends with the same events at the same offsets and the same
    /// refusals. The first batch turns an empty log into a mirror of `batch.source`;
    /// from then on [`append`](EventLog::append) is refused with [`LogError::Mirror`].
    ///
    /// Returns each request's outcome; a request's refusal (a version conflict, an
    /// invalid event) is an `Err` inside the outcome, not a failure of the batch.
    ///
    /// # Errors
    /// [`LogError::MirrorMismatch`] when the batch does not continue this log (another
    /// source, a gap in positions, a log that is not empty and not a mirror, events
    /// written by someone else); [`LogError::Sqlite`] when the commit fails. Nothing of
    /// the batch is applied then.
    pub async fn apply_ordered(&self, batch: MirrorBatch) -> Result<MirrorOutcome, LogError> {
        self.mirror_job(mirror::MirrorWork::Apply(batch)).await
    }

    /// Marks this log as the mirror of `source` up to `position`, keeping its events:
    /// the hand-over after `refract cluster init` has published them as the source's
    /// first `position` messages. Refused if the log already is a mirror.
    pub async fn start_mirror(&self, source: String, position: u64) -> Result<(), LogError> {
        self.mirror_job(mirror::MirrorWork::Start { source, position })
            .await
            .map(drop)
    }

    async fn mirror_job(&self, work: mirror::MirrorWork) -> Result<MirrorOutcome, LogError> {
        let (reply, replied) = tokio::sync::oneshot::channel();
        let requests = self
            .inner
            .requests
            .as_ref()
            .ok_or_else(|| self.writer_stopped())?;
        requests
            .send(append::Job::Mirror(mirror::MirrorJob { work, reply }))
            .map_err(|_| self.writer_stopped())?;
        replied.await.map_err(|_| self.writer_stopped())?
    }

    fn writer_stopped(&self) -> LogError {
        LogError::WriterStopped {
            path: self.inner.path.clone(),
        }
    }

    /// The events matching `query` in the live log (never the archive), in offset
    /// order, as of now, read page by page.
    pub fn read(&self, query: &ReadQuery) -> Result<EventIter, LogError> {
        EventIter::new(Arc::clone(&self.inner.readers), query)
    }

    /// The events matching `query`, in offset order, archived ones included: below the
    /// horizon's `archived_through` they are read from the attached archive (if any),
    /// merged with what is still live, as if they had never left. With a `budget` the
    /// read decompresses at most that many archive segments beyond those reaching its
    /// first offset: it then ends early, and [`TieredRead::stopped_at`] says where (or,
    /// if it could not answer its first offset, yields [`LogError::ArchiveBudget`]).
    pub fn read_with_archive(
        &self,
        query: &ReadQuery,
        budget: Option<ArchiveBudget>,
    ) -> Result<TieredRead, LogError> {
        TieredRead::new(&self.inner.readers, query, budget, ReadScope::Whole)
    }

    /// [`read_with_archive`](EventLog::read_with_archive) for one client request: over
    /// a filter checked row by row (stream prefixes, a stream with types), the read
    /// also ends once it has scanned [`SCAN_WINDOW`] offsets of the live log past its
    /// first offset, however few events matched, and [`TieredRead::stopped_at`] says
    /// where to go on ([`ReadScope::OneWindow`]). With or without an archive attached.
    pub fn read_one_window(
        &self,
        query: &ReadQuery,
        budget: Option<ArchiveBudget>,
    ) -> Result<TieredRead, LogError> {
        TieredRead::new(&self.inner.readers, query, budget, ReadScope::OneWindow)
    }

    /// How many events match `query` (at most its `limit`), archived ones included; see
    /// [`read_with_archive`](EventLog::read_with_archive) for the `budget`. Live events
    /// are counted from indexes; archived ones by decompressing the segments that meet
    /// the range (found by their names).
    pub fn count_with_archive(
        &self,
        query: &ReadQuery,
        budget: Option<ArchiveBudget>,
    ) -> Result<TieredCount, LogError> {
        tiered::count(&self.inner.readers, query, budget, ReadScope::Whole)
    }

    /// [`count_with_archive`](EventLog::count_with_archive) for one client request: over
    /// a filter checked row by row (stream prefixes, a stream with types), the live part
    /// covers at most [`COUNT_SCAN_WINDOW`] offsets from the first that may be live, and
    /// [`TieredCount::complete_through`] says where to count on.
    pub fn count_one_window(
        &self,
        query: &ReadQuery,
        budget: Option<ArchiveBudget>,
    ) -> Result<TieredCount, LogError> {
        tiered::count(&self.inner.readers, query, budget, ReadScope::OneWindow)
    }

    /// Whether an archive is attached (see [`attach_cold_tier`](EventLog::attach_cold_tier)).
    pub fn has_cold_tier(&self) -> bool {
        self.inner.readers.cold.get().is_some()
    }

    /// How many events match `query` in the live log (at most its `limit`), counted
    /// from indexes.
    pub fn count(&self, query: &ReadQuery) -> Result<u64, LogError> {
        read::count(&self.inner.readers, query)
    }

    /// The highest offset, 0 when the log is empty. Reads the file, so it sees appends by
    /// other processes too.
    pub fn head(&self) -> Result<u64, LogError> {
        let pool = &self.inner.readers;
        let conn = pool.take()?;
        let head = read::head(&conn)
            .map_err(|source| schema::sqlite_error(&self.inner.path, "reading the head", source));
        pool.give_back(conn);
        head
    }

    /// A receiver of the head, updated after every commit made through this `EventLog`
    /// (appends by other processes show up in [`head`](EventLog::head), not here).
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    /// Events not yet in the stream index (its unindexed tail), as the file says now:
    /// what an exact-stream read scans by offset. Below
    /// [`LogOptions::stream_index_chunk`] plus one group commit while a writer runs.
    pub fn unindexed_tail(&self) -> Result<u64, LogError> {
        read::unindexed_tail(&self.inner.readers)
    }

    /// The highest offset of an event recorded at or before `time`, as the file says now;
    /// `None` if the log holds none that early. Offsets below retention's horizon may be
    /// gone, so the event at the answer may be too; every later one is recorded after
    /// `time`.
    pub fn last_offset_recorded_by(&self, time: jiff::Timestamp) -> Result<Option<u64>, LogError> {
        read::last_recorded_by(&self.inner.readers, time.as_microsecond())
    }

    /// SQLite's `EXPLAIN QUERY PLAN` detail lines for every statement that reading or
    /// counting `query` may run, e.g. `SEARCH events USING INTEGER PRIMARY KEY
    /// (rowid>?)`. For diagnostics, and for tests that hold the log to its promise
    /// that no filter scans the whole table.
    pub fn explain(&self, query: &ReadQuery) -> Result<Vec<String>, LogError> {
        read::explain(&self.inner.readers, query)
    }

    /// Attaches the archive retention moved events to: every [`LogReader`] made from now
    /// on reads it below the horizon, so replays see the whole history. Attach it right
    /// after opening, before any reader is made. Returns `false` (and changes nothing)
    /// if one is attached already.
    pub fn attach_cold_tier(&self, tier: Arc<dyn ColdTier>) -> bool {
        self.inner.readers.cold.set(tier).is_ok()
    }

    /// How far retention has removed events, as the file says now.
    pub fn horizon(&self) -> Result<Horizon, LogError> {
        let pool = &self.inner.readers;
        let conn = pool.take()?;
        let horizon = horizon::read(&conn).map_err(|source| {
            schema::sqlite_error(&self.inner.path, "reading the retention horizon", source)
        });
        pool.give_back(conn);
        horizon
    }

    /// A write connection of its own for retention's removals (see [`Pruner`]).
    pub fn pruner(&self) -> Result<Pruner, LogError> {
        Pruner::open(&self.inner.path, &self.inner.options)
    }

    /// A reader with its own read-only connection, for a worker thread.
    pub fn reader(&self) -> Result<LogReader, LogError> {
        LogReader::new(&self.inner.readers)
    }
}
