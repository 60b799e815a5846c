//! Running the `refract` binary the way a user does, for the tests of its commands.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `refract <args>` in `cwd`, not influenced by the caller's `REFRACT_*` or `RUST_LOG`
/// variables, with no stdin.
pub fn refract(cwd: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refract"));
    command
        .current_dir(cwd)
        .args(args)
        .env_remove("REFRACT_DATA")
        .env_remove("REFRACT_CONFIG")
        .env_remove("REFRACT_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// A finished command's exit code and output, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `refract <args>` in `cwd` and returns its stdout and stderr; fails with both
/// unless it exits 0.
///
/// # Errors
/// If the binary cannot be started or exits with another code.
pub fn refract_ok(cwd: &Path, args: &[&str]) -> Result<String, String> {
    let output = refract(cwd, args)
        .output()
        .map_err(|e| format!("cannot run refract {args:?}: {e}"))?;
    if output.status.success() {
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    } else {
        Err(format!("refract {args:?} failed:\n{}", text(&output)))
    }
}
