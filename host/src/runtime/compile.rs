//! Compiling a component, within a time and a memory budget.
//!
//! Cranelift cannot be interrupted: a compile running in a thread runs to its end, and
//! a component can be built to make it work for minutes or take gigabytes. So the
//! `refract` binary compiles in a **child process** of its own (`refract __compile`,
//! registered once with [`compile_in_child_processes`]):
//!
//! - the child caps its own heap with `RLIMIT_DATA` at `limits.max_compile_memory_bytes`
//!   before it reads the component, so a compile that needs more fails in the child
//!   (an allocation failure) and the host's memory is untouched;
//! - the parent waits up to `limits.compile_timeout_ms` and then kills the child, which
//!   ends the compile for real: CPU and memory are released at once;
//! - the child writes the compiled code to its stdout, and the parent loads it exactly
//!   as it loads the compile cache's entries (same binary, same engine configuration).
//!
//! A process costs a few milliseconds next to a compile's tens of milliseconds (a Rust
//! projector) to seconds (an interpreter), and a cached component skips it entirely.
//!
//! A library user that has not registered a worker binary (the tests, an embedder)
//! compiles in a thread instead. The deadline then bounds only the wait: the caller
//! gets its error in time, but the abandoned compile keeps a core busy until it ends,
//! and its memory is not capped. At most [`MAX_ABANDONED_COMPILES`] such compiles may be
//! running at once; past that, loads are refused until one ends.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine;
use super::error::RuntimeError;
use super::limits::{SandboxLimits, format_bytes};

/// The hidden subcommand of the `refract` binary that compiles one component.
pub const COMPILE_WORKER_COMMAND: &str = "__compile";

/// How many thread compiles that ran past their deadline may still be running before
/// further compiles are refused (only without a worker binary; see the module docs).
pub const MAX_ABANDONED_COMPILES: usize = 2;

/// The exit code with which the worker reports a component the compiler refused (as
/// opposed to a crash or an allocation failure).
const INVALID_COMPONENT_EXIT: i32 = 3;

/// The most of the worker's stderr kept for an error message.
const MAX_WORKER_STDERR_BYTES: usize = 64 << 10;

/// How often the parent looks whether the worker has finished.
const WORKER_POLL: Duration = Duration::from_millis(2);

/// The binary to re-execute for compiles, once registered.
static WORKER_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Thread compiles still running past their deadline.
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// Makes every later compile in this process run in a child process of `exe`, which
/// must be a `refract` binary (it runs `exe __compile`). The `refract` command line
/// calls this at start. Only the first registration counts.
pub fn compile_in_child_processes(exe: PathBuf) {
    let _ = WORKER_BINARY.set(exe);
}

/// Compiles `wasm` for `engine` within `limits`' time and memory budget.
pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    limits: &SandboxLimits,
) -> Result<Component, RuntimeError> {
    match WORKER_BINARY.get() {
        Some(exe) => compile_in_child(exe, engine, wasm, limits),
        None => compile_in_thread(engine, wasm, limits),
    }
}

fn timeout_error(limits: &SandboxLimits) -> RuntimeError {
    RuntimeError::CompileTimeout {
        limit_ms: limits.compile_timeout_ms,
    }
}

fn compile_in_thread(
    engine: &Engine,
    wasm: &[u8],
    limits: &SandboxLimits,
) -> Result<Component, RuntimeError> {
    if ABANDONED.load(Ordering::Relaxed) >= MAX_ABANDONED_COMPILES {
        return Err(RuntimeError::CompilerBusy {
            running: MAX_ABANDONED_COMPILES,
        });
    }
    let (send, receive) = mpsc::channel();
    // Set, under its lock, by a caller that stopped waiting; the thread then uncounts
    // itself when it ends instead of sending a result nobody reads.
    let abandoned = Arc::new(Mutex::new(false));
    let (engine, wasm) = (engine.clone(), wasm.to_vec());
    let thread_abandoned = Arc::clone(&abandoned);
    std::thread::Builder::new()
        .name("refract-compile".into())
        .spawn(move || {
            let compiled = Component::new(&engine, &wasm);
            let abandoned = thread_abandoned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *abandoned {
                ABANDONED.fetch_sub(1, Ordering::Relaxed);
            } else {
                let _ = send.send(compiled);
            }
        })
        .map_err(|err| RuntimeError::Engine {
            message: format!("cannot start a compile thread: {err}"),
        })?;
    let invalid = |err: wasmtime::Error| RuntimeError::Invalid {
        message: format!("{err:#}"),
    };
    if let Ok(compiled) = receive.recv_timeout(limits.compile_timeout()) {
        return compiled.map_err(invalid);
    }
    let mut abandoned = abandoned.lock().unwrap_or_else(PoisonError::into_inner);
    if let Ok(compiled) = receive.try_recv() {
        // It finished just as the wait ended.
        return compiled.map_err(invalid);
    }
    *abandoned = true;
    ABANDONED.fetch_add(1, Ordering::Relaxed);
    Err(timeout_error(limits))
}

fn compile_in_child(
    exe: &Path,
    engine: &Engine,
    wasm: &[u8],
    limits: &SandboxLimits,
) -> Result<Component, RuntimeError> {
    let engine_error = |message: String| RuntimeError::Engine { message };
    let mut child = Command::new(exe)
        .arg(COMPILE_WORKER_COMMAND)
        .arg("--max-wasm-stack-bytes")
        .arg(limits.max_wasm_stack_bytes.to_string())
        .arg("--max-compile-memory-bytes")
        .arg(limits.max_compile_memory_bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .map_err(|err| {
            engine_error(format!(
                "cannot start the compile worker {}: {err}",
                exe.display()
            ))
        })?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(engine_error("the compile worker has no pipes".into()));
    };
    let input = wasm.to_vec();
    // The pipes are served by threads so that no side blocks the other; the writer
    // fails harmlessly (broken pipe) if the worker dies before reading everything.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let reader = std::thread::spawn(move || {
        let mut compiled = Vec::new();
        stdout.read_to_end(&mut compiled).map(|_| compiled)
    });
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr
            .take(MAX_WORKER_STDERR_BYTES as u64)
            .read_to_end(&mut text);
        String::from_utf8_lossy(&text).trim().to_owned()
    });

    let deadline = Instant::now() + limits.compile_timeout();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // The compile ends here, for real: the worker and its memory are gone.
                let _ = child.kill();
                let _ = child.wait();
                let _ = (writer.join(), reader.join(), errors.join());
                return Err(timeout_error(limits));
            }
            Ok(None) => std::thread::sleep(WORKER_POLL),
            Err(err) => {
                let _ = child.kill();
                return Err(engine_error(format!(
                    "cannot wait for the compile worker: {err}"
                )));
            }
        }
    };
    let _ = writer.join();
    let compiled = reader
        .join()
        .map_err(|_| engine_error("the compile worker's reader panicked".into()))?
        .map_err(|err| engine_error(format!("cannot read the compile worker's output: {err}")))?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(worker_failure(status, &stderr, limits));
    }
    #[allow(
        unsafe_code,
        reason = "loading compiled code is what the compile worker produces it for"
    )]
    // SAFETY: `compiled` is what `Component::serialize` produced in the worker, which is
    // this same binary (registered by `compile_in_child_processes`) with an engine built
    // by the same `engine::build` from the same stack limit, read whole from its stdout
    // after it exited successfully. wasmtime also checks the header and the engine
    // compatibility before using it.
    let component = unsafe { Component::deserialize(engine, &compiled) };
    component.map_err(|err| {
        engine_error(format!(
            "the compile worker's output cannot be loaded: {err:#}"
        ))
    })
}

/// Explains a worker that did not succeed.
fn worker_failure(status: ExitStatus, stderr: &str, limits: &SandboxLimits) -> RuntimeError {
    if status.code() == Some(INVALID_COMPONENT_EXIT) {
        return RuntimeError::Invalid {
            message: stderr.to_owned(),
        };
    }
    if stderr.contains("memory allocation of") || stderr.contains("out of memory") {
        return RuntimeError::CompileMemory {
            limit: format_bytes(limits.max_compile_memory_bytes),
        };
    }
    RuntimeError::Engine {
        message: format!(
            "the compile worker failed ({status}){}",
            if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            }
        ),
    }
}

/// The worker's side (`refract __compile`): caps its own heap, reads a component on
/// stdin, compiles it, and writes the compiled code to stdout. Exits with
/// [`INVALID_COMPONENT_EXIT`] if the compiler refuses the component.
pub fn run_compile_worker(max_wasm_stack_bytes: usize, max_compile_memory_bytes: usize) -> i32 {
    let cap = u64::try_from(max_compile_memory_bytes).unwrap_or(u64::MAX);
    if let Err(err) = rustix::process::setrlimit(
        rustix::process::Resource::Data,
        rustix::process::Rlimit {
            current: Some(cap),
            maximum: Some(cap),
        },
    ) {
        eprintln!("cannot cap the compile worker's memory: {err}");
        return 1;
    }
    let limits = SandboxLimits {
        max_wasm_stack_bytes,
        ..SandboxLimits::default()
    };
    let engine = match engine::build(&limits) {
        Ok(engine) => engine,
        Err(err) => {
            eprintln!("cannot build the engine: {err:#}");
            return 1;
        }
    };
    let mut wasm = Vec::new();
    if let Err(err) = std::io::stdin().lock().read_to_end(&mut wasm) {
        eprintln!("cannot read the component: {err}");
        return 1;
    }
    let component = match Component::new(&engine, &wasm) {
        Ok(component) => component,
        Err(err) => {
            eprintln!("{err:#}");
            return INVALID_COMPONENT_EXIT;
        }
    };
    let written = component
        .serialize()
        .map_err(|err| format!("{err:#}"))
        .and_then(|bytes| {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|err| err.to_string())
        });
    match written {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("cannot write the compiled component: {err}");
            1
        }
    }
}
