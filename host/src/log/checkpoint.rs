//! Checkpoints off the writer's critical path.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past 1000 pages:
//! the appenders of that group wait while every page is copied back into the database
//! file and both files are synced. Here the writer's commit only signals a checkpointer
//! thread with a connection of its own, which runs a `PASSIVE` checkpoint (it never
//! waits for, nor blocks, the writer or readers) while the writer goes on with the next
//! group. If the checkpointer falls far behind, the writer checkpoints itself at
//! [`WRITER_CHECKPOINT_PAGES`], so the WAL's size stays bounded either way.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};

use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

use super::schema::{configure_writer_like, sqlite_error, synchronous};
use super::{LogError, LogOptions};

/// WAL pages after a commit from which the checkpointer is woken: SQLite's own
/// auto-checkpoint threshold, so the WAL stays as small as it was.
pub const BACKGROUND_CHECKPOINT_PAGES: i32 = 1_000;

/// WAL pages after a commit from which the writer checkpoints itself, in the commit,
/// because the checkpointer has fallen behind: the bound on the WAL's size (about 64 MiB
/// of 4 KiB pages).
pub const WRITER_CHECKPOINT_PAGES: i32 = 16_000;

/// The checkpointer thread of one writer connection.
pub(super) struct Checkpointer {
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens the checkpointer's connection to `path`, starts its thread and hooks the
    /// writer's `conn` to wake it after each commit that leaves enough pages in the WAL.
    pub(super) fn start(
        conn: &mut Connection,
        path: &Path,
        options: &LogOptions,
    ) -> Result<Checkpointer, LogError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let own = Connection::open_with_flags(path, flags)
            .map_err(|e| sqlite_error(path, "opening the checkpointer's connection", e))?;
        configure_writer_like(&own, path, options)?;
        // The checkpoint syncs as the writer's commits would have.
        own.pragma_update(None, "synchronous", synchronous(options.durability))
            .map_err(|e| sqlite_error(path, "setting synchronous", e))?;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let thread = thread::Builder::new()
            .name("refract-log-checkpointer".to_owned())
            .spawn(move || run(&own, &woken))
            .map_err(|source| LogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        hook(conn, wake).map_err(|e| sqlite_error(path, "hooking the WAL", e))?;
        Ok(Checkpointer { thread })
    }

    /// Unhooks the writer's connection and waits for the thread to end and close its
    /// connection, so that the writer's connection, closing last, checkpoints the WAL
    /// into the file and removes it.
    pub(super) fn stop(self, conn: &mut Connection) {
        // Dropping the hook drops the only sender: the thread's loop ends.
        let _ = conn.wal_hook(None::<fn(&mut rusqlite::hooks::Wal, i32) -> rusqlite::Result<()>>);
        let _ = self.thread.join();
    }
}

fn hook(conn: &mut Connection, wake: SyncSender<()>) -> rusqlite::Result<()> {
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages >= WRITER_CHECKPOINT_PAGES {
            // Behind by a lot: bound the WAL now. PASSIVE never waits for readers.
            wal.checkpoint()?;
        } else if pages >= BACKGROUND_CHECKPOINT_PAGES {
            match wake.try_send(()) {
                // Full: a wake-up is pending already. Disconnected: shutting down.
                Ok(()) | Err(TrySendError::Full(()) | TrySendError::Disconnected(())) => {}
            }
        }
        Ok(())
    }))
}

fn run(conn: &Connection, woken: &Receiver<()>) {
    while woken.recv().is_ok() {
        // A failure (another checkpoint running, a busy lock) leaves the frames for the
        // next wake-up or for the writer's own bound; nothing is lost.
        let _ = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE);
    }
}
