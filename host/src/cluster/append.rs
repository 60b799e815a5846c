//! The append path of a cluster node.
//!
//! 1. Validate the batch against this node's limits (the same checks as single-node).
//! 2. Refuse at once, with nothing written, if NATS is not connected: the client would
//!    otherwise buffer the message and send it after a reconnect, long after the 503.
//! 3. Give every event without an id a UUID v7, so the message means the same on every
//!    node, and encode the batch as one message ([`wire`](super::wire)).
//! 4. Queue the request for the node's publisher, which packs the requests that queued
//!    while [`MESSAGES_IN_FLIGHT`] messages awaited their acknowledgement into one
//!    message (group commit), registers a waiter under a fresh `Nats-Msg-Id`, and
//!    publishes. JetStream answers once
//!    a majority of the stream's replicas stored the message. A publish whose answer is
//!    lost is repeated with the same id: JetStream drops the repeat within its
//!    duplicate window, and past it the repeat is a no-op anyway, since every event
//!    carries its id.
//! 5. Wait for this node's mirror to apply the message and answer with the outcome
//!    every node computes for it: the offsets, or a version conflict (409). Waiting for
//!    the local mirror also means a client reads its own write on the node it wrote to.

use std::time::{Duration, Instant};

use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use tokio::sync::oneshot;

use super::mirror::MSG_ID;
use super::{Shared, wire};
use crate::log::{LogError, NewEvent, OrderedRequest, timestamp_to_micros};

/// Bytes kept free in a NATS message for its headers (`Nats-Msg-Id` and the protocol
/// line), so a batch that fits [`max_payload`](async_nats::Client::max_payload) minus
/// this is never refused by the server.
pub const HEADER_ROOM: usize = 512;

/// Messages a node has published and not yet had acknowledged; appends arriving
/// meanwhile wait and go together in the next message (group commit).
pub const MESSAGES_IN_FLIGHT: usize = 4;

/// The most append requests one message carries.
pub const MAX_GROUP_REQUESTS: usize = 1024;

/// The most times one append publishes its message when JetStream's answer is lost
/// (each repeat has the same `Nats-Msg-Id`), within the publish timeout.
pub const MAX_PUBLISH_ATTEMPTS: usize = 3;

/// The first wait before sending again to a stream with no leader; it doubles up to
/// [`STREAM_MISSING_MAX_PAUSE`], within the append's deadline.
const STREAM_MISSING_FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest wait between sends to a stream with no leader.
const STREAM_MISSING_MAX_PAUSE: Duration = Duration::from_millis(500);

/// Why a cluster append was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The batch was refused as a single-node log would refuse it: an invalid event
    /// (before publishing), or a version conflict (decided by the mirror, the same on
    /// every node). Nothing of the batch was appended.
    #[error(transparent)]
    Refused(LogError),
    /// The cluster cannot take appends now; nothing was written.
    #[error(
        "the cluster cannot take appends now: {reason}; nothing was written, retry when NATS is back (GET /health shows it)"
    )]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The message may or may not have been stored: JetStream's answer did not come.
    #[error(
        "the append may or may not have been stored: {reason}; retry with the same event ids, which makes the retry safe"
    )]
    OutcomeUnknown {
        /// Why.
        reason: String,
    },
    /// JetStream stored the message, but this node's mirror has not applied it within
    /// the publish timeout. It will be applied; a retry with the same ids answers with
    /// its offsets.
    #[error(
        "the append is stored in the cluster (JetStream sequence {sequence}) but this node's mirror has not applied it within {timeout:?}; it will appear, and a retry with the same event ids answers with its offsets"
    )]
    NotYetApplied {
        /// The message's stream sequence.
        sequence: u64,
        /// How long the node waited.
        timeout: Duration,
    },
    /// The batch does not fit one NATS message.
    #[error(
        "the batch is {bytes} bytes encoded, but one NATS message holds at most {max} bytes (nats-server's max_payload, less {HEADER_ROOM} for headers); split the batch, or raise max_payload in the NATS servers' configuration"
    )]
    TooLarge {
        /// The encoded batch.
        bytes: usize,
        /// The most it may be.
        max: usize,
    },
}

/// Appends `events` as one atomic batch through the cluster.
pub(crate) async fn append(
    shared: &Shared,
    mut events: Vec<NewEvent>,
) -> Result<Vec<u64>, AppendError> {
    shared.log.validate(&events).map_err(AppendError::Refused)?;
    if shared.client.connection_state() != ConnectionState::Connected {
        return Err(AppendError::Unavailable {
            reason: format!(
                "NATS is unreachable (no connection to {})",
                shared.config.urls.join(",")
            ),
        });
    }
    for event in &mut events {
        if event.id.is_none() {
            event.id = Some(uuid::Uuid::now_v7().hyphenated().to_string());
        }
    }
    let request = OrderedRequest {
        recorded_at: timestamp_to_micros(jiff::Timestamp::now()),
        events,
    };
    let encoded = wire::encode_request(&request).map_err(|e| AppendError::Unavailable {
        reason: format!("the batch could not be encoded: {e}"),
    })?;
    let max = max_message(shared);
    if encoded.len() > max {
        return Err(AppendError::TooLarge {
            bytes: encoded.len(),
            max,
        });
    }
    let (reply, answer) = oneshot::channel();
    shared
        .queue
        .send(Queued { encoded, reply })
        .map_err(|_| AppendError::Unavailable {
            reason: "the node is shutting down".into(),
        })?;
    answer.await.unwrap_or_else(|_| {
        Err(AppendError::Unavailable {
            reason: "the node is shutting down".into(),
        })
    })
}

/// The most bytes of requests one message may carry.
fn max_message(shared: &Shared) -> usize {
    shared
        .client
        .max_payload()
        .saturating_sub(HEADER_ROOM + wire::ENVELOPE_BYTES)
}

/// An append waiting for its group's message.
pub(crate) struct Queued {
    /// The request, encoded.
    encoded: Vec<u8>,
    /// Where its outcome goes.
    reply: oneshot::Sender<Result<Vec<u64>, AppendError>>,
}

/// Group commit across a node's concurrent appends: while [`MESSAGES_IN_FLIGHT`]
/// messages await JetStream's acknowledgement, appends queue up, and the next message
/// carries all of them (each still its own request, atomic and checked on its own).
/// One message per request would cost one Raft round per append.
pub(crate) async fn publisher(
    shared: std::sync::Arc<Shared>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Queued>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MESSAGES_IN_FLIGHT));
    let mut held_back: Option<Queued> = None;
    loop {
        let first = match held_back.take() {
            Some(first) => first,
            None => tokio::select! {
                next = queue.recv() => match next {
                    Some(first) => first,
                    None => return,
                },
                _ = stop.changed() => return,
            },
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Everything that queued while the slot was taken goes into this message.
        let max = max_message(&shared);
        let mut bytes = first.encoded.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_REQUESTS {
            match queue.try_recv() {
                Ok(next) if bytes + next.encoded.len() < max => {
                    bytes += next.encoded.len() + 1;
                    group.push(next);
                }
                Ok(next) => {
                    held_back = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        tokio::spawn(send_group(std::sync::Arc::clone(&shared), group, slot));
    }
}

/// Publishes one group and answers each of its appends.
async fn send_group(
    shared: std::sync::Arc<Shared>,
    group: Vec<Queued>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let (parts, replies): (Vec<_>, Vec<_>) =
        group.into_iter().map(|q| (q.encoded, q.reply)).unzip();
    let outcome = publish_group(&shared, wire::assemble(&parts).into(), slot).await;
    match outcome {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for reply in replies {
                let answer = outcomes.next().map_or_else(
                    || {
                        Err(AppendError::Unavailable {
                            reason: "the replicated message could not be read back as appends"
                                .into(),
                        })
                    },
                    |outcome| outcome.map_err(AppendError::Refused),
                );
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.again()));
            }
        }
    }
}

/// Publishes a message and waits for this node's mirror to apply it.
async fn publish_group(
    shared: &Shared,
    payload: bytes::Bytes,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<super::Outcomes, AppendError> {
    let id = format!("{}-{}", shared.config.node, uuid::Uuid::now_v7().simple());
    let (waiter, outcome) = oneshot::channel();
    let _registered = Registered::new(shared, &id, waiter);

    let timeout = shared.config.publish_timeout;
    let deadline = Instant::now() + timeout;
    let sequence = publish(shared, &id, payload, deadline).await;
    // Acknowledged (or failed): the next group may go.
    drop(slot);
    let sequence = sequence?;

    // The mirror applies in stream order; give it the full timeout from the store.
    tokio::time::timeout(timeout, outcome)
        .await
        .map_err(|_| AppendError::NotYetApplied { sequence, timeout })?
        .map_err(|_| AppendError::NotYetApplied { sequence, timeout })
}

impl AppendError {
    /// The same failure, for another append of the same message.
    fn again(&self) -> AppendError {
        match self {
            AppendError::Refused(error) => AppendError::Unavailable {
                reason: error.to_string(),
            },
            AppendError::Unavailable { reason } => AppendError::Unavailable {
                reason: reason.clone(),
            },
            AppendError::OutcomeUnknown { reason } => AppendError::OutcomeUnknown {
                reason: reason.clone(),
            },
            AppendError::NotYetApplied { sequence, timeout } => AppendError::NotYetApplied {
                sequence: *sequence,
                timeout: *timeout,
            },
            AppendError::TooLarge { bytes, max } => AppendError::TooLarge {
                bytes: *bytes,
                max: *max,
            },
        }
    }
}

/// Publishes the message, repeating it (same id) when the answer is lost, and returns
/// its stream sequence.
async fn publish(
    shared: &Shared,
    id: &str,
    payload: bytes::Bytes,
    deadline: Instant,
) -> Result<u64, AppendError> {
    let mut last_problem = String::new();
    // "No responders": no stream leader took the message, so nothing was stored and
    // it can be sent again. That is what a stream looks like for the seconds its
    // replicas elect a leader (just created, or its leader's server died), so it is
    // waited out until the deadline rather than refused at once.
    let mut stream_missing = false;
    let mut pause = STREAM_MISSING_FIRST_PAUSE;
    let mut attempts = 0;
    while attempts < MAX_PUBLISH_ATTEMPTS {
        if Instant::now() >= deadline {
            break;
        }
        if shared.client.connection_state() != ConnectionState::Connected && last_problem.is_empty()
        {
            return Err(AppendError::Unavailable {
                reason: format!(
                    "NATS is unreachable (no connection to {})",
                    shared.config.urls.join(",")
                ),
            });
        }
        let message = PublishMessage::build()
            .payload(payload.clone())
            .header(MSG_ID, id);
        let acked = match shared
            .jetstream
            .send_publish(shared.subject.clone(), message)
            .await
        {
            Ok(ack) => tokio::time::timeout_at(deadline.into(), ack.into_future())
                .await
                .unwrap_or_else(|_| Err(PublishErrorKind::TimedOut.into())),
            Err(error) => Err(error),
        };
        match acked {
            Ok(ack) => return Ok(ack.sequence),
            Err(error) => match error.kind() {
                // The request may have reached JetStream: only a repeat with the same id
                // can tell, and it costs nothing if the first one was stored.
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                    last_problem = error.to_string();
                }
                PublishErrorKind::MaxPayloadExceeded => {
                    return Err(AppendError::TooLarge {
                        bytes: payload.len(),
                        max: shared.client.max_payload().saturating_sub(HEADER_ROOM),
                    });
                }
                PublishErrorKind::StreamNotFound => {
                    stream_missing = true;
                    let wake = (Instant::now() + pause).min(deadline);
                    tokio::time::sleep_until(wake.into()).await;
                    pause = (pause * 2).min(STREAM_MISSING_MAX_PAUSE);
                    continue;
                }
                _ if last_problem.is_empty() => {
                    return Err(AppendError::Unavailable {
                        reason: format!("JetStream refused the message: {error}"),
                    });
                }
                _ => last_problem = error.to_string(),
            },
        }
        attempts += 1;
    }
    if stream_missing && last_problem.is_empty() {
        return Err(AppendError::Unavailable {
            reason: format!(
                "JetStream has no stream `{}` listening on `{}` (is JetStream up, and has a node created the stream?)",
                shared.config.stream, shared.subject
            ),
        });
    }
    Err(AppendError::OutcomeUnknown {
        reason: format!("JetStream did not answer in time ({last_problem})"),
    })
}

/// A waiter registered under a message id, removed when the append ends however it
/// ends (an answer, a timeout, the client going away).
struct Registered<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl<'a> Registered<'a> {
    fn new(shared: &'a Shared, id: &'a str, waiter: oneshot::Sender<super::Outcomes>) -> Self {
        shared
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), waiter);
        Registered { shared, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        drop(self.shared.take_waiter(self.id));
    }
}
