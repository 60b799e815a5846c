//! Cluster mode, part 2: one deploy for the whole cluster, cluster-wide rollback, and
//! the cluster view, with three `refract run --cluster` nodes (child processes of the
//! real binary) on the shared three-server `nats-server` cluster on loopback. Without
//! `nats-server` installed the tests fail, naming `apt-get install -y nats-server`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::cluster::{LIVENESS, Node, NodeSpec, TOKEN};
use support::host::wait_until_showing;
use support::nats;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn refract() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_refract"))
}

/// Events per second a `cars` shadow replays at: slow enough that events 7–9 land
/// while every node's v2 replays (6 events take 6 s, room for a loaded machine).
const STORY_RATE: u64 = 1;

/// Sets the readers' stop flag when dropped, so a failing assertion ends the readers
/// (and the scope that waits for them) instead of leaving them querying forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The query the readers run.
const CARS: &str = "SELECT car_id, color, customer_name FROM cars ORDER BY car_id";

/// Three nodes on `stream`; only the first has `plugins` in its plugins folder.
fn three_nodes(dir: &Path, stream: &str, plugins: &[&'static str], extra: &str) -> Vec<Node> {
    let urls = nats::shared().urls();
    ["n1", "n2", "n3"]
        .iter()
        .enumerate()
        .map(|(index, name)| {
            Node::start(
                refract(),
                NodeSpec {
                    name: (*name).to_owned(),
                    data: dir.join(name),
                    urls: urls.clone(),
                    stream: stream.to_owned(),
                    replicas: 3,
                    plugins: if index == 0 {
                        plugins.to_vec()
                    } else {
                        Vec::new()
                    },
                    extra_config: extra.to_owned(),
                },
            )
        })
        .collect()
}

/// A projector's version in `role` on `node`, with its status.
fn version_in(node: &Node, projector: &str, role: &str) -> Option<Value> {
    let view = node.get(&format!("/v1/projectors/{projector}")).json;
    view["versions"]
        .as_array()?
        .iter()
        .find(|v| v["role"] == role && !v["status"].is_null())
        .cloned()
}

fn tails(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}\n{}", n.spec.name, n.tail()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every node serves `version` of `projector` at checkpoint `at` or later.
fn wait_serving(nodes: &[&Node], projector: &str, version: &str, at: u64) {
    for node in nodes {
        wait_until_showing(
            LIVENESS,
            &format!(
                "node {} to serve version {version} of {projector} at offset {at}",
                node.spec.name
            ),
            || {
                version_in(node, projector, "active").is_some_and(|active| {
                    active["version"] == version
                        && active["status"]["checkpoint"].as_u64() >= Some(at)
                })
            },
            || {
                format!(
                    "{}\ncluster view: {}",
                    tails(nodes),
                    node.get("/v1/cluster/projectors").text
                )
            },
        );
    }
}

/// A checksum of every table a projector wrote in `node`'s read model (the host's own
/// `_refract_` tables aside), read from the file the stable path points at.
fn read_model_checksum(node: &Node, projector: &str) -> Result<String> {
    let path = node
        .spec
        .data
        .join("projections")
        .join(format!("{projector}.db"));
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE '\\_refract\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut hasher = Sha256::new();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\""))?;
        let columns = statement.column_count();
        let mut rows: Vec<String> = statement
            .query_map([], |row| {
                (0..columns)
                    .map(|i| Ok(format!("{:?}", row.get_ref(i)?)))
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(|cells| cells.join("|"))
            })?
            .collect::<std::result::Result<_, _>>()?;
        rows.sort();
        hasher.update(table.as_bytes());
        for row in rows {
            hasher.update((row.len() as u64).to_le_bytes());
            hasher.update(row.as_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Reads {
    count: u64,
    problems: Vec<String>,
    versions: BTreeMap<String, u64>,
}

/// Queries `node` until `stop`: every answer must be rows, never empty, at a
/// checkpoint never older than the one before.
fn read_until(node: &Node, stop: &AtomicBool) -> Reads {
    let mut reads = Reads::default();
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        let answer = node.post("/v1/projectors/cars/query", &json!({ "sql": CARS }));
        reads.count += 1;
        if answer.status != 200 {
            reads
                .problems
                .push(format!("status {}: {}", answer.status, answer.text));
            continue;
        }
        let checkpoint = answer.json["checkpoint"].as_u64().unwrap_or(0);
        let rows = answer.json["rows"].as_array().map_or(0, Vec::len);
        if rows == 0 {
            reads
                .problems
                .push(format!("an empty table at {checkpoint}: {}", answer.text));
        }
        if checkpoint < last {
            reads.problems.push(format!(
                "checkpoint {checkpoint} after {last}: {}",
                answer.text
            ));
        }
        last = last.max(checkpoint);
        *reads
            .versions
            .entry(answer.json["version"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    reads
}

fn car(event_type: &str, data: &Value) -> Value {
    json!([{ "type": event_type, "data": data }])
}

/// The seed-002 story's first part: offsets 1–6.
fn story_part_one(node: &Node) {
    for (stream, event_type, data) in [
        (
            "hrxs21",
            "car.created",
            json!({"by": "Alice", "color": "blue"}),
        ),
        ("hrxs21", "car.repainted", json!({"color": "red"})),
        (
            "tye24p",
            "car.created",
            json!({"by": "Alice", "color": "blue"}),
        ),
        ("b2dhuw", "customer.created", json!({"name": "Bob"})),
        ("hrxs21", "car.sold", json!({"to": "b2dhuw"})),
        ("b2dhuw", "customer.renamed", json!({"name": "Charlie"})),
    ] {
        let answer = node.append(stream, car(event_type, &data), None);
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
}

/// The story's events 7–9, each through another node.
fn story_part_two() -> [(&'static str, &'static str, Value); 3] {
    [
        ("hrxs21", "car.repainted", json!({"color": "orange"})),
        ("wuionx", "customer.created", json!({"name": "Dan"})),
        ("tye24p", "car.sold", json!({"to": "wuionx"})),
    ]
}

/// The cluster view from `node`.
fn view(node: &Node) -> Value {
    let answer = node.get("/v1/cluster/projectors");
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json
}

/// The seed-002 `cars` story across three nodes: v1 is deployed through one node's
/// plugins folder and reaches all three; v2 is deployed the same way and replays on
/// every node while events 7–9 are appended through the three nodes, then each node
/// swaps; a reader on every node never sees an error, an empty table or an older
/// checkpoint; the read models end identical. Then a killed node shows as
/// unreachable, a rollback on another node is applied cluster-wide, and the killed
/// node applies it when it returns.
#[test]
fn a_deploy_through_one_plugins_folder_reaches_every_node_and_swaps_under_readers() -> Result {
    let dir = tempfile::tempdir()?;
    let config = format!("[projectors.cars]\nbatch_size = 1\nreplay_rate_limit = {STORY_RATE}\n");
    let mut nodes = three_nodes(dir.path(), "T_DEPLOYS", &["cars-v1"], &config);
    let all: Vec<&Node> = nodes.iter().collect();

    // v1, from n1's plugins folder, reaches n2 and n3 through the cluster.
    wait_until_showing(
        LIVENESS,
        "v1 active on n1",
        || version_in(&nodes[0], "cars", "active").is_some(),
        || tails(&all),
    );
    let v1 = version_in(&nodes[0], "cars", "active").expect("v1")["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    story_part_one(&nodes[0]);
    wait_serving(&all, "cars", &v1, 6);

    // v2 through n1's plugins folder, written aside and renamed into place.
    let staged = nodes[0].plugins_dir().join(".cars-v2.wasm.part");
    std::fs::copy(support::guests::guest("cars-v2"), &staged)?;
    std::fs::rename(&staged, nodes[0].plugins_dir().join("cars-v2.wasm"))?;

    let stop = AtomicBool::new(false);
    let (reads, v2) = std::thread::scope(|scope| -> Result<_> {
        let readers: Vec<_> = all
            .iter()
            .map(|node| scope.spawn(|| read_until(node, &stop)))
            .collect();
        let _stop_readers = StopOnDrop(&stop);
        // Every node replays v2 as a shadow before events 7–9 arrive.
        let mut v2 = String::new();
        for node in &all {
            wait_until_showing(
                LIVENESS,
                &format!("v2's shadow replaying on {}", node.spec.name),
                || match version_in(node, "cars", "shadow") {
                    Some(shadow) => {
                        v2 = shadow["version"].as_str().unwrap_or_default().to_owned();
                        shadow["status"]["checkpoint"].as_u64() >= Some(1)
                    }
                    None => false,
                },
                || tails(&all),
            );
        }
        for (node, (stream, event_type, data)) in all.iter().zip(story_part_two()) {
            for other in &all {
                assert_eq!(
                    version_in(other, "cars", "active").map(|a| a["version"].clone()),
                    Some(json!(v1)),
                    "v1 still serves on {} while v2 replays",
                    other.spec.name
                );
            }
            let answer = node.append(stream, car(event_type, &data), None);
            assert_eq!(answer.status, 200, "{}", answer.text);
        }
        wait_serving(&all, "cars", &v2, 9);
        // A few more reads, of v2 only.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let reads: Vec<Reads> = readers
            .into_iter()
            .map(|r| r.join().expect("a reader"))
            .collect();
        Ok((reads, v2))
    })?;
    assert_ne!(v1, v2);
    for (node, reads) in all.iter().zip(&reads) {
        assert!(
            reads.problems.is_empty(),
            "the reader on {} saw: {:#?}",
            node.spec.name,
            reads.problems
        );
        assert!(
            reads.versions.contains_key(&v2),
            "the reader on {} read v2: {reads:?}",
            node.spec.name
        );
    }
    let fixed = json!([["hrxs21", "orange", "Charlie"], ["tye24p", "blue", "Dan"]]);
    for node in &all {
        assert_eq!(node.query("cars", CARS), Some((9, fixed.clone())));
    }
    let sums: Vec<String> = all
        .iter()
        .map(|n| read_model_checksum(n, "cars"))
        .collect::<Result<_>>()?;
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    // The view follows the heartbeats, a second or so behind.
    wait_until_showing(
        LIVENESS,
        "n2's cluster view to show v2 served everywhere",
        || {
            let cluster = view(&nodes[1]);
            let cars = &cluster["projectors"][0];
            cars["name"] == "cars"
                && cars["desired_version"] == v2.as_str()
                && cars["serving"] == json!({ v2.as_str(): ["n1", "n2", "n3"] })
                && cluster["divergence"] == json!([])
        },
        || view(&nodes[1]).to_string(),
    );

    // A killed node shows as unreachable, in the view, /health and the CLI.
    nodes[2].kill_9();
    wait_until_showing(
        LIVENESS,
        "n3 unreachable in n1's cluster view",
        || {
            view(&nodes[0])["nodes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["node"] == "n3" && n["state"] == "unreachable")
            })
        },
        || view(&nodes[0]).to_string(),
    );
    let health = nodes[0].get("/health");
    assert_eq!(health.status, 503, "{}", health.text);
    assert!(
        health.text.contains("node n3 is unreachable"),
        "{}",
        health.text
    );
    let output = std::process::Command::new(refract())
        .args([
            "--url",
            &nodes[0].url,
            "--token",
            TOKEN,
            "status",
            "--cluster",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("n3") && l.contains("unreachable")),
        "{text}"
    );
    assert!(text.contains("node n3 is unreachable"), "{text}");

    // A rollback on n2 is carried out by every node at one offset, the one down
    // included once it returns.
    let rolled = nodes[1].post("/v1/projectors/cars/rollback", &json!({}));
    assert_eq!(rolled.status, 200, "{}", rolled.text);
    assert_eq!(rolled.json["version"], v1.as_str(), "{}", rolled.text);
    assert_eq!(rolled.json["offset"], 9, "{}", rolled.text);
    wait_serving(&[&nodes[0], &nodes[1]], "cars", &v1, 9);
    nodes[2].restart(refract());
    let all: Vec<&Node> = nodes.iter().collect();
    wait_serving(&all, "cars", &v1, 9);
    // v1's bug is back everywhere: the sold car keeps its buyer's name at the sale.
    let buggy = json!([["hrxs21", "orange", "Bob"], ["tye24p", "blue", "Dan"]]);
    for node in &all {
        assert_eq!(node.query("cars", CARS), Some((9, buggy.clone())));
    }
    // Each node's swap record: v1 from offset 9, by the same coordinated rollback.
    let mut ids = Vec::new();
    for name in ["n1", "n2", "n3"] {
        wait_until_showing(
            LIVENESS,
            &format!("{name}'s swap record of the rollback"),
            || swap_record(&nodes[0], "cars", name)["version"] == v1.as_str(),
            || view(&nodes[0]).to_string(),
        );
        let record = swap_record(&nodes[0], "cars", name);
        assert_eq!(record["offset"], 9, "{record}");
        assert_eq!(record["missed_offset"], Value::Null, "{record}");
        assert!(record["promote"].is_string(), "{record}");
        ids.push(record["promote"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let sums: Vec<String> = all
        .iter()
        .map(|n| read_model_checksum(n, "cars"))
        .collect::<Result<_>>()?;
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    wait_until_showing(
        LIVENESS,
        "the cluster to agree again",
        || {
            let cluster = view(&nodes[0]);
            cluster["divergence"] == json!([])
                && cluster["projectors"][0]["serving"] == json!({ v1.as_str(): ["n1", "n2", "n3"] })
        },
        || view(&nodes[0]).to_string(),
    );

    // `refract diff --node` compares two nodes' read models: the same, until one is
    // changed behind its host's back.
    let diff_nodes = |a: &str, b: &str| -> Result<Value> {
        let output = std::process::Command::new(refract())
            .args(["--url", &nodes[0].url, "--token", TOKEN, "diff", "cars"])
            .args(["--node", a, "--node", b, "--json"])
            .output()?;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    };
    let same = diff_nodes("n1", &nodes[2].url)?;
    assert_eq!(same["base"]["checkpoint"], 9, "{same}");
    assert_eq!(same["other"]["version"], v1.as_str(), "{same}");
    let cars = same["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "cars"))
        .cloned()
        .unwrap_or_default();
    assert!(
        cars["base_checksum"].is_string() && cars["base_checksum"] == cars["other_checksum"],
        "{same}"
    );
    let tampered = rusqlite::Connection::open(nodes[2].spec.data.join("projections/cars.db"))?;
    tampered.busy_timeout(Duration::from_secs(10))?;
    tampered.execute(
        "UPDATE cars SET color = 'green' WHERE car_id = 'tye24p'",
        [],
    )?;
    drop(tampered);
    let differs = diff_nodes("n1", "n3")?;
    let cars = differs["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "cars"))
        .cloned()
        .unwrap_or_default();
    assert_ne!(cars["base_checksum"], cars["other_checksum"], "{differs}");
    assert!(
        cars["only_in_other"].to_string().contains("green"),
        "{differs}"
    );
    for node in &mut nodes {
        node.stop();
    }
    Ok(())
}

/// A node's swap record of `projector`, from the cluster view of `from`.
fn swap_record(from: &Node, projector: &str, node: &str) -> Value {
    view(from)["projectors"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == projector).cloned())
        .and_then(|p| {
            p["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["node"] == node).cloned())
        })
        .map_or(Value::Null, |n| n["last_swap"].clone())
}

/// `promote = "manual"`: v2, deployed with `refract deploy` on one node, replays on
/// every node and waits; a promote on another node swaps every node at one log offset
/// (each node's swap record says so), and a node that was down during the promote
/// swaps at that same offset when it returns, though the log has grown since. Then
/// forged desired records are refused everywhere.
#[test]
fn a_manual_promote_swaps_every_node_at_one_offset_and_a_node_down_applies_it_on_return() -> Result
{
    let dir = tempfile::tempdir()?;
    // The diff gate (every node's): first an assertion v2 breaks (it fixes the
    // buyer's name that v1 keeps), later one it passes.
    let gate = dir.path().join("gate.sql");
    std::fs::write(
        &gate,
        "SELECT car_id FROM cars WHERE customer_name = 'Charlie';\n",
    )?;
    let config = format!(
        "[projectors.cars]\npromote = \"manual\"\ndiff_gate = {:?}\n",
        gate.display().to_string()
    );
    let mut nodes = three_nodes(dir.path(), "T_PROMOTE", &["cars-v1"], &config);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_until_showing(
        LIVENESS,
        "v1 active on n1",
        || version_in(&nodes[0], "cars", "active").is_some(),
        || tails(&all),
    );
    let v1 = version_in(&nodes[0], "cars", "active").expect("v1")["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    story_part_one(&nodes[1]);
    wait_serving(&all, "cars", &v1, 6);

    // v2 through `refract deploy` on n2: a shadow everywhere, caught up, not swapped.
    let output = std::process::Command::new(refract())
        .args(["--url", &nodes[1].url, "--token", TOKEN, "deploy"])
        .arg(support::guests::guest("cars-v2"))
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut v2 = String::new();
    for node in &all {
        wait_until_showing(
            LIVENESS,
            &format!("v2's shadow caught up on {}", node.spec.name),
            || match version_in(node, "cars", "shadow") {
                Some(shadow) => {
                    v2 = shadow["version"].as_str().unwrap_or_default().to_owned();
                    shadow["status"]["state"] == "live"
                        && shadow["status"]["checkpoint"].as_u64() == Some(6)
                }
                None => false,
            },
            || tails(&all),
        );
    }
    assert_eq!(
        version_in(&nodes[0], "cars", "active").map(|a| a["version"].clone()),
        Some(json!(v1)),
        "manual: v1 still serves"
    );

    // n3 goes down; the promote happens without it.
    nodes[2].kill_9();
    wait_until_showing(
        LIVENESS,
        "n3 unreachable in n1's view",
        || {
            view(&nodes[0])["nodes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["node"] == "n3" && n["state"] == "unreachable")
            })
        },
        || view(&nodes[0]).to_string(),
    );
    // Every live node's diff gate refuses v2: no node swaps.
    let refused = nodes[0].post("/v1/projectors/cars/promote", &json!({}));
    assert_eq!(refused.status, 409, "{}", refused.text);
    for name in ["n1", "n2"] {
        assert!(
            refused.text.contains(&format!("{name}: diff gate")),
            "{}",
            refused.text
        );
    }
    for node in [&nodes[0], &nodes[1]] {
        assert_eq!(
            version_in(node, "cars", "active").map(|a| a["version"].clone()),
            Some(json!(v1)),
            "the gate kept v1 on {}",
            node.spec.name
        );
    }
    std::fs::write(&gate, "SELECT car_id FROM cars WHERE car_id IS NULL;\n")?;
    let promoted = nodes[0].post("/v1/projectors/cars/promote", &json!({}));
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    assert_eq!(promoted.json["version"], v2.as_str(), "{}", promoted.text);
    assert_eq!(promoted.json["offset"], 6, "{}", promoted.text);
    let live = [&nodes[0], &nodes[1]];
    wait_serving(&live, "cars", &v2, 6);
    for name in ["n1", "n2"] {
        wait_until_showing(
            LIVENESS,
            &format!("{name}'s swap record"),
            || swap_record(&nodes[0], "cars", name)["version"] == v2.as_str(),
            || view(&nodes[0]).to_string(),
        );
        let record = swap_record(&nodes[0], "cars", name);
        assert_eq!(record["offset"], 6, "{record}");
        assert!(record["promote"].is_string(), "{record}");
        assert_eq!(record["missed_offset"], Value::Null, "{record}");
    }
    let promote_id = swap_record(&nodes[0], "cars", "n1")["promote"].clone();

    // The log grows past the promote offset; n3 returns and swaps at the offset all
    // the same: its v1 starts held there.
    for (stream, event_type, data) in story_part_two() {
        let answer = nodes[0].append(stream, car(event_type, &data), None);
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    nodes[2].restart(refract());
    let all: Vec<&Node> = nodes.iter().collect();
    wait_serving(&all, "cars", &v2, 9);
    wait_until_showing(
        LIVENESS,
        "n3's swap record",
        || swap_record(&nodes[0], "cars", "n3")["version"] == v2.as_str(),
        || view(&nodes[0]).to_string(),
    );
    let record = swap_record(&nodes[0], "cars", "n3");
    assert_eq!(record["offset"], 6, "{record}");
    assert_eq!(record["promote"], promote_id, "{record}");
    let sums: Vec<String> = all
        .iter()
        .map(|n| read_model_checksum(n, "cars"))
        .collect::<Result<_>>()?;
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    forged_records_are_refused(&all, "T_PROMOTE", &v2)?;
    for node in &mut nodes {
        node.stop();
    }
    Ok(())
}

/// Hostile desired records, written straight into the cluster's bucket: a component
/// whose bytes are not the hash the record names, and one larger than a node's
/// `limits.max_component_bytes`. Every node refuses both, says why in the cluster
/// view, and goes on serving what it served.
fn forged_records_are_refused(nodes: &[&Node], stream: &str, serving: &str) -> Result {
    use refract::cluster::deploys::records::{Action, Desired, RECORD_FORMAT};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client =
            async_nats::connect(nats::shared().urls().split(',').next().unwrap_or_default())
                .await?;
        let jetstream = async_nats::jetstream::new(client);
        let components = jetstream
            .get_object_store(format!("{stream}-components"))
            .await?;
        let projectors = jetstream
            .get_key_value(format!("{stream}-projectors"))
            .await?;
        let claimed = "0".repeat(64);
        components
            .put(
                claimed.as_str(),
                &mut &b"not the component the record names"[..],
            )
            .await?;
        let forged = |projector: &str, size: u64| Desired {
            format: RECORD_FORMAT,
            projector: projector.to_owned(),
            version: "00000000".to_owned(),
            sha256: claimed.clone(),
            size,
            action: Action::Deploy,
            promote: "manual".to_owned(),
            origin: "attacker".to_owned(),
            at_ms: 0,
            coordinated: None,
        };
        projectors
            .put(
                "desired.cars",
                serde_json::to_vec(&forged("cars", 34))?.into(),
            )
            .await?;
        projectors
            .put(
                "desired.huge",
                serde_json::to_vec(&forged("huge", 1 << 40))?.into(),
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    for node in nodes {
        wait_until_showing(
            LIVENESS,
            &format!("{} to refuse both forged records", node.spec.name),
            || {
                let divergence = view(node)["divergence"].to_string();
                nodes.iter().all(|n| {
                    divergence.contains(&format!("node {}: projector `cars`", n.spec.name))
                        && divergence.contains(&format!("node {}: projector `huge`", n.spec.name))
                }) && divergence.contains("refusing it")
                    && divergence.contains("limits.max_component_bytes")
            },
            || view(node).to_string(),
        );
        assert_eq!(
            version_in(node, "cars", "active").map(|a| a["version"].clone()),
            Some(json!(serving)),
            "{} still serves {serving}",
            node.spec.name
        );
        assert!(node.query("cars", CARS).is_some());
    }
    Ok(())
}

/// `cluster.lease_timeout_ms` of the placement test: short, so the failover is quick,
/// and still three heartbeats.
const LEASE_TIMEOUT_MS: u64 = 4000;

/// The node holding `projector`'s first lease, in `from`'s cluster view.
fn lease_holder(from: &Node, projector: &str) -> Option<String> {
    let cluster = view(from);
    let placed = cluster["projectors"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == projector)?
        .clone();
    let lease = &placed["leases"][0];
    (lease["state"] == "held")
        .then(|| lease["node"].as_str().map(str::to_owned))
        .flatten()
}

/// `node`'s shared-snapshot status (`GET /v1/cluster`).
fn shared_snapshots(node: &Node) -> Value {
    node.get("/v1/cluster").json["shared_snapshots"].clone()
}

/// Waits until `node` has published a snapshot of `cars` at offset `at`; its id.
fn wait_published(node: &Node, at: u64) -> String {
    let mut id = String::new();
    wait_until_showing(
        LIVENESS,
        &format!(
            "{} to publish its snapshot of cars at offset {at}",
            node.spec.name
        ),
        || {
            let published = shared_snapshots(node)["last_published"]["cars"].clone();
            match published.as_str() {
                Some(found) if found.ends_with(&format!("/{at}")) => {
                    id = found.to_owned();
                    true
                }
                _ => false,
            }
        },
        || format!("{}\n{}", shared_snapshots(node), node.tail()),
    );
    id
}

/// Which snapshot `node`'s read model of `projector` was seeded from, if any.
fn seeded_from(node: &Node, projector: &str) -> Result<Option<String>> {
    let path = node
        .spec
        .data
        .join("projections")
        .join(format!("{projector}.db"));
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut statement =
        conn.prepare("SELECT value FROM _refract_meta WHERE key = 'seeded_from'")?;
    let mut rows = statement.query([])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

/// Overwrites every shared snapshot of `projector` in `stream`'s bucket with its bytes
/// flipped in the middle, keeping its name, size and metadata (its recorded sha256):
/// what a damaged or forged object looks like to a restoring node. Returns their names.
fn corrupt_shared_snapshots(stream: &str, projector: &str) -> Result<Vec<String>> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncReadExt as _;
    let urls = nats::shared().urls();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addresses: Vec<&str> = urls.split(',').collect();
        let client = async_nats::ConnectOptions::new()
            .connect(addresses.as_slice())
            .await?;
        let jetstream = async_nats::jetstream::new(client);
        let bucket = jetstream
            .get_object_store(format!("{stream}-snapshots"))
            .await?;
        let mut infos = Vec::new();
        let mut listed = bucket.list().await?;
        while let Some(info) = listed.next().await {
            let info = info?;
            if info.name.starts_with(&format!("{projector}/")) {
                infos.push(info);
            }
        }
        let mut names = Vec::new();
        for info in infos {
            let mut bytes = Vec::new();
            bucket
                .get(&info.name)
                .await?
                .read_to_end(&mut bytes)
                .await?;
            let middle = bytes.len() / 2;
            for byte in &mut bytes[middle..middle + 64] {
                *byte ^= 0xff;
            }
            let meta = async_nats::jetstream::object_store::ObjectMetadata {
                name: info.name.clone(),
                description: info.description.clone(),
                metadata: info.metadata.clone(),
                ..Default::default()
            };
            bucket.put(meta, &mut bytes.as_slice()).await?;
            names.push(info.name);
        }
        Ok::<_, Box<dyn std::error::Error>>(names)
    })
}

/// Placement: with `nodes = 1`, one node holds `cars`'s lease and runs it; the others
/// do not, and proxy its queries to it (the API and `refract query`). Its policy
/// snapshots are published to the shared snapshots bucket. Killing that node moves the
/// lease to a live node within the lease timeout; it restores the owner's shared
/// snapshot (its read model records it) and replays only what follows, and queries
/// sent to the surviving nodes keep being answered, new events included. Then the
/// shared snapshots are corrupted and the new owner killed: the last node refuses the
/// corrupt object, says why, and replays from offset 1 to the same rows.
#[test]
fn with_nodes_1_killing_the_owner_moves_the_projector_and_queries_keep_being_answered() -> Result {
    let dir = tempfile::tempdir()?;
    let config = format!(
        "lease_timeout_ms = {LEASE_TIMEOUT_MS}\n[projectors.cars]\nnodes = 1\n[projectors.cars.snapshots]\nevery_events = 1\n"
    );
    let mut nodes = three_nodes(dir.path(), "T_PLACEMENT", &["cars-v1"], &config);
    let all: Vec<&Node> = nodes.iter().collect();
    let mut owner = String::new();
    wait_until_showing(
        LIVENESS,
        "a node to hold the lease of cars and serve it",
        || {
            let Some(holder) = lease_holder(&nodes[0], "cars") else {
                return false;
            };
            owner = holder;
            all.iter()
                .any(|n| n.spec.name == owner && version_in(n, "cars", "active").is_some())
        },
        || format!("{}\n{}", tails(&all), view(&nodes[0])),
    );
    story_part_one(&nodes[1]);
    let owner_node = all
        .iter()
        .find(|n| n.spec.name == owner)
        .expect("the owner");
    wait_until_showing(
        LIVENESS,
        "the owner to project offsets 1-6",
        || {
            owner_node
                .query("cars", CARS)
                .is_some_and(|(at, _)| at == 6)
        },
        || tails(&all),
    );
    let (_, rows) = owner_node.query("cars", CARS).expect("the owner answers");
    let published = wait_published(owner_node, 6);
    // Every node answers: the owner from its read model, the others through it.
    for node in &all {
        wait_until_showing(
            LIVENESS,
            &format!("{} to answer the query", node.spec.name),
            || node.query("cars", CARS) == Some((6, rows.clone())),
            || {
                let answer = node.post("/v1/projectors/cars/query", &json!({ "sql": CARS }));
                format!("{}: {}\n{}", answer.status, answer.text, view(node))
            },
        );
        if node.spec.name != owner {
            assert!(
                version_in(node, "cars", "active").is_none()
                    && version_in(node, "cars", "shadow").is_none(),
                "{} does not run cars",
                node.spec.name
            );
        }
    }
    let other = all.iter().find(|n| n.spec.name != owner).expect("a node");
    let health = other.get("/health");
    assert_eq!(
        health.json["placement"]["cars"][0]["node"], owner,
        "{}",
        health.text
    );
    let output = std::process::Command::new(refract())
        .args(["--url", &other.url, "--token", TOKEN, "query", "cars", CARS])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("hrxs21"),
        "refract query through {}: {text}{}",
        other.spec.name,
        String::from_utf8_lossy(&output.stderr)
    );
    let output = std::process::Command::new(refract())
        .args(["--url", &other.url, "--token", TOKEN, "status", "--cluster"])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("cars") && l.contains(&owner) && l.contains("held")),
        "{text}"
    );

    // The owner dies: a survivor takes the lease once it expires and replays cars.
    let index = nodes
        .iter()
        .position(|n| n.spec.name == owner)
        .expect("the owner");
    let killed = std::time::Instant::now();
    nodes[index].kill_9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.spec.name != owner).collect();
    let mut heir = String::new();
    wait_until_showing(
        Duration::from_millis(LEASE_TIMEOUT_MS) + LIVENESS / 4,
        "the lease of cars to move to a survivor",
        || match lease_holder(survivors[0], "cars") {
            Some(holder) if holder != owner => {
                heir = holder;
                true
            }
            _ => false,
        },
        || view(survivors[0]).to_string(),
    );
    eprintln!(
        "the lease moved from {owner} to {heir} after {:?}",
        killed.elapsed()
    );
    for node in &survivors {
        wait_until_showing(
            LIVENESS,
            &format!("{} to answer again after the failover", node.spec.name),
            || node.query("cars", CARS) == Some((6, rows.clone())),
            || {
                let answer = node.post("/v1/projectors/cars/query", &json!({ "sql": CARS }));
                format!("{}: {}\n{}", answer.status, answer.text, tails(&survivors))
            },
        );
    }
    // The heir started from the owner's shared snapshot, not from offset 1.
    let heir_node = survivors
        .iter()
        .find(|n| n.spec.name == heir)
        .expect("the heir");
    let restored = shared_snapshots(heir_node)["restores"]["cars"].clone();
    assert_eq!(restored["outcome"], "restored", "{restored}");
    assert_eq!(restored["snapshot"], published.as_str(), "{restored}");
    assert_eq!(restored["started_from"], 6, "{restored}");
    assert_eq!(restored["published_by"], owner.as_str(), "{restored}");
    assert_eq!(
        seeded_from(heir_node, "cars")?.as_deref(),
        Some(published.as_str())
    );
    // The new owner projects new events; the other survivor's answers come from it.
    let (stream, event_type, data) = story_part_two()[0].clone();
    let answer = survivors[0].append(stream, car(event_type, &data), None);
    assert_eq!(answer.status, 200, "{}", answer.text);
    for node in &survivors {
        wait_until_showing(
            LIVENESS,
            &format!("{} to answer at offset 7", node.spec.name),
            || node.query("cars", CARS).is_some_and(|(at, _)| at == 7),
            || tails(&survivors),
        );
        let runs = version_in(node, "cars", "active").is_some();
        assert_eq!(runs, node.spec.name == heir, "only {heir} runs cars");
    }
    let (_, rows_at_7) = survivors[0].query("cars", CARS).expect("an answer at 7");

    // The heir publishes its snapshot at 7; every shared snapshot of cars is then
    // corrupted and the heir killed: the last node refuses the newest and replays.
    wait_published(heir_node, 7);
    let corrupted = corrupt_shared_snapshots("T_PLACEMENT", "cars")?;
    assert!(!corrupted.is_empty(), "shared snapshots of cars to corrupt");
    let heir_index = nodes
        .iter()
        .position(|n| n.spec.name == heir)
        .expect("the heir");
    nodes[heir_index].kill_9();
    let last = nodes
        .iter()
        .find(|n| n.spec.name != owner && n.spec.name != heir)
        .expect("the last node");
    wait_until_showing(
        Duration::from_millis(LEASE_TIMEOUT_MS) + LIVENESS,
        "the last node to take cars over and answer at offset 7",
        || last.query("cars", CARS) == Some((7, rows_at_7.clone())),
        || format!("{}\n{}", shared_snapshots(last), last.tail()),
    );
    let fell_back = shared_snapshots(last)["restores"]["cars"].clone();
    assert_eq!(fell_back["outcome"], "fell_back", "{fell_back}");
    assert_eq!(fell_back["started_from"], 0, "{fell_back}");
    assert!(
        fell_back["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("sha256")),
        "the reason names the checksum: {fell_back}"
    );
    assert!(
        fell_back["snapshot"]
            .as_str()
            .is_some_and(|id| id.ends_with("/7")),
        "the newest shared snapshot, at 7, was tried and refused: {fell_back}"
    );
    assert_eq!(seeded_from(last, "cars")?, None, "replayed from offset 1");
    let metrics = last.get("/metrics").text;
    assert!(
        metrics.lines().any(|line| line
            .starts_with("refract_cluster_shared_snapshot_restore_fallbacks_total")
            && line.ends_with(" 1")),
        "{metrics}"
    );
    for node in &mut nodes {
        node.stop();
    }
    Ok(())
}
