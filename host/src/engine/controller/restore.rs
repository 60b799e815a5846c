//! `refract restore <name> --from <version>/<checkpoint>`: a read model brought back
//! from one of its snapshots, then caught up with the log.
//!
//! - A snapshot of the active version is copied into the version's rebuild file and
//!   caught up there, exactly as a lost read model is (see `rebuild`): queries are
//!   refused meanwhile, never answered from a partial read model.
//! - A snapshot of another version (a previous one, pruned or not) becomes that
//!   version's read model, started as a shadow that is swapped in once caught up, as
//!   a rollback is.

use crate::engine::controller::Controller;
use crate::engine::error::EngineError;
use crate::engine::shared::write;
use crate::engine::version_files;
use crate::snapshots::store::Store;

impl Controller {
    pub(super) fn restore_snapshot(&mut self, name: &str, id: &str) -> Result<String, EngineError> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| EngineError::UnknownProjector(name.to_owned()))?;
        let store = Store::new(&self.shared.data);
        let entry = store
            .find(name, id)
            .map_err(|error| EngineError::Conflict(error.to_string()))?;
        store
            .verify(name, &entry)
            .map_err(|error| EngineError::Conflict(error.to_string()))?;
        let version = entry.version.clone();
        let active = slot
            .active
            .as_ref()
            .or(slot.rebuild.as_ref())
            .map(|worker| (worker.version.clone(), worker.loaded.clone()));
        if slot
            .shadow
            .as_ref()
            .is_some_and(|shadow| shadow.version == version)
        {
            return Err(EngineError::Conflict(format!(
                "version {version} of `{name}` is replaying as the shadow; `refract abort {name}` \
                 first, then restore"
            )));
        }
        let seed = |dest: &std::path::Path| -> Result<(), EngineError> {
            version_files::remove_read_model_at(dest).map_err(|source| EngineError::Io {
                path: dest.to_owned(),
                source,
            })?;
            store
                .seed(name, &entry, dest)
                .map_err(|error| EngineError::Conflict(error.to_string()))
        };
        if let Some((active_version, loaded)) = active.filter(|(active, _)| *active == version) {
            let slot = self.slots.entry(name.to_owned()).or_default();
            if let Some(rebuild) = slot.rebuild.take() {
                rebuild.stop();
            }
            seed(&self.shared.data.rebuild_db(name, &active_version))?;
            self.start_rebuild(name, loaded)?;
            let why = format!(
                "the read model is being restored from snapshot {id} and caught up with the \
                 log; queries are refused until it has (progress: `refract status`)"
            );
            write(&self.shared.unavailable).insert(name.to_owned(), why.clone());
            self.slots.entry(name.to_owned()).or_default().unavailable = Some(why);
            tracing::info!(projector = %name, snapshot = %id, "restoring the active read model from a snapshot");
            return Ok(version);
        }
        let loaded = match self.load_stored(name, &version) {
            Ok(loaded) => loaded,
            Err(reason) => {
                let bytes = store.component(name, &version).ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "cannot restore version {version} of `{name}`: {reason}, and its \
                         snapshots hold no copy of the component"
                    ))
                })?;
                version_files::keep_component(
                    &self.shared.data.version_wasm(name, &version),
                    &bytes,
                )
                .map_err(|source| EngineError::Io {
                    path: self.shared.data.version_wasm(name, &version),
                    source,
                })?;
                self.wasm_runtime
                    .load(&bytes)
                    .map_err(EngineError::InvalidComponent)?
            }
        };
        if let Some(warm) = self
            .slots
            .get_mut(name)
            .and_then(|slot| slot.warm.take_if(|warm| warm.version == version))
        {
            warm.stop();
        }
        seed(&self.shared.data.version_db(name, &version))?;
        self.replace_shadow(name, loaded, true)?;
        tracing::info!(projector = %name, snapshot = %id, "restoring a version from a snapshot; it is swapped in once caught up");
        Ok(version)
    }
}
