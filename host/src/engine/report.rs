//! Status read from disk alone, for `refract status` when no host is running.

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::data_dir::DataDir;
use crate::engine::checkpoint;
use crate::engine::control::{Control, ControlError};
use crate::engine::status::VersionStatus;
use crate::log::{EventLog, LogError, LogOptions};

/// One version's status, as reported by `refract status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// The projector.
    pub projector: String,
    /// The version's short content hash.
    pub version: String,
    /// Its role: active, shadow, previous, retired or failed.
    pub role: String,
    /// Its state: catching-up, live, stalled at N: reason, retired.
    pub state: String,
    /// The last log offset reflected in its read model.
    pub checkpoint: u64,
    /// The log head.
    pub head: u64,
    /// `head - checkpoint`.
    pub lag: u64,
    /// Events per second, when a running host measured it.
    pub events_per_second: Option<f64>,
    /// Dead letters recorded for this version.
    pub dead_letters: u64,
    /// The last error.
    pub last_error: Option<String>,
}

impl StatusRow {
    /// A row from a running worker's live status.
    pub fn live(status: &VersionStatus, role: &str) -> StatusRow {
        StatusRow {
            projector: status.projector.clone(),
            version: status.version.clone(),
            role: role.to_owned(),
            state: status.state.to_string(),
            checkpoint: status.checkpoint,
            head: status.head,
            lag: status.lag(),
            events_per_second: Some(status.events_per_second),
            dead_letters: status.dead_letters,
            last_error: status.last_error.clone(),
        }
    }
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// `control.db` failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Reads every known version's status from `control.db`, the read models and the log.
/// A data directory with no `control.db` has no projectors.
pub fn offline_status(data: &DataDir) -> Result<Vec<StatusRow>, ReportError> {
    if !data.control_db().exists() {
        return Ok(Vec::new());
    }
    let control = Control::open(&data.control_db())?;
    let head = if data.events_db().exists() {
        EventLog::open(&data.events_db(), LogOptions::default())?.head()?
    } else {
        0
    };
    let mut rows = Vec::new();
    for version in control.versions()? {
        let checkpoint = read_checkpoint(&data.version_db(&version.projector, &version.version));
        let dead_letters = control.dead_letter_count(&version.projector, &version.version)?;
        rows.push(StatusRow {
            role: version.role.as_str().to_owned(),
            state: version.state,
            checkpoint,
            head,
            lag: head.saturating_sub(checkpoint),
            events_per_second: None,
            dead_letters,
            last_error: version.last_error,
            projector: version.projector,
            version: version.version,
        });
    }
    Ok(rows)
}

/// A read model's checkpoint, or 0 if it does not exist or cannot be read yet.
fn read_checkpoint(path: &std::path::Path) -> u64 {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()
        .and_then(|conn| checkpoint::load(&conn).ok().flatten())
        .map_or(0, |stored| stored.checkpoint)
}
