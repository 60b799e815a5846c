//! The TypeScript SDK end to end: its own native tests, the `balances-ts` example built
//! from source with the pinned npm toolchain and run in the real sandbox (errors thrown
//! in `handle`, values past 2^53, batches far larger than the engine's default in the
//! default memory limit), and `refract new --lang ts` then `refract test`. The proof
//! that it builds the same read model as the Rust and Python `balances` is in
//! `tests/sdk_python.rs`, which builds all three.
//!
//! The reactor `order-saga-ts`, built from source against the reactor world and
//! deployed on a real engine, runs the order saga's happy, failure and timeout paths,
//! emit for emit like its Rust and Python twins (`support::saga`).
//!
//! The `ts-probe` fixture proves the packed writes of `refract:projector@0.2.0` end to
//! end: integer extremes, reals bit for bit, empty and multi-byte text, blobs, NULLs, a
//! write of 998 parameters and writes spanning several flushes come back from the read
//! model exactly, an integer past 64 bits fails its event clearly, and a field left out
//! of `reads` is not read.
//!
//! `refract new --lang ts --kind reactor` scaffolds a reactor whose native tests pass,
//! which builds with its manifest's command into a component the host loads as a
//! reactor, and which reacts on a real engine (emits, and a fired timer).
//!
//! Needs Node.js 20+ and npm; without them these tests fail with the install command.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use refract::runtime::{
    ContractVersion, DbOptions, EventBatch, EventFields, LoadedProjector, ProjectorError, Runtime,
    RuntimeConfig, SandboxLimits,
};
use support::{cli, guests_ts, probe_values};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The workload's seed.
const SEED: u64 = 11;

/// The compile budget of these tests. A TypeScript component holds a 12 MB JavaScript
/// engine that compiles in 15 to 30 s of CPU, and this binary compiles several at once
/// on a machine shared with other builds, so the wall time can be several times that:
/// the deadline here is for liveness only (as in `tests/js_component.rs`).
const COMPILE_TIMEOUT_MS: u64 = 900_000;

/// A runtime with `limits` (and the liveness-only compile budget), caching compiled components under `target/`: compiling the
/// JavaScript engine inside a TypeScript component takes many seconds, and the cache
/// makes every later load (here, and in the next run) take milliseconds.
fn runtime(mut limits: SandboxLimits) -> Result<Runtime> {
    limits.compile_timeout_ms = COMPILE_TIMEOUT_MS;
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

/// `ts-probe`, built from source and loaded once per process with default limits.
fn ts_probe() -> Result<LoadedProjector> {
    static LOADED: OnceLock<std::result::Result<LoadedProjector, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = guests_ts::ts_fixture_bytes("ts-probe");
            runtime(SandboxLimits::default())
                .and_then(|runtime| Ok(runtime.load(&bytes)?))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Into::into)
}

/// A batch of probe events of `types`, from offset `first`, each with metadata.
fn probe_batch(first: u64, types: &[&str]) -> EventBatch {
    let mut batch = EventBatch::new();
    for (offset, event_type) in (first..).zip(types) {
        batch.push(
            offset,
            &format!("id-{offset}"),
            "probe-1",
            offset,
            event_type,
            "{}",
            Some(&format!(r#"{{"m":"ü{offset}"}}"#)),
            0,
        );
    }
    batch
}

/// The handle error of `batch`, as (offset, message).
fn handle_error(
    instance: &mut refract::runtime::ProjectorInstance,
    batch: &EventBatch,
) -> (u64, String) {
    match instance.apply(batch, |_| Ok(())) {
        Err(ProjectorError::Handler {
            offset, message, ..
        }) => (offset, message),
        other => panic!("expected a handle error, got {other:?}"),
    }
}

#[test]
fn packed_writes_carry_every_value_through_the_host_exactly() -> Result {
    let dir = tempfile::tempdir()?;
    let loaded = ts_probe()?;
    assert_eq!(loaded.info().contract, ContractVersion::V0_2);
    assert_eq!(
        loaded.info().reads,
        EventFields {
            id: false,
            metadata: true
        },
        "the probe's `reads: [\"metadata\"]` reaches the host"
    );
    assert_eq!(
        balances_ts()?.info().reads,
        EventFields::NONE,
        "balances-ts reads neither ids nor metadata"
    );
    let mut instance = loaded.instantiate(&dir.path().join("probe.db"), DbOptions::live())?;
    instance.init(|_| Ok(()))?;
    instance.apply(
        &probe_batch(1, &["values", "wide", "many", "metadata"]),
        |_| Ok(()),
    )?;
    let conn = instance.host_connection();
    probe_values::assert_values(conn, "TypeScript")?;
    probe_values::assert_wide(conn, "TypeScript")?;
    probe_values::assert_many(conn, "TypeScript")?;
    assert_eq!(
        probe_values::vals(conn, 40_000..50_000)?,
        [(40_004, rusqlite::types::Value::Text(r#"{"m":"ü4"}"#.into()))],
        "the metadata the probe reads arrives"
    );

    // A bigint past 2^63 - 1 fails its event with the parameter named, never a
    // truncated value; the batch rolls back whole.
    let (offset, message) = handle_error(&mut instance, &probe_batch(10, &["values", "overflow"]));
    assert_eq!(offset, 11, "{message}");
    assert!(
        message.contains(
            "RangeError: parameter ?2 is 9223372036854775808, outside SQLite's 64-bit integer range"
        ),
        "{message}"
    );
    // The probe says it reads metadata only: reading the id fails clearly.
    let (offset, message) = handle_error(&mut instance, &probe_batch(20, &["peek-id"]));
    assert_eq!(offset, 20, "{message}");
    assert!(
        message.contains(r#"event.id was read, but this projector's `reads` leaves out "id""#),
        "{message}"
    );
    let rows: i64 =
        instance
            .host_connection()
            .query_row("SELECT count(*) FROM vals", [], |row| row.get(0))?;
    assert_eq!(
        rows,
        20 + 499 + 10_005 + 1,
        "the failed batches wrote nothing"
    );
    Ok(())
}

#[test]
fn the_typescript_sdk_native_tests_pass() -> Result {
    let sdk = guests_ts::sdk_dir();
    guests_ts::install_sdk()?;
    let output = guests_ts::npm(&sdk, &["test"])?;
    assert!(output.contains("# fail 0"), "{output}");
    Ok(())
}

#[test]
fn the_typescript_examples_native_tests_pass() -> Result {
    for example in ["balances-ts", "order-saga-ts"] {
        // Building installs the example's toolchain.
        let component: PathBuf = guests_ts::ts_guest(example);
        let dir = component
            .parent()
            .and_then(Path::parent)
            .ok_or("the component is not in <example>/dist")?;
        let output = guests_ts::npm(dir, &["test"])?;
        assert!(
            output.contains("# fail 0") && !output.contains("# pass 0"),
            "{example}:\n{output}"
        );
    }
    Ok(())
}

/// `order-saga-ts`, built from source and loaded once per process with default limits:
/// the load compiles it into the cache the engine of the saga test then reads.
fn order_saga_ts() -> Result<LoadedProjector> {
    static LOADED: OnceLock<std::result::Result<LoadedProjector, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = guests_ts::ts_guest_bytes("order-saga-ts");
            runtime(SandboxLimits::default())
                .and_then(|runtime| Ok(runtime.load(&bytes)?))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Into::into)
}

/// One `order.placed` for `order`, at `offset`, with `data`.
fn order_batch(offset: u64, order: &str, data: &str) -> EventBatch {
    let mut batch = EventBatch::new();
    batch.push(
        offset,
        &format!("e-{offset}"),
        order,
        1,
        "order.placed",
        data,
        None,
        1_700_000_000_000_000,
    );
    batch
}

/// The TypeScript reactor through the host's runtime, one batch at a time: the host
/// takes it as a reactor of the 0.1.0 contract with its declared emits; its emits
/// reach the host with their cause; and its failures surface as the projector side's
/// do, as handle errors naming the event: the engine's own `TypeError`, an effect the
/// host refuses (`EffectRefused` with the host's message), and a value the contract
/// cannot carry. A failed batch emits nothing and keeps no state.
#[test]
fn the_typescript_reactor_emits_through_the_host_and_its_errors_name_the_event() -> Result {
    let loaded = order_saga_ts()?;
    assert_eq!(loaded.info().contract, ContractVersion::V0_1);
    assert_eq!(loaded.info().name, "order-saga-ts");
    assert_eq!(
        loaded.reactor().map(|r| r.emits.clone()),
        Some(
            [
                "payment.requested",
                "order.confirmed",
                "order.cancelled",
                "stock.released"
            ]
            .map(String::from)
            .to_vec()
        ),
        "the reactor-info export declares the saga's emits"
    );
    let dir = tempfile::tempdir()?;
    let mut instance = loaded.instantiate(&dir.path().join("saga.db"), DbOptions::live())?;
    // The reactor's host tables, as the engine creates them with its `init`
    // (`refract::reactors::state::create`, crate-private): the `timers` import writes
    // to them.
    instance.init(|conn| {
        conn.execute_batch(
            "CREATE TABLE _refract_timers (
                 key TEXT PRIMARY KEY, due_at INTEGER NOT NULL, payload TEXT NOT NULL,
                 cause INTEGER NOT NULL, fired INTEGER
             );
             CREATE TABLE _refract_reactor (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
    })?;

    let mut emitted = Vec::new();
    instance.apply_with_effects(
        &order_batch(7, "order-7", r#"{"customer":"ann","total":1200}"#),
        |_, emits| {
            emitted = emits;
            Ok(())
        },
    )?;
    let emitted: Vec<_> = emitted
        .iter()
        .map(|e| {
            (
                e.cause,
                e.index,
                e.event.stream.as_str(),
                e.event.event_type.as_str(),
                e.event.data.as_str(),
            )
        })
        .collect();
    assert_eq!(
        emitted,
        [(
            7,
            0,
            "payment-order-7",
            "payment.requested",
            r#"{"order_id":"order-7","amount":1200,"customer":"ann"}"#
        )]
    );

    let ten_years_and_more = 11 * 366 * 24 * 3_600_000_u64;
    for (data, expected) in [
        ("null", "TypeError: "),
        (
            &*format!(
                r#"{{"customer":"bob","total":1,"payment_timeout_ms":{ten_years_and_more}}}"#
            ),
            "EffectRefused: a delay of ",
        ),
        (
            r#"{"customer":"bob","total":1,"payment_timeout_ms":-1}"#,
            "RangeError: delayMs is -1",
        ),
    ] {
        let mut emits = 0;
        let outcome = instance.apply_with_effects(&order_batch(8, "order-8", data), |_, e| {
            emits = e.len();
            Ok(())
        });
        match outcome {
            Err(ProjectorError::Handler {
                offset, message, ..
            }) => {
                assert_eq!(offset, 8, "{message}");
                assert!(message.starts_with(expected), "{expected}: {message}");
            }
            other => panic!("expected a handle error at offset 8 for {data}, got {other:?}"),
        }
        assert_eq!(emits, 0, "a failed batch emits nothing");
    }
    let orders: Vec<String> = instance
        .host_connection()
        .prepare("SELECT order_id FROM sagas")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(orders, ["order-7"], "the failed batches rolled back");
    let timers: Vec<(String, i64, String, i64)> = instance
        .host_connection()
        .prepare("SELECT key, due_at, payload, cause FROM _refract_timers")?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(
        timers,
        [(
            "payment-timeout:order-7".to_owned(),
            1_700_000_000_000_000 + 15 * 60 * 1_000_000,
            r#"{"order_id":"order-7"}"#.to_owned(),
            7
        )],
        "the default 15-minute timeout, due after the order's recorded time; none from the failed batches"
    );
    Ok(())
}

/// The TypeScript reactor, built from source against the reactor world and deployed on
/// a real engine from its plugins folder, runs the order saga as its Rust twin does:
/// a payment is requested and a timeout scheduled per order; a success confirms (and
/// cancels the timeout); a failure and a fired timeout each cancel the order and
/// release its stock; a late payment changes nothing.
#[test]
fn the_typescript_order_saga_reactor_confirms_cancels_and_times_out() -> Result {
    // Compiled first, into the cache the engine then reads (see
    // `support::saga::assert_order_saga`).
    order_saga_ts()?;
    let dir = tempfile::tempdir()?;
    support::saga::assert_order_saga(
        dir.path(),
        "order-saga-ts",
        &guests_ts::ts_guest("order-saga-ts"),
        &guests_ts::workspace_root()
            .join("target")
            .join("ts-guest-cache"),
    )
}

#[test]
fn refract_new_ts_scaffolds_a_project_that_refract_test_passes() -> Result {
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("demo-ts");
    let project_arg = project.to_str().ok_or("a non-UTF-8 temp path")?;
    let created = cli::refract_ok(
        dir.path(),
        &["new", "demo-ts", "--lang", "ts", "--dir", project_arg],
    )?;
    assert!(created.contains("npm ci"), "{created}");
    // The dotfiles come too: `.npmrc` keeps npm from writing outside the project's
    // lockfile pins, `.gitignore` keeps `node_modules` and the build out of git.
    for dotfile in [".npmrc", ".gitignore"] {
        assert!(project.join(dotfile).is_file(), "no {dotfile}:\n{created}");
    }

    guests_ts::install(&project)?;
    let native = guests_ts::npm(&project, &["test"])?;
    assert!(
        native.contains("# pass 1") && native.contains("# fail 0"),
        "{native}"
    );
    // `refract test` builds with the manifest's command and runs the golden fixture in
    // the real sandbox, with the liveness-only compile budget.
    std::fs::write(
        project.join("refract.toml"),
        format!("[limits]\ncompile_timeout_ms = {COMPILE_TIMEOUT_MS}\n"),
    )?;
    let tested = cli::refract_ok(&project, &["test"])?;
    assert!(
        tested.contains("testing `demo-ts`") && tested.contains("fixtures: 1 passed, 0 failed"),
        "{tested}"
    );
    assert!(project.join("dist/demo-ts.wasm").is_file(), "{tested}");
    Ok(())
}

/// `refract new --lang ts --kind reactor`: the scaffold's native tests (`TestReactor`)
/// pass; its manifest's build (`refract-build --reactor`) makes a component the host
/// loads as a reactor declaring its emits; deployed on a real engine, it welcomes a
/// user once and turns its fired timer into a follow-up.
#[test]
fn refract_new_ts_reactor_scaffolds_a_reactor_that_reacts_on_a_real_engine() -> Result {
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("demo-saga-ts");
    let project_arg = project.to_str().ok_or("a non-UTF-8 temp path")?;
    let created = cli::refract_ok(
        dir.path(),
        &[
            "new",
            "demo-saga-ts",
            "--lang",
            "ts",
            "--kind",
            "reactor",
            "--dir",
            project_arg,
        ],
    )?;
    assert!(
        created.contains("npm ci") && created.contains("refract deploy dist/demo-saga-ts.wasm"),
        "{created}"
    );
    guests_ts::install(&project)?;
    let native = guests_ts::npm(&project, &["test"])?;
    assert!(
        native.contains("# pass 1") && native.contains("# fail 0"),
        "{native}"
    );

    let component = support::saga::build_scaffolded_reactor(
        &project,
        &runtime(SandboxLimits::default())?,
        "demo-saga-ts",
    )?;
    let engine_dir = tempfile::tempdir()?;
    support::saga::assert_scaffolded_reactor(
        engine_dir.path(),
        "demo-saga-ts",
        &component,
        Some(
            &guests_ts::workspace_root()
                .join("target")
                .join("ts-guest-cache"),
        ),
    )
}

/// `example-plugins/order-saga-ts/projector.toml` names the saga, the build the tests
/// run and the component it writes, and says it is a reactor, which `refract test`
/// refuses with the way to run it.
#[test]
fn the_typescript_saga_manifest_names_its_build_and_refract_test_refuses_it() -> Result {
    let project = guests_ts::workspace_root().join("example-plugins/order-saga-ts");
    let manifest = refract::devkit::manifest::Manifest::load(&project)?;
    assert_eq!(manifest.name, "order-saga-ts");
    assert_eq!(manifest.kind, refract::devkit::manifest::Kind::Reactor);
    assert_eq!(manifest.build, ["npm", "run", "--silent", "build"]);
    assert_eq!(manifest.component, guests_ts::ts_guest("order-saga-ts"));
    let refused = cli::refract(&project, &["test"]).output()?;
    let out = cli::text(&refused);
    assert_eq!(refused.status.code(), Some(3), "{out}");
    assert!(
        out.contains(
            "projector.toml says `kind = \"reactor\"`: `refract test` runs projectors only"
        ),
        "{out}"
    );
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
    let packages =
        |lock: &serde_json::Value| -> Result<serde_json::Map<String, serde_json::Value>> {
            let mut packages = lock["packages"].as_object().ok_or("no packages")?.clone();
            packages.remove("");
            if let Some(sdk) = packages.get_mut("node_modules/refract-sdk") {
                sdk["resolved"] = serde_json::Value::Null;
            }
            Ok(packages)
        };
    // The projector's and the reactor's templates pin the same toolchain.
    for template in ["typescript", "typescript-reactor"] {
        let lock = read(&format!(
            "plugins-sdk/templates/{template}/package-lock.json.tmpl"
        ))?;
        assert!(
            packages(&example)? == packages(&lock)?,
            "the {template} template's lockfile is out of date: run `node plugins-sdk/typescript/scripts/sync-template-lockfile.mjs`"
        );
    }
    // And the example's lockfile records the SDK's current dependencies, so `npm ci`
    // installs what the SDK declares.
    let sdk: serde_json::Value = read("plugins-sdk/typescript/package.json")?;
    assert_eq!(
        example["packages"]["node_modules/refract-sdk"]["dependencies"], sdk["dependencies"],
        "refresh example-plugins/balances-ts/package-lock.json (`rm package-lock.json && npm install`), then sync the template's"
    );
    Ok(())
}
