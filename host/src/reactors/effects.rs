//! `refract:reactor/emit` and `refract:reactor/timers`: the host side of a reactor's
//! effects, during a call.
//!
//! Emits are only buffered here; the engine appends them after the call returns (see
//! [`super::commit`]), so nothing a batch emits reaches the log unless the whole batch
//! succeeded. Timers are rows of the host's `_refract_timers` table, written inside the
//! batch's transaction, so they commit or roll back with the reactor's own state.
//!
//! Every guest-controlled cost has a limit, and a breach ends the call as a trap naming
//! the limit and its `[limits]` key (the poison policy then applies):
//! `max_emits_per_batch`, `max_emits_per_second` (per version, over all its calls),
//! `max_emit_bytes` and `max_pending_timers`. Malformed requests (an unknown cause, a
//! type the reactor did not declare, bad JSON) are `effect-error` values instead.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rusqlite::{OptionalExtension, params};
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, Lower};

use super::state;
use crate::log::NewEvent;
use crate::runtime::{LimitExceeded, SandboxLimits};

/// The interface names this module implements.
pub(crate) const EMIT_INTERFACE: &str = "refract:reactor/emit@0.1.0";
/// See [`EMIT_INTERFACE`].
pub(crate) const TIMERS_INTERFACE: &str = "refract:reactor/timers@0.1.0";

/// Longest timer key, in bytes: keys are row keys and parts of event ids.
pub const MAX_TIMER_KEY_BYTES: usize = 256;

/// Longest timer delay: about ten years, in milliseconds. Longer is a bug in the guest.
pub const MAX_TIMER_DELAY_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// `new-event` from the WIT contract.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
pub(crate) struct WitNewEvent {
    #[component(name = "stream")]
    stream: String,
    #[component(name = "event-type")]
    event_type: String,
    data: String,
    metadata: Option<String>,
    #[component(name = "expected-version")]
    expected_version: Option<u64>,
}

/// `effect-error` from the WIT contract.
#[derive(ComponentType, Lower, Debug)]
#[component(record)]
pub(crate) struct EffectError {
    message: String,
}

fn refuse(message: impl Into<String>) -> wasmtime::Result<(Result<(), EffectError>,)> {
    Ok((Err(EffectError {
        message: message.into(),
    }),))
}

/// One buffered emit: the event, and the source event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// The offset of the source event.
    pub cause: u64,
    /// The emit's position among the emits of its source event, from 0.
    pub index: u32,
    /// The event as the guest asked for it (no id, metadata not yet augmented).
    pub event: NewEvent,
}

/// One version's emit rate: tokens refilled per second, shared by all its instances.
#[derive(Debug)]
pub(crate) struct EmitRate {
    per_second: f64,
    state: Mutex<(Instant, f64)>,
}

impl EmitRate {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        let per_second = limits.max_emits_per_second as f64;
        Self {
            per_second,
            state: Mutex::new((Instant::now(), per_second)),
        }
    }

    fn admit(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(state.0).as_secs_f64();
        state.0 = now;
        state.1 = (state.1 + elapsed * self.per_second).min(self.per_second);
        if state.1 >= 1.0 {
            state.1 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The reactor part of an instance's store: what its current call has emitted, and
/// what it needs to check requests. Empty and unused for a projector.
pub(crate) struct EffectsHost {
    /// The declared types a reactor may emit; `None` for a projector.
    emits: Option<Vec<String>>,
    /// Its name, for the timer stream.
    name: String,
    limits: Arc<SandboxLimits>,
    rate: Arc<EmitRate>,
    /// Inside a `handle` call of a reactor.
    in_handle: bool,
    /// The current batch's offsets and recorded-at times, in order.
    offsets: Vec<u64>,
    recorded_at: Vec<i64>,
    buffered: Vec<Emit>,
    /// Pending timers, counted when the call first schedules one.
    pending_timers: Option<usize>,
    /// Emits caused at or before this offset will be suppressed, so they do not count
    /// against `max_emits_per_second`: a replay must not fail for running fast.
    rate_after: u64,
}

impl EffectsHost {
    pub(crate) fn new(limits: &Arc<SandboxLimits>, rate: Arc<EmitRate>) -> Self {
        Self {
            emits: None,
            name: String::new(),
            limits: Arc::clone(limits),
            rate,
            in_handle: false,
            offsets: Vec::new(),
            recorded_at: Vec::new(),
            buffered: Vec::new(),
            pending_timers: None,
            rate_after: 0,
        }
    }

    /// Emits caused at or before `offset` are suppressed by the caller, so the rate
    /// limit skips them.
    pub(crate) fn set_rate_after(&mut self, offset: u64) {
        self.rate_after = offset;
    }

    /// Marks the instance as the reactor `name`, which may emit `emits`.
    pub(crate) fn set_reactor(&mut self, name: &str, emits: Vec<String>) {
        self.name = name.to_owned();
        self.emits = Some(emits);
    }

    /// Starts a `handle` call on a batch with these offsets and recorded-at times.
    pub(crate) fn begin(&mut self, offsets: &[u64], recorded_at: &[i64]) {
        self.in_handle = self.emits.is_some() && !offsets.is_empty();
        self.offsets.clear();
        self.recorded_at.clear();
        self.buffered.clear();
        self.pending_timers = None;
        if self.in_handle {
            self.offsets.extend_from_slice(offsets);
            self.recorded_at.extend_from_slice(recorded_at);
        }
    }

    /// Ends the call and hands over what it emitted.
    pub(crate) fn finish(&mut self) -> Vec<Emit> {
        self.in_handle = false;
        std::mem::take(&mut self.buffered)
    }

    fn cause_index(&self, cause: u64) -> Option<usize> {
        self.offsets.binary_search(&cause).ok()
    }

    fn emit(&mut self, cause: u64, event: WitNewEvent) -> wasmtime::Result<Result<(), String>> {
        if !self.in_handle {
            return Ok(Err(
                "`emit` may only be called while handling a batch".into()
            ));
        }
        if self.cause_index(cause).is_none() {
            return Ok(Err(format!(
                "the cause {cause} is not the offset of an event in the batch being handled"
            )));
        }
        if let Some(last) = self.buffered.last()
            && last.cause > cause
        {
            return Ok(Err(format!(
                "the cause {cause} comes before the cause of an earlier emit ({}); emits follow the events in order",
                last.cause
            )));
        }
        let declared = self.emits.as_deref().unwrap_or_default();
        if !declared.contains(&event.event_type) {
            return Ok(Err(format!(
                "the type `{}` is not among the types this reactor declares in `reactor-info` ({})",
                event.event_type.chars().take(80).collect::<String>(),
                declared.join(", ")
            )));
        }
        let size = event.stream.len()
            + event.event_type.len()
            + event.data.len()
            + event.metadata.as_ref().map_or(0, String::len);
        if size > self.limits.max_emit_bytes {
            return Err(wasmtime::Error::new(LimitExceeded::bytes(
                format!("an emitted event of {size} bytes"),
                self.limits.max_emit_bytes,
                "max_emit_bytes",
            )));
        }
        if self.buffered.len() >= self.limits.max_emits_per_batch {
            return Err(wasmtime::Error::new(LimitExceeded::count(
                format!(
                    "more than {} emits in one batch",
                    self.limits.max_emits_per_batch
                ),
                self.limits.max_emits_per_batch,
                "max_emits_per_batch",
            )));
        }
        if cause > self.rate_after && !self.rate.admit() {
            return Err(wasmtime::Error::new(LimitExceeded::count(
                "emits past the reactor's rate".to_owned(),
                usize::try_from(self.limits.max_emits_per_second).unwrap_or(usize::MAX),
                "max_emits_per_second",
            )));
        }
        if let Some(metadata) = &event.metadata
            && !serde_json::from_str::<serde_json::Value>(metadata).is_ok_and(|v| v.is_object())
        {
            return Ok(Err("metadata must be a JSON object".into()));
        }
        let index = match self.buffered.last() {
            Some(last) if last.cause == cause => last.index + 1,
            _ => 0,
        };
        self.buffered.push(Emit {
            cause,
            index,
            event: NewEvent {
                id: None,
                stream: event.stream,
                event_type: event.event_type,
                data: event.data,
                metadata: event.metadata,
                expected_version: event.expected_version,
            },
        });
        Ok(Ok(()))
    }
}

/// Adds `emit` and `timers` to the linker. A projector never imports them.
pub(crate) fn add_to_linker(
    linker: &mut Linker<crate::runtime::StoreState>,
) -> wasmtime::Result<()> {
    let mut emit = linker.instance(EMIT_INTERFACE)?;
    emit.func_wrap(
        "emit",
        |mut store: StoreContextMut<'_, crate::runtime::StoreState>,
         (cause, event): (u64, WitNewEvent)| {
            match store.data_mut().effects.emit(cause, event)? {
                Ok(()) => Ok((Ok(()),)),
                Err(message) => refuse(message),
            }
        },
    )?;
    let mut timers = linker.instance(TIMERS_INTERFACE)?;
    timers.func_wrap("schedule", schedule)?;
    timers.func_wrap(
        "cancel",
        |mut store: StoreContextMut<'_, crate::runtime::StoreState>, (key,): (String,)| {
            let state = store.data_mut();
            if !state.effects.in_handle {
                return refuse("`cancel` may only be called while handling a batch");
            }
            let removed = state
                .sql
                .db()
                .host_turn(|conn| state::cancel_timer(conn, &key))
                .map_err(|err| wasmtime::Error::msg(format!("cannot cancel a timer: {err}")))?;
            if removed && let Some(pending) = state.effects.pending_timers.as_mut() {
                *pending = pending.saturating_sub(1);
            }
            Ok((Ok(()),))
        },
    )?;
    Ok(())
}

fn schedule(
    mut store: StoreContextMut<'_, crate::runtime::StoreState>,
    (cause, key, delay_ms, payload): (u64, String, u64, String),
) -> wasmtime::Result<(Result<(), EffectError>,)> {
    let state = store.data_mut();
    let effects = &mut state.effects;
    if !effects.in_handle {
        return refuse("`schedule` may only be called while handling a batch");
    }
    let Some(at) = effects.cause_index(cause) else {
        return refuse(format!(
            "the cause {cause} is not the offset of an event in the batch being handled"
        ));
    };
    if key.is_empty() || key.len() > MAX_TIMER_KEY_BYTES || key.chars().any(char::is_control) {
        return refuse(format!(
            "a timer key must be 1 to {MAX_TIMER_KEY_BYTES} bytes without control characters"
        ));
    }
    if delay_ms > MAX_TIMER_DELAY_MS {
        return refuse(format!(
            "a delay of {delay_ms} ms is longer than {MAX_TIMER_DELAY_MS} ms"
        ));
    }
    if payload.len() > effects.limits.max_emit_bytes {
        return Err(wasmtime::Error::new(LimitExceeded::bytes(
            format!("a timer payload of {} bytes", payload.len()),
            effects.limits.max_emit_bytes,
            "max_emit_bytes",
        )));
    }
    if serde_json::from_str::<serde_json::Value>(&payload).is_err() {
        return refuse("a timer payload must be JSON");
    }
    let delay_micros = i64::try_from(delay_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    let due_at = effects.recorded_at[at].saturating_add(delay_micros);
    let max_pending = effects.limits.max_pending_timers;
    let db = state.sql.db();
    let pending = match effects.pending_timers {
        Some(pending) => pending,
        None => db
            .host_turn(state::pending_timer_count)
            .map_err(|err| wasmtime::Error::msg(format!("cannot count timers: {err}")))?,
    };
    let exists = db
        .host_turn(|conn| {
            conn.prepare_cached("SELECT 1 FROM _refract_timers WHERE key = ?1")?
                .query_row([&key], |_| Ok(()))
                .optional()
        })
        .map_err(|err| wasmtime::Error::msg(format!("cannot read timers: {err}")))?
        .is_some();
    let pending = if exists { pending } else { pending + 1 };
    if pending > max_pending {
        return Err(wasmtime::Error::new(LimitExceeded::count(
            format!("{pending} pending timers"),
            max_pending,
            "max_pending_timers",
        )));
    }
    db.host_turn(|conn| {
        conn.prepare_cached(
            "INSERT INTO _refract_timers (key, due_at, payload, cause) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET due_at = excluded.due_at,
                 payload = excluded.payload, cause = excluded.cause, fired = NULL",
        )?
        .execute(params![
            key,
            due_at,
            payload,
            i64::try_from(cause).unwrap_or(i64::MAX)
        ])
    })
    .map_err(|err| wasmtime::Error::msg(format!("cannot schedule a timer: {err}")))?;
    effects.pending_timers = Some(pending);
    Ok((Ok(()),))
}
