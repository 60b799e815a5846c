//! WASI for projectors: linked so that `std` works, denied everything it could reach.
//!
//! Components built for `wasm32-wasip2` import parts of WASI 0.2 through Rust's `std`
//! even when the projector never touches a file or a socket, so the interfaces are
//! linked, but the context behind them grants nothing:
//!
//! - **Filesystem:** no preopened directories, so there is no path to open.
//! - **Environment:** no variables, no arguments, no working directory.
//! - **Stdio:** stdin is closed and stdout is discarded (the `log` interface is the way
//!   to talk to the operator). Stderr is captured, capped, per call: a Rust panic prints
//!   its message there just before the trap, and the host puts it in the trap's error.
//! - **Sockets:** TCP, UDP and name lookup are disabled, and the address check refuses
//!   every address, so the guest cannot connect, bind or resolve.
//! - **Clocks:** both clocks are frozen at zero (the Unix epoch). A projector must take
//!   time from its events' `recorded-at`, so a replay builds the same read model.
//!   Sleeping returns at once: a frozen clock has no future to wait for, and a guest
//!   blocked in the host could not be interrupted by the deadline.
//! - **Randomness:** deterministic, from a fixed seed. Denying it would trap every Rust
//!   projector that builds a `HashMap` (std seeds its hasher from `wasi:random`).
//!
//! - **HTTP:** `wasi:http` 0.2 is linked (see `wasi_http`) so that a default
//!   componentize-js build loads, and every request fails with `HTTP-request-denied`.
//!
//! Anything else a component imports (a newer WASI, another package) is refused at load
//! time by [`refuse_import`], naming the import, before the component is compiled.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use super::wasi_http::DENIED_WASI_PACKAGES;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiView,
};

/// The WASI 0.2 packages a projector may import. All are linked deny-by-default.
pub const ALLOWED_WASI_PACKAGES: &[&str] =
    &["cli", "clocks", "filesystem", "io", "random", "sockets"];

/// The interfaces of Refract's own contract a projector may import, for every version
/// the host implements. One component imports those of one version only.
pub const REFRACT_INTERFACES: &[&str] = &[
    "refract:projector/types@0.1.0",
    "refract:projector/sql@0.1.0",
    "refract:projector/log@0.1.0",
    "refract:projector/types@0.2.0",
    "refract:projector/sql@0.2.0",
    "refract:projector/log@0.2.0",
];

/// The monotonic clock interface whose `subscribe-*` functions are replaced so that
/// sleeping never blocks. Its version is the one wasmtime-wasi defines; guests built
/// against any 0.2.x resolve to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Seed of the deterministic random bytes: fixed, so every run sees the same sequence.
const RANDOM_SEED: u64 = 0x5EED_0F2E_F2AC_7001;

/// Length of the repeating random byte sequence.
const RANDOM_CYCLE_BYTES: usize = 4096;

/// The write permit stderr grants per `check-write`. Everything is accepted; what is past
/// the capture's cap is dropped.
const STDERR_PERMIT_BYTES: usize = 64 << 10;

/// A WASI context that grants nothing (see the module documentation); stderr goes to
/// `stderr`.
pub(crate) fn deny_all_ctx(max_random_bytes: usize, stderr: StderrCapture) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stderr(stderr)
        .wall_clock(FrozenWallClock)
        .monotonic_clock(FrozenMonotonicClock)
        .secure_random(Deterministic::new(random_bytes(RANDOM_SEED)))
        .insecure_random(Deterministic::new(random_bytes(!RANDOM_SEED)))
        .insecure_random_seed(u128::from(RANDOM_SEED))
        .max_random_size(u64::try_from(max_random_bytes).unwrap_or(u64::MAX))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    builder.build()
}

/// Links WASI 0.2 (synchronous) into `linker`, with sleeping made non-blocking.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store, (_duration,): (u64,)| {
        Ok((ready_pollable(store.data_mut().ctx().table)?,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store, (_instant,): (u64,)| {
        Ok((ready_pollable(store.data_mut().ctx().table)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Why a component's import is refused, if it is.
pub(crate) fn refuse_import(name: &str) -> Option<String> {
    if REFRACT_INTERFACES.contains(&name) || crate::reactors::REACTOR_INTERFACES.contains(&name) {
        return None;
    }
    if name.starts_with("refract:projector/") {
        return Some(format!(
            "imports `{name}`, which this host does not provide; it implements \
             refract:projector@0.2.0 and @0.1.0 (types, sql, log). Rebuild the projector \
             against a refract-sdk release that targets one of them"
        ));
    }
    if let Some(rest) = name.strip_prefix("wasi:")
        && let Some((package, interface)) = rest.split_once('/')
        && (ALLOWED_WASI_PACKAGES.contains(&package) || DENIED_WASI_PACKAGES.contains(&package))
        && interface
            .split_once('@')
            .is_some_and(|(_, version)| version.starts_with("0.2."))
    {
        return None;
    }
    Some(format!(
        "imports `{name}`, which Refract does not provide; projectors may only import \
         refract:projector/* and WASI 0.2 (wasi:{}, and wasi:{} with every request denied)",
        ALLOWED_WASI_PACKAGES.join(", wasi:"),
        DENIED_WASI_PACKAGES.join(", wasi:")
    ))
}

/// The tail of the guest's stderr since [`clear`]: the last `max_bytes` bytes, of which
/// [`text`] gives the last `max_lines` lines. The end is what explains a failure: a
/// Rust panic message, the last frames and the exception of a Python traceback, a
/// JavaScript `console.error` just before an uncaught exception.
///
/// [`clear`]: StderrCapture::clear
/// [`text`]: StderrCapture::text
#[derive(Debug, Clone)]
pub(crate) struct StderrCapture {
    buffer: Arc<Mutex<Tail>>,
    max_bytes: usize,
    max_lines: usize,
}

/// The kept bytes, and whether earlier ones were dropped.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    dropped: bool,
}

impl StderrCapture {
    pub(crate) fn new(max_bytes: usize, max_lines: usize) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(Tail::default())),
            max_bytes,
            max_lines,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what was captured.
    pub(crate) fn clear(&self) {
        let mut tail = self.lock();
        tail.bytes.clear();
        tail.dropped = false;
    }

    /// The last lines captured, as text, if anything but whitespace; `…` first when
    /// earlier output was dropped.
    pub(crate) fn text(&self) -> Option<String> {
        let tail = self.lock();
        let start = tail.bytes.len().saturating_sub(self.max_bytes);
        let text = String::from_utf8_lossy(&tail.bytes[start..]);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.trim().is_empty())
            .collect();
        if lines.is_empty() {
            return None;
        }
        let first = lines.len().saturating_sub(self.max_lines);
        let mut kept = lines[first..].join("\n");
        if tail.dropped || start > 0 || first > 0 {
            kept.insert_str(0, "…\n");
        }
        Some(kept)
    }

    /// Keeps the newest bytes: the buffer grows to twice the cap, then its older half
    /// is dropped, so a guest that writes without end costs bounded memory and time.
    fn append(&self, bytes: &[u8]) {
        let mut tail = self.lock();
        let bytes = if bytes.len() > self.max_bytes {
            tail.bytes.clear();
            tail.dropped = true;
            &bytes[bytes.len() - self.max_bytes..]
        } else {
            bytes
        };
        tail.bytes.extend_from_slice(bytes);
        if tail.bytes.len() > self.max_bytes.saturating_mul(2) {
            let excess = tail.bytes.len() - self.max_bytes;
            tail.bytes.drain(..excess);
            tail.dropped = true;
        }
    }
}

impl IsTerminal for StderrCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrCapture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrCapture {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_PERMIT_BYTES)
    }
}

impl tokio::io::AsyncWrite for StderrCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A pollable that is always ready: the frozen clock's answer to "wake me later".
fn ready_pollable(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let ready = table.push(Ready)?;
    wasmtime_wasi::p2::subscribe(table, ready)
}

/// See [`ready_pollable`].
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

/// `wasi:clocks/wall-clock` stopped at the Unix epoch.
struct FrozenWallClock;

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// `wasi:clocks/monotonic-clock` stopped at zero.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}

/// A fixed pseudo-random byte sequence (splitmix64), the same on every run.
fn random_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(RANDOM_CYCLE_BYTES);
    while bytes.len() < RANDOM_CYCLE_BYTES {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        bytes.extend_from_slice(&z.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_02_and_the_contract_are_allowed() {
        for name in [
            "wasi:cli/environment@0.2.0",
            "wasi:io/streams@0.2.6",
            "wasi:sockets/tcp@0.2.3",
            "wasi:filesystem/preopens@0.2.12",
            "wasi:http/outgoing-handler@0.2.10",
            "wasi:http/types@0.2.0",
            "refract:projector/sql@0.1.0",
            "refract:projector/sql@0.2.0",
        ] {
            assert_eq!(refuse_import(name), None, "{name}");
        }
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        for name in [
            "wasi:http/outgoing-handler@0.3.0-rc-2025-09-16",
            "wasi:cli/environment@0.3.0",
            "wasi:keyvalue/store@0.2.0",
            "refract:projector/sql@0.3.0",
            "my:evil/thing",
        ] {
            let message = refuse_import(name).expect("refused");
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn stderr_keeps_the_last_lines() {
        let capture = StderrCapture::new(64, 2);
        capture.append(b"Traceback (most recent call last):\n  File \"app.py\"\n");
        capture.append(b"KeyError: 'amount'\n");
        assert_eq!(
            capture.text().as_deref(),
            Some("…\n  File \"app.py\"\nKeyError: 'amount'")
        );
        capture.clear();
        assert_eq!(capture.text(), None);
    }

    #[test]
    fn stderr_is_capped_in_bytes_and_keeps_the_end() {
        let capture = StderrCapture::new(8, 10);
        for _ in 0..1000 {
            capture.append(b"noise noise noise\n");
        }
        capture.append(b"the end");
        assert!(capture.lock().bytes.len() <= 16, "bounded");
        assert_eq!(capture.text().as_deref(), Some("…\nthe end"));
    }

    #[test]
    fn random_bytes_are_fixed() {
        assert_eq!(random_bytes(7), random_bytes(7));
        assert_ne!(random_bytes(7), random_bytes(8));
    }
}
