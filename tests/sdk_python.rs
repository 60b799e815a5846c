//! The Python SDK in the real sandbox: projectors built from source with the pinned
//! componentize-py (`tests/support/guests_py.rs`), loaded by the host's runtime, and
//! replayed by the engine's own loop.
//!
//! - The Python `balances` builds the same read model as the Rust one, by checksum.
//! - A Python exception becomes a handle error naming the event's offset.
//! - `py-probe` drives every path of the SDK's component glue.
//! - The scaffold template (`plugins-sdk/templates/python`), copied as `refract new`
//!   would, builds with its own manifest, passes its native tests, and its golden
//!   fixture holds in the real sandbox; so does the example's.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use refract::engine::{BatchLimits, Projection, Step};
use refract::log::{EventLog, LogOptions, NewEvent};
use refract::runtime::{
    DbOptions, EventBatch, LoadedProjector, ProjectorError, ProjectorInstance, Runtime,
    RuntimeConfig, SandboxLimits,
};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Deserialize;
use support::guests_py::{
    Manifest, checked_venv, compile_cache_dir, python_guest_bytes, run_in, workspace_root,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

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
            limits: SandboxLimits::default(),
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

#[test]
fn python_and_rust_balances_build_identical_read_models() -> Result {
    let dir = tempfile::tempdir()?;
    let (log, head) = balances_log(dir.path())?;
    let rust = load("balances")?;
    let python = load("balances-py")?;
    assert_eq!(
        python.info(),
        rust.info(),
        "the two say the same about themselves"
    );

    let (rust_db, python_db) = (dir.path().join("rust.db"), dir.path().join("python.db"));
    replay(&rust, &log, &rust_db, head)?;
    replay(&python, &log, &python_db, head)?;

    let rust_sum = refract::bench::checksum(&rust_db)?;
    let python_sum = refract::bench::checksum(&python_db)?;
    assert_eq!(
        python_sum, rust_sum,
        "the Python balances built a different read model than the Rust one"
    );
    // 1,000 opened accounts plus the one that only ever saw money.
    assert_eq!((rust_sum.rows, rust_sum.checkpoint), (1_001, head));
    let conn = Connection::open(&python_db)?;
    let (owner, balance): (String, i64) = conn.query_row(
        "SELECT owner, balance FROM balances WHERE account = 'acc-0001'",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    assert_eq!(owner, "Zoë \"Z\" O'Neil 🎉");
    assert!(balance != 0, "acc-0001 saw money in the workload");
    let big: (Option<String>, i64, i64) = conn.query_row(
        "SELECT owner, balance, tx_count FROM balances WHERE account = 'acc-9999'",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    assert_eq!(big, (None, (1 << 62) - 1, 2), "exact past 2^53");
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

/// A golden fixture's expectation: a query and its rows, as `refract test` reads them.
#[derive(Deserialize)]
struct Expectation {
    sql: String,
    rows: Vec<Vec<serde_json::Value>>,
}

/// One line of a fixture's `.jsonl`, in the shape `refract append --file` takes.
#[derive(Deserialize)]
struct FixtureEvent {
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
    metadata: Option<serde_json::Value>,
    id: Option<String>,
}

/// Checks the golden fixture `jsonl` (with its `.expect.json`) against `loaded`: the
/// events go into a fresh log, the engine's replay builds a fresh read model, and every
/// query must return exactly the expected rows. Until `refract test` exists, this is
/// how the fixtures of the template and the example are kept honest.
fn check_fixture(loaded: &LoadedProjector, jsonl: &Path) -> Result {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open(&dir.path().join("events.db"), LogOptions::default())?;
    let mut events = Vec::new();
    for line in std::fs::read_to_string(jsonl)?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let event: FixtureEvent = serde_json::from_str(line)?;
        let mut new = NewEvent::new(event.stream, event.event_type, event.data.to_string());
        if let Some(metadata) = event.metadata {
            new = new.with_metadata(metadata.to_string());
        }
        if let Some(id) = event.id {
            new = new.with_id(id);
        }
        events.push(new);
    }
    let head = log
        .append(events)?
        .last()
        .copied()
        .ok_or("an empty fixture")?;
    let db = dir.path().join("model.db");
    replay(loaded, &log, &db, head)?;

    let expect_path = jsonl.with_extension("expect.json");
    let expectations: Vec<Expectation> =
        serde_json::from_str(&std::fs::read_to_string(&expect_path)?)?;
    assert!(
        !expectations.is_empty(),
        "{} expects nothing",
        expect_path.display()
    );
    let conn = Connection::open(&db)?;
    for expectation in expectations {
        let mut statement = conn.prepare(&expectation.sql)?;
        let width = statement.column_count();
        let mut rows = statement.query([])?;
        let mut actual = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for index in 0..width {
                values.push(match row.get_ref(index)? {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(i) => i.into(),
                    ValueRef::Real(r) => r.into(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                    ValueRef::Blob(_) => return Err("a fixture cannot expect a blob".into()),
                });
            }
            actual.push(values);
        }
        assert_eq!(
            actual,
            expectation.rows,
            "{}: `{}` returned other rows",
            jsonl.display(),
            expectation.sql
        );
    }
    Ok(())
}

/// The `.jsonl` fixtures under the manifest's `tests` entries.
fn fixtures(project: &Path, tests: &[String]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in tests {
        let path = project.join(entry);
        if path.is_dir() {
            for file in std::fs::read_dir(&path)? {
                let file = file?.path();
                if file.extension().is_some_and(|ext| ext == "jsonl") {
                    found.push(file);
                }
            }
        } else {
            found.push(path);
        }
    }
    found.sort();
    assert!(
        !found.is_empty(),
        "no fixture under {tests:?} in {}",
        project.display()
    );
    Ok(found)
}

/// Copies the template at `from` into `to` as `refract new` does: placeholders replaced
/// in contents and names, a trailing `.tmpl` dropped.
fn scaffold(from: &Path, to: &Path, vars: &[(&str, String)]) -> Result {
    let fill = |text: &str| {
        vars.iter().fold(text.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
    };
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = fill(&entry.file_name().to_string_lossy());
        let target = to.join(name.strip_suffix(".tmpl").unwrap_or(&name));
        if entry.file_type()?.is_dir() {
            scaffold(&entry.path(), &target, vars)?;
        } else {
            let text = fill(&std::fs::read_to_string(entry.path())?);
            if let Some(at) = text.find("{{") {
                let rest: String = text[at..].chars().take(40).collect();
                return Err(format!("{}: an unknown placeholder: {rest}", target.display()).into());
            }
            std::fs::write(&target, text)?;
        }
    }
    Ok(())
}

#[test]
fn the_python_template_builds_and_passes_its_tests() -> Result {
    let root = workspace_root();
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("demo-py");
    let vars = [
        ("name", "demo-py".to_owned()),
        ("name_snake", "demo_py".to_owned()),
        (
            "sdk_dir",
            root.join("plugins-sdk").to_string_lossy().into_owned(),
        ),
        ("wit_dir", root.join("wit").to_string_lossy().into_owned()),
    ];
    scaffold(&root.join("plugins-sdk/templates/python"), &project, &vars)?;
    let text = std::fs::read_to_string(project.join("projector.toml"))?;
    assert!(
        !text.contains("{{"),
        "a placeholder is left in projector.toml:\n{text}"
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
    run_in(&project, &manifest.build)?;
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

    let loaded = runtime().load(&std::fs::read(project.join(&manifest.component))?)?;
    assert_eq!(loaded.info().name, "demo-py");
    for fixture in fixtures(&project, &manifest.tests)? {
        check_fixture(&loaded, &fixture)?;
    }
    Ok(())
}

#[test]
fn the_python_example_passes_its_golden_fixture() -> Result {
    let project = workspace_root().join("example-plugins/balances-py");
    let manifest = Manifest::read(&project)?;
    let loaded = load("balances-py")?;
    assert_eq!(manifest.name, loaded.info().name);
    for fixture in fixtures(&project, &manifest.tests)? {
        check_fixture(&loaded, &fixture)?;
    }
    // The same fixture through the Rust twin: the expectations hold for both.
    for fixture in fixtures(&project, &manifest.tests)? {
        check_fixture(&load("balances")?, &fixture)?;
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
