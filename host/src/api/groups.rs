//! Consumer groups over HTTP (see [`crate::groups`] for the rules).
//!
//! | Method and path | What it does |
//! |---|---|
//! | `GET /v1/groups` | every group: members, partitions, committed offset, lag, redeliveries |
//! | `GET /v1/groups/{group}` | one group |
//! | `DELETE /v1/groups/{group}` | delete a group that is not declared in `refract.toml` |
//! | `POST /v1/groups/{group}/reset` | `{"to_offset": N}` or `{"to_time": "…"}` |
//! | `POST /v1/groups/{group}/poll` | join if needed and long-poll a batch: `{"member", "max_events"?, "wait_ms"?, "lease_ms"?, "types"?, "stream_prefixes"?}` |
//! | `GET /v1/groups/{group}/subscribe?member=…` | join and receive events as SSE; leaving = closing the stream |
//! | `POST /v1/groups/{group}/ack` | `{"member", "offsets": [...]}` |
//! | `POST /v1/groups/{group}/nack` | `{"member", "offsets": [...], "reason"}` |
//! | `POST /v1/groups/{group}/heartbeat`, `/leave` | `{"member"}` |
//! | `GET /v1/groups/{group}/dead-letters` | the group's dead letters, with the last reason |
//!
//! A member's SSE stream and a poll that waits (`wait_ms` > 0) are held connections:
//! they count against `server.max_subscribers` with the event subscriptions.
//!
//! A delivered event is the event's JSON (as in `GET /v1/events`) with one more field,
//! `delivery`: 1 for a first delivery, more for a redelivery.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Params};
use super::limits::SUBSCRIBE_POLL;
use super::state::{ApiState, blocking};
use crate::groups::state::StateError;
use crate::groups::{
    AckOutcome, Delivery, GroupError, GroupFilter, GroupView, Groups, NackOutcome, ResetTo,
    StoredDeadLetter,
};
use crate::log::Event;

impl From<GroupError> for ApiError {
    fn from(error: GroupError) -> ApiError {
        let message = error.to_string();
        match error {
            GroupError::InvalidName(_) => ApiError::bad_request("invalid_name", message),
            GroupError::Invalid(_) => ApiError::bad_request("invalid_request", message),
            GroupError::UnknownGroup(_) => ApiError::not_found("unknown_group", message),
            GroupError::TooManyGroups { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_groups", message)
            }
            GroupError::FilterMismatch { .. } => {
                ApiError::new(StatusCode::CONFLICT, "filter_mismatch", message)
            }
            GroupError::Declared(_) => {
                ApiError::new(StatusCode::CONFLICT, "declared_group", message)
            }
            GroupError::State {
                source: StateError::NotMember(_),
                ..
            } => ApiError::new(StatusCode::CONFLICT, "not_member", message),
            GroupError::State {
                source: StateError::TooManyMembers(_),
                ..
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_members", message),
            GroupError::Log(error) => error.into(),
            other => ApiError::internal("consumer groups", &other),
        }
    }
}

/// A delivered event: the event's fields plus `delivery`.
#[derive(Debug, Serialize)]
struct Delivered<'a> {
    #[serde(flatten)]
    event: &'a Event,
    /// 1 for a first delivery, more for a redelivery.
    delivery: u32,
}

fn delivered(delivery: &Delivery) -> Delivered<'_> {
    Delivered {
        event: &delivery.event,
        delivery: delivery.delivery,
    }
}

/// The answer to `GET /v1/groups`.
#[derive(Debug, Serialize)]
pub(crate) struct GroupList {
    groups: Vec<GroupView>,
}

/// `GET /v1/groups`.
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<GroupList>, ApiError> {
    let groups = Arc::clone(state.groups()?);
    let groups = blocking(move || Ok(groups.views(Instant::now())?)).await?;
    Ok(Json(GroupList { groups }))
}

/// `GET /v1/groups/{group}`.
pub(crate) async fn show(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
) -> Result<Json<GroupView>, ApiError> {
    let groups = Arc::clone(state.groups()?);
    let view = blocking(move || Ok(groups.view(&group, Instant::now())?)).await?;
    Ok(Json(view))
}

/// The answer to a deletion or a reset.
#[derive(Debug, Serialize)]
pub(crate) struct Changed {
    group: String,
    /// The committed position afterwards (0 after a deletion).
    committed: u64,
}

/// `DELETE /v1/groups/{group}`.
pub(crate) async fn delete(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
) -> Result<Json<Changed>, ApiError> {
    let groups = Arc::clone(state.groups()?);
    let name = group.clone();
    blocking(move || Ok(groups.delete(&name)?)).await?;
    Ok(Json(Changed {
        group,
        committed: 0,
    }))
}

/// The body of a reset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetBody {
    /// The next event delivered is the first at or after this offset.
    to_offset: Option<u64>,
    /// The next event delivered is the first recorded at or after this time.
    to_time: Option<jiff::Timestamp>,
}

/// `POST /v1/groups/{group}/reset`.
pub(crate) async fn reset(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<ResetBody>,
) -> Result<Json<Changed>, ApiError> {
    let to = match (body.to_offset, body.to_time) {
        (Some(offset), None) => ResetTo::Offset(offset),
        (None, Some(time)) => ResetTo::Time(time),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give exactly one of `to_offset` and `to_time`",
            ));
        }
    };
    let groups = Arc::clone(state.groups()?);
    let name = group.clone();
    let committed = blocking(move || Ok(groups.reset(&name, to)?)).await?;
    Ok(Json(Changed { group, committed }))
}

/// The body of a poll.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollBody {
    member: String,
    /// At most this many events (capped by `consumers.max_poll_events`).
    max_events: Option<usize>,
    /// Wait up to this long for events (capped by `consumers.max_poll_wait_ms`);
    /// default 0: answer at once.
    wait_ms: Option<u64>,
    /// Lease the delivered events this long (default: the group's `lease_ms`); at most
    /// `consumers.max_lease_ms`.
    lease_ms: Option<u64>,
    /// The group's filter, to create it (or to check it matches).
    types: Option<Vec<String>>,
    /// The group's filter, to create it (or to check it matches).
    stream_prefixes: Option<Vec<String>>,
}

/// The answer to a poll.
#[derive(Debug, Serialize)]
pub(crate) struct Polled<'a> {
    events: Vec<Delivered<'a>>,
    /// The group's committed position after this poll.
    committed: u64,
    /// How long each delivered event stays leased.
    lease_ms: u64,
}

/// `POST /v1/groups/{group}/poll`: joins the group if needed, then answers with the
/// events leased to the member, waiting up to `wait_ms` for some.
pub(crate) async fn poll(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<PollBody>,
) -> Result<Response, ApiError> {
    let groups = Arc::clone(state.groups()?);
    let limits = groups.consumers();
    let max = match body.max_events {
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`max_events` must be at least 1",
            ));
        }
        Some(n) => n.min(limits.max_poll_events),
        None => limits.max_poll_events,
    };
    let wait = Duration::from_millis(body.wait_ms.unwrap_or(0)).min(limits.max_poll_wait());
    let lease = match body.lease_ms {
        Some(ms) if ms == 0 || ms > limits.max_lease_ms => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "`lease_ms` must be from 1 to {} (`consumers.max_lease_ms`), not {ms}",
                    limits.max_lease_ms
                ),
            ));
        }
        ms => ms.map(Duration::from_millis),
    };
    // A poll that may wait holds its connection: it counts with the subscriptions.
    let _held = if wait.is_zero() {
        None
    } else {
        Some(state.hold_connection()?)
    };
    let filter = match (body.types, body.stream_prefixes) {
        (None, None) => None,
        (types, prefixes) => Some(GroupFilter {
            types: types.unwrap_or_default(),
            stream_prefixes: prefixes.unwrap_or_default(),
        }),
    };
    let member = body.member;
    let group = {
        let groups = Arc::clone(&groups);
        let member = member.clone();
        blocking(move || Ok(groups.join(&group, &member, filter, Instant::now())?)).await?
    };
    let deadline = Instant::now() + wait;
    let mut head = state.log().watch_head();
    let mut shutdown = state.shutdown_signal();
    loop {
        // Armed before looking, so a wake-up during the poll is not slept through.
        let woken = group.wake().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        head.borrow_and_update();
        let batch = {
            let groups = Arc::clone(&groups);
            let group = Arc::clone(&group);
            let member = member.clone();
            blocking(move || Ok(groups.poll(&group, &member, max, lease, Instant::now())?)).await?
        };
        let now = Instant::now();
        if !batch.is_empty() || now >= deadline || *shutdown.borrow() {
            let committed = groups.view(group.name(), now).map_or(0, |v| v.committed);
            let lease = lease
                .unwrap_or(group.settings().lease)
                .min(groups.consumers().max_lease());
            let answer = Polled {
                events: batch.iter().map(delivered).collect(),
                committed,
                lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            };
            return Ok(Json(answer).into_response());
        }
        let pause = (deadline - now).min(SUBSCRIBE_POLL);
        tokio::select! {
            () = &mut woken => {}
            _ = head.changed() => {}
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

/// The body of an ack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    member: String,
    offsets: Vec<u64>,
}

/// The answer to an ack.
#[derive(Debug, Serialize)]
pub(crate) struct Acked {
    #[serde(flatten)]
    outcome: AckOutcome,
    /// The group's committed position after this ack.
    committed: u64,
}

/// Refuses an offset list larger than a member can hold leases for.
fn check_offsets(groups: &Groups, offsets: &[u64]) -> Result<(), ApiError> {
    let max = groups.consumers().max_in_flight_per_member;
    if offsets.is_empty() || offsets.len() > max {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`offsets` must list 1 to {max} offsets (`consumers.max_in_flight_per_member`), not {}",
                offsets.len()
            ),
        ));
    }
    Ok(())
}

/// `POST /v1/groups/{group}/ack`.
pub(crate) async fn ack(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Json<Acked>, ApiError> {
    let groups = Arc::clone(state.groups()?);
    check_offsets(&groups, &body.offsets)?;
    let (outcome, committed) =
        blocking(move || Ok(groups.ack(&group, &body.member, &body.offsets, Instant::now())?))
            .await?;
    Ok(Json(Acked { outcome, committed }))
}

/// The body of a nack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NackBody {
    member: String,
    offsets: Vec<u64>,
    /// Why the member could not process the events; kept as the dead letter's error.
    reason: String,
}

/// `POST /v1/groups/{group}/nack`.
pub(crate) async fn nack(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<NackBody>,
) -> Result<Json<NackOutcome>, ApiError> {
    let groups = Arc::clone(state.groups()?);
    check_offsets(&groups, &body.offsets)?;
    let outcome = blocking(move || {
        Ok(groups.nack(
            &group,
            &body.member,
            &body.offsets,
            &body.reason,
            Instant::now(),
        )?)
    })
    .await?;
    Ok(Json(outcome))
}

/// The body of a heartbeat or a leave.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberBody {
    member: String,
}

/// The answer to a heartbeat or a leave.
#[derive(Debug, Serialize)]
pub(crate) struct MemberDone {
    member: String,
}

/// `POST /v1/groups/{group}/heartbeat`.
pub(crate) async fn heartbeat(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<MemberBody>,
) -> Result<Json<MemberDone>, ApiError> {
    let groups = Arc::clone(state.groups()?);
    let member = body.member.clone();
    blocking(move || Ok(groups.heartbeat(&group, &member, Instant::now())?)).await?;
    Ok(Json(MemberDone {
        member: body.member,
    }))
}

/// `POST /v1/groups/{group}/leave`.
pub(crate) async fn leave(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<MemberBody>,
) -> Result<Json<MemberDone>, ApiError> {
    let groups = Arc::clone(state.groups()?);
    let member = body.member.clone();
    blocking(move || Ok(groups.leave(&group, &member)?)).await?;
    Ok(Json(MemberDone {
        member: body.member,
    }))
}

/// The answer to `GET /v1/groups/{group}/dead-letters`.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetters {
    dead_letters: Vec<StoredDeadLetter>,
}

/// `GET /v1/groups/{group}/dead-letters?limit=N`.
pub(crate) async fn dead_letters(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    params: Params,
) -> Result<Json<DeadLetters>, ApiError> {
    params.only(&["limit"])?;
    let config = state.config();
    let limit = params.limit(config.default_page_rows, config.max_page_rows)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let groups = Arc::clone(state.groups()?);
    let dead_letters = blocking(move || Ok(groups.dead_letters(&group, limit)?)).await?;
    Ok(Json(DeadLetters { dead_letters }))
}

/// `GET /v1/groups/{group}/subscribe?member=M[&type=…][&stream_prefix=…]`: joins the
/// group and streams the member's events as SSE (`id` = offset, `data` = the delivered
/// event). The member acks with `POST …/ack`. Closing the stream leaves the group; a
/// client that stops reading stops refreshing its session, and leaves when it expires.
pub(crate) async fn subscribe(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["member", "type", "stream_prefix"])?;
    let member = params
        .one("member")?
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                "`member` is required: the member's name in the group",
            )
        })?
        .to_owned();
    let types: Vec<String> = params.all("type").map(str::to_owned).collect();
    let prefixes: Vec<String> = params.all("stream_prefix").map(str::to_owned).collect();
    let filter = (!types.is_empty() || !prefixes.is_empty()).then_some(GroupFilter {
        types,
        stream_prefixes: prefixes,
    });
    let groups = Arc::clone(state.groups()?);
    let permit = state.hold_connection()?;
    let joined = {
        let groups = Arc::clone(&groups);
        let member = member.clone();
        blocking(move || Ok(groups.join(&group, &member, filter, Instant::now())?)).await?
    };
    let keep_alive = (joined.settings().session_timeout / 3).max(Duration::from_millis(100));
    let member_stream = MemberStream {
        groups,
        group: joined,
        member,
        head: state.log().watch_head(),
        shutdown: state.shutdown_signal(),
        ended: false,
        _permit: permit,
    };
    let mut response = Sse::new(member_stream.into_stream())
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// One member's subscription.
struct MemberStream {
    groups: Arc<Groups>,
    group: Arc<crate::groups::Group>,
    member: String,
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    ended: bool,
    /// Counts against `server.max_subscribers` until the client goes away.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for MemberStream {
    fn drop(&mut self) {
        // The client went away: the member leaves, and its leases go to the others.
        let groups = Arc::clone(&self.groups);
        let group = self.group.name().to_owned();
        let member = std::mem::take(&mut self.member);
        let leave = move || {
            if let Err(error) = groups.leave(&group, &member) {
                tracing::debug!(group, member, "leaving after the stream closed: {error}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(leave)),
            Err(_) => leave(),
        }
    }
}

impl MemberStream {
    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
        stream::unfold(self, |mut member| async move {
            let batch = member.next().await?;
            Some((Ok(batch), member))
        })
    }

    /// The next message. One event is leased per message, when the connection asks for
    /// it: an event's lease starts only once the client has taken the one before, so
    /// a slow reader holds at most one lease (plus what the socket buffers).
    async fn next(&mut self) -> Option<SseEvent> {
        if self.ended {
            return None;
        }
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            let woken = self.group.wake().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.head.borrow_and_update();
            let polled = {
                let groups = Arc::clone(&self.groups);
                let group = Arc::clone(&self.group);
                let member = self.member.clone();
                blocking(move || Ok(groups.poll(&group, &member, 1, None, Instant::now())?)).await
            };
            match polled {
                Ok(batch) => {
                    if let Some(delivery) = batch.first() {
                        return Some(event_message(delivery));
                    }
                }
                Err(error) => {
                    self.ended = true;
                    let body = serde_json::json!({"error": {"code": error.code, "message": error.message}});
                    return Some(SseEvent::default().event("error").data(body.to_string()));
                }
            }
            tokio::select! {
                () = &mut woken => {}
                _ = self.head.changed() => {}
                () = tokio::time::sleep(SUBSCRIBE_POLL) => {}
                _ = self.shutdown.wait_for(|stop| *stop) => return None,
            }
        }
    }
}

/// A delivered event as an SSE message.
fn event_message(delivery: &Delivery) -> SseEvent {
    let json = serde_json::to_string(&delivered(delivery)).unwrap_or_default();
    SseEvent::default()
        .id(delivery.event.offset.to_string())
        .data(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_event_is_the_event_plus_its_delivery_count() {
        let event = Event {
            offset: 7,
            id: "e".into(),
            stream: "s".into(),
            stream_version: 1,
            event_type: "t".into(),
            data: r#"{"a":1}"#.into(),
            metadata: None,
            recorded_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let delivery = Delivery { event, delivery: 2 };
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&delivered(&delivery)).unwrap()).unwrap();
        assert_eq!(json["offset"], 7);
        assert_eq!(json["data"]["a"], 1);
        assert_eq!(json["delivery"], 2);
    }
}
