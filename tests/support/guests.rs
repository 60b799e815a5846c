//! Builds the guest components from source, once per test process, and hands out
//! their paths. No `.wasm` is checked in: the tests compile every guest crate (the
//! example projectors and the hostile fixtures) for `wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::process::Command;
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
];

/// The guests' own target directory, so building them never waits on, or
/// invalidates, the host's build.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target").join("guests")
}

/// The workspace root: these tests are compiled as part of package `refract` in
/// `host/`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

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
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = target_dir();
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--profile", "guest", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build (coverage instrumentation, a native
        // target-cpu) break or slow the wasm build, and would change its cache key.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for guest in GUESTS {
        command.args(["-p", guest]);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!(
            "building the guest components failed ({}): {command:?}\n\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(target_dir.join("wasm32-wasip2").join("guest"))
}
