//! A live projector: one long-lived instance bound to its read model, and the calls into
//! it, each inside a host-owned transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::{Store, Trap, UpdateDeadline};

use super::batch::{EventBatch, EventFields};
use super::bindings::{self, ContractVersion, Projector, ProjectorPre};
use super::engine;
use super::error::{Position, ProjectorError, RuntimeError, TrapContext, TrapKind, describe_trap};
use super::host_log::{LOG_TARGET, LogBudget, LogHost, truncate};
use super::host_sql::SqlHost;
use super::limits::{MAX_NAME_BYTES, SandboxLimits, format_bytes};
use super::projector::{LoadedProjector, Runtime};
use super::sql::{DbOptions, Guard, SandboxedDb};
use super::store::StoreState;
use super::wasi;
use crate::reactors::{CommitError, EffectsHost, Emit, EmitRate, ReactorInfo};

/// Why the host's own writes around a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostWriteError {
    /// The host's tables in the database (the checkpoint) could not be written.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// A reactor's emitted events could not be appended to the log.
    #[error(transparent)]
    Emit(#[from] CommitError),
}

/// What a projector says about itself, checked against the contract and the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorInfo {
    /// The name: 1 to 64 characters of `[a-z0-9_-]`.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// The events it receives.
    pub subscriptions: Subscriptions,
    /// The optional event fields it reads (0.2.0's `reads`; every field for 0.1.0).
    pub reads: EventFields,
    /// The contract version it implements.
    pub contract: ContractVersion,
}

/// Which events a projector receives; see the WIT `subscriptions` record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    /// Exact event types; empty means every type.
    pub event_types: Vec<String>,
    /// Stream name prefixes; empty means every stream.
    pub stream_prefixes: Vec<String>,
}

/// A projector instance bound to its read model.
///
/// Every call runs in a transaction the host opens and commits together with the
/// host's own writes (the engine's checkpoint), so a batch is applied exactly once or
/// not at all. After a trap the instance is poisoned: its memory may be mid-update, so the
/// next call instantiates afresh from the same component and database.
pub struct ProjectorInstance {
    loaded: LoadedProjector,
    store: Store<StoreState>,
    bindings: Projector,
    info: ProjectorInfo,
    guard: Arc<Guard>,
    db_path: PathBuf,
    options: DbOptions,
    poisoned: bool,
}

impl std::fmt::Debug for ProjectorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectorInstance")
            .field("info", &self.info)
            .field("version", &self.loaded.version())
            .field("db_path", &self.db_path)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// A guest's own report of failure.
enum GuestError {
    Init(String),
    Handle(bindings::HandleError),
}

/// A freshly started instance: instantiated, and its metadata read and checked.
pub(crate) struct Started {
    store: Store<StoreState>,
    bindings: Projector,
    guard: Arc<Guard>,
    pub(crate) info: ProjectorInfo,
    pub(crate) reactor: Option<ReactorInfo>,
}

/// A call ended because the host cancelled it ([`Runtime::cancel_calls`]): it is
/// shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the call was cancelled: the host is shutting down")]
pub(crate) struct Cancelled;

/// Instantiates `pre` against `db` and calls `metadata`, under the call deadline and
/// `limits`.
pub(crate) fn start(
    runtime: &Runtime,
    pre: &ProjectorPre,
    version: &Arc<str>,
    limits: &Arc<SandboxLimits>,
    log_budget: &Arc<LogBudget>,
    reactor_rate: Option<&Arc<EmitRate>>,
    db: SandboxedDb,
) -> Result<Started, RuntimeError> {
    let shared = runtime.inner();
    let guard = Arc::clone(db.guard());
    let stderr = wasi::StderrCapture::new(limits.max_stderr_bytes, limits.max_stderr_lines);
    let state = StoreState::new(
        wasi::deny_all_ctx(limits.max_random_bytes, stderr.clone()),
        stderr,
        limits,
        SqlHost::new(db, Arc::clone(limits)),
        LogHost::new(Arc::clone(version), Arc::clone(log_budget), limits),
        EffectsHost::new(
            limits,
            reactor_rate.map_or_else(|| Arc::new(EmitRate::new(limits)), Arc::clone),
        ),
    );
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(limits.max_hostcall_bytes);
    // The call's deadline and cancellation, checked on every epoch tick: the same
    // deadline the guard gives SQLite, so wasm and SQL end a call together.
    {
        let (guard, clock) = (Arc::clone(&guard), runtime.clock().clone());
        store.epoch_deadline_callback(move |_| {
            if guard.cancelled() {
                return Err(wasmtime::Error::new(Cancelled));
            }
            if guard.call_expired(clock.now()) {
                return Err(wasmtime::Error::new(Trap::Interrupt));
            }
            Ok(UpdateDeadline::Continue(1))
        });
    }

    let ticks = engine::deadline_ticks(limits.batch_deadline());
    let started = {
        let _guest = guard.enter_guest(runtime.clock().now().saturating_add(ticks));
        store.set_epoch_deadline(1);
        pre.instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let bindings = Projector::new(pre, &mut store, &instance)?;
                store.set_epoch_deadline(1);
                let info = bindings.call_metadata(&mut store)?;
                let reactor = if reactor_rate.is_some() {
                    store.set_epoch_deadline(1);
                    Some(crate::reactors::call_reactor_info(&mut store, &instance)?)
                } else {
                    None
                };
                Ok((bindings, info, reactor))
            })
    };
    let (bindings, raw_info, raw_reactor) = started.map_err(|err| {
        let state = store.data();
        let context = TrapContext {
            refused: state.limiter.refused(),
            stderr: state.stderr.text(),
        };
        RuntimeError::Instantiate {
            version: version.to_string(),
            message: describe_trap(&err, limits, context).1,
        }
    })?;
    let info = validate_info(raw_info, pre.version(), limits).map_err(|message| {
        RuntimeError::InvalidMetadata {
            version: version.to_string(),
            message,
        }
    })?;
    let reactor = raw_reactor
        .map(|raw| crate::reactors::validate_reactor_info(raw, limits))
        .transpose()
        .map_err(|message| RuntimeError::InvalidMetadata {
            version: version.to_string(),
            message,
        })?;
    store.data_mut().log.set_projector(&info.name);
    if let Some(reactor) = &reactor {
        store
            .data_mut()
            .effects
            .set_reactor(&info.name, reactor.emits.clone());
    }
    Ok(Started {
        store,
        bindings,
        guard,
        info,
        reactor,
    })
}

impl LoadedProjector {
    /// What the projector says about itself (read and checked when it was loaded).
    pub fn info(&self) -> &ProjectorInfo {
        &self.inner.info
    }

    /// Opens (creating if needed) the read model at `db_path` as a sandboxed connection,
    /// instantiates the component against it, and asks it for its metadata.
    pub fn instantiate(
        &self,
        db_path: &Path,
        options: DbOptions,
    ) -> Result<ProjectorInstance, RuntimeError> {
        let runtime = self.runtime();
        let db = SandboxedDb::open(
            db_path,
            options,
            &self.limits,
            runtime.clock().clone(),
            runtime.watchdog(),
        )
        .map_err(|source| RuntimeError::OpenDb {
            path: db_path.to_owned(),
            source,
        })?;
        let started = start(
            runtime,
            &self.inner.pre,
            &self.inner.version,
            &self.limits,
            &self.log_budget,
            self.inner.reactor.is_some().then_some(&self.emit_rate),
            db,
        )?;
        if started.info != self.inner.info {
            return Err(RuntimeError::InvalidMetadata {
                version: self.version().to_owned(),
                message: "`metadata` answered differently than when the component was loaded; it must be constant".into(),
            });
        }
        Ok(ProjectorInstance {
            loaded: self.clone(),
            store: started.store,
            bindings: started.bindings,
            info: started.info,
            guard: started.guard,
            db_path: db_path.to_owned(),
            options,
            poisoned: false,
        })
    }
}

impl ProjectorInstance {
    /// What the projector said about itself.
    pub fn info(&self) -> &ProjectorInfo {
        &self.info
    }

    /// The projector version this instance runs.
    pub fn loaded(&self) -> &LoadedProjector {
        &self.loaded
    }

    /// The read-model database.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Whether a trap has discarded this instance. The next [`init`](Self::init) or
    /// [`apply`](Self::apply) instantiates again; a caller may also drop it and call
    /// [`LoadedProjector::instantiate`] itself.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The most temporary storage (sorts, temporary b-trees) this instance's connection
    /// has held at once, in bytes; at most `limits.max_temp_bytes`.
    pub fn temp_peak_bytes(&self) -> u64 {
        self.store.data().sql.db().temp_peak_bytes()
    }

    /// The read model's connection for the host's own reads and writes (checkpoints),
    /// outside any guest call: the sandbox's guest checks are off, ATTACH stays denied.
    pub fn host_connection(&self) -> &rusqlite::Connection {
        self.store.data().sql.db().conn()
    }

    /// Creates the read model's schema: BEGIN; the guest's `init`; `host_writes` (for
    /// example the host's `_refract_` tables); COMMIT. Any failure rolls back.
    pub fn init(
        &mut self,
        host_writes: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()>,
    ) -> Result<(), ProjectorError> {
        self.run(
            Position::Init,
            None,
            |bindings, store| Ok(bindings.call_init(store)?.map_err(GuestError::Init)),
            |conn, _emits| host_writes(conn).map_err(HostWriteError::Sql),
        )
    }

    /// Applies one batch: BEGIN; the guest's `handle` under the deadline; `host_writes`
    /// (the engine's checkpoint, in the same transaction); COMMIT. Any failure rolls the
    /// whole batch back. An empty batch runs only `host_writes`.
    pub fn apply(
        &mut self,
        batch: &EventBatch,
        host_writes: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<()>,
    ) -> Result<(), ProjectorError> {
        self.apply_with_effects(batch, |conn, _emits| {
            host_writes(conn).map_err(HostWriteError::Sql)
        })
    }

    /// Emits caused at or before `offset` are suppressed by the reactor's driver, so
    /// they do not count against `max_emits_per_second`.
    pub(crate) fn set_emit_rate_after(&mut self, offset: u64) {
        self.store.data_mut().effects.set_rate_after(offset);
    }

    /// [`apply`](Self::apply) for a reactor: `host_writes` also receives the events the
    /// guest emitted during the call, in order, to append them before the commit (see
    /// [`crate::reactors`]). A projector's list is always empty.
    pub fn apply_with_effects(
        &mut self,
        batch: &EventBatch,
        host_writes: impl FnOnce(&rusqlite::Connection, Vec<Emit>) -> Result<(), HostWriteError>,
    ) -> Result<(), ProjectorError> {
        let at = match (batch.first_offset(), batch.last_offset()) {
            (Some(first), Some(last)) => Position::Batch { first, last },
            _ => Position::NoEvents,
        };
        if let Some(reason) = batch.broken() {
            return Err(ProjectorError::InvalidBatch {
                projector: self.info.name.clone(),
                version: self.loaded.version().to_owned(),
                at,
                reason,
            });
        }
        // A field the projector does not read arrives empty, as the contract says,
        // whoever built the batch (the engine reads it that way already).
        let blanked = batch.without_unread(self.info.reads);
        let batch = blanked.as_ref().unwrap_or(batch);
        let packed = batch.packed();
        let empty = batch.is_empty();
        self.run(
            at,
            Some(batch),
            |bindings, store| {
                if empty {
                    return Ok(Ok(()));
                }
                Ok(bindings
                    .call_handle(store, packed)?
                    .map_err(GuestError::Handle))
            },
            host_writes,
        )
    }

    /// One call in one transaction; see [`init`](Self::init) and [`apply`](Self::apply).
    fn run(
        &mut self,
        at: Position,
        batch: Option<&EventBatch>,
        call: impl FnOnce(
            &Projector,
            &mut Store<StoreState>,
        ) -> wasmtime::Result<Result<(), GuestError>>,
        host_writes: impl FnOnce(&rusqlite::Connection, Vec<Emit>) -> Result<(), HostWriteError>,
    ) -> Result<(), ProjectorError> {
        // Checked first: a fresh instance could not start either, and its failure would
        // look like the projector's fault.
        if self.guard.cancelled() {
            return Err(ProjectorError::Cancelled {
                projector: self.info.name.clone(),
                version: self.loaded.version().to_owned(),
                at,
            });
        }
        if self.poisoned {
            let fresh = self.loaded.instantiate(&self.db_path, self.options);
            *self = fresh.map_err(|source| ProjectorError::Reinstantiate {
                projector: self.info.name.clone(),
                version: self.loaded.version().to_owned(),
                at,
                source: Box::new(source),
            })?;
        }
        // A transaction left open by a failed commit and a failed rollback would make
        // BEGIN fail forever; nothing from it can be kept, so it goes first.
        self.rollback();
        self.host_conn()
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|source| self.host_error(at, "begin a transaction", source))?;

        let limits = Arc::clone(&self.loaded.limits);
        let ticks = engine::deadline_ticks(limits.batch_deadline());
        let deadline = self.loaded.runtime().clock().now().saturating_add(ticks);
        let guard = Arc::clone(&self.guard);
        {
            let state = self.store.data_mut();
            state.sql.set_in_transaction(true);
            state.start_call();
            match batch {
                Some(batch) => {
                    let packed = batch.packed();
                    state.effects.begin(&packed.offsets, &packed.recorded_at);
                }
                None => state.effects.begin(&[], &[]),
            }
        }
        let outcome = {
            let _guest = guard.enter_guest(deadline);
            self.store.set_epoch_deadline(1);
            call(&self.bindings, &mut self.store)
        };
        let host_failure = {
            let state = self.store.data_mut();
            state.sql.set_in_transaction(false);
            state.log.finish_call();
            state.sql.take_host_failure()
        };
        let emits = self.store.data_mut().effects.finish();
        if guard.cancelled() {
            // Whatever the guest made of its interrupted SQL, nothing of it is kept.
            self.rollback();
            self.poisoned |= outcome.is_err();
            return Err(ProjectorError::Cancelled {
                projector: self.info.name.clone(),
                version: self.loaded.version().to_owned(),
                at,
            });
        }

        let guest_result = match outcome {
            Err(trap) => {
                self.rollback();
                self.poisoned = true;
                if let Some(source) = host_failure {
                    // The host's database failed first; the guest may have crashed on
                    // the error it was given. Retry rather than blame the event.
                    return Err(self.host_error(at, "run the projector's SQL", source));
                }
                let state = self.store.data();
                let context = TrapContext {
                    refused: state.limiter.refused(),
                    stderr: state.stderr.text(),
                };
                let (kind, message) = describe_trap(&trap, &limits, context);
                tracing::debug!(
                    target: LOG_TARGET,
                    projector = %self.info.name,
                    version = %self.loaded.version(),
                    "trapped {at}: {trap:?}"
                );
                return Err(self.trap_error(at, kind, message));
            }
            Ok(result) => result,
        };
        if let Some(source) = host_failure {
            self.rollback();
            return Err(self.host_error(at, "run the projector's SQL", source));
        }
        if let Err(guest_error) = guest_result {
            self.rollback();
            return Err(self.guest_error(at, batch, guest_error, &limits));
        }
        if self.host_conn().is_autocommit() {
            return Err(ProjectorError::Aborted {
                projector: self.info.name.clone(),
                version: self.loaded.version().to_owned(),
                at,
            });
        }
        match host_writes(self.host_conn(), emits) {
            Ok(()) => {}
            Err(HostWriteError::Sql(source)) => {
                self.rollback();
                return Err(self.host_error(at, "write the host's records", source));
            }
            Err(HostWriteError::Emit(source)) => {
                self.rollback();
                let at = source.cause().map_or(at, Position::Offset);
                return Err(ProjectorError::Emit {
                    projector: self.info.name.clone(),
                    version: self.loaded.version().to_owned(),
                    at,
                    source: Box::new(source),
                });
            }
        }
        if let Err(source) = self.host_conn().execute_batch("COMMIT") {
            self.rollback();
            return Err(self.host_error(at, "commit", source));
        }
        Ok(())
    }

    fn host_conn(&self) -> &rusqlite::Connection {
        self.store.data().sql.db().conn()
    }

    /// Rolls back the open transaction, if SQLite has not already.
    fn rollback(&self) {
        let conn = self.host_conn();
        if !conn.is_autocommit()
            && let Err(err) = conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(
                projector = %self.info.name,
                version = %self.loaded.version(),
                "rollback failed: {err}"
            );
        }
    }

    fn host_error(
        &self,
        at: Position,
        action: &'static str,
        source: rusqlite::Error,
    ) -> ProjectorError {
        ProjectorError::Host {
            projector: self.info.name.clone(),
            version: self.loaded.version().to_owned(),
            at,
            action,
            source: Box::new(source),
        }
    }

    fn trap_error(&self, at: Position, kind: TrapKind, message: String) -> ProjectorError {
        ProjectorError::Trap {
            projector: self.info.name.clone(),
            version: self.loaded.version().to_owned(),
            at,
            kind,
            message,
        }
    }

    fn guest_error(
        &mut self,
        at: Position,
        batch: Option<&EventBatch>,
        error: GuestError,
        limits: &SandboxLimits,
    ) -> ProjectorError {
        let cut = |message: &str| {
            truncate(
                message,
                limits.max_error_message_bytes,
                "max_error_message_bytes",
            )
        };
        let (projector, version) = (self.info.name.clone(), self.loaded.version().to_owned());
        match error {
            GuestError::Init(message) => ProjectorError::Init {
                projector,
                version,
                message: cut(&message),
            },
            GuestError::Handle(bindings::HandleError { offset, message })
                if batch.is_some_and(|batch| batch.contains_offset(offset)) =>
            {
                ProjectorError::Handler {
                    projector,
                    version,
                    offset,
                    message: cut(&message),
                }
            }
            GuestError::Handle(bindings::HandleError { offset, message }) => {
                // A projector that blames an event it was not given cannot be trusted to
                // name the poison event; treat it as a crash so the batch is narrowed down.
                self.poisoned = true;
                ProjectorError::Trap {
                    projector,
                    version,
                    at,
                    kind: TrapKind::Crash,
                    message: format!(
                        "returned an error for offset {offset}, which is not in the batch: {}",
                        cut(&message)
                    ),
                }
            }
        }
    }
}

/// Checks `metadata` against the contract and the limits.
fn validate_info(
    raw: bindings::RawInfo,
    contract: ContractVersion,
    limits: &SandboxLimits,
) -> Result<ProjectorInfo, String> {
    let bindings::RawInfo {
        name,
        description,
        event_types,
        stream_prefixes,
        reads,
    } = raw;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(format!(
            "the name {:?} must be 1 to {MAX_NAME_BYTES} characters of a-z, 0-9, `_` and `-`",
            name.chars().take(MAX_NAME_BYTES + 16).collect::<String>()
        ));
    }
    if description.len() > limits.max_description_bytes {
        return Err(format!(
            "the description is {} bytes; the limit is {} (`limits.max_description_bytes`)",
            description.len(),
            format_bytes(limits.max_description_bytes)
        ));
    }
    for (what, list) in [
        ("event types", &event_types),
        ("stream prefixes", &stream_prefixes),
    ] {
        if list.len() > limits.max_subscriptions {
            return Err(format!(
                "it subscribes to {} {what}; the limit is {} (`limits.max_subscriptions`)",
                list.len(),
                limits.max_subscriptions
            ));
        }
        if let Some(entry) = list
            .iter()
            .find(|entry| entry.is_empty() || entry.len() > limits.max_subscription_bytes)
        {
            return Err(format!(
                "a subscription to {what} has an entry of {} bytes; entries must be 1 to {} bytes (`limits.max_subscription_bytes`)",
                entry.len(),
                limits.max_subscription_bytes
            ));
        }
    }
    Ok(ProjectorInfo {
        name,
        description,
        subscriptions: Subscriptions {
            event_types,
            stream_prefixes,
        },
        reads,
        contract,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str) -> bindings::RawInfo {
        bindings::RawInfo {
            name: name.into(),
            description: "d".into(),
            event_types: vec!["money.deposited".into()],
            stream_prefixes: Vec::new(),
            reads: EventFields::ALL,
        }
    }

    #[test]
    fn names_follow_the_contract() {
        let limits = SandboxLimits::default();
        assert!(validate_info(raw("balances_v2-x"), ContractVersion::V0_2, &limits).is_ok());
        for bad in ["", "Balances", "a b", "é", &"x".repeat(65)] {
            assert!(
                validate_info(raw(bad), ContractVersion::V0_2, &limits).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn oversized_metadata_names_its_limit() {
        let limits = SandboxLimits::default();
        let mut info = raw("ok");
        info.event_types = vec!["t".into(); limits.max_subscriptions + 1];
        let err = validate_info(info, ContractVersion::V0_1, &limits).expect_err("too many");
        assert!(err.contains("limits.max_subscriptions"), "{err}");
    }
}
