//! The live engine (`refract run`): projectors keep up with concurrent appenders,
//! checkpoints are exactly-once across `kill -9`, poison events follow the configured
//! policy, a hostile projector does not hold up the others, and a bad configuration
//! file is refused with a clear message.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::Engine;
use refract::log::{EventLog, LogOptions, NewEvent, ReadQuery};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// account → (owner, balance, tx_count, last_offset), as `balances` builds it.
type Balances = BTreeMap<String, (Option<String>, i64, i64, u64)>;

/// car → (color, the buyer's current name), as `cars` v2 builds it.
type Cars = BTreeMap<String, (String, Option<String>)>;

/// A host running in this process on a temporary data directory.
struct Host {
    data: DataDir,
    log: EventLog,
    engine: Engine,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// Starts an engine with `plugins` (file name in the plugins folder, guest crate)
/// and the given `refract.toml` text.
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
        data,
        log,
        engine,
        _runtime: runtime,
        _dir: dir,
    })
}

/// The active version of `projector` is live at the log head.
fn caught_up(host: &Host, projector: &str) -> bool {
    let Ok(head) = host.log.head() else {
        return false;
    };
    host.engine.projector(projector).is_some_and(|view| {
        view.versions.iter().any(|version| {
            Some(&version.version) == view.active_version.as_ref()
                && version
                    .status
                    .as_ref()
                    .is_some_and(|status| status.checkpoint == head)
        })
    })
}

fn open_read_only(path: &Path) -> Result<Connection> {
    Ok(Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

/// Every row of a query, as JSON values, for comparing read models.
fn rows(conn: &Connection, sql: &str) -> Result<Vec<Vec<Value>>> {
    let mut statement = conn.prepare(sql)?;
    let columns = statement.column_count();
    let rows = statement.query_map([], |row| {
        (0..columns)
            .map(|index| {
                Ok(match row.get_ref(index)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(i) => json!(i),
                    rusqlite::types::ValueRef::Real(f) => json!(f),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(b) => json!(b),
                })
            })
            .collect()
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// `balances` computed straight from the log, independently of any projector:
/// account → (owner, balance, tx_count, last_offset).
fn expected_balances(log: &EventLog) -> Result<Balances> {
    let mut accounts = BTreeMap::new();
    for event in log.read(&ReadQuery::default())? {
        let event = event?;
        let data: Value = serde_json::from_str(&event.data)?;
        let Some(account) = data["account"].as_str() else {
            continue;
        };
        let entry = accounts
            .entry(account.to_owned())
            .or_insert((None, 0_i64, 0_i64, 0_u64));
        match event.event_type.as_str() {
            "account.opened" => entry.0 = data["owner"].as_str().map(str::to_owned),
            "money.deposited" => {
                entry.1 += data["amount"].as_i64().ok_or("amount")?;
                entry.2 += 1;
            }
            "money.withdrawn" => {
                entry.1 -= data["amount"].as_i64().ok_or("amount")?;
                entry.2 += 1;
            }
            _ => continue,
        }
        entry.3 = event.offset;
    }
    Ok(accounts)
}

fn actual_balances(db: &Path) -> Result<Balances> {
    let conn = open_read_only(db)?;
    let mut statement =
        conn.prepare("SELECT account, owner, balance, tx_count, last_offset FROM balances")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            (
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get::<_, i64>(4)? as u64,
            ),
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A seeded stream of car events and the final state v2 must build from them:
/// car → (color, buyer's current name).
fn car_events(seed: u64, cars: usize) -> (Vec<NewEvent>, Cars) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let colors = ["red", "blue", "green", "black", "white"];
    let mut events = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut colors_now: BTreeMap<String, String> = BTreeMap::new();
    for index in 0..cars {
        let car = format!("car-{seed}-{index}");
        let customer = format!("cust-{seed}-{}", index % 7);
        if !names.contains_key(&customer) {
            names.insert(customer.clone(), format!("name-{index}"));
            events.push(NewEvent::new(
                &customer,
                "customer.created",
                json!({ "name": format!("name-{index}") }).to_string(),
            ));
        }
        let color = colors[rng.random_range(0..colors.len())];
        events.push(NewEvent::new(
            &car,
            "car.created",
            json!({ "by": "factory", "color": color }).to_string(),
        ));
        colors_now.insert(car.clone(), color.to_owned());
        if rng.random_bool(0.5) {
            let color = colors[rng.random_range(0..colors.len())];
            events.push(NewEvent::new(
                &car,
                "car.repainted",
                json!({ "color": color }).to_string(),
            ));
            colors_now.insert(car.clone(), color.to_owned());
        }
        if rng.random_bool(0.6) {
            events.push(NewEvent::new(
                &car,
                "car.sold",
                json!({ "to": customer }).to_string(),
            ));
            owners.insert(car.clone(), customer.clone());
        }
        if rng.random_bool(0.1) {
            let renamed = format!("renamed-{index}");
            events.push(NewEvent::new(
                &customer,
                "customer.renamed",
                json!({ "name": renamed }).to_string(),
            ));
            names.insert(customer, renamed);
        }
    }
    let expected = colors_now
        .into_iter()
        .map(|(car, color)| {
            let buyer = owners.get(&car).map(|customer| names[customer].clone());
            (car, (color, buyer))
        })
        .collect();
    (events, expected)
}

#[test]
fn three_projectors_keep_up_with_four_appenders() -> Result {
    let host = start(
        &[
            ("balances.wasm", "balances"),
            ("cars.wasm", "cars-v2"),
            ("orders.wasm", "order-summary"),
        ],
        "",
    )?;
    let (cars, expected_cars) = car_events(3, 300);
    let orders = refract::workload::orders(4, 400);
    let appenders = [
        // Batches of many events, one stream per account.
        std::thread::spawn({
            let log = host.log.clone();
            move || -> std::result::Result<(), String> {
                let events: Vec<NewEvent> = refract::workload::balances(1, 3_000).collect();
                for chunk in events.chunks(100) {
                    log.append(chunk.to_vec()).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }),
        // One event per call, racing the batches on the same accounts.
        std::thread::spawn({
            let log = host.log.clone();
            move || -> std::result::Result<(), String> {
                for index in 0..300 {
                    let account = format!("acc-{:04}", index % 50);
                    let data = json!({ "account": account, "amount": index + 1 }).to_string();
                    log.append(vec![NewEvent::new(
                        format!("account-{account}"),
                        "money.deposited",
                        data,
                    )])
                    .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }),
        std::thread::spawn({
            let log = host.log.clone();
            move || -> std::result::Result<(), String> {
                for chunk in cars.chunks(25) {
                    log.append(chunk.to_vec()).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }),
        std::thread::spawn({
            let log = host.log.clone();
            move || -> std::result::Result<(), String> {
                for chunk in orders.chunks(10) {
                    log.append(chunk.to_vec()).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }),
    ];
    for appender in appenders {
        appender.join().map_err(|_| "appender panicked")??;
    }
    for projector in ["balances", "cars", "order-summary"] {
        support::host::wait_until(
            Duration::from_secs(60),
            &format!("{projector} to reach the log head"),
            || caught_up(&host, projector),
        );
    }

    let balances = actual_balances(&host.data.stable_db("balances"))?;
    assert_eq!(balances, expected_balances(&host.log)?);

    let conn = open_read_only(&host.data.stable_db("cars"))?;
    let cars: BTreeMap<String, (String, Option<String>)> = conn
        .prepare("SELECT car_id, color, customer_name FROM cars")?
        .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(cars, expected_cars);

    // Orders: placed orders change status once; the totals are per customer.
    let mut expected_orders: BTreeMap<String, (String, i64, String)> = BTreeMap::new();
    for event in host.log.read(&ReadQuery {
        types: vec![
            "order.placed".into(),
            "order.shipped".into(),
            "order.cancelled".into(),
        ],
        ..ReadQuery::default()
    })? {
        let event = event?;
        let data: Value = serde_json::from_str(&event.data)?;
        match event.event_type.as_str() {
            "order.placed" => {
                let customer = data["customer"].as_str().ok_or("customer")?.to_owned();
                let total = data["total"].as_i64().ok_or("total")?;
                expected_orders.insert(event.stream.clone(), (customer, total, "placed".into()));
            }
            "order.shipped" => {
                expected_orders
                    .get_mut(&event.stream)
                    .ok_or("unknown order")?
                    .2 = "shipped".into();
            }
            _ => {
                expected_orders
                    .get_mut(&event.stream)
                    .ok_or("unknown order")?
                    .2 = "cancelled".into();
            }
        }
    }
    let conn = open_read_only(&host.data.stable_db("order-summary"))?;
    let orders: BTreeMap<String, (String, i64, String)> = conn
        .prepare("SELECT order_id, customer, total, status FROM orders")?
        .query_map([], |row| {
            Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(orders, expected_orders);
    let shipped: i64 = conn.query_row(
        "SELECT sum(total_shipped) FROM customer_totals",
        [],
        |row| row.get(0),
    )?;
    let expected_shipped: i64 = expected_orders
        .values()
        .filter(|order| order.2 == "shipped")
        .map(|order| order.1)
        .sum();
    assert_eq!(shipped, expected_shipped);
    host.engine.shutdown();
    Ok(())
}

/// The `refract` binary.
fn refract(data: &DataDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refract"));
    command
        .arg("--data-dir")
        .arg(data.root())
        .env_remove("RUST_LOG")
        .env_remove("REFRACT_DATA")
        .env_remove("REFRACT_CONFIG");
    command
}

fn spawn_host(data: &DataDir) -> Result<Child> {
    Ok(refract(data)
        .args(["run", "--bind", "127.0.0.1:0", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Waits for the host's startup banner, so it has its signal handlers installed.
fn wait_for_banner(host: &mut Child) -> Result {
    use std::io::BufRead as _;
    let stdout = host.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("refract is running") => {
            // Keep draining, so the host never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            Ok(())
        }
        other => Err(format!("unexpected first line from refract run: {other:?}").into()),
    }
}

/// The read model's checkpoint, or 0 while it does not exist yet.
fn checkpoint_of(db: &Path) -> u64 {
    open_read_only(db)
        .and_then(|conn| {
            Ok(conn.query_row(
                "SELECT log_offset FROM _refract_checkpoint WHERE id = 1",
                [],
                |row| row.get::<_, i64>(0),
            )?)
        })
        .map_or(0, |offset| offset as u64)
}

#[test]
fn kill_9_during_projection_then_restart_equals_a_clean_run() -> Result {
    let seed: u64 = std::env::var("REFRACT_KILL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id())
        });
    println!("kill -9 schedule seed: {seed} (set REFRACT_KILL_SEED to replay it)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    std::fs::create_dir_all(data.plugins())?;
    let component = support::guests::guest("balances");
    std::fs::copy(&component, data.plugins().join("balances.wasm"))?;
    let log = EventLog::open(&data.events_db(), LogOptions::default())?;
    let mut workload = refract::workload::balances(seed, 60_000);
    let first: Vec<NewEvent> = workload.by_ref().take(40_000).collect();
    for chunk in first.chunks(1000) {
        log.append(chunk.to_vec())?;
    }

    let mut kills_mid_replay = 0;
    for iteration in 0..10 {
        let mut host = spawn_host(&data)?;
        // Appends keep arriving from another process while the host projects.
        let more: Vec<NewEvent> = workload.by_ref().take(2_000).collect();
        for chunk in more.chunks(250) {
            log.append(chunk.to_vec())?;
        }
        let wait = Duration::from_millis(rng.random_range(20..400));
        std::thread::sleep(wait);
        host.kill()?; // SIGKILL
        host.wait()?;
        let checkpoint = checkpoint_of(&data.stable_db("balances"))
            .max(checkpoint_of(&find_version_db(&data, "balances")?));
        if checkpoint < log.head()? {
            kills_mid_replay += 1;
        }
        println!(
            "iteration {iteration}: killed after {wait:?} at checkpoint {checkpoint} of {}",
            log.head()?
        );
    }

    let mut host = spawn_host(&data)?;
    wait_for_banner(&mut host)?;
    let head = log.head()?;
    support::host::wait_until(
        Duration::from_secs(60),
        "the restarted host to catch up",
        || checkpoint_of(&data.stable_db("balances")) == head,
    );
    // SIGTERM: the host finishes its batch, records checkpoints and exits 0.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(host.id().to_string())
        .status()?;
    assert!(status.success());
    let exit = wait_with_timeout(&mut host, Duration::from_secs(10))?;
    assert!(
        exit.success(),
        "refract run exited with {exit} after SIGTERM"
    );

    let clean = dir.path().join("clean.db");
    let output = refract(&data)
        .args(["project", "--plugin"])
        .arg(&component)
        .arg("--out")
        .arg(&clean)
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sql =
        "SELECT account, owner, balance, tx_count, last_offset FROM balances ORDER BY account";
    let recovered = rows(&open_read_only(&data.stable_db("balances"))?, sql)?;
    assert_eq!(recovered.len(), 1_000);
    assert_eq!(recovered, rows(&open_read_only(&clean)?, sql)?);
    assert_eq!(
        actual_balances(&data.stable_db("balances"))?,
        expected_balances(&log)?
    );
    assert!(
        kills_mid_replay > 0,
        "no kill landed before the host caught up; the test proved nothing"
    );
    Ok(())
}

/// The read model of the projector's only version, before it has a stable path.
fn find_version_db(data: &DataDir, projector: &str) -> Result<PathBuf> {
    let dir = data.projector_dir(projector);
    if !dir.exists() {
        return Ok(dir.join("missing.db"));
    }
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "db") {
            return Ok(path);
        }
    }
    Ok(dir.join("missing.db"))
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            return Err(format!("the process did not exit within {timeout:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ten good events, a deposit whose amount is not a number, then ten more.
fn append_with_poison(log: &EventLog) -> Result<u64> {
    let good = |index: i64| {
        NewEvent::new(
            "account-a",
            "money.deposited",
            json!({ "account": "a", "amount": index }).to_string(),
        )
    };
    log.append((1..=10).map(good).collect())?;
    let poison = log.append(vec![NewEvent::new(
        "account-a",
        "money.deposited",
        json!({ "account": "a", "amount": "lots" }).to_string(),
    )])?[0];
    log.append((11..=20).map(good).collect())?;
    Ok(poison)
}

#[test]
fn a_poison_event_stalls_the_projector_under_stop() -> Result {
    let host = start(
        &[("balances.wasm", "balances")],
        "[engine]\nretry_initial_ms = 20\nretry_max_ms = 200\n",
    )?;
    let poison = append_with_poison(&host.log)?;
    assert_eq!(poison, 11);
    support::host::wait_until(
        Duration::from_secs(30),
        "balances to stall at the poison event",
        || {
            host.engine
                .status()
                .iter()
                .any(|status| status.state.to_string().starts_with("stalled at 11: "))
        },
    );
    let status = host.engine.status().remove(0);
    assert_eq!(
        status.checkpoint, 10,
        "the checkpoint must stop before the poison event"
    );
    assert!(
        status
            .clone()
            .last_error
            .is_some_and(|error| error.contains("offset 11")),
        "{status:?}"
    );
    // It keeps retrying and stays put; nothing after the poison event is applied.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.engine.status()[0].checkpoint, 10);
    let db = find_version_db(&host.data, "balances")?;
    let balance: i64 =
        open_read_only(&db)?.query_row("SELECT balance FROM balances", [], |row| row.get(0))?;
    assert_eq!(balance, (1..=10).sum::<i64>());
    // Events appended while it stalls show as lag: the head it reports keeps up with
    // the log, so a stalled version never looks caught up.
    let head = host.log.append(
        (21..=25)
            .map(|amount| {
                NewEvent::new(
                    "account-b",
                    "money.deposited",
                    json!({ "account": "b", "amount": amount }).to_string(),
                )
            })
            .collect(),
    )?[4];
    support::host::wait_until(
        Duration::from_secs(30),
        "the stalled version to report the new head",
        || host.engine.status()[0].head == head,
    );
    let status = host.engine.status().remove(0);
    assert_eq!(
        (status.checkpoint, status.lag()),
        (10, head - 10),
        "{status:?}"
    );
    // The stall is recorded for `refract status` without a server.
    let control = open_read_only(&host.data.control_db())?;
    let state: String = control.query_row("SELECT state FROM versions", [], |row| row.get(0))?;
    assert!(state.starts_with("stalled at 11: "), "{state}");
    Ok(())
}

#[test]
fn a_poison_event_is_dead_lettered_under_skip() -> Result {
    let host = start(
        &[("balances.wasm", "balances")],
        "[projectors.balances]\non_poison = \"skip\"\n",
    )?;
    append_with_poison(&host.log)?;
    support::host::wait_until(
        Duration::from_secs(30),
        "balances to skip past the poison event",
        || caught_up(&host, "balances"),
    );
    let letters = host.engine.dead_letters("balances", 10)?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].offset, 11);
    assert!(letters[0].error.contains("lots"), "{}", letters[0].error);
    let balance: i64 = open_read_only(&host.data.stable_db("balances"))?.query_row(
        "SELECT balance FROM balances",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(
        balance,
        (1..=20).sum::<i64>(),
        "every good event applied exactly once"
    );
    assert_eq!(host.engine.status()[0].dead_letters, 1);
    Ok(())
}

#[test]
fn a_looping_projector_does_not_hold_up_the_others() -> Result {
    let host = start(
        &[("balances.wasm", "balances"), ("loop.wasm", "loop-forever")],
        "[limits]\nbatch_deadline_ms = 300\n[engine]\nretry_initial_ms = 50\nretry_max_ms = 100\n",
    )?;
    let events: Vec<NewEvent> = refract::workload::balances(9, 2_000).collect();
    for chunk in events.chunks(200) {
        host.log.append(chunk.to_vec())?;
        std::thread::sleep(Duration::from_millis(20));
    }
    // Generous: catching up takes milliseconds; the looping projector burns a whole
    // deadline on every retry, on the same two cores.
    support::host::wait_until(
        Duration::from_secs(20),
        "balances to catch up beside a looping projector",
        || caught_up(&host, "balances"),
    );
    support::host::wait_until(
        Duration::from_secs(20),
        "the looping projector to be reported stalled",
        || {
            host.engine
                .projector("loop-forever")
                .and_then(|view| view.versions.into_iter().find_map(|version| version.status))
                .is_some_and(|status| status.state.to_string().starts_with("stalled at 1: "))
        },
    );
    let looping = host
        .engine
        .projector("loop-forever")
        .ok_or("loop-forever is unknown")?;
    let status = looping.versions[0].status.clone().ok_or("no status")?;
    assert_eq!(status.checkpoint, 0);
    assert!(
        status
            .last_error
            .is_some_and(|error| error.contains("deadline"))
    );
    assert_eq!(
        actual_balances(&host.data.stable_db("balances"))?,
        expected_balances(&host.log)?
    );
    Ok(())
}

#[test]
fn a_bad_configuration_file_is_refused_with_the_key_and_the_fix() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    let config = dir.path().join("refract.toml");
    let cases = [
        (
            "[projectors.balances]\non_posion = \"skip\"\n",
            &["on_posion", "on_poison", "refract.toml"][..],
        ),
        (
            "[projectors.balances]\non_poison = \"maybe\"\n",
            &["maybe", "stop", "skip"][..],
        ),
        (
            "[engine]\nbatch_size = 0\n",
            &["engine.batch_size", "at least 1"][..],
        ),
        ("[engine\n", &["refract.toml", "line 1"][..]),
    ];
    for (text, expected) in cases {
        std::fs::write(&config, text)?;
        let output = refract(&data)
            .arg("--config")
            .arg(&config)
            .arg("status")
            .output()?;
        assert_eq!(output.status.code(), Some(1), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for needle in expected {
            assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
        }
        assert!(
            !data.root().exists(),
            "a refused configuration must not create the data directory"
        );
    }
    Ok(())
}

/// The active version's checkpoint, as the engine reports it.
fn active_checkpoint(host: &Host, projector: &str) -> Option<u64> {
    let view = host.engine.projector(projector)?;
    view.versions
        .iter()
        .find(|v| Some(&v.version) == view.active_version.as_ref())
        .and_then(|v| v.status.as_ref())
        .map(|status| status.checkpoint)
}

/// `Engine::hold` (a cluster's coordinated swap): a held active version projects
/// nothing past its hold while the log grows, reports where it stopped, and goes on
/// once the hold is lifted.
#[test]
fn a_held_active_version_projects_nothing_past_its_hold() -> Result {
    const LIVENESS: Duration = Duration::from_secs(60);
    let host = start(&[("balances.wasm", "balances")], "")?;
    let deposit = |amount: i64| {
        NewEvent::new(
            "account-a",
            "money.deposited",
            json!({ "account": "a", "amount": amount }).to_string(),
        )
    };
    host.log.append((1..=3).map(deposit).collect())?;
    support::host::wait_until(LIVENESS, "balances at offset 3", || {
        caught_up(&host, "balances")
    });
    assert_eq!(host.engine.hold("balances", Some(5))?, 3);
    host.log.append((4..=9).map(deposit).collect())?;
    support::host::wait_until(LIVENESS, "balances at its hold, 5", || {
        active_checkpoint(&host, "balances") == Some(5)
    });
    // Held where it is: a hold below the checkpoint keeps it there.
    assert_eq!(host.engine.hold("balances", Some(2))?, 5);
    // The worker has seen the head (9) and has had time to run past a hold it ignored.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(active_checkpoint(&host, "balances"), Some(5));
    let db = find_version_db(&host.data, "balances")?;
    assert_eq!(checkpoint_of(&db), 5, "the read model itself stopped at 5");
    host.engine.hold("balances", None)?;
    support::host::wait_until(LIVENESS, "balances at the head, 9", || {
        caught_up(&host, "balances")
    });
    Ok(())
}
