//! The archive folder, `<data-dir>/archive/`: its segments, and reading them back as
//! the log's [`ColdTier`].
//!
//! Segments are immutable and only ever added. Their offset ranges may overlap (a later
//! pass can archive an event older than an earlier segment's last one, such as a stream's
//! newest event that has since been superseded), so a read merges every segment whose
//! range meets the offsets asked for.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::log::{ArchiveBudget, ColdRange, ColdTier, Event, LogError, Pruner, Removal};

use super::segment::{self, SegmentId, TEMP_SUFFIX};

/// The folder's name inside a data directory.
pub const ARCHIVE_DIR_NAME: &str = "archive";

/// Decoded segments kept in memory, shared by every replay: a replay reads a segment a
/// batch at a time, and each is decoded once, not once per batch. Bounds the memory to
/// this many times [`segment::SEGMENT_MAX_BYTES`] (plus the per-event overhead).
pub const DECODED_SEGMENTS_CACHED: usize = 4;

/// The archive of one data directory.
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    /// Every segment with its size in bytes, by sequence number.
    segments: RwLock<Vec<(SegmentId, u64)>>,
    /// Recently decoded segments, most recently used last.
    decoded: Mutex<VecDeque<(SegmentId, Arc<Vec<Event>>)>>,
}

impl Archive {
    /// Opens (creating it if needed) the archive in `dir`, removing any segment left
    /// half-written by a crash (its events are still in the log).
    pub fn open(dir: &Path) -> std::io::Result<Archive> {
        fs::create_dir_all(dir)?;
        let archive = Archive {
            dir: dir.to_path_buf(),
            segments: RwLock::new(Vec::new()),
            decoded: Mutex::new(VecDeque::new()),
        };
        let mut removed_temp = false;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(TEMP_SUFFIX) {
                fs::remove_file(entry.path())?;
                removed_temp = true;
            }
        }
        if removed_temp {
            segment::sync_dir(dir)?;
        }
        archive.rescan()?;
        Ok(archive)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lists the folder again (another process may have added segments).
    fn rescan(&self) -> std::io::Result<()> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(id) = entry.file_name().to_str().and_then(SegmentId::parse) {
                found.push((id, entry.metadata()?.len()));
            }
        }
        found.sort();
        *self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner) = found;
        Ok(())
    }

    /// Every segment, by sequence number.
    pub fn segments(&self) -> Vec<(SegmentId, u64)> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The archive's size on disk, in bytes, and its number of segments.
    pub fn size(&self) -> (u64, usize) {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        (segments.iter().map(|(_, size)| size).sum(), segments.len())
    }

    /// Writes `events` as the next segment, durably, and lists it. Its events are still
    /// in the log: remove them next, with [`Removal::Archived`] naming the segment.
    pub fn write(&self, events: &[Event]) -> std::io::Result<SegmentId> {
        let seq = self.segments().last().map_or(1, |(id, _)| id.seq + 1);
        let (id, size) = segment::write(&self.dir, seq, events)?;
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, size));
        Ok(id)
    }

    /// Makes sure every segment's events are gone from the log: after a crash between
    /// writing a segment and removing its last events, removes what is left. Segments
    /// up to the horizon's `settled_segment` are known to be settled and not read.
    pub fn reconcile(&self, pruner: &mut Pruner) -> Result<u64, LogError> {
        let settled = pruner.horizon()?.settled_segment;
        let mut removed = 0;
        for (id, _) in self.segments() {
            if id.seq <= settled {
                continue;
            }
            let events = self.load(id)?;
            let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
            removed += pruner.remove(
                &offsets,
                Removal::Archived {
                    segment: id.seq,
                    last_chunk: true,
                },
            )?;
        }
        Ok(removed)
    }

    /// A segment's events, decoded (from the cache when it was read lately).
    fn load(&self, id: SegmentId) -> Result<Arc<Vec<Event>>, LogError> {
        self.load_within(id, None, false)
            .map(|loaded| loaded.unwrap_or_default())
    }

    /// [`load`](Self::load), charging a decompression (not a cache hit) to `budget`;
    /// `None` when the budget is spent. A segment `needed` to answer the first offset
    /// of the call is charged with [`ArchiveBudget::charge_needed`].
    fn load_within(
        &self,
        id: SegmentId,
        budget: Option<&mut ArchiveBudget>,
        needed: bool,
    ) -> Result<Option<Arc<Vec<Event>>>, LogError> {
        {
            // Least recently used goes first: a segment that overlaps many others is
            // needed by every batch, and stays.
            let mut decoded = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(at) = decoded.iter().position(|(cached, _)| *cached == id)
                && let Some(hit) = decoded.remove(at)
            {
                let events = Arc::clone(&hit.1);
                decoded.push_back(hit);
                return Ok(Some(events));
            }
        }
        if let Some(budget) = budget
            && !(if needed {
                budget.charge_needed()
            } else {
                budget.charge()
            })
        {
            return Ok(None);
        }
        let path = self.dir.join(id.file_name());
        let events = Arc::new(
            segment::read(&path, id).map_err(|reason| LogError::Archive {
                path: path.clone(),
                reason,
            })?,
        );
        let mut decoded = self.decoded.lock().unwrap_or_else(PoisonError::into_inner);
        if decoded.len() >= DECODED_SEGMENTS_CACHED {
            decoded.pop_front();
        }
        decoded.push_back((id, Arc::clone(&events)));
        Ok(Some(events))
    }

    /// The segments that meet `range`, lowest first offset first (found from their
    /// names: nothing is decompressed), after checking that the folder has every
    /// segment the log says it archived.
    fn meeting(&self, range: ColdRange) -> Result<Vec<SegmentId>, LogError> {
        let ColdRange { after, through } = range;
        let known_end = |segments: &[(SegmentId, u64)]| {
            segments.iter().map(|(id, _)| id.last).max().unwrap_or(0)
        };
        // The horizon the caller read says segments reach `through`: if this process has
        // not seen them, another one wrote them since.
        if known_end(&self.segments()) < through {
            self.rescan().map_err(|e| LogError::Archive {
                path: self.dir.clone(),
                reason: format!("cannot list it: {e}"),
            })?;
            if known_end(&self.segments()) < through {
                return Err(LogError::Archive {
                    path: self.dir.clone(),
                    reason: format!(
                        "the log says events up to offset {through} were archived, but no \
                         segment reaches that far"
                    ),
                });
            }
        }
        // Sequence numbers run from 1 without a gap (a segment takes the next one only
        // once it is in place): a gap is a segment someone removed, whose events a read
        // would otherwise silently lack.
        let segments = self.segments();
        if let Some(gap) = segments
            .iter()
            .enumerate()
            .find_map(|(i, (id, _))| (id.seq != i as u64 + 1).then_some(i as u64 + 1))
        {
            return Err(LogError::Archive {
                path: self.dir.join(format!("seg-{gap:08}-*.zst")),
                reason: format!(
                    "segment {gap} is missing (segments are numbered from 1 without a gap, \
                     and this folder has them up to {}): its events are gone from the log",
                    segments.last().map_or(0, |(id, _)| id.seq)
                ),
            });
        }
        let mut meeting: Vec<SegmentId> = segments
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.last > after && id.first <= through)
            .collect();
        meeting.sort_unstable_by_key(|id| id.first);
        Ok(meeting)
    }
}

/// How far an answer is complete when the budget refused segment `refused`: every
/// segment that can hold an offset below its first was read.
fn complete_before(refused: SegmentId, range: ColdRange) -> u64 {
    refused
        .first
        .saturating_sub(1)
        .clamp(range.after, range.through)
}

/// Whether segment `id` can hold the first offset `range` asks for: the segments a
/// call must read to answer anything at all (see [`ArchiveBudget::charge_needed`]).
/// `meeting` lists them first, as no other segment starts that low.
fn needed_first(id: SegmentId, range: ColdRange) -> bool {
    id.first <= range.after.saturating_add(1)
}

impl ColdTier for Archive {
    fn read(
        &self,
        range: ColdRange,
        max: usize,
        mut budget: Option<&mut ArchiveBudget>,
        out: &mut Vec<Event>,
    ) -> Result<u64, LogError> {
        let result = self.read_picked(range, max, budget.as_deref_mut(), out);
        if let Some(budget) = budget {
            budget.end_call();
        }
        result
    }

    fn scan(
        &self,
        range: ColdRange,
        mut budget: Option<&mut ArchiveBudget>,
        visit: &mut dyn FnMut(u64, &Event),
    ) -> Result<u64, LogError> {
        let result = self.scan_segments(range, budget.as_deref_mut(), visit);
        if let Some(budget) = budget {
            budget.end_call();
        }
        result
    }
}

impl Archive {
    /// [`ColdTier::read`], before the call's end is marked on the budget.
    fn read_picked(
        &self,
        range: ColdRange,
        max: usize,
        mut budget: Option<&mut ArchiveBudget>,
        out: &mut Vec<Event>,
    ) -> Result<u64, LogError> {
        let ColdRange { after, through } = range;
        // Lowest first offset first: once `max` events are picked below the next
        // segment's first offset, the rest can wait for the next call (and are not
        // decoded now).
        let mut picked: Vec<Event> = Vec::new();
        let mut complete = through;
        for id in self.meeting(range)? {
            if picked.len() >= max && picked.last().is_some_and(|e| e.offset < id.first) {
                break;
            }
            let Some(events) =
                self.load_within(id, budget.as_deref_mut(), needed_first(id, range))?
            else {
                complete = complete_before(id, range);
                break;
            };
            let start = events.partition_point(|e| e.offset <= after);
            picked.extend(
                events[start..]
                    .iter()
                    .take_while(|e| e.offset <= through)
                    .take(max)
                    .cloned(),
            );
            // Segments may overlap: keep the smallest offsets, each once.
            picked.sort_unstable_by_key(|e| e.offset);
            picked.dedup_by_key(|e| e.offset);
            picked.truncate(max);
        }
        picked.retain(|e| e.offset <= complete);
        out.append(&mut picked);
        Ok(complete)
    }

    /// [`ColdTier::scan`], before the call's end is marked on the budget.
    fn scan_segments(
        &self,
        range: ColdRange,
        mut budget: Option<&mut ArchiveBudget>,
        visit: &mut dyn FnMut(u64, &Event),
    ) -> Result<u64, LogError> {
        for id in self.meeting(range)? {
            let needed = needed_first(id, range);
            let Some(events) = self.load_within(id, budget.as_deref_mut(), needed)? else {
                return Ok(complete_before(id, range));
            };
            let start = events.partition_point(|e| e.offset <= range.after);
            for event in events[start..]
                .iter()
                .take_while(|e| e.offset <= range.through)
            {
                visit(id.seq, event);
            }
        }
        Ok(range.through)
    }
}
