//! `refract bench`: Refract measured against a native-Rust baseline, side by side, in
//! one process and one run.
//!
//! Every figure is the median over `reps` repetitions. The headline is `replay_ratio`:
//! the WASM `balances` projector replayed through the engine's own loop, against the
//! same logic written natively ([`native`]), each repetition running both back to back
//! (alternating which goes first) on the same log; the ratio is the median of the
//! repetitions' ratios. Before any figure is reported, the two read models must be
//! identical by checksum; if they are not, [`run`] fails.
//!
//! A figure that cannot be measured in a run (too few events for it, no binary to
//! re-execute) is listed as not measured, with why, and never given a value. Besides the
//! issue's figures, a run reports the diagnostics that explain them: the two replay
//! floors, `append_batch_one_stream_eps` (what the per-stream index costs),
//! `append_single_events_per_commit` (how well group commit batches) and
//! `disk_fsync_ms` (what each commit waits for).
//!
//! # Layout
//! - `mod.rs`: options, the groups of figures and the order of the run.
//! - [`report`]: figures, targets, the table and the JSON Lines.
//! - [`native`]: the native-Rust `balances` baseline.
//! - [`plain`]: the plain native rebuild over a minimal log table of its own
//!   (`replay_vs_plain_native`).
//! - `append`: append throughput, batched and single events from 16 threads, and the
//!   disk's fsync latency that bounds them.
//! - `replay`: WASM and native replays, the read-model checksum, the two floors.
//! - `live`: append-to-visible latency through the real engine.
//! - `cold_start`: time to first event, with and without the compile cache.
//! - `http`: append throughput through the HTTP API, 32 concurrent clients.
//! - [`swap`]: a deploy through the engine: swap time and failed or stale reads.
//! - [`memory`]: peak RSS of a replay, measured in a child process.
//! - `consumers`: consumer-group throughput, three members over HTTP.
//! - `retention`: WASM replay from a log whose history is in the archive, next to the
//!   same replay from the live log.
//! - `snapshots`: taking a read-model snapshot, recovery from it against a full replay,
//!   point-in-time queries cold and warm.
//! - [`cluster`]: `refract bench --cluster`: cluster mode on loopback (its own run,
//!   with nats-server processes; not part of the default run).
//! - `levers`: issue 16's levers each off and on in one run (`--only levers`): read-ahead
//!   and the sequential scan on replay, the stream-version cache on batched appends, and
//!   the log's deferred stream index at chunk 1 and at its default (`stream_index.rs`)
//!   beside its references.
//! - [`components`]: other builds of the workload given by path (`--component
//!   balances-ts=…`): replay rate and ratio to native, size, compile time, cached cold
//!   start, each checked against the native read model.

mod append;
pub mod cluster;
mod cold_start;
pub mod components;
mod consumers;
mod cpu;
pub mod http;
mod levers;
mod live;
pub mod memory;
pub mod native;
pub mod plain;
mod reactors;
mod replay;
pub mod report;
mod retention;
mod row_indexes;
mod snapshots;
mod stream_index;
pub mod swap;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};

pub use append::{APPEND_BATCH_EVENTS, SINGLE_APPEND_MAX_EVENTS, SINGLE_APPEND_THREADS};
pub use replay::{Checksum, checksum};
pub use report::{Figure, Measurement, Report, Target, median, quantile};

use self::cpu::CpuSpent;
use crate::config::Config;
use crate::engine::BatchLimits;
use crate::log::{EventLog, LogOptions};
use crate::runtime::{LoadedProjector, Runtime, RuntimeConfig, SandboxLimits};

/// Events in the benchmark's log when `--events` is not given.
pub const DEFAULT_EVENTS: usize = 100_000;

/// Repetitions of each measurement when `--reps` is not given.
pub const DEFAULT_REPS: usize = 3;

/// The workload's seed: the same seed gives the same events on every machine.
pub const DEFAULT_SEED: u64 = 42;

/// The log sizes of the two memory figures.
pub const RSS_EVENTS: [(u64, &str); 2] = [(100_000, "rss_100k_mb"), (1_000_000, "rss_1m_mb")];

/// Live-latency samples per repetition: one per hundred events of the run, within these
/// bounds, so a quick run stays quick and a full run has a meaningful p99.
pub const LIVE_SAMPLES: (usize, usize) = (200, 2_000);

/// The most events the swap figure replays: enough for a replay that takes a while
/// under a query loop, without doubling the run at 1M events.
pub const SWAP_MAX_EVENTS: usize = 200_000;

/// A group of figures, measured together; `--only` picks some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `append_batch_eps`, `append_single_eps`, `append_http_eps` (with the server's and
    /// the load generator's CPU per event, and the server's CPU bound).
    Append,
    /// `replay_wasm_eps`, `replay_native_eps`, `replay_ratio`, `replay_plain_native_eps`,
    /// `replay_vs_plain_native`, and the CPU per event of the WASM replay's threads and
    /// of the plain program.
    Replay,
    /// `floor_scan_ns_per_event`, `floor_upsert_ns_per_event`, and
    /// `replay_wasm_serial_eps` (the WASM replay with the engine's read-ahead off).
    Floors,
    /// `live_p50_ms`, `live_p99_ms`.
    Live,
    /// `swap_ms`, `swap_failed_reads`.
    Swap,
    /// `rss_100k_mb`, `rss_1m_mb`.
    Memory,
    /// `cold_start_ms`, `cold_start_cached_ms`.
    ColdStart,
    /// `consumer_group_eps`.
    Consumers,
    /// `replay_live_eps`, `replay_archive_eps`.
    Retention,
    /// `snapshot_ms`, `snapshot_mib`, `recovery_snapshot_ms`, `recovery_replay_ms`,
    /// `pit_query_cold_ms`, `pit_query_warm_ms`.
    Snapshots,
    /// `reactor_eps`, `reactor_projector_eps`.
    Reactors,
    /// `lever_*`: each of issue 16's levers off and on, in one run.
    Levers,
}

impl Group {
    /// Every group, in the order a run measures them.
    pub const ALL: [Group; 12] = [
        Group::Append,
        Group::Replay,
        Group::Floors,
        Group::Live,
        Group::Swap,
        Group::Memory,
        Group::ColdStart,
        Group::Consumers,
        Group::Retention,
        Group::Snapshots,
        Group::Reactors,
        Group::Levers,
    ];

    /// The group's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Group::Append => "append",
            Group::Replay => "replay",
            Group::Floors => "floors",
            Group::Live => "live",
            Group::Swap => "swap",
            Group::Memory => "memory",
            Group::ColdStart => "cold-start",
            Group::Consumers => "consumers",
            Group::Retention => "retention",
            Group::Snapshots => "snapshots",
            Group::Reactors => "reactors",
            Group::Levers => "levers",
        }
    }
}

impl FromStr for Group {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Group::ALL
            .into_iter()
            .find(|group| group.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Group::ALL.iter().map(|group| group.name()).collect();
                format!(
                    "unknown group `{text}`; the groups are {}",
                    names.join(", ")
                )
            })
    }
}

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events in the log that is replayed (and appended in batches).
    pub events: usize,
    /// Repetitions of each measurement; figures are medians.
    pub reps: usize,
    /// The groups to measure; empty means all. The replay check runs regardless.
    pub only: Vec<Group>,
    /// The `balances` component; `None` builds it from the source tree.
    pub plugin: Option<PathBuf>,
    /// Where the scratch directory goes (default: the system's temp directory). It
    /// should be on the disk being measured: a tmpfs makes fsync free.
    pub work_dir: Option<PathBuf>,
    /// The workload seed.
    pub seed: u64,
    /// Log options, sandbox limits and batch sizes.
    pub config: Config,
    /// The `refract` binary, re-executed for the memory figures; `None` skips them.
    pub exe: Option<PathBuf>,
    /// Other builds of `balances` to measure on the same log (`--component`).
    pub components: Vec<components::ComponentSpec>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            events: DEFAULT_EVENTS,
            reps: DEFAULT_REPS,
            only: Vec::new(),
            plugin: None,
            work_dir: None,
            seed: DEFAULT_SEED,
            config: Config::default(),
            exe: None,
            components: Vec::new(),
        }
    }
}

/// The scratch directory of one run, removed when dropped.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn create(parent: Option<&Path>) -> Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let root = parent.join(format!("refract-bench-{}", std::process::id()));
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("cannot clear {}", root.display()))?;
        }
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Self { root })
    }

    /// A folder inside the scratch directory, created.
    fn dir(&self, relative: &str) -> Result<PathBuf> {
        let path = self.root.join(relative);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }

    /// A file path inside the scratch directory, creating its parent folders.
    fn path(&self, relative: &str) -> Result<PathBuf> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Removes a read-model database and its WAL files.
fn remove_db(path: &Path) -> Result<()> {
    append::remove_log(path)
}

/// Finds the `balances` component: `plugin`, or built from the source tree.
fn balances_component(plugin: Option<&Path>, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if let Some(path) = plugin {
        return Ok(path.to_owned());
    }
    progress("building the balances component from the source tree");
    crate::guest_build::build_guests(&["balances"])?
        .pop()
        .ok_or_else(|| anyhow!("the guest build returned no component"))
}

/// Checks that the component is the `balances` the native baseline mirrors.
fn check_balances(loaded: &LoadedProjector) -> Result<()> {
    let info = loaded.info();
    let mut types = info.subscriptions.event_types.clone();
    types.sort();
    let mut expected: Vec<String> = native::SUBSCRIBED_TYPES
        .iter()
        .map(|&t| t.to_owned())
        .collect();
    expected.sort();
    ensure!(
        info.name == "balances"
            && types == expected
            && info.subscriptions.stream_prefixes.is_empty(),
        "the component is `{}` subscribed to {types:?} (stream prefixes {:?}); the native \
         baseline mirrors `balances` subscribed to {expected:?}: pass the `balances` \
         example projector",
        info.name,
        info.subscriptions.stream_prefixes
    );
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One run's state: what every group needs.
struct Harness<'a> {
    options: &'a BenchOptions,
    progress: &'a mut dyn FnMut(&str),
    scratch: Scratch,
    plugin: PathBuf,
    wasm: Vec<u8>,
    loaded: LoadedProjector,
    /// The warm compile cache of `loaded`.
    cache: PathBuf,
    log_options: LogOptions,
    limits: SandboxLimits,
    batch: BatchLimits,
    /// The log every replay reads: the workload's first `events` events.
    log_path: PathBuf,
    figures: Vec<Figure>,
}

impl Harness<'_> {
    fn wants(&self, group: Group) -> bool {
        self.options.only.is_empty() || self.options.only.contains(&group)
    }

    fn note(&mut self, line: &str) {
        (self.progress)(line);
    }

    /// Each repetition's value of `measure`, with a progress line per repetition.
    fn repeat(
        &mut self,
        what: &str,
        mut measure: impl FnMut(&mut Self, usize) -> Result<f64>,
    ) -> Result<Vec<f64>> {
        let reps = self.options.reps;
        let mut values = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!("{what} (rep {rep}/{reps})"));
            values.push(measure(self, rep)?);
        }
        Ok(values)
    }

    /// Append throughput. The last batched log stays as the log every replay reads; a
    /// run without this group still writes it once, untimed.
    fn append(&mut self) -> Result<()> {
        let (events, seed) = (self.options.events, self.options.seed);
        let path = self.log_path.clone();
        if !self.wants(Group::Append) {
            self.note(&format!("writing a log of {events} events"));
            append::batch_eps(&path, &self.log_options, seed, events, false)?;
            return Ok(());
        }
        let batch = self.repeat(
            &format!("append: {events} events in batches of {APPEND_BATCH_EVENTS}"),
            |h, _| append::batch_eps(&path, &h.log_options, seed, events, false),
        )?;
        self.figures
            .push(Figure::measured("append_batch_eps", "events/s", 0, batch));
        let one_path = self.scratch.path("one-stream/events.db")?;
        let one_stream = self.repeat(
            &format!("append: the same {events} events, all in one stream"),
            |h, _| append::batch_eps(&one_path, &h.log_options, seed, events, true),
        )?;
        append::remove_log(&one_path)?;
        self.figures.push(Figure::measured(
            "append_batch_one_stream_eps",
            "events/s",
            0,
            one_stream,
        ));

        let single_events = events.min(SINGLE_APPEND_MAX_EVENTS);
        let single_path = self.scratch.path("single/events.db")?;
        let mut per_commit = Vec::new();
        let single = self.repeat(
            &format!("append: {single_events} single events from {SINGLE_APPEND_THREADS} threads"),
            |h, _| {
                let run = append::single_eps(&single_path, &h.log_options, seed, single_events)?;
                per_commit.push(run.events_per_commit);
                Ok(run.events_per_second)
            },
        )?;
        append::remove_log(&single_path)?;
        self.figures
            .push(Figure::measured("append_single_eps", "events/s", 0, single));
        self.figures.push(Figure::measured(
            "append_single_events_per_commit",
            "events",
            1,
            per_commit,
        ));
        let dir = self.scratch.dir("fsync")?;
        let fsync = self.repeat("disk: 8 KiB write + fdatasync, median of 200", |_, _| {
            append::fsync_ms(&dir)
        })?;
        // Each of the single-event appenders waits for its commit, and a commit for its
        // fsync: the most they can reach, were a commit nothing but one fsync of this disk.
        let fsync_bound = fsync
            .iter()
            .map(|ms| SINGLE_APPEND_THREADS as f64 * 1000.0 / ms)
            .collect();
        self.figures
            .push(Figure::measured("disk_fsync_ms", "ms", 3, fsync));
        self.figures.push(Figure::measured(
            "append_single_fsync_bound_eps",
            "events/s",
            0,
            fsync_bound,
        ));
        self.http_appends()?;
        Ok(())
    }

    /// Appends through the HTTP API from a load generator in a separate process: the
    /// floor (the same clients sending empty batches, refused before the log), the
    /// headline at [`http::CLIENTS`] clients, single events swept over
    /// [`http::SWEEP_CLIENTS`], and [`http::BATCH_EVENTS`] events per request swept over
    /// [`http::BATCH_SWEEP_CLIENTS`].
    fn http_appends(&mut self) -> Result<()> {
        let Some(exe) = self.options.exe.clone() else {
            self.figures.push(Figure::not_measured(
                "append_http_eps",
                "events/s",
                "needs the refract binary to run the load generator",
            ));
            return Ok(());
        };
        let single_events = self.options.events.min(SINGLE_APPEND_MAX_EVENTS);
        let batch_events = self.options.events.min(http::BATCH_EVENTS * 2_000);
        // The floor first: the same requests, empty, answered before the log.
        let mut runs: Vec<(&'static str, Option<String>, usize, usize, usize)> = vec![
            (
                "append_http_floor_rps",
                None,
                http::CLIENTS,
                single_events,
                0,
            ),
            ("append_http_eps", None, http::CLIENTS, single_events, 1),
        ];
        for clients in http::SWEEP_CLIENTS {
            runs.push((
                "append_http_sweep_eps",
                Some(format!("{clients} clients")),
                clients,
                single_events,
                1,
            ));
        }
        for clients in http::BATCH_SWEEP_CLIENTS {
            runs.push((
                "append_http_batch_eps",
                Some(format!(
                    "{clients} clients x {} per request",
                    http::BATCH_EVENTS
                )),
                clients,
                batch_events,
                http::BATCH_EVENTS,
            ));
        }
        for (name, subject, clients, events, batch) in runs {
            let (mut server_cpu, mut client_cpu) = (Vec::new(), Vec::new());
            let eps = self.repeat(
                &if batch == 0 {
                    format!(
                        "append: {events} empty requests through the HTTP API (the floor), from {clients} clients in a separate process"
                    )
                } else {
                    format!(
                        "append: {events} events through the HTTP API, {batch} per request, from {clients} clients in a separate process"
                    )
                },
                |h, rep| {
                    let root = h.scratch.dir(&format!("http-{clients}-{batch}-{rep}"))?;
                    let load = http::Load {
                        url: String::new(),
                        clients,
                        events,
                        batch,
                    };
                    let run = http::run(&root, &h.options.config, &exe, load);
                    let _ = std::fs::remove_dir_all(&root);
                    let run = run?;
                    server_cpu.push(run.server_cpu_us_per_event);
                    client_cpu.push(run.client_cpu_us_per_event);
                    Ok(run.events_per_second)
                },
            )?;
            let about = |figure: Figure| match &subject {
                Some(subject) => figure.about(subject),
                None => figure,
            };
            let unit = if batch == 0 { "requests/s" } else { "events/s" };
            self.figures
                .push(about(Figure::measured(name, unit, 0, eps)));
            // Where the CPU went, for the floor, the headline and the batched runs (the
            // sweep's single-event runs split like the headline).
            if name == "append_http_floor_rps" {
                self.figures.push(Figure::measured(
                    "append_http_floor_server_cpu_us",
                    "µs/request",
                    1,
                    server_cpu.clone(),
                ));
            } else if name == "append_http_eps" || batch > 1 {
                self.figures.push(about(Figure::measured(
                    "append_http_server_cpu_us",
                    "µs/event",
                    1,
                    server_cpu.clone(),
                )));
                self.figures.push(about(Figure::measured(
                    "append_http_client_cpu_us",
                    "µs/event",
                    1,
                    client_cpu,
                )));
            }
            if name == "append_http_eps" {
                // What the server's own CPU allows on this machine's cores, were the
                // clients elsewhere: the evidence for or against the server as the limit.
                let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
                let bound = server_cpu.iter().map(|us| cores * 1e6 / us).collect();
                self.figures.push(Figure::measured(
                    "append_http_server_bound_eps",
                    "events/s",
                    0,
                    bound,
                ));
            }
        }
        Ok(())
    }

    /// WASM and native replays side by side, checked against each other every time.
    /// Runs once, untimed, when the group is not wanted: the check is not optional.
    fn replay(&mut self, log: &EventLog, head: u64) -> Result<Checksum> {
        let timed = self.wants(Group::Replay);
        let reps = if timed { self.options.reps } else { 1 };
        let (mut wasm_eps, mut native_eps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut plain_eps, mut plain_ratios) = (Vec::new(), Vec::new());
        // CPU per event: the replaying thread (the guest and the writes), the WASM
        // replay's other threads (the read-ahead), and the plain program's one thread.
        let (mut wasm_main_ns, mut wasm_other_ns, mut plain_main_ns) =
            (Vec::new(), Vec::new(), Vec::new());
        let plain_log = self.scratch.path("replay/plain-log.db")?;
        self.note("replay: copying the events into the plain program's minimal log table");
        plain::write_plain_log(&self.log_path, &plain_log, head)?;
        let mut agreed: Option<Checksum> = None;
        for rep in 1..=reps {
            self.note(&format!(
                "replay: {head} events, WASM, native and plain native (rep {rep}/{reps})"
            ));
            let wasm_db = self.scratch.path(&format!("replay/wasm-{rep}.db"))?;
            let native_db = self.scratch.path(&format!("replay/native-{rep}.db"))?;
            let plain_db = self.scratch.path(&format!("replay/plain-{rep}.db"))?;
            let mut wasm_time = Duration::ZERO;
            let mut native_time = Duration::ZERO;
            let mut plain_time = Duration::ZERO;
            let (mut wasm_cpu, mut plain_cpu) = (None, None);
            // Rotate which goes first, so none always gets the warmer caches.
            for turn in 0..3 {
                match (rep + turn) % 3 {
                    1 => {
                        let cpu = CpuSpent::now();
                        wasm_time =
                            replay::replay_wasm(&self.loaded, log, &wasm_db, self.batch, head)?;
                        wasm_cpu = Some(cpu.elapsed());
                    }
                    2 => {
                        native_time =
                            replay::replay_native(log, &native_db, &self.limits, self.batch, head)?;
                    }
                    _ => {
                        let cpu = CpuSpent::now();
                        plain_time =
                            plain::replay_plain(&plain_log, &plain_db, &self.limits, head)?;
                        plain_cpu = Some(cpu.elapsed());
                    }
                }
            }
            let per_event_ns = |seconds: f64| seconds * 1e9 / head.max(1) as f64;
            if let (Some(wasm), Some(plain)) = (wasm_cpu, plain_cpu) {
                wasm_main_ns.push(per_event_ns(wasm.thread));
                wasm_other_ns.push(per_event_ns(wasm.other_threads()));
                plain_main_ns.push(per_event_ns(plain.thread));
            }
            let checksum = replay::verify_identical(&wasm_db, &native_db)?;
            let plain_checksum = replay::checksum(&plain_db)?;
            ensure!(
                plain_checksum == checksum,
                "the plain native rebuild built a different read model ({plain_checksum}) than \
                 the WASM and native replays ({checksum}), so no figure can be trusted"
            );
            remove_db(&plain_db)?;
            let plain_rate = head as f64 / plain_time.as_secs_f64();
            if let Some(first) = &agreed
                && *first != checksum
            {
                bail!(
                    "repetition {rep} built a different read model ({checksum}) than the first ({first})"
                );
            }
            ensure!(
                checksum.checkpoint == head,
                "the read models stop at {}, not at the head {head}",
                checksum.checkpoint
            );
            agreed = Some(checksum);
            remove_db(&wasm_db)?;
            remove_db(&native_db)?;
            let wasm_rate = head as f64 / wasm_time.as_secs_f64();
            let native_rate = head as f64 / native_time.as_secs_f64();
            wasm_eps.push(wasm_rate);
            native_eps.push(native_rate);
            ratios.push(wasm_rate / native_rate);
            plain_eps.push(plain_rate);
            plain_ratios.push(wasm_rate / plain_rate);
        }
        remove_db(&plain_log)?;
        if timed {
            self.figures
                .push(Figure::measured("replay_wasm_eps", "events/s", 0, wasm_eps));
            self.figures.push(Figure::measured(
                "replay_native_eps",
                "events/s",
                0,
                native_eps,
            ));
            self.figures
                .push(Figure::measured("replay_ratio", "ratio", 3, ratios));
            self.figures.push(Figure::measured(
                "replay_plain_native_eps",
                "events/s",
                0,
                plain_eps,
            ));
            self.figures.push(Figure::measured(
                "replay_vs_plain_native",
                "ratio",
                3,
                plain_ratios,
            ));
            for (name, values) in [
                ("replay_wasm_main_thread_cpu_ns", wasm_main_ns),
                ("replay_wasm_other_threads_cpu_ns", wasm_other_ns),
                ("replay_plain_native_cpu_ns", plain_main_ns),
            ] {
                self.figures
                    .push(Figure::measured(name, "ns/event", 0, values));
            }
        }
        agreed.ok_or_else(|| anyhow!("no replay ran"))
    }

    /// A reactor's throughput next to a projector's replay of the same events.
    fn reactors(&mut self) -> Result<()> {
        let events = self.options.events.min(reactors::REACTOR_MAX_EVENTS);
        let scratch = self.scratch.dir("reactors")?;
        let runtime = self.loaded.runtime().clone();
        let (log_options, batch, reps) = (self.log_options.clone(), self.batch, self.options.reps);
        let (reactor, projector) = reactors::measure(
            &runtime,
            &scratch,
            &log_options,
            batch,
            events,
            reps,
            self.progress,
        )?;
        self.figures
            .push(Figure::measured("reactor_eps", "events/s", 0, reactor));
        self.figures.push(Figure::measured(
            "reactor_projector_eps",
            "events/s",
            0,
            projector,
        ));
        Ok(())
    }

    /// The log-scan and upsert floors.
    fn floors(&mut self, log: &EventLog, head: u64) -> Result<()> {
        let batch_events = self.batch.max_events;
        let scan = self.repeat("floor: log scan only", |_, _| {
            replay::scan_floor_ns(log, batch_events, head)
        })?;
        let upsert = self.repeat("floor: upserts only", |h, rep| {
            let db = h.scratch.path(&format!("floor/upsert-{rep}.db"))?;
            let ns = replay::upsert_floor_ns(log, &db, &h.limits, batch_events, head)?;
            remove_db(&db)?;
            Ok(ns)
        })?;
        let serial = self.repeat("floor: WASM replay without read-ahead", |h, rep| {
            let db = h.scratch.path(&format!("floor/serial-{rep}.db"))?;
            let took = replay::replay_wasm_with(&h.loaded, log, &db, h.batch, head, false)?;
            remove_db(&db)?;
            Ok(head as f64 / took.as_secs_f64())
        })?;
        self.figures.push(Figure::measured(
            "replay_wasm_serial_eps",
            "events/s",
            0,
            serial,
        ));
        self.figures.push(Figure::measured(
            "floor_scan_ns_per_event",
            "ns/event",
            0,
            scan,
        ));
        self.figures.push(Figure::measured(
            "floor_upsert_ns_per_event",
            "ns/event",
            0,
            upsert,
        ));
        Ok(())
    }

    /// Append-to-visible latency through the real engine.
    fn live(&mut self) -> Result<()> {
        let samples = (self.options.events / 100).clamp(LIVE_SAMPLES.0, LIVE_SAMPLES.1);
        let reps = self.options.reps;
        let (mut p50, mut p99) = (Vec::new(), Vec::new());
        for rep in 1..=reps {
            self.note(&format!(
                "live: {samples} events appended one at a time through the engine (rep {rep}/{reps})"
            ));
            let root = self.scratch.dir(&format!("live-{rep}"))?;
            let run = live::run(
                &root,
                &self.wasm,
                &self.options.config,
                self.options.seed,
                samples,
            )?;
            let millis: Vec<f64> = run.latencies.iter().copied().map(millis).collect();
            p50.push(quantile(&millis, 0.50));
            p99.push(quantile(&millis, 0.99));
            let _ = std::fs::remove_dir_all(&root);
        }
        self.figures
            .push(Figure::measured("live_p50_ms", "ms", 2, p50));
        self.figures
            .push(Figure::measured("live_p99_ms", "ms", 2, p99));
        Ok(())
    }

    /// Swap time and failed or stale reads during a whole deploy, through the engine.
    fn swap(&mut self) -> Result<()> {
        let events = self.options.events.min(SWAP_MAX_EVENTS);
        let mut failed = Vec::new();
        let mut reads = Vec::new();
        let took = self.repeat(
            &format!(
                "swap: deploying a new balances version over {events} events while a reader queries"
            ),
            |h, rep| {
                let root = h.scratch.dir(&format!("swap-{rep}"))?;
                let run = swap::run(&root, &h.wasm, &h.options.config, h.options.seed, events);
                let _ = std::fs::remove_dir_all(&root);
                let run = run?;
                failed.push(run.failed_reads as f64);
                reads.push(run.reads as f64);
                Ok(millis(run.swap))
            },
        )?;
        self.figures
            .push(Figure::measured("swap_ms", "ms", 2, took));
        self.figures
            .push(Figure::measured("swap_failed_reads", "reads", 0, failed));
        self.figures.push(Figure::measured(
            "swap_reads_during_deploy",
            "reads",
            0,
            reads,
        ));
        Ok(())
    }

    /// Peak RSS of replays of 100k and 1M events, each in a process of its own.
    fn memory(&mut self, head: u64) -> Result<()> {
        for (size, name) in RSS_EVENTS {
            let figure = match self.options.exe.clone() {
                None => Figure::not_measured(name, "MiB", "needs the refract binary to re-execute"),
                Some(_) if memory::peak_rss_kib().is_none() => {
                    Figure::not_measured(name, "MiB", "needs Linux's /proc/self/status")
                }
                Some(_) if head < size => {
                    Figure::not_measured(name, "MiB", format!("needs --events {size} or more"))
                }
                Some(exe) => {
                    let mib = self.repeat(
                        &format!("memory: replaying {size} events in a child process"),
                        |h, rep| {
                            let out = h.scratch.path(&format!("rss/{size}-{rep}.db"))?;
                            let probe = memory::Probe {
                                log: h.log_path.clone(),
                                until: size,
                                plugin: h.plugin.clone(),
                                cache: h.cache.clone(),
                                out: out.clone(),
                            };
                            let mib = memory::measure(&exe, &probe)?;
                            remove_db(&out)?;
                            Ok(mib)
                        },
                    )?;
                    Figure::measured(name, "MiB", 1, mib)
                }
            };
            self.figures.push(figure);
        }
        Ok(())
    }

    /// Consumer-group throughput: three members over HTTP, delivered and acked.
    fn consumers(&mut self, head: u64) -> Result<()> {
        let events = head.min(consumers::MAX_EVENTS);
        let log_path = self.log_path.clone();
        let eps = self.repeat(
            &format!(
                "consumers: {events} events delivered and acked by a group of {} members over HTTP",
                consumers::MEMBERS
            ),
            |h, rep| {
                let root = h.scratch.dir(&format!("consumers-{rep}"))?;
                let eps = consumers::run(&root, &log_path, &h.options.config);
                let _ = std::fs::remove_dir_all(&root);
                eps
            },
        )?;
        self.figures
            .push(Figure::measured("consumer_group_eps", "events/s", 0, eps));
        Ok(())
    }

    /// Replay from the archive next to replay from the live log (see `retention.rs`).
    fn retention(&mut self, log: &EventLog, head: u64) -> Result<()> {
        let root = self.scratch.dir("retention")?;
        self.note("retention: archiving all but each stream's newest event of a copy of the log");
        let (archived_log, archived) = retention::archived_copy(&self.log_path, &root)?;
        let (mut live, mut archive) = (Vec::new(), Vec::new());
        let reps = self.options.reps;
        for rep in 1..=reps {
            self.note(&format!(
                "retention: replay of {head} events ({archived} of them archived) and of the live log (rep {rep}/{reps})"
            ));
            let (live_eps, archive_eps) = retention::replay_both(
                &self.loaded,
                log,
                &archived_log,
                &root,
                self.batch,
                head,
                rep % 2 == 0,
            )?;
            live.push(live_eps);
            archive.push(archive_eps);
        }
        drop(archived_log);
        let _ = std::fs::remove_dir_all(&root);
        self.figures
            .push(Figure::measured("replay_live_eps", "events/s", 0, live));
        self.figures.push(Figure::measured(
            "replay_archive_eps",
            "events/s",
            0,
            archive,
        ));
        Ok(())
    }

    /// Each of issue 16's levers off and on (see `levers.rs`).
    fn levers(&mut self, log: &EventLog, head: u64, agreed: &Checksum) -> Result<()> {
        let dir = self.scratch.dir("levers")?;
        let reps = self.options.reps;
        let mut rounds = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!(
                "levers: {head} events replayed with read-ahead and sequential scan each off and on (rep {rep}/{reps})"
            ));
            rounds.push(levers::replay_round(
                &self.loaded,
                log,
                &dir,
                self.batch,
                head,
                rep,
                agreed,
            )?);
        }
        let pick = |f: fn(&levers::ReplayLevers) -> f64| rounds.iter().map(f).collect();
        self.figures.extend([
            Figure::measured(
                "lever_replay_both_on_eps",
                "events/s",
                0,
                pick(|r| r.both_on),
            ),
            Figure::measured(
                "lever_replay_read_ahead_off_eps",
                "events/s",
                0,
                pick(|r| r.read_ahead_off),
            ),
            Figure::measured(
                "lever_replay_scan_off_eps",
                "events/s",
                0,
                pick(|r| r.scan_off),
            ),
            Figure::measured(
                "lever_replay_both_off_eps",
                "events/s",
                0,
                pick(|r| r.both_off),
            ),
        ]);
        let mut batches = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!(
                "levers: {head} events replayed in batches of {} and {} events (rep {rep}/{reps})",
                self.batch.max_events,
                levers::LARGE_BATCH_EVENTS
            ));
            batches.push(levers::batch_round(
                &self.loaded,
                log,
                &dir,
                self.batch,
                head,
                rep,
                agreed,
            )?);
        }
        let pick = |f: fn(&levers::BatchLevers) -> f64| batches.iter().map(f).collect();
        self.figures.extend([
            Figure::measured(
                "lever_replay_batch_default_eps",
                "events/s",
                0,
                pick(|r| r.default_batch),
            ),
            Figure::measured(
                "lever_replay_batch_large_eps",
                "events/s",
                0,
                pick(|r| r.large_batch),
            ),
        ]);
        let (events, seed) = (self.options.events, self.options.seed);
        let path = dir.join("append/events.db");
        std::fs::create_dir_all(dir.join("append"))?;
        let mut appends = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!(
                "levers: {events} events appended in batches of {APPEND_BATCH_EVENTS}, stream-version cache and larger checkpoints each off (rep {rep}/{reps})"
            ));
            appends.push(levers::append_round(
                &path,
                &self.log_options,
                seed,
                events,
                rep,
            )?);
        }
        let pick = |f: fn(&levers::AppendLevers) -> f64| appends.iter().map(f).collect();
        self.figures.extend([
            Figure::measured(
                "lever_append_both_on_eps",
                "events/s",
                0,
                pick(|r| r.both_on),
            ),
            Figure::measured(
                "lever_append_cache_off_eps",
                "events/s",
                0,
                pick(|r| r.cache_off),
            ),
            Figure::measured(
                "lever_append_checkpoints_off_eps",
                "events/s",
                0,
                pick(|r| r.checkpoints_off),
            ),
        ]);
        let mut prototypes = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!(
                "levers: {events} events in batches of {APPEND_BATCH_EVENTS}: one stream, the log's stream index with chunk 1 and {}, stream reads with a full tail and indexed, a minimal table (rep {rep}/{reps})",
                crate::log::DEFAULT_STREAM_INDEX_CHUNK
            ));
            prototypes.push(stream_index::round(&path, &self.log_options, seed, events)?);
        }
        let pick =
            |f: fn(&stream_index::StreamIndexLevers) -> f64| prototypes.iter().map(f).collect();
        self.figures.extend([
            Figure::measured(
                "lever_append_one_stream_eps",
                "events/s",
                0,
                pick(|r| r.one_stream_eps),
            ),
            Figure::measured(
                "lever_stream_index_per_commit_eps",
                "events/s",
                0,
                pick(|r| r.per_commit_eps),
            ),
            Figure::measured(
                "lever_stream_index_deferred_eps",
                "events/s",
                0,
                pick(|r| r.deferred_eps),
            ),
            Figure::measured(
                "lever_append_minimal_table_eps",
                "events/s",
                0,
                pick(|r| r.minimal_eps),
            ),
            Figure::measured(
                "lever_stream_read_full_tail_ms",
                "ms",
                2,
                pick(|r| r.tail_read_ms),
            ),
            Figure::measured(
                "lever_stream_read_indexed_ms",
                "ms",
                2,
                pick(|r| r.indexed_read_ms),
            ),
        ]);
        let mut ablations = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!(
                "levers: {events} events in batches of {APPEND_BATCH_EVENTS} straight into the events table with each of its per-row indexes, those of schema 6 and 5, and none (rep {rep}/{reps})"
            ));
            ablations.push(row_indexes::round(
                &path,
                &self.log_options,
                seed,
                events,
                rep,
            )?);
        }
        let pick = |f: fn(&row_indexes::RowIndexLevers) -> f64| ablations.iter().map(f).collect();
        self.figures.extend([
            Figure::measured(
                "lever_row_indexes_none_eps",
                "events/s",
                0,
                pick(|r| r.none_eps),
            ),
            Figure::measured(
                "lever_row_indexes_id_eps",
                "events/s",
                0,
                pick(|r| r.id_eps),
            ),
            Figure::measured(
                "lever_row_indexes_type_eps",
                "events/s",
                0,
                pick(|r| r.type_eps),
            ),
            Figure::measured(
                "lever_row_indexes_time_eps",
                "events/s",
                0,
                pick(|r| r.time_eps),
            ),
            Figure::measured(
                "lever_row_indexes_schema_6_eps",
                "events/s",
                0,
                pick(|r| r.schema_6_eps),
            ),
            Figure::measured(
                "lever_row_indexes_schema_5_eps",
                "events/s",
                0,
                pick(|r| r.schema_5_eps),
            ),
        ]);
        let single_events = events.min(SINGLE_APPEND_MAX_EVENTS);
        let mut singles = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!(
                "levers: {single_events} single events from {SINGLE_APPEND_THREADS} threads, the reply thread on, larger checkpoints and optimistic groups each off (rep {rep}/{reps})"
            ));
            singles.push(levers::single_round(
                &path,
                &self.log_options,
                seed,
                single_events,
                rep,
            )?);
        }
        let pick = |f: fn(&levers::SingleLevers) -> f64| singles.iter().map(f).collect();
        self.figures.extend([
            Figure::measured(
                "lever_single_defaults_eps",
                "events/s",
                0,
                pick(|r| r.defaults),
            ),
            Figure::measured(
                "lever_single_reply_thread_on_eps",
                "events/s",
                0,
                pick(|r| r.reply_thread_on),
            ),
            Figure::measured(
                "lever_single_checkpoints_off_eps",
                "events/s",
                0,
                pick(|r| r.checkpoints_off),
            ),
            Figure::measured(
                "lever_single_optimistic_groups_off_eps",
                "events/s",
                0,
                pick(|r| r.optimistic_groups_off),
            ),
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// The contract's levers (see `levers::contract_round`): packed writes off and on,
    /// and the log read of every column or only those the projector reads. Needs the
    /// source tree, which builds the three `balances` variants; without it the figures
    /// are left out, with a note.
    fn contract_levers(&mut self, log: &EventLog, head: u64, agreed: &Checksum) -> Result<()> {
        let paths = match crate::guest_build::build_guests(&levers::CONTRACT_GUESTS) {
            Ok(paths) => paths,
            Err(err @ crate::guest_build::GuestBuildError::NoSourceTree { .. }) => {
                self.note(&format!(
                    "levers: the contract levers are not measured: {err}"
                ));
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        let runtime = self.loaded.runtime().clone();
        let load = |path: &PathBuf| -> Result<LoadedProjector> {
            let wasm =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let loaded = runtime
                .load(&wasm)
                .with_context(|| format!("cannot load {}", path.display()))?;
            check_balances(&loaded)?;
            Ok(loaded)
        };
        let [v01, all_fields, fewer] = match paths.as_slice() {
            [a, b, c] => [load(a)?, load(b)?, load(c)?],
            _ => {
                return Err(anyhow!(
                    "the guest build returned {} components",
                    paths.len()
                ));
            }
        };
        ensure!(
            v01.info().contract == crate::runtime::ContractVersion::V0_1
                && all_fields.info().contract == crate::runtime::ContractVersion::V0_2
                && all_fields.info().reads == crate::runtime::EventFields::ALL
                && fewer.info().reads == crate::runtime::EventFields::NONE,
            "the contract levers' builds are not what they should be: {:?}",
            [v01.info(), all_fields.info(), fewer.info()]
        );
        let loaded = [v01, all_fields, fewer];
        let dir = self.scratch.dir("contract")?;
        let reps = self.options.reps;
        let mut rounds = Vec::with_capacity(reps);
        for rep in 1..=reps {
            self.note(&format!(
                "levers: {head} events replayed by balances built for refract:projector@0.1.0, for 0.2.0, and for 0.2.0 without ids and metadata (rep {rep}/{reps})"
            ));
            rounds.push(levers::contract_round(
                &loaded, log, &dir, self.batch, head, rep, agreed,
            )?);
        }
        let pick = |f: fn(&levers::ContractLevers) -> f64| rounds.iter().map(f).collect();
        self.figures.extend([
            Figure::measured(
                "lever_replay_packed_off_eps",
                "events/s",
                0,
                pick(|r| r.packed_off),
            ),
            Figure::measured(
                "lever_replay_packed_on_eps",
                "events/s",
                0,
                pick(|r| r.packed_on),
            ),
            Figure::measured(
                "lever_replay_fewer_columns_eps",
                "events/s",
                0,
                pick(|r| r.fewer_columns),
            ),
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Snapshots of the read model: taking one, recovering from one against a full
    /// replay, point-in-time queries cold and warm.
    fn snapshots(&mut self, log: &EventLog, head: u64) -> Result<()> {
        let tail = snapshots::recovery_tail(head);
        let mut runs = Vec::new();
        for rep in 1..=self.options.reps {
            self.note(&format!(
                "snapshots: take one {tail} events before the head, recover from it, query the past (rep {rep}/{})",
                self.options.reps
            ));
            let root = self.scratch.dir(&format!("snapshots-{rep}"))?;
            let measured = snapshots::run(
                &root,
                &self.loaded,
                &self.plugin,
                &self.cache,
                log,
                self.batch,
                &self.options.config,
            );
            let _ = std::fs::remove_dir_all(&root);
            runs.push(measured?);
        }
        let ms = |pick: fn(&snapshots::Measured) -> Duration| -> Vec<f64> {
            runs.iter()
                .map(|run| pick(run).as_secs_f64() * 1000.0)
                .collect()
        };
        let figures = [
            Figure::measured("snapshot_ms", "ms", 1, ms(|run| run.snapshot)),
            Figure::measured(
                "snapshot_mib",
                "MiB",
                2,
                runs.iter()
                    .map(|run| run.snapshot_bytes as f64 / (1024.0 * 1024.0))
                    .collect(),
            ),
            Figure::measured(
                "recovery_snapshot_ms",
                "ms",
                1,
                ms(|run| run.recovery_snapshot),
            ),
            Figure::measured("recovery_replay_ms", "ms", 1, ms(|run| run.recovery_replay)),
            Figure::measured("pit_query_cold_ms", "ms", 1, ms(|run| run.pit_cold)),
            Figure::measured("pit_query_warm_ms", "ms", 2, ms(|run| run.pit_warm)),
        ];
        self.figures.extend(figures);
        Ok(())
    }

    /// Time to first event from a fresh runtime: on an empty compile cache, and on a
    /// warm one.
    fn cold_start(&mut self, log: &EventLog) -> Result<()> {
        let warm_cache = self.scratch.dir("cold/warm-cache")?;
        Runtime::new(RuntimeConfig {
            cache_dir: Some(warm_cache.clone()),
            limits: self.limits.clone(),
        })?
        .load(&self.wasm)?;
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        let reps = self.options.reps;
        for rep in 1..=reps {
            self.note(&format!(
                "cold start: without and with the compile cache (rep {rep}/{reps})"
            ));
            let empty_cache = self.scratch.dir(&format!("cold/empty-cache-{rep}"))?;
            let db = self.scratch.path(&format!("cold/uncached-{rep}.db"))?;
            cold.push(millis(cold_start::time_to_first_event(
                &self.wasm,
                log,
                &self.limits,
                &empty_cache,
                &db,
                false,
            )?));
            let db = self.scratch.path(&format!("cold/cached-{rep}.db"))?;
            cached.push(millis(cold_start::time_to_first_event(
                &self.wasm,
                log,
                &self.limits,
                &warm_cache,
                &db,
                true,
            )?));
        }
        self.figures
            .push(Figure::measured("cold_start_ms", "ms", 1, cold));
        self.figures
            .push(Figure::measured("cold_start_cached_ms", "ms", 2, cached));
        Ok(())
    }
}

/// Runs the measurements `options` asks for and returns the report. Progress goes to
/// `progress`, one line per step.
///
/// # Errors
/// Any failure of the system under test, and above all WASM and native read models
/// that differ: then no figure is reported.
pub fn run(options: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    ensure!(options.events >= 1, "--events must be at least 1");
    ensure!(options.reps >= 1, "--reps must be at least 1");
    let config = &options.config;
    components::check_paths(&options.components)?;
    let plugin = balances_component(options.plugin.as_deref(), progress)?;
    let wasm =
        std::fs::read(&plugin).with_context(|| format!("cannot read {}", plugin.display()))?;
    let scratch = Scratch::create(options.work_dir.as_deref())?;
    let cache = scratch.dir("cache")?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        limits: config.limits.clone(),
    })?;
    let loaded = runtime
        .load(&wasm)
        .with_context(|| format!("cannot load {}", plugin.display()))?;
    check_balances(&loaded)?;
    let log_path = scratch.path("log/events.db")?;
    let mut harness = Harness {
        options,
        progress,
        scratch,
        plugin,
        wasm,
        loaded,
        cache,
        log_options: config.log_options(),
        limits: config.limits.clone(),
        batch: BatchLimits {
            max_events: config.engine.batch_size,
            max_bytes: config.engine.batch_bytes,
        },
        log_path,
        figures: Vec::new(),
    };

    harness.append()?;
    let log = EventLog::open(&harness.log_path, harness.log_options.clone())?;
    let head = log.head()?;
    let checksum = harness.replay(&log, head)?;
    if harness.wants(Group::Floors) {
        harness.floors(&log, head)?;
    }
    if harness.wants(Group::Live) {
        harness.live()?;
    }
    if harness.wants(Group::Swap) {
        harness.swap()?;
    }
    if harness.wants(Group::Memory) {
        harness.memory(head)?;
    }
    if harness.wants(Group::ColdStart) {
        harness.cold_start(&log)?;
    }
    if harness.wants(Group::Consumers) {
        harness.consumers(head)?;
    }
    if harness.wants(Group::Retention) {
        harness.retention(&log, head)?;
    }
    if harness.wants(Group::Snapshots) {
        harness.snapshots(&log, head)?;
    }
    if harness.wants(Group::Reactors) {
        harness.reactors()?;
    }
    if harness.wants(Group::Levers) {
        harness.levers(&log, head, &checksum)?;
    }
    if harness.wants(Group::Levers) {
        harness.contract_levers(&log, head, &checksum)?;
    }
    harness.components(&log, head)?;

    Ok(Report {
        figures: harness.figures,
        checksum,
        events: options.events,
        reps: options.reps,
        seed: options.seed,
        durability: harness.log_options.durability,
        batch_events: harness.batch.max_events,
        plugin: harness.plugin,
    })
}
