//! The log as a cluster node's **mirror**: the narrow entry point through which a
//! replicated, already-ordered sequence of append requests reaches `events.db`.
//!
//! In cluster mode the source of truth is a replicated JetStream stream whose messages
//! each carry one or more append requests (see `crate::cluster`). Every node feeds the
//! messages, in stream order, to [`EventLog::apply_ordered`](super::EventLog::apply_ordered).
//! The writer thread applies each request with the very function single-node appends
//! use (`append::append_request`): idempotent ids first, then `expected_version`, then
//! offsets and stream versions from the file's head. Application is therefore a pure
//! function of the log's state and the message, so every node that applies the same
//! messages in the same order holds the same events at the same offsets, and agrees on
//! which requests were refused.
//!
//! Nothing about a message may depend on the node applying it: ids are assigned by the
//! publisher (a request whose event has no id is refused), the recorded time is the
//! publisher's (clamped so it never decreases along offsets), and events are checked
//! against the fixed rules of names and JSON, never against the node's configured size
//! limits, which may differ between nodes.
//!
//! The `mirror` table (schema 2) holds, in the same transaction as the events, the
//! source stream's identity, the last stream position applied and the log head that
//! resulted. That makes a restart resume exactly where the commit left off (re-applying
//! a refused request later could accept it), lets the writer detect an event written
//! by anyone else (the file's head no longer matches), and marks the log as a mirror:
//! local appends are refused with [`LogError::Mirror`].

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::append::{GroupState, OpenTransaction, Writer, append_request, validate};
use super::query::{get_u64, to_sql_int};
use super::schema::sqlite_error;
use super::{LogError, LogOptions, NewEvent};

/// Where a mirror stands: which stream it copies, how far, and the log head that gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPosition {
    /// The identity of the source stream (its name and creation time, so a stream
    /// deleted and re-created under the same name is told apart).
    pub source: String,
    /// The last stream position (JetStream sequence) applied.
    pub position: u64,
    /// The log's head offset after applying it.
    pub head: u64,
}

/// One append request, as ordered by the cluster: its events (every one with an id)
/// and the time the publisher recorded for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedRequest {
    /// When the publishing node took the request, in microseconds since the Unix epoch.
    /// Events get the later of this and the previous event's time.
    pub recorded_at: i64,
    /// The events, each with its id set by the publisher.
    pub events: Vec<NewEvent>,
}

/// One message of the source stream: its position and the requests it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMessage {
    /// The message's position in the source stream (JetStream sequence, from 1).
    pub position: u64,
    /// Its requests, applied in order. Empty for a message that carries none (an
    /// undecodable one): its position is still recorded.
    pub requests: Vec<OrderedRequest>,
}

/// Consecutive messages of one source stream, for
/// [`EventLog::apply_ordered`](super::EventLog::apply_ordered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorBatch {
    /// The source stream's identity (see [`MirrorPosition::source`]).
    pub source: String,
    /// The messages, at consecutive positions following the mirror's position.
    pub messages: Vec<OrderedMessage>,
}

/// The outcome of each request of each message of a batch, in order: its offsets, or
/// why it was refused (the same on every node).
pub type MirrorOutcome = Vec<Vec<Result<Vec<u64>, LogError>>>;

/// A batch on its way to the writer thread.
pub(super) struct MirrorJob {
    pub(super) work: MirrorWork,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<MirrorOutcome, LogError>>,
}

/// What a [`MirrorJob`] asks of the writer.
pub(super) enum MirrorWork {
    /// Apply a batch.
    Apply(MirrorBatch),
    /// Mark a log that already holds a copy of the source's first `position` messages
    /// as their mirror (the hand-over at the end of `refract cluster init`).
    Start {
        /// The source stream's identity.
        source: String,
        /// The last position the log's events correspond to.
        position: u64,
    },
}

/// The checks a mirrored event passes: the fixed rules for names and JSON, with no size
/// limit (sizes are the publishing node's business; applying must not depend on the
/// applying node's configuration).
fn mirror_rules() -> LogOptions {
    LogOptions {
        max_data_bytes: usize::MAX,
        max_metadata_bytes: usize::MAX,
        ..LogOptions::default()
    }
}

/// Reads the mirror row, if this log is a mirror.
pub(super) fn stored_position(conn: &Connection) -> rusqlite::Result<Option<MirrorPosition>> {
    conn.prepare_cached("SELECT source, position, head FROM mirror WHERE singleton = 1")?
        .query_row([], |row| {
            Ok(MirrorPosition {
                source: row.get(0)?,
                position: get_u64(row, 1)?,
                head: get_u64(row, 2)?,
            })
        })
        .optional()
}

fn store_position(conn: &Connection, position: &MirrorPosition) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO mirror (singleton, source, position, head) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (singleton) DO UPDATE SET source = excluded.source,
             position = excluded.position, head = excluded.head",
    )?
    .execute(params![
        position.source,
        to_sql_int(position.position),
        to_sql_int(position.head)
    ])
    .map(drop)
}

impl Writer {
    /// Runs one mirror job in its own transaction and answers it.
    pub(super) fn apply_mirror(&mut self, job: MirrorJob) {
        let result = match job.work {
            MirrorWork::Apply(batch) => self.apply_batch(&batch),
            MirrorWork::Start { source, position } => {
                self.start_mirror(source, position).map(|()| Vec::new())
            }
        };
        // The caller may have gone away (shutdown); the commit stands either way.
        let _ = job.reply.send(result);
        let head = *self.head.borrow();
        self.index_tail_if_due(head);
    }

    fn start_mirror(&mut self, source: String, position: u64) -> Result<(), LogError> {
        let path = self.path.clone();
        let sqlite = |source| sqlite_error(&path, "marking the log as a mirror", source);
        let conn = &self.conn;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite)?;
        let mut open = OpenTransaction {
            conn,
            finished: false,
        };
        if let Some(found) = stored_position(conn).map_err(sqlite)? {
            return Err(LogError::MirrorMismatch {
                path: path.clone(),
                reason: format!(
                    "it already mirrors `{}` up to position {}",
                    found.source, found.position
                ),
            });
        }
        let head = super::read::head(conn).map_err(sqlite)?;
        let position = MirrorPosition {
            source,
            position,
            head,
        };
        store_position(conn, &position).map_err(sqlite)?;
        conn.execute_batch("COMMIT").map_err(sqlite)?;
        open.finished = true;
        self.mirror = Some(position);
        Ok(())
    }

    fn apply_batch(&mut self, batch: &MirrorBatch) -> Result<MirrorOutcome, LogError> {
        // A mirror's batch may fail part-way and leave uncommitted versions behind.
        self.forget_versions();
        let path = self.path.clone();
        let sqlite = |source| sqlite_error(&path, "applying mirrored events", source);
        let conn = &self.conn;
        let control = |sql: &str| {
            conn.prepare_cached(sql)
                .and_then(|mut statement| statement.execute([]).map(drop))
                .map_err(sqlite)
        };
        control("BEGIN IMMEDIATE")?;
        let mut open = OpenTransaction {
            conn,
            finished: false,
        };

        let file_head = super::read::head(conn).map_err(sqlite)?;
        let mut position = match stored_position(conn).map_err(sqlite)? {
            Some(found) if found.source != batch.source => {
                return Err(LogError::MirrorMismatch {
                    path: path.clone(),
                    reason: format!(
                        "it mirrors `{}`, not `{}`; give this node its own data directory",
                        found.source, batch.source
                    ),
                });
            }
            Some(found) if found.head != file_head => {
                return Err(LogError::MirrorMismatch {
                    path: path.clone(),
                    reason: format!(
                        "its head is offset {file_head} but the mirror applied up to offset {}: \
                         something else wrote to it; delete the data directory's events.db \
                         and read models and let the node catch up again",
                        found.head
                    ),
                });
            }
            Some(found) => found,
            None if file_head != 0 => {
                return Err(LogError::MirrorMismatch {
                    path: path.clone(),
                    reason: format!(
                        "it already holds {file_head} events of its own; start a cluster node \
                         with an empty data directory, or publish this log first with \
                         `refract cluster init --from <data-dir>`"
                    ),
                });
            }
            None => MirrorPosition {
                source: batch.source.clone(),
                position: 0,
                head: 0,
            },
        };

        let last_recorded: Option<i64> = conn
            .prepare_cached(r#"SELECT recorded_at FROM events ORDER BY "offset" DESC LIMIT 1"#)
            .and_then(|mut s| s.query_row([], |row| row.get(0)).optional())
            .map_err(sqlite)?;
        let mut state = GroupState {
            next_offset: file_head + 1,
            recorded_at: last_recorded.unwrap_or(i64::MIN),
        };
        let rules = mirror_rules();
        let mut outcomes = Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
            if message.position != position.position + 1 {
                return Err(LogError::MirrorMismatch {
                    path: path.clone(),
                    reason: format!(
                        "the source sent position {} after {}: messages are missing or repeated \
                         (was the stream purged, or limited by age or size?)",
                        message.position, position.position
                    ),
                });
            }
            let mut replies = Vec::with_capacity(message.requests.len());
            for request in &message.requests {
                let reply = apply_request(
                    (conn, &path),
                    &rules,
                    &mut state,
                    request,
                    (&mut self.versions, &mut self.ids),
                    &control,
                )?;
                replies.push(reply);
            }
            position.position = message.position;
            outcomes.push(replies);
        }
        let before = file_head;
        position.head = state.next_offset - 1;
        store_position(conn, &position).map_err(sqlite)?;
        control("COMMIT")?;
        open.finished = true;

        let head = position.head;
        self.appended
            .fetch_add(head - before, std::sync::atomic::Ordering::Relaxed);
        self.head.send_if_modified(|current| {
            let changed = *current != head;
            *current = head;
            changed
        });
        self.mirror = Some(position);
        Ok(outcomes)
    }
}

/// Applies one request inside its own savepoint. The outer `Result` is a failure of the
/// whole batch (SQLite); the inner one the request's deterministic outcome.
fn apply_request(
    (conn, path): (&Connection, &Path),
    rules: &LogOptions,
    state: &mut GroupState,
    request: &OrderedRequest,
    (versions, ids): (
        &mut std::collections::HashMap<String, u64>,
        &mut super::ids::IdGenerator,
    ),
    control: &impl Fn(&str) -> Result<(), LogError>,
) -> Result<Result<Vec<u64>, LogError>, LogError> {
    if let Err(refused) = validate(&request.events, rules) {
        return Ok(Err(refused));
    }
    if let Some(position) = request.events.iter().position(|e| e.id.is_none()) {
        return Ok(Err(LogError::InvalidEvent {
            position: position + 1,
            batch_len: request.events.len(),
            field: super::EventField::Id,
            reason: "is missing; a mirrored event must carry the id its publisher gave it"
                .to_owned(),
        }));
    }
    let previous = state.recorded_at;
    state.recorded_at = request.recorded_at.max(previous);
    control("SAVEPOINT request")?;
    let before = state.next_offset;
    let reply = append_request(conn, path, state, versions, ids, &request.events);
    match &reply {
        Ok(_) => {}
        Err(LogError::VersionConflict { .. }) => {
            control("ROLLBACK TO request")?;
            state.next_offset = before;
            state.recorded_at = previous;
            versions.clear();
        }
        // Anything else is SQLite failing, not the request: the batch fails as a whole.
        Err(_) => return reply.map(Ok),
    }
    control("RELEASE request")?;
    if state.next_offset == before {
        // Nothing inserted (all duplicates, or refused): the time did not advance.
        state.recorded_at = previous;
    }
    Ok(reply)
}
