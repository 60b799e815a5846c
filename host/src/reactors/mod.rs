//! Reactors: sandboxed WebAssembly process managers (sagas) that react to events by
//! appending events, exactly once.
//!
//! A reactor is to the write side what a projector is to the read side. It implements
//! the WIT world `refract:reactor/reactor` (`wit/reactor/reactor.wit`): the whole
//! projector world (event batches in, `sql` on its own state database, `log`) plus the
//! `emit` and `timers` imports and the `reactor-info` export, by which the runtime tells
//! it from a projector. The engine runs it like a projector (deploys, versions, status,
//! poison policy, metrics); only what happens around each batch differs.
//!
//! # Exactly-once effects
//! 1. While `handle` runs, the guest's emits are buffered by the host ([`effects`])
//!    and its timers are written to the host's `_refract_timers` table inside the
//!    batch's transaction.
//! 2. After the guest returns, the emits are appended to the log in one append under
//!    deterministic ids, `rx:<reactor>:<source offset>:<index>` ([`commit`]), with
//!    `causation_id` and `correlation_id` pointing back to the source event.
//! 3. The reactor's state, its timers and its checkpoint commit in one transaction.
//!
//! A crash between 2 and 3 replays the batch; the log recognises the ids and appends
//! nothing twice. A version conflict or an invalid emitted event fails the batch at its
//! source event, and the poison policy applies.
//!
//! # No replay side effects
//! - The **first version** of a reactor replays the log into its state, but emits only
//!   for events after the log's head when its state was created: deploying a saga does
//!   not act on last year's orders.
//! - A **new version** replays in a shadow with its emits suppressed, never past the
//!   active version's checkpoint (it follows the active version's state database), and
//!   takes over emitting at the swap, strictly after the old version's last checkpoint.
//! - A **warm** previous version (kept for an instant rollback) never emits.
//! - Re-running history with effects is not built: there is no command for it (see the
//!   README's "Reactors" section).
//!
//! # Timers without a clock
//! `schedule(cause, key, delay-ms, payload)` stores a timer due at the source event's
//! `recorded_at` plus the delay. The active version's worker appends a `refract.timer`
//! event (id from reactor, key and due time) to `refract.timer/<reactor>` once it is due;
//! the reactor receives its own timer events whatever its subscriptions, and the host
//! removes the timer when the event is delivered. A timer cancelled or rescheduled
//! before its event is delivered in an earlier batch is not delivered.
//!
//! # Layout
//! - [`effects`]: the `emit` and `timers` imports, their limits, and the buffer.
//! - [`commit`]: ids, causal metadata, the append and its outcome; timer events.
//! - [`state`]: the host's `_refract_timers` and `_refract_reactor` tables.
//! - `driver`: what the engine's projection does around each batch of a reactor.

pub mod commit;
mod driver;
pub mod effects;
pub mod state;

use wasmtime::Store;
use wasmtime::component::{ComponentType, Instance, Lift, Linker};

pub use commit::{CommitError, CommitOutcome, TIMER_EVENT_TYPE, emit_id, timer_id, timer_stream};
pub(crate) use driver::Driver;
pub use driver::EffectCounts;
pub(crate) use effects::{EffectsHost, EmitRate};
pub use effects::{Emit, MAX_TIMER_DELAY_MS, MAX_TIMER_KEY_BYTES};

use crate::runtime::{SandboxLimits, StoreState};

/// The export that makes a component a reactor.
pub const REACTOR_EXPORT: &str = "reactor-info";

/// The interfaces only a reactor may import.
pub const REACTOR_INTERFACES: &[&str] = &[effects::EMIT_INTERFACE, effects::TIMERS_INTERFACE];

/// Most timers one worker appends per look at its due timers; the rest wait for the
/// next look, a moment later.
pub const MAX_TIMERS_PER_FIRE: usize = 1_000;

/// Whether a reactor's state has been created (its first version's `init` committed) in
/// its folder of state databases, `projections/<name>/`: from then on it acts on new
/// events.
pub fn state_created(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "db"))
        .any(|path| {
            rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|conn| state::exists(&conn))
            .unwrap_or(false)
        })
}

/// What a reactor says about its effects (`reactor-info`), checked against the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorInfo {
    /// The event types it may emit.
    pub emits: Vec<String>,
}

/// `reactor-info` from the WIT contract.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
pub(crate) struct WitReactorInfo {
    emits: Vec<String>,
}

/// Adds the reactor imports to the runtime's linker.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    effects::add_to_linker(linker)
}

/// Calls the `reactor-info` export.
pub(crate) fn call_reactor_info(
    store: &mut Store<StoreState>,
    instance: &Instance,
) -> wasmtime::Result<WitReactorInfo> {
    let func = instance.get_typed_func::<(), (WitReactorInfo,)>(&mut *store, REACTOR_EXPORT)?;
    Ok(func.call(&mut *store, ())?.0)
}

/// Checks `reactor-info` against the contract and the limits.
pub(crate) fn validate_reactor_info(
    raw: WitReactorInfo,
    limits: &SandboxLimits,
) -> Result<ReactorInfo, String> {
    if raw.emits.len() > limits.max_subscriptions {
        return Err(format!(
            "`reactor-info` declares {} emitted types; the limit is {} (`limits.max_subscriptions`)",
            raw.emits.len(),
            limits.max_subscriptions
        ));
    }
    if let Some(bad) = raw.emits.iter().find(|t| {
        t.is_empty()
            || t.len() > limits.max_subscription_bytes
            || t.starts_with("refract.")
            || t.chars().any(char::is_control)
    }) {
        return Err(format!(
            "`reactor-info` declares the emitted type {:?}; types are 1 to {} bytes \
             (`limits.max_subscription_bytes`), without control characters, and the \
             `refract.` prefix belongs to the host",
            bad.chars().take(80).collect::<String>(),
            limits.max_subscription_bytes
        ));
    }
    Ok(ReactorInfo { emits: raw.emits })
}
