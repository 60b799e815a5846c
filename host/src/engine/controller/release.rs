//! A projector this node stops running: cluster placement (`projectors.<name>.nodes`)
//! gave its leases to other nodes. Every worker stops, its queries stop being served
//! here (the API proxies them to a node that runs it), and its versions are retired
//! with their read models deleted, so a restart does not bring them back. Snapshots
//! are kept: should the projector come back to this node, its first version starts
//! from the newest one instead of from offset 1 (see `deploy`).

use crate::engine::control::Role;
use crate::engine::controller::Controller;
use crate::engine::error::EngineError;
use crate::engine::shared::write;
use crate::engine::version_files;

/// The state recorded for a released version.
const RELEASED: &str = "released";

impl Controller {
    pub(super) fn release(&mut self, name: &str) -> Result<(), EngineError> {
        let Some(slot) = self.slots.remove(name) else {
            return Ok(());
        };
        let workers = [slot.active, slot.shadow, slot.warm, slot.rebuild];
        for worker in workers.iter().flatten() {
            worker.request_stop();
        }
        for worker in workers.into_iter().flatten() {
            worker.stop();
        }
        write(&self.shared.routes).remove(name);
        self.holds.remove(name);
        for record in self.control.versions_of(name)? {
            if matches!(record.role, Role::Active | Role::Shadow | Role::Previous) {
                self.control
                    .set_role(name, &record.version, Role::Retired)?;
                self.control.set_state(
                    name,
                    &record.version,
                    RELEASED,
                    Some("placed on other cluster nodes"),
                )?;
                version_files::remove_version_files(&self.shared.data, name, &record.version);
            }
        }
        let stable = self.shared.data.stable_db(name);
        if let Err(error) = std::fs::remove_file(&stable)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %stable.display(), "cannot remove a released projector's stable path: {error}");
        }
        self.dirty = true;
        tracing::info!(projector = %name, "released: this node no longer runs it");
        Ok(())
    }
}
