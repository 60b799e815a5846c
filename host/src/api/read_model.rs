//! `GET /v1/projectors/{name}/read-model`: a consistent copy of the active read model,
//! as an SQLite file (`application/vnd.sqlite3`), with the checkpoint and version it
//! holds in the `Refract-Checkpoint` and `Refract-Version` headers. `refract diff
//! <name> --node a --node b` downloads the copies of two cluster nodes and compares
//! them with the same code as a diff between two versions.
//!
//! The copy is one `VACUUM INTO` from a read transaction, into a temporary folder in
//! the data directory that is deleted when the download ends; the file is streamed,
//! never held in memory. Each copy costs the read model's size on disk for a moment,
//! so at most [`MAX_CONCURRENT_COPIES`] are made at once; more answer 503.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::extract::ProjectorName;
use super::state::{ApiState, blocking};
use axum::extract::State;

/// Read-model copies made at once, on one host: each takes the read model's size on
/// disk while it downloads.
pub const MAX_CONCURRENT_COPIES: usize = 2;

/// The bytes read from the copy per chunk of the answer.
const CHUNK_BYTES: usize = 256 * 1024;

/// The header with the checkpoint the copy holds.
pub const CHECKPOINT_HEADER: &str = "refract-checkpoint";

/// The header with the version the copy is of.
pub const VERSION_HEADER: &str = "refract-version";

fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| Arc::new(Semaphore::new(MAX_CONCURRENT_COPIES)))
}

/// `GET /v1/projectors/{name}/read-model`.
pub(crate) async fn download(
    State(state): State<ApiState>,
    ProjectorName(name): ProjectorName,
) -> Result<Response, ApiError> {
    let permit = Arc::clone(permits()).try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "{MAX_CONCURRENT_COPIES} read-model copies are being downloaded from this host; retry when one is done"
            ),
        )
    })?;
    let engine = Arc::clone(state.engine());
    // SQLite and the file system block.
    let (dir, file, checkpoint, version) = blocking(move || {
        let model = engine.read_model(&name).ok_or_else(|| {
            ApiError::not_found(
                "no_read_model",
                format!(
                    "this host serves no read model of `{name}` (unknown, still replaying its first version, or placed on other cluster nodes: `refract status --cluster` says where)"
                ),
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix(".read-model-copy-")
            .tempdir_in(engine.data_dir().root())
            .map_err(|error| ApiError::internal("a read-model copy's folder", &error))?;
        let copy: PathBuf = dir.path().join(format!("{name}.db"));
        let (_, version, checkpoint) = crate::snapshots::store::vacuum_copy(&model.path, &copy)
            .map_err(|error| ApiError::internal("copying the read model", &error))?;
        Ok((dir, copy, checkpoint, version))
    })
    .await?;
    let reader = tokio::fs::File::open(&file)
        .await
        .map_err(|error| ApiError::internal("opening the read-model copy", &error))?;
    // The folder (and the permit) live as long as the stream: dropped when the
    // download ends or the client goes away.
    let chunks = futures_util::stream::unfold(
        (reader, dir, permit),
        |(mut reader, dir, permit)| async move {
            let mut chunk = vec![0_u8; CHUNK_BYTES];
            match reader.read(&mut chunk).await {
                Ok(0) => None,
                Ok(read) => {
                    chunk.truncate(read);
                    Some((Ok(Bytes::from(chunk)), (reader, dir, permit)))
                }
                Err(error) => Some((Err(error), (reader, dir, permit))),
            }
        },
    );
    let mut response = (StatusCode::OK, Body::from_stream(chunks)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.sqlite3"),
    );
    headers.insert(CHECKPOINT_HEADER, HeaderValue::from(checkpoint));
    if let Ok(value) = HeaderValue::from_str(&version) {
        headers.insert(VERSION_HEADER, value);
    }
    Ok(response)
}
