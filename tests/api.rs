//! The HTTP API: the real server started in-process on an ephemeral port, over a real
//! log and a real engine, driven through a real HTTP client (ureq).
//!
//! Covered: every endpoint; authentication (missing, wrong, query-string and non-Bearer
//! tokens are refused); bad input of every kind answered with the right 4xx and the
//! JSON error shape; read-model queries that try to write, ATTACH, PRAGMA or run too
//! long; subscriptions that deliver every event in order and resume without gaps after
//! a reconnect; `/metrics` parsed as Prometheus text; `/health` ok and degraded.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refract::api::{self, ApiState, ServerConfig, Token};
use refract::config::{Config, ProjectorSection, PromoteMode};
use refract::data_dir::DataDir;
use refract::engine::{Engine, EngineOptions, LogCheck};
use refract::log::{Durability, EventLog, LogOptions};
use serde_json::{Value, json};
use ureq::http::Response;
use ureq::{Agent, Body};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The real server, in this process, on a temporary data directory.
struct Host {
    url: String,
    token: Token,
    log: EventLog,
    engine: Arc<Engine>,
    agent: Agent,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// `Authorization: Bearer <the token>`.
    Token,
    /// No `Authorization` header.
    Without,
}

/// An answer: status, headers we look at, and the body parsed as JSON (`Null` if it
/// is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    content_type: Option<String>,
    text: String,
    json: Value,
}

impl Answer {
    /// Asserts the API's error shape and returns the code.
    fn error_code(&self) -> String {
        let code = self.json["error"]["code"].as_str();
        let message = self.json["error"]["message"].as_str();
        assert!(
            code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
            "not the error shape ({}): {}",
            self.status,
            self.text
        );
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{}",
            self.text
        );
        code.unwrap_or_default().to_owned()
    }

    /// Asserts a client error with this status and code.
    fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.error_code(), code, "{}", self.text);
    }
}

impl Host {
    /// Starts a host with these guests in its plugins folder and these server limits.
    fn start(guests: &[&str], config: ServerConfig) -> Result<Host> {
        Host::start_with(guests, config, |_| Ok(()))
    }

    /// As [`Host::start`], with a chance to put more into the data directory first.
    fn start_with(
        guests: &[&str],
        config: ServerConfig,
        prepare: impl FnOnce(&DataDir) -> Result,
    ) -> Result<Host> {
        Host::start_configured(guests, config, Config::default(), prepare)
    }

    /// As [`Host::start_with`], with the engine's configuration too.
    fn start_configured(
        guests: &[&str],
        config: ServerConfig,
        engine_config: Config,
        prepare: impl FnOnce(&DataDir) -> Result,
    ) -> Result<Host> {
        let dir = tempfile::tempdir()?;
        let data = DataDir::new(dir.path().join("data"));
        std::fs::create_dir_all(data.plugins())?;
        for guest in guests {
            std::fs::copy(
                support::guests::guest(guest),
                data.plugins().join(format!("{guest}.wasm")),
            )?;
        }
        prepare(&data)?;
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
                config: engine_config,
                log_check: LogCheck::Strict,
            },
            &log,
            runtime.handle(),
        )?);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let token = Token::generate();
        let state = ApiState::new(log.clone(), Arc::clone(&engine), config, token.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(api::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Ok(Host {
            url,
            token,
            log,
            engine,
            agent,
            stop: Some(stop),
            server: Some(server),
            runtime,
            _dir: dir,
        })
    }

    fn answer(result: std::result::Result<Response<Body>, ureq::Error>) -> Result<Answer> {
        let mut response = result?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let www_authenticate = header("www-authenticate");
        let content_type = header("content-type");
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status: response.status().as_u16(),
            www_authenticate,
            content_type,
            text,
            json,
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.secret())
    }

    fn get_as(&self, path: &str, auth: Auth) -> Result<Answer> {
        let mut request = self.agent.get(format!("{}{path}", self.url));
        if auth == Auth::Token {
            request = request.header("Authorization", self.bearer());
        }
        Host::answer(request.call())
    }

    fn get(&self, path: &str) -> Result<Answer> {
        self.get_as(path, Auth::Token)
    }

    /// `POST` with a raw body and content type.
    fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Result<Answer> {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", self.bearer());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        Host::answer(request.send(body))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Answer> {
        self.post_raw(path, Some("application/json"), body.to_string().as_bytes())
    }

    /// Appends `events` to `stream` and returns their offsets.
    fn append(&self, stream: &str, events: &Value) -> Result<Vec<u64>> {
        let answer = self.post(&format!("/v1/streams/{stream}/events"), events)?;
        assert_eq!(answer.status, 200, "{}", answer.text);
        Ok(serde_json::from_value(answer.json["offsets"].clone())?)
    }

    /// Opens a subscription; `last_event_id` resumes after that offset.
    fn subscribe(&self, query: &str, last_event_id: Option<u64>) -> Result<Subscription> {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_per_read(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut request = agent
            .get(format!("{}/v1/events/subscribe{query}", self.url))
            .header("Authorization", self.bearer());
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.call()?;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Ok(Subscription {
            lines: BufReader::new(Box::new(response.into_body().into_reader())),
        })
    }

    /// Waits until `projector`'s active version has reached the log head.
    fn wait_caught_up(&self, projector: &str) -> Result {
        let head = self.log.head()?;
        wait_until(Duration::from_secs(60), "the projector to catch up", || {
            self.engine.projector(projector).is_some_and(|view| {
                view.versions.iter().any(|version| {
                    Some(&version.version) == view.active_version.as_ref()
                        && version
                            .status
                            .as_ref()
                            .is_some_and(|status| status.checkpoint >= head)
                })
            })
        })
    }

    /// Stops the server (as SIGTERM would) and waits for it to finish.
    fn stop(&mut self) -> Result {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), server).await
            })???;
        }
        Ok(())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.stop();
        self.engine.shutdown();
    }
}

/// An open SSE stream.
struct Subscription {
    lines: BufReader<Box<dyn Read + Send>>,
}

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl Subscription {
    /// The next message (skipping keep-alive comments), or `None` when the stream ends.
    fn next(&mut self) -> Result<Option<Message>> {
        let mut message = Message {
            id: None,
            event: None,
            data: String::new(),
        };
        let mut seen = false;
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    return Ok(Some(message));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "" => {} // a comment
                "id" => {
                    message.id = Some(value);
                    seen = true;
                }
                "event" => {
                    message.event = Some(value);
                    seen = true;
                }
                "data" => {
                    message.data.push_str(&value);
                    seen = true;
                }
                _ => {}
            }
        }
    }

    /// The next `n` events, as JSON.
    fn events(&mut self, n: usize) -> Result<Vec<Value>> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let message = self.next()?.ok_or("the stream ended early")?;
            assert_eq!(message.event, None, "{}", message.data);
            let event: Value = serde_json::from_str(&message.data)?;
            assert_eq!(
                message.id.as_deref(),
                Some(event["offset"].to_string().as_str()),
                "the SSE id is the offset"
            );
            events.push(event);
        }
        Ok(events)
    }
}

fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Result {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn deposits(account: &str, amounts: &[i64]) -> Value {
    Value::Array(
        amounts
            .iter()
            .map(|amount| json!({"type": "money.deposited", "data": {"account": account, "amount": amount}}))
            .collect(),
    )
}

fn offsets(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["offset"].as_u64()).collect()
}

// ---------------------------------------------------------------------------------
// Authentication

#[test]
fn every_endpoint_but_health_needs_the_bearer_token() -> Result {
    let host = Host::start(&[], ServerConfig::default())?;
    let token = host.token.secret().to_owned();

    let health = host.get_as("/health", Auth::Without)?;
    assert_eq!(health.status, 200, "{}", health.text);

    for path in [
        "/v1/events",
        "/v1/events/count",
        "/v1/projectors",
        "/v1/projectors/cars/diff",
        "/metrics",
        "/v1/no-such-thing",
    ] {
        let missing = host.get_as(path, Auth::Without)?;
        missing.expect_error(401, "unauthorized");
        assert_eq!(
            missing.www_authenticate.as_deref(),
            Some("Bearer"),
            "{path}"
        );
    }

    let wrong = Host::answer(
        host.agent
            .get(format!("{}/v1/events", host.url))
            .header("Authorization", format!("Bearer {token}x"))
            .call(),
    )?;
    wrong.expect_error(401, "unauthorized");
    assert_eq!(wrong.www_authenticate.as_deref(), Some("Bearer"));

    // The token in the query string is never looked at.
    for query in [
        format!("?token={token}"),
        format!("?access_token={token}"),
        format!("?authorization=Bearer%20{token}"),
    ] {
        let answer = host.get_as(&format!("/v1/events{query}"), Auth::Without)?;
        answer.expect_error(401, "unauthorized");
    }

    // Only the Bearer scheme.
    let basic = Host::answer(
        host.agent
            .get(format!("{}/v1/events", host.url))
            .header("Authorization", format!("Basic {token}"))
            .call(),
    )?;
    basic.expect_error(401, "unauthorized");

    // The scheme is case-insensitive; the right token passes.
    let ok = Host::answer(
        host.agent
            .get(format!("{}/v1/events", host.url))
            .header("Authorization", format!("bearer {token}"))
            .call(),
    )?;
    assert_eq!(ok.status, 200, "{}", ok.text);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Connections: caps and timeouts

/// Tight connection limits, so a test can exceed them with a few hundred sockets and
/// wait out the timeouts in seconds.
fn tight_connections() -> ServerConfig {
    ServerConfig {
        header_read_timeout_ms: 1_000,
        body_read_timeout_ms: 1_000,
        idle_timeout_ms: 2_000,
        max_connections: 48,
        max_unauthenticated_connections: 24,
        max_unauthenticated_per_peer: 24,
        ..ServerConfig::default()
    }
}

/// A raw TCP connection to the host, for requests no well-behaved client sends.
fn raw_connection(host: &Host) -> Result<std::net::TcpStream> {
    let address = host.url.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(address)?;
    // Liveness bound only: every read below expects an answer or a close much sooner.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// Sends one whole request on `stream` and reads its answer: the status and the body.
fn raw_exchange(stream: &mut std::net::TcpStream, request: &str) -> Result<(u16, String)> {
    use std::io::Write as _;
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("not an HTTP answer: {status_line:?}"))?
        .parse()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8(body)?))
}

/// Whether the host has closed `stream`: a read ends (EOF or reset) instead of timing
/// out.
fn closed_by_host(stream: &mut std::net::TcpStream) -> bool {
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The value of an unlabelled series in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Result<f64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no series {name} in:\n{text}").into())
}

/// The hostile fixture of the HTTP server: hundreds of connections that send part of a
/// request head, with no token, and then nothing. Before connection caps and timeouts
/// they held one file descriptor each forever, until `/health` and the token holder
/// timed out.
#[test]
fn half_open_connections_are_closed_and_never_starve_the_token_holder() -> Result {
    use std::io::Write as _;
    let config = tight_connections();
    let host = Host::start(&[], config.clone())?;
    let authorization = host.bearer();

    // A client with the token, on a keep-alive connection opened before the flood.
    let mut kept = raw_connection(&host)?;
    let request = format!(
        "GET /v1/events/count HTTP/1.1\r\nHost: refract\r\nAuthorization: {authorization}\r\n\r\n"
    );
    assert_eq!(raw_exchange(&mut kept, &request)?.0, 200);

    // The flood: four times the whole connection cap.
    let flood = 4 * config.max_connections;
    let mut half_open = Vec::with_capacity(flood);
    for _ in 0..flood {
        let mut stream = raw_connection(&host)?;
        stream.write_all(b"GET /v1/events HTTP/1.1\r\nHost: refract\r\nX-Slow: ")?;
        half_open.push(stream);
    }

    // Mid-flood: new clients with the token, `/health`, and the kept connection are
    // all answered, and the flood holds no more than its share of connections.
    for _ in 0..5 {
        let count = host.get("/v1/events/count")?;
        assert_eq!(count.status, 200, "{}", count.text);
        let health = host.get_as("/health", Auth::Without)?;
        assert_eq!(health.status, 200, "{}", health.text);
    }
    assert_eq!(raw_exchange(&mut kept, &request)?.0, 200);
    let metrics = host.get("/metrics")?;
    let unauthenticated = metric(&metrics.text, "refract_http_unauthenticated_connections")?;
    assert!(
        unauthenticated <= config.max_unauthenticated_connections as f64,
        "{unauthenticated} unauthenticated connections are open"
    );
    let open = metric(&metrics.text, "refract_http_open_connections")?;
    assert!(
        open <= config.max_connections as f64,
        "{open} connections are open"
    );
    assert!(metric(&metrics.text, "refract_http_evicted_connections_total")? > 0.0);

    // Every half-open connection is closed by the host: the ones pushed out at once,
    // the last ones when their head has not arrived within the header timeout.
    let started = Instant::now();
    for (index, stream) in half_open.iter_mut().enumerate() {
        assert!(
            closed_by_host(stream),
            "half-open connection {index} of {flood} is still open after {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// A connection that stops halfway through its body gets 408; an idle keep-alive
/// connection, or one that never sends a byte, is closed after the idle timeout.
#[test]
fn slow_bodies_and_idle_connections_are_timed_out() -> Result {
    use std::io::Write as _;
    let host = Host::start(&[], tight_connections())?;
    let authorization = host.bearer();

    let mut slow_body = raw_connection(&host)?;
    slow_body.write_all(
        format!(
            "POST /v1/streams/s/events HTTP/1.1\r\nHost: refract\r\nAuthorization: {authorization}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"type\":"
        )
        .as_bytes(),
    )?;
    let (status, body) = raw_exchange(&mut slow_body, "")?;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("body_timeout"), "{body}");
    assert!(body.contains("server.body_read_timeout_ms"), "{body}");
    assert_eq!(
        host.log.head()?,
        0,
        "nothing of the cut-off body was appended"
    );

    let mut idle = raw_connection(&host)?;
    let request = format!(
        "GET /v1/events/count HTTP/1.1\r\nHost: refract\r\nAuthorization: {authorization}\r\n\r\n"
    );
    assert_eq!(raw_exchange(&mut idle, &request)?.0, 200);
    let mut silent = raw_connection(&host)?;
    assert!(
        closed_by_host(&mut idle),
        "the idle keep-alive connection stayed open"
    );
    assert!(
        closed_by_host(&mut silent),
        "the silent connection stayed open"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Events

#[test]
fn append_read_and_count_events() -> Result {
    let host = Host::start(&[], ServerConfig::default())?;

    let first = host.append(
        "order-1",
        &json!([
            {"type": "OrderPlaced", "data": {"total": 42}, "metadata": {"correlation_id": "c-1"}},
            {"type": "OrderPaid", "data": {"amount": 42}, "id": "pay-1"},
        ]),
    )?;
    assert_eq!(first, [1, 2]);

    // The object form with optimistic concurrency: the stream is at version 2.
    let second = host.append(
        "order-1",
        &json!({"events": [{"type": "OrderShipped", "data": {}}], "expected_version": 2}),
    )?;
    assert_eq!(second, [3]);
    let conflict = host.post(
        "/v1/streams/order-1/events",
        &json!({"events": [{"type": "OrderShipped", "data": {}}], "expected_version": 2}),
    )?;
    conflict.expect_error(409, "version_conflict");
    let fresh = host.append(
        "order-2",
        &json!({"events": [{"type": "OrderPlaced", "data": {"total": 7}}], "expected_version": 0}),
    )?;
    assert_eq!(fresh, [4]);

    // An idempotent retry gets the original offset and appends nothing.
    let retry = host.append(
        "order-1",
        &json!([{"type": "OrderPaid", "data": {"amount": 42}, "id": "pay-1"}]),
    )?;
    assert_eq!(retry, [2]);
    assert_eq!(host.log.head()?, 4);

    // A stream name may hold characters that need encoding in a path.
    assert_eq!(
        host.append("tenant%2Fa%20b", &json!([{"type": "X", "data": null}]))?,
        [5]
    );

    let all = host.get("/v1/events")?;
    assert_eq!(all.status, 200, "{}", all.text);
    let events = all.json["events"].as_array().ok_or("events")?;
    assert_eq!(offsets(events), [1, 2, 3, 4, 5]);
    assert_eq!(events[0]["type"], "OrderPlaced");
    assert_eq!(events[0]["data"], json!({"total": 42}));
    assert_eq!(events[0]["metadata"], json!({"correlation_id": "c-1"}));
    assert_eq!(events[0]["stream_version"], 1);
    assert_eq!(events[1]["id"], "pay-1");
    assert_eq!(events[4]["stream"], "tenant/a b");
    assert_eq!(all.json["next_from_offset"], Value::Null);

    let by_type = host.get("/v1/events?type=OrderPlaced&type=OrderShipped")?;
    assert_eq!(
        offsets(by_type.json["events"].as_array().ok_or("events")?),
        [1, 3, 4]
    );
    let by_stream = host.get("/v1/events?stream=order-1&from_offset=2")?;
    assert_eq!(
        offsets(by_stream.json["events"].as_array().ok_or("events")?),
        [2, 3]
    );
    let by_prefix = host.get("/v1/events?stream_prefix=order-&stream_prefix=tenant%2F")?;
    assert_eq!(
        offsets(by_prefix.json["events"].as_array().ok_or("events")?),
        [1, 2, 3, 4, 5]
    );
    let page = host.get("/v1/events?limit=2")?;
    assert_eq!(
        offsets(page.json["events"].as_array().ok_or("events")?),
        [1, 2]
    );
    assert_eq!(page.json["next_from_offset"], 3);
    let future = host.get("/v1/events?from_time=2999-01-01T00:00:00Z")?;
    assert_eq!(future.json["events"], json!([]));
    let past = host.get("/v1/events?until_time=2000-01-01T00:00:00Z")?;
    assert_eq!(past.json["events"], json!([]));

    let count = host.get("/v1/events/count?stream=order-1")?;
    assert_eq!(count.json, json!({"count": 3, "head": 5}));
    let count = host.get("/v1/events/count?type=OrderPlaced")?;
    assert_eq!(count.json, json!({"count": 2, "head": 5}));
    let count = host.get("/v1/events/count")?;
    assert_eq!(count.json, json!({"count": 5, "head": 5}));
    Ok(())
}

#[test]
fn bad_event_input_gets_the_right_4xx() -> Result {
    let config = ServerConfig {
        max_body_bytes: 4096,
        max_page_rows: 50,
        default_page_rows: 10,
        ..ServerConfig::default()
    };
    let host = Host::start(&[], config)?;
    let path = "/v1/streams/s/events";

    host.post_raw(path, Some("application/json"), b"[{\"type\": \"A\", ")?
        .expect_error(400, "invalid_json");
    host.post_raw(path, Some("application/json"), b"")?
        .expect_error(400, "invalid_json");
    host.post_raw(path, None, br#"[{"type":"A","data":{}}]"#)?
        .expect_error(415, "unsupported_media_type");
    host.post_raw(path, Some("text/plain"), br#"[{"type":"A","data":{}}]"#)?
        .expect_error(415, "unsupported_media_type");
    // Wrong types and shapes.
    host.post(path, &json!([{"type": 5, "data": {}}]))?
        .expect_error(422, "invalid_body");
    host.post(path, &json!([{"type": "A"}]))?
        .expect_error(422, "invalid_body");
    host.post(path, &json!([{"type": "A", "data": {}, "extra": 1}]))?
        .expect_error(422, "invalid_body");
    host.post(path, &json!({"events": [], "expected_version": "two"}))?
        .expect_error(422, "invalid_body");
    host.post(
        path,
        &json!({"events": [{"type": "A", "data": {}}], "expected_version": -1}),
    )?
    .expect_error(422, "invalid_body");
    host.post(path, &json!("just a string"))?
        .expect_error(422, "invalid_body");
    host.post(path, &json!([]))?
        .expect_error(422, "invalid_event");
    // Refused by the log's own validation, naming the field.
    let empty_type = host.post(path, &json!([{"type": "", "data": {}}]))?;
    empty_type.expect_error(422, "invalid_event");
    assert!(empty_type.text.contains("type"), "{}", empty_type.text);
    // Too large.
    let big = json!([{"type": "A", "data": {"blob": "x".repeat(8192)}}]);
    host.post(path, &big)?.expect_error(413, "body_too_large");
    // A stream name the log refuses (a control character).
    host.post(
        "/v1/streams/a%01b/events",
        &json!([{"type": "A", "data": {}}]),
    )?
    .expect_error(422, "invalid_event");
    // Invalid percent-encoding in the stream name.
    host.post(
        "/v1/streams/%FF/events",
        &json!([{"type": "A", "data": {}}]),
    )?
    .expect_error(400, "invalid_path");

    // Reads.
    host.get("/v1/events?limit=51")?
        .expect_error(400, "limit_too_large");
    host.get("/v1/events?limit=0")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/events?limit=-3")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/events?from_offset=abc")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/events?from_offset=1&from_offset=2")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/events?from_time=yesterday")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/events?stream=a&stream_prefix=b")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/events?colour=red")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/events/count?colour=red")?
        .expect_error(400, "invalid_parameter");
    let too_many_types: String = (0..101).map(|i| format!("type=t{i}&")).collect();
    host.get(&format!("/v1/events?{too_many_types}"))?
        .expect_error(400, "invalid_query");

    // Extreme but valid values are answered, not choked on.
    for query in [
        "from_offset=18446744073709551615",
        "to_offset=0",
        "from_time=9000-01-01T00:00:00Z&until_time=0001-01-01T00:00:00Z",
        "stream_prefix=",
    ] {
        let answer = host.get(&format!("/v1/events?{query}"))?;
        assert_eq!(answer.status, 200, "{query}: {}", answer.text);
        let answer = host.get(&format!(
            "/v1/events/count?{query}&limit=18446744073709551615"
        ))?;
        assert_eq!(answer.status, 200, "{query}: {}", answer.text);
    }
    host.get("/v1/events?from_offset=18446744073709551616")?
        .expect_error(400, "invalid_parameter");

    // Unknown routes and methods answer in the same shape.
    host.get("/v2/events")?.expect_error(404, "not_found");
    host.post("/v1/events", &json!({}))?
        .expect_error(405, "method_not_allowed");
    assert_eq!(host.log.head()?, 0, "nothing was appended");
    Ok(())
}

#[test]
fn a_page_never_exceeds_the_row_cap() -> Result {
    let config = ServerConfig {
        default_page_rows: 7,
        max_page_rows: 20,
        ..ServerConfig::default()
    };
    let host = Host::start(&[], config)?;
    host.append("s", &deposits("a", &[1; 30]))?;
    let page = host.get("/v1/events")?;
    assert_eq!(page.json["events"].as_array().map(Vec::len), Some(7));
    assert_eq!(page.json["next_from_offset"], 8);
    let page = host.get("/v1/events?limit=20&from_offset=21")?;
    assert_eq!(page.json["events"].as_array().map(Vec::len), Some(10));
    assert_eq!(page.json["next_from_offset"], Value::Null);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Subscriptions

#[test]
fn a_subscriber_gets_every_event_in_order_and_resumes_without_gaps() -> Result {
    let host = Host::start(&[], ServerConfig::default())?;
    // More than one page (256) before the subscription opens.
    host.append("acc-1", &deposits("acc-1", &[1; 300]))?;

    let mut subscription = host.subscribe("?from_offset=1", None)?;
    let replayed = subscription.events(300)?;
    assert_eq!(offsets(&replayed), (1..=300).collect::<Vec<_>>());

    // Live: appended while the subscriber waits, from another thread.
    std::thread::scope(|scope| -> Result {
        let appender = scope.spawn(|| -> std::result::Result<(), String> {
            for batch in 0..10 {
                std::thread::sleep(Duration::from_millis(5));
                host.append("acc-2", &deposits("acc-2", &[batch; 5]))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        let live = subscription.events(50)?;
        assert_eq!(offsets(&live), (301..=350).collect::<Vec<_>>());
        appender.join().map_err(|_| "the appender panicked")??;
        Ok(())
    })?;

    // Disconnect, miss some events, reconnect with the last id seen.
    drop(subscription);
    host.append("acc-3", &deposits("acc-3", &[7; 20]))?;
    let mut resumed = host.subscribe("", Some(350))?;
    let rest = resumed.events(20)?;
    assert_eq!(offsets(&rest), (351..=370).collect::<Vec<_>>());
    host.append("acc-3", &deposits("acc-3", &[8]))?;
    assert_eq!(offsets(&resumed.events(1)?), [371]);
    Ok(())
}

#[test]
fn subscriptions_filter_and_end() -> Result {
    let host = Host::start(&[], ServerConfig::default())?;
    host.append(
        "order-1",
        &json!([
            {"type": "OrderPlaced", "data": {}},
            {"type": "Noise", "data": {}},
            {"type": "OrderPlaced", "data": {}},
        ]),
    )?;
    host.append("other", &json!([{"type": "OrderPlaced", "data": {}}]))?;

    // Filters, and `limit` ends the stream after that many events.
    let mut filtered = host.subscribe("?type=OrderPlaced&stream_prefix=order-&limit=2", None)?;
    assert_eq!(offsets(&filtered.events(2)?), [1, 3]);
    assert_eq!(filtered.next()?, None);

    // `to_offset` ends it once the log is past it.
    let mut bounded = host.subscribe("?to_offset=2", None)?;
    assert_eq!(offsets(&bounded.events(2)?), [1, 2]);
    assert_eq!(bounded.next()?, None);

    // Bad input is refused before the stream starts.
    let answer = Host::answer(
        host.agent
            .get(format!("{}/v1/events/subscribe", host.url))
            .header("Authorization", host.bearer())
            .header("Last-Event-ID", "not-a-number")
            .call(),
    )?;
    answer.expect_error(400, "invalid_parameter");
    // The largest offset resumes after the end of any log: the stream waits.
    drop(host.subscribe("?limit=1", Some(u64::MAX))?);
    host.get("/v1/events/subscribe?bogus=1")?
        .expect_error(400, "invalid_parameter");
    host.get_as("/v1/events/subscribe", Auth::Without)?
        .expect_error(401, "unauthorized");
    Ok(())
}

#[test]
fn subscriptions_are_capped_and_end_at_shutdown() -> Result {
    let config = ServerConfig {
        max_subscribers: 1,
        ..ServerConfig::default()
    };
    let mut host = Host::start(&[], config)?;
    let mut open = host.subscribe("", None)?;
    host.get("/v1/events/subscribe")?
        .expect_error(503, "too_many_subscribers");
    host.append("s", &json!([{"type": "A", "data": 1}]))?;
    assert_eq!(offsets(&open.events(1)?), [1]);

    // A graceful shutdown ends open streams instead of waiting for them forever.
    host.stop()?;
    assert_eq!(open.next()?, None);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Projectors

#[test]
fn projectors_are_listed_shown_and_managed() -> Result {
    let host = Host::start(&["balances"], ServerConfig::default())?;
    host.append(
        "acc-1",
        &json!([
            {"type": "account.opened", "data": {"account": "acc-1", "owner": "Ann"}},
            {"type": "money.deposited", "data": {"account": "acc-1", "amount": 250}},
        ]),
    )?;
    host.wait_caught_up("balances")?;

    let list = host.get("/v1/projectors")?;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json["projectors"][0]["name"], "balances");
    assert_eq!(list.json["rejected"], json!([]));

    let shown = host.get("/v1/projectors/balances")?;
    assert_eq!(shown.status, 200, "{}", shown.text);
    let active = shown.json["active_version"]
        .as_str()
        .ok_or("no active version")?;
    let version = &shown.json["versions"][0];
    assert_eq!(version["version"], active);
    assert_eq!(version["role"], "active");
    // The example is built with the current Rust SDK, which implements 0.2.0.
    assert_eq!(version["contract"], "refract:projector@0.2.0");
    let status = &version["status"];
    for field in [
        "state",
        "checkpoint",
        "head",
        "events_per_second",
        "last_error",
        "dead_letters",
    ] {
        assert!(
            status.get(field).is_some(),
            "status lacks {field}: {status}"
        );
    }
    assert_eq!(status["checkpoint"], 2);

    // Unknown projectors and names that are not projector names.
    host.get("/v1/projectors/nope")?
        .expect_error(404, "unknown_projector");
    for bad in ["a%2Fb", "..%2Fetc", "%2e%2e", "a%5Cb", "UPPER", "a%00b"] {
        host.get(&format!("/v1/projectors/{bad}"))?
            .expect_error(400, "invalid_name");
        host.post(
            &format!("/v1/projectors/{bad}/query"),
            &json!({"sql": "SELECT 1"}),
        )?
        .expect_error(400, "invalid_name");
    }

    // Nothing to promote, abort or roll back to.
    host.post("/v1/projectors/balances/promote", &json!({}))?
        .expect_error(409, "conflict");
    host.post("/v1/projectors/balances/abort", &json!({}))?
        .expect_error(409, "conflict");
    host.post("/v1/projectors/balances/rollback", &json!({}))?
        .expect_error(409, "conflict");
    host.post("/v1/projectors/nope/promote", &json!({}))?
        .expect_error(404, "unknown_projector");

    // Dead letters: none.
    let letters = host.get("/v1/projectors/balances/dead-letters")?;
    assert_eq!(
        letters.json,
        json!({"dead_letters": []}),
        "{}",
        letters.text
    );
    host.get("/v1/projectors/balances/dead-letters?limit=0")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/projectors/nope/dead-letters")?
        .expect_error(404, "unknown_projector");
    Ok(())
}

#[test]
fn deploying_a_new_version_swaps_it_in_and_rollback_returns() -> Result {
    let host = Host::start(&["cars-v1"], ServerConfig::default())?;
    host.append(
        "car-1",
        &json!([
            {"type": "customer.created", "data": {"name": "Bob"}},
            {"type": "car.created", "data": {"by": "Ann", "color": "red"}},
        ]),
    )?;
    host.wait_caught_up("cars")?;
    let v1 = host.get("/v1/projectors/cars")?.json["active_version"].clone();

    // The same bytes again: nothing to do.
    let same = host.post_raw(
        "/v1/projectors/cars/versions",
        Some("application/wasm"),
        &support::guests::guest_bytes("cars-v1"),
    )?;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(same.json["outcome"], "already-active");

    // Malformed components and mismatched names are refused with 422.
    let garbage = host.post_raw(
        "/v1/projectors/cars/versions",
        Some("application/wasm"),
        b"\0asm not really",
    )?;
    garbage.expect_error(422, "invalid_component");
    host.post_raw(
        "/v1/projectors/cars/versions",
        Some("application/wasm"),
        b"",
    )?
    .expect_error(422, "invalid_component");
    host.post_raw(
        "/v1/projectors/balances/versions",
        Some("application/wasm"),
        &support::guests::guest_bytes("cars-v1"),
    )?
    .expect_error(422, "name_mismatch");

    // A new version: 202, replayed, swapped in.
    let deployed = host.post_raw(
        "/v1/projectors/cars/versions",
        Some("application/wasm"),
        &support::guests::guest_bytes("cars-v2"),
    )?;
    assert_eq!(deployed.status, 202, "{}", deployed.text);
    assert_eq!(deployed.json["projector"], "cars");
    assert_eq!(deployed.json["outcome"], "started");
    let v2 = deployed.json["version"].clone();
    assert_ne!(v1, v2);
    wait_until(Duration::from_secs(60), "the swap to v2", || {
        host.get("/v1/projectors/cars")
            .is_ok_and(|a| a.json["active_version"] == v2)
    })?;

    // Roll back to v1.
    let rolled = host.post("/v1/projectors/cars/rollback", &json!({}))?;
    assert_eq!(rolled.status, 200, "{}", rolled.text);
    assert_eq!(rolled.json["version"], v1);
    assert_eq!(rolled.json["action"], "rollback");
    wait_until(Duration::from_secs(60), "the rollback to v1", || {
        host.get("/v1/projectors/cars")
            .is_ok_and(|a| a.json["active_version"] == v1)
    })?;
    Ok(())
}

#[test]
fn the_diff_compares_the_shadow_with_the_active_version_and_runs_the_gate() -> Result {
    let gates = tempfile::tempdir()?;
    let gate = gates.path().join("no-charlie.sql");
    std::fs::write(
        &gate,
        "-- a sold car keeps its buyer's old name\nSELECT car_id FROM cars WHERE customer_name = 'Charlie';\n",
    )?;
    let mut config = Config::default();
    config.projectors.insert(
        "cars".into(),
        ProjectorSection {
            promote: PromoteMode::Manual,
            diff_gate: Some(gate.clone()),
            ..ProjectorSection::default()
        },
    );
    let host = Host::start_configured(&["cars-v1"], ServerConfig::default(), config, |_| Ok(()))?;
    host.log.append(refract::workload::cars_story(1))?;
    host.wait_caught_up("cars")?;
    host.get("/v1/projectors/cars/diff")?
        .expect_error(409, "nothing_to_compare");

    let deployed = host.post_raw(
        "/v1/projectors/cars/versions",
        Some("application/wasm"),
        &support::guests::guest_bytes("cars-v2"),
    )?;
    assert_eq!(deployed.status, 202, "{}", deployed.text);
    let v2 = deployed.json["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let v1 = host.get("/v1/projectors/cars")?.json["active_version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let head = host.log.head()?;
    wait_until(Duration::from_secs(60), "the shadow to catch up", || {
        host.engine.projector("cars").is_some_and(|view| {
            view.versions.iter().any(|version| {
                version.version == v2
                    && version
                        .status
                        .as_ref()
                        .is_some_and(|s| s.checkpoint >= head)
            })
        })
    })?;

    let diff = host.get("/v1/projectors/cars/diff")?;
    assert_eq!(diff.status, 200, "{}", diff.text);
    let json = &diff.json;
    assert_eq!(json["projector"], "cars");
    assert_eq!(json["base"], json!({"version": v1, "role": "active"}));
    assert_eq!(json["other"], json!({"version": v2, "role": "shadow"}));
    let table = |name: &str| {
        json["tables"]
            .as_array()
            .and_then(|tables| tables.iter().find(|t| t["table"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let cars = table("cars");
    assert_eq!(
        (cars["base_rows"].clone(), cars["other_rows"].clone()),
        (json!(2), json!(2))
    );
    assert_ne!(cars["base_checksum"], cars["other_checksum"]);
    let row_with = |rows: &Value, name: &str| {
        rows.as_array()
            .is_some_and(|rows| rows.iter().any(|row| row.to_string().contains(name)))
    };
    assert!(row_with(&cars["only_in_base"], "'Bob'"), "{cars}");
    assert!(row_with(&cars["only_in_other"], "'Charlie'"), "{cars}");
    assert_eq!(table("customers")["schema_differs"], false);
    // The gate, run on the pair even though promotion is manual: it refuses.
    assert_eq!(json["gate"]["file"], gate.display().to_string());
    assert_eq!(json["gate"]["passed"], false);
    let reason = json["gate"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("assertion 1") && reason.contains("hrxs21"),
        "{reason}"
    );

    // Another version, fewer sample rows; refusals name the problem.
    let same = host.get(&format!("/v1/projectors/cars/diff?version={v1}&sample=0"))?;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(same.json["other"]["version"], v1);
    assert!(same.json["tables"].as_array().is_some_and(|tables| {
        tables
            .iter()
            .all(|t| t["base_checksum"] == t["other_checksum"])
    }));
    let unsampled = host.get("/v1/projectors/cars/diff?sample=0")?;
    assert_eq!(unsampled.json["tables"][0]["only_in_base"], json!([]));
    host.get("/v1/projectors/cars/diff?sample=101")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/projectors/cars/diff?version=ffffffff")?
        .expect_error(404, "unknown_version");
    host.get("/v1/projectors/cars/diff?colour=red")?
        .expect_error(400, "invalid_parameter");
    host.get("/v1/projectors/nope/diff")?
        .expect_error(404, "unknown_projector");
    host.get("/v1/projectors/No%2FPe/diff")?
        .expect_error(400, "invalid_name");
    Ok(())
}

#[test]
fn uploads_have_their_own_size_limit() -> Result {
    let config = ServerConfig {
        max_upload_bytes: 1024,
        ..ServerConfig::default()
    };
    let host = Host::start(&[], config)?;
    let big = vec![0u8; 4096];
    host.post_raw(
        "/v1/projectors/cars/versions",
        Some("application/wasm"),
        &big,
    )?
    .expect_error(413, "body_too_large");
    Ok(())
}

// ---------------------------------------------------------------------------------
// Queries

#[test]
fn queries_read_the_active_model_with_its_checkpoint() -> Result {
    let host = Host::start(&["balances"], ServerConfig::default())?;
    host.append(
        "acc",
        &json!([
            {"type": "account.opened", "data": {"account": "a-1", "owner": "Ann"}},
            {"type": "money.deposited", "data": {"account": "a-1", "amount": 250}},
            {"type": "account.opened", "data": {"account": "a-2", "owner": "Bo"}},
            {"type": "money.deposited", "data": {"account": "a-2", "amount": 40}},
        ]),
    )?;
    host.wait_caught_up("balances")?;

    let answer = host.post(
        "/v1/projectors/balances/query",
        &json!({
            "sql": "SELECT account, owner, balance, ?2 AS label, ?3 AS missing, ?4 * 2 AS real \
                    FROM balances WHERE balance > ?1 ORDER BY account",
            "params": [100, "x", null, 2.5],
        }),
    )?;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.json["columns"],
        json!(["account", "owner", "balance", "label", "missing", "real"])
    );
    assert_eq!(
        answer.json["rows"],
        json!([["a-1", "Ann", 250, "x", null, 5.0]])
    );
    assert_eq!(answer.json["checkpoint"], 4);
    assert_eq!(answer.json["truncated"], false);
    assert!(answer.json["version"].is_string());

    let all = host.post(
        "/v1/projectors/balances/query",
        &json!({"sql": "SELECT count(*) AS n FROM balances"}),
    )?;
    assert_eq!(all.json["rows"], json!([[2]]), "{}", all.text);
    Ok(())
}

#[test]
fn queries_cannot_write_attach_pragma_or_run_forever() -> Result {
    let config = ServerConfig {
        query_timeout_ms: 200,
        max_query_rows: 3,
        ..ServerConfig::default()
    };
    let host = Host::start(&["balances"], config)?;
    host.append("acc", &deposits("a", &[1, 2, 3]))?;
    host.append("acc", &deposits("b", &[1]))?;
    host.append("acc", &deposits("c", &[1]))?;
    host.append("acc", &deposits("d", &[1]))?;
    host.wait_caught_up("balances")?;
    let path = "/v1/projectors/balances/query";
    let query = |sql: &str| host.post(path, &json!({"sql": sql}));

    for sql in [
        "INSERT INTO balances (account, balance, tx_count, last_offset) VALUES ('x', 1, 1, 1)",
        "UPDATE balances SET balance = 0",
        "DELETE FROM balances",
        "DROP TABLE balances",
        "CREATE TABLE evil (x)",
        "CREATE TEMP TABLE evil (x)",
        "ALTER TABLE balances ADD COLUMN x",
        "ATTACH DATABASE '/tmp/evil.db' AS evil",
        "DETACH DATABASE main",
        "PRAGMA journal_mode",
        "PRAGMA writable_schema = ON",
        "SELECT * FROM pragma_table_info('balances')",
        "BEGIN IMMEDIATE",
        "SAVEPOINT s",
        "SELECT load_extension('/tmp/evil.so')",
        "REINDEX",
        "ANALYZE",
        "VACUUM",
    ] {
        let answer = query(sql)?;
        assert!(
            answer.status == 403 || answer.status == 400,
            "{sql}: {} {}",
            answer.status,
            answer.text
        );
        let code = answer.error_code();
        assert!(
            code == "query_not_allowed" || code == "invalid_sql",
            "{sql}: {}",
            answer.text
        );
    }
    query("ATTACH DATABASE '/tmp/evil.db' AS evil")?.expect_error(403, "query_not_allowed");
    query("PRAGMA table_info(balances)")?.expect_error(403, "query_not_allowed");
    query("DELETE FROM balances")?.expect_error(403, "query_not_allowed");
    // A second statement is refused, whatever it is.
    let two = query("SELECT 1; DELETE FROM balances")?;
    assert!(matches!(two.status, 400 | 403), "{}", two.text);
    // The model is untouched.
    let count = query("SELECT count(*) FROM balances")?;
    assert_eq!(count.json["rows"], json!([[4]]), "{}", count.text);

    // Too long.
    let started = Instant::now();
    query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
         SELECT count(*) FROM n",
    )?
    .expect_error(422, "query_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The row cap.
    let capped = query("SELECT account FROM balances ORDER BY account")?;
    assert_eq!(capped.json["rows"], json!([["a"], ["b"], ["c"]]));
    assert_eq!(capped.json["truncated"], true);

    // Bad SQL, bad params, bad bodies.
    query("SELEKT 1")?.expect_error(400, "invalid_sql");
    query("SELECT * FROM no_such_table")?.expect_error(400, "invalid_sql");
    host.post(path, &json!({"sql": "SELECT ?1", "params": [{"a": 1}]}))?
        .expect_error(400, "invalid_params");
    host.post(path, &json!({"sql": "SELECT ?1", "params": []}))?
        .expect_error(400, "invalid_params");
    host.post(path, &json!({"sql": "SELECT ?1", "params": "x"}))?
        .expect_error(422, "invalid_body");
    host.post(path, &json!({"query": "SELECT 1"}))?
        .expect_error(422, "invalid_body");
    host.post_raw(path, Some("application/json"), b"{not json")?
        .expect_error(400, "invalid_json");
    host.post("/v1/projectors/nope/query", &json!({"sql": "SELECT 1"}))?
        .expect_error(404, "unknown_projector");
    Ok(())
}

// ---------------------------------------------------------------------------------
// Operations

#[test]
fn health_is_ok_or_degraded_with_reasons() -> Result {
    let host = Host::start(&["balances"], ServerConfig::default())?;
    let ok = host.get_as("/health", Auth::Without)?;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json, json!({"status": "ok", "reasons": []}));
    drop(host);

    let broken = Host::start_with(&["balances"], ServerConfig::default(), |data| {
        std::fs::write(data.plugins().join("broken.wasm"), b"not a component")?;
        Ok(())
    })?;
    let degraded = broken.get_as("/health", Auth::Without)?;
    assert_eq!(degraded.status, 503, "{}", degraded.text);
    assert_eq!(degraded.json["status"], "degraded");
    let reasons = degraded.json["reasons"].as_array().ok_or("reasons")?;
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("broken.wasm"))),
        "{}",
        degraded.text
    );

    // Stalled versions and lag above `server.health_max_lag` are unit-tested in
    // `api::operations`, where a status can be made up without waiting on a worker.
    Ok(())
}

#[test]
fn metrics_are_valid_prometheus_text() -> Result {
    let host = Host::start(&["balances"], ServerConfig::default())?;
    host.append("acc", &deposits("a", &[1, 2, 3]))?;
    host.append("acc", &deposits("a", &[4]))?;
    host.wait_caught_up("balances")?;

    let metrics = host.get("/metrics")?;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    assert!(
        metrics
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.content_type
    );
    check_exposition(&metrics.text)?;

    let scrape =
        prometheus_parse::Scrape::parse(metrics.text.lines().map(|line| Ok(line.to_owned())))?;
    let value = |name: &str, projector: Option<&str>| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name && projector.is_none_or(|p| s.labels.get("projector") == Some(p))
            })
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    };
    assert_eq!(value("refract_events_appended_total", None), Some(4.0));
    assert_eq!(value("refract_log_head", None), Some(4.0));
    // The stream index's tail: the four events, or none once the idle writer indexed them.
    let unindexed = value("refract_log_unindexed_events", None).ok_or("no unindexed gauge")?;
    assert!((0.0..=4.0).contains(&unindexed), "{unindexed}");
    assert_eq!(
        value("refract_events_projected_total", Some("balances")),
        Some(4.0)
    );
    assert_eq!(
        value("refract_projector_lag_events", Some("balances")),
        Some(0.0)
    );
    assert_eq!(value("refract_traps_total", Some("balances")), Some(0.0));
    assert_eq!(
        value("refract_dead_letters_total", Some("balances")),
        Some(0.0)
    );
    // The engine counts a first version's activation as a swap too.
    assert!(value("refract_swaps_total", None).is_some());
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "refract_batch_latency_seconds")
        .ok_or("no batch-latency histogram")?;
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.len() >= 10, "{buckets:?}");
            let last = buckets.last().ok_or("no buckets")?;
            assert!(last.less_than.is_infinite());
            assert!(last.count >= 1.0);
        }
        other => return Err(format!("not a histogram: {other:?}").into()),
    }
    assert!(metrics.text.contains("refract_replay_progress_ratio"));
    assert!(metrics.text.contains("refract_projector_version_info{"));
    Ok(())
}

/// A strict check of the text exposition format: every line is a `# HELP`, `# TYPE`,
/// `# UNIT` or the final `# EOF`, or a sample `name{label="value",...} number` whose
/// family was declared by a `# TYPE` line before it.
fn check_exposition(text: &str) -> Result {
    let mut declared: Vec<(String, String)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().ok_or(format!("bad comment line: {line}"))?;
            assert!(valid_name(name), "bad metric name in: {line}");
            match keyword {
                "TYPE" => {
                    let kind = parts.next().ok_or(format!("no type: {line}"))?;
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown"
                        ]
                        .contains(&kind),
                        "bad type: {line}"
                    );
                    declared.push((name.to_owned(), kind.to_owned()));
                }
                "HELP" | "UNIT" => {}
                _ => return Err(format!("unknown comment: {line}").into()),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                Some(
                    labels
                        .strip_suffix('}')
                        .ok_or(format!("unclosed labels: {line}"))?,
                ),
            ),
            None => (series, None),
        };
        assert!(valid_name(name), "bad sample name: {line}");
        if let Some(labels) = labels {
            check_labels(labels, line)?;
        }
        let (family, kind) = declared
            .iter()
            .find(|(family, _)| name.starts_with(family.as_str()))
            .ok_or(format!("sample before its # TYPE: {line}"))?;
        let suffix = &name[family.len()..];
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[""],
        };
        assert!(
            allowed.contains(&suffix),
            "{suffix:?} is not a {kind} sample: {line}"
        );
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name="value",...` with escaped values.
fn check_labels(mut labels: &str, line: &str) -> Result {
    while !labels.is_empty() {
        let (name, rest) = labels
            .split_once("=\"")
            .ok_or(format!("bad label: {line}"))?;
        assert!(valid_name(name), "bad label name: {line}");
        let mut end = None;
        let mut escaped = false;
        for (index, c) in rest.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(index);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or(format!("unterminated label value: {line}"))?;
        labels = &rest[end + 1..];
        labels = labels.strip_prefix(',').unwrap_or(labels);
    }
    Ok(())
}

#[test]
fn the_token_file_is_what_the_cli_uses() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    let (token, created) = Token::load_or_create(&data)?;
    assert!(created);
    let read = Token::read_file(&data)?.ok_or("no token file")?;
    assert_eq!(read.secret(), token.secret());
    Ok(())
}

// ---------------------------------------------------------------------------------
// The CLI against the running host

/// `refract` with `args`, pointed at `url`, with the environment cleared of ours.
fn cli(url: &str, data: &std::path::Path, token: Option<&str>, args: &[&str]) -> Result<Output> {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_refract"));
    command
        .arg("--url")
        .arg(url)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("REFRACT_DATA")
        .env_remove("REFRACT_URL")
        .env_remove("REFRACT_TOKEN")
        .env_remove("REFRACT_CONFIG");
    if let Some(token) = token {
        command.env("REFRACT_TOKEN", token);
    }
    let output = command.output()?;
    Ok(Output {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    })
}

/// What a CLI run printed.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

#[test]
fn the_cli_talks_to_the_running_host() -> Result {
    let host = Host::start(&["balances"], ServerConfig::default())?;
    host.append(
        "acc",
        &json!([
            {"type": "account.opened", "data": {"account": "a-1", "owner": "Ann"}},
            {"type": "money.deposited", "data": {"account": "a-1", "amount": 250}},
        ]),
    )?;
    host.wait_caught_up("balances")?;
    let scratch = tempfile::tempdir()?;
    let token = host.token.secret().to_owned();
    let run = |args: &[&str]| cli(&host.url, scratch.path(), Some(&token), args);

    let status = run(&["status", "--json"])?;
    assert_eq!(status.code, Some(0), "{status:?}");
    let row: Value = serde_json::from_str(status.stdout.lines().next().ok_or("no row")?)?;
    assert_eq!(row["projector"], "balances");
    assert_eq!(row["role"], "active");
    assert_eq!(row["contract"], "refract:projector@0.2.0");
    assert_eq!(row["checkpoint"], 2);
    let table = run(&["status"])?;
    assert!(table.stdout.starts_with("PROJECTOR"), "{table:?}");
    assert!(table.stdout.contains("balances"), "{table:?}");
    assert!(table.stdout.contains("projector@0.2.0"), "{table:?}");

    let query = run(&["query", "balances", "SELECT account, balance FROM balances"])?;
    assert_eq!(query.code, Some(0), "{query:?}");
    assert_eq!(query.stdout, "account  balance\na-1      250\n");
    let json = run(&[
        "query",
        "balances",
        "SELECT owner FROM balances WHERE balance > ?1",
        "--param",
        "100",
        "--json",
    ])?;
    let answer: Value = serde_json::from_str(&json.stdout)?;
    assert_eq!(answer["rows"], json!([["Ann"]]), "{json:?}");
    let refused = run(&["query", "balances", "DELETE FROM balances"])?;
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("query_not_allowed"), "{refused:?}");

    let tail = run(&["tail", "--from-offset", "1", "--limit", "2"])?;
    assert_eq!(tail.code, Some(0), "{tail:?}");
    let lines: Vec<Value> = tail
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(offsets(&lines), [1, 2]);

    let promote = run(&["promote", "balances"])?;
    assert_eq!(promote.code, Some(1));
    assert!(promote.stderr.contains("409 conflict"), "{promote:?}");

    let balances = support::guests::guest("balances");
    let deploy = run(&["deploy", &balances.display().to_string()])?;
    assert_eq!(deploy.code, Some(0), "{deploy:?}");
    assert!(deploy.stdout.contains("already active"), "{deploy:?}");

    // A token the host refuses means it is another data directory's host: the status
    // comes from disk (here: an empty data directory), and says so.
    let stranger = cli(
        &host.url,
        scratch.path(),
        Some("not-the-token-of-this-host"),
        &["status"],
    )?;
    assert_eq!(stranger.code, Some(0), "{stranger:?}");
    assert!(
        stranger.stdout.contains("no projectors yet"),
        "{stranger:?}"
    );
    assert!(stranger.stderr.contains("does not accept"), "{stranger:?}");
    // Other commands fail with the host's answer.
    let refused = cli(
        &host.url,
        scratch.path(),
        None,
        &["query", "balances", "SELECT 1"],
    )?;
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("401 unauthorized"), "{refused:?}");
    Ok(())
}

#[test]
fn without_a_host_the_cli_falls_back_or_says_it_needs_one() -> Result {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    for args in [
        &["promote", "balances"][..],
        &["rollback", "balances"],
        &["abort", "balances"],
        &["query", "balances", "SELECT 1"],
        &["tail"],
    ] {
        let output = cli(&url, &data, Some("0123456789abcdef0123"), args)?;
        assert_eq!(output.code, Some(1), "{args:?}: {output:?}");
        assert!(
            output.stderr.contains("needs a running host") && output.stderr.contains("refract run"),
            "{args:?}: {output:?}"
        );
    }

    let status = cli(&url, &data, None, &["status"])?;
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(status.stdout.contains("no projectors yet"), "{status:?}");

    let balances = support::guests::guest("balances");
    let deploy = cli(
        &url,
        &data,
        None,
        &["deploy", &balances.display().to_string()],
    )?;
    assert_eq!(deploy.code, Some(0), "{deploy:?}");
    assert!(
        deploy.stdout.contains("no refract host answers"),
        "{deploy:?}"
    );
    let copied = data.join("plugins").join("balances.wasm");
    assert_eq!(std::fs::read(&copied)?, std::fs::read(&balances)?);

    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"not a component")?;
    let refused = cli(
        &url,
        &data,
        None,
        &["deploy", &broken.display().to_string()],
    )?;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("not a valid projector component"),
        "{refused:?}"
    );
    assert!(!data.join("plugins").join("broken.wasm").exists());
    Ok(())
}
