//! The files of versions: the stable path, stored components, pruning.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::data_dir::DataDir;

/// Points the stable path `projections/<name>.db` at `<name>/<version>.db`. A new
/// symlink is made beside the old one and renamed over it, so a tool opening the
/// stable path sees either the old version or the new one, never nothing; the folder
/// is then synced so the new link survives a crash.
pub(crate) fn repoint(data: &DataDir, projector: &str, version: &str) -> io::Result<()> {
    let link = data.stable_db(projector);
    let target = Path::new(projector).join(format!("{version}.db"));
    if fs::read_link(&link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    let temp = data.projections().join(format!(".{projector}.db.link"));
    match fs::remove_file(&temp) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::os::unix::fs::symlink(&target, &temp)?;
    fs::rename(&temp, &link)?;
    File::open(data.projections())?.sync_all()
}

/// Stores a version's component beside its read model, written whole (temp file,
/// fsync, rename) so a crash never leaves a torn copy to load at the next start.
pub(crate) fn keep_component(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs::read(path).is_ok_and(|stored| stored == bytes) {
        return Ok(());
    }
    let temp = path.with_extension("wasm.tmp");
    {
        let mut file = File::create(&temp)?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temp, path)
}

/// Deletes a version's read model (with its WAL files) and stored component.
/// Missing files are fine; other failures are logged, since the next start cleans
/// strays anyway.
pub(crate) fn remove_version_files(data: &DataDir, projector: &str, version: &str) {
    let db = data.version_db(projector, version);
    let rebuild = data.rebuild_db(projector, version);
    let files = [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
        rebuild.clone(),
        rebuild.with_extension("db-wal"),
        rebuild.with_extension("db-shm"),
        data.version_wasm(projector, version),
    ];
    for file in files {
        if let Err(error) = fs::remove_file(&file)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %file.display(), "cannot delete an old version's file: {error}");
        }
    }
}

/// Deletes a version's read model (with its WAL files) but keeps its component: a
/// pruned version that a snapshot can bring back.
pub(crate) fn remove_read_model(data: &DataDir, projector: &str, version: &str) {
    let db = data.version_db(projector, version);
    for file in [db.with_extension("db-wal"), db.with_extension("db-shm"), db] {
        if let Err(error) = fs::remove_file(&file)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %file.display(), "cannot delete a pruned read model: {error}");
        }
    }
}

/// Deletes the database at `db` with its WAL files; missing files are fine.
pub(crate) fn remove_read_model_at(db: &Path) -> io::Result<()> {
    for file in [
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
        db.to_owned(),
    ] {
        match fs::remove_file(&file) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

/// Deletes files in a projector's folder that belong to no kept version: temp files
/// from a crash in the middle of a write, and read models of versions that were
/// retired or never registered. They would otherwise be picked up (and resumed from)
/// by a later deploy of the same version.
pub(crate) fn remove_strays(data: &DataDir, projector: &str, kept: &[String]) {
    let Ok(entries) = fs::read_dir(data.projector_dir(projector)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let version = file_name.split('.').next().unwrap_or_default();
        let stray = file_name.ends_with(".tmp") || !kept.iter().any(|kept| kept == version);
        if stray {
            tracing::info!(file = %path.display(), "removing a stray file");
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), "cannot remove a stray file: {error}");
            }
        }
    }
    let temp_link = data.projections().join(format!(".{projector}.db.link"));
    let _ = fs::remove_file(temp_link);
}

/// The sha256 of `bytes`, in hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A read-only connection that also refuses to create the file.
pub(crate) fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
}
