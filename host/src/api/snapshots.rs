//! The snapshot endpoints of read models:
//! - `GET /v1/projectors/{name}/snapshots`: every snapshot, and per version the count,
//!   newest checkpoint and bytes;
//! - `POST /v1/projectors/{name}/snapshots`: take one of the active version now;
//! - `POST /v1/projectors/{name}/restore` `{"from": "<version>/<checkpoint>"}`: restore
//!   the read model from a snapshot and catch it up;
//! - `PUT /v1/streams/{stream}/snapshot` `{"version": N, "state": {...}}` and
//!   `GET /v1/streams/{stream}/load`: stream snapshots (see
//!   [`crate::snapshots::streams`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ProjectorName};
use super::state::{ApiState, blocking};
use crate::engine::{Engine, EngineError};
use crate::snapshots::point_in_time::{PointInTime, PointInTimeError};
use crate::snapshots::store::{Reason, SnapshotEntry, SnapshotError, Store, VersionSummary};
use crate::snapshots::streams::{Loaded, StreamSnapshotError};

/// The answer to `GET /v1/projectors/{name}/snapshots`.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshots {
    /// The projector.
    projector: String,
    /// Every snapshot, oldest checkpoint first; `id` is what `restore` takes.
    snapshots: Vec<Listed>,
    /// Per version: count, newest checkpoint, bytes.
    versions: Vec<VersionSummary>,
}

/// One snapshot with its id.
#[derive(Debug, Serialize)]
pub(crate) struct Listed {
    /// `<version>/<checkpoint>`.
    id: String,
    #[serde(flatten)]
    entry: SnapshotEntry,
}

/// `GET /v1/projectors/{name}/snapshots`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
) -> Result<Json<Snapshots>, ApiError> {
    let engine = Arc::clone(state.engine());
    let answer = blocking(move || {
        if engine.projector(&name).is_none() {
            return Err(EngineError::UnknownProjector(name).into());
        }
        let store = Store::new(engine.data_dir());
        let snapshots = store
            .list(&name)
            .map_err(|error| snapshot_error(&error))?
            .into_iter()
            .map(|entry| Listed {
                id: entry.id(),
                entry,
            })
            .collect();
        Ok(Snapshots {
            versions: store.summaries(&name),
            projector: name,
            snapshots,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// `POST /v1/projectors/{name}/snapshots`: answers 201 with the new snapshot (or the
/// existing one at the same checkpoint).
pub(crate) async fn take(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
) -> Result<(StatusCode, Json<Listed>), ApiError> {
    let engine = Arc::clone(state.engine());
    // A copy of the whole read model: seconds for a large one, on the blocking pool.
    let entry = blocking(move || take_now(&engine, &name)).await?;
    Ok((
        StatusCode::CREATED,
        Json(Listed {
            id: entry.id(),
            entry,
        }),
    ))
}

fn take_now(engine: &Engine, name: &str) -> Result<SnapshotEntry, ApiError> {
    let Some(model) = engine.read_model(name) else {
        if let Some(why) = engine.read_model_unavailable(name) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read_model_unavailable",
                format!("projector `{name}` cannot be snapshotted now: {why}; retry later"),
            ));
        }
        return Err(match engine.projector(name) {
            Some(_) => ApiError::new(
                StatusCode::CONFLICT,
                "no_active_version",
                format!(
                    "projector `{name}` has no active version to snapshot yet; retry when it has"
                ),
            ),
            None => EngineError::UnknownProjector(name.to_owned()).into(),
        });
    };
    let data = engine.data_dir();
    let keep = engine.config().projector(name).snapshots.keep;
    Store::new(data)
        .take(
            name,
            &model.version,
            &model.path,
            Some(&data.version_wasm(name, &model.version)),
            Reason::OnDemand,
            keep,
        )
        .map_err(|error| snapshot_error(&error))
}

/// The body of `POST /v1/projectors/{name}/restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreRequest {
    /// The snapshot's id, `<version>/<checkpoint>`.
    from: String,
}

/// What a restore started.
#[derive(Debug, Serialize)]
pub(crate) struct Restoring {
    /// The projector.
    projector: String,
    /// The version restored.
    version: String,
    /// The snapshot it starts from.
    from: String,
}

/// `POST /v1/projectors/{name}/restore`: answers 202 once the restore has started; the
/// projector serves again when it has caught up (`GET /v1/projectors/{name}`).
pub(crate) async fn restore(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
    ApiJson(request): ApiJson<RestoreRequest>,
) -> Result<(StatusCode, Json<Restoring>), ApiError> {
    let engine = Arc::clone(state.engine());
    let (projector, from) = (name.clone(), request.from.clone());
    let version = blocking(move || Ok(engine.restore(&name, &request.from)?)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Restoring {
            projector,
            version,
            from,
        }),
    ))
}

fn snapshot_error(error: &SnapshotError) -> ApiError {
    match error {
        SnapshotError::NotFound { .. } => {
            ApiError::not_found("unknown_snapshot", error.to_string())
        }
        _ => ApiError::internal("a snapshot", error),
    }
}

/// A query answered from the read model as it was at `at_offset` (or at the last offset
/// recorded at or before `at_time`): `run` gets the materialised database and the
/// version that built it. Blocking.
pub(crate) fn query_at<T>(
    engine: &Engine,
    point_in_time: &PointInTime,
    name: &str,
    at_offset: &Option<u64>,
    at_time: &Option<String>,
    run: impl FnOnce(&std::path::Path, String) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    if engine.projector(name).is_none() {
        return Err(EngineError::UnknownProjector(name.to_owned()).into());
    }
    let offset = match (at_offset, at_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_point_in_time",
                "give at_offset or at_time, not both",
            ));
        }
        (Some(offset), None) => *offset,
        (None, Some(time)) => {
            let time: jiff::Timestamp = time.parse().map_err(|error| {
                ApiError::bad_request(
                    "invalid_point_in_time",
                    format!("at_time {time:?} is not an RFC 3339 instant ({error}); for example 2026-11-25T23:00:00Z"),
                )
            })?;
            point_in_time
                .offset_at_time(engine.log(), time)
                .map_err(|error| point_in_time_error(&error))?
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_point_in_time",
                "give at_offset or at_time",
            ));
        }
    };
    let active = engine.read_model(name).map(|model| model.version);
    let materialised = point_in_time
        .at_offset(engine.log(), name, active.as_deref(), offset)
        .map_err(|error| point_in_time_error(&error))?;
    run(&materialised.path, materialised.version.clone())
}

fn point_in_time_error(error: &PointInTimeError) -> ApiError {
    match error {
        PointInTimeError::BeyondHead { .. }
        | PointInTimeError::BeforeFirstEvent { .. }
        | PointInTimeError::TooFar { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "point_in_time_refused",
            error.to_string(),
        ),
        PointInTimeError::NoVersion(_) => {
            ApiError::new(StatusCode::CONFLICT, "no_active_version", error.to_string())
        }
        _ => ApiError::internal("a point-in-time read model", error),
    }
}

/// The body of `PUT /v1/streams/{stream}/snapshot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutStreamSnapshot {
    /// The stream version the state reflects (1 up to the stream's head).
    version: u64,
    /// The application's state: any JSON, at most `snapshots.stream_max_state_bytes`.
    state: Box<serde_json::value::RawValue>,
}

/// What a stored stream snapshot answers.
#[derive(Debug, Serialize)]
pub(crate) struct StoredStreamSnapshot {
    /// The stream.
    stream: String,
    /// The version stored.
    version: u64,
}

/// `PUT /v1/streams/{stream}/snapshot`: 201, or 422 past the stream's head or over the
/// state's size bound.
pub(crate) async fn put_stream(
    State(state): State<ApiState>,
    ApiPath(stream): ApiPath<String>,
    ApiJson(request): ApiJson<PutStreamSnapshot>,
) -> Result<(StatusCode, Json<StoredStreamSnapshot>), ApiError> {
    let snapshots = state.stream_snapshots()?;
    let version = request.version;
    let stream = blocking(move || {
        snapshots
            .put(&stream, request.version, &request.state)
            .map_err(|error| stream_error(&error))?;
        Ok(stream)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(StoredStreamSnapshot { stream, version }),
    ))
}

/// `GET /v1/streams/{stream}/load`: the latest snapshot and the events after it.
pub(crate) async fn load_stream(
    State(state): State<ApiState>,
    ApiPath(stream): ApiPath<String>,
) -> Result<Json<Loaded>, ApiError> {
    let snapshots = state.stream_snapshots()?;
    let loaded = blocking(move || {
        snapshots
            .load(&stream)
            .map_err(|error| stream_error(&error))
    })
    .await?;
    Ok(Json(loaded))
}

fn stream_error(error: &StreamSnapshotError) -> ApiError {
    match error {
        StreamSnapshotError::BeyondHead { .. } | StreamSnapshotError::TooLarge { .. } => {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_stream_snapshot",
                error.to_string(),
            )
        }
        _ => ApiError::internal("stream snapshots", error),
    }
}
