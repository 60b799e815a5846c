//! Cluster mode on real NATS JetStream: `refract run --cluster` nodes (child processes
//! of the real binary) on `nats-server` processes (the Debian package) on loopback.
//!
//! The tests that leave NATS running share one three-server cluster (replicas 3), each
//! with its own stream; the ones that kill NATS servers start their own. Without
//! `nats-server` installed they fail, naming `apt-get install -y nats-server`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{LIVENESS, Node, NodeSpec};
use support::host::wait_until_showing;
use support::nats::{self, NatsCluster};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn refract() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_refract"))
}

/// A node spec in `dir`, with the balances projector.
fn spec(dir: &Path, name: &str, urls: &str, stream: &str, replicas: usize) -> NodeSpec {
    NodeSpec {
        name: name.to_owned(),
        data: dir.join(name),
        urls: urls.to_owned(),
        stream: stream.to_owned(),
        replicas,
        plugins: vec!["balances"],
        extra_config: String::new(),
    }
}

/// The fields that must be identical on every node, per event.
fn fingerprint(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}|{}|{}|{}|{}|{}|{}|{}",
                e["offset"],
                e["id"],
                e["stream"],
                e["stream_version"],
                e["type"],
                e["data"],
                e["metadata"],
                e["recorded_at"]
            )
        })
        .collect()
}

/// Waits until every node has the same log as the first (same offsets, same events)
/// and reports no lag, then returns that log.
fn converged(nodes: &[&Node]) -> Vec<Value> {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let logs: Vec<Vec<String>> = nodes.iter().map(|n| fingerprint(&n.events())).collect();
        let lag_zero = nodes.iter().all(|n| n.cluster()["lag"].as_u64() == Some(0));
        if lag_zero && logs.windows(2).all(|pair| pair[0] == pair[1]) {
            return nodes[0].events();
        }
        let last = format!(
            "heads {:?}; cluster views: {:?}",
            logs.iter().map(Vec::len).collect::<Vec<_>>(),
            nodes.iter().map(|n| n.cluster()).collect::<Vec<_>>()
        );
        assert!(
            Instant::now() < deadline,
            "the nodes did not converge within {LIVENESS:?}: {last}\n{}",
            nodes
                .iter()
                .map(|n| n.tail())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Offsets exactly 1..=N, each stream's versions exactly 1..=k in offset order.
fn assert_gap_free(events: &[Value]) {
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["offset"].as_u64(), Some(index as u64 + 1), "{event}");
        let stream = event["stream"].as_str().unwrap_or_default().to_owned();
        let version = versions.entry(stream).or_insert(0);
        *version += 1;
        assert_eq!(event["stream_version"].as_u64(), Some(*version), "{event}");
    }
}

/// Waits until the balances read model of every node is at `head` and returns each
/// node's rows.
fn balances_everywhere(nodes: &[&Node], head: u64) -> Vec<Value> {
    nodes
        .iter()
        .map(|node| {
            let mut rows = Value::Null;
            wait_until_showing(
                LIVENESS,
                &format!(
                    "node {}'s balances read model at offset {head}",
                    node.spec.name
                ),
                || match node.query(
                    "balances",
                    "SELECT account, balance, tx_count FROM balances ORDER BY account",
                ) {
                    Some((checkpoint, found)) if checkpoint >= head => {
                        rows = found;
                        true
                    }
                    _ => false,
                },
                || node.tail(),
            );
            rows
        })
        .collect()
}

fn deposit(account: &str, amount: i64, id: &str) -> Value {
    json!([{"type": "money.deposited", "data": {"account": account, "amount": amount}, "id": id}])
}

/// What the appenders were told: event id -> offset.
type Acknowledged = Arc<Mutex<BTreeMap<String, u64>>>;

/// A copy of what the appenders were told.
fn snapshot(acknowledged: &Acknowledged) -> BTreeMap<String, u64> {
    acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn record(acknowledged: &Acknowledged, id: &str, answer: &support::cluster::Answer) {
    let offset = answer.json["offsets"][0].as_u64().expect("an offset");
    let previous = acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id.to_owned(), offset);
    if let Some(previous) = previous {
        assert_eq!(previous, offset, "id {id} acknowledged at two offsets");
    }
}

#[test]
fn three_nodes_append_concurrently_and_end_identical() -> Result {
    let nats = nats::shared();
    let dir = tempfile::tempdir()?;
    let stream = "T_CONVERGE";
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| Node::start(refract(), spec(dir.path(), name, &nats.urls(), stream, 3)))
        .collect();

    // A deterministic race: two nodes both expect a new stream; exactly one wins.
    let first = nodes[0].append("race", deposit("race", 1, "race-a"), Some(0));
    let second = nodes[1].append("race", deposit("race", 1, "race-b"), Some(0));
    let statuses = [first.status, second.status];
    assert!(
        statuses.contains(&200) && statuses.contains(&409),
        "one append must win, the other get 409: {} / {}",
        first.text,
        second.text
    );
    let conflict = if first.status == 409 { &first } else { &second };
    assert_eq!(
        conflict.json["error"]["code"], "version_conflict",
        "{}",
        conflict.text
    );

    // Concurrent appenders on every node: their own accounts (with ids), and shared
    // counters with expected_version that they fight over.
    let acknowledged: Acknowledged = Arc::default();
    let conflicts = Arc::new(Mutex::new(0u64));
    std::thread::scope(|scope| {
        for (index, node) in nodes.iter().enumerate() {
            for worker in 0..2 {
                let acknowledged = Arc::clone(&acknowledged);
                let conflicts = Arc::clone(&conflicts);
                scope.spawn(move || {
                    let mut believed: BTreeMap<String, u64> = BTreeMap::new();
                    for round in 0..40 {
                        let id = format!("own-{index}-{worker}-{round}");
                        let answer = node.append(
                            &format!("acct-{index}-{worker}"),
                            deposit(&format!("acct-{index}-{worker}"), 10, &id),
                            None,
                        );
                        assert_eq!(answer.status, 200, "{}", answer.text);
                        record(&acknowledged, &id, &answer);

                        let shared = format!("shared-{}", round % 3);
                        let expected = believed.get(&shared).copied().unwrap_or(0);
                        let id = format!("shared-{index}-{worker}-{round}");
                        let answer = node.append(&shared, deposit(&shared, 1, &id), Some(expected));
                        match answer.status {
                            200 => {
                                record(&acknowledged, &id, &answer);
                                believed.insert(shared, expected + 1);
                            }
                            409 => {
                                *conflicts
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
                                let message =
                                    answer.json["error"]["message"].as_str().unwrap_or_default();
                                let actual = message
                                    .rsplit("it is at ")
                                    .next()
                                    .and_then(|n| n.trim().parse().ok())
                                    .unwrap_or_else(|| {
                                        panic!("a 409 naming the actual version: {message}")
                                    });
                                believed.insert(shared, actual);
                            }
                            other => panic!("append answered {other}: {}", answer.text),
                        }
                    }
                });
            }
        }
    });
    // An idempotent retry on another node answers with the original offset.
    let original = *snapshot(&acknowledged)
        .get("own-0-0-0")
        .ok_or("own-0-0-0 acknowledged")?;
    let retry = nodes[2].append("acct-0-0", deposit("acct-0-0", 10, "own-0-0-0"), None);
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.json["offsets"][0].as_u64(), Some(original));

    let views: Vec<&Node> = nodes.iter().collect();
    let log = converged(&views);
    assert_gap_free(&log);
    // Every acknowledged append is there exactly once, at the offset it was given.
    let mut seen = BTreeSet::new();
    for event in &log {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        assert!(seen.insert(id.clone()), "event id {id} appears twice");
    }
    let acknowledged = snapshot(&acknowledged);
    for (id, offset) in &acknowledged {
        let event = &log[usize::try_from(*offset)? - 1];
        assert_eq!(event["id"].as_str(), Some(id.as_str()), "offset {offset}");
    }
    // Every event in the log was acknowledged to someone (the race winner included).
    assert_eq!(
        log.len(),
        acknowledged.len() + 1,
        "no event appears that nobody was told about"
    );

    let head = log.len() as u64;
    let models = balances_everywhere(&views, head);
    assert!(
        models.windows(2).all(|pair| pair[0] == pair[1]),
        "read models differ: {models:?}"
    );
    assert!(models[0].as_array().is_some_and(|rows| rows.len() >= 6 + 3));
    visibility(&nodes, head)?;
    a_batch_larger_than_one_nats_message_is_refused(&nodes[0]);
    Ok(())
}

/// `/v1/cluster`, `/metrics` and `refract status` show each node's mirror against the
/// stream's head, and NATS connectivity.
fn visibility(nodes: &[Node], head: u64) -> Result {
    for node in nodes {
        let status = node.cluster();
        assert_eq!(status["node"], node.spec.name.as_str(), "{status}");
        assert_eq!(status["nats"], "connected", "{status}");
        assert_eq!(status["mirror"], "following", "{status}");
        assert_eq!(status["mirror_head"].as_u64(), Some(head), "{status}");
        assert_eq!(status["lag"].as_u64(), Some(0), "{status}");
        assert_eq!(status["stream_head"], status["mirror_position"], "{status}");
        let metrics = node.get("/metrics").text;
        let name = &node.spec.name;
        for line in [
            format!("refract_cluster_mirror_lag_messages{{node=\"{name}\"}} 0"),
            format!("refract_cluster_nats_connected{{node=\"{name}\"}} 1"),
            format!(
                "refract_cluster_mirror_position{{node=\"{name}\"}} {}",
                status["mirror_position"]
            ),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "no `{line}` in /metrics:\n{metrics}"
            );
        }
        let output = std::process::Command::new(refract())
            .arg("--data-dir")
            .arg(&node.spec.data)
            .args([
                "--url",
                &node.url,
                "--token",
                support::cluster::TOKEN,
                "status",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = format!(
            "cluster: node {name}, NATS connected ({}), mirror following at JetStream sequence {} of {} (lag 0), log head offset {head}",
            node.spec.urls, status["mirror_position"], status["stream_head"]
        );
        assert!(
            text.contains(&expected),
            "`refract status` lacks {expected:?}:\n{text}"
        );
    }
    Ok(())
}

/// A batch that cannot fit one NATS message (1 MiB by default) is refused with 413,
/// naming the limit and the fix, and nothing is written.
fn a_batch_larger_than_one_nats_message_is_refused(node: &Node) {
    let before = node.head();
    let big = "x".repeat(600 * 1024);
    let answer = node.append(
        "big",
        json!([{"type": "t", "data": {"s": big}}, {"type": "t", "data": {"s": big}}]),
        None,
    );
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(
        answer.json["error"]["code"], "batch_too_large",
        "{}",
        answer.text
    );
    assert!(answer.text.contains("max_payload"), "{}", answer.text);
    assert_eq!(node.head(), before);
}

#[test]
fn a_node_killed_mid_append_restarts_and_converges_and_a_new_node_catches_up() -> Result {
    let nats = nats::shared();
    let dir = tempfile::tempdir()?;
    let stream = "T_KILL";
    let mut victim = Node::start(refract(), spec(dir.path(), "k1", &nats.urls(), stream, 3));
    let survivor = Node::start(refract(), spec(dir.path(), "k2", &nats.urls(), stream, 3));
    for round in 0..20 {
        let answer = victim.append("pre", deposit("pre", 1, &format!("pre-{round}")), None);
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    // Appends through both nodes while the victim is killed mid-stream.
    let acknowledged: Acknowledged = Arc::default();
    std::thread::scope(|scope| {
        let acknowledged_survivor = Arc::clone(&acknowledged);
        let survivor = &survivor;
        scope.spawn(move || {
            for round in 0..150 {
                let id = format!("s-{round}");
                let answer = survivor.append("during", deposit("during", 1, &id), None);
                assert_eq!(answer.status, 200, "{}", answer.text);
                record(&acknowledged_survivor, &id, &answer);
            }
        });
        let victim_url = victim.url.clone();
        let acknowledged_victim = Arc::clone(&acknowledged);
        let appender = scope.spawn(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .new_agent();
            for round in 0..10_000 {
                let id = format!("v-{round}");
                let sent = agent
                    .post(format!("{victim_url}/v1/streams/victim/events"))
                    .header(
                        "Authorization",
                        format!("Bearer {}", support::cluster::TOKEN),
                    )
                    .header("Content-Type", "application/json")
                    .send(deposit("victim", 1, &id).to_string());
                match sent {
                    Ok(mut response) if response.status() == 200 => {
                        let text = response.body_mut().read_to_string().unwrap_or_default();
                        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let answer = support::cluster::Answer {
                            status: 200,
                            json,
                            text,
                        };
                        record(&acknowledged_victim, &id, &answer);
                    }
                    // The node died under us.
                    _ => return round,
                }
            }
            10_000
        });
        std::thread::sleep(Duration::from_millis(700));
        victim.kill_9();
        let sent = appender.join().unwrap_or(0);
        assert!(sent > 0, "the victim took appends before it was killed");
    });
    victim.restart(refract());
    let joiner = Node::start(refract(), spec(dir.path(), "k3", &nats.urls(), stream, 3));
    let log = converged(&[&victim, &survivor, &joiner]);
    assert_gap_free(&log);
    let acknowledged = snapshot(&acknowledged);
    for (id, offset) in &acknowledged {
        assert_eq!(
            log[usize::try_from(*offset)? - 1]["id"].as_str(),
            Some(id.as_str()),
            "acknowledged append {id} at {offset} is lost or moved"
        );
    }
    let head = log.len() as u64;
    let models = balances_everywhere(&[&victim, &survivor, &joiner], head);
    assert!(
        models.windows(2).all(|pair| pair[0] == pair[1]),
        "read models differ: {models:?}"
    );
    Ok(())
}

#[test]
fn appends_continue_when_one_nats_server_of_three_dies() -> Result {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir()?;
    let stream = "T_ONE_DOWN";
    let a = Node::start(refract(), spec(dir.path(), "o1", &nats.urls(), stream, 3));
    let b = Node::start(refract(), spec(dir.path(), "o2", &nats.urls(), stream, 3));
    for round in 0..10 {
        assert_eq!(
            a.append("x", deposit("x", 1, &format!("before-{round}")), None)
                .status,
            200
        );
    }
    nats.kill(0);
    // JetStream may need a moment to elect a new leader; appends then go on.
    let mut acknowledged = 0;
    let deadline = Instant::now() + LIVENESS;
    for round in 0..40 {
        let node = if round % 2 == 0 { &a } else { &b };
        loop {
            let answer = node.append("x", deposit("x", 1, &format!("after-{round}")), None);
            if answer.status == 200 {
                acknowledged += 1;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "appends did not continue with 2 of 3 NATS servers: {}\n{}",
                answer.text,
                nats.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(acknowledged, 40);
    let log = converged(&[&a, &b]);
    assert_eq!(log.len(), 50);
    assert_gap_free(&log);
    Ok(())
}

#[test]
fn with_all_nats_down_reads_serve_appends_fail_fast_and_everything_resumes() -> Result {
    let nats = NatsCluster::start(1);
    let dir = tempfile::tempdir()?;
    let stream = "T_ALL_DOWN";
    let a = Node::start(refract(), spec(dir.path(), "d1", &nats.urls(), stream, 1));
    let b = Node::start(refract(), spec(dir.path(), "d2", &nats.urls(), stream, 1));
    for round in 0..10 {
        assert_eq!(
            a.append("acct", deposit("acct", 5, &format!("up-{round}")), None)
                .status,
            200
        );
    }
    converged(&[&a, &b]);
    balances_everywhere(&[&a, &b], 10);

    nats.kill_all();
    wait_until_showing(
        LIVENESS,
        "health to say degraded",
        || {
            let health = b.get("/health");
            health.status == 503 && health.text.contains("NATS is unreachable")
        },
        || b.get("/health").text,
    );
    let started = Instant::now();
    let refused = b.append("acct", deposit("acct", 5, "down-1"), None);
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(
        refused.json["error"]["code"], "cluster_unavailable",
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains("nothing was written"),
        "{}",
        refused.text
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal was not fast: {:?}",
        started.elapsed()
    );
    // Reads and queries serve from the mirror.
    assert_eq!(b.events().len(), 10);
    let (_, rows) = b
        .query("balances", "SELECT balance FROM balances")
        .ok_or("a query answer")?;
    assert_eq!(rows, json!([[50]]));
    assert_eq!(b.cluster()["nats"], "disconnected");

    nats.restart_all();
    wait_until_showing(
        LIVENESS,
        "health to recover",
        || b.get("/health").status == 200,
        || b.get("/health").text,
    );
    let mut resumed = b.append("acct", deposit("acct", 5, "down-1"), None);
    let deadline = Instant::now() + LIVENESS;
    while resumed.status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        resumed = b.append("acct", deposit("acct", 5, "down-1"), None);
    }
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(resumed.json["offsets"], json!([11]));
    converged(&[&a, &b]);
    let models = balances_everywhere(&[&a, &b], 11);
    assert_eq!(models[0], json!([["acct", 55, 11]]));
    assert_eq!(models[0], models[1]);
    Ok(())
}

#[test]
fn cluster_init_publishes_a_single_node_log_with_its_offsets() -> Result {
    let nats = nats::shared();
    let dir = tempfile::tempdir()?;
    let stream = "T_MIGRATE";
    let single = dir.path().join("single");
    // A single-node log, written through the CLI as a user would.
    let file = dir.path().join("events.jsonl");
    let mut lines = String::new();
    for index in 0..500 {
        lines.push_str(
            &json!({"stream": format!("acct-{}", index % 7), "type": "money.deposited",
            "data": {"account": format!("acct-{}", index % 7), "amount": index}})
            .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&file, lines)?;
    for _ in 0..3 {
        let output = std::process::Command::new(refract())
            .arg("--data-dir")
            .arg(&single)
            .args(["append", "--file"])
            .arg(&file)
            .output()?;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let original = {
        let log = refract::log::EventLog::open(
            &single.join("events.db"),
            refract::log::LogOptions::default(),
        )?;
        log.read(&refract::log::ReadQuery::default())?
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    assert_eq!(original.len(), 1500);

    // A node cannot start on a log of its own that was never published.
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!("[cluster]\nstream = \"{stream}\"\nreplicas = 3\n"),
    )?;
    let refused = std::process::Command::new(refract())
        .arg("--data-dir")
        .arg(&single)
        .arg("--config")
        .arg(&config)
        .args([
            "run",
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            &nats.urls(),
            "--node",
            "m1",
        ])
        .output()?;
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("refract cluster init --from"), "{message}");

    let init = |from: &Path| {
        std::process::Command::new(refract())
            .arg("--config")
            .arg(&config)
            .args(["cluster", "init", "--cluster", &nats.urls(), "--from"])
            .arg(from)
            .output()
    };
    let migrated = init(&single)?;
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let said = String::from_utf8_lossy(&migrated.stdout);
    assert!(said.contains("published 1500 events"), "{said}");

    // The migrated directory continues as a node; a new one starts empty.
    let mut first = spec(dir.path(), "m1", &nats.urls(), stream, 3);
    first.data.clone_from(&single);
    let a = Node::start(refract(), first);
    let b = Node::start(refract(), spec(dir.path(), "m2", &nats.urls(), stream, 3));
    let log = converged(&[&a, &b]);
    let expected: Vec<Value> = original
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(
        fingerprint(&log),
        fingerprint(&expected),
        "the cluster's log is the single-node log"
    );
    let next = b.append("acct-0", deposit("acct-0", 1, "after-migration"), None);
    assert_eq!(next.json["offsets"], json!([1501]), "{}", next.text);
    converged(&[&a, &b]);

    // A second migration into the same, now non-empty, stream is refused.
    let other = dir.path().join("other");
    let output = std::process::Command::new(refract())
        .arg("--data-dir")
        .arg(&other)
        .args(["append", "--stream", "s", "--type", "t", "--data", "{}"])
        .output()?;
    assert!(output.status.success());
    let again = init(&other)?;
    assert!(!again.status.success());
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(message.contains("empty stream only"), "{message}");
    let _unused: PathBuf = other;
    Ok(())
}
