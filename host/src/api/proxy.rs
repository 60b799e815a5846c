//! Cluster placement: a query for a projector this node does not run (it is placed on
//! other nodes, `projectors.<name>.nodes`) is proxied to a node that runs it, found
//! from the leases and the API address each node publishes in its heartbeat
//! (`cluster.api_url`).
//!
//! The client's `Authorization` header goes along, so the owner checks the same
//! token: give every node the same API token (`--token`) for proxied queries. The
//! answer carries `Refract-Served-By: <node>`. A proxied request carries
//! `Refract-Proxied-By: <node>` and is never proxied again, so two nodes that disagree
//! about the leases cannot bounce a query between them. When no live node serves the
//! projector (its lease is moving), the answer is 503 `projector_elsewhere` saying
//! where it is placed and when to retry.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::ApiState;
use crate::cluster::deploys::placement::QueryRoute;

/// The header naming the node a proxied query came through.
pub const PROXIED_BY: &str = "refract-proxied-by";

/// The header naming the node that answered a query.
pub const SERVED_BY: &str = "refract-served-by";

/// Room for an answer's envelope (columns, checkpoint, version) around rows capped at
/// `server.max_query_result_bytes`: the most a proxied answer may exceed that cap by.
const ANSWER_ENVELOPE_BYTES: usize = 1024 * 1024;

/// Extra time a proxied query may take over `server.query_timeout_ms`: the second hop.
const PROXY_SLACK: Duration = Duration::from_secs(5);

/// Middleware of `POST /v1/projectors/{name}/query`: answers here, or proxies.
pub(crate) async fn queries(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    request: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(PROXIED_BY) || state.engine().read_model(&name).is_some() {
        return next.run(request).await;
    }
    match cluster.query_route(&name) {
        QueryRoute::Local => next.run(request).await,
        QueryRoute::Nowhere(reason) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "projector_elsewhere",
            reason,
        )
        .into_response(),
        QueryRoute::Proxy { node, url } => {
            let me = cluster.config().node.clone();
            proxy(&state, request, &me, &node, &url)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
    }
}

/// Sends the query to `node` at `url` and hands its answer back.
async fn proxy(
    state: &ApiState,
    request: Request,
    me: &str,
    node: &str,
    url: &str,
) -> Result<Response, ApiError> {
    let config = state.config();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
    let authorization = request.headers().get(AUTHORIZATION).cloned();
    let body = to_bytes(request.into_body(), config.max_body_bytes)
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("cannot read the query to proxy it to node {node}: {error}"),
            )
        })?;
    let target = format!("{}{path}", url.trim_end_matches('/'));
    let timeout = config.query_timeout() + PROXY_SLACK;
    let limit = config
        .max_query_result_bytes
        .saturating_add(ANSWER_ENVELOPE_BYTES);
    let me = me.to_owned();
    let owner = node.to_owned();
    // ureq blocks: off the async runtime.
    let answer = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        let mut call = agent
            .post(&target)
            .header(CONTENT_TYPE.as_str(), "application/json")
            .header(PROXIED_BY, &me);
        if let Some(authorization) = authorization
            && let Ok(value) = authorization.to_str()
        {
            call = call.header(AUTHORIZATION.as_str(), value);
        }
        let mut response = call.send(&body[..]).map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(u64::try_from(limit).unwrap_or(u64::MAX))
            .read_to_vec()
            .map_err(|error| error.to_string())?;
        Ok::<_, String>((status, text))
    })
    .await
    .map_err(|error| error.to_string())
    .and_then(|answer| answer)
    .map_err(|error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "proxy_failed",
            format!(
                "projector runs on node {owner} (cluster placement), and proxying the query to it at {url} failed: {error}; retry, or query that node directly"
            ),
        )
    })?;
    let (status, body) = answer;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if status == StatusCode::UNAUTHORIZED {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "proxy_unauthorized",
            format!(
                "projector runs on node {node} (cluster placement), which refused this request's token: give every node the same API token (`--token`) to proxy queries, or query {url} with its own"
            ),
        ));
    }
    let mut response = (status, Body::from(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(node) {
        headers.insert(SERVED_BY, value);
    }
    Ok(response)
}
