//! `refract cluster init --from <data-dir>`: publishes an existing single-node log into
//! an empty JetStream stream, so a team moves to a cluster without a rebuild.
//!
//! The events go out in offset order, packed into messages of whole requests (one
//! request per run of events recorded at the same microsecond, so each keeps its time).
//! Every event keeps its id and has no `expected_version`, so applying the messages
//! gives every event the offset and stream version it has now: offsets count events
//! in order, versions count a stream's events in order, and both were gap-free. Each
//! message is conditional on the stream's last sequence (`Nats-Expected-Last-Sequence`,
//! checked when JetStream applies it, also in a Raft group), so a node appending at the
//! same time makes the migration fail instead of interleaving with it.
//!
//! At the end the source log is marked as the mirror of the stream up to the last
//! message ([`EventLog::start_mirror`]): that data directory, read models and all,
//! becomes a cluster node's as it is.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;

use super::append::HEADER_ROOM;
use super::config::ClusterConfig;
use super::mirror::MSG_ID;
use super::{ClusterError, connection, wire};
use crate::log::{EventLog, LogError, NewEvent, OrderedRequest, ReadQuery, timestamp_to_micros};

/// How long the migration waits for a first connection to NATS before giving up.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Messages published and not yet acknowledged during a migration: enough to keep the
/// connection busy, few enough that a refusal stops it soon.
pub const MIGRATION_WINDOW: usize = 64;

/// The most events in one migration message, whatever their size.
pub const MIGRATION_MESSAGE_EVENTS: usize = 10_000;

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Events published.
    pub events: u64,
    /// Messages they took.
    pub messages: u64,
    /// The stream's identity, as the mirror records it.
    pub source: String,
}

/// Publishes `log` (a single-node log; nothing may append to it meanwhile) into the
/// cluster's stream, which must be empty, then marks `log` as its mirror.
///
/// # Errors
/// NATS unreachable, a stream that is not empty, a log that already is a mirror, an
/// event too large for one NATS message, or JetStream refusing a message.
pub async fn init(config: &ClusterConfig, log: &EventLog) -> Result<Migrated, ClusterError> {
    let reader = log.clone();
    if let Some(position) = tokio::task::spawn_blocking(move || reader.mirror_position())
        .await
        .map_err(|e| stream_error(config, &e.to_string()))??
    {
        return Err(LogError::MirrorMismatch {
            path: log.path().to_owned(),
            reason: format!(
                "it already is the mirror of `{}` (position {}); there is nothing to migrate",
                position.source, position.position
            ),
        }
        .into());
    }
    // A log retention has thinned has gaps in its offsets: published as they are, the
    // cluster would number its events differently.
    let reader = log.clone();
    let horizon = tokio::task::spawn_blocking(move || reader.horizon())
        .await
        .map_err(|e| stream_error(config, &e.to_string()))??;
    if horizon.truncated_before() > 1 {
        return Err(LogError::MirrorMismatch {
            path: log.path().to_owned(),
            reason: format!(
                "retention removed events before offset {} (archived or deleted), and a cluster \
                 needs the whole log at its own offsets; migrate a log without retention",
                horizon.truncated_before()
            ),
        }
        .into());
    }
    let client = connection::connect(config, "refract-cluster-init").await?;
    let started = Instant::now();
    while client.connection_state() != async_nats::connection::State::Connected {
        if started.elapsed() > CONNECT_WAIT {
            return Err(ClusterError::Disconnected {
                urls: config.urls.join(","),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jetstream = connection::jetstream(client.clone());
    let (mut stream, source) = connection::open_stream(&jetstream, config).await?;
    let last = stream
        .info()
        .await
        .map_err(|e| stream_error(config, &e.to_string()))?
        .state
        .last_sequence;
    if last != 0 {
        return Err(stream_error(
            config,
            &format!(
                "it already holds {last} messages; `cluster init` publishes a log into an empty stream only \
                 (use another cluster.stream, or delete this one with `nats stream rm` if it is disposable)"
            ),
        ));
    }

    let max_bytes = client.max_payload().saturating_sub(HEADER_ROOM);
    let subject = connection::subject(&config.stream);
    let (batches, receiver) =
        tokio::sync::mpsc::channel::<Result<Vec<OrderedRequest>, ClusterError>>(4);
    let reading = {
        let log = log.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || read_messages(&log, &config, max_bytes, &batches))
    };
    let mut receiver = receiver;
    let mut in_flight: VecDeque<(u64, PublishAckFuture)> = VecDeque::new();
    let mut sequence = 0u64;
    let mut events = 0u64;
    while let Some(requests) = receiver.recv().await {
        let requests = requests?;
        events += requests.iter().map(|r| r.events.len() as u64).sum::<u64>();
        let payload = wire::encode(&requests)
            .map_err(|e| stream_error(config, &format!("cannot encode a message: {e}")))?;
        let message = PublishMessage::build()
            .payload(payload.into())
            .header(MSG_ID, format!("init-{source}-{}", sequence + 1))
            .expected_last_sequence(sequence);
        let ack = jetstream
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| {
                stream_error(config, &format!("publishing message {}: {e}", sequence + 1))
            })?;
        sequence += 1;
        in_flight.push_back((sequence, ack));
        if in_flight.len() >= MIGRATION_WINDOW {
            confirm(config, in_flight.pop_front()).await?;
        }
    }
    while let Some(next) = in_flight.pop_front() {
        confirm(config, Some(next)).await?;
    }
    reading
        .await
        .map_err(|e| stream_error(config, &e.to_string()))?;
    log.start_mirror(source.clone(), sequence).await?;
    client
        .flush()
        .await
        .map_err(|e| stream_error(config, &e.to_string()))?;
    Ok(Migrated {
        events,
        messages: sequence,
        source,
    })
}

/// Waits for one message's acknowledgement and checks it landed where it must.
async fn confirm(
    config: &ClusterConfig,
    next: Option<(u64, PublishAckFuture)>,
) -> Result<(), ClusterError> {
    let Some((expected, ack)) = next else {
        return Ok(());
    };
    let ack = ack.await.map_err(|e| {
        stream_error(
            config,
            &format!(
                "JetStream refused message {expected} of the migration ({e}); did a node append meanwhile? \
                 Nothing was marked as migrated: start over with an empty stream"
            ),
        )
    })?;
    if ack.sequence != expected {
        return Err(stream_error(
            config,
            &format!(
                "message {expected} of the migration landed at sequence {}; start over with an empty stream",
                ack.sequence
            ),
        ));
    }
    Ok(())
}

/// Reads the log in offset order and sends it as messages of requests.
fn read_messages(
    log: &EventLog,
    config: &ClusterConfig,
    max_bytes: usize,
    out: &tokio::sync::mpsc::Sender<Result<Vec<OrderedRequest>, ClusterError>>,
) {
    let send = |message| out.blocking_send(message).is_ok();
    let events = match log.read(&ReadQuery::default()) {
        Ok(events) => events,
        Err(error) => {
            send(Err(error.into()));
            return;
        }
    };
    let mut message: Vec<OrderedRequest> = Vec::new();
    let mut bytes = 0;
    let mut count = 0;
    for event in events {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                send(Err(error.into()));
                return;
            }
        };
        // Room for the JSON around the fields.
        let size = event.id.len()
            + event.stream.len()
            + event.event_type.len()
            + event.data.len()
            + event.metadata.as_ref().map_or(0, String::len)
            + 128;
        if size > max_bytes {
            send(Err(stream_error(
                config,
                &format!(
                    "event {} is about {size} bytes, more than one NATS message holds ({max_bytes}); raise max_payload in the NATS servers' configuration",
                    event.offset
                ),
            )));
            return;
        }
        if bytes + size > max_bytes || count == MIGRATION_MESSAGE_EVENTS {
            if !send(Ok(std::mem::take(&mut message))) {
                return;
            }
            bytes = 0;
            count = 0;
        }
        let recorded_at = timestamp_to_micros(event.recorded_at);
        let new = NewEvent {
            id: Some(event.id),
            stream: event.stream,
            event_type: event.event_type,
            data: event.data,
            metadata: event.metadata,
            expected_version: None,
        };
        match message.last_mut() {
            Some(request) if request.recorded_at == recorded_at => request.events.push(new),
            _ => message.push(OrderedRequest {
                recorded_at,
                events: vec![new],
            }),
        }
        bytes += size;
        count += 1;
    }
    if !message.is_empty() {
        send(Ok(message));
    }
}

fn stream_error(config: &ClusterConfig, reason: &str) -> ClusterError {
    ClusterError::Stream {
        stream: config.stream.clone(),
        reason: reason.to_owned(),
    }
}
