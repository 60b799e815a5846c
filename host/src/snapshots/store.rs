//! The snapshot files and each projector's manifest.
//!
//! ```text
//! <data-dir>/snapshots/<name>/manifest.json                  the entries, the commit point
//! <data-dir>/snapshots/<name>/<version>/<checkpoint>.db      one snapshot
//! <data-dir>/snapshots/<name>/<version>/component.wasm       the component that built it
//! ```
//!
//! # Crash safety
//! A snapshot is written to a temporary file, synced, checksummed, renamed into place
//! and the folder synced; only then is its entry added to the manifest, itself
//! rewritten whole (temporary file, sync, rename). A snapshot exists when, and only
//! when, the manifest lists it: a crash at any moment leaves either no entry, or an
//! entry whose file is whole and matches its checksum. Files the manifest does not list
//! are strays and are deleted ([`Store::clean_strays`]); every use of a snapshot checks
//! its checksum first, so a file damaged later is never used either.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data_dir::DataDir;

/// The manifest's file name, in each projector's folder.
pub const MANIFEST: &str = "manifest.json";

/// The copy of the component that built a version's snapshots, so a version whose own
/// files were pruned can still be restored.
pub const COMPONENT: &str = "component.wasm";

/// How long taking a snapshot waits for a lock on the read model (the worker's commit
/// holds one only for an instant in WAL mode).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a snapshot could not be taken, listed or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file or folder could not be read or written.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// SQLite failed while copying or reading a read model.
    #[error("snapshot of {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database is not a read model of this projector (or not one at all).
    #[error(
        "{path} is not a read model of projector `{projector}`: {found}; snapshot a read \
         model Refract built (projections/<name>/<version>.db)"
    )]
    Foreign {
        /// The database.
        path: PathBuf,
        /// The projector expected.
        projector: String,
        /// What the database says about itself.
        found: String,
    },
    /// No snapshot by that id.
    #[error(
        "projector `{projector}` has no snapshot {id}; `refract snapshot {projector} --list` \
         lists them as <version>/<checkpoint>"
    )]
    NotFound {
        /// The projector.
        projector: String,
        /// The id asked for.
        id: String,
    },
    /// The file no longer matches the checksum recorded when it was taken.
    #[error(
        "snapshot {path} is damaged: its sha256 is {actual}, but it was {expected} when \
         taken; it is not used (delete it, or take a new one with `refract snapshot`)"
    )]
    Checksum {
        /// The snapshot file.
        path: PathBuf,
        /// The recorded checksum.
        expected: String,
        /// The file's checksum now.
        actual: String,
    },
    /// An import of a snapshot the store lists already (taken here meanwhile, or
    /// imported before); the listed one is kept as it is.
    #[error(
        "projector `{projector}` already has snapshot {id}; it is kept and nothing was imported"
    )]
    AlreadyListed {
        /// The projector.
        projector: String,
        /// The snapshot's id.
        id: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error(
        "the snapshot manifest {path} cannot be read: {message}; move it aside and the \
         snapshots of this projector start afresh"
    )]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The projector's snapshot policy.
    Policy,
    /// `refract snapshot` or `POST /v1/projectors/{name}/snapshots`.
    OnDemand,
    /// Before a new version was swapped in, of the version it replaced.
    BeforeSwap,
    /// Before a rollback swapped the previous version back, of the version it replaced.
    BeforeRollback,
    /// Fetched from another cluster node's shared snapshots (see
    /// [`crate::cluster::shared_snapshots`]).
    Shared,
}

/// One snapshot, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// The projector version whose read model it copies.
    pub version: String,
    /// The log offset the copy reflects.
    pub checkpoint: u64,
    /// The file's size.
    pub bytes: u64,
    /// The file's sha256, in hex.
    pub sha256: String,
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// Why it was taken.
    pub reason: Reason,
}

impl SnapshotEntry {
    /// Its id, `<version>/<checkpoint>`, as `refract restore --from` takes it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.version, self.checkpoint)
    }
}

/// The snapshots of one version, summed up for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionSummary {
    /// The version.
    pub version: String,
    /// How many snapshots it has.
    pub count: usize,
    /// The checkpoint of the newest.
    pub newest_checkpoint: u64,
    /// Their total size.
    pub bytes: u64,
}

/// The manifest file's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    snapshots: Vec<SnapshotEntry>,
}

/// The snapshots of a data directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store under `<data-dir>/snapshots`.
    pub fn new(data: &DataDir) -> Store {
        Store {
            root: data.root().join("snapshots"),
        }
    }

    /// `<data-dir>/snapshots`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one projector's snapshots.
    pub fn projector_dir(&self, projector: &str) -> PathBuf {
        self.root.join(projector)
    }

    /// The file of one snapshot.
    pub fn snapshot_path(&self, projector: &str, entry: &SnapshotEntry) -> PathBuf {
        self.projector_dir(projector)
            .join(&entry.version)
            .join(format!("{}.db", entry.checkpoint))
    }

    /// The stored component of a version, if one of its snapshots stored it.
    pub fn component(&self, projector: &str, version: &str) -> Option<Vec<u8>> {
        fs::read(self.projector_dir(projector).join(version).join(COMPONENT)).ok()
    }

    /// Every snapshot of a projector whose file is present, oldest first by checkpoint.
    ///
    /// # Errors
    /// A manifest that cannot be read.
    pub fn list(&self, projector: &str) -> Result<Vec<SnapshotEntry>, SnapshotError> {
        let mut entries: Vec<SnapshotEntry> = self
            .read_manifest(projector)?
            .snapshots
            .into_iter()
            .filter(|entry| self.snapshot_path(projector, entry).is_file())
            .collect();
        entries.sort_by(|a, b| (a.checkpoint, &a.taken_at).cmp(&(b.checkpoint, &b.taken_at)));
        Ok(entries)
    }

    /// The snapshots of each version of a projector: count, newest checkpoint, bytes.
    pub fn summaries(&self, projector: &str) -> Vec<VersionSummary> {
        let mut by_version: BTreeMap<String, VersionSummary> = BTreeMap::new();
        for entry in self.list(projector).unwrap_or_default() {
            let summary =
                by_version
                    .entry(entry.version.clone())
                    .or_insert_with(|| VersionSummary {
                        version: entry.version.clone(),
                        count: 0,
                        newest_checkpoint: 0,
                        bytes: 0,
                    });
            summary.count += 1;
            summary.newest_checkpoint = summary.newest_checkpoint.max(entry.checkpoint);
            summary.bytes += entry.bytes;
        }
        by_version.into_values().collect()
    }

    /// The projectors that have a snapshot folder.
    pub fn projectors(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// The snapshot with id `<version>/<checkpoint>`.
    ///
    /// # Errors
    /// [`SnapshotError::NotFound`], or a manifest that cannot be read.
    pub fn find(&self, projector: &str, id: &str) -> Result<SnapshotEntry, SnapshotError> {
        self.list(projector)?
            .into_iter()
            .find(|entry| entry.id() == id)
            .ok_or_else(|| SnapshotError::NotFound {
                projector: projector.to_owned(),
                id: id.to_owned(),
            })
    }

    /// The newest snapshot of `version` (any version when `None`) at or before
    /// `at_or_before` (any when `None`) whose file still matches its checksum. Damaged
    /// ones are logged and passed over.
    pub fn newest_good(
        &self,
        projector: &str,
        version: Option<&str>,
        at_or_before: Option<u64>,
    ) -> Option<SnapshotEntry> {
        let mut entries = self.list(projector).ok()?;
        entries.retain(|entry| {
            version.is_none_or(|version| entry.version == version)
                && at_or_before.is_none_or(|offset| entry.checkpoint <= offset)
        });
        entries.into_iter().rev().find(|entry| {
            match self.verify(projector, entry) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(projector, snapshot = %entry.id(), "passing over a snapshot: {error}");
                    false
                }
            }
        })
    }

    /// Checks a snapshot's file against its recorded checksum.
    ///
    /// # Errors
    /// [`SnapshotError::Checksum`], or the file cannot be read.
    pub fn verify(&self, projector: &str, entry: &SnapshotEntry) -> Result<(), SnapshotError> {
        let path = self.snapshot_path(projector, entry);
        let actual = sha256_file(&path)?;
        if actual != entry.sha256 {
            return Err(SnapshotError::Checksum {
                path,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Copies a snapshot to `dest` (which must not exist), checking its checksum on the
    /// way: a temporary file beside `dest`, synced, renamed, folder synced. Any `-wal`
    /// or `-shm` file at `dest` (from a deleted database) is removed first, so nothing
    /// of it can be replayed into the copy.
    ///
    /// # Errors
    /// A damaged snapshot ([`SnapshotError::Checksum`]) or an I/O failure; `dest` is then
    /// left absent.
    pub fn seed(
        &self,
        projector: &str,
        entry: &SnapshotEntry,
        dest: &Path,
    ) -> Result<(), SnapshotError> {
        let source = self.snapshot_path(projector, entry);
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| SnapshotError::Io { path, source }
        };
        for leftover in [dest.with_extension("db-wal"), dest.with_extension("db-shm")] {
            remove_if_present(&leftover).map_err(io_at(&leftover))?;
        }
        let temp = temp_beside(dest);
        let copied = (|| {
            let mut from = File::open(&source).map_err(io_at(&source))?;
            let mut to = File::create(&temp).map_err(io_at(&temp))?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0_u8; 1 << 16];
            loop {
                let read = from.read(&mut buffer).map_err(io_at(&source))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                to.write_all(&buffer[..read]).map_err(io_at(&temp))?;
            }
            let actual = hex::encode(hasher.finalize());
            if actual != entry.sha256 {
                return Err(SnapshotError::Checksum {
                    path: source.clone(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
            drop(to);
            mark_seeded(&temp, &entry.id()).map_err(|source| SnapshotError::Sqlite {
                path: temp.clone(),
                source,
            })?;
            File::open(&temp)
                .and_then(|file| file.sync_all())
                .map_err(io_at(&temp))?;
            fs::rename(&temp, dest).map_err(io_at(dest))?;
            sync_parent(dest)
        })();
        if copied.is_err() {
            let _ = fs::remove_file(&temp);
        }
        copied
    }

    /// Takes a snapshot of the read model at `source`, which must be `version`'s of
    /// `projector`, then keeps the newest `keep` of that version. `component`, when
    /// given, is stored beside the version's snapshots (once). A snapshot at a
    /// checkpoint already taken is not taken again: the existing entry is returned.
    ///
    /// Runs `VACUUM INTO` on a read-only connection of its own: one read transaction,
    /// so the copy is consistent, and in WAL mode neither the worker's writes nor
    /// readers wait for it.
    ///
    /// # Errors
    /// The read model cannot be read or is not this version's, or a file cannot be
    /// written; nothing is then added to the manifest.
    pub fn take(
        &self,
        projector: &str,
        version: &str,
        source: &Path,
        component: Option<&Path>,
        reason: Reason,
        keep: usize,
    ) -> Result<SnapshotEntry, SnapshotError> {
        let lock = manifest_lock(&self.projector_dir(projector));
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let folder = self.projector_dir(projector).join(version);
        fs::create_dir_all(&folder).map_err(|source| SnapshotError::Io {
            path: folder.clone(),
            source,
        })?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = folder.join(format!(
            ".{}-{}.db.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let taken = self.copy_into(projector, version, source, &temp);
        let (checkpoint, bytes, sha256) = match taken {
            Ok(taken) => taken,
            Err(error) => {
                let _ = fs::remove_file(&temp);
                return Err(error);
            }
        };
        let mut manifest = self.read_manifest(projector)?;
        if let Some(existing) = manifest
            .snapshots
            .iter()
            .find(|entry| entry.version == version && entry.checkpoint == checkpoint)
            .filter(|entry| self.snapshot_path(projector, entry).is_file())
        {
            let _ = fs::remove_file(&temp);
            return Ok(existing.clone());
        }
        let entry = SnapshotEntry {
            version: version.to_owned(),
            checkpoint,
            bytes,
            sha256,
            taken_at: jiff::Timestamp::now().to_string(),
            reason,
        };
        let path = self.snapshot_path(projector, &entry);
        fs::rename(&temp, &path).map_err(|source| SnapshotError::Io {
            path: path.clone(),
            source,
        })?;
        sync_parent(&path)?;
        if let Some(component) = component {
            store_component(component, &folder.join(COMPONENT))?;
        }
        manifest
            .snapshots
            .retain(|other| !(other.version == version && other.checkpoint == checkpoint));
        manifest.snapshots.push(entry.clone());
        let dropped = prune(&mut manifest, version, keep);
        self.write_manifest(projector, &manifest)?;
        for old in dropped {
            let _ = fs::remove_file(self.snapshot_path(projector, &old));
        }
        tracing::info!(projector, version, checkpoint, bytes, reason = ?reason, "snapshot taken");
        Ok(entry)
    }

    /// Adds a snapshot made elsewhere (another cluster node's, fetched to `file`) to
    /// this store, as if taken here: `file` must be `entry`'s snapshot, checked by its
    /// sha256 and by what the database says about itself (projector, version,
    /// checkpoint), before it is renamed into place and listed. `file` must be on the
    /// same file system (inside [`Store::projector_dir`]); it is consumed either way.
    /// Keeps the newest `keep` of the version.
    ///
    /// # Errors
    /// [`SnapshotError::Checksum`], [`SnapshotError::Foreign`], or an I/O failure;
    /// nothing is then listed and `file` is deleted.
    pub fn import(
        &self,
        projector: &str,
        entry: &SnapshotEntry,
        file: &Path,
        keep: usize,
    ) -> Result<SnapshotEntry, SnapshotError> {
        let imported = self.import_checked(projector, entry, file, keep);
        if imported.is_err() {
            let _ = fs::remove_file(file);
        }
        imported
    }

    fn import_checked(
        &self,
        projector: &str,
        entry: &SnapshotEntry,
        file: &Path,
        keep: usize,
    ) -> Result<SnapshotEntry, SnapshotError> {
        let actual = sha256_file(file)?;
        if actual != entry.sha256 {
            return Err(SnapshotError::Checksum {
                path: file.to_owned(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        let (found_projector, found_version, found_checkpoint) =
            identity(file).map_err(|source| SnapshotError::Sqlite {
                path: file.to_owned(),
                source,
            })?;
        if (
            found_projector.as_str(),
            found_version.as_str(),
            found_checkpoint,
        ) != (projector, entry.version.as_str(), entry.checkpoint)
        {
            return Err(SnapshotError::Foreign {
                path: file.to_owned(),
                projector: projector.to_owned(),
                found: format!(
                    "it holds projector `{found_projector}` version {found_version} at offset {found_checkpoint}, not version {} at offset {}",
                    entry.version, entry.checkpoint
                ),
            });
        }
        let lock = manifest_lock(&self.projector_dir(projector));
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut manifest = self.read_manifest(projector)?;
        // Replacing a listed file would leave its manifest entry naming another file's
        // sha256 if the manifest write below failed: refused instead.
        if manifest
            .snapshots
            .iter()
            .any(|other| other.version == entry.version && other.checkpoint == entry.checkpoint)
        {
            return Err(SnapshotError::AlreadyListed {
                projector: projector.to_owned(),
                id: entry.id(),
            });
        }
        let path = self.snapshot_path(projector, entry);
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder).map_err(|source| SnapshotError::Io {
                path: folder.to_owned(),
                source,
            })?;
        }
        File::open(file)
            .and_then(|opened| opened.sync_all())
            .map_err(|source| SnapshotError::Io {
                path: file.to_owned(),
                source,
            })?;
        fs::rename(file, &path).map_err(|source| SnapshotError::Io {
            path: path.clone(),
            source,
        })?;
        // From here the file is at its listed name but not listed: any failure removes
        // it, so the store is as it was (the path was unlisted, see above).
        let listed = sync_parent(&path).and_then(|()| {
            manifest.snapshots.push(entry.clone());
            let dropped = prune(&mut manifest, &entry.version, keep);
            self.write_manifest(projector, &manifest)?;
            Ok(dropped)
        });
        let dropped = match listed {
            Ok(dropped) => dropped,
            Err(error) => {
                let _ = fs::remove_file(&path);
                return Err(error);
            }
        };
        for old in dropped {
            let _ = fs::remove_file(self.snapshot_path(projector, &old));
        }
        tracing::info!(projector, snapshot = %entry.id(), bytes = entry.bytes, "shared snapshot imported");
        Ok(entry.clone())
    }

    /// `VACUUM INTO` `temp`, synced; returns its checkpoint, size and checksum.
    fn copy_into(
        &self,
        projector: &str,
        version: &str,
        source: &Path,
        temp: &Path,
    ) -> Result<(u64, u64, String), SnapshotError> {
        let (found_projector, found_version, checkpoint) = vacuum_copy(source, temp)?;
        if found_projector != projector || found_version != version {
            return Err(SnapshotError::Foreign {
                path: source.to_owned(),
                projector: projector.to_owned(),
                found: format!(
                    "it was built by projector `{found_projector}` version {found_version}, not version {version}"
                ),
            });
        }
        let file = File::options()
            .read(true)
            .write(true)
            .open(temp)
            .map_err(|source| SnapshotError::Io {
                path: temp.to_owned(),
                source,
            })?;
        file.sync_all().map_err(|source| SnapshotError::Io {
            path: temp.to_owned(),
            source,
        })?;
        let bytes = file.metadata().map(|meta| meta.len()).unwrap_or_default();
        Ok((checkpoint, bytes, sha256_file(temp)?))
    }

    /// Deletes every snapshot of a retired version, and its stored component.
    pub fn forget_version(&self, projector: &str, version: &str) {
        let lock = manifest_lock(&self.projector_dir(projector));
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Ok(mut manifest) = self.read_manifest(projector) else {
            return;
        };
        let before = manifest.snapshots.len();
        manifest.snapshots.retain(|entry| entry.version != version);
        if manifest.snapshots.len() != before
            && let Err(error) = self.write_manifest(projector, &manifest)
        {
            tracing::warn!(
                projector,
                version,
                "cannot update the snapshot manifest: {error}"
            );
            return;
        }
        let folder = self.projector_dir(projector).join(version);
        if let Err(error) = fs::remove_dir_all(&folder)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(folder = %folder.display(), "cannot delete a retired version's snapshots: {error}");
        }
    }

    /// Deletes what a crash in the middle of a snapshot left: temporary files, and
    /// snapshot files the manifest does not list.
    pub fn clean_strays(&self, projector: &str) {
        let lock = manifest_lock(&self.projector_dir(projector));
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Ok(manifest) = self.read_manifest(projector) else {
            return;
        };
        let Ok(versions) = fs::read_dir(self.projector_dir(projector)) else {
            return;
        };
        for folder in versions.flatten().filter(|entry| entry.path().is_dir()) {
            let version = folder.file_name().to_string_lossy().into_owned();
            let Ok(files) = fs::read_dir(folder.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let listed = manifest.snapshots.iter().any(|entry| {
                    entry.version == version && name == format!("{}.db", entry.checkpoint)
                });
                if name == COMPONENT || listed {
                    continue;
                }
                tracing::info!(file = %file.path().display(), "removing a stray snapshot file");
                let _ = fs::remove_file(file.path());
            }
        }
    }

    fn manifest_path(&self, projector: &str) -> PathBuf {
        self.projector_dir(projector).join(MANIFEST)
    }

    fn read_manifest(&self, projector: &str) -> Result<Manifest, SnapshotError> {
        let path = self.manifest_path(projector);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| SnapshotError::Manifest {
                path,
                message: error.to_string(),
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(source) => Err(SnapshotError::Io { path, source }),
        }
    }

    /// Rewrites the manifest whole: temporary file, sync, rename, folder sync.
    fn write_manifest(&self, projector: &str, manifest: &Manifest) -> Result<(), SnapshotError> {
        let path = self.manifest_path(projector);
        let bytes =
            serde_json::to_vec_pretty(manifest).map_err(|error| SnapshotError::Manifest {
                path: path.clone(),
                message: error.to_string(),
            })?;
        write_whole(&path, &bytes)
    }
}

/// Keeps the newest `keep` snapshots of `version` in `manifest`; returns the others.
fn prune(manifest: &mut Manifest, version: &str, keep: usize) -> Vec<SnapshotEntry> {
    let mut checkpoints: Vec<u64> = manifest
        .snapshots
        .iter()
        .filter(|entry| entry.version == version)
        .map(|entry| entry.checkpoint)
        .collect();
    checkpoints.sort_unstable_by(|a, b| b.cmp(a));
    let Some(&oldest_kept) = checkpoints.get(keep.max(1) - 1) else {
        return Vec::new();
    };
    let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut manifest.snapshots)
        .into_iter()
        .partition(|entry| entry.version != version || entry.checkpoint >= oldest_kept);
    manifest.snapshots = kept;
    dropped
}

/// The `_refract_meta` key of a read model seeded from a snapshot: the snapshot's id.
pub const SEEDED_FROM: &str = "seeded_from";

/// Records in a seeded copy which snapshot it came from, so an operator (and a test)
/// can tell a read model restored from a snapshot from one replayed from offset 1.
fn mark_seeded(path: &Path, id: &str) -> rusqlite::Result<()> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute(
        "INSERT OR REPLACE INTO _refract_meta (key, value) VALUES (?1, ?2)",
        [SEEDED_FROM, id],
    )?;
    conn.close().map_err(|(_, error)| error)
}

/// What a read model says about itself: projector, version, checkpoint (read as the
/// engine reads it, [`crate::engine::checkpoint::load`]).
/// A consistent copy of the read model at `source` (a live one: readers and the writer
/// go on), written to `target` by `VACUUM INTO`, not synced; returns the copy's
/// projector, version and checkpoint.
pub(crate) fn vacuum_copy(
    source: &Path,
    target: &Path,
) -> Result<(String, String, u64), SnapshotError> {
    let sqlite = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Sqlite { path, source }
    };
    {
        let conn = Connection::open_with_flags(
            source,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite(source))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite(source))?;
        let target_text = target.to_str().ok_or_else(|| SnapshotError::Io {
            path: target.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        })?;
        conn.execute("VACUUM INTO ?1", [target_text])
            .map_err(sqlite(source))?;
    }
    identity(target).map_err(sqlite(target))
}

pub(crate) fn identity(path: &Path) -> rusqlite::Result<(String, String, u64)> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let stored =
        crate::engine::checkpoint::load(&conn)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    Ok((stored.projector, stored.version, stored.checkpoint))
}

/// One lock per manifest in this process, so snapshots taken by the schedule, the API
/// and a swap never interleave their read-modify-write of the manifest.
fn manifest_lock(folder: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Arc::clone(locks.entry(folder.to_owned()).or_default())
}

/// The sha256 of a file, in hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String, SnapshotError> {
    let io_error = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io_error)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A component stored once, written whole.
fn store_component(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    if to.is_file() {
        return Ok(());
    }
    let bytes = fs::read(from).map_err(|source| SnapshotError::Io {
        path: from.to_owned(),
        source,
    })?;
    write_whole(to, &bytes)
}

/// Writes `bytes` to `path` whole: temporary file, sync, rename, folder sync.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let io_at = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Io { path, source }
    };
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder).map_err(io_at(folder))?;
    }
    let temp = temp_beside(path);
    let written = (|| {
        let mut file = File::create(&temp).map_err(io_at(&temp))?;
        file.write_all(bytes).map_err(io_at(&temp))?;
        file.sync_all().map_err(io_at(&temp))?;
        fs::rename(&temp, path).map_err(io_at(path))?;
        sync_parent(path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// A temporary name beside `path`, ending in `.tmp` (which stray cleaners remove).
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Syncs the folder holding `path`, so a rename into it survives a crash.
fn sync_parent(path: &Path) -> Result<(), SnapshotError> {
    let Some(folder) = path.parent() else {
        return Ok(());
    };
    File::open(folder)
        .and_then(|folder| folder.sync_all())
        .map_err(|source| SnapshotError::Io {
            path: folder.to_owned(),
            source,
        })
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str, checkpoint: u64) -> SnapshotEntry {
        SnapshotEntry {
            version: version.into(),
            checkpoint,
            bytes: 1,
            sha256: String::new(),
            taken_at: String::new(),
            reason: Reason::Policy,
        }
    }

    /// A read model of `cars` version `v1` at `checkpoint`, as the engine builds one.
    fn read_model(path: &Path, checkpoint: u64) -> rusqlite::Result<()> {
        let conn = Connection::open(path)?;
        crate::engine::checkpoint::create(
            &conn,
            &crate::engine::checkpoint::Identity {
                projector: "cars",
                version: "v1",
                sha256: "00",
            },
        )?;
        crate::engine::checkpoint::write(&conn, checkpoint)?;
        conn.execute_batch("CREATE TABLE cars (id TEXT); INSERT INTO cars VALUES ('hrxs21');")
    }

    #[test]
    fn an_import_checks_checksum_and_identity_and_leaves_nothing_behind_when_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store {
            root: dir.path().join("snapshots"),
        };
        let folder = store.projector_dir("cars").join("v1");
        fs::create_dir_all(&folder)?;
        let fetched = |name: &str| -> Result<PathBuf, Box<dyn std::error::Error>> {
            let path = folder.join(name);
            read_model(&path, 42)?;
            Ok(path)
        };
        let file = fetched(".a.db.tmp")?;
        let good = SnapshotEntry {
            sha256: sha256_file(&file)?,
            bytes: fs::metadata(&file)?.len(),
            ..entry("v1", 42)
        };
        // A checksum that does not match: refused, the fetched file deleted.
        let wrong_sum = SnapshotEntry {
            sha256: "ab".repeat(32),
            ..good.clone()
        };
        let error = store.import("cars", &wrong_sum, &file, 2).unwrap_err();
        assert!(matches!(error, SnapshotError::Checksum { .. }), "{error}");
        assert!(!file.exists());
        // The right bytes under another checkpoint's name: refused as foreign.
        let file = fetched(".b.db.tmp")?;
        let wrong_offset = SnapshotEntry {
            checkpoint: 43,
            ..good.clone()
        };
        let error = store.import("cars", &wrong_offset, &file, 2).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("at offset 42, not version v1 at offset 43"),
            "{error}"
        );
        assert!(!file.exists());
        assert!(store.list("cars")?.is_empty());
        // The right one is listed, in place, and verifies.
        let file = fetched(".c.db.tmp")?;
        store.import("cars", &good, &file, 2)?;
        assert_eq!(store.list("cars")?, vec![good.clone()]);
        store.verify("cars", &good)?;
        let left: Vec<_> = fs::read_dir(&folder)?
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["42.db".to_owned()]);
        // The same checkpoint again: refused, the listed file untouched.
        let file = fetched(".d.db.tmp")?;
        let error = store.import("cars", &good, &file, 2).unwrap_err();
        assert!(
            matches!(error, SnapshotError::AlreadyListed { .. }),
            "{error}"
        );
        assert!(!file.exists());
        assert_eq!(store.list("cars")?, vec![good.clone()]);
        store.verify("cars", &good)?;
        Ok(())
    }

    #[test]
    fn an_import_whose_manifest_write_fails_leaves_the_store_as_it_was()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store {
            root: dir.path().join("snapshots"),
        };
        let folder = store.projector_dir("cars").join("v1");
        fs::create_dir_all(&folder)?;
        let file = folder.join(".a.db.tmp");
        read_model(&file, 42)?;
        let good = SnapshotEntry {
            sha256: sha256_file(&file)?,
            bytes: fs::metadata(&file)?.len(),
            ..entry("v1", 42)
        };
        // A folder where the manifest's temporary file goes: its write fails after
        // the snapshot was renamed into place.
        let blocker = temp_beside(&store.manifest_path("cars"));
        fs::create_dir_all(&blocker)?;
        let error = store.import("cars", &good, &file, 2).unwrap_err();
        assert!(matches!(error, SnapshotError::Io { .. }), "{error}");
        assert!(!file.exists());
        assert!(!store.snapshot_path("cars", &good).exists());
        assert!(fs::read_dir(&folder)?.next().is_none());
        assert!(store.list("cars")?.is_empty());
        // With the manifest writable again, the same import succeeds.
        fs::remove_dir(&blocker)?;
        read_model(&file, 42)?;
        let good = SnapshotEntry {
            sha256: sha256_file(&file)?,
            bytes: fs::metadata(&file)?.len(),
            ..good
        };
        store.import("cars", &good, &file, 2)?;
        assert_eq!(store.list("cars")?, vec![good.clone()]);
        store.verify("cars", &good)?;
        Ok(())
    }

    #[test]
    fn pruning_keeps_the_newest_of_one_version_only() {
        let mut manifest = Manifest {
            snapshots: vec![entry("a", 1), entry("b", 2), entry("a", 3), entry("a", 5)],
        };
        let dropped = prune(&mut manifest, "a", 2);
        assert_eq!(dropped, vec![entry("a", 1)]);
        assert_eq!(
            manifest.snapshots,
            vec![entry("b", 2), entry("a", 3), entry("a", 5)]
        );
    }
}
