//! The shapes that go in and out of the log: [`NewEvent`], [`Event`], [`EventRef`], and
//! the microsecond time helpers.

use jiff::Timestamp;
use serde::ser::{Error as _, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// An event to append. Build one with [`NewEvent::new`] and the `with_*` methods, or fill
/// the fields directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// A client-chosen unique id, so a retried append is a no-op returning the original
    /// offset. `None`: the log generates a UUID v7.
    pub id: Option<String>,
    /// The stream the event belongs to: non-empty, at most
    /// [`MAX_NAME_CHARS`](super::MAX_NAME_CHARS) characters, no control characters.
    pub stream: String,
    /// The event type: non-empty, at most [`MAX_NAME_CHARS`](super::MAX_NAME_CHARS) characters.
    pub event_type: String,
    /// The payload, as JSON text.
    pub data: String,
    /// Optional metadata (correlation id, causation id, ...), as JSON text.
    pub metadata: Option<String>,
    /// Optimistic concurrency: the version the stream must be at just before this event
    /// (0 = the stream must not exist yet). `None`: append whatever the version.
    pub expected_version: Option<u64>,
}

impl NewEvent {
    /// An event with a generated id, no metadata and no expected version.
    pub fn new(
        stream: impl Into<String>,
        event_type: impl Into<String>,
        data: impl Into<String>,
    ) -> NewEvent {
        NewEvent {
            id: None,
            stream: stream.into(),
            event_type: event_type.into(),
            data: data.into(),
            metadata: None,
            expected_version: None,
        }
    }

    /// Sets a client-chosen id, making the append idempotent.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> NewEvent {
        self.id = Some(id.into());
        self
    }

    /// Sets the JSON metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> NewEvent {
        self.metadata = Some(metadata.into());
        self
    }

    /// Requires the stream to be at `version` just before this event (0 = new stream).
    #[must_use]
    pub fn with_expected_version(mut self, version: u64) -> NewEvent {
        self.expected_version = Some(version);
        self
    }
}

/// A stored event, owned.
///
/// Serializes as one JSON object with the fields `offset`, `id`, `stream`,
/// `stream_version`, `type`, `data` and `metadata` (embedded as JSON, not as strings;
/// `metadata` is `null` when absent) and `recorded_at` (RFC 3339, UTC, microseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The global position in the log, from 1, gap-free.
    pub offset: u64,
    /// The unique event id.
    pub id: String,
    /// The stream.
    pub stream: String,
    /// The position within the stream, from 1, gap-free.
    pub stream_version: u64,
    /// The event type.
    pub event_type: String,
    /// The payload, as JSON text.
    pub data: String,
    /// The metadata, as JSON text.
    pub metadata: Option<String>,
    /// When the log recorded the event (UTC, microsecond precision). Never decreases
    /// along offsets.
    pub recorded_at: Timestamp,
}

impl Event {
    /// Borrows this event as an [`EventRef`].
    pub fn as_event_ref(&self) -> EventRef<'_> {
        EventRef {
            offset: self.offset,
            id: &self.id,
            stream: &self.stream,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            data: &self.data,
            metadata: self.metadata.as_deref(),
            recorded_at_micros: timestamp_to_micros(self.recorded_at),
        }
    }
}

/// A stored event borrowed from the database row it was read from: the replay hot path
/// hands these out without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The global position in the log, from 1, gap-free.
    pub offset: u64,
    /// The unique event id.
    pub id: &'a str,
    /// The stream.
    pub stream: &'a str,
    /// The position within the stream, from 1, gap-free.
    pub stream_version: u64,
    /// The event type.
    pub event_type: &'a str,
    /// The payload, as JSON text.
    pub data: &'a str,
    /// The metadata, as JSON text.
    pub metadata: Option<&'a str>,
    /// When the log recorded the event, in microseconds since the Unix epoch (UTC).
    pub recorded_at_micros: i64,
}

impl EventRef<'_> {
    /// When the log recorded the event.
    pub fn recorded_at(&self) -> Timestamp {
        micros_to_timestamp(self.recorded_at_micros)
    }

    /// Copies the event into an owned [`Event`].
    pub fn to_event(&self) -> Event {
        Event {
            offset: self.offset,
            id: self.id.to_owned(),
            stream: self.stream.to_owned(),
            stream_version: self.stream_version,
            event_type: self.event_type.to_owned(),
            data: self.data.to_owned(),
            metadata: self.metadata.map(str::to_owned),
            recorded_at: self.recorded_at(),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_event_ref().serialize(serializer)
    }
}

impl Serialize for EventRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The log only stores JSON it validated, so these borrow-parses cannot fail on a
        // healthy log; they make the payload embed as JSON instead of as a string.
        let data: &RawValue = serde_json::from_str(self.data).map_err(|e| {
            S::Error::custom(format_args!("event {}: stored data: {e}", self.offset))
        })?;
        let metadata: Option<&RawValue> = self
            .metadata
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| {
                S::Error::custom(format_args!("event {}: stored metadata: {e}", self.offset))
            })?;
        let mut s = serializer.serialize_struct("Event", 8)?;
        s.serialize_field("offset", &self.offset)?;
        s.serialize_field("id", self.id)?;
        s.serialize_field("stream", self.stream)?;
        s.serialize_field("stream_version", &self.stream_version)?;
        s.serialize_field("type", self.event_type)?;
        s.serialize_field("data", data)?;
        s.serialize_field("metadata", &metadata)?;
        s.serialize_field("recorded_at", &format_timestamp(self.recorded_at()))?;
        s.end()
    }
}

/// Formats a timestamp the way the log shows it everywhere: RFC 3339 in UTC with exactly
/// six fractional digits, e.g. `2025-01-31T12:00:00.000042Z`.
pub fn format_timestamp(timestamp: Timestamp) -> String {
    format!("{timestamp:.6}")
}

/// Converts stored microseconds to a timestamp, saturating at jiff's range (a healthy log
/// only holds values it produced from `Timestamp::now`).
pub fn micros_to_timestamp(micros: i64) -> Timestamp {
    Timestamp::from_microsecond(micros).unwrap_or(if micros < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Converts a timestamp to whole microseconds, truncating toward the past.
pub fn timestamp_to_micros(timestamp: Timestamp) -> i64 {
    let nanos = timestamp.as_nanosecond();
    clamp_i128(nanos.div_euclid(1000))
}

/// The smallest whole microsecond at or after `timestamp`: an event recorded at
/// microsecond `m` is at or after `timestamp` exactly when `m >= ceil_micros(timestamp)`.
pub(crate) fn ceil_micros(timestamp: Timestamp) -> i64 {
    let nanos = timestamp.as_nanosecond();
    let floor = nanos.div_euclid(1000);
    clamp_i128(if nanos.rem_euclid(1000) == 0 {
        floor
    } else {
        floor + 1
    })
}

fn clamp_i128(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// The `correlation_id` string in an event's JSON metadata, if there is one, so log
/// lines about the event can carry it.
pub fn correlation_id(metadata: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Metadata<'a> {
        #[serde(borrow)]
        correlation_id: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Metadata<'_>>(metadata?)
        .ok()?
        .correlation_id
}
