//! [`ApiState`], what every request handler may use, and [`blocking`], how handlers
//! run blocking work.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, watch};

use super::admission::{Admission, AdmissionLimits};
use super::auth::Token;
use super::error::ApiError;
use super::limits::ServerConfig;
use super::metrics::Metrics;
use crate::cluster::ClusterNode;
use crate::engine::Engine;
use crate::log::EventLog;

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    shared: Arc<Shared>,
}

struct Shared {
    log: EventLog,
    /// The cluster node, in cluster mode: appends go through it.
    cluster: Option<ClusterNode>,
    engine: Arc<Engine>,
    config: ServerConfig,
    token: Token,
    metrics: Metrics,
    /// One permit per allowed concurrent subscription.
    subscribers: Arc<Semaphore>,
    /// The open connections and their caps.
    admission: Arc<Admission>,
    /// Set once the server starts shutting down, so that subscriptions (which would
    /// otherwise stream forever) end and the graceful shutdown can finish.
    shutdown: watch::Sender<bool>,
    /// Consumer groups, once attached ([`ApiState::attach_groups`]).
    groups: OnceLock<Arc<crate::groups::Groups>>,
    /// Retention, once attached ([`ApiState::attach_retention`]).
    retention: OnceLock<Arc<crate::retention::Retention>>,
    /// Point-in-time read models, made on first use.
    point_in_time: OnceLock<Arc<crate::snapshots::point_in_time::PointInTime>>,
    /// Stream snapshots, opened on first use (or why they cannot be).
    stream_snapshots: OnceLock<Result<Arc<crate::snapshots::streams::StreamSnapshots>, String>>,
}

impl ApiState {
    /// The state for a server over `log` (the same log the engine projects, so appends
    /// wake its workers at once) and `engine`.
    pub fn new(log: EventLog, engine: Arc<Engine>, config: ServerConfig, token: Token) -> Self {
        Self::build(log, None, engine, config, token)
    }

    /// The state for a cluster node: as [`new`](ApiState::new), but appends go through
    /// `cluster` (published to JetStream, then applied to `log`, the node's mirror) and
    /// health, metrics and `GET /v1/cluster` report on it.
    pub fn clustered(
        log: EventLog,
        cluster: ClusterNode,
        engine: Arc<Engine>,
        config: ServerConfig,
        token: Token,
    ) -> Self {
        Self::build(log, Some(cluster), engine, config, token)
    }

    fn build(
        log: EventLog,
        cluster: Option<ClusterNode>,
        engine: Arc<Engine>,
        config: ServerConfig,
        token: Token,
    ) -> Self {
        let subscribers = Arc::new(Semaphore::new(config.max_subscribers));
        let admission = Arc::new(Admission::new(AdmissionLimits::from_config(&config)));
        let metrics = Metrics::new(
            log.watch_head(),
            Arc::clone(&subscribers),
            config.max_subscribers,
            Arc::clone(&admission),
        );
        ApiState {
            shared: Arc::new(Shared {
                log,
                cluster,
                engine,
                config,
                token,
                metrics,
                subscribers,
                admission,
                shutdown: watch::channel(false).0,
                groups: OnceLock::new(),
                retention: OnceLock::new(),
                point_in_time: OnceLock::new(),
                stream_snapshots: OnceLock::new(),
            }),
        }
    }

    /// Serves consumer groups (`/v1/groups/...`) from `groups`. Without it those routes
    /// answer 503. A second call is ignored.
    pub fn attach_groups(&self, groups: Arc<crate::groups::Groups>) {
        let _ = self.shared.groups.set(groups);
    }

    /// The consumer groups, if attached.
    pub(crate) fn groups(&self) -> Result<&Arc<crate::groups::Groups>, ApiError> {
        self.shared.groups.get().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "groups_unavailable",
                "this host serves no consumer groups now: it runs read-only (see GET /health) or was started without them",
            )
        })
    }

    /// Reports retention (status, metrics, deploy warnings) from `retention`. A second
    /// call is ignored.
    pub fn attach_retention(&self, retention: Arc<crate::retention::Retention>) {
        let _ = self.shared.retention.set(retention);
    }

    /// Retention, if attached.
    pub(crate) fn retention(&self) -> Option<&Arc<crate::retention::Retention>> {
        self.shared.retention.get()
    }

    /// Point-in-time read models (`at_offset` queries), made on first use.
    pub(crate) fn point_in_time(&self) -> Arc<crate::snapshots::point_in_time::PointInTime> {
        Arc::clone(self.shared.point_in_time.get_or_init(|| {
            let engine = &self.shared.engine;
            Arc::new(crate::snapshots::point_in_time::PointInTime::new(
                engine.data_dir(),
                engine.config(),
            ))
        }))
    }

    /// Stream snapshots (`/v1/streams/{stream}/snapshot` and `/load`), opened on first use.
    pub(crate) fn stream_snapshots(
        &self,
    ) -> Result<Arc<crate::snapshots::streams::StreamSnapshots>, ApiError> {
        self.shared
            .stream_snapshots
            .get_or_init(|| {
                let engine = &self.shared.engine;
                crate::snapshots::streams::StreamSnapshots::open(
                    engine.data_dir(),
                    &engine.config().snapshots,
                )
                .map(Arc::new)
                .map_err(|error| error.to_string())
            })
            .clone()
            .map_err(|message| {
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "stream_snapshots_unavailable",
                    format!("stream snapshots cannot be used: {message}"),
                )
            })
    }

    /// The consumer groups, if attached, for health and metrics.
    pub(crate) fn groups_if_any(&self) -> Option<&Arc<crate::groups::Groups>> {
        self.shared.groups.get()
    }

    /// A permit for one held connection (a subscription, a group member's stream or a
    /// waiting long poll), counted against `server.max_subscribers` until dropped.
    pub(crate) fn hold_connection(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.shared.subscribers)
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_subscribers",
                    format!(
                        "{} subscriptions and long polls are open, the most this host allows \
                         (`server.max_subscribers`); retry later",
                        self.config().max_subscribers
                    ),
                )
            })
    }

    /// The event log.
    pub fn log(&self) -> &EventLog {
        &self.shared.log
    }

    /// The cluster node, in cluster mode.
    pub fn cluster(&self) -> Option<&ClusterNode> {
        self.shared.cluster.as_ref()
    }

    /// The projection engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.shared.engine
    }

    /// The limits.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    pub(crate) fn token(&self) -> &Token {
        &self.shared.token
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(crate) fn admission(&self) -> &Arc<Admission> {
        &self.shared.admission
    }

    /// Tells subscriptions the server is shutting down, so they end.
    pub(crate) fn begin_shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// A receiver that turns `true` when the server begins to shut down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shared.shutdown.subscribe()
    }
}

/// Runs blocking work (SQLite, engine calls that touch the disk or compile wasm) on
/// tokio's blocking pool: on the async workers it would stall every other request,
/// and the runtime has only a couple of them.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => Err(ApiError::internal("a blocking task", &error)),
    }
}
