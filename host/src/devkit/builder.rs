//! Running a project's build command (`build` in `projector.toml`), in the project folder,
//! with its output captured: a failed build's message is the compiler's own.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::manifest::Manifest;

/// The most of a build's output kept for its error message: the end, where compilers
/// put their summary.
pub const MAX_BUILD_OUTPUT_BYTES: usize = 256 << 10;

/// Why a build did not produce the component.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The command could not be started.
    #[error("cannot run the build command `{command}` in {dir}: {source}{hint}")]
    Start {
        /// The command line.
        command: String,
        /// Where it was run.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
        /// How to install what is missing, when the command is not found.
        hint: String,
    },
    /// The command ran and failed.
    #[error("the build `{command}` failed ({status}):\n{output}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// Its output (stdout and stderr), the end of it if long.
        output: String,
    },
    /// The command succeeded but the component is not where the manifest says.
    #[error(
        "the build `{command}` succeeded but wrote no component at {path}; check `component` in projector.toml"
    )]
    NoComponent {
        /// The command line.
        command: String,
        /// Where the component was expected.
        path: PathBuf,
    },
}

/// A successful build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The component.
    pub component: PathBuf,
    /// How long the build took.
    pub took: Duration,
}

/// Runs the manifest's build command in its folder and checks that the component exists.
pub fn build(manifest: &Manifest) -> Result<Built, BuildError> {
    let command_line = manifest.build.join(" ");
    let started = Instant::now();
    let mut command = Command::new(&manifest.build[0]);
    command
        .args(&manifest.build[1..])
        .current_dir(&manifest.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| BuildError::Start {
        hint: install_hint(&manifest.build[0], &source),
        command: command_line.clone(),
        dir: manifest.root.clone(),
        source,
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        return Err(BuildError::Failed {
            command: command_line,
            status: "no output pipes".into(),
            output: String::new(),
        });
    };
    let out = std::thread::spawn(move || tail(stdout));
    let err = std::thread::spawn(move || tail(stderr));
    let status = child.wait();
    let output = [out.join(), err.join()]
        .into_iter()
        .filter_map(Result::ok)
        .filter(|text| !text.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(BuildError::Failed {
                command: command_line,
                status: status.to_string(),
                output: output.trim_end().to_owned(),
            });
        }
        Err(error) => {
            return Err(BuildError::Failed {
                command: command_line,
                status: format!("could not be waited for: {error}"),
                output,
            });
        }
    }
    if !manifest.component.is_file() {
        return Err(BuildError::NoComponent {
            command: command_line,
            path: manifest.component.clone(),
        });
    }
    Ok(Built {
        component: manifest.component.clone(),
        took: started.elapsed(),
    })
}

/// Reads a stream to its end, keeping the last [`MAX_BUILD_OUTPUT_BYTES`].
fn tail(mut stream: impl Read) -> String {
    let mut kept = Vec::new();
    let mut chunk = [0_u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                kept.extend_from_slice(&chunk[..read]);
                if kept.len() > 2 * MAX_BUILD_OUTPUT_BYTES {
                    kept.drain(..kept.len() - MAX_BUILD_OUTPUT_BYTES);
                }
            }
        }
    }
    let start = kept.len().saturating_sub(MAX_BUILD_OUTPUT_BYTES);
    String::from_utf8_lossy(&kept[start..]).into_owned()
}

/// What to install when a build tool is missing.
fn install_hint(program: &str, error: &std::io::Error) -> String {
    if error.kind() != std::io::ErrorKind::NotFound {
        return String::new();
    }
    match program {
        "cargo" => "; install Rust with rustup (https://rustup.rs)".into(),
        "npm" | "npx" | "node" => {
            "; install Node.js 20 or later (`apt-get install -y nodejs npm`)".into()
        }
        "python3" | "python" | "pip" | "componentize-py" => {
            "; install Python 3 and pip (`apt-get install -y python3 python3-pip python3-venv`)"
                .into()
        }
        _ => format!("; is `{program}` installed and on PATH?"),
    }
}
