//! A small file system of a test's own, so a test can fill a real disk: a `tmpfs` of a
//! chosen size mounted on a temporary folder, unmounted when dropped.
//!
//! Mounting needs root (or `CAP_SYS_ADMIN`); CI runs the tests as root. Without it the
//! test fails, saying so: it never passes without having filled a disk.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; unmounted (lazily, so open files do not block it) when dropped.
pub struct TinyDisk {
    dir: tempfile::TempDir,
}

/// The file a test fills the disk with.
const FILLER: &str = "filler";

impl TinyDisk {
    /// Mounts a tmpfs of `bytes` bytes on a fresh temporary folder.
    ///
    /// # Panics
    /// If the folder cannot be made or the file system cannot be mounted, with the fix.
    pub fn mount(bytes: u64) -> TinyDisk {
        let dir = tempfile::tempdir().expect("cannot create a temporary folder to mount on");
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => TinyDisk { dir },
            Ok(output) => panic!(
                "this test fills a small disk of its own and cannot mount one: `mount -t tmpfs \
                 -o size={bytes} tmpfs {}` said: {}. Run the tests as root (CI does), or in a \
                 container with CAP_SYS_ADMIN",
                dir.path().display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => panic!(
                "this test fills a small disk of its own and cannot run `mount` ({error}); \
                 install util-linux (`apt-get install -y mount`) and run the tests as root"
            ),
        }
    }

    /// The mounted folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills every free byte with a file of its own, until the disk says it is full.
    ///
    /// # Panics
    /// If writing fails for another reason than a full disk.
    pub fn fill(&self) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("cannot create the filler file");
        let chunk = vec![0_u8; 64 * 1024];
        let mut size = chunk.len();
        // Smaller and smaller writes take the last pages too.
        while size > 0 {
            match file.write(&chunk[..size]) {
                Ok(0) => size /= 2,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => size /= 2,
                Err(error) => panic!("filling the tiny disk failed: {error}"),
            }
        }
        let _ = file.sync_all();
    }

    /// Frees `bytes` of what [`TinyDisk::fill`] took.
    ///
    /// # Panics
    /// If the filler file cannot be shrunk.
    pub fn free_some(&self, bytes: u64) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.filler())
            .expect("cannot open the filler file");
        let size = file
            .metadata()
            .expect("cannot read the filler's size")
            .len();
        file.set_len(size.saturating_sub(bytes))
            .expect("cannot shrink the filler file");
    }

    /// Frees what [`TinyDisk::fill`] took.
    ///
    /// # Panics
    /// If the filler file cannot be removed.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("cannot remove the filler file");
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join(FILLER)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        // Lazily: a host that has not quite let go of its files must not keep the
        // mount (and the test's memory) alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
