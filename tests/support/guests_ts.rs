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
pub const TS_GUESTS: &[(&str, &str)] = &[
    ("balances-ts", "dist/balances.wasm"),
    ("order-saga-ts", "dist/order-saga-ts.wasm"),
];

/// TypeScript test fixtures: projectors under `tests/fixtures/<name>/src/index.ts` that
/// import the SDK from the source tree, built with the SDK's own `refract-build` and
/// toolchain (no `npm ci` of their own).
pub const TS_FIXTURES: &[&str] = &["ts-probe"];

/// Where fixture components (and their bundles) are written, relative to the
/// workspace root.
pub const FIXTURE_OUT_DIR: &str = "target/guests-ts";

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

/// `npm ci` in the SDK's folder, once per process: the SDK's native tests and the
/// fixture builds share its `node_modules`, which `npm ci` deletes and reinstalls, so
/// it must not run again while another test uses it.
///
/// # Errors
/// As [`npm`].
pub fn install_sdk() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| install(&sdk_dir()).map(drop))
        .clone()
}

/// The bytes of TypeScript fixture `name` (see [`TS_FIXTURES`]), built once per process,
/// and not at all when its inputs (the fixture, the SDK's source and lockfile, the WIT
/// contract) hash to what the last build recorded.
///
/// # Panics
/// If `name` is not a fixture, Node.js or npm is missing (naming the install command),
/// or the install or build fails (with the output).
pub fn ts_fixture_bytes(name: &str) -> Vec<u8> {
    assert!(
        TS_FIXTURES.contains(&name),
        "unknown TypeScript fixture {name:?}; the fixtures are {TS_FIXTURES:?}"
    );
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let mut builds = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let built = builds
        .entry(name.to_owned())
        .or_insert_with(|| build_fixture(name));
    match built {
        Ok(path) => {
            std::fs::read(&*path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        }
        Err(message) => panic!("building the TypeScript fixture {name:?} failed: {message}"),
    }
}

fn build_fixture(name: &str) -> Result<PathBuf, String> {
    let root = workspace_root();
    let out_dir = root.join(FIXTURE_OUT_DIR);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let output = out_dir.join(format!("{name}.wasm"));
    let stamp = output.with_extension("inputs-sha256");
    let project = root.join("tests").join("fixtures").join(name);
    let inputs = inputs_hash(&root, &project)?;
    if std::fs::read_to_string(&stamp).is_ok_and(|recorded| recorded == inputs) && output.is_file()
    {
        return Ok(output);
    }
    install_sdk()?;
    check_node()?;
    let build = sdk_dir().join("bin").join("refract-build.mjs");
    let partial = out_dir.join(format!("{name}.{}.partial.wasm", std::process::id()));
    let result = Command::new("node")
        .arg(&build)
        .arg(project.join("src").join("index.ts"))
        .arg("--out")
        .arg(&partial)
        .arg("--wit")
        .arg(root.join("wit"))
        .current_dir(&project)
        .output()
        .map_err(|e| format!("cannot run node: {e}; {INSTALL_HINT}"))?;
    if !result.status.success() {
        return Err(format!(
            "`node {} …` failed ({}):\n{}{}",
            build.display(),
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    // Renamed into place, so that another test process never loads a half-written
    // component.
    std::fs::rename(&partial, &output)
        .and_then(|()| std::fs::write(&stamp, &inputs))
        .map_err(|e| format!("cannot move {} into place: {e}", partial.display()))?;
    Ok(output)
}

/// A digest of everything a fixture's component is built from.
fn inputs_hash(root: &Path, project: &Path) -> Result<String, String> {
    let sdk = sdk_dir();
    let mut files = vec![sdk.join("package-lock.json")];
    for dir in [
        project.join("src"),
        sdk.join("src"),
        sdk.join("bin"),
        root.join("wit"),
    ] {
        collect(&dir, &mut files)?;
    }
    files.sort();
    super::guests_py::digest_files(&files)
}

/// Every file under `dir`, recursively.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
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
