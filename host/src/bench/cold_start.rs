//! Cold start: the time from nothing (no runtime, no instance, no read model) to a
//! projector's first event committed in its read model, with and without the
//! compiled-component cache.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::engine::{BatchLimits, Projection, Step};
use crate::log::EventLog;
use crate::runtime::{DbOptions, Runtime, RuntimeConfig, SandboxLimits};

/// Starts a fresh [`Runtime`] on the compile cache `cache_dir`, loads `wasm`, opens a
/// fresh read model at `db` (instantiating and running `init`) and applies the log's
/// first event, as a new projector version on a host does. Returns the time taken.
///
/// `expect_cached` says whether the cache must (or must not) already hold the
/// component, so the two figures cannot be mixed up by a stale or missing cache.
pub fn time_to_first_event(
    wasm: &[u8],
    log: &EventLog,
    limits: &SandboxLimits,
    cache_dir: &Path,
    db: &Path,
    expect_cached: bool,
) -> Result<Duration> {
    let started = Instant::now();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir.to_owned()),
        limits: limits.clone(),
    })?;
    let loaded = runtime.load(wasm)?;
    let from_cache = loaded.from_cache();
    let mut projection = Projection::open(
        loaded,
        db,
        DbOptions::live(),
        log.reader()?,
        BatchLimits::default(),
    )?;
    let step = projection.step(Some(1))?;
    let elapsed = started.elapsed();
    ensure!(
        from_cache == expect_cached,
        "the component {} from the compile cache, but the cold start meant to measure the other case",
        if from_cache { "came" } else { "did not come" }
    );
    ensure!(
        matches!(step, Step::Applied { events: 1, .. }),
        "the first step did not apply the first event: {step:?}"
    );
    Ok(elapsed)
}
