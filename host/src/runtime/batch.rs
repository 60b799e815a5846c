//! The packed `event-batch` handed to a projector's `handle`.
//!
//! A batch is five flat buffers however many events it holds, so one call carries a
//! thousand events for the cost of five copies into the guest (about 30 ns an event,
//! against about 340 ns for a list of records with strings). The buffers are kept between
//! batches: [`EventBatch::clear`] empties them without freeing.

use super::bindings;

/// Text fields per event in the packed layout: id, stream, type, data, metadata.
const FIELDS: usize = 5;

/// The optional text fields of an event a projector reads: 0.2.0's
/// `projector-info.reads`. A field it does not read arrives as empty text, and the host
/// does not read it from the log. A 0.1.0 projector reads every field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventFields {
    /// The event's id.
    pub id: bool,
    /// The event's metadata.
    pub metadata: bool,
}

impl EventFields {
    /// Every field: what a 0.1.0 projector, and a 0.2.0 one by default, reads.
    pub const ALL: EventFields = EventFields {
        id: true,
        metadata: true,
    };

    /// Neither optional field.
    pub const NONE: EventFields = EventFields {
        id: false,
        metadata: false,
    };
}

impl Default for EventFields {
    fn default() -> Self {
        Self::ALL
    }
}

/// A batch of events in offset order, packed as the WIT `event-batch`.
#[derive(Debug, Clone)]
pub struct EventBatch {
    packed: bindings::EventBatch,
    /// Set when a push could not be represented (text past 4 GiB, offsets out of order);
    /// the batch then refuses to be applied.
    broken: Option<&'static str>,
}

/// One event of a batch, borrowed from its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEvent<'a> {
    /// Global log offset.
    pub offset: u64,
    /// The event's unique id.
    pub id: &'a str,
    /// The stream it belongs to.
    pub stream: &'a str,
    /// Its version within the stream, from 1.
    pub stream_version: u64,
    /// Its type, for example `money.deposited`.
    pub event_type: &'a str,
    /// Its JSON payload.
    pub data: &'a str,
    /// Its JSON metadata, if it has any.
    pub metadata: Option<&'a str>,
    /// When it was recorded, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
}

impl Default for EventBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self {
            packed: bindings::EventBatch {
                offsets: Vec::new(),
                stream_versions: Vec::new(),
                recorded_at: Vec::new(),
                ends: Vec::new(),
                text: Vec::new(),
            },
            broken: None,
        }
    }

    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        let packed = &mut self.packed;
        packed.offsets.clear();
        packed.stream_versions.clear();
        packed.recorded_at.clear();
        packed.ends.clear();
        packed.text.clear();
        self.broken = None;
    }

    /// Appends one event. Offsets must increase strictly; the fields are copied into the
    /// batch's buffers. `metadata` of `None` is sent as an empty field, as the contract
    /// says.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one event, borrowed from the log's row without building a struct"
    )]
    pub fn push(
        &mut self,
        offset: u64,
        id: &str,
        stream: &str,
        stream_version: u64,
        event_type: &str,
        data: &str,
        metadata: Option<&str>,
        recorded_at_micros: i64,
    ) {
        if self
            .packed
            .offsets
            .last()
            .is_some_and(|&last| offset <= last)
        {
            self.broken = Some("event offsets must increase strictly within a batch");
            return;
        }
        let fields = [id, stream, event_type, data, metadata.unwrap_or("")];
        let added: usize = fields.iter().map(|field| field.len()).sum();
        if self
            .packed
            .text
            .len()
            .checked_add(added)
            .is_none_or(|total| u32::try_from(total).is_err())
        {
            self.broken = Some("the batch's event text exceeds 4 GiB");
            return;
        }
        let packed = &mut self.packed;
        packed.offsets.push(offset);
        packed.stream_versions.push(stream_version);
        packed.recorded_at.push(recorded_at_micros);
        for field in fields {
            packed.text.extend_from_slice(field.as_bytes());
            // Checked above: the text stays under 4 GiB.
            packed
                .ends
                .push(u32::try_from(packed.text.len()).unwrap_or(u32::MAX));
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.packed.offsets.len()
    }

    /// Whether the batch holds no events.
    pub fn is_empty(&self) -> bool {
        self.packed.offsets.is_empty()
    }

    /// Bytes the guest receives: the text plus the fixed-size fields (44 bytes per event).
    pub fn byte_len(&self) -> usize {
        self.packed.text.len() + self.len() * (3 * 8 + FIELDS * 4)
    }

    /// The first event's offset.
    pub fn first_offset(&self) -> Option<u64> {
        self.packed.offsets.first().copied()
    }

    /// The last event's offset.
    pub fn last_offset(&self) -> Option<u64> {
        self.packed.offsets.last().copied()
    }

    /// The offsets, in order.
    pub fn offsets(&self) -> &[u64] {
        &self.packed.offsets
    }

    /// Whether an event with this offset is in the batch.
    pub fn contains_offset(&self, offset: u64) -> bool {
        self.packed.offsets.binary_search(&offset).is_ok()
    }

    /// The `index`th event.
    pub fn get(&self, index: usize) -> Option<BatchEvent<'_>> {
        let packed = &self.packed;
        let offset = *packed.offsets.get(index)?;
        let start = match index {
            0 => 0,
            _ => *packed.ends.get(FIELDS * index - 1)? as usize,
        };
        let ends = packed.ends.get(FIELDS * index..FIELDS * (index + 1))?;
        let mut fields = [""; FIELDS];
        let mut from = start;
        for (field, &end) in fields.iter_mut().zip(ends) {
            let end = end as usize;
            *field = std::str::from_utf8(packed.text.get(from..end)?).ok()?;
            from = end;
        }
        let [id, stream, event_type, data, metadata] = fields;
        Some(BatchEvent {
            offset,
            id,
            stream,
            stream_version: *packed.stream_versions.get(index)?,
            event_type,
            data,
            metadata: (!metadata.is_empty()).then_some(metadata),
            recorded_at_micros: *packed.recorded_at.get(index)?,
        })
    }

    /// The events, in order.
    pub fn iter(&self) -> impl Iterator<Item = BatchEvent<'_>> {
        (0..self.len()).filter_map(|index| self.get(index))
    }

    /// This batch with the optional fields `fields` leaves out emptied, if it carries
    /// any of them; `None` if it already holds none (the engine reads batches that
    /// way, so it costs only this check: one look per event at two field lengths).
    pub(crate) fn without_unread(&self, fields: EventFields) -> Option<EventBatch> {
        if fields == EventFields::ALL {
            return None;
        }
        let carries = self.iter().any(|event| {
            (!fields.id && !event.id.is_empty()) || (!fields.metadata && event.metadata.is_some())
        });
        if !carries {
            return None;
        }
        let mut out = EventBatch::new();
        for event in self.iter() {
            out.push(
                event.offset,
                if fields.id { event.id } else { "" },
                event.stream,
                event.stream_version,
                event.event_type,
                event.data,
                event.metadata.filter(|_| fields.metadata),
                event.recorded_at_micros,
            );
        }
        out.broken = self.broken;
        Some(out)
    }

    /// The packed form, for the call into the guest.
    pub(crate) fn packed(&self) -> &bindings::EventBatch {
        &self.packed
    }

    /// Why the batch cannot be applied, if a push failed.
    pub(crate) fn broken(&self) -> Option<&'static str> {
        self.broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_packed_layout() {
        let mut batch = EventBatch::new();
        batch.push(7, "id-1", "account-1", 1, "account.opened", "{}", None, 100);
        batch.push(
            9,
            "id-2",
            "account-1",
            2,
            "money.deposited",
            r#"{"amount":5}"#,
            Some(r#"{"by":"me"}"#),
            200,
        );
        assert_eq!(batch.len(), 2);
        assert_eq!(
            (batch.first_offset(), batch.last_offset()),
            (Some(7), Some(9))
        );
        assert_eq!(batch.packed().ends.len(), 10);
        let second = batch.get(1).expect("second event");
        assert_eq!(second.event_type, "money.deposited");
        assert_eq!(second.metadata, Some(r#"{"by":"me"}"#));
        assert_eq!(batch.get(0).map(|event| event.metadata), Some(None));
        assert!(batch.contains_offset(9) && !batch.contains_offset(8));

        let capacity = batch.packed().text.capacity();
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.packed().text.capacity(), capacity, "buffers are kept");
    }

    #[test]
    fn unread_fields_are_emptied_only_when_present() {
        let mut batch = EventBatch::new();
        batch.push(1, "id-1", "s", 1, "t", "{}", Some(r#"{"m":1}"#), 0);
        assert!(batch.without_unread(EventFields::ALL).is_none());
        let blank = batch
            .without_unread(EventFields::NONE)
            .expect("carries both");
        let event = blank.get(0).expect("one event");
        assert_eq!((event.id, event.metadata, event.data), ("", None, "{}"));
        assert!(
            blank.without_unread(EventFields::NONE).is_none(),
            "already blank"
        );
        let ids_only = EventFields {
            id: true,
            metadata: false,
        };
        let kept = batch.without_unread(ids_only).expect("carries metadata");
        assert_eq!(
            kept.get(0).map(|event| (event.id, event.metadata)),
            Some(("id-1", None))
        );
    }

    #[test]
    fn out_of_order_offsets_break_the_batch() {
        let mut batch = EventBatch::new();
        batch.push(5, "a", "s", 1, "t", "{}", None, 0);
        batch.push(5, "b", "s", 2, "t", "{}", None, 0);
        assert_eq!(batch.len(), 1);
        assert!(batch.broken().is_some());
        batch.clear();
        assert!(batch.broken().is_none());
    }
}
