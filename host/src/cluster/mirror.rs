//! The mirror consumer: reads the stream in order from the local mirror's position and
//! applies it to `events.db`, then answers the appenders of this node waiting on the
//! messages it applied.
//!
//! It uses an ordered consumer (ephemeral, in memory, flow-controlled, recreated by the
//! client on a gap or a missed heartbeat), started at the mirror's position + 1: the
//! position committed with the events is the only resume point, so a node killed at
//! any moment resumes exactly where its last commit left off, and a node with an empty
//! data directory starts at the first message. Any failure ends the consumer, and so
//! does silence for [`MIRROR_STALL`] while the stream is known to be ahead; after a
//! pause (doubling up to [`RETRY_MAX`]) a new one starts from the committed position.

use std::sync::Arc;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream::Stream};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::watch;

use super::config::{
    MIRROR_BATCH_BYTES, MIRROR_BATCH_MESSAGES, MIRROR_PULL_EXPIRES, MIRROR_STALL, RETRY_INITIAL,
    RETRY_MAX,
};
use super::status::MirrorState;
use super::{ClusterError, Shared, connection, wire};
use crate::log::{MirrorBatch, OrderedMessage};

/// The message-id header JetStream deduplicates on; also how a node recognises its own
/// messages among those it applies.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// Follows the stream until `stop` turns true.
pub(crate) async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut pause = RETRY_INITIAL;
    loop {
        let before = shared.progress().position;
        let outcome = tokio::select! {
            outcome = follow_once(&shared) => outcome,
            _ = stop.changed() => return,
        };
        if let Err(error) = outcome {
            let state = match &error {
                ClusterError::Message { .. } | ClusterError::Log(_) => MirrorState::Failed,
                ClusterError::Stream { .. }
                    if shared.client.connection_state()
                        == async_nats::connection::State::Connected =>
                {
                    MirrorState::Failed
                }
                _ => MirrorState::Retrying,
            };
            let message = error.to_string();
            let first = shared.progress().last_error.as_deref() != Some(message.as_str());
            if first {
                tracing::warn!(node = %shared.config.node, "cluster mirror: {message}; retrying");
            }
            shared.progress().set(state, Some(message));
            if shared.progress().position != before {
                pause = RETRY_INITIAL;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// One consumer's life: open the stream, check the mirror copies it, then apply
/// batches until something fails.
async fn follow_once(shared: &Shared) -> Result<(), ClusterError> {
    wait_connected(shared).await;
    let (stream, source) = connection::open_stream(&shared.jetstream, &shared.config).await?;
    let position = {
        let log = shared.log.clone();
        tokio::task::spawn_blocking(move || log.mirror_position())
            .await
            .map_err(|e| consumer_error(shared, &e))??
    };
    if let Some(mirrored) = &position
        && mirrored.source != source
    {
        return Err(ClusterError::Stream {
            stream: shared.config.stream.clone(),
            reason: format!(
                "this node's mirror copies `{}`, but the stream now is `{source}` (deleted and re-created?): \
                 the mirror cannot follow it; stop the node, move its events.db and projections away, \
                 and start it again to copy the new stream",
                mirrored.source
            ),
        });
    }
    let start = position.as_ref().map_or(0, |p| p.position) + 1;
    {
        let mut progress = shared.progress();
        progress.source = Some(source.clone());
    }
    let mut messages = open_consumer(shared, &stream, start).await?;
    shared.progress().set(MirrorState::Following, None);
    tracing::info!(node = %shared.config.node, from = start, "cluster mirror: following the stream");
    loop {
        let Ok(item) = tokio::time::timeout(MIRROR_STALL, messages.next()).await else {
            let progress = shared.progress();
            match progress.stream_head {
                Some(head) if head > progress.position => {
                    return Err(ClusterError::Consumer {
                        stream: shared.config.stream.clone(),
                        reason: format!(
                            "no message for {MIRROR_STALL:?} while the stream is {} message(s) \
                             ahead; opening a new consumer at the committed position",
                            head - progress.position
                        ),
                    });
                }
                _ => continue,
            }
        };
        let first = next(shared, item)?;
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        let mut failure = None;
        while batch.len() < MIRROR_BATCH_MESSAGES && bytes < MIRROR_BATCH_BYTES {
            match messages.next().now_or_never() {
                Some(item) => match next(shared, item) {
                    Ok(message) => {
                        bytes += message.payload.len();
                        batch.push(message);
                    }
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                },
                None => break,
            }
        }
        apply(shared, &source, batch).await?;
        if let Some(error) = failure {
            return Err(error);
        }
    }
}

/// Waits until the client is connected, so a node without NATS does not spin.
async fn wait_connected(shared: &Shared) {
    let mut pause = RETRY_INITIAL;
    while shared.client.connection_state() != async_nats::connection::State::Connected {
        shared.progress().set(MirrorState::Connecting, None);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

async fn open_consumer(
    shared: &Shared,
    stream: &Stream,
    start: u64,
) -> Result<pull::Ordered, ClusterError> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: shared.subject.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            max_batch: i64::try_from(MIRROR_BATCH_MESSAGES).unwrap_or(i64::MAX),
            max_expires: MIRROR_PULL_EXPIRES,
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|e| consumer_error(shared, &e))?;
    consumer
        .messages()
        .await
        .map_err(|e| consumer_error(shared, &e))
}

fn next(
    shared: &Shared,
    item: Option<Result<jetstream::Message, pull::OrderedError>>,
) -> Result<jetstream::Message, ClusterError> {
    match item {
        Some(Ok(message)) => Ok(message),
        Some(Err(error)) => Err(consumer_error(shared, &error)),
        None => Err(ClusterError::Consumer {
            stream: shared.config.stream.clone(),
            reason: "the consumer ended".into(),
        }),
    }
}

fn consumer_error(shared: &Shared, error: &dyn std::fmt::Display) -> ClusterError {
    ClusterError::Consumer {
        stream: shared.config.stream.clone(),
        reason: error.to_string(),
    }
}

/// Applies one batch of messages in one transaction and answers their waiters.
async fn apply(
    shared: &Shared,
    source: &str,
    batch: Vec<jetstream::Message>,
) -> Result<(), ClusterError> {
    let mut ordered = Vec::with_capacity(batch.len());
    let mut ids = Vec::with_capacity(batch.len());
    let mut pending = 0;
    let mut skipped = 0;
    for message in &batch {
        let info = message.info().map_err(|e| consumer_error(shared, &e))?;
        let sequence = info.stream_sequence;
        pending = info.pending;
        let requests = match wire::decode(&message.payload) {
            Ok(requests) => requests,
            Err(error @ wire::WireError::NewerFormat { .. }) => {
                return Err(ClusterError::Message {
                    sequence,
                    source: error,
                });
            }
            Err(error) => {
                // Every node decodes the same bytes the same way, so every node skips it.
                tracing::warn!(sequence, %error, "cluster mirror: skipping a message that is not a Refract append");
                skipped += 1;
                Vec::new()
            }
        };
        ordered.push(OrderedMessage {
            position: sequence,
            requests,
        });
        ids.push(
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(MSG_ID))
                .map(|id| id.as_str().to_owned()),
        );
    }
    let last = ordered.last().map_or(0, |m| m.position);
    let outcomes = shared
        .log
        .apply_ordered(MirrorBatch {
            source: source.to_owned(),
            messages: ordered,
        })
        .await?;
    let head = *shared.log.watch_head().borrow();
    {
        let mut progress = shared.progress();
        progress.applied(last, head, pending);
        progress.skipped += skipped;
    }
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        if let Some(waiter) = id.and_then(|id| shared.take_waiter(&id)) {
            // The appender may have given up (timeout); the events stand either way.
            let _ = waiter.send(outcome);
        }
    }
    Ok(())
}
