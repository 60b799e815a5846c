//! `refract test [--plugin X.wasm] [--dir D] [fixtures…]`: golden tests, the same in
//! every language. The real component runs in the real sandbox, against a temporary log
//! and read model per fixture (see [`crate::devkit::fixture`]).
//!
//! Without `--plugin`, the project's `projector.toml` (in `--dir`, else the working
//! directory) says how to build the component and where it lands; the build runs
//! first. Without fixture arguments, the manifest's `tests` are used.
//!
//! Exit codes: 0 when every fixture passed; 1 when a fixture failed (rows differ, or
//! the projector returned an error or trapped); 2 on a usage error; 3 when the tests
//! could not run (no manifest, a failed build, a refused component, an unreadable
//! fixture).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;

use crate::config::Config;
use crate::devkit::fixture::{self, Outcome};
use crate::devkit::manifest::Manifest;
use crate::devkit::{builder, dev};
use crate::runtime::{Runtime, RuntimeConfig};

use super::ExitWith;

/// The exit code when a fixture failed.
pub const EXIT_FAILED: u8 = 1;

/// The exit code when the tests could not run.
pub const EXIT_CANNOT_RUN: u8 = 3;

/// Run golden fixtures against a projector component.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The component to test; without it, the project's `projector.toml` builds it.
    #[arg(long, value_name = "PATH")]
    pub plugin: Option<PathBuf>,
    /// The project folder holding `projector.toml` (default: the working directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Fixtures (`<stem>.jsonl`, with `<stem>.expect.json` beside it) or folders of them
    /// (default: the manifest's `tests`).
    #[arg(value_name = "FIXTURE")]
    pub fixtures: Vec<PathBuf>,
}

/// Runs `refract test`.
pub fn run(config: &Config, args: &TestArgs) -> Result<()> {
    let cannot_run = |error: anyhow::Error| {
        anyhow::Error::new(ExitWith {
            code: EXIT_CANNOT_RUN,
            message: format!("{error:#}"),
        })
    };
    let (component, fixtures, cache) = prepare(args).map_err(cannot_run)?;
    let fixtures = fixture::discover(&fixtures).map_err(|e| cannot_run(e.into()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: cache,
        limits: config.limits.clone(),
    })
    .map_err(|e| cannot_run(anyhow!(e).context("cannot start the WebAssembly runtime")))?;
    let wasm = std::fs::read(&component)
        .with_context(|| format!("cannot read the component {}", component.display()))
        .map_err(cannot_run)?;
    let loaded = runtime
        .load(&wasm)
        .with_context(|| format!("cannot load {}", component.display()))
        .map_err(cannot_run)?;
    if loaded.reactor().is_some() {
        return Err(cannot_run(anyhow!(
            "{} is a reactor (it exports `{}`): `refract test` runs projectors only (its golden fixtures cannot check what a reactor emits); test the reactor with its SDK's native tests and deploy it with `refract deploy`",
            component.display(),
            crate::reactors::REACTOR_EXPORT
        )));
    }
    let name = loaded.info().name.clone();
    let limits = config
        .projector_limits(&name)
        .map_err(|(key, problem)| cannot_run(anyhow!("`{key}` {problem}")))?;
    let loaded = loaded
        .with_limits(limits)
        .map_err(|e| cannot_run(e.into()))?;
    let batch = config.projector_batch(&name);
    println!(
        "testing `{name}` (version {}, {}) with {} fixture{}",
        loaded.version(),
        component.display(),
        fixtures.len(),
        if fixtures.len() == 1 { "" } else { "s" }
    );

    let (mut passed, mut failed) = (0, 0);
    for path in &fixtures {
        let started = Instant::now();
        let loaded_fixture = fixture::load(path).map_err(|e| cannot_run(e.into()))?;
        let scratch = tempfile::tempdir()
            .context("cannot create a temporary folder")
            .map_err(cannot_run)?;
        let outcome = fixture::run(&loaded, &loaded_fixture, scratch.path(), batch)
            .map_err(|e| cannot_run(e.into()))?;
        let label = format!(
            "{} ({} events, {} quer{})",
            path.display(),
            loaded_fixture.events.len(),
            loaded_fixture.queries.len(),
            if loaded_fixture.queries.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
        if let Outcome::Passed { .. } = outcome {
            passed += 1;
            println!("ok    {label} in {} ms", started.elapsed().as_millis());
        } else {
            failed += 1;
            println!("FAIL  {label}");
            print!("{}", fixture::render_failure(&outcome));
        }
    }
    println!("fixtures: {passed} passed, {failed} failed");
    if failed > 0 {
        return Err(ExitWith {
            code: EXIT_FAILED,
            message: String::new(),
        }
        .into());
    }
    Ok(())
}

/// The component (built when there is a manifest), the fixture paths, and the compile
/// cache to use.
fn prepare(args: &TestArgs) -> Result<(PathBuf, Vec<PathBuf>, Option<PathBuf>)> {
    if let Some(plugin) = &args.plugin {
        if args.fixtures.is_empty() {
            let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let manifest = Manifest::load(&dir).with_context(|| {
                "with --plugin, name the fixtures, or run in a project whose projector.toml lists `tests`"
            })?;
            manifest.require_projector("test")?;
            return Ok((plugin.clone(), manifest.tests, None));
        }
        return Ok((plugin.clone(), args.fixtures.clone(), None));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let manifest = Manifest::load(&dir)?;
    manifest.require_projector("test")?;
    let fixtures = if args.fixtures.is_empty() {
        if manifest.tests.is_empty() {
            bail!(
                "{} lists no `tests`, and no fixture was named",
                dir.join(crate::devkit::manifest::MANIFEST_FILE).display()
            );
        }
        manifest.tests.clone()
    } else {
        args.fixtures.clone()
    };
    println!("building `{}`: {}", manifest.name, manifest.build.join(" "));
    let built = builder::build(&manifest)?;
    println!("built in {:.1} s", built.took.as_secs_f64());
    Ok((built.component, fixtures, Some(dev_cache(&manifest.root))))
}

/// The project's compile cache, inside its dev data folder (ignored by the templates'
/// `.gitignore`), so repeated test runs of an unchanged component skip the compile.
fn dev_cache(root: &Path) -> PathBuf {
    root.join(dev::DEFAULT_DEV_DIR).join("cache")
}
