//! Refract cluster nodes as child processes of the real binary (`refract run --cluster
//! <urls> --node <name>`), driven over their HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use ureq::Agent;

use super::host::RunningHost;

/// The API token every test node serves with.
pub const TOKEN: &str = "cluster-test-token-0123456789abcdef";

/// How long a node may take to start, or the nodes to agree.
pub const LIVENESS: Duration = Duration::from_secs(120);

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body, parsed (`Null` if it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node's name.
    pub name: String,
    /// Its data directory.
    pub data: PathBuf,
    /// The NATS URLs, comma-separated.
    pub urls: String,
    /// The JetStream stream (unique per test).
    pub stream: String,
    /// Stream replicas.
    pub replicas: usize,
    /// Guests to put in its plugins folder (by guest name).
    pub plugins: Vec<&'static str>,
    /// More of `refract.toml` (e.g. `[projectors.cars]` sections), appended as is.
    pub extra_config: String,
}

/// A running node.
pub struct Node {
    /// How it was started (to start it again).
    pub spec: NodeSpec,
    host: Option<RunningHost>,
    /// Its API, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    agent: Agent,
}

impl Node {
    /// Writes the node's configuration, copies its plugins and starts it; returns once
    /// it answers HTTP.
    ///
    /// # Panics
    /// If it does not start.
    pub fn start(binary: &Path, spec: NodeSpec) -> Node {
        let plugins = spec.data.join("plugins");
        std::fs::create_dir_all(&plugins).expect("a plugins folder");
        for guest in &spec.plugins {
            let target = plugins.join(format!("{guest}.wasm"));
            if !target.exists() {
                std::fs::copy(super::guests::guest(guest), &target).expect("a plugin copied");
            }
        }
        let config = spec.data.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "[log]\ndurability = \"normal\"\n[cluster]\nstream = \"{}\"\nreplicas = {}\npublish_timeout_ms = 10000\n{}",
                spec.stream, spec.replicas, spec.extra_config
            ),
        )
        .expect("a configuration file");
        let cwd = spec.data.parent().unwrap_or(&spec.data).to_path_buf();
        let mut host = RunningHost::start_with(
            binary,
            &cwd,
            &spec.data,
            &config,
            &["--token", TOKEN],
            &["--cluster", &spec.urls, "--node", &spec.name],
        )
        .expect("refract run starts");
        host.wait_serving(LIVENESS);
        let line = host.wait_for_line(LIVENESS, "http api:");
        let url = line
            .split("http api:")
            .nth(1)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Node {
            spec,
            host: Some(host),
            url,
            agent,
        }
    }

    /// Its plugins folder.
    pub fn plugins_dir(&self) -> PathBuf {
        self.spec.data.join("plugins")
    }

    /// The running process.
    ///
    /// # Panics
    /// If the node was killed.
    pub fn host(&mut self) -> &mut RunningHost {
        self.host.as_mut().expect("the node is running")
    }

    /// `kill -9`.
    pub fn kill_9(&mut self) {
        if let Some(host) = self.host.take() {
            host.kill_9().expect("kill -9");
        }
    }

    /// SIGTERM and a clean exit.
    pub fn stop(&mut self) {
        if let Some(host) = self.host.take() {
            let status = host.terminate(LIVENESS);
            assert!(
                status.success(),
                "node {} exited with {status}",
                self.spec.name
            );
        }
    }

    /// Starts the node again on its data directory.
    pub fn restart(&mut self, binary: &Path) {
        let restarted = Node::start(binary, self.spec.clone());
        self.host = restarted.host;
        self.url = restarted.url;
    }

    fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text = response
                    .body_mut()
                    .with_config()
                    .limit(256 * 1024 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                let json = serde_json::from_str(&text).unwrap_or(Value::Null);
                Answer { status, json, text }
            }
            // A node that is down or restarting: no HTTP status at all.
            Err(error) => Answer {
                status: 0,
                json: Value::Null,
                text: error.to_string(),
            },
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Answer {
        Node::answer(
            self.agent
                .get(format!("{}{path}", self.url))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .call(),
        )
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        Node::answer(
            self.agent
                .post(format!("{}{path}", self.url))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .header("Content-Type", "application/json")
                .send(body.to_string()),
        )
    }

    /// Appends `events` (`[{type, data, id?}]`) to `stream`, with `expected_version`
    /// if given.
    pub fn append(&self, stream: &str, events: Value, expected_version: Option<u64>) -> Answer {
        let body = match expected_version {
            Some(version) => json!({"events": events, "expected_version": version}),
            None => events,
        };
        self.post(&format!("/v1/streams/{stream}/events"), &body)
    }

    /// `GET /v1/cluster`.
    pub fn cluster(&self) -> Value {
        self.get("/v1/cluster").json
    }

    /// The whole log, in offset order.
    pub fn events(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut from = 1;
        loop {
            let page = self.get(&format!("/v1/events?from_offset={from}&limit=10000"));
            assert_eq!(page.status, 200, "{}", page.text);
            let events = page.json["events"].as_array().cloned().unwrap_or_default();
            all.extend(events);
            match page.json["next_from_offset"].as_u64() {
                Some(next) => from = next,
                None => return all,
            }
        }
    }

    /// The log head, as `/v1/cluster` reports it.
    pub fn head(&self) -> u64 {
        self.cluster()["mirror_head"].as_u64().unwrap_or(0)
    }

    /// Runs a query on a projector's read model: `(checkpoint, rows)`.
    pub fn query(&self, projector: &str, sql: &str) -> Option<(u64, Value)> {
        let answer = self.post(
            &format!("/v1/projectors/{projector}/query"),
            &json!({"sql": sql}),
        );
        (answer.status == 200).then(|| {
            (
                answer.json["checkpoint"].as_u64().unwrap_or(0),
                answer.json["rows"].clone(),
            )
        })
    }

    /// The node's last lines of output.
    pub fn tail(&self) -> String {
        self.host.as_ref().map_or_else(String::new, |h| h.tail(30))
    }
}
