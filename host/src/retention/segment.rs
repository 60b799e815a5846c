//! One archive segment: an immutable, compressed, checksummed file of archived events.
//!
//! A segment is one zstd frame with its content checksum (XXH64 of the decompressed
//! bytes, checked on every read), holding JSON Lines: a header line, then one line per
//! event in offset order. Its file name carries its sequence number and offset range,
//! `seg-<seq>-<first>-<last>.zst` (zero-padded, so names sort by sequence), and the
//! header repeats them: a segment renamed by hand, cut short or damaged is refused.
//!
//! A segment is written to `<name>.tmp`, fsynced, renamed into place, and the folder is
//! fsynced: it exists whole or not at all.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::log::{Event, micros_to_timestamp, timestamp_to_micros};

/// The format named in every segment's header.
pub const SEGMENT_FORMAT: &str = "refract-archive-1";

/// Events per segment at most: a replay decodes a whole segment at a time, so this
/// bounds the memory one decoded segment takes (with [`SEGMENT_MAX_BYTES`]).
pub const SEGMENT_MAX_EVENTS: usize = 5_000;

/// Event text per segment at most (data and metadata), in bytes; a segment closes at
/// whichever of this and [`SEGMENT_MAX_EVENTS`] comes first.
pub const SEGMENT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// The zstd level: the default, which compresses JSON events about 5 to 10 times at
/// hundreds of MB/s.
const ZSTD_LEVEL: i32 = 3;

/// The suffix of a segment being written.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A segment as the folder lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentId {
    /// Its sequence number, from 1: segments are written one after the other.
    pub seq: u64,
    /// The lowest offset it holds.
    pub first: u64,
    /// The highest offset it holds.
    pub last: u64,
}

impl SegmentId {
    /// Its file name.
    pub fn file_name(&self) -> String {
        format!(
            "seg-{:08}-{:020}-{:020}.zst",
            self.seq, self.first, self.last
        )
    }

    /// Reads a segment's file name; `None` for anything else.
    pub fn parse(name: &str) -> Option<SegmentId> {
        let rest = name.strip_prefix("seg-")?.strip_suffix(".zst")?;
        let mut parts = rest.split('-');
        let id = SegmentId {
            seq: parts.next()?.parse().ok()?,
            first: parts.next()?.parse().ok()?,
            last: parts.next()?.parse().ok()?,
        };
        (parts.next().is_none() && id.first <= id.last).then_some(id)
    }
}

/// The first line of a segment.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    seq: u64,
    first: u64,
    last: u64,
    events: u64,
}

/// One archived event: every column of the log, the payloads as their JSON text.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    offset: u64,
    id: String,
    stream: String,
    stream_version: u64,
    #[serde(rename = "type")]
    event_type: String,
    data: String,
    metadata: Option<String>,
    recorded_at_micros: i64,
}

/// Writes `events` (offset order, not empty) as segment `seq` into `dir`, durably.
/// Returns its id and size in bytes.
pub fn write(dir: &Path, seq: u64, events: &[Event]) -> std::io::Result<(SegmentId, u64)> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(std::io::Error::other("an archive segment needs events"));
    };
    let id = SegmentId {
        seq,
        first: first.offset,
        last: last.offset,
    };
    let path = dir.join(id.file_name());
    let temp = temp_path(&path);
    let file = File::create(&temp)?;
    let mut encoder = zstd::Encoder::new(file, ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    let header = Header {
        format: SEGMENT_FORMAT.to_owned(),
        seq,
        first: id.first,
        last: id.last,
        events: events.len() as u64,
    };
    serde_json::to_writer(&mut encoder, &header)?;
    encoder.write_all(b"\n")?;
    for event in events {
        let line = Line {
            offset: event.offset,
            id: event.id.clone(),
            stream: event.stream.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            data: event.data.clone(),
            metadata: event.metadata.clone(),
            recorded_at_micros: timestamp_to_micros(event.recorded_at),
        };
        serde_json::to_writer(&mut encoder, &line)?;
        encoder.write_all(b"\n")?;
    }
    let file = encoder.finish()?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    fs::rename(&temp, &path)?;
    sync_dir(dir)?;
    Ok((id, size))
}

/// Reads a whole segment back, checking its checksum, header and offsets.
pub fn read(path: &Path, id: SegmentId) -> Result<Vec<Event>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let decoder = zstd::Decoder::new(file).map_err(|e| format!("cannot decompress it: {e}"))?;
    let mut lines = BufReader::new(decoder).lines();
    let damaged = |e: std::io::Error| format!("it is damaged or fails its checksum: {e}");
    let header: Header = match lines.next() {
        Some(line) => serde_json::from_str(&line.map_err(damaged)?)
            .map_err(|e| format!("its header is not a segment header: {e}"))?,
        None => return Err("it is empty".to_owned()),
    };
    if header.format != SEGMENT_FORMAT
        || header.seq != id.seq
        || header.first != id.first
        || header.last != id.last
    {
        return Err(format!(
            "its header ({} segment {} of offsets {}..={}) does not match its name",
            header.format, header.seq, header.first, header.last
        ));
    }
    let mut events = Vec::with_capacity(usize::try_from(header.events).unwrap_or(0));
    let mut previous = 0;
    for line in lines {
        let line: Line = serde_json::from_str(&line.map_err(damaged)?)
            .map_err(|e| format!("an event line is damaged: {e}"))?;
        if line.offset <= previous || line.offset < id.first || line.offset > id.last {
            return Err(format!(
                "offset {} is out of order or out of its range",
                line.offset
            ));
        }
        previous = line.offset;
        events.push(Event {
            offset: line.offset,
            id: line.id,
            stream: line.stream,
            stream_version: line.stream_version,
            event_type: line.event_type,
            data: line.data,
            metadata: line.metadata,
            recorded_at: micros_to_timestamp(line.recorded_at_micros),
        });
    }
    if events.len() as u64 != header.events
        || events.first().map(|e| e.offset) != Some(id.first)
        || events.last().map(|e| e.offset) != Some(id.last)
    {
        return Err(format!(
            "it holds {} events, but its header says {} (cut short?)",
            events.len(),
            header.events
        ));
    }
    Ok(events)
}

/// Where a segment is written before it is renamed into place.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: u64) -> Event {
        Event {
            offset,
            id: format!("id-{offset}"),
            stream: "s".to_owned(),
            stream_version: offset,
            event_type: "T".to_owned(),
            data: format!("{{\"n\":{offset}}}"),
            metadata: offset.is_multiple_of(2).then(|| "{}".to_owned()),
            recorded_at: micros_to_timestamp(
                1_700_000_000_000_000 + i64::try_from(offset).unwrap(),
            ),
        }
    }

    #[test]
    fn a_segment_reads_back_exactly_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = [3, 5, 9].into_iter().map(event).collect();
        let (id, size) = write(dir.path(), 7, &events).unwrap();
        assert_eq!((id.seq, id.first, id.last), (7, 3, 9));
        assert!(size > 0);
        let path = dir.path().join(id.file_name());
        assert_eq!(SegmentId::parse(&id.file_name()), Some(id));
        assert_eq!(read(&path, id).unwrap(), events);

        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(read(&path, id).is_err());
    }
}
