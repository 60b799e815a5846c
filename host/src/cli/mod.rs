//! The `refract` command line.
//!
//! Each command lives in its own file with its clap `Args` struct and a `run` function
//! that takes the data directory; this file holds the parser, the dispatch and the one
//! place errors are printed. A new command is a new file plus one [`Command`] variant.
//!
//! Exit codes: 0 on success (also when stdout is closed early, as by `| head`), 1 on an
//! error (one line on stderr: `error: ` and the cause chain), 2 on a usage error (clap).

mod append;
mod bench;
mod client;
mod cluster;
mod cluster_status;
mod consume;
mod demo;
mod deploy;
mod dev;
mod diff;
mod diff_nodes;
mod events;
mod groups;
mod manage;
mod new;
mod project;
mod query;
mod run;
mod snapshot;
mod status;
mod stream;
mod tail;
mod test;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::api::limits::DEFAULT_URL;
use crate::config::Config;
use crate::data_dir::{DEFAULT_DATA_DIR, DataDir};
use crate::log::EventLog;
use crate::runtime::compile;

/// The environment variable that overrides the default data directory.
pub const DATA_DIR_ENV: &str = "REFRACT_DATA";

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "REFRACT_CONFIG";

/// Refract: an event log with sandboxed WebAssembly projections.
#[derive(Debug, Parser)]
#[command(name = "refract", version, max_term_width = 100)]
pub struct Cli {
    /// Where Refract keeps its data; the event log is `<DIR>/events.db`.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = DATA_DIR_ENV,
        default_value = DEFAULT_DATA_DIR
    )]
    pub data_dir: PathBuf,

    /// The configuration file (default: `refract.toml` in the working directory, if
    /// present).
    #[arg(long, global = true, value_name = "FILE", env = CONFIG_ENV)]
    pub config: Option<PathBuf>,

    /// Log level or filter, such as `debug` or `refract=debug,wasmtime=warn` (default:
    /// `RUST_LOG`, else `info` for `run` and `warn` for other commands).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// The running host's HTTP API, for status, deploy, promote, rollback, abort,
    /// query, tail, groups and consume.
    #[arg(long, global = true, value_name = "URL", env = client::URL_ENV, default_value = DEFAULT_URL)]
    pub url: String,

    /// The API token: the one `run` serves with, and the one other commands send
    /// (default: the file `token` in the data directory). Prefer `REFRACT_TOKEN` to the
    /// flag, which other users can see in the process list.
    #[arg(long, global = true, value_name = "TOKEN", env = client::TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drop the shadow version of a projector that is replaying (running host).
    Abort(manage::ManageArgs),
    /// Append events to the log and print their offsets, one per line.
    Append(append::AppendArgs),
    /// Measure Refract against a native-Rust baseline; print a table or JSON Lines.
    Bench(bench::BenchArgs),
    /// Cluster mode: `cluster init --from <data-dir>` publishes a single-node log into
    /// the cluster.
    Cluster(cluster::ClusterArgs),
    /// Deploy a projector component to the running host (or, with none running, into
    /// the plugins folder).
    Deploy(deploy::DeployArgs),
    /// Be a member of a consumer group: print its share of the events as JSON Lines,
    /// acking each once printed (running host).
    Consume(consume::ConsumeArgs),
    /// Build the example projectors, seed a demo log, and start the host.
    Demo(demo::DemoArgs),
    /// Run a projector project on a local host: rebuild on save, show each change's
    /// diff against the running version, swap.
    Dev(dev::DevArgs),
    /// Compare a projector's shadow or previous version with the active one.
    Diff(diff::DiffArgs),
    /// Print events from the log as JSON Lines, or count them.
    Events(events::EventsArgs),
    /// List consumer groups (members, partitions, committed offset, lag), or reset or
    /// delete one.
    Groups(groups::GroupsArgs),
    /// Create a projector project (Rust, TypeScript or Python) that builds and passes
    /// its test as generated.
    New(new::NewArgs),
    /// Replay the log through one projector into a fresh read-model database.
    Project(project::ProjectArgs),
    /// Swap a projector's caught-up shadow version in now (running host).
    Promote(manage::ManageArgs),
    /// Run one read-only SQL query against a projector's read model (running host).
    Query(query::QueryArgs),
    /// Reactivate a projector's previous version (running host).
    Rollback(manage::ManageArgs),
    /// Restore a projector's read model from a snapshot and catch it up (running host).
    Restore(snapshot::RestoreArgs),
    /// Run the host: keep every projector in the plugins folder up to date.
    Run(run::RunArgs),
    /// Take a snapshot of a projector's read model now, or `--list` them (running host).
    Snapshot(snapshot::SnapshotArgs),
    /// Show every projector version: state, checkpoint, lag, errors.
    Status(status::StatusArgs),
    /// Stream snapshots: store an application's state of a stream, or load a stream as
    /// its latest snapshot plus the events after it (running host).
    Stream(stream::StreamArgs),
    /// Follow the event stream of the running host, as JSON Lines.
    Tail(tail::TailArgs),
    /// Run golden fixtures (events in, expected rows out) against a projector component.
    Test(test::TestArgs),
}

/// An error that ends the command with an exit code of its own (each command documents
/// its codes); `message`, when not empty, is printed as an error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitWith {
    /// The process's exit code.
    pub code: u8,
    /// The error to print, if any.
    pub message: String,
}

/// The arguments of the hidden compile worker, `refract __compile` (see
/// [`crate::runtime::compile`]): it is not a command for people, so it is parsed apart
/// from [`Cli`], before any configuration or logging is set up.
#[derive(Debug, Parser)]
#[command(name = "refract __compile")]
struct CompileWorkerArgs {
    /// The engine's wasm stack limit, which is part of its configuration.
    #[arg(long)]
    max_wasm_stack_bytes: usize,
    /// The heap the worker may use (`limits.max_compile_memory_bytes`).
    #[arg(long)]
    max_compile_memory_bytes: usize,
}

/// Runs the command line: parses the arguments, runs the command, prints any error.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args
        .nth(1)
        .is_some_and(|arg| arg == compile::COMPILE_WORKER_COMMAND)
    {
        let worker = CompileWorkerArgs::parse_from(std::env::args_os().skip(1));
        let code = compile::run_compile_worker(
            worker.max_wasm_stack_bytes,
            worker.max_compile_memory_bytes,
        );
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // Compiles run in a child process of this binary, killed at the compile deadline.
    if let Ok(exe) = std::env::current_exe() {
        compile::compile_in_child_processes(exe);
    }
    // Usage errors exit with 2, --help and --version with 0, both printed by clap.
    let cli = Cli::parse();
    if let Err(error) = init_logging(&cli) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ExitWith>().is_some() => {
            let exit = e.downcast_ref::<ExitWith>();
            let (code, message) = exit.map_or((1, ""), |exit| (exit.code, exit.message.as_str()));
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {}", crate::error_text::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    // --data-dir and REFRACT_DATA win over the configuration file; clap cannot tell a
    // default from an explicit value, so the default is compared by value.
    let data_dir = match &config.data_dir {
        Some(configured) if cli.data_dir == Path::new(DEFAULT_DATA_DIR) => configured.clone(),
        _ => cli.data_dir.clone(),
    };
    let data = DataDir::new(data_dir);
    let connect = || client::Client::new(&cli.url, cli.token.as_deref(), &data);
    match cli.command {
        Command::Append(args) => append::run(&data, &config, &args),
        Command::Bench(args) => bench::run(&config, &args),
        Command::Cluster(args) => cluster::run(&config, &args),
        Command::Demo(args) => demo::run(&data, config, &args, cli.token.as_deref()),
        Command::Dev(args) => {
            // The dev host keeps its data inside the project unless a folder is named.
            let named = (data.root() != Path::new(DEFAULT_DATA_DIR)).then(|| data.root());
            dev::run(named, config, &args, cli.token.as_deref())
        }
        Command::Diff(args) if !args.nodes.is_empty() => diff_nodes::run(&args, &connect()?),
        Command::Diff(args) => diff::run(&data, &config, &args),
        Command::New(args) => new::run(&args),
        Command::Test(args) => test::run(&config, &args),
        Command::Events(args) => events::run(&data, &config, &args),
        Command::Project(args) => project::run(&data, &config, &args),
        Command::Run(args) => run::run(&data, config, &args, cli.token.as_deref()),
        Command::Status(args) => status::run(&data, &args, &connect()?),
        Command::Deploy(args) => deploy::run(&data, &config, &args, &connect()?),
        Command::Promote(args) => manage::run(&connect()?, manage::Action::Promote, &args),
        Command::Rollback(args) => manage::run(&connect()?, manage::Action::Rollback, &args),
        Command::Abort(args) => manage::run(&connect()?, manage::Action::Abort, &args),
        Command::Query(args) => query::run(&connect()?, &args),
        Command::Snapshot(args) => snapshot::run_snapshot(&connect()?, &args),
        Command::Restore(args) => snapshot::run_restore(&connect()?, &args),
        Command::Stream(args) => stream::run(&connect()?, &args),
        Command::Tail(args) => tail::run(&connect()?, &args),
        Command::Groups(args) => groups::run(&data, &config, &args, &connect()?),
        Command::Consume(args) => {
            consume::check(&args)?;
            consume::run(&connect()?, &args)
        }
    }
}

/// Sends `tracing` output to stderr, filtered by `--log`, else `RUST_LOG`, else a
/// default that keeps one-shot commands quiet.
fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match (&cli.log, std::env::var("RUST_LOG")) {
        (Some(filter), _) => EnvFilter::try_new(filter).with_context(|| {
            format!("invalid --log filter `{filter}`; try `info` or `refract=debug`")
        })?,
        (None, Ok(filter)) => EnvFilter::try_new(&filter).with_context(|| {
            format!("invalid RUST_LOG filter `{filter}`; try `info` or `refract=debug`")
        })?,
        (None, Err(_)) if matches!(cli.command, Command::Run(_) | Command::Demo(_)) => {
            EnvFilter::new("info")
        }
        (None, Err(_)) => EnvFilter::new("warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .init();
    Ok(())
}

/// Opens (creating if needed) the event log of a data directory, with its archive
/// attached (if retention has archived events), so replays read the whole history.
pub fn open_log(data: &DataDir, config: &Config) -> anyhow::Result<EventLog> {
    let log = EventLog::open(&data.events_db(), config.log_options())
        .with_context(|| format!("cannot use the data directory `{}`", data.root().display()))?;
    crate::retention::attach_archive(&log, data.root())
        .with_context(|| format!("cannot use the archive of `{}`", data.root().display()))?;
    Ok(log)
}

/// Whether an error is stdout having been closed by the reader (`refract events | head`),
/// which ends the output early but is not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
