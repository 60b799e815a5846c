//! Storage faults and operator mistakes, each made for real: a deleted or emptied event
//! log, a read model overwritten with garbage or deleted from under a running host, a
//! disk that fills up (a tmpfs of the test's own, see `support::tiny_disk`), a host
//! killed while its disk was full, damaged databases, a plugins path that is a file, and
//! a permission that keeps failing.
//!
//! Each test states the promise it holds the host to. Guests are built once for this
//! test binary.

mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use refract::api::{self, ApiState, Token};
use refract::config::{Config, ProjectorSection};
use refract::data_dir::DataDir;
use refract::engine::{Engine, EngineError, EngineOptions, LogCheck, State};
use refract::log::{EventLog, NewEvent};
use serde_json::{Value, json};
use support::guests::guest;
use support::host::{RunningHost, start_engine, wait_until, wait_until_showing};
use support::tiny_disk::TinyDisk;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Liveness bound for everything awaited here; generous, CI machines are slow.
const LIVENESS: Duration = Duration::from_secs(120);

const BINARY: &str = env!("CARGO_BIN_EXE_refract");

/// A data directory under `root` with these guests in its plugins folder.
fn data_dir_with(root: &Path, guests: &[&str]) -> Result<DataDir> {
    let data = DataDir::new(root.join("data"));
    std::fs::create_dir_all(data.plugins())?;
    for name in guests {
        std::fs::copy(guest(name), data.plugins().join(format!("{name}.wasm")))?;
    }
    Ok(data)
}

/// `count` deposits of one cent, spread over `accounts` accounts.
fn deposits(count: usize, accounts: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|index| {
            let account = format!("acct-{}", index % accounts);
            NewEvent::new(
                account.clone(),
                "money.deposited",
                json!({"account": account, "amount": 1}).to_string(),
            )
        })
        .collect()
}

/// Waits until `name`'s active version has projected the whole log.
fn wait_caught_up(engine: &Engine, log: &EventLog, name: &str) -> Result {
    let head = log.head()?;
    wait_until_showing(
        LIVENESS,
        &format!("`{name}` to catch up with offset {head}"),
        || active_checkpoint(engine, name).is_some_and(|checkpoint| checkpoint >= head),
        || format!("{:#?}", engine.projector(name)),
    );
    Ok(())
}

fn active_checkpoint(engine: &Engine, name: &str) -> Option<u64> {
    let view = engine.projector(name)?;
    let active = view.active_version.as_ref()?;
    view.versions
        .iter()
        .find(|version| &version.version == active)?
        .status
        .as_ref()
        .map(|status| status.checkpoint)
}

/// Removes a SQLite database and its `-wal` and `-shm` files.
fn remove_database(path: &Path) -> Result {
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
    }
    Ok(())
}

/// What a finished `refract` command did.
struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `refract` to completion (bounded by [`LIVENESS`]).
fn refract(data: &DataDir, args: &[&str]) -> Result<Finished> {
    let mut child = Command::new(BINARY)
        .arg("--data-dir")
        .arg(data.root())
        // A port nobody serves: commands that look for a host find none.
        .args(["--url", "http://127.0.0.1:9"])
        .args(args)
        .env_remove("REFRACT_DATA")
        .env_remove("REFRACT_CONFIG")
        .env_remove("REFRACT_TOKEN")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read while it runs: a full pipe would block it forever.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|pipe| Box::new(pipe) as _));
    let stderr = drain(child.stderr.take().map(|pipe| Box::new(pipe) as _));
    let deadline = Instant::now() + LIVENESS;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("refract {args:?} did not finish within {LIVENESS:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().map_err(|_| "the stdout reader panicked")?;
    let stderr = stderr.join().map_err(|_| "the stderr reader panicked")?;
    Ok(Finished {
        success: status.success(),
        stdout,
        stderr,
    })
}

/// The real HTTP server, in this process, over a real log and engine.
struct ApiHost {
    url: String,
    token: Token,
    agent: ureq::Agent,
    log: EventLog,
    engine: Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: tokio::runtime::Runtime,
}

impl ApiHost {
    fn start(data: &DataDir, config: Config) -> Result<ApiHost> {
        let log = EventLog::open(&data.events_db(), config.log_options())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let options = EngineOptions {
            data_dir: data.clone(),
            plugins_dir: data.plugins(),
            config: config.clone(),
            log_check: LogCheck::Strict,
        };
        let engine = Arc::new(Engine::start(&options, &log, runtime.handle())?);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let token = Token::generate();
        let state = ApiState::new(
            log.clone(),
            Arc::clone(&engine),
            config.server,
            token.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Ok(ApiHost {
            url,
            token,
            agent: agent(),
            log,
            engine,
            stop: Some(stop),
            server: Some(server),
            runtime,
        })
    }

    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let request = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token.secret()));
        answer(request.call())
    }

    fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        post(&self.agent, &self.url, self.token.secret(), path, body)
    }
}

impl Drop for ApiHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await });
        }
        self.engine.shutdown();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let request = agent
        .post(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    answer(request.send(body.to_string()))
}

fn answer(
    result: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Value)> {
    let mut response = result?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// `/health`'s reasons, joined, if it is degraded.
fn degraded(health: &(u16, Value)) -> Option<String> {
    (health.0 == 503 && health.1["status"] == "degraded").then(|| {
        health.1["reasons"]
            .as_array()
            .map(|reasons| {
                reasons
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    })
}

/// The sum of `tx_count` over every balance: how many deposits the read model holds.
const DEPOSITS_SQL: &str = "SELECT coalesce(sum(tx_count), 0) AS n FROM balances";

fn deposits_seen(answer: &(u16, Value)) -> Option<u64> {
    (answer.0 == 200)
        .then(|| answer.1["rows"][0][0].as_u64())
        .flatten()
}

/// An append batch of `count` deposits whose data is padded to `pad` bytes each.
fn padded_batch(count: usize, pad: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|_| {
                json!({"type": "money.deposited",
                       "data": {"account": "padded", "amount": 1, "pad": "x".repeat(pad)}})
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------
// 1. A missing or emptied log

/// The host refuses to start on a log that is missing or empty while read models have
/// projected events, naming the file and the fix, and creates nothing. The check is a
/// function a cluster node may bypass (its mirror catches up); a single node is strict.
#[test]
fn a_missing_or_emptied_log_is_refused_with_the_fix() -> Result {
    let dir = tempfile::tempdir()?;
    let data = data_dir_with(dir.path(), &["balances"])?;
    {
        let host = start_engine(&data, Config::default())?;
        host.log.append(deposits(50, 5))?;
        wait_caught_up(&host.engine, &host.log, "balances")?;
    }

    remove_database(&data.events_db())?;
    let Finished {
        success, stderr, ..
    } = refract(&data, &["run", "--bind", "127.0.0.1:0"])?;
    assert!(!success, "refract run started without its log:\n{stderr}");
    for needle in [
        "events.db is missing",
        "projector `balances`",
        "up to offset 50",
        "Restore events.db",
        "--data-dir",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    assert!(!data.events_db().exists(), "a new, empty log was created");

    std::fs::File::create(data.events_db())?;
    let Finished {
        success, stderr, ..
    } = refract(&data, &["run", "--bind", "127.0.0.1:0"])?;
    assert!(!success, "refract run started on an emptied log:\n{stderr}");
    assert!(stderr.contains("events.db is empty"), "{stderr}");

    // The same check inside the engine, and the bypass a cluster node uses.
    let log = EventLog::open(&data.events_db(), Default::default())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut options = EngineOptions {
        data_dir: data.clone(),
        plugins_dir: data.plugins(),
        config: Config::default(),
        log_check: LogCheck::Strict,
    };
    match Engine::start(&options, &log, runtime.handle()) {
        Err(EngineError::LogBehindReadModels(error)) => assert_eq!(error.checkpoint, 50),
        Err(other) => return Err(format!("the wrong refusal: {other}").into()),
        Ok(_) => return Err("the engine started on an emptied log".into()),
    }
    options.log_check = LogCheck::MayTrail;
    let engine = Engine::start(&options, &log, runtime.handle())?;
    wait_until(
        LIVENESS,
        "the trailing read model to wait for its log",
        || {
            engine.status().iter().any(|status| {
                status.projector == "balances"
                    && status.state == State::CatchingUp
                    && status.checkpoint == 50
            })
        },
    );
    engine.shutdown();
    Ok(())
}

// ---------------------------------------------------------------------------------
// 2. Health and status tell the truth about an unreadable read model

/// A read model overwritten with garbage: `/health` is degraded naming the projector,
/// the file and the fix, and offline `refract status` says the same instead of
/// "live, checkpoint 0".
#[test]
fn an_unreadable_read_model_degrades_health_and_shows_in_offline_status() -> Result {
    let dir = tempfile::tempdir()?;
    let data = data_dir_with(dir.path(), &["balances"])?;
    let read_model = {
        let host = start_engine(&data, Config::default())?;
        host.log.append(deposits(20, 4))?;
        wait_caught_up(&host.engine, &host.log, "balances")?;
        host.engine
            .read_model("balances")
            .ok_or("no read model")?
            .path
    };
    remove_database(&read_model)?;
    std::fs::write(&read_model, b"not a database, just garbage ".repeat(200))?;

    let status = refract(&data, &["status", "--json"])?;
    assert!(status.success, "{}", status.stderr);
    let rows: Vec<Value> = status
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    let active = rows
        .iter()
        .find(|row| row["role"] == "active")
        .ok_or("no active row")?;
    assert_eq!(active["state"], "unreadable", "{active}");
    let problem = active["last_error"].as_str().unwrap_or_default();
    assert!(
        problem.contains(&read_model.display().to_string()),
        "{problem}"
    );
    assert!(problem.contains("restore it from a backup"), "{problem}");
    assert!(problem.contains("rebuilds it from the log"), "{problem}");

    let config = Config::default();
    let host = ApiHost::start(&data, config)?;
    let mut reasons = String::new();
    wait_until(
        LIVENESS,
        "/health to say why balances cannot project",
        || {
            reasons = host
                .get("/health")
                .ok()
                .and_then(|health| degraded(&health))
                .unwrap_or_default();
            reasons.contains("projector `balances`") && reasons.contains("retrying")
        },
    );
    assert!(
        reasons.contains(&read_model.display().to_string()),
        "{reasons}"
    );
    assert!(
        reasons.contains("delete it and refract rebuilds it"),
        "{reasons}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// 3. A full disk

/// Config for a host on a tiny disk: a low free-space threshold (the whole disk is
/// smaller than the default) and quick retries.
fn tiny_disk_config() -> Config {
    let mut config = Config::default();
    config.server.health_min_free_bytes = 1024 * 1024;
    config.engine.retry_initial_ms = 20;
    config.engine.retry_max_ms = 300;
    config
}

/// On a full disk an append is answered 507 `disk_full`, naming the data directory and
/// the fix; a projector that cannot commit makes `/health` degraded with why; queries
/// keep answering from the last good state; and once space is freed everything
/// resumes by itself.
#[test]
fn a_full_disk_answers_507_and_degrades_health_until_space_is_freed() -> Result {
    let disk = TinyDisk::mount(48 * 1024 * 1024);
    let data = data_dir_with(disk.path(), &["balances"])?;
    let config = tiny_disk_config();
    {
        let host = start_engine(&data, config.clone())?;
        host.log.append(deposits(100, 10))?;
        wait_caught_up(&host.engine, &host.log, "balances")?;
    }
    // Events the projector has not seen yet: projecting them needs space.
    EventLog::open(&data.events_db(), config.log_options())?.append(deposits(20_000, 2_000))?;
    disk.fill();
    // Room for the host to open its files, not for the read model to grow.
    disk.free_some(512 * 1024);

    let host = ApiHost::start(&data, config)?;
    let mut reasons = String::new();
    wait_until(
        LIVENESS,
        "/health to say the projector fails on a full disk",
        || {
            reasons = host
                .get("/health")
                .ok()
                .and_then(|health| degraded(&health))
                .unwrap_or_default();
            reasons.contains("projector `balances`") && reasons.contains("is full")
        },
    );
    assert!(reasons.contains("retrying"), "{reasons}");
    assert!(reasons.contains("free space"), "{reasons}");

    let (status, body) = host.post("/v1/streams/padded/events", &padded_batch(64, 32 * 1024))?;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&data.root().display().to_string()),
        "{message}"
    );
    assert!(message.contains("free space"), "{message}");

    // Readers keep the last good state.
    let answer = host.post(
        "/v1/projectors/balances/query",
        &json!({"sql": DEPOSITS_SQL}),
    )?;
    assert!(
        deposits_seen(&answer).is_some_and(|n| n >= 100),
        "{answer:?}"
    );

    disk.free();
    wait_caught_up(&host.engine, &host.log, "balances")?;
    wait_until(LIVENESS, "/health to be ok again", || {
        host.get("/health").is_ok_and(|health| health.0 == 200)
    });
    let (status, body) = host.post("/v1/streams/padded/events", &padded_batch(64, 32 * 1024))?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

/// A host killed while its disk was full starts anyway, read-only: health says why,
/// queries answer, appends get 507; once space is freed it leaves read-only mode by
/// itself.
#[test]
fn a_host_killed_on_a_full_disk_starts_read_only() -> Result {
    let disk = TinyDisk::mount(48 * 1024 * 1024);
    let data = data_dir_with(disk.path(), &["balances"])?;
    let work = tempfile::tempdir()?;
    let config = work.path().join("refract.toml");
    std::fs::write(&config, "[server]\nhealth_min_free_bytes = 1048576\n")?;
    let binary = Path::new(BINARY);
    let agent = agent();

    let mut first = RunningHost::start(binary, work.path(), data.root(), &config, &[])?;
    first.wait_serving(LIVENESS);
    let url = host_url(&first);
    let token = std::fs::read_to_string(Token::file(&data))?
        .trim()
        .to_owned();
    let batch = Value::Array(
        (0..20)
            .map(|i| json!({"type": "money.deposited", "data": {"account": format!("a{i}"), "amount": 1}}))
            .collect(),
    );
    let (status, body) = post(&agent, &url, &token, "/v1/streams/s/events", &batch)?;
    assert_eq!(status, 200, "{body}");
    let query = json!({"sql": DEPOSITS_SQL});
    first.wait_until(LIVENESS, "balances to project the 20 deposits", || {
        post(
            &agent,
            &url,
            &token,
            "/v1/projectors/balances/query",
            &query,
        )
        .is_ok_and(|answer| deposits_seen(&answer) == Some(20))
    });
    disk.fill();
    first.kill_9()?;

    let mut second = RunningHost::start(binary, work.path(), data.root(), &config, &[])?;
    second.wait_serving(LIVENESS);
    let url = host_url(&second);
    let health = answer(agent.get(format!("{url}/health")).call())?;
    let reasons = degraded(&health).ok_or_else(|| format!("not degraded: {health:?}"))?;
    assert!(reasons.contains("read-only"), "{reasons}");
    assert!(reasons.contains("control.db"), "{reasons}");
    assert!(reasons.contains("is full"), "{reasons}");
    let answer_now = post(
        &agent,
        &url,
        &token,
        "/v1/projectors/balances/query",
        &query,
    )?;
    assert_eq!(deposits_seen(&answer_now), Some(20), "{answer_now:?}");
    let (status, body) = post(&agent, &url, &token, "/v1/streams/s/events", &batch)?;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    second.wait_for_line(LIVENESS, "starting read-only");

    disk.free();
    second.wait_until(LIVENESS, "the host to leave read-only mode", || {
        answer(agent.get(format!("{url}/health")).call()).is_ok_and(|health| health.0 == 200)
    });
    let (status, body) = post(&agent, &url, &token, "/v1/streams/s/events", &batch)?;
    assert_eq!(status, 200, "{body}");
    second.wait_until(LIVENESS, "balances to project the new deposits", || {
        post(
            &agent,
            &url,
            &token,
            "/v1/projectors/balances/query",
            &query,
        )
        .is_ok_and(|answer| deposits_seen(&answer) == Some(40))
    });
    let status = second.terminate(LIVENESS);
    assert!(status.success(), "{status}");
    Ok(())
}

/// The API's URL, from the line `refract run` prints.
fn host_url(host: &RunningHost) -> String {
    host.lines()
        .iter()
        .find_map(|line| {
            line.split("http api:")
                .nth(1)
                .map(|url| url.trim().to_owned())
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// 4. A read model deleted from under the host

/// A deleted read model is rebuilt aside and moved into place when whole: a reader
/// querying all along gets either an error or the last good (complete) state, never an
/// empty or partial table; the same after a restart.
#[test]
fn a_deleted_read_model_is_rebuilt_aside_and_never_served_partially() -> Result {
    const EVENTS: usize = 8_000;
    let dir = tempfile::tempdir()?;
    let data = data_dir_with(dir.path(), &["balances"])?;
    let mut config = Config::default();
    // Slow enough that the rebuild takes a couple of seconds and the reader sees it.
    config.projectors.insert(
        "balances".into(),
        ProjectorSection {
            replay_rate_limit: 4000,
            ..ProjectorSection::default()
        },
    );

    let host = ApiHost::start(&data, config.clone())?;
    wait_until(LIVENESS, "balances to have an active version", || {
        host.engine.read_model("balances").is_some()
    });
    host.log.append(deposits(EVENTS, 100))?;
    wait_caught_up(&host.engine, &host.log, "balances")?;
    let read_model = host
        .engine
        .read_model("balances")
        .ok_or("no read model")?
        .path;

    let reader = Reader::start(&host.url, host.token.secret(), EVENTS as u64);
    std::fs::remove_file(&read_model)?;
    let mut reasons = String::new();
    wait_until(
        LIVENESS,
        "/health to say the read model is being rebuilt",
        || {
            reasons = host
                .get("/health")
                .ok()
                .and_then(|health| degraded(&health))
                .unwrap_or_default();
            reasons.contains("was deleted from under the host")
        },
    );
    assert!(reasons.contains("projector `balances`"), "{reasons}");
    wait_until(LIVENESS, "the rebuilt read model to be served", || {
        host.post(
            "/v1/projectors/balances/query",
            &json!({"sql": DEPOSITS_SQL}),
        )
        .is_ok_and(|answer| deposits_seen(&answer) == Some(EVENTS as u64))
    });
    reader.finish()?;
    assert!(read_model.exists());
    drop(host);

    // Deleted while the host is down: rebuilt aside at the next start too.
    remove_database(&read_model)?;
    let host = ApiHost::start(&data, config)?;
    let reader = Reader::start(&host.url, host.token.secret(), EVENTS as u64);
    wait_until(
        LIVENESS,
        "the rebuilt read model to be served after a restart",
        || {
            host.post(
                "/v1/projectors/balances/query",
                &json!({"sql": DEPOSITS_SQL}),
            )
            .is_ok_and(|answer| deposits_seen(&answer) == Some(EVENTS as u64))
        },
    );
    reader.finish()?;
    Ok(())
}

/// A thread querying the deposit count as fast as it can, keeping every answer that
/// was neither an error nor the whole count.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64, Vec<String>)>,
}

impl Reader {
    fn start(url: &str, token: &str, expected: u64) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, token, stopping) = (url.to_owned(), token.to_owned(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let agent = agent();
            let (mut whole, mut refused, mut partial) = (0, 0, Vec::new());
            let query = json!({"sql": DEPOSITS_SQL});
            while !stopping.load(Ordering::Relaxed) {
                match post(
                    &agent,
                    &url,
                    &token,
                    "/v1/projectors/balances/query",
                    &query,
                ) {
                    Ok(answer) if answer.0 == 200 => match deposits_seen(&answer) {
                        Some(n) if n == expected => whole += 1,
                        _ => partial.push(format!("{answer:?}")),
                    },
                    Ok(answer) if answer.1["error"]["code"] == "read_model_unavailable" => {
                        refused += 1;
                    }
                    other => partial.push(format!("unexpected answer {other:?}")),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (whole, refused, partial)
        });
        Reader { stop, thread }
    }

    /// Stops the reader; fails if it ever saw anything but the whole count or a
    /// refusal, or never saw a refusal at all (then it proved nothing).
    fn finish(self) -> Result {
        self.stop.store(true, Ordering::Relaxed);
        let (whole, refused, partial) = self.thread.join().map_err(|_| "the reader panicked")?;
        assert!(
            partial.is_empty(),
            "readers saw {} partial or unexpected answers (and {whole} whole ones), first: {}",
            partial.len(),
            partial[0]
        );
        assert!(
            refused > 0,
            "the reader never saw the rebuild ({whole} whole answers)"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// 5. Messages that name the thing, the place and the fix

/// Overwrites `pages` pages of a database from page 3 on, keeping its header: SQLite
/// opens it, then finds it damaged.
fn damage(path: &Path, pages: u64) -> Result {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::Start(2 * 4096))?;
    file.write_all(&vec![0xA5; (pages * 4096) as usize])?;
    Ok(file.sync_all()?)
}

/// A damaged `events.db` or `control.db`, and a plugins path that is a file: each
/// error names the file and says what to do, and says each cause once.
#[test]
fn damaged_files_and_a_misplaced_plugins_file_are_named_with_the_fix() -> Result {
    let dir = tempfile::tempdir()?;
    let data = data_dir_with(dir.path(), &["balances"])?;
    // A log written and closed by the CLI, so every page is in the file itself.
    let lines: String = (0..400)
        .map(|i| {
            format!(
                "{}\n",
                json!({"stream": format!("s{i}"), "type": "money.deposited",
                       "data": {"account": "a", "amount": 1, "pad": "y".repeat(300)}})
            )
        })
        .collect();
    let batch = dir.path().join("events.jsonl");
    std::fs::write(&batch, lines)?;
    let appended = refract(&data, &["append", "--file", &batch.display().to_string()])?;
    assert!(appended.success, "{}", appended.stderr);

    damage(&data.events_db(), 8)?;
    let events = refract(&data, &["events"])?;
    assert!(!events.success, "a damaged log was read whole");
    for needle in ["events.db", "is damaged", "restore it from a backup"] {
        assert!(
            events.stderr.contains(needle),
            "no {needle:?} in: {}",
            events.stderr
        );
    }
    assert_eq!(
        events.stderr.matches("malformed").count(),
        1,
        "the cause is said more than once: {}",
        events.stderr
    );
    remove_database(&data.events_db())?;

    std::fs::write(
        data.control_db(),
        b"this is not a control database ".repeat(100),
    )?;
    for args in [&["status"][..], &["run", "--bind", "127.0.0.1:0"][..]] {
        let refused = refract(&data, args)?;
        assert!(
            !refused.success,
            "refract {args:?} accepted a garbage control.db"
        );
        for needle in ["control.db", "restore it from a backup", "move it away"] {
            assert!(
                refused.stderr.contains(needle),
                "refract {args:?}: no {needle:?} in: {}",
                refused.stderr
            );
        }
        assert_eq!(
            refused.stderr.matches("file is not a database").count(),
            1,
            "the cause is said more than once: {}",
            refused.stderr
        );
    }
    std::fs::remove_file(data.control_db())?;

    let plugins_file = dir.path().join("plugins-is-a-file");
    std::fs::write(&plugins_file, b"")?;
    let plugins = plugins_file.display().to_string();
    let refused = refract(
        &data,
        &["run", "--bind", "127.0.0.1:0", "--plugins", &plugins],
    )?;
    assert!(!refused.success);
    for needle in [
        plugins.as_str(),
        "is a file, but it must be the plugins folder",
        "--plugins",
    ] {
        assert!(
            refused.stderr.contains(needle),
            "no {needle:?} in: {}",
            refused.stderr
        );
    }
    Ok(())
}

/// A permission that keeps failing (a read model the host's user may not open): the
/// failure is logged once, with the file and the fix, not once per retry; health says
/// why. Runs the host as `nobody`, since root is allowed everything.
#[test]
fn a_permission_that_keeps_failing_is_logged_once_with_the_fix() -> Result {
    let dir = tempfile::tempdir()?;
    let data = data_dir_with(dir.path(), &["balances"])?;
    let read_model = {
        let host = start_engine(&data, Config::default())?;
        host.log.append(deposits(20, 4))?;
        wait_caught_up(&host.engine, &host.log, "balances")?;
        host.engine
            .read_model("balances")
            .ok_or("no read model")?
            .path
    };
    let config = dir.path().join("refract.toml");
    std::fs::write(
        &config,
        "[engine]\nretry_initial_ms = 10\nretry_max_ms = 40\n",
    )?;
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(dir.path())
        .status()?;
    assert!(chown.success(), "cannot chown the data directory to nobody");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&read_model, std::fs::Permissions::from_mode(0o000))?;

    let as_nobody = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--",
    ];
    let mut host = match RunningHost::start_wrapped(
        &as_nobody,
        Path::new(BINARY),
        dir.path(),
        data.root(),
        &config,
        &[],
    ) {
        Ok(host) => host,
        Err(error) => panic!(
            "this test runs the host as `nobody` with `setpriv` (util-linux), as root: {error}"
        ),
    };
    let first = host.wait_for_line(LIVENESS, "projector failed, will retry");
    assert!(first.contains(&read_model.display().to_string()), "{first}");
    assert!(
        first.contains("give the user running refract write access"),
        "{first}"
    );
    // Retries every 40 ms at most: a flood would show within a second.
    std::thread::sleep(Duration::from_secs(2));
    let failures = host
        .lines()
        .iter()
        .filter(|line| line.contains("projector failed") || line.contains("still failing"))
        .count();
    assert_eq!(failures, 1, "logged {failures} times:\n{}", host.tail(20));
    Ok(())
}
