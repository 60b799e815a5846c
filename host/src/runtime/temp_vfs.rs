//! Temporary storage counted per connection, and capped.
//!
//! SQLite writes temporary files on its own: sorters for `ORDER BY` and `CREATE INDEX`,
//! temporary b-trees for `GROUP BY`, `DISTINCT`, `UNION`, `IN` and materialised views
//! and CTEs, statement journals. None of them count toward `max_page_count`, which
//! covers the main database only, and `PRAGMA temp.max_page_count` covers only the
//! TEMP schema (which the guest may not use at all). One guest call wrote a gigabyte
//! into an unlinked temporary file.
//!
//! So every sandboxed connection, and every API query connection, is opened through a
//! VFS of its own ([`TempVfs`]) that wraps SQLite's default one. The main database, its
//! WAL and its journal pass straight through (they are opened by the default VFS, into
//! the same memory, and behave exactly as before), and so do statement journals, which
//! hold at most one copy of each page of the main database a statement changes, so the
//! page budget bounds them already. Temporary files are wrapped: each write that grows
//! one is charged to the connection's [`TempBudget`], truncating or closing it gives
//! the bytes back, and a write past `limits.max_temp_bytes` fails the statement.
//!
//! The refusal is reported as `SQLITE_TOOBIG`, not `SQLITE_FULL`: SQLite answers a full
//! disk by rolling back the whole transaction, even for a read-only statement, while
//! the files refused here are a sort's or a temporary table's own, thrown away with the
//! failed statement, so the guest keeps its transaction and gets a `limit` error it can
//! handle. The budget remembers the refusal so the error can name the limit.
//!
//! The VFS is registered under a unique name for the connection's life and unregistered
//! after the connection has closed ([`TempVfs`] must be dropped after it).

#![allow(
    unsafe_code,
    reason = "a SQLite VFS is a table of C callbacks over raw pointers; there is no safe \
              binding for wrapping the default VFS"
)]

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::ffi;

/// The temporary bytes one connection may hold, and holds.
#[derive(Debug)]
pub(crate) struct TempBudget {
    max: u64,
    used: AtomicU64,
    peak: AtomicU64,
    refused: AtomicBool,
}

impl TempBudget {
    fn new(max: u64) -> Self {
        Self {
            max,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            refused: AtomicBool::new(false),
        }
    }

    /// Charges `bytes`, or refuses (and remembers the refusal) if the cap would be passed.
    fn charge(&self, bytes: u64) -> bool {
        let charged = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            });
        match charged {
            Ok(before) => {
                self.peak.fetch_max(before + bytes, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.refused.store(true, Ordering::Release);
                false
            }
        }
    }

    fn release(&self, bytes: u64) {
        // Never below zero, even if SQLite truncated a file it had not grown.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// The cap, `limits.max_temp_bytes`.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The most held at once since the connection opened.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Whether a write was refused since the last call, and forgets it.
    pub(crate) fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::AcqRel)
    }
}

/// What the VFS's callbacks reach through `pAppData`.
struct VfsData {
    /// SQLite's default VFS, which does the real work.
    real: *mut ffi::sqlite3_vfs,
    budget: Arc<TempBudget>,
}

/// A VFS registered for one connection. Dropping it unregisters it, so it must be
/// dropped after the connection that uses it.
pub(crate) struct TempVfs {
    /// From `Box::into_raw`; freed in `Drop` after it is unregistered.
    vfs: *mut ffi::sqlite3_vfs,
    /// From `Box::into_raw`, pointed at by `vfs.pAppData`; freed with it.
    data: *mut VfsData,
    /// `vfs.zName` points into it.
    name: CString,
    budget: Arc<TempBudget>,
}

impl std::fmt::Debug for TempVfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempVfs")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

// SAFETY: `vfs` and `data` are heap blocks owned by this value alone (SQLite reads them
// under its own locking), and `data.real` is SQLite's default VFS, static for the
// process; the budget is atomic.
unsafe impl Send for TempVfs {}

/// Gives each VFS a distinct name.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// How large `TempFile`'s header is, rounded so the default VFS's file that follows it
/// stays aligned.
const HEADER: usize = size_of::<TempFile>().next_multiple_of(16);

impl TempVfs {
    /// Registers a VFS whose temporary files may hold `max_bytes` at once.
    pub(crate) fn register(max_bytes: u64) -> rusqlite::Result<Self> {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS or NULL; SQLite is
        // initialised by rusqlite before any connection exists, and the call also
        // initialises it if needed.
        let real = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
        if real.is_null() {
            return Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some("SQLite has no default VFS".to_owned()),
            ));
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = CString::new(format!("refract-temp-{id}")).map_err(|_| {
            rusqlite::Error::InvalidParameterName("VFS name contains NUL".to_owned())
        })?;
        let budget = Arc::new(TempBudget::new(max_bytes));
        let data = Box::into_raw(Box::new(VfsData {
            real,
            budget: Arc::clone(&budget),
        }));
        // SAFETY: `real` is a valid, registered VFS that SQLite never frees.
        let (real_size, max_path) = unsafe { ((*real).szOsFile, (*real).mxPathname) };
        let size = i32::try_from(HEADER).unwrap_or(i32::MAX) + real_size;
        let vfs = Box::into_raw(Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: size,
            mxPathname: max_path,
            pNext: ptr::null_mut(),
            zName: name.as_ptr(),
            pAppData: data.cast::<c_void>(),
            xOpen: Some(vfs_open),
            xDelete: Some(vfs_delete),
            xAccess: Some(vfs_access),
            xFullPathname: Some(vfs_full_pathname),
            xDlOpen: Some(vfs_dl_open),
            xDlError: Some(vfs_dl_error),
            xDlSym: Some(vfs_dl_sym),
            xDlClose: Some(vfs_dl_close),
            xRandomness: Some(vfs_randomness),
            xSleep: Some(vfs_sleep),
            xCurrentTime: Some(vfs_current_time),
            xGetLastError: Some(vfs_get_last_error),
            xCurrentTimeInt64: Some(vfs_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        }));
        let registered = Self {
            vfs,
            data,
            name,
            budget,
        };
        // SAFETY: `vfs` stays at its address until `Drop` unregisters it; its name and
        // app data live as long (owned by `registered`).
        let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
        if rc != ffi::SQLITE_OK {
            return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None));
        }
        Ok(registered)
    }

    /// The name to open the connection with.
    pub(crate) fn name(&self) -> &std::ffi::CStr {
        &self.name
    }

    /// The connection's temporary storage.
    pub(crate) fn budget(&self) -> &Arc<TempBudget> {
        &self.budget
    }
}

impl Drop for TempVfs {
    fn drop(&mut self) {
        // SAFETY: the connection that used the VFS has closed (its owner drops it
        // first), so no file of it is open and SQLite holds no pointer to it once it is
        // unregistered (unregistering one that failed to register is a no-op). The two
        // blocks came from `Box::into_raw` and are freed once.
        unsafe {
            ffi::sqlite3_vfs_unregister(self.vfs);
            drop(Box::from_raw(self.vfs));
            drop(Box::from_raw(self.data));
        }
    }
}

/// A temporary file: SQLite's `sqlite3_file` header with our methods, then the default
/// VFS's own file, `HEADER` bytes in.
#[repr(C)]
struct TempFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    budget: *const TempBudget,
    /// The bytes charged for this file: its furthest write.
    size: u64,
}

/// The file kinds counted: the TEMP schema's database and journal, sorters' runs
/// (`TEMP_JOURNAL`), and temporary b-trees (`TRANSIENT_DB`).
const TEMPORARY: c_int =
    ffi::SQLITE_OPEN_TEMP_DB | ffi::SQLITE_OPEN_TEMP_JOURNAL | ffi::SQLITE_OPEN_TRANSIENT_DB;

/// The VFS data behind `vfs`.
///
/// # Safety
/// `vfs` must be one registered by [`TempVfs::register`] and not yet unregistered.
unsafe fn data<'a>(vfs: *mut ffi::sqlite3_vfs) -> &'a VfsData {
    // SAFETY: per the contract, pAppData points at the live `VfsData` of the TempVfs.
    unsafe { &*(*vfs).pAppData.cast::<VfsData>() }
}

unsafe extern "C" fn vfs_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite calls this with our registered VFS and a zeroed buffer of
    // `szOsFile` bytes, which is `HEADER` plus the default VFS's size.
    unsafe {
        let data = data(vfs);
        let real = data.real;
        let Some(open) = (*real).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & TEMPORARY == 0 {
            // The main database, its WAL and journal: the default VFS's file, as is.
            return open(real, name, file, flags, out_flags);
        }
        let inner = file.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>();
        let rc = open(real, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            (*file).pMethods = ptr::null();
            return rc;
        }
        ptr::write(
            file.cast::<TempFile>(),
            TempFile {
                base: ffi::sqlite3_file {
                    pMethods: &raw const TEMP_METHODS,
                },
                inner,
                budget: Arc::as_ptr(&data.budget),
                size: 0,
            },
        );
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn vfs_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    // SAFETY: delegates with the default VFS, which SQLite called us in place of.
    unsafe {
        let real = data(vfs).real;
        (*real)
            .xDelete
            .map_or(ffi::SQLITE_ERROR, |f| f(real, name, sync_dir))
    }
}

unsafe extern "C" fn vfs_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        (*real)
            .xAccess
            .map_or(ffi::SQLITE_ERROR, |f| f(real, name, flags, out))
    }
}

unsafe extern "C" fn vfs_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    size: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        (*real)
            .xFullPathname
            .map_or(ffi::SQLITE_ERROR, |f| f(real, name, size, out))
    }
}

unsafe extern "C" fn vfs_dl_open(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    // SAFETY: as `vfs_delete`. Extensions are disabled; SQLite never gets here.
    unsafe {
        let real = data(vfs).real;
        (*real).xDlOpen.map_or(ptr::null_mut(), |f| f(real, name))
    }
}

unsafe extern "C" fn vfs_dl_error(vfs: *mut ffi::sqlite3_vfs, size: c_int, out: *mut c_char) {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        if let Some(f) = (*real).xDlError {
            f(real, size, out);
        }
    }
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn vfs_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> Option<DlSym> {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        (*real).xDlSym.and_then(|f| f(real, handle, symbol))
    }
}

unsafe extern "C" fn vfs_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        if let Some(f) = (*real).xDlClose {
            f(real, handle);
        }
    }
}

unsafe extern "C" fn vfs_randomness(
    vfs: *mut ffi::sqlite3_vfs,
    size: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        (*real).xRandomness.map_or(0, |f| f(real, size, out))
    }
}

unsafe extern "C" fn vfs_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        (*real).xSleep.map_or(0, |f| f(real, micros))
    }
}

unsafe extern "C" fn vfs_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        (*real)
            .xCurrentTime
            .map_or(ffi::SQLITE_ERROR, |f| f(real, out))
    }
}

unsafe extern "C" fn vfs_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    size: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        (*real).xGetLastError.map_or(0, |f| f(real, size, out))
    }
}

unsafe extern "C" fn vfs_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as `vfs_delete`.
    unsafe {
        let real = data(vfs).real;
        if (*real).iVersion >= 2
            && let Some(f) = (*real).xCurrentTimeInt64
        {
            return f(real, out);
        }
        ffi::SQLITE_ERROR
    }
}

/// The methods of a temporary file: the default VFS's, with writes charged to the
/// budget. Version 1: no shared memory (temporary files are never in WAL mode) and no
/// memory mapping.
static TEMP_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(file_close),
    xRead: Some(file_read),
    xWrite: Some(file_write),
    xTruncate: Some(file_truncate),
    xSync: Some(file_sync),
    xFileSize: Some(file_size),
    xLock: Some(file_lock),
    xUnlock: Some(file_unlock),
    xCheckReservedLock: Some(file_check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(file_sector_size),
    xDeviceCharacteristics: Some(file_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The wrapped file and the default VFS's methods for it.
///
/// # Safety
/// `file` must be a `TempFile` opened by `vfs_open` and not yet closed.
unsafe fn unwrap<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    &'a mut TempFile,
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
) {
    // SAFETY: per the contract; the inner file was opened successfully, so its methods
    // are set.
    unsafe {
        let temp = &mut *file.cast::<TempFile>();
        let inner = temp.inner;
        (temp, inner, &*(*inner).pMethods)
    }
}

unsafe extern "C" fn file_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file it opened once.
    unsafe {
        let (temp, inner, methods) = unwrap(file);
        (*temp.budget).release(temp.size);
        temp.size = 0;
        methods.xClose.map_or(ffi::SQLITE_OK, |f| f(inner))
    }
}

unsafe extern "C" fn file_read(
    file: *mut ffi::sqlite3_file,
    buffer: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods
            .xRead
            .map_or(ffi::SQLITE_IOERR, |f| f(inner, buffer, amount, offset))
    }
}

unsafe extern "C" fn file_write(
    file: *mut ffi::sqlite3_file,
    buffer: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: delegates to the default VFS's file once the growth is charged.
    unsafe {
        let (temp, inner, methods) = unwrap(file);
        let end = u64::try_from(offset)
            .unwrap_or(0)
            .saturating_add(u64::try_from(amount).unwrap_or(0));
        if end > temp.size {
            if !(*temp.budget).charge(end - temp.size) {
                return ffi::SQLITE_TOOBIG;
            }
            temp.size = end;
        }
        methods
            .xWrite
            .map_or(ffi::SQLITE_IOERR, |f| f(inner, buffer, amount, offset))
    }
}

unsafe extern "C" fn file_truncate(
    file: *mut ffi::sqlite3_file,
    size: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (temp, inner, methods) = unwrap(file);
        let size = u64::try_from(size).unwrap_or(0);
        if size < temp.size {
            (*temp.budget).release(temp.size - size);
            temp.size = size;
        }
        methods.xTruncate.map_or(ffi::SQLITE_IOERR, |f| {
            f(inner, i64::try_from(size).unwrap_or(0))
        })
    }
}

unsafe extern "C" fn file_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods.xSync.map_or(ffi::SQLITE_OK, |f| f(inner, flags))
    }
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods
            .xFileSize
            .map_or(ffi::SQLITE_IOERR, |f| f(inner, out))
    }
}

unsafe extern "C" fn file_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods.xLock.map_or(ffi::SQLITE_OK, |f| f(inner, level))
    }
}

unsafe extern "C" fn file_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods.xUnlock.map_or(ffi::SQLITE_OK, |f| f(inner, level))
    }
}

unsafe extern "C" fn file_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods
            .xCheckReservedLock
            .map_or(ffi::SQLITE_OK, |f| f(inner, out))
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods
            .xFileControl
            .map_or(ffi::SQLITE_NOTFOUND, |f| f(inner, op, arg))
    }
}

unsafe extern "C" fn file_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods.xSectorSize.map_or(4096, |f| f(inner))
    }
}

unsafe extern "C" fn file_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: delegates to the default VFS's file.
    unsafe {
        let (_, inner, methods) = unwrap(file);
        methods.xDeviceCharacteristics.map_or(0, |f| f(inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn open(dir: &std::path::Path, vfs: &TempVfs) -> rusqlite::Result<Connection> {
        Connection::open_with_flags_and_vfs(
            dir.join("main.db"),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            vfs.name(),
        )
    }

    #[test]
    fn a_sort_past_the_budget_fails_and_the_budget_comes_back() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::InvalidPath(e.to_string().into()))?;
        // Declared first, so dropped last, after the connection, even on a panic.
        let vfs = TempVfs::register(4 << 20)?;
        let conn = open(dir.path(), &vfs)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA cache_size = -1024;
             CREATE TABLE kept (x); BEGIN; INSERT INTO kept VALUES (1);",
        )?;
        // About 40 MB of rows to sort, far past a 1 MiB cache and a 4 MiB budget.
        let sort = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40000)
                    SELECT count(*) FROM (SELECT printf('%.*c', 1000, x) AS v FROM c ORDER BY v)";
        let err = conn
            .query_row(sort, [], |row| row.get::<_, i64>(0))
            .expect_err("the sort needs more than 4 MiB of temporary storage");
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::TooBig),
            "{err}"
        );
        assert!(vfs.budget().take_refused());
        assert!(vfs.budget().peak() <= 4 << 20);
        assert_eq!(
            vfs.budget().used.load(Ordering::Relaxed),
            0,
            "closing gives it back"
        );
        // The main database is untouched by the wrapping.
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")?;
        let small: i64 = conn.query_row(
            "SELECT count(*) FROM (SELECT x FROM t ORDER BY x)",
            [],
            |row| row.get(0),
        )?;
        assert_eq!(small, 1);
        drop(conn);
        drop(vfs);
        Ok(())
    }
}
