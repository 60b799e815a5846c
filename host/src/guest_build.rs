//! Building the example projectors from the source tree, for commands that need a
//! component and were not given one (`refract bench`, `refract demo`).
//!
//! No `.wasm` is checked in: a component is compiled from its crate under
//! `example-plugins/` with the workspace's `guest` profile, into a target directory of
//! its own (`target/guests`) so that it never waits on, or invalidates, the host's build.
//! This is the same build the integration tests run (`tests/support/guests.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo profile guest components are built with (see the workspace `Cargo.toml`).
pub const GUEST_PROFILE: &str = "guest";

/// The target guest components are built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// The folder of example projector crates, relative to the workspace root.
pub const EXAMPLES_DIR: &str = "example-plugins";

/// Every folder of guest crates, relative to the workspace root: the examples, and the
/// hostile fixtures the tests build.
pub const GUEST_DIRS: [&str; 2] = [EXAMPLES_DIR, "tests/fixtures"];

/// Why the example projectors could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestBuildError {
    /// This binary was not run from a Refract source tree, so there is nothing to build.
    #[error(
        "no Refract source tree at {root}: the example projector `{package}` is built from \
         `{EXAMPLES_DIR}/{package}`; pass the component's path instead (for example \
         `--plugin balances.wasm`)"
    )]
    NoSourceTree {
        /// Where the workspace was expected.
        root: PathBuf,
        /// The package asked for.
        package: String,
    },
    /// cargo could not be started.
    #[error("cannot run `{cargo}` to build the example projectors: {source}")]
    Cargo {
        /// The cargo executable tried.
        cargo: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// cargo ran and failed.
    #[error(
        "building the example projectors failed ({status}); is the `{GUEST_TARGET}` target \
         installed (`rustup target add {GUEST_TARGET}`)?\n{output}"
    )]
    Failed {
        /// cargo's exit status.
        status: std::process::ExitStatus,
        /// cargo's stderr.
        output: String,
    },
    /// cargo succeeded but a component is not where it should be.
    #[error("cargo built `{package}`, but {path} does not exist")]
    Missing {
        /// The package.
        package: String,
        /// The expected component.
        path: PathBuf,
    },
}

/// The workspace root of the source tree this binary was built from.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Builds the example projector crates `packages` (package names such as `balances` or
/// `cars-v1`) for [`GUEST_TARGET`] in one cargo invocation, and returns their component
/// paths in the same order. Cargo skips what is up to date, so a second call costs a
/// fraction of a second.
///
/// ```no_run
/// let paths = refract::guest_build::build_guests(&["balances"])?;
/// println!("{}", paths[0].display());
/// # Ok::<(), refract::guest_build::GuestBuildError>(())
/// ```
pub fn build_guests(packages: &[&str]) -> Result<Vec<PathBuf>, GuestBuildError> {
    let root = workspace_root();
    for package in packages {
        let found = GUEST_DIRS
            .iter()
            .any(|dir| root.join(dir).join(package).join("Cargo.toml").is_file());
        if !found {
            return Err(GuestBuildError::NoSourceTree {
                root,
                package: (*package).to_owned(),
            });
        }
    }
    let target_dir = root.join("target").join("guests");
    // `cargo run` tells its child which cargo it is; fall back to the one on PATH.
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let mut command = Command::new(&cargo);
    command
        .current_dir(&root)
        .args(["build", "--quiet", "--profile", GUEST_PROFILE])
        .args(["--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build (a native target-cpu, coverage) break or slow
        // the wasm build, and would change its cache key.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for package in packages {
        command.args(["-p", package]);
    }
    let output = command.output().map_err(|source| GuestBuildError::Cargo {
        cargo: cargo.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(GuestBuildError::Failed {
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let out_dir = target_dir.join(GUEST_TARGET).join(GUEST_PROFILE);
    packages
        .iter()
        .map(|package| {
            let path = out_dir.join(format!("{}.wasm", package.replace('-', "_")));
            if path.is_file() {
                Ok(path)
            } else {
                Err(GuestBuildError::Missing {
                    package: (*package).to_owned(),
                    path,
                })
            }
        })
        .collect()
}
