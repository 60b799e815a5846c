//! Versioned shadow replay and zero-downtime hot swap:
//!
//! - the `cars` story: v1 replaced by v2 while events arrive during the replay and
//!   readers, through the engine's route and through the stable path, read throughout;
//! - old versions on disk (`keep_versions`), and what a crash or a restart leaves;
//! - the watched plugins folder, fed a component written slowly in chunks;
//! - rollback (to a stopped and to a warm previous version, and across a restart),
//!   abort, manual promotion, the diff gate, and deploys that change nothing;
//! - `kill -9` of `refract run` at seeded random moments of a deploy and of a first
//!   deploy, and in the middle of a replay.
//!
//! Most tests drive the in-process [`Engine`]; the crash tests run the real `refract run`
//! binary so that they can `kill -9` it. Their seed is printed; set `REFRACT_SWAP_SEED`
//! to repeat a run and `REFRACT_SWAP_ITERATIONS` to sweep longer.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::control::Role;
use refract::engine::{DeployOutcome, Engine, EngineError, EngineOptions, State, VersionStatus};
use refract::log::{Durability, EventLog, LogOptions, NewEvent};
use refract::workload::cars_story;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::host::{RunningHost, copy_tree, wait_until_showing};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The bound on anything a test waits for. Only a liveness bound: generous, because CI
/// machines are slow and shared; a healthy run needs a small fraction of it.
const LIVENESS: Duration = Duration::from_secs(60);

/// How long `refract run` may take to exit after SIGTERM.
const TERM_TIMEOUT: Duration = Duration::from_secs(30);

/// A reader of the `cars` story must have read at least this many times for its
/// "never saw a problem" to mean something.
const MIN_READS: u64 = 50;

/// The environment variable that repeats a `kill -9` sweep with a given seed.
const SEED_ENV: &str = "REFRACT_SWAP_SEED";

/// The environment variable that changes the number of `kill -9` sweep iterations.
const ITERATIONS_ENV: &str = "REFRACT_SWAP_ITERATIONS";

/// `kill -9` sweep iterations when [`ITERATIONS_ENV`] is not set.
const DEFAULT_ITERATIONS: usize = 12;

/// Events in the log of the `kill -9` tests: enough for a replay of a few hundred
/// milliseconds.
const CRASH_EVENTS: usize = 50_000;

/// The short content hash that names a component's version.
fn version_of(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))[..8].to_owned()
}

fn guest(name: &str) -> (Vec<u8>, String) {
    let bytes = support::guests::guest_bytes(name);
    let version = version_of(&bytes);
    (bytes, version)
}

/// Another version of the component `wasm`: the same code with a custom section
/// appended, so another content hash. Returns the bytes and the version.
fn retagged(wasm: &[u8], tag: &str) -> (Vec<u8>, String) {
    let bytes = refract::bench::swap::retag(wasm, tag);
    let version = version_of(&bytes);
    (bytes, version)
}

// ---------------------------------------------------------------------------------------
// An engine in this process
// ---------------------------------------------------------------------------------------

/// An engine running in this process on a temporary data directory.
struct Host {
    data: DataDir,
    engine: Engine,
    options: EngineOptions,
    log: EventLog,
    // Dropped after the engine: its workers wait on this runtime until they stop.
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Host {
    /// Logs `events`, puts `plugin` (a guest crate) in the plugins folder as
    /// `cars.wasm`, and starts an engine with `config` (`refract.toml` text, in which
    /// `{dir}` stands for the temporary directory).
    fn start(config: &str, events: Vec<NewEvent>, plugin: Option<&str>) -> Result<Host> {
        let dir = tempfile::tempdir()?;
        let data = DataDir::new(dir.path().join("data"));
        std::fs::create_dir_all(data.plugins())?;
        if let Some(plugin) = plugin {
            std::fs::copy(
                support::guests::guest(plugin),
                data.plugins().join("cars.wasm"),
            )?;
        }
        let text = config.replace("{dir}", &dir.path().display().to_string());
        let config = Config::parse(&text, Path::new("refract.toml"))?;
        if !events.is_empty() {
            // Logged before the engine starts, as a host finds an existing log.
            EventLog::open(&data.events_db(), config.log_options())?.append(events)?;
        }
        let support::host::InProcess {
            log,
            engine,
            options,
            runtime,
        } = support::host::start_engine(&data, config)?;
        Ok(Host {
            data,
            engine,
            options,
            log,
            runtime,
            dir,
        })
    }

    /// Stops the engine as the host does on SIGTERM, and starts a new one on the same
    /// data directory and configuration.
    fn restart(&mut self) -> Result {
        self.engine.shutdown();
        let engine = Engine::start(&self.options, &self.log, self.runtime.handle())?;
        drop(std::mem::replace(&mut self.engine, engine));
        Ok(())
    }

    /// [`Host::restart`] with another configuration.
    fn restart_with(&mut self, config: &str) -> Result {
        self.options.config = Config::parse(config, Path::new("refract.toml"))?;
        self.restart()
    }

    /// The story's events 1–6 logged, and `cars` v1 active and live at offset 6.
    fn with_v1_active(config: &str) -> Result<(Host, String)> {
        let host = Host::start(config, cars_story(1), Some("cars-v1"))?;
        let (_, v1) = guest("cars-v1");
        host.wait_active(&v1, 6);
        Ok((host, v1))
    }

    fn append(&self, events: Vec<NewEvent>) -> Result<Vec<u64>> {
        Ok(self.engine.log().append(events)?)
    }

    /// The live status of `version`, if a worker runs it in `role` (a warm previous
    /// version is reported as [`Role::Previous`]).
    fn running(&self, version: &str, role: Role) -> Option<VersionStatus> {
        self.engine
            .projector("cars")?
            .versions
            .into_iter()
            .find(|view| view.version == version && view.role == role)?
            .status
    }

    /// The version serving reads.
    fn active(&self) -> Option<String> {
        self.engine.read_model("cars").map(|model| model.version)
    }

    /// The engine's view of `cars`, one line per version, for failure messages.
    fn describe(&self) -> String {
        let Some(view) = self.engine.projector("cars") else {
            return "the engine knows no projector `cars`".to_owned();
        };
        let mut text = format!("cars: active version {:?}", view.active_version);
        for version in view.versions {
            text.push_str(&format!("\n  {} {:?}", version.version, version.role));
            if let Some(status) = version.status {
                text.push_str(&format!(
                    ": {} at {}/{}, last error {:?}",
                    status.state, status.checkpoint, status.head, status.last_error
                ));
            }
        }
        for rejected in self.engine.rejected() {
            text.push_str(&format!(
                "\n  refused {}: {}",
                rejected.path.display(),
                rejected.reason
            ));
        }
        text
    }

    /// Waits until `version` serves reads and is live at `checkpoint`.
    fn wait_active(&self, version: &str, checkpoint: u64) {
        wait_until_showing(
            LIVENESS,
            &format!("cars {version} to be active and live at offset {checkpoint}"),
            || {
                self.active().as_deref() == Some(version)
                    && self.running(version, Role::Active).is_some_and(|status| {
                        status.state == State::Live && status.checkpoint == checkpoint
                    })
            },
            || self.describe(),
        );
    }

    /// Waits until `version` runs in `role` (not active) and is live at `checkpoint`.
    fn wait_live(&self, version: &str, role: Role, checkpoint: u64) {
        wait_until_showing(
            LIVENESS,
            &format!("cars {version} to run as {role:?}, live at offset {checkpoint}"),
            || {
                self.running(version, role).is_some_and(|status| {
                    status.state == State::Live && status.checkpoint == checkpoint
                })
            },
            || self.describe(),
        );
    }

    /// The cars the active read model shows.
    fn cars(&self) -> Result<Vec<CarRow>> {
        let model = self
            .engine
            .read_model("cars")
            .ok_or("no read model for cars")?;
        cars_at(&model.path)
    }

    /// `(version, role)` of every version in `control.db`, in deployment order.
    fn roles(&self) -> Result<Vec<(String, String)>> {
        let conn = read_only(&self.data.control_db())?;
        let mut statement = conn.prepare(
            "SELECT version, role FROM versions WHERE projector = 'cars'
              ORDER BY deployed_at, version",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The file names in `projections/cars/`, sorted.
    fn files(&self) -> Result<Vec<String>> {
        file_names(&self.data.projector_dir("cars"))
    }

    fn stable_target(&self) -> Result<PathBuf> {
        Ok(std::fs::read_link(self.data.stable_db("cars"))?)
    }
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The stable path's target for `version`: relative, inside `projections/`.
fn link_to(version: &str) -> PathBuf {
    Path::new("cars").join(format!("{version}.db"))
}

fn roles(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(version, role)| ((*version).to_owned(), (*role).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Reading read models the way clients do
// ---------------------------------------------------------------------------------------

/// `(car_id, color, customer_name)`.
type CarRow = (String, String, Option<String>);

fn car(id: &str, color: &str, customer: Option<&str>) -> CarRow {
    (id.to_owned(), color.to_owned(), customer.map(str::to_owned))
}

/// A read-only connection, as a reader such as `sqlite3 -readonly` opens one.
fn read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn cars_at(path: &Path) -> Result<Vec<CarRow>> {
    let conn = read_only(path)?;
    let mut statement =
        conn.prepare("SELECT car_id, color, customer_name FROM cars ORDER BY car_id")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The checkpoint recorded inside a read model.
fn checkpoint_at(path: &Path) -> rusqlite::Result<u64> {
    read_only(path)?.query_row(
        "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
        [],
        |row| count(row, 0),
    )
}

/// A non-negative integer column (offsets and counts); rusqlite reads SQLite's
/// integers as `i64`.
fn count(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(column, value))
}

/// What one read of a read model saw, all in one read transaction.
struct Seen {
    version: String,
    checkpoint: u64,
    cars: u64,
}

/// One read the way a client reads: a fresh read-only connection, then the version,
/// the checkpoint and the number of cars in one read transaction.
fn read_once(path: &Path) -> rusqlite::Result<Seen> {
    let conn = read_only(path)?;
    conn.execute_batch("BEGIN")?;
    let version = conn.query_row(
        "SELECT value FROM _refract_meta WHERE key = 'version'",
        [],
        |row| row.get(0),
    )?;
    let checkpoint = conn.query_row(
        "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
        [],
        |row| count(row, 0),
    )?;
    let cars = conn.query_row("SELECT count(*) FROM cars", [], |row| count(row, 0))?;
    conn.execute_batch("COMMIT")?;
    Ok(Seen {
        version,
        checkpoint,
        cars,
    })
}

/// What a reader saw while reading over and over.
#[derive(Debug, Default)]
struct Reads {
    count: u64,
    /// The versions read, in the order first seen.
    versions: Vec<String>,
    /// The highest checkpoint read.
    checkpoint: u64,
    /// Errors, empty tables and checkpoints that went backwards (the first few).
    problems: Vec<String>,
    problem_count: u64,
}

impl Reads {
    fn record(&mut self, seen: std::result::Result<Seen, String>) {
        let problem = match seen {
            Err(error) => Some(error),
            Ok(seen) => {
                self.count += 1;
                if !self.versions.contains(&seen.version) {
                    self.versions.push(seen.version.clone());
                }
                let problem = if seen.cars == 0 {
                    Some(format!(
                        "version {} at offset {} has no cars",
                        seen.version, seen.checkpoint
                    ))
                } else if seen.checkpoint < self.checkpoint {
                    Some(format!(
                        "the checkpoint went backwards from {} to {} (version {})",
                        self.checkpoint, seen.checkpoint, seen.version
                    ))
                } else {
                    None
                };
                self.checkpoint = self.checkpoint.max(seen.checkpoint);
                problem
            }
        };
        if let Some(problem) = problem {
            self.problem_count += 1;
            if self.problems.len() < 10 {
                self.problems.push(problem);
            }
        }
    }

    fn assert_clean(&self, reader: &str, versions: &[&str], checkpoint: u64) {
        assert!(
            self.problems.is_empty(),
            "{reader}: {} bad reads in {}; the first: {:#?}",
            self.problem_count,
            self.count + self.problem_count,
            self.problems
        );
        assert!(
            self.count >= MIN_READS,
            "{reader}: only {} reads; too few to show that reads never fail",
            self.count
        );
        assert_eq!(
            self.versions, versions,
            "{reader}: the versions read, in order"
        );
        assert_eq!(
            self.checkpoint, checkpoint,
            "{reader}: the last checkpoint read"
        );
    }
}

/// Reads the read model at `path()` until `stop` is set.
fn read_until(stop: &AtomicBool, path: impl Fn() -> Option<PathBuf>) -> Reads {
    let mut reads = Reads::default();
    while !stop.load(Ordering::Relaxed) {
        let seen = match path() {
            None => Err("no read model is routed for cars".to_owned()),
            Some(path) => read_once(&path).map_err(|error| format!("{}: {error}", path.display())),
        };
        reads.record(seen);
        // Leave the CPU to the engine; a thousand reads a second is plenty.
        std::thread::sleep(Duration::from_millis(1));
    }
    reads
}

/// Sets a flag when dropped, so that reader threads stop even when the test panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

// ---------------------------------------------------------------------------------------
// The cars story
// ---------------------------------------------------------------------------------------

/// Replay pace for the story: one event per batch at this many events per second, so
/// v2's replay of the story takes well over a second and the appends land during it.
const STORY_RATE: u64 = 5;

#[test]
fn the_cars_story_swaps_in_v2_while_events_arrive_and_readers_read() -> Result {
    let config = format!("[projectors.cars]\nbatch_size = 1\nreplay_rate_limit = {STORY_RATE}\n");
    let (host, v1) = Host::with_v1_active(&config)?;
    let (v2_bytes, v2) = guest("cars-v2");
    // v1's bug: the sold car keeps the name its customer had at the sale.
    assert_eq!(
        host.cars()?,
        [
            car("hrxs21", "red", Some("Bob")),
            car("tye24p", "blue", None)
        ]
    );

    let stop = AtomicBool::new(false);
    let (routed, stable, appended) = std::thread::scope(|scope| -> Result<_> {
        let _stop = SetOnDrop(&stop);
        let routed = scope.spawn(|| {
            read_until(&stop, || {
                host.engine.read_model("cars").map(|model| model.path)
            })
        });
        let stable = scope.spawn(|| read_until(&stop, || Some(host.data.stable_db("cars"))));
        let appender = scope.spawn(|| append_during_replay(&host, &v1, &v2));

        let deployment = host.engine.deploy(&v2_bytes)?;
        assert_eq!(deployment.outcome, DeployOutcome::Started);
        assert_eq!(
            (deployment.projector.as_str(), deployment.version.as_str()),
            ("cars", v2.as_str())
        );
        let appended = join(appender);
        host.wait_active(&v2, 9);
        // A few more reads, of the new version only.
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        Ok((join(routed), join(stable), appended))
    })?;

    assert_eq!(
        appended,
        [7, 8, 9],
        "events 7-9, appended while v2 replayed"
    );
    println!(
        "reads through the deploy: {} through Engine::read_model, {} through projections/cars.db",
        routed.count, stable.count
    );
    routed.assert_clean("the reader through Engine::read_model", &[&v1, &v2], 9);
    stable.assert_clean("the reader through projections/cars.db", &[&v1, &v2], 9);
    let fixed = [
        car("hrxs21", "orange", Some("Charlie")),
        car("tye24p", "blue", Some("Dan")),
    ];
    assert_eq!(host.cars()?, fixed);
    assert_eq!(cars_at(&host.data.stable_db("cars"))?, fixed);
    assert_eq!(host.stable_target()?, link_to(&v2));
    assert_eq!(host.roles()?, roles(&[(&v1, "previous"), (&v2, "active")]));
    assert_eq!(
        host.engine.swaps_total(),
        1,
        "v2's swap (a first version's activation replaces nothing)"
    );
    Ok(())
}

/// Appends the story's events 7–9 one at a time while v2 replays, checking around each
/// append that v2 is still the shadow, behind the log, with v1 serving. Returns the
/// offsets.
fn append_during_replay(host: &Host, v1: &str, v2: &str) -> Vec<u64> {
    wait_until_showing(
        LIVENESS,
        "v2's shadow to start replaying",
        || {
            host.running(v2, Role::Shadow)
                .is_some_and(|status| status.checkpoint >= 1)
        },
        || host.describe(),
    );
    let mut offsets = Vec::new();
    for event in cars_story(2) {
        let before = host.running(v2, Role::Shadow);
        assert!(
            before
                .as_ref()
                .is_some_and(|status| status.state == State::CatchingUp),
            "v2 must still be replaying before event {} is appended: {before:#?}",
            offsets.len() + 7
        );
        let appended = host.append(vec![event]).expect("append");
        let after = host.running(v2, Role::Shadow);
        assert!(
            after.is_some() && host.active().as_deref() == Some(v1),
            "v2 must still be the shadow, and v1 active, after offset {appended:?} was appended: {}",
            host.describe()
        );
        offsets.extend(appended);
    }
    offsets
}

#[test]
fn a_rate_limited_shadow_that_has_caught_up_is_swapped_in_promptly() -> Result {
    let (mut host, v1) = Host::with_v1_active("")?;
    let head = host
        .append(cars_workload(3, 200))?
        .last()
        .copied()
        .ok_or("appended nothing")?;
    host.wait_active(&v1, head);
    // v2 replays the whole log in one batch, then owes the rate limit some 15 s: the
    // pacing must hold back the next batch, not the swap of a shadow that has caught up.
    host.restart_with("[projectors.cars]\nreplay_rate_limit = 14\n")?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;
    wait_until_showing(
        LIVENESS,
        "v2's shadow to catch up",
        || {
            host.active().as_deref() == Some(v2.as_str())
                || host
                    .running(&v2, Role::Shadow)
                    .is_some_and(|status| status.state == State::Live && status.checkpoint == head)
        },
        || host.describe(),
    );
    let caught_up = Instant::now();
    wait_until_showing(
        Duration::from_secs(5),
        "the caught-up shadow to be swapped in (the active version is stopped meanwhile)",
        || host.active().as_deref() == Some(v2.as_str()),
        || host.describe(),
    );
    println!(
        "swapped in {} ms after catching up",
        caught_up.elapsed().as_millis()
    );
    // Active now, v2 is no longer paced: it projects the next event at once.
    host.append(cars_story(2)[..1].to_vec())?;
    wait_until_showing(
        Duration::from_secs(5),
        "v2, now active, to project a new event",
        || {
            host.running(&v2, Role::Active)
                .is_some_and(|status| status.checkpoint == head + 1)
        },
        || host.describe(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Old versions on disk, and what a crash leaves behind
// ---------------------------------------------------------------------------------------

#[test]
fn only_the_last_keep_versions_read_models_stay_on_disk() -> Result {
    let (v2_bytes, v2) = guest("cars-v2");
    let (v3_bytes, v3) = retagged(&v2_bytes, "v3");
    for (keep, kept_from) in [(2, 1), (3, 0)] {
        let (host, v1) =
            Host::with_v1_active(&format!("[projectors.cars]\nkeep_versions = {keep}\n"))?;
        let versions = [v1.as_str(), v2.as_str(), v3.as_str()];
        host.engine.deploy(&v2_bytes)?;
        host.wait_active(&v2, 6);
        host.engine.deploy(&v3_bytes)?;
        host.wait_active(&v3, 6);
        let on_disk: Vec<&str> = versions
            .iter()
            .copied()
            .filter(|version| host.data.version_db("cars", version).exists())
            .collect();
        assert_eq!(
            on_disk,
            versions[kept_from..],
            "keep_versions = {keep}: the read models of the last {keep} versions, the active one included"
        );
        assert_eq!(
            host.roles()?[1..],
            roles(&[(&v2, "previous"), (&v3, "active")])
        );
    }
    Ok(())
}

#[test]
fn a_restart_during_a_deploy_keeps_the_version_to_roll_back_to() -> Result {
    let (mut host, v1) = Host::with_v1_active(MANUAL)?;
    let (v2_bytes, v2) = guest("cars-v2");
    let (v3_bytes, v3) = retagged(&v2_bytes, "v3");
    host.engine.deploy(&v2_bytes)?;
    host.wait_live(&v2, Role::Shadow, 6);
    host.engine.promote("cars")?;
    host.wait_active(&v2, 6);
    host.engine.deploy(&v3_bytes)?;
    host.wait_live(&v3, Role::Shadow, 6);
    assert_eq!(
        host.roles()?,
        roles(&[(&v1, "previous"), (&v2, "active"), (&v3, "shadow")])
    );

    host.restart()?;
    assert_eq!(
        host.roles()?,
        roles(&[(&v1, "previous"), (&v2, "active"), (&v3, "shadow")])
    );
    assert!(
        host.data.version_db("cars", &v1).exists() && host.data.version_wasm("cars", &v1).exists(),
        "v1, still the version to roll back to, keeps its read model and component: {:?}",
        host.files()?
    );
    host.engine.abort("cars")?;
    assert_eq!(host.engine.rollback("cars")?, v1);
    host.wait_active(&v1, 6);
    Ok(())
}

#[test]
fn a_restart_repairs_what_a_crash_in_the_middle_of_a_swap_leaves() -> Result {
    let (mut host, v1) = Host::with_v1_active("")?;
    let (v2_bytes, v2) = guest("cars-v2");
    let (v3_bytes, v3) = retagged(&v2_bytes, "v3");
    host.engine.deploy(&v2_bytes)?;
    host.wait_active(&v2, 6);
    host.engine.shutdown();

    // What a crash leaves at each step: the stable path not yet re-pointed after the
    // commit, the new link not yet renamed into place, a component half stored, and the
    // read model of a version that was never registered (or retired, not yet deleted).
    let projections = host.data.projections();
    let stable = host.data.stable_db("cars");
    std::fs::remove_file(&stable)?;
    std::os::unix::fs::symlink(link_to(&v1), &stable)?;
    std::os::unix::fs::symlink(link_to(&v2), projections.join(".cars.db.link"))?;
    std::fs::write(
        host.data
            .projector_dir("cars")
            .join(format!("{v3}.wasm.tmp")),
        &v3_bytes[..100],
    )?;
    std::fs::copy(
        host.data.version_db("cars", &v1),
        host.data.version_db("cars", &v3),
    )?;

    host.restart()?;
    host.wait_active(&v2, 6);
    assert_eq!(host.stable_target()?, link_to(&v2));
    assert_eq!(cars_at(&stable)?[0], car("hrxs21", "red", Some("Charlie")));
    no_strays(&host.data)?;
    // The next deploy, of the very version whose leftovers were found, works.
    assert_eq!(
        host.engine.deploy(&v3_bytes)?.outcome,
        DeployOutcome::Started
    );
    host.wait_active(&v3, 6);
    assert_eq!(host.cars()?[0], car("hrxs21", "red", Some("Charlie")));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The watched plugins folder
// ---------------------------------------------------------------------------------------

#[test]
fn a_component_written_slowly_into_the_plugins_folder_is_deployed_once_whole() -> Result {
    let (host, v1) = Host::with_v1_active("")?;
    let (v2_bytes, v2) = guest("cars-v2");
    assert_eq!(host.roles()?, roles(&[(&v1, "active")]));

    // Written in place, as `cp` does, in chunks with pauses longer than the debounce:
    // the folder watcher sees several half-written files first.
    let pause = refract::engine::PLUGIN_DEBOUNCE + Duration::from_millis(300);
    let mut file = std::fs::File::create(host.data.plugins().join("cars.wasm"))?;
    let mut partial_refused = false;
    for chunk in v2_bytes.chunks(v2_bytes.len().div_ceil(4)) {
        std::io::Write::write_all(&mut file, chunk)?;
        file.sync_data()?;
        std::thread::sleep(pause);
        partial_refused |= !host.engine.rejected().is_empty();
    }
    drop(file);
    assert!(
        partial_refused,
        "the watcher saw at least one half-written file, and refused it"
    );

    host.wait_active(&v2, 6);
    // Long enough for any late event about the file to have been handled.
    std::thread::sleep(pause * 2);
    assert_eq!(
        host.roles()?,
        roles(&[(&v1, "previous"), (&v2, "active")]),
        "exactly one new version, the whole file's (sha256 prefix {v2})"
    );
    assert_eq!(host.cars()?[0], car("hrxs21", "red", Some("Charlie")));
    assert!(
        host.engine.rejected().is_empty(),
        "the half-written file is no longer reported once whole: {:#?}",
        host.engine.rejected()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rollback
// ---------------------------------------------------------------------------------------

#[test]
fn rollback_to_a_stopped_previous_version_catches_it_up_before_it_serves() -> Result {
    let config = format!("[projectors.cars]\nbatch_size = 1\nreplay_rate_limit = {STORY_RATE}\n");
    let (host, v1) = Host::with_v1_active(&config)?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;
    host.wait_active(&v2, 6);
    assert!(
        host.running(&v1, Role::Previous).is_none(),
        "without keep_previous, the replaced version stops"
    );
    // v1 misses these while it is stopped.
    host.append(cars_story(2))?;
    host.wait_active(&v2, 9);
    assert_eq!(checkpoint_at(&host.data.version_db("cars", &v1))?, 6);

    let stop = AtomicBool::new(false);
    let reads = std::thread::scope(|scope| -> Result<_> {
        let _stop = SetOnDrop(&stop);
        let reader = scope.spawn(|| {
            read_until(&stop, || {
                host.engine.read_model("cars").map(|model| model.path)
            })
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(host.engine.rollback("cars")?, v1);
        host.wait_active(&v1, 9);
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        Ok(join(reader))
    })?;

    // Had v1 served before catching up, the reader would have gone back from 9 to 6.
    reads.assert_clean("the reader through Engine::read_model", &[&v2, &v1], 9);
    // v1's bug is back (Bob), and it has applied what it missed (orange, Dan).
    assert_eq!(
        host.cars()?,
        [
            car("hrxs21", "orange", Some("Bob")),
            car("tye24p", "blue", Some("Dan"))
        ]
    );
    assert_eq!(host.stable_target()?, link_to(&v1));
    assert_eq!(host.roles()?, roles(&[(&v1, "active"), (&v2, "previous")]));
    Ok(())
}

#[test]
fn rollback_to_a_warm_previous_version_is_instant() -> Result {
    let (host, v1) = Host::with_v1_active("[projectors.cars]\nkeep_previous = true\n")?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;
    host.wait_active(&v2, 6);
    // v1 keeps tailing the log while v2 serves.
    host.append(cars_story(2))?;
    host.wait_active(&v2, 9);
    host.wait_live(&v1, Role::Previous, 9);

    assert_eq!(host.engine.rollback("cars")?, v1);
    // No waiting: the rollback returns with v1 already serving, up to date.
    assert_eq!(host.active().as_deref(), Some(v1.as_str()));
    assert_eq!(
        host.cars()?,
        [
            car("hrxs21", "orange", Some("Bob")),
            car("tye24p", "blue", Some("Dan"))
        ]
    );
    assert_eq!(host.stable_target()?, link_to(&v1));
    assert_eq!(host.roles()?, roles(&[(&v1, "active"), (&v2, "previous")]));
    // And now v2 is the one kept warm.
    host.wait_live(&v2, Role::Previous, 9);
    Ok(())
}

#[test]
fn a_rollback_interrupted_by_a_restart_is_still_a_rollback() -> Result {
    // Manual promotion, which a rollback overrides; and a slow catch-up, so that the
    // restarts land in the middle of it.
    let config =
        "[projectors.cars]\npromote = \"manual\"\nbatch_size = 100\nreplay_rate_limit = 1000\n";
    let (mut host, v1) = Host::with_v1_active(config)?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;
    host.wait_live(&v2, Role::Shadow, 6);
    host.engine.promote("cars")?;
    let head = host
        .append(cars_workload(5, 3_000))?
        .last()
        .copied()
        .ok_or("appended nothing")?;
    host.wait_active(&v2, head);

    assert_eq!(host.engine.rollback("cars")?, v1);
    host.restart()?;
    assert!(
        host.running(&v1, Role::Shadow)
            .is_some_and(|status| status.checkpoint < head),
        "v1 is still catching up after the restart: {}",
        host.describe()
    );
    // Aborting a rollback leaves the previous version as it was: still the version to
    // roll back to, with its read model. A restart in between must not change that.
    assert_eq!(host.engine.abort("cars")?, v1);
    assert_eq!(
        host.roles()?,
        roles(&[(&v1, "previous"), (&v2, "active")]),
        "after aborting a rollback that a restart interrupted"
    );
    assert!(
        host.data.version_db("cars", &v1).exists() && host.data.version_wasm("cars", &v1).exists(),
        "v1's read model and component are kept for the next rollback: {:?}",
        host.files()?
    );

    // A rollback swaps in when caught up, whatever the promote mode: after a restart too.
    assert_eq!(host.engine.rollback("cars")?, v1);
    host.restart()?;
    wait_until_showing(
        LIVENESS,
        "v1 to catch up",
        || {
            host.active().as_deref() == Some(v1.as_str())
                || host
                    .running(&v1, Role::Shadow)
                    .is_some_and(|status| status.state == State::Live && status.checkpoint == head)
        },
        || host.describe(),
    );
    // Caught up, the rollback swaps in on a controller tick of its own, promote =
    // "manual" or not: waited for, not slept on (a loaded machine's ticks run late).
    wait_until_showing(
        LIVENESS,
        "the rollback to complete despite promote = \"manual\"",
        || host.active().as_deref() == Some(v1.as_str()),
        || host.describe(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Abort, manual promotion, the diff gate
// ---------------------------------------------------------------------------------------

const MANUAL: &str = "[projectors.cars]\npromote = \"manual\"\n";

#[test]
fn abort_drops_the_shadow_and_leaves_the_active_version_serving() -> Result {
    let (host, v1) = Host::with_v1_active(MANUAL)?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;
    host.wait_live(&v2, Role::Shadow, 6);
    assert!(host.files()?.contains(&format!("{v2}.db")));

    assert_eq!(host.engine.abort("cars")?, v2);
    assert_eq!(host.active().as_deref(), Some(v1.as_str()));
    wait_until_showing(
        LIVENESS,
        "the aborted shadow to leave the status",
        || host.running(&v2, Role::Shadow).is_none(),
        || host.describe(),
    );
    assert_eq!(
        host.files()?,
        [
            format!("{v1}.db"),
            format!("{v1}.db-shm"),
            format!("{v1}.db-wal"),
            format!("{v1}.wasm")
        ],
        "the shadow's read model, its WAL files and its component are gone"
    );
    assert_eq!(host.roles()?, roles(&[(&v1, "active"), (&v2, "retired")]));
    assert_eq!(host.stable_target()?, link_to(&v1));
    assert!(
        matches!(host.engine.abort("cars"), Err(EngineError::Conflict(_))),
        "nothing left to abort"
    );
    // v1 keeps serving, and projecting.
    host.append(cars_story(2))?;
    host.wait_active(&v1, 9);
    assert_eq!(host.cars()?[0], car("hrxs21", "orange", Some("Bob")));
    Ok(())
}

#[test]
fn a_manual_shadow_keeps_tailing_until_promoted() -> Result {
    let (host, v1) = Host::with_v1_active(MANUAL)?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;
    host.wait_live(&v2, Role::Shadow, 6);

    host.append(cars_story(2))?;
    host.wait_live(&v2, Role::Shadow, 9);
    host.wait_active(&v1, 9);
    // Caught up, yet not swapped in: a few controller ticks change nothing.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.active().as_deref(), Some(v1.as_str()));
    assert_eq!(host.cars()?[0], car("hrxs21", "orange", Some("Bob")));
    assert_eq!(host.roles()?, roles(&[(&v1, "active"), (&v2, "shadow")]));
    assert_eq!(host.stable_target()?, link_to(&v1));

    assert_eq!(host.engine.promote("cars")?, v2);
    assert_eq!(host.active().as_deref(), Some(v2.as_str()));
    assert_eq!(host.cars()?[0], car("hrxs21", "orange", Some("Charlie")));
    assert_eq!(host.stable_target()?, link_to(&v2));
    assert_eq!(host.roles()?, roles(&[(&v1, "previous"), (&v2, "active")]));
    assert!(
        matches!(host.engine.promote("cars"), Err(EngineError::Conflict(_))),
        "nothing left to promote"
    );
    Ok(())
}

#[test]
fn a_passing_diff_gate_lets_the_automatic_swap_happen() -> Result {
    let (host, v1) =
        Host::with_v1_active("[projectors.cars]\ndiff_gate = \"{dir}/no-car-lost.sql\"\n")?;
    // Reads the active read model too, attached as `active`.
    std::fs::write(
        host.dir.path().join("no-car-lost.sql"),
        "SELECT car_id FROM active.cars WHERE car_id NOT IN (SELECT car_id FROM cars);\n",
    )?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;
    host.wait_active(&v2, 6);
    assert_eq!(host.roles()?, roles(&[(&v1, "previous"), (&v2, "active")]));
    Ok(())
}

#[test]
fn a_failing_diff_gate_refuses_the_automatic_swap_until_promoted() -> Result {
    let (host, v1) =
        Host::with_v1_active("[projectors.cars]\ndiff_gate = \"{dir}/no-charlie.sql\"\n")?;
    let gate = host.dir.path().join("no-charlie.sql");
    std::fs::write(
        &gate,
        "-- v2 must not rename a sold car's customer\nSELECT car_id FROM cars WHERE customer_name = 'Charlie';\n",
    )?;
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;

    wait_until_showing(
        LIVENESS,
        "the diff gate to refuse v2",
        || {
            host.running(&v2, Role::Shadow)
                .and_then(|status| status.last_error)
                .is_some_and(|error| error.contains("diff gate"))
        },
        || host.describe(),
    );
    let message = host
        .running(&v2, Role::Shadow)
        .and_then(|status| status.last_error)
        .unwrap_or_default();
    assert!(
        message.contains(&gate.display().to_string()) && message.contains("hrxs21"),
        "the refusal names the gate file and the violating row: {message}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        host.active().as_deref(),
        Some(v1.as_str()),
        "v1 still serves"
    );
    assert_eq!(host.roles()?, roles(&[(&v1, "active"), (&v2, "shadow")]));

    assert_eq!(
        host.engine.promote("cars")?,
        v2,
        "an operator can swap anyway"
    );
    assert_eq!(host.active().as_deref(), Some(v2.as_str()));
    assert_eq!(host.cars()?[0], car("hrxs21", "red", Some("Charlie")));
    Ok(())
}

#[test]
fn the_status_shows_a_command_s_effect_as_soon_as_the_command_returns() -> Result {
    let (host, _) = Host::with_v1_active(MANUAL)?;
    let (v2_bytes, v2) = guest("cars-v2");
    let listed_as = |role: Role| {
        host.engine.projector("cars").is_some_and(|view| {
            view.versions
                .iter()
                .any(|version| version.version == v2 && version.role == role)
        })
    };
    // A client that deploys, aborts or promotes and then asks for the status must see
    // what it just did; a few rounds, since a stale status is a race.
    for round in 0..5 {
        host.engine.deploy(&v2_bytes)?;
        assert!(
            listed_as(Role::Shadow),
            "round {round}: right after deploy() returned, v2 is listed as the shadow: {}",
            host.describe()
        );
        host.engine.abort("cars")?;
        assert!(
            !listed_as(Role::Shadow),
            "round {round}: right after abort() returned, v2 is no longer listed as the shadow: {}",
            host.describe()
        );
    }
    host.engine.deploy(&v2_bytes)?;
    host.wait_live(&v2, Role::Shadow, 6);
    host.engine.promote("cars")?;
    assert!(
        listed_as(Role::Active),
        "right after promote() returned, v2 is listed as active: {}",
        host.describe()
    );
    Ok(())
}

#[test]
fn a_failing_shadow_is_dropped_and_the_active_version_keeps_serving() -> Result {
    // A rename v2 cannot read: v1 does not subscribe to renames, v2 fails on it.
    let mut events = cars_story(1);
    events.push(NewEvent::new(
        "b2dhuw",
        "customer.renamed",
        json!({ "nom": "Charlie" }).to_string(),
    ));
    let host = Host::start("", events, Some("cars-v1"))?;
    let (_, v1) = guest("cars-v1");
    host.wait_active(&v1, 7);
    let (v2_bytes, v2) = guest("cars-v2");
    host.engine.deploy(&v2_bytes)?;

    wait_until_showing(
        LIVENESS,
        "v2's shadow to be marked failed",
        || {
            host.roles().is_ok_and(|roles| {
                roles
                    .iter()
                    .any(|(version, role)| *version == v2 && role == "failed")
            })
        },
        || host.describe(),
    );
    let conn = read_only(&host.data.control_db())?;
    let reason: Option<String> = conn.query_row(
        "SELECT last_error FROM versions WHERE projector = 'cars' AND version = ?1",
        [&v2],
        |row| row.get(0),
    )?;
    assert!(
        reason
            .as_deref()
            .is_some_and(|reason| reason.contains("offset 7")),
        "control.db says why v2 failed, and where: {reason:?}"
    );
    wait_until_showing(
        LIVENESS,
        "the failed shadow to stop",
        || host.running(&v2, Role::Shadow).is_none(),
        || host.describe(),
    );
    // v1 is untouched: active, serving, and projecting.
    assert_eq!(host.active().as_deref(), Some(v1.as_str()));
    assert_eq!(host.stable_target()?, link_to(&v1));
    host.append(cars_story(2))?;
    host.wait_active(&v1, 10);
    assert_eq!(host.cars()?[0], car("hrxs21", "orange", Some("Bob")));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Deploys that change nothing
// ---------------------------------------------------------------------------------------

#[test]
fn deploying_the_same_bytes_twice_or_a_bad_component_changes_nothing() -> Result {
    let (host, v1) = Host::with_v1_active(MANUAL)?;
    let (v1_bytes, _) = guest("cars-v1");
    let (v2_bytes, v2) = guest("cars-v2");

    let again = host.engine.deploy(&v1_bytes)?;
    assert_eq!(
        (again.outcome, again.version.as_str()),
        (DeployOutcome::AlreadyActive, v1.as_str())
    );
    assert_eq!(
        host.engine.deploy(&v2_bytes)?.outcome,
        DeployOutcome::Started
    );
    let again = host.engine.deploy(&v2_bytes)?;
    assert_eq!(
        (again.outcome, again.version.as_str()),
        (DeployOutcome::AlreadyDeploying, v2.as_str())
    );
    host.wait_live(&v2, Role::Shadow, 6);

    let roles_before = host.roles()?;
    let files_before = host.files()?;
    assert_eq!(roles_before, roles(&[(&v1, "active"), (&v2, "shadow")]));
    let (wrong_world, _) = guest("wrong-world");
    let bad: [(&str, &[u8]); 4] = [
        ("an empty file", b""),
        ("text", b"not a component"),
        ("half of a component", &v2_bytes[..v2_bytes.len() / 2]),
        ("a component of another world", &wrong_world),
    ];
    for (what, bytes) in bad {
        let refused = host.engine.deploy(bytes);
        assert!(
            matches!(refused, Err(EngineError::InvalidComponent(_))),
            "{what} is refused as an invalid component: {refused:?}"
        );
    }
    assert_eq!(host.roles()?, roles_before);
    assert_eq!(host.files()?, files_before);
    assert_eq!(host.active().as_deref(), Some(v1.as_str()));
    assert!(
        host.running(&v2, Role::Shadow).is_some(),
        "the shadow is untouched"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// kill -9 across a deploy, with the real binary
// ---------------------------------------------------------------------------------------

/// A large `cars` log: customers created and renamed, cars created, repainted and
/// sold, and events neither version subscribes to. Renames after sales make v1's and
/// v2's read models differ.
fn cars_workload(seed: u64, count: usize) -> Vec<NewEvent> {
    const COLORS: [&str; 6] = ["red", "blue", "green", "orange", "black", "white"];
    const NAMES: [&str; 6] = ["Ada", "Bob", "Charlie", "Dan", "Eve", "Grace"];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut cars, mut customers) = (0_usize, 0_usize);
    let mut events = Vec::with_capacity(count);
    for index in 0..count {
        let roll: f64 = rng.random();
        let name = format!("{}-{index}", NAMES[rng.random_range(0..NAMES.len())]);
        let color = COLORS[rng.random_range(0..COLORS.len())];
        let event = if customers == 0 || roll < 0.08 {
            customers += 1;
            NewEvent::new(
                format!("cust-{}", customers - 1),
                "customer.created",
                json!({ "name": name }).to_string(),
            )
        } else if cars == 0 || roll < 0.30 {
            cars += 1;
            NewEvent::new(
                format!("car-{}", cars - 1),
                "car.created",
                json!({ "by": name, "color": color }).to_string(),
            )
        } else {
            let car = format!("car-{}", rng.random_range(0..cars));
            let customer = format!("cust-{}", rng.random_range(0..customers));
            match roll {
                r if r < 0.55 => {
                    NewEvent::new(car, "car.repainted", json!({ "color": color }).to_string())
                }
                r if r < 0.75 => {
                    NewEvent::new(car, "car.sold", json!({ "to": customer }).to_string())
                }
                r if r < 0.92 => NewEvent::new(
                    customer,
                    "customer.renamed",
                    json!({ "name": name }).to_string(),
                ),
                _ => NewEvent::new(car, "car.inspected", json!({ "ok": true }).to_string()),
            }
        };
        events.push(event);
    }
    events
}

/// The seed of a `kill -9` test: [`SEED_ENV`] if set, otherwise new on every run.
fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={text:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64),
    }
}

fn refract() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_refract"))
}

/// A data directory with a large log and `cars` v1 active and caught up, copied for
/// each run; and v1's and v2's read models built from the same log by `refract
/// project`, which is what the active read model must equal after any crash.
struct Template {
    dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    /// [`Template::config`] with `keep_previous = true`.
    keep_previous: PathBuf,
    head: u64,
    v1: String,
    v2: String,
    v1_bytes: Vec<u8>,
    v2_bytes: Vec<u8>,
    /// How long v1's first deploy took, from starting `refract run` to v1 active.
    first_deploy: Duration,
}

impl Template {
    fn build(seed: u64, events: usize) -> Result<Template> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("template");
        let config = dir.path().join("refract.toml");
        std::fs::write(&config, "[log]\ndurability = \"normal\"\n")?;
        let keep_previous = dir.path().join("keep-previous.toml");
        std::fs::write(
            &keep_previous,
            "[log]\ndurability = \"normal\"\n\n[projectors.cars]\nkeep_previous = true\n",
        )?;
        let head = {
            let log = EventLog::open(
                &DataDir::new(&data).events_db(),
                LogOptions {
                    durability: Durability::Normal,
                    ..LogOptions::default()
                },
            )?;
            for chunk in cars_workload(seed, events).chunks(5_000) {
                log.append(chunk.to_vec())?;
            }
            log.head()?
        };
        let (v1_bytes, v1) = guest("cars-v1");
        let (v2_bytes, v2) = guest("cars-v2");
        let mut template = Template {
            dir,
            data,
            config,
            keep_previous,
            head,
            v1,
            v2,
            v1_bytes,
            v2_bytes,
            first_deploy: Duration::ZERO,
        };
        // The references; this also puts both components' compiled code in the data
        // directory's cache.
        template.project("cars-v1", &template.v1)?;
        template.project("cars-v2", &template.v2)?;

        std::fs::create_dir_all(template.data.join("plugins"))?;
        std::fs::write(
            template.data.join("plugins").join("cars.wasm"),
            &template.v1_bytes,
        )?;
        let started = Instant::now();
        let mut host = template.run(&template.data, &template.config)?;
        host.wait_until(LIVENESS, "cars v1 to be active and caught up", || {
            template.caught_up(&template.data, &template.v1)
        });
        template.first_deploy = started.elapsed();
        host.wait_serving(LIVENESS);
        let status = host.terminate(TERM_TIMEOUT);
        assert!(status.success(), "refract run exited with {status}");
        Ok(template)
    }

    /// A clean replay of the whole log through `version`, by `refract project`.
    fn clean(&self, version: &str) -> PathBuf {
        self.dir.path().join(format!("clean-{version}.db"))
    }

    fn project(&self, guest: &str, version: &str) -> Result {
        let output = std::process::Command::new(refract())
            .current_dir(self.dir.path())
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--config")
            .arg(&self.config)
            .arg("project")
            .arg("--plugin")
            .arg(support::guests::guest(guest))
            .arg("--out")
            .arg(self.clean(version))
            .env_remove("RUST_LOG")
            .output()?;
        assert!(
            output.status.success(),
            "refract project failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{}", String::from_utf8_lossy(&output.stdout).trim());
        Ok(())
    }

    fn run(&self, data: &Path, config: &Path) -> Result<RunningHost> {
        Ok(RunningHost::start(
            refract(),
            self.dir.path(),
            data,
            config,
            &[],
        )?)
    }

    /// A fresh copy of the template (v1 active), to crash.
    fn copy(&self, name: &str) -> Result<PathBuf> {
        let data = self.dir.path().join(name);
        copy_tree(&self.data, &data)?;
        Ok(data)
    }

    /// A data directory with the template's log and compile cache, and v1 in the
    /// plugins folder, never deployed.
    fn undeployed(&self, name: &str) -> Result<PathBuf> {
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(data.join("plugins"))?;
        for file in file_names(&self.data)? {
            if file.starts_with("events.db") {
                std::fs::copy(self.data.join(&file), data.join(&file))?;
            }
        }
        copy_tree(&self.data.join("cache"), &data.join("cache"))?;
        std::fs::write(data.join("plugins").join("cars.wasm"), &self.v1_bytes)?;
        Ok(data)
    }

    /// Replaces `plugins/cars.wasm` with v2, whole (temp file, then rename).
    fn drop_v2(&self, data: &Path) -> Result {
        let temp = data.join("plugins").join(".cars.wasm.part");
        std::fs::write(&temp, &self.v2_bytes)?;
        std::fs::rename(&temp, data.join("plugins").join("cars.wasm"))?;
        Ok(())
    }

    /// Whether `version` is the one active version, live, and its read model at the
    /// log head, as the files say.
    fn caught_up(&self, data: &Path, version: &str) -> bool {
        let data = DataDir::new(data);
        let active = active_versions(&data).is_ok_and(|active| active == [version]);
        let live = version_row(&data, version)
            .is_ok_and(|row| row.is_some_and(|(_, state)| state == "live"));
        active
            && live
            && checkpoint_at(&data.version_db("cars", version))
                .is_ok_and(|checkpoint| checkpoint == self.head)
    }

    /// Where the deploy of `version` stood when the host was killed, from the files.
    fn moment(&self, data: &Path, version: &str) -> String {
        let data = DataDir::new(data);
        let link = std::fs::read_link(data.stable_db("cars")).map_or_else(
            |_| "no link".to_owned(),
            |target| format!("link -> {}", target.display()),
        );
        match version_row(&data, version) {
            Ok(None) => format!("{version} not registered yet; {link}"),
            Ok(Some((role, _))) => {
                let checkpoint = checkpoint_at(&data.version_db("cars", version)).map_or_else(
                    |error| format!("? ({error})"),
                    |checkpoint| checkpoint.to_string(),
                );
                format!(
                    "{version} {role} at offset {checkpoint}/{}; {link}",
                    self.head
                )
            }
            Err(error) => format!("control.db unreadable ({error}); {link}"),
        }
    }

    /// What must hold after a crash and a restart that reached `version`: one active
    /// version, `version`, whose read model equals a clean replay and which the stable
    /// path points at, and no stray files.
    fn check(&self, data: &Path, version: &str) -> std::result::Result<(), String> {
        let data = DataDir::new(data);
        let active = count_active(&data).map_err(|error| format!("control.db: {error}"))?;
        if active != 1 {
            return Err(format!("{active} active versions in control.db, not 1"));
        }
        let active = active_versions(&data).map_err(|error| format!("control.db: {error}"))?;
        if active != [version] {
            return Err(format!("active version {active:?}, not {version}"));
        }
        let db = data.version_db("cars", version);
        let checkpoint =
            checkpoint_at(&db).map_err(|error| format!("{}: {error}", db.display()))?;
        if checkpoint != self.head {
            return Err(format!(
                "{version}'s checkpoint is {checkpoint}, not the head {}",
                self.head
            ));
        }
        for sql in [
            "SELECT * FROM cars ORDER BY car_id",
            "SELECT * FROM customers ORDER BY customer_id",
        ] {
            same_rows(&db, &self.clean(version), sql)?;
        }
        let link = std::fs::read_link(data.stable_db("cars"))
            .map_err(|error| format!("the stable path: {error}"))?;
        if link != link_to(version) {
            return Err(format!(
                "the stable path points at {}, not {version}",
                link.display()
            ));
        }
        no_strays(&data)
    }
}

/// Only files of kept versions in `projections/cars/`, and only `cars/` and the
/// stable link in `projections/`.
fn no_strays(data: &DataDir) -> std::result::Result<(), String> {
    let known = kept_versions(data).map_err(|error| format!("control.db: {error}"))?;
    let listed =
        |dir: &Path| file_names(dir).map_err(|error| format!("{}: {error}", dir.display()));
    let strays: Vec<String> = listed(&data.projector_dir("cars"))?
        .into_iter()
        .filter(|name| {
            let (version, suffix) = name.split_once('.').unwrap_or((name, ""));
            !(known.iter().any(|known| known == version)
                && ["db", "db-wal", "db-shm", "wasm"].contains(&suffix))
        })
        .collect();
    if !strays.is_empty() {
        return Err(format!(
            "stray files in projections/cars/ (kept versions {known:?}): {strays:?}"
        ));
    }
    let top = listed(&data.projections())?;
    if top != ["cars", "cars.db"] {
        return Err(format!(
            "projections/ holds {top:?}, not just cars/ and cars.db"
        ));
    }
    Ok(())
}

fn active_versions(data: &DataDir) -> rusqlite::Result<Vec<String>> {
    let conn = read_only(&data.control_db())?;
    let mut statement = conn.prepare(
        "SELECT version FROM versions WHERE projector = 'cars' AND role = 'active' ORDER BY version",
    )?;
    let rows = statement.query_map([], |row| row.get(0))?;
    rows.collect()
}

fn count_active(data: &DataDir) -> rusqlite::Result<u64> {
    read_only(&data.control_db())?.query_row(
        "SELECT count(*) FROM versions WHERE projector = 'cars' AND role = 'active'",
        [],
        |row| count(row, 0),
    )
}

/// Versions whose files may stay on disk: the active, shadow and previous ones.
fn kept_versions(data: &DataDir) -> rusqlite::Result<Vec<String>> {
    let conn = read_only(&data.control_db())?;
    let mut statement = conn.prepare(
        "SELECT version FROM versions
          WHERE projector = 'cars' AND role IN ('active', 'shadow', 'previous')",
    )?;
    let rows = statement.query_map([], |row| row.get(0))?;
    rows.collect()
}

/// `(role, state)` of a version in `control.db`.
fn version_row(data: &DataDir, version: &str) -> rusqlite::Result<Option<(String, String)>> {
    use rusqlite::OptionalExtension as _;
    read_only(&data.control_db())?
        .query_row(
            "SELECT role, state FROM versions WHERE projector = 'cars' AND version = ?1",
            [version],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
}

fn dump(db: &Path, sql: &str) -> rusqlite::Result<Vec<Vec<Value>>> {
    let conn = read_only(db)?;
    let mut statement = conn.prepare(sql)?;
    let columns = statement.column_count();
    let rows = statement.query_map([], |row| {
        (0..columns).map(|column| row.get(column)).collect()
    })?;
    rows.collect()
}

fn same_rows(actual: &Path, expected: &Path, sql: &str) -> std::result::Result<(), String> {
    let read =
        |db: &Path| dump(db, sql).map_err(|error| format!("{}: `{sql}`: {error}", db.display()));
    let (actual, expected) = (read(actual)?, read(expected)?);
    if actual == expected {
        return Ok(());
    }
    let first = actual.iter().zip(&expected).position(|(a, e)| a != e);
    Err(format!(
        "`{sql}`: {} rows, the clean replay {}; first difference at row {first:?}: {:?} vs {:?}",
        actual.len(),
        expected.len(),
        first.and_then(|row| actual.get(row)),
        first.and_then(|row| expected.get(row)),
    ))
}

/// `kill -9` sweep iterations: [`ITERATIONS_ENV`], else [`DEFAULT_ITERATIONS`].
fn iterations() -> usize {
    std::env::var(ITERATIONS_ENV)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

/// A moment between `earliest` and `latest`.
fn moment_between(rng: &mut ChaCha8Rng, (earliest, latest): (Duration, Duration)) -> Duration {
    let micros = |duration: Duration| u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.random_range(micros(earliest)..=micros(latest).max(micros(earliest))))
}

#[test]
fn kill_9_at_any_moment_of_a_deploy_leaves_one_consistent_active_version() -> Result {
    let seed = seed();
    println!("kill -9 sweep: seed {seed}; repeat with {SEED_ENV}={seed}");
    let template = Template::build(seed, CRASH_EVENTS)?;

    // One deploy without a crash: it must pass the same checks, and it times the phases
    // (the watcher's debounce, loading, the replay, the swap) that the kills aim at.
    let data = template.copy("calibration")?;
    let mut host = template.run(&data, &template.config)?;
    host.wait_serving(LIVENESS);
    let dropped = Instant::now();
    template.drop_v2(&data)?;
    host.wait_until(LIVENESS, "v2's shadow to start", || {
        version_row(&DataDir::new(&data), &template.v2).is_ok_and(|row| row.is_some())
    });
    let shadow_at = dropped.elapsed();
    host.wait_until(LIVENESS, "v2 to be active and caught up", || {
        template.caught_up(&data, &template.v2)
    });
    let active_at = dropped.elapsed();
    assert!(host.terminate(TERM_TIMEOUT).success());
    template
        .check(&data, &template.v2)
        .map_err(|problem| format!("a deploy without a crash: {problem}"))?;
    std::fs::remove_dir_all(&data)?;
    println!(
        "without a crash, v2's shadow started {} ms and v2 was active {} ms after the drop",
        shadow_at.as_millis(),
        active_at.as_millis()
    );

    // Even iterations kill anywhere from shortly before the shadow starts to shortly
    // after the swap; odd ones aim at the end of the replay and the swap. Every third
    // keeps the previous version warm.
    let whole = (
        shadow_at.mul_f64(0.8),
        active_at + (active_at - shadow_at) / 3 + Duration::from_millis(50),
    );
    let swap = (
        active_at.saturating_sub(Duration::from_millis(60)),
        active_at + Duration::from_millis(30),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for iteration in 0..iterations() {
        let delay = moment_between(&mut rng, if iteration % 2 == 0 { whole } else { swap });
        let (config, variant) = if iteration % 3 == 2 {
            (&template.keep_previous, "keep_previous, ")
        } else {
            (&template.config, "")
        };
        let data = template.copy(&format!("run-{iteration}"))?;
        let mut host = template.run(&data, config)?;
        host.wait_serving(LIVENESS);
        template.drop_v2(&data)?;
        std::thread::sleep(delay);
        host.kill_9()?;
        let moment = template.moment(&data, &template.v2);
        println!(
            "iteration {iteration}: {variant}kill -9 {} ms after the drop: {moment}",
            delay.as_millis()
        );

        let context = format!(
            "seed {seed}, iteration {iteration}, {variant}killed {delay:?} after the drop ({moment})"
        );
        let mut host = template.run(&data, config)?;
        host.wait_serving(LIVENESS);
        host.wait_until(
            LIVENESS,
            &format!("v2 to be active and caught up after the restart; {context}"),
            || template.caught_up(&data, &template.v2),
        );
        let status = host.terminate(TERM_TIMEOUT);
        assert!(
            status.success(),
            "{context}: refract run exited with {status}"
        );
        template
            .check(&data, &template.v2)
            .map_err(|problem| format!("{context}: {problem}"))?;
        std::fs::remove_dir_all(&data)?;
    }
    Ok(())
}

#[test]
fn kill_9_during_a_first_deploy_leaves_it_to_finish_after_the_restart() -> Result {
    let seed = seed();
    println!("first-deploy kill -9 sweep: seed {seed}; repeat with {SEED_ENV}={seed}");
    let template = Template::build(seed, CRASH_EVENTS)?;
    println!(
        "without a crash, v1 was active {} ms after refract run started",
        template.first_deploy.as_millis()
    );
    let window = (Duration::ZERO, template.first_deploy.mul_f64(1.2));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for iteration in 0..iterations().div_ceil(2) {
        let delay = moment_between(&mut rng, window);
        let data = template.undeployed(&format!("first-{iteration}"))?;
        let host = template.run(&data, &template.config)?;
        std::thread::sleep(delay);
        host.kill_9()?;
        let moment = template.moment(&data, &template.v1);
        println!(
            "iteration {iteration}: kill -9 {} ms after the start: {moment}",
            delay.as_millis()
        );

        let context = format!(
            "seed {seed}, iteration {iteration}, killed {delay:?} after the start ({moment})"
        );
        let mut host = template.run(&data, &template.config)?;
        host.wait_serving(LIVENESS);
        host.wait_until(
            LIVENESS,
            &format!("v1 to be active and caught up after the restart; {context}"),
            || template.caught_up(&data, &template.v1),
        );
        let status = host.terminate(TERM_TIMEOUT);
        assert!(
            status.success(),
            "{context}: refract run exited with {status}"
        );
        template
            .check(&data, &template.v1)
            .map_err(|problem| format!("{context}: {problem}"))?;
        std::fs::remove_dir_all(&data)?;
    }
    Ok(())
}

#[test]
fn a_shadow_killed_mid_replay_resumes_from_its_own_checkpoint() -> Result {
    let seed = seed();
    println!("seed {seed}; repeat with {SEED_ENV}={seed}");
    let template = Template::build(seed, CRASH_EVENTS)?;
    // A replay held to about two seconds, in small batches, so the kill lands inside it.
    let slow = template.dir.path().join("slow.toml");
    std::fs::write(
        &slow,
        format!(
            "[log]\ndurability = \"normal\"\n\n[projectors.cars]\nbatch_size = 200\nreplay_rate_limit = {}\n",
            CRASH_EVENTS / 2
        ),
    )?;
    let data = template.copy("run")?;
    let v2_db = DataDir::new(&data).version_db("cars", &template.v2);

    let mut host = template.run(&data, &slow)?;
    host.wait_serving(LIVENESS);
    template.drop_v2(&data)?;
    host.wait_until(
        LIVENESS,
        "v2's shadow to be part-way through its replay",
        || {
            checkpoint_at(&v2_db)
                .is_ok_and(|checkpoint| checkpoint > 0 && checkpoint < template.head / 2)
        },
    );
    host.kill_9()?;
    // The process died, the machine did not: everything committed is still there.
    let at_kill = checkpoint_at(&v2_db)?;
    assert!(
        at_kill > 0 && at_kill < template.head,
        "killed mid-replay: checkpoint {at_kill} of {}",
        template.head
    );

    let mut host = template.run(&data, &slow)?;
    let started = host.wait_for_line_where(LIVENESS, "v2's worker starting", |line| {
        line.contains("projector started") && line.contains(&format!("version={}", template.v2))
    });
    let resumed: u64 = started
        .split("checkpoint=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| format!("no checkpoint in {started:?}"))?;
    println!(
        "killed with v2's shadow at offset {at_kill} of {}; it restarted from {resumed}",
        template.head
    );
    assert!(
        resumed >= at_kill,
        "the shadow restarted from offset {resumed}, not from its own checkpoint {at_kill}: {started}"
    );
    host.wait_serving(LIVENESS);
    host.wait_until(LIVENESS, "v2 to be active and caught up", || {
        template.caught_up(&data, &template.v2)
    });
    assert!(host.terminate(TERM_TIMEOUT).success());
    template.check(&data, &template.v2)?;
    Ok(())
}
