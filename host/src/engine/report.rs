//! Status read from disk alone, for `refract status` when no host is running.

use serde::Serialize;

use crate::data_dir::DataDir;
use crate::engine::checkpoint;
use crate::engine::control::{Control, ControlError, Role};
use crate::engine::status::{State, VersionStatus};
use crate::engine::version_files::open_read_only;
use crate::log::{EventLog, LogError, LogOptions};
use crate::storage_fault::StorageFault;

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

/// Reads every known version's status from `control.db`, the read models and the log,
/// writing nothing (it works on a full disk or a read-only mount). A data directory with
/// no `control.db` has no projectors.
///
/// What `control.db` last recorded is checked against the files: a read model that is
/// missing, cannot be read, or is ahead of the log is reported as such, with the fix,
/// whatever state was recorded.
pub fn offline_status(data: &DataDir) -> Result<Vec<StatusRow>, ReportError> {
    if !data.control_db().exists() {
        return Ok(Vec::new());
    }
    let control = Control::open_read_only(&data.control_db())?;
    let head = if data.events_db().exists() {
        EventLog::open(&data.events_db(), LogOptions::default())?.head()?
    } else {
        0
    };
    let mut rows = Vec::new();
    for version in control.versions()? {
        let db = data.version_db(&version.projector, &version.version);
        let dead_letters = control.dead_letter_count(&version.projector, &version.version)?;
        let kept = matches!(version.role, Role::Active | Role::Shadow | Role::Previous);
        let (checkpoint, state, last_error) = match read_checkpoint(&db) {
            Ok(Some(checkpoint)) if checkpoint > head => {
                let state = State::AheadOfLog { checkpoint, head }.to_string();
                (checkpoint, state.clone(), Some(state))
            }
            Ok(Some(checkpoint)) => (checkpoint, version.state, version.last_error),
            // A replay that has not created its read model yet.
            Ok(None) if version.state == "catching-up" => (0, version.state, version.last_error),
            Ok(None) if kept => {
                let problem = format!(
                    "the read model {} is missing; `refract run` rebuilds it from the log",
                    db.display()
                );
                (0, "missing".to_owned(), Some(problem))
            }
            Ok(None) => (0, version.state, version.last_error),
            Err(error) => {
                let mut problem = format!("cannot read the read model {}: {error}", db.display());
                if let Some(fault) = StorageFault::of_sqlite(&error) {
                    problem.push_str("; ");
                    problem.push_str(&fault.advice(
                        &db,
                        &format!("the read model of projector `{}`", version.projector),
                    ));
                    if fault == StorageFault::Damaged {
                        problem.push_str(", or delete it: `refract run` rebuilds it from the log");
                    }
                }
                (0, "unreadable".to_owned(), Some(problem))
            }
        };
        rows.push(StatusRow {
            role: version.role.as_str().to_owned(),
            state,
            checkpoint,
            head,
            lag: head.saturating_sub(checkpoint),
            events_per_second: None,
            dead_letters,
            last_error,
            projector: version.projector,
            version: version.version,
        });
    }
    Ok(rows)
}

/// A read model's checkpoint: `None` if the file does not exist or has no checkpoint
/// yet, an error if it cannot be read.
fn read_checkpoint(path: &std::path::Path) -> rusqlite::Result<Option<u64>> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = open_read_only(path)?;
    Ok(checkpoint::load(&conn)?.map(|stored| stored.checkpoint))
}
