//! The log and the read models must agree: no read model may have projected events the
//! log does not hold.
//!
//! A read model's checkpoint past the log's head means the log was deleted, emptied,
//! truncated or replaced under the data directory. Carrying on would append new events
//! at offsets the read models believe they have already applied, and those events would
//! never be projected. So a single-node host refuses to start ([`LogCheck::Strict`], the
//! default), and a worker that finds its checkpoint past the head at run time stops in
//! [`State::AheadOfLog`](crate::engine::State::AheadOfLog) and says so loudly.
//!
//! A cluster node whose local log is a mirror still catching up legitimately trails its
//! read models: it starts with [`LogCheck::MayTrail`], which skips both checks.

use std::path::{Path, PathBuf};

use crate::data_dir::DataDir;
use crate::engine::checkpoint;
use crate::engine::version_files::open_read_only;

/// Whether the log may trail the read models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogCheck {
    /// A read model ahead of the log is an error: at start, and at run time.
    #[default]
    Strict,
    /// The log may trail the read models and catch up (a cluster node's mirror).
    MayTrail,
}

/// A read model that has projected events the log does not hold.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the event log {} {}, but the read model {} (projector `{projector}`) has projected \
     events up to offset {checkpoint}: the log was deleted, emptied or replaced. Restore \
     events.db (with its -wal file, if any) from a backup, or start afresh with a new data \
     directory (--data-dir); refusing to start so that nothing is appended to the wrong log",
    log.display(),
    what_the_log_holds(*head),
    read_model.display()
)]
pub struct LogBehindReadModels {
    /// The event log.
    pub log: PathBuf,
    /// Its head; `None` when the file does not exist.
    pub head: Option<u64>,
    /// The read model furthest ahead.
    pub read_model: PathBuf,
    /// Its projector.
    pub projector: String,
    /// Its checkpoint.
    pub checkpoint: u64,
}

fn what_the_log_holds(head: Option<u64>) -> String {
    match head {
        None => "is missing".to_owned(),
        Some(0) => "is empty".to_owned(),
        Some(head) => format!("ends at offset {head}"),
    }
}

/// Before the log is opened (which would create it): refuses a missing `events.db` when
/// a read model has projected events.
///
/// # Errors
/// [`LogBehindReadModels`], naming the read model furthest ahead.
pub fn check_log_exists(data: &DataDir) -> Result<(), LogBehindReadModels> {
    if data.events_db().exists() {
        return Ok(());
    }
    check(data, None)
}

/// After the log is opened: refuses a log whose head is behind a read model.
///
/// # Errors
/// [`LogBehindReadModels`], naming the read model furthest ahead.
pub fn check_log_covers_read_models(data: &DataDir, head: u64) -> Result<(), LogBehindReadModels> {
    check(data, Some(head))
}

fn check(data: &DataDir, head: Option<u64>) -> Result<(), LogBehindReadModels> {
    let Some((read_model, projector, checkpoint)) = furthest_read_model(&data.projections()) else {
        return Ok(());
    };
    if checkpoint <= head.unwrap_or(0) {
        return Ok(());
    }
    Err(LogBehindReadModels {
        log: data.events_db(),
        head,
        read_model,
        projector,
        checkpoint,
    })
}

/// The read model with the highest checkpoint under `projections/`: its path, its
/// projector and its checkpoint. Files that cannot be read are passed over (they are
/// reported where they are used).
fn furthest_read_model(projections: &Path) -> Option<(PathBuf, String, u64)> {
    let mut furthest: Option<(PathBuf, String, u64)> = None;
    for projector in std::fs::read_dir(projections).ok()?.flatten() {
        let Ok(files) = std::fs::read_dir(projector.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|ext| ext != "db") {
                continue;
            }
            let Some(stored) = open_read_only(&path)
                .ok()
                .and_then(|conn| checkpoint::load(&conn).ok().flatten())
            else {
                continue;
            };
            if furthest
                .as_ref()
                .is_none_or(|(_, _, checkpoint)| stored.checkpoint > *checkpoint)
            {
                furthest = Some((path, stored.projector, stored.checkpoint));
            }
        }
    }
    furthest
}
