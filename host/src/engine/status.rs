//! What every projector version is doing, as the engine sees it right now.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The window over which events per second are averaged.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// A version's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Behind the log head and projecting.
    CatchingUp,
    /// At the log head, waiting for events.
    Live,
    /// Failing on the event at `at`, retrying with backoff.
    Stalled {
        /// The offset it is stuck at.
        at: u64,
        /// Why.
        message: String,
    },
    /// Stopped for good.
    Retired,
}

impl State {
    /// The short name stored in `control.db`: `catching-up`, `live`, `stalled`, `retired`.
    pub fn name(&self) -> &'static str {
        match self {
            State::CatchingUp => "catching-up",
            State::Live => "live",
            State::Stalled { .. } => "stalled",
            State::Retired => "retired",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Stalled { at, message } => write!(f, "stalled at {at}: {message}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A snapshot of one version's status.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    /// The projector's name.
    pub projector: String,
    /// The version's short content hash.
    pub version: String,
    /// What it is doing.
    pub state: State,
    /// The last log offset reflected in its read model.
    pub checkpoint: u64,
    /// The log head when last looked at.
    pub head: u64,
    /// Events applied per second, averaged over the last few seconds.
    pub events_per_second: f64,
    /// The last error, kept after recovery until the next one.
    pub last_error: Option<String>,
    /// Events recorded as dead letters.
    pub dead_letters: u64,
}

impl VersionStatus {
    /// How many log offsets the read model is behind the head.
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.checkpoint)
    }
}

/// The live status of one version, shared by its worker (which writes) and readers.
#[derive(Clone)]
pub struct StatusCell {
    inner: Arc<Mutex<(VersionStatus, RateMeter)>>,
}

impl StatusCell {
    pub(crate) fn new(projector: &str, version: &str) -> StatusCell {
        let status = VersionStatus {
            projector: projector.to_owned(),
            version: version.to_owned(),
            state: State::CatchingUp,
            checkpoint: 0,
            head: 0,
            events_per_second: 0.0,
            last_error: None,
            dead_letters: 0,
        };
        StatusCell {
            inner: Arc::new(Mutex::new((status, RateMeter::default()))),
        }
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> VersionStatus {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut status = guard.0.clone();
        status.events_per_second = guard.1.rate(Instant::now());
        status
    }

    /// Changes the status under the lock.
    pub(crate) fn update(&self, change: impl FnOnce(&mut VersionStatus)) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut guard.0);
    }

    /// Counts applied events towards events per second.
    pub(crate) fn record_events(&self, events: usize) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.record(Instant::now(), events as u64);
    }
}

/// Events per second over a sliding window.
#[derive(Debug, Default)]
struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    fn record(&mut self, now: Instant, events: u64) {
        self.samples.push_back((now, events));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn rate(&self, now: Instant) -> f64 {
        let recent = self
            .samples
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= RATE_WINDOW);
        let events: u64 = recent.map(|(_, events)| events).sum();
        events as f64 / RATE_WINDOW.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_only_the_window() {
        let start = Instant::now();
        let mut meter = RateMeter::default();
        meter.record(start, 1000);
        meter.record(start + Duration::from_secs(1), 500);
        assert_eq!(meter.rate(start + Duration::from_secs(2)), 1500.0 / 5.0);
        assert_eq!(meter.rate(start + Duration::from_secs(6)), 500.0 / 5.0);
        meter.record(start + Duration::from_secs(20), 10);
        assert_eq!(meter.samples.len(), 1);
    }

    #[test]
    fn stalled_state_names_offset_and_reason() {
        let state = State::Stalled {
            at: 42,
            message: "boom".into(),
        };
        assert_eq!(state.to_string(), "stalled at 42: boom");
        assert_eq!(state.name(), "stalled");
    }
}
