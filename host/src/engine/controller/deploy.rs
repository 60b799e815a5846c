//! Versions coming and going: a deploy starts a shadow (replacing any other), a dropped
//! shadow is retired, and after a swap the versions beyond `keep_versions` are pruned.

use crate::engine::control::Role;
use crate::engine::controller::Controller;
use crate::engine::controller::create_dir;
use crate::engine::error::EngineError;
use crate::engine::hooks::LocalDeploy;
use crate::engine::version_files;
use crate::engine::views::{DeployOutcome, Deployment};
use crate::engine::worker::Mode;
use crate::runtime::LoadedProjector;

impl Controller {
    pub(super) fn deploy(
        &mut self,
        bytes: &[u8],
        expected_name: Option<&str>,
        announce: bool,
    ) -> Result<Deployment, EngineError> {
        let loaded = self
            .wasm_runtime
            .load(bytes)
            .map_err(EngineError::InvalidComponent)?;
        let name = loaded.info().name.clone();
        if let Some(expected) = expected_name
            && expected != name
        {
            return Err(EngineError::NameMismatch {
                expected: expected.to_owned(),
                declared: name,
            });
        }
        let version = loaded.version().to_owned();
        let deployment = |outcome| Deployment {
            projector: name.clone(),
            version: version.clone(),
            outcome,
        };
        let slot = self.slots.entry(name.clone()).or_default();
        // The active version, whether serving or rebuilding its read model.
        if slot
            .active
            .as_ref()
            .or(slot.rebuild.as_ref())
            .is_some_and(|worker| worker.version == version)
        {
            return Ok(deployment(DeployOutcome::AlreadyActive));
        }
        if slot
            .shadow
            .as_ref()
            .is_some_and(|worker| worker.version == version)
        {
            return Ok(deployment(DeployOutcome::AlreadyDeploying));
        }
        create_dir(
            &self.shared.data.projector_dir(&name),
            "a projector's folder of versions",
            "point --data-dir at a Refract data directory",
        )?;
        version_files::keep_component(&self.shared.data.version_wasm(&name, &version), bytes)
            .map_err(|source| EngineError::Io {
                path: self.shared.data.version_wasm(&name, &version),
                source,
            })?;
        let sha256 = loaded.sha256().to_owned();
        self.replace_shadow(&name, loaded, false)?;
        tracing::info!(projector = %name, %version, "shadow replay started");
        if announce {
            self.shared.hooks.deployed(LocalDeploy {
                projector: name.clone(),
                version: version.clone(),
                sha256,
                wasm: bytes.to_vec(),
                at_startup: self.starting,
            });
        }
        Ok(deployment(DeployOutcome::Started))
    }

    /// Makes `loaded` the projector's shadow, dropping any other shadow. A version that
    /// is running warm moves over to shadow duty (one worker per read model, always).
    pub(super) fn replace_shadow(
        &mut self,
        name: &str,
        loaded: LoadedProjector,
        forced: bool,
    ) -> Result<(), EngineError> {
        let version = loaded.version().to_owned();
        self.drop_shadow(name, "replaced by a newer deploy")?;
        let slot = self.slots.entry(name.to_owned()).or_default();
        if let Some(warm) = slot.warm.take_if(|warm| warm.version == version) {
            warm.stop();
        }
        self.control
            .register_version(name, &version, loaded.sha256(), Role::Shadow)?;
        self.control
            .set_role_as(name, &version, Role::Shadow, forced)?;
        let has_active = self
            .slots
            .get(name)
            .is_some_and(|slot| slot.active.is_some());
        let mode = if has_active {
            Mode::Shadow
        } else {
            Mode::Initial
        };
        let db = self.shared.data.version_db(name, &version);
        if mode == Mode::Initial && !db.exists() {
            // A projector coming (back) to this node, e.g. moved here by cluster
            // placement: its newest snapshot of this version, if any, saves replaying
            // the log from offset 1.
            crate::snapshots::recovery::seed_newest(&self.shared.data, name, &version, &db);
        }
        let worker = self.spawn(name, loaded, mode)?;
        let slot = self.slots.entry(name.to_owned()).or_default();
        slot.shadow = Some(worker);
        slot.shadow_forced = forced;
        slot.gated = None;
        Ok(())
    }

    /// Stops the projector's shadow, if it has one, and records why: a rollback target
    /// goes back to being the previous version; any other is retired, files deleted.
    pub(super) fn drop_shadow(&mut self, name: &str, why: &str) -> Result<(), EngineError> {
        let slot = self.slots.entry(name.to_owned()).or_default();
        let rollback_target = std::mem::take(&mut slot.shadow_forced);
        slot.gated = None;
        let Some(shadow) = slot.shadow.take() else {
            return Ok(());
        };
        let version = shadow.version.clone();
        shadow.stop();
        self.retire_shadow(name, &version, rollback_target, why)
    }

    /// Marks a dropped shadow: a rollback target goes back to being the previous
    /// version; any other is retired and its files deleted.
    fn retire_shadow(
        &mut self,
        name: &str,
        version: &str,
        rollback_target: bool,
        why: &str,
    ) -> Result<(), EngineError> {
        if rollback_target {
            self.control.set_role(name, version, Role::Previous)?;
        } else {
            self.control.set_role(name, version, Role::Retired)?;
            self.control
                .set_state(name, version, "retired", Some(why))?;
            version_files::remove_version_files(&self.shared.data, name, version);
            crate::snapshots::recovery::forget_version(&self.shared.data, name, version);
        }
        Ok(())
    }

    /// The versions whose read models stay on disk: the active one and the shadow,
    /// plus the most recently replaced previous versions, so that `keep_versions`
    /// read models are kept besides the shadow.
    pub(super) fn kept_versions(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let keep = self.config.projector(name).keep_versions;
        let mut kept: Vec<String> = self
            .control
            .versions_of(name)?
            .into_iter()
            .filter(|record| matches!(record.role, Role::Active | Role::Shadow))
            .map(|record| record.version)
            .collect();
        let previous = self.control.previous_versions(name)?;
        kept.extend(previous.into_iter().take(keep.saturating_sub(1)));
        Ok(kept)
    }

    /// Retires previous versions beyond `keep_versions` after a swap, and deletes
    /// their read models.
    pub(super) fn prune(&mut self, name: &str) {
        let kept = match self.kept_versions(name) {
            Ok(kept) => kept,
            Err(error) => {
                tracing::warn!(projector = %name, "cannot list versions to prune: {error}");
                return;
            }
        };
        let Ok(previous) = self.control.previous_versions(name) else {
            return;
        };
        for (index, version) in previous
            .into_iter()
            .enumerate()
            .filter(|(_, version)| !kept.contains(version))
        {
            if let Some(warm) = self
                .slots
                .get_mut(name)
                .and_then(|slot| slot.warm.take_if(|warm| warm.version == version))
            {
                warm.stop();
            }
            // The version a rollback returns to stays one while a snapshot can bring
            // its read model back; only its read model is deleted.
            if index == 0
                && crate::snapshots::recovery::has_snapshot(&self.shared.data, name, &version)
            {
                version_files::remove_read_model(&self.shared.data, name, &version);
                continue;
            }
            if let Err(error) = self.control.set_role(name, &version, Role::Retired) {
                tracing::warn!(projector = %name, %version, "cannot retire an old version: {error}");
                continue;
            }
            version_files::remove_version_files(&self.shared.data, name, &version);
            crate::snapshots::recovery::forget_version(&self.shared.data, name, &version);
        }
    }
}
