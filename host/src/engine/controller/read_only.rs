//! An engine that cannot write `control.db` (a full disk, a read-only mount, a lost
//! permission) when it starts: rather than refusing to start, it serves what it can.
//!
//! The active read models keep answering queries, health says why the host is
//! degraded, appends and commands are refused, and no projector runs (its checkpoint
//! and state could not be recorded). The controller thread retries every
//! [`READ_ONLY_RETRY`]; once `control.db` can be written it starts the projectors as
//! usual and the engine leaves read-only mode by itself.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::engine::control::{Control, ControlError, Role};
use crate::engine::controller::{Command, Controller, ControllerParts};
use crate::engine::error::EngineError;
use crate::engine::shared::{Shared, VersionEntry, read, write};
use crate::engine::views::{ReadModel, ReadOnly};
use crate::storage_fault::StorageFault;

/// How often a read-only engine tries to write `control.db` again.
pub const READ_ONLY_RETRY: Duration = Duration::from_secs(2);

/// Whether a failure to open `control.db` leaves the host able to serve reads: the
/// file is there but cannot be written.
pub(in crate::engine) fn fault_allows_read_only(error: &ControlError) -> Option<StorageFault> {
    error
        .storage_fault()
        .filter(|fault| matches!(fault, StorageFault::DiskFull | StorageFault::NotWritable))
}

/// Enters read-only mode after `error`: publishes the read models and versions that
/// `control.db` names (read without writing), and the reason.
///
/// # Errors
/// If `control.db` cannot even be read: then there is nothing to serve.
pub(in crate::engine) fn enter(
    shared: &Shared,
    error: &ControlError,
    fault: StorageFault,
) -> Result<(), EngineError> {
    let path = shared.data.control_db();
    let control = Control::open_read_only(&path)?;
    let mut views: BTreeMap<String, Vec<VersionEntry>> = BTreeMap::new();
    let mut routes = BTreeMap::new();
    for record in control.versions()?.into_iter().rev() {
        if record.role == Role::Active {
            routes.insert(
                record.projector.clone(),
                ReadModel {
                    projector: record.projector.clone(),
                    version: record.version.clone(),
                    path: shared.data.version_db(&record.projector, &record.version),
                },
            );
        }
        views
            .entry(record.projector.clone())
            .or_default()
            .push(VersionEntry {
                version: record.version,
                role: record.role,
                status: None,
                contract: None,
            });
    }
    *write(&shared.routes) = routes;
    *write(&shared.views) = views;
    let reason = format!(
        "{error}. Until it can be written the host is read-only: queries and health are \
         served, appends and deploys are refused, projectors are paused; it retries every \
         {}s and resumes by itself",
        READ_ONLY_RETRY.as_secs()
    );
    tracing::error!("starting read-only: {reason}");
    *write(&shared.read_only) = Some(ReadOnly { reason, fault });
    Ok(())
}

/// The controller thread of an engine that started read-only: refuses commands and
/// retries `control.db` until it can be written, then runs as any controller.
pub(in crate::engine) fn run_when_writable(
    parts: &ControllerParts,
    inbox: &mpsc::Receiver<Command>,
) {
    let path = parts.shared.data.control_db();
    loop {
        match inbox.recv_timeout(READ_ONLY_RETRY) {
            Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(command) => {
                let state = read(&parts.shared.read_only).clone();
                command.refuse(|| match &state {
                    Some(read_only) => EngineError::ReadOnly(read_only.clone()),
                    None => EngineError::Stopped,
                });
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let control = match Control::open(&path) {
            Ok(control) => control,
            Err(error) => {
                tracing::debug!("control.db still cannot be written: {error}");
                continue;
            }
        };
        match Controller::start(parts.clone(), control) {
            Ok(controller) => {
                *write(&parts.shared.read_only) = None;
                tracing::info!("control.db can be written again: the host leaves read-only mode");
                controller.run(inbox);
                return;
            }
            Err(error) => tracing::warn!("cannot leave read-only mode yet: {error}"),
        }
    }
}
