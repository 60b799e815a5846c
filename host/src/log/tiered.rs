//! Reads and counts across both tiers: the archive (through the [`ColdTier`] seam) below
//! the horizon's `archived_through`, the live log above it, as one ordered answer.
//!
//! A read is the replay's own merge ([`LogReader::read_batch`] with the archive attached,
//! see `cold.rs`), paged, on a pooled connection: every page reads the horizon in its
//! own snapshot, so an event that retention archives while a client pages is still
//! found, in the archive. A count counts the live log from its indexes and the archive
//! by decompressing the segments that meet the range (found by name); both in one
//! snapshot of the log, so an event moving between the tiers is counted once.
//!
//! With an [`ArchiveBudget`], neither decompresses more than its segments beyond those
//! that reach its first offset (always allowed, so that every request progresses): the
//! answer stops where it is complete and says so ([`TieredRead::stopped_at`],
//! [`TieredCount::complete_through`]). [`LogError::ArchiveBudget`] remains for a cold
//! tier that cannot answer even the first offset within its budget.
//!
//! The live log is read as [`EventIter`] reads it: a filter checked row by row (stream
//! prefixes, a stream with types: [`Plan::windowed`]) is read a window of
//! [`SCAN_WINDOW`] offsets per read transaction, however sparse its matches, so no
//! transaction scans the live log from the start offset to the head. A read for a
//! client's request ([`ReadScope::OneWindow`]) ends after its first window, and
//! [`TieredRead::stopped_at`] says where to go on: one request examines at most a window
//! of the live log. A count's live part is counted from indexes as
//! [`EventLog::count`](super::EventLog::count) counts it, in one transaction (see
//! [`count`]); a count for a client's request over a filter checked row by row counts
//! at most [`COUNT_SCAN_WINDOW`] live offsets and says where to count on
//! ([`TieredCount::complete_through`], [`StopReason::ScanWindow`]).

use std::collections::{HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;

use super::cold::{ArchiveBudget, ColdRange, matches, time_narrowed};
use super::horizon;
use super::query::{Plan, to_sql_int};
use super::read::{EventIter, LogReader, ReaderPool, head};
use super::{
    COUNT_SCAN_WINDOW, DEFAULT_BATCH_SIZE, Event, LogError, MAX_BATCH_SIZE, ReadQuery, SCAN_WINDOW,
};

/// How much of the live log a [`TieredRead`] may scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadScope {
    /// Every matching event up to the end of the query's range, a window at a time (for
    /// the operator's own reads: the command line).
    Whole,
    /// For one client request: over a filter checked row by row, the read ends after
    /// scanning [`SCAN_WINDOW`] live offsets (or the page size, if larger) past its
    /// first offset, and [`TieredRead::stopped_at`] says where to go on. Filters an
    /// index answers are not cut: their cost is already the page's.
    OneWindow,
}

/// Why a [`TieredRead`] ended before the end of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The archive budget was spent.
    ArchiveBudget,
    /// A [`ReadScope::OneWindow`] read scanned its window of the live log (a count: its
    /// [`COUNT_SCAN_WINDOW`]).
    ScanWindow,
}

/// Events matching a query from both tiers, in offset order, read page by page. See
/// [`EventLog::read_with_archive`](super::EventLog::read_with_archive).
pub struct TieredRead {
    source: Source,
}

enum Source {
    /// No archive is attached: the live log is everything there is.
    Live(Box<EventIter>),
    /// The archive and the live log, merged.
    Merged(Box<Merged>),
}

struct Merged {
    pool: Arc<ReaderPool>,
    /// `None` once given back to the pool.
    reader: Option<LogReader>,
    /// The query, its `to_offset` fixed at the head as of the call.
    query: ReadQuery,
    /// Every matching event at or below this offset has been read.
    after: u64,
    /// `after` when the read began.
    started_after: u64,
    /// The last offset to read: the query's end, or for a [`ReadScope::OneWindow`]
    /// read over a windowed filter, the end of its window if that comes first.
    end: u64,
    /// Whether `end` is a window's end before the query's.
    end_is_window: bool,
    /// Whether the query's filter is checked row by row ([`Plan::windowed`]): each read
    /// transaction then covers at most `window` offsets.
    windowed: bool,
    /// [`SCAN_WINDOW`], or the page size if larger (as [`EventIter`] reads).
    window: u64,
    remaining: u64,
    page_size: usize,
    page: VecDeque<Event>,
    done: bool,
    stopped_at: Option<(u64, StopReason)>,
}

impl TieredRead {
    pub(super) fn new(
        pool: &Arc<ReaderPool>,
        query: &ReadQuery,
        budget: Option<ArchiveBudget>,
        scope: ReadScope,
    ) -> Result<TieredRead, LogError> {
        // Without an archive, the live log is everything; a one-window read still goes
        // through the merged reader below, which knows where its window ends in offsets
        // (the live iterator's cursor over a stream counts versions).
        if pool.cold.get().is_none() && scope == ReadScope::Whole {
            return Ok(TieredRead {
                source: Source::Live(Box::new(EventIter::new(Arc::clone(pool), query)?)),
            });
        }
        // Refuse a bad query before taking a connection.
        let windowed = Plan::new(query)?.windowed;
        let mut reader = LogReader::pooled(pool)?;
        let head = match reader.head() {
            Ok(head) => head,
            Err(e) => {
                pool.give_back(reader.into_connection());
                return Err(e);
            }
        };
        reader.set_archive_budget(budget);
        let query_end = query.to_offset.map_or(head, |to| to.min(head));
        let mut fixed = query.clone();
        fixed.to_offset = Some(query_end);
        let after = query.from_offset.saturating_sub(1);
        let page_size = match query.batch_size {
            0 => DEFAULT_BATCH_SIZE,
            n => n.min(MAX_BATCH_SIZE),
        };
        let window = SCAN_WINDOW.max(page_size as u64);
        let end = match scope {
            ReadScope::OneWindow if windowed => {
                let anchor = match reader.window_anchor(&fixed, after, head) {
                    Ok(anchor) => anchor,
                    Err(e) => {
                        pool.give_back(reader.into_connection());
                        return Err(e);
                    }
                };
                query_end.min(anchor.saturating_add(window))
            }
            _ => query_end,
        };
        let remaining = query.limit.unwrap_or(u64::MAX);
        Ok(TieredRead {
            source: Source::Merged(Box::new(Merged {
                pool: Arc::clone(pool),
                reader: Some(reader),
                query: fixed,
                after,
                started_after: after,
                end,
                end_is_window: end < query_end,
                windowed,
                window,
                remaining,
                page_size,
                page: VecDeque::new(),
                done: after >= end || remaining == 0,
                stopped_at: None,
            })),
        })
    }

    /// `Some(offset)` when the read ended before the end of its range (the archive
    /// budget was spent, or a [`ReadScope::OneWindow`] read scanned its window): every
    /// matching event at or below `offset` was returned; read on from `offset + 1`.
    pub fn stopped_at(&self) -> Option<u64> {
        self.stop().map(|(offset, _)| offset)
    }

    /// [`stopped_at`](TieredRead::stopped_at), with the reason.
    pub fn stop(&self) -> Option<(u64, StopReason)> {
        match &self.source {
            Source::Live(_) => None,
            Source::Merged(merged) => merged.stopped_at,
        }
    }
}

impl Merged {
    /// Reads the next page into `self.page`.
    fn fetch_page(&mut self) -> Result<(), LogError> {
        let Some(reader) = self.reader.as_mut() else {
            self.done = true;
            return Ok(());
        };
        let max = usize::try_from(self.remaining).map_or(self.page_size, |r| r.min(self.page_size));
        // A filter checked row by row reads one window per transaction: the query ends
        // there, and a short batch has covered the window only (`read_batch` reports
        // the head, or the archive's end, for a batch that reached its query's end).
        let window_end = if self.windowed {
            self.end.min(self.after.saturating_add(self.window))
        } else {
            self.end
        };
        self.query.to_offset = Some(window_end);
        let page = &mut self.page;
        let scan = reader.read_batch(&self.query, self.after, max, |event| {
            page.push_back(event.to_event());
            ControlFlow::Continue(())
        })?;
        let scanned_through = scan.scanned_through.min(window_end);
        let moved = scan.visited > 0 || scanned_through > self.after;
        self.after = self.after.max(scanned_through);
        self.remaining = self.remaining.saturating_sub(scan.visited as u64);
        let budget = reader.archive_budget();
        if self.remaining == 0 {
            self.done = true;
        } else if self.after >= self.end {
            self.done = true;
            if self.end_is_window {
                self.stopped_at = Some((self.end, StopReason::ScanWindow));
            }
        } else if let Some(budget) = budget.filter(|b| b.exhausted()) {
            self.done = true;
            // Complete up to here; a read that could not answer a single offset fails.
            if self.after > self.started_after {
                self.stopped_at = Some((self.after, StopReason::ArchiveBudget));
            } else {
                return Err(LogError::ArchiveBudget {
                    from_offset: self.after + 1,
                    segments: budget.limit(),
                });
            }
        } else if !moved {
            self.done = true;
        }
        Ok(())
    }
}

impl Iterator for TieredRead {
    type Item = Result<Event, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        let merged = match &mut self.source {
            Source::Live(iter) => return iter.next(),
            Source::Merged(merged) => merged,
        };
        while merged.page.is_empty() {
            if merged.done {
                return None;
            }
            if let Err(e) = merged.fetch_page() {
                merged.done = true;
                return Some(Err(e));
            }
        }
        merged.page.pop_front().map(Ok)
    }
}

impl std::iter::FusedIterator for TieredRead {}

impl Drop for Merged {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.pool.give_back(reader.into_connection());
        }
    }
}

impl std::fmt::Debug for TieredRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Live(iter) => iter.fmt(f),
            Source::Merged(merged) => f
                .debug_struct("TieredRead")
                .field("after", &merged.after)
                .field("end", &merged.end)
                .field("stopped_at", &merged.stopped_at)
                .finish_non_exhaustive(),
        }
    }
}

/// A count across both tiers. See
/// [`EventLog::count_with_archive`](super::EventLog::count_with_archive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TieredCount {
    /// Matching events (at most the query's `limit`).
    pub count: u64,
    /// `Some(offset)` when the count stopped early: it covers the events at or below
    /// `offset`; count on from `offset + 1` and add.
    pub complete_through: Option<u64>,
    /// What stopped it, when it stopped early.
    pub stopped_by: Option<StopReason>,
}

/// Whether an event is still in the live log, as `tx` sees it.
const LIVE_OFFSET_SQL: &str = r#"SELECT 1 FROM events WHERE "offset" = ?1"#;

/// Counts the events matching `query` in both tiers, in one snapshot of the log. With
/// [`ReadScope::OneWindow`] and a filter checked row by row, the live part covers at
/// most [`COUNT_SCAN_WINDOW`] offsets from the first that may be live.
pub(super) fn count(
    pool: &ReaderPool,
    query: &ReadQuery,
    budget: Option<ArchiveBudget>,
    scope: ReadScope,
) -> Result<TieredCount, LogError> {
    count_within(pool, query, budget, scope, COUNT_SCAN_WINDOW)
}

/// [`count`], with the live window as a parameter (tests use a small one).
fn count_within(
    pool: &ReaderPool,
    query: &ReadQuery,
    mut budget: Option<ArchiveBudget>,
    scope: ReadScope,
    window: u64,
) -> Result<TieredCount, LogError> {
    let plan = Plan::new(query)?;
    let cold = pool.cold.get().cloned();
    let conn = pool.take()?;
    let sqlite = |e| super::schema::sqlite_error(pool.path(), "counting events", e);
    let result = (|| -> Result<TieredCount, LogError> {
        let tx = conn.unchecked_transaction().map_err(sqlite)?;
        let head = head(&tx).map_err(sqlite)?;
        let horizon = horizon::read(&tx).map_err(sqlite)?;
        let lo = query.from_offset.max(1);
        let hi = query.to_offset.map_or(head, |to| to.min(head));
        let through = hi.min(horizon.archived_through);
        let removed_through = horizon.truncated_before() - 1;
        // The last offset this count may cover: for a client's count over a filter
        // checked row by row, one window of offsets from the first that may be live.
        let window_end = match scope {
            ReadScope::OneWindow if plan.windowed => {
                // Counted from the first live event that can match, as a one-window
                // read counts its window.
                let anchor =
                    super::query::window_anchor(&tx, query, lo - 1, head).map_err(sqlite)?;
                Some(anchor.saturating_add(window)).filter(|&end| end < hi)
            }
            _ => None,
        };
        let mut archived = 0u64;
        let mut complete_through = None;
        let mut stopped_by = None;
        // Offsets counted in the archive, kept when the count may stop early so that it
        // can leave out what lies past where it stopped.
        let mut counted = Vec::new();
        if let Some(cold) = cold.filter(|_| lo <= through) {
            let range = time_narrowed(
                &tx,
                query,
                ColdRange {
                    after: lo - 1,
                    through,
                },
            )
            .map_err(sqlite)?;
            if range.through > range.after {
                let mut live = tx.prepare_cached(LIVE_OFFSET_SQL).map_err(sqlite)?;
                let mut failure = None;
                // Every matching offset seen, so that one stored in two segments (an
                // archive written before `Archive::reconcile`, when a pass failed
                // between writing a segment and removing its events) counts once, as a
                // read shows it once. Its memory is the decompressed segments' matching
                // events: under a budget at most max(limit, overlap depth at the first
                // offset) segments' worth (see `ArchiveBudget`).
                let mut seen = HashSet::new();
                let keep_offsets = budget.is_some() || window_end.is_some();
                let mut visit = |seq: u64, event: &Event| {
                    if !matches(query, event) || !seen.insert(event.offset) {
                        return;
                    }
                    // A segment not yet settled may still have its events in the live
                    // log too (retention is removing them): count those there.
                    if seq > horizon.settled_segment {
                        match live.exists([to_sql_int(event.offset)]) {
                            Ok(false) => {}
                            Ok(true) => return,
                            Err(e) => {
                                failure.get_or_insert(e);
                                return;
                            }
                        }
                    }
                    archived += 1;
                    if keep_offsets {
                        counted.push(event.offset);
                    }
                };
                let complete = cold.scan(range, budget.as_mut(), &mut visit)?;
                if let Some(e) = failure {
                    return Err(sqlite(e));
                }
                if complete < range.through {
                    if complete < lo {
                        return Err(LogError::ArchiveBudget {
                            from_offset: lo,
                            segments: budget.as_ref().map_or(0, ArchiveBudget::limit),
                        });
                    }
                    archived = counted.iter().filter(|&&o| o <= complete).count() as u64;
                    complete_through = Some(complete);
                    stopped_by = Some(StopReason::ArchiveBudget);
                }
            }
        }
        if let Some(end) = window_end
            && complete_through.is_none_or(|complete| end < complete)
        {
            archived = counted.iter().filter(|&&o| o <= end).count() as u64;
            complete_through = Some(end);
            stopped_by = Some(StopReason::ScanWindow);
        }
        let mut live_query = query.clone();
        if let Some(complete) = complete_through {
            live_query.to_offset = Some(hi.min(complete));
        }
        let live = match plan.span(&tx, &live_query, 0, head).map_err(sqlite)? {
            Some(span) => plan.count(&tx, span, removed_through).map_err(sqlite)?,
            None => 0,
        };
        tx.finish().map_err(sqlite)?;
        let total = live + archived;
        Ok(TieredCount {
            count: query.limit.map_or(total, |limit| total.min(limit)),
            complete_through,
            stopped_by,
        })
    })();
    pool.give_back(conn);
    result
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::log::{ColdTier, Durability, EventLog, LogOptions, NewEvent, Removal, StreamFilter};

    /// An archive in memory, as one settled segment.
    #[derive(Debug)]
    struct MemoryTier(Vec<Event>);

    impl MemoryTier {
        fn in_range(&self, range: ColdRange) -> impl Iterator<Item = &Event> {
            self.0
                .iter()
                .filter(move |e| e.offset > range.after && e.offset <= range.through)
        }
    }

    impl ColdTier for MemoryTier {
        fn read(
            &self,
            range: ColdRange,
            max: usize,
            budget: Option<&mut ArchiveBudget>,
            out: &mut Vec<Event>,
        ) -> Result<u64, LogError> {
            out.extend(self.in_range(range).take(max).cloned());
            if let Some(budget) = budget {
                budget.end_call();
            }
            Ok(range.through)
        }

        fn scan(
            &self,
            range: ColdRange,
            budget: Option<&mut ArchiveBudget>,
            visit: &mut dyn FnMut(u64, &Event),
        ) -> Result<u64, LogError> {
            for event in self.in_range(range) {
                visit(1, event);
            }
            if let Some(budget) = budget {
                budget.end_call();
            }
            Ok(range.through)
        }
    }

    /// Events of [`sparse_log`]: six windows, four of them above the archive horizon.
    const EVENTS: u64 = 6 * SCAN_WINDOW;

    /// The offsets of stream `rare-x` (one archived, one live below the horizon, one
    /// near the head); every other event is of stream `s`, of type `Common` but for
    /// the offsets of type `Rare` (live below the horizon, just above it, near the head).
    const RARE_STREAM: [u64; 3] = [5, 10, EVENTS - 10];
    const RARE_TYPE: [u64; 3] = [6, 2 * SCAN_WINDOW + 1, EVENTS - 20];

    /// A log of [`EVENTS`] events whose odd offsets below `2 * SCAN_WINDOW` are archived
    /// (the even ones stay live, below the horizon), with the archive attached.
    fn sparse_log(dir: &std::path::Path) -> EventLog {
        let options = LogOptions {
            durability: Durability::Normal,
            ..LogOptions::default()
        };
        let log = EventLog::open(&dir.join("events.db"), options).expect("open");
        let events: Vec<NewEvent> = (1..=EVENTS)
            .map(|offset| {
                let stream = if RARE_STREAM.contains(&offset) {
                    "rare-x"
                } else {
                    "s"
                };
                let kind = if RARE_TYPE.contains(&offset) {
                    "Rare"
                } else {
                    "Common"
                };
                NewEvent::new(stream, kind, "{}")
            })
            .collect();
        for chunk in events.chunks(4096) {
            log.append(chunk.to_vec()).expect("append");
        }
        let archived: Vec<u64> = (1..2 * SCAN_WINDOW).step_by(2).collect();
        let cold: Vec<Event> = log
            .read(&ReadQuery::default())
            .expect("read")
            .map(|e| e.expect("event"))
            .filter(|e| e.offset % 2 == 1 && e.offset < 2 * SCAN_WINDOW)
            .collect();
        log.pruner()
            .expect("pruner")
            .remove(
                &archived,
                Removal::Archived {
                    segment: 1,
                    last_chunk: true,
                },
            )
            .expect("archive");
        assert!(log.attach_cold_tier(Arc::new(MemoryTier(cold))));
        assert_eq!(
            log.horizon().expect("horizon").archived_through,
            2 * SCAN_WINDOW - 1
        );
        log
    }

    /// The two sparse filters of [`sparse_log`], both checked row by row: the prefix of
    /// the streams at [`RARE_STREAM`], and the stream `s` with the type at [`RARE_TYPE`].
    fn sparse_queries() -> [ReadQuery; 2] {
        [
            ReadQuery {
                stream: StreamFilter::Prefixes(vec!["rare-".into()]),
                ..ReadQuery::default()
            },
            ReadQuery {
                stream: StreamFilter::Exact("s".into()),
                types: vec!["Rare".into()],
                ..ReadQuery::default()
            },
        ]
    }

    /// Counts the SQLite VM steps the reader of `read` runs from now on.
    fn count_steps(read: &mut TieredRead) -> Arc<AtomicU64> {
        let steps = Arc::new(AtomicU64::new(0));
        let Source::Merged(merged) = &mut read.source else {
            panic!("a one-window read goes through the merged reader");
        };
        let counter = Arc::clone(&steps);
        merged
            .reader
            .as_mut()
            .expect("reader")
            .connection_mut()
            .progress_handler(
                1,
                Some(move || {
                    counter.fetch_add(1, Ordering::Relaxed);
                    false
                }),
            )
            .expect("progress handler");
        steps
    }

    fn stop_counting(read: &mut TieredRead) {
        if let Source::Merged(merged) = &mut read.source
            && let Some(reader) = &mut merged.reader
        {
            reader
                .connection_mut()
                .progress_handler(1, None::<fn() -> bool>)
                .expect("progress handler");
        }
    }

    /// Every matching event, a request at a time as the API reads: the offsets, the
    /// VM steps of each request, and where each request stopped.
    fn page_through(log: &EventLog, query: &ReadQuery) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        let (mut offsets, mut steps, mut stops) = (Vec::new(), Vec::new(), Vec::new());
        let mut from = 1;
        loop {
            let request = ReadQuery {
                from_offset: from,
                ..query.clone()
            };
            let mut read = log
                .read_one_window(&request, Some(ArchiveBudget::segments(16)))
                .expect("read");
            let counted = count_steps(&mut read);
            offsets.extend(read.by_ref().map(|e| e.expect("event").offset));
            stop_counting(&mut read);
            steps.push(counted.load(Ordering::Relaxed));
            match read.stop() {
                Some((at, reason)) => {
                    assert_eq!(reason, StopReason::ScanWindow);
                    assert!(at >= from, "a request from {from} made no progress");
                    // The window counts from the first live event at or after `from`:
                    // here `from` itself or the next offset.
                    assert!(
                        at - from <= SCAN_WINDOW,
                        "a request from {from} read to {at}"
                    );
                    stops.push(at);
                    from = at + 1;
                }
                None => return (offsets, steps, stops),
            }
        }
    }

    /// A sparse stream-prefix or stream-and-type read over an archive and a large live
    /// log: one request scans one window of the live log, not everything up to the one
    /// match near the head, and paging on finds every match once, in order; the read of
    /// the whole range (the command line's) reads a window per transaction. Counts
    /// stay exact.
    #[test]
    fn a_sparse_read_over_both_tiers_scans_a_window_per_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = sparse_log(dir.path());
        let [by_prefix, by_stream_and_type] = sparse_queries();
        let queries = [(by_prefix, RARE_STREAM), (by_stream_and_type, RARE_TYPE)];
        for (query, expected) in queries {
            let query = ReadQuery {
                limit: Some(1000),
                batch_size: 256,
                ..query
            };
            // The whole range in one read, counting the VM steps of each transaction.
            let mut whole = log.read_with_archive(&query, None).expect("read");
            let counted = count_steps(&mut whole);
            let Source::Merged(merged) = &mut whole.source else {
                panic!("an archive is attached");
            };
            let (mut read_whole, mut per_transaction) = (Vec::new(), Vec::new());
            while !merged.done {
                let before = counted.load(Ordering::Relaxed);
                merged.fetch_page().expect("page");
                per_transaction.push(counted.load(Ordering::Relaxed) - before);
                read_whole.extend(merged.page.drain(..).map(|e| e.offset));
            }
            stop_counting(&mut whole);
            drop(whole);
            let total: u64 = per_transaction.iter().sum();
            assert_eq!(read_whole, expected, "{query:?}");
            assert!(per_transaction.len() >= 6, "{per_transaction:?}");
            // Six windows: no transaction scans more than about one (a window above
            // the horizon costs about a fifth of the whole read).
            for steps in &per_transaction {
                assert!(
                    *steps * 3 < total,
                    "{steps} of {total}: {per_transaction:?}"
                );
            }

            let (offsets, steps, stops) = page_through(&log, &query);
            assert_eq!(offsets, expected, "{query:?}");
            assert_eq!(stops.len() as u64, EVENTS / SCAN_WINDOW - 1, "{stops:?}");
            assert!(stops.windows(2).all(|w| w[0] < w[1]), "{stops:?}");
            for request in &steps {
                assert!(*request * 3 < total, "{request} of {total}: {steps:?}");
            }

            let count = log.count_with_archive(&query, None).expect("count");
            assert_eq!((count.count, count.complete_through), (3, None));
        }
    }

    // The API's count window is larger than this log, so one request counts it all.
    const _: () = assert!(EVENTS < COUNT_SCAN_WINDOW);

    /// A client's count over a sparse filter covers at most its window of the live log
    /// (here one `SCAN_WINDOW`, so that the log holds several) and says where to count
    /// on; counting on from each stop adds up to the exact count, and the operator's
    /// count of the whole range does not stop.
    #[test]
    fn a_client_count_over_a_sparse_filter_covers_a_window_and_counting_on_is_exact() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = sparse_log(dir.path());
        for query in sparse_queries() {
            let (mut total, mut stops, mut from) = (0, Vec::new(), 1);
            loop {
                let request = ReadQuery {
                    from_offset: from,
                    ..query.clone()
                };
                let counted = count_within(
                    &log.inner.readers,
                    &request,
                    Some(ArchiveBudget::segments(16)),
                    ReadScope::OneWindow,
                    SCAN_WINDOW,
                )
                .expect("count");
                total += counted.count;
                let Some(through) = counted.complete_through else {
                    assert_eq!(counted.stopped_by, None);
                    break;
                };
                assert_eq!(counted.stopped_by, Some(StopReason::ScanWindow));
                // The window counts from the first live event at or after `from`: here
                // `from` itself or the next offset.
                assert!(
                    through >= from && through - from <= SCAN_WINDOW,
                    "a count from {from} covered up to {through}"
                );
                stops.push(through);
                from = through + 1;
            }
            assert_eq!(total, 3, "{query:?}: stops {stops:?}");
            assert!(stops.len() >= 3, "{stops:?}");
            let whole = log.count_with_archive(&query, None).expect("count");
            assert_eq!((whole.count, whole.stopped_by), (3, None));
            let client = log
                .count_one_window(&query, Some(ArchiveBudget::segments(16)))
                .expect("count");
            assert_eq!((client.count, client.complete_through), (3, None));
        }
    }
}
