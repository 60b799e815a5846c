//! The wasmtime engine configuration, and the epoch ticker and watchdog that enforce
//! deadlines.
//!
//! One engine serves every projector of a [`Runtime`](super::Runtime). The configuration
//! is fixed (only the wasm stack size comes from the limits) because it is part of the
//! compile-cache key.
//!
//! The ticker thread advances the epoch every [`EPOCH_TICK`]: wasm checks it at function
//! entries and loop back-edges, SQLite's progress handler between its steps. On the same
//! tick the [`Watchdog`] looks at every open read-model connection and sends
//! `sqlite3_interrupt` to one whose call has passed its deadline (or was cancelled),
//! which stops the loops SQLite runs within a single step.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine};

use super::limits::SandboxLimits;
use super::sql::Guard;

/// How often the ticker advances the engine's epoch. A deadline is enforced to within
/// about one tick; a shorter tick costs a wake-up per tick on an otherwise idle host.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine: component model, epoch interruption, no async machinery, and the
/// settings that keep a replay deterministic across machines.
pub(crate) fn build(limits: &SandboxLimits) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Deadlines: the ticker bumps the epoch; a store traps once its deadline passes.
        // Checked at function entries and loop back-edges, far cheaper than fuel.
        .epoch_interruption(true)
        // Projectors are synchronous. Without this every export call pays for the
        // concurrent-task bookkeeping (~525 ns instead of ~185 ns per call).
        .concurrency_support(false)
        .max_wasm_stack(limits.max_wasm_stack_bytes)
        // NaN bit patterns and relaxed SIMD otherwise differ between CPUs, and a replay
        // on another machine must build the same read model.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .parallel_compilation(true);
    Engine::new(&config)
}

/// A monotonic count of epoch ticks, shared with the SQLite progress handlers so that
/// wasm and SQL see the same deadline.
#[derive(Debug, Clone, Default)]
pub(crate) struct TickClock(Arc<AtomicU64>);

impl TickClock {
    /// Ticks since the runtime started.
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn advance(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Converts a deadline to whole ticks, rounding up, plus one tick because the current
/// tick is already partly spent.
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// Every open read-model connection of a runtime, looked at on every tick.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    guards: Mutex<Vec<Weak<Guard>>>,
    /// Set once the host shuts down; shared with every guard.
    cancelled: Arc<AtomicBool>,
}

impl Watchdog {
    /// Puts a connection's guard under watch until it is dropped.
    pub(crate) fn watch(&self, guard: &Arc<Guard>) {
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(guard));
    }

    /// The flag every guard of this runtime reads to see that calls are cancelled.
    pub(crate) fn cancelled(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancelled)
    }

    /// Cancels every call in progress and every later one.
    pub(crate) fn cancel_all(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.check(u64::MAX);
    }

    /// Interrupts the connections whose calls are past their deadline at `now`, and
    /// forgets the closed ones.
    fn check(&self, now: u64) {
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|guard| match guard.upgrade() {
                Some(guard) => {
                    guard.watch(now);
                    true
                }
                None => false,
            });
    }
}

/// The thread that advances the epoch every [`EPOCH_TICK`] and runs the watchdog. It
/// stops when the ticker is dropped, that is when the last clone of the runtime goes
/// away.
#[derive(Debug)]
pub(crate) struct Ticker {
    clock: TickClock,
    watchdog: Arc<Watchdog>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the ticker thread for `engine`.
    pub(crate) fn start(engine: &Engine) -> std::io::Result<Self> {
        let clock = TickClock::default();
        let watchdog = Arc::new(Watchdog::default());
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let engine = engine.clone();
            let clock = clock.clone();
            let watchdog = Arc::clone(&watchdog);
            std::thread::Builder::new()
                .name("refract-epoch".into())
                .spawn(move || {
                    // Ends when the sender is dropped (Disconnected) or sends.
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(EPOCH_TICK)
                    {
                        clock.advance();
                        engine.increment_epoch();
                        watchdog.check(clock.now());
                    }
                })?
        };
        Ok(Self {
            clock,
            watchdog,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The shared tick count.
    pub(crate) fn clock(&self) -> &TickClock {
        &self.clock
    }

    /// The watchdog over this runtime's connections.
    pub(crate) fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread wakes at once on disconnect, so this join is short.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_ticks() {
        assert_eq!(deadline_ticks(Duration::from_millis(10)), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(11)), 3);
        assert_eq!(deadline_ticks(Duration::from_secs(10)), 1001);
    }

    #[test]
    fn ticker_advances_and_stops() -> wasmtime::Result<()> {
        let engine = build(&SandboxLimits::default())?;
        let ticker = Ticker::start(&engine)?;
        let clock = ticker.clock().clone();
        std::thread::sleep(EPOCH_TICK * 5);
        assert!(clock.now() >= 1, "the ticker advanced");
        drop(ticker);
        let stopped_at = clock.now();
        std::thread::sleep(EPOCH_TICK * 3);
        assert_eq!(clock.now(), stopped_at, "the ticker stopped");
        Ok(())
    }
}
