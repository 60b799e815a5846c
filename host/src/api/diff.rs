//! `GET /v1/projectors/{name}/diff`: a projector's shadow (or previous, or named)
//! version compared with its active version, table by table, with the diff gate's
//! verdict. The same comparison as `refract diff`, as JSON:
//!
//! ```json
//! {"projector": "cars",
//!  "base": {"version": "3f9c2a1b", "role": "active"},
//!  "other": {"version": "8e1d0c7a", "role": "shadow"},
//!  "tables": [{"table": "cars", "base_rows": 2, "other_rows": 2,
//!              "base_checksum": "…", "other_checksum": "…", "schema_differs": false,
//!              "only_in_base": [["'hrxs21'", "…", "'Bob'"]],
//!              "only_in_other": [["'hrxs21'", "…", "'Charlie'"]]}],
//!  "gate": {"file": "gates/cars.sql", "passed": true, "reason": null}}
//! ```
//!
//! Query parameters: `version` (default: the shadow, else the previous version) and
//! `sample`, the differing rows shown per table and side (default
//! [`DEFAULT_DIFF_SAMPLE_ROWS`], at most [`MAX_DIFF_SAMPLE_ROWS`]). A comparison reads
//! both read models whole (for the checksums), so it is stopped after
//! [`DIFF_TIMEOUT`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiError;
use super::extract::{Params, ProjectorName};
use super::state::{ApiState, blocking};
use crate::engine::diff::{DiffError, DiffRequest, VersionDiff, diff_versions};

/// Differing rows shown per table and side when the request names no `sample`.
pub const DEFAULT_DIFF_SAMPLE_ROWS: usize = 5;

/// The largest `sample`: the sampled rows are held in memory and sent whole, and a
/// person reads a handful; `refract diff --sample` has no such cap.
pub const MAX_DIFF_SAMPLE_ROWS: usize = 100;

/// How long one comparison may read before it is stopped, so a request over huge read
/// models gives its blocking thread back. Checksums read about a million rows a second.
pub const DIFF_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /v1/projectors/{name}/diff?version=V&sample=N`.
pub(crate) async fn diff(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
    params: Params,
) -> Result<Json<VersionDiff>, ApiError> {
    params.only(&["version", "sample"])?;
    let version = params.one("version")?.map(str::to_owned);
    let sample = match params.number("sample")? {
        None => DEFAULT_DIFF_SAMPLE_ROWS,
        Some(sample) if sample > MAX_DIFF_SAMPLE_ROWS as u64 => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "`sample` is {sample}, above the maximum of {MAX_DIFF_SAMPLE_ROWS}; \
                     `refract diff --sample N` shows more"
                ),
            ));
        }
        Some(sample) => usize::try_from(sample).unwrap_or(MAX_DIFF_SAMPLE_ROWS),
    };
    let engine = Arc::clone(state.engine());
    // Reads control.db and both read models whole.
    let compared = blocking(move || {
        let gate = engine.config().projector(&name).diff_gate;
        let request = DiffRequest {
            projector: &name,
            version: version.as_deref(),
            sample,
            gate: gate.as_deref(),
            deadline: Some(Instant::now() + DIFF_TIMEOUT),
        };
        diff_versions(engine.data_dir(), &request).map_err(diff_error)
    })
    .await?;
    Ok(Json(compared))
}

fn diff_error(error: DiffError) -> ApiError {
    let message = error.to_string();
    match error {
        DiffError::UnknownProjector(name) => ApiError::not_found(
            "unknown_projector",
            format!("no projector named `{name}`; `GET /v1/projectors` lists them"),
        ),
        DiffError::UnknownVersion { .. } => ApiError::not_found("unknown_version", message),
        DiffError::NoActiveVersion(_) | DiffError::NothingToCompare(_) => {
            ApiError::new(StatusCode::CONFLICT, "nothing_to_compare", message)
        }
        DiffError::Deleted { version, .. } => ApiError::new(
            StatusCode::CONFLICT,
            "version_deleted",
            format!("the read model of version {version} was deleted (see `keep_versions`)"),
        ),
        DiffError::TimedOut => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "diff_timeout",
            format!(
                "the comparison ran past {} s and was stopped; `refract diff` on the host has \
                 no time limit",
                DIFF_TIMEOUT.as_secs()
            ),
        ),
        other => ApiError::internal("comparing two versions", &other),
    }
}
