//! The Python SDK in the real sandbox: projectors built from source with the pinned
//! componentize-py (`tests/support/guests_py.rs`), loaded by the host's runtime, and
//! replayed by the engine's own loop.
//!
//! - The Rust, TypeScript and Python `balances` build identical read models from one
//!   log, by checksum.
//! - A Python exception becomes a handle error naming the event's offset.
//! - `py-probe` drives every path of the SDK's component glue, and proves the packed
//!   writes of `refract:projector@0.2.0` end to end: integer extremes, reals bit for
//!   bit, empty and multi-byte text, blobs, NULLs, a write of 998 parameters and
//!   writes spanning several flushes come back exactly, and an int past 64 bits fails
//!   its event clearly.
//! - `refract new --lang python` scaffolds a project that passes its native tests and,
//!   built by `refract test` with its own manifest, its golden fixture in the real
//!   sandbox; the example's fixture holds for it and for its Rust twin.
//! - The Python reactor `order-saga-py`, deployed on a real engine, runs the order
//!   saga's happy, failure and timeout paths, emit for emit like its Rust twin.
//! - `refract new --lang python --kind reactor` scaffolds a reactor that passes its
//!   native tests, builds with its manifest's command into a component the host loads
//!   as a reactor, and reacts on a real engine (emits, and a fired timer).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

use refract::engine::{BatchLimits, Projection, Step};
use refract::log::{EventLog, LogOptions, NewEvent};
use refract::runtime::{
    ContractVersion, DbOptions, EventBatch, EventFields, LoadedProjector, ProjectorError,
    ProjectorInstance, Runtime, RuntimeConfig, SandboxLimits,
};
use rusqlite::Connection;
use support::guests_py::{
    Manifest, checked_venv, compile_cache_dir, python_guest, python_guest_bytes, run_in,
    workspace_root,
};
use support::{cli, probe_values};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The compile budget of these tests: a Python or TypeScript component compiles in
/// seconds on an idle machine, but this binary compiles several at once on a machine
/// shared with other builds, so the deadline here is for liveness only (as in
/// `tests/js_component.rs`).
const COMPILE_TIMEOUT_MS: u64 = 900_000;

/// The sandbox limits of these tests: the defaults, with the liveness-only compile
/// budget.
fn limits() -> SandboxLimits {
    SandboxLimits {
        compile_timeout_ms: COMPILE_TIMEOUT_MS,
        ..SandboxLimits::default()
    }
}

/// Events in the shared log: the balances workload, then a few that exercise escapes,
/// non-ASCII text, metadata and money for an account never opened.
const WORKLOAD_EVENTS: usize = 3_000;

/// The process's runtime. Its compile cache outlives the process: a Python component
/// takes many seconds to compile, and a fraction of one to load once cached.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(compile_cache_dir()),
            limits: limits(),
        })
        .unwrap_or_else(|e| panic!("cannot start the runtime: {e}"))
    })
}

/// Guest `name` (`balances` is the Rust one; the others are Python guests), loaded once
/// per process: tests running side by side share one compilation.
fn load(name: &str) -> Result<LoadedProjector> {
    static LOADED: Mutex<BTreeMap<String, LoadedProjector>> = Mutex::new(BTreeMap::new());
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(projector) = loaded.get(name) {
        return Ok(projector.clone());
    }
    let wasm = if name == "balances" {
        support::guests::guest_bytes(name)
    } else {
        python_guest_bytes(name)
    };
    let projector = runtime().load(&wasm)?;
    loaded.insert(name.to_owned(), projector.clone());
    Ok(projector)
}

/// The log both projectors replay.
fn balances_log(dir: &Path) -> Result<(EventLog, u64)> {
    let log = EventLog::open(&dir.join("events.db"), LogOptions::default())?;
    let mut events: Vec<NewEvent> = refract::workload::balances(11, WORKLOAD_EVENTS).collect();
    events.extend([
        NewEvent::new(
            "account-acc-0001",
            "account.opened",
            r#"{"account":"acc-0001","owner":"Zoë \"Z\" O'Neil 🎉"}"#,
        )
        .with_metadata(r#"{"correlation":"ü-1"}"#),
        NewEvent::new(
            "account-acc-9999",
            "money.deposited",
            r#"{"account":"acc-9999","amount":4611686018427387904}"#,
        ),
        NewEvent::new(
            "account-acc-9999",
            "money.withdrawn",
            r#"{"account":"acc-9999","amount":1,"note":"ignored"}"#,
        ),
        NewEvent::new("account-acc-0002", "account.closed", "{}"),
    ]);
    let offsets = log.append(events)?;
    let head = offsets.last().copied().ok_or("nothing appended")?;
    Ok((log, head))
}

/// Replays the log through `loaded` into a fresh `db`, as `refract project` does.
fn replay(loaded: &LoadedProjector, log: &EventLog, db: &Path, head: u64) -> Result {
    let mut projection = Projection::open(
        loaded.clone(),
        db,
        DbOptions::replay(),
        log.reader()?,
        BatchLimits::default(),
    )?;
    while projection.step(Some(head))? != Step::CaughtUp {}
    projection.sync()?;
    assert_eq!(projection.checkpoint(), head);
    Ok(())
}

/// `balances-ts`, built from source with the pinned npm toolchain, loaded through the
/// compile cache the TypeScript tests use (`tests/sdk_typescript.rs`), so the two test
/// binaries compile its JavaScript engine once between them.
fn load_balances_ts() -> Result<LoadedProjector> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(workspace_root().join("target/ts-guest-cache")),
        limits: limits(),
    })?;
    Ok(runtime.load(&support::guests_ts::ts_guest_bytes("balances-ts"))?)
}

/// The SQL that created each projector table and index, by name.
fn schema(db: &Path) -> Result<Vec<(String, Option<String>)>> {
    let conn = Connection::open(db)?;
    let mut statement = conn.prepare(
        "SELECT name, sql FROM sqlite_schema WHERE name NOT LIKE '\\_refract\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The issue's identity proof: `balances` in Rust, TypeScript and Python, each built
/// from source, replay one log (the benchmark's workload, then text and numbers that
/// are easy to get wrong) into read models that are identical by the benchmark's
/// checksum, schema and `refract diff`.
#[test]
fn rust_typescript_and_python_balances_build_identical_read_models() -> Result {
    let dir = tempfile::tempdir()?;
    let (log, head) = balances_log(dir.path())?;
    let rust = load("balances")?;
    let builds = [
        ("Python", load("balances-py")?),
        ("TypeScript", load_balances_ts()?),
    ];
    let rust_db = dir.path().join("rust.db");
    replay(&rust, &log, &rust_db, head)?;
    let rust_sum = refract::bench::checksum(&rust_db)?;
    // 1,000 opened accounts plus the one that only ever saw money.
    assert_eq!((rust_sum.rows, rust_sum.checkpoint), (1_001, head));

    for (language, loaded) in builds {
        assert_eq!(
            loaded.info(),
            rust.info(),
            "{language}: the metadata differs from the Rust one's"
        );
        let db = dir.path().join(format!("{language}.db"));
        replay(&loaded, &log, &db, head)?;
        assert_eq!(
            refract::bench::checksum(&db)?,
            rust_sum,
            "the {language} balances built a different read model than the Rust one"
        );
        assert_eq!(
            schema(&db)?,
            schema(&rust_db)?,
            "{language}: another schema"
        );
        let diffs = refract::engine::diff::compare(&rust_db, &db, 5)?;
        assert!(
            !diffs.is_empty() && diffs.iter().all(|d| d.same()),
            "{language}: {diffs:#?}"
        );
        let conn = Connection::open(&db)?;
        let (owner, balance): (String, i64) = conn.query_row(
            "SELECT owner, balance FROM balances WHERE account = 'acc-0001'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        assert_eq!(owner, "Zoë \"Z\" O'Neil 🎉", "{language}");
        assert!(balance != 0, "acc-0001 saw money in the workload");
        let big: (Option<String>, i64, i64) = conn.query_row(
            "SELECT owner, balance, tx_count FROM balances WHERE account = 'acc-9999'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        assert_eq!(big, (None, (1 << 62) - 1, 2), "{language}: exact past 2^53");
    }
    Ok(())
}

/// Starts `loaded` on a fresh database in `dir`, with a host-owned table beside the
/// projector's, as the engine keeps its checkpoint.
fn start(loaded: &LoadedProjector, dir: &Path) -> Result<ProjectorInstance> {
    let mut instance = loaded.instantiate(&dir.join("model.db"), DbOptions::live())?;
    instance.init(|conn| conn.execute_batch("CREATE TABLE _refract_checkpoint (id INTEGER)"))?;
    Ok(instance)
}

/// A batch of (stream, type, data) events from offset `first`.
fn batch(first: u64, events: &[(&str, &str, &str)]) -> EventBatch {
    let mut batch = EventBatch::new();
    for (i, (stream, event_type, data)) in events.iter().enumerate() {
        let offset = first + i as u64;
        let id = format!("00000000-0000-7000-8000-{offset:012x}");
        batch.push(
            offset,
            &id,
            stream,
            offset,
            event_type,
            data,
            None,
            1_700_000_000_000_000,
        );
    }
    batch
}

#[test]
fn a_python_exception_becomes_a_handle_error_naming_its_offset() -> Result {
    let dir = tempfile::tempdir()?;
    let loaded = load("balances-py")?;
    let mut instance = start(&loaded, dir.path())?;
    let deposit = r#"{"account":"acc-1","amount":100}"#;
    let bad = batch(
        41,
        &[
            ("acc-1", "money.deposited", deposit),
            (
                "acc-1",
                "money.deposited",
                r#"{"account":"acc-1","amount":"lots"}"#,
            ),
            ("acc-1", "money.deposited", deposit),
        ],
    );
    let error = instance
        .apply(&bad, |_| Ok(()))
        .expect_err("a deposit of \"lots\" must fail the batch");
    let ProjectorError::Handler {
        offset, message, ..
    } = &error
    else {
        panic!("expected a handle error, got {error}");
    };
    assert_eq!(*offset, 42, "{error}");
    assert!(
        message.starts_with(
            "TypeError: amount must be an integer number of cents, not 'lots' (at balances.py:"
        ) && message.ends_with(", in handle)"),
        "the message carries the traceback's last line and the raising line: {message}"
    );
    let rows: i64 =
        instance
            .host_connection()
            .query_row("SELECT count(*) FROM balances", [], |row| row.get(0))?;
    assert_eq!(rows, 0, "the failed batch rolled back whole");

    // The same instance goes on: the SDK forgot the failed batch's writes.
    instance.apply(&batch(50, &[("acc-1", "money.deposited", deposit)]), |_| {
        Ok(())
    })?;
    let row: (i64, i64, i64) = instance.host_connection().query_row(
        "SELECT balance, tx_count, last_offset FROM balances",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    assert_eq!(row, (100, 1, 50));
    Ok(())
}

/// The `results` table of the probe, by offset.
fn results(instance: &ProjectorInstance) -> Result<Vec<(i64, String, String)>> {
    let conn = instance.host_connection();
    let mut statement =
        conn.prepare("SELECT offset, what, CAST(value AS TEXT) FROM results ORDER BY offset")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[test]
fn the_python_sdk_glue_reaches_every_host_call() -> Result {
    let dir = tempfile::tempdir()?;
    let loaded = load("py-probe")?;
    assert_eq!(loaded.info().name, "py-probe");
    assert_eq!(loaded.info().subscriptions.stream_prefixes, ["probe-"]);
    let mut instance = start(&loaded, dir.path())?;

    let mut events = EventBatch::new();
    events.push(
        7,
        "id-7",
        "probe-1",
        9_007_199_254_740_993,
        "echo",
        r#"{"big":9007199254740993}"#,
        Some(r#"{"m":"ü"}"#),
        1_700_000_000_123_456,
    );
    let more = batch(
        8,
        &[
            ("probe-1", "count", "{}"),
            ("probe-1", "kinds", "{}"),
            ("probe-1", "claim", r#"{"name":"x"}"#),
            ("probe-1", "claim", r#"{"name":"x"}"#),
            ("probe-1", "denied", "{}"),
            ("probe-1", "invalid", "{}"),
            ("probe-1", "log", "{}"),
        ],
    );
    for event in more.iter() {
        events.push(
            event.offset,
            event.id,
            event.stream,
            event.stream_version,
            event.event_type,
            event.data,
            None,
            event.recorded_at_micros,
        );
    }
    instance.apply(&events, |_| Ok(()))?;
    let s = |text: &str| text.to_owned();
    assert_eq!(
        results(&instance)?,
        [
            (0, s("init"), s("deferred")),
            (
                7,
                s("echo"),
                s("id-7|probe-1|9007199254740993|1700000000123456|\
                   2023-11-14T22:13:20.123456+00:00|9007199254740993|{\"m\":\"ü\"}")
            ),
            (8, s("count"), s("2")),
            (
                9,
                s("kinds"),
                s("int,float,str,bytes,NoneType|\
                   (9223372036854775807, 0.5, 'Zoë 🎉', b'\\x00\\xff', None)")
            ),
            (10, s("claim"), s("claimed")),
            (11, s("claim"), s("taken (constraint)")),
            (12, s("denied"), s("denied")),
            (13, s("invalid"), s("invalid")),
            (14, s("log"), s("logged")),
        ]
    );

    // A deferred write that fails at the flush names the event that issued it, even
    // though the events after it ran; an exception names its own event.
    let failing = batch(
        20,
        &[
            ("probe-1", "positive", r#"{"n":1}"#),
            ("probe-1", "positive", r#"{"n":-1}"#),
            ("probe-1", "positive", r#"{"n":2}"#),
        ],
    );
    match instance.apply(&failing, |_| Ok(())) {
        Err(ProjectorError::Handler {
            offset, message, ..
        }) => {
            assert_eq!(offset, 21, "{message}");
            assert!(
                message.starts_with("deferred write failed: constraint: CHECK constraint failed")
                    && message.contains("(statement: INSERT INTO positive (n) VALUES (?1))"),
                "{message}"
            );
        }
        other => panic!("expected a handle error at offset 21, got {other:?}"),
    }
    let raising = batch(30, &[("probe-1", "log", "{}"), ("probe-2", "raise", "{}")]);
    match instance.apply(&raising, |_| Ok(())) {
        Err(ProjectorError::Handler {
            offset, message, ..
        }) => {
            assert_eq!(offset, 31);
            assert!(
                message.starts_with("ValueError: asked to fail: no reason (at probe.py:"),
                "{message}"
            );
        }
        other => panic!("expected a handle error at offset 31, got {other:?}"),
    }
    let positive: i64 =
        instance
            .host_connection()
            .query_row("SELECT count(*) FROM positive", [], |row| row.get(0))?;
    assert_eq!(positive, 0, "both failed batches rolled back");
    Ok(())
}

#[test]
fn packed_writes_carry_every_value_through_the_host_exactly() -> Result {
    let dir = tempfile::tempdir()?;
    let loaded = load("py-probe")?;
    assert_eq!(loaded.info().contract, ContractVersion::V0_2);
    assert_eq!(
        loaded.info().reads,
        EventFields::ALL,
        "reads defaults to both"
    );
    assert_eq!(
        load("balances-py")?.info().reads,
        EventFields::NONE,
        "balances-py's `reads=()` reaches the host"
    );
    let mut instance = start(&loaded, dir.path())?;
    instance.apply(
        &batch(
            100,
            &[
                ("probe-1", "values", "{}"),
                ("probe-1", "wide", "{}"),
                ("probe-1", "many", "{}"),
            ],
        ),
        |_| Ok(()),
    )?;
    let conn = instance.host_connection();
    probe_values::assert_values(conn, "Python")?;
    probe_values::assert_wide(conn, "Python")?;
    probe_values::assert_many(conn, "Python")?;

    // An int past 2^63 - 1 fails its event with the parameter named, never a truncated
    // value; the batch rolls back whole.
    let failing = batch(
        200,
        &[("probe-1", "values", "{}"), ("probe-1", "overflow", "{}")],
    );
    match instance.apply(&failing, |_| Ok(())) {
        Err(ProjectorError::Handler {
            offset, message, ..
        }) => {
            assert_eq!(offset, 201, "{message}");
            assert!(
                message.starts_with(
                    "ValueError: parameter ?2 is 9223372036854775808, outside SQLite's 64-bit \
                     integer range"
                ),
                "{message}"
            );
        }
        other => panic!("expected a handle error at offset 201, got {other:?}"),
    }
    let rows: i64 =
        instance
            .host_connection()
            .query_row("SELECT count(*) FROM vals", [], |row| row.get(0))?;
    assert_eq!(rows, 20 + 499 + 10_005, "the failed batch wrote nothing");
    Ok(())
}

#[test]
fn refract_new_python_scaffolds_a_project_that_refract_test_passes() -> Result {
    let root = workspace_root();
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("demo-py");
    let project_arg = project.to_str().ok_or("a non-UTF-8 temp path")?;
    let created = cli::refract_ok(
        dir.path(),
        &["new", "demo-py", "--lang", "python", "--dir", project_arg],
    )?;
    assert!(
        created.contains("pip install --require-hashes"),
        "{created}"
    );
    let manifest = Manifest::read(&project)?;
    assert_eq!(manifest.name, "demo-py");
    for watched in &manifest.watch {
        assert!(
            project.join(watched).exists(),
            "the manifest watches {watched}, which is not there"
        );
    }
    // The template pins the same toolchain as the SDK.
    let pins = |path: &Path| -> Result<Vec<String>> {
        Ok(std::fs::read_to_string(path)?
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .map(str::to_owned)
            .collect())
    };
    assert_eq!(
        pins(&project.join("requirements.txt"))?,
        pins(&root.join(support::guests_py::REQUIREMENTS))?
    );

    // The project's `.venv` is the SDK's pinned toolchain, linked rather than installed
    // again; the README's install command would create the same thing.
    std::os::unix::fs::symlink(checked_venv(), project.join(".venv"))?;
    let python = checked_venv()
        .join("bin/python3")
        .to_string_lossy()
        .into_owned();
    let unit = run_in(
        &project,
        &[
            python,
            "-m".into(),
            "unittest".into(),
            "discover".into(),
            "-s".into(),
            "tests".into(),
        ],
    )?;
    assert!(
        unit.contains("Ran 2 tests") && unit.contains("OK"),
        "{unit}"
    );
    // `refract test` builds with the manifest's command and runs the golden fixture in
    // the real sandbox, with the liveness-only compile budget.
    std::fs::write(
        project.join("refract.toml"),
        format!("[limits]\ncompile_timeout_ms = {COMPILE_TIMEOUT_MS}\n"),
    )?;
    let tested = cli::refract_ok(&project, &["test"])?;
    assert!(
        tested.contains("testing `demo-py`") && tested.contains("fixtures: 1 passed, 0 failed"),
        "{tested}"
    );
    Ok(())
}

#[test]
fn the_python_example_and_its_rust_twin_pass_its_golden_fixture() -> Result {
    let project = workspace_root().join("example-plugins/balances-py");
    // A componentize-py component takes Cranelift tens of seconds on a loaded 2-core
    // machine (the whole suite runs at once): the fixture is what is tested here, not
    // the compile limit (which `sandbox.rs` holds to its word).
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("refract.toml");
    std::fs::write(&config, "[limits]\ncompile_timeout_ms = 600000\n")?;
    let config = config.to_str().ok_or("a non-UTF-8 path")?.to_owned();
    // The same fixture through both: the expectations hold for each.
    for plugin in [
        python_guest("balances-py"),
        support::guests::guest("balances"),
    ] {
        let plugin = plugin.to_str().ok_or("a non-UTF-8 path")?.to_owned();
        let tested = cli::refract_ok(
            &project,
            &["test", "--plugin", &plugin, "--config", &config],
        )?;
        assert!(
            tested.contains("testing `balances`") && tested.contains(" 0 failed"),
            "{tested}"
        );
    }
    Ok(())
}

/// The SDK's and the example's native unit tests (`python3 -m unittest`), so that
/// `cargo test --workspace` runs them too. They need only Python and its `sqlite3`.
#[test]
fn the_python_unit_tests_pass() -> Result {
    let root = workspace_root();
    let python = checked_venv()
        .join("bin/python3")
        .to_string_lossy()
        .into_owned();
    for (dir, args) in [
        ("plugins-sdk/python", &["-m", "unittest"][..]),
        (
            "example-plugins/balances-py",
            &["-m", "unittest", "discover", "-s", "tests"][..],
        ),
        (
            "example-plugins/order-saga-py",
            &["-m", "unittest", "discover", "-s", "tests"][..],
        ),
    ] {
        let argv: Vec<String> = std::iter::once(python.clone())
            .chain(args.iter().map(|arg| (*arg).to_owned()))
            .collect();
        let output = run_in(&root.join(dir), &argv)?;
        let ran = output
            .lines()
            .find_map(|line| {
                line.strip_prefix("Ran ")?
                    .split(' ')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .ok_or_else(|| format!("no `Ran N tests` line in {dir}:\n{output}"))?;
        assert!(ran >= 5 && output.contains("\nOK"), "{dir}:\n{output}");
    }
    Ok(())
}

/// The Python reactor, deployed on a real engine from its plugins folder, runs the
/// order saga as its Rust twin does (`support::saga::assert_order_saga`): a payment is
/// requested and a timeout scheduled per order; a success confirms (and cancels the
/// timeout); a failure and a fired timeout each cancel the order and release its
/// stock, and a late payment changes nothing.
#[test]
fn the_python_order_saga_reactor_confirms_cancels_and_times_out() -> Result {
    let dir = tempfile::tempdir()?;
    // Compiled once, in turn with the other tests' compilations, into the shared
    // compile cache, which the engine then reads.
    load("order-saga-py")?;
    support::saga::assert_order_saga(
        dir.path(),
        "order-saga-py",
        &python_guest("order-saga-py"),
        &compile_cache_dir(),
    )
}

/// `refract new --lang python --kind reactor`: the scaffold's native tests
/// (`TestReactor`) pass; its manifest's build (componentize-py against the reactor
/// world) makes a component the host loads as a reactor declaring its emits; deployed
/// on a real engine, it welcomes a user once and turns its fired timer into a
/// follow-up.
#[test]
fn refract_new_python_reactor_scaffolds_a_reactor_that_reacts_on_a_real_engine() -> Result {
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("demo-saga-py");
    let project_arg = project.to_str().ok_or("a non-UTF-8 temp path")?;
    let created = cli::refract_ok(
        dir.path(),
        &[
            "new",
            "demo-saga-py",
            "--lang",
            "python",
            "--kind",
            "reactor",
            "--dir",
            project_arg,
        ],
    )?;
    assert!(
        created.contains("pip install --require-hashes")
            && created.contains("refract deploy dist/demo-saga-py.wasm"),
        "{created}"
    );
    // The project's `.venv` is the SDK's pinned toolchain, linked rather than installed
    // again; the README's install command would create the same thing.
    std::os::unix::fs::symlink(checked_venv(), project.join(".venv"))?;
    let python = checked_venv()
        .join("bin/python3")
        .to_string_lossy()
        .into_owned();
    let unit = run_in(
        &project,
        &[
            python,
            "-m".into(),
            "unittest".into(),
            "discover".into(),
            "-s".into(),
            "tests".into(),
        ],
    )?;
    assert!(unit.contains("Ran 1 test") && unit.contains("OK"), "{unit}");

    let component = support::saga::build_scaffolded_reactor(&project, runtime(), "demo-saga-py")?;
    let engine_dir = tempfile::tempdir()?;
    support::saga::assert_scaffolded_reactor(
        engine_dir.path(),
        "demo-saga-py",
        &component,
        Some(&compile_cache_dir()),
    )
}
