//! Every limit of the HTTP API, as a named default and a key of the `[server]` section
//! of `refract.toml`.
//!
//! ```toml
//! [server]
//! bind = "127.0.0.1:7070"           # a non-loopback address also needs --allow-remote
//! max_body_bytes = 16777216         # JSON request bodies (appends, queries)
//! max_upload_bytes = 67108864       # uploaded projector components
//! default_page_rows = 1000          # events or dead letters per list without `limit`
//! max_page_rows = 10000             # the largest `limit` a list accepts
//! archive_read_segments = 16        # archive segments one event read or count may decompress
//! max_query_rows = 10000            # rows one read-model query returns at most
//! max_query_result_bytes = 16777216 # bytes of JSON one query's answer holds at most
//! query_timeout_ms = 5000           # a read-model query is interrupted after this
//! max_subscribers = 64              # concurrent event subscriptions (SSE)
//! health_max_lag = 10000            # /health degrades when an active version lags more
//! health_min_free_bytes = 67108864  # /health degrades when the data directory's disk has less free
//! header_read_timeout_ms = 10000    # a request head must arrive within this of its first byte
//! body_read_timeout_ms = 60000      # a whole request body must arrive within this
//! idle_timeout_ms = 30000           # a connection with no request in flight is closed after this
//! max_connections = 512             # open connections, all kinds
//! max_unauthenticated_connections = 256  # connections that have not shown the token yet
//! max_unauthenticated_per_peer = 128 # of those, from one IP address
//! ```
//!
//! # Why the connection limits look like this
//! Every open connection holds a file descriptor, and a client that opens connections
//! and never finishes a request costs nothing to keep them open. Three things keep such
//! a client from starving everyone else, the token holder first:
//! - every connection is timed: its request head, its body, and its idle time;
//! - connections that have not shown the token (every new one, `/health` probes and
//!   refused requests) share a pool smaller than `max_connections`, so the rest of
//!   the descriptors can only be held by clients with the token;
//! - when that pool is full, a new connection is still accepted: the oldest waiting
//!   one is closed to make room (first the newcomer's own peer's, past
//!   `max_unauthenticated_per_peer`). A flood then churns its own connections, and a
//!   real client's request, which arrives whole within moments, gets through.

use std::time::Duration;

use serde::Deserialize;

/// The port the host listens on by default.
pub const DEFAULT_PORT: u16 = 7070;

/// The address the host listens on by default: loopback only, so a fresh install is not
/// reachable from the network until someone decides it should be.
pub const DEFAULT_BIND: &str = "127.0.0.1:7070";

/// The URL the CLI talks to by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Default cap on a JSON request body. An append batch is held in memory whole (it is
/// committed atomically), so this bounds the memory one request can pin; the log's own
/// per-event caps (1 MiB of data by default) still apply inside it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Default cap on an uploaded component. Real projectors are a few hundred KiB to a few
/// MiB; this leaves room for debug builds while refusing a runaway upload early.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Events (or dead letters) a list returns when the request names no `limit`.
pub const DEFAULT_PAGE_ROWS: u64 = 1000;

/// The largest `limit` a list accepts. A page is built in memory before it is sent, so
/// this bounds the memory of one request; page with `from_offset` for more.
pub const DEFAULT_MAX_PAGE_ROWS: u64 = 10_000;

/// Rows a read-model query returns at most; the answer says `truncated` beyond it.
pub const DEFAULT_MAX_QUERY_ROWS: usize = 10_000;

/// Bytes of JSON a read-model query's answer holds at most, so a handful of huge rows
/// cannot exhaust memory where the row cap would not. Each value is measured before it
/// is converted; the answer stops with `truncated: true` before the row that would pass
/// this. The SQL itself is bounded by the sandbox's `[limits]` (see `api/query.rs`).
pub const DEFAULT_MAX_QUERY_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// How long a read-model query may run before it is interrupted. Queries run on the
/// blocking thread pool; a runaway one must give its thread back.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Concurrent event subscriptions. Each holds one read connection on the log and one
/// page of events, so this bounds both.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 64;

/// The lag, in events, above which an active version makes `/health` report degraded.
pub const DEFAULT_HEALTH_MAX_LAG: u64 = 10_000;

/// How long a request head (the request line and headers) may take to arrive once its
/// first byte has. A client that sends part of a request and stops is cut off after
/// this; a real client sends its head in one go.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request body may take to arrive, from the end of its head. Bounds
/// a client that trickles a body byte by byte; 60 s carries the largest upload
/// (`max_upload_bytes`) at about 1 MiB/s.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection with no request in flight is kept open: after a response
/// (keep-alive), or from its opening when it sends nothing at all.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Open connections at most, of every kind. Each holds a file descriptor; with
/// [`FD_RESERVE`] for the host's own files this stays well inside the usual
/// `ulimit -n` of 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Connections that have not (yet) sent a request with the token: every new connection
/// until its first authenticated request, `/health` probes, refused requests. Smaller
/// than [`DEFAULT_MAX_CONNECTIONS`], so what is left is kept for the token holder.
pub const DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS: usize = 256;

/// Of the unauthenticated connections, how many one IP address may hold. Past it, that
/// address's own oldest one is closed, so one remote client cannot push out others. Half
/// the pool, so a client that opens a burst of connections before its first requests (a
/// connection pool, many CLI calls at once) is not cut short.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_PEER: usize = 128;

/// File descriptors kept for the host's own files (the log's and read models' SQLite
/// files, the compile cache, the plugins watch) on top of `max_connections`. At start
/// the soft `ulimit -n` is raised to cover both when the hard limit allows.
pub const FD_RESERVE: u64 = 256;

/// Free bytes on the data directory's disk below which `/health` reports degraded, so
/// an operator hears of a filling disk before appends fail with 507.
pub const DEFAULT_HEALTH_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Events a subscription reads per page: the most it holds in memory at once. The
/// connection only asks for the next page once the client has taken this one, which is
/// the backpressure: a slow consumer slows its own reads, and nothing queues up.
pub const SUBSCRIBE_PAGE_EVENTS: usize = 256;

/// How often a caught-up subscription looks at the log head even without a wake-up,
/// to see appends made by other processes (this process's appends wake it at once).
pub const SUBSCRIBE_POLL: Duration = Duration::from_secs(1);

/// How often an idle subscription sends a comment line, so proxies and clients can tell
/// a quiet stream from a dead connection.
pub const SUBSCRIBE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Default cap on the archive segments one `GET /v1/events` or `GET /v1/events/count`
/// may decompress. A segment holds at most 5,000 events and 8 MiB of event text, so this
/// bounds a request to about 80,000 archived events and 128 MiB of decompression,
/// however sparse its filter or wide its range; past it the answer stops where it is
/// complete and says where to go on (`next_from_offset`). The segments that reach the
/// request's first offset are decompressed even past it (so every request progresses):
/// the honest bound is the larger of this and the overlap depth at that offset.
pub const DEFAULT_ARCHIVE_READ_SEGMENTS: usize = 16;

/// The progress handler of a read-model query runs every this many SQLite VM
/// instructions: often enough to stop within a millisecond or so of the deadline.
pub const QUERY_PROGRESS_OPS: i32 = 1_000;

/// `[server]`: the HTTP API. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on; `--bind` wins.
    pub bind: String,
    /// Cap on a JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// Cap on an uploaded component, in bytes.
    pub max_upload_bytes: usize,
    /// Rows a list returns when the request names no `limit`.
    pub default_page_rows: u64,
    /// The largest `limit` a list accepts.
    pub max_page_rows: u64,
    /// Archive segments one event read or count may decompress, beyond those that
    /// reach its first offset (always allowed, so every request makes progress): a
    /// request decompresses at most the larger of this and the overlap depth there.
    pub archive_read_segments: usize,
    /// Rows a read-model query returns at most.
    pub max_query_rows: usize,
    /// Bytes of JSON a read-model query's answer holds at most.
    pub max_query_result_bytes: usize,
    /// Milliseconds a read-model query may run.
    pub query_timeout_ms: u64,
    /// Concurrent event subscriptions.
    pub max_subscribers: usize,
    /// The lag, in events, above which an active version makes `/health` degraded.
    pub health_max_lag: u64,
    /// Free bytes on the data directory's disk below which `/health` is degraded.
    pub health_min_free_bytes: u64,
    /// Milliseconds a request head may take once its first byte has arrived.
    pub header_read_timeout_ms: u64,
    /// Milliseconds a whole request body may take to arrive.
    pub body_read_timeout_ms: u64,
    /// Milliseconds a connection with no request in flight is kept open.
    pub idle_timeout_ms: u64,
    /// Open connections at most.
    pub max_connections: usize,
    /// Connections that have not shown the token yet, at most.
    pub max_unauthenticated_connections: usize,
    /// Of those, at most this many from one IP address.
    pub max_unauthenticated_per_peer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: DEFAULT_BIND.to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            default_page_rows: DEFAULT_PAGE_ROWS,
            max_page_rows: DEFAULT_MAX_PAGE_ROWS,
            archive_read_segments: DEFAULT_ARCHIVE_READ_SEGMENTS,
            max_query_rows: DEFAULT_MAX_QUERY_ROWS,
            max_query_result_bytes: DEFAULT_MAX_QUERY_RESULT_BYTES,
            query_timeout_ms: millis(DEFAULT_QUERY_TIMEOUT),
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            health_max_lag: DEFAULT_HEALTH_MAX_LAG,
            health_min_free_bytes: DEFAULT_HEALTH_MIN_FREE_BYTES,
            header_read_timeout_ms: millis(DEFAULT_HEADER_READ_TIMEOUT),
            body_read_timeout_ms: millis(DEFAULT_BODY_READ_TIMEOUT),
            idle_timeout_ms: millis(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unauthenticated_connections: DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS,
            max_unauthenticated_per_peer: DEFAULT_MAX_UNAUTHENTICATED_PER_PEER,
        }
    }
}

impl ServerConfig {
    /// The query time limit.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    /// How long a request head may take once its first byte has arrived.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// How long a whole request body may take to arrive.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// How long a connection with no request in flight is kept open.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Checks that every limit is usable; the error names the key and what it accepts.
    pub fn validate(&self) -> Result<(), String> {
        let at_least_one = [
            ("server.max_body_bytes", self.max_body_bytes as u64),
            ("server.max_upload_bytes", self.max_upload_bytes as u64),
            ("server.default_page_rows", self.default_page_rows),
            ("server.max_page_rows", self.max_page_rows),
            (
                "server.archive_read_segments",
                self.archive_read_segments as u64,
            ),
            ("server.max_query_rows", self.max_query_rows as u64),
            (
                "server.max_query_result_bytes",
                self.max_query_result_bytes as u64,
            ),
            ("server.query_timeout_ms", self.query_timeout_ms),
            ("server.max_subscribers", self.max_subscribers as u64),
            ("server.header_read_timeout_ms", self.header_read_timeout_ms),
            ("server.body_read_timeout_ms", self.body_read_timeout_ms),
            ("server.idle_timeout_ms", self.idle_timeout_ms),
            ("server.max_connections", self.max_connections as u64),
            (
                "server.max_unauthenticated_connections",
                self.max_unauthenticated_connections as u64,
            ),
            (
                "server.max_unauthenticated_per_peer",
                self.max_unauthenticated_per_peer as u64,
            ),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(format!("`{key}` must be at least 1"));
            }
        }
        if self.max_unauthenticated_connections >= self.max_connections {
            return Err(format!(
                "`server.max_unauthenticated_connections` ({}) must be below `server.max_connections` \
                 ({}), so that connections with the token always have room",
                self.max_unauthenticated_connections, self.max_connections
            ));
        }
        if self.max_unauthenticated_per_peer > self.max_unauthenticated_connections {
            return Err(format!(
                "`server.max_unauthenticated_per_peer` ({}) must not exceed \
                 `server.max_unauthenticated_connections` ({})",
                self.max_unauthenticated_per_peer, self.max_unauthenticated_connections
            ));
        }
        if self.default_page_rows > self.max_page_rows {
            return Err(format!(
                "`server.default_page_rows` ({}) must not exceed `server.max_page_rows` ({})",
                self.default_page_rows, self.max_page_rows
            ));
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_is_refused() {
        ServerConfig::default().validate().unwrap();
        let zero = ServerConfig {
            max_query_rows: 0,
            ..ServerConfig::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("server.max_query_rows")
        );
    }

    #[test]
    fn the_unauthenticated_pool_leaves_room_for_the_token_holder() {
        let all_unauthenticated = ServerConfig {
            max_connections: 10,
            max_unauthenticated_connections: 10,
            ..ServerConfig::default()
        };
        let problem = all_unauthenticated.validate().unwrap_err();
        assert!(
            problem.contains("must be below `server.max_connections`"),
            "{problem}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<ServerConfig, _> = toml::from_str("max_rows = 3");
        assert!(parsed.is_err());
        let parsed: ServerConfig = toml::from_str("query_timeout_ms = 250").unwrap();
        assert_eq!(parsed.query_timeout(), Duration::from_millis(250));
    }
}
