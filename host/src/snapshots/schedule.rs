//! The thread that takes policy snapshots of active read models, and the snapshot
//! taken before every swap.
//!
//! The schedule never touches a worker: it reads each active version's checkpoint from
//! the engine's published status and copies the read model through a connection of its
//! own ([`Store::take`]). One snapshot at a time, so a host with many projectors spends
//! at most one thread's worth of I/O on them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::snapshots::store::{Reason, Store};

/// How often the schedule looks at the active read models' checkpoints.
pub const SCHEDULE_TICK: Duration = Duration::from_millis(200);

/// An active read model, as the schedule sees it.
#[derive(Debug, Clone)]
pub struct ActiveModel {
    /// The projector.
    pub projector: String,
    /// The active version.
    pub version: String,
    /// Its read model.
    pub path: PathBuf,
    /// Its checkpoint, as last published.
    pub checkpoint: u64,
}

/// The running schedule; stops when dropped.
pub struct Scheduler {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the schedule if any projector has a snapshot policy. `active` lists the
    /// active read models; `None` once the engine is gone.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(
        data: &DataDir,
        config: &Config,
        active: impl Fn() -> Option<Vec<ActiveModel>> + Send + 'static,
    ) -> std::io::Result<Option<Scheduler>> {
        let store = Store::new(data);
        for projector in store.projectors() {
            store.clean_strays(&projector);
        }
        if !config
            .projectors
            .values()
            .any(|section| section.snapshots.is_on())
        {
            return Ok(None);
        }
        let (stop, stopped) = mpsc::channel();
        let data = data.clone();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("refract-snapshots".into())
            .spawn(move || run(&data, &config, &active, &stopped))?;
        Ok(Some(Scheduler {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }

    /// Stops the schedule after the snapshot in flight, and waits for it.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the snapshot schedule panicked");
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When each version was last snapshotted: checkpoint and instant.
type Last = BTreeMap<(String, String), (u64, Instant)>;

fn run(
    data: &DataDir,
    config: &Config,
    active: &dyn Fn() -> Option<Vec<ActiveModel>>,
    stopped: &mpsc::Receiver<()>,
) {
    let store = Store::new(data);
    let mut last: Last = BTreeMap::new();
    loop {
        match stopped.recv_timeout(SCHEDULE_TICK) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(models) = active() else { return };
        for model in models {
            let policy = config.projector(&model.projector).snapshots;
            if !policy.is_on() {
                continue;
            }
            let key = (model.projector.clone(), model.version.clone());
            let (last_checkpoint, last_at) = *last.entry(key.clone()).or_insert_with(|| {
                let newest = store
                    .list(&model.projector)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|entry| entry.version == model.version)
                    .map(|entry| entry.checkpoint)
                    .max()
                    .unwrap_or(0);
                (newest, Instant::now())
            });
            if model.checkpoint <= last_checkpoint {
                continue;
            }
            let by_count = policy.every_events > 0
                && model.checkpoint - last_checkpoint >= policy.every_events;
            let by_time = policy.every_seconds > 0
                && last_at.elapsed() >= Duration::from_secs(policy.every_seconds);
            if !(by_count || by_time) {
                continue;
            }
            let component = data.version_wasm(&model.projector, &model.version);
            match store.take(
                &model.projector,
                &model.version,
                &model.path,
                Some(&component),
                Reason::Policy,
                policy.keep,
            ) {
                Ok(entry) => {
                    last.insert(key, (entry.checkpoint, Instant::now()));
                }
                Err(error) => {
                    // Tried again at the next tick that qualifies; logged each time,
                    // since a failing snapshot is rare and worth seeing.
                    tracing::warn!(projector = %model.projector, version = %model.version, "cannot take a policy snapshot: {error}");
                    last.insert(key, (last_checkpoint, Instant::now()));
                }
            }
        }
    }
}

/// The snapshot of the version being replaced, taken before a swap or a rollback.
/// A failure is logged and does not stop the swap: the read model can still be
/// rebuilt from the log.
pub fn before_swap(
    data: &DataDir,
    config: &Config,
    projector: &str,
    version: &str,
    rollback: bool,
) {
    let store = Store::new(data);
    let reason = if rollback {
        Reason::BeforeRollback
    } else {
        Reason::BeforeSwap
    };
    let path = data.version_db(projector, version);
    if !path.is_file() {
        return;
    }
    let keep = config.projector(projector).snapshots.keep;
    if let Err(error) = store.take(
        projector,
        version,
        &path,
        Some(&data.version_wasm(projector, version)),
        reason,
        keep,
    ) {
        tracing::warn!(
            projector,
            version,
            "cannot snapshot the version being replaced: {error}"
        );
    }
}
