//! One retention pass: find the events past their policy and under the safety floor,
//! archive or delete them in small transactions, then give the space back.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::log::{Event, EventLog, Pruner, ReadQuery, Removal, timestamp_to_micros};

use super::archive::Archive;
use super::config::{Mode, Policy, governing};
use super::error::RetentionError;
use super::segment::{SEGMENT_MAX_BYTES, SEGMENT_MAX_EVENTS};

/// Events a pass reads at most. The next pass goes on from where this one stopped, so
/// a long log is covered in several passes, none of which runs for long.
pub const SCAN_EVENTS_PER_PASS: u64 = 200_000;

/// Events read from the log per page while scanning.
const SCAN_PAGE_EVENTS: usize = 1_000;

/// Pause between two incremental-vacuum steps, so appends waiting for the write lock get
/// it between them.
const VACUUM_PAUSE: Duration = Duration::from_millis(2);

/// The lowest position anything still needs: events at or below it may go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Floor {
    /// Events at or below this offset may be removed.
    pub offset: u64,
    /// Who holds it there (`projector balances@1a2b3c`, `group mailer`), if anyone.
    pub held_by: Option<String>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    /// Events moved to the archive.
    pub archived: u64,
    /// Events deleted for good.
    pub deleted: u64,
    /// Segments written.
    pub segments: u64,
    /// Bytes the file gave back.
    pub reclaimed_bytes: u64,
    /// Events read.
    pub scanned: u64,
    /// Whether the scan reached the floor (otherwise the next pass goes on from `cursor`).
    pub complete: bool,
}

/// What a pass works with.
pub struct Pass<'a> {
    /// The log.
    pub log: &'a EventLog,
    /// Its removal connection.
    pub pruner: &'a mut Pruner,
    /// The archive; `None` when every policy deletes.
    pub archive: Option<&'a Archive>,
    /// The policies, longest prefix first.
    pub policies: &'a [Policy],
    /// The safety floor.
    pub floor: u64,
    /// Now.
    pub now: SystemTime,
}

/// Events waiting to leave the log.
#[derive(Default)]
struct Pending {
    archive: Vec<Event>,
    archive_bytes: usize,
    delete: Vec<u64>,
}

impl Pass<'_> {
    /// Runs the pass from `cursor` (the last offset an earlier pass scanned; 0 for the
    /// start). Returns the report and the cursor for the next pass.
    pub fn run(mut self, cursor: u64) -> Result<(PassReport, u64), RetentionError> {
        let mut report = PassReport::default();
        let head = self.log.head()?;
        // The head event always stays (the next offset is computed from it).
        let through = self.floor.min(head.saturating_sub(1));
        if self.policies.is_empty() || through <= cursor {
            report.complete = true;
            return Ok((report, 0));
        }
        let now_micros = self
            .now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        // Bytes each max_bytes policy is over by, measured once per pass.
        let mut excess: HashMap<&str, u64> = HashMap::new();
        for policy in self.policies {
            if let Some(max) = policy.max_bytes {
                let bytes = self.pruner.prefix_bytes(&policy.prefix)?;
                excess.insert(policy.prefix.as_str(), bytes.saturating_sub(max));
            }
        }
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut pending = Pending::default();
        let query = ReadQuery {
            from_offset: cursor + 1,
            to_offset: Some(through),
            limit: Some(SCAN_EVENTS_PER_PASS),
            batch_size: SCAN_PAGE_EVENTS,
            ..ReadQuery::default()
        };
        let mut last = cursor;
        let log = self.log;
        for event in log.read(&query)? {
            let event = event?;
            report.scanned += 1;
            last = event.offset;
            let Some(policy) = governing(self.policies, &event.stream) else {
                continue;
            };
            let current = match versions.get(&event.stream) {
                Some(version) => *version,
                None => {
                    let version = self.pruner.stream_version(&event.stream)?;
                    versions.insert(event.stream.clone(), version);
                    version
                }
            };
            // A stream's newest event stays: the next version is computed from it.
            if event.stream_version >= current {
                continue;
            }
            let too_old = policy.max_age.is_some_and(|age| {
                let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
                timestamp_to_micros(event.recorded_at) < now_micros.saturating_sub(age)
            });
            let too_many = policy
                .max_events_per_stream
                .is_some_and(|keep| event.stream_version + keep <= current);
            let size = (event.data.len() + event.metadata.as_ref().map_or(0, String::len)) as u64;
            let too_big = match excess.get_mut(policy.prefix.as_str()) {
                Some(over) if *over > 0 => {
                    *over = over.saturating_sub(size);
                    true
                }
                _ => false,
            };
            if !(too_old || too_many || too_big) {
                continue;
            }
            match policy.mode {
                Mode::Archive => {
                    pending.archive_bytes += usize::try_from(size).unwrap_or(usize::MAX);
                    pending.archive.push(event);
                    if pending.archive.len() >= SEGMENT_MAX_EVENTS
                        || pending.archive_bytes >= SEGMENT_MAX_BYTES
                    {
                        self.flush_archive(&mut pending, &mut report)?;
                    }
                }
                Mode::Delete => {
                    pending.delete.push(event.offset);
                    if pending.delete.len() >= SEGMENT_MAX_EVENTS {
                        self.flush_delete(&mut pending, &mut report)?;
                    }
                }
            }
        }
        self.flush_archive(&mut pending, &mut report)?;
        self.flush_delete(&mut pending, &mut report)?;
        report.complete = report.scanned < SCAN_EVENTS_PER_PASS;
        if report.archived + report.deleted > 0 {
            report.reclaimed_bytes = self.vacuum()?;
        }
        let next = if report.complete { 0 } else { last };
        Ok((report, next))
    }

    fn flush_archive(
        &mut self,
        pending: &mut Pending,
        report: &mut PassReport,
    ) -> Result<(), RetentionError> {
        if pending.archive.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut pending.archive);
        pending.archive_bytes = 0;
        let Some(archive) = self.archive else {
            return Err(RetentionError::NoArchive);
        };
        // Durable in the archive first; only then do the events leave the log. A crash in
        // between leaves them in both places, which replays read once and the next start
        // settles (see `Archive::reconcile`).
        let id = archive
            .write(&events)
            .map_err(|source| RetentionError::WriteSegment {
                dir: archive.dir().to_path_buf(),
                source,
            })?;
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        report.archived += self.pruner.remove(
            &offsets,
            Removal::Archived {
                segment: id.seq,
                last_chunk: true,
            },
        )?;
        report.segments += 1;
        Ok(())
    }

    fn flush_delete(
        &mut self,
        pending: &mut Pending,
        report: &mut PassReport,
    ) -> Result<(), RetentionError> {
        if pending.delete.is_empty() {
            return Ok(());
        }
        let offsets = std::mem::take(&mut pending.delete);
        report.deleted += self.pruner.remove(&offsets, Removal::Deleted)?;
        Ok(())
    }

    /// Gives the freed pages back in short steps, then checkpoints so the file shrinks.
    fn vacuum(&mut self) -> Result<u64, RetentionError> {
        if !self.pruner.vacuum_enabled()? {
            return Ok(0);
        }
        let mut reclaimed = 0;
        loop {
            let step = self.pruner.vacuum_step()?;
            if step == 0 {
                break;
            }
            reclaimed += step;
            std::thread::sleep(VACUUM_PAUSE);
        }
        self.pruner.checkpoint()?;
        Ok(reclaimed)
    }
}
