//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes tens of milliseconds; loading a cached
//! compilation takes well under one. Entries live at
//! `<cache_dir>/<engine-hash>/<sha256-of-wasm>.cwasm`, so a different wasmtime version or
//! engine configuration never reads another's entries.
//!
//! Deserializing compiled code is trusted: wasmtime maps it as executable machine code.
//! So only files this cache wrote are ever deserialized, and each carries a trailer with
//! the sha256 of its contents. A truncated, corrupted or foreign file fails that check,
//! is removed, and the component is compiled again. The check guards against accidents
//! (a torn write, a bad disk), not against someone who can already write the host's
//! data directory.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Marks the end of a cache file written by this module; bump it to change the format.
const TRAILER_MAGIC: &[u8; 8] = b"RFCWASM1";

/// The trailer: the sha256 of the serialized component, then the magic.
const TRAILER_LEN: usize = 32 + TRAILER_MAGIC.len();

/// Distinguishes temporary files of concurrent writers within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Opens (creating) the cache under `root` for `engine`'s configuration.
    pub(crate) fn open(root: &Path, engine: &Engine) -> std::io::Result<Self> {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        TRAILER_MAGIC.hash(&mut hasher);
        let dir = root.join(format!("{:016x}", hasher.finish()));
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The directory of this engine configuration's entries.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for the component with this sha256 lives.
    pub(crate) fn path(&self, sha256_hex: &str) -> PathBuf {
        self.dir.join(format!("{sha256_hex}.cwasm"))
    }

    /// The cached compilation of the component with this sha256, if a sound entry exists.
    /// An unsound entry is removed so the caller's fresh compilation replaces it.
    pub(crate) fn get(&self, engine: &Engine, sha256_hex: &str) -> Option<Component> {
        let path = self.path(sha256_hex);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot read cached component: {err}");
                return None;
            }
        };
        let Some(serialized) = verified_payload(&bytes) else {
            tracing::warn!(path = %path.display(), "cached component is corrupt; recompiling");
            let _ = fs::remove_file(&path);
            return None;
        };
        #[allow(
            unsafe_code,
            reason = "deserializing compiled code is the point of the cache"
        )]
        // SAFETY: `serialized` is exactly what `Component::serialize` produced in `put`
        // for this engine configuration (the directory is keyed by it): the file is one
        // this cache wrote, and its sha256 trailer matched, so it is not truncated or
        // corrupted. wasmtime additionally checks the header and the engine
        // compatibility before using it.
        let component = unsafe { Component::deserialize(engine, serialized) };
        match component {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), "cached component is unusable ({err}); recompiling");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compilation. Written to a temporary file and renamed into place, so a
    /// reader sees either no entry or a whole one.
    pub(crate) fn put(&self, sha256_hex: &str, component: &Component) -> std::io::Result<()> {
        let serialized = component.serialize().map_err(std::io::Error::other)?;
        let digest = Sha256::digest(&serialized);
        let path = self.path(sha256_hex);
        let temp = self.dir.join(format!(
            ".{sha256_hex}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&temp)?;
            file.write_all(&serialized)?;
            file.write_all(&digest)?;
            file.write_all(TRAILER_MAGIC)?;
            file.sync_all()?;
            fs::rename(&temp, &path)
        };
        write().inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
    }
}

/// The serialized component inside a cache file, if its trailer is present and its
/// sha256 matches.
fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let split = bytes.len().checked_sub(TRAILER_LEN)?;
    let (payload, trailer) = bytes.split_at(split);
    let (digest, magic) = trailer.split_at(32);
    if magic != TRAILER_MAGIC || Sha256::digest(payload).as_slice() != digest {
        return None;
    }
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_must_match_its_digest() {
        let payload = b"compiled code".to_vec();
        let mut file = payload.clone();
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(TRAILER_MAGIC);
        assert_eq!(verified_payload(&file), Some(payload.as_slice()));

        let mut flipped = file.clone();
        flipped[3] ^= 0x40;
        assert_eq!(verified_payload(&flipped), None);
        assert_eq!(verified_payload(&file[..file.len() - 1]), None);
        assert_eq!(verified_payload(&file[1..]), None);
        assert_eq!(verified_payload(b"short"), None);
    }
}
