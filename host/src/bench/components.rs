//! Other builds of the `balances` workload, given by path (`--component LABEL=PATH`):
//! a TypeScript or Python `balances`, or a Rust one built another way. Each is measured
//! on the same log as the native baseline, and its read model must be identical to the
//! native one by checksum before any of its figures counts:
//!
//! - `component_replay_eps` and `component_replay_ratio`: replay throughput, and its
//!   ratio to the native baseline run back to back on the same log;
//! - `component_size_kib`: the size of the `.wasm`;
//! - `component_compile_ms`: loading it on an empty compile cache (compiling);
//! - `component_cold_start_cached_ms`: time to its first event with the cache warm.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context as _, Result, anyhow, ensure};

use super::{Figure, Harness, cold_start, millis, remove_db, replay};
use crate::log::EventLog;
use crate::runtime::{Runtime, RuntimeConfig};

/// A component to measure, named on the command line as `LABEL=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    /// The label its figures carry, such as `balances-ts`.
    pub label: String,
    /// The `.wasm`.
    pub path: PathBuf,
}

impl FromStr for ComponentSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (label, path) = text
            .split_once('=')
            .filter(|(label, path)| !label.is_empty() && !path.is_empty())
            .ok_or_else(|| {
                format!("expected LABEL=PATH, such as balances-ts=dist/balances.wasm; got `{text}`")
            })?;
        Ok(Self {
            label: label.to_owned(),
            path: PathBuf::from(path),
        })
    }
}

impl Harness<'_> {
    /// Measures every `--component`.
    pub(super) fn components(&mut self, log: &EventLog, head: u64) -> Result<()> {
        for spec in self.options.components.clone() {
            self.component(&spec, log, head).with_context(|| {
                format!(
                    "measuring --component {}={}",
                    spec.label,
                    spec.path.display()
                )
            })?;
        }
        Ok(())
    }

    fn component(&mut self, spec: &ComponentSpec, log: &EventLog, head: u64) -> Result<()> {
        let label = spec.label.as_str();
        let wasm = std::fs::read(&spec.path)
            .with_context(|| format!("cannot read {}", spec.path.display()))?;
        let reps = self.options.reps;

        let mut compile = Vec::new();
        for rep in 1..=reps {
            self.note(&format!(
                "{label}: compiling on an empty cache (rep {rep}/{reps})"
            ));
            let cache = self
                .scratch
                .dir(&format!("component-{label}/cache-{rep}"))?;
            let loaded = Runtime::new(RuntimeConfig {
                cache_dir: Some(cache),
                limits: self.limits.clone(),
            })?
            .load(&wasm)?;
            ensure!(!loaded.from_cache(), "the empty cache held the component");
            compile.push(millis(loaded.load_time()));
        }

        let warm = self.scratch.dir(&format!("component-{label}/warm"))?;
        let loaded = Runtime::new(RuntimeConfig {
            cache_dir: Some(warm.clone()),
            limits: self.limits.clone(),
        })?
        .load(&wasm)?;
        super::check_balances(&loaded)?;

        let (mut eps, mut ratios) = (Vec::new(), Vec::new());
        for rep in 1..=reps {
            self.note(&format!(
                "{label}: replay of {head} events and native (rep {rep}/{reps})"
            ));
            let wasm_db = self
                .scratch
                .path(&format!("component-{label}/replay-{rep}.db"))?;
            let native_db = self
                .scratch
                .path(&format!("component-{label}/native-{rep}.db"))?;
            let wasm_time = replay::replay_wasm(&loaded, log, &wasm_db, self.batch, head)?;
            let native_time =
                replay::replay_native(log, &native_db, &self.limits, self.batch, head)?;
            let checksum = replay::verify_identical(&wasm_db, &native_db).with_context(|| {
                format!("{label} did not build the same read model as native Rust")
            })?;
            ensure!(
                checksum.checkpoint == head,
                "{label}'s read model stops at {}, not at the head {head}",
                checksum.checkpoint
            );
            remove_db(&wasm_db)?;
            remove_db(&native_db)?;
            let rate = head as f64 / wasm_time.as_secs_f64();
            eps.push(rate);
            ratios.push(rate / (head as f64 / native_time.as_secs_f64()));
        }

        let mut cached = Vec::new();
        for rep in 1..=reps {
            self.note(&format!(
                "{label}: cold start on the warm cache (rep {rep}/{reps})"
            ));
            let db = self
                .scratch
                .path(&format!("component-{label}/cold-{rep}.db"))?;
            cached.push(millis(cold_start::time_to_first_event(
                &wasm,
                log,
                &self.limits,
                &warm,
                &db,
                true,
            )?));
        }

        let size_kib = wasm.len() as f64 / 1024.0;
        self.figures.extend([
            Figure::measured("component_replay_eps", "events/s", 0, eps).about(label),
            Figure::measured("component_replay_ratio", "ratio", 3, ratios).about(label),
            Figure::measured("component_size_kib", "KiB", 0, vec![size_kib]).about(label),
            Figure::measured("component_compile_ms", "ms", 1, compile).about(label),
            Figure::measured("component_cold_start_cached_ms", "ms", 2, cached).about(label),
        ]);
        Ok(())
    }
}

/// Checks that a `--component` path exists before any measuring starts.
pub(super) fn check_paths(specs: &[ComponentSpec]) -> Result<()> {
    for spec in specs {
        if !spec.path.is_file() {
            return Err(anyhow!(
                "--component {}={}: no such file",
                spec.label,
                spec.path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_label_equals_path() {
        let spec: ComponentSpec = "balances-ts=dist/balances.wasm".parse().expect("valid");
        assert_eq!(spec.label, "balances-ts");
        assert_eq!(spec.path, PathBuf::from("dist/balances.wasm"));
        assert!("no-path=".parse::<ComponentSpec>().is_err());
        assert!("plain.wasm".parse::<ComponentSpec>().is_err());
    }
}
