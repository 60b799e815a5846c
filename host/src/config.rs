//! `refract.toml`: the optional configuration file.
//!
//! Every section and key is optional; a missing file means every default. Unknown keys
//! are errors, never ignored, so a typo such as `on_posion` fails loudly at startup
//! instead of silently running with the default policy.
//!
//! ```toml
//! data_dir = "refract-data"          # default ./refract-data; --data-dir and REFRACT_DATA win
//! plugins_dir = "refract-data/plugins"
//!
//! [log]
//! durability = "full"                # "full" (fsync before every acknowledgement) or "normal"
//! max_data_bytes = 1048576
//! max_metadata_bytes = 65536
//! stream_index_chunk = 16384         # unindexed events an exact-stream read may scan (+ one group)
//!
//! [engine]
//! batch_size = 1000                  # events per call into a projector
//! batch_bytes = 8388608              # a batch closes early at this much event text
//! external_poll_ms = 200             # appends by other processes are seen within this
//! retry_initial_ms = 250             # first retry after a failure; doubles up to retry_max_ms
//! retry_max_ms = 30000
//!
//! [limits]                           # the sandbox: see `refract::runtime::SandboxLimits`
//! batch_deadline_ms = 10000
//!
//! [server]                           # the HTTP API: see `refract::api::ServerConfig`
//! bind = "127.0.0.1:7070"            # a non-loopback address also needs --allow-remote
//! max_body_bytes = 16777216
//! max_upload_bytes = 67108864
//! default_page_rows = 1000
//! max_page_rows = 10000
//! max_query_rows = 10000
//! max_query_result_bytes = 16777216
//! query_timeout_ms = 5000
//! max_subscribers = 64
//! health_max_lag = 10000             # /health is degraded when an active version lags more
//! health_min_free_bytes = 67108864   # ... or when the data directory's disk has less free
//! header_read_timeout_ms = 10000
//! body_read_timeout_ms = 60000
//! idle_timeout_ms = 30000
//! max_connections = 512
//! max_unauthenticated_connections = 256
//! max_unauthenticated_per_peer = 128
//!
//! [retention]                       # see `refract::retention::config`
//! interval_ms = 60000
//! [retention.prefixes."audit-"]      # no policy: keep forever (the default)
//! max_age = "30d"                    # and/or max_events_per_stream, max_bytes
//! mode = "archive"                   # or "delete"
//!
//! [cluster]                         # cluster mode: see `refract::cluster::config`
//! urls = ["nats://127.0.0.1:4222"]
//! node = "n1"
//! stream = "REFRACT"
//! replicas = 3
//!
//! [projectors.balances]
//! on_poison = "skip"                 # "stop" (default) or "skip" (dead-letter and continue)
//! batch_size = 500
//! batch_bytes = 1048576              # overrides engine.batch_bytes for this projector
//! promote = "manual"                 # "auto" (default): swap when the shadow has caught up;
//!                                    # "manual": keep it tailing until `refract promote`
//! keep_previous = true               # keep the replaced version tailing, for instant rollback
//! keep_versions = 2                  # read models kept on disk (active included)
//! replay_rate_limit = 50000          # events/s cap for a shadow replay; 0 = no cap
//! diff_gate = "gates/balances.sql"   # refuse an automatic swap if these assertions fail
//! nodes = 2                          # cluster mode: run it on 2 nodes, not all (placement)
//!
//! [projectors.balances.snapshots]    # read-model snapshots: see `refract::snapshots::policy`
//! every_events = 100000
//! keep = 3
//!
//! [projectors.balances.limits]       # any [limits] key, for this projector only, except
//! max_memory_bytes = 268435456       # the engine-wide ones (`runtime::ENGINE_WIDE_LIMITS`)
//! batch_deadline_ms = 30000
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::log::{Durability, LogOptions};
use crate::runtime::{ENGINE_WIDE_LIMITS, SandboxLimits};

/// The file name looked for in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "refract.toml";

/// Events handed to a projector in one call when nothing else is configured
/// (`engine.batch_size`).
pub const DEFAULT_BATCH_EVENTS: usize = 1000;

/// Text bytes (ids, streams, types, payloads) in one batch (`engine.batch_bytes`). A
/// batch closes early when it reaches this size, so a run of large events cannot
/// exhaust the guest's memory; a single event larger than this still travels alone.
pub const DEFAULT_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// How often a caught-up worker checks for appends made by other processes. Appends
/// made through this process wake workers at once; this bounds only the other case.
pub const DEFAULT_EXTERNAL_POLL: Duration = Duration::from_millis(200);

/// The first pause after a failed batch; it doubles on every further failure.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(250);

/// The longest pause between retries of a failing batch, so a stalled projector
/// keeps trying without flooding the log.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong kind.
    /// The message names the key, the line, and the accepted keys or values.
    #[error("invalid configuration file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's description: key, position and what was expected.
        message: String,
    },
    /// A value parsed but is out of range.
    #[error("invalid configuration file {path}: `{key}` {problem}")]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// The dotted key, e.g. `projectors.balances.batch_size`.
        key: String,
        /// What is wrong and what is accepted.
        problem: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The data directory (event log, control database, read models).
    pub data_dir: Option<PathBuf>,
    /// The folder of projector components; defaults to `<data_dir>/plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// The event log.
    pub log: LogSection,
    /// The projection engine.
    pub engine: EngineSection,
    /// The sandbox limits applied to every projector.
    pub limits: SandboxLimits,
    /// Settings for individual projectors, by projector name.
    pub projectors: BTreeMap<String, ProjectorSection>,
    /// The HTTP API: address and limits (see [`crate::api::limits`]).
    pub server: crate::api::ServerConfig,
    /// Limits on consumer replays (see [`crate::replay`]).
    pub replay: crate::replay::ReplayConfig,
    /// Limits on consumer groups and their defaults (see [`crate::groups`]).
    pub consumers: crate::groups::ConsumersConfig,
    /// Declared consumer groups, by name (see [`crate::groups::config`]).
    pub groups: BTreeMap<String, crate::groups::GroupSection>,
    /// Retention policies per stream prefix (see [`crate::retention::config`]); none
    /// means keep every event forever.
    pub retention: crate::retention::RetentionConfig,
    /// Cluster mode (see [`crate::cluster::config`]); absent means single-node.
    pub cluster: Option<crate::cluster::ClusterSection>,
    /// Point-in-time queries and stream snapshots (see [`crate::snapshots::policy`]).
    pub snapshots: crate::snapshots::SnapshotsConfig,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// When an append is acknowledged.
    pub durability: DurabilitySetting,
    /// The largest event `data`, in bytes.
    pub max_data_bytes: usize,
    /// The largest event `metadata`, in bytes.
    pub max_metadata_bytes: usize,
    /// Events appended before the writer adds them to the stream index in one sorted
    /// pass (see [`LogOptions::stream_index_chunk`]).
    pub stream_index_chunk: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        let defaults = LogOptions::default();
        Self {
            durability: DurabilitySetting::Full,
            max_data_bytes: defaults.max_data_bytes,
            max_metadata_bytes: defaults.max_metadata_bytes,
            stream_index_chunk: defaults.stream_index_chunk,
        }
    }
}

/// `log.durability`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    /// fsync before acknowledging every append (`synchronous=FULL`).
    Full,
    /// Acknowledge once written to the WAL; a power cut may lose the last appends,
    /// never corrupt the log (`synchronous=NORMAL`).
    Normal,
}

/// `[engine]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Events per call into a projector.
    pub batch_size: usize,
    /// A batch closes early once its event text reaches this many bytes.
    pub batch_bytes: usize,
    /// Milliseconds between checks for appends made by other processes.
    pub external_poll_ms: u64,
    /// Milliseconds before the first retry of a failed batch.
    pub retry_initial_ms: u64,
    /// The longest pause between retries, in milliseconds.
    pub retry_max_ms: u64,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_EVENTS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            external_poll_ms: millis(DEFAULT_EXTERNAL_POLL),
            retry_initial_ms: millis(DEFAULT_RETRY_INITIAL),
            retry_max_ms: millis(DEFAULT_RETRY_MAX),
        }
    }
}

/// Read models kept on disk per projector, the active one included, when nothing
/// else is configured: the active version and one to roll back to.
pub const DEFAULT_KEEP_VERSIONS: usize = 2;

/// `[projectors.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectorSection {
    /// What to do with an event the projector cannot apply.
    pub on_poison: PoisonPolicy,
    /// Overrides `engine.batch_size` for this projector.
    pub batch_size: Option<usize>,
    /// Overrides `engine.batch_bytes` for this projector: an interpreter guest (a
    /// JavaScript or Python projector) holds several times a batch's text in objects,
    /// so it may need smaller batches than the engine's default to stay within
    /// `limits.max_memory_bytes`.
    pub batch_bytes: Option<usize>,
    /// `[projectors.<name>.limits]`: sandbox limits for this projector only, over the
    /// `[limits]` section; any key of it except [`ENGINE_WIDE_LIMITS`]. Read with
    /// [`Config::projector_limits`].
    pub limits: toml::Table,
    /// When a caught-up shadow replaces the active version.
    pub promote: PromoteMode,
    /// After a swap, keep the replaced version tailing the log, so a rollback is
    /// instant instead of a catch-up.
    pub keep_previous: bool,
    /// How many versions' read models stay on disk, the active one included (a
    /// replaying shadow is kept on top); older ones are deleted after a swap. At
    /// least 1; with 1, the replaced read model is deleted right after the swap, so a
    /// reader that opened the old path just before may fail: keep the default, 2.
    pub keep_versions: usize,
    /// The most events per second a shadow replay may apply, so a rebuild cannot
    /// starve the live workload. 0: no limit.
    pub replay_rate_limit: u64,
    /// A file of SQL queries, each returning the rows that violate an assertion; an
    /// automatic swap is refused while any returns a row. Runs against the shadow, with
    /// the active read model attached read-only as `active`. Relative paths are taken
    /// from the working directory.
    pub diff_gate: Option<PathBuf>,
    /// `[projectors.<name>.snapshots]`: when to snapshot the read model (default off;
    /// see [`crate::snapshots::policy`]).
    pub snapshots: crate::snapshots::SnapshotPolicy,
    /// Cluster mode: run this projector on this many nodes, not on all of them
    /// (placement by leases; see `refract::cluster::deploys::placement`). Unset: every
    /// node runs it. Ignored by a single-node host.
    pub nodes: Option<usize>,
}

impl Default for ProjectorSection {
    fn default() -> Self {
        Self {
            on_poison: PoisonPolicy::default(),
            batch_size: None,
            batch_bytes: None,
            limits: toml::Table::new(),
            promote: PromoteMode::default(),
            keep_previous: false,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            replay_rate_limit: 0,
            diff_gate: None,
            snapshots: crate::snapshots::SnapshotPolicy::default(),
            nodes: None,
        }
    }
}

/// `projectors.<name>.promote`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromoteMode {
    /// Swap as soon as the shadow has caught up with the active version.
    #[default]
    Auto,
    /// Keep the caught-up shadow tailing at lag zero until `refract promote`.
    Manual,
}

/// `projectors.<name>.on_poison`: what happens when a projector deterministically
/// fails on an event (a handler error or a trap). Host failures such as a busy or full
/// disk are always retried, whatever the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoisonPolicy {
    /// Stall at the event and retry with capped exponential backoff until an operator
    /// acts (deploys a fix, or switches the policy).
    #[default]
    Stop,
    /// Record the event as a dead letter and continue with the next one.
    Skip,
}

impl Config {
    /// Reads the configuration: `path` if given (it must exist), otherwise
    /// `refract.toml` in the working directory if present, otherwise all defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path.to_owned(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses and checks configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Invalid {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let out_of_range = |key: String, problem: &str| ConfigError::OutOfRange {
            path: path.to_owned(),
            key,
            problem: problem.to_owned(),
        };
        if self.engine.batch_size == 0 {
            return Err(out_of_range(
                "engine.batch_size".into(),
                "must be at least 1",
            ));
        }
        if self.engine.batch_bytes == 0 {
            return Err(out_of_range(
                "engine.batch_bytes".into(),
                "must be at least 1",
            ));
        }
        if self.engine.external_poll_ms == 0 {
            return Err(out_of_range(
                "engine.external_poll_ms".into(),
                "must be at least 1 (milliseconds)",
            ));
        }
        if self.engine.retry_initial_ms == 0
            || self.engine.retry_max_ms < self.engine.retry_initial_ms
        {
            return Err(out_of_range(
                "engine.retry_max_ms".into(),
                "must be at least engine.retry_initial_ms, which must be at least 1",
            ));
        }
        self.replay
            .validate()
            .map_err(|(key, problem)| out_of_range(key.into(), &problem))?;
        self.consumers
            .validate()
            .and_then(|()| crate::groups::config::validate_groups(&self.groups, &self.consumers))
            .map_err(|(key, problem)| out_of_range(key, &problem))?;
        self.retention
            .validate()
            .map_err(|(key, problem)| out_of_range(key, &problem))?;
        for (name, section) in &self.projectors {
            if section.batch_size == Some(0) {
                return Err(out_of_range(
                    format!("projectors.{name}.batch_size"),
                    "must be at least 1",
                ));
            }
            if section.keep_versions == 0 {
                return Err(out_of_range(
                    format!("projectors.{name}.keep_versions"),
                    "must be at least 1 (the active version)",
                ));
            }
            if section.batch_bytes == Some(0) {
                return Err(out_of_range(
                    format!("projectors.{name}.batch_bytes"),
                    "must be at least 1",
                ));
            }
            if section.nodes == Some(0) {
                return Err(out_of_range(
                    format!("projectors.{name}.nodes"),
                    "must be at least 1 (leave it out to run the projector on every node)",
                ));
            }
            self.projector_limits(name)
                .map_err(|(key, problem)| out_of_range(key, &problem))?;
            section.snapshots.validate().map_err(|(key, problem)| {
                out_of_range(format!("projectors.{name}.snapshots.{key}"), problem)
            })?;
        }
        self.snapshots
            .validate()
            .map_err(|(key, problem)| out_of_range(format!("snapshots.{key}"), problem))?;
        Ok(())
    }

    /// The sandbox limits of one projector: `[limits]`, with its
    /// `[projectors.<name>.limits]` on top. On error, the dotted key at fault and what
    /// is wrong with it.
    pub fn projector_limits(&self, name: &str) -> Result<SandboxLimits, (String, String)> {
        let Some(section) = self.projectors.get(name).filter(|s| !s.limits.is_empty()) else {
            return Ok(self.limits.clone());
        };
        let prefix = format!("projectors.{name}.limits");
        if let Some(key) = section
            .limits
            .keys()
            .find(|key| ENGINE_WIDE_LIMITS.contains(&key.as_str()))
        {
            return Err((
                format!("{prefix}.{key}"),
                "applies to the whole engine (or to loading, before a component's name is known); set it under [limits]".into(),
            ));
        }
        let mut merged = toml::Table::try_from(&self.limits)
            .map_err(|error| (prefix.clone(), error.to_string()))?;
        merged.extend(section.limits.clone());
        let limits: SandboxLimits = toml::Value::Table(merged)
            .try_into()
            .map_err(|error: toml::de::Error| (prefix.clone(), error.message().to_owned()))?;
        limits.validate().map_err(|invalid| {
            (
                format!("{prefix}.{}", invalid.key),
                invalid.reason.to_owned(),
            )
        })?;
        Ok(limits)
    }

    /// The batch limits of one projector: `engine.batch_size` and `engine.batch_bytes`,
    /// or its own overrides.
    pub fn projector_batch(&self, name: &str) -> crate::engine::BatchLimits {
        let section = self.projector(name);
        crate::engine::BatchLimits {
            max_events: section.batch_size.unwrap_or(self.engine.batch_size),
            max_bytes: section.batch_bytes.unwrap_or(self.engine.batch_bytes),
        }
    }

    /// The event-log options this configuration asks for.
    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            durability: match self.log.durability {
                DurabilitySetting::Full => Durability::Full,
                DurabilitySetting::Normal => Durability::Normal,
            },
            max_data_bytes: self.log.max_data_bytes,
            max_metadata_bytes: self.log.max_metadata_bytes,
            stream_index_chunk: self.log.stream_index_chunk,
            ..LogOptions::default()
        }
    }

    /// The settings for one projector (defaults if it has no section).
    pub fn projector(&self, name: &str) -> ProjectorSection {
        self.projectors.get(name).cloned().unwrap_or_default()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("refract.toml"))
    }

    #[test]
    fn projector_limits_override_the_global_ones() {
        let config = parse(
            "[limits]\nbatch_deadline_ms = 2000\nmax_query_rows = 7\n\
             [projectors.py.limits]\nmax_memory_bytes = 268435456\nbatch_deadline_ms = 30000\n",
        )
        .expect("valid");
        let py = config.projector_limits("py").expect("valid");
        assert_eq!(py.max_memory_bytes, 256 << 20);
        assert_eq!(py.batch_deadline_ms, 30_000);
        assert_eq!(py.max_query_rows, 7, "the rest comes from [limits]");
        let other = config.projector_limits("other").expect("defaults");
        assert_eq!(other.batch_deadline_ms, 2_000);
        assert_eq!(
            other.max_memory_bytes,
            SandboxLimits::default().max_memory_bytes
        );
    }

    #[test]
    fn bad_projector_limits_name_their_key() {
        for (text, key) in [
            (
                "[projectors.py.limits]\nmax_memroy_bytes = 1\n",
                "max_memroy_bytes",
            ),
            (
                "[projectors.py.limits]\nbatch_deadline_ms = 0\n",
                "projectors.py.limits.batch_deadline_ms",
            ),
            (
                "[projectors.py.limits]\nmax_wasm_stack_bytes = 1048576\n",
                "projectors.py.limits.max_wasm_stack_bytes",
            ),
            (
                "[projectors.py.limits]\ncompile_timeout_ms = 5\n",
                "projectors.py.limits.compile_timeout_ms",
            ),
            (
                "[projectors.py]\nbatch_bytes = 0\n",
                "projectors.py.batch_bytes",
            ),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn batch_bytes_can_be_set_per_projector() {
        let config = parse("[engine]\nbatch_bytes = 4096\n[projectors.js]\nbatch_bytes = 512\n")
            .expect("valid");
        assert_eq!(config.projector_batch("js").max_bytes, 512);
        assert_eq!(config.projector_batch("other").max_bytes, 4096);
    }
}
