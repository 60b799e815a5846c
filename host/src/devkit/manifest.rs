//! `projector.toml`: the project manifest at the root of a projector project, read by
//! `refract test` and `refract dev`.
//!
//! ```toml
//! name = "demo"                               # the projector's name, as its metadata says
//! build = ["npm", "run", "--silent", "build"] # argv, run in the project folder
//! component = "dist/demo.wasm"                # the component the build writes
//! watch = ["src", "package.json"]             # what `refract dev` watches for rebuilds
//! tests = ["tests"]                           # fixture files or folders for `refract test`
//! ```
//!
//! Relative paths are taken from the folder holding the manifest. Unknown keys are
//! errors that name the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "projector.toml";

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// There is no manifest in the folder.
    #[error(
        "no {MANIFEST_FILE} in {dir}: run this in a projector project (`refract new <name>` creates one), pass --dir, or name the component with --plugin"
    )]
    Missing {
        /// The folder looked in.
        dir: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid manifest; the message names the key and line.
    #[error("invalid {path}: {message}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A parsed `projector.toml`, its paths resolved against its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The folder holding the manifest: the project's root, where `build` runs.
    pub root: PathBuf,
    /// The projector's name.
    pub name: String,
    /// The build command, as argv.
    pub build: Vec<String>,
    /// The component the build writes.
    pub component: PathBuf,
    /// What `refract dev` watches.
    pub watch: Vec<PathBuf>,
    /// Fixture files or folders for `refract test`.
    pub tests: Vec<PathBuf>,
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    build: Vec<String>,
    component: PathBuf,
    #[serde(default)]
    watch: Vec<PathBuf>,
    #[serde(default)]
    tests: Vec<PathBuf>,
}

impl Manifest {
    /// Reads `projector.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::Missing {
                    dir: dir.to_owned(),
                });
            }
            Err(source) => return Err(ManifestError::Read { path, source }),
        };
        Self::parse(&text, &path)
    }

    /// Parses manifest text; `path` locates the project and is named in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawManifest =
            toml::from_str(text).map_err(|error| invalid(error.to_string().trim().to_owned()))?;
        if raw.build.is_empty() || raw.build[0].trim().is_empty() {
            return Err(invalid(
                "`build` must name a command, e.g. build = [\"cargo\", \"build\", \"--release\"]"
                    .into(),
            ));
        }
        if raw.name.is_empty() {
            return Err(invalid("`name` must not be empty".into()));
        }
        let root = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let resolve = |relative: PathBuf| root.join(relative);
        Ok(Manifest {
            name: raw.name,
            build: raw.build,
            component: resolve(raw.component),
            watch: raw.watch.into_iter().map(resolve).collect(),
            tests: raw.tests.into_iter().map(resolve).collect(),
            root: root.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_from_the_manifest_folder() {
        let manifest = Manifest::parse(
            "name = \"demo\"\nbuild = [\"npm\", \"run\", \"build\"]\ncomponent = \"dist/demo.wasm\"\nwatch = [\"src\"]\ntests = [\"tests\"]\n",
            Path::new("/work/demo/projector.toml"),
        )
        .expect("valid");
        assert_eq!(manifest.root, Path::new("/work/demo"));
        assert_eq!(manifest.component, Path::new("/work/demo/dist/demo.wasm"));
        assert_eq!(manifest.watch, [PathBuf::from("/work/demo/src")]);
        assert_eq!(manifest.tests, [PathBuf::from("/work/demo/tests")]);
    }

    #[test]
    fn unknown_keys_and_empty_builds_are_named() {
        let error = Manifest::parse(
            "name = \"d\"\nbuild = [\"x\"]\ncomponent = \"a.wasm\"\nwatches = []\n",
            Path::new("p/projector.toml"),
        )
        .expect_err("typo");
        assert!(error.to_string().contains("watches"), "{error}");
        let error = Manifest::parse(
            "name = \"d\"\nbuild = []\ncomponent = \"a.wasm\"\n",
            Path::new("p/projector.toml"),
        )
        .expect_err("no command");
        assert!(error.to_string().contains("`build`"), "{error}");
    }
}
