//! The runtime's errors: [`RuntimeError`] when loading or instantiating a component,
//! [`ProjectorError`] when a call into one fails.
//!
//! A [`ProjectorError`] says whether it is *poison* (deterministic: the same batch fails
//! the same way on every attempt, so the engine's poison policy applies) or *transient*
//! (the host's disk or database failed; retry, never dead-letter). Every message names the
//! projector, its version and where in the log it failed:
//!
//! ```text
//! projector `balances` (version 3fa9c2e1) failed at offset 42: unknown account `a-7`
//! ```

use std::fmt;
use std::path::PathBuf;

use rusqlite::ErrorCode;
use wasmtime::Trap;

use super::limits::{InvalidLimit, LimitExceeded, SandboxLimits, format_bytes};

/// Where in the log a call was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Position {
    /// In `init`, before any event.
    Init,
    /// At one event.
    Offset(u64),
    /// Somewhere in a batch: the guest does not say which event it was on when it traps.
    Batch {
        /// The batch's first offset.
        first: u64,
        /// The batch's last offset.
        last: u64,
    },
    /// Committing an empty batch (the host's writes only).
    NoEvents,
}

impl Position {
    /// The exact offset, when known.
    pub fn offset(self) -> Option<u64> {
        match self {
            Self::Offset(offset) => Some(offset),
            Self::Batch { first, last } if first == last => Some(first),
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Init => f.write_str("in init"),
            Self::Offset(offset) => write!(f, "at offset {offset}"),
            Self::Batch { first, last } if first == last => write!(f, "at offset {first}"),
            Self::Batch { first, last } => write!(f, "in the batch at offsets {first}..={last}"),
            Self::NoEvents => f.write_str("with no events"),
        }
    }
}

/// What kind of trap ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrapKind {
    /// The call ran past `limits.batch_deadline_ms`.
    Deadline,
    /// The wasm stack ran out (`limits.max_wasm_stack_bytes`): deep recursion.
    StackOverflow,
    /// A sandbox limit was exceeded; the key under `[limits]` that raises it.
    Limit(&'static str),
    /// The guest crashed: a Rust panic, `unreachable`, an out-of-bounds access.
    Crash,
}

/// A call into a projector failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// `handle` returned an error for one event. Poison.
    #[error("projector `{projector}` (version {version}) failed at offset {offset}: {message}")]
    Handler {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// The event that failed.
        offset: u64,
        /// The projector's message, cut at `limits.max_error_message_bytes`.
        message: String,
    },
    /// `init` returned an error. Poison.
    #[error("projector `{projector}` (version {version}) failed in init: {message}")]
    Init {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// The projector's message, cut at `limits.max_error_message_bytes`.
        message: String,
    },
    /// The guest trapped: it crashed, ran out of time or stack, or broke a sandbox limit.
    /// The instance is discarded. Poison.
    #[error("projector `{projector}` (version {version}) trapped {at}: {message}")]
    Trap {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// Where it was.
        at: Position,
        /// What kind of trap.
        kind: TrapKind,
        /// What happened, naming the limit and its key when one was hit. The full error,
        /// with the wasm backtrace, is logged at debug level under [`LOG_TARGET`].
        ///
        /// [`LOG_TARGET`]: super::LOG_TARGET
        message: String,
    },
    /// SQLite rolled back the batch's transaction on its own (a statement hit the read
    /// model's size limit, for instance) and the guest carried on. Poison.
    #[error(
        "projector `{projector}` (version {version}) failed {at}: SQLite rolled back the batch's transaction after a failed statement"
    )]
    Aborted {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// Where it was.
        at: Position,
    },
    /// The host's database failed: I/O, a busy or locked database, a full disk. The batch
    /// was rolled back. Transient: retry.
    #[error(
        "projector `{projector}` (version {version}) failed {at}: could not {action}: {source}"
    )]
    Host {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// Where it was.
        at: Position,
        /// What the host was doing.
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// After a trap the instance could not be created again.
    #[error(
        "projector `{projector}` (version {version}) failed {at}: cannot instantiate it again: {source}"
    )]
    Reinstantiate {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// Where it was.
        at: Position,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },
    /// A reactor's emitted events could not be appended: the log refused one for what
    /// it is (poison: a version conflict, an invalid field), or could not be written
    /// (transient). Nothing of the batch was kept.
    #[error("reactor `{projector}` (version {version}) failed {at}: {source}")]
    Emit {
        /// The reactor.
        projector: String,
        /// Its version.
        version: String,
        /// The source event whose emit was refused, or the batch.
        at: Position,
        /// What the log said.
        source: Box<crate::reactors::CommitError>,
    },
    /// The host cancelled the call because it is shutting down
    /// ([`Runtime::cancel_calls`](super::Runtime::cancel_calls)). The batch was rolled
    /// back and is applied on the next start. Not poison.
    #[error(
        "projector `{projector}` (version {version}) was stopped {at}: the host is shutting down; the batch was rolled back"
    )]
    Cancelled {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// Where it was.
        at: Position,
    },
    /// The batch could not be packed. A host bug, not the projector's fault.
    #[error("projector `{projector}` (version {version}): invalid batch {at}: {reason}")]
    InvalidBatch {
        /// The projector's name.
        projector: String,
        /// Its version (short hash).
        version: String,
        /// The batch.
        at: Position,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ProjectorError {
    /// Whether the failure is deterministic guest behaviour (a handler error, a trap, a
    /// limit breach), so retrying the same batch fails the same way. The engine's poison
    /// policy (`stop` or `skip`) applies to these; everything else is retried.
    pub fn is_poison(&self) -> bool {
        match self {
            Self::Handler { .. } | Self::Init { .. } | Self::Trap { .. } | Self::Aborted { .. } => {
                true
            }
            Self::Reinstantiate { source, .. } => source.is_guest_fault(),
            Self::Emit { source, .. } => source.is_poison(),
            Self::Host { .. } | Self::InvalidBatch { .. } | Self::Cancelled { .. } => false,
        }
    }

    /// Whether the failure is the host's (I/O, busy, full disk): retry with backoff, never
    /// dead-letter.
    pub fn is_transient(&self) -> bool {
        !self.is_poison()
    }

    /// The exact log offset that failed, when known: always for a handler error, and for
    /// a trap in a batch of one event.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Handler { offset, .. } => Some(*offset),
            Self::Init { .. } => None,
            Self::Trap { at, .. }
            | Self::Aborted { at, .. }
            | Self::Host { at, .. }
            | Self::Reinstantiate { at, .. }
            | Self::InvalidBatch { at, .. }
            | Self::Cancelled { at, .. }
            | Self::Emit { at, .. } => at.offset(),
        }
    }

    /// The projector's name.
    pub fn projector(&self) -> &str {
        match self {
            Self::Handler { projector, .. }
            | Self::Init { projector, .. }
            | Self::Trap { projector, .. }
            | Self::Aborted { projector, .. }
            | Self::Host { projector, .. }
            | Self::Reinstantiate { projector, .. }
            | Self::InvalidBatch { projector, .. }
            | Self::Cancelled { projector, .. }
            | Self::Emit { projector, .. } => projector,
        }
    }

    /// The projector's version (short hash).
    pub fn version(&self) -> &str {
        match self {
            Self::Handler { version, .. }
            | Self::Init { version, .. }
            | Self::Trap { version, .. }
            | Self::Aborted { version, .. }
            | Self::Host { version, .. }
            | Self::Reinstantiate { version, .. }
            | Self::InvalidBatch { version, .. }
            | Self::Cancelled { version, .. }
            | Self::Emit { version, .. } => version,
        }
    }
}

/// Loading or instantiating a projector failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A sandbox limit in the configuration is unusable.
    #[error(transparent)]
    Limits(#[from] InvalidLimit),
    /// wasmtime refused the engine configuration, or the epoch thread did not start.
    #[error("cannot start the WebAssembly engine: {message}")]
    Engine {
        /// Why.
        message: String,
    },
    /// The compile cache directory cannot be created.
    #[error("cannot use the compile cache at {}: {source}", path.display())]
    Cache {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component: {reason}")]
    NotWasm {
        /// What was found instead.
        reason: String,
    },
    /// The component is larger than `limits.max_component_bytes`; refused before it is
    /// hashed or compiled.
    #[error(
        "the component is {size} bytes, more than the {limit} that `limits.max_component_bytes` allows; \
         build it smaller (a release build, stripped of debug info) or raise the limit"
    )]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit, formatted for people.
        limit: String,
    },
    /// Compiling the component took longer than `limits.compile_timeout_ms`; the compile
    /// was stopped.
    #[error(
        "compiling the component took longer than {limit_ms} ms (`limits.compile_timeout_ms`) and was stopped; \
         raise the limit if the component is legitimately that large"
    )]
    CompileTimeout {
        /// The limit in milliseconds.
        limit_ms: u64,
    },
    /// Compiling the component needed more memory than
    /// `limits.max_compile_memory_bytes`.
    #[error(
        "compiling the component needed more than {limit} of memory (`limits.max_compile_memory_bytes`); \
         raise the limit if the component is legitimately that large"
    )]
    CompileMemory {
        /// The limit, formatted for people.
        limit: String,
    },
    /// Too many compiles that overran their deadline are still running (only when
    /// compiling in threads; see `runtime::compile`). Transient.
    #[error(
        "{running} compiles that ran past `limits.compile_timeout_ms` are still running; try again once they end"
    )]
    CompilerBusy {
        /// How many.
        running: usize,
    },
    /// The bytes are a core WebAssembly module, which cannot implement a WIT world.
    #[error(
        "this is a core WebAssembly module, not a component: build the projector for the `wasm32-wasip2` target (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component failed validation or compilation: truncated, corrupted, or using
    /// features the host does not enable.
    #[error("invalid WebAssembly component: {message}")]
    Invalid {
        /// wasmtime's explanation, with the byte offset.
        message: String,
    },
    /// The component imports something the sandbox does not provide.
    #[error("the component {message}")]
    UnsupportedImport {
        /// The import's full name, for example `wasi:http/outgoing-handler@0.2.0`.
        import: String,
        /// The explanation, naming the import and what is allowed.
        message: String,
    },
    /// The component's exports do not match the `projector` world.
    #[error(
        "the component does not implement the world `refract:projector/projector` (@0.2.0 or @0.1.0; it must export `metadata`, `init` and `handle`): {message}"
    )]
    WrongWorld {
        /// The missing or mismatched export.
        message: String,
    },
    /// The component's imports do not type-check against the host's.
    #[error("cannot link the component: {message}")]
    Link {
        /// wasmtime's explanation, naming the import.
        message: String,
    },
    /// The read-model database cannot be opened or configured.
    #[error("cannot open the read model {}: {source}", path.display())]
    OpenDb {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Creating the instance, or calling `metadata`, failed.
    #[error("projector version {version} failed to start: {message}")]
    Instantiate {
        /// The version (short hash).
        version: String,
        /// What happened, naming the limit and its key when one was hit.
        message: String,
    },
    /// `metadata` returned something the host cannot accept.
    #[error("projector version {version} reported invalid metadata: {message}")]
    InvalidMetadata {
        /// The version (short hash).
        version: String,
        /// What is wrong, naming the limit when one was hit.
        message: String,
    },
}

impl RuntimeError {
    /// Whether the failure is the component's own doing (so it would happen again), as
    /// opposed to the host's (a database that cannot be opened, an unusable cache).
    pub fn is_guest_fault(&self) -> bool {
        match self {
            Self::OpenDb { source, .. } => !is_host_failure(source),
            Self::Limits(_)
            | Self::Engine { .. }
            | Self::Cache { .. }
            | Self::CompilerBusy { .. } => false,
            _ => true,
        }
    }
}

/// Whether a SQLite error is the host's environment failing (and so worth retrying).
pub(crate) fn is_host_failure(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

/// What the host saw around a trap, to explain it.
#[derive(Debug, Default)]
pub(crate) struct TrapContext<'a> {
    /// A memory or table growth the limiter refused during the call.
    pub(crate) refused: Option<&'a LimitExceeded>,
    /// What the guest wrote to stderr during the call (a panic message).
    pub(crate) stderr: Option<String>,
}

/// Explains a trap (or a host function's error raised as one) for operators: what
/// happened, which limit and key when one was hit, and the guest's last words on stderr.
pub(crate) fn describe_trap(
    err: &wasmtime::Error,
    limits: &SandboxLimits,
    context: TrapContext<'_>,
) -> (TrapKind, String) {
    let (kind, mut message) = classify_trap(err, limits);
    let (kind, mut message) = match (kind, context.refused) {
        (TrapKind::Crash, Some(refused)) => (
            TrapKind::Limit(refused.key),
            format!("{refused}, and the projector then {message}"),
        ),
        _ => (kind, std::mem::take(&mut message)),
    };
    if let Some(stderr) = context.stderr {
        let stderr = stderr
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty());
        message = format!(
            "{message}; its last stderr lines: {}",
            stderr.collect::<Vec<_>>().join(" / ")
        );
    }
    (kind, message)
}

fn classify_trap(err: &wasmtime::Error, limits: &SandboxLimits) -> (TrapKind, String) {
    if let Some(limit) = err.downcast_ref::<LimitExceeded>() {
        return (TrapKind::Limit(limit.key), limit.to_string());
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            TrapKind::Crash,
            format!(
                "called exit({}), which ends only the projector's instance",
                exit.0
            ),
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return (
                TrapKind::Deadline,
                format!(
                    "ran past the deadline of {} ms per call (`limits.batch_deadline_ms`) and was interrupted",
                    limits.batch_deadline_ms
                ),
            );
        }
        Some(Trap::StackOverflow) => {
            return (
                TrapKind::StackOverflow,
                format!(
                    "exhausted the wasm stack of {} (`limits.max_wasm_stack_bytes`): recursion too deep",
                    format_bytes(limits.max_wasm_stack_bytes)
                ),
            );
        }
        Some(Trap::UnreachableCodeReached) => {
            return (
                TrapKind::Crash,
                "crashed: wasm `unreachable` executed (the guest panicked, aborted, or stopped on an uncaught error; its stderr, when it wrote any, says why)"
                    .to_owned(),
            );
        }
        Some(trap) => return (TrapKind::Crash, format!("crashed: {trap}")),
        None => {}
    }
    let chain = format!("{err:#}");
    if chain.contains("fuel allocated for hostcalls") {
        return (
            TrapKind::Limit("max_hostcall_bytes"),
            format!(
                "sent the host more data in one call than the {} that `limits.max_hostcall_bytes` allows",
                format_bytes(limits.max_hostcall_bytes)
            ),
        );
    }
    (TrapKind::Crash, format!("failed: {}", root_message(err)))
}

/// The innermost message of an error chain: for a host-function failure, the reason
/// rather than wasmtime's backtrace wrapper.
fn root_message(err: &wasmtime::Error) -> String {
    err.chain()
        .last()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_well() {
        assert_eq!(Position::Offset(42).to_string(), "at offset 42");
        assert_eq!(
            Position::Batch {
                first: 40,
                last: 49
            }
            .to_string(),
            "in the batch at offsets 40..=49"
        );
        assert_eq!(Position::Batch { first: 7, last: 7 }.offset(), Some(7));
    }

    #[test]
    fn handler_errors_name_projector_version_and_offset() {
        let err = ProjectorError::Handler {
            projector: "balances".into(),
            version: "3fa9c2e1".into(),
            offset: 42,
            message: "unknown account".into(),
        };
        assert_eq!(
            err.to_string(),
            "projector `balances` (version 3fa9c2e1) failed at offset 42: unknown account"
        );
        assert!(err.is_poison());
        assert_eq!(err.offset(), Some(42));
    }

    #[test]
    fn a_crash_after_refused_growth_names_the_limit_and_the_panic() {
        let refused = LimitExceeded::bytes(
            "growing linear memory to 1536 MiB",
            128 << 20,
            "max_memory_bytes",
        );
        let err = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let (kind, message) = describe_trap(
            &err,
            &SandboxLimits::default(),
            TrapContext {
                refused: Some(&refused),
                stderr: Some("memory allocation of 1610612736 bytes failed\n".into()),
            },
        );
        assert_eq!(kind, TrapKind::Limit("max_memory_bytes"));
        assert!(message.contains("limits.max_memory_bytes"), "{message}");
        assert!(
            message
                .ends_with("its last stderr lines: memory allocation of 1610612736 bytes failed"),
            "{message}"
        );
    }

    #[test]
    fn crash_messages_name_no_language() {
        let err = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let (kind, message) = describe_trap(
            &err,
            &SandboxLimits::default(),
            TrapContext {
                refused: None,
                stderr: Some("…\nTraceback (most recent call last):\nKeyError: 'amount'".into()),
            },
        );
        assert_eq!(kind, TrapKind::Crash);
        assert!(!message.contains("Rust"), "{message}");
        assert!(
            message.ends_with(
                "its last stderr lines: … / Traceback (most recent call last): / KeyError: 'amount'"
            ),
            "{message}"
        );
    }

    #[test]
    fn limit_traps_name_their_key() {
        let err = wasmtime::Error::new(LimitExceeded::bytes(
            "growing linear memory to 256 MiB",
            128 << 20,
            "max_memory_bytes",
        ));
        let (kind, message) =
            describe_trap(&err, &SandboxLimits::default(), TrapContext::default());
        assert_eq!(kind, TrapKind::Limit("max_memory_bytes"));
        assert!(message.contains("limits.max_memory_bytes"), "{message}");
    }
}
