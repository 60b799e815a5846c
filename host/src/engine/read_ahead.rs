//! Reading ahead: a [`Projection`](super::projection::Projection)'s log reader on a
//! thread of its own, so the next batch is read from the log and packed while the guest
//! and SQLite work on the current one. A replay's three stages (read and pack, run the
//! guest, write SQLite) then overlap on two cores instead of adding up.
//!
//! Exactly-once is untouched: reading ahead only reads. A batch read ahead is keyed by
//! everything it was read with (the checkpoint it starts after, the end bound, the batch
//! limits), and it is used only if the next step asks for exactly that; otherwise, for
//! example after a failed batch (the checkpoint did not move) or when a trap is narrowed
//! one event at a time (the limits changed), it is thrown away and the step reads
//! afresh. The checkpoint is still committed in the transaction of the batch's writes.
//! A batch read ahead that came back empty is thrown away too, so that "caught up" is
//! always decided by a fresh read.
//!
//! Cost: one thread per projection and one more batch buffer (at most the batch limits'
//! `max_bytes` of text), and a read is only started ahead after a full batch, when more
//! events are likely to follow; a live projector that keeps up reads nothing ahead.

use std::ops::ControlFlow;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use super::projection::{BatchLimits, ProjectionError};
use crate::log::{LogError, LogReader, ReadQuery, ScanResult};
use crate::runtime::{EventBatch, EventFields};

/// What a batch is read with. A batch read ahead is used only for an equal key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadKey {
    /// The checkpoint the batch starts after.
    pub(super) after: u64,
    /// The last offset it may read (inclusive), if bounded.
    pub(super) until: Option<u64>,
    /// At most this many events.
    pub(super) max_events: usize,
    /// A batch closes once its text reaches this many bytes.
    pub(super) max_bytes: usize,
}

impl ReadKey {
    pub(super) fn new(after: u64, until: Option<u64>, limits: BatchLimits) -> Self {
        Self {
            after,
            until,
            max_events: limits.max_events,
            max_bytes: limits.max_bytes,
        }
    }
}

/// Reads the batch `key` names into `batch` (cleared first), packing each event
/// straight from the row SQLite hands out. A field the projector does not read
/// (`fields`) is packed empty; the reader was told not to read it (see
/// [`ReadAhead::start`]), but events from the archive still carry it.
pub(super) fn fill(
    reader: &mut LogReader,
    query: &ReadQuery,
    fields: EventFields,
    key: &ReadKey,
    batch: &mut EventBatch,
) -> Result<ScanResult, LogError> {
    batch.clear();
    let mut bounded;
    let query = if key.until.is_some() {
        bounded = query.clone();
        bounded.to_offset = key.until;
        &bounded
    } else {
        query
    };
    let max_bytes = key.max_bytes;
    reader.read_batch(query, key.after, key.max_events, |event| {
        batch.push(
            event.offset,
            if fields.id { event.id } else { "" },
            event.stream,
            event.stream_version,
            event.event_type,
            event.data,
            event.metadata.filter(|_| fields.metadata),
            event.recorded_at_micros,
        );
        if batch.byte_len() >= max_bytes {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
}

/// A request to the reader thread.
enum Request {
    /// Read a batch into the buffer and send it back.
    Read { key: ReadKey, batch: EventBatch },
    /// Read the log's head.
    Head(Sender<Result<u64, LogError>>),
}

/// A batch the reader thread read.
struct Reply {
    key: ReadKey,
    batch: EventBatch,
    scan: Result<ScanResult, LogError>,
}

/// The log reader on its own thread, with at most one read in flight.
pub(super) struct ReadAhead {
    requests: Option<Sender<Request>>,
    replies: Receiver<Reply>,
    /// The key of the read in flight, if any.
    pending: Option<ReadKey>,
    /// The buffer not in use by the projection or the thread.
    spare: Option<EventBatch>,
    thread: Option<JoinHandle<()>>,
}

fn reader_gone() -> ProjectionError {
    ProjectionError::Host(
        "the projection's log reader thread ended unexpectedly; the projection must be \
         reopened"
            .to_owned(),
    )
}

impl ReadAhead {
    /// Moves `reader` onto a new thread that reads `query` (its `to_offset` is replaced
    /// by each read's end bound), reading only the optional `fields` the projector
    /// reads: the "read only the columns the batch needs".
    pub(super) fn start(
        mut reader: LogReader,
        query: ReadQuery,
        fields: EventFields,
        thread_name: String,
    ) -> std::io::Result<Self> {
        reader.read_optional_columns(fields.id, fields.metadata);
        let (requests, inbox) = mpsc::channel::<Request>();
        let (outbox, replies) = mpsc::channel::<Reply>();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                while let Ok(request) = inbox.recv() {
                    match request {
                        Request::Read { key, mut batch } => {
                            let scan = fill(&mut reader, &query, fields, &key, &mut batch);
                            if outbox.send(Reply { key, batch, scan }).is_err() {
                                return;
                            }
                        }
                        Request::Head(answer) => {
                            // The asker may have gone; nothing to do then.
                            let _ = answer.send(reader.head());
                        }
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            replies,
            pending: None,
            spare: Some(EventBatch::new()),
            thread: Some(thread),
        })
    }

    fn send(&self, request: Request) -> Result<(), ProjectionError> {
        self.requests
            .as_ref()
            .ok_or_else(reader_gone)?
            .send(request)
            .map_err(|_| reader_gone())
    }

    /// Starts reading the batch `key` names, unless a read is in flight already.
    pub(super) fn start_read(&mut self, key: ReadKey) -> Result<(), ProjectionError> {
        if self.pending.is_some() {
            return Ok(());
        }
        let batch = self.spare.take().unwrap_or_default();
        self.send(Request::Read {
            key: key.clone(),
            batch,
        })?;
        self.pending = Some(key);
        Ok(())
    }

    /// Waits for the read in flight, if any.
    fn finish_pending(&mut self) -> Result<Option<Reply>, ProjectionError> {
        if self.pending.take().is_none() {
            return Ok(None);
        }
        self.replies.recv().map(Some).map_err(|_| reader_gone())
    }

    /// Reads the batch `key` names into `batch`: the batch read ahead if it was read
    /// with the same key and is not empty, otherwise a fresh read. `batch`'s old buffer
    /// is kept for the next read ahead.
    pub(super) fn read(
        &mut self,
        key: ReadKey,
        batch: &mut EventBatch,
    ) -> Result<ScanResult, ProjectionError> {
        if let Some(reply) = self.finish_pending()? {
            let usable = reply.key == key && matches!(reply.scan, Ok(scan) if scan.visited > 0);
            if usable {
                let scan = reply.scan?;
                self.spare = Some(std::mem::replace(batch, reply.batch));
                return Ok(scan);
            }
            self.spare = Some(reply.batch);
        }
        self.start_read(key)?;
        let reply = self.finish_pending()?.ok_or_else(reader_gone)?;
        self.spare = Some(std::mem::replace(batch, reply.batch));
        Ok(reply.scan?)
    }

    /// The log's head, as the reader sees it (after any read in flight).
    pub(super) fn head(&mut self) -> Result<u64, ProjectionError> {
        let (answer, head) = mpsc::channel();
        self.send(Request::Head(answer))?;
        Ok(head.recv().map_err(|_| reader_gone())??)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the request channel ends the thread after its read in flight (one
        // short read transaction).
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
