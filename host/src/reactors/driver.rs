//! What the engine's projection does around each batch of a reactor: which events it
//! reads (its own timers too), which timer events it delivers, where its emits go
//! (appended, or suppressed), how far a shadow may replay, and firing due timers.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::commit::{self, TIMER_EVENT_TYPE, timer_of, timer_stream};
use super::effects::Emit;
use super::state;
use crate::log::{EventLog, ReadQuery, StreamFilter};
use crate::runtime::{EventBatch, HostWriteError};

/// What a reactor's effects have amounted to since its worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EffectCounts {
    /// Events emitted and newly appended.
    pub appended: u64,
    /// Emits the log already held (batches replayed after a crash).
    pub deduplicated: u64,
    /// Of those, emits whose content differed from what the log holds.
    pub diverged: u64,
    /// Emits dropped because the version does not emit (a shadow, a warm version,
    /// history before the first version was deployed).
    pub suppressed: u64,
    /// Timer events appended.
    pub timers_fired: u64,
}

/// A reactor's side of a projection.
pub(crate) struct Driver {
    name: String,
    timer_stream: String,
    log: Option<EventLog>,
    emitting: bool,
    /// A first version, replaying history with nothing active before it: the timers
    /// its history schedules are dropped, like its emits.
    first_version: bool,
    /// Emits caused by events at or before this offset are suppressed.
    emit_after: u64,
    /// The active version's state database, while this version replays in a shadow.
    follow: Option<Follow>,
    counts: EffectCounts,
}

struct Follow {
    path: PathBuf,
    conn: Option<Connection>,
}

impl Driver {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            timer_stream: timer_stream(name),
            log: None,
            emitting: false,
            first_version: false,
            emit_after: state::SUPPRESS_ALL,
            follow: None,
            counts: EffectCounts::default(),
        }
    }

    /// Creates the host's reactor tables in a fresh state database (inside `init`'s
    /// transaction): this version emits only for events after `head`.
    pub(crate) fn create(conn: &Connection, head: u64) -> rusqlite::Result<()> {
        state::create(conn, head)
    }

    /// Reads the stored `emit_after`.
    pub(crate) fn load(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.emit_after = if state::exists(conn)? {
            state::emit_after(conn)?
        } else {
            state::SUPPRESS_ALL
        };
        Ok(())
    }

    /// Gives the reactor the log its emits and timers are appended to. Without one
    /// (a one-shot replay, `refract test`), nothing is emitted.
    pub(crate) fn attach_log(&mut self, log: EventLog) {
        self.log = Some(log);
    }

    /// Whether this version's emits reach the log (an active or first version) or are
    /// suppressed (a shadow or a warm version).
    pub(crate) fn set_emitting(&mut self, emitting: bool) {
        self.emitting = emitting;
    }

    /// Whether this is a first version replaying history: then the timers that history
    /// schedules are dropped, as its emits are, so deploying a saga does not act on
    /// old events when their timeouts come due. A version that takes over keeps its
    /// timers: they stand for the previous version's pending ones.
    pub(crate) fn set_first_version(&mut self, first_version: bool) {
        self.first_version = first_version;
    }

    /// Emits caused at or before this offset will be suppressed (all of them while the
    /// version does not emit), so the emit rate limit skips them.
    pub(crate) fn rate_after(&self) -> u64 {
        if self.emitting && self.log.is_some() {
            self.emit_after
        } else {
            state::SUPPRESS_ALL
        }
    }

    /// While replaying in a shadow: never go past the checkpoint of the reactor state at
    /// `path` (the active version's), so that the takeover at the swap is exact.
    pub(crate) fn set_follow(&mut self, path: Option<PathBuf>) {
        self.follow = path.map(|path| Follow { path, conn: None });
    }

    pub(crate) fn counts(&self) -> EffectCounts {
        self.counts
    }

    /// The furthest offset this version may read now: the followed version's
    /// checkpoint. `Some(0)` when it cannot be read (try again later).
    pub(crate) fn bound(&mut self) -> Option<u64> {
        let follow = self.follow.as_mut()?;
        if follow.conn.is_none() {
            follow.conn = open_read_only(&follow.path);
        }
        let checkpoint = follow
            .conn
            .as_ref()
            .and_then(|conn| crate::engine::checkpoint::load(conn).ok().flatten())
            .map(|stored| stored.checkpoint);
        if checkpoint.is_none() {
            follow.conn = None;
        }
        Some(checkpoint.unwrap_or(0))
    }

    /// Widens the reactor's query to its own timer stream.
    pub(crate) fn widen(&self, query: &mut ReadQuery) {
        if !query.types.is_empty() && !query.types.iter().any(|t| t == TIMER_EVENT_TYPE) {
            query.types.push(TIMER_EVENT_TYPE.to_owned());
        }
        if let StreamFilter::Prefixes(prefixes) = &mut query.stream {
            prefixes.push(self.timer_stream.clone());
        }
    }

    /// Whether an event read by the widened query goes to the guest: a timer event only
    /// if it is this reactor's own and still pending.
    pub(crate) fn deliver(
        &self,
        conn: &Connection,
        stream: &str,
        event_type: &str,
        data: &str,
    ) -> bool {
        if event_type != TIMER_EVENT_TYPE {
            return stream != self.timer_stream;
        }
        stream == self.timer_stream
            && timer_of(data).is_some_and(|(key, due_at)| {
                state::timer_pending(conn, &key, due_at).unwrap_or(true)
            })
    }

    /// Drops from `batch` the events [`Self::deliver`] refuses, using `spare` as the
    /// buffer the kept events are packed into. A batch with nothing to drop is left as
    /// it is.
    pub(crate) fn keep_delivered(
        &self,
        conn: &Connection,
        batch: &mut EventBatch,
        spare: &mut EventBatch,
    ) {
        let timer_stream = self.timer_stream.as_str();
        if !batch
            .iter()
            .any(|event| event.event_type == TIMER_EVENT_TYPE || event.stream == timer_stream)
        {
            return;
        }
        let keep: Vec<bool> = batch
            .iter()
            .map(|event| self.deliver(conn, event.stream, event.event_type, event.data))
            .collect();
        if keep.iter().all(|kept| *kept) {
            return;
        }
        spare.clear();
        for (event, _) in batch.iter().zip(&keep).filter(|(_, kept)| **kept) {
            spare.push(
                event.offset,
                event.id,
                event.stream,
                event.stream_version,
                event.event_type,
                event.data,
                event.metadata,
                event.recorded_at_micros,
            );
        }
        std::mem::swap(batch, spare);
    }

    /// The host's writes after a successful `handle`, before the commit: the delivered
    /// timers are removed, and the emits appended (or suppressed).
    pub(crate) fn commit(
        &mut self,
        conn: &Connection,
        batch: &EventBatch,
        mut emits: Vec<Emit>,
    ) -> Result<(), HostWriteError> {
        for event in batch.iter() {
            if event.event_type == TIMER_EVENT_TYPE
                && event.stream == self.timer_stream
                && let Some((key, due_at)) = timer_of(event.data)
            {
                state::timer_delivered(conn, &key, due_at)?;
            }
        }
        if self.first_version
            && batch
                .first_offset()
                .is_some_and(|first| first <= self.emit_after)
        {
            state::drop_timers_caused_through(conn, self.emit_after)?;
        }
        let total = emits.len();
        let emit_after = self.emit_after;
        match &self.log {
            Some(log) if self.emitting => {
                emits.retain(|emit| emit.cause > emit_after);
                self.counts.suppressed += (total - emits.len()) as u64;
                let events = commit::build_events(&self.name, batch, emits);
                let outcome = commit::append(log, events)?;
                self.counts.appended += outcome.appended as u64;
                self.counts.deduplicated += outcome.deduplicated as u64;
                self.counts.diverged += outcome.diverged as u64;
            }
            _ => self.counts.suppressed += total as u64,
        }
        Ok(())
    }

    /// Appends the timer events that are due at `now` (microseconds since the epoch),
    /// if this version emits. Returns how many were due.
    pub(crate) fn fire_due(
        &mut self,
        conn: &Connection,
        now: i64,
        checkpoint: u64,
    ) -> Result<usize, crate::log::LogError> {
        let Some(log) = self.log.as_ref().filter(|_| self.emitting) else {
            return Ok(0);
        };
        let due = match state::due_timers(conn, now, super::MAX_TIMERS_PER_FIRE) {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(reactor = %self.name, "cannot read the due timers: {error}");
                return Ok(0);
            }
        };
        if due.is_empty() {
            return Ok(0);
        }
        let head = log.head()?;
        let offsets = log.append(commit::timer_events(&self.name, &due))?;
        self.counts.timers_fired += offsets.iter().filter(|&&o| o > head).count() as u64;
        if let Err(error) = state::timers_fired(conn, &due, &offsets, checkpoint) {
            // The events are in the log; the timers are appended again (deduplicated)
            // at the next look.
            tracing::warn!(reactor = %self.name, "cannot record the fired timers: {error}");
        }
        Ok(due.len())
    }
}

fn open_read_only(path: &Path) -> Option<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()
}
