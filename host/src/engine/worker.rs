//! One thread per projector version, keeping its read model up to date with the log.
//!
//! Each worker owns its instance, its read-model connection and its log reader, so a
//! stalled or hostile projector can only ever stall itself. Guest calls and SQLite
//! are blocking, which is why workers are threads and not async tasks; they borrow
//! the async runtime only to wait, on whichever comes first of: an append made through
//! this process (the log's head watch, the fast path), the external-poll interval (for
//! appends made by other processes), a retry's backoff, or shutdown.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::PoisonPolicy;
use crate::engine::control::Control;
use crate::engine::projection::{BatchLimits, Projection, ProjectionError, Step};
use crate::engine::status::{State, StatusCell};
use crate::log::EventLog;
use crate::runtime::{DbOptions, LoadedProjector};

/// Everything a worker needs to run one projector version.
pub(crate) struct WorkerSpec {
    /// The projector's name.
    pub projector: String,
    /// The compiled component.
    pub loaded: LoadedProjector,
    /// Its read model.
    pub db_path: PathBuf,
    /// How the read model is opened.
    pub db_options: DbOptions,
    /// `control.db`, for states and dead letters.
    pub control_path: PathBuf,
    /// What to do with a poison event.
    pub policy: PoisonPolicy,
    /// Batch sizes.
    pub batch: BatchLimits,
    /// First and longest retry pause.
    pub retry: (Duration, Duration),
    /// How often to look for appends made by other processes.
    pub external_poll: Duration,
}

/// Starts a worker thread. It runs until `shutdown` turns true, finishing (committing
/// or rolling back) the batch in flight first.
pub(crate) fn spawn(
    spec: WorkerSpec,
    log: &EventLog,
    status: StatusCell,
    shutdown: watch::Receiver<bool>,
    runtime: Handle,
) -> std::io::Result<JoinHandle<()>> {
    let name = format!("refract-{}-{}", spec.projector, spec.loaded.version());
    let worker = Worker {
        head: log.watch_head(),
        log: log.clone(),
        spec,
        status,
        shutdown,
        runtime,
        control: None,
        recorded_state: None,
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || worker.run())
}

struct Worker {
    spec: WorkerSpec,
    log: EventLog,
    status: StatusCell,
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    runtime: Handle,
    control: Option<Control>,
    /// The state last written to `control.db`, to write only changes.
    recorded_state: Option<(String, Option<String>)>,
}

/// What the worker is doing about a poison event under the `skip` policy.
enum Isolation {
    /// Nothing: normal batches.
    None,
    /// A batch failed without saying which event: replay it one event at a time,
    /// up to and including this offset, to find the culprit.
    SingleEventsThrough(u64),
    /// The event at this offset is poison: apply everything before it, then record it
    /// as a dead letter and move past it.
    DeadLetter { offset: u64, error: String },
}

impl Worker {
    fn run(mut self) {
        let version = self.spec.loaded.version().to_owned();
        let mut backoff = Backoff::new(self.spec.retry);
        let Some(mut projection) = self.open(&mut backoff) else {
            return;
        };
        tracing::info!(projector = %self.spec.projector, %version, checkpoint = projection.checkpoint(), "projector started");
        let mut isolation = Isolation::None;
        while !self.stopping() {
            // Mark the head as seen *before* reading, so an append that lands during
            // the step wakes the wait below instead of being slept through.
            self.head.borrow_and_update();
            let result = match &isolation {
                Isolation::None => projection.step(None),
                Isolation::SingleEventsThrough(_) => projection.step(None),
                Isolation::DeadLetter { offset, error } => {
                    if projection.checkpoint() + 1 >= *offset {
                        let (offset, error) = (*offset, error.clone());
                        isolation = Isolation::None;
                        projection.set_limits(self.spec.batch);
                        if let Err(failure) = self.dead_letter(&mut projection, offset, &error) {
                            self.transient(&failure, &mut backoff);
                        }
                        continue;
                    }
                    projection.step(Some(offset - 1))
                }
            };
            match result {
                Ok(Step::Applied { events, through }) => {
                    backoff.reset();
                    self.status.record_events(events);
                    self.progress(&mut projection, through);
                    if let Isolation::SingleEventsThrough(last) = isolation
                        && through >= last
                    {
                        isolation = Isolation::None;
                        projection.set_limits(self.spec.batch);
                    }
                }
                Ok(Step::Skipped { through }) => {
                    backoff.reset();
                    self.progress(&mut projection, through);
                }
                Ok(Step::CaughtUp) => {
                    backoff.reset();
                    let checkpoint = projection.checkpoint();
                    self.progress(&mut projection, checkpoint);
                    self.wait_for_work();
                }
                Err(ProjectionError::Projector(error)) if error.is_poison() => {
                    let message = describe(&error);
                    let known = error.offset().or_else(|| {
                        projection
                            .last_batch()
                            .filter(|(first, last)| first == last)
                            .map(|(first, _)| first)
                    });
                    match (self.spec.policy, known) {
                        (PoisonPolicy::Skip, Some(offset)) => {
                            tracing::warn!(projector = %self.spec.projector, %version, offset, "poison event will be dead-lettered: {message}");
                            isolation = Isolation::DeadLetter {
                                offset,
                                error: message,
                            };
                        }
                        (PoisonPolicy::Skip, None) => {
                            let last = projection
                                .last_batch()
                                .map_or(projection.checkpoint() + 1, |(_, last)| last);
                            tracing::info!(projector = %self.spec.projector, %version, "a batch failed; replaying it event by event to find the poison event");
                            projection.set_limits(BatchLimits {
                                max_events: 1,
                                ..self.spec.batch
                            });
                            isolation = Isolation::SingleEventsThrough(last);
                        }
                        (PoisonPolicy::Stop, _) => {
                            let at = known.unwrap_or(projection.checkpoint() + 1);
                            self.stall(at, &message, &mut backoff);
                        }
                    }
                }
                Err(failure) => self.transient(&failure, &mut backoff),
            }
        }
        let checkpoint = projection.checkpoint();
        tracing::info!(projector = %self.spec.projector, %version, checkpoint, "projector stopped");
    }

    /// Opens the projection, retrying with backoff (a full disk, a locked file) until
    /// it opens or the host shuts down.
    fn open(&mut self, backoff: &mut Backoff) -> Option<Projection> {
        loop {
            if self.stopping() {
                return None;
            }
            let opened = self
                .log
                .reader()
                .map_err(ProjectionError::from)
                .and_then(|reader| {
                    Projection::open(
                        self.spec.loaded.clone(),
                        &self.spec.db_path,
                        self.spec.db_options,
                        reader,
                        self.spec.batch,
                    )
                });
            match opened {
                Ok(projection) => return Some(projection),
                Err(failure) => self.transient(&failure, backoff),
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Records progress: checkpoint, head, and the catching-up or live state.
    fn progress(&mut self, projection: &mut Projection, checkpoint: u64) {
        let head = projection.log_head().unwrap_or(checkpoint).max(checkpoint);
        let state = if checkpoint >= head {
            State::Live
        } else {
            State::CatchingUp
        };
        self.status.update(|status| {
            status.checkpoint = checkpoint;
            status.head = head;
            status.state = state.clone();
        });
        self.record_state(&state, None);
    }

    /// A deterministic failure under the `stop` policy: stall, and retry after a pause.
    fn stall(&mut self, at: u64, message: &str, backoff: &mut Backoff) {
        let pause = backoff.next();
        let state = State::Stalled {
            at,
            message: message.to_owned(),
        };
        if backoff.failures() == 1 {
            tracing::error!(projector = %self.spec.projector, version = %self.spec.loaded.version(), offset = at, "projector stalled: {message}");
        } else {
            tracing::debug!(projector = %self.spec.projector, offset = at, retry_in = ?pause, "still stalled: {message}");
        }
        self.status.update(|status| {
            status.state = state.clone();
            status.last_error = Some(message.to_owned());
        });
        self.record_state(&state, Some(message));
        self.sleep(pause);
    }

    /// A host failure (I/O, a busy or full disk): never poison, always retried.
    fn transient(&mut self, failure: &ProjectionError, backoff: &mut Backoff) {
        let pause = backoff.next();
        let message = describe(failure);
        if backoff.failures() == 1 {
            tracing::warn!(projector = %self.spec.projector, version = %self.spec.loaded.version(), retry_in = ?pause, "projector failed, will retry: {message}");
        } else {
            tracing::debug!(projector = %self.spec.projector, retry_in = ?pause, "retrying after: {message}");
        }
        self.status
            .update(|status| status.last_error = Some(message));
        self.sleep(pause);
    }

    /// Records `offset` as a dead letter, then moves the checkpoint past it. In that
    /// order: a crash in between re-records the same (idempotent) row, and never skips
    /// an event without a record of it.
    fn dead_letter(
        &mut self,
        projection: &mut Projection,
        offset: u64,
        error: &str,
    ) -> Result<(), ProjectionError> {
        let version = self.spec.loaded.version().to_owned();
        let projector = self.spec.projector.clone();
        let count = {
            let control = self.control()?;
            control
                .add_dead_letter(&projector, &version, offset, error)
                .and_then(|()| control.dead_letter_count(&projector, &version))
                .map_err(|error| ProjectionError::Host(error.to_string()))?
        };
        projection.fast_forward(offset)?;
        self.status.update(|status| {
            status.dead_letters = count;
            status.last_error = Some(error.to_owned());
        });
        Ok(())
    }

    fn control(&mut self) -> Result<&Control, ProjectionError> {
        if self.control.is_none() {
            let control = Control::open(&self.spec.control_path)
                .map_err(|error| ProjectionError::Host(error.to_string()))?;
            self.control = Some(control);
        }
        self.control
            .as_ref()
            .ok_or_else(|| ProjectionError::Host("control database unavailable".into()))
    }

    /// Writes a state change to `control.db`, so `refract status` can report it with
    /// no server running. Unchanged states are not rewritten.
    fn record_state(&mut self, state: &State, error: Option<&str>) {
        let entry = (state.to_string(), error.map(str::to_owned));
        if self.recorded_state.as_ref() == Some(&entry) {
            return;
        }
        let projector = self.spec.projector.clone();
        let version = self.spec.loaded.version().to_owned();
        let written = self.control().and_then(|control| {
            control
                .set_state(&projector, &version, &entry.0, error)
                .map_err(|error| ProjectionError::Host(error.to_string()))
        });
        match written {
            Ok(()) => self.recorded_state = Some(entry),
            Err(failure) => tracing::warn!(%projector, "cannot record state: {failure}"),
        }
    }

    /// Waits for an append through this process, the external-poll interval, or shutdown.
    fn wait_for_work(&mut self) {
        let poll = self.spec.external_poll;
        let (head, shutdown) = (&mut self.head, &mut self.shutdown);
        self.runtime.block_on(async {
            tokio::select! {
                _ = head.changed() => {}
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(poll) => {}
            }
        });
    }

    /// Sleeps for `pause`, waking early on shutdown.
    fn sleep(&mut self, pause: Duration) {
        let shutdown = &mut self.shutdown;
        self.runtime.block_on(async {
            tokio::select! {
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        });
    }
}

/// An error and its causes, as one line: status and `control.db` show this text.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Capped exponential backoff.
struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn new((initial, max): (Duration, Duration)) -> Backoff {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The pause before the next retry; doubles per consecutive failure, up to `max`.
    fn next(&mut self) -> Duration {
        let pause = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    fn failures(&self) -> u32 {
        self.failures
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new((Duration::from_millis(100), Duration::from_secs(1)));
        let pauses: Vec<_> = (0..6).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.failures(), 6);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(100));
    }
}
