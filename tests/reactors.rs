//! Reactors end to end: the order saga's happy, failure and timeout paths through a
//! live engine; a hostile reactor bounded by its emit limits; a new version that takes
//! over without re-emitting; and exactly-once effects across `kill -9` sweeps of a real
//! `refract run`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::Engine;
use refract::log::{Event, EventLog, NewEvent, ReadQuery};
use serde_json::{Value, json};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Liveness bound for waits; generous for a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A host running in this process on a temporary data directory.
struct Host {
    log: EventLog,
    engine: Engine,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn start(plugins: &[(&str, &str)], config: &str) -> Result<Host> {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.plugins())?;
    for (file, guest) in plugins {
        std::fs::copy(support::guests::guest(guest), data.plugins().join(file))?;
    }
    let config = Config::parse(config, Path::new("refract.toml"))?;
    let support::host::InProcess {
        log,
        engine,
        runtime,
        ..
    } = support::host::start_engine(&data, config)?;
    Ok(Host {
        log,
        engine,
        _runtime: runtime,
        _dir: dir,
    })
}

/// The active version of `name` and its checkpoint, once it has one.
fn active(engine: &Engine, name: &str) -> Option<(String, u64)> {
    let view = engine.projector(name)?;
    let version = view.active_version.clone()?;
    let status = view
        .versions
        .iter()
        .find(|v| v.version == version)?
        .status
        .clone()?;
    Some((version, status.checkpoint))
}

fn all_events(log: &EventLog) -> Result<Vec<Event>> {
    Ok(log
        .read(&ReadQuery::default())?
        .collect::<std::result::Result<_, _>>()?)
}

/// Events the reactor emitted (ids `rx:…`), as (type, stream, causation id).
fn emitted(log: &EventLog) -> Result<Vec<(String, String, String)>> {
    Ok(all_events(log)?
        .into_iter()
        .filter(|e| e.id.starts_with("rx:"))
        .map(|e| {
            let metadata: Value =
                serde_json::from_str(e.metadata.as_deref().unwrap_or("null")).unwrap_or_default();
            (
                e.event_type,
                e.stream,
                metadata["causation_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect())
}

fn placed(order: &str, timeout_ms: u64) -> NewEvent {
    NewEvent::new(
        order,
        "order.placed",
        json!({"customer": "ann", "total": 1200, "payment_timeout_ms": timeout_ms}).to_string(),
    )
    .with_metadata(json!({"correlation_id": format!("corr-{order}")}).to_string())
}

fn payment(order: &str, outcome: &str) -> NewEvent {
    NewEvent::new(
        format!("payment-{order}"),
        outcome,
        json!({"order_id": order, "reason": "card declined"}).to_string(),
    )
}

fn wait_for_emitted(log: &EventLog, count: usize) -> Vec<(String, String, String)> {
    support::host::wait_for(PATIENCE, &format!("{count} emitted events"), || {
        emitted(log).ok().filter(|e| e.len() >= count)
    })
}

#[test]
fn the_order_saga_confirms_cancels_and_times_out_with_its_causal_chain() -> Result {
    let host = start(&[("order-saga.wasm", "order-saga")], "")?;
    support::host::wait_until(PATIENCE, "the saga to start", || {
        active(&host.engine, "order-saga").is_some()
    });
    let hour = 3_600_000;
    let offsets = host.log.append(vec![
        placed("order-1", hour),
        placed("order-2", hour),
        placed("order-3", 300),
    ])?;
    host.log.append(vec![
        payment("order-1", "payment.succeeded"),
        payment("order-2", "payment.failed"),
    ])?;
    // 3 payment requests, 1 confirmation, 2 cancellations each with a stock release.
    let emitted = wait_for_emitted(&host.log, 8);
    let events = all_events(&host.log)?;
    let id_at = |offset: u64| {
        events
            .iter()
            .find(|e| e.offset == offset)
            .map(|e| e.id.clone())
    };
    let placed_ids: Vec<String> = offsets.iter().filter_map(|o| id_at(*o)).collect();
    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (event_type, stream, _) in &emitted {
        by_type.entry(event_type).or_default().push(stream);
    }
    assert_eq!(
        by_type.get("payment.requested").map(Vec::len),
        Some(3),
        "{emitted:?}"
    );
    assert_eq!(by_type.get("order.confirmed"), Some(&vec!["order-1"]));
    let mut cancelled = by_type.get("order.cancelled").cloned().unwrap_or_default();
    cancelled.sort_unstable();
    assert_eq!(cancelled, ["order-2", "order-3"]);
    let mut released = by_type.get("stock.released").cloned().unwrap_or_default();
    released.sort_unstable();
    assert_eq!(released, ["stock-order-2", "stock-order-3"]);
    assert_eq!(emitted.len(), 8, "nothing more: {emitted:?}");

    // The causal chain: a payment request is caused by its order.placed, and keeps
    // that order's correlation id.
    for event in events
        .iter()
        .filter(|e| e.event_type == "payment.requested")
    {
        let metadata: Value = serde_json::from_str(event.metadata.as_deref().unwrap_or("{}"))?;
        let order = event.stream.trim_start_matches("payment-");
        assert_eq!(metadata["correlation_id"], json!(format!("corr-{order}")));
        assert!(placed_ids.contains(&metadata["causation_id"].as_str().unwrap_or("").to_owned()));
        assert_eq!(metadata["reactor"], json!("order-saga"));
    }
    // The timeout fired once, as an event of the saga's own timer stream, and caused
    // the third order's cancellation.
    let timers: Vec<&Event> = events
        .iter()
        .filter(|e| e.event_type == "refract.timer")
        .collect();
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert_eq!(timers[0].stream, "refract.timer/order-saga");
    let cancel_3 = events
        .iter()
        .find(|e| e.event_type == "order.cancelled" && e.stream == "order-3")
        .ok_or("no cancellation of order-3")?;
    let metadata: Value = serde_json::from_str(cancel_3.metadata.as_deref().unwrap_or("{}"))?;
    assert_eq!(metadata["causation_id"], json!(timers[0].id));
    assert!(
        cancel_3.data.contains("payment timed out"),
        "{}",
        cancel_3.data
    );

    // A late payment for a cancelled order changes nothing; the cancelled timers of
    // orders 1 and 2 never fire.
    host.log
        .append(vec![payment("order-3", "payment.succeeded")])?;
    let head = host.log.head()?;
    support::host::wait_until(PATIENCE, "the saga to catch up", || {
        active(&host.engine, "order-saga").is_some_and(|(_, c)| c >= head)
    });
    assert_eq!(self::emitted(&host.log)?.len(), 8);
    let status = host
        .engine
        .status()
        .into_iter()
        .find(|s| s.projector == "order-saga")
        .ok_or("no status")?;
    let effects = status.effects.ok_or("no effect counts")?;
    assert_eq!((effects.appended, effects.timers_fired), (8, 1));
    host.engine.shutdown();
    Ok(())
}

#[test]
fn an_emit_loop_is_ended_by_its_limit_and_emits_nothing() -> Result {
    let config =
        "[limits]\nmax_emits_per_batch = 500\n\n[projectors.emit-loop]\non_poison = \"skip\"\n";
    let host = start(&[("emit-loop.wasm", "emit-loop")], config)?;
    support::host::wait_until(PATIENCE, "the reactor to start", || {
        active(&host.engine, "emit-loop").is_some()
    });
    host.log
        .append(vec![NewEvent::new("loop-1", "loop.start", "{}")])?;
    let head = host.log.head()?;
    support::host::wait_until(PATIENCE, "the loop to be dead-lettered", || {
        active(&host.engine, "emit-loop").is_some_and(|(_, c)| c >= head)
    });
    let letters = host.engine.dead_letters("emit-loop", 10)?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let message = &letters[0].error;
    assert!(
        message.contains("max_emits_per_batch") && message.contains("500"),
        "{message}"
    );
    assert!(emitted(&host.log)?.is_empty());
    host.engine.shutdown();
    Ok(())
}
