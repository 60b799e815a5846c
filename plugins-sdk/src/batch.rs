//! The loop behind the `init` and `handle` exports, shared by the wasm glue and the
//! native test harness so both run the same code.

use crate::db::Failure;
use crate::{Db, Event, Projector};

/// A packed event batch, borrowed: the layout of `event-batch` in the WIT contract.
pub(crate) struct Batch<'b> {
    pub(crate) offsets: &'b [u64],
    pub(crate) stream_versions: &'b [u64],
    pub(crate) recorded_at: &'b [i64],
    /// Five end positions per event, into `text`: id, stream, type, data, metadata.
    pub(crate) ends: &'b [u32],
    pub(crate) text: &'b [u8],
}

/// How many text fields each event has in a packed batch.
pub(crate) const FIELDS: usize = 5;

/// The event that failed a batch, and why: `handle-error` in the WIT contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    pub(crate) offset: u64,
    pub(crate) message: String,
}

/// Runs `P::init` and sends its deferred writes.
pub(crate) fn init<P: Projector>(db: &mut Db) -> Result<(), String> {
    db.reset();
    let result = P::init(db).and_then(|()| db.flush());
    let outcome = match (db.take_failure(), result) {
        (Some(failure), _) => Err(describe(&failure)),
        (None, Err(e)) => Err(message(e)),
        (None, Ok(())) => Ok(()),
    };
    db.reset();
    outcome
}

/// Unpacks a batch and runs `P::handle` on each event, borrowing every field from
/// the batch: no allocation per event. Then sends the deferred writes.
pub(crate) fn handle<P: Projector>(db: &mut Db, batch: &Batch<'_>) -> Result<(), Failed> {
    db.reset();
    let outcome = run::<P>(db, batch);
    db.reset();
    outcome
}

fn run<P: Projector>(db: &mut Db, batch: &Batch<'_>) -> Result<(), Failed> {
    let n = batch.offsets.len();
    let malformed = |message: String| Failed {
        offset: batch.offsets.first().copied().unwrap_or(0),
        message: format!("malformed event batch from the host: {message}"),
    };
    if batch.stream_versions.len() != n
        || batch.recorded_at.len() != n
        || Some(batch.ends.len()) != n.checked_mul(FIELDS)
    {
        return Err(malformed(format!(
            "{n} offsets, {} stream versions, {} timestamps and {} text ends",
            batch.stream_versions.len(),
            batch.recorded_at.len(),
            batch.ends.len()
        )));
    }
    // One validation for the whole batch; each field is then a checked slice of it.
    let text = std::str::from_utf8(batch.text)
        .map_err(|e| malformed(format!("text is not UTF-8: {e}")))?;

    let mut start = 0;
    let events = batch
        .offsets
        .iter()
        .zip(batch.stream_versions)
        .zip(batch.recorded_at)
        .zip(batch.ends.chunks_exact(FIELDS));
    for (((&offset, &stream_version), &recorded_at), ends) in events {
        let mut fields = [""; FIELDS];
        for (field, &end) in fields.iter_mut().zip(ends) {
            let end = end as usize;
            *field = text.get(start..end).ok_or_else(|| Failed {
                offset,
                message: format!(
                    "malformed event batch from the host: a field spans bytes {start}..{end} \
                     of {}, outside the text or inside a character",
                    text.len()
                ),
            })?;
            start = end;
        }
        let [id, stream, event_type, data, metadata] = fields;
        let event = Event::from_parts(
            offset,
            stream_version,
            recorded_at,
            id,
            stream,
            event_type,
            data,
            metadata,
        );
        db.set_offset(Some(offset));
        let result = P::handle(&event, db);
        // A failed deferred write outranks whatever the projector made of it: the
        // batch is lost either way, and the write names the event that caused it.
        if let Some(failure) = db.take_failure() {
            return Err(failed(&failure, offset));
        }
        if let Err(e) = result {
            return Err(Failed {
                offset,
                message: message(e),
            });
        }
    }

    let last = batch.offsets.last().copied().unwrap_or(0);
    let flushed = db.flush();
    if let Some(failure) = db.take_failure() {
        return Err(failed(&failure, last));
    }
    flushed.map_err(|e| Failed {
        offset: last,
        message: message(e),
    })
}

/// The error's message, moved rather than copied when it is the projector's own:
/// the host caps its length, and the guest should not need twice the memory to
/// report it.
fn message(error: crate::Error) -> String {
    match error {
        crate::Error::Message(message) => message,
        other => other.to_string(),
    }
}

fn failed(failure: &Failure, current: u64) -> Failed {
    Failed {
        offset: failure.offset.unwrap_or(current),
        message: describe(failure),
    }
}

fn describe(failure: &Failure) -> String {
    format!(
        "deferred write failed: {} (statement: {})",
        failure.error, failure.sql
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Backend;
    use crate::{Info, Result};

    struct Count;

    impl Projector for Count {
        fn info() -> Info {
            Info::new("count", "")
        }
        fn init(_db: &mut Db) -> Result<()> {
            Ok(())
        }
        fn handle(event: &Event<'_>, _db: &mut Db) -> Result<()> {
            assert_eq!(event.id(), "id");
            Ok(())
        }
    }

    fn run_with(ends: &[u32], text: &[u8]) -> Result<(), Failed> {
        let mut db = Db::new(Backend::open().map_err(|e| Failed {
            offset: 0,
            message: e.to_string(),
        })?);
        let batch = Batch {
            offsets: &[7],
            stream_versions: &[1],
            recorded_at: &[0],
            ends,
            text,
        };
        handle::<Count>(&mut db, &batch)
    }

    #[test]
    fn a_well_formed_batch_is_handled() {
        assert_eq!(run_with(&[2, 3, 4, 6, 6], b"idstd{}"), Ok(()));
    }

    #[test]
    fn a_malformed_batch_fails_without_panicking() {
        let failed = |ends: &[u32], text: &[u8]| run_with(ends, text).unwrap_err().message;
        assert!(failed(&[2, 3, 4, 6], b"idstd{}").contains("text ends"));
        assert!(failed(&[2, 3, 4, 6, 99], b"idstd{}").contains("outside the text"));
        assert!(failed(&[2, 3, 2, 6, 6], b"idstd{}").contains("outside the text"));
        assert!(failed(&[2, 3, 4, 6, 6], b"idst\xff{}").contains("not UTF-8"));
        // A field boundary inside a multi-byte character.
        assert!(failed(&[2, 3, 5, 7, 7], "idéd{}".as_bytes()).contains("inside a character"));
    }
}
