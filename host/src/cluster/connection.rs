//! Reaching NATS: the client connection (reconnecting forever, by itself) and the
//! JetStream stream that holds the log.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions};

use super::ClusterError;
use super::config::{ClusterConfig, Credentials, RETRY_INITIAL, RETRY_MAX};

/// How long one attempt to open a TCP connection to a NATS server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long JetStream API requests (stream info, consumer creation) may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The window in which JetStream drops a message whose `Nats-Msg-Id` it has already
/// stored. Retries of one publish happen within a publish timeout, well inside it;
/// even past it a repeated message is harmless, because its events carry their ids.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The subject a cluster's log messages are published on.
pub fn subject(stream: &str) -> String {
    format!("refract.{stream}.log")
}

/// Opens the client. It returns at once and connects in the background (so a node
/// starts, and serves reads, while NATS is down), then reconnects forever with a delay
/// capped at [`RETRY_MAX`].
///
/// # Errors
/// A bad URL or an unreadable credentials file.
pub async fn connect(config: &ClusterConfig, client_name: &str) -> Result<Client, ClusterError> {
    let options = match &config.credentials {
        Credentials::None => ConnectOptions::new(),
        Credentials::Token(token) => ConnectOptions::with_token(token.clone()),
        Credentials::UserPassword(user, password) => {
            ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        Credentials::File(path) => {
            ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| ClusterError::Credentials {
                    path: path.clone(),
                    source,
                })?
        }
    };
    options
        .name(client_name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(API_TIMEOUT))
        .reconnect_delay_callback(|attempts| {
            let exponent = u32::try_from(attempts.min(16)).unwrap_or(16);
            RETRY_INITIAL
                .saturating_mul(2_u32.saturating_pow(exponent))
                .min(RETRY_MAX)
        })
        .connect(config.urls.as_slice())
        .await
        .map_err(|error| ClusterError::Connect {
            urls: config.urls.join(","),
            reason: error.to_string(),
        })
}

/// The JetStream context every node uses.
pub fn jetstream(client: Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .max_ack_inflight(super::config::MAX_PUBLISHES_IN_FLIGHT)
        .build(client)
}

/// The stream's configuration when a node creates it: a plain, append-only log. No
/// limits (a limit would drop messages and every mirror would stop at the gap), no
/// deletes or purges, file storage, the configured replicas.
fn stream_config(config: &ClusterConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some("Refract event log (cluster mode): one message per append".into()),
        subjects: vec![subject(&config.stream)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        ..stream::Config::default()
    }
}

/// The stream, created with [`stream_config`] if it does not exist, and its identity:
/// its name and creation time, so a stream deleted and re-created under the same name
/// is never taken for the one a mirror copies.
///
/// # Errors
/// NATS unreachable, JetStream not enabled, too few servers for the replicas, or a
/// stream of that name that is not a Refract log.
pub async fn open_stream(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<(stream::Stream, String), ClusterError> {
    let wanted = stream_config(config);
    let mut stream = jetstream
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|error| ClusterError::Stream {
            stream: config.stream.clone(),
            reason: explain_stream_error(&error.to_string(), config.replicas),
        })?;
    let info = stream.info().await.map_err(|error| ClusterError::Stream {
        stream: config.stream.clone(),
        reason: error.to_string(),
    })?;
    if info.config.subjects != wanted.subjects {
        return Err(ClusterError::Stream {
            stream: config.stream.clone(),
            reason: format!(
                "it exists with subjects {:?}, not {:?}: it is not a Refract log; choose another cluster.stream",
                info.config.subjects, wanted.subjects
            ),
        });
    }
    if info.config.num_replicas != config.replicas {
        tracing::warn!(
            stream = %config.stream,
            existing = info.config.num_replicas,
            configured = config.replicas,
            "the stream exists with a different replica count; it keeps its own (change it with `nats stream edit`)"
        );
    }
    let identity = format!("{}@{}", config.stream, info.created.unix_timestamp_nanos());
    Ok((stream, identity))
}

/// Adds the likely fix to JetStream's own words.
fn explain_stream_error(reason: &str, replicas: usize) -> String {
    if reason.contains("insufficient resources") || reason.contains("replicas") {
        format!(
            "{reason}: JetStream cannot place {replicas} replicas; run at least {replicas} NATS servers with JetStream in one cluster, or set cluster.replicas = 1"
        )
    } else if reason.contains("jetstream not enabled") || reason.contains("no responders") {
        format!("{reason}: start nats-server with JetStream on (`nats-server -js`)")
    } else {
        reason.to_owned()
    }
}
