//! `reactor_eps` next to `reactor_projector_eps`: the `order-saga` reactor and the
//! `order-summary` projector, each run through the same log of `order.placed` events.
//! For every source event the reactor writes one state row, schedules one timer and
//! emits one `payment.requested`, appended to the log exactly once; the projector
//! writes its read model. The difference is the price of the effects.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};

use crate::engine::{BatchLimits, Projection, Step};
use crate::log::{EventLog, LogOptions, NewEvent, ReadQuery};
use crate::runtime::{DbOptions, Runtime};

/// The most source events the reactor figure uses: each adds an emitted event and a
/// timer row, so the log and the state double.
pub const REACTOR_MAX_EVENTS: usize = 100_000;

/// `order.placed` events, one per order stream.
fn placed(events: usize) -> Vec<NewEvent> {
    (0..events)
        .map(|i| {
            NewEvent::new(
                format!("order-{i:07}"),
                "order.placed",
                format!(
                    r#"{{"customer":"c-{:03}","total":{}}}"#,
                    i % 500,
                    100 + i % 9_000
                ),
            )
        })
        .collect()
}

/// Events per second of one run of `wasm` over `events` fresh `order.placed` events;
/// a reactor's state is created before the events are appended, so it acts on all.
fn run_one(
    runtime: &Runtime,
    wasm: &[u8],
    dir: &Path,
    log_options: &LogOptions,
    batch: BatchLimits,
    events: usize,
) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = EventLog::open(&dir.join("events.db"), log_options.clone())?;
    let loaded = runtime.load(wasm)?;
    let is_reactor = loaded.reactor().is_some();
    let mut projection = Projection::open(
        loaded,
        &dir.join("state.db"),
        DbOptions::live(),
        log.reader()?,
        batch,
    )?;
    if let Some(driver) = projection.reactor_mut() {
        driver.attach_log(log.clone());
        driver.set_emitting(true);
    }
    for chunk in placed(events).chunks(1_000) {
        log.append(chunk.to_vec())?;
    }
    let started = Instant::now();
    while projection.step(None)? != Step::CaughtUp {}
    let elapsed = started.elapsed();
    if is_reactor {
        let emitted = log.count(&ReadQuery {
            types: vec!["payment.requested".into()],
            ..ReadQuery::default()
        })?;
        ensure!(
            emitted == events as u64,
            "the reactor emitted {emitted} events for {events} orders"
        );
    }
    drop(projection);
    drop(log);
    let _ = std::fs::remove_dir_all(dir);
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// The reactor's and the projector's events per second, one pair per repetition,
/// alternating which goes first.
pub(super) fn measure(
    runtime: &Runtime,
    scratch: &Path,
    log_options: &LogOptions,
    batch: BatchLimits,
    events: usize,
    reps: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<f64>, Vec<f64>)> {
    progress("building the order-saga reactor and the order-summary projector");
    let built = crate::guest_build::build_guests(&["order-saga", "order-summary"])?;
    let [saga, summary] = built.as_slice() else {
        anyhow::bail!("the guest build returned {} components, not 2", built.len());
    };
    let saga = std::fs::read(saga).with_context(|| format!("cannot read {}", saga.display()))?;
    let summary =
        std::fs::read(summary).with_context(|| format!("cannot read {}", summary.display()))?;
    let (mut reactor, mut projector) = (Vec::new(), Vec::new());
    for rep in 1..=reps {
        progress(&format!(
            "reactors: {events} orders through order-saga and order-summary (rep {rep}/{reps})"
        ));
        let dir = scratch.join(format!("reactors-{rep}"));
        let saga_run = || run_one(runtime, &saga, &dir, log_options, batch, events);
        let summary_run = || run_one(runtime, &summary, &dir, log_options, batch, events);
        if rep % 2 == 1 {
            reactor.push(saga_run()?);
            projector.push(summary_run()?);
        } else {
            projector.push(summary_run()?);
            reactor.push(saga_run()?);
        }
    }
    Ok((reactor, projector))
}
