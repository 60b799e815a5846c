//! Builds the guest components from source, once per test process, and hands out
//! their paths. No `.wasm` is checked in: the tests compile every guest crate (the
//! example projectors and the hostile fixtures) for `wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Every guest crate, by package name.
pub const GUESTS: &[&str] = &[
    "balances",
    "cars-v1",
    "cars-v2",
    "order-summary",
    "loop-forever",
    "memory-bomb",
    "deep-recursion",
    "huge-output",
    "sql-attacks",
    "wasi-escape",
    "wrong-world",
    "sql-slow",
    "sql-memory",
    "temp-fill",
    "host-tables",
    "log-flood",
    "order-saga",
    "emit-loop",
    "balances-v01",
    "balances-all-fields",
    "packed-writes",
];

/// The path of guest `name`'s component (for example `"balances"`,
/// `"cars-v1"`, `"sql-attacks"`). The first call in a process builds all guests.
///
/// # Panics
/// If `name` is not a guest crate, or the build fails (with cargo's output).
pub fn guest(name: &str) -> PathBuf {
    assert!(
        GUESTS.contains(&name),
        "unknown guest {name:?}; the guests are {GUESTS:?}"
    );
    let dir = match build_all() {
        Ok(dir) => dir,
        Err(message) => panic!("{message}"),
    };
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "guest {name:?} built, but {} does not exist",
        path.display()
    );
    path
}

/// The bytes of guest `name`'s component.
///
/// # Panics
/// As [`guest`], or if the file cannot be read.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    let path = guest(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Builds every guest once; later calls return the first outcome, so a failed
/// build fails every test that needs a guest with the same message.
fn build_all() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> Result<PathBuf, String> {
    // The same build `refract demo` and `refract bench` use.
    let paths = refract::guest_build::build_guests(GUESTS).map_err(|error| error.to_string())?;
    paths
        .first()
        .and_then(|path| path.parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| "no guest was built".to_owned())
}
