//! Driving a host from a test: waiting for a condition with a liveness bound, starting
//! an engine in this process, running `refract run` as a child process (to `kill -9`
//! it), and copying data directories.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An engine started in this process on `data`, with the log it appends through and
/// the async runtime it waits on (keep the runtime alive as long as the engine).
pub struct InProcess {
    /// The log; appends through it wake the workers at once.
    pub log: refract::log::EventLog,
    /// The engine.
    pub engine: refract::engine::Engine,
    /// What it was started with, to start it again.
    pub options: refract::engine::EngineOptions,
    /// Its async runtime.
    pub runtime: tokio::runtime::Runtime,
}

/// Starts an engine on `data` (its plugins folder as the watched folder) with `config`.
pub fn start_engine(
    data: &refract::data_dir::DataDir,
    config: refract::config::Config,
) -> Result<InProcess, Box<dyn std::error::Error>> {
    let log = refract::log::EventLog::open(&data.events_db(), config.log_options())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let options = refract::engine::EngineOptions {
        data_dir: data.clone(),
        plugins_dir: data.plugins(),
        config,
        log_check: refract::engine::LogCheck::Strict,
    };
    let engine = refract::engine::Engine::start(&options, &log, runtime.handle())?;
    Ok(InProcess {
        log,
        engine,
        options,
        runtime,
    })
}

/// How often [`wait_until`] and [`wait_for`] look again.
const POLL: Duration = Duration::from_millis(5);

/// Polls `condition` until it holds.
///
/// # Panics
/// After `timeout`, naming `what` was awaited. The bound is for liveness only: make it
/// generous, since CI machines are slow and shared.
pub fn wait_until(timeout: Duration, what: &str, condition: impl FnMut() -> bool) {
    wait_until_showing(timeout, what, condition, String::new);
}

/// Polls `condition` until it holds.
///
/// # Panics
/// After `timeout`, naming `what` was awaited and adding `context()`: the state that
/// was waited on, so a failure explains itself.
pub fn wait_until_showing(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `probe` until it returns a value, and returns it.
///
/// # Panics
/// After `timeout`, naming `what` was awaited.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Copies a directory tree, keeping symbolic links as links (the stable read-model
/// path of a data directory is one).
///
/// # Errors
/// The first file that cannot be read or written.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A `refract run` child process whose stdout and stderr are collected line by line,
/// so a test can wait for a log line and show the host's output when it fails.
pub struct RunningHost {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl RunningHost {
    /// Starts `refract --data-dir <data_dir> --config <config> <extra> run --bind
    /// 127.0.0.1:0` in `cwd` (port 0: tests running side by side never collide), with
    /// the caller's `REFRACT_*` and `RUST_LOG` variables removed. `extra` are global
    /// options, such as `--log debug`.
    ///
    /// # Errors
    /// If the process cannot be started.
    pub fn start(
        binary: &Path,
        cwd: &Path,
        data_dir: &Path,
        config: &Path,
        extra: &[&str],
    ) -> std::io::Result<RunningHost> {
        RunningHost::launch(&[], binary, cwd, data_dir, config, extra, &[])
    }

    /// [`start`](RunningHost::start) with `run_args` after `run` (such as
    /// `--cluster <urls> --node <name>`).
    ///
    /// # Errors
    /// If the process cannot be started.
    pub fn start_with(
        binary: &Path,
        cwd: &Path,
        data_dir: &Path,
        config: &Path,
        extra: &[&str],
        run_args: &[&str],
    ) -> std::io::Result<RunningHost> {
        RunningHost::launch(&[], binary, cwd, data_dir, config, extra, run_args)
    }

    /// [`RunningHost::start`] through a wrapper command, such as `setpriv` to run the
    /// host as another user: `wrapper` comes first, then the host's command line.
    ///
    /// # Errors
    /// If the process cannot be started.
    pub fn start_wrapped(
        wrapper: &[&str],
        binary: &Path,
        cwd: &Path,
        data_dir: &Path,
        config: &Path,
        extra: &[&str],
    ) -> std::io::Result<RunningHost> {
        RunningHost::launch(wrapper, binary, cwd, data_dir, config, extra, &[])
    }

    fn launch(
        wrapper: &[&str],
        binary: &Path,
        cwd: &Path,
        data_dir: &Path,
        config: &Path,
        extra: &[&str],
        run_args: &[&str],
    ) -> std::io::Result<RunningHost> {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .current_dir(cwd)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .args(extra)
            .args(["run", "--bind", "127.0.0.1:0"])
            .args(run_args)
            .stdin(Stdio::null());
        Self::spawn(command)
    }

    /// Starts `command` (any `refract` command that keeps running, such as `dev`) with
    /// the caller's `REFRACT_*` and `RUST_LOG` variables removed and its output
    /// collected. Its stdin is left as the caller set it.
    ///
    /// # Errors
    /// If the process cannot be started.
    pub fn spawn(mut command: Command) -> std::io::Result<RunningHost> {
        command
            .env_remove("REFRACT_DATA")
            .env_remove("REFRACT_CONFIG")
            .env_remove("REFRACT_TOKEN")
            .env_remove("RUST_LOG")
            // Plain log lines, so tests can search them.
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(collect_lines(stdout, output.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(collect_lines(stderr, output.clone()));
        }
        Ok(RunningHost {
            child,
            output,
            readers,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Every line printed so far, stdout and stderr interleaved as they arrived.
    pub fn lines(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last `count` lines, for failure messages.
    pub fn tail(&self, count: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }

    /// Waits for a line containing `needle` and returns it.
    ///
    /// # Panics
    /// After `timeout`, or if the process exits first; with the host's output.
    pub fn wait_for_line(&mut self, timeout: Duration, needle: &str) -> String {
        self.wait_for_line_where(timeout, needle, |line| line.contains(needle))
    }

    /// Waits for a line for which `matches` holds and returns it; `what` describes it.
    ///
    /// # Panics
    /// After `timeout`, or if the process exits first; with the host's output.
    pub fn wait_for_line_where(
        &mut self,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| matches(line)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "refract run exited ({status}) before printing {what:?}:\n{}",
                    self.tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for refract run to print {what:?}:\n{}",
                self.tail(40)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the host has started and answers HTTP: its engine is running and its
    /// SIGTERM handler installed (a SIGTERM before that kills it without a clean
    /// shutdown).
    ///
    /// # Panics
    /// After `timeout`, or if the process exits first; with the host's output.
    pub fn wait_serving(&mut self, timeout: Duration) {
        let line = self.wait_for_line(timeout, "http api:");
        let address = line
            .split("http://")
            .nth(1)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        self.wait_until(timeout, &format!("an HTTP answer from {address}"), || {
            answers_http(&address)
        });
    }

    /// Polls `condition` until it holds.
    ///
    /// # Panics
    /// After `timeout`, or if the process exits first; naming `what` was awaited and
    /// showing the host's last lines.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "refract run exited ({status}) while waiting for {what}:\n{}",
                    self.tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; refract run's last lines:\n{}",
                self.tail(40)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`: the process gets no chance to clean up.
    ///
    /// # Errors
    /// If the signal cannot be sent or the process not reaped.
    pub fn kill_9(mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        let status = self.child.wait()?;
        self.join_readers();
        Ok(status)
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit and returns its status.
    ///
    /// # Panics
    /// If the process does not exit within `timeout` (it is then killed), with its output.
    pub fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(
            sent.as_ref().is_ok_and(ExitStatus::success),
            "cannot send SIGTERM to refract run: {sent:?}"
        );
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers();
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "refract run did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.tail(40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        // A test that panics must not leave a host running on its temporary directory.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether an HTTP server at `address` answers a request (with any status).
fn answers_http(address: &str) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut start = [0_u8; 5];
    stream.read_exact(&mut start).is_ok() && &start == b"HTTP/"
}

fn collect_lines(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(strip_ansi(&line));
        }
    })
}

/// `line` without ANSI escape sequences (colours and styles), in case the host's log
/// output ignores `NO_COLOR`.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
