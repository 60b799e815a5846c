//! External consumers, through the real HTTP API started in-process on an ephemeral
//! port over a real log and engine, and through the real `refract` binary.
//!
//! Covered: a rate-limited replay of a time window with progress messages, resumed
//! after a dropped connection with its rate and window; `refract tail` replaying a
//! window and ending by itself. Consumer groups: three `refract consume` processes
//! splitting one log with each stream on one member; a member killed with `kill -9`
//! mid-lease whose events go to the others; committed offsets kept across a restart;
//! dead letters after `max_deliveries` with the member's reason; lag in `/health` and
//! `/metrics`; every client-controlled limit refused past its bound.

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refract::api::{self, ApiState, Token};
use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::{Engine, EngineOptions, LogCheck};
use refract::groups::{GroupSection, Groups};
use refract::log::{Durability, EventLog, LogOptions, NewEvent, ReadQuery};
use serde_json::{Value, json};
use ureq::Agent;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Generous liveness bound for anything a test waits on.
const LIVENESS: Duration = Duration::from_secs(60);

/// The real server in this process, on a temporary data directory.
struct Host {
    url: String,
    token: Token,
    log: EventLog,
    data: DataDir,
    engine: Arc<Engine>,
    groups: Arc<Groups>,
    agent: Agent,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: tokio::runtime::Runtime,
    dir: Option<tempfile::TempDir>,
}

impl Host {
    fn start(config: Config) -> Result<Host> {
        Host::start_in(tempfile::tempdir()?, config)
    }

    /// Starts a host on `dir` (a fresh one, or one a stopped host left behind).
    fn start_in(dir: tempfile::TempDir, config: Config) -> Result<Host> {
        let server_config = config.server.clone();
        let data = DataDir::new(dir.path().join("data"));
        std::fs::create_dir_all(data.plugins())?;
        let options = LogOptions {
            durability: Durability::Normal,
            ..LogOptions::default()
        };
        let log = EventLog::open(&data.events_db(), options)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let engine = Arc::new(Engine::start(
            &EngineOptions {
                data_dir: data.clone(),
                plugins_dir: data.plugins(),
                config,
                log_check: LogCheck::Strict,
            },
            &log,
            runtime.handle(),
        )?);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let token = Token::generate();
        let groups = Groups::start(&log, &data.control_db(), engine.config())?;
        let state = ApiState::new(
            log.clone(),
            Arc::clone(&engine),
            server_config,
            token.clone(),
        );
        state.attach_groups(Arc::clone(&groups));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(LIVENESS))
            .build()
            .new_agent();
        Ok(Host {
            url,
            token,
            log,
            data,
            engine,
            groups,
            agent,
            stop: Some(stop),
            server: Some(server),
            runtime,
            dir: Some(dir),
        })
    }

    /// `GET path`: the status and the body as JSON.
    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let response = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", self.bearer())
            .call()?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string()?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// `POST path` with a JSON body: the status and the body as JSON.
    fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", self.bearer())
            .header("Content-Type", "application/json")
            .send(body.to_string())?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string()?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// `POST path`, expecting 200.
    fn post_ok(&self, path: &str, body: &Value) -> Result<Value> {
        let (status, answer) = self.post(path, body)?;
        assert_eq!(status, 200, "POST {path} {body}: {answer}");
        Ok(answer)
    }

    /// A group as the API shows it.
    fn group(&self, name: &str) -> Result<Value> {
        let (status, view) = self.get(&format!("/v1/groups/{name}"))?;
        assert_eq!(status, 200, "{view}");
        Ok(view)
    }

    /// Polls group `group` as `member` once; returns the delivered events.
    fn poll(&self, group: &str, member: &str, max: usize, wait_ms: u64) -> Result<Vec<Value>> {
        let answer = self.post_ok(
            &format!("/v1/groups/{group}/poll"),
            &json!({"member": member, "max_events": max, "wait_ms": wait_ms}),
        )?;
        Ok(answer["events"].as_array().cloned().unwrap_or_default())
    }

    /// Runs the `refract` binary against this host.
    fn refract(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_refract"));
        command
            .arg("--data-dir")
            .arg(self.data.root())
            .args(["--url", &self.url, "--token", self.token.secret()])
            .env_remove("REFRACT_CONFIG")
            .env_remove("REFRACT_URL")
            .env_remove("REFRACT_TOKEN")
            .env_remove("REFRACT_DATA");
        command
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.secret())
    }

    /// Opens `GET /v1/events/subscribe?{query}`; `last_event_id` resumes after it.
    fn subscribe(&self, query: &str, last_event_id: Option<u64>) -> Result<Sse> {
        self.open_sse(&format!("/v1/events/subscribe?{query}"), last_event_id)
    }

    /// Opens the SSE stream at `path`, expecting 200.
    fn open_sse(&self, path: &str, last_event_id: Option<u64>) -> Result<Sse> {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_per_read(Some(LIVENESS))
            .build()
            .new_agent();
        let mut request = agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", self.bearer());
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.call()?;
        assert_eq!(response.status(), 200, "{path}");
        Ok(Sse {
            lines: BufReader::new(Box::new(response.into_body().into_reader())),
        })
    }

    /// Stops the host cleanly and hands back its directory, for a restart.
    fn stop(mut self) -> Result<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server)??;
        }
        self.groups.shutdown();
        self.engine.shutdown();
        self.dir.take().ok_or_else(|| "no directory".into())
    }
}

/// One Server-Sent Events message.
#[derive(Debug, Clone)]
struct Message {
    event: String,
    id: Option<u64>,
    data: Value,
}

/// A subscription's messages, read one at a time.
struct Sse {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
}

impl Sse {
    /// The next message, or `None` when the host ended the stream.
    fn next(&mut self) -> Result<Option<Message>> {
        let (mut event, mut id, mut data) = (String::new(), None, String::new());
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let event = if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                };
                return Ok(Some(Message {
                    event,
                    id,
                    data: serde_json::from_str(&data)?,
                }));
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_owned(),
                "id" => id = value.parse().ok(),
                "data" => data.push_str(value),
                _ => {}
            }
        }
    }
}

/// Appends `count` events to streams `s-0`..`s-{streams-1}` in turn, as one batch, and
/// returns their offsets.
fn append_batch(log: &EventLog, label: &str, count: usize, streams: usize) -> Result<Vec<u64>> {
    let events = (0..count)
        .map(|i| {
            NewEvent::new(
                format!("s-{}", i % streams),
                "thing.happened",
                json!({"label": label, "i": i}).to_string(),
            )
        })
        .collect();
    Ok(log.append(events)?)
}

/// The `recorded_at` of the event at `offset`, as RFC 3339.
fn recorded_at(log: &EventLog, offset: u64) -> Result<String> {
    let query = ReadQuery {
        from_offset: offset,
        to_offset: Some(offset),
        ..ReadQuery::default()
    };
    let event = log.read(&query)?.next().ok_or("no such event")??;
    Ok(refract::log::format_timestamp(event.recorded_at))
}

/// Appends 30 events before a window, 40 inside it and 30 after it, each group in its
/// own commit (so with its own time), and returns the window as `(from_time,
/// until_time, its offsets)`.
fn log_with_a_window(log: &EventLog) -> Result<(String, String, Vec<u64>)> {
    append_batch(log, "before", 30, 3)?;
    std::thread::sleep(Duration::from_millis(5));
    let inside = append_batch(log, "inside", 40, 4)?;
    std::thread::sleep(Duration::from_millis(5));
    let after = append_batch(log, "after", 30, 3)?;
    let from = recorded_at(log, inside[0])?;
    let until = recorded_at(log, after[0])?;
    Ok((from, until, inside))
}

fn encode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

#[test]
fn a_rate_limited_replay_of_a_time_window_reports_progress_and_resumes() -> Result {
    let mut config = Config::default();
    config.replay.progress_interval_ms = 100;
    let host = Host::start(config)?;
    let (from, until, window) = log_with_a_window(&host.log)?;
    let rate = 100;
    let query = format!(
        "from_time={}&until_time={}&rate={rate}&progress=true",
        encode(&from),
        encode(&until)
    );

    // The first connection takes 10 events, then drops.
    let started = Instant::now();
    let mut first = host.subscribe(&query, None)?;
    let mut received = Vec::new();
    let mut progress = Vec::new();
    while received.len() < 10 {
        let message = first.next()?.ok_or("the stream ended early")?;
        match message.event.as_str() {
            "message" => received.push(message.id.ok_or("an event without an id")?),
            "progress" => progress.push(message.data),
            other => panic!("unexpected message {other}: {}", message.data),
        }
    }
    drop(first);

    // The reconnect resumes after the last event, with the same rate and window.
    let mut second = host.subscribe(&query, received.last().copied())?;
    let mut last_progress = None;
    while let Some(message) = second.next()? {
        match message.event.as_str() {
            "message" => {
                let offset = message.id.ok_or("an event without an id")?;
                assert_eq!(message.data["offset"], json!(offset));
                assert_eq!(message.data["data"]["label"], "inside", "{}", message.data);
                received.push(offset);
            }
            "progress" => {
                progress.push(message.data.clone());
                last_progress = Some(message.data);
            }
            other => panic!("unexpected message {other}: {}", message.data),
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(received, window, "exactly the window, in order, once");

    // The last message says the window is done, counting the first connection's events.
    let done = last_progress.ok_or("no progress message on the second connection")?;
    assert_eq!(done["done"], json!(true), "{done}");
    assert_eq!(done["sent"], json!(40), "{done}");
    assert_eq!(done["total"], json!(40), "{done}");
    assert_eq!(done["total_exact"], json!(true), "{done}");
    assert_eq!(done["percent"], json!(100.0), "{done}");
    assert_eq!(done["rate"], json!(rate), "{done}");
    // Everything up to the offset reported was scanned: at least the window's last event.
    let scanned = done["offset"].as_u64().ok_or("offset is not a number")?;
    assert!(scanned >= window[39], "{done}");
    // Reports on the way: paced at 100 events/s, 40 events take well over 100 ms.
    let on_the_way: Vec<&Value> = progress
        .iter()
        .filter(|p| p["done"] == json!(false))
        .collect();
    assert!(
        !on_the_way.is_empty(),
        "no intermediate progress: {progress:?}"
    );
    for report in &on_the_way {
        assert_eq!(report["total"], json!(40), "{report}");
        let sent = report["sent"].as_u64().ok_or("sent is not a number")?;
        assert!(sent <= 40, "{report}");
        assert!(report["events_per_second"].is_number(), "{report}");
    }
    // The pace is a floor on the duration, whatever the machine: 40 events at 100/s,
    // less the small burst a stream may start with on each connection.
    assert!(
        elapsed >= Duration::from_millis(250),
        "40 events at {rate}/s took only {elapsed:?}"
    );
    host.stop()?;
    Ok(())
}

#[test]
fn a_replay_rejects_bad_parameters() -> Result {
    let host = Host::start(Config::default())?;
    for (query, needle) in [
        ("rate=0", "rate"),
        ("rate=fast", "rate"),
        ("progress=maybe", "progress"),
        ("until_offset=3&to_offset=4", "until_offset"),
        ("speed=3", "speed"),
    ] {
        let answer = host
            .agent
            .get(format!("{}/v1/events/subscribe?{query}", host.url))
            .header("Authorization", host.bearer())
            .call()?;
        assert_eq!(answer.status(), 400, "{query}");
        let text = answer.into_body().read_to_string()?;
        assert!(text.contains(needle), "{query}: {text}");
    }
    host.stop()?;
    Ok(())
}

#[test]
fn refract_tail_replays_a_window_and_ends() -> Result {
    let host = Host::start(Config::default())?;
    let (_, _, window) = log_with_a_window(&host.log)?;
    let output = host
        .refract()
        .args(["tail", "--progress", "--rate", "1000"])
        .args(["--from-offset", &window[0].to_string()])
        .args(["--until-offset", &window[39].to_string()])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "refract tail failed: {stderr}");
    let offsets: Vec<u64> = String::from_utf8(output.stdout)?
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line)?;
            event["offset"].as_u64().ok_or_else(|| "no offset".into())
        })
        .collect::<Result<_>>()?;
    assert_eq!(offsets, window, "{stderr}");
    host.stop()?;
    Ok(())
}

/// A configuration declaring `group` with `section`.
fn with_group(name: &str, section: GroupSection) -> Config {
    let mut config = Config::default();
    config.groups.insert(name.to_owned(), section);
    config
}

/// A `refract consume` child process whose stdout goes to a file.
struct Consumer {
    child: Child,
    output: PathBuf,
    name: String,
}

impl Consumer {
    fn start(host: &Host, group: &str, member: &str, extra: &[&str]) -> Result<Consumer> {
        let dir = host.dir.as_ref().ok_or("no directory")?;
        let output = dir.path().join(format!("{member}.jsonl"));
        let errors = dir.path().join(format!("{member}.err"));
        let child = host
            .refract()
            .args(["consume", group, "--member", member])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(&output)?)
            .stderr(File::create(errors)?)
            .spawn()?;
        Ok(Consumer {
            child,
            output,
            name: member.to_owned(),
        })
    }

    /// The events printed so far.
    fn events(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(&self.output)?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| Ok(serde_json::from_str(line)?))
            .collect()
    }

    /// `kill -9`.
    fn kill(mut self) -> Result<Vec<Value>> {
        self.child.kill()?;
        self.child.wait()?;
        self.events()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn offset_of(event: &Value) -> u64 {
    event["offset"].as_u64().unwrap_or(0)
}

/// Waits until group `name` shows `members` members.
fn wait_members(host: &Host, name: &str, members: usize) -> Result {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let (status, view) = host.get(&format!("/v1/groups/{name}"))?;
        if status == 200 && view["members"].as_array().map(Vec::len) == Some(members) {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {members} members in {name}: {view}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until group `name` has committed everything up to the log head.
fn wait_committed(host: &Host, name: &str) -> Result<Value> {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let view = host.group(name)?;
        if view["committed"] == view["head"] && view["head"].as_u64() > Some(0) {
            return Ok(view);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {name} to commit the head: {view}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_consumers_split_one_log_with_each_stream_on_one_member() -> Result {
    let host = Host::start(Config::default())?;
    let members: Vec<Consumer> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| Consumer::start(&host, "split", m, &["--batch", "7"]))
        .collect::<Result<_>>()?;
    wait_members(&host, "split", 3)?;
    let appended = append_batch(&host.log, "split", 300, 30)?;
    let view = wait_committed(&host, "split")?;
    assert_eq!(view["members"].as_array().map(Vec::len), Some(3), "{view}");

    let mut owner_of_stream: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = Vec::new();
    for member in members {
        let name = member.name.clone();
        let events = member.kill()?;
        assert!(!events.is_empty(), "{name} got nothing");
        let mut last_in_stream: BTreeMap<String, u64> = BTreeMap::new();
        for event in &events {
            let stream = event["stream"].as_str().ok_or("no stream")?.to_owned();
            let offset = offset_of(event);
            if let Some(other) = owner_of_stream.insert(stream.clone(), name.clone()) {
                assert_eq!(other, name, "stream {stream} went to {other} and {name}");
            }
            let previous = last_in_stream.insert(stream.clone(), offset).unwrap_or(0);
            assert!(
                offset > previous,
                "{name}: {stream} out of order at {offset}"
            );
            assert_eq!(event["delivery"], json!(1), "{event}");
            seen.push(offset);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, appended, "every event exactly once");
    host.stop()?;
    Ok(())
}

#[test]
fn a_member_killed_mid_lease_has_its_events_redelivered_to_the_others() -> Result {
    // A long lease: what brings the events back is the member's departure, not expiry.
    let host = Host::start(with_group(
        "failover",
        GroupSection {
            session_timeout_ms: Some(1000),
            lease_ms: Some(600_000),
            ..GroupSection::default()
        },
    ))?;
    let doomed = Consumer::start(
        &host,
        "failover",
        "doomed",
        &["--manual", "--batch", "1000"],
    )?;
    wait_members(&host, "failover", 1)?;
    let appended = append_batch(&host.log, "failover", 60, 12)?;
    let deadline = Instant::now() + LIVENESS;
    while doomed.events()?.len() < appended.len() {
        assert!(Instant::now() < deadline, "doomed never got the events");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two more members join; doomed still holds every lease, so they get nothing yet.
    assert!(host.poll("failover", "a", 100, 0)?.is_empty());
    assert!(host.poll("failover", "b", 100, 0)?.is_empty());
    assert_eq!(host.group("failover")?["in_flight"], json!(60));

    let held: Vec<u64> = doomed.kill()?.iter().map(offset_of).collect();
    assert_eq!(held, appended);

    // The survivors poll and ack until everything is committed.
    let mut redelivered = Vec::new();
    let deadline = Instant::now() + LIVENESS;
    while redelivered.len() < held.len() {
        assert!(
            Instant::now() < deadline,
            "redelivered only {redelivered:?}"
        );
        for member in ["a", "b"] {
            let events = host.poll("failover", member, 100, 200)?;
            if events.is_empty() {
                continue;
            }
            for event in &events {
                assert!(event["delivery"].as_u64() >= Some(2), "{event}");
            }
            let offsets: Vec<u64> = events.iter().map(offset_of).collect();
            let acked = host.post_ok(
                "/v1/groups/failover/ack",
                &json!({"member": member, "offsets": offsets}),
            )?;
            assert_eq!(acked["acked"], json!(offsets.len()), "{acked}");
            redelivered.extend(offsets);
        }
    }
    redelivered.sort_unstable();
    assert_eq!(redelivered, held, "each held event once to a survivor");
    let view = wait_committed(&host, "failover")?;
    let names: Vec<&str> = view["members"]
        .as_array()
        .ok_or("no members")?
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "{view}");
    assert!(view["redeliveries"].as_u64() >= Some(60), "{view}");
    host.stop()?;
    Ok(())
}

#[test]
fn committed_offsets_survive_a_restart() -> Result {
    let config = || with_group("durable", GroupSection::default());
    let host = Host::start(config())?;
    append_batch(&host.log, "durable", 100, 5)?;
    let events = host.poll("durable", "m", 40, 0)?;
    let offsets: Vec<u64> = events.iter().map(offset_of).collect();
    assert_eq!(offsets, (1..=40).collect::<Vec<u64>>());
    let acked = host.post_ok(
        "/v1/groups/durable/ack",
        &json!({"member": "m", "offsets": offsets}),
    )?;
    assert_eq!(acked["committed"], json!(40), "{acked}");
    let dir = host.stop()?;

    // With no host running, `refract groups` reads the position from control.db.
    let data = DataDir::new(dir.path().join("data"));
    let output = Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("--data-dir")
        .arg(data.root())
        .args(["--url", "http://127.0.0.1:9", "groups", "--json"])
        .env_remove("REFRACT_CONFIG")
        .env_remove("REFRACT_TOKEN")
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let offline: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(offline["name"], "durable");
    assert_eq!(offline["committed"], json!(40), "{offline}");
    assert_eq!(offline["lag"], json!(60), "{offline}");

    let host = Host::start_in(dir, config())?;
    assert_eq!(host.group("durable")?["committed"], json!(40));
    let next = host.poll("durable", "m", 5, 0)?;
    assert_eq!(next.first().map(offset_of), Some(41), "{next:?}");
    assert_eq!(next[0]["delivery"], json!(1));
    host.stop()?;
    Ok(())
}

#[test]
fn an_event_is_dead_lettered_after_max_deliveries_with_the_last_reason() -> Result {
    let host = Host::start(with_group(
        "fragile",
        GroupSection {
            max_deliveries: Some(3),
            lag_alert: Some(3),
            ..GroupSection::default()
        },
    ))?;
    append_batch(&host.log, "fragile", 5, 1)?;
    // Lagging 5 offsets behind, above its alert of 3: /health says so.
    let (status, health) = host.get("/health")?;
    assert_eq!(status, 503, "{health}");
    assert!(
        health.to_string().contains("consumer group `fragile`"),
        "{health}"
    );

    let first = host.poll("fragile", "m", 10, 0)?;
    assert_eq!(first.len(), 5);
    host.post_ok(
        "/v1/groups/fragile/ack",
        &json!({"member": "m", "offsets": [1, 2, 4, 5]}),
    )?;
    for (attempt, reason) in [
        (1, "boom"),
        (2, "boom again"),
        (3, "smtp 550: mailbox unavailable"),
    ] {
        if attempt > 1 {
            let again = host.poll("fragile", "m", 10, 5000)?;
            assert_eq!(again.len(), 1, "{again:?}");
            assert_eq!(offset_of(&again[0]), 3);
            assert_eq!(again[0]["delivery"], json!(attempt));
        }
        let nacked = host.post_ok(
            "/v1/groups/fragile/nack",
            &json!({"member": "m", "offsets": [3], "reason": reason}),
        )?;
        let expected = if attempt == 3 { json!([3]) } else { json!([]) };
        assert_eq!(nacked["dead_lettered"], expected, "{nacked}");
    }
    assert!(
        host.poll("fragile", "m", 10, 0)?.is_empty(),
        "nothing left to deliver"
    );
    let (_, letters) = host.get("/v1/groups/fragile/dead-letters")?;
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["offset"], json!(3), "{letters}");
    assert_eq!(letter["deliveries"], json!(3), "{letters}");
    assert_eq!(
        letter["last_error"], "smtp 550: mailbox unavailable",
        "{letters}"
    );
    assert_eq!(letter["member"], "m", "{letters}");
    let view = host.group("fragile")?;
    assert_eq!(
        view["committed"],
        json!(5),
        "a dead letter does not hold the commit"
    );
    assert_eq!(view["dead_letters"], json!(1));
    assert_eq!(view["redeliveries"], json!(2));

    let (status, health) = host.get("/health")?;
    assert_eq!(status, 200, "{health}");
    let metrics = host
        .agent
        .get(format!("{}/metrics", host.url))
        .header("Authorization", host.bearer())
        .call()?
        .into_body()
        .read_to_string()?;
    assert!(
        metrics.contains("refract_group_dead_letters_total{group=\"fragile\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("refract_group_lag_events{group=\"fragile\"} 0"),
        "{metrics}"
    );

    let output = host
        .refract()
        .args(["groups", "dead-letters", "fragile"])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("smtp 550: mailbox unavailable"), "{text}");
    host.stop()?;
    Ok(())
}

#[test]
fn group_limits_refuse_what_a_client_asks_beyond_them() -> Result {
    let mut config = Config::default();
    config.consumers.max_groups = 2;
    config.consumers.max_members_per_group = 2;
    config.consumers.max_poll_events = 3;
    config.consumers.max_in_flight_per_member = 4;
    let host = Host::start(config)?;
    append_batch(&host.log, "limits", 20, 1)?;
    // Polls are capped at max_poll_events, leases at max_in_flight_per_member.
    assert_eq!(host.poll("g1", "a", 100, 0)?.len(), 3);
    assert_eq!(host.poll("g1", "a", 100, 0)?.len(), 1);
    assert_eq!(host.poll("g1", "a", 100, 0)?.len(), 0);
    host.poll("g1", "b", 1, 0)?;
    let (status, answer) = host.post(
        "/v1/groups/g1/poll",
        &json!({"member": "c", "max_events": 1}),
    )?;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_members");
    host.poll("g2", "a", 1, 0)?;
    let (status, answer) = host.post("/v1/groups/g3/poll", &json!({"member": "a"}))?;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_groups");
    let (status, answer) = host.post(
        "/v1/groups/g1/ack",
        &json!({"member": "a", "offsets": [1, 2, 3, 4, 5]}),
    )?;
    assert_eq!(status, 400, "{answer}");
    for (body, code) in [
        (json!({"member": "has space"}), "invalid_name"),
        (json!({"member": "a", "max_events": 0}), "invalid_request"),
        (
            json!({"member": "a", "types": ["other"]}),
            "filter_mismatch",
        ),
    ] {
        let (status, answer) = host.post("/v1/groups/g1/poll", &body)?;
        assert!(status == 400 || status == 409, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let (status, answer) = host.post("/v1/groups/Bad/poll", &json!({"member": "a"}))?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_name"))
    );
    // Delete frees a slot; a declared group cannot be deleted.
    let deleted = host
        .agent
        .delete(format!("{}/v1/groups/g2", host.url))
        .header("Authorization", host.bearer())
        .call()?;
    assert_eq!(deleted.status(), 200);
    host.poll("g3", "a", 1, 0)?;
    // The deleted group is gone: joining it again would create a third group.
    let (status, answer) = host.post("/v1/groups/g2/poll", &json!({"member": "a"}))?;
    assert_eq!(status, 429, "g1 and g3 exist: {answer}");
    host.stop()?;
    Ok(())
}

#[test]
fn a_group_resets_to_an_offset_and_a_time() -> Result {
    let host = Host::start(Config::default())?;
    let (from, _, window) = log_with_a_window(&host.log)?;
    let all = host.poll("rewind", "m", 1000, 0)?;
    let offsets: Vec<u64> = all.iter().map(offset_of).collect();
    host.post_ok(
        "/v1/groups/rewind/ack",
        &json!({"member": "m", "offsets": offsets}),
    )?;
    assert_eq!(host.group("rewind")?["committed"], json!(100));
    let output = host
        .refract()
        .args(["groups", "reset", "rewind", "--to-time", &from])
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again = host.poll("rewind", "m", 1, 0)?;
    assert_eq!(again.first().map(offset_of), Some(window[0]));
    host.post_ok("/v1/groups/rewind/reset", &json!({"to_offset": 90}))?;
    assert_eq!(host.group("rewind")?["committed"], json!(89));
    let again = host.poll("rewind", "m", 1, 0)?;
    assert_eq!(again.first().map(offset_of), Some(90));
    host.stop()?;
    Ok(())
}

#[test]
fn an_sse_member_gets_its_events_and_held_connections_are_bounded() -> Result {
    let mut config = Config::default();
    config.server.max_subscribers = 1;
    config.consumers.max_poll_wait_ms = 300;
    config.consumers.session_timeout_ms = 1500;
    let host = Host::start(config)?;
    let appended = append_batch(&host.log, "sse", 10, 3)?;
    let mut member = host.open_sse("/v1/groups/live/subscribe?member=s", None)?;
    let mut received = Vec::new();
    while received.len() < appended.len() {
        let message = member.next()?.ok_or("the member's stream ended")?;
        assert_eq!(message.event, "message", "{:?}", message.data);
        assert_eq!(message.id, message.data["offset"].as_u64());
        assert_eq!(message.data["delivery"], json!(1));
        let offset = offset_of(&message.data);
        host.post_ok(
            "/v1/groups/live/ack",
            &json!({"member": "s", "offsets": [offset]}),
        )?;
        received.push(offset);
    }
    assert_eq!(received, appended, "one member: every event, in order");
    wait_committed(&host, "live")?;

    // The one held connection is taken: a second stream and a waiting poll are refused,
    // a poll that does not wait is not held and goes through.
    let refused = [
        host.get("/v1/groups/live/subscribe?member=t")?,
        host.post(
            "/v1/groups/live/poll",
            &json!({"member": "p", "wait_ms": 1000}),
        )?,
    ];
    for (status, answer) in refused {
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "too_many_subscribers", "{answer}");
    }
    assert!(host.poll("live", "p", 10, 0)?.is_empty());
    // A lease longer than consumers.max_lease_ms is refused.
    let (status, answer) = host.post(
        "/v1/groups/live/poll",
        &json!({"member": "p", "lease_ms": 3_600_001}),
    )?;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{answer}"
    );
    assert!(
        answer.to_string().contains("consumers.max_lease_ms"),
        "{answer}"
    );

    // Closing the stream leaves the group and frees the connection; a poll asking to
    // wait far longer than consumers.max_poll_wait_ms answers (empty) all the same.
    drop(member);
    let deadline = Instant::now() + LIVENESS;
    loop {
        let (status, answer) = host.post(
            "/v1/groups/live/poll",
            &json!({"member": "p", "wait_ms": 86_400_000u64}),
        )?;
        if status == 200 {
            assert_eq!(answer["events"], json!([]), "{answer}");
            break;
        }
        assert_eq!(answer["error"]["code"], "too_many_subscribers", "{answer}");
        assert!(
            Instant::now() < deadline,
            "the closed stream was never released"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_members(&host, "live", 1)?;
    host.stop()?;
    Ok(())
}
