//! The order saga's scenario on a real engine, shared by the reactor SDKs' tests
//! (`tests/sdk_python.rs` for `order-saga-py`, `tests/sdk_typescript.rs` for
//! `order-saga-ts`): every twin of the Rust `order-saga` must emit exactly the same
//! events for the same orders.

use std::path::Path;
use std::time::Duration;

use refract::log::{EventLog, NewEvent, ReadQuery};
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long the scenario waits for the engine: liveness only, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(300);

/// Events a reactor emitted (ids `rx:…`), as (type, stream, data).
pub fn saga_emits(log: &EventLog) -> Result<Vec<(String, String, serde_json::Value)>> {
    let mut emitted = Vec::new();
    for event in log.read(&ReadQuery::default())? {
        let event = event?;
        if event.id.starts_with("rx:") {
            emitted.push((
                event.event_type,
                event.stream,
                serde_json::from_str(&event.data)?,
            ));
        }
    }
    Ok(emitted)
}

/// Deploys the order saga `component` (named `name`) on a real engine, from its
/// plugins folder under `dir`, and checks that it runs the saga as its Rust twin does:
/// a payment is requested and a timeout scheduled per order; a success confirms (and
/// cancels the timeout); a failure and a fired timeout each cancel the order and
/// release its stock; a late payment changes nothing; the timeout fires once, on the
/// reactor's own timer stream.
///
/// `compile_cache` must already hold the component's compilation (load it through a
/// runtime with that cache first): a cold compile inside the engine, beside other
/// tests' compilations, could overrun the compile timeout on a loaded machine.
pub fn assert_order_saga(dir: &Path, name: &str, component: &Path, compile_cache: &Path) -> Result {
    let data = refract::data_dir::DataDir::new(dir.join("data"));
    std::fs::create_dir_all(data.plugins())?;
    std::fs::copy(component, data.plugins().join(format!("{name}.wasm")))?;
    std::os::unix::fs::symlink(compile_cache, data.cache())?;
    let config = refract::config::Config::parse("", Path::new("refract.toml"))?;
    let host = super::host::start_engine(&data, config)?;
    let checkpoint = |engine: &refract::engine::Engine| {
        let view = engine.projector(name)?;
        let active = view.active_version.clone()?;
        let version = view.versions.iter().find(|v| v.version == active)?;
        Some(version.status.as_ref()?.checkpoint)
    };
    super::host::wait_until(PATIENCE, &format!("the saga {name} to start"), || {
        checkpoint(&host.engine).is_some()
    });
    let placed = |order: &str, timeout_ms: u64| {
        NewEvent::new(
            order,
            "order.placed",
            json!({"customer": "ann", "total": 1200, "payment_timeout_ms": timeout_ms}).to_string(),
        )
    };
    let payment = |order: &str, outcome: &str| {
        NewEvent::new(
            format!("payment-{order}"),
            outcome,
            json!({"order_id": order, "reason": "card declined"}).to_string(),
        )
    };
    let hour = 3_600_000;
    host.log.append(vec![
        placed("order-1", hour),
        placed("order-2", hour),
        placed("order-3", 300),
    ])?;
    host.log.append(vec![
        payment("order-1", "payment.succeeded"),
        payment("order-2", "payment.failed"),
    ])?;
    // 3 payment requests, 1 confirmation, 2 cancellations each with a stock release.
    let mut emitted = super::host::wait_for(PATIENCE, "8 emitted events", || {
        saga_emits(&host.log).ok().filter(|e| e.len() >= 8)
    });
    host.log
        .append(vec![payment("order-3", "payment.succeeded")])?;
    let head = host.log.head()?;
    super::host::wait_until(PATIENCE, "the saga to catch up", || {
        checkpoint(&host.engine).is_some_and(|c| c >= head)
    });
    assert_eq!(
        saga_emits(&host.log)?.len(),
        8,
        "a late payment emits nothing"
    );
    emitted.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let request = |order: &str| {
        (
            "payment.requested".to_owned(),
            format!("payment-{order}"),
            json!({"order_id": order, "amount": 1200, "customer": "ann"}),
        )
    };
    let expected = vec![
        (
            "order.cancelled".to_owned(),
            "order-2".to_owned(),
            json!({"reason": "card declined"}),
        ),
        (
            "order.cancelled".to_owned(),
            "order-3".to_owned(),
            json!({"reason": "payment timed out"}),
        ),
        (
            "order.confirmed".to_owned(),
            "order-1".to_owned(),
            json!({"order_id": "order-1"}),
        ),
        request("order-1"),
        request("order-2"),
        request("order-3"),
        (
            "stock.released".to_owned(),
            "stock-order-2".to_owned(),
            json!({"order_id": "order-2", "reason": "card declined"}),
        ),
        (
            "stock.released".to_owned(),
            "stock-order-3".to_owned(),
            json!({"order_id": "order-3", "reason": "payment timed out"}),
        ),
    ];
    assert_eq!(emitted, expected, "the emits of {name}");
    // The timeout fired once, on the reactor's own timer stream.
    let timers = host
        .log
        .read(&ReadQuery::default())?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.event_type == "refract.timer")
        .map(|e| e.stream)
        .collect::<Vec<_>>();
    assert_eq!(timers, [format!("refract.timer/{name}")]);
    host.engine.shutdown();
    Ok(())
}

/// Deploys the reactor `refract new --kind reactor` scaffolds (`component`, named
/// `name`) on a real engine, from its plugins folder under `dir`, and checks that it
/// reacts: a user registered twice is welcomed once (`welcome.requested`), and the
/// follow-up timer fires on the reactor's own timer stream and is turned into
/// `follow_up.requested`, each emit caused by its source event.
///
/// The engine compiles the component under a liveness-only compile budget; a
/// `compile_cache` (shared by the test binary) keeps that compile for later runs.
/// Builds the reactor project at `project` with its manifest's command and loads the
/// component once through `runtime` (filling the compile cache the engine then reads),
/// checking that it is the reactor `name` declaring the scaffold's two emits. Returns
/// the component's path.
pub fn build_scaffolded_reactor(
    project: &Path,
    runtime: &refract::runtime::Runtime,
    name: &str,
) -> Result<std::path::PathBuf> {
    let manifest = refract::devkit::manifest::Manifest::load(project)?;
    assert_eq!(manifest.kind, refract::devkit::manifest::Kind::Reactor);
    let built = refract::devkit::builder::build(&manifest)?;
    let loaded = runtime.load(&std::fs::read(&built.component)?)?;
    assert_eq!(loaded.info().name, name);
    assert_eq!(
        loaded.reactor().map(|r| r.emits.clone()),
        Some(vec![
            "welcome.requested".to_owned(),
            "follow_up.requested".to_owned()
        ]),
        "loaded as a reactor"
    );
    Ok(built.component)
}

pub fn assert_scaffolded_reactor(
    dir: &Path,
    name: &str,
    component: &Path,
    compile_cache: Option<&Path>,
) -> Result {
    let data = refract::data_dir::DataDir::new(dir.join("data"));
    std::fs::create_dir_all(data.plugins())?;
    std::fs::copy(component, data.plugins().join(format!("{name}.wasm")))?;
    if let Some(cache) = compile_cache {
        std::fs::create_dir_all(cache)?;
        std::os::unix::fs::symlink(cache, data.cache())?;
    }
    let config = refract::config::Config::parse(
        "[limits]\ncompile_timeout_ms = 900000\n",
        Path::new("refract.toml"),
    )?;
    let host = super::host::start_engine(&data, config)?;
    // Its first version acts only on events appended after its state was created.
    super::host::wait_until(PATIENCE, &format!("the reactor {name} to start"), || {
        refract::reactors::state_created(&data.projector_dir(name))
    });
    let registered = || {
        NewEvent::new(
            "user-ann",
            "user.registered",
            json!({"user": "ann", "email": "ann@example.com", "follow_up_ms": 200}).to_string(),
        )
    };
    let offsets = host.log.append(vec![registered(), registered()])?;
    let emitted = super::host::wait_for(PATIENCE, "the welcome and the follow-up", || {
        saga_emits(&host.log).ok().filter(|e| e.len() >= 2)
    });
    let mail = json!({"user": "ann", "email": "ann@example.com"});
    assert_eq!(
        emitted,
        [
            (
                "welcome.requested".to_owned(),
                "email-ann".to_owned(),
                mail.clone()
            ),
            (
                "follow_up.requested".to_owned(),
                "email-ann".to_owned(),
                mail
            ),
        ],
        "the emits of {name}"
    );
    let events: Vec<_> = host
        .log
        .read(&ReadQuery::default())?
        .collect::<std::result::Result<_, _>>()?;
    let timers: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "refract.timer")
        .collect();
    assert_eq!(timers.len(), 1, "one follow-up timer fired: {timers:?}");
    assert_eq!(timers[0].stream, format!("refract.timer/{name}"));
    // Each emit names its source: the first registration, then the timer event.
    let causes: Vec<String> = events
        .iter()
        .filter(|e| e.id.starts_with("rx:"))
        .map(|e| {
            let metadata: serde_json::Value =
                serde_json::from_str(e.metadata.as_deref().unwrap_or("{}")).unwrap_or_default();
            metadata["causation_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let first = events
        .iter()
        .find(|e| e.offset == offsets[0])
        .ok_or("the first registration")?;
    assert_eq!(causes, [first.id.clone(), timers[0].id.clone()]);
    host.engine.shutdown();
    Ok(())
}
