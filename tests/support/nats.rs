//! Real `nats-server` processes (the Debian package) for the cluster tests: a
//! three-server JetStream cluster on loopback ports, in a temporary directory.
//!
//! [`shared`] is one cluster per test binary, for the tests that do not break it (each
//! uses its own stream). Tests that kill servers start their own with
//! [`NatsCluster::start`], so they never disturb the others.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// What to run when `nats-server` is missing.
pub const INSTALL: &str = "apt-get install -y nats-server";

/// How long a cluster may take to elect its JetStream leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `nats-server` binary.
///
/// # Panics
/// If it is not installed, with the command that installs it.
pub fn binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the cluster tests need a real NATS server, and `nats-server` is not installed: run `{INSTALL}` (Debian's package, JetStream 2.9), then run the tests again"
    );
}

/// One `nats-server` process, started through a small shell watchdog that kills it
/// when this test process goes away (its stdin, a pipe from us, reaches end of file):
/// the shared cluster lives in a `static`, which is never dropped.
struct Server {
    name: String,
    config: PathBuf,
    client_port: u16,
    running: Option<Running>,
}

struct Running {
    watchdog: Child,
    /// The `nats-server` process id, as the watchdog printed it.
    pid: u32,
}

impl Server {
    fn spawn(&mut self) {
        use std::io::BufRead as _;
        let log = self.config.with_extension("log");
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#""$1" -c "$2" 2>>"$3" & pid=$!; echo $pid; read -r _; kill -9 $pid 2>/dev/null"#)
            .arg("nats-watchdog")
            .arg(binary())
            .arg(&self.config)
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let mut line = String::new();
        if let Some(stdout) = watchdog.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the nats-server watchdog printed {line:?}, not a pid"));
        self.running = Some(Running { watchdog, pid });
    }

    fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = Command::new("kill")
                .args(["-9", &running.pid.to_string()])
                .status();
            // Closing its stdin ends the watchdog.
            drop(running.watchdog.stdin.take());
            let _ = running.watchdog.wait();
        }
    }
}

/// A JetStream cluster of `nats-server` processes on loopback.
pub struct NatsCluster {
    servers: Mutex<Vec<Server>>,
    dir: tempfile::TempDir,
}

/// The cluster shared by the tests of one binary that leave it running.
pub fn shared() -> &'static NatsCluster {
    static SHARED: OnceLock<NatsCluster> = OnceLock::new();
    SHARED.get_or_init(|| NatsCluster::start(3))
}

/// Free loopback ports (bound, read, released).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

impl NatsCluster {
    /// Starts `size` servers (1, or 3 as a cluster) with JetStream on, and waits until
    /// JetStream answers.
    ///
    /// # Panics
    /// If `nats-server` is missing or the cluster does not come up.
    pub fn start(size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ports = free_ports(size * 2);
        let (clients, routes) = ports.split_at(size);
        let mut servers = Vec::new();
        for index in 0..size {
            let name = format!("nats{}", index + 1);
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store).expect("a store directory");
            let mut config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n}}\n",
                clients[index],
                store.display()
            );
            if size > 1 {
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, port)| format!("nats-route://127.0.0.1:{port}"))
                    .collect();
                config.push_str(&format!(
                    "cluster {{\n  name: refract-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    routes[index],
                    others.join(", ")
                ));
            }
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config).expect("a server configuration");
            let mut server = Server {
                name,
                config: path,
                client_port: clients[index],
                running: None,
            };
            server.spawn();
            servers.push(server);
        }
        let cluster = NatsCluster {
            servers: Mutex::new(servers),
            dir,
        };
        cluster.wait_ready(size);
        cluster
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, Vec<Server>> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every server's client URL, comma-separated (for `--cluster`).
    pub fn urls(&self) -> String {
        self.servers()
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `index` (0-based), as `kill -9` would.
    pub fn kill(&self, index: usize) {
        self.servers()[index].kill();
    }

    /// Kills every server.
    pub fn kill_all(&self) {
        for server in self.servers().iter_mut() {
            server.kill();
        }
    }

    /// Starts server `index` again, on its old port and store.
    pub fn restart(&self, index: usize) {
        self.servers()[index].spawn();
    }

    /// Starts every stopped server again and waits until JetStream answers.
    pub fn restart_all(&self) {
        let size = {
            let mut servers = self.servers();
            for server in servers.iter_mut().filter(|s| s.running.is_none()) {
                server.spawn();
            }
            servers.len()
        };
        self.wait_ready(size);
    }

    /// The servers' log files, for failure messages.
    pub fn logs(&self) -> String {
        self.servers()
            .iter()
            .map(|s| {
                let text =
                    std::fs::read_to_string(s.config.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    s.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until JetStream can create (and remove) a stream with `size` replicas:
    /// the cluster has routes and a meta leader.
    fn wait_ready(&self, size: usize) {
        let urls = self.urls();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let attempt = runtime.block_on(async {
                let addresses: Vec<&str> = urls.split(',').collect();
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(1))
                    .connect(addresses.as_slice())
                    .await
                    .map_err(|e| e.to_string())?;
                let jetstream = async_nats::jetstream::new(client);
                let name = format!("READY_{}", std::process::id());
                jetstream
                    .get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("ready.{}", std::process::id())],
                        num_replicas: size,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                jetstream
                    .delete_stream(&name)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            });
            match attempt {
                Ok(()) => return,
                Err(error) => last = error,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the NATS cluster in {} did not become ready within {READY_TIMEOUT:?}: {last}\n{}",
            self.dir.path().display(),
            self.logs()
        );
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
