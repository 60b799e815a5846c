//! `refract:projector/log`: the guest's lines in the host's structured log.
//!
//! Each line is tagged with the projector's name and version. A line longer than
//! `limits.max_log_message_bytes` is cut (the message is read in place in guest memory,
//! so the cut costs nothing), and past `limits.max_log_lines_per_call` lines in one call
//! the rest are dropped and counted, so a chatty or hostile projector cannot flood the log.

use std::sync::Arc;

use wasmtime::component::{Linker, WasmStr};
use wasmtime::{AsContext, StoreContextMut};

use super::bindings::refract::projector::log::Level;
use super::store::StoreState;

/// The interface name this module implements.
pub(crate) const INTERFACE: &str = "refract:projector/log@0.1.0";

/// The `tracing` target of projector log lines, for filtering (`RUST_LOG=refract::projector=debug`).
pub const LOG_TARGET: &str = "refract::projector";

/// The host side of the `log` interface for one instance.
#[derive(Debug)]
pub(crate) struct LogHost {
    projector: Arc<str>,
    version: Arc<str>,
    max_message_bytes: usize,
    max_lines_per_call: usize,
    lines: usize,
    dropped: usize,
}

impl LogHost {
    pub(crate) fn new(
        version: Arc<str>,
        max_message_bytes: usize,
        max_lines_per_call: usize,
    ) -> Self {
        Self {
            projector: Arc::from("?"),
            version,
            max_message_bytes,
            max_lines_per_call,
            lines: 0,
            dropped: 0,
        }
    }

    /// Names the projector once `metadata` has told the host its name.
    pub(crate) fn set_projector(&mut self, name: &str) {
        self.projector = Arc::from(name);
    }

    /// Starts a new guest call's line budget.
    pub(crate) fn start_call(&mut self) {
        self.lines = 0;
        self.dropped = 0;
    }

    /// Ends a call, reporting lines dropped over the budget.
    pub(crate) fn finish_call(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                target: LOG_TARGET,
                projector = %self.projector,
                version = %self.version,
                "dropped {} log lines over the limit of {} per call (`limits.max_log_lines_per_call`)",
                self.dropped,
                self.max_lines_per_call,
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

/// Links the `log` interface.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.instance(INTERFACE)?.func_wrap("write", write)
}

fn write(
    mut store: StoreContextMut<'_, StoreState>,
    (level, message): (Level, WasmStr),
) -> wasmtime::Result<()> {
    let log = &mut store.data_mut().log;
    if log.lines >= log.max_lines_per_call {
        log.dropped += 1;
        return Ok(());
    }
    log.lines += 1;
    let context = store.as_context();
    let log = &context.data().log;
    let message = message.to_str(&context)?;
    if message.len() <= log.max_message_bytes {
        log.emit(level, &message);
    } else {
        log.emit(
            level,
            &truncate(&message, log.max_message_bytes, "max_log_message_bytes"),
        );
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
}
