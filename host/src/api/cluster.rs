//! `GET /v1/cluster`: this node's view of the cluster.

use axum::Json;
use axum::extract::State;

use super::error::ApiError;
use super::state::ApiState;
use crate::cluster::ClusterStatus;

/// `GET /v1/cluster`: NATS connectivity, the mirror's position against the stream's
/// head (the replication lag), the last problem. 404 `not_clustered` on a single-node
/// host.
pub(crate) async fn show(State(state): State<ApiState>) -> Result<Json<ClusterStatus>, ApiError> {
    let cluster = state.cluster().ok_or_else(|| {
        ApiError::not_found(
            "not_clustered",
            "this host runs single-node; start it with `refract run --cluster nats://host:port --node <name>` for cluster mode",
        )
    })?;
    Ok(Json(cluster.status()))
}

/// `GET /v1/cluster/projectors`: every node's heartbeat and every projector across
/// the nodes (which node serves which version, shadows, checkpoints, errors), with
/// what diverges. 404 `not_clustered` on a single-node host.
pub(crate) async fn projectors(
    State(state): State<ApiState>,
) -> Result<Json<crate::cluster::deploys::view::ClusterView>, ApiError> {
    let cluster = state.cluster().ok_or_else(|| {
        ApiError::not_found(
            "not_clustered",
            "this host runs single-node; start it with `refract run --cluster nats://host:port --node <name>` for cluster mode",
        )
    })?;
    cluster.projectors().map(Json).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "cluster_starting",
            "this node has not started its cluster deploys yet; retry in a moment",
        )
    })
}
