//! One thread per projector version, keeping its read model up to date with the log.
//!
//! Each worker owns its instance, its read-model connection and its log reader, so a
//! stalled or hostile projector can only ever stall itself. Guest calls and SQLite
//! are blocking, which is why workers are threads and not async tasks; they borrow
//! the async runtime only to wait, on whichever comes first of: an append made through
//! this process (the log's head watch, the fast path), the external-poll interval (for
//! appends made by other processes), a retry's backoff, or shutdown.

use std::cmp::Ordering;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::PoisonPolicy;
use crate::engine::control::Control;
use crate::engine::integrity::LogCheck;
use crate::engine::projection::{BatchLimits, Projection, ProjectionError, Step};
use crate::engine::status::{State, StatusCell};
use crate::log::{EventLog, ReadQuery, correlation_id};
use crate::repeats::{Occurrence, Repeats};
use crate::runtime::{DbOptions, LoadedProjector, ProjectorError, TrapKind};
use crate::storage_fault::StorageFault;

/// Whether a version in `mode` emits (a reactor's effects reach the log) or replays
/// with them suppressed.
fn emits_in(mode: Mode) -> bool {
    matches!(mode, Mode::Active | Mode::Initial)
}

/// How long a shutdown waits for the workers, all together, before it leaves behind
/// one still inside a call. Calls are cancelled first, so a worker normally ends within
/// a tick; only a single SQLite step that the deadlines cannot cut short takes longer.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

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
    /// The role this worker starts in.
    pub mode: Mode,
    /// Events per second a shadow may apply while replaying; 0 = no limit.
    pub replay_rate_limit: u64,
    /// Whether a checkpoint past the log's head is an error (see `integrity`).
    pub log_check: LogCheck,
    /// The last offset it may project at first (see [`WorkerHandle::hold`]).
    pub hold: Option<u64>,
    /// A reactor's shadow: the active version's state database, whose checkpoint it
    /// never passes (see [`crate::reactors`]).
    pub follow: Option<PathBuf>,
}

/// What a worker is running for; it changes how failures and pacing are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Serving reads: a poison event under `stop` stalls it.
    Active,
    /// Replaying towards a swap: a poison event under `stop` fails it, leaving the
    /// active version untouched; its replay may be rate-limited.
    Shadow,
    /// The first version of a projector, replaying with nothing active yet: paced like
    /// a shadow, but a poison event under `stop` stalls and retries it like an active
    /// version, since there is nothing else to fall back on.
    Initial,
    /// A replaced version kept tailing for an instant rollback.
    Warm,
}

/// Requests from the engine's controller to a running worker.
enum Command {
    /// Make everything committed durable (before a swap), then answer.
    Sync(std::sync::mpsc::Sender<Result<u64, String>>),
    /// Change role, after a swap or rollback.
    SetMode(Mode),
    /// Project no event past this offset (`None`: no bound). A cluster's coordinated
    /// swap holds the active version at the promote offset.
    Hold(Option<u64>),
}

/// The engine's handle on a worker thread.
pub(crate) struct WorkerHandle {
    thread: Option<JoinHandle<()>>,
    /// Disconnects when the thread ends, so a stop can wait with a time limit.
    finished: std::sync::mpsc::Receiver<()>,
    stop: watch::Sender<bool>,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    /// The worker's live status.
    pub status: StatusCell,
    /// The version it runs.
    pub version: String,
    /// The component it runs.
    pub loaded: LoadedProjector,
}

impl WorkerHandle {
    /// Stops the worker after its batch in flight and waits for it.
    pub fn stop(mut self) {
        self.stop_in_place();
    }

    fn stop_in_place(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(version = %self.version, "worker thread panicked");
        }
    }

    /// Asks the worker to stop after its batch in flight, without waiting.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the worker and waits for it until `deadline`, for shutting down. A
    /// thread still inside a call then (one SQLite step the deadlines could not cut
    /// short) is left behind rather than joined: its batch is not committed, and the
    /// process is about to exit.
    pub fn stop_by(mut self, deadline: Instant) {
        self.request_stop();
        let left = deadline.saturating_duration_since(Instant::now());
        match self.finished.recv_timeout(left) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    version = %self.version,
                    "the projector is still inside a call; shutting down without waiting for it (its batch is not committed)"
                );
                drop(self.thread.take());
            }
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.stop_in_place();
            }
        }
    }

    /// Asks the worker to make its read model durable; returns its checkpoint then.
    pub fn sync(&self, timeout: Duration) -> Result<u64, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.commands
            .send(Command::Sync(reply))
            .map_err(|_| "the worker has stopped".to_owned())?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| format!("the worker did not sync within {timeout:?}"))?
    }

    /// Changes the worker's role.
    pub fn set_mode(&self, mode: Mode) {
        // A stopped worker has no mode to change; nothing to report.
        let _ = self.commands.send(Command::SetMode(mode));
    }

    /// Whether the thread has ended (a failed shadow ends by itself).
    /// Keeps the worker from projecting past `ceiling` (`None` lifts it).
    pub fn hold(&self, ceiling: Option<u64>) {
        // A stopped worker projects nothing anyway.
        let _ = self.commands.send(Command::Hold(ceiling));
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop_in_place();
    }
}

/// Starts a worker thread. It runs until stopped through its handle, finishing
/// (committing or rolling back) the batch in flight first.
pub(crate) fn spawn(
    spec: WorkerSpec,
    log: &EventLog,
    runtime: Handle,
) -> std::io::Result<WorkerHandle> {
    let version = spec.loaded.version().to_owned();
    let loaded = spec.loaded.clone();
    let status = StatusCell::new(&spec.projector, &version);
    let (stop, stop_rx) = watch::channel(false);
    let (commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
    let name = format!("refract-{}-{version}", spec.projector);
    let (finished_tx, finished) = std::sync::mpsc::channel();
    let hold = spec.hold;
    let worker = Worker {
        head: log.watch_head(),
        log: log.clone(),
        mode: spec.mode,
        spec,
        status: status.clone(),
        shutdown: stop_rx,
        commands: commands_rx,
        runtime,
        control: None,
        recorded_state: None,
        pace: Pace::default(),
        failures: Repeats::new(),
        state_failures: Repeats::new(),
        ahead_of_log: false,
        hold,
    };
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        // Dropped when the thread ends, however it ends.
        let _finished = finished_tx;
        worker.run();
    })?;
    Ok(WorkerHandle {
        thread: Some(thread),
        finished,
        stop,
        commands,
        status,
        version,
        loaded,
    })
}

struct Worker {
    spec: WorkerSpec,
    log: EventLog,
    status: StatusCell,
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    runtime: Handle,
    control: Option<Control>,
    /// The state last written to `control.db`, to write only changes.
    recorded_state: Option<(String, Option<String>)>,
    mode: Mode,
    pace: Pace,
    /// The host failure being retried, logged once and then counted.
    failures: Repeats,
    /// Failures to record the state in `control.db`, likewise.
    state_failures: Repeats,
    /// The checkpoint was found past the log's head: projecting stops for good.
    ahead_of_log: bool,
    /// The last offset it may project (see [`Command::Hold`]).
    hold: Option<u64>,
}

/// What the worker is doing about a poison event under the `skip` policy.
enum Isolation {
    /// Nothing: normal batches.
    None,
    /// A batch failed without saying which event: replay it one event at a time,
    /// up to and including this offset, to find the culprit.
    SingleEventsThrough(u64),
    /// The event at this offset is poison: apply everything before it first; then,
    /// under `skip`, record it as a dead letter and move past it (under `stop`, the
    /// next step fails on it alone and stalls there).
    Before {
        offset: u64,
        dead_letter: Option<String>,
    },
}

impl Worker {
    fn run(mut self) {
        let version = self.spec.loaded.version().to_owned();
        let mut backoff = Backoff::new(self.spec.retry);
        let Some(mut projection) = self.open(&mut backoff) else {
            return;
        };
        tracing::info!(projector = %self.spec.projector, %version, checkpoint = projection.checkpoint(), "projector started");
        if let Some(driver) = projection.reactor_mut() {
            driver.attach_log(self.log.clone());
            driver.set_emitting(emits_in(self.mode));
            driver.set_first_version(self.mode == Mode::Initial);
            driver.set_follow(self.spec.follow.clone());
        }
        let mut isolation = Isolation::None;
        while !self.stopping() {
            self.fire_due_timers(&mut projection);
            while let Ok(command) = self.commands.try_recv() {
                self.obey(command, &mut projection);
            }
            if self.ahead_of_log {
                // Events appended now would land at offsets this read model believes
                // applied: project nothing until an operator restores the log.
                if let Some(command) = self.wait_for_work() {
                    self.obey(command, &mut projection);
                }
                continue;
            }
            // Mark the head as seen *before* reading, so an append that lands during
            // the step wakes the wait below instead of being slept through.
            self.head.borrow_and_update();
            let started = Instant::now();
            self.status
                .start_call(projection.checkpoint() + 1, self.call_limit());
            let result = match &isolation {
                Isolation::None => projection.step(self.hold),
                Isolation::SingleEventsThrough(_) => projection.step(self.hold),
                Isolation::Before {
                    offset,
                    dead_letter,
                } => {
                    if projection.checkpoint() + 1 >= *offset {
                        let (offset, dead_letter) = (*offset, dead_letter.clone());
                        isolation = Isolation::None;
                        projection.set_limits(self.spec.batch);
                        if let Some(error) = dead_letter
                            && let Err(failure) = self.dead_letter(&mut projection, offset, &error)
                        {
                            self.transient(&failure, &mut backoff);
                        }
                        continue;
                    }
                    let until = offset - 1;
                    projection.step(Some(self.hold.map_or(until, |hold| hold.min(until))))
                }
            };
            let took = started.elapsed();
            self.end_call(&projection);
            match result {
                Ok(Step::Applied { events, through }) => {
                    backoff.reset();
                    self.recovered();
                    self.status.record_batch(events, started.elapsed());
                    self.progress(&mut projection, through);
                    if matches!(self.mode, Mode::Shadow | Mode::Initial)
                        && self.spec.replay_rate_limit > 0
                    {
                        let pause = self.pace.admit(events, self.spec.replay_rate_limit);
                        self.pace_for(pause, &mut projection);
                    }
                    if let Isolation::SingleEventsThrough(last) = isolation
                        && through >= last
                    {
                        isolation = Isolation::None;
                        projection.set_limits(self.spec.batch);
                    }
                }
                Ok(Step::Skipped { through }) => {
                    backoff.reset();
                    self.recovered();
                    self.progress(&mut projection, through);
                }
                Ok(Step::CaughtUp) => {
                    backoff.reset();
                    self.recovered();
                    self.pace = Pace::default();
                    let checkpoint = projection.checkpoint();
                    self.progress(&mut projection, checkpoint);
                    if let Some(command) = self.wait_for_work() {
                        self.obey(command, &mut projection);
                    }
                }
                // The host is shutting down and cut the call short; nothing was kept.
                Err(ProjectionError::Projector(ProjectorError::Cancelled { .. })) => break,
                Err(ProjectionError::Projector(error)) if error.is_poison() => {
                    let message = describe(&error);
                    if matches!(error, ProjectorError::Trap { .. }) {
                        self.status.update(|status| status.traps += 1);
                    }
                    let known = error.offset().or_else(|| {
                        projection
                            .last_batch()
                            .filter(|(first, last)| first == last)
                            .map(|(first, _)| first)
                    });
                    if self.mode == Mode::Shadow && self.spec.policy == PoisonPolicy::Stop {
                        let at = known.unwrap_or(projection.checkpoint() + 1);
                        self.fail(&format!("at offset {at}: {message}"));
                        break;
                    }
                    if matches!(
                        error,
                        ProjectorError::Trap {
                            kind: TrapKind::Deadline,
                            ..
                        }
                    ) {
                        // A call that ran to its deadline is retried only after as long
                        // again: a projector stuck on one batch keeps at most half a
                        // core busy, however its retries are scheduled.
                        self.sleep(took);
                    }
                    match known {
                        // The events before the poison one are good: apply them first,
                        // so the read model stops exactly before it, under either policy.
                        Some(offset) if projection.checkpoint() + 1 < offset => {
                            isolation = Isolation::Before {
                                offset,
                                dead_letter: (self.spec.policy == PoisonPolicy::Skip)
                                    .then(|| message.clone()),
                            };
                        }
                        Some(offset) => match self.spec.policy {
                            PoisonPolicy::Skip => {
                                let correlation_id = self.correlation_id(offset);
                                tracing::warn!(projector = %self.spec.projector, %version, offset, correlation_id, "poison event dead-lettered: {message}");
                                if let Err(failure) =
                                    self.dead_letter(&mut projection, offset, &message)
                                {
                                    self.transient(&failure, &mut backoff);
                                }
                            }
                            PoisonPolicy::Stop => self.stall(offset, &message, &mut backoff),
                        },
                        // A trap in a batch of several events does not say which one:
                        // replay the batch one event at a time to find it.
                        None => {
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
                    }
                }
                Err(failure) => self.transient(&failure, &mut backoff),
            }
        }
        let checkpoint = projection.checkpoint();
        tracing::info!(projector = %self.spec.projector, %version, checkpoint, "projector stopped");
    }

    /// How long one call may take before the status reports it as overrunning: the
    /// batch deadline and its grace.
    fn call_limit(&self) -> Duration {
        let limits = self.spec.loaded.runtime().limits();
        limits
            .batch_deadline()
            .saturating_add(limits.deadline_grace())
    }

    /// After a call: an overrun is logged, and the log lines the guest had dropped
    /// are copied into the status.
    fn end_call(&mut self, projection: &Projection) {
        if let Some(overrun) = self.status.end_call() {
            tracing::error!(
                projector = %self.spec.projector,
                version = %self.spec.loaded.version(),
                offset = overrun.at,
                "a call ran for {:.1} s, past its deadline and grace of {:.1} s: a single SQLite step outlasted the sandbox's bounds",
                overrun.running_seconds,
                overrun.limit_seconds,
            );
        }
        let dropped = projection.loaded().log_lines_dropped();
        self.status
            .update(|status| status.log_lines_dropped = dropped);
    }

    /// Carries out a request from the controller.
    fn obey(&mut self, command: Command, projection: &mut Projection) {
        match command {
            Command::Sync(reply) => {
                let synced = projection
                    .sync()
                    .map(|()| projection.checkpoint())
                    .map_err(|error| describe(&error));
                // The controller may have given up waiting; nothing to tell it then.
                let _ = reply.send(synced);
            }
            Command::Hold(ceiling) => self.hold = ceiling,
            Command::SetMode(mode) => {
                self.mode = mode;
                if let Some(driver) = projection.reactor_mut() {
                    driver.set_emitting(emits_in(mode));
                    driver.set_first_version(mode == Mode::Initial);
                    if mode != Mode::Shadow {
                        driver.set_follow(None);
                    }
                }
                if matches!(mode, Mode::Active | Mode::Warm) {
                    // A re-instantiation after a trap must not reopen the read model
                    // with the replay's `synchronous=OFF`.
                    projection.set_db_options(DbOptions::live());
                }
            }
        }
    }

    /// A reactor appends its due timers' events (when it emits); a failure is retried
    /// on the next turn.
    fn fire_due_timers(&mut self, projection: &mut Projection) {
        if projection.effect_counts().is_none() {
            return;
        }
        let now = jiff::Timestamp::now().as_microsecond();
        if let Err(error) = projection.fire_due_timers(now) {
            tracing::warn!(reactor = %self.spec.projector, "cannot fire due timers: {}", describe(&error));
        }
        if let Some(counts) = projection.effect_counts() {
            self.status.update(|status| status.effects = Some(counts));
        }
    }

    /// A shadow that cannot complete: record why and end the thread. The controller
    /// sees the failed state and drops the shadow; the active version is untouched.
    fn fail(&mut self, message: &str) {
        tracing::error!(projector = %self.spec.projector, version = %self.spec.loaded.version(), "shadow replay failed {message}");
        let state = State::Failed {
            message: message.to_owned(),
        };
        self.status.update(|status| {
            status.state = state.clone();
            status.last_error = Some(message.to_owned());
        });
        self.record_state(&state, Some(message));
    }

    /// The `correlation_id` in the metadata of the event at `offset`, for log lines
    /// about it. Read only on failure paths, never per batch.
    fn correlation_id(&self, offset: u64) -> Option<String> {
        let query = ReadQuery {
            from_offset: offset,
            to_offset: Some(offset),
            ..ReadQuery::default()
        };
        let event = self.log.read(&query).ok()?.next()?.ok()?;
        correlation_id(event.metadata.as_deref()).map(std::borrow::Cow::into_owned)
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

    /// Records progress: checkpoint, head, and the catching-up or live state, or
    /// [`State::AheadOfLog`] when the checkpoint is past the head.
    fn progress(&mut self, projection: &mut Projection, checkpoint: u64) {
        let head = projection.log_head().unwrap_or(checkpoint);
        let state = progress_state(checkpoint, head, self.spec.log_check);
        if matches!(state, State::AheadOfLog { .. }) && !self.ahead_of_log {
            self.ahead_of_log = true;
            tracing::error!(projector = %self.spec.projector, version = %self.spec.loaded.version(), read_model = %self.spec.db_path.display(), "projection stopped: {state}");
        }
        let head = match self.spec.log_check {
            LogCheck::Strict => head,
            // A trailing mirror: the read model is as far as it gets for now.
            LogCheck::MayTrail => head.max(checkpoint),
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
            let correlation_id = self.correlation_id(at);
            tracing::error!(projector = %self.spec.projector, version = %self.spec.loaded.version(), offset = at, correlation_id, "projector stalled: {message}");
        } else {
            tracing::debug!(projector = %self.spec.projector, offset = at, retry_in = ?pause, "still stalled: {message}");
        }
        let head = self.head_seen();
        self.status.update(|status| {
            status.state = state.clone();
            status.last_error = Some(message.to_owned());
            status.head = status.head.max(head);
        });
        self.record_state(&state, Some(message));
        self.sleep(pause);
    }

    /// The log's head as last appended through this process. A version that is not
    /// progressing still reports it, so its lag grows while it stalls or retries
    /// instead of freezing at its last good step.
    fn head_seen(&self) -> u64 {
        *self.head.borrow()
    }

    /// A host failure (I/O, a busy or full disk, an unreadable read model): never
    /// poison, always retried. The version shows [`State::Retrying`] until it recovers;
    /// the failure is logged once, then counted.
    fn transient(&mut self, failure: &ProjectionError, backoff: &mut Backoff) {
        let pause = backoff.next();
        let message = self.explain(failure);
        let attempts = u64::from(backoff.failures());
        let (projector, version) = (&self.spec.projector, self.spec.loaded.version());
        match self.failures.note(&message) {
            Occurrence::First => {
                tracing::warn!(%projector, %version, retry_in = ?pause, "projector failed, will retry: {message}");
            }
            Occurrence::Summary { repeats } => {
                tracing::warn!(%projector, %version, attempts, "projector still failing ({repeats} more times since the last report): {message}");
            }
            Occurrence::Quiet => {
                tracing::debug!(%projector, retry_in = ?pause, "retrying after: {message}");
            }
        }
        let state = State::Retrying {
            attempts,
            message: message.clone(),
        };
        let head = self.head_seen();
        self.status.update(|status| {
            status.state = state.clone();
            status.last_error = Some(message.clone());
            status.head = status.head.max(head);
        });
        self.record_state(&state, Some(&message));
        self.sleep(pause);
    }

    /// A step succeeded: if host failures were being retried, say they are over.
    fn recovered(&mut self) {
        if let Some(failures) = self.failures.clear() {
            tracing::info!(projector = %self.spec.projector, version = %self.spec.loaded.version(), failures, "projector recovered");
        }
    }

    /// A failure and its causes as one line, with the fix when the read model's storage
    /// is at fault (the log's and `control.db`'s errors carry their own).
    fn explain(&self, failure: &ProjectionError) -> String {
        let mut message = describe(failure);
        let own_advice = matches!(
            failure,
            ProjectionError::Log(_)
                | ProjectionError::Host(_)
                | ProjectionError::ReadModelMissing { .. }
        );
        if own_advice {
            return message;
        }
        let path = &self.spec.db_path;
        if let Some(fault) = StorageFault::of(failure).or_else(|| StorageFault::probe(path)) {
            message.push_str("; ");
            message.push_str(&fault.advice(
                path,
                &format!("the read model of projector `{}`", self.spec.projector),
            ));
            if fault == StorageFault::Damaged {
                // A read model is derived: the log has everything to build it again.
                message.push_str(", or delete it and refract rebuilds it from the log");
            }
        }
        message
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
            Ok(()) => {
                self.recorded_state = Some(entry);
                self.state_failures.clear();
            }
            Err(failure) => {
                let message = failure.to_string();
                match self.state_failures.note(&message) {
                    Occurrence::First => {
                        tracing::warn!(%projector, "cannot record the state in control.db: {message}");
                    }
                    Occurrence::Summary { repeats } => {
                        tracing::warn!(%projector, "still cannot record the state in control.db ({repeats} more times): {message}");
                    }
                    Occurrence::Quiet => {}
                }
            }
        }
    }

    /// Waits for an append through this process, the external-poll interval, a
    /// command (returned, for the loop to carry out), or shutdown.
    fn wait_for_work(&mut self) -> Option<Command> {
        let poll = self.spec.external_poll;
        let (head, shutdown, commands) = (&mut self.head, &mut self.shutdown, &mut self.commands);
        self.runtime.block_on(async {
            tokio::select! {
                _ = head.changed() => None,
                _ = shutdown.changed() => None,
                command = commands.recv() => command,
                () = tokio::time::sleep(poll) => None,
            }
        })
    }

    /// A rate limit's pause: sleeps, but carries out any command that arrives meanwhile
    /// (a swap waits on this worker's sync) and stops pacing once it is no longer
    /// replaying.
    fn pace_for(&mut self, pause: Duration, projection: &mut Projection) {
        let until = tokio::time::Instant::now() + pause;
        while matches!(self.mode, Mode::Shadow | Mode::Initial) && !self.stopping() {
            let (shutdown, commands) = (&mut self.shutdown, &mut self.commands);
            let command = self.runtime.block_on(async {
                tokio::select! {
                    _ = shutdown.changed() => None,
                    command = commands.recv() => command,
                    () = tokio::time::sleep_until(until) => None,
                }
            });
            match command {
                Some(command) => self.obey(command, projection),
                None => return,
            }
        }
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

/// The state of a version at `checkpoint` with the log at `head`: a checkpoint past the
/// head is an error under [`LogCheck::Strict`], and a mirror still catching up under
/// [`LogCheck::MayTrail`].
fn progress_state(checkpoint: u64, head: u64, log_check: LogCheck) -> State {
    match (checkpoint.cmp(&head), log_check) {
        (Ordering::Greater, LogCheck::Strict) => State::AheadOfLog { checkpoint, head },
        // The read model waits for the mirror to reach it.
        (Ordering::Greater, LogCheck::MayTrail) | (Ordering::Less, _) => State::CatchingUp,
        (Ordering::Equal, _) => State::Live,
    }
}

/// An error and its causes, as one line: status and `control.db` show this text.
fn describe(error: &dyn std::error::Error) -> String {
    crate::error_text::one_line(error)
}

/// Paces a rate-limited replay: how long to pause so that events applied since the
/// replay (re)started stay within the rate.
#[derive(Debug, Default)]
struct Pace {
    started: Option<Instant>,
    events: u64,
}

impl Pace {
    fn admit(&mut self, events: usize, per_second: u64) -> Duration {
        let started = *self.started.get_or_insert_with(Instant::now);
        self.events += events as u64;
        let due = Duration::from_secs_f64(self.events as f64 / per_second as f64);
        due.saturating_sub(started.elapsed())
    }
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
    fn pace_holds_a_replay_to_its_rate() {
        let mut pace = Pace::default();
        let first = pace.admit(1000, 1000);
        assert!(first > Duration::from_millis(900), "{first:?}");
        let second = pace.admit(1000, 1000);
        assert!(second > Duration::from_millis(1900), "{second:?}");
    }

    #[test]
    fn a_checkpoint_past_the_head_is_an_error_unless_the_log_may_trail() {
        assert_eq!(progress_state(5, 9, LogCheck::Strict), State::CatchingUp);
        assert_eq!(progress_state(9, 9, LogCheck::Strict), State::Live);
        assert_eq!(
            progress_state(9, 0, LogCheck::Strict),
            State::AheadOfLog {
                checkpoint: 9,
                head: 0
            }
        );
        assert_eq!(progress_state(9, 0, LogCheck::MayTrail), State::CatchingUp);
    }

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
