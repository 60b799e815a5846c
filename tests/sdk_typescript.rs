//! The TypeScript SDK end to end: its own native tests, the `balances-ts` example built
//! from source with the pinned npm toolchain and run in the real sandbox against the
//! Rust `balances` on one log, errors thrown in `handle`, values past 2^53, and batches
//! far larger than the engine's default in the default memory limit.
//!
//! Needs Node.js 20+ and npm; without them these tests fail with the install command.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use refract::engine::{BatchLimits, Projection, Step};
use refract::log::{EventLog, LogOptions, NewEvent};
use refract::runtime::{
    DbOptions, EventBatch, LoadedProjector, ProjectorError, Runtime, RuntimeConfig, SandboxLimits,
};
use support::guests_ts;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Events in the log both `balances` replay: a few thousand, past the workload's
/// thousand account openings into a mix of deposits and withdrawals.
const LOG_EVENTS: usize = 4_000;

/// The workload's seed.
const SEED: u64 = 11;

/// A runtime with `limits`, caching compiled components under `target/`: compiling the
/// JavaScript engine inside a TypeScript component takes many seconds, and the cache
/// makes every later load (here, and in the next run) take milliseconds.
fn runtime(limits: SandboxLimits) -> Result<Runtime> {
    let cache = guests_ts::workspace_root()
        .join("target")
        .join("ts-guest-cache");
    Ok(Runtime::new(RuntimeConfig {
        cache_dir: Some(cache),
        limits,
    })?)
}

/// `balances-ts`, built from source and loaded once per process with default limits.
fn balances_ts() -> Result<LoadedProjector> {
    static LOADED: OnceLock<std::result::Result<LoadedProjector, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = guests_ts::ts_guest_bytes("balances-ts");
            runtime(SandboxLimits::default())
                .and_then(|runtime| Ok(runtime.load(&bytes)?))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Into::into)
}

/// The Rust `balances`, built from source.
fn balances_rust() -> Result<LoadedProjector> {
    let bytes = support::guests::guest_bytes("balances");
    Ok(runtime(SandboxLimits::default())?.load(&bytes)?)
}

/// Replays the whole log through `loaded` into a fresh read model at `db`, as
/// `refract project` does.
fn replay(loaded: &LoadedProjector, log: &EventLog, db: &Path) -> Result<u64> {
    let head = log.head()?;
    let mut projection = Projection::open(
        loaded.clone(),
        db,
        DbOptions::replay(),
        log.reader()?,
        BatchLimits::default(),
    )?;
    while projection.step(Some(head))? != Step::CaughtUp {}
    projection.sync()?;
    Ok(projection.checkpoint())
}

/// The SQL that created each projector table and index, by name (`None` for the
/// indexes SQLite makes itself).
fn schema(db: &Path) -> Result<Vec<(String, Option<String>)>> {
    let conn = rusqlite::Connection::open(db)?;
    let mut statement = conn.prepare(
        "SELECT name, sql FROM sqlite_schema WHERE name NOT LIKE '\\_refract\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[test]
fn balances_ts_builds_the_same_read_model_as_rust_balances() -> Result {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open(&dir.path().join("events.db"), LogOptions::default())?;
    let events: Vec<NewEvent> = refract::workload::balances(SEED, LOG_EVENTS).collect();
    for chunk in events.chunks(1_000) {
        log.append(chunk.to_vec())?;
    }
    let head = log.head()?;
    assert_eq!(head, LOG_EVENTS as u64);

    let rust_db = dir.path().join("rust.db");
    let ts_db = dir.path().join("ts.db");
    assert_eq!(replay(&balances_rust()?, &log, &rust_db)?, head);
    assert_eq!(replay(&balances_ts()?, &log, &ts_db)?, head);

    // The benchmark's checksum: every value of every row, typed, plus the checkpoint.
    let rust = refract::bench::checksum(&rust_db)?;
    let ts = refract::bench::checksum(&ts_db)?;
    assert_eq!(
        rust, ts,
        "the TypeScript read model differs from the Rust one"
    );
    assert_eq!(rust.rows, refract::workload::BALANCES_ACCOUNTS as u64);
    // The same tables, created by the same SQL, and nothing else differs by `refract diff`.
    assert_eq!(schema(&rust_db)?, schema(&ts_db)?);
    let diffs = refract::engine::diff::compare(&rust_db, &ts_db, 5)?;
    assert!(
        !diffs.is_empty() && diffs.iter().all(|d| d.same()),
        "{diffs:#?}"
    );
    Ok(())
}

/// An `EventBatch` of balances events at `offsets`, one `(type, data)` each.
fn batch(events: &[(u64, &str, &str)]) -> EventBatch {
    let mut batch = EventBatch::new();
    for (i, &(offset, event_type, data)) in events.iter().enumerate() {
        let version = u64::try_from(i).unwrap_or(u64::MAX) + 1;
        batch.push(
            offset,
            &format!("e-{offset}"),
            "account-acc-1",
            version,
            event_type,
            data,
            None,
            0,
        );
    }
    batch
}

/// `balances` rows as `(account, owner, balance, tx_count, last_offset)`.
type Row = (String, Option<String>, i64, i64, i64);

fn rows(conn: &rusqlite::Connection) -> Result<Vec<Row>> {
    let mut statement = conn.prepare(
        "SELECT account, owner, balance, tx_count, last_offset FROM balances ORDER BY account",
    )?;
    let rows = statement.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[test]
fn an_exception_thrown_in_handle_is_a_handle_error_naming_its_offset() -> Result {
    let dir = tempfile::tempdir()?;
    let mut instance = balances_ts()?.instantiate(&dir.path().join("ts.db"), DbOptions::live())?;
    instance.init(|_| Ok(()))?;
    // The data of the third event is `null`, so the projector's `e.account` throws the
    // engine's own TypeError: not an error the projector chose to throw.
    let failing = batch(&[
        (40, "account.opened", r#"{"account":"acc-1","owner":"Ann"}"#),
        (41, "money.deposited", r#"{"account":"acc-1","amount":5}"#),
        (42, "money.deposited", "null"),
        (43, "money.deposited", r#"{"account":"acc-1","amount":7}"#),
    ]);
    match instance.apply(&failing, |_| Ok(())) {
        Err(ProjectorError::Handler {
            offset, message, ..
        }) => {
            assert_eq!(offset, 42, "{message}");
            assert!(message.starts_with("TypeError: "), "{message}");
            assert!(message.contains("account"), "{message}");
        }
        other => panic!("expected a handle error at offset 42, got {other:?}"),
    }
    // The whole batch rolled back.
    assert_eq!(rows(instance.host_connection())?, []);
    Ok(())
}

#[test]
fn values_past_2_pow_53_round_trip_exactly() -> Result {
    const BIG: u64 = (1 << 53) + 1;
    let dir = tempfile::tempdir()?;
    let amount = format!(r#"{{"account":"acc-1","amount":{BIG}}}"#);
    let events = batch(&[
        (
            BIG,
            "account.opened",
            r#"{"account":"acc-1","owner":"Ann"}"#,
        ),
        (BIG + 1, "money.deposited", &amount),
        (BIG + 2, "money.deposited", &amount),
        (
            BIG + 4,
            "money.withdrawn",
            r#"{"account":"acc-1","amount":1}"#,
        ),
    ]);
    let expected_balance = i64::try_from(2 * BIG - 1)?;
    let mut models = Vec::new();
    for (name, loaded) in [("rust", balances_rust()?), ("ts", balances_ts()?)] {
        let mut instance =
            loaded.instantiate(&dir.path().join(format!("{name}.db")), DbOptions::live())?;
        instance.init(|_| Ok(()))?;
        instance.apply(&events, |_| Ok(()))?;
        models.push(rows(instance.host_connection())?);
    }
    let expected: Vec<Row> = vec![(
        "acc-1".into(),
        Some("Ann".into()),
        expected_balance,
        3,
        i64::try_from(BIG + 4)?,
    )];
    assert_eq!(models[0], expected, "the Rust balances");
    assert_eq!(models[1], expected, "the TypeScript balances");
    Ok(())
}

/// A batch of `count` balances events, over a thousand accounts.
fn large_batch(count: usize) -> EventBatch {
    let mut batch = EventBatch::new();
    for (i, event) in refract::workload::balances(SEED, count).enumerate() {
        let offset = u64::try_from(i).unwrap_or(u64::MAX) + 1;
        batch.push(
            offset,
            &format!("e-{offset}"),
            &event.stream,
            1,
            &event.event_type,
            &event.data,
            None,
            0,
        );
    }
    batch
}

/// Memory cap for the large batches: half the default, so the test holds with room to
/// spare under the limit projectors actually run with.
const LARGE_BATCH_MEMORY_BYTES: usize = 64 << 20;

#[test]
fn batches_of_5000_and_20000_events_fit_in_half_the_default_memory_limit() -> Result {
    let limits = SandboxLimits {
        max_memory_bytes: LARGE_BATCH_MEMORY_BYTES,
        // Memory is under test, not speed: a loaded CI machine may take a while.
        batch_deadline_ms: 300_000,
        ..SandboxLimits::default()
    };
    let loaded = runtime(limits)?.load(&guests_ts::ts_guest_bytes("balances-ts"))?;
    let dir = tempfile::tempdir()?;
    for count in [5_000, 20_000] {
        let mut instance =
            loaded.instantiate(&dir.path().join(format!("{count}.db")), DbOptions::replay())?;
        instance.init(|_| Ok(()))?;
        instance.apply(&large_batch(count), |_| Ok(()))?;
        let events: i64 = instance.host_connection().query_row(
            "SELECT sum(tx_count) + count(owner) FROM balances",
            [],
            |row| row.get(0),
        )?;
        assert_eq!(
            events,
            i64::try_from(count)?,
            "every event of the {count}-event batch applied"
        );
    }
    Ok(())
}

#[test]
fn the_typescript_sdk_native_tests_pass() -> Result {
    let sdk = guests_ts::sdk_dir();
    guests_ts::install(&sdk)?;
    let output = guests_ts::npm(&sdk, &["test"])?;
    assert!(output.contains("# fail 0"), "{output}");
    Ok(())
}

#[test]
fn balances_ts_native_tests_pass() -> Result {
    // Building installs the example's toolchain.
    let component: PathBuf = guests_ts::ts_guest("balances-ts");
    let dir = component
        .parent()
        .and_then(Path::parent)
        .ok_or("the component is not in <example>/dist")?;
    let output = guests_ts::npm(dir, &["test"])?;
    assert!(output.contains("# fail 0"), "{output}");
    Ok(())
}

/// The placeholders `refract new` replaces, with the values a scaffold named `name` gets.
fn placeholders(name: &str) -> Vec<(&'static str, String)> {
    let root = guests_ts::workspace_root();
    vec![
        ("{{name}}", name.to_owned()),
        ("{{name_snake}}", name.replace('-', "_")),
        (
            "{{sdk_dir}}",
            root.join("plugins-sdk").display().to_string(),
        ),
        ("{{wit_dir}}", root.join("wit").display().to_string()),
    ]
}

/// Copies the template folder `from` into `to` as `refract new` does (until it exists):
/// placeholders replaced in contents and names, a trailing `.tmpl` dropped.
fn scaffold(from: &Path, to: &Path, values: &[(&str, String)]) -> Result {
    let substitute = |text: &str| {
        values
            .iter()
            .fold(text.to_owned(), |text, (placeholder, value)| {
                text.replace(placeholder, value)
            })
    };
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "node_modules" || name == "dist" {
            continue;
        }
        let target = to.join(substitute(name.strip_suffix(".tmpl").unwrap_or(&name)));
        if entry.file_type()?.is_dir() {
            scaffold(&entry.path(), &target, values)?;
        } else {
            let text = std::fs::read_to_string(entry.path())?;
            let text = substitute(&text);
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                target.display()
            );
            std::fs::write(&target, text)?;
        }
    }
    Ok(())
}

/// Runs a golden fixture as `refract test` will: the `<stem>.jsonl` events appended to a
/// fresh log, replayed through `loaded` in the sandbox, then each query of
/// `<stem>.expect.json` compared row for row.
fn run_fixture(loaded: &LoadedProjector, jsonl: &Path, dir: &Path) -> Result {
    let log = EventLog::open(&dir.join("fixture-events.db"), LogOptions::default())?;
    let mut events = Vec::new();
    for line in std::fs::read_to_string(jsonl)?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let event: serde_json::Value = serde_json::from_str(line)?;
        let text = |key: &str| {
            event[key]
                .as_str()
                .map(str::to_owned)
                .ok_or(format!("no {key} in {line}"))
        };
        let mut new = NewEvent::new(text("stream")?, text("type")?, event["data"].to_string());
        new.metadata = event.get("metadata").map(serde_json::Value::to_string);
        new.id = event
            .get("id")
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        events.push(new);
    }
    log.append(events)?;
    let db = dir.join("fixture.db");
    replay(loaded, &log, &db)?;
    let conn = rusqlite::Connection::open(&db)?;
    let expect: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(
        jsonl.with_extension("expect.json"),
    )?)?;
    assert!(!expect.is_empty(), "{} expects nothing", jsonl.display());
    for check in expect {
        let sql = check["sql"].as_str().ok_or("a check without sql")?;
        let mut statement = conn.prepare(sql)?;
        let width = statement.column_count();
        let rows: Vec<serde_json::Value> = statement
            .query_map([], |row| {
                (0..width)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                            rusqlite::types::ValueRef::Integer(n) => n.into(),
                            rusqlite::types::ValueRef::Real(f) => f.into(),
                            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                            rusqlite::types::ValueRef::Blob(_) => "<blob>".into(),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(serde_json::Value::Array)
            })?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(serde_json::Value::Array(rows), check["rows"], "{sql}");
    }
    Ok(())
}

#[test]
fn the_typescript_template_scaffolds_a_project_that_builds_and_passes_its_tests() -> Result {
    let template = guests_ts::workspace_root().join("plugins-sdk/templates/typescript");
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("demo-ts");
    scaffold(&template, &project, &placeholders("demo-ts"))?;

    guests_ts::install(&project)?;
    let native = guests_ts::npm(&project, &["test"])?;
    assert!(
        native.contains("# pass 1") && native.contains("# fail 0"),
        "{native}"
    );
    // The build the manifest names, and the component it names.
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(project.join("projector.toml"))?)?;
    assert_eq!(manifest["name"].as_str(), Some("demo-ts"));
    assert_eq!(
        manifest["build"],
        toml::Value::Array(
            ["npm", "run", "--silent", "build"]
                .map(toml::Value::from)
                .to_vec()
        )
    );
    guests_ts::npm(&project, &["run", "--silent", "build"])?;
    let component = project.join(manifest["component"].as_str().ok_or("no component")?);
    let loaded = runtime(SandboxLimits::default())?.load(&std::fs::read(&component)?)?;
    assert_eq!(loaded.info().name, "demo-ts");

    let fixtures = project.join(manifest["tests"][0].as_str().ok_or("no tests folder")?);
    let mut ran = 0;
    for entry in std::fs::read_dir(&fixtures)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "jsonl") {
            run_fixture(&loaded, &path, dir.path())?;
            ran += 1;
        }
    }
    assert_eq!(ran, 1, "the template has one golden fixture");
    Ok(())
}

#[test]
fn the_template_lockfile_pins_what_the_example_is_tested_with() -> Result {
    let root = guests_ts::workspace_root();
    let read = |path: &str| -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            root.join(path),
        )?)?)
    };
    let example = read("example-plugins/balances-ts/package-lock.json")?;
    let template = read("plugins-sdk/templates/typescript/package-lock.json.tmpl")?;
    let packages =
        |lock: &serde_json::Value| -> Result<serde_json::Map<String, serde_json::Value>> {
            let mut packages = lock["packages"].as_object().ok_or("no packages")?.clone();
            packages.remove("");
            if let Some(sdk) = packages.get_mut("node_modules/refract-sdk") {
                sdk["resolved"] = serde_json::Value::Null;
            }
            Ok(packages)
        };
    assert!(
        packages(&example)? == packages(&template)?,
        "the template's lockfile is out of date: run `node plugins-sdk/typescript/scripts/sync-template-lockfile.mjs`"
    );
    // And the example's lockfile records the SDK's current dependencies, so `npm ci`
    // installs what the SDK declares.
    let sdk: serde_json::Value = read("plugins-sdk/typescript/package.json")?;
    assert_eq!(
        example["packages"]["node_modules/refract-sdk"]["dependencies"], sdk["dependencies"],
        "refresh example-plugins/balances-ts/package-lock.json (`rm package-lock.json && npm install`), then sync the template's"
    );
    Ok(())
}
