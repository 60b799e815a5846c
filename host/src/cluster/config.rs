//! The `[cluster]` section of `refract.toml`, the `--cluster` / `--node` flags, and
//! every cluster limit as a named constant.
//!
//! ```toml
//! [cluster]
//! urls = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
//! node = "n1"                  # this node's name: unique in the cluster
//! stream = "REFRACT"           # the JetStream stream holding the log
//! replicas = 3                 # JetStream replicas of the stream (1, 3 or 5)
//! token = "s3cret"             # or user + password, or credentials_file
//! publish_timeout_ms = 5000
//! lease_timeout_ms = 10000     # a placed projector moves after its holder is silent this long
//! api_url = "http://10.0.0.1:7070"  # where the other nodes reach this node's API
//! shared_snapshot_max_bytes = 1073741824   # largest snapshot published or fetched
//! shared_snapshot_fetch_timeout_ms = 120000
//! shared_snapshot_keep = 2     # shared snapshots kept per projector version
//! shared_snapshot_bucket_max_bytes = 3221225472   # the whole bucket (default: max_bytes × (keep + 1))
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The JetStream stream that holds the log when none is configured.
pub const DEFAULT_STREAM: &str = "REFRACT";

/// JetStream replicas of the stream when none are configured: three servers, so the
/// log survives losing any one of them.
pub const DEFAULT_REPLICAS: usize = 3;

/// How long an append waits for JetStream to acknowledge its message (stored on a
/// majority of the replicas), and then again for this node's mirror to apply it. An
/// append that runs out of either answers 503, saying whether it may have been stored.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The most replicated messages the mirror applies in one SQLite transaction: one
/// commit per batch, not per message, while catching up; small enough that the workers
/// and waiting appenders hear about progress often.
pub const MIRROR_BATCH_MESSAGES: usize = 512;

/// The most bytes of replicated messages the mirror holds for one transaction.
pub const MIRROR_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How long one of the mirror consumer's pull requests waits for messages. The client
/// sets the idle heartbeat to half of it and recreates the consumer after two missed
/// heartbeats, so this bounds how long a mirror stays silent after the NATS server that
/// held its consumer dies: about 2 × this, instead of a minute at the client's default
/// (a 30 s pull with a 15 s heartbeat).
pub const MIRROR_PULL_EXPIRES: Duration = Duration::from_secs(4);

/// How long the mirror waits for a message while JetStream reports the stream ahead of
/// it before it drops its consumer and opens a new one at its committed position. The
/// client's own recovery (two missed heartbeats, then recreating with a backoff that
/// grows to 10 s per attempt) can leave a mirror silent for longer than an append waits
/// after the NATS server that held the consumer dies; this bounds it.
pub const MIRROR_STALL: Duration = Duration::from_secs(3);

/// The first pause after the mirror or the connection fails; doubles up to
/// [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_millis(100);

/// The longest pause between attempts to reach NATS or resume the mirror, so a node
/// notices a returning NATS within this.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// How often a node asks JetStream for the stream's head while nothing arrives, so
/// the replication lag it reports is never older than this.
pub const HEAD_POLL: Duration = Duration::from_secs(1);

/// How long a projector's lease (placement, `projectors.<name>.nodes`) may go without
/// its holder renewing it before another node takes it over: ten missed heartbeats, so
/// a slow moment is not a failover (a failover replays the projector on another node).
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest `cluster.lease_timeout_ms`: three heartbeats, below which a holder that
/// renews on time could still lose its lease.
pub const MIN_LEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// The most JetStream messages one node has published and not yet had acknowledged;
/// further appends wait for a slot (back-pressure rather than unbounded memory).
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 4096;

/// The largest read-model snapshot a node publishes to, or fetches from, the shared
/// snapshots bucket (`cluster.shared_snapshot_max_bytes`): a snapshot is a whole
/// database, and a fetch writes it to this node's disk, so a hostile or runaway object
/// must not fill it. Larger snapshots stay local (counted as publish failures).
pub const DEFAULT_SHARED_SNAPSHOT_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// How long fetching one shared snapshot may take before the node gives up and starts
/// the projector from its own snapshot or offset 1
/// (`cluster.shared_snapshot_fetch_timeout_ms`).
pub const DEFAULT_SHARED_SNAPSHOT_FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Shared snapshots kept per projector version in the bucket
/// (`cluster.shared_snapshot_keep`): a restore only wants the newest one its mirror has
/// reached, so two cover a node whose mirror lags the publisher's.
pub const DEFAULT_SHARED_SNAPSHOT_KEEP: usize = 2;

/// The most bytes the shared snapshots bucket may hold, when
/// `cluster.shared_snapshot_bucket_max_bytes` is not set: `shared_snapshot_max_bytes ×
/// (shared_snapshot_keep + 1)`, room for `keep` full-size snapshots and one upload in
/// flight. The bucket lives on the JetStream servers that hold the log: an upload that
/// fails or times out leaves its chunks behind (the client publishes them before the
/// object's metadata), so without a cap a snapshot that never uploads could fill their
/// disk and stop appends cluster-wide. A full bucket refuses further uploads (counted as
/// publish failures); the log is not touched. Raise it for many placed projectors with
/// large snapshots.
pub fn default_shared_snapshot_bucket_max_bytes(max_bytes: u64, keep: usize) -> u64 {
    max_bytes.saturating_mul(u64::try_from(keep).unwrap_or(u64::MAX).saturating_add(1))
}

/// `[cluster]`: present means cluster mode (as does `refract run --cluster`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// NATS server URLs (`nats://host:port`); the client fails over between them.
    pub urls: Vec<String>,
    /// This node's name: unique in the cluster, shown in status and metrics, and part
    /// of every message id it publishes.
    pub node: Option<String>,
    /// The JetStream stream that holds the log. Every node of one cluster uses the
    /// same; separate clusters on one NATS use different ones.
    pub stream: String,
    /// JetStream replicas of the stream when a node creates it: 1, 3 or 5 (an odd
    /// number, so a majority exists). An existing stream keeps its own.
    pub replicas: usize,
    /// A NATS token (`authorization { token: ... }` on the server).
    pub token: Option<String>,
    /// A NATS user name; needs `password`.
    pub user: Option<String>,
    /// The password of `user`.
    pub password: Option<String>,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// Milliseconds an append waits for JetStream, then for the mirror (see
    /// [`DEFAULT_PUBLISH_TIMEOUT`]).
    pub publish_timeout_ms: u64,
    /// Milliseconds a placed projector's lease may go unrenewed before another node
    /// takes it over (see [`DEFAULT_LEASE_TIMEOUT`]).
    pub lease_timeout_ms: u64,
    /// The URL the other nodes reach this node's HTTP API at, to proxy queries for a
    /// projector placed here (default: `http://` and the address the API is bound to).
    pub api_url: Option<String>,
    /// See [`DEFAULT_SHARED_SNAPSHOT_MAX_BYTES`].
    pub shared_snapshot_max_bytes: u64,
    /// See [`DEFAULT_SHARED_SNAPSHOT_FETCH_TIMEOUT`].
    pub shared_snapshot_fetch_timeout_ms: u64,
    /// See [`DEFAULT_SHARED_SNAPSHOT_KEEP`].
    pub shared_snapshot_keep: usize,
    /// See [`default_shared_snapshot_bucket_max_bytes`].
    pub shared_snapshot_bucket_max_bytes: Option<u64>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            node: None,
            stream: DEFAULT_STREAM.to_owned(),
            replicas: DEFAULT_REPLICAS,
            token: None,
            user: None,
            password: None,
            credentials_file: None,
            publish_timeout_ms: u64::try_from(DEFAULT_PUBLISH_TIMEOUT.as_millis())
                .unwrap_or(u64::MAX),
            lease_timeout_ms: u64::try_from(DEFAULT_LEASE_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            api_url: None,
            shared_snapshot_max_bytes: DEFAULT_SHARED_SNAPSHOT_MAX_BYTES,
            shared_snapshot_fetch_timeout_ms: u64::try_from(
                DEFAULT_SHARED_SNAPSHOT_FETCH_TIMEOUT.as_millis(),
            )
            .unwrap_or(u64::MAX),
            shared_snapshot_keep: DEFAULT_SHARED_SNAPSHOT_KEEP,
            shared_snapshot_bucket_max_bytes: None,
        }
    }
}

/// How a node authenticates to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No authentication.
    None,
    /// A token.
    Token(String),
    /// A user name and password.
    UserPassword(String, String),
    /// A `.creds` file.
    File(PathBuf),
}

/// A complete, checked cluster configuration for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs.
    pub urls: Vec<String>,
    /// This node's name.
    pub node: String,
    /// The JetStream stream.
    pub stream: String,
    /// Replicas when creating the stream.
    pub replicas: usize,
    /// Authentication.
    pub credentials: Credentials,
    /// See [`ClusterSection::publish_timeout_ms`].
    pub publish_timeout: Duration,
    /// See [`ClusterSection::lease_timeout_ms`].
    pub lease_timeout: Duration,
    /// See [`ClusterSection::api_url`]; `refract run` fills in the default.
    pub api_url: Option<String>,
    /// The bounds of shared snapshots.
    pub shared_snapshots: SharedSnapshotLimits,
}

/// The bounds of snapshots shared between nodes (see
/// [`crate::cluster::shared_snapshots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSnapshotLimits {
    /// See [`DEFAULT_SHARED_SNAPSHOT_MAX_BYTES`].
    pub max_bytes: u64,
    /// See [`DEFAULT_SHARED_SNAPSHOT_FETCH_TIMEOUT`].
    pub fetch_timeout: Duration,
    /// See [`DEFAULT_SHARED_SNAPSHOT_KEEP`].
    pub keep: usize,
    /// See [`default_shared_snapshot_bucket_max_bytes`].
    pub bucket_max_bytes: u64,
}

impl Default for SharedSnapshotLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_SHARED_SNAPSHOT_MAX_BYTES,
            fetch_timeout: DEFAULT_SHARED_SNAPSHOT_FETCH_TIMEOUT,
            keep: DEFAULT_SHARED_SNAPSHOT_KEEP,
            bucket_max_bytes: default_shared_snapshot_bucket_max_bytes(
                DEFAULT_SHARED_SNAPSHOT_MAX_BYTES,
                DEFAULT_SHARED_SNAPSHOT_KEEP,
            ),
        }
    }
}

/// Why a cluster configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterConfigError {
    /// A key is missing or out of range; the message names it and the fix.
    #[error("cluster configuration: {0}")]
    Invalid(String),
}

impl ClusterConfig {
    /// Combines the `[cluster]` section (if any) with the command line's `--cluster`
    /// URLs (comma-separated; they replace `urls`) and `--node` (replaces `node`).
    /// `None` when neither asks for cluster mode.
    ///
    /// # Errors
    /// A missing node name or URL, a bad stream name, an even or zero replica count,
    /// half a user/password pair, or more than one kind of credentials.
    pub fn resolve(
        section: Option<&ClusterSection>,
        urls: Option<&str>,
        node: Option<&str>,
    ) -> Result<Option<ClusterConfig>, ClusterConfigError> {
        if section.is_none() && urls.is_none() {
            if node.is_some() {
                return Err(invalid(
                    "--node names a cluster node, but cluster mode is off: add --cluster nats://host:port or a [cluster] section",
                ));
            }
            return Ok(None);
        }
        let mut section = section.cloned().unwrap_or_default();
        if let Some(urls) = urls {
            section.urls = urls
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(node) = node {
            section.node = Some(node.to_owned());
        }
        section.check().map(Some)
    }
}

impl ClusterSection {
    fn check(self) -> Result<ClusterConfig, ClusterConfigError> {
        if self.urls.is_empty() {
            return Err(invalid(
                "no NATS server: set cluster.urls or pass --cluster nats://host:port[,...]",
            ));
        }
        let node = self.node.ok_or_else(|| {
            invalid("this node has no name: pass --node <name> or set cluster.node (unique in the cluster)")
        })?;
        check_name("cluster.node", &node)?;
        check_name("cluster.stream", &self.stream)?;
        if self.replicas == 0 || self.replicas > 5 || self.replicas.is_multiple_of(2) {
            return Err(invalid(&format!(
                "cluster.replicas is {}; use 1, 3 or 5 (an odd count, so a majority of the replicas exists)",
                self.replicas
            )));
        }
        if self.publish_timeout_ms == 0 {
            return Err(invalid("cluster.publish_timeout_ms must be at least 1"));
        }
        let lease_timeout = Duration::from_millis(self.lease_timeout_ms);
        if lease_timeout < MIN_LEASE_TIMEOUT {
            return Err(invalid(&format!(
                "cluster.lease_timeout_ms is {}; use at least {} (three heartbeats)",
                self.lease_timeout_ms,
                MIN_LEASE_TIMEOUT.as_millis()
            )));
        }
        if let Some(url) = &self.api_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(&format!(
                "cluster.api_url is {url:?}; use the URL of this node's API, e.g. http://10.0.0.1:7070"
            )));
        }
        if self.shared_snapshot_fetch_timeout_ms == 0 {
            return Err(invalid(
                "cluster.shared_snapshot_fetch_timeout_ms must be at least 1",
            ));
        }
        if self.shared_snapshot_keep == 0 {
            return Err(invalid(
                "cluster.shared_snapshot_keep must be at least 1 (the newest is what a failover restores)",
            ));
        }
        let bucket_max_bytes = self.shared_snapshot_bucket_max_bytes.unwrap_or_else(|| {
            default_shared_snapshot_bucket_max_bytes(
                self.shared_snapshot_max_bytes,
                self.shared_snapshot_keep,
            )
        });
        if bucket_max_bytes < self.shared_snapshot_max_bytes
            || i64::try_from(bucket_max_bytes).is_err()
        {
            return Err(invalid(&format!(
                "cluster.shared_snapshot_bucket_max_bytes is {bucket_max_bytes}; use at least cluster.shared_snapshot_max_bytes ({}) and at most {}",
                self.shared_snapshot_max_bytes,
                i64::MAX
            )));
        }
        let shared_snapshots = SharedSnapshotLimits {
            max_bytes: self.shared_snapshot_max_bytes,
            fetch_timeout: Duration::from_millis(self.shared_snapshot_fetch_timeout_ms),
            keep: self.shared_snapshot_keep,
            bucket_max_bytes,
        };
        let credentials = match (self.token, self.user, self.password, self.credentials_file) {
            (None, None, None, None) => Credentials::None,
            (Some(token), None, None, None) => Credentials::Token(token),
            (None, Some(user), Some(password), None) => Credentials::UserPassword(user, password),
            (None, None, None, Some(file)) => Credentials::File(file),
            (None, Some(_), None, None) | (None, None, Some(_), None) => {
                return Err(invalid(
                    "cluster.user and cluster.password go together; set both",
                ));
            }
            _ => {
                return Err(invalid(
                    "choose one way to authenticate: cluster.token, cluster.user + cluster.password, or cluster.credentials_file",
                ));
            }
        };
        Ok(ClusterConfig {
            urls: self.urls,
            node,
            stream: self.stream,
            replicas: self.replicas,
            credentials,
            publish_timeout: Duration::from_millis(self.publish_timeout_ms),
            lease_timeout,
            api_url: self.api_url,
            shared_snapshots,
        })
    }
}

/// Node and stream names become parts of NATS subjects and message ids: letters,
/// digits, `-` and `_` only.
fn check_name(key: &str, value: &str) -> Result<(), ClusterConfigError> {
    let fine = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fine {
        Ok(())
    } else {
        Err(invalid(&format!(
            "{key} is {value:?}; use 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

fn invalid(message: &str) -> ClusterConfigError {
    ClusterConfigError::Invalid(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_asked_for() {
        assert_eq!(ClusterConfig::resolve(None, None, None), Ok(None));
        let lone_node = ClusterConfig::resolve(None, None, Some("n1")).unwrap_err();
        assert!(lone_node.to_string().contains("cluster mode is off"));
    }

    #[test]
    fn the_section_parses_and_refuses_unknown_keys() {
        let path = std::path::Path::new("refract.toml");
        let config = crate::config::Config::parse(
            "[cluster]\nurls = [\"nats://a:1\"]\nnode = \"n1\"\nstream = \"S\"\nreplicas = 1\ntoken = \"t\"\n",
            path,
        )
        .unwrap();
        let resolved = ClusterConfig::resolve(config.cluster.as_ref(), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(resolved.stream, "S");
        assert_eq!(resolved.credentials, Credentials::Token("t".into()));
        let typo = crate::config::Config::parse("[cluster]\nurl = [\"nats://a:1\"]\n", path)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown field `url`"), "{typo}");
    }

    #[test]
    fn flags_override_the_section() {
        let section = ClusterSection {
            urls: vec!["nats://a:1".into()],
            node: Some("from-file".into()),
            ..ClusterSection::default()
        };
        let config =
            ClusterConfig::resolve(Some(&section), Some("nats://b:2, nats://c:3"), Some("n2"))
                .unwrap()
                .unwrap();
        assert_eq!(config.urls, ["nats://b:2", "nats://c:3"]);
        assert_eq!(config.node, "n2");
        assert_eq!(config.stream, DEFAULT_STREAM);
        assert_eq!(config.replicas, DEFAULT_REPLICAS);
        assert_eq!(config.credentials, Credentials::None);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let no_node = ClusterConfig::resolve(None, Some("nats://a:1"), None).unwrap_err();
        assert!(no_node.to_string().contains("--node <name>"), "{no_node}");
        let even = ClusterSection {
            urls: vec!["nats://a:1".into()],
            node: Some("n1".into()),
            replicas: 2,
            ..ClusterSection::default()
        };
        let error = ClusterConfig::resolve(Some(&even), None, None).unwrap_err();
        assert!(error.to_string().contains("use 1, 3 or 5"), "{error}");
        let dotted = ClusterConfig::resolve(None, Some("nats://a:1"), Some("n.1")).unwrap_err();
        assert!(dotted.to_string().contains("cluster.node"), "{dotted}");
        let both = ClusterSection {
            urls: vec!["nats://a:1".into()],
            node: Some("n1".into()),
            token: Some("t".into()),
            user: Some("u".into()),
            password: Some("p".into()),
            ..ClusterSection::default()
        };
        let error = ClusterConfig::resolve(Some(&both), None, None).unwrap_err();
        assert!(error.to_string().contains("choose one way"), "{error}");
    }

    #[test]
    fn the_bucket_cap_defaults_to_keep_plus_one_snapshots_and_must_hold_one() {
        let section = ClusterSection {
            urls: vec!["nats://a:1".into()],
            node: Some("n1".into()),
            shared_snapshot_max_bytes: 100,
            shared_snapshot_keep: 3,
            ..ClusterSection::default()
        };
        let config = ClusterConfig::resolve(Some(&section), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(config.shared_snapshots.bucket_max_bytes, 400);
        assert_eq!(
            SharedSnapshotLimits::default().bucket_max_bytes,
            3 * DEFAULT_SHARED_SNAPSHOT_MAX_BYTES
        );
        let too_small = ClusterSection {
            shared_snapshot_bucket_max_bytes: Some(99),
            ..section.clone()
        };
        let error = ClusterConfig::resolve(Some(&too_small), None, None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cluster.shared_snapshot_bucket_max_bytes is 99"),
            "{error}"
        );
        let set = ClusterSection {
            shared_snapshot_bucket_max_bytes: Some(1000),
            ..section
        };
        let config = ClusterConfig::resolve(Some(&set), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(config.shared_snapshots.bucket_max_bytes, 1000);
    }
}
