//! Reactors end to end: the order saga's happy, failure and timeout paths through a
//! live engine; a hostile reactor bounded by its emit limits; a new version that takes
//! over without re-emitting; and exactly-once effects across `kill -9` sweeps of a real
//! `refract run`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::Engine;
use refract::log::{Event, EventLog, LogOptions, NewEvent, ReadQuery};
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
    let saga = host.engine.projector("order-saga").ok_or("no order-saga")?;
    assert_eq!(
        saga.versions[0].contract.as_deref(),
        Some("refract:reactor@0.1.0")
    );
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

/// Runs the hostile `emit-loop` reactor under `limits` (with `skip`), sends it
/// `event_types` one event each, and returns the dead letters' errors in order.
fn hostile_run(limits: &str, event_types: &[&str]) -> Result<Vec<String>> {
    let config = format!("[limits]\n{limits}\n\n[projectors.emit-loop]\non_poison = \"skip\"\n");
    let host = start(&[("emit-loop.wasm", "emit-loop")], &config)?;
    support::host::wait_until(PATIENCE, "the reactor to start", || {
        active(&host.engine, "emit-loop").is_some()
    });
    for event_type in event_types {
        host.log
            .append(vec![NewEvent::new("loop-1", *event_type, "{}")])?;
    }
    let head = host.log.head()?;
    support::host::wait_until(PATIENCE, "every event to be dead-lettered", || {
        active(&host.engine, "emit-loop").is_some_and(|(_, c)| c >= head)
    });
    let mut letters = host.engine.dead_letters("emit-loop", 10)?;
    letters.sort_by_key(|letter| letter.offset);
    assert!(emitted(&host.log)?.is_empty(), "a hostile batch emitted");
    let status = host
        .engine
        .status()
        .into_iter()
        .find(|s| s.projector == "emit-loop")
        .ok_or("no status")?;
    assert_eq!(status.effects.map(|e| e.appended), Some(0));
    host.engine.shutdown();
    Ok(letters.into_iter().map(|letter| letter.error).collect())
}

#[test]
fn a_flooding_reactor_is_ended_by_each_limit_with_its_key() -> Result {
    let errors = hostile_run(
        "max_emits_per_batch = 500\nmax_pending_timers = 50",
        &["loop.start", "loop.big", "loop.timers"],
    )?;
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (error, (key, limit)) in errors.iter().zip([
        ("max_emits_per_batch", "500"),
        ("max_emit_bytes", "256 KiB"),
        ("max_pending_timers", "50"),
    ]) {
        assert!(
            error.contains(key) && error.contains(limit),
            "{key}: {error}"
        );
    }
    // Over time: a rate far below the per-batch cap ends the loop too.
    let errors = hostile_run(
        "max_emits_per_batch = 1000000\nmax_emits_per_second = 100",
        &["loop.start"],
    )?;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("max_emits_per_second"), "{}", errors[0]);
    Ok(())
}

/// The same component with a custom section appended: a new version (another
/// content hash) with the same code.
fn new_version_of(wasm: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = vec![u8::try_from(tag.len()).unwrap_or(0)];
    payload.extend_from_slice(tag.as_bytes());
    payload.extend_from_slice(b"same code");
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(payload.len()).unwrap_or(0)); // LEB128 of a small size
    out.extend_from_slice(&payload);
    out
}

#[test]
fn a_new_version_takes_over_at_the_old_checkpoint_without_re_emitting() -> Result {
    let host = start(&[("order-saga.wasm", "order-saga")], "")?;
    support::host::wait_until(PATIENCE, "the saga to start", || {
        active(&host.engine, "order-saga").is_some()
    });
    let (v1, _) = active(&host.engine, "order-saga").ok_or("no active version")?;
    let hour = 3_600_000;
    host.log.append(
        (1..=20)
            .map(|i| placed(&format!("order-{i}"), hour))
            .collect(),
    )?;
    host.log.append(
        (1..=10)
            .map(|i| payment(&format!("order-{i}"), "payment.succeeded"))
            .collect(),
    )?;
    let before = wait_for_emitted(&host.log, 30);
    assert_eq!(before.len(), 30);

    let wasm = std::fs::read(support::guests::guest("order-saga"))?;
    host.engine.deploy(&new_version_of(&wasm, "v2"))?;
    let v2 = support::host::wait_for(PATIENCE, "the new version to take over", || {
        active(&host.engine, "order-saga")
            .map(|(version, _)| version)
            .filter(|version| *version != v1)
    });
    // The new version replayed all of history into its state, with every emit
    // suppressed: the log holds exactly what the first version emitted.
    assert_eq!(emitted(&host.log)?, before);
    let counts = |version: &str| {
        host.engine
            .projector("order-saga")
            .and_then(|view| view.versions.into_iter().find(|v| v.version == version))
            .and_then(|v| v.status)
            .and_then(|status| status.effects)
    };
    let replayed = counts(&v2).ok_or("no effect counts for the new version")?;
    assert_eq!(replayed.appended, 0, "{replayed:?}");
    assert!(replayed.suppressed >= 30, "{replayed:?}");

    // From its first new event on, the new version emits, once; its state knows the
    // orders it never emitted for (order 11's payment confirms it).
    host.log.append(vec![
        placed("order-21", hour),
        payment("order-11", "payment.succeeded"),
    ])?;
    let after = wait_for_emitted(&host.log, 32);
    assert_eq!(after.len(), 32, "{after:?}");
    assert!(
        after.contains(&(
            "order.confirmed".to_owned(),
            "order-11".to_owned(),
            after
                .iter()
                .find(|(t, s, _)| t == "order.confirmed" && s == "order-11")
                .map(|(_, _, c)| c.clone())
                .unwrap_or_default()
        ))
    );
    let head = host.log.head()?;
    support::host::wait_until(PATIENCE, "the new version to catch up", || {
        active(&host.engine, "order-saga").is_some_and(|(_, c)| c >= head)
    });
    assert_eq!(counts(&v2).map(|c| c.appended), Some(2));
    host.engine.shutdown();
    Ok(())
}

#[test]
fn a_first_version_does_not_act_on_history_when_its_timers_come_due() -> Result {
    let host = start(&[], "")?;
    // History from before the saga existed: an order whose payment timeout is long past
    // by the time the saga is deployed.
    host.log.append(vec![placed("old-order", 50)])?;
    let wasm = std::fs::read(support::guests::guest("order-saga"))?;
    host.engine.deploy(&wasm)?;
    let history = host.log.head()?;
    support::host::wait_until(PATIENCE, "the saga to replay history", || {
        active(&host.engine, "order-saga").is_some_and(|(_, c)| c >= history)
    });
    // A new order times out: payment.requested, then order.cancelled and stock.released
    // from its timer, which comes due after the old order's would have.
    host.log.append(vec![placed("new-order", 50)])?;
    let emitted = wait_for_emitted(&host.log, 3);
    assert!(
        emitted
            .iter()
            .any(|(t, s, _)| t == "order.cancelled" && s == "new-order"),
        "{emitted:?}"
    );
    assert!(
        emitted.iter().all(|(_, s, _)| s != "old-order"),
        "the old order's timer acted: {emitted:?}"
    );
    let timers = all_events(&host.log)?
        .into_iter()
        .filter(|e| e.event_type == "refract.timer")
        .count();
    assert_eq!(timers, 1, "only the new order's timer fired");
    host.engine.shutdown();
    Ok(())
}

/// The `refract` binary on `data`, with `config`.
fn refract(data: &DataDir, config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refract"));
    command
        .arg("--data-dir")
        .arg(data.root())
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("REFRACT_DATA")
        .env_remove("REFRACT_CONFIG");
    command
}

fn spawn_host(data: &DataDir, config: &Path) -> Result<Child> {
    Ok(refract(data, config)
        .args(["run", "--bind", "127.0.0.1:0", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// The checkpoint of the saga's state, or 0 while it has none.
fn saga_checkpoint(data: &DataDir) -> u64 {
    let Ok(entries) = std::fs::read_dir(data.projector_dir("order-saga")) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "db"))
        .filter_map(|path| {
            rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?
                .query_row("SELECT log_offset FROM _refract_checkpoint", [], |row| {
                    row.get::<_, i64>(0)
                })
                .ok()
        })
        .max()
        .map_or(0, |offset| offset as u64)
}

/// Whether the saga's state database has been created (its `init` committed): only
/// events appended after that are acted on.
fn saga_state_created(data: &DataDir) -> bool {
    let Ok(entries) = std::fs::read_dir(data.projector_dir("order-saga")) else {
        return false;
    };
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "db"))
        .any(|path| {
            rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|conn| {
                    conn.query_row("SELECT count(*) FROM _refract_reactor", [], |row| {
                        row.get::<_, i64>(0)
                    })
                })
                .is_ok_and(|rows| rows == 1)
        })
}

/// Orders `from..to`: a third paid, a third refused, a third left to time out.
fn orders(from: usize, to: usize) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for i in from..to {
        let order = format!("order-{i}");
        match i % 3 {
            0 => events.push(placed(&order, 3_600_000)),
            1 => events.push(placed(&order, 3_600_000)),
            _ => events.push(placed(&order, 50)),
        }
    }
    for i in from..to {
        let order = format!("order-{i}");
        match i % 3 {
            0 => events.push(payment(&order, "payment.succeeded")),
            1 => events.push(payment(&order, "payment.failed")),
            _ => {}
        }
    }
    events
}

/// Emits the saga owes for orders `0..count`.
fn expected_emits(count: usize) -> usize {
    (0..count).map(|i| if i % 3 == 0 { 2 } else { 3 }).sum()
}

#[test]
fn kill_9_sweeps_leave_every_effect_exactly_once() -> Result {
    let seed: u64 = std::env::var("REFRACT_KILL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id())
        });
    println!("kill -9 schedule seed: {seed} (set REFRACT_KILL_SEED to replay it)");
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.plugins())?;
    std::fs::copy(
        support::guests::guest("order-saga"),
        data.plugins().join("order-saga.wasm"),
    )?;
    // Small batches: more commits for the kills to land between.
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, "[engine]\nbatch_size = 7\nexternal_poll_ms = 20\n")?;
    let log = EventLog::open(&data.events_db(), LogOptions::default())?;

    // The saga's first version emits only for events after its state was created.
    let mut host = spawn_host(&data, &config)?;
    support::host::wait_until(PATIENCE, "the saga's state to exist", || {
        saga_state_created(&data)
    });
    let total = 240;
    let per_round = total / 12;
    let mut state = seed;
    let mut next = 0;
    let mut kills_mid_batch = 0;
    for round in 0..12 {
        if round > 0 {
            host = spawn_host(&data, &config)?;
        }
        log.append(orders(next, next + per_round))?;
        next += per_round;
        // A pseudo-random pause from the seed (xorshift): 0 to 199 ms, and under 15 ms
        // in every third round. On an idle machine the host starts and catches up
        // within about 20 ms, so short pauses are what land kills before it has.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let longest = if round % 3 == 0 { 15 } else { 200 };
        std::thread::sleep(Duration::from_millis(state % longest));
        host.kill()?; // SIGKILL
        host.wait()?;
        let checkpoint = saga_checkpoint(&data);
        if checkpoint < log.head()? {
            kills_mid_batch += 1;
        }
        println!(
            "round {round}: killed at checkpoint {checkpoint} of {}",
            log.head()?
        );
    }
    let mut host = spawn_host(&data, &config)?;
    let want = expected_emits(total);
    support::host::wait_until_showing(
        PATIENCE,
        "every effect",
        || emitted(&log).is_ok_and(|e| e.len() >= want),
        || {
            let found = emitted(&log).unwrap_or_default();
            let mut by_type = BTreeMap::<String, usize>::new();
            for (event_type, _, _) in &found {
                *by_type.entry(event_type.clone()).or_default() += 1;
            }
            let timers = all_events(&log)
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.event_type == "refract.timer")
                .count();
            format!(
                "{} of {want} effects ({by_type:?}, {timers} timers); the saga at {} of {}",
                found.len(),
                saga_checkpoint(&data),
                log.head().unwrap_or_default()
            )
        },
    );
    let emitted = emitted(&log)?;
    let head = log.head()?;
    support::host::wait_until(PATIENCE, "the saga to catch up", || {
        saga_checkpoint(&data) >= head
    });
    host.kill()?;
    host.wait()?;
    let emitted_now = self::emitted(&log)?;
    assert_eq!(emitted_now.len(), want, "no extra effects");
    assert_eq!(emitted.len(), want);
    // Each source event's effects, once: no (type, stream, cause) twice.
    let mut seen = std::collections::BTreeSet::new();
    for effect in &emitted_now {
        assert!(seen.insert(effect.clone()), "emitted twice: {effect:?}");
    }
    for i in 0..total {
        let order = format!("order-{i}");
        let of = |t: &str, s: &str| {
            emitted_now
                .iter()
                .filter(|(et, es, _)| et == t && es == s)
                .count()
        };
        assert_eq!(
            of("payment.requested", &format!("payment-{order}")),
            1,
            "{order}"
        );
        let (confirmed, cancelled) = (of("order.confirmed", &order), of("order.cancelled", &order));
        assert_eq!(confirmed + cancelled, 1, "{order}");
        assert_eq!(
            of("stock.released", &format!("stock-{order}")),
            cancelled,
            "{order}"
        );
        assert_eq!(confirmed, usize::from(i % 3 == 0), "{order}");
    }
    // Each timer fired once.
    let timers = all_events(&log)?
        .into_iter()
        .filter(|e| e.event_type == "refract.timer")
        .count();
    assert_eq!(timers, total / 3);
    assert!(
        kills_mid_batch > 0,
        "no kill landed before the saga caught up; the test proved nothing"
    );
    Ok(())
}
