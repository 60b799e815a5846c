//! The file side of versions and swaps: the stable path, stored components, pruning,
//! and the diff gate.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use rusqlite::fallible_iterator::FallibleIterator as _;
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
    let files = [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
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

/// Runs a diff gate: every statement in the file is a query returning the rows that
/// violate an assertion, run read-only against the shadow with the active read model
/// attached as `active`. Passes when no query returns a row.
pub(crate) fn run_gate(
    gate: &Path,
    shadow_db: &Path,
    active_db: Option<&Path>,
) -> Result<(), String> {
    let sql = fs::read_to_string(gate)
        .map_err(|error| format!("cannot read {}: {error}", gate.display()))?;
    let conn =
        open_read_only(shadow_db).map_err(|error| format!("cannot open the shadow: {error}"))?;
    if let Some(active) = active_db {
        conn.execute("ATTACH DATABASE ?1 AS active", [read_only_uri(active)])
            .map_err(|error| format!("cannot attach the active read model: {error}"))?;
    }
    let mut statements = rusqlite::Batch::new(&conn, &sql);
    let mut index = 0;
    while let Some(mut statement) = statements
        .next()
        .map_err(|error| format!("assertion {}: {error}", index + 1))?
    {
        index += 1;
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        if let Some(row) = rows
            .next()
            .map_err(|error| format!("assertion {index}: {error}"))?
        {
            let first = (0..columns)
                .map(|column| row.get_ref(column).map_or_else(|_| "?".into(), value_text))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "assertion {index} returned a violating row ({first})"
            ));
        }
    }
    Ok(())
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

/// A `file:` URI that opens `path` read-only when attached.
pub(crate) fn read_only_uri(path: &Path) -> String {
    // In a URI, `%`, `?` and `#` in the path must be escaped.
    let path = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{path}?mode=ro")
}

/// A SQL value as short text, for messages.
pub(crate) fn value_text(value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(text) => format!("'{}'", String::from_utf8_lossy(text)),
        ValueRef::Blob(blob) => format!("x'{}'", hex::encode(blob)),
    }
}
