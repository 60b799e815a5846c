//! The JetStream message format: what one replicated message carries.
//!
//! A message is one JSON object holding one or more append requests:
//!
//! ```json
//! {"format": 1, "requests": [
//!   {"recorded_at": 1767225600000000, "events": [
//!     {"id": "0194…", "stream": "order-1", "type": "OrderPlaced",
//!      "data": {"total": 42}, "metadata": null, "expected_version": 0}]}]}
//! ```
//!
//! Everything the mirror needs to apply the message identically on every node is in it:
//! every event's id (the publisher fills in the ones the client left out), the
//! publisher's clock, and the optimistic-concurrency expectations. `data` and
//! `metadata` are embedded as JSON, so `nats stream view` shows them readably.
//!
//! `format` is bumped whenever the meaning of a message changes. A node that meets a
//! format newer than its own stops its mirror (applying what it does not understand
//! would make it disagree with the others); a message that is not a Refract message at
//! all is skipped, identically on every node.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::log::{NewEvent, OrderedRequest};

/// The message format this build writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Serialize)]
struct OutgoingRequest<'a> {
    recorded_at: i64,
    events: Vec<OutgoingEvent<'a>>,
}

#[derive(Serialize)]
struct OutgoingEvent<'a> {
    id: &'a str,
    stream: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a RawValue,
    metadata: Option<&'a RawValue>,
    expected_version: Option<u64>,
}

/// A message, as read; borrows the payload.
#[derive(Deserialize)]
struct Incoming<'a> {
    format: u32,
    #[serde(borrow, default)]
    requests: Vec<IncomingRequest<'a>>,
}

#[derive(Deserialize)]
struct IncomingRequest<'a> {
    recorded_at: i64,
    #[serde(borrow)]
    events: Vec<IncomingEvent<'a>>,
}

#[derive(Deserialize)]
struct IncomingEvent<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(default)]
    expected_version: Option<u64>,
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// An event's data or metadata is not JSON (the log's validation should have
    /// caught it first).
    #[error("event {position}: {field} is not valid JSON: {source}")]
    NotJson {
        /// The 1-based position of the event in its request.
        position: usize,
        /// `data` or `metadata`.
        field: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// An event reached the encoder without an id.
    #[error("event {position} has no id; the publisher assigns one before encoding")]
    MissingId {
        /// The 1-based position of the event in its request.
        position: usize,
    },
    /// The message was written by a newer Refract.
    #[error(
        "a replicated message has format {found}, but this build reads format {FORMAT}; upgrade refract on this node"
    )]
    NewerFormat {
        /// The message's format.
        found: u32,
    },
    /// The message is not a Refract message.
    #[error("not a Refract message: {0}")]
    Malformed(serde_json::Error),
}

/// Encodes requests as one message. Every event must carry its id.
///
/// # Errors
/// [`WireError::MissingId`] or [`WireError::NotJson`]: both mean the caller skipped a
/// step (assigning ids, validating).
pub fn encode(requests: &[OrderedRequest]) -> Result<Vec<u8>, WireError> {
    let parts = requests
        .iter()
        .map(encode_request)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(assemble(&parts))
}

/// Encodes one request, to be put in a message with [`assemble`] (so a node grouping
/// concurrent appends encodes each once).
///
/// # Errors
/// As [`encode`].
pub fn encode_request(request: &OrderedRequest) -> Result<Vec<u8>, WireError> {
    let mut events = Vec::with_capacity(request.events.len());
    for (index, event) in request.events.iter().enumerate() {
        let position = index + 1;
        let id = event
            .id
            .as_deref()
            .ok_or(WireError::MissingId { position })?;
        let data = raw(&event.data, position, "data")?;
        let metadata = event
            .metadata
            .as_deref()
            .map(|m| raw(m, position, "metadata"))
            .transpose()?;
        events.push(OutgoingEvent {
            id,
            stream: &event.stream,
            event_type: &event.event_type,
            data,
            metadata,
            expected_version: event.expected_version,
        });
    }
    serde_json::to_vec(&OutgoingRequest {
        recorded_at: request.recorded_at,
        events,
    })
    .map_err(WireError::Malformed)
}

/// The bytes [`assemble`] adds around the requests.
pub const ENVELOPE_BYTES: usize = 32;

/// One message from requests encoded by [`encode_request`].
pub fn assemble(requests: &[Vec<u8>]) -> Vec<u8> {
    let size: usize = requests.iter().map(|r| r.len() + 1).sum();
    let mut message = Vec::with_capacity(size + ENVELOPE_BYTES);
    message.extend_from_slice(format!(r#"{{"format":{FORMAT},"requests":["#).as_bytes());
    for (index, request) in requests.iter().enumerate() {
        if index > 0 {
            message.push(b',');
        }
        message.extend_from_slice(request);
    }
    message.extend_from_slice(b"]}");
    message
}

fn raw<'a>(text: &'a str, position: usize, field: &'static str) -> Result<&'a RawValue, WireError> {
    serde_json::from_str(text).map_err(|source| WireError::NotJson {
        position,
        field,
        source,
    })
}

/// Decodes a message into the requests it carries.
///
/// # Errors
/// [`WireError::NewerFormat`] for a message this build must not apply;
/// [`WireError::Malformed`] for one that is not a Refract message.
pub fn decode(payload: &[u8]) -> Result<Vec<OrderedRequest>, WireError> {
    let incoming: Incoming<'_> = serde_json::from_slice(payload).map_err(WireError::Malformed)?;
    if incoming.format > FORMAT {
        return Err(WireError::NewerFormat {
            found: incoming.format,
        });
    }
    if incoming.format == 0 {
        return Err(WireError::Malformed(serde::de::Error::custom(
            "format 0 does not exist",
        )));
    }
    Ok(incoming
        .requests
        .into_iter()
        .map(|request| OrderedRequest {
            recorded_at: request.recorded_at,
            events: request
                .events
                .into_iter()
                .map(|event| NewEvent {
                    id: event.id.map(Cow::into_owned),
                    stream: event.stream.into_owned(),
                    event_type: event.event_type.into_owned(),
                    data: event.data.get().to_owned(),
                    metadata: event.metadata.map(|m| m.get().to_owned()),
                    expected_version: event.expected_version,
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips() {
        let requests = vec![
            OrderedRequest {
                recorded_at: 7,
                events: vec![
                    NewEvent::new("s", "A", r#"{"x": [1, 2]}"#)
                        .with_id("e1")
                        .with_metadata(r#"{"correlation_id":"c"}"#)
                        .with_expected_version(0),
                ],
            },
            OrderedRequest {
                recorded_at: 9,
                events: vec![NewEvent::new("t", "B", "3").with_id("e2")],
            },
        ];
        let bytes = encode(&requests).unwrap();
        assert_eq!(decode(&bytes).unwrap(), requests);
    }

    #[test]
    fn ids_are_required_and_newer_formats_refused() {
        let missing = encode(&[OrderedRequest {
            recorded_at: 1,
            events: vec![NewEvent::new("s", "A", "{}")],
        }])
        .unwrap_err();
        assert!(matches!(missing, WireError::MissingId { position: 1 }));
        let newer = decode(br#"{"format": 2, "requests": []}"#).unwrap_err();
        assert!(newer.to_string().contains("upgrade refract"), "{newer}");
        assert!(matches!(decode(b"hello"), Err(WireError::Malformed(_))));
        assert!(matches!(
            decode(br#"{"format": 0}"#),
            Err(WireError::Malformed(_))
        ));
    }
}
