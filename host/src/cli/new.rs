//! `refract new <name> --lang rust|ts|python [--kind projector|reactor] [--dir D]`: a
//! projector (or reactor) project, ready to build and test, from a template embedded in
//! this binary.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::devkit::manifest::Manifest;
use crate::devkit::template::{self, Kind, Language};
use crate::guest_build::workspace_root;

/// Create a projector (or reactor) project.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The projector's (or reactor's) name: 1 to 64 characters of a-z, 0-9, `_` and `-`,
    /// starting with a letter.
    pub name: String,
    /// The language.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Language,
    /// What to create: a projector (events in, a read model out) or a reactor (a saga:
    /// events in, events and timers out).
    #[arg(long, value_enum, default_value = "projector")]
    pub kind: Kind,
    /// The folder to create the project in; it must not exist, or be empty (default:
    /// `./<name>`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs `refract new`.
pub fn run(args: &NewArgs) -> Result<()> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let made = template::scaffold(&args.name, args.lang, args.kind, &dir, &workspace_root())?;
    println!(
        "created the {} {} `{}` in {}",
        args.lang.folder(),
        args.kind.as_str(),
        args.name,
        made.dir.display()
    );
    for file in &made.files {
        println!("  {}", file.display());
    }
    let setup = match args.lang {
        Language::Rust => None,
        Language::TypeScript => {
            Some("npm ci                # the pinned toolchain, from package-lock.json")
        }
        Language::Python => Some(
            "python3 -m venv .venv && .venv/bin/pip install --require-hashes -r requirements.txt",
        ),
    };
    println!("next:");
    println!("  cd {}", made.dir.display());
    if let Some(setup) = setup {
        println!("  {setup}");
    }
    match args.kind {
        Kind::Projector => {
            println!("  refract test          # build the component and check it against tests/");
            println!(
                "  refract dev           # a local host that rebuilds on save and shows each change's diff"
            );
        }
        Kind::Reactor => {
            // The build and the component, exactly as the project's manifest says.
            let manifest = Manifest::load(&made.dir)?;
            let test = match args.lang {
                Language::Rust => "cargo test",
                Language::TypeScript => "npm test",
                Language::Python => "python3 -m unittest discover -s tests",
            };
            let component = manifest
                .component
                .strip_prefix(&manifest.root)
                .unwrap_or(&manifest.component);
            println!("  {test:<21} # the native tests, no wasm build");
            println!("  {}", manifest.build.join(" "));
            println!(
                "  refract deploy {}   # to a running host (`refract run`)",
                component.display()
            );
            println!(
                "  (`refract test` and `refract dev` run projectors only; README.md says more)"
            );
        }
    }
    Ok(())
}
