//! The server: the router and [`serve`].
//!
//! [`serve`] takes the listener, the state and the shutdown signal as parameters, so the
//! tests start the real server in-process on an ephemeral port.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use super::admission::ensure_descriptor_budget;
use super::auth;
use super::connection::{ConnectionTimeouts, serve_connection};
use super::error::{ApiError, panic_response};
use super::state::ApiState;
use super::{
    cluster, diff, events, groups, operations, projectors, proxy, query, read_model, retention,
    snapshots, sse,
};

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
        .route("/v1/streams/{stream}/snapshot", put(snapshots::put_stream))
        .route("/v1/streams/{stream}/load", get(snapshots::load_stream))
        .route("/v1/cluster", get(cluster::show))
        .route("/v1/cluster/projectors", get(cluster::projectors))
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
        .route(
            "/v1/projectors/{name}/query",
            post(query::run).route_layer(middleware::from_fn_with_state(
                state.clone(),
                proxy::queries,
            )),
        )
        .route(
            "/v1/projectors/{name}/snapshots",
            get(snapshots::list).post(snapshots::take),
        )
        .route("/v1/projectors/{name}/restore", post(snapshots::restore))
        .route("/v1/projectors/{name}/diff", get(diff::diff))
        .route(
            "/v1/projectors/{name}/read-model",
            get(read_model::download),
        )
        .route("/v1/retention", get(retention::show))
        .route("/v1/groups", get(groups::list))
        .route(
            "/v1/groups/{group}",
            get(groups::show).delete(groups::delete),
        )
        .route("/v1/groups/{group}/reset", post(groups::reset))
        .route("/v1/groups/{group}/poll", post(groups::poll))
        .route("/v1/groups/{group}/subscribe", get(groups::subscribe))
        .route("/v1/groups/{group}/ack", post(groups::ack))
        .route("/v1/groups/{group}/nack", post(groups::nack))
        .route("/v1/groups/{group}/heartbeat", post(groups::heartbeat))
        .route("/v1/groups/{group}/leave", post(groups::leave))
        .route("/v1/groups/{group}/dead-letters", get(groups::dead_letters))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(body_limit)
        .layer(middleware::from_fn_with_state(
            state.token().clone(),
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
///
/// Each connection is admitted under the connection caps ([`super::admission`]) and
/// served with its timeouts ([`super::connection`]).
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config().clone();
    ensure_descriptor_budget(config.max_connections);
    let admission = Arc::clone(state.admission());
    let timeouts = ConnectionTimeouts {
        header_read: config.header_read_timeout(),
        body_read: config.body_read_timeout(),
        idle: config.idle_timeout(),
    };
    let router = router(state.clone());
    let (stopping, stop_seen) = watch::channel(false);
    // Every connection task holds a clone of `open`; when all are gone, they are done.
    let (open, all_closed) = watch::channel(());
    drop(all_closed);
    let mut accept_errors = RepeatedAcceptError::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.pause_after(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accept_errors.reset();
        let Some(ticket) = admission.admit(peer.ip()) else {
            // Logged at 1, 2, 4, 8... refusals: a flood does not flood the log too.
            let refused = admission.turned_away().1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, "refused a connection: every one of server.max_connections is held by a client with the token");
            }
            continue;
        };
        // Small responses go out at once rather than waiting for more to send.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop_seen = stop_seen.clone();
        let open = open.subscribe();
        tokio::spawn(async move {
            serve_connection(stream, router, ticket, timeouts, stop_seen).await;
            drop(open);
        });
    }
    drop(listener);
    state.begin_shutdown();
    stopping.send_replace(true);
    open.closed().await;
    Ok(())
}

/// How long the accept loop pauses after an error such as running out of file
/// descriptors, so it does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accept errors, logged once per run of them rather than once per attempt.
#[derive(Debug, Default)]
struct RepeatedAcceptError {
    repeats: u64,
}

impl RepeatedAcceptError {
    async fn pause_after(&mut self, error: &std::io::Error) {
        // A connection reset before it was accepted is the client's business.
        if matches!(
            error.kind(),
            ErrorKind::ConnectionAborted
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionRefused
        ) {
            return;
        }
        if self.repeats == 0 {
            tracing::error!(
                "cannot accept connections: {error}; if it says too many open files, lower \
                 server.max_connections or raise `ulimit -n`"
            );
        }
        self.repeats += 1;
        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
    }

    fn reset(&mut self) {
        if self.repeats > 1 {
            tracing::info!(failed = self.repeats, "accepting connections again");
        }
        self.repeats = 0;
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
