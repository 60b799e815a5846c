//! The server: the router and [`serve`].
//!
//! [`serve`] takes the listener, the state and the shutdown signal as parameters, so the
//! tests start the real server in-process on an ephemeral port.

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use super::auth;
use super::error::{ApiError, panic_response};
use super::state::ApiState;
use super::{events, operations, projectors, query, sse};

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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(body_limit)
        .layer(middleware::from_fn_with_state(
            state.token().clone(),
            auth::require_token,
        ))
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
    let stop = state.clone();
    let signal = async move {
        shutdown.await;
        stop.begin_shutdown();
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .await
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
