//! External consumers, through the real HTTP API started in-process on an ephemeral
//! port over a real log and engine, and through the real `refract` binary.
//!
//! Covered: a rate-limited replay of a time window with progress messages, resumed
//! after a dropped connection with its rate and window; `refract tail` replaying a
//! window and ending by itself.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use refract::api::{self, ApiState, ServerConfig, Token};
use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::{Engine, EngineOptions};
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
    agent: Agent,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Host {
    fn start(config: Config) -> Result<Host> {
        let dir = tempfile::tempdir()?;
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
            },
            &log,
            runtime.handle(),
        )?);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let token = Token::generate();
        let state = ApiState::new(
            log.clone(),
            Arc::clone(&engine),
            ServerConfig::default(),
            token.clone(),
        );
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
            agent,
            stop: Some(stop),
            server: Some(server),
            runtime,
            _dir: dir,
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.secret())
    }

    /// Opens `GET /v1/events/subscribe?{query}`; `last_event_id` resumes after it.
    fn subscribe(&self, query: &str, last_event_id: Option<u64>) -> Result<Sse> {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_per_read(Some(LIVENESS))
            .build()
            .new_agent();
        let mut request = agent
            .get(format!("{}/v1/events/subscribe?{query}", self.url))
            .header("Authorization", self.bearer());
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.call()?;
        assert_eq!(response.status(), 200, "subscribe?{query}");
        Ok(Sse {
            lines: BufReader::new(Box::new(response.into_body().into_reader())),
        })
    }

    fn stop(mut self) -> Result {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server)??;
        }
        self.engine.shutdown();
        Ok(())
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
    host.stop()
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
    host.stop()
}

#[test]
fn refract_tail_replays_a_window_and_ends() -> Result {
    let host = Host::start(Config::default())?;
    let (_, _, window) = log_with_a_window(&host.log)?;
    let output = Command::new(env!("CARGO_BIN_EXE_refract"))
        .args(["--data-dir"])
        .arg(host.data.root())
        .args(["--url", &host.url, "--token", host.token.secret()])
        .args(["tail", "--progress", "--rate", "1000"])
        .args(["--from-offset", &window[0].to_string()])
        .args(["--until-offset", &window[39].to_string()])
        .env_remove("REFRACT_CONFIG")
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
    host.stop()
}
