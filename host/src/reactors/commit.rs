//! Turning a batch's buffered emits into log appends, exactly once.
//!
//! Each emitted event gets a deterministic id, `rx:<reactor>:<source offset>:<index>`,
//! and the causal chain in its metadata: `causation_id` (the source event's id),
//! `correlation_id` (the source's own `correlation_id`, else its id) and `reactor`.
//! The whole batch's emits go to the log in one append, before the reactor's state and
//! checkpoint commit. A crash in between replays the batch: the same ids are appended
//! again, and the log returns the original offsets instead of appending.
//!
//! # The same id with different content
//! The log keeps the first event under an id and answers a later append with that id
//! with the original offset, whatever its content (see [`EventLog::append`]). A
//! reactor is deterministic by construction (no clock, no randomness), so a replay
//! re-emits the same content; when it does not (a guest that reads something the host
//! changed between attempts), the first content stands, the difference is logged as a
//! warning naming the id, and it is counted in [`CommitOutcome::diverged`].

use sha2::{Digest, Sha256};

use super::effects::Emit;
use super::state::DueTimer;
use crate::log::{EventLog, LogError, NewEvent, ReadQuery, correlation_id};
use crate::runtime::EventBatch;

/// The event type of a fired timer.
pub const TIMER_EVENT_TYPE: &str = "refract.timer";

/// The stream a reactor's timers fire into.
pub fn timer_stream(reactor: &str) -> String {
    format!("{TIMER_EVENT_TYPE}/{reactor}")
}

/// The id of the `index`-th event emitted by `reactor` for the event at `cause`.
pub fn emit_id(reactor: &str, cause: u64, index: u32) -> String {
    format!("rx:{reactor}:{cause}:{index}")
}

/// The id of the timer event for `key` due at `due_at`, scheduled by the event at
/// `cause`: a timer fires once however often the host looks for due timers, across
/// restarts, and a version that takes over fires the same ids. `cause` keeps a timer
/// rescheduled later to the same key and due time from being taken for the first one.
pub fn timer_id(reactor: &str, key: &str, due_at: i64, cause: u64) -> String {
    let digest = hex::encode(&Sha256::digest(key.as_bytes())[..12]);
    format!("timer:{reactor}:{due_at}:{cause}:{digest}")
}

/// What appending a batch's emits did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Events newly appended.
    pub appended: usize,
    /// Emits the log already held (a replayed batch).
    pub deduplicated: usize,
    /// Of those, emits whose content differs from what the log holds.
    pub diverged: usize,
}

/// Why a batch's emits could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The emit of the event at `cause` is refused by the log for what it is (a
    /// version conflict, an invalid field): the same batch fails the same way again, so
    /// the poison policy applies to the source event.
    #[error("emit {index} of the event at offset {cause} was refused by the log: {source}")]
    Refused {
        /// The source event's offset.
        cause: u64,
        /// The emit's index within its source event.
        index: u32,
        /// The log's reason.
        source: LogError,
    },
    /// The log could not be written (busy, disk full): retry the batch.
    #[error("the reactor's emitted events could not be appended: {0}")]
    Log(#[source] LogError),
}

impl CommitError {
    /// Whether retrying cannot help.
    pub fn is_poison(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// The source event to blame, when poison.
    pub fn cause(&self) -> Option<u64> {
        match self {
            Self::Refused { cause, .. } => Some(*cause),
            Self::Log(_) => None,
        }
    }
}

/// The log events for `emits`, with ids and causal metadata from `batch`.
pub fn build_events(
    reactor: &str,
    batch: &EventBatch,
    emits: Vec<Emit>,
) -> Vec<(u64, u32, NewEvent)> {
    let mut out = Vec::with_capacity(emits.len());
    let mut cursor = 0;
    for Emit {
        cause,
        index,
        mut event,
    } in emits
    {
        // Emits follow the batch's order, so one forward scan finds every source.
        while batch.get(cursor).is_some_and(|e| e.offset < cause) {
            cursor += 1;
        }
        let source = batch.get(cursor).filter(|e| e.offset == cause);
        let mut metadata = event
            .metadata
            .as_deref()
            .and_then(|m| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m).ok()
            })
            .unwrap_or_default();
        if let Some(source) = source {
            let correlation = correlation_id(source.metadata)
                .map_or_else(|| source.id.to_owned(), std::borrow::Cow::into_owned);
            metadata.insert("causation_id".into(), source.id.into());
            metadata.insert("correlation_id".into(), correlation.into());
        }
        metadata.insert("reactor".into(), reactor.into());
        event.metadata = Some(serde_json::Value::Object(metadata).to_string());
        event.id = Some(emit_id(reactor, cause, index));
        out.push((cause, index, event));
    }
    out
}

/// Appends `events` (from [`build_events`]) in one append.
pub fn append(
    log: &EventLog,
    events: Vec<(u64, u32, NewEvent)>,
) -> Result<CommitOutcome, CommitError> {
    if events.is_empty() {
        return Ok(CommitOutcome::default());
    }
    let head_before = log.head().map_err(CommitError::Log)?;
    let sources: Vec<(u64, u32)> = events.iter().map(|(c, i, _)| (*c, *i)).collect();
    let events: Vec<NewEvent> = events.into_iter().map(|(_, _, event)| event).collect();
    let blame = |source: LogError, events: &[NewEvent]| -> CommitError {
        let position = match &source {
            LogError::InvalidEvent { position, .. } => Some(position.saturating_sub(1)),
            LogError::VersionConflict { stream, .. } => events
                .iter()
                .position(|e| &e.stream == stream && e.expected_version.is_some()),
            _ => None,
        };
        match position.and_then(|p| sources.get(p)) {
            Some(&(cause, index)) => CommitError::Refused {
                cause,
                index,
                source,
            },
            None => CommitError::Log(source),
        }
    };
    let offsets = match log.append(events.clone()) {
        Ok(offsets) => offsets,
        Err(source) => return Err(blame(source, &events)),
    };
    let mut outcome = CommitOutcome::default();
    for (offset, event) in offsets.iter().zip(&events) {
        if *offset > head_before {
            outcome.appended += 1;
            continue;
        }
        outcome.deduplicated += 1;
        let query = ReadQuery {
            from_offset: *offset,
            to_offset: Some(*offset),
            ..ReadQuery::default()
        };
        let stored = log
            .read(&query)
            .ok()
            .and_then(|mut iter| iter.next())
            .and_then(Result::ok);
        let same = stored.as_ref().is_some_and(|stored| {
            stored.stream == event.stream
                && stored.event_type == event.event_type
                && same_json(&stored.data, &event.data)
                && same_json(
                    stored.metadata.as_deref().unwrap_or("null"),
                    event.metadata.as_deref().unwrap_or("null"),
                )
        });
        if !same {
            outcome.diverged += 1;
            tracing::warn!(
                id = event.id.as_deref().unwrap_or_default(),
                offset,
                "a reactor re-emitted an event id with different content; the log keeps the first"
            );
        }
    }
    Ok(outcome)
}

fn same_json(a: &str, b: &str) -> bool {
    a == b
        || serde_json::from_str::<serde_json::Value>(a).ok()
            == serde_json::from_str::<serde_json::Value>(b).ok()
}

/// The `refract.timer` events for `due` timers of `reactor`.
pub fn timer_events(reactor: &str, due: &[DueTimer]) -> Vec<NewEvent> {
    due.iter()
        .map(|timer| {
            let payload: serde_json::Value =
                serde_json::from_str(&timer.payload).unwrap_or(serde_json::Value::Null);
            let data = serde_json::json!({
                "key": timer.key,
                "due_at": timer.due_at,
                "payload": payload,
            });
            NewEvent::new(timer_stream(reactor), TIMER_EVENT_TYPE, data.to_string())
                .with_id(timer_id(reactor, &timer.key, timer.due_at, timer.cause))
                .with_metadata(serde_json::json!({ "reactor": reactor }).to_string())
        })
        .collect()
}

/// The key and due time of a timer event's data.
pub fn timer_of(data: &str) -> Option<(String, i64)> {
    #[derive(serde::Deserialize)]
    struct Timer {
        key: String,
        due_at: i64,
    }
    serde_json::from_str::<Timer>(data)
        .ok()
        .map(|timer| (timer.key, timer.due_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogOptions;

    fn emit(cause: u64, index: u32, data: &str) -> (u64, u32, NewEvent) {
        (
            cause,
            index,
            NewEvent::new("payment-1", "payment.requested", data)
                .with_id(emit_id("saga", cause, index)),
        )
    }

    #[test]
    fn a_replayed_batch_appends_nothing_and_a_changed_one_is_counted() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|source| LogError::Open {
            path: "tempdir".into(),
            source,
        })?;
        let log = EventLog::open(&dir.path().join("events.db"), LogOptions::default())?;
        let first = append(&log, vec![emit(7, 0, "{}"), emit(7, 1, "{}")]).expect("appended");
        assert_eq!((first.appended, first.deduplicated), (2, 0));
        // The same batch again, as after a crash before the checkpoint: nothing new.
        let again = append(&log, vec![emit(7, 0, "{}"), emit(7, 1, "{}")]).expect("replayed");
        assert_eq!(
            (again.appended, again.deduplicated, again.diverged),
            (0, 2, 0)
        );
        // The same id with other content: the log keeps the first, the host counts it.
        let changed = append(&log, vec![emit(7, 0, r#"{"x":1}"#)]).expect("replayed");
        assert_eq!((changed.appended, changed.diverged), (0, 1));
        assert_eq!(log.head()?, 2);
        Ok(())
    }

    #[test]
    fn ids_name_the_reactor_the_source_and_the_index() {
        assert_eq!(emit_id("order-saga", 42, 1), "rx:order-saga:42:1");
        let a = timer_id("saga", "key", 10, 3);
        assert_eq!(a, timer_id("saga", "key", 10, 3));
        assert_ne!(a, timer_id("saga", "key", 11, 3));
        assert_ne!(a, timer_id("saga", "other", 10, 3));
        assert_ne!(a, timer_id("saga", "key", 10, 4));
    }
}
