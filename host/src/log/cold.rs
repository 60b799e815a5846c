//! The cold tier: events that retention moved out of `events.db` into an archive, read
//! back by replays as if they had never left.
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

use super::query::{Plan, StreamFilter};
use super::read::{ScanResult, bind_page, event_ref};
use super::{Event, EventRef, LogError, ReadQuery, timestamp_to_micros};

/// Where archived events are read from.
pub trait ColdTier: Send + Sync + fmt::Debug {
    /// Appends to `out`, in offset order, up to `max` archived events with offsets in
    /// `(after, through]`. `through` never exceeds the horizon's `archived_through` as
    /// seen in the caller's snapshot, so every event it covers is durably archived.
    ///
    /// # Errors
    /// [`LogError::Archive`] when a segment is missing, damaged or fails its checksum.
    fn read(
        &self,
        after: u64,
        through: u64,
        max: usize,
        out: &mut Vec<Event>,
    ) -> Result<(), LogError>;
}

/// Whether an archived event matches `query` (the SQL plan's filters, in memory).
pub(super) fn matches(query: &ReadQuery, event: &Event) -> bool {
    if event.offset < query.from_offset || query.to_offset.is_some_and(|to| event.offset > to) {
        return false;
    }
    let micros = timestamp_to_micros(event.recorded_at);
    if query
        .from_time
        .is_some_and(|from| micros < timestamp_to_micros(from))
        || query
            .until_time
            .is_some_and(|until| micros >= timestamp_to_micros(until))
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
    reason = "the read_batch arguments plus the snapshot's transaction, head and horizon"
)]
pub(super) fn read_merged(
    tx: &Transaction<'_>,
    cold: &dyn ColdTier,
    query: &ReadQuery,
    after: u64,
    head: u64,
    archived_through: u64,
    max_events: usize,
    visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
) -> Result<Result<ScanResult, rusqlite::Error>, LogError> {
    let mut archived = Vec::new();
    let through = archived_through.min(head);
    cold.read(after, through, max_events, &mut archived)?;
    // With a full page of archived events, live events past the last of them wait for
    // the next call; otherwise everything up to the archive's end is merged now.
    let bound = match archived.last() {
        Some(last) if archived.len() >= max_events => last.offset,
        _ => through,
    };
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
