//! What every projector version is doing, as the engine sees it right now.

use std::collections::VecDeque;
use std::fmt;

use serde::{Serialize, Serializer};
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
    /// A shadow that cannot finish its replay; the active version is untouched.
    Failed {
        /// Why.
        message: String,
    },
    /// Failing on a host fault (a full disk, an unreadable read model, a lost
    /// permission, a busy database) and retrying with backoff; it resumes by itself once
    /// the fault is fixed.
    Retrying {
        /// Failures in a row so far.
        attempts: u64,
        /// The last failure, with its fix when it is a storage fault.
        message: String,
    },
    /// The read model's checkpoint is past the log's head: the log was deleted, emptied
    /// or replaced under it. The worker stops projecting (new events would land at
    /// offsets it believes applied); see [`integrity`](crate::engine::integrity).
    AheadOfLog {
        /// The read model's checkpoint.
        checkpoint: u64,
        /// The log's head.
        head: u64,
    },
    /// Stopped for good.
    Retired,
}

impl State {
    /// The short name: `catching-up`, `live`, `stalled`, `failed`, `retrying`,
    /// `ahead-of-log`, `retired`.
    pub fn name(&self) -> &'static str {
        match self {
            State::CatchingUp => "catching-up",
            State::Live => "live",
            State::Stalled { .. } => "stalled",
            State::Failed { .. } => "failed",
            State::Retrying { .. } => "retrying",
            State::AheadOfLog { .. } => "ahead-of-log",
            State::Retired => "retired",
        }
    }

    /// Whether the version is doing its job: projecting, or waiting at the head. Any
    /// other state (stalled, failed, retrying, ahead of the log, or one added later)
    /// makes `/health` degraded.
    pub fn is_healthy(&self) -> bool {
        matches!(self, State::CatchingUp | State::Live | State::Retired)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Stalled { at, message } => write!(f, "stalled at {at}: {message}"),
            State::Failed { message } => write!(f, "failed: {message}"),
            State::Retrying { attempts, message } => {
                write!(f, "retrying after {attempts} failures in a row: {message}")
            }
            State::AheadOfLog { checkpoint, head } => write!(
                f,
                "ahead of the log: its checkpoint {checkpoint} is past the log's head {head}, so \
                 the event log was deleted, emptied or replaced; restore events.db from a backup, \
                 or start afresh with a new data directory"
            ),
            other => f.write_str(other.name()),
        }
    }
}

/// The upper bounds, in seconds, of the batch-latency histogram's buckets.
pub const BATCH_LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long batches took, from reading the log to committing: cumulative counts per
/// bucket of [`BATCH_LATENCY_BUCKETS`], plus the overflow, the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// `counts[i]`: batches that took at most `BATCH_LATENCY_BUCKETS[i]` seconds and
    /// more than the bucket before (not cumulative).
    pub counts: [u64; BATCH_LATENCY_BUCKETS.len()],
    /// Batches slower than the last bucket.
    pub overflow: u64,
    /// Total seconds.
    pub sum_seconds: f64,
    /// Batches observed.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one batch.
    pub fn observe(&mut self, seconds: f64) {
        match BATCH_LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
        {
            Some(bucket) => self.counts[bucket] += 1,
            None => self.overflow += 1,
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// Progress of a replay from the start of the log, for shadows and first versions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplayProgress {
    /// Log offsets processed (the checkpoint).
    pub done: u64,
    /// The log head.
    pub total: u64,
    /// `done / total`, 0 to 100.
    pub percent: f64,
    /// Events per second over the last few seconds.
    pub events_per_second: f64,
    /// Seconds left at that rate, if it is moving.
    pub eta_seconds: Option<f64>,
}

/// A call into the projector that has run past its deadline and the grace after it
/// (`limits.batch_deadline_ms` + `limits.deadline_grace_ms`) and is still running: the
/// sandbox failed to stop it in time. The host has interrupted it; the status shows it
/// until it returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overrun {
    /// How long the call has been running, in seconds.
    pub running_seconds: f64,
    /// The deadline plus grace it has passed, in seconds.
    pub limit_seconds: f64,
    /// The first log offset of the batch it is applying.
    pub at: u64,
}

/// The call a worker is in, as the status watches it.
#[derive(Debug, Clone, Copy)]
struct CallInFlight {
    started: Instant,
    limit: Duration,
    at: u64,
}

/// A snapshot of one version's status.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    /// The projector's name.
    pub projector: String,
    /// The version's short content hash.
    pub version: String,
    /// What it is doing.
    #[serde(serialize_with = "display")]
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
    /// Events applied since the host started.
    pub events_projected: u64,
    /// Batches that trapped (a crash inside the guest) since the host started.
    pub traps: u64,
    /// A call running right now past its deadline and grace; while there is one, the
    /// state is `stalled` with the reason.
    pub overrun: Option<Overrun>,
    /// Calls since the host started that ran past their deadline and grace before they
    /// returned.
    pub deadline_overruns: u64,
    /// Log lines the projector wrote that were dropped over the limits per call and per
    /// second (`limits.max_log_lines_per_call`, `limits.max_log_lines_per_second`,
    /// `limits.max_log_bytes_per_second`), since the host started.
    pub log_lines_dropped: u64,
    /// A reactor's effects since its worker started (events emitted, deduplicated,
    /// suppressed, timers fired); absent for a projector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effects: Option<crate::reactors::EffectCounts>,
    /// Batch latencies since the host started.
    #[serde(skip)]
    pub batch_latency: LatencyHistogram,
}

fn display<S: Serializer>(value: &impl fmt::Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
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
    inner: Arc<Mutex<(VersionStatus, RateMeter, Option<CallInFlight>)>>,
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
            events_projected: 0,
            traps: 0,
            overrun: None,
            deadline_overruns: 0,
            log_lines_dropped: 0,
            effects: None,
            batch_latency: LatencyHistogram::default(),
        };
        StatusCell {
            inner: Arc::new(Mutex::new((status, RateMeter::default(), None))),
        }
    }

    /// A copy of the current status. A call running past its deadline and grace is
    /// reported here, as it is read: the worker is inside that call and cannot.
    pub fn snapshot(&self) -> VersionStatus {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut status = guard.0.clone();
        let now = Instant::now();
        status.events_per_second = guard.1.rate(now);
        if let Some(call) = guard.2 {
            let running = now.duration_since(call.started);
            if running > call.limit {
                let overrun = Overrun {
                    running_seconds: running.as_secs_f64(),
                    limit_seconds: call.limit.as_secs_f64(),
                    at: call.at,
                };
                status.state = State::Stalled {
                    at: call.at,
                    message: overrun.describe(),
                };
                status.overrun = Some(overrun);
            }
        }
        status
    }

    /// The worker starts a call that should end within `limit` (the deadline and its
    /// grace), applying events from offset `at`.
    pub(crate) fn start_call(&self, at: u64, limit: Duration) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).2 = Some(CallInFlight {
            started: Instant::now(),
            limit,
            at,
        });
    }

    /// The call has returned. If it ran past its limit, it is counted, and returned.
    pub(crate) fn end_call(&self) -> Option<Overrun> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let call = guard.2.take()?;
        let running = call.started.elapsed();
        (running > call.limit).then(|| {
            guard.0.deadline_overruns += 1;
            Overrun {
                running_seconds: running.as_secs_f64(),
                limit_seconds: call.limit.as_secs_f64(),
                at: call.at,
            }
        })
    }

    /// Changes the status under the lock.
    pub(crate) fn update(&self, change: impl FnOnce(&mut VersionStatus)) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut guard.0);
    }

    /// Counts an applied batch: events per second, totals and latency.
    pub(crate) fn record_batch(&self, events: usize, took: Duration) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.record(Instant::now(), events as u64);
        guard.0.events_projected += events as u64;
        guard.0.batch_latency.observe(took.as_secs_f64());
    }

    /// Progress towards the log head, for a version replaying from the start.
    pub fn replay_progress(&self) -> ReplayProgress {
        let status = self.snapshot();
        let percent = if status.head == 0 {
            100.0
        } else {
            status.checkpoint as f64 * 100.0 / status.head as f64
        };
        let eta_seconds = (status.events_per_second > 0.0)
            .then(|| status.lag() as f64 / status.events_per_second);
        ReplayProgress {
            done: status.checkpoint,
            total: status.head,
            percent,
            events_per_second: status.events_per_second,
            eta_seconds,
        }
    }
}

impl Overrun {
    /// The reason the status gives.
    pub fn describe(&self) -> String {
        format!(
            "a call into the projector (from offset {}) has run for {:.1} s, past its deadline and grace of {:.1} s (`limits.batch_deadline_ms`, `limits.deadline_grace_ms`); the host interrupted it and waits for it to return",
            self.at, self.running_seconds, self.limit_seconds
        )
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
    fn histogram_buckets_by_upper_bound() {
        let mut histogram = LatencyHistogram::default();
        histogram.observe(0.0001);
        histogram.observe(0.001);
        histogram.observe(0.003);
        histogram.observe(60.0);
        assert_eq!(histogram.counts[0], 1);
        assert_eq!(histogram.counts[1], 1);
        assert_eq!(histogram.counts[3], 1);
        assert_eq!(histogram.overflow, 1);
        assert_eq!(histogram.count, 4);
    }

    #[test]
    fn a_call_past_its_limit_shows_as_stalled_until_it_returns() {
        let cell = StatusCell::new("p", "v");
        cell.start_call(7, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let status = cell.snapshot();
        let overrun = status.overrun.expect("overrunning");
        assert_eq!(overrun.at, 7);
        assert!(
            matches!(&status.state, State::Stalled { at: 7, message } if message.contains("limits.batch_deadline_ms")),
            "{}",
            status.state
        );
        assert!(cell.end_call().is_some());
        let status = cell.snapshot();
        assert_eq!(status.overrun, None);
        assert_eq!(status.deadline_overruns, 1);
        assert_eq!(status.state, State::CatchingUp);
        cell.start_call(8, Duration::from_secs(60));
        assert_eq!(cell.snapshot().overrun, None);
        assert!(cell.end_call().is_none());
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
