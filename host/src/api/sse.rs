//! `GET /v1/events/subscribe`: a live tail of the log as Server-Sent Events.
//!
//! Each event is one SSE message whose `id` is the event's offset and whose `data` is
//! the event as JSON (the same shape as `GET /v1/events`). A client that reconnects with
//! `Last-Event-ID: <offset>` resumes right after that event, so nothing is missed or
//! repeated. The filters are those of `GET /v1/events`; `limit` ends the stream after
//! that many events.
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

/// The header a reconnecting SSE client sends with the last id it received.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// `GET /v1/events/subscribe`.
pub(crate) async fn subscribe(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(FILTER_KEYS)?;
    let mut query = filters(&params)?;
    let limit = params.number("limit")?;
    let after = match headers.get(LAST_EVENT_ID) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    "`Last-Event-ID` must be the offset of the last event received",
                )
            })?,
        None => query.from_offset.saturating_sub(1),
    };
    // The cursor replaces the start offset; `read_batch` takes it as `after`.
    query.from_offset = 0;

    let permit = Arc::clone(state.subscribers())
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_subscribers",
                format!(
                    "{} subscriptions are open, the most this host allows \
                     (`server.max_subscribers`); retry later",
                    state.config().max_subscribers
                ),
            )
        })?;
    let log = state.log().clone();
    let reader = {
        let log = log.clone();
        blocking(move || Ok(log.reader()?)).await?
    };
    tracing::debug!(after, "subscription opened");
    let subscription = Subscription {
        log: log.clone(),
        reader: Some(reader),
        query: Arc::new(query),
        after,
        remaining: limit,
        page: VecDeque::new(),
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
            if self.remaining == Some(0) || *self.shutdown.borrow() {
                return Next::End;
            }
            if let Some(event) = self.page.pop_front() {
                if let Some(remaining) = self.remaining.as_mut() {
                    *remaining -= 1;
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
                Ok(Progress::Finished) => return Next::End,
                Err(error) => {
                    tracing::warn!("subscription ended: {}", error.message);
                    self.remaining = Some(0);
                    return Next::Send(error_message(&error));
                }
            }
            tokio::select! {
                changed = self.head.changed() => {
                    // The log's writer is gone: the host is shutting down.
                    if changed.is_err() {
                        return Next::End;
                    }
                }
                () = tokio::time::sleep(SUBSCRIBE_POLL) => {}
                _ = self.shutdown.wait_for(|stop| *stop) => return Next::End,
            }
        }
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
