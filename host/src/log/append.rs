//! Appending: validation, and the writer thread that group-commits.
//!
//! One thread owns the only write connection of an [`EventLog`](super::EventLog).
//! Appenders validate their batch on their own thread (so JSON checking runs in parallel),
//! send it over a channel and block on the reply. The writer takes everything queued, up
//! to [`LogOptions::max_group_events`], into ONE `BEGIN IMMEDIATE` transaction, writes
//! every request (a request that fails is rolled back alone: the group is then written
//! again with a SAVEPOINT per request, see `Writer::write_group`), commits once (one fsync for the whole group), then replies to
//! every request and publishes the new head. While it waits for the disk, the next group queues up by itself, so the more
//! appenders there are, the bigger the groups and the fewer fsyncs per event.
//!
//! Offsets, stream versions and `recorded_at` are computed inside the write transaction
//! from what is in the file (a stream's version from its row in `streams`, which every
//! request that appends to the stream updates in the same transaction), so another
//! process appending to the same file between two groups cannot cause a gap, a duplicate
//! or a time going backwards. The cache of stream
//! versions outlives a group only while the file's head is where this writer's last
//! commit left it: any other appender moves the head, and then the cache starts over.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};

use rusqlite::{Connection, OptionalExtension, params};
use serde::de::IgnoredAny;
use tokio::sync::watch;

use super::ids::IdGenerator;
use super::query::{STREAM_HEAD_SQL, WRITE_STREAM_HEAD_SQL, get_u64, to_sql_int};
use super::schema::sqlite_error;
use super::stream_index::StreamIndexer;
use super::{
    EventField, LogError, LogOptions, MAX_CACHED_STREAM_VERSIONS, MAX_NAME_CHARS, NewEvent,
    STREAM_INDEX_IDLE_AFTER,
};
use crate::storage_fault::StorageFault;

/// The outcome of one append request.
pub(super) type Reply = Result<Vec<u64>, LogError>;

/// Work for the writer thread: local appends, which it groups, and the cluster
/// mirror's already-ordered batches (see `mirror.rs`), each committed alone.
pub(super) enum Job {
    /// An `append` call.
    Append(Request),
    /// A batch of replicated messages for a cluster node's mirror.
    Mirror(super::mirror::MirrorJob),
}

/// One `append` call on its way to the writer.
pub(super) struct Request {
    /// The validated batch.
    pub(super) events: Vec<NewEvent>,
    /// Where the writer sends the outcome, after the commit.
    pub(super) reply: ReplyTo,
}

/// Where an appender waits for its outcome: a blocked thread, or an async task (which
/// then needs no thread of its own while the group commits).
pub(super) enum ReplyTo {
    /// [`EventLog::append`](super::EventLog::append), on a thread that blocks.
    Blocking(SyncSender<Reply>),
    /// [`EventLog::append_async`](super::EventLog::append_async).
    Async(tokio::sync::oneshot::Sender<Reply>),
}

impl ReplyTo {
    /// Hands over the outcome. The appender may have gone away; its events are
    /// committed anyway.
    fn send(self, reply: Reply) {
        match self {
            ReplyTo::Blocking(sender) => {
                let _ = sender.send(reply);
            }
            ReplyTo::Async(sender) => {
                let _ = sender.send(reply);
            }
        }
    }
}

/// Checks a batch before it goes to the writer, so that an invalid event costs the writer
/// nothing and the error names the event.
pub(super) fn validate(events: &[NewEvent], options: &LogOptions) -> Result<(), LogError> {
    let batch_len = events.len();
    for (index, event) in events.iter().enumerate() {
        let fail = |field, reason| LogError::InvalidEvent {
            position: index + 1,
            batch_len,
            field,
            reason,
        };
        if let Some(id) = &event.id {
            check_name(id).map_err(|r| fail(EventField::Id, r))?;
        }
        check_name(&event.stream).map_err(|r| fail(EventField::Stream, r))?;
        check_name(&event.event_type).map_err(|r| fail(EventField::Type, r))?;
        check_json(&event.data, options.max_data_bytes, "max_data_bytes")
            .map_err(|r| fail(EventField::Data, r))?;
        if let Some(metadata) = &event.metadata {
            check_json(metadata, options.max_metadata_bytes, "max_metadata_bytes")
                .map_err(|r| fail(EventField::Metadata, r))?;
        }
    }
    Ok(())
}

fn check_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    // A name of at most MAX_NAME_CHARS bytes cannot have more characters; count only when
    // it might.
    if value.len() > MAX_NAME_CHARS {
        let chars = value.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(format!(
                "is {chars} characters long; the limit is {MAX_NAME_CHARS}"
            ));
        }
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters, but has {c:?}"
        ));
    }
    Ok(())
}

fn check_json(value: &str, max_bytes: usize, option: &str) -> Result<(), String> {
    if value.len() > max_bytes {
        return Err(format!(
            "is {} bytes; the limit is {max_bytes} bytes (LogOptions::{option})",
            value.len()
        ));
    }
    // IgnoredAny checks the syntax without building a tree.
    serde_json::from_str::<IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| format!("is not valid JSON: {e}"))
}

/// Starts the writer thread on `conn`. The thread ends once every sender is dropped and
/// the queue is drained.
pub(super) fn spawn_writer(
    conn: Connection,
    path: PathBuf,
    options: &LogOptions,
    head: watch::Sender<u64>,
    appended: Arc<AtomicU64>,
) -> Result<(mpsc::Sender<Job>, JoinHandle<()>), LogError> {
    let mirror = super::mirror::stored_position(&conn)
        .map_err(|source| sqlite_error(&path, "reading the mirror position", source))?;
    let stream_index = StreamIndexer::open(&conn, &path, options)?;
    let (max_group_events, keep_versions, optimistic_groups) = (
        options.max_group_events,
        options.stream_version_cache,
        options.optimistic_groups,
    );
    let replier = if options.reply_thread {
        Some(spawn_replier(&path)?)
    } else {
        None
    };
    let (sender, receiver) = mpsc::channel();
    let thread_path = path.clone();
    let handle = thread::Builder::new()
        .name("refract-log-writer".to_owned())
        .spawn(move || {
            let mut writer = Writer {
                conn,
                path: thread_path,
                max_group_events: max_group_events.max(1),
                head,
                appended,
                versions: HashMap::new(),
                versions_valid_at: None,
                keep_versions,
                ids: IdGenerator::new(),
                mirror,
                replier,
                stream_index,
                optimistic_groups,
                savepoint_groups_left: 0,
            };
            writer.run(&receiver);
        })
        .map_err(|source| LogError::Open { path, source })?;
    Ok((sender, handle))
}

/// Starts the thread that sends the replies of committed groups (see
/// [`LogOptions::reply_thread`]). It ends once the writer drops its sender.
fn spawn_replier(path: &Path) -> Result<mpsc::Sender<Vec<(ReplyTo, Reply)>>, LogError> {
    let (sender, receiver) = mpsc::channel::<Vec<(ReplyTo, Reply)>>();
    thread::Builder::new()
        .name("refract-log-replies".to_owned())
        .spawn(move || {
            for answers in receiver {
                for (to, reply) in answers {
                    to.send(reply);
                }
            }
        })
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(sender)
}

/// The state of the writer thread.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    max_group_events: usize,
    pub(super) head: watch::Sender<u64>,
    /// Events this writer has committed (new ones, not idempotent repeats).
    pub(super) appended: Arc<AtomicU64>,
    /// Stream versions written or read by this writer. Cleared whenever a request rolls
    /// back, and at the start of a group unless [`versions_valid_at`](Self::versions_valid_at)
    /// is the file's head then.
    pub(super) versions: HashMap<String, u64>,
    /// The head at which `versions` is known to match the file: where this writer's last
    /// commit left it. `None` when unknown (nothing committed yet, or a rollback).
    pub(super) versions_valid_at: Option<u64>,
    /// [`LogOptions::stream_version_cache`]: whether `versions` outlives a group.
    keep_versions: bool,
    /// Generates the ids of events that come without one.
    pub(super) ids: IdGenerator,
    /// Where this log stands as a cluster node's mirror; `None` for a single-node log.
    /// A mirror refuses local appends: its events come from the cluster only.
    pub(super) mirror: Option<super::MirrorPosition>,
    /// The reply thread, when [`LogOptions::reply_thread`] is on: it wakes the appenders
    /// of a committed group while this thread starts on the next one.
    replier: Option<mpsc::Sender<Vec<(ReplyTo, Reply)>>>,
    /// When to add the unindexed tail to the stream index (see `stream_index.rs`).
    stream_index: StreamIndexer,
    /// [`LogOptions::optimistic_groups`]: whether a group is first written without a
    /// savepoint per request.
    optimistic_groups: bool,
    /// Groups still to be written with savepoints straight away, after a failed
    /// whole-group attempt (see [`SAVEPOINT_GROUPS_AFTER_FAILURE`]).
    savepoint_groups_left: u32,
}

/// What a committed group transaction returns: one reply per request, the head before
/// the group and the head after it.
type GroupOutcome = (Vec<Reply>, u64, u64);

/// Groups written with a savepoint per request, straight away, after a group whose
/// whole-group attempt failed (see [`Writer::write_group`]): conflicts tend to come in
/// runs (clients racing on one stream), and each failed attempt is work done twice.
pub(super) const SAVEPOINT_GROUPS_AFTER_FAILURE: u32 = 16;

/// What a group transaction tracks while it runs.
pub(super) struct GroupState {
    /// The offset the next inserted event gets.
    pub(super) next_offset: u64,
    /// `recorded_at` of every event in this group: now, but never before the previous
    /// event, so times never decrease along offsets.
    pub(super) recorded_at: i64,
}

impl Writer {
    fn run(&mut self, receiver: &Receiver<Job>) {
        let mut group = Vec::new();
        // A mirror job met while gathering a group waits for that group's commit.
        let mut held_back = None;
        // No waiting for stragglers: while one group waits for its fsync, the next one
        // queues up by itself. (Measured: yielding or lingering for the appenders of the
        // previous group made groups bigger but throughput lower.)
        while let Some(job) = held_back.take().or_else(|| self.next_job(receiver)) {
            let first = match job {
                Job::Append(request) => request,
                Job::Mirror(job) => {
                    self.apply_mirror(job);
                    continue;
                }
            };
            let mut events = first.events.len();
            group.push(first);
            while events < self.max_group_events {
                match receiver.try_recv() {
                    Ok(Job::Append(request)) => {
                        events += request.events.len();
                        group.push(request);
                    }
                    Ok(mirror @ Job::Mirror(_)) => {
                        held_back = Some(mirror);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    /// Waits for the next job; `None` once every sender is gone and the queue is empty.
    /// With a stream-index tail to write, an idle spell of [`STREAM_INDEX_IDLE_AFTER`]
    /// (or the shutdown) is used to index it.
    fn next_job(&mut self, receiver: &Receiver<Job>) -> Option<Job> {
        if self.stream_index.idle_work() {
            match receiver.recv_timeout(STREAM_INDEX_IDLE_AFTER) {
                Ok(job) => return Some(job),
                Err(RecvTimeoutError::Timeout) => self.index_tail(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.index_tail();
                    return None;
                }
            }
        }
        receiver.recv().ok()
    }

    /// After a commit of this writer left the head at `head`: indexes the tail if it
    /// has reached the chunk.
    pub(super) fn index_tail_if_due(&mut self, head: u64) {
        self.stream_index.committed(head);
        if self.stream_index.due() {
            self.index_tail();
        }
    }

    /// Indexes the unindexed tail in its own transaction(s). A failure leaves the tail
    /// as it was: reads stay exact (they scan it), and the next pass waits for one more
    /// chunk of commits.
    fn index_tail(&mut self) {
        if let Err(error) = self.stream_index.index_tail(&self.conn) {
            self.stream_index.failed();
            tracing::warn!(
                path = %self.path.display(),
                %error,
                "could not add the unindexed tail to the stream index; retrying after one more chunk of appends"
            );
        }
    }

    /// Writes and commits one group, then answers every request in it (draining `group`).
    fn commit_group(&mut self, group: &mut Vec<Request>) {
        if self.mirror.is_some() {
            for request in group.drain(..) {
                request.reply.send(Err(LogError::Mirror {
                    path: self.path.clone(),
                }));
            }
            return;
        }
        match self.write_group(group) {
            Ok((replies, before, head)) => {
                let replies_len = replies.len();
                // Inside the group's write transaction nobody else appends, so the
                // head's move is exactly what this group added.
                self.appended.fetch_add(head - before, Ordering::Relaxed);
                self.head.send_if_modified(|current| {
                    let changed = *current != head;
                    *current = head;
                    changed
                });
                let answers = group.drain(..).map(|request| request.reply).zip(replies);
                match &self.replier {
                    // One appender: waking it costs what waking the reply thread would.
                    Some(replier) if replies_len > 1 => {
                        if let Err(mpsc::SendError(answers)) = replier.send(answers.collect()) {
                            // The reply thread is gone (it cannot panic): answer here.
                            for (to, reply) in answers {
                                to.send(reply);
                            }
                        }
                    }
                    _ => {
                        for (to, reply) in answers {
                            to.send(reply);
                        }
                    }
                }
                self.index_tail_if_due(head);
            }
            Err(e) => {
                // The rolled-back group may have cached versions it never committed.
                self.forget_versions();
                let disk_full = StorageFault::of_sqlite(&e) == Some(StorageFault::DiskFull);
                let reason = e.to_string();
                for request in group.drain(..) {
                    request.reply.send(Err(if disk_full {
                        LogError::DiskFull {
                            path: self.path.clone(),
                        }
                    } else {
                        LogError::Write {
                            path: self.path.clone(),
                            reason: reason.clone(),
                        }
                    }));
                }
            }
        }
    }

    /// Runs the group's transaction. `Err` means the group as a whole failed and nothing
    /// was committed; a single request's failure is an `Err` inside the returned replies.
    ///
    /// A group is first written whole, without a savepoint per request (a savepoint is
    /// not free: SQLite copies each page into the statement journal before its first
    /// change inside it, and every request of a group changes the same right-edge pages
    /// again). Only if one of its requests fails is the whole transaction rolled back
    /// and the group written again with a savepoint per request, so the failing request
    /// rolls back alone. That redo costs at most the failed attempt's work once more;
    /// after one, the next [`SAVEPOINT_GROUPS_AFTER_FAILURE`] groups go straight to
    /// savepoints, so a stream of conflicting requests does not pay it group after group.
    fn write_group(&mut self, group: &[Request]) -> Result<GroupOutcome, rusqlite::Error> {
        let whole = match group {
            [_] => true,
            _ if !self.optimistic_groups => false,
            _ if self.savepoint_groups_left > 0 => {
                self.savepoint_groups_left -= 1;
                false
            }
            _ => true,
        };
        if whole {
            match self.write_group_once(group, false)? {
                Ok(done) => return Ok(done),
                // A lone request's failure is its own outcome: nothing else to keep.
                Err((head, failure)) if group.len() == 1 => {
                    return Ok((vec![Err(failure)], head, head));
                }
                Err(_) => self.savepoint_groups_left = SAVEPOINT_GROUPS_AFTER_FAILURE,
            }
        }
        match self.write_group_once(group, true)? {
            Ok(done) => Ok(done),
            Err(_) => unreachable!("with savepoints a request's failure is its own reply"),
        }
    }

    /// Starts a group's transaction: `BEGIN IMMEDIATE`, the head and the time of the
    /// newest event, and whether the stream-version cache still matches the file.
    ///
    /// Transaction control goes through cached statements (rusqlite's `Transaction` and
    /// `Savepoint` re-parse `BEGIN`/`SAVEPOINT`/`RELEASE`/`COMMIT` on every use, which is
    /// a visible cost at thousands of small groups per second). On success the
    /// transaction is open and the caller must finish it.
    fn begin_group(&mut self) -> Result<(u64, GroupState), rusqlite::Error> {
        let conn = &self.conn;
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        // Rolls the transaction back if reading the head fails.
        let mut open = OpenTransaction {
            conn,
            finished: false,
        };
        let last: Option<(u64, i64)> = conn
            .prepare_cached(
                r#"SELECT "offset", recorded_at FROM events ORDER BY "offset" DESC LIMIT 1"#,
            )?
            .query_row([], |row| Ok((get_u64(row, 0)?, row.get(1)?)))
            .optional()?;
        // The caller's own guard takes over.
        open.finished = true;
        let (head, last_recorded) = last.unwrap_or((0, i64::MIN));
        // Another appender (another process) moved the head: its streams' versions are
        // not in the cache. Nobody else did: the cache is exactly what the file says.
        if !self.keep_versions
            || self.versions_valid_at != Some(head)
            || self.versions.len() > MAX_CACHED_STREAM_VERSIONS
        {
            self.versions.clear();
        }
        self.versions_valid_at = None;
        let now = super::model::timestamp_to_micros(jiff::Timestamp::now());
        let state = GroupState {
            next_offset: head + 1,
            recorded_at: now.max(last_recorded),
        };
        Ok((head, state))
    }

    /// Writes `group` in one transaction. Without `savepoints`, every request is written
    /// straight into it: if one fails, the whole transaction is rolled back (nothing of
    /// the group is written) and the inner `Err` holds the head and that request's
    /// error. With `savepoints`, each request is inside its own savepoint, so a request
    /// that fails rolls back alone and the others commit (the inner result is always
    /// `Ok`).
    fn write_group_once(
        &mut self,
        group: &[Request],
        savepoints: bool,
    ) -> Result<Result<GroupOutcome, (u64, LogError)>, rusqlite::Error> {
        let (head, mut state) = self.begin_group()?;
        let conn = &self.conn;
        let control = |sql: &str| conn.prepare_cached(sql)?.execute([]).map(drop);
        // Rolls the transaction back on every early return; disarmed by COMMIT.
        let mut open = OpenTransaction {
            conn,
            finished: false,
        };
        let mut replies = Vec::with_capacity(group.len());
        for request in group {
            if savepoints {
                control("SAVEPOINT request")?;
            }
            let before = state.next_offset;
            let reply = append_request(
                conn,
                &self.path,
                &mut state,
                &mut self.versions,
                &mut self.ids,
                &request.events,
            );
            match reply {
                Err(failure) if !savepoints => {
                    control("ROLLBACK")?;
                    open.finished = true;
                    // The rolled-back writes may have cached versions never committed.
                    self.versions.clear();
                    return Ok(Err((head, failure)));
                }
                Err(_) => {
                    control("ROLLBACK TO request")?;
                    state.next_offset = before;
                    self.versions.clear();
                }
                Ok(_) => {}
            }
            if savepoints {
                control("RELEASE request")?;
            }
            replies.push(reply);
        }
        control("COMMIT")?;
        open.finished = true;
        self.versions_valid_at = Some(state.next_offset - 1);
        Ok(Ok((replies, head, state.next_offset - 1)))
    }

    /// Empties the stream-version cache: after a rollback it may hold versions that were
    /// never committed.
    pub(super) fn forget_versions(&mut self) {
        self.versions.clear();
        self.versions_valid_at = None;
    }
}

/// Rolls back the writer's transaction if it is dropped before being finished (an
/// error part-way through a group).
pub(super) struct OpenTransaction<'c> {
    pub(super) conn: &'c Connection,
    pub(super) finished: bool,
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.finished && !self.conn.is_autocommit() {
            // Nothing more can be done if even this fails; the next BEGIN will report it.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Appends one request's events inside its savepoint and returns their offsets.
pub(super) fn append_request(
    conn: &Connection,
    path: &Path,
    state: &mut GroupState,
    versions: &mut HashMap<String, u64>,
    ids: &mut IdGenerator,
    events: &[NewEvent],
) -> Result<Vec<u64>, LogError> {
    let sqlite = |source: rusqlite::Error| {
        if StorageFault::of_sqlite(&source) == Some(StorageFault::DiskFull) {
            LogError::DiskFull {
                path: path.to_owned(),
            }
        } else {
            sqlite_error(path, "appending an event", source)
        }
    };
    let mut find_id = conn
        .prepare_cached(r#"SELECT "offset" FROM events WHERE id = ?1"#)
        .map_err(sqlite)?;
    let mut stream_head = conn.prepare_cached(STREAM_HEAD_SQL).map_err(sqlite)?;
    let mut insert = conn
        .prepare_cached(
            r#"INSERT INTO events ("offset", id, stream, stream_version, type, data, metadata, recorded_at)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"#,
        )
        .map_err(sqlite)?;

    let mut offsets = Vec::with_capacity(events.len());
    // The streams this request moves, with their new heads, in order of first appearance:
    // written to `streams` once per stream at the end of the request, not once per event.
    // The order makes a new stream's id the same on every node applying the same requests.
    let mut heads: Vec<(&str, u64)> = Vec::new();
    let mut head_index: HashMap<&str, usize> = HashMap::new();
    let mut id_buffer = uuid::Uuid::encode_buffer();
    let now_ms = u64::try_from(state.recorded_at / 1000).unwrap_or(0);
    for event in events {
        if let Some(id) = &event.id {
            let existing: Option<u64> = find_id
                .query_row([id], |row| get_u64(row, 0))
                .optional()
                .map_err(sqlite)?;
            if let Some(offset) = existing {
                offsets.push(offset);
                continue;
            }
        }
        let current = match versions.get(event.stream.as_str()) {
            Some(&version) => version,
            None => stream_head
                .query_row([&event.stream], |row| get_u64(row, 0))
                .optional()
                .map_err(sqlite)?
                .unwrap_or(0),
        };
        if let Some(expected) = event.expected_version
            && expected != current
        {
            return Err(LogError::VersionConflict {
                stream: event.stream.clone(),
                expected,
                actual: current,
            });
        }
        let version = current + 1;
        let id: &str = match &event.id {
            Some(id) => id,
            None => ids.next(now_ms).hyphenated().encode_lower(&mut id_buffer),
        };
        let offset = state.next_offset;
        insert
            .execute(params![
                to_sql_int(offset),
                id,
                event.stream,
                to_sql_int(version),
                event.event_type,
                event.data,
                event.metadata,
                state.recorded_at,
            ])
            .map_err(sqlite)?;
        match versions.get_mut(event.stream.as_str()) {
            Some(cached) => *cached = version,
            None => {
                versions.insert(event.stream.clone(), version);
            }
        }
        match head_index.get(event.stream.as_str()) {
            Some(&index) => heads[index].1 = version,
            None => {
                head_index.insert(event.stream.as_str(), heads.len());
                heads.push((event.stream.as_str(), version));
            }
        }
        state.next_offset += 1;
        offsets.push(offset);
    }
    if !heads.is_empty() {
        let mut write_head = conn.prepare_cached(WRITE_STREAM_HEAD_SQL).map_err(sqlite)?;
        for (stream, version) in heads {
            write_head
                .execute(params![stream, to_sql_int(version)])
                .map_err(sqlite)?;
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Durability;

    /// A writer on a fresh log, driven directly so a test chooses each group exactly.
    fn writer(dir: &Path, optimistic_groups: bool) -> Writer {
        let path = dir.join("events.db");
        let options = LogOptions {
            durability: Durability::Normal,
            optimistic_groups,
            ..LogOptions::default()
        };
        let conn = super::super::schema::open_writer(&path, &options).expect("open the log");
        let stream_index =
            StreamIndexer::open(&conn, &path, &options).expect("open the stream index");
        Writer {
            conn,
            path,
            max_group_events: options.max_group_events,
            head: watch::channel(0).0,
            appended: Arc::new(AtomicU64::new(0)),
            versions: HashMap::new(),
            versions_valid_at: None,
            keep_versions: true,
            ids: IdGenerator::new(),
            mirror: None,
            replier: None,
            stream_index,
            optimistic_groups,
            savepoint_groups_left: 0,
        }
    }

    /// A group of requests, and the receivers of their replies.
    fn group(requests: Vec<Vec<NewEvent>>) -> (Vec<Request>, Vec<Receiver<Reply>>) {
        requests
            .into_iter()
            .map(|events| {
                let (sender, receiver) = mpsc::sync_channel(1);
                let request = Request {
                    events,
                    reply: ReplyTo::Blocking(sender),
                };
                (request, receiver)
            })
            .unzip()
    }

    fn commit(writer: &mut Writer, requests: Vec<Vec<NewEvent>>) -> Vec<Reply> {
        let (mut requests, replies) = group(requests);
        writer.commit_group(&mut requests);
        replies
            .into_iter()
            .map(|reply| reply.recv().expect("every request is answered"))
            .collect()
    }

    /// Pairs of a stream and a version.
    type Versions = Vec<(String, u64)>;

    /// `(stream, stream_version)` of every event in offset order, and `streams`' heads.
    fn stored(writer: &Writer) -> (Versions, Versions) {
        let rows = |sql: &str| -> Versions {
            let mut statement = writer.conn.prepare(sql).expect("prepare");
            statement
                .query_map([], |row| Ok((row.get(0)?, get_u64(row, 1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        (
            rows(r#"SELECT stream, stream_version FROM events ORDER BY "offset""#),
            rows("SELECT name, version FROM streams ORDER BY name"),
        )
    }

    fn event(stream: &str) -> NewEvent {
        NewEvent::new(stream, "E", "{}")
    }

    #[test]
    fn a_failing_request_in_a_group_rolls_back_alone_with_or_without_optimistic_groups() {
        for optimistic in [true, false] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut writer = writer(dir.path(), optimistic);
            // The second request writes its first event, then fails on its second: the
            // group's whole attempt is rolled back and redone with savepoints.
            let replies = commit(
                &mut writer,
                vec![
                    vec![event("a")],
                    vec![event("b"), event("a").with_expected_version(7)],
                    vec![event("a"), event("c")],
                ],
            );
            assert_eq!(replies[0].as_ref().ok(), Some(&vec![1]), "{optimistic}");
            assert!(
                matches!(
                    &replies[1],
                    Err(LogError::VersionConflict {
                        expected: 7,
                        actual: 1,
                        ..
                    })
                ),
                "{optimistic}: {:?}",
                replies[1]
            );
            assert_eq!(replies[2].as_ref().ok(), Some(&vec![2, 3]), "{optimistic}");
            let (events, heads) = stored(&writer);
            let owned = |pairs: &[(&str, u64)]| -> Versions {
                pairs.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect()
            };
            assert_eq!(events, owned(&[("a", 1), ("a", 2), ("c", 1)]));
            assert_eq!(heads, owned(&[("a", 2), ("c", 1)]));
            assert_eq!(*writer.head.borrow(), 3);
            assert_eq!(writer.appended.load(Ordering::Relaxed), 3);
            let expected_left = if optimistic {
                SAVEPOINT_GROUPS_AFTER_FAILURE
            } else {
                0
            };
            assert_eq!(writer.savepoint_groups_left, expected_left);

            // The next group goes straight to savepoints (one fewer left), and the
            // versions the failed attempt had cached are not used.
            let replies = commit(&mut writer, vec![vec![event("b")], vec![event("a")]]);
            assert_eq!(replies[0].as_ref().ok(), Some(&vec![4]));
            assert_eq!(replies[1].as_ref().ok(), Some(&vec![5]));
            let (events, _) = stored(&writer);
            assert_eq!(&events[3..], owned(&[("b", 1), ("a", 3)]));
            assert_eq!(
                writer.savepoint_groups_left,
                expected_left.saturating_sub(1)
            );
        }
    }

    #[test]
    fn a_group_without_failures_is_written_whole_and_keeps_ids_idempotent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = writer(dir.path(), true);
        let replies = commit(
            &mut writer,
            vec![
                vec![event("a").with_id("x")],
                vec![event("a"), event("b")],
                // A repeat of an id written earlier in the same group: its first offset.
                vec![event("a").with_id("x")],
            ],
        );
        let offsets: Vec<_> = replies.into_iter().map(Result::unwrap_or_default).collect();
        assert_eq!(offsets, vec![vec![1], vec![2, 3], vec![1]]);
        assert_eq!(writer.savepoint_groups_left, 0);
        let (events, heads) = stored(&writer);
        assert_eq!(events.len(), 3);
        assert_eq!(
            heads,
            vec![("a".to_owned(), 2), ("b".to_owned(), 1)],
            "stream heads follow the group"
        );
        assert_eq!(writer.versions_valid_at, Some(3));
    }
}
