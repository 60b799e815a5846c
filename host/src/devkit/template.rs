//! `refract new`: a projector or reactor project from a template embedded in the binary.
//!
//! The templates are the folders `plugins-sdk/templates/<language>/` (projectors) and
//! `plugins-sdk/templates/<language>-reactor/` (reactors) of the source tree this binary
//! was built from, embedded at build time (`host/build.rs`). A project
//! references the SDK in that source tree by absolute path (nothing is published to a
//! registry), so `new` needs the tree to still be there.
//!
//! In file contents and names, `{{name}}`, `{{name_snake}}`, `{{sdk_dir}}` and
//! `{{wit_dir}}` are replaced, and a trailing `.tmpl` is dropped from file names (a
//! template's `Cargo.toml.tmpl` is not seen as a crate inside this repository).

use std::path::{Path, PathBuf};

use crate::runtime::MAX_NAME_BYTES;

pub use super::manifest::Kind;

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// A template folder embedded in the binary.
#[derive(Debug)]
pub(crate) struct EmbeddedTemplate {
    /// The folder's name under `plugins-sdk/templates/` (see [`template_folder`]).
    language: &'static str,
    /// Its files, by path relative to the folder.
    files: &'static [EmbeddedFile],
}

/// One embedded file.
#[derive(Debug)]
pub(crate) struct EmbeddedFile {
    path: &'static str,
    contents: &'static [u8],
}

/// The languages `refract new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with `refract-sdk`.
    Rust,
    /// TypeScript, with the TypeScript SDK and componentize-js.
    #[value(name = "ts", alias = "typescript")]
    TypeScript,
    /// Python, with the Python SDK and componentize-py.
    #[value(alias = "py")]
    Python,
}

impl Language {
    /// The template folder's name under `plugins-sdk/templates/`.
    pub fn folder(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::TypeScript => "typescript",
            Language::Python => "python",
        }
    }

    /// The language's name, for people.
    pub fn display_name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::TypeScript => "TypeScript",
            Language::Python => "Python",
        }
    }
}

/// The template folder under `plugins-sdk/templates/` for a project of `kind` in
/// `language`: the language's folder for a projector, `<folder>-reactor` for a reactor.
pub fn template_folder(language: Language, kind: Kind) -> &'static str {
    match (kind, language) {
        (Kind::Projector, language) => language.folder(),
        (Kind::Reactor, Language::Rust) => "rust-reactor",
        (Kind::Reactor, Language::TypeScript) => "typescript-reactor",
        (Kind::Reactor, Language::Python) => "python-reactor",
    }
}

/// Why a project could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// The name is not a usable projector or reactor name.
    #[error(
        "`{0}` is not a usable projector or reactor name: use 1 to {MAX_NAME_BYTES} characters of a-z, 0-9, `_` and `-`, starting with a letter"
    )]
    InvalidName(String),
    /// This binary was built without the language's template for the kind of project.
    #[error(
        "this refract binary has no {language} {kind} template: plugins-sdk/templates/{folder}/ was missing when it was built; add the template and rebuild refract (`cargo build --release`)"
    )]
    NoTemplate {
        /// The language asked for.
        language: &'static str,
        /// The kind of project asked for (`projector`, `reactor`).
        kind: &'static str,
        /// The folder it would come from.
        folder: &'static str,
    },
    /// The source tree the project would reference is gone.
    #[error(
        "the Refract source tree this binary was built from is not at {root} (its plugins-sdk/ and wit/ are needed): projects reference the SDK there by path; rebuild refract from a checkout"
    )]
    NoSourceTree {
        /// Where it was expected.
        root: PathBuf,
    },
    /// The target folder exists and holds files.
    #[error("{0} already exists and is not empty; choose another --dir or name")]
    NotEmpty(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What [`scaffold`] created.
#[derive(Debug, Clone)]
pub struct Scaffolded {
    /// The project folder.
    pub dir: PathBuf,
    /// The files written, relative to it.
    pub files: Vec<PathBuf>,
}

/// The template folders this binary embeds (see [`template_folder`]).
pub fn embedded_templates() -> Vec<&'static str> {
    TEMPLATES.iter().map(|template| template.language).collect()
}

/// Checks a new projector's name: the contract's `[a-z0-9_-]{1,64}`, starting with a
/// letter (a package name in every language's tooling).
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::InvalidName(name.to_owned()))
    }
}

/// Creates the project `name` in `dir` (which must not exist, or be empty) from the
/// template for a `kind` project in `language`, referencing the SDK and WIT of the
/// source tree at `source_root`.
/// The project appears whole or not at all: it is written to a sibling folder first and
/// renamed into place.
pub fn scaffold(
    name: &str,
    language: Language,
    kind: Kind,
    dir: &Path,
    source_root: &Path,
) -> Result<Scaffolded, ScaffoldError> {
    check_name(name)?;
    let folder = template_folder(language, kind);
    let template = TEMPLATES
        .iter()
        .find(|template| template.language == folder)
        .ok_or(ScaffoldError::NoTemplate {
            language: language.display_name(),
            kind: kind.as_str(),
            folder,
        })?;
    let sdk_dir = source_root.join("plugins-sdk");
    let wit_dir = source_root.join("wit");
    if !sdk_dir.join("Cargo.toml").is_file() || !wit_dir.join("projector.wit").is_file() {
        return Err(ScaffoldError::NoSourceTree {
            root: source_root.to_owned(),
        });
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(ScaffoldError::NotEmpty(dir.to_owned()));
        }
    }
    let parent = dir
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = parent.join(format!(
        ".{}.refract-new-{}",
        dir.file_name()
            .map_or_else(|| name.into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let replacements = [
        ("{{name}}", name.to_owned()),
        ("{{name_snake}}", name.replace('-', "_")),
        ("{{sdk_dir}}", sdk_dir.to_string_lossy().into_owned()),
        ("{{wit_dir}}", wit_dir.to_string_lossy().into_owned()),
    ];
    let substitute = |text: &str| {
        replacements
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    };
    let write_all = || -> Result<Vec<PathBuf>, ScaffoldError> {
        let mut written = Vec::new();
        for file in template.files {
            let relative = substitute(file.path);
            let relative = PathBuf::from(relative.strip_suffix(".tmpl").unwrap_or(&relative));
            let path = staging.join(&relative);
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder).map_err(io(folder))?;
            }
            // Text is templated; anything that is not UTF-8 is copied as it is.
            let contents = match std::str::from_utf8(file.contents) {
                Ok(text) => substitute(text).into_bytes(),
                Err(_) => file.contents.to_vec(),
            };
            std::fs::write(&path, contents).map_err(io(&path))?;
            written.push(relative);
        }
        Ok(written)
    };
    let written = write_all().and_then(|written| {
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(io(dir))?;
        }
        std::fs::rename(&staging, dir).map_err(io(dir))?;
        Ok(written)
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(Scaffolded {
        dir: dir.to_owned(),
        files: written?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkit::manifest::{MANIFEST_FILE, Manifest};

    #[test]
    fn names_must_suit_every_toolchain() {
        for good in ["demo", "demo-rust", "a1_b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1demo", "-x", "Demo", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_language_and_kind_has_an_embedded_template() {
        let embedded = embedded_templates();
        for language in [Language::Rust, Language::TypeScript, Language::Python] {
            for kind in [Kind::Projector, Kind::Reactor] {
                let folder = template_folder(language, kind);
                assert!(embedded.contains(&folder), "{folder} in {embedded:?}");
            }
        }
    }

    #[test]
    fn a_reactor_project_comes_from_its_own_template() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let root = crate::guest_build::workspace_root();
        for (language, source) in [
            (Language::Rust, "src/lib.rs"),
            (Language::TypeScript, "src/index.ts"),
            (Language::Python, "src/app.py"),
        ] {
            let dir = scratch.path().join(language.folder());
            scaffold("demo-saga", language, Kind::Reactor, &dir, &root).expect("scaffolded");
            let path = dir.join(MANIFEST_FILE);
            let text = std::fs::read_to_string(&path).expect("a manifest");
            let manifest = Manifest::parse(&text, &path).expect("a valid manifest");
            assert_eq!(manifest.name, "demo-saga");
            assert_eq!(manifest.kind, Kind::Reactor, "{language:?}");
            let code = std::fs::read_to_string(dir.join(source)).expect("the source");
            assert!(code.contains("\"demo-saga\""), "named: {code}");
            assert!(!code.contains("{{"), "{code}");
            assert!(dir.join("README.md").is_file());
        }
    }

    #[test]
    fn a_project_is_templated_and_never_overwrites() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let root = crate::guest_build::workspace_root();
        let dir = scratch.path().join("demo-x");
        let made =
            scaffold("demo-x", Language::Rust, Kind::Projector, &dir, &root).expect("scaffolded");
        assert!(
            made.files.contains(&PathBuf::from("Cargo.toml")),
            "{:?}",
            made.files
        );
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).expect("written");
        assert!(cargo.contains("name = \"demo-x\""), "{cargo}");
        assert!(cargo.contains(&root.join("plugins-sdk").to_string_lossy().into_owned()));
        let manifest = std::fs::read_to_string(dir.join("projector.toml")).expect("written");
        assert!(manifest.contains("demo_x.wasm"), "{manifest}");
        assert!(!manifest.contains("{{"), "{manifest}");

        let again = scaffold("demo-x", Language::Rust, Kind::Projector, &dir, &root)
            .expect_err("not empty");
        assert!(matches!(again, ScaffoldError::NotEmpty(_)), "{again}");
        let gone = scaffold(
            "demo-y",
            Language::Rust,
            Kind::Projector,
            &scratch.path().join("y"),
            scratch.path(),
        )
        .expect_err("no tree");
        assert!(matches!(gone, ScaffoldError::NoSourceTree { .. }), "{gone}");
    }
}
