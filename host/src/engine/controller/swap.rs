//! Which version serves: a caught-up shadow is swapped in (automatically, or by
//! `promote`), a rollback brings the previous version back, an abort drops the shadow.
//!
//! # The swap, and why readers never go backwards
//! 1. The active worker is stopped after its batch in flight; its checkpoint `A` is
//!    final, and readers keep reading its (complete, consistent) read model.
//! 2. The shadow keeps running until its checkpoint is at least `A`.
//! 3. The shadow makes its read model durable (it replays with `synchronous=OFF`).
//! 4. `control.db` flips the active version in one transaction: this is the commit
//!    point. A crash before it leaves the old version active and the shadow resuming
//!    from its own checkpoint; a crash after it leaves the new version active.
//! 5. The stable path `projections/<name>.db` is re-pointed (a symlink replaced by
//!    rename), and the host's own queries are routed to the new version.
//!
//! A reader that saw offset `A` from the old version therefore sees at least `A` from
//! the new one.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::PromoteMode;
use crate::engine::control::Role;
use crate::engine::controller::{Controller, Slot};
use crate::engine::diff;
use crate::engine::error::EngineError;
use crate::engine::hooks::SwapRecord;
use crate::engine::shared::{lock, write};
use crate::engine::status::State;
use crate::engine::version_files;
use crate::engine::views::ReadModel;
use crate::engine::worker::{Mode, WorkerHandle};
use crate::runtime::LoadedProjector;

/// How long a swap waits for the shadow to reach the stopped active version's
/// checkpoint before giving up and restarting the active version.
const SWAP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a swap waits for the shadow to make its read model durable.
const SWAP_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`Controller::verdict`] decided about a shadow.
enum Verdict {
    /// Still replaying, or waiting for `refract promote`.
    Wait,
    /// It failed; drop it.
    Failed { version: String, message: String },
    /// The diff gate refused it.
    Gated(String),
    /// Swap it in.
    Swap,
}

impl Controller {
    /// Swaps in every shadow that has caught up, and drops failed ones.
    pub(super) fn check_shadows(&mut self) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            match self.verdict(&name) {
                Verdict::Wait => {}
                Verdict::Failed { version, message } => {
                    let slot = self.slots.entry(name.clone()).or_default();
                    if let Some(shadow) = slot.shadow.take() {
                        shadow.stop();
                    }
                    slot.shadow_forced = false;
                    if let Err(error) = self.control.set_role(&name, &version, Role::Failed) {
                        tracing::error!(projector = %name, "cannot record the failed shadow: {error}");
                    }
                    tracing::error!(projector = %name, %version, "shadow failed; the active version is untouched: {message}");
                    self.dirty = true;
                }
                Verdict::Gated(message) => {
                    let slot = self.slots.entry(name.clone()).or_default();
                    if let Some(shadow) = &slot.shadow {
                        shadow
                            .status
                            .update(|status| status.last_error = Some(message.clone()));
                    }
                    tracing::warn!(projector = %name, "{message}");
                    slot.gated = Some(message);
                }
                Verdict::Swap => {
                    if let Err(error) = self.swap(&name) {
                        tracing::error!(projector = %name, "swap failed: {error}");
                    }
                }
            }
        }
    }

    /// What to do about a projector's shadow now.
    fn verdict(&self, name: &str) -> Verdict {
        let Some(slot) = self.slots.get(name) else {
            return Verdict::Wait;
        };
        let Some(shadow) = &slot.shadow else {
            return Verdict::Wait;
        };
        if slot.rebuild.is_some() {
            // The active read model is being rebuilt; compare against it once it is whole.
            return Verdict::Wait;
        }
        let status = shadow.status.snapshot();
        if let State::Failed { message } = status.state {
            return Verdict::Failed {
                version: status.version,
                message,
            };
        }
        // Caught up: live at the head, and at or past what readers of the active
        // version see.
        let caught_up = status.state == State::Live
            && slot
                .active
                .as_ref()
                .is_none_or(|active| status.checkpoint >= active.status.snapshot().checkpoint);
        let section = self.config.projector(name);
        let automatic =
            slot.active.is_none() || slot.shadow_forced || section.promote == PromoteMode::Auto;
        if !caught_up || !automatic || slot.gated.is_some() {
            return Verdict::Wait;
        }
        if let (Some(gate), false, Some(active)) =
            (&section.diff_gate, slot.shadow_forced, &slot.active)
        {
            let active_db = self.shared.data.version_db(name, &active.version);
            let shadow_db = self.shared.data.version_db(name, &status.version);
            if let Err(reason) = diff::run_gate(gate, &shadow_db, Some(&active_db)) {
                return Verdict::Gated(format!(
                    "diff gate {} refused the swap to version {}: {reason}; fix the projector, or `refract promote {name}` to swap anyway",
                    gate.display(),
                    status.version
                ));
            }
        }
        Verdict::Swap
    }

    /// Swaps the shadow in: the sequence in the module documentation.
    fn swap(&mut self, name: &str) -> Result<String, EngineError> {
        if let Some(slot) = self.slots.get(name)
            && let Some(active) = &slot.active
            && slot.shadow.is_some()
            && slot.rebuild.is_none()
        {
            // A way back: the version being replaced, as it is now. Taken while it
            // still serves, before the swap (and its timing) starts.
            crate::snapshots::schedule::before_swap(
                &self.shared.data,
                &self.config,
                name,
                &active.version,
                slot.shadow_forced,
            );
        }
        let started = Instant::now();
        let slot = self.slots.entry(name.to_owned()).or_default();
        if slot.rebuild.is_some() {
            return Err(EngineError::Conflict(format!(
                "the read model of `{name}` is being rebuilt from the log; retry once `refract \
                 status` shows it live"
            )));
        }
        let shadow = slot
            .shadow
            .take()
            .ok_or_else(|| EngineError::Conflict(format!("projector `{name}` has no shadow")))?;
        let old = slot.active.take();
        let old_checkpoint = old
            .as_ref()
            .map_or(0, |active| active.status.snapshot().checkpoint);
        // 1. Stop the active worker; its checkpoint is then final.
        let old_loaded = old.as_ref().map(|active| active.loaded.clone());
        let final_checkpoint = match old {
            Some(active) => {
                let status = active.status.clone();
                active.stop();
                status.snapshot().checkpoint.max(old_checkpoint)
            }
            None => 0,
        };
        // 2. Let the shadow reach it.
        let deadline = Instant::now() + SWAP_CATCH_UP_TIMEOUT;
        while shadow.status.snapshot().checkpoint < final_checkpoint {
            if Instant::now() > deadline || shadow.is_finished() {
                return self.abandon_swap(
                    name,
                    shadow,
                    old_loaded,
                    "the shadow did not catch up with the active version",
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // 3. Durable before it is trusted.
        if let Err(reason) = shadow.sync(SWAP_SYNC_TIMEOUT) {
            return self.abandon_swap(name, shadow, old_loaded, &reason);
        }
        let version = shadow.version.clone();
        // 4. The commit point.
        if let Err(error) = self.control.activate(name, &version) {
            return self.abandon_swap(name, shadow, old_loaded, &error.to_string());
        }
        // 5. The stable path and the host's own queries.
        if let Err(error) = version_files::repoint(&self.shared.data, name, &version) {
            tracing::error!(projector = %name, "cannot re-point {}: {error}", self.shared.data.stable_db(name).display());
        }
        write(&self.shared.routes).insert(
            name.to_owned(),
            ReadModel {
                projector: name.to_owned(),
                version: version.clone(),
                path: self.shared.data.version_db(name, &version),
            },
        );
        shadow.set_mode(Mode::Active);
        self.holds.remove(name);
        self.shared.hooks.swapped(SwapRecord {
            projector: name.to_owned(),
            version: version.clone(),
            offset: final_checkpoint,
        });
        let keep_previous = self.config.projector(name).keep_previous;
        let warm = match (&old_loaded, keep_previous) {
            (Some(loaded), true) => Some(self.spawn(name, loaded.clone(), Mode::Warm)?),
            _ => None,
        };
        let slot = self.slots.entry(name.to_owned()).or_default();
        if let Some(stale) = slot.warm.take() {
            stale.stop();
        }
        slot.active = Some(shadow);
        slot.warm = warm;
        slot.shadow_forced = false;
        slot.gated = None;
        if old_loaded.is_some() {
            // A first version's activation replaces nothing: not a swap.
            self.shared.swaps_total.fetch_add(1, Ordering::Relaxed);
            *lock(&self.shared.last_swap) = Some(started.elapsed());
        }
        self.dirty = true;
        self.prune(name);
        tracing::info!(projector = %name, %version, took_ms = started.elapsed().as_millis() as u64, "swapped in");
        Ok(version)
    }

    /// A swap that cannot finish: the old version goes back to serving, the shadow keeps
    /// replaying, and the caller hears why.
    fn abandon_swap(
        &mut self,
        name: &str,
        shadow: WorkerHandle,
        old: Option<LoadedProjector>,
        reason: &str,
    ) -> Result<String, EngineError> {
        let restarted = old
            .map(|loaded| self.spawn(name, loaded, Mode::Active))
            .transpose()?;
        let slot = self.slots.entry(name.to_owned()).or_default();
        slot.active = restarted;
        slot.shadow = Some(shadow);
        Err(EngineError::Conflict(format!(
            "the swap of `{name}` did not happen, and the active version keeps serving: {reason}"
        )))
    }

    pub(super) fn promote(&mut self, name: &str) -> Result<String, EngineError> {
        let (slot, shadow) = self.slot_with_shadow(name, "promote")?;
        let status = shadow.status.snapshot();
        let active_checkpoint = slot
            .active
            .as_ref()
            .map_or(0, |active| active.status.snapshot().checkpoint);
        if status.checkpoint < active_checkpoint {
            return Err(EngineError::Conflict(format!(
                "the shadow of `{name}` (version {}) is at offset {}, behind the active version at {active_checkpoint}; \
                 wait until it has caught up (`refract status`), then promote",
                status.version, status.checkpoint
            )));
        }
        self.swap(name)
    }

    pub(super) fn rollback(&mut self, name: &str) -> Result<String, EngineError> {
        if !self.slots.contains_key(name) {
            return Err(EngineError::UnknownProjector(name.to_owned()));
        }
        let Some(previous) = self.previous_version(name)? else {
            return Err(EngineError::Conflict(format!(
                "projector `{name}` has no previous version to roll back to"
            )));
        };
        let loaded = self
            .load_stored(name, &previous)
            .or_else(|reason| self.load_from_snapshots(name, &previous).ok_or(reason))
            .map_err(|reason| {
                EngineError::Conflict(format!("cannot roll back to version {previous}: {reason}"))
            })?;
        let warm = self
            .slots
            .get(name)
            .and_then(|slot| slot.warm.as_ref())
            .is_some_and(|warm| warm.version == previous);
        if warm {
            // Instant: the warm worker has been tailing the log all along. It becomes
            // the shadow (same worker, same read model) and is swapped in right away.
            self.drop_shadow(name, "replaced by a rollback")?;
            let slot = self.slots.entry(name.to_owned()).or_default();
            slot.shadow = slot.warm.take();
            slot.shadow_forced = true;
            self.control
                .set_role_as(name, &previous, Role::Shadow, true)?;
            return self.swap(name);
        }
        let db = self.shared.data.version_db(name, &previous);
        if !db.exists() {
            // Pruned (`keep_versions`): start from its last snapshot, not from offset 1.
            crate::snapshots::recovery::seed_newest(&self.shared.data, name, &previous, &db);
        }
        self.replace_shadow(name, loaded, true)?;
        tracing::info!(projector = %name, version = %previous, "rolling back: the previous version is catching up");
        Ok(previous)
    }

    pub(super) fn abort(&mut self, name: &str) -> Result<String, EngineError> {
        let version = self.slot_with_shadow(name, "abort")?.1.version.clone();
        // An aborted rollback leaves the previous version as it was.
        self.drop_shadow(name, "aborted by an operator")?;
        tracing::info!(projector = %name, %version, "shadow aborted");
        Ok(version)
    }

    /// Holds the active version at `ceiling` (`None` lifts it), and answers with its
    /// checkpoint once the hold is in force: the worker takes the hold between two
    /// batches, then the sync that follows it reports where it stopped.
    pub(super) fn hold(&mut self, name: &str, ceiling: Option<u64>) -> Result<u64, EngineError> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| EngineError::UnknownProjector(name.to_owned()))?;
        let active = slot.active.as_ref().ok_or_else(|| {
            EngineError::Conflict(format!("projector `{name}` has no active version to hold"))
        })?;
        match ceiling {
            Some(ceiling) => self.holds.insert(name.to_owned(), (ceiling, String::new())),
            None => self.holds.remove(name),
        };
        active.hold(ceiling);
        active
            .sync(SWAP_SYNC_TIMEOUT)
            .map_err(|reason| EngineError::Conflict(format!("cannot hold `{name}`: {reason}")))
    }

    /// The projector's slot and its shadow, or why `action` cannot apply.
    fn slot_with_shadow(
        &self,
        name: &str,
        action: &str,
    ) -> Result<(&Slot, &WorkerHandle), EngineError> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| EngineError::UnknownProjector(name.to_owned()))?;
        let shadow = slot.shadow.as_ref().ok_or_else(|| {
            EngineError::Conflict(format!(
                "projector `{name}` has no shadow to {action}; deploy a new version first"
            ))
        })?;
        Ok((slot, shadow))
    }

    /// A version's component from its snapshots (its own copy was pruned), put back
    /// beside its read model.
    fn load_from_snapshots(&self, name: &str, version: &str) -> Option<LoadedProjector> {
        let bytes = crate::snapshots::recovery::component(&self.shared.data, name, version)?;
        let path = self.shared.data.version_wasm(name, version);
        if let Err(error) = version_files::keep_component(&path, &bytes) {
            tracing::warn!(projector = %name, %version, "cannot restore the component from its snapshots: {error}");
        }
        self.wasm_runtime.load(&bytes).ok()
    }

    /// The version a rollback returns to: the most recently replaced one.
    fn previous_version(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self.control.previous_versions(name)?.into_iter().next())
    }
}
