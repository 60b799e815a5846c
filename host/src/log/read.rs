//! Reading: the paging [`EventIter`], counts, and the [`LogReader`] replay hot path.
//!
//! Reads never hold the whole log. The iterator reads one page per short read
//! transaction, so a slow consumer never pins a WAL snapshot (which would stop
//! checkpoints and let the WAL grow without bound).

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rusqlite::{Connection, Row, Statement};

use super::cold::{ArchiveBudget, ColdTier};
use super::model::micros_to_timestamp;
use super::query::{Key, Plan, Span, get_u64, to_sql_int};
use super::schema::{open_reader, sqlite_error};
use super::{
    DEFAULT_BATCH_SIZE, DENSITY_SAMPLE_OFFSETS, Event, EventRef, LogError, LogOptions,
    MAX_BATCH_SIZE, MAX_IDLE_READERS, ReadQuery, SCAN_WINDOW, SEQUENTIAL_SCAN_MIN_DENSITY,
};

/// Idle read-only connections, shared by an [`EventLog`](super::EventLog) and its iterators.
#[derive(Debug)]
pub(super) struct ReaderPool {
    path: PathBuf,
    options: LogOptions,
    idle: Mutex<Vec<Connection>>,
    /// The archive, once attached: every [`LogReader`] made after that reads it.
    pub(super) cold: OnceLock<Arc<dyn ColdTier>>,
}

impl ReaderPool {
    pub(super) fn new(path: PathBuf, options: LogOptions) -> ReaderPool {
        ReaderPool {
            path,
            options,
            idle: Mutex::new(Vec::new()),
            cold: OnceLock::new(),
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// An idle connection, or a new one.
    pub(super) fn take(&self) -> Result<Connection, LogError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.open(),
        }
    }

    /// Opens a new read-only connection that the pool does not keep.
    pub(super) fn open(&self) -> Result<Connection, LogError> {
        open_reader(&self.path, &self.options)
    }

    /// Returns a connection for reuse (closing it if enough are idle already).
    /// Closes the idle connections, so that the writer, closing after them, is the
    /// last connection and checkpoints the WAL into the file.
    pub(super) fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        drop(idle);
    }

    pub(super) fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS && conn.is_autocommit() {
            idle.push(conn);
        }
    }

    fn sqlite(&self, operation: &'static str) -> impl Fn(rusqlite::Error) -> LogError + '_ {
        move |source| sqlite_error(&self.path, operation, source)
    }
}

/// The highest offset, 0 when the log is empty, as `conn` sees it now.
pub(super) fn head(conn: &Connection) -> rusqlite::Result<u64> {
    // MAX of the rowid is a single b-tree descent.
    conn.prepare_cached(r#"SELECT coalesce(max("offset"), 0) FROM events"#)?
        .query_row([], |row| get_u64(row, 0))
}

/// Counts the events matching `query`.
pub(super) fn count(pool: &ReaderPool, query: &ReadQuery) -> Result<u64, LogError> {
    let plan = Plan::new(query)?;
    let conn = pool.take()?;
    let result = (|| {
        let tx = conn.unchecked_transaction()?;
        let head = head(&tx)?;
        let removed_through = super::horizon::read(&tx)?.truncated_before() - 1;
        let total = match plan.span(&tx, query, 0, head)? {
            Some(span) => plan.count(&tx, span, removed_through)?,
            None => 0,
        };
        tx.finish()?;
        Ok(query.limit.map_or(total, |limit| total.min(limit)))
    })()
    .map_err(pool.sqlite("counting events"));
    pool.give_back(conn);
    result
}

/// Events above the stream index's watermark (the unindexed tail), in one snapshot.
pub(super) fn unindexed_tail(pool: &ReaderPool) -> Result<u64, LogError> {
    let conn = pool.take()?;
    let result = (|| {
        let tx = conn.unchecked_transaction()?;
        let tail = head(&tx)?.saturating_sub(super::stream_index::indexed_through(&tx)?);
        tx.finish()?;
        Ok(tail)
    })()
    .map_err(pool.sqlite("reading the stream index's watermark"));
    pool.give_back(conn);
    result
}

/// The highest offset recorded at or before `micros` (µs since the epoch), if any.
pub(super) fn last_recorded_by(pool: &ReaderPool, micros: i64) -> Result<Option<u64>, LogError> {
    let conn = pool.take()?;
    let result = (|| {
        let tx = conn.unchecked_transaction()?;
        let head = head(&tx)?;
        let past =
            super::query::first_recorded_at_or_after(&tx, micros.saturating_add(1), 1, head)?;
        tx.finish()?;
        Ok((past > 1).then(|| past - 1))
    })()
    .map_err(pool.sqlite("finding the offset recorded by a time"));
    pool.give_back(conn);
    result
}

/// The `EXPLAIN QUERY PLAN` lines of every statement reading `query` may run.
pub(super) fn explain(pool: &ReaderPool, query: &ReadQuery) -> Result<Vec<String>, LogError> {
    let plan = Plan::new(query)?;
    let conn = pool.take()?;
    let result = (|| {
        let mut lines = Vec::new();
        for sql in plan.statements(query) {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            // Unbound parameters are NULL, which is fine for planning.
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                lines.push(row.get::<_, String>(3)?);
            }
        }
        Ok(lines)
    })()
    .map_err(pool.sqlite("explaining a query"));
    pool.give_back(conn);
    result
}

/// Decodes the row of an event query (columns in [`super::query`]'s order) as borrowed
/// strings.
pub(super) fn event_ref<'r>(row: &'r Row<'_>) -> rusqlite::Result<EventRef<'r>> {
    Ok(EventRef {
        offset: get_u64(row, 0)?,
        id: row.get_ref(1)?.as_str()?,
        stream: row.get_ref(2)?.as_str()?,
        stream_version: get_u64(row, 3)?,
        event_type: row.get_ref(4)?.as_str()?,
        data: row.get_ref(5)?.as_str()?,
        metadata: row.get_ref(6)?.as_str_or_null()?,
        recorded_at_micros: row.get(7)?,
    })
}

/// Decodes the row of an event query into an owned [`Event`].
fn event(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        offset: get_u64(row, 0)?,
        id: row.get(1)?,
        stream: row.get(2)?,
        stream_version: get_u64(row, 3)?,
        event_type: row.get(4)?,
        data: row.get(5)?,
        metadata: row.get(6)?,
        recorded_at: micros_to_timestamp(row.get(7)?),
    })
}

/// Binds a page query's parameters: `?1` cursor, `?2` window end, `?3` limit, the plan's
/// own from `?4`, and the offset floor if the plan has one. `offset_floor` is an offset
/// every event of the page is above (the last one read, or the batch's `after`; 0 if
/// none is known).
pub(super) fn bind_page(
    stmt: &mut Statement<'_>,
    plan: &Plan,
    cursor: u64,
    end: u64,
    limit: usize,
    offset_floor: u64,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, to_sql_int(cursor))?;
    stmt.raw_bind_parameter(2, to_sql_int(end))?;
    stmt.raw_bind_parameter(3, i64::try_from(limit).unwrap_or(i64::MAX))?;
    for (i, param) in plan.params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 4, param)?;
    }
    if let Some(floor) = plan.offset_floor_param {
        stmt.raw_bind_parameter(floor, to_sql_int(offset_floor))?;
    }
    Ok(())
}

/// The key (offset or stream version) a row is ordered by in `plan`.
fn row_key(plan: &Plan, event: &EventRef<'_>) -> u64 {
    match plan.key {
        Key::Offset => event.offset,
        Key::Version => event.stream_version,
    }
}

/// Events matching a [`ReadQuery`], in offset order, read page by page.
///
/// The iterator covers the log as it was when [`EventLog::read`](super::EventLog::read)
/// was called: later appends are not included. Each page is read in its own short
/// transaction. After an error the iterator ends.
pub struct EventIter {
    pool: Arc<ReaderPool>,
    /// The connection, returned to the pool on drop.
    conn: Option<Connection>,
    plan: Plan,
    /// What is left to read; `None` once the log range is exhausted.
    span: Option<Span>,
    /// How many more events the query's `limit` allows.
    remaining: u64,
    page_size: usize,
    page: VecDeque<Event>,
    /// The offset of the last event read (0 before the first).
    last_offset: u64,
}

impl EventIter {
    pub(super) fn new(pool: Arc<ReaderPool>, query: &ReadQuery) -> Result<EventIter, LogError> {
        let plan = Plan::new(query)?;
        let conn = pool.take()?;
        let span = (|| {
            let tx = conn.unchecked_transaction()?;
            let head = head(&tx)?;
            let span = plan.span(&tx, query, 0, head)?;
            tx.finish()?;
            Ok(span)
        })();
        let span = match span {
            Ok(span) => span,
            Err(e) => {
                pool.give_back(conn);
                return Err(pool.sqlite("planning a read")(e));
            }
        };
        let page_size = match query.batch_size {
            0 => DEFAULT_BATCH_SIZE,
            n => n.min(MAX_BATCH_SIZE),
        };
        Ok(EventIter {
            pool,
            conn: Some(conn),
            plan,
            span,
            remaining: query.limit.unwrap_or(u64::MAX),
            page_size,
            page: VecDeque::new(),
            last_offset: 0,
        })
    }

    /// Reads the next page into `self.page`, advancing the span.
    fn fetch_page(&mut self) -> Result<(), LogError> {
        let (Some(span), Some(conn)) = (self.span.as_mut(), self.conn.as_ref()) else {
            return Ok(());
        };
        let limit =
            usize::try_from(self.remaining).map_or(self.page_size, |r| r.min(self.page_size));
        let window_end = if self.plan.windowed {
            let window = SCAN_WINDOW.max(self.page_size as u64);
            span.end.min(span.cursor.saturating_add(window))
        } else {
            span.end
        };
        let mut last_key = None;
        let result = (|| {
            let mut stmt = conn.prepare_cached(&self.plan.sql)?;
            bind_page(
                &mut stmt,
                &self.plan,
                span.cursor,
                window_end,
                limit,
                self.last_offset,
            )?;
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                let event = event(row)?;
                last_key = Some(row_key(&self.plan, &event.as_event_ref()));
                self.last_offset = event.offset;
                self.page.push_back(event);
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.span = None;
            return Err(self.pool.sqlite("reading events")(e));
        }
        // A full page may have stopped mid-window; a short one covered the whole window.
        span.cursor = match last_key {
            Some(key) if self.page.len() == limit => key,
            _ => window_end,
        };
        self.remaining -= self.page.len() as u64;
        if span.cursor >= span.end || self.remaining == 0 {
            self.span = None;
        }
        Ok(())
    }
}

impl Iterator for EventIter {
    type Item = Result<Event, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.page.is_empty() {
            self.span?;
            if let Err(e) = self.fetch_page() {
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

impl std::iter::FusedIterator for EventIter {}

impl Drop for EventIter {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn);
        }
    }
}

impl std::fmt::Debug for EventIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIter")
            .field("path", &self.pool.path())
            .field("span", &self.span)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// What [`LogReader::read_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanResult {
    /// How many events were handed to the visitor (including one it broke on).
    pub visited: usize,
    /// How far the log has been scanned: no event at or below this offset that matches
    /// the query remains unvisited. Save it as the checkpoint and pass it as `after` next
    /// time.
    pub scanned_through: u64,
}

/// A read-only connection of its own, for a worker thread that replays the log (a
/// projector): [`read_batch`](LogReader::read_batch) visits borrowed rows without
/// allocating.
pub struct LogReader {
    conn: Connection,
    path: PathBuf,
    /// The archive, when one is attached (see `cold.rs`).
    cold: Option<Arc<dyn ColdTier>>,
    /// The share of offsets the last type-filtered batch matched, and the plan it was
    /// read with (its page SQL): the statistic that picks the next batch's plan.
    density: Option<(String, f64)>,
    /// [`LogOptions::sequential_scan`].
    sequential_scan: bool,
    /// Whether [`read_batch`](Self::read_batch) reads event ids and metadata; see
    /// [`read_optional_columns`](Self::read_optional_columns).
    optional_columns: (bool, bool),
    /// The last page query rewritten for `optional_columns`, keyed by the plan's.
    rewritten: Option<(String, String)>,
    /// What reading the archive may still decompress; `None`: no limit (replays).
    archive_budget: Option<ArchiveBudget>,
}

impl LogReader {
    /// Limits what [`read_batch`](Self::read_batch) may decompress from the archive from
    /// now on (see [`ArchiveBudget`]); `None` lifts the limit.
    pub fn set_archive_budget(&mut self, budget: Option<ArchiveBudget>) {
        self.archive_budget = budget;
    }

    /// The archive budget, as spent so far.
    pub fn archive_budget(&self) -> Option<&ArchiveBudget> {
        self.archive_budget.as_ref()
    }

    /// A reader on a connection taken from `pool` (give it back with
    /// [`into_connection`](Self::into_connection)), for a read that lasts one request.
    pub(super) fn pooled(pool: &ReaderPool) -> Result<LogReader, LogError> {
        let conn = pool.take()?;
        Ok(LogReader::with_connection(pool, conn))
    }

    /// The connection back, for its pool.
    pub(super) fn into_connection(self) -> Connection {
        self.conn
    }

    /// The connection, for a test that counts what a read costs SQLite.
    #[cfg(test)]
    pub(super) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn with_connection(pool: &ReaderPool, conn: Connection) -> LogReader {
        LogReader {
            conn,
            path: pool.path().to_path_buf(),
            cold: pool.cold.get().cloned(),
            density: None,
            sequential_scan: pool.options.sequential_scan,
            optional_columns: (true, true),
            rewritten: None,
            archive_budget: None,
        }
    }

    /// Whether [`read_batch`](Self::read_batch) reads each event's `id` and `metadata`
    /// (both, by default). A column left out is handed to the visitor as an empty id or
    /// no metadata, and is not read from the rows, for a consumer that never looks at
    /// it (a projector that declares so). Events read from the archive carry both
    /// whatever this says.
    pub fn read_optional_columns(&mut self, id: bool, metadata: bool) {
        self.optional_columns = (id, metadata);
        self.rewritten = None;
    }

    pub(super) fn new(pool: &ReaderPool) -> Result<LogReader, LogError> {
        Ok(LogReader::with_connection(pool, pool.open()?))
    }

    /// Whether to read the next batch of a type filter as a sequential scan: from the
    /// density the last batch of the same plan observed (`last`), or else from per-type
    /// counts over the next [`DENSITY_SAMPLE_OFFSETS`] offsets.
    fn prefers_scan(
        last: Option<&(String, f64)>,
        conn: &Connection,
        plan: &Plan,
        span: Span,
    ) -> rusqlite::Result<bool> {
        let density = match last {
            Some((sql, density)) if *sql == plan.sql => *density,
            _ => {
                let hi = span
                    .end
                    .min(span.cursor.saturating_add(DENSITY_SAMPLE_OFFSETS));
                plan.type_density(conn, span.cursor + 1, hi)?
            }
        };
        Ok(density >= SEQUENTIAL_SCAN_MIN_DENSITY)
    }

    /// The replay hot path. In ONE short read transaction, visits up to `max_events`
    /// events matching `query` with offset > `after`, in offset order, as rows borrowed
    /// from SQLite (no allocation per event).
    ///
    /// Returns how far the log was scanned: the offset of the last visited event if the
    /// visitor stopped early ([`ControlFlow::Break`]; the event it broke on counts as
    /// visited) or `max_events` was reached; otherwise the head of the log as seen by the
    /// same transaction, so the checkpoint of a filtered projector advances past events it
    /// does not subscribe to, and no event at or below the returned offset is ever missed.
    ///
    /// The query's `limit` and `batch_size` are ignored: `max_events` is the cap.
    pub fn read_batch(
        &mut self,
        query: &ReadQuery,
        after: u64,
        max_events: usize,
        mut visit: impl FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<ScanResult, LogError> {
        let plan = Plan::new(query)?;
        let path = &self.path;
        let sqlite = |source| sqlite_error(path, "reading a batch of events", source);
        let tx = self.conn.transaction().map_err(sqlite)?;
        // The first read fixes the transaction's snapshot; everything below sees the same.
        let head = head(&tx).map_err(sqlite)?;
        let mut result = ScanResult {
            visited: 0,
            scanned_through: head,
        };
        if max_events == 0 {
            result.scanned_through = after;
            return Ok(result);
        }
        // Below the archive horizon (read in this snapshot) the cold tier joins in.
        if let Some(cold) = &self.cold {
            let archived_through = super::horizon::read(&tx).map_err(sqlite)?.archived_through;
            if after < archived_through {
                let result = super::cold::read_merged(
                    &tx,
                    cold.as_ref(),
                    query,
                    after,
                    head,
                    archived_through,
                    max_events,
                    self.archive_budget.as_mut(),
                    &mut visit,
                )?
                .map_err(sqlite)?;
                tx.finish().map_err(sqlite)?;
                return Ok(result);
            }
        }
        let Some(span) = plan.span(&tx, query, after, head).map_err(sqlite)? else {
            return Ok(result);
        };
        // A filter matching most of the log is read in offset order straight off the
        // table, a window at a time, rather than as one index probe per type merged.
        let scan_sql = match &plan.scan_sql {
            Some(scan_sql)
                if self.sequential_scan
                    && Self::prefers_scan(self.density.as_ref(), &tx, &plan, span)
                        .map_err(sqlite)? =>
            {
                Some(scan_sql)
            }
            _ => None,
        };
        let (sql, end) = match scan_sql {
            Some(scan_sql) => {
                let window = SCAN_WINDOW.max(max_events as u64);
                (scan_sql, span.end.min(span.cursor.saturating_add(window)))
            }
            None => (&plan.sql, span.end),
        };
        if end < span.end {
            // The window ends before the span: a short batch covered the window only.
            result.scanned_through = end;
        }
        let sql = match self.optional_columns {
            (true, true) => sql,
            (id, metadata) => {
                if self.rewritten.as_ref().is_none_or(|(from, _)| from != sql) {
                    let rewritten = super::query::with_optional_columns(sql, id, metadata);
                    self.rewritten = Some((sql.clone(), rewritten));
                }
                self.rewritten
                    .as_ref()
                    .map_or(sql, |(_, rewritten)| rewritten)
            }
        };
        {
            let mut stmt = tx.prepare_cached(sql).map_err(sqlite)?;
            bind_page(&mut stmt, &plan, span.cursor, end, max_events, after).map_err(sqlite)?;
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().map_err(sqlite)? {
                let event = event_ref(row).map_err(sqlite)?;
                let offset = event.offset;
                result.visited += 1;
                if visit(event).is_break() || result.visited == max_events {
                    result.scanned_through = offset;
                    break;
                }
            }
        }
        tx.finish().map_err(sqlite)?;
        if plan.scan_sql.is_some() {
            let covered = result
                .scanned_through
                .min(span.end)
                .saturating_sub(span.cursor);
            if covered > 0 {
                let density = result.visited as f64 / covered as f64;
                self.density = Some((plan.sql.clone(), density));
            }
        }
        Ok(result)
    }

    /// The highest offset, 0 when the log is empty; sees every process's appends.
    pub fn head(&mut self) -> Result<u64, LogError> {
        head(&self.conn).map_err(|source| sqlite_error(&self.path, "reading the head", source))
    }

    /// Where a one-window read of `query` past `after` counts its window from (see
    /// [`window_anchor`](super::query::window_anchor)).
    pub(super) fn window_anchor(
        &mut self,
        query: &ReadQuery,
        after: u64,
        head: u64,
    ) -> Result<u64, LogError> {
        super::query::window_anchor(&self.conn, query, after, head)
            .map_err(|source| sqlite_error(&self.path, "finding where a read starts", source))
    }
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::log::{Durability, EventLog, LogOptions, NewEvent, StreamFilter};

    /// The virtual-machine steps of reading stream `s` page by page with the plan's page
    /// query, binding `floor(last offset read)` as the offset floor.
    fn paged_read_steps(path: &Path, page: usize, floor: impl Fn(u64) -> u64) -> (i64, usize) {
        let conn = Connection::open(path).expect("open");
        let (steps, offsets) = paged_read(&conn, page, floor);
        (steps, offsets.len())
    }

    /// Reads stream `s` page by page on `conn` with the plan's page query: the VM steps
    /// and the offsets, in the order read.
    fn paged_read(conn: &Connection, page: usize, floor: impl Fn(u64) -> u64) -> (i64, Vec<u64>) {
        let query = ReadQuery {
            stream: StreamFilter::Exact("s".into()),
            ..ReadQuery::default()
        };
        let plan = Plan::new(&query).expect("plan");
        let head = head(conn).expect("head");
        let mut span = plan
            .span(conn, &query, 0, head)
            .expect("span")
            .expect("the stream has events");
        let (mut steps, mut read, mut last_offset) = (0i64, Vec::new(), 0u64);
        let mut stmt = conn.prepare(&plan.sql).expect("prepare");
        while span.cursor < span.end {
            stmt.reset_status(StatementStatus::VmStep);
            bind_page(
                &mut stmt,
                &plan,
                span.cursor,
                span.end,
                page,
                floor(last_offset),
            )
            .expect("bind");
            let mut rows = stmt.raw_query();
            let mut got = 0;
            while let Some(row) = rows.next().expect("step") {
                let event = event(row).expect("decode");
                span.cursor = event.stream_version;
                last_offset = event.offset;
                read.push(event.offset);
                got += 1;
            }
            drop(rows);
            steps += i64::from(stmt.get_status(StatementStatus::VmStep));
            if got < page {
                break;
            }
        }
        (steps, read)
    }

    /// Paging through an unindexed tail scans it about once, not once per page: the
    /// page query starts the tail's scan at the last offset read.
    #[test]
    fn paging_through_the_unindexed_tail_scans_it_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let options = LogOptions {
            durability: Durability::Normal,
            stream_index_chunk: u64::MAX,
            stream_index_when_idle: false,
            ..LogOptions::default()
        };
        let log = EventLog::open(&path, options).expect("open");
        // 4,000 events, one in ten of stream `s`; none indexed while the log is open.
        let events: Vec<NewEvent> = (0..4000)
            .map(|i| NewEvent::new(if i % 10 == 0 { "s" } else { "other" }, "T", "{}"))
            .collect();
        for chunk in events.chunks(500) {
            log.append(chunk.to_vec()).expect("append");
        }
        let (floored, read) = paged_read_steps(&path, 5, |last| last);
        let (unfloored, read_again) = paged_read_steps(&path, 5, |_| 0);
        let (one_page, read_at_once) = paged_read_steps(&path, 1000, |last| last);
        assert_eq!((read, read_again, read_at_once), (400, 400, 400));
        // 80 pages: without the floor each rescans the tail from its start.
        assert!(
            floored * 10 < unfloored,
            "floored {floored} steps, unfloored {unfloored}"
        );
        assert!(
            floored < one_page * 2,
            "80 pages took {floored} steps, one page {one_page}"
        );
        drop(log);
    }

    /// A page spanning the stream index and the tail comes back in version order even
    /// when SQLite is free to return unordered selects backwards: the order does not
    /// depend on how SQLite happens to scan.
    #[test]
    fn pages_across_the_index_and_the_tail_keep_their_order_whatever_the_scan_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let events = |n: usize| -> Vec<NewEvent> {
            (0..n)
                .map(|i| NewEvent::new(if i % 3 == 0 { "s" } else { "other" }, "T", "{}"))
                .collect()
        };
        // 300 events indexed (a chunk of 1 indexes after every group), then 300 more
        // left in the tail.
        let indexed = LogOptions {
            durability: Durability::Normal,
            stream_index_chunk: 1,
            ..LogOptions::default()
        };
        EventLog::open(&path, indexed)
            .expect("open")
            .append(events(300))
            .expect("append");
        let unindexed = LogOptions {
            durability: Durability::Normal,
            stream_index_chunk: u64::MAX,
            stream_index_when_idle: false,
            ..LogOptions::default()
        };
        let log = EventLog::open(&path, unindexed).expect("reopen");
        log.append(events(300)).expect("append");
        let conn = Connection::open(&path).expect("open");
        let (_, forward) = paged_read(&conn, 7, |last| last);
        conn.pragma_update(None, "reverse_unordered_selects", true)
            .expect("reverse");
        for page in [1, 7, 150, 1000] {
            let (_, offsets) = paged_read(&conn, page, |last| last);
            assert_eq!(offsets, forward, "pages of {page}");
        }
        assert_eq!(forward.len(), 200);
        assert!(forward.windows(2).all(|w| w[0] < w[1]), "{forward:?}");
        drop(log);
    }
}
