//! `GET /v1/events/subscribe`: a live tail of the log as Server-Sent Events.
//!
//! Each event is one SSE message whose `id` is the event's offset and whose `data` is
//! the event as JSON (the same shape as `GET /v1/events`). A client that reconnects with
//! `Last-Event-ID: <offset>` resumes right after that event, so nothing is missed or
//! repeated. The filters are those of `GET /v1/events`; `limit` ends the stream after
//! that many events.
//!
//! # Replays: rate, window, progress
//! - `rate=N` sends at most N events per second (lowered to `replay.max_rate` when the
//!   host caps it); the pacing lives in [`crate::replay::Pace`].
//! - `until_offset=N` (inclusive; `to_offset` is the same) and `until_time=T` (exclusive)
//!   close the window: the stream ends once every event in it was sent.
//! - `progress=true` adds `event: progress` messages every `replay.progress_interval_ms`
//!   and one last one (`"done": true`) when a window ends: events sent (including those
//!   sent before a resume), the total in the window (exact when it has an end, counted
//!   from the log's indexes; otherwise the matching events up to the head when the
//!   stream opened, an estimate), percent, events/s, ETA and the current offset. They
//!   carry no `id`, so they never move a client's `Last-Event-ID`.
//!
//! Rate, window and progress are query parameters, so a client that reconnects with the
//! same URL and `Last-Event-ID` resumes the same replay, its progress counting on.
//!
//! # Memory and backpressure
//! The stream is pulled: the connection asks for the next message only once the socket
//! has taken the previous ones, and the subscription reads the log one page
//! ([`SUBSCRIBE_PAGE_EVENTS`]) at a time, on its own read connection. A slow client
//! therefore slows its own reads; nothing is buffered for it beyond one page. When it
//! has caught up, it waits on the log's head ([`EventLog::watch_head`]) instead of
//! polling, and looks again every [`SUBSCRIBE_POLL`] for appends by other processes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::error::ApiError;
use super::events::{FILTER_KEYS, filters};
use super::extract::Params;
use super::limits::{SUBSCRIBE_KEEP_ALIVE, SUBSCRIBE_PAGE_EVENTS, SUBSCRIBE_POLL};
use super::state::{ApiState, blocking};
use crate::log::correlation_id;
use crate::log::{Event, EventLog, LogReader, ReadQuery};
use crate::replay::{Pace, ProgressTracker};

/// The header a reconnecting SSE client sends with the last id it received.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The parameters a subscription takes besides the filters.
const REPLAY_KEYS: &[&str] = &["rate", "until_offset", "progress"];

/// Parses `Last-Event-ID`, the offset of the last event a reconnecting client received.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(LAST_EVENT_ID)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        "`Last-Event-ID` must be the offset of the last event received",
                    )
                })
        })
        .transpose()
}

/// `GET /v1/events/subscribe`.
pub(crate) async fn subscribe(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let known: Vec<&str> = FILTER_KEYS.iter().chain(REPLAY_KEYS).copied().collect();
    params.only(&known)?;
    let mut query = filters(&params)?;
    let limit = params.number("limit")?;
    if let Some(until) = params.number("until_offset")? {
        if query.to_offset.is_some_and(|to| to != until) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "`until_offset` and `to_offset` name the same bound; give one",
            ));
        }
        query.to_offset = Some(until);
    }
    let rate = match params.number("rate")? {
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "`rate` must be at least 1 (events per second); leave it out for no limit",
            ));
        }
        requested => state.engine().config().replay.effective_rate(requested),
    };
    let want_progress = match params.one("progress")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`progress` must be true or false, not {other:?}"),
            ));
        }
    };
    let after = match last_event_id(&headers)? {
        Some(last) => last,
        None => query.from_offset.saturating_sub(1),
    };
    // The window's first offset, before the cursor replaces it: progress counts from it.
    let window_start = query.from_offset;
    // The cursor replaces the start offset; `read_batch` takes it as `after`.
    query.from_offset = 0;

    let permit = state.hold_connection()?;
    let log = state.log().clone();
    let reader = {
        let log = log.clone();
        blocking(move || Ok(log.reader()?)).await?
    };
    let progress = if want_progress {
        let log = log.clone();
        let window = query.clone();
        let interval = state.engine().config().replay.progress_interval();
        Some(
            blocking(move || {
                progress_tracker(&log, window, window_start, after, limit, interval, rate)
            })
            .await?,
        )
    } else {
        None
    };
    tracing::debug!(after, ?rate, "subscription opened");
    let subscription = Subscription {
        log: log.clone(),
        reader: Some(reader),
        query: Arc::new(query),
        after,
        remaining: limit,
        page: VecDeque::new(),
        pace: rate.and_then(Pace::new),
        progress,
        finished: false,
        head: log.watch_head(),
        shutdown: state.shutdown_signal(),
        _permit: permit,
    };
    let mut response = Sse::new(subscription.into_stream())
        .keep_alive(KeepAlive::new().interval(SUBSCRIBE_KEEP_ALIVE))
        .into_response();
    // Reverse proxies such as nginx would otherwise buffer the stream.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// One client's position in the log.
struct Subscription {
    log: EventLog,
    /// Its own read connection; `None` only while a read is in flight on the blocking pool.
    reader: Option<LogReader>,
    query: Arc<ReadQuery>,
    /// Every matching event at or below this offset has been read.
    after: u64,
    /// Events left before the stream ends, if the client set a `limit`.
    remaining: Option<u64>,
    /// Read but not yet sent: at most one page.
    page: VecDeque<Event>,
    /// The rate limit, if any.
    pace: Option<Pace>,
    /// Progress reports, if the client asked for them.
    progress: Option<ProgressTracker>,
    /// The window is complete: only the last progress report is left to send.
    finished: bool,
    /// The log head, to wait on when caught up.
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    /// Counts against `server.max_subscribers` until the client goes away.
    _permit: OwnedSemaphorePermit,
}

/// What the next step of a subscription produced.
enum Next {
    /// A message to send.
    Send(SseEvent),
    /// The stream is over.
    End,
}

impl Subscription {
    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
        stream::unfold(self, |mut subscription| async move {
            match subscription.next().await {
                Next::Send(event) => Some((Ok(event), subscription)),
                Next::End => None,
            }
        })
    }

    async fn next(&mut self) -> Next {
        loop {
            if *self.shutdown.borrow() {
                return Next::End;
            }
            if self.remaining == Some(0) {
                self.finished = true;
            }
            if let Some(report) = self.progress_due() {
                return Next::Send(report);
            }
            if self.finished {
                return Next::End;
            }
            if let Some(event) = self.page.pop_front() {
                if let Some(pace) = self.pace.as_mut() {
                    let at = pace.reserve(std::time::Instant::now());
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {}
                        _ = self.shutdown.wait_for(|stop| *stop) => return Next::End,
                    }
                }
                if let Some(remaining) = self.remaining.as_mut() {
                    *remaining -= 1;
                }
                if let Some(progress) = self.progress.as_mut() {
                    progress.record_sent();
                }
                return match message(&event) {
                    Ok(message) => Next::Send(message),
                    Err(error) => {
                        tracing::error!(offset = event.offset, "cannot send an event: {error}");
                        Next::Send(error_message(&error))
                    }
                };
            }
            // Marked as seen before reading, so an append landing during the read
            // wakes the wait below instead of being slept through.
            self.head.borrow_and_update();
            match self.read_page().await {
                Ok(Progress::Read) => continue,
                Ok(Progress::CaughtUp) => {}
                Ok(Progress::Finished) => {
                    self.finished = true;
                    continue;
                }
                Err(error) => {
                    tracing::warn!("subscription ended: {}", error.message);
                    self.remaining = Some(0);
                    self.progress = None;
                    return Next::Send(error_message(&error));
                }
            }
            let report_at = self.progress.as_ref().map(ProgressTracker::next_due);
            tokio::select! {
                changed = self.head.changed() => {
                    // The log's writer is gone: the host is shutting down.
                    if changed.is_err() {
                        return Next::End;
                    }
                }
                () = tokio::time::sleep(SUBSCRIBE_POLL) => {}
                () = sleep_until_maybe(report_at) => {}
                _ = self.shutdown.wait_for(|stop| *stop) => return Next::End,
            }
        }
    }

    /// The progress message to send now, if one is due (or the window just ended; the
    /// last report is then sent once and progress stops).
    fn progress_due(&mut self) -> Option<SseEvent> {
        let now = std::time::Instant::now();
        let tracker = self.progress.as_mut()?;
        if !self.finished && !tracker.due(now) {
            return None;
        }
        let report = tracker.report(now, self.after, self.finished);
        if self.finished {
            self.progress = None;
        }
        let json = serde_json::to_string(&report).unwrap_or_default();
        Some(SseEvent::default().event("progress").data(json))
    }

    /// Reads the next page into `self.page`.
    async fn read_page(&mut self) -> Result<Progress, ApiError> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(Progress::Finished);
        };
        let log = self.log.clone();
        let query = Arc::clone(&self.query);
        let after = self.after;
        let max = self.remaining.map_or(SUBSCRIBE_PAGE_EVENTS, |remaining| {
            usize::try_from(remaining)
                .map_or(SUBSCRIBE_PAGE_EVENTS, |r| r.min(SUBSCRIBE_PAGE_EVENTS))
        });
        let (reader, result) = blocking(move || {
            let result = read(&log, &mut reader, &query, after, max);
            Ok((reader, result))
        })
        .await?;
        self.reader = Some(reader);
        let (page, scanned_through, progress) = result?;
        self.after = self.after.max(scanned_through);
        self.page = page;
        Ok(progress)
    }
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn sleep_until_maybe(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Counts the subscription's window for its progress reports: the matching events
/// already sent before `after` (a resume) and the total. A window with an end
/// (`to_offset`, `until_time` or a `limit`) is counted exactly; an open one up to the
/// head as of now, an estimate that the reports grow as the tail passes it. Counts come
/// from the log's indexes. Runs on the blocking pool.
fn progress_tracker(
    log: &EventLog,
    mut window: ReadQuery,
    window_start: u64,
    after: u64,
    limit: Option<u64>,
    interval: std::time::Duration,
    rate: Option<u64>,
) -> Result<ProgressTracker, ApiError> {
    let exact = window.to_offset.is_some() || window.until_time.is_some() || limit.is_some();
    window.from_offset = window_start;
    let total = log.count(&window)?;
    let before = if after >= window_start.max(1) {
        log.count(&ReadQuery {
            to_offset: Some(window.to_offset.map_or(after, |to| to.min(after))),
            ..window
        })?
    } else {
        0
    };
    // A `limit` ends the stream after that many events from this connection on.
    let total = limit.map_or(total, |limit| total.min(before.saturating_add(limit)));
    Ok(ProgressTracker::new(
        before,
        total,
        exact,
        interval,
        rate,
        std::time::Instant::now(),
    ))
}

/// What reading a page found.
enum Progress {
    /// Some events: send them, then read on.
    Read,
    /// None yet: wait for appends.
    CaughtUp,
    /// None, and none can ever match again.
    Finished,
}

/// Reads up to `max` events after `after`, and says whether more can ever match.
/// Runs on the blocking pool.
fn read(
    log: &EventLog,
    reader: &mut LogReader,
    query: &ReadQuery,
    after: u64,
    max: usize,
) -> Result<(VecDeque<Event>, u64, Progress), ApiError> {
    let mut page = VecDeque::new();
    let scan = reader.read_batch(query, after, max, |event| {
        page.push_back(event.to_event());
        std::ops::ControlFlow::Continue(())
    })?;
    if scan.visited > 0 {
        return Ok((page, scan.scanned_through, Progress::Read));
    }
    let through = scan.scanned_through;
    if query.to_offset.is_some_and(|to| through >= to) {
        return Ok((page, through, Progress::Finished));
    }
    // Recorded times never decrease along offsets: once an event already scanned was
    // recorded at or after `until_time`, no later event can fall before it.
    if let Some(until) = query.until_time {
        let beyond = ReadQuery {
            from_time: Some(until),
            to_offset: Some(through),
            limit: Some(1),
            ..ReadQuery::default()
        };
        if log.count(&beyond)? > 0 {
            return Ok((page, through, Progress::Finished));
        }
    }
    Ok((page, through, Progress::CaughtUp))
}

/// An event as an SSE message: `id` is its offset, `data` its JSON.
fn message(event: &Event) -> Result<SseEvent, ApiError> {
    let json =
        serde_json::to_string(event).map_err(|e| ApiError::internal("serializing an event", &e))?;
    if let Some(correlation_id) = correlation_id(event.metadata.as_deref()) {
        tracing::trace!(offset = event.offset, %correlation_id, "event sent to a subscriber");
    }
    Ok(SseEvent::default().id(event.offset.to_string()).data(json))
}

/// The last message of a stream that failed: `event: error` with the error's JSON.
fn error_message(error: &ApiError) -> SseEvent {
    let body = serde_json::json!({"error": {"code": error.code, "message": error.message}});
    SseEvent::default().event("error").data(body.to_string())
}
