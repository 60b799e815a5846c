//! `POST /v1/streams/{stream}/events`, `GET /v1/events` and `GET /v1/events/count`,
//! and the filters they share with the subscription endpoint.

use std::borrow::Cow;
use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::Instrument as _;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Params};
use super::state::{ApiState, blocking};
use crate::log::{
    ArchiveBudget, Event, NewEvent, ReadQuery, StopReason, StreamFilter, correlation_id,
};

/// The query parameters that select events, shared by read, count and subscribe.
pub(crate) const FILTER_KEYS: &[&str] = &[
    "from_offset",
    "to_offset",
    "from_time",
    "until_time",
    "type",
    "stream",
    "stream_prefix",
    "limit",
];

/// Events a page holds in memory while it is read from the log: pages are read in
/// chunks of at most this many, so a page of large events is cut by the byte budget
/// before much more than one chunk is held.
const READ_CHUNK_EVENTS: usize = 256;

/// Default cap on the `data` and `metadata` bytes of one `GET /v1/events` page. A page
/// closes early (with `next_from_offset` set) rather than grow past it, because a row
/// cap alone does not bound memory when events can be up to a megabyte each.
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Builds the log query the filter parameters describe (the `limit` is left to the
/// caller). Unknown parameters are refused by the caller, with `Params::only`.
pub(crate) fn filters(params: &Params) -> Result<ReadQuery, ApiError> {
    let time = |key: &str| -> Result<Option<Timestamp>, ApiError> {
        params
            .one(key)?
            .map(|text| {
                text.parse::<Timestamp>().map_err(|e| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!(
                            "`{key}` must be an RFC 3339 time such as 2025-01-31T12:00:00Z: {e}"
                        ),
                    )
                })
            })
            .transpose()
    };
    let prefixes: Vec<String> = params.all("stream_prefix").map(str::to_owned).collect();
    let stream = match (params.one("stream")?, prefixes.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "give either `stream` or `stream_prefix`, not both",
            ));
        }
        (Some(stream), true) => StreamFilter::Exact(stream.to_owned()),
        (None, false) => StreamFilter::Prefixes(prefixes),
        (None, true) => StreamFilter::Any,
    };
    Ok(ReadQuery {
        from_offset: params.number("from_offset")?.unwrap_or(0),
        to_offset: params.number("to_offset")?,
        from_time: time("from_time")?,
        until_time: time("until_time")?,
        types: params.all("type").map(str::to_owned).collect(),
        stream,
        limit: None,
        batch_size: 0,
    })
}

/// One event of an append request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendEvent {
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    #[serde(default)]
    id: Option<String>,
}

/// The object form of an append request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBatch {
    events: Vec<AppendEvent>,
    #[serde(default)]
    expected_version: Option<u64>,
}

/// The answer to an append.
#[derive(Debug, Serialize)]
pub(crate) struct Appended {
    /// One offset per event, in order (an idempotent retry gets the original offsets).
    offsets: Vec<u64>,
    /// With `snapshots.stream_hint_every` set: whether the stream has grown that many
    /// events past its last snapshot, so the application should store a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_due: Option<bool>,
}

/// `POST /v1/streams/{stream}/events`: appends a batch atomically.
///
/// The body is either an array of `{type, data, metadata?, id?}` or an object
/// `{"events": [...], "expected_version": N}`; with `expected_version` the stream must
/// be at version N just before the batch (0: it must not exist yet), else 409.
pub(crate) async fn append(
    State(state): State<ApiState>,
    ApiPath(stream): ApiPath<String>,
    ApiJson(body): ApiJson<Box<RawValue>>,
) -> Result<Json<Appended>, ApiError> {
    if let Some(read_only) = state.engine().read_only() {
        return Err(ApiError::read_only(&read_only));
    }
    let batch = parse_batch(body.get())?;
    if batch.events.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            "the batch is empty; send at least one event",
        ));
    }
    let events: Vec<NewEvent> = batch
        .events
        .into_iter()
        .zip(0u64..)
        .map(|(event, index)| NewEvent {
            id: event.id,
            stream: stream.clone(),
            event_type: event.event_type,
            data: Box::<str>::from(event.data).into(),
            metadata: event.metadata.map(|m| Box::<str>::from(m).into()),
            // Each event of the batch follows the one before it in the same stream.
            expected_version: batch.expected_version.map(|v| v.saturating_add(index)),
        })
        .collect();

    let correlation_ids: BTreeSet<String> = events
        .iter()
        .filter_map(|e| correlation_id(e.metadata.as_deref()).map(Cow::into_owned))
        .collect();
    let span = match correlation_ids.len() {
        0 => tracing::info_span!("append", %stream),
        1 => tracing::info_span!("append", %stream, correlation_id = %first(&correlation_ids)),
        _ => tracing::info_span!(
            "append", %stream, correlation_ids = ?correlation_ids
        ),
    };

    // Described before `events` moves into the log, for the per-event log lines.
    let described: Vec<(String, Option<String>)> = events
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                correlation_id(e.metadata.as_deref()).map(Cow::into_owned),
            )
        })
        .collect();
    // Awaited, not on the blocking pool: the task waits for the group commit (or, in
    // cluster mode, for JetStream and the mirror) without holding a thread, so many
    // concurrent appends cost no thread each.
    let appended = match state.cluster() {
        None => state
            .log()
            .append_async(events)
            .instrument(span.clone())
            .await
            .map_err(ApiError::from),
        Some(cluster) => cluster
            .append(events)
            .instrument(span.clone())
            .await
            .map_err(ApiError::from),
    };
    let offsets = appended.inspect_err(|error| {
        span.in_scope(|| {
            tracing::warn!(code = error.code, "append refused: {}", error.message);
        });
    })?;

    span.in_scope(|| {
        for (offset, (event_type, correlation_id)) in offsets.iter().zip(&described) {
            // An absent correlation id is simply left out of the line.
            let correlation_id = correlation_id.as_deref();
            tracing::debug!(offset, %event_type, correlation_id, "event appended");
        }
        tracing::info!(events = offsets.len(), "appended");
    });
    let snapshot_due = match state.engine().config().snapshots.stream_hint_every {
        0 => None,
        _ => {
            let snapshots = state.stream_snapshots()?;
            // Two indexed reads of small databases, off the async workers all the same.
            blocking(move || {
                snapshots
                    .due(&stream)
                    .map_err(|error| ApiError::internal("stream snapshots", &error))
            })
            .await?
        }
    };
    Ok(Json(Appended {
        offsets,
        snapshot_due,
    }))
}

fn first(set: &BTreeSet<String>) -> &str {
    set.iter().next().map_or("", String::as_str)
}

/// Reads either body form; JSON that parses but has the wrong shape is a 422 naming
/// what is wrong.
fn parse_batch(body: &str) -> Result<AppendBatch, ApiError> {
    let shape = |e: serde_json::Error| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!(
                "{e}; the body is a JSON array of {{\"type\", \"data\", \"metadata\"?, \"id\"?}} \
                 or {{\"events\": [...], \"expected_version\"?: N}}"
            ),
        )
    };
    match body.trim_start().as_bytes().first() {
        Some(b'[') => Ok(AppendBatch {
            events: serde_json::from_str(body).map_err(shape)?,
            expected_version: None,
        }),
        Some(b'{') => serde_json::from_str(body).map_err(shape),
        _ => Err(shape(serde::de::Error::custom(
            "expected an array or an object",
        ))),
    }
}

/// A page of events.
#[derive(Debug, Serialize)]
pub(crate) struct Page {
    /// The events, in offset order, archived ones included.
    events: Vec<Event>,
    /// Where the next page starts, when this one was cut short by its limit, its byte
    /// budget, its archive budget or its scan window (a filter checked row by row reads
    /// at most [`SCAN_WINDOW`](crate::log::SCAN_WINDOW) live offsets a page); `null`
    /// when it reached the end of the log as of the request.
    next_from_offset: Option<u64>,
    /// Present (`true`) when the archive budget (`server.archive_read_segments`) ended
    /// the page: every matching event before `next_from_offset` is in it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    archive_budget_reached: bool,
    /// Present when the read reaches below offsets retention deleted: events before this
    /// offset may be gone for good (archived events are read back, and do not count).
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated_before: Option<u64>,
}

/// The deletion horizon a read starting at `from_offset` reaches below, if any. Archived
/// events are read back from the archive; only deleted ones are missing. Without an
/// archive attached, archived ones are missing too.
fn truncated_before(log: &crate::log::EventLog, from_offset: u64) -> Result<Option<u64>, ApiError> {
    let horizon = log.horizon()?;
    let before = if log.has_cold_tier() {
        horizon.deleted_through + 1
    } else {
        horizon.truncated_before()
    };
    Ok((before > 1 && from_offset < before).then_some(before))
}

/// `GET /v1/events`: a page of events matching the filters.
pub(crate) async fn read(
    State(state): State<ApiState>,
    params: Params,
) -> Result<Json<Page>, ApiError> {
    params.only(FILTER_KEYS)?;
    let config = state.config();
    let limit = params.limit(config.default_page_rows, config.max_page_rows)?;
    let budget = ArchiveBudget::segments(config.archive_read_segments);
    let mut query = filters(&params)?;
    query.limit = Some(limit);
    query.batch_size =
        usize::try_from(limit).map_or(READ_CHUNK_EVENTS, |l| l.min(READ_CHUNK_EVENTS));
    let log = state.log().clone();
    // Reading the log and decompressing archive segments both block: off the async
    // workers.
    let page = blocking(move || {
        let truncated_before = truncated_before(&log, query.from_offset)?;
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut cut = false;
        // One window of the live log at most: a sparse filter checked row by row gets a
        // short (even empty) page and `next_from_offset`, not a scan to the head.
        let mut read = log.read_one_window(&query, Some(budget))?;
        for event in read.by_ref() {
            let event = event?;
            bytes += event.data.len() + event.metadata.as_ref().map_or(0, String::len);
            events.push(event);
            if bytes >= MAX_PAGE_BYTES {
                cut = true;
                break;
            }
        }
        let full = cut || events.len() as u64 == limit;
        let stopped = read.stop().filter(|_| !full);
        let next_from_offset = match stopped {
            Some((through, _)) => Some(through + 1),
            None => events.last().filter(|_| full).map(|e| e.offset + 1),
        };
        Ok(Page {
            events,
            next_from_offset,
            archive_budget_reached: stopped
                .is_some_and(|(_, reason)| reason == StopReason::ArchiveBudget),
            truncated_before,
        })
    })
    .await?;
    Ok(Json(page))
}

/// The answer to a count.
#[derive(Debug, Serialize)]
pub(crate) struct Count {
    /// Matching events, archived ones included (at most `limit`, if one was given).
    count: u64,
    /// The log's head: the offset of the newest event, 0 for an empty log. Offsets are
    /// never reused; once retention has removed events, the count of the whole log is
    /// below the head, so a client that wants to start "from now" starts after this.
    head: u64,
    /// Present when the count ended early: `count` covers the events before this
    /// offset; count again from here and add. Either the archive budget
    /// (`server.archive_read_segments`) ended it, or a filter checked row by row (stream
    /// prefixes, a stream with types) reached [`COUNT_SCAN_WINDOW`](crate::log::COUNT_SCAN_WINDOW)
    /// live offsets.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from_offset: Option<u64>,
    /// Present (`true`) when the archive budget ended the count.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    archive_budget_reached: bool,
    /// Present when the count reaches below offsets retention deleted: events before
    /// this offset may be gone for good and are not counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated_before: Option<u64>,
}

/// `GET /v1/events/count`: how many events match the filters: live ones counted from
/// indexes, archived ones from the segments that meet the range.
pub(crate) async fn count(
    State(state): State<ApiState>,
    params: Params,
) -> Result<Json<Count>, ApiError> {
    params.only(FILTER_KEYS)?;
    let mut query = filters(&params)?;
    query.limit = params.number("limit")?;
    let budget = ArchiveBudget::segments(state.config().archive_read_segments);
    let log = state.log().clone();
    let (counted, head, truncated_before) = blocking(move || {
        let truncated = truncated_before(&log, query.from_offset)?;
        // At most a window of the live log for a filter checked row by row (see
        // `COUNT_SCAN_WINDOW`): a sparse count answers `next_from_offset` to count on.
        let counted = log.count_one_window(&query, Some(budget))?;
        Ok((counted, log.head()?, truncated))
    })
    .await?;
    Ok(Json(Count {
        count: counted.count,
        head,
        next_from_offset: counted.complete_through.map(|through| through + 1),
        archive_budget_reached: counted.stopped_by == Some(StopReason::ArchiveBudget),
        truncated_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_come_from_object_metadata_only() {
        assert_eq!(
            correlation_id(Some(r#"{"correlation_id":"c-1","x":2}"#)).as_deref(),
            Some("c-1")
        );
        assert_eq!(correlation_id(Some(r#"{"x":2}"#)), None);
        assert_eq!(correlation_id(Some("[1]")), None);
        assert_eq!(correlation_id(Some(r#"{"correlation_id":5}"#)), None);
        assert_eq!(correlation_id(None), None);
    }

    #[test]
    fn both_body_forms_parse() {
        let array = parse_batch(r#"[{"type":"A","data":{}}]"#).unwrap();
        assert_eq!(array.events.len(), 1);
        assert_eq!(array.expected_version, None);
        let object =
            parse_batch(r#"{"events":[{"type":"A","data":1,"id":"x"}],"expected_version":0}"#)
                .unwrap();
        assert_eq!(object.expected_version, Some(0));
        let wrong = parse_batch(r#"[{"type":5,"data":{}}]"#).unwrap_err();
        assert_eq!(wrong.code, "invalid_body");
        assert_eq!(parse_batch("7").unwrap_err().status.as_u16(), 422);
    }
}
