//! The projector endpoints: list, show, deploy a version, promote, roll back, abort,
//! and dead letters. Queries live in `query.rs`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::extract::{Params, ProjectorName};
use super::state::{ApiState, blocking};
use crate::engine::{
    DeadLetter, DeployOutcome, Deployment, Engine, EngineError, ProjectorView, Rejected,
};

/// The answer to `GET /v1/projectors`.
#[derive(Debug, Serialize)]
pub(crate) struct Projectors {
    /// Every projector, by name.
    projectors: Vec<ProjectorView>,
    /// Plugins-folder files that could not be loaded.
    rejected: Vec<Rejected>,
}

/// `GET /v1/projectors`.
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<Projectors>, ApiError> {
    let engine = Arc::clone(state.engine());
    // Engine calls take locks the controller thread may hold: off the async workers.
    let answer = blocking(move || {
        Ok(Projectors {
            projectors: engine.projectors(),
            rejected: engine.rejected(),
        })
    })
    .await?;
    Ok(Json(answer))
}

/// `GET /v1/projectors/{name}`: its versions with state, checkpoint, lag, events/s,
/// replay progress (done, total, ETA), last error and dead-letter count.
pub(crate) async fn show(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
) -> Result<Json<ProjectorView>, ApiError> {
    let engine = Arc::clone(state.engine());
    let view = blocking(move || {
        engine
            .projector(&name)
            .ok_or_else(|| EngineError::UnknownProjector(name).into())
    })
    .await?;
    Ok(Json(view))
}

/// `POST /v1/projectors/{name}/versions`: the body is a component (`.wasm`). Answers
/// 202 with the new version while it replays; 422 if the component is malformed or
/// declares another projector; 200 if these exact bytes are already active or
/// replaying.
pub(crate) async fn deploy(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let wasm = body?;
    if wasm.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_component",
            "the body is empty; send the projector component (.wasm) as the body",
        ));
    }
    let engine = Arc::clone(state.engine());
    let bytes = wasm.len();
    // Validating a component compiles it: seconds of CPU, on the blocking pool.
    let deployment = blocking(move || deploy_as(&engine, &name, &wasm)).await?;
    tracing::info!(
        projector = %deployment.projector,
        version = %deployment.version,
        bytes,
        outcome = ?deployment.outcome,
        "component deployed through the API"
    );
    let status = match deployment.outcome {
        DeployOutcome::Started => StatusCode::ACCEPTED,
        DeployOutcome::AlreadyActive | DeployOutcome::AlreadyDeploying => StatusCode::OK,
    };
    let location = format!("/v1/projectors/{}", deployment.projector);
    Ok((status, [(LOCATION, location)], Json(deployment)).into_response())
}

/// Deploys `wasm`, refusing a component that declares a projector other than `name`
/// before anything starts.
fn deploy_as(engine: &Engine, name: &str, wasm: &[u8]) -> Result<Deployment, ApiError> {
    Ok(engine.deploy_as(name, wasm)?)
}

/// The answer to promote, rollback and abort.
#[derive(Debug, Serialize)]
pub(crate) struct Changed {
    /// The projector.
    projector: String,
    /// The version the command acted on: now active (promote), being reactivated
    /// (rollback), or dropped (abort).
    version: String,
    /// `promote`, `rollback` or `abort`.
    action: &'static str,
    /// Cluster mode, `promote = "manual"`: the log offset every node swaps at.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

/// A command that changes which version of a projector does what.
async fn change(
    state: ApiState,
    name: String,
    action: &'static str,
    command: fn(&Engine, &str) -> Result<String, EngineError>,
) -> Result<Json<Changed>, ApiError> {
    let engine = Arc::clone(state.engine());
    let projector = name.clone();
    // The engine's controller may be busy (compiling a deploy); wait off the workers.
    let version = blocking(move || Ok(command(&engine, &projector)?)).await?;
    tracing::info!(projector = %name, %version, action, "projector changed through the API");
    if let Some(cluster) = state.cluster() {
        // A rollback or an abort is cluster-wide: every node does the same.
        cluster.announce_change(action, &name, &version);
    }
    Ok(Json(Changed {
        projector: name,
        version,
        action,
        offset: None,
    }))
}

/// `POST /v1/projectors/{name}/promote`: swaps the caught-up shadow in now.
pub(crate) async fn promote(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
) -> Result<Json<Changed>, ApiError> {
    if let Some(cluster) = state.cluster()
        && let Some(promoted) = cluster.promote(&name).await
    {
        // `promote = "manual"` in a cluster: every node swaps at one offset.
        let promoted = promoted
            .map_err(|reason| ApiError::new(StatusCode::CONFLICT, "promote_refused", reason))?;
        tracing::info!(projector = %name, version = %promoted.version, offset = promoted.offset, "cluster promote through the API");
        return Ok(Json(Changed {
            projector: name,
            version: promoted.version,
            action: "promote",
            offset: Some(promoted.offset),
        }));
    }
    change(state, name, "promote", Engine::promote).await
}

/// `POST /v1/projectors/{name}/rollback`: reactivates the previous version; in a
/// cluster, on every node at one log offset.
pub(crate) async fn rollback(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
) -> Result<Json<Changed>, ApiError> {
    if let Some(cluster) = state.cluster()
        && let Some(rolled) = cluster.rollback(&name).await
    {
        let rolled = rolled
            .map_err(|reason| ApiError::new(StatusCode::CONFLICT, "rollback_refused", reason))?;
        tracing::info!(projector = %name, version = %rolled.version, offset = rolled.offset, "cluster rollback through the API");
        return Ok(Json(Changed {
            projector: name,
            version: rolled.version,
            action: "rollback",
            offset: Some(rolled.offset),
        }));
    }
    change(state, name, "rollback", Engine::rollback).await
}

/// `POST /v1/projectors/{name}/abort`: drops the running shadow; in a cluster, on
/// every node, and never in the middle of a coordinated swap to it.
pub(crate) async fn abort(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
) -> Result<Json<Changed>, ApiError> {
    if let Some(cluster) = state.cluster() {
        let shadow = state.engine().projector(&name).and_then(|view| {
            view.versions
                .into_iter()
                .find(|v| v.role == crate::engine::control::Role::Shadow && v.status.is_some())
                .map(|v| v.version)
        });
        if let Some(shadow) = shadow {
            cluster
                .before_abort(&name, &shadow)
                .await
                .map_err(|reason| ApiError::new(StatusCode::CONFLICT, "abort_refused", reason))?;
        }
    }
    change(state, name, "abort", Engine::abort).await
}

/// The answer to `GET /v1/projectors/{name}/dead-letters`.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetters {
    /// Oldest first, at most `limit`.
    dead_letters: Vec<DeadLetter>,
}

/// `GET /v1/projectors/{name}/dead-letters?limit=N`.
pub(crate) async fn dead_letters(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
    params: Params,
) -> Result<Json<DeadLetters>, ApiError> {
    params.only(&["limit"])?;
    let config = state.config();
    let limit = params.limit(config.default_page_rows, config.max_page_rows)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let engine = Arc::clone(state.engine());
    // Reads control.db.
    let dead_letters = blocking(move || Ok(engine.dead_letters(&name, limit)?)).await?;
    Ok(Json(DeadLetters { dead_letters }))
}
