//! Replays for consumers: pacing a subscription to a rate, and reporting its progress.
//!
//! A consumer replaying the log (`GET /v1/events/subscribe`, `refract tail`) may ask for
//! at most `rate` events per second, a window (`from_*` to `until_*`) after which the
//! stream ends, and periodic progress reports. This room holds the logic of the first and
//! the last, free of HTTP so that it can be tested on its own: [`Pace`] decides when the
//! next event may leave, [`ProgressTracker`] turns what has been sent into a
//! [`ProgressReport`] (sent, total, percent, events/s, ETA, current offset).
//!
//! The `[replay]` section of `refract.toml` ([`ReplayConfig`]) caps the rate of every
//! subscription, whatever the client asks for.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Default time between two progress reports of one subscription: often enough for a
/// progress bar that moves, rare enough to be noise next to the events.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest progress interval a configuration may set, so a misconfiguration cannot
/// turn a subscription into a stream of progress reports.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// How far ahead of its schedule a paced stream may run after a pause (the client was
/// slow, or the stream waited for appends): a burst of at most this much time's worth
/// of events, never the whole backlog of a long pause.
pub const PACE_BURST: Duration = Duration::from_millis(100);

/// `[replay]`: limits on every subscription. Every key is optional.
///
/// ```toml
/// [replay]
/// max_rate = 0                 # events/s cap on every subscription; 0 = no cap
/// progress_interval_ms = 1000  # time between two progress reports
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// The most events per second any subscription sends; a client's `rate` above it is
    /// lowered to it, and a client that names no rate gets it. 0: no cap (a subscription
    /// then runs as fast as its client reads, which already bounds it).
    pub max_rate: u64,
    /// Milliseconds between two progress reports of a subscription that asked for them.
    pub progress_interval_ms: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            max_rate: 0,
            progress_interval_ms: u64::try_from(DEFAULT_PROGRESS_INTERVAL.as_millis())
                .unwrap_or(1000),
        }
    }
}

impl ReplayConfig {
    /// Checks the section; the error is the dotted key and what it accepts.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let min = MIN_PROGRESS_INTERVAL.as_millis();
        if u128::from(self.progress_interval_ms) < min {
            return Err((
                "replay.progress_interval_ms",
                format!("must be at least {min} (milliseconds)"),
            ));
        }
        Ok(())
    }

    /// The time between two progress reports.
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }

    /// The rate a subscription gets when its client asks for `requested` events/s
    /// (`None`: no rate given): the request, lowered to `max_rate` if there is one.
    /// `None` means unpaced.
    pub fn effective_rate(&self, requested: Option<u64>) -> Option<u64> {
        match (requested, self.max_rate) {
            (Some(rate), 0) => Some(rate),
            (Some(rate), cap) => Some(rate.min(cap)),
            (None, 0) => None,
            (None, cap) => Some(cap),
        }
    }
}

/// Paces a stream to at most `rate` events per second.
///
/// Each event reserves the next slot on a schedule spaced `1/rate` apart. After a
/// pause the schedule is pulled forward to at most [`PACE_BURST`] behind now, so a
/// stream that waited does not then send its backlog in one burst.
#[derive(Debug, Clone)]
pub struct Pace {
    rate: u64,
    interval: Duration,
    next: Option<Instant>,
}

impl Pace {
    /// A pace of `rate` events per second; `None` for 0 (no pace).
    pub fn new(rate: u64) -> Option<Pace> {
        if rate == 0 {
            return None;
        }
        let interval = Duration::from_secs(1).checked_div(u32::try_from(rate).unwrap_or(u32::MAX));
        Some(Pace {
            rate,
            interval: interval.unwrap_or_default(),
            next: None,
        })
    }

    /// The rate, in events per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Reserves the slot of the next event and returns when it may be sent (at `now` or
    /// later).
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = match self.next {
            // The first event opens the schedule: no credit for time before the stream.
            None => now,
            Some(next) => next.max(now.checked_sub(PACE_BURST).unwrap_or(now)),
        };
        self.next = Some(slot + self.interval);
        slot.max(now)
    }
}

/// Where a replay stands, as sent in a `progress` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// Events of the window sent so far, including those sent before a resume.
    pub sent: u64,
    /// Events in the window: exact when the window has an end, otherwise the matching
    /// events up to the head when the replay started (growing as it is passed).
    pub total: u64,
    /// Whether `total` is exact (a window with an end) or an estimate (a live tail).
    pub total_exact: bool,
    /// `sent` as a percentage of `total` (100 when the window is empty).
    pub percent: f64,
    /// Events per second sent by this connection so far.
    pub events_per_second: f64,
    /// Seconds left at the current speed; `None` before anything was sent.
    pub eta_seconds: Option<f64>,
    /// Every matching event at or below this offset has been sent (or skipped as not
    /// matching).
    pub offset: u64,
    /// The rate limit in force, in events per second.
    pub rate: Option<u64>,
    /// Whether the window is complete (the last message of a bounded replay).
    pub done: bool,
}

/// Counts what a replay has sent, and says when to report.
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    /// Events of the window sent before this connection (a resume).
    before: u64,
    total: u64,
    total_exact: bool,
    /// Events sent by this connection.
    sent: u64,
    started: Instant,
    last_report: Instant,
    interval: Duration,
    rate: Option<u64>,
}

impl ProgressTracker {
    /// A tracker for a window of `total` events of which `before` were sent by an earlier
    /// connection; the first report is due one `interval` after `now`.
    pub fn new(
        before: u64,
        total: u64,
        total_exact: bool,
        interval: Duration,
        rate: Option<u64>,
        now: Instant,
    ) -> ProgressTracker {
        ProgressTracker {
            before,
            total: total.max(before),
            total_exact,
            sent: 0,
            started: now,
            last_report: now,
            interval,
            rate,
        }
    }

    /// Counts one event sent.
    pub fn record_sent(&mut self) {
        self.sent += 1;
    }

    /// Whether a report is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now.duration_since(self.last_report) >= self.interval
    }

    /// When the next report is due.
    pub fn next_due(&self) -> Instant {
        self.last_report + self.interval
    }

    /// The report as of `now`, with the replay's current `offset`; restarts the interval.
    pub fn report(&mut self, now: Instant, offset: u64, done: bool) -> ProgressReport {
        self.last_report = now;
        let sent = self.before + self.sent;
        // An estimated total is passed by a live tail; it then grows with what was sent.
        if sent > self.total || (done && !self.total_exact) {
            self.total = sent;
        }
        let total = self.total;
        let percent = if total == 0 {
            100.0
        } else {
            (sent as f64 * 100.0 / total as f64).min(100.0)
        };
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let events_per_second = if elapsed > 0.0 {
            self.sent as f64 / elapsed
        } else {
            0.0
        };
        let left = total.saturating_sub(sent);
        let eta_seconds = if done || left == 0 {
            Some(0.0)
        } else if events_per_second > 0.0 {
            Some(left as f64 / events_per_second)
        } else {
            None
        };
        ProgressReport {
            sent,
            total,
            total_exact: self.total_exact,
            percent,
            events_per_second,
            eta_seconds,
            offset,
            rate: self.rate,
            done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_spaces_events_and_allows_only_a_small_burst() {
        let start = Instant::now();
        let mut pace = Pace::new(10).unwrap();
        assert_eq!(pace.reserve(start), start);
        let second = pace.reserve(start);
        assert_eq!(second.duration_since(start), Duration::from_millis(100));
        // After a long pause the backlog is not sent at once: at most PACE_BURST worth.
        let later = start + Duration::from_secs(10);
        let mut immediate = 0;
        while pace.reserve(later) == later {
            immediate += 1;
        }
        assert!(immediate <= 2, "{immediate} events would leave at once");
        assert!(Pace::new(0).is_none());
    }

    #[test]
    fn progress_counts_a_resume_and_computes_eta() {
        let start = Instant::now();
        let mut tracker =
            ProgressTracker::new(50, 200, true, Duration::from_secs(1), Some(10), start);
        assert!(!tracker.due(start));
        for _ in 0..50 {
            tracker.record_sent();
        }
        let now = start + Duration::from_secs(5);
        assert!(tracker.due(now));
        let report = tracker.report(now, 120, false);
        assert_eq!(report.sent, 100);
        assert_eq!(report.total, 200);
        assert!((report.percent - 50.0).abs() < 1e-9);
        assert!((report.events_per_second - 10.0).abs() < 1e-9);
        assert_eq!(report.eta_seconds, Some(10.0));
        assert!(!tracker.due(now));
        let done = tracker.report(now, 300, true);
        assert_eq!(done.eta_seconds, Some(0.0));
    }

    #[test]
    fn an_estimated_total_grows_with_a_live_tail() {
        let start = Instant::now();
        let mut tracker = ProgressTracker::new(0, 1, false, Duration::from_secs(1), None, start);
        tracker.record_sent();
        tracker.record_sent();
        let report = tracker.report(start + Duration::from_secs(1), 2, false);
        assert_eq!(report.total, 2);
        assert!((report.percent - 100.0).abs() < 1e-9);
        assert!(!report.total_exact);
    }

    #[test]
    fn the_configured_cap_lowers_a_request() {
        let capped = ReplayConfig {
            max_rate: 100,
            ..ReplayConfig::default()
        };
        assert_eq!(capped.effective_rate(Some(1000)), Some(100));
        assert_eq!(capped.effective_rate(Some(10)), Some(10));
        assert_eq!(capped.effective_rate(None), Some(100));
        assert_eq!(ReplayConfig::default().effective_rate(None), None);
        let bad = ReplayConfig {
            progress_interval_ms: 1,
            ..ReplayConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "replay.progress_interval_ms");
    }
}
