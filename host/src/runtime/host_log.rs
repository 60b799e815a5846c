//! `refract:projector/log`: the guest's lines in the host's structured log.
//!
//! Each line is tagged with the projector's name and version, and kept to one line of
//! the host's log:
//! - **Control characters are escaped** ([`escape`]): a newline, a carriage return, an
//!   escape sequence or a Unicode line separator in a message would otherwise let a
//!   guest write a whole host log line, with a level and target of its choosing.
//! - **Size**: a message longer than `limits.max_log_message_bytes` is cut (it is read
//!   in place in guest memory, so the cut costs nothing).
//! - **Volume per call**: past `limits.max_log_lines_per_call` lines in one call, the
//!   rest are dropped.
//! - **Volume over time**: each version has a [`LogBudget`] of
//!   `limits.max_log_lines_per_second` lines and `limits.max_log_bytes_per_second` bytes,
//!   refilled continuously, with a burst of one second's worth; it is shared by every
//!   instance of the version, so neither many short calls nor a crash and a fresh
//!   instance start it afresh. Lines past it are dropped.
//!
//! Dropped lines are counted ([`LoadedProjector::log_lines_dropped`], shown in the
//! version's status and in `/metrics`), and reported in the host's log at most once a
//! second per version.
//!
//! [`LoadedProjector::log_lines_dropped`]: super::LoadedProjector::log_lines_dropped

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, WasmStr};
use wasmtime::{AsContext, StoreContextMut};

use super::bindings::Level;
use super::limits::SandboxLimits;
use super::store::StoreState;

/// The interface names this module implements: `log` is the same in every contract
/// version.
pub(crate) const INTERFACES: &[&str] =
    &["refract:projector/log@0.1.0", "refract:projector/log@0.2.0"];

/// The `tracing` target of projector log lines, for filtering (`RUST_LOG=refract::projector=debug`).
pub const LOG_TARGET: &str = "refract::projector";

/// How often, at most, the host reports a version's dropped lines in its log.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// One version's log rate: tokens for lines and bytes, refilled per second.
#[derive(Debug)]
pub(crate) struct LogBudget {
    lines_per_second: f64,
    bytes_per_second: f64,
    state: Mutex<BudgetState>,
    lines_dropped: AtomicU64,
}

#[derive(Debug)]
struct BudgetState {
    refilled: Instant,
    lines: f64,
    bytes: f64,
    /// Dropped lines not yet reported in the host's log, and when it last was.
    unreported: u64,
    reported: Option<Instant>,
}

impl LogBudget {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        let lines_per_second = limits.max_log_lines_per_second as f64;
        let bytes_per_second = limits.max_log_bytes_per_second as f64;
        Self {
            lines_per_second,
            bytes_per_second,
            state: Mutex::new(BudgetState {
                refilled: Instant::now(),
                lines: lines_per_second,
                bytes: bytes_per_second,
                unreported: 0,
                reported: None,
            }),
            lines_dropped: AtomicU64::new(0),
        }
    }

    /// Takes one line of `bytes` from the budget, or counts it as dropped.
    fn admit(&self, bytes: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.refilled = now;
        state.lines = (state.lines + elapsed * self.lines_per_second).min(self.lines_per_second);
        state.bytes = (state.bytes + elapsed * self.bytes_per_second).min(self.bytes_per_second);
        let bytes = bytes as f64;
        if state.lines >= 1.0 && state.bytes >= bytes {
            state.lines -= 1.0;
            state.bytes -= bytes;
            true
        } else {
            drop(state);
            self.drop_lines(1);
            false
        }
    }

    /// Counts `count` dropped lines.
    fn drop_lines(&self, count: u64) {
        self.lines_dropped.fetch_add(count, Ordering::Relaxed);
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unreported += count;
    }

    /// Lines dropped since the version was loaded.
    pub(crate) fn lines_dropped(&self) -> u64 {
        self.lines_dropped.load(Ordering::Relaxed)
    }

    /// The dropped lines to report now, if any and if the last report is old enough.
    fn due_report(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let due = state.unreported > 0
            && state
                .reported
                .is_none_or(|at| now.duration_since(at) >= DROP_REPORT_INTERVAL);
        due.then(|| {
            state.reported = Some(now);
            std::mem::take(&mut state.unreported)
        })
    }
}

/// The host side of the `log` interface for one instance.
#[derive(Debug)]
pub(crate) struct LogHost {
    projector: Arc<str>,
    version: Arc<str>,
    budget: Arc<LogBudget>,
    max_message_bytes: usize,
    max_lines_per_call: usize,
    lines: usize,
}

impl LogHost {
    pub(crate) fn new(version: Arc<str>, budget: Arc<LogBudget>, limits: &SandboxLimits) -> Self {
        Self {
            projector: Arc::from("?"),
            version,
            budget,
            max_message_bytes: limits.max_log_message_bytes,
            max_lines_per_call: limits.max_log_lines_per_call,
            lines: 0,
        }
    }

    /// Names the projector once `metadata` has told the host its name.
    pub(crate) fn set_projector(&mut self, name: &str) {
        self.projector = Arc::from(name);
    }

    /// Starts a new guest call's line budget.
    pub(crate) fn start_call(&mut self) {
        self.lines = 0;
    }

    /// Ends a call, reporting dropped lines (at most once a second per version).
    pub(crate) fn finish_call(&mut self) {
        if let Some(dropped) = self.budget.due_report() {
            tracing::warn!(
                target: LOG_TARGET,
                projector = %self.projector,
                version = %self.version,
                "dropped {dropped} log lines over the limits of {} per call (`limits.max_log_lines_per_call`), {} lines and {} bytes per second (`limits.max_log_lines_per_second`, `limits.max_log_bytes_per_second`)",
                self.max_lines_per_call,
                self.budget.lines_per_second,
                self.budget.bytes_per_second,
            );
        }
        self.start_call();
    }

    fn emit(&self, level: Level, message: &str) {
        let (projector, version) = (&*self.projector, &*self.version);
        match level {
            Level::Trace => tracing::trace!(target: LOG_TARGET, projector, version, "{message}"),
            Level::Debug => tracing::debug!(target: LOG_TARGET, projector, version, "{message}"),
            Level::Info => tracing::info!(target: LOG_TARGET, projector, version, "{message}"),
            Level::Warn => tracing::warn!(target: LOG_TARGET, projector, version, "{message}"),
            Level::Error => tracing::error!(target: LOG_TARGET, projector, version, "{message}"),
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying how much was cut.
pub(crate) fn truncate(text: &str, max: usize, key: &str) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [cut from {} bytes at `limits.{key}`]",
        &text[..end],
        text.len()
    )
}

/// `text` with every character that could break or restyle a log line escaped: control
/// characters (`\n`, `\r`, `\t` by name, the rest as `\u{…}`, ESC included) and the
/// Unicode line and paragraph separators. Everything else is kept as it is.
pub(crate) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let breaks = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.contains(breaks) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if breaks(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Links the `log` interface.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    for interface in INTERFACES {
        linker.instance(interface)?.func_wrap("write", write)?;
    }
    Ok(())
}

fn write(
    mut store: StoreContextMut<'_, StoreState>,
    (level, message): (Level, WasmStr),
) -> wasmtime::Result<()> {
    let log = &mut store.data_mut().log;
    if log.lines >= log.max_lines_per_call {
        log.budget.drop_lines(1);
        return Ok(());
    }
    log.lines += 1;
    let context = store.as_context();
    let log = &context.data().log;
    let message = message.to_str(&context)?;
    let line = if message.len() <= log.max_message_bytes {
        escape(&message)
    } else {
        std::borrow::Cow::Owned(
            escape(&truncate(
                &message,
                log.max_message_bytes,
                "max_log_message_bytes",
            ))
            .into_owned(),
        )
    };
    if log.budget.admit(line.len()) {
        log.emit(level, &line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("short", 10, "k"), "short");
        let cut = truncate("ééééé", 3, "max_log_message_bytes");
        assert!(cut.starts_with("é…"), "{cut}");
        assert!(cut.contains("cut from 10 bytes"), "{cut}");
    }

    #[test]
    fn nothing_that_breaks_a_line_survives_escaping() {
        assert_eq!(escape("plain é text"), "plain é text");
        let forged = "ok\n2026-01-01T00:00:00Z ERROR refract: forged\r\u{1b}[31mred\u{2028}x\u{85}";
        let escaped = escape(forged);
        assert_eq!(
            escaped,
            "ok\\n2026-01-01T00:00:00Z ERROR refract: forged\\r\\u{1b}[31mred\\u{2028}x\\u{85}"
        );
        assert!(!escaped.contains(|c: char| c.is_control()));
    }

    #[test]
    fn the_budget_admits_a_second_of_lines_then_drops_and_counts() {
        let budget = LogBudget::new(&SandboxLimits {
            max_log_lines_per_second: 10,
            max_log_bytes_per_second: 1000,
            ..SandboxLimits::default()
        });
        let admitted = (0..50).filter(|_| budget.admit(10)).count();
        // The burst of one second, and perhaps one more refilled while the loop ran.
        assert!((10..=11).contains(&admitted), "{admitted}");
        assert_eq!(budget.lines_dropped(), 50 - admitted as u64);
        assert!(!budget.admit(2000), "a line larger than a second's bytes");
        assert_eq!(budget.due_report(), Some(51 - admitted as u64));
        assert_eq!(budget.due_report(), None, "reported at most once a second");
    }
}
