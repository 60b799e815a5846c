//! A failure that repeats is logged once when it starts, then counted: a summary line
//! at most every [`REPORT_EVERY`], and one when it stops. A disk that stays full or a
//! permission that stays wrong then costs a few lines, not one per retry.

use std::time::{Duration, Instant};

/// How often a failure that keeps repeating is reported again, with its count.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What to do about one occurrence of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// A new failure (or a different one): log it in full.
    First,
    /// The same failure again, `repeats` times since it was last logged: log a summary.
    Summary {
        /// Occurrences since the last line about it.
        repeats: u64,
    },
    /// The same failure again, already reported recently: stay quiet.
    Quiet,
}

/// The failure currently repeating, if any.
#[derive(Debug, Default)]
pub struct Repeats {
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    message: String,
    unreported: u64,
    total: u64,
    reported_at: Instant,
}

impl Repeats {
    /// A tracker with nothing repeating.
    pub fn new() -> Repeats {
        Repeats::default()
    }

    /// Notes one occurrence of `message` and says whether and how to log it.
    pub fn note(&mut self, message: &str) -> Occurrence {
        self.note_at(message, Instant::now())
    }

    fn note_at(&mut self, message: &str, now: Instant) -> Occurrence {
        match &mut self.current {
            Some(current) if current.message == message => {
                current.unreported += 1;
                current.total += 1;
                if now.duration_since(current.reported_at) >= REPORT_EVERY {
                    let repeats = std::mem::take(&mut current.unreported);
                    current.reported_at = now;
                    Occurrence::Summary { repeats }
                } else {
                    Occurrence::Quiet
                }
            }
            _ => {
                self.current = Some(Current {
                    message: message.to_owned(),
                    unreported: 0,
                    total: 1,
                    reported_at: now,
                });
                Occurrence::First
            }
        }
    }

    /// The failure stopped. Returns how many times it happened, if it happened more
    /// than once (worth a line saying it is over).
    pub fn clear(&mut self) -> Option<u64> {
        self.current
            .take()
            .map(|current| current.total)
            .filter(|total| *total > 1)
    }

    /// How many times the current failure has happened in a row.
    pub fn count(&self) -> u64 {
        self.current.as_ref().map_or(0, |current| current.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_failure_is_logged_once_then_summarised() {
        let start = Instant::now();
        let mut repeats = Repeats::new();
        assert_eq!(repeats.note_at("disk full", start), Occurrence::First);
        for second in 1..60 {
            let at = start + Duration::from_secs(second);
            assert_eq!(repeats.note_at("disk full", at), Occurrence::Quiet);
        }
        let later = start + REPORT_EVERY;
        assert_eq!(
            repeats.note_at("disk full", later),
            Occurrence::Summary { repeats: 60 }
        );
        assert_eq!(repeats.note_at("denied", later), Occurrence::First);
        assert_eq!(repeats.note_at("denied", later), Occurrence::Quiet);
        assert_eq!(repeats.count(), 2);
        assert_eq!(repeats.clear(), Some(2));
        assert_eq!(repeats.clear(), None);
    }
}
