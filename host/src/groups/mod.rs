//! Consumer groups: named groups of members that share the work of consuming the log,
//! with at-least-once delivery and a committed position kept by the host.
//!
//! - **Groups** are named `[a-z0-9_-]{1,64}` and consume the events their filter
//!   selects (types, stream prefixes). A group is declared in `refract.toml`
//!   (`[groups.<name>]`, see [`config`]) or created by the first member that joins it,
//!   with the filter that join names; at most `consumers.max_groups` exist.
//! - **Members** join by polling (`POST /v1/groups/{group}/poll`, a long poll) or by
//!   subscribing (`GET /v1/groups/{group}/subscribe`, SSE). Polls, acks, nacks,
//!   heartbeats and an open subscription keep a member's session; a member silent for
//!   the group's `session_timeout` leaves it.
//! - **Work sharing.** A stream belongs to one of the group's partitions (a hash of its
//!   name, see [`assign`]); partitions go round-robin to the members, by name. Every
//!   event of a stream therefore goes to one member, in order. A join or a departure
//!   reassigns the partitions; **in-flight events drain before handover**: a partition
//!   whose events are still leased to their previous owner reaches its new owner only
//!   once those leases end (see [`state`]).
//! - **At least once.** A delivery is leased for the group's `lease`. An ack resolves
//!   the event. A lease that expires, a `nack` (with the member's reason), or the
//!   member leaving makes the event ready again; after `max_deliveries` deliveries it
//!   goes to the group's dead letters with the last reason instead.
//! - **The committed position** is the highest offset below which every event of the
//!   group is acked or dead-lettered. It is kept in `control.db` ([`store`]), written
//!   every `consumers.commit_interval_ms` and at shutdown, and survives restarts. After
//!   a crash the group resumes from the last written position, so acks of the last
//!   interval are delivered again.
//! - **Operations.** A group can be reset to an offset or a time, and deleted (unless
//!   declared). `refract groups` shows members, partitions, committed offset, lag and
//!   redeliveries; `/metrics` and `/health` show the lag (`lag_alert`).
//! - **Retention** never removes an event a declared group with `retention = "hold"`
//!   (the default) has not committed: see [`Groups::retention_floor`]. A group created
//!   by a join does not hold retention; declare it to make retention wait for it.
//!
//! Every cost a client controls is capped by a `[consumers]` limit: groups, members per
//! group, leases per member, events per poll, the long-poll wait, the lease a poll asks
//! for, and each group's in-memory window (events and bytes). Subscriptions and waiting
//! long polls are held connections, counted against `server.max_subscribers`.
//!
//! # Layout
//! - `mod.rs`: [`Groups`], the facade the API and the CLI use; its background thread.
//! - [`config`]: `[consumers]` and `[groups.<name>]`.
//! - [`assign`]: partitions and their assignment.
//! - [`state`]: one group's members, window and leases; the rules, unit-tested.
//! - [`store`]: what lasts, in `control.db`.
//! - `error`: [`GroupError`].
//!
//! Every method blocks (SQLite, the log); call them from async code through
//! `spawn_blocking`.

pub mod assign;
pub mod config;
mod error;
pub mod state;
pub mod store;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use config::{ConsumersConfig, GroupFilter, GroupSection, GroupSettings};
pub use error::GroupError;
pub use state::{AckOutcome, DeadLetter, Delivery, MemberView, NackOutcome, Stats};
pub use store::StoredDeadLetter;

use crate::config::Config;
use crate::log::{EventLog, LogReader, ReadQuery};
use state::{GroupState, Limits};
use store::Store;

/// How often the background thread ends expired leases and sessions. Leases and
/// sessions therefore end within this much of their deadline.
pub const GROUP_TICK: Duration = Duration::from_millis(100);

/// The most events one read from the log adds to a group's window, so a read holds the
/// group's lock only briefly.
pub const FILL_CHUNK_EVENTS: usize = 1000;

/// Where to move a group with [`Groups::reset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The next event delivered is the first at or after this offset.
    Offset(u64),
    /// The next event delivered is the first recorded at or after this time.
    Time(jiff::Timestamp),
}

/// A group as shown by `refract groups`, the API and the metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Declared in `refract.toml`, or created by a join.
    pub declared: bool,
    /// Which events it consumes.
    pub filter: GroupFilter,
    /// Partitions.
    pub partitions: u32,
    /// Lease, in milliseconds.
    pub lease_ms: u64,
    /// Session timeout, in milliseconds.
    pub session_timeout_ms: u64,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// The lag above which `/health` is degraded.
    pub lag_alert: Option<u64>,
    /// Whether retention waits for it.
    pub hold_retention: bool,
    /// Everything at or below is acked or dead-lettered.
    pub committed: u64,
    /// The log head.
    pub head: u64,
    /// `head - committed`, in offsets.
    pub lag: u64,
    /// Un-acked events held in memory.
    pub window_events: usize,
    /// Events leased to members now.
    pub in_flight: usize,
    /// The members (none when read with no host running).
    pub members: Vec<MemberView>,
    /// Redeliveries, all time.
    pub redeliveries: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// Deliveries and acks since the host started.
    pub stats: Stats,
}

/// One group: its settings, its state, its reader of the log.
pub struct Group {
    name: String,
    settings: GroupSettings,
    query: ReadQuery,
    state: Mutex<GroupState>,
    reader: Mutex<Option<LogReader>>,
    wake: Notify,
    /// Counters as stored when the host started.
    base: (u64, u64),
    /// What was last written: committed, redeliveries, dead letters.
    saved: Mutex<(u64, u64, u64)>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    /// Notified whenever events may have become deliverable without an append: a nack,
    /// an expired lease, a rebalance, an ack that drained a partition, a reset. Long
    /// polls and subscriptions wait on it (and on the log head).
    pub fn wake(&self) -> &Notify {
        &self.wake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counters to write: committed, redeliveries, dead letters (all time).
    fn position(&self) -> (u64, u64, u64) {
        let state = self.state();
        let stats = state.stats();
        (
            state.committed(),
            self.base.0 + stats.redeliveries,
            self.base.1 + stats.dead_lettered,
        )
    }
}

/// Every consumer group of a host. Share it behind an `Arc`.
pub struct Groups {
    log: EventLog,
    consumers: ConsumersConfig,
    declared: BTreeMap<String, GroupSection>,
    store: Mutex<Store>,
    groups: RwLock<BTreeMap<String, Arc<Group>>>,
    /// Serialises creations and deletions, so `max_groups` holds.
    membership: Mutex<()>,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

impl Groups {
    /// Loads the groups stored in `control_db`, creates the declared ones that are not
    /// yet stored, and starts the background thread that ends expired leases and
    /// sessions and writes committed positions. Stop it with [`Groups::shutdown`].
    pub fn start(
        log: &EventLog,
        control_db: &Path,
        config: &Config,
    ) -> Result<Arc<Groups>, GroupError> {
        let store = Store::open(control_db)?;
        let groups = Arc::new(Groups {
            log: log.clone(),
            consumers: config.consumers.clone(),
            declared: config.groups.clone(),
            store: Mutex::new(store),
            groups: RwLock::new(BTreeMap::new()),
            membership: Mutex::new(()),
            stop: Arc::new(AtomicBool::new(false)),
            ticker: Mutex::new(None),
        });
        groups.load()?;
        let ticker = {
            let groups = Arc::clone(&groups);
            std::thread::Builder::new()
                .name("refract-groups".into())
                .spawn(move || groups.run_ticker())
                .map_err(|e| GroupError::Invalid(format!("cannot start the groups thread: {e}")))?
        };
        *groups.ticker.lock().unwrap_or_else(PoisonError::into_inner) = Some(ticker);
        Ok(groups)
    }

    fn load(&self) -> Result<(), GroupError> {
        let stored = self.store().groups()?;
        let mut map = BTreeMap::new();
        for group in stored {
            let section = self.declared.get(&group.name);
            let settings = self.consumers.settings(section, group.filter.clone());
            if settings.filter != group.filter {
                self.store()
                    .upsert(&group.name, &settings.filter, group.committed)?;
            }
            let built = self.build(
                &group.name,
                settings,
                group.committed,
                (group.redeliveries, group.dead_lettered),
            );
            map.insert(group.name.clone(), Arc::new(built));
        }
        for (name, section) in &self.declared {
            if map.contains_key(name) {
                continue;
            }
            let settings = self
                .consumers
                .settings(Some(section), GroupFilter::default());
            let committed = match settings.start {
                config::StartAt::Earliest => 0,
                config::StartAt::Latest => self.log.head()?,
            };
            self.store().upsert(name, &settings.filter, committed)?;
            map.insert(
                name.clone(),
                Arc::new(self.build(name, settings, committed, (0, 0))),
            );
        }
        *self.groups.write().unwrap_or_else(PoisonError::into_inner) = map;
        Ok(())
    }

    fn build(
        &self,
        name: &str,
        settings: GroupSettings,
        committed: u64,
        base: (u64, u64),
    ) -> Group {
        let limits = Limits {
            partitions: settings.partitions,
            lease: settings.lease,
            session_timeout: settings.session_timeout,
            max_deliveries: settings.max_deliveries,
            max_in_flight: self.consumers.max_in_flight_per_member,
            max_window_events: self.consumers.max_window_events,
            max_window_bytes: self.consumers.max_window_bytes,
            max_members: self.consumers.max_members_per_group,
        };
        Group {
            name: name.to_owned(),
            query: settings.filter.query(),
            settings,
            state: Mutex::new(GroupState::new(limits, committed)),
            reader: Mutex::new(None),
            wake: Notify::new(),
            base,
            saved: Mutex::new((committed, base.0, base.1)),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits every group works under.
    pub fn consumers(&self) -> &ConsumersConfig {
        &self.consumers
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Result<Arc<Group>, GroupError> {
        config::check_name(name, "group").map_err(GroupError::InvalidName)?;
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| GroupError::UnknownGroup(name.to_owned()))
    }

    /// Adds `member` to group `name` (or refreshes its session), creating the group
    /// with `filter` if it does not exist. A join that names a filter must name the
    /// group's own.
    pub fn join(
        &self,
        name: &str,
        member: &str,
        filter: Option<GroupFilter>,
        now: Instant,
    ) -> Result<Arc<Group>, GroupError> {
        config::check_name(member, "member").map_err(GroupError::InvalidName)?;
        let group = match self.group(name) {
            Ok(group) => group,
            Err(GroupError::UnknownGroup(_)) => {
                self.create(name, filter.clone().unwrap_or_default())?
            }
            Err(error) => return Err(error),
        };
        if let Some(requested) = filter.map(GroupFilter::normalized)
            && requested != group.settings.filter
        {
            return Err(GroupError::FilterMismatch {
                group: name.to_owned(),
                existing: describe(&group.settings.filter),
                requested: describe(&requested),
            });
        }
        let rebalanced = group
            .state()
            .join(member, now)
            .map_err(|source| GroupError::State {
                group: name.to_owned(),
                source,
            })?;
        if rebalanced {
            tracing::info!(group = name, member, "member joined; partitions reassigned");
            group.wake.notify_waiters();
        }
        Ok(group)
    }

    fn create(&self, name: &str, filter: GroupFilter) -> Result<Arc<Group>, GroupError> {
        config::check_name(name, "group").map_err(GroupError::InvalidName)?;
        filter.check().map_err(GroupError::Invalid)?;
        let _serial = self
            .membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Ok(group) = self.group(name) {
            return Ok(group);
        }
        let count = self
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if count >= self.consumers.max_groups {
            return Err(GroupError::TooManyGroups {
                name: name.to_owned(),
                max: self.consumers.max_groups,
            });
        }
        let settings = self.consumers.settings(None, filter);
        self.store().upsert(name, &settings.filter, 0)?;
        let group = Arc::new(self.build(name, settings, 0, (0, 0)));
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), Arc::clone(&group));
        tracing::info!(group = name, "consumer group created by a join");
        Ok(group)
    }

    /// Leases up to `max` events (at most `consumers.max_poll_events`) to `member`,
    /// for `lease` (default: the group's; at most `consumers.max_lease_ms`), reading
    /// further into the log when the group's window has room.
    pub fn poll(
        &self,
        group: &Group,
        member: &str,
        max: usize,
        lease: Option<Duration>,
        now: Instant,
    ) -> Result<Vec<Delivery>, GroupError> {
        // A member holding the group from before a deletion finds it gone.
        let current = self.group(&group.name)?;
        if !std::ptr::eq(Arc::as_ptr(&current), group) {
            return Err(GroupError::UnknownGroup(group.name.clone()));
        }
        let max = max.min(self.consumers.max_poll_events);
        let lease = lease
            .unwrap_or(group.settings.lease)
            .min(self.consumers.max_lease());
        let state_error = |source| GroupError::State {
            group: group.name.clone(),
            source,
        };
        let mut state = group.state();
        let mut delivered = state
            .deliver_for(member, max, lease, now)
            .map_err(state_error)?;
        while delivered.len() < max && state.room() > 0 {
            let before = state.read_through();
            self.fill(group, &mut state)?;
            if state.read_through() == before {
                break;
            }
            let more = state
                .deliver_for(member, max - delivered.len(), lease, now)
                .map_err(state_error)?;
            delivered.extend(more);
        }
        Ok(delivered)
    }

    /// Reads the next events of the group's filter into its window.
    fn fill(&self, group: &Group, state: &mut GroupState) -> Result<(), GroupError> {
        let room = state.room().min(FILL_CHUNK_EVENTS);
        if room == 0 {
            return Ok(());
        }
        let mut reader = group.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if reader.is_none() {
            *reader = Some(self.log.reader()?);
        }
        let Some(reader) = reader.as_mut() else {
            return Ok(());
        };
        let mut events = Vec::new();
        let scan = reader.read_batch(&group.query, state.read_through(), room, |event| {
            events.push(event.to_event());
            ControlFlow::Continue(())
        })?;
        state.push(events, scan.scanned_through);
        Ok(())
    }

    /// Refreshes `member`'s session.
    pub fn heartbeat(&self, name: &str, member: &str, now: Instant) -> Result<(), GroupError> {
        let group = self.group(name)?;
        group
            .state()
            .touch(member, now)
            .map_err(|source| GroupError::State {
                group: name.to_owned(),
                source,
            })
    }

    /// Acks delivered events of group `name`.
    pub fn ack(
        &self,
        name: &str,
        member: &str,
        offsets: &[u64],
        now: Instant,
    ) -> Result<(AckOutcome, u64), GroupError> {
        let group = self.group(name)?;
        let (outcome, committed) = {
            let mut state = group.state();
            let outcome = state.ack(member, offsets, now);
            (outcome, state.committed())
        };
        if outcome.acked > 0 {
            group.wake.notify_waiters();
        }
        Ok((outcome, committed))
    }

    /// Gives events back with a reason: each is delivered again, or dead-lettered after
    /// `max_deliveries`.
    pub fn nack(
        &self,
        name: &str,
        member: &str,
        offsets: &[u64],
        reason: &str,
        now: Instant,
    ) -> Result<NackOutcome, GroupError> {
        let group = self.group(name)?;
        let mut reason = reason.to_owned();
        if reason.len() > config::MAX_REASON_BYTES {
            let mut cut = config::MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let (outcome, dead) = group.state().nack(member, offsets, &reason, now);
        self.dead_letter(&group, &dead)?;
        group.wake.notify_waiters();
        Ok(outcome)
    }

    /// Removes `member` from group `name`: its leases end and its partitions move.
    pub fn leave(&self, name: &str, member: &str) -> Result<(), GroupError> {
        let group = self.group(name)?;
        let dead = group.state().leave(member);
        self.dead_letter(&group, &dead)?;
        tracing::info!(group = name, member, "member left; partitions reassigned");
        group.wake.notify_waiters();
        Ok(())
    }

    fn dead_letter(&self, group: &Group, dead: &[DeadLetter]) -> Result<(), GroupError> {
        for letter in dead {
            tracing::warn!(
                group = %group.name,
                offset = letter.offset,
                deliveries = letter.deliveries,
                "event dead-lettered: {}",
                letter.last_error
            );
        }
        self.store().add_dead_letters(&group.name, dead)
    }

    /// Moves group `name` so that the next event delivered is the first at or after
    /// `to`; returns the new committed position. Leases in flight are void (their acks
    /// are reported as unknown).
    pub fn reset(&self, name: &str, to: ResetTo) -> Result<u64, GroupError> {
        let group = self.group(name)?;
        let committed = match to {
            ResetTo::Offset(offset) => offset.saturating_sub(1),
            ResetTo::Time(time) => {
                let first = ReadQuery {
                    from_time: Some(time),
                    limit: Some(1),
                    batch_size: 1,
                    ..group.query.clone()
                };
                match self.log.read(&first)?.next().transpose()? {
                    Some(event) => event.offset - 1,
                    None => self.log.head()?,
                }
            }
        };
        group.state().reset(committed);
        self.flush_group(&group)?;
        tracing::info!(group = name, committed, "group reset");
        group.wake.notify_waiters();
        Ok(committed)
    }

    /// Deletes group `name`: its members are dropped, its position and dead letters
    /// erased. A declared group cannot be deleted.
    pub fn delete(&self, name: &str) -> Result<(), GroupError> {
        let _serial = self
            .membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let group = self.group(name)?;
        if group.settings.declared {
            return Err(GroupError::Declared(name.to_owned()));
        }
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.store().delete(name)?;
        // Waiting members look again and find the group gone.
        group.wake.notify_waiters();
        tracing::info!(group = name, "group deleted");
        Ok(())
    }

    /// Every group, as a snapshot that holds no lock while the caller works on it.
    fn all(&self) -> Vec<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Every group, by name.
    pub fn views(&self, now: Instant) -> Result<Vec<GroupView>, GroupError> {
        let head = self.log.head()?;
        let groups = self.all();
        groups
            .iter()
            .map(|group| self.view_of(group, head, now))
            .collect()
    }

    /// One group.
    pub fn view(&self, name: &str, now: Instant) -> Result<GroupView, GroupError> {
        let group = self.group(name)?;
        let head = self.log.head()?;
        self.view_of(&group, head, now)
    }

    fn view_of(&self, group: &Group, head: u64, now: Instant) -> Result<GroupView, GroupError> {
        let state = group.state().view(now);
        let dead_letters = self.store().dead_letter_count(&group.name)?;
        let settings = &group.settings;
        Ok(GroupView {
            name: group.name.clone(),
            declared: settings.declared,
            filter: settings.filter.clone(),
            partitions: settings.partitions,
            lease_ms: millis(settings.lease),
            session_timeout_ms: millis(settings.session_timeout),
            max_deliveries: settings.max_deliveries,
            lag_alert: settings.lag_alert,
            hold_retention: settings.hold_retention,
            committed: state.committed,
            head,
            lag: head.saturating_sub(state.committed),
            window_events: state.window_events,
            in_flight: state.in_flight,
            members: state.members,
            redeliveries: group.base.0 + state.stats.redeliveries,
            dead_letters,
            stats: state.stats,
        })
    }

    /// A group's dead letters, oldest first.
    pub fn dead_letters(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, GroupError> {
        let group = self.group(name)?;
        self.store().dead_letters(&group.name, limit)
    }

    /// The lowest committed position of the groups retention must wait for, with the
    /// group's name; `None` if no group holds retention.
    pub fn retention_floor(&self) -> Option<(u64, String)> {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        groups
            .values()
            .filter(|group| group.settings.hold_retention)
            .map(|group| (group.state().committed(), group.name.clone()))
            .min()
    }

    /// Ends expired leases and sessions of every group (see [`GroupState::expire`]).
    pub fn tick(&self, now: Instant) -> Result<(), GroupError> {
        let groups = self.all();
        for group in groups {
            let (dead, changed) = group.state().expire(now);
            self.dead_letter(&group, &dead)?;
            if changed {
                group.wake.notify_waiters();
            }
        }
        Ok(())
    }

    /// Writes every group's committed position that moved since it was last written.
    pub fn flush(&self) -> Result<(), GroupError> {
        let groups = self.all();
        let mut changed = Vec::new();
        for group in &groups {
            let position = group.position();
            let mut saved = group.saved.lock().unwrap_or_else(PoisonError::into_inner);
            if *saved != position {
                changed.push((group.name.clone(), position.0, position.1, position.2));
                *saved = position;
            }
        }
        if !changed.is_empty() {
            self.store().save_positions(&changed)?;
        }
        Ok(())
    }

    fn flush_group(&self, group: &Group) -> Result<(), GroupError> {
        let position = group.position();
        *group.saved.lock().unwrap_or_else(PoisonError::into_inner) = position;
        self.store()
            .save_positions(&[(group.name.clone(), position.0, position.1, position.2)])
    }

    fn run_ticker(&self) {
        let mut last_flush = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(GROUP_TICK);
            let now = Instant::now();
            if let Err(error) = self.tick(now) {
                tracing::warn!("consumer groups: {error}");
            }
            if now.duration_since(last_flush) >= self.consumers.commit_interval() {
                last_flush = now;
                if let Err(error) = self.flush() {
                    tracing::warn!("consumer groups: cannot write committed positions: {error}");
                }
            }
        }
    }

    /// Stops the background thread and writes every committed position.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let ticker = self
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(ticker) = ticker {
            let _ = ticker.join();
        }
        if let Err(error) = self.flush() {
            tracing::warn!(
                "consumer groups: cannot write committed positions at shutdown: {error}"
            );
        }
        let groups = self.all();
        for group in groups {
            group.wake.notify_waiters();
        }
    }
}

/// The groups of a data directory as stored, for `refract groups` with no host
/// running: positions, lag and dead letters, no members.
pub fn offline_views(
    log: &EventLog,
    control_db: &Path,
    config: &Config,
) -> Result<Vec<GroupView>, GroupError> {
    if !control_db.exists() {
        return Ok(Vec::new());
    }
    let store = Store::open(control_db)?;
    let head = log.head()?;
    store
        .groups()?
        .into_iter()
        .map(|group| {
            let settings = config
                .consumers
                .settings(config.groups.get(&group.name), group.filter.clone());
            Ok(GroupView {
                declared: settings.declared,
                filter: group.filter,
                partitions: settings.partitions,
                lease_ms: millis(settings.lease),
                session_timeout_ms: millis(settings.session_timeout),
                max_deliveries: settings.max_deliveries,
                lag_alert: settings.lag_alert,
                hold_retention: settings.hold_retention,
                committed: group.committed,
                head,
                lag: head.saturating_sub(group.committed),
                window_events: 0,
                in_flight: 0,
                members: Vec::new(),
                redeliveries: group.redeliveries,
                dead_letters: store.dead_letter_count(&group.name)?,
                stats: Stats::default(),
                name: group.name,
            })
        })
        .collect()
}

/// A filter in words, for messages.
fn describe(filter: &GroupFilter) -> String {
    let types = if filter.types.is_empty() {
        "every type".to_owned()
    } else {
        format!("types {}", filter.types.join(", "))
    };
    let streams = if filter.stream_prefixes.is_empty() {
        "every stream".to_owned()
    } else {
        format!(
            "streams starting with {}",
            filter.stream_prefixes.join(", ")
        )
    };
    format!("{types} of {streams}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
