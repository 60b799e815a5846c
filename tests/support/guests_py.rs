//! Builds the Python projectors from source with the pinned componentize-py, once per
//! test process, and hands out their paths. No `.wasm` is checked in.
//!
//! Each Python guest is a project with a `projector.toml` (the manifest `refract dev`
//! and `refract test` read); the guest is built by running that manifest's own `build`
//! command, so the command a user would run is the one tested. The component is then
//! copied to [`OUT_DIR`].
//!
//! The toolchain lives in a virtualenv beside the SDK ([`TOOLCHAIN_VENV`]), installed
//! from PyPI at the exact version and hashes of [`REQUIREMENTS`] by [`install_command`]
//! (CI runs it; see `.ci/run`). The tests never install anything themselves: a missing
//! or different toolchain fails them with that command.
//!
//! A build is skipped when its inputs (the project's and the SDK's files, the WIT
//! contract and the pins) hash to what the last build recorded, so the component's
//! bytes, and with them the host's compile cache, stay the same from run to run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The Python SDK, relative to the workspace root.
pub const PYTHON_SDK_DIR: &str = "plugins-sdk/python";

/// The virtualenv holding the pinned toolchain, relative to the workspace root.
pub const TOOLCHAIN_VENV: &str = "plugins-sdk/python/.venv";

/// The exact pins, with hashes, relative to the workspace root.
pub const REQUIREMENTS: &str = "plugins-sdk/python/requirements.txt";

/// Where the components are copied, relative to the workspace root.
pub const OUT_DIR: &str = "target/guests-py";

/// Every Python guest: (name, project folder relative to the workspace root).
pub const PY_GUESTS: &[(&str, &str)] = &[
    ("balances-py", "example-plugins/balances-py"),
    ("py-probe", "tests/fixtures/py-probe"),
    ("order-saga-py", "example-plugins/order-saga-py"),
];

/// `projector.toml`, as the shared contract of issue 11 defines it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The projector's name, as its metadata says.
    pub name: String,
    /// The build command (argv), run in the project folder.
    pub build: Vec<String>,
    /// The component the build writes, relative to the project folder.
    pub component: String,
    /// What `refract dev` watches for rebuilds.
    pub watch: Vec<String>,
    /// Fixture files or folders for `refract test`.
    pub tests: Vec<String>,
    /// `"projector"` (the default) or `"reactor"`.
    #[serde(default)]
    pub kind: Option<String>,
}

impl Manifest {
    /// Reads `<project>/projector.toml`.
    pub fn read(project: &Path) -> Result<Self, String> {
        let path = project.join("projector.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Runs `argv` in `dir`, as `refract dev` runs a manifest's build, and returns its
/// output; fails with that output unless it succeeds. A program given as a relative
/// path is taken relative to `dir`.
pub fn run_in(dir: &Path, argv: &[String]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    let program = if program.contains('/') {
        dir.join(program)
    } else {
        PathBuf::from(program)
    };
    let output = Command::new(&program)
        .args(args)
        .current_dir(dir)
        // componentize-py adds the active virtualenv's site-packages to the path; the
        // projector must not pick up whatever the caller has installed.
        .env_remove("VIRTUAL_ENV")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`{}` failed in {} ({}):\n{text}",
            argv.join(" "),
            dir.display(),
            output.status
        ))
    }
}

/// The command that installs the pinned toolchain, run from the workspace root.
pub fn install_command() -> String {
    format!(
        "python3 -m venv {TOOLCHAIN_VENV} && {TOOLCHAIN_VENV}/bin/pip install \
         --require-hashes -r {REQUIREMENTS}"
    )
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    refract::guest_build::workspace_root()
}

/// The compile cache the Python components share across test processes: compiling
/// one takes many seconds, loading it from the cache a fraction of one.
pub fn compile_cache_dir() -> PathBuf {
    workspace_root().join(OUT_DIR).join("compile-cache")
}

/// The path of Python guest `name`'s component. The first call in a process checks
/// the toolchain and builds every Python guest.
///
/// # Panics
/// If `name` is not a Python guest, the toolchain is missing (with the command that
/// installs it), or a build fails (with componentize-py's output).
pub fn python_guest(name: &str) -> PathBuf {
    assert!(
        PY_GUESTS.iter().any(|(guest, _)| *guest == name),
        "unknown Python guest {name:?}; the Python guests are {PY_GUESTS:?}"
    );
    match build_all() {
        Ok(dir) => dir.join(format!("{}.wasm", name.replace('-', "_"))),
        Err(message) => panic!("{message}"),
    }
}

/// The bytes of Python guest `name`'s component.
///
/// # Panics
/// As [`python_guest`], or if the file cannot be read.
pub fn python_guest_bytes(name: &str) -> Vec<u8> {
    let path = python_guest(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Builds every Python guest once; later calls return the first outcome.
fn build_all() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        toolchain(&root)?;
        let out = root.join(OUT_DIR);
        std::fs::create_dir_all(&out)
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        // The builds are independent and each mostly single-threaded: run them side by
        // side.
        std::thread::scope(|scope| {
            let builds: Vec<_> = PY_GUESTS
                .iter()
                .map(|guest| scope.spawn(|| build(&root, &out, guest)))
                .collect();
            builds
                .into_iter()
                .map(|build| {
                    build
                        .join()
                        .unwrap_or_else(|_| Err("a build panicked".into()))
                })
                .collect::<Result<Vec<()>, String>>()
        })?;
        Ok(out)
    })
}

/// The toolchain's virtualenv, once checked to hold the pinned componentize-py.
///
/// # Panics
/// If it does not, with the command that installs it.
pub fn checked_venv() -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match CHECKED
        .get_or_init(|| toolchain(&workspace_root()).map(|_| workspace_root().join(TOOLCHAIN_VENV)))
    {
        Ok(venv) => venv.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// The pinned componentize-py version, read from [`REQUIREMENTS`].
fn pinned_version(root: &Path) -> Result<String, String> {
    let path = root.join(REQUIREMENTS);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("componentize-py=="))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
        .filter(|version| !version.is_empty())
        .ok_or_else(|| format!("{} pins no `componentize-py==` version", path.display()))
}

/// The toolchain's `componentize-py`, checked to be the pinned version.
fn toolchain(root: &Path) -> Result<PathBuf, String> {
    let pinned = pinned_version(root)?;
    let componentize = root
        .join(TOOLCHAIN_VENV)
        .join("bin")
        .join("componentize-py");
    let install = format!(
        "install it from the workspace root with:\n    {}",
        install_command()
    );
    let output = Command::new(&componentize)
        .arg("--version")
        .output()
        .map_err(|e| {
            let python = Command::new("python3").arg("--version").output();
            let needs_python = if python.is_ok_and(|output| output.status.success()) {
                ""
            } else {
                "python3 is not on PATH either: install Python 3.10 or later with venv and \
                 pip first (`apt-get install -y python3 python3-venv python3-pip`); then "
            };
            format!(
                "the Python projector tests need componentize-py {pinned}, which is not \
                 installed at {} ({e}); {needs_python}{install}",
                componentize.display()
            )
        })?;
    let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || found != format!("componentize-py {pinned}") {
        return Err(format!(
            "{} reports {found:?}, but {REQUIREMENTS} pins componentize-py {pinned}; {install}",
            componentize.display()
        ));
    }
    Ok(componentize)
}

/// Builds one guest with its manifest's command, unless its inputs have not changed.
fn build(root: &Path, out: &Path, &(name, dir): &(&str, &str)) -> Result<(), String> {
    let output = out.join(format!("{}.wasm", name.replace('-', "_")));
    let stamp = output.with_extension("inputs-sha256");
    let inputs = inputs_hash(root, dir)?;
    let fresh = std::fs::read_to_string(&stamp).is_ok_and(|recorded| recorded == inputs);
    if fresh && output.is_file() {
        return Ok(());
    }
    let project = root.join(dir);
    let manifest = Manifest::read(&project)?;
    run_in(&project, &manifest.build)
        .map_err(|e| format!("building the Python projector `{name}` failed: {e}"))?;
    // Copied under a temporary name and renamed, so that another test process never
    // loads a half-written component.
    let partial = out.join(format!("{name}.{}.partial", std::process::id()));
    std::fs::copy(project.join(&manifest.component), &partial)
        .and_then(|_| std::fs::rename(&partial, &output))
        .and_then(|()| std::fs::write(&stamp, &inputs))
        .map_err(|e| {
            format!(
                "cannot copy {} to {}: {e}",
                manifest.component,
                output.display()
            )
        })
}

/// A digest of everything a guest's component is built from.
fn inputs_hash(root: &Path, dir: &str) -> Result<String, String> {
    let mut files = Vec::new();
    for folder in [dir, PYTHON_SDK_DIR, "wit"] {
        collect(&root.join(folder), &mut files)?;
    }
    files.push(root.join(REQUIREMENTS));
    files.sort();
    digest_files(&files)
}

/// A digest of `files` (sorted by the caller): each one's path, length and bytes. Shared
/// with the TypeScript guests' build cache.
pub fn digest_files(files: &[PathBuf]) -> Result<String, String> {
    let mut hasher = Sha256::new();
    for file in files {
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The `.py`, `.toml` and `.wit` files under `dir`, skipping build output, the
/// virtualenv, caches and the SDK's own tests.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            let skipped = ["__pycache__", "tests", "dist"];
            if !name.starts_with('.') && !skipped.contains(&name) {
                collect(&path, files)?;
            }
        } else if [".py", ".toml", ".wit"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            files.push(path);
        }
    }
    Ok(())
}
