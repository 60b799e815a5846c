//! One event as a projector sees it, borrowed from the batch the host sent.

use serde::Deserialize;

use crate::Result;

/// One event from the log, borrowed from the batch it arrived in: reading it
/// copies nothing.
///
/// [`data`](Event::data) deserializes the JSON payload with serde. Fields typed
/// `&'a str` borrow from the batch; a `Cow<'a, str>` field marked
/// `#[serde(borrow)]` borrows when it can and still accepts strings with JSON
/// escapes (`\"`, `\u00e9`), which a plain `&str` field rejects.
///
/// ```
/// use std::borrow::Cow;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Deposited<'a> {
///     #[serde(borrow)]
///     account: Cow<'a, str>,
///     amount: i64,
/// }
///
/// # fn main() -> refract_sdk::Result<()> {
/// # let owned = refract_sdk::Event::build("money.deposited")
/// #     .data(serde_json::json!({"account": "acc-1", "amount": 250}));
/// # let event = owned.as_event();
/// let d: Deposited<'_> = event.data()?;
/// assert_eq!((d.account.as_ref(), d.amount), ("acc-1", 250));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    offset: u64,
    stream_version: u64,
    recorded_at_micros: i64,
    id: &'a str,
    stream: &'a str,
    event_type: &'a str,
    data: &'a str,
    metadata: &'a str,
}

impl<'a> Event<'a> {
    /// Assembles an event from its fields; `metadata` is empty when the event has none.
    #[expect(clippy::too_many_arguments, reason = "one argument per event field")]
    pub(crate) fn from_parts(
        offset: u64,
        stream_version: u64,
        recorded_at_micros: i64,
        id: &'a str,
        stream: &'a str,
        event_type: &'a str,
        data: &'a str,
        metadata: &'a str,
    ) -> Self {
        Event {
            offset,
            stream_version,
            recorded_at_micros,
            id,
            stream,
            event_type,
            data,
            metadata,
        }
    }

    /// The event's global position in the log. Offsets start at 1 and only grow.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The event's unique id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The stream the event belongs to, for example an account or order id.
    pub fn stream(&self) -> &'a str {
        self.stream
    }

    /// The event's position within its stream, from 1.
    pub fn stream_version(&self) -> u64 {
        self.stream_version
    }

    /// The event type, for example `money.deposited`.
    pub fn event_type(&self) -> &'a str {
        self.event_type
    }

    /// When the log recorded the event: microseconds since the Unix epoch, UTC.
    /// This is the projector's only clock, and it replays identically.
    pub fn recorded_at_micros(&self) -> i64 {
        self.recorded_at_micros
    }

    /// The payload, deserialized from JSON. Borrowed fields point into the batch.
    pub fn data<T: Deserialize<'a>>(&self) -> Result<T> {
        Ok(serde_json::from_str(self.data)?)
    }

    /// The payload as JSON text.
    pub fn data_json(&self) -> &'a str {
        self.data
    }

    /// The metadata as JSON text, or `None` when the event has none.
    pub fn metadata(&self) -> Option<&'a str> {
        (!self.metadata.is_empty()).then_some(self.metadata)
    }

    /// The metadata, deserialized from JSON, or `None` when the event has none.
    pub fn metadata_as<T: Deserialize<'a>>(&self) -> Result<Option<T>> {
        match self.metadata() {
            Some(json) => Ok(Some(serde_json::from_str(json)?)),
            None => Ok(None),
        }
    }
}
