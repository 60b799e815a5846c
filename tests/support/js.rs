//! Builds the JavaScript fixture projector (`tests/fixtures/js-default`) with
//! componentize-js and its **default** features, once per content: the pinned toolchain
//! comes from the fixture's `package-lock.json` (`npm ci`), and the component is kept in
//! `target/js-guests/` under a hash of its inputs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The install command for what the build needs, for failure messages.
pub const NODE_INSTALL: &str = "apt-get install -y nodejs npm";

/// The component, built on first use.
///
/// # Panics
/// If node or npm is missing (naming the install command), or the build fails (with
/// its output).
pub fn default_js_component() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.output().map_err(|error| {
        format!("cannot run {what}: {error}; install Node.js and npm: `{NODE_INSTALL}`")
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn build() -> Result<PathBuf, String> {
    let root = refract::guest_build::workspace_root();
    let fixture = root.join("tests/fixtures/js-default");
    run(Command::new("node").arg("--version"), "`node --version`")?;
    run(Command::new("npm").arg("--version"), "`npm --version`")?;
    let tool = fixture.join("node_modules/.bin/componentize-js");
    if !tool.is_file() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&fixture),
            "`npm ci` in tests/fixtures/js-default",
        )?;
    }
    let mut hasher = Sha256::new();
    for input in ["projector.js", "package-lock.json"] {
        hasher.update(read(&fixture.join(input))?);
    }
    hasher.update(read(&root.join("wit/projector.wit"))?);
    let hash = hex::encode(hasher.finalize());
    let out_dir = root.join("target/js-guests");
    let out = out_dir.join(format!("js-default-{}.wasm", &hash[..16]));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let partial = out.with_extension(format!("{}.partial", std::process::id()));
    run(
        Command::new(&tool)
            .arg("projector.js")
            .arg("--wit")
            .arg(root.join("wit"))
            .args(["--world-name", "projector", "-o"])
            .arg(&partial)
            .current_dir(&fixture),
        "componentize-js",
    )?;
    std::fs::rename(&partial, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
