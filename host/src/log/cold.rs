//! The cold tier: events that retention moved out of `events.db` into an archive, read
//! back by replays, reads and counts (`tiered.rs`) as if they had never left.
//!
//! The log knows only the [`ColdTier`] trait; the archive itself (segment files, zstd,
//! checksums) lives in [`crate::retention`]. A [`LogReader`](super::LogReader) with a
//! cold tier attached ([`EventLog::attach_cold_tier`](super::EventLog::attach_cold_tier))
//! answers [`read_batch`](super::LogReader::read_batch) below the horizon's
//! `archived_through` by merging archived and live events by offset; above it, it takes
//! the usual path untouched.
//!
//! An event may briefly be in both places (a segment is durable before its events are
//! removed here, in several transactions): the merge keeps one copy of each offset, so a
//! crash between the two never shows an event twice.

use std::fmt;
use std::ops::ControlFlow;

use rusqlite::Transaction;

use super::model::ceil_micros;
use super::query::{Plan, StreamFilter, first_live_at_or_after, first_recorded_at_or_after};
use super::read::{ScanResult, bind_page, event_ref};
use super::{Event, EventRef, LogError, ReadQuery, timestamp_to_micros};

/// Where archived events are read from.
pub trait ColdTier: Send + Sync + fmt::Debug {
    /// Appends to `out`, in offset order, up to `max` archived events with offsets in
    /// `(after, through]`. `through` never exceeds the horizon's `archived_through` as
    /// seen in the caller's snapshot, so every event it covers is durably archived.
    ///
    /// With a `budget`, a segment that would have to be decompressed once the budget is
    /// spent is not: the read stops before it. Returns how far the answer is complete:
    /// every archived event at or below the returned offset (and in the range) is in
    /// `out` or past `max`; `through` when the budget did not stop it.
    ///
    /// # Errors
    /// [`LogError::Archive`] when a segment is missing, damaged or fails its checksum.
    fn read(
        &self,
        range: ColdRange,
        max: usize,
        budget: Option<&mut ArchiveBudget>,
        out: &mut Vec<Event>,
    ) -> Result<u64, LogError>;

    /// Visits every archived event with an offset in `(after, through]`, a segment at a
    /// time (segments may overlap, so not in global offset order), with the sequence
    /// number of its segment. A `budget` stops it as in [`read`](ColdTier::read); the
    /// visitor may then have seen events above the returned offset, which the caller
    /// must leave out.
    ///
    /// # Errors
    /// As [`read`](ColdTier::read).
    fn scan(
        &self,
        range: ColdRange,
        budget: Option<&mut ArchiveBudget>,
        visit: &mut dyn FnMut(u64, &Event),
    ) -> Result<u64, LogError>;
}

/// The offsets `(after, through]` a cold-tier read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdRange {
    /// Exclusive lower bound.
    pub after: u64,
    /// Inclusive upper bound.
    pub through: u64,
}

/// How many archive segments one request may decompress: a client-controlled read or
/// count over the archive stops where its answer is complete rather than decode an
/// unbounded part of it. A segment found in the archive's decoded cache costs nothing.
/// Replays, which must see every event, read without a budget.
///
/// The first cold-tier call of a request may always decompress the segments that reach
/// the first offset it asks for ([`charge_needed`](ArchiveBudget::charge_needed)), even
/// past the limit: otherwise, once more segments overlap one offset than the limit
/// allows (each retention pass of a `max_events_per_stream` policy can add one), every
/// request from there would be refused for good. So a request decompresses at most
/// `max(limit, overlap depth at its first offset)` segments, and always moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveBudget {
    /// Decompressions allowed in all.
    limit: usize,
    /// Decompressions done so far.
    spent: usize,
    /// Whether a segment was refused for want of budget.
    exhausted: bool,
    /// Whether the request's first cold-tier call is over: from then on, every
    /// decompression is within `limit`.
    first_call_done: bool,
}

impl ArchiveBudget {
    /// A budget of `segments` decompressions (at least 1).
    pub fn segments(segments: usize) -> ArchiveBudget {
        ArchiveBudget {
            limit: segments.max(1),
            spent: 0,
            exhausted: false,
            first_call_done: false,
        }
    }

    /// Takes one decompression of a segment that reaches the first offset a cold-tier
    /// call asks for: granted regardless of the limit during the request's first call
    /// (so that the request answers at least that offset), as
    /// [`charge`](ArchiveBudget::charge) after it.
    pub fn charge_needed(&mut self) -> bool {
        if self.first_call_done {
            return self.charge();
        }
        self.spent += 1;
        true
    }

    /// Marks the end of a cold-tier call: later calls of the request get no free
    /// decompressions.
    pub fn end_call(&mut self) {
        self.first_call_done = true;
    }

    /// Takes one decompression from the budget; `false` (and the budget is marked
    /// exhausted) when none is left.
    pub fn charge(&mut self) -> bool {
        if self.spent < self.limit {
            self.spent += 1;
            true
        } else {
            self.exhausted = true;
            false
        }
    }

    /// Whether a read stopped because the budget was spent.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Decompressions allowed in all.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Decompressions done so far.
    pub fn spent(&self) -> usize {
        self.spent
    }
}

/// Narrows the archived offsets a time-filtered query can match, from the live log's
/// times: `recorded_at` never decreases along offsets, so every event at or below the
/// last live event recorded before `from_time` is too early, and every event at or
/// above the first live event recorded at or after `until_time` too late. Archived
/// segments outside that range are then never decompressed.
pub(super) fn time_narrowed(
    tx: &Transaction<'_>,
    query: &ReadQuery,
    range: ColdRange,
) -> rusqlite::Result<ColdRange> {
    let mut narrowed = range;
    if query.from_time.is_none() && query.until_time.is_none() {
        return Ok(narrowed);
    }
    let head = super::read::head(tx)?;
    if let Some(from) = query.from_time {
        // The live event just before this offset (if any) is the last one recorded
        // before `from` (see `first_recorded_at_or_after`).
        let first = first_recorded_at_or_after(tx, ceil_micros(from), 1, head)?;
        narrowed.after = narrowed.after.max(first - 1);
    }
    if let Some(until) = query.until_time {
        // The first live event at or after the offset found: offsets between them may
        // be archived, and those may be early enough.
        let first = first_recorded_at_or_after(tx, ceil_micros(until), 1, head)?;
        if let Some(first_too_late) = first_live_at_or_after(tx, first)? {
            narrowed.through = narrowed.through.min(first_too_late.saturating_sub(1));
        }
    }
    narrowed.through = narrowed.through.max(narrowed.after);
    Ok(narrowed)
}

/// Whether an archived event matches `query` (the SQL plan's filters, in memory).
pub(super) fn matches(query: &ReadQuery, event: &Event) -> bool {
    if event.offset < query.from_offset || query.to_offset.is_some_and(|to| event.offset > to) {
        return false;
    }
    // As the live log's time bounds compare them (see `query.rs`).
    let micros = timestamp_to_micros(event.recorded_at);
    if query
        .from_time
        .is_some_and(|from| micros < ceil_micros(from))
        || query
            .until_time
            .is_some_and(|until| micros >= ceil_micros(until))
    {
        return false;
    }
    if !query.types.is_empty() && !query.types.contains(&event.event_type) {
        return false;
    }
    match &query.stream {
        StreamFilter::Any => true,
        StreamFilter::Exact(stream) => *stream == event.stream,
        StreamFilter::Prefixes(prefixes) => prefixes
            .iter()
            .any(|prefix| event.stream.as_bytes().starts_with(prefix.as_bytes())),
    }
}

/// [`LogReader::read_batch`](super::LogReader::read_batch) below the archive horizon:
/// archived and live events with offsets above `after`, merged by offset, each offset
/// once. `tx` is the reader's transaction, whose snapshot fixed `head` and
/// `archived_through`.
#[expect(
    clippy::too_many_arguments,
    reason = "the read_batch arguments plus the snapshot's transaction, head, horizon and budget"
)]
pub(super) fn read_merged(
    tx: &Transaction<'_>,
    cold: &dyn ColdTier,
    query: &ReadQuery,
    after: u64,
    head: u64,
    archived_through: u64,
    max_events: usize,
    budget: Option<&mut ArchiveBudget>,
    visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
) -> Result<Result<ScanResult, rusqlite::Error>, LogError> {
    let mut archived = Vec::new();
    let through = archived_through.min(head);
    let range = match time_narrowed(tx, query, ColdRange { after, through }) {
        Ok(range) => range,
        Err(e) => return Ok(Err(e)),
    };
    let complete_through = if range.through > range.after {
        cold.read(range, max_events, budget, &mut archived)?
    } else {
        range.through
    };
    // With a full page of archived events, live events past the last of them wait for
    // the next call; otherwise everything up to the archive's end is merged now (no
    // archived event past the narrowed range can match). A spent budget ends the merge
    // where the archive's answer stops being complete.
    let mut bound = match archived.last() {
        Some(last) if archived.len() >= max_events => last.offset,
        _ => through,
    };
    if complete_through < range.through {
        bound = bound.min(complete_through);
    }
    archived.retain(|event| matches(query, event));
    Ok(merge_live(
        tx, query, after, head, bound, max_events, &archived, visit,
    ))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one step of read_merged, kept apart so SQLite errors stay in one channel"
)]
fn merge_live(
    tx: &Transaction<'_>,
    query: &ReadQuery,
    after: u64,
    head: u64,
    bound: u64,
    max_events: usize,
    archived: &[Event],
    visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
) -> Result<ScanResult, rusqlite::Error> {
    let mut bounded = query.clone();
    bounded.to_offset = Some(query.to_offset.map_or(bound, |to| to.min(bound)));
    let mut result = ScanResult {
        visited: 0,
        scanned_through: bound,
    };
    let mut cold = archived.iter().peekable();
    let mut last_live = None;
    let mut live_rows = 0usize;
    // Visits one event; `true` when the batch is over.
    let mut step = |event: EventRef<'_>, result: &mut ScanResult| {
        result.visited += 1;
        if visit(event).is_break() || result.visited == max_events {
            result.scanned_through = event.offset;
            return true;
        }
        false
    };
    if let Ok(plan) = Plan::new(&bounded)
        && let Some(span) = plan.span(tx, &bounded, after, head)?
    {
        let mut stmt = tx.prepare_cached(&plan.sql)?;
        bind_page(&mut stmt, &plan, span.cursor, span.end, max_events, after)?;
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            let live = event_ref(row)?;
            live_rows += 1;
            last_live = Some(live.offset);
            while let Some(archived) = cold.next_if(|e| e.offset <= live.offset) {
                if archived.offset == live.offset {
                    continue; // in both places for a moment: the live copy is visited
                }
                if step(archived.as_event_ref(), &mut result) {
                    return Ok(result);
                }
            }
            if step(live, &mut result) {
                return Ok(result);
            }
        }
    }
    // A full page of live rows may have stopped short of the bound: the archived events
    // past it wait for the next call.
    let live_end = match last_live {
        Some(offset) if live_rows == max_events => offset,
        _ => bound,
    };
    for archived in cold.take_while(|e| e.offset <= live_end) {
        if step(archived.as_event_ref(), &mut result) {
            return Ok(result);
        }
    }
    result.scanned_through = live_end;
    Ok(result)
}
