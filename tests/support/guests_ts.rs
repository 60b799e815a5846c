//! Builds the TypeScript guests from source with their pinned npm toolchain, once per
//! test process, and runs npm in a project folder. No `.wasm` is checked in: `npm ci`
//! installs exactly what the project's `package-lock.json` pins (from the npm registry,
//! nothing downloaded at build time), and `npm run build` makes the component.
//!
//! Node.js and npm must be installed; if they are not, every test that needs them fails
//! with the install command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The oldest Node.js major version the SDK supports.
pub const MIN_NODE_MAJOR: u32 = 20;

/// How to install what the TypeScript guests need, for failure messages.
pub const INSTALL_HINT: &str =
    "install Node.js 20 or later and npm (Debian: `apt-get install -y nodejs npm`)";

/// Every TypeScript guest: its folder under `example-plugins/` and the component its
/// build writes, relative to that folder.
pub const TS_GUESTS: &[(&str, &str)] = &[("balances-ts", "dist/balances.wasm")];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    refract::guest_build::workspace_root()
}

/// The TypeScript SDK's folder.
pub fn sdk_dir() -> PathBuf {
    workspace_root().join("plugins-sdk").join("typescript")
}

/// One guest's build outcome, computed once: its component, or why it failed.
type Build = OnceLock<Result<PathBuf, String>>;

/// The path of TypeScript guest `name`'s component (for example `"balances-ts"`). The
/// first call for a guest in a process runs `npm ci` and `npm run build` in its folder.
///
/// # Panics
/// If `name` is not a TypeScript guest, Node.js or npm is missing (naming the install
/// command), or the install or build fails (with npm's output).
pub fn ts_guest(name: &str) -> PathBuf {
    let Some(&(_, component)) = TS_GUESTS.iter().find(|(guest, _)| *guest == name) else {
        panic!("unknown TypeScript guest {name:?}; the guests are {TS_GUESTS:?}");
    };
    let cell = {
        static BUILT: OnceLock<Mutex<HashMap<String, Arc<Build>>>> = OnceLock::new();
        let mut builds = BUILT
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(builds.entry(name.to_owned()).or_default())
    };
    let built = cell.get_or_init(|| {
        let dir = workspace_root().join("example-plugins").join(name);
        install(&dir)?;
        npm(&dir, &["run", "--silent", "build"])?;
        let path = dir.join(component);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "`npm run build` in {} succeeded, but {} does not exist",
                dir.display(),
                path.display()
            ))
        }
    });
    match built {
        Ok(path) => path.clone(),
        Err(message) => panic!("building the TypeScript guest {name:?} failed: {message}"),
    }
}

/// The bytes of TypeScript guest `name`'s component.
///
/// # Panics
/// As [`ts_guest`], or if the file cannot be read.
pub fn ts_guest_bytes(name: &str) -> Vec<u8> {
    let path = ts_guest(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `npm ci` in `dir`: exactly the pinned toolchain from its lockfile, into a fresh
/// `node_modules`, so a change to the SDK's source is picked up too.
///
/// # Errors
/// As [`npm`].
pub fn install(dir: &Path) -> Result<String, String> {
    npm(dir, &["ci", "--no-audit", "--no-fund", "--loglevel=error"])
}

/// Runs `npm <args>` in `dir` and returns its stdout and stderr.
///
/// # Errors
/// If Node.js or npm is missing or too old (naming the install command), or npm fails
/// (with its output).
pub fn npm(dir: &Path, args: &[&str]) -> Result<String, String> {
    check_node()?;
    let output = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("cannot run npm in {}: {e}; {INSTALL_HINT}", dir.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`npm {}` in {} failed ({}):\n{text}",
            args.join(" "),
            dir.display(),
            output.status
        ))
    }
}

/// Checks once per process that Node.js (new enough) and npm are installed.
fn check_node() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let version = |program: &str| -> Result<String, String> {
                let output = Command::new(program)
                    .arg("--version")
                    .output()
                    .map_err(|e| format!("`{program}` is not installed ({e}); {INSTALL_HINT}"))?;
                if !output.status.success() {
                    return Err(format!("`{program} --version` failed; {INSTALL_HINT}"));
                }
                Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
            };
            let node = version("node")?;
            version("npm")?;
            let major: u32 = node
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|major| major.parse().ok())
                .ok_or_else(|| {
                    format!("cannot read the Node.js version {node:?}; {INSTALL_HINT}")
                })?;
            if major < MIN_NODE_MAJOR {
                return Err(format!("Node.js {node} is too old; {INSTALL_HINT}"));
            }
            Ok(())
        })
        .clone()
}
