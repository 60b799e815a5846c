//! `refract new <name> --lang rust|ts|python [--dir D]`: a projector project, ready to
//! build and test, from a template embedded in this binary.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::devkit::template::{self, Language};
use crate::guest_build::workspace_root;

/// Create a projector project.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The projector's name: 1 to 64 characters of a-z, 0-9, `_` and `-`, starting with
    /// a letter.
    pub name: String,
    /// The language.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Language,
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
    let made = template::scaffold(&args.name, args.lang, &dir, &workspace_root())?;
    println!(
        "created the {} projector `{}` in {}",
        args.lang.folder(),
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
    println!("  refract test          # build the component and check it against tests/");
    println!(
        "  refract dev           # a local host that rebuilds on save and shows each change's diff"
    );
    Ok(())
}
