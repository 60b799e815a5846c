//! `projector.toml`: the project manifest at the root of a projector project, read by
//! `refract test` and `refract dev`.
//!
//! ```toml
//! name = "demo"                               # the projector's name, as its metadata says
//! build = ["npm", "run", "--silent", "build"] # argv, run in the project folder
//! component = "dist/demo.wasm"                # the component the build writes
//! watch = ["src", "package.json"]             # what `refract dev` watches for rebuilds
//! tests = ["tests"]                           # fixture files or folders for `refract test`
//! kind = "projector"                          # optional: "projector" (the default) or "reactor"
//! ```
//!
//! Relative paths are taken from the folder holding the manifest. Unknown keys are
//! errors that name the key.
//!
//! A reactor project (`refract new --kind reactor`) keeps the same file, with
//! `kind = "reactor"`, so that its name, build command and component are written down
//! in one place. `refract test` and `refract dev` run projectors only: a golden fixture
//! compares read-model rows and the dev loop diffs a read model, neither of which says
//! what a reactor emitted. They refuse a reactor project with
//! [`ManifestError::NotAProjector`], which names the manifest and the way a reactor is
//! built, tested and deployed instead.

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
    /// The project is a reactor, and the command runs projectors only.
    #[error(
        "{path} says `kind = \"reactor\"`: `refract {command}` runs projectors only (its golden fixtures and read-model diff cannot check what a reactor emits). Build the reactor with `{build}`, run its native tests (see its README.md), and deploy {component} with `refract deploy` to a running host (or into the plugins folder of `refract run`)"
    )]
    NotAProjector {
        /// The manifest.
        path: PathBuf,
        /// The command that refused it (`test`, `dev`).
        command: &'static str,
        /// The project's build command, as one line.
        build: String,
        /// The component the build writes.
        component: PathBuf,
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

/// What a project builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A projector: events in, a read model out.
    #[default]
    Projector,
    /// A reactor (a saga, a process manager): events in, events and timers out.
    Reactor,
}

impl Kind {
    /// The word for it, as `kind` in the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Projector => "projector",
            Kind::Reactor => "reactor",
        }
    }
}

/// A parsed `projector.toml`, its paths resolved against its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The folder holding the manifest: the project's root, where `build` runs.
    pub root: PathBuf,
    /// The projector's (or reactor's) name.
    pub name: String,
    /// A projector or a reactor.
    pub kind: Kind,
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
    #[serde(default)]
    kind: Kind,
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
            kind: raw.kind,
            build: raw.build,
            component: resolve(raw.component),
            watch: raw.watch.into_iter().map(resolve).collect(),
            tests: raw.tests.into_iter().map(resolve).collect(),
            root: root.clone(),
        })
    }
}

impl Manifest {
    /// Refuses a reactor project for `refract <command>`, which runs projectors only.
    pub fn require_projector(&self, command: &'static str) -> Result<(), ManifestError> {
        match self.kind {
            Kind::Projector => Ok(()),
            Kind::Reactor => Err(ManifestError::NotAProjector {
                path: self.root.join(MANIFEST_FILE),
                command,
                build: self.build.join(" "),
                component: self.component.clone(),
            }),
        }
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
        assert_eq!(manifest.kind, Kind::Projector, "the default");
        assert!(manifest.require_projector("test").is_ok());
    }

    #[test]
    fn a_reactor_project_is_refused_with_the_way_to_run_it() {
        let manifest = Manifest::parse(
            "name = \"saga\"\nkind = \"reactor\"\nbuild = [\"npm\", \"run\", \"build\"]\ncomponent = \"dist/saga.wasm\"\n",
            Path::new("/work/saga/projector.toml"),
        )
        .expect("valid");
        assert_eq!(manifest.kind, Kind::Reactor);
        let refused = manifest.require_projector("dev").expect_err("a reactor");
        let message = refused.to_string();
        for part in [
            "/work/saga/projector.toml",
            "`refract dev` runs projectors only",
            "`npm run build`",
            "/work/saga/dist/saga.wasm",
            "refract deploy",
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        let error = Manifest::parse(
            "name = \"d\"\nkind = \"saga\"\nbuild = [\"x\"]\ncomponent = \"a.wasm\"\n",
            Path::new("p/projector.toml"),
        )
        .expect_err("no such kind");
        assert!(error.to_string().contains("reactor"), "{error}");
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
