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

use std::collections::{HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;

use super::cold::{ArchiveBudget, ColdRange, matches, time_narrowed};
use super::horizon;
use super::query::{Plan, to_sql_int};
use super::read::{EventIter, LogReader, ReaderPool, head};
use super::{DEFAULT_BATCH_SIZE, Event, LogError, MAX_BATCH_SIZE, ReadQuery};

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
    /// The last offset to read.
    end: u64,
    remaining: u64,
    page_size: usize,
    page: VecDeque<Event>,
    done: bool,
    stopped_at: Option<u64>,
}

impl TieredRead {
    pub(super) fn new(
        pool: &Arc<ReaderPool>,
        query: &ReadQuery,
        budget: Option<ArchiveBudget>,
    ) -> Result<TieredRead, LogError> {
        if pool.cold.get().is_none() {
            return Ok(TieredRead {
                source: Source::Live(Box::new(EventIter::new(Arc::clone(pool), query)?)),
            });
        }
        // Refuse a bad query before taking a connection.
        Plan::new(query)?;
        let mut reader = LogReader::pooled(pool)?;
        let head = match reader.head() {
            Ok(head) => head,
            Err(e) => {
                pool.give_back(reader.into_connection());
                return Err(e);
            }
        };
        reader.set_archive_budget(budget);
        let end = query.to_offset.map_or(head, |to| to.min(head));
        let mut fixed = query.clone();
        fixed.to_offset = Some(end);
        let after = query.from_offset.saturating_sub(1);
        let page_size = match query.batch_size {
            0 => DEFAULT_BATCH_SIZE,
            n => n.min(MAX_BATCH_SIZE),
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
                remaining,
                page_size,
                page: VecDeque::new(),
                done: after >= end || remaining == 0,
                stopped_at: None,
            })),
        })
    }

    /// `Some(offset)` when the archive budget stopped the read before its end: every
    /// matching event at or below `offset` was returned; read on from `offset + 1`.
    pub fn stopped_at(&self) -> Option<u64> {
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
        let page = &mut self.page;
        let scan = reader.read_batch(&self.query, self.after, max, |event| {
            page.push_back(event.to_event());
            ControlFlow::Continue(())
        })?;
        let moved = scan.visited > 0 || scan.scanned_through > self.after;
        self.after = self.after.max(scan.scanned_through);
        self.remaining = self.remaining.saturating_sub(scan.visited as u64);
        let budget = reader.archive_budget();
        if self.remaining == 0 || self.after >= self.end {
            self.done = true;
        } else if let Some(budget) = budget.filter(|b| b.exhausted()) {
            self.done = true;
            // Complete up to here; a read that could not answer a single offset fails.
            if self.after > self.started_after {
                self.stopped_at = Some(self.after);
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
    /// `Some(offset)` when the archive budget stopped the count: it covers the events at
    /// or below `offset`; count on from `offset + 1` and add.
    pub complete_through: Option<u64>,
}

/// Whether an event is still in the live log, as `tx` sees it.
const LIVE_OFFSET_SQL: &str = r#"SELECT 1 FROM events WHERE "offset" = ?1"#;

/// Counts the events matching `query` in both tiers, in one snapshot of the log.
pub(super) fn count(
    pool: &ReaderPool,
    query: &ReadQuery,
    mut budget: Option<ArchiveBudget>,
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
        let mut archived = 0u64;
        let mut complete_through = None;
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
                // Offsets counted in the archive, kept only under a budget so that a
                // count it stops can leave out what lies past where it stopped.
                let mut counted = Vec::new();
                let keep_offsets = budget.is_some();
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
                }
            }
        }
        let mut live_query = query.clone();
        if let Some(complete) = complete_through {
            live_query.to_offset = Some(hi.min(complete));
        }
        let removed_through = horizon.truncated_before() - 1;
        let live = match plan.span(&tx, &live_query, 0, head).map_err(sqlite)? {
            Some(span) => plan.count(&tx, span, removed_through).map_err(sqlite)?,
            None => 0,
        };
        tx.finish().map_err(sqlite)?;
        let total = live + archived;
        Ok(TieredCount {
            count: query.limit.map_or(total, |limit| total.min(limit)),
            complete_through,
        })
    })();
    pool.give_back(conn);
    result
}
