//! Snapshots of read models and of streams, used in the workflow:
//!
//! - a policy snapshot taken under live appends equals `refract project` of the log up
//!   to its checkpoint (same content), and matches its recorded checksum;
//! - `kill -9` of `refract run` while it snapshots leaves only complete snapshots;
//! - a deleted, and a corrupted, read model is restored from its newest snapshot and
//!   caught up, while a reader never sees it go back or half-built;
//! - a rollback to a version whose read model was pruned restores its last snapshot;
//! - `refract snapshot` / `refract restore` on a running host;
//! - point-in-time queries equal `refract project --until-offset` at several offsets;
//! - a stream loads as its snapshot plus exactly the events after it.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::control::Role;
use refract::engine::{Engine, State};
use refract::log::{EventLog, NewEvent};
use refract::snapshots::store::{Reason, SEEDED_FROM, SnapshotEntry, Store};
use refract::workload::balances;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use support::cli::refract_ok;
use support::host::{RunningHost, wait_for, wait_until_showing};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The bound on anything a test waits for: liveness only, generous for slow CI.
const LIVENESS: Duration = Duration::from_secs(60);

/// The projector every test uses.
const NAME: &str = "balances";

/// A reader must have read this often for "never saw a problem" to mean something.
const MIN_READS: u64 = 20;

/// An engine in this process on a temporary data directory, projecting `balances`.
struct Host {
    data: DataDir,
    engine: Engine,
    // Dropped after the engine: its workers wait on this runtime until they stop.
    _runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Host {
    /// Logs `events` seeded events, puts `balances` in the plugins folder and starts an
    /// engine with `config` (`refract.toml` text).
    fn start(config: &str, events: usize) -> Result<Host> {
        let dir = tempfile::tempdir()?;
        let data = DataDir::new(dir.path().join("data"));
        std::fs::create_dir_all(data.plugins())?;
        std::fs::copy(
            support::guests::guest("balances"),
            data.plugins().join("balances.wasm"),
        )?;
        let config = Config::parse(config, Path::new("refract.toml"))?;
        if events > 0 {
            EventLog::open(&data.events_db(), config.log_options())?
                .append(balances(1, events).collect())?;
        }
        let support::host::InProcess {
            engine, runtime, ..
        } = support::host::start_engine(&data, config).map_err(|error| error.to_string())?;
        let host = Host {
            data,
            engine,
            _runtime: runtime,
            dir,
        };
        host.wait_live(events as u64);
        Ok(host)
    }

    fn append(&self, events: Vec<NewEvent>) -> Result<u64> {
        Ok(*self
            .engine
            .log()
            .append(events)?
            .last()
            .ok_or("nothing appended")?)
    }

    /// Waits until the active version serves reads, live at `checkpoint`.
    fn wait_live(&self, checkpoint: u64) {
        wait_until_showing(
            LIVENESS,
            &format!("{NAME} to serve, live at offset {checkpoint}"),
            || self.active_checkpoint() == Some(checkpoint),
            || self.describe(),
        );
    }

    /// The active version's checkpoint, when it serves and is live.
    fn active_checkpoint(&self) -> Option<u64> {
        let model = self.engine.read_model(NAME)?;
        let view = self.engine.projector(NAME)?;
        let status = view
            .versions
            .into_iter()
            .find(|version| version.version == model.version && version.role == Role::Active)?
            .status?;
        (status.state == State::Live).then_some(status.checkpoint)
    }

    fn describe(&self) -> String {
        let Some(view) = self.engine.projector(NAME) else {
            return format!("the engine knows no projector `{NAME}`");
        };
        let mut text = format!(
            "{NAME}: active {:?}, unavailable {:?}",
            view.active_version, view.unavailable
        );
        for version in view.versions {
            text.push_str(&format!("\n  {} {:?}", version.version, version.role));
            if let Some(status) = version.status {
                text.push_str(&format!(
                    ": {} at {}/{}, last error {:?}",
                    status.state, status.checkpoint, status.head, status.last_error
                ));
            }
        }
        text
    }

    fn store(&self) -> Store {
        Store::new(&self.data)
    }

    fn snapshots(&self) -> Vec<SnapshotEntry> {
        self.store().list(NAME).unwrap_or_default()
    }

    /// `refract project` of the log up to `until` with `plugin`, into a fresh file.
    fn project(&self, plugin: &Path, until: u64) -> Result<PathBuf> {
        let out = self
            .dir
            .path()
            .join(format!("project-{until}-{}.db", rand::random::<u32>()));
        refract_ok(
            self.dir.path(),
            &[
                "--data-dir",
                &self.data.root().display().to_string(),
                "project",
                "--plugin",
                &plugin.display().to_string(),
                "--out",
                &out.display().to_string(),
                "--until-offset",
                &until.to_string(),
            ],
        )?;
        Ok(out)
    }
}

fn read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// A digest of a read model's content: every projector table (not the host's
/// `_refract_` ones), every row in a fixed order. Two read models with the same rows
/// have the same digest whatever their page layout.
fn content_digest(path: &Path) -> Result<String> {
    let conn = read_only(path)?;
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table'
               AND name NOT LIKE '\\_refract\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
             ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    assert!(
        !tables.is_empty(),
        "{} has no projector table",
        path.display()
    );
    let mut hasher = Sha256::new();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\""))?;
        let columns = statement.column_count();
        let mut rows: Vec<String> = statement
            .query_map([], |row| {
                (0..columns)
                    .map(|index| row.get::<_, Value>(index).map(|value| format!("{value:?}")))
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(|values| values.join("\u{1f}"))
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows.sort();
        hasher.update(format!("{table}:{}\n", rows.len()));
        for row in rows {
            hasher.update(row);
            hasher.update("\n");
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

fn checkpoint_at(path: &Path) -> rusqlite::Result<u64> {
    read_only(path)?.query_row(
        "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
        [],
        |row| row.get::<_, i64>(0).map(|offset| offset as u64),
    )
}

fn seeded_from(path: &Path) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension as _;
    read_only(path)?
        .query_row(
            "SELECT value FROM _refract_meta WHERE key = ?1",
            [SEEDED_FROM],
            |row| row.get(0),
        )
        .optional()
}

fn file_sha256(path: &Path) -> Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

// ---------------------------------------------------------------------------------------
// Taking snapshots
// ---------------------------------------------------------------------------------------

#[test]
fn a_snapshot_taken_under_live_appends_equals_project_up_to_its_checkpoint() -> Result {
    let host = Host::start(
        &format!("[projectors.{NAME}.snapshots]\nevery_events = 400\nkeep = 10\n"),
        200,
    )?;
    let appending = AtomicBool::new(true);
    std::thread::scope(|scope| -> Result {
        let writer = scope.spawn(|| -> Result<u64> {
            let mut head = 200;
            for round in 0..60 {
                head = host.append(balances(100 + round, 40).collect())?;
                if round == 10 {
                    // The schedule looks every 200 ms; a fast machine appends everything
                    // within one look, so let the first policy snapshot land mid-stream.
                    wait_until_showing(
                        LIVENESS,
                        "a first policy snapshot",
                        || host.snapshots().iter().any(|e| e.reason == Reason::Policy),
                        || format!("{:?}\n{}", host.snapshots(), host.describe()),
                    );
                }
            }
            appending.store(false, Ordering::Relaxed);
            Ok(head)
        });
        // Taken while the writer appends: the schedule runs beside the worker.
        wait_until_showing(
            LIVENESS,
            "two policy snapshots",
            || {
                host.snapshots()
                    .iter()
                    .filter(|entry| entry.reason == Reason::Policy)
                    .count()
                    >= 2
            },
            || format!("{:?}\n{}", host.snapshots(), host.describe()),
        );
        let head = writer.join().map_err(|_| "the writer panicked")??;
        host.wait_live(head);
        Ok(())
    })?;
    let snapshots = host.snapshots();
    assert!(snapshots.len() >= 2, "{snapshots:?}");
    let plugin = support::guests::guest("balances");
    for entry in &snapshots {
        let path = host.store().snapshot_path(NAME, entry);
        assert_eq!(
            file_sha256(&path)?,
            entry.sha256,
            "the recorded checksum of {}",
            entry.id()
        );
        assert_eq!(std::fs::metadata(&path)?.len(), entry.bytes);
        assert_eq!(checkpoint_at(&path)?, entry.checkpoint);
        let projected = host.project(&plugin, entry.checkpoint)?;
        assert_eq!(
            content_digest(&path)?,
            content_digest(&projected)?,
            "snapshot {} against `refract project --until-offset {}`",
            entry.id(),
            entry.checkpoint
        );
    }
    Ok(())
}

#[test]
fn kill_9_while_snapshotting_leaves_only_complete_snapshots() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.plugins())?;
    std::fs::copy(
        support::guests::guest("balances"),
        data.plugins().join("balances.wasm"),
    )?;
    let config = dir.path().join("refract.toml");
    std::fs::write(
        &config,
        format!("[projectors.{NAME}.snapshots]\nevery_events = 1\nkeep = 3\n"),
    )?;
    let log = EventLog::open(&data.events_db(), Default::default())?;
    log.append(balances(7, 20_000).collect())?;
    let seed: u64 = std::env::var("REFRACT_SNAPSHOT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (REFRACT_SNAPSHOT_SEED repeats it)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let binary = Path::new(env!("CARGO_BIN_EXE_refract"));
    let store = Store::new(&data);
    for round in 0..3 {
        let mut host = RunningHost::start(binary, dir.path(), data.root(), &config, &[])?;
        host.wait_serving(LIVENESS);
        let before = store.list(NAME).unwrap_or_default().len();
        // Keep the checkpoint moving so the schedule keeps snapshotting.
        log.append(balances(1000 + round, 500).collect())?;
        host.wait_until(LIVENESS, "a snapshot", || {
            store
                .list(NAME)
                .is_ok_and(|entries| entries.len() > before.min(2))
                || store
                    .list(NAME)
                    .is_ok_and(|entries| !entries.is_empty() && round > 0)
        });
        for _ in 0..rng.random_range(0..20) {
            log.append(balances(rng.random(), 200).collect())?;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        host.kill_9()?;
        // Every snapshot the manifest lists is whole: its checksum, and SQLite's own check.
        let entries = store.list(NAME)?;
        assert!(!entries.is_empty(), "round {round}: no snapshot at all");
        for entry in &entries {
            let path = store.snapshot_path(NAME, entry);
            assert_eq!(
                file_sha256(&path)?,
                entry.sha256,
                "round {round}: {}",
                entry.id()
            );
            let check: String =
                read_only(&path)?.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
            assert_eq!(check, "ok", "round {round}: {}", entry.id());
        }
        // Whatever else a crash left is not a snapshot, and is cleaned on the next start.
        store.clean_strays(NAME);
        for version in std::fs::read_dir(store.projector_dir(NAME))?.flatten() {
            if !version.path().is_dir() {
                continue;
            }
            for file in std::fs::read_dir(version.path())?.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                assert!(
                    name == "component.wasm"
                        || entries
                            .iter()
                            .any(|entry| name == format!("{}.db", entry.checkpoint)),
                    "round {round}: {name} is neither listed nor cleaned"
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------

/// Reads the route's read model until stopped; returns the checkpoints seen and any
/// read that went below `floor` or failed in a way other than "not serving now".
fn read_until(host: &Host, stop: &AtomicBool, floor: u64) -> (u64, Vec<String>) {
    let (mut reads, mut problems) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        // No route: refused while it is restored, never an empty or partial table.
        let Some(model) = host.engine.read_model(NAME) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let seen = read_only(&model.path).and_then(|conn| {
            conn.query_row(
                "SELECT (SELECT log_offset FROM _refract_checkpoint), (SELECT count(*) FROM balances)",
                [],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
            )
        });
        // An error is the file deleted or damaged under the reader by the test itself.
        if let Ok((checkpoint, rows)) = seen {
            reads += 1;
            if checkpoint < floor || rows == 0 {
                problems.push(format!("saw checkpoint {checkpoint} with {rows} rows"));
            }
        }
    }
    (reads, problems)
}

#[test]
fn a_deleted_or_corrupted_read_model_is_restored_from_its_snapshot_and_caught_up() -> Result {
    let host = Host::start(
        &format!("[projectors.{NAME}.snapshots]\nevery_events = 500\n"),
        2_000,
    )?;
    let plugin = support::guests::guest("balances");
    for (round, damage) in ["delete", "corrupt"].into_iter().enumerate() {
        let snapshot = wait_for(LIVENESS, "a policy snapshot at the head", || {
            host.snapshots()
                .into_iter()
                .rev()
                .find(|entry| entry.checkpoint >= 2_000 + 500 * round as u64)
        });
        let floor = host.append(balances(50 + round as u64, 300).collect())?;
        host.wait_live(floor);
        let model = host.engine.read_model(NAME).ok_or("no route")?;
        let stop = AtomicBool::new(false);
        let (reads, problems) = std::thread::scope(|scope| -> Result<_> {
            let reader = scope.spawn(|| read_until(&host, &stop, floor));
            std::thread::sleep(Duration::from_millis(50));
            match damage {
                "delete" => std::fs::remove_file(&model.path)?,
                _ => std::fs::write(&model.path, b"this is not a database any more")?,
            }
            // Events that arrive meanwhile are caught up too.
            let head = host.append(balances(60 + round as u64, 200).collect())?;
            wait_until_showing(
                LIVENESS,
                "the restored read model to serve, caught up",
                || {
                    host.active_checkpoint() == Some(head)
                        && seeded_from(&model.path).ok().flatten().is_some()
                },
                || host.describe(),
            );
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
            Ok(reader.join().map_err(|_| "the reader panicked")?)
        })?;
        assert!(problems.is_empty(), "{damage}: the reader saw {problems:?}");
        assert!(reads >= MIN_READS, "{damage}: only {reads} reads");
        assert_eq!(
            seeded_from(&model.path)?.as_deref(),
            Some(snapshot.id().as_str()),
            "{damage}: restored from the newest snapshot, not replayed from offset 1"
        );
        let head = checkpoint_at(&model.path)?;
        assert_eq!(
            content_digest(&model.path)?,
            content_digest(&host.project(&plugin, head)?)?,
            "{damage}: the restored read model against `refract project`"
        );
    }
    Ok(())
}

#[test]
fn rollback_to_a_version_whose_read_model_was_pruned_restores_its_last_snapshot() -> Result {
    let host = Host::start(&format!("[projectors.{NAME}]\nkeep_versions = 1\n"), 1_000)?;
    let v1 = host.engine.read_model(NAME).ok_or("no route")?.version;
    let v2_bytes = refract::bench::swap::retag(&support::guests::guest_bytes("balances"), "v2");
    let v2 = host.engine.deploy(&v2_bytes)?.version;
    wait_until_showing(
        LIVENESS,
        "v2 to be active",
        || {
            host.engine
                .read_model(NAME)
                .is_some_and(|model| model.version == v2)
        },
        || host.describe(),
    );
    host.wait_live(1_000);
    // The swap snapshotted v1 on its way out; keep_versions = 1 then pruned its read
    // model, but v1 remains the version to roll back to.
    let before_swap = host
        .snapshots()
        .into_iter()
        .find(|entry| entry.version == v1 && entry.reason == Reason::BeforeSwap)
        .ok_or("no snapshot of v1 before the swap")?;
    assert_eq!(before_swap.checkpoint, 1_000);
    let v1_db = host.data.version_db(NAME, &v1);
    wait_until_showing(
        LIVENESS,
        "v1's read model to be pruned",
        || !v1_db.exists(),
        || host.describe(),
    );
    // v1 misses these while it is pruned.
    let head = host.append(balances(9, 300).collect())?;
    host.wait_live(head);

    assert_eq!(host.engine.rollback(NAME)?, v1);
    wait_until_showing(
        LIVENESS,
        "v1 to serve again, caught up",
        || {
            host.engine
                .read_model(NAME)
                .is_some_and(|model| model.version == v1)
                && host.active_checkpoint() == Some(head)
        },
        || host.describe(),
    );
    assert_eq!(
        seeded_from(&v1_db)?.as_deref(),
        Some(before_swap.id().as_str())
    );
    assert_eq!(
        content_digest(&v1_db)?,
        content_digest(&host.project(&support::guests::guest("balances"), head)?)?
    );
    // And v2 was snapshotted before the rollback replaced it.
    assert!(
        host.snapshots()
            .iter()
            .any(|entry| entry.version == v2 && entry.reason == Reason::BeforeRollback),
        "{:?}",
        host.snapshots()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The CLI on a running host
// ---------------------------------------------------------------------------------------

#[test]
fn refract_snapshot_restore_and_stream_snapshots_on_a_running_host() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.plugins())?;
    std::fs::copy(
        support::guests::guest("balances"),
        data.plugins().join("balances.wasm"),
    )?;
    let config = dir.path().join("refract.toml");
    std::fs::write(
        &config,
        "[snapshots]\nstream_hint_every = 3\nstream_keep = 2\nstream_max_state_bytes = 64\n",
    )?;
    let log = EventLog::open(&data.events_db(), Default::default())?;
    log.append(balances(3, 600).collect())?;
    let binary = Path::new(env!("CARGO_BIN_EXE_refract"));
    let mut host = RunningHost::start(binary, dir.path(), data.root(), &config, &[])?;
    host.wait_serving(LIVENESS);
    let url = host
        .lines()
        .iter()
        .find_map(|line| {
            line.split("http://")
                .nth(1)
                .map(|rest| format!("http://{}", rest.trim()))
        })
        .ok_or("no address")?;
    let data_arg = data.root().display().to_string();
    let cli = |args: &[&str]| -> Result<String> {
        let mut all = vec!["--data-dir", data_arg.as_str(), "--url", url.as_str()];
        all.extend_from_slice(args);
        Ok(refract_ok(dir.path(), &all)?)
    };
    let store = Store::new(&data);
    let mut taken = None;
    host.wait_until(LIVENESS, "an on-demand snapshot at offset 600", || {
        // The first call may come before the projector serves (409): try again.
        cli(&["snapshot", NAME]).is_ok()
            && store.list(NAME).is_ok_and(|entries| {
                taken = entries.into_iter().find(|entry| entry.checkpoint == 600);
                taken.is_some()
            })
    });
    let taken = taken.ok_or("no snapshot")?;
    assert_eq!(taken.reason, Reason::OnDemand);
    let listed = cli(&["snapshot", NAME, "--list"])?;
    assert!(listed.contains(&taken.id()), "{listed}");
    let status = cli(&["status"])?;
    assert!(
        status.contains(&format!(
            "snapshots of {NAME} {}: 1, newest at checkpoint 600, {} bytes",
            taken.version, taken.bytes
        )),
        "{status}"
    );
    log.append(balances(4, 100).collect())?;
    let restored = cli(&["restore", NAME, "--from", &taken.id()])?;
    assert!(restored.contains(&taken.id()), "{restored}");
    let db = data.version_db(NAME, &taken.version);
    host.wait_until(
        LIVENESS,
        "the restored read model, caught up at 700",
        || {
            seeded_from(&db).ok().flatten().as_deref() == Some(taken.id().as_str())
                && checkpoint_at(&db).is_ok_and(|checkpoint| checkpoint == 700)
        },
    );
    let missing = refract_ok(
        dir.path(),
        &[
            "--data-dir",
            &data_arg,
            "--url",
            &url,
            "restore",
            NAME,
            "--from",
            "nope/1",
        ],
    )
    .expect_err("an unknown snapshot is refused");
    assert!(missing.contains("has no snapshot nope/1"), "{missing}");
    streams(&data, &url, &cli)
}

/// Stream snapshots on the same host: the append hint, storing (and refusing past the
/// head), and loading as the snapshot plus exactly the events after it.
fn streams(data: &DataDir, url: &str, cli: &dyn Fn(&[&str]) -> Result<String>) -> Result {
    let token = std::fs::read_to_string(data.root().join("token"))?;
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let stream = "cart-7";
    let append = |types: &[&str]| -> Result<serde_json::Value> {
        let events: Vec<serde_json::Value> = types
            .iter()
            .map(|event_type| serde_json::json!({"type": event_type, "data": {"sku": event_type}}))
            .collect();
        let mut response = agent
            .post(format!("{url}/v1/streams/{stream}/events"))
            .header("Authorization", format!("Bearer {}", token.trim()))
            .header("Content-Type", "application/json")
            .send(serde_json::Value::Array(events).to_string())?;
        assert_eq!(response.status(), 200);
        Ok(serde_json::from_str(
            &response.body_mut().read_to_string()?,
        )?)
    };
    assert_eq!(
        append(&["added", "added"])?["snapshot_due"],
        false,
        "2 events, hint at 3"
    );
    assert_eq!(
        append(&["removed"])?["snapshot_due"],
        true,
        "3 events and no snapshot"
    );
    // Past the head (3) is refused, with the head named.
    let refused = cli(&[
        "stream",
        "snapshot",
        stream,
        "--version",
        "4",
        "--state",
        "{}",
    ])
    .expect_err("a snapshot past the stream's head")
    .to_string();
    assert!(refused.contains("is at version 3"), "{refused}");
    let large = format!("{{\"notes\": \"{}\"}}", "x".repeat(100));
    let refused = cli(&[
        "stream",
        "snapshot",
        stream,
        "--version",
        "3",
        "--state",
        &large,
    ])
    .expect_err("a state over stream_max_state_bytes")
    .to_string();
    assert!(refused.contains("stream_max_state_bytes = 64"), "{refused}");
    for version in 1..=3 {
        cli(&[
            "stream",
            "snapshot",
            stream,
            "--version",
            &version.to_string(),
            "--state",
            &format!("{{\"items\": {version}}}"),
        ])?;
    }
    assert_eq!(
        append(&["added", "paid"])?["snapshot_due"],
        false,
        "2 past the snapshot at 3"
    );
    let loaded: serde_json::Value = serde_json::from_str(cli(&["stream", "load", stream])?.trim())?;
    assert_eq!(loaded["snapshot"]["version"], 3);
    assert_eq!(loaded["snapshot"]["state"], serde_json::json!({"items": 3}));
    let tail: Vec<(u64, String)> = loaded["events"]
        .as_array()
        .ok_or("no events")?
        .iter()
        .map(|event| {
            (
                event["stream_version"].as_u64().unwrap_or_default(),
                event["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [(4, "added".to_owned()), (5, "paid".to_owned())],
        "exactly the tail"
    );
    assert_eq!(loaded["truncated"], false);
    // stream_keep = 2: the snapshot at version 1 is gone, 2 and 3 are kept.
    let kept: Vec<i64> = Connection::open_with_flags(
        data.root().join("snapshots").join("streams.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?
    .prepare("SELECT version FROM stream_snapshots WHERE stream = ?1 ORDER BY version")?
    .query_map([stream], |row| row.get(0))?
    .collect::<rusqlite::Result<_>>()?;
    assert_eq!(kept, [2, 3]);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Point-in-time queries
// ---------------------------------------------------------------------------------------

/// The rows of `sql` on the database at `path`, as JSON arrays, as the API renders them.
fn rows_at(path: &Path, sql: &str) -> Result<Vec<serde_json::Value>> {
    let conn = read_only(path)?;
    let mut statement = conn.prepare(sql)?;
    let columns = statement.column_count();
    let rows = statement
        .query_map([], |row| {
            (0..columns)
                .map(|index| {
                    Ok(match row.get::<_, Value>(index)? {
                        Value::Null => serde_json::Value::Null,
                        Value::Integer(integer) => integer.into(),
                        Value::Real(real) => real.into(),
                        Value::Text(text) => text.into(),
                        Value::Blob(_) => "blob".into(),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(serde_json::Value::Array)
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

#[test]
fn point_in_time_queries_equal_project_until_offset() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.plugins())?;
    let plugin = support::guests::guest("balances");
    std::fs::copy(&plugin, data.plugins().join("balances.wasm"))?;
    let config = dir.path().join("refract.toml");
    std::fs::write(
        &config,
        format!(
            "[snapshots]\npoint_in_time_max_replay = 100\npoint_in_time_cache = 2\n\n\
             [projectors.{NAME}.snapshots]\nevery_events = 300\nkeep = 10\n"
        ),
    )?;
    let log = EventLog::open(&data.events_db(), Default::default())?;
    log.append(balances(5, 200).collect())?;
    let binary = Path::new(env!("CARGO_BIN_EXE_refract"));
    let mut host = RunningHost::start(binary, dir.path(), data.root(), &config, &[])?;
    host.wait_serving(LIVENESS);
    let url = host
        .lines()
        .iter()
        .find_map(|line| {
            line.split("http://")
                .nth(1)
                .map(|rest| format!("http://{}", rest.trim()))
        })
        .ok_or("no address")?;
    let data_arg = data.root().display().to_string();
    let cli = |args: &[&str]| -> std::result::Result<String, String> {
        let mut all = vec!["--data-dir", data_arg.as_str(), "--url", url.as_str()];
        all.extend_from_slice(args);
        refract_ok(dir.path(), &all)
    };
    // Appended in rounds, so the schedule snapshots the active version along the way.
    let store = Store::new(&data);
    for round in 0..4 {
        let head = *log
            .append(balances(20 + round, 400).collect())?
            .last()
            .ok_or("none")?;
        host.wait_until(LIVENESS, &format!("a snapshot at {head}"), || {
            store
                .list(NAME)
                .is_ok_and(|entries| entries.iter().any(|entry| entry.checkpoint == head))
        });
    }
    let snapshots = store.list(NAME)?;
    assert!(snapshots.len() >= 4, "{snapshots:?}");
    let sql = "SELECT account, owner, balance FROM balances ORDER BY account";
    let mut offsets = vec![60];
    for entry in snapshots.iter().take(3) {
        offsets.extend([
            entry.checkpoint,
            entry.checkpoint + 37,
            entry.checkpoint + 99,
        ]);
    }
    // Twice: the first materialises (cold), the second may answer from the cache (warm),
    // and the cache holds only two, so some of the second round are built again.
    for round in 0..2 {
        for &offset in &offsets {
            let answer = cli(&["query", NAME, sql, "--at", &offset.to_string(), "--json"])?;
            let answer: serde_json::Value = serde_json::from_str(answer.trim())?;
            let projected = host_project(dir.path(), &data_arg, &plugin, offset)?;
            assert_eq!(
                answer["rows"].as_array().ok_or("no rows")?,
                &rows_at(&projected, sql)?,
                "round {round}: the read model at offset {offset} against `refract project --until-offset {offset}`"
            );
            assert_eq!(answer["checkpoint"], offset, "round {round}");
        }
    }
    // The bounds: past the head, and too far from any snapshot (none before 150).
    let beyond = cli(&["query", NAME, sql, "--at", "999999"]).expect_err("past the head");
    assert!(beyond.contains("past the log's head"), "{beyond}");
    let far = cli(&["query", NAME, sql, "--at", "150"]).expect_err("too far from a snapshot");
    assert!(far.contains("point_in_time_max_replay = 100"), "{far}");
    // A time before the first event is refused with the fix; the head's time is served.
    let early = cli(&["query", NAME, sql, "--at", "2000-01-01T00:00:00Z"]).expect_err("too early");
    assert!(early.contains("no event was recorded"), "{early}");
    Ok(())
}

/// `refract project --until-offset` into a fresh file.
fn host_project(cwd: &Path, data: &str, plugin: &Path, until: u64) -> Result<PathBuf> {
    let out = cwd.join(format!("project-{until}-{}.db", rand::random::<u32>()));
    refract_ok(
        cwd,
        &[
            "--data-dir",
            data,
            "project",
            "--plugin",
            &plugin.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--until-offset",
            &until.to_string(),
        ],
    )?;
    Ok(out)
}
