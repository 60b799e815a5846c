//! The layout of a data directory, in one place.
//!
//! ```text
//! <data-dir>/
//!   events.db                      the event log
//!   control.db                     projectors, versions, active version, dead letters
//!   projections/<name>.db          symlink to the active version's read model
//!   projections/<name>/<version>.db  one read model per projector version
//!   projections/<name>/<version>.rebuild.db  a deleted read model, being rebuilt
//!   projections/<name>/<version>.wasm  the component that builds it (kept for rollback)
//!   plugins/                       the watched folder of projector components
//!   cache/                         compiled components, keyed by content and engine
//!   refract.lock                   held by the running host
//! ```

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The data directory used when neither `--data-dir`, `REFRACT_DATA` nor the
/// configuration file names one.
pub const DEFAULT_DATA_DIR: &str = "refract-data";

/// A data directory and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data directory at `root`. Nothing is created until it is used.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The event log.
    pub fn events_db(&self) -> PathBuf {
        self.root.join("events.db")
    }

    /// The host's control database.
    pub fn control_db(&self) -> PathBuf {
        self.root.join("control.db")
    }

    /// The folder holding every projector's read models.
    pub fn projections(&self) -> PathBuf {
        self.root.join("projections")
    }

    /// The stable path of a projector's read model: a symlink to the active
    /// version's database, re-pointed atomically at every swap.
    pub fn stable_db(&self, projector: &str) -> PathBuf {
        self.projections().join(format!("{projector}.db"))
    }

    /// The folder of one projector's versions.
    pub fn projector_dir(&self, projector: &str) -> PathBuf {
        self.projections().join(projector)
    }

    /// The read model of one projector version.
    pub fn version_db(&self, projector: &str, version: &str) -> PathBuf {
        self.projector_dir(projector).join(format!("{version}.db"))
    }

    /// Where a deleted read model of one projector version is rebuilt, before it is
    /// moved to [`DataDir::version_db`].
    pub fn rebuild_db(&self, projector: &str, version: &str) -> PathBuf {
        self.projector_dir(projector)
            .join(format!("{version}.rebuild.db"))
    }

    /// The stored component of one projector version.
    pub fn version_wasm(&self, projector: &str, version: &str) -> PathBuf {
        self.projector_dir(projector)
            .join(format!("{version}.wasm"))
    }

    /// The default plugins folder.
    pub fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// The compiled-component cache.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The lock file held by a running host.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("refract.lock")
    }

    /// Takes the host lock: only one `refract run` may project into a data directory,
    /// or two hosts would race on the same read models. The lock is released when the
    /// returned guard is dropped or the process dies, even by `kill -9`.
    pub fn lock_host(&self) -> Result<HostLock, LockError> {
        std::fs::create_dir_all(&self.root).map_err(|source| LockError::Io {
            path: self.root.clone(),
            source,
        })?;
        let path = self.lock_file();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(LockError::Held {
                    path,
                    holder: holder.trim().to_owned(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "pid {}", std::process::id()).map_err(io)?;
        Ok(HostLock { _file: file })
    }
}

/// Proof that this process holds the data directory's host lock.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

/// Why the host lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another refract host is already running on this data directory ({holder}, lock {path}); \
         stop it first, or use another --data-dir"
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into it.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file or data directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_host_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        let first = data.lock_host().unwrap();
        let error = data.lock_host().unwrap_err();
        assert!(matches!(error, LockError::Held { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        drop(first);
        data.lock_host().unwrap();
    }
}
