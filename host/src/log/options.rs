//! [`LogOptions`] and every limit of the log, each a named constant.

use std::time::Duration;

/// Default cap on an event's `data`, in bytes of JSON text. Large enough for any
/// reasonable domain event, small enough that one runaway payload cannot bloat the log or
/// stall every projector that replays it.
pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;

/// Default cap on an event's `metadata`, in bytes of JSON text. Metadata is meant for
/// correlation and causation ids, not payload.
pub const DEFAULT_MAX_METADATA_BYTES: usize = 64 * 1024;

/// Default time a connection waits for another connection's (or process's) lock before
/// giving up with an error. Group commits are short, so five seconds means something is
/// badly stuck.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Default page-cache size per connection, in KiB (an upper bound, allocated on demand).
/// Appends update three indexes of `events` and the `streams` table (the stream index is
/// written in chunks); a cache that holds their right edges and upper levels keeps writes
/// off the disk until commit.
pub const DEFAULT_CACHE_SIZE_KIB: u32 = 64 * 1024;

/// Page-cache size of each read connection, in KiB (at most
/// [`LogOptions::cache_size_kib`]). A large cache buys a reader nothing: a replay reads
/// each page once, and in WAL mode any commit empties every reader's cache at its next
/// read transaction. It would only hold memory, up to the full cache per projector after
/// a replay of a large log (measured: a 1M-event replay peaked at 86 MiB RSS against
/// 35 MiB for 100k events). This keeps the upper levels of the indexes.
pub const READER_CACHE_SIZE_KIB: u32 = 4 * 1024;

/// Default of [`LogOptions::checkpoint_pages`]: 16k pages, about 64 MiB of WAL at
/// 4 KiB pages. SQLite's default is 1000. A checkpoint copies each page once however
/// often it was rewritten since the last one; appends spread over many streams rewrite
/// the same index pages commit after commit, so fewer, larger checkpoints copy far fewer
/// pages per event. The cost is a WAL of up to this size on disk, and a longer pause for
/// the one commit that runs the checkpoint.
pub const DEFAULT_CHECKPOINT_PAGES: u32 = 16 * 1024;

/// Default cap on how many events one group commit gathers from queued append calls. A
/// request is never split, so a single larger batch still commits alone; the cap only
/// bounds how long the requests that came first wait for the ones that came later.
pub const DEFAULT_MAX_GROUP_EVENTS: usize = 16 * 1024;

/// Default of [`LogOptions::stream_index_chunk`]. At 1000 streams a chunk writes about
/// 16 index entries per leaf page instead of about 1.6 per commit, and an exact-stream
/// read scans at most this many unindexed events (plus one group) by offset.
pub const DEFAULT_STREAM_INDEX_CHUNK: u64 = 16 * 1024;

/// How long the writer waits with nothing to do before it indexes the unindexed tail (see
/// [`LogOptions::stream_index_when_idle`]), so a quiet log is fully indexed soon after
/// its last append. Long enough that a steady stream of appends never triggers it.
pub const STREAM_INDEX_IDLE_AFTER: Duration = Duration::from_millis(100);

/// The most events one stream-index transaction indexes: a tail far behind (a log
/// opened after a writer was killed between chunks, or written with a huge chunk) is
/// indexed in transactions of this size, so appends waiting on the lock wait briefly.
pub const STREAM_INDEX_PIECE_EVENTS: u64 = 64 * 1024;

/// The longest stream name, event type or client-supplied id, in characters. Names are
/// keys in several indexes and show up in logs and terminals; they are not payload.
pub const MAX_NAME_CHARS: usize = 200;

/// Events per page when a [`ReadQuery`](super::ReadQuery) leaves `batch_size` at 0.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// The largest page a [`ReadQuery`](super::ReadQuery) may ask for; bigger requests are
/// clamped. Each page is read in one short read transaction and held in memory, so this
/// bounds both the transaction's length and the iterator's memory.
pub const MAX_BATCH_SIZE: usize = 100_000;

/// How many log rows one page examines at most when the query has a filter the driving
/// index cannot answer (a stream prefix together with types, say). A page may then come
/// back short, and the iterator moves on to the next window; this keeps every read
/// transaction short however sparse the matches are.
pub const SCAN_WINDOW: u64 = 16 * 1024;

/// How many live-log offsets one client's count examines at most when its filter is
/// checked row by row (stream prefixes, a stream with types): sixteen
/// [`SCAN_WINDOW`]s. A count that reaches it stops where it is complete and says where
/// to count on, so no request scans the live log from its start offset to the head.
pub const COUNT_SCAN_WINDOW: u64 = 16 * SCAN_WINDOW;

/// The share of log rows a type filter must match for [`LogReader::read_batch`] to read
/// a batch as a sequential scan in offset order (types checked per row) rather than as
/// index probes merged per type. Measured on the `balances` replay (every row matches):
/// the scan reads a row for about half of what a probe, the merge and the fetch by
/// offset cost together, so below a quarter of the rows the probes win.
///
/// [`LogReader::read_batch`]: super::LogReader::read_batch
pub const SEQUENTIAL_SCAN_MIN_DENSITY: f64 = 0.25;

/// How many offsets after the cursor [`LogReader::read_batch`] counts per type (from
/// the `(type, offset)` index) to estimate a filter's density before its first batch;
/// later batches use the density they observed.
///
/// [`LogReader::read_batch`]: super::LogReader::read_batch
pub const DENSITY_SAMPLE_OFFSETS: u64 = 4 * 1024;

/// The most streams whose versions the writer keeps between group commits. Past it the
/// cache starts over (each stream's version is read from the index again, once), so its
/// memory stays bounded however many streams a log has: about 100 bytes a stream.
pub const MAX_CACHED_STREAM_VERSIONS: usize = 100_000;

/// The most event types, or stream prefixes, one query may filter on. Each becomes an
/// index probe per page (and SQLite caps a compound query at 500 parts).
pub const MAX_FILTER_TERMS: usize = 100;

/// How many idle read connections an [`EventLog`](super::EventLog) keeps for reuse.
pub const MAX_IDLE_READERS: usize = 4;

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: an append is on stable storage before it is acknowledged,
    /// even across a power failure.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of the process, but the last
    /// commits can be lost on power failure or an OS crash. The log stays consistent
    /// either way.
    Normal,
}

/// How to open an [`EventLog`](super::EventLog). Start from `LogOptions::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Cap on an event's `data`, in bytes. Default [`DEFAULT_MAX_DATA_BYTES`].
    pub max_data_bytes: usize,
    /// Cap on an event's `metadata`, in bytes. Default [`DEFAULT_MAX_METADATA_BYTES`].
    pub max_metadata_bytes: usize,
    /// When commits are considered done. Default [`Durability::Full`].
    pub durability: Durability,
    /// How long to wait for a lock held by another connection or process.
    /// Default [`DEFAULT_BUSY_TIMEOUT`].
    pub busy_timeout: Duration,
    /// Page-cache size of the write connection, in KiB; read connections use at most
    /// [`READER_CACHE_SIZE_KIB`]. Default [`DEFAULT_CACHE_SIZE_KIB`].
    pub cache_size_kib: u32,
    /// Cap on the events of one group commit. Default [`DEFAULT_MAX_GROUP_EVENTS`].
    pub max_group_events: usize,
    /// Whether a type filter matching most of the log may be read as a sequential scan
    /// (see [`SEQUENTIAL_SCAN_MIN_DENSITY`]). Default on; `refract bench` turns it off to
    /// measure what it is worth.
    pub sequential_scan: bool,
    /// Whether the writer keeps the stream versions it knows from one group commit to
    /// the next (up to [`MAX_CACHED_STREAM_VERSIONS`] streams), as long as nobody else
    /// appended in between. Default on; `refract bench` turns it off to measure it.
    pub stream_version_cache: bool,
    /// WAL pages after which the writer's commit checkpoints them into the database
    /// file (SQLite's `wal_autocheckpoint`), which also bounds the WAL's size. Default
    /// [`DEFAULT_CHECKPOINT_PAGES`]; `refract bench` measures SQLite's own 1000 against it.
    pub checkpoint_pages: u32,
    /// Whether the appenders of a committed group are woken by a thread of their own
    /// while the writer starts on the next group. Default off: on two quiet-machine runs
    /// of `refract bench --only levers` it did not pay (0.95× and 0.89× on single events
    /// from 16 threads; BENCHMARKS.md); `refract bench` turns it on to measure it.
    pub reply_thread: bool,
    /// Unindexed events after which the writer adds them to the stream index, in one
    /// sorted pass (see `stream_index.rs`): the bound on the tail an exact-stream read
    /// scans by offset, give or take one group. 1 indexes after every group (the cost of
    /// a per-commit index, which `refract bench` measures). Default
    /// [`DEFAULT_STREAM_INDEX_CHUNK`].
    pub stream_index_chunk: u64,
    /// Whether the writer also indexes the tail once it has been idle for
    /// [`STREAM_INDEX_IDLE_AFTER`], and when it shuts down. Default on; tests turn it
    /// off to keep a tail unindexed.
    pub stream_index_when_idle: bool,
    /// Whether a group commit of several requests is first written without a savepoint
    /// per request, and written again with savepoints only if one of its requests fails
    /// (see `append.rs`). Default on; `refract bench` turns it off to measure it.
    pub optimistic_groups: bool,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            durability: Durability::Full,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            cache_size_kib: DEFAULT_CACHE_SIZE_KIB,
            max_group_events: DEFAULT_MAX_GROUP_EVENTS,
            sequential_scan: true,
            stream_version_cache: true,
            checkpoint_pages: DEFAULT_CHECKPOINT_PAGES,
            reply_thread: false,
            stream_index_chunk: DEFAULT_STREAM_INDEX_CHUNK,
            stream_index_when_idle: true,
            optimistic_groups: true,
        }
    }
}
