//! [`ApiError`]: every failure the API answers with, as one JSON shape and one status.
//!
//! ```json
//! {"error": {"code": "version_conflict", "message": "version conflict on stream `order-1`: ..."}}
//! ```
//!
//! A client error is always a 4xx with a stable `code` and a message that names the
//! thing and the fix; only host failures are 5xx, and their details go to the log, not
//! to the client.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::connection::BodyTimedOut;
use crate::cluster::AppendError;
use crate::engine::{EngineError, ReadOnly};
use crate::log::LogError;
use crate::storage_fault::StorageFault;

/// An API failure: a status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable snake-case code, e.g. `version_conflict`.
    pub code: &'static str,
    /// What went wrong and, where there is one, the fix.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed (a bad parameter, a bad name).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: no such projector, or no such route.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 500: a host failure. The details are logged here; the client gets a generic
    /// message, since they may name files and internals.
    pub fn internal(context: &str, error: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %DisplayChain(error), "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed on the host; its log has the details"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Formats an error with its causes, each said once.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::error_text::one_line(self.0))
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> ApiError {
        match error {
            LogError::InvalidEvent { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                error.to_string(),
            ),
            LogError::VersionConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "version_conflict", error.to_string())
            }
            LogError::InvalidQuery { .. } => {
                ApiError::bad_request("invalid_query", error.to_string())
            }
            LogError::DiskFull { path } => disk_full(&path),
            // A group commit that could not take the write lock is worth retrying
            // (appends with ids are idempotent); say so with 503.
            LogError::Write { .. } => {
                tracing::error!(error = %DisplayChain(&error), "append failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "log_unavailable",
                    "the event log could not commit the append; nothing was written, retry later \
                     (the host's log has the details)",
                )
            }
            LogError::ArchiveBudget { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "archive_budget_exceeded",
                format!(
                    "{error} (the budget is the `server.archive_read_segments` key of \
                     refract.toml)"
                ),
            ),
            LogError::Archive {
                ref path,
                ref reason,
            } => {
                tracing::error!(error = %DisplayChain(&error), "reading the archive failed");
                // The file's name, not its path: the data directory's place is the host's.
                let name = path
                    .file_name()
                    .map_or_else(|| "archive".into(), |n| n.to_string_lossy());
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "archive_unreadable",
                    format!(
                        "cannot read `{name}` in the data directory's archive: {reason}; \
                         restore the archive folder from a backup (never delete segments \
                         while the log refers to them)"
                    ),
                )
            }
            other => ApiError::internal("the event log", &other),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> ApiError {
        let (status, code) = match &error {
            AppendError::Refused(_) => match error {
                AppendError::Refused(refused) => return ApiError::from(refused),
                other => return ApiError::internal("the cluster append", &other),
            },
            // Nothing written (or not known to be): worth retrying, with ids.
            AppendError::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable")
            }
            AppendError::OutcomeUnknown { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "cluster_outcome_unknown")
            }
            AppendError::NotYetApplied { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "cluster_mirror_behind")
            }
            AppendError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl ApiError {
    /// The host runs read-only: 507 when its disk is full, else 503.
    pub fn read_only(read_only: &ReadOnly) -> ApiError {
        let (status, code) = match read_only.fault {
            StorageFault::DiskFull => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "read_only"),
        };
        ApiError::new(
            status,
            code,
            format!(
                "the host is read-only, so nothing was written: {}",
                read_only.reason
            ),
        )
    }
}

/// 507: the disk holding `file` is full. The client is told, with the data directory
/// and the fix: an operator reading the client's error should not need the host's log.
pub(crate) fn disk_full(file: &std::path::Path) -> ApiError {
    let folder = file.parent().unwrap_or(file);
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "disk_full",
        format!(
            "the disk holding the data directory {} is full, so nothing was written; free space \
             on it (or move the data directory to a larger disk), then retry",
            folder.display()
        ),
    )
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::UnknownProjector(name) => ApiError::not_found(
                "unknown_projector",
                format!("no projector named `{name}`; `GET /v1/projectors` lists them"),
            ),
            EngineError::InvalidComponent(reason) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                format!("the component was refused: {reason}"),
            ),
            EngineError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            error @ EngineError::NameMismatch { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "name_mismatch",
                error.to_string(),
            ),
            EngineError::ReadOnly(read_only) => ApiError::read_only(&read_only),
            other => ApiError::internal("the projection engine", &other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        if let Some(timeout) = body_timed_out(&rejection) {
            return timeout;
        }
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) => "body_unreadable",
            _ => "invalid_body",
        };
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            code
        };
        let mut message = rejection.body_text();
        if code == "unsupported_media_type" {
            message.push_str(" (send `Content-Type: application/json`)");
        }
        ApiError::new(client_status(status), code, message)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if let Some(timeout) = body_timed_out(&rejection) {
            return timeout;
        }
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "body_unreadable"
        };
        ApiError::new(client_status(status), code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_parameter", rejection.body_text())
    }
}

/// 408 if reading the body failed because it did not arrive in time.
fn body_timed_out(rejection: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut cause = Some(rejection);
    while let Some(error) = cause {
        if let Some(timeout) = error.downcast_ref::<BodyTimedOut>() {
            return Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                timeout.to_string(),
            ));
        }
        cause = error.source();
    }
    None
}

/// A rejection's status, kept only if it is a client error: an extractor failing is
/// never the host's fault as far as the client is concerned.
fn client_status(status: StatusCode) -> StatusCode {
    if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// A JSON error response for a panic caught by the server, so that a host bug costs one
/// request, not the connection.
pub(crate) fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; the host's log above has the panic message");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the host failed while handling the request; its log has the details",
    )
    .into_response()
}
