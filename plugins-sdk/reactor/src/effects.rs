//! [`Effects`]: what a reactor does about one event, through the host's `emit` and
//! `timers` imports on wasm, or recorded for [`testing`](crate::testing) natively.

use std::time::Duration;

use serde::Serialize;

use crate::{Error, Event, Result};

/// An event to emit: built with [`NewEvent::new`], given to [`Effects::emit_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The stream.
    pub stream: String,
    /// The event type; one of [`Reactor::emits`](crate::Reactor::emits).
    pub event_type: String,
    /// The payload, JSON text.
    pub data: String,
    /// Extra metadata, a JSON object; the host adds the causal chain.
    pub metadata: Option<String>,
    /// The version the stream must be at just before this event (0: a new stream).
    pub expected_version: Option<u64>,
}

impl NewEvent {
    /// An event with `data` serialized to JSON.
    pub fn new(
        stream: impl Into<String>,
        event_type: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<Self> {
        Ok(Self {
            stream: stream.into(),
            event_type: event_type.into(),
            data: serde_json::to_string(data)?,
            metadata: None,
            expected_version: None,
        })
    }

    /// Adds metadata (a JSON object).
    pub fn metadata(mut self, metadata: &impl Serialize) -> Result<Self> {
        self.metadata = Some(serde_json::to_string(metadata)?);
        Ok(self)
    }

    /// Requires the stream to be at `version` just before this event.
    #[must_use]
    pub fn expected_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }
}

/// One effect, as recorded natively for tests.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// An emitted event, and the offset of the event that caused it.
    Emit {
        /// The source event's offset.
        cause: u64,
        /// The event.
        event: NewEvent,
    },
    /// A scheduled timer.
    Schedule {
        /// The source event's offset.
        cause: u64,
        /// The key.
        key: String,
        /// When it is due: the source's recorded-at plus the delay, in microseconds.
        due_at: i64,
        /// The payload, JSON text.
        payload: String,
    },
    /// A cancelled timer.
    Cancel {
        /// The key.
        key: String,
    },
}

/// What a reactor does about the event it is reacting to: emit events, schedule and
/// cancel timers. Everything is kept only if the whole batch succeeds.
#[derive(Debug)]
pub struct Effects {
    cause: u64,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code, reason = "native tests only"))]
    recorded_at: i64,
    #[cfg(not(target_arch = "wasm32"))]
    recorded: Vec<Effect>,
}

impl Effects {
    pub(crate) fn for_event(event: &Event<'_>) -> Self {
        Self {
            cause: event.offset(),
            recorded_at: event.recorded_at_micros(),
            #[cfg(not(target_arch = "wasm32"))]
            recorded: Vec::new(),
        }
    }

    /// Emits an event of `event_type` on `stream`, with `data` as JSON.
    pub fn emit(&mut self, stream: &str, event_type: &str, data: &impl Serialize) -> Result<()> {
        self.emit_event(NewEvent::new(stream, event_type, data)?)
    }

    /// Emits `event`.
    pub fn emit_event(&mut self, event: NewEvent) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            wasm::emit(self.cause, &event)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.recorded.push(Effect::Emit {
                cause: self.cause,
                event,
            });
            Ok(())
        }
    }

    /// Schedules the timer `key` to fire `delay` after this event was recorded, with
    /// `payload`. The reactor then receives a `refract.timer` event (see
    /// [`Timer`](crate::Timer)). Scheduling a pending key again replaces it.
    pub fn schedule(&mut self, key: &str, delay: Duration, payload: &impl Serialize) -> Result<()> {
        let payload = serde_json::to_string(payload)?;
        let delay_ms = u64::try_from(delay.as_millis())
            .map_err(|_| Error::msg("a timer delay must fit in u64 milliseconds"))?;
        #[cfg(target_arch = "wasm32")]
        {
            wasm::schedule(self.cause, key, delay_ms, &payload)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let delay_micros = i64::try_from(delay_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
            self.recorded.push(Effect::Schedule {
                cause: self.cause,
                key: key.to_owned(),
                due_at: self.recorded_at.saturating_add(delay_micros),
                payload,
            });
            Ok(())
        }
    }

    /// Cancels the pending timer `key`, if any: it will not be delivered.
    pub fn cancel(&mut self, key: &str) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            wasm::cancel(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.recorded.push(Effect::Cancel {
                key: key.to_owned(),
            });
            Ok(())
        }
    }

    /// Ends the event: natively, hands the recorded effects to the test harness.
    pub(crate) fn finish(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::record(std::mem::take(&mut self.recorded));
    }
}

#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm {
    //! The component side: the reactor world's bindings, reusing `refract-sdk`'s for
    //! the projector interfaces it includes.

    use super::NewEvent;
    use crate::{Error, Reactor, Result};

    /// The generated bindings for the `reactor` world.
    #[allow(
        missing_docs,
        unsafe_code,
        unused_qualifications,
        clippy::all,
        reason = "generated by wit-bindgen: the canonical-ABI glue is unsafe by nature"
    )]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit/reactor",
            world: "reactor",
            with: {
                "refract:projector/types@0.1.0": refract_sdk::__private::bindings::refract::projector::types,
                "refract:projector/sql@0.1.0": refract_sdk::__private::bindings::refract::projector::sql,
                "refract:projector/log@0.1.0": refract_sdk::__private::bindings::refract::projector::log,
            },
            pub_export_macro: true,
            export_macro_name: "__export_reactor_world",
            default_bindings_module: "refract_reactor_sdk::__private::bindings",
        });
    }

    use bindings::refract::reactor::{emit as wit_emit, timers as wit_timers};

    fn refused(error: wit_emit::EffectError) -> Error {
        Error::Message(error.message)
    }

    pub(crate) fn emit(cause: u64, event: &NewEvent) -> Result<()> {
        wit_emit::emit(
            cause,
            &wit_emit::NewEvent {
                stream: event.stream.clone(),
                event_type: event.event_type.clone(),
                data: event.data.clone(),
                metadata: event.metadata.clone(),
                expected_version: event.expected_version,
            },
        )
        .map_err(refused)
    }

    pub(crate) fn schedule(cause: u64, key: &str, delay_ms: u64, payload: &str) -> Result<()> {
        wit_timers::schedule(cause, key, delay_ms, payload).map_err(refused)
    }

    pub(crate) fn cancel(key: &str) -> Result<()> {
        wit_timers::cancel(key).map_err(refused)
    }

    /// The `reactor-info` export.
    pub fn reactor_info<R: Reactor>() -> bindings::ReactorInfo {
        bindings::ReactorInfo {
            emits: R::emits().iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}
