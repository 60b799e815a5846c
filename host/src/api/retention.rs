//! `GET /v1/retention`: what retention is doing.

use axum::Json;
use axum::extract::State;

use super::error::ApiError;
use super::state::{ApiState, blocking};
use crate::retention::RetentionStatus;

/// `GET /v1/retention`: the policies, the safety floor, what was archived, deleted and
/// reclaimed, the archive's size, and the projector versions built from partial
/// history. Without retention (no policy, a cluster node) the policies are empty and
/// the horizon is read from the log.
pub(crate) async fn show(State(state): State<ApiState>) -> Result<Json<RetentionStatus>, ApiError> {
    if let Some(retention) = state.retention().cloned() {
        return Ok(Json(blocking(move || Ok(retention.status())).await?));
    }
    let log = state.log().clone();
    let horizon = blocking(move || Ok(log.horizon()?)).await?;
    Ok(Json(RetentionStatus {
        horizon,
        truncated_before: horizon.truncated_before(),
        ..RetentionStatus::default()
    }))
}
