//! The projector runtime and its sandbox: real components, built from source, against
//! real read models. Batches are built directly with `EventBatch`; nothing here depends
//! on the event log.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use refract::runtime::{
    ContractVersion, DbOptions, EventBatch, EventFields, LoadedProjector, ProjectorError,
    ProjectorInstance, Runtime, RuntimeConfig, RuntimeError, SandboxLimits, TrapKind,
};
use rusqlite::Connection;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The `.wasm` of a guest crate, built from source by the test support.
fn guest(name: &str) -> Result<Vec<u8>> {
    Ok(support::guests::guest_bytes(name))
}

/// A runtime with default limits and no cache.
fn runtime() -> Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig::default())?)
}

/// A runtime with these limits.
fn runtime_with(limits: SandboxLimits) -> Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        cache_dir: None,
        limits,
    })?)
}

/// The host's checkpoint table, written in the same transaction as each batch, the way
/// the engine does.
const CHECKPOINT_SCHEMA: &str = "
    CREATE TABLE _refract_checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), offset INTEGER NOT NULL);
    INSERT INTO _refract_checkpoint VALUES (1, 0);
";

fn create_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(CHECKPOINT_SCHEMA)
}

fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT offset FROM _refract_checkpoint", [], |row| {
        row.get(0)
    })
}

/// Loads `name`, instantiates it on a fresh database in `dir`, and runs `init`.
fn start(
    runtime: &Runtime,
    name: &str,
    dir: &Path,
) -> Result<(LoadedProjector, ProjectorInstance)> {
    let loaded = runtime.load(&guest(name)?)?;
    let mut instance = loaded.instantiate(&dir.join(format!("{name}.db")), DbOptions::live())?;
    instance.init(create_checkpoint)?;
    Ok((loaded, instance))
}

/// Applies `batch` and moves the checkpoint to its last offset, in one transaction.
fn apply(
    instance: &mut ProjectorInstance,
    batch: &EventBatch,
) -> std::result::Result<(), ProjectorError> {
    let last = i64::try_from(batch.last_offset().unwrap_or(0)).unwrap_or(i64::MAX);
    instance.apply(batch, |conn| {
        conn.execute("UPDATE _refract_checkpoint SET offset = ?1", [last])
            .map(drop)
    })
}

/// A deterministic generator, so a failing run can be repeated.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One balances event: (type, data).
type Ev = (&'static str, String);

/// `count` balances events over `accounts` accounts.
fn balances_events(count: usize, accounts: u64, seed: u64) -> Vec<Ev> {
    let mut rng = Lcg(seed);
    (0..count)
        .map(|i| {
            let account = format!("acc-{}", rng.below(accounts));
            match rng.below(10) {
                0 => (
                    "account.opened",
                    format!(r#"{{"account":"{account}","owner":"owner {i}"}}"#),
                ),
                1..=6 => (
                    "money.deposited",
                    format!(
                        r#"{{"account":"{account}","amount":{}}}"#,
                        rng.below(100_000)
                    ),
                ),
                _ => (
                    "money.withdrawn",
                    format!(
                        r#"{{"account":"{account}","amount":{}}}"#,
                        rng.below(50_000)
                    ),
                ),
            }
        })
        .collect()
}

/// Balances computed independently of the projector: account → (owner, balance,
/// tx_count, last_offset).
type Expected = BTreeMap<String, (Option<String>, i64, i64, i64)>;

fn expected_balances(events: &[Ev], first_offset: u64) -> Result<Expected> {
    let mut out = Expected::new();
    for (i, (ty, data)) in events.iter().enumerate() {
        let offset = i64::try_from(first_offset)? + i64::try_from(i)?;
        let json: serde_json::Value = serde_json::from_str(data)?;
        let account = json["account"].as_str().ok_or("account")?.to_owned();
        let entry = out.entry(account).or_insert((None, 0, 0, offset));
        match *ty {
            "account.opened" => entry.0 = Some(json["owner"].as_str().ok_or("owner")?.to_owned()),
            "money.deposited" => {
                entry.1 += json["amount"].as_i64().ok_or("amount")?;
                entry.2 += 1;
            }
            _ => {
                entry.1 -= json["amount"].as_i64().ok_or("amount")?;
                entry.2 += 1;
            }
        }
        entry.3 = offset;
    }
    Ok(out)
}

fn actual_balances(conn: &Connection) -> Result<Expected> {
    let mut statement =
        conn.prepare("SELECT account, owner, balance, tx_count, last_offset FROM balances")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get(0)?,
            (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?),
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Packs `events` into `batch`, starting at `first_offset`.
fn fill(batch: &mut EventBatch, events: &[Ev], first_offset: u64) {
    batch.clear();
    for (i, (ty, data)) in events.iter().enumerate() {
        let offset = first_offset + i as u64;
        let id = format!("id-{offset}");
        batch.push(
            offset,
            &id,
            "stream",
            1,
            ty,
            data,
            None,
            1_700_000_000_000_000,
        );
    }
}

#[test]
fn balances_equal_an_independent_computation() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "balances", dir.path())?;
    assert_eq!(instance.info(), loaded.info());
    assert_eq!(loaded.info().name, "balances");
    assert_eq!(
        loaded.info().subscriptions.event_types,
        ["account.opened", "money.deposited", "money.withdrawn"]
    );

    let events = balances_events(5_000, 200, 7);
    let mut batch = EventBatch::new();
    let started = Instant::now();
    for (chunk_index, chunk) in events.chunks(1_000).enumerate() {
        fill(&mut batch, chunk, 1 + chunk_index as u64 * 1_000);
        apply(&mut instance, &batch)?;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "balances: {} events in {elapsed:?} ({:.2} µs/event, debug build of the host)",
        events.len(),
        elapsed.as_secs_f64() * 1e6 / events.len() as f64
    );

    let conn = instance.host_connection();
    assert_eq!(actual_balances(conn)?, expected_balances(&events, 1)?);
    assert_eq!(checkpoint(conn)?, 5_000);
    Ok(())
}

#[test]
fn one_source_built_for_both_contracts_builds_the_same_read_model() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    // `balances-v01` is the `balances` source built against refract:projector@0.1.0.
    let (v01, mut old) = start(&runtime, "balances-v01", dir.path())?;
    let (v02, mut new) = start(&runtime, "balances", dir.path())?;
    assert_eq!(v01.info().contract, ContractVersion::V0_1);
    assert_eq!(
        v01.info().reads,
        EventFields::ALL,
        "0.1.0 reads every field"
    );
    assert_eq!(v02.info().contract, ContractVersion::V0_2);
    assert_eq!(
        v02.info().reads,
        EventFields::NONE,
        "balances reads neither"
    );
    assert_eq!(v01.info().name, v02.info().name);

    let events = balances_events(3_000, 150, 11);
    let mut batch = EventBatch::new();
    for (chunk_index, chunk) in events.chunks(1_000).enumerate() {
        fill(&mut batch, chunk, 1 + chunk_index as u64 * 1_000);
        apply(&mut old, &batch)?;
        apply(&mut new, &batch)?;
    }
    let expected = expected_balances(&events, 1)?;
    assert_eq!(actual_balances(old.host_connection())?, expected);
    assert_eq!(actual_balances(new.host_connection())?, expected);
    Ok(())
}

/// The `seen` rows of the `packed-writes` fixture: (offset, id, metadata).
fn seen_rows(conn: &Connection) -> Result<Vec<(i64, String, String)>> {
    let mut statement =
        conn.prepare("SELECT event_offset, id, metadata FROM seen ORDER BY rowid")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One `packed-writes` event of type `ty` with data `data`, and an id and metadata the
/// fixture says it does not read.
fn push_probe(batch: &mut EventBatch, offset: u64, ty: &str, data: &str) {
    let id = format!("id-{offset}");
    batch.push(
        offset,
        &id,
        "probe",
        offset,
        ty,
        data,
        Some(r#"{"trace":"t"}"#),
        0,
    );
}

#[test]
fn a_projector_that_reads_neither_id_nor_metadata_gets_them_empty() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "packed-writes", dir.path())?;
    assert_eq!(loaded.info().reads, EventFields::NONE);
    let mut batch = EventBatch::new();
    push_probe(&mut batch, 1, "seen", "{}");
    push_probe(&mut batch, 2, "kinds", "{}");
    apply(&mut instance, &batch)?;
    let conn = instance.host_connection();
    assert_eq!(seen_rows(conn)?, [(1, String::new(), String::new())]);
    // Every packed kind is bound as itself.
    let kinds: (
        String,
        String,
        String,
        String,
        String,
        i64,
        f64,
        String,
        Vec<u8>,
    ) = conn.query_row(
        "SELECT typeof(n), typeof(i), typeof(r), typeof(t), typeof(b), i, r, t, b FROM kinds",
        [],
        |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
                row.get(8)?,
            ))
        },
    )?;
    assert_eq!(
        kinds,
        (
            "null".into(),
            "integer".into(),
            "real".into(),
            "text".into(),
            "blob".into(),
            -7,
            2.5,
            "hé".into(),
            vec![0, 1]
        )
    );
    Ok(())
}

#[test]
fn hostile_packed_write_batches_fail_at_their_write_and_lose_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "packed-writes", dir.path())?;
    let over = (loaded.limits().max_writes_per_call + 1).to_string();
    // (attack, its data, the index and kind of the error, what the message names)
    let attacks = [
        (
            "mismatched-lengths",
            "{}",
            0,
            "Invalid",
            "2 statements but 1 param-ends",
        ),
        ("unknown-kind", "{}", 1, "Invalid", "kind 9 is unknown"),
        ("range-past-end", "{}", 1, "Invalid", "past the 7 bytes"),
        (
            "range-backwards",
            "{}",
            1,
            "Invalid",
            "before the previous text or blob's end",
        ),
        ("invalid-utf8", "{}", 1, "Invalid", "not UTF-8"),
        (
            "too-many-writes",
            &over,
            0,
            "Limit",
            "limits.max_writes_per_call",
        ),
    ];
    let mut offset = 0;
    for (attack, data, index, kind, needle) in attacks {
        // A good event first, then the attack, in one batch: all of it rolls back.
        let mut batch = EventBatch::new();
        push_probe(&mut batch, offset + 1, "seen", "{}");
        push_probe(&mut batch, offset + 2, &format!("attack.{attack}"), data);
        let err = apply(&mut instance, &batch).expect_err(attack);
        let ProjectorError::Handler {
            offset: at,
            message,
            ..
        } = &err
        else {
            return Err(format!("{attack}: not the guest's error: {err}").into());
        };
        assert_eq!(*at, offset + 2, "{attack}: {message}");
        assert!(
            message.starts_with(&format!("{index} SqlErrorKind::{kind}: ")),
            "{attack}: {message}"
        );
        assert!(message.contains(needle), "{attack}: {message}");
        let conn = instance.host_connection();
        assert_eq!(seen_rows(conn)?, [], "{attack}: the batch rolled back");
        assert_eq!(
            checkpoint(conn)?,
            0,
            "{attack}: the checkpoint did not move"
        );
        assert!(!instance.is_poisoned(), "{attack}: the instance stays");
        offset += 2;
    }
    // The same instance goes on with the next good batch.
    let mut batch = EventBatch::new();
    push_probe(&mut batch, offset + 1, "seen", "{}");
    apply(&mut instance, &batch)?;
    assert_eq!(
        seen_rows(instance.host_connection())?,
        [(i64::try_from(offset)? + 1, String::new(), String::new())]
    );
    Ok(())
}

/// The cache entry files under `dir`.
fn cache_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for engine_dir in std::fs::read_dir(dir)? {
        for entry in std::fs::read_dir(engine_dir?.path())? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "cwasm") {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Loads, instantiates on a fresh database and runs a small batch: the component works.
fn works(loaded: &LoadedProjector, dir: &Path) -> Result {
    let db = dir.join(format!("works-{}.db", rand_suffix()));
    let mut instance = loaded.instantiate(&db, DbOptions::live())?;
    instance.init(create_checkpoint)?;
    let mut batch = EventBatch::new();
    fill(&mut batch, &balances_events(10, 3, 1), 1);
    apply(&mut instance, &batch)?;
    Ok(())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[test]
fn compiled_components_are_cached_and_bad_entries_recompiled() -> Result {
    let cache = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let config = || RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let wasm = guest("balances")?;

    let cold = Runtime::new(config())?.load(&wasm)?;
    assert!(!cold.from_cache(), "the first load compiles");
    let warm_runtime = Runtime::new(config())?;
    let warm = warm_runtime.load(&wasm)?;
    assert!(warm.from_cache(), "the second load hits the cache");
    assert_eq!(warm.version(), cold.version());
    assert_eq!(warm.version().len(), 8);
    assert!(cold.sha256().starts_with(cold.version()));
    works(&warm, work.path())?;
    let mut cached_times = Vec::new();
    for _ in 0..5 {
        cached_times.push(warm_runtime.load(&wasm)?.load_time());
    }
    eprintln!(
        "load: cold (compile) {:?}, cached {:?} (min of 5)",
        cold.load_time(),
        cached_times.iter().min()
    );

    let entries = cache_entries(cache.path())?;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let original = std::fs::read(entry)?;

    // Bytes flipped in the middle of the compiled code: never executed, recompiled.
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    for byte in &mut flipped[middle..middle + 64] {
        *byte ^= 0xA5;
    }
    std::fs::write(entry, &flipped)?;
    let reloaded = Runtime::new(config())?.load(&wasm)?;
    assert!(!reloaded.from_cache(), "a corrupted entry is not used");
    works(&reloaded, work.path())?;
    assert_eq!(std::fs::read(entry)?, original, "the entry is rewritten");

    // A truncated entry (a torn write), and a file that is not one of ours at all.
    for bad in [
        original[..original.len() / 2].to_vec(),
        wasm.clone(),
        Vec::new(),
    ] {
        std::fs::write(entry, &bad)?;
        let reloaded = Runtime::new(config())?.load(&wasm)?;
        assert!(!reloaded.from_cache());
        works(&reloaded, work.path())?;
    }
    assert!(Runtime::new(config())?.load(&wasm)?.from_cache());
    Ok(())
}

#[test]
fn a_truncated_component_is_refused() -> Result {
    let wasm = guest("balances")?;
    let runtime = runtime()?;
    for len in [9, 100, wasm.len() / 2, wasm.len() - 1] {
        let err = runtime.load(&wasm[..len]).expect_err("truncated");
        assert!(
            matches!(err, RuntimeError::Invalid { .. }),
            "{len}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("invalid WebAssembly component: "),
            "{message}"
        );
    }
    Ok(())
}

#[test]
fn a_bit_flipped_component_is_refused_or_contained() -> Result {
    let wasm = guest("balances")?;
    let runtime = runtime()?;
    let work = tempfile::tempdir()?;
    let (mut refused, mut ran) = (0, 0);
    for step in 1..=24 {
        let mut bytes = wasm.clone();
        let at = bytes.len() * step / 25;
        for byte in &mut bytes[at..at + 4] {
            *byte ^= 0xFF;
        }
        match runtime.load(&bytes) {
            Err(err) => {
                refused += 1;
                assert!(!err.to_string().is_empty());
            }
            Ok(loaded) => {
                // It still validates: whatever it does now must be contained.
                ran += 1;
                let db = work.path().join(format!("flipped-{step}.db"));
                if let Ok(mut instance) = loaded.instantiate(&db, DbOptions::live()) {
                    let mut batch = EventBatch::new();
                    fill(&mut batch, &balances_events(20, 3, 2), 1);
                    let _ = instance
                        .init(create_checkpoint)
                        .and_then(|()| apply(&mut instance, &batch));
                }
            }
        }
    }
    eprintln!("bit flips: {refused} refused at load, {ran} loaded and ran contained");
    assert!(refused > 0);
    Ok(())
}

#[test]
fn a_core_module_is_refused_as_such() -> Result {
    let module = wat::parse_str("(module)")?;
    let err = runtime()?.load(&module).expect_err("core module");
    assert!(matches!(err, RuntimeError::CoreModule), "{err:?}");
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );
    Ok(())
}

#[test]
fn bytes_that_are_not_wasm_are_refused() -> Result {
    let runtime = runtime()?;
    for bytes in [&b""[..], b"hello, world", b"(component)"] {
        let err = runtime.load(bytes).expect_err("not wasm");
        assert!(matches!(err, RuntimeError::NotWasm { .. }), "{err:?}");
    }
    Ok(())
}

#[test]
fn an_import_outside_the_sandbox_is_refused_by_name_before_any_compile() -> Result {
    // The nested core module is garbage: compiling the component would fail with
    // `Invalid`. Being refused for the import instead proves nothing was compiled.
    let mut component = wat::parse_str(
        r#"(component
            (import "wasi:keyvalue/store@0.2.0" (instance))
            (core module (func (export "f")))
        )"#,
    )?;
    let code = component
        .windows(2)
        .rposition(|pair| pair == [0x0a, 0x04])
        .expect("the nested module's code section");
    component[code + 4] = 0xff;
    assert!(
        matches!(
            Runtime::new(RuntimeConfig::default())?.load(&component),
            Err(RuntimeError::UnsupportedImport { .. })
        ),
        "the import is checked first"
    );
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        limits: SandboxLimits::default(),
    })?;
    let err = runtime.load(&component).expect_err("wasi:keyvalue");
    let message = err.to_string();
    assert!(
        matches!(&err, RuntimeError::UnsupportedImport { import, .. } if import == "wasi:keyvalue/store@0.2.0"),
        "{err:?}"
    );
    assert!(
        message.contains("imports `wasi:keyvalue/store@0.2.0`, which Refract does not provide"),
        "{message}"
    );
    assert!(
        cache_entries(cache.path())?.is_empty(),
        "nothing was compiled"
    );
    // Refused again from memory, with the same error.
    let again = runtime.load(&component).expect_err("still refused");
    assert_eq!(again.to_string(), message);
    Ok(())
}

#[test]
fn wasi_http_02_is_linked_and_a_newer_one_refused() -> Result {
    // `wasi:http` 0.2.x links (its requests are denied at run time); the empty
    // component is then refused for its exports, not its import.
    let http = wat::parse_str(r#"(component (import "wasi:http/types@0.2.10" (instance)))"#)?;
    let err = runtime()?.load(&http).expect_err("no exports");
    assert!(matches!(err, RuntimeError::WrongWorld { .. }), "{err:?}");
    let newer =
        wat::parse_str(r#"(component (import "wasi:http/types@0.3.0-rc-2025-09-16" (instance)))"#)?;
    let err = runtime()?.load(&newer).expect_err("wasi:http 0.3");
    assert!(
        matches!(err, RuntimeError::UnsupportedImport { .. }),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_component_over_the_size_cap_is_refused_naming_the_key() -> Result {
    let wasm = guest("balances")?;
    let runtime = runtime_with(SandboxLimits {
        max_component_bytes: wasm.len() - 1,
        ..SandboxLimits::default()
    })?;
    let err = runtime.load(&wasm).expect_err("too large");
    assert!(matches!(err, RuntimeError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string().contains("`limits.max_component_bytes`"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_compile_over_its_deadline_is_refused_and_remembered() -> Result {
    // This test binary registers no compile worker, so the compile runs in a thread;
    // the deadline still bounds the wait (the `refract` binary's child-process compile
    // is tested through the binary, in tests/devkit.rs).
    let cache = tempfile::tempdir()?;
    let limits = SandboxLimits {
        compile_timeout_ms: 1,
        ..SandboxLimits::default()
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        limits,
    })?;
    // A component of its own, so no other test's compile of the same bytes interferes.
    let mut wasm = guest("order-summary")?;
    wasm.extend_from_slice(b"\0\x0c\x0bcustom-salt");
    let err = runtime
        .load(&wasm)
        .expect_err("1 ms is too short to compile");
    assert!(
        matches!(err, RuntimeError::CompileTimeout { limit_ms: 1 }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`limits.compile_timeout_ms`"),
        "{err}"
    );
    // The runtime remembers the refusal: the same bytes are refused at once, without
    // another compile (a second abandoned compile thread would leave this binary's
    // compiler busy for every other test)...
    let err = runtime.load(&wasm).expect_err("remembered");
    assert!(
        matches!(err, RuntimeError::CompileTimeout { limit_ms: 1 }),
        "{err:?}"
    );
    // ...but not beside the cache: a timeout measures wall time, which a loaded machine
    // can exceed with a good component, so a new runtime (a restart) with a workable
    // limit compiles it.
    let raised = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        limits: SandboxLimits::default(),
    })?;
    raised.load(&wasm)?;
    Ok(())
}

#[test]
fn a_projector_can_run_under_limits_of_its_own() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, _) = start(&runtime, "memory-bomb", dir.path())?;
    let tight = loaded.clone().with_limits(SandboxLimits {
        max_memory_bytes: 4 << 20,
        ..SandboxLimits::default()
    })?;
    assert_eq!(tight.limits().max_memory_bytes, 4 << 20);
    assert_eq!(
        loaded.limits().max_memory_bytes,
        SandboxLimits::default().max_memory_bytes
    );
    let err = loaded
        .with_limits(SandboxLimits {
            max_wasm_stack_bytes: 1 << 20,
            ..SandboxLimits::default()
        })
        .expect_err("engine-wide");
    assert!(err.to_string().contains("max_wasm_stack_bytes"), "{err}");
    Ok(())
}

#[test]
fn an_import_with_the_wrong_shape_fails_to_link_naming_it() -> Result {
    let component = wat::parse_str(
        r#"(component (import "refract:projector/sql@0.1.0" (instance (export "prepare" (func)))))"#,
    )?;
    let err = runtime()?.load(&component).expect_err("mismatched sql");
    assert!(matches!(err, RuntimeError::Link { .. }), "{err:?}");
    assert!(
        err.to_string().contains("refract:projector/sql@0.1.0"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_component_without_the_exports_is_the_wrong_world() -> Result {
    let component = wat::parse_str("(component)")?;
    let err = runtime()?.load(&component).expect_err("empty component");
    assert!(matches!(err, RuntimeError::WrongWorld { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("it lacks `metadata`, `init`, `handle`"),
        "{err}"
    );
    Ok(())
}

/// A batch of events of the given types, with empty JSON objects, from `first_offset`.
fn typed_batch(types: &[&str], first_offset: u64) -> EventBatch {
    let mut batch = EventBatch::new();
    for (i, ty) in types.iter().enumerate() {
        let offset = first_offset + i as u64;
        batch.push(offset, &format!("id-{offset}"), "s", 1, ty, "{}", None, 0);
    }
    batch
}

/// Asserts the error names the projector, its version and `at` ("offset 7"), and
/// returns it as a trap: (kind, message).
fn expect_trap(
    err: &ProjectorError,
    projector: &str,
    loaded: &LoadedProjector,
    at: &str,
) -> (TrapKind, String) {
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "projector `{projector}` (version {}) trapped {at}: ",
            loaded.version()
        )),
        "{text}"
    );
    assert!(err.is_poison(), "{text}");
    match err {
        ProjectorError::Trap { kind, message, .. } => (*kind, message.clone()),
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// What the attack fixtures record: attack → (outcome, detail).
type Attempts = BTreeMap<String, (String, Option<String>)>;

/// The `attempts` table of the attack fixtures.
fn attempts(conn: &Connection) -> Result<Attempts> {
    let mut statement = conn.prepare("SELECT attack, outcome, detail FROM attempts")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[test]
fn a_handler_error_rolls_the_batch_back_and_names_the_event() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "balances", dir.path())?;
    let events: Vec<Ev> = vec![
        ("account.opened", r#"{"account":"a","owner":"Ann"}"#.into()),
        ("money.deposited", r#"{"account":"a","amount":500}"#.into()),
        (
            "money.withdrawn",
            format!(r#"{{"account":"a","amount":{}}}"#, i64::MIN),
        ),
    ];
    let mut batch = EventBatch::new();
    fill(&mut batch, &events, 41);
    let err = apply(&mut instance, &batch).expect_err("the withdrawal cannot be negated");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "projector `balances` (version {}) failed at offset 43: ",
            loaded.version()
        )),
        "{text}"
    );
    assert!(
        matches!(err, ProjectorError::Handler { offset: 43, .. }),
        "{err:?}"
    );
    assert!(err.is_poison() && !err.is_transient());
    assert_eq!(err.offset(), Some(43));
    assert!(
        !instance.is_poisoned(),
        "a handler error keeps the instance"
    );

    let conn = instance.host_connection();
    assert!(
        actual_balances(conn)?.is_empty(),
        "the whole batch rolled back"
    );
    assert_eq!(checkpoint(conn)?, 0, "the checkpoint did not move");

    fill(&mut batch, &events[..2], 41);
    apply(&mut instance, &batch)?;
    assert_eq!(actual_balances(instance.host_connection())?.len(), 1);
    assert_eq!(checkpoint(instance.host_connection())?, 42);
    Ok(())
}

#[test]
fn a_trap_rolls_the_batch_back_and_the_next_attempt_reinstantiates() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "memory-bomb", dir.path())?;
    let probes = |conn: &Connection| -> rusqlite::Result<i64> {
        conn.query_row("SELECT count(*) FROM probe", [], |row| row.get(0))
    };

    let err = apply(&mut instance, &typed_batch(&["memory.probe", "bomb"], 1))
        .expect_err("the bomb traps");
    expect_trap(
        &err,
        "memory-bomb",
        &loaded,
        "in the batch at offsets 1..=2",
    );
    assert!(instance.is_poisoned());
    assert_eq!(
        probes(instance.host_connection())?,
        0,
        "the probe rolled back"
    );
    assert_eq!(checkpoint(instance.host_connection())?, 0);

    apply(&mut instance, &typed_batch(&["memory.probe"], 3))?;
    assert!(!instance.is_poisoned(), "a fresh instance took over");
    assert_eq!(probes(instance.host_connection())?, 1);
    assert_eq!(checkpoint(instance.host_connection())?, 3);
    Ok(())
}

#[test]
fn loop_forever_is_interrupted_at_the_deadline() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime_with(SandboxLimits {
        batch_deadline_ms: 200,
        ..SandboxLimits::default()
    })?;
    let (loaded, mut instance) = start(&runtime, "loop-forever", dir.path())?;
    for (ty, offset) in [("spin", 10), ("loop.sql", 11)] {
        let started = Instant::now();
        let err = apply(&mut instance, &typed_batch(&[ty], offset)).expect_err("interrupted");
        let elapsed = started.elapsed();
        eprintln!("loop-forever ({ty}) interrupted after {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{ty}: took {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(150),
            "{ty}: took {elapsed:?}"
        );
        let (kind, message) = expect_trap(
            &err,
            "loop-forever",
            &loaded,
            &format!("at offset {offset}"),
        );
        assert_eq!(kind, TrapKind::Deadline, "{message}");
        assert!(message.contains("limits.batch_deadline_ms"), "{message}");
        assert!(instance.is_poisoned());
        assert_eq!(checkpoint(instance.host_connection())?, 0);
    }
    // The next attempt instantiates afresh; with nothing to run, the checkpoint moves.
    apply(&mut instance, &EventBatch::new())?;
    assert!(!instance.is_poisoned());
    Ok(())
}

#[test]
fn memory_bombs_trap_at_the_memory_limit() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "memory-bomb", dir.path())?;
    let err = apply(&mut instance, &typed_batch(&["bomb"], 5)).expect_err("bomb");
    let (kind, message) = expect_trap(&err, "memory-bomb", &loaded, "at offset 5");
    assert_eq!(kind, TrapKind::Limit("max_memory_bytes"), "{message}");
    assert!(
        message.contains("128 MiB (`limits.max_memory_bytes`)"),
        "{message}"
    );
    assert!(
        message.contains("memory allocation of"),
        "the guest's stderr: {message}"
    );
    eprintln!("memory-bomb (bomb): {err}");

    // One 1.5 GiB block. If the allocation really happens it is refused like the rest;
    // LLVM may also drop an allocation whose contents are never read, and then the
    // guest returns its own error without having allocated anything.
    match apply(&mut instance, &typed_batch(&["memory.huge"], 6)).expect_err("huge") {
        err @ ProjectorError::Trap { .. } => {
            let (kind, message) = expect_trap(&err, "memory-bomb", &loaded, "at offset 6");
            assert_eq!(kind, TrapKind::Limit("max_memory_bytes"), "{message}");
        }
        ProjectorError::Handler {
            offset: 6, message, ..
        } if message.starts_with("allocated") => {
            eprintln!("memory-bomb (memory.huge): the guest's allocation was optimised away");
        }
        other => panic!("memory.huge: {other}"),
    }
    assert!(resident_bytes()? < 2 << 30, "host memory stays bounded");
    Ok(())
}

#[test]
fn fallible_allocation_sees_the_memory_limit_as_a_value() -> Result {
    let dir = tempfile::tempdir()?;
    let limit = 48 << 20;
    let runtime = runtime_with(SandboxLimits {
        max_memory_bytes: limit,
        ..SandboxLimits::default()
    })?;
    let (_loaded, mut instance) = start(&runtime, "memory-bomb", dir.path())?;
    apply(&mut instance, &typed_batch(&["memory.probe"], 1))?;
    let peak: i64 = instance
        .host_connection()
        .query_row("SELECT bytes FROM probe", [], |row| row.get(0))?;
    assert!(peak > 0 && peak < limit as i64, "peak {peak}");
    Ok(())
}

/// This process's resident memory, from /proc.
fn resident_bytes() -> Result<u64> {
    process_status_bytes("VmRSS:")
}

/// The most resident memory this process has had, from /proc.
fn peak_resident_bytes() -> Result<u64> {
    process_status_bytes("VmHWM:")
}

/// A size field of /proc/self/status, in bytes.
fn process_status_bytes(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?
        .trim()
        .parse::<u64>()?;
    Ok(kib * 1024)
}

#[test]
fn deep_recursion_traps_without_taking_the_host_down() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "deep-recursion", dir.path())?;

    let err = apply(&mut instance, &typed_batch(&["dive"], 1)).expect_err("overflow");
    let (kind, message) = expect_trap(&err, "deep-recursion", &loaded, "at offset 1");
    assert_eq!(kind, TrapKind::StackOverflow, "{message}");
    assert!(message.contains("limits.max_wasm_stack_bytes"), "{message}");

    let err = apply(&mut instance, &typed_batch(&["recursion.shadow"], 2)).expect_err("overflow");
    let (kind, message) = expect_trap(&err, "deep-recursion", &loaded, "at offset 2");
    assert!(
        matches!(kind, TrapKind::StackOverflow | TrapKind::Crash),
        "{kind:?}: {message}"
    );
    eprintln!("deep-recursion (shadow stack): {message}");
    Ok(())
}

#[test]
fn huge_output_is_refused_at_the_caps() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, mut instance) = start(&runtime, "huge-output", dir.path())?;

    // A 64 MiB error message: the batch fails with the message cut at the cap.
    let err = apply(&mut instance, &typed_batch(&["huge.error"], 1)).expect_err("fails");
    assert!(err.is_poison());
    let text = err.to_string();
    assert!(text.len() < 16 << 10, "message of {} bytes", text.len());
    assert!(
        text.starts_with(&format!(
            "projector `huge-output` (version {}) failed at offset 1: ",
            loaded.version()
        )),
        "{}",
        &text[..200]
    );
    assert!(
        text.contains("limits.max_error_message_bytes"),
        "{}",
        &text[..200]
    );

    // A 64 MiB log line is cut, and the batch goes on.
    apply(&mut instance, &typed_batch(&["huge.log"], 2))?;

    let attacks = [
        "huge.sql",
        "huge.prepare",
        "huge.param",
        "huge.param-count",
        "huge.rows",
    ];
    for (i, attack) in attacks.iter().enumerate() {
        apply(&mut instance, &typed_batch(&[attack], 3 + i as u64))
            .map_err(|err| format!("{attack}: {err}"))?;
    }
    // Two million writes in one call: the host's count of writes refuses them (as
    // packed lists they are well under wasmtime's per-call copy budget, which stopped
    // 0.1.0's list of records first); either refusal names its limit.
    let writes_refused_by_trap = match apply(&mut instance, &typed_batch(&["huge.writes"], 8)) {
        Ok(()) => false,
        Err(err) => {
            let (kind, message) = expect_trap(&err, "huge-output", &loaded, "at offset 8");
            assert_eq!(kind, TrapKind::Limit("max_hostcall_bytes"), "{message}");
            true
        }
    };
    let seen = attempts(instance.host_connection())?;
    assert_eq!(seen.get("huge.log").map(|(o, _)| o.as_str()), Some("ok"));
    let value_refusals = attacks
        .iter()
        .chain((!writes_refused_by_trap).then_some(&"huge.writes"));
    for attack in value_refusals {
        let (outcome, _) = seen.get(*attack).ok_or(*attack)?;
        assert!(
            outcome.to_ascii_lowercase().starts_with("error:limit: "),
            "{attack}: {outcome}"
        );
        assert!(
            outcome.contains("limits."),
            "{attack} names its limit: {outcome}"
        );
    }
    Ok(())
}

#[test]
fn sql_attacks_are_denied_or_contained() -> Result {
    let dir = tempfile::tempdir()?;
    for file in ["/tmp/refract-attack.db", "/tmp/refract-attack-copy.db"] {
        let _ = std::fs::remove_file(file);
    }
    let runtime = runtime_with(SandboxLimits {
        statement_deadline_ms: 300,
        max_page_count: 2_560,
        ..SandboxLimits::default()
    })?;
    let (loaded, mut instance) = start(&runtime, "sql-attacks", dir.path())?;

    // What each attack must see: `ok`, or an error of one of these kinds.
    let expected: &[(&str, &[&str])] = &[
        ("control-select", &["ok"]),
        ("control-pragma-read", &["ok"]),
        ("attach", &["denied"]),
        ("attach-script", &["denied"]),
        ("vacuum-into", &["denied"]),
        ("load-extension", &["denied"]),
        ("readfile", &["invalid"]),
        ("writable-schema", &["denied"]),
        ("writable-schema-script", &["denied"]),
        ("pragma-journal-off", &["denied"]),
        ("pragma-synchronous-off", &["denied"]),
        ("pragma-max-page-count", &["denied"]),
        ("sqlite-master-write", &["denied"]),
        ("checkpoint-read", &["denied"]),
        ("checkpoint-write", &["denied"]),
        ("checkpoint-insert", &["denied"]),
        ("checkpoint-drop", &["denied"]),
        ("checkpoint-alter", &["denied"]),
        ("checkpoint-trigger-on", &["denied"]),
        ("checkpoint-temp-trigger", &["denied"]),
        ("checkpoint-view", &["ok", "denied"]),
        ("checkpoint-view-read", &["denied", "invalid"]),
        ("refract-table-create", &["denied"]),
        ("begin", &["denied"]),
        ("commit", &["denied"]),
        ("rollback", &["denied"]),
        ("savepoint", &["denied"]),
        ("release", &["denied"]),
        ("commit-prepared", &["denied"]),
        ("recursive-cte", &["interrupted"]),
        ("zeroblob", &["limit"]),
        ("randomblob-huge", &["denied", "limit"]),
        ("string-bomb", &["limit"]),
        ("fill-disk", &["limit"]),
        ("deep-expression", &["limit", "invalid"]),
        ("random", &["denied"]),
        ("randomblob", &["denied"]),
        ("clock", &["denied"]),
        ("clock-current", &["denied"]),
    ];
    let mut failed_batches = Vec::new();
    for (i, (attack, _)) in expected.iter().enumerate() {
        let offset = 1 + i as u64;
        let started = Instant::now();
        if let Err(err) = apply(
            &mut instance,
            &typed_batch(&[&format!("attack.{attack}")], offset),
        ) {
            assert!(
                err.to_string()
                    .contains(&format!("(version {})", loaded.version())),
                "{err}"
            );
            failed_batches.push(format!("{attack}: {err}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{attack} took {:?}",
            started.elapsed()
        );
    }
    assert!(
        failed_batches.is_empty(),
        "batches failed: {failed_batches:#?}"
    );

    let seen = attempts(instance.host_connection())?;
    for (attack, (outcome, _)) in &seen {
        eprintln!(
            "sql-attacks {attack}: {}",
            outcome.chars().take(160).collect::<String>()
        );
    }
    let mut wrong = Vec::new();
    for (attack, kinds) in expected {
        let outcome = seen
            .get(*attack)
            .map_or("(no row)", |(outcome, _)| outcome.as_str());
        let ok = kinds
            .iter()
            .any(|kind| outcome == *kind || outcome.starts_with(&format!("error:{kind}: ")));
        if !ok {
            wrong.push(format!("{attack}: expected {kinds:?}, got {outcome}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        seen.get("control-select")
            .and_then(|(_, detail)| detail.as_deref()),
        Some("1")
    );

    let conn = instance.host_connection();
    assert_eq!(
        checkpoint(conn)?,
        expected.len() as i64,
        "the host's table is intact"
    );
    let rows: i64 = conn.query_row("SELECT count(*) FROM _refract_checkpoint", [], |row| {
        row.get(0)
    })?;
    assert_eq!(rows, 1);
    for file in ["/tmp/refract-attack.db", "/tmp/refract-attack-copy.db"] {
        assert!(!Path::new(file).exists(), "{file} was created");
    }
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    assert_eq!(journal, "wal");
    Ok(())
}

// ---------------------------------------------------------------------------------
// What one SQL call can cost: time, memory, temporary storage; the host's tables; the
// host's log.

/// How long one attack may take before a test calls it a failure to contain it. The
/// deadlines are a few seconds; this only has to be far below "minutes" on a slow,
/// shared machine.
const ONE_CALL_LIVENESS: Duration = Duration::from_secs(30);

/// Applies `batch` on another thread and waits at most [`ONE_CALL_LIVENESS`]: a call
/// the sandbox fails to stop fails the test at once, naming `what`, instead of hanging
/// it. Returns the instance, the outcome and how long the call took.
fn apply_within(
    mut instance: ProjectorInstance,
    batch: EventBatch,
    what: &str,
) -> (
    ProjectorInstance,
    std::result::Result<(), ProjectorError>,
    Duration,
) {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let outcome = apply(&mut instance, &batch);
        let _ = done.send((instance, outcome, started.elapsed()));
    });
    match result.recv_timeout(ONE_CALL_LIVENESS) {
        Ok(answer) => answer,
        Err(_) => panic!(
            "{what} did not return within {ONE_CALL_LIVENESS:?}: the sandbox did not stop it"
        ),
    }
}

/// Runs each `(attack, expected kinds)` as its own one-event batch `<prefix>.<attack>`
/// (each within [`ONE_CALL_LIVENESS`]), then checks every outcome recorded in the
/// guest's `attempts` table. Returns the instance and the attempts.
fn run_attacks(
    mut instance: ProjectorInstance,
    loaded: &LoadedProjector,
    prefix: &str,
    expected: &[(&str, &[&str])],
) -> Result<(ProjectorInstance, Attempts)> {
    let mut failed_batches = Vec::new();
    for (i, (attack, _)) in expected.iter().enumerate() {
        let offset = 1 + i as u64;
        let event_type = format!("{prefix}.{attack}");
        let (back, outcome, took) =
            apply_within(instance, typed_batch(&[&event_type], offset), &event_type);
        instance = back;
        eprintln!("{event_type}: {took:?}");
        if let Err(err) = outcome {
            assert!(
                err.to_string()
                    .contains(&format!("(version {})", loaded.version())),
                "{err}"
            );
            failed_batches.push(format!("{attack}: {err}"));
        }
    }
    assert!(
        failed_batches.is_empty(),
        "batches failed: {failed_batches:#?}"
    );
    let seen = attempts(instance.host_connection())?;
    let mut wrong = Vec::new();
    for (attack, kinds) in expected {
        let outcome = seen
            .get(*attack)
            .map_or("(no row)", |(outcome, _)| outcome.as_str());
        eprintln!(
            "{prefix}.{attack}: {}",
            outcome.chars().take(200).collect::<String>()
        );
        let ok = kinds
            .iter()
            .any(|kind| outcome == *kind || outcome.starts_with(&format!("error:{kind}: ")));
        if !ok {
            wrong.push(format!("{attack}: expected {kinds:?}, got {outcome}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    Ok((instance, seen))
}

/// The outcome recorded for `attack`.
fn outcome_of(seen: &Attempts, attack: &str) -> String {
    seen.get(attack)
        .map_or_else(String::new, |(outcome, _)| outcome.clone())
}

#[test]
fn one_sql_call_cannot_outlast_the_deadlines() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime_with(SandboxLimits {
        statement_deadline_ms: 1_000,
        ..SandboxLimits::default()
    })?;
    let (loaded, instance) = start(&runtime, "sql-slow", dir.path())?;
    let expected: &[(&str, &[&str])] = &[
        ("control", &["ok"]),
        ("replace", &["ok"]),
        ("instr", &["ok"]),
        ("trim", &["ok"]),
        ("unhex", &["ok"]),
        ("like", &["limit"]),
        ("glob", &["limit"]),
        ("like-at-limit", &["ok"]),
        ("json-patch", &["limit"]),
        ("json-pretty", &["denied"]),
        ("json-group-array", &["denied"]),
        ("highlight", &["denied"]),
        ("group-concat", &["limit"]),
        ("printf-width", &["limit"]),
        ("printf-precision", &["limit"]),
        ("zeroblob", &["limit"]),
        ("substr-loop", &["interrupted"]),
    ];
    let (_instance, seen) = run_attacks(instance, &loaded, "slow", expected)?;
    // The values were as large as the host allows: 1 MB by default.
    let detail = |attack: &str| seen.get(attack).and_then(|(_, detail)| detail.clone());
    assert_eq!(detail("control").as_deref(), Some("1000000"));
    assert_eq!(detail("replace").as_deref(), Some("1000000"));
    assert_eq!(detail("instr").as_deref(), Some("0"));
    assert_eq!(detail("trim").as_deref(), Some("0"));
    for (attack, key) in [
        ("like", "limits.max_like_pattern_bytes"),
        ("json-patch", "limits.max_function_cost"),
        ("group-concat", "limits.max_value_bytes"),
    ] {
        let outcome = outcome_of(&seen, attack);
        assert!(outcome.contains(key), "{attack} names `{key}`: {outcome}");
    }
    assert!(
        outcome_of(&seen, "json-group-array").contains("group_concat"),
        "the refusal says what to use instead"
    );
    Ok(())
}

#[test]
fn sql_memory_is_counted_before_it_is_spent() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, instance) = start(&runtime, "sql-memory", dir.path())?;
    let expected: &[(&str, &[&str])] = &[
        ("wide-row", &["limit"]),
        ("too-wide", &["limit"]),
        ("many-statements", &["limit"]),
        ("function-args", &["limit"]),
        ("huge-format", &["ok", "limit"]),
    ];
    let (_instance, seen) = run_attacks(instance, &loaded, "memory", expected)?;
    for (attack, key) in [
        ("wide-row", "limits.max_query_bytes"),
        ("too-wide", "limits.max_columns"),
        ("many-statements", "limits.max_prepared_sql_bytes"),
        ("function-args", "limits.max_function_args"),
    ] {
        let outcome = outcome_of(&seen, attack);
        assert!(outcome.contains(key), "{attack} names `{key}`: {outcome}");
    }
    // 4 MiB of SQL text, at 200 KB a statement.
    let prepared = seen
        .get("many-statements")
        .and_then(|(_, detail)| detail.clone())
        .unwrap_or_default();
    assert_eq!(prepared, "20 prepared", "{prepared}");
    // A wide row of the largest values is 60 × 1 MB inside SQLite, and the host copies
    // at most `max_query_bytes` of it; before, it copied the row whole first.
    let peak = peak_resident_bytes()?;
    eprintln!("sql-memory: peak resident memory {} MiB", peak >> 20);
    assert!(peak < 1 << 30, "peak resident memory {} MiB", peak >> 20);
    Ok(())
}

#[test]
fn temporary_storage_is_capped() -> Result {
    let dir = tempfile::tempdir()?;
    let max_temp_bytes = 16 << 20;
    let runtime = runtime_with(SandboxLimits {
        max_temp_bytes,
        ..SandboxLimits::default()
    })?;
    let (loaded, instance) = start(&runtime, "temp-fill", dir.path())?;
    let expected: &[(&str, &[&str])] = &[
        ("control", &["ok"]),
        ("sort", &["limit"]),
        ("distinct", &["limit"]),
        ("group-by", &["limit"]),
        ("union", &["limit"]),
        ("materialized", &["limit"]),
        ("insert-select", &["limit"]),
        ("temp-table", &["denied"]),
        ("temp-view", &["denied"]),
        ("temp-trigger", &["denied"]),
        ("temp-fts", &["denied"]),
        ("temp-rtree", &["denied"]),
    ];
    let (instance, seen) = run_attacks(instance, &loaded, "temp", expected)?;
    for attack in ["sort", "distinct", "group-by", "union", "materialized"] {
        let outcome = outcome_of(&seen, attack);
        assert!(
            outcome.contains("limits.max_temp_bytes"),
            "{attack} names the limit: {outcome}"
        );
    }
    let peak = instance.temp_peak_bytes();
    eprintln!("temp-fill: peak temporary storage {} KiB", peak >> 10);
    assert!(peak > 0, "the attacks reached temporary storage");
    assert!(peak <= max_temp_bytes, "peak {peak} > {max_temp_bytes}");
    // Nothing temporary was left behind for the next call.
    let temp_objects: i64 = instance.host_connection().query_row(
        "SELECT count(*) FROM temp.sqlite_schema",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(temp_objects, 0);
    Ok(())
}

#[test]
fn the_host_tables_stay_hidden_and_keep_their_names() -> Result {
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (loaded, instance) = start(&runtime, "host-tables", dir.path())?;
    let expected: &[(&str, &[&str])] = &[
        ("control-alter", &["ok"]),
        ("control-rename", &["ok"]),
        ("control-table-info", &["ok"]),
        ("rename-script", &["denied"]),
        ("rename-execute", &["denied"]),
        ("rename-query", &["denied"]),
        ("sqlite-master", &["denied"]),
        ("sqlite-schema", &["denied"]),
        ("sqlite-temp-master", &["denied"]),
        ("dbstat", &["denied"]),
        ("dbstat-schema", &["denied"]),
        ("table-list", &["denied"]),
        ("table-list-function", &["denied"]),
        ("table-info", &["denied"]),
        ("index-list", &["denied"]),
        ("create-as-select", &["denied"]),
        ("view", &["denied"]),
        ("trigger", &["denied"]),
    ];
    let (instance, _seen) = run_attacks(instance, &loaded, "host", expected)?;
    let conn = instance.host_connection();
    // Every rename was undone: the guest's table kept its name after each attempt.
    let mine: Vec<(String, i64)> = conn
        .prepare("SELECT attack, mine FROM attempts ORDER BY rowid")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    assert!(
        mine.iter().all(|(_, exists)| *exists == 1),
        "`mine` lost its name: {mine:?}"
    );
    let host_names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE name LIKE '\\_refract\\_%' ESCAPE '\\' OR tbl_name LIKE '\\_refract\\_%' ESCAPE '\\'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(host_names, ["_refract_checkpoint"]);
    assert_eq!(checkpoint(conn)?, expected.len() as i64);
    let leaked: i64 = conn.query_row("SELECT count(*) FROM leak", [], |row| row.get(0))?;
    assert_eq!(leaked, 0, "the trigger copied the schema");
    Ok(())
}

#[test]
fn cancelled_calls_end_at_once_and_keep_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    // A deadline far away: only the cancellation can end these calls soon.
    let runtime = runtime_with(SandboxLimits {
        batch_deadline_ms: 600_000,
        statement_deadline_ms: 600_000,
        ..SandboxLimits::default()
    })?;
    let (_loaded, wasm_loop) = start(&runtime, "loop-forever", dir.path())?;
    let (_loaded, sql_loop) = start(&runtime, "sql-slow", dir.path())?;
    let mut calls = Vec::new();
    for (mut instance, event) in [(wasm_loop, "spin"), (sql_loop, "slow.substr-loop")] {
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let outcome = apply(&mut instance, &typed_batch(&[event], 1));
            let _ = done.send((instance, outcome));
        });
        calls.push((event, result));
    }
    std::thread::sleep(Duration::from_millis(500));
    let cancelled = Instant::now();
    runtime.cancel_calls();
    for (event, result) in calls {
        let (mut instance, outcome) = result
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{event} went on after the cancellation"));
        eprintln!(
            "{event}: ended {:?} after the cancellation",
            cancelled.elapsed()
        );
        let err = outcome.expect_err("cancelled");
        assert!(
            matches!(err, ProjectorError::Cancelled { .. }),
            "{event}: {err:?}"
        );
        assert!(!err.is_poison(), "a cancelled call blames no event");
        assert_eq!(checkpoint(instance.host_connection())?, 0, "{event}");
        // Every later call is cancelled too, before it starts.
        let err = apply(&mut instance, &typed_batch(&["spin"], 2)).expect_err("cancelled");
        assert!(matches!(err, ProjectorError::Cancelled { .. }), "{err:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The real `refract run`, with hostile guests in its plugins folder.

/// How long a live host may take to start, deploy or catch up.
const HOST_LIVENESS: Duration = Duration::from_secs(120);

/// A `refract run` of this build on a temporary data directory, and its API.
struct LiveHost {
    host: Option<support::host::RunningHost>,
    url: String,
    token: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl LiveHost {
    /// Starts `refract run` with `guests` (file name without `.wasm`, guest crate) in
    /// its plugins folder and `config` as its `refract.toml`, and waits until it serves.
    fn start(guests: &[(&str, &str)], config: &str) -> Result<LiveHost> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("plugins"))?;
        for (file, crate_name) in guests {
            std::fs::write(
                data.join("plugins").join(format!("{file}.wasm")),
                guest(crate_name)?,
            )?;
        }
        let config_path = dir.path().join("refract.toml");
        std::fs::write(&config_path, config)?;
        let mut host = support::host::RunningHost::start(
            Path::new(env!("CARGO_BIN_EXE_refract")),
            dir.path(),
            &data,
            &config_path,
            &[],
        )?;
        host.wait_serving(HOST_LIVENESS);
        let line = host.wait_for_line(HOST_LIVENESS, "http api:");
        let url = line
            .split_once("http api:")
            .map(|(_, url)| url.trim().to_owned())
            .ok_or("no API address")?;
        let token = std::fs::read_to_string(data.join("token"))?
            .trim()
            .to_owned();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Ok(LiveHost {
            host: Some(host),
            url,
            token,
            agent,
            _dir: dir,
        })
    }

    fn host(&mut self) -> &mut support::host::RunningHost {
        self.host.as_mut().expect("the host is running")
    }

    /// `GET path`: the status and the body.
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()?;
        let body = response.body_mut().read_to_string()?;
        Ok((response.status().as_u16(), body))
    }

    /// `POST path` with a JSON body: the status and the body parsed.
    fn post(&self, path: &str, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())?;
        let text = response.body_mut().read_to_string()?;
        Ok((
            response.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// Appends `events` (`[{type, data}]`) to `stream`.
    fn append(&self, stream: &str, events: &serde_json::Value) -> Result {
        let (status, body) = self.post(&format!("/v1/streams/{stream}/events"), events)?;
        assert_eq!(status, 200, "append: {body}");
        Ok(())
    }

    /// The status of `projector`'s first (running) version, if it has one yet.
    fn status(&self, projector: &str) -> Option<serde_json::Value> {
        let (code, body) = self.get(&format!("/v1/projectors/{projector}")).ok()?;
        if code != 200 {
            return None;
        }
        let view: serde_json::Value = serde_json::from_str(&body).ok()?;
        let status = view["versions"][0]["status"].clone();
        (!status.is_null()).then_some(status)
    }

    /// Waits until `projector`'s status satisfies `condition`, showing it on failure.
    fn wait_status(
        &mut self,
        projector: &str,
        what: &str,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + HOST_LIVENESS;
        loop {
            let status = self.status(projector);
            if status.as_ref().is_some_and(&condition) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {projector} {what}; its status: {status:?}\n{}",
                self.host().tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the time the host took to exit (it must within `timeout`).
    fn terminate(&mut self, timeout: Duration) -> (std::process::ExitStatus, Duration) {
        let host = self.host.take().expect("the host is running");
        let started = Instant::now();
        let status = host.terminate(timeout);
        (status, started.elapsed())
    }
}

#[test]
fn guest_log_lines_cannot_forge_or_flood_the_host_log() -> Result {
    let mut live = LiveHost::start(&[("log-flood", "log-flood")], "")?;
    live.wait_status("log-flood", "to run", |_| true);
    live.append(
        "logs",
        &serde_json::json!([{"type": "log.forge", "data": {}}]),
    )?;
    // Twenty calls, each at the per-call caps: 160 MB of log without a rate limit.
    const FLOODS: u64 = 20;
    for _ in 0..FLOODS {
        live.append(
            "logs",
            &serde_json::json!([{"type": "log.flood", "data": {}}]),
        )?;
    }
    live.wait_status("log-flood", "to apply every event", |status| {
        status["checkpoint"] == 1 + FLOODS
    });

    let lines = live.host().lines();
    // The forged line stayed inside the projector's own line, escaped.
    let forged: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("FORGED"))
        .collect();
    assert_eq!(forged.len(), 1, "{forged:#?}");
    let line = forged[0];
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(refract::runtime::LOG_TARGET), "{line}");
    assert!(
        line.contains("log-flood"),
        "tagged with the projector: {line}"
    );
    for escaped in [
        "harmless\\n2030-01-01T00:00:00.000000Z ERROR refract::engine: FORGED-LINE",
        "\\rFORGED-CR",
        "\\u{1b}[2K",
        "\\u{2028}FORGED-LS",
    ] {
        assert!(line.contains(escaped), "{escaped} in {line}");
    }
    assert!(
        !lines.iter().any(|line| line.starts_with("2030-01-01")),
        "a guest started a host log line"
    );

    // The flood was cut to the rates, and what was dropped is counted.
    let flood_lines = lines.iter().filter(|line| line.contains("FLOOD ")).count();
    let output_bytes: usize = lines.iter().map(String::len).sum();
    eprintln!(
        "log-flood: {flood_lines} flood lines and {} KiB of output kept of {} lines sent",
        output_bytes >> 10,
        FLOODS * 1000
    );
    assert!(output_bytes < 4 << 20, "{output_bytes} bytes of log");
    let status = live.status("log-flood").ok_or("no status")?;
    let dropped = status["log_lines_dropped"].as_u64().unwrap_or_default();
    assert_eq!(
        dropped + flood_lines as u64,
        FLOODS * 1000,
        "every flood line was either written or counted: {status}"
    );
    let (_, metrics) = live.get("/metrics")?;
    let counted = metrics
        .lines()
        .find(|line| {
            line.starts_with("refract_log_lines_dropped_total{")
                && line.contains("projector=\"log-flood\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<u64>().ok());
    assert_eq!(counted, Some(dropped), "{metrics}");
    assert!(
        lines.iter().any(
            |line| line.contains("dropped") && line.contains("limits.max_log_lines_per_second")
        ),
        "the host says it dropped lines"
    );
    let (status, _) = live.terminate(Duration::from_secs(30));
    assert!(status.success(), "refract run exited with {status}");
    Ok(())
}

#[test]
fn shutdown_is_prompt_while_a_guest_is_stuck_in_one_sql_step() -> Result {
    // A `LIKE` pattern limit raised far past its default lets one SQLite step run for
    // minutes: the stand-in for any step the bounds fail to cover.
    let config = "[limits]\nbatch_deadline_ms = 2000\ndeadline_grace_ms = 500\nmax_like_pattern_bytes = 20000\n";
    let mut live = LiveHost::start(
        &[("sql-slow", "sql-slow"), ("balances", "balances")],
        config,
    )?;
    live.wait_status("sql-slow", "to run", |_| true);
    live.wait_status("balances", "to run", |_| true);
    live.append(
        "slow",
        &serde_json::json!([{"type": "slow.like-step", "data": {"pattern": 20000, "value": 1000000}}]),
    )?;
    // The watchdog reports the call once it is past its deadline and grace.
    live.wait_status("sql-slow", "to report the call overrunning", |status| {
        !status["overrun"].is_null()
            && status["state"].as_str().is_some_and(|state| {
                state.starts_with("stalled") && state.contains("limits.batch_deadline_ms")
            })
    });
    let (_, metrics) = live.get("/metrics")?;
    let overrun = metrics
        .lines()
        .find(|line| {
            line.starts_with("refract_projector_overrun_seconds{")
                && line.contains("projector=\"sql-slow\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(overrun > 2.5, "overrun {overrun} s in:\n{metrics}");
    let (code, health) = live.get("/health")?;
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("sql-slow"), "{health}");

    // The other projector keeps going while the hostile one is inside its step.
    live.append(
        "acc-1",
        &serde_json::json!([
            {"type": "account.opened", "data": {"account": "a-1", "owner": "Ann"}},
            {"type": "money.deposited", "data": {"account": "a-1", "amount": 250}},
        ]),
    )?;
    live.wait_status("balances", "to apply the new events", |status| {
        status["checkpoint"] == 3
    });
    let (code, answer) = live.post(
        "/v1/projectors/balances/query",
        &serde_json::json!({"sql": "SELECT balance FROM balances WHERE account = 'a-1'"}),
    )?;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["rows"][0][0], 250);
    assert!(
        live.status("sql-slow")
            .is_some_and(|status| !status["overrun"].is_null()),
        "sql-slow is still inside its step"
    );

    let (status, took) = live.terminate(Duration::from_secs(15));
    eprintln!("refract run exited {took:?} after SIGTERM, with a guest mid-step");
    assert!(status.success(), "refract run exited with {status}");
    Ok(())
}

#[test]
fn wasi_gives_nothing_and_time_and_randomness_are_fixed() -> Result {
    let _ = std::fs::remove_file("/tmp/refract-wasi-escape.txt");
    let dir = tempfile::tempdir()?;
    let runtime = runtime()?;
    let loaded = runtime.load(&guest("wasi-escape")?)?;
    let harmless = [
        "fs-read",
        "fs-read-relative",
        "fs-write",
        "fs-read-dir",
        "fs-cwd",
        "net-connect",
        "net-bind",
        "net-udp",
        "net-dns",
        "env-vars",
        "env-args",
        "clock-system",
        "clock-monotonic",
        "random-hash",
        "random-hashmap-order",
        "stdin",
        "stdout",
        "stderr",
    ];
    // Twice, on separate instances and databases: the answers must not change.
    let mut runs = Vec::new();
    for run in 0..2 {
        let mut instance = loaded.instantiate(
            &dir.path().join(format!("escape-{run}.db")),
            DbOptions::live(),
        )?;
        instance.init(create_checkpoint)?;
        let types: Vec<String> = harmless
            .iter()
            .map(|name| format!("escape.{name}"))
            .collect();
        let types: Vec<&str> = types.iter().map(String::as_str).collect();
        apply(&mut instance, &typed_batch(&types, 1))?;
        runs.push(attempts(instance.host_connection())?);
    }
    assert_eq!(runs[0], runs[1], "every answer is the same on every run");
    let seen = &runs[0];
    let outcome = |name: &str| seen.get(name).cloned().unwrap_or_default();
    for name in ["fs-read", "fs-read-relative", "fs-write", "fs-read-dir"] {
        assert!(
            outcome(name).0.starts_with("error:"),
            "{name}: {:?}",
            outcome(name)
        );
    }
    for name in ["net-connect", "net-bind", "net-udp", "net-dns"] {
        assert!(
            outcome(name).0.starts_with("error:"),
            "{name}: {:?}",
            outcome(name)
        );
    }
    assert!(!Path::new("/tmp/refract-wasi-escape.txt").exists());
    let cwd = outcome("fs-cwd");
    assert!(
        cwd.0.starts_with("error:") || cwd.1.as_deref() == Some("/"),
        "{cwd:?}"
    );
    assert_eq!(outcome("env-vars").1.as_deref(), Some("[]"));
    assert_eq!(outcome("env-args").1.as_deref(), Some("[]"));
    assert_eq!(
        outcome("clock-system").1.as_deref(),
        Some("0"),
        "the wall clock is frozen"
    );
    assert_eq!(
        outcome("clock-monotonic").1.as_deref(),
        Some("0 ns elapsed")
    );
    assert_eq!(outcome("random-hash").0, "ok");
    let stdin = outcome("stdin");
    assert!(
        stdin.0.starts_with("error:") || stdin.1.as_deref() == Some("read 0 bytes"),
        "{stdin:?}"
    );
    assert_eq!(outcome("stdout").0, "ok");
    assert_eq!(outcome("stderr").0, "ok");

    // exit, abort and panic end the instance, never the host.
    let mut instance = loaded.instantiate(&dir.path().join("fatal.db"), DbOptions::live())?;
    instance.init(create_checkpoint)?;
    for (i, (name, needle)) in [
        ("exit", "called exit("),
        ("abort", "unreachable"),
        ("panic", "wasi-escape panics on purpose"),
    ]
    .into_iter()
    .enumerate()
    {
        let offset = 100 + i as u64;
        let err = apply(
            &mut instance,
            &typed_batch(&[&format!("escape.{name}")], offset),
        )
        .expect_err("fatal");
        let (kind, message) =
            expect_trap(&err, "wasi-escape", &loaded, &format!("at offset {offset}"));
        assert_eq!(kind, TrapKind::Crash, "{name}: {message}");
        assert!(message.contains(needle), "{name}: {message}");
        eprintln!("wasi-escape ({name}): {err}");
    }
    Ok(())
}

#[test]
fn the_wrong_world_is_refused_naming_what_is_missing() -> Result {
    let err = runtime()?
        .load(&guest("wrong-world")?)
        .expect_err("not a projector");
    let message = err.to_string();
    assert!(matches!(err, RuntimeError::WrongWorld { .. }), "{err:?}");
    assert!(
        message.contains("does not implement the world `refract:projector/projector`"),
        "{message}"
    );
    assert!(message.contains("`metadata`"), "{message}");
    assert!(message.contains("`run`"), "{message}");
    Ok(())
}

/// A measurement, not a check: the projector path (batch packing, the component, its
/// SQL through the sandbox, the checkpoint) against the same work in native Rust.
/// Run with `cargo test --release -p refract --test sandbox -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run it in release mode"]
fn balances_cost_against_native() -> Result {
    const EVENTS: usize = 200_000;
    const BATCH: usize = 1_000;
    let padding = "x".repeat(230);
    let events: Vec<Ev> = balances_events(EVENTS, 10_000, 11)
        .into_iter()
        .map(|(ty, data)| {
            (
                ty,
                format!(r#"{},"memo":"{padding}"}}"#, &data[..data.len() - 1]),
            )
        })
        .collect();
    let options = DbOptions {
        synchronous: refract::runtime::Synchronous::Normal,
        cache_size_kib: 64 << 10,
    };
    let dir = tempfile::tempdir()?;

    let runtime = runtime()?;
    let loaded = runtime.load(&guest("balances")?)?;
    // Alternate the two, on fresh databases, and keep the best of each: disk noise on a
    // shared machine is larger than the difference being measured.
    let (mut wasm, mut native) = (Duration::MAX, Duration::MAX);
    for round in 0..3 {
        let db = dir.path().join(format!("wasm-{round}.db"));
        let mut instance = loaded.instantiate(&db, options)?;
        instance.init(create_checkpoint)?;
        let mut batch = EventBatch::new();
        let started = Instant::now();
        for (i, chunk) in events.chunks(BATCH).enumerate() {
            fill(&mut batch, chunk, 1 + (i * BATCH) as u64);
            apply(&mut instance, &batch)?;
        }
        wasm = wasm.min(started.elapsed());

        let native_db = dir.path().join(format!("native-{round}.db"));
        native = native.min(native_balances(&native_db, &events, BATCH)?);
        assert_eq!(
            actual_balances(instance.host_connection())?,
            actual_balances(&Connection::open(&native_db)?)?
        );
    }
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / EVENTS as f64;
    eprintln!(
        "balances, {EVENTS} events of ~300 B in batches of {BATCH}: projector {:.2} µs/event, native {:.2} µs/event, ratio {:.2}",
        per_event(wasm),
        per_event(native),
        native.as_secs_f64() / wasm.as_secs_f64()
    );
    Ok(())
}

/// A measurement, not a check: the slowest single SQLite steps and the largest memory
/// one statement can take at the default limits, for the README's sandbox section.
/// Each step runs inside one SQLite function call, where no deadline is checked, so a
/// statement's worst case is its deadline plus the slowest of these.
/// Run with `cargo test -p refract --test sandbox sql_worst_cases -- --ignored --nocapture`
/// (add `--release` to optimise Refract's own code too; SQLite is optimised either way).
#[test]
#[ignore = "a measurement, not a check"]
fn sql_worst_cases() -> Result {
    let dir = tempfile::tempdir()?;
    let limits = SandboxLimits::default();
    let conn =
        refract::runtime::open_read_model(&dir.path().join("m.db"), DbOptions::live(), &limits)?;
    let n = limits.max_value_bytes - 64;
    let p = limits.max_like_pattern_bytes;
    // The patch whose cost (target bytes × patch bytes) is just under the cap.
    let patch_keys = (limits.max_function_cost as usize / n) / 10;
    let steps: Vec<(&str, String)> = vec![
        ("LIKE, pattern at its limit", format!("SELECT printf('%.*c', {n}, 'a') LIKE '%' || printf('%.*c', {}, 'a') || 'b%'", p - 3)),
        ("GLOB, pattern at its limit", format!("SELECT printf('%.*c', {n}, 'a') GLOB '*' || printf('%.*c', {}, 'a') || 'b*'", p - 3)),
        ("replace (bounded)", format!("SELECT length(replace(printf('%.*c', {n}, 'a'), printf('%.*c', {}, 'a') || 'b', 'x'))", n / 2)),
        ("instr (bounded)", format!("SELECT instr(printf('%.*c', {n}, 'a'), printf('%.*c', {}, 'a') || 'b')", n / 2)),
        ("trim with a list (bounded)", format!("SELECT length(trim(printf('%.*c', {n}, 'a'), printf('%.*c', {}, 'b') || 'a'))", n / 16)),
        ("json_patch at the cost cap", format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {}),
                  k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < {patch_keys})
             SELECT length(json_patch((SELECT '{{' || group_concat('\"a' || x || '\":0') || '}}' FROM c),
                                      (SELECT '{{' || group_concat('\"b' || x || '\":1') || '}}' FROM k)))",
            n / 14
        )),
        ("json_set, 31 paths over one document", format!(
            "SELECT length(json_set(json_object('a', printf('%.*c', {}, 'x')){}))",
            n - 1000,
            (0..31).map(|i| format!(", '$.k{i}', {i}")).collect::<String>()
        )),
        ("printf, value-sized output", format!("SELECT length(printf('%{n}d', 1))")),
        ("hex of the largest blob that fits", format!("SELECT length(hex(zeroblob({})))", n / 2)),
        ("upper over the largest value", format!("SELECT length(upper(printf('%.*c', {n}, 'a')))")),
    ];
    println!("| One step (one function call) | Median of 3 |");
    println!("|---|---|");
    let mut slowest = (Duration::ZERO, "");
    for (what, sql) in &steps {
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let _: rusqlite::types::Value = conn.query_row(sql, [], |row| row.get(0))?;
            times.push(started.elapsed());
        }
        times.sort();
        println!("| {what} | {:.0} ms |", times[1].as_secs_f64() * 1e3);
        if times[1] > slowest.0 {
            slowest = (times[1], what);
        }
    }
    println!(
        "slowest step: {} ({:.0} ms)",
        slowest.1,
        slowest.0.as_secs_f64() * 1e3
    );

    // Memory: a result row is held whole inside SQLite before it is read.
    let before = resident_bytes()?;
    let columns = vec![format!("printf('%.*c', {n}, 'w')"); limits.max_columns].join(", ");
    let mut statement = conn.prepare(&format!("SELECT {columns}"))?;
    let mut rows = statement.raw_query();
    let _row = rows.next()?;
    let peak = resident_bytes()?;
    println!(
        "one row of {} columns of {} bytes: {} MiB more resident memory",
        limits.max_columns,
        n,
        peak.saturating_sub(before) >> 20
    );
    drop(rows);
    drop(statement);

    // Temporary storage: a sort larger than the cap stops at it.
    let started = Instant::now();
    let sort = conn.query_row(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)
         SELECT count(*) FROM (SELECT printf('%d%.*c', x, 10000, 'v') AS v FROM c ORDER BY v)",
        [],
        |row| row.get::<_, i64>(0),
    );
    println!(
        "a 1 GB sort against the {} MiB temporary storage cap: {} after {:.1} s, peak {} MiB",
        limits.max_temp_bytes >> 20,
        match sort {
            Ok(_) => "finished".to_owned(),
            Err(err) => format!("refused ({err})"),
        },
        started.elapsed().as_secs_f64(),
        conn.temp_peak_bytes() >> 20
    );
    Ok(())
}

/// The balances projector written natively against rusqlite, for the baseline.
fn native_balances(path: &Path, events: &[Ev], batch: usize) -> Result<Duration> {
    #[derive(serde::Deserialize)]
    struct Opened<'a> {
        #[serde(borrow)]
        account: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        owner: std::borrow::Cow<'a, str>,
    }
    #[derive(serde::Deserialize)]
    struct Movement<'a> {
        #[serde(borrow)]
        account: std::borrow::Cow<'a, str>,
        amount: i64,
    }
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536;
         CREATE TABLE balances (account TEXT PRIMARY KEY, owner TEXT, balance INTEGER NOT NULL,
             tx_count INTEGER NOT NULL, last_offset INTEGER NOT NULL);",
    )?;
    create_checkpoint(&conn)?;
    let open = "INSERT INTO balances (account, owner, balance, tx_count, last_offset) VALUES (?1, ?2, 0, 0, ?3)
        ON CONFLICT (account) DO UPDATE SET owner = excluded.owner, last_offset = excluded.last_offset";
    let movement = "INSERT INTO balances (account, owner, balance, tx_count, last_offset) VALUES (?1, NULL, ?2, 1, ?3)
        ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance,
        tx_count = tx_count + 1, last_offset = excluded.last_offset";
    let started = Instant::now();
    for (i, chunk) in events.chunks(batch).enumerate() {
        let tx = conn.unchecked_transaction()?;
        let first = (1 + i * batch) as i64;
        for (j, (ty, data)) in chunk.iter().enumerate() {
            let offset = first + j as i64;
            match *ty {
                "account.opened" => {
                    let e: Opened<'_> = serde_json::from_str(data)?;
                    tx.prepare_cached(open)?
                        .execute(rusqlite::params![e.account, e.owner, offset])?;
                }
                "money.deposited" => {
                    let e: Movement<'_> = serde_json::from_str(data)?;
                    tx.prepare_cached(movement)?
                        .execute(rusqlite::params![e.account, e.amount, offset])?;
                }
                _ => {
                    let e: Movement<'_> = serde_json::from_str(data)?;
                    tx.prepare_cached(movement)?
                        .execute(rusqlite::params![e.account, -e.amount, offset])?;
                }
            }
        }
        tx.execute(
            "UPDATE _refract_checkpoint SET offset = ?1",
            [first + chunk.len() as i64 - 1],
        )?;
        tx.commit()?;
    }
    Ok(started.elapsed())
}

#[test]
fn the_runtime_types_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Runtime>();
    send_sync::<LoadedProjector>();
    send::<ProjectorInstance>();
    send_sync::<EventBatch>();
    send_sync::<ProjectorError>();
    send_sync::<RuntimeError>();
}
