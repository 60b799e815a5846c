//! The `refract.timer` events a reactor's timers fire as.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Event, Result};

/// The type of the events timers fire as.
pub const TIMER_EVENT_TYPE: &str = "refract.timer";

/// A fired timer, read from a `refract.timer` event with [`Timer::of`].
#[derive(Debug, Deserialize)]
pub struct Timer<'a> {
    /// The key it was scheduled under.
    #[serde(borrow)]
    pub key: std::borrow::Cow<'a, str>,
    /// When it was due, in microseconds since the Unix epoch.
    pub due_at: i64,
    /// The payload given to [`Effects::schedule`](crate::Effects::schedule).
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

impl<'a> Timer<'a> {
    /// The timer an event carries, or `None` if it is not a timer event.
    pub fn of(event: &Event<'a>) -> Result<Option<Timer<'a>>> {
        if event.event_type() != TIMER_EVENT_TYPE {
            return Ok(None);
        }
        event.data().map(Some)
    }

    /// The payload, deserialized.
    pub fn payload<T: Deserialize<'a>>(&self) -> Result<T> {
        serde_json::from_str(self.payload.get())
            .map_err(|e| crate::Error::Message(format!("timer payload: {e}")))
    }
}
