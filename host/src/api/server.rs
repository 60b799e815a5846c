//! The server: [`ApiState`], the router and [`serve`].
//!
//! [`serve`] takes the listener, the state and the shutdown signal as parameters, so the
//! tests start the real server in-process on an ephemeral port.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use super::auth::{self, Token};
use super::error::{ApiError, panic_response};
use super::limits::ServerConfig;
use super::metrics::Metrics;
use super::{cluster, diff, events, operations, projectors, query, sse};
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
    /// Set once the server starts shutting down, so that subscriptions (which would
    /// otherwise stream forever) end and the graceful shutdown can finish.
    shutdown: watch::Sender<bool>,
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
        let metrics = Metrics::new(
            log.watch_head(),
            Arc::clone(&subscribers),
            config.max_subscribers,
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
                shutdown: watch::channel(false).0,
            }),
        }
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

    pub(crate) fn subscribers(&self) -> &Arc<Semaphore> {
        &self.shared.subscribers
    }

    /// A receiver that turns `true` when the server begins to shut down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shared.shutdown.subscribe()
    }
}

/// The API's routes, with authentication, body limits, panic catching and request
/// tracing.
pub fn router(state: ApiState) -> Router {
    let config = state.config();
    let upload_limit = DefaultBodyLimit::max(config.max_upload_bytes);
    let body_limit = DefaultBodyLimit::max(config.max_body_bytes);
    Router::new()
        .route("/health", get(operations::health))
        .route("/metrics", get(operations::metrics))
        .route("/v1/streams/{stream}/events", post(events::append))
        .route("/v1/cluster", get(cluster::show))
        .route("/v1/events", get(events::read))
        .route("/v1/events/count", get(events::count))
        .route("/v1/events/subscribe", get(sse::subscribe))
        .route("/v1/projectors", get(projectors::list))
        .route("/v1/projectors/{name}", get(projectors::show))
        .route(
            "/v1/projectors/{name}/versions",
            post(projectors::deploy).layer(upload_limit),
        )
        .route("/v1/projectors/{name}/promote", post(projectors::promote))
        .route("/v1/projectors/{name}/rollback", post(projectors::rollback))
        .route("/v1/projectors/{name}/abort", post(projectors::abort))
        .route(
            "/v1/projectors/{name}/dead-letters",
            get(projectors::dead_letters),
        )
        .route("/v1/projectors/{name}/query", post(query::run))
        .route("/v1/projectors/{name}/diff", get(diff::diff))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(body_limit)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // The console's page and scripts load before sign-in and hold no data: outside
        // the token check, which covers only the routes above.
        .merge(crate::console::router())
        .layer(CatchPanicLayer::custom(panic_response))
        // The span names the path only: query strings can hold anything a client
        // pasted, including a token this server refuses to read from there.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path()
                )
            }),
        )
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting,
/// ends every subscription and waits for requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = state.shared.shutdown.clone();
    let signal = async move {
        shutdown.await;
        stop.send_replace(true);
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .await
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

async fn not_found() -> ApiError {
    ApiError::not_found(
        "not_found",
        "no such endpoint; the API lives under /v1 (see the README for the list)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}
