//! Read queries, and how each is answered from an index.
//!
//! A [`ReadQuery`] becomes a [`Plan`]: one "driving" index that yields matching rows in
//! log order, plus, when a filter is left that the driving index cannot answer, a residual
//! condition checked row by row over a bounded window (see [`SCAN_WINDOW`]).
//!
//! | Filter | Driving index | Page cost |
//! |---|---|---|
//! | none, offsets | the table itself (rowid range) | O(page) |
//! | time range | two binary searches over offsets turn it into an offset range | O(log² n) once |
//! | types | `(type, offset)`: one ordered, limited probe per type, merged | O(types × page) |
//! | types matching most rows (replay) | rowid range, type checked per row | O(window) |
//! | exact stream | `stream_index` up to its watermark, then the unindexed tail by offset: offsets become versions by binary search | O(page + tail) |
//! | stream prefixes | rowid range, prefix checked per row | O(window) |
//! | types + prefixes | `(type, offset)`, prefix checked per row | O(types × window) |
//! | stream + types | `stream_index` and the tail, type checked per row | O(window + tail) |
//!
//! Counts follow the same plans; a count of a stream's events of several types reads the
//! stream's index range and the tail once, checking the types per row.
//!
//! The tail is what the writer has not indexed yet (see `stream_index.rs`): fewer than
//! [`LogOptions::stream_index_chunk`](super::LogOptions::stream_index_chunk) events plus
//! one group while a writer runs. Each statement reads the watermark itself, so the index
//! and the tail always come from one snapshot. A page reads the tail only when the
//! indexed part leaves it short and its versions reach past the indexed ones.
//!
//! `recorded_at` never decreases along offsets (the writer makes sure of it), which is what
//! lets a time range become an offset range without an index on time: each step of the
//! search is one rowid lookup.

use rusqlite::{Connection, OptionalExtension, Row};

use super::model::ceil_micros;
use super::stream_index::{INDEXED_THROUGH_SQL, indexed_through};
use super::{LogError, MAX_FILTER_TERMS};

/// Which events to read. `ReadQuery::default()` is the whole log.
///
/// All filters combine with AND; `types` and `StreamFilter::Prefixes` are each an OR of
/// their entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadQuery {
    /// The first offset to return (inclusive). 0 and 1 both mean the start of the log.
    pub from_offset: u64,
    /// The last offset to return (inclusive). `None`: up to the head.
    pub to_offset: Option<u64>,
    /// Only events recorded at or after this instant.
    pub from_time: Option<jiff::Timestamp>,
    /// Only events recorded strictly before this instant: with `from_time`, the range is
    /// `[from_time, until_time)`.
    pub until_time: Option<jiff::Timestamp>,
    /// Only events of any of these types. Empty: every type. At most
    /// [`MAX_FILTER_TERMS`] distinct types.
    pub types: Vec<String>,
    /// Only events of these streams.
    pub stream: StreamFilter,
    /// At most this many events in total.
    pub limit: Option<u64>,
    /// Events per page, each page read in its own short read transaction. 0 means
    /// [`DEFAULT_BATCH_SIZE`](super::DEFAULT_BATCH_SIZE); clamped to
    /// [`MAX_BATCH_SIZE`](super::MAX_BATCH_SIZE).
    pub batch_size: usize,
}

/// Which streams a [`ReadQuery`] matches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum StreamFilter {
    /// Every stream.
    #[default]
    Any,
    /// Exactly this stream.
    Exact(String),
    /// Every stream whose name starts with any of these prefixes (compared byte-wise, as
    /// SQLite's BINARY collation does). An empty prefix matches every stream; an empty
    /// list is an error. At most [`MAX_FILTER_TERMS`] prefixes.
    Prefixes(Vec<String>),
}

/// The column list every event query selects, in the order [`super::read`] decodes it.
const COLUMNS: &str = r#""offset", id, stream, stream_version, type, data, metadata, recorded_at"#;

/// [`COLUMNS`] of `events AS e` joined to the stream index.
const JOINED_COLUMNS: &str =
    r#"e."offset", e.id, e.stream, e.stream_version, e.type, e.data, e.metadata, e.recorded_at"#;

/// `sql` (a [`Plan`]'s page query) selecting an empty id unless `id`, and no metadata
/// unless `metadata`, in place of those columns: a reader that needs neither does not
/// read them from the rows (see [`LogReader::read_optional_columns`]).
///
/// [`LogReader::read_optional_columns`]: super::LogReader::read_optional_columns
pub(super) fn with_optional_columns(sql: &str, id: bool, metadata: bool) -> String {
    let (id, metadata) = (
        if id { "id" } else { "''" },
        if metadata { "metadata" } else { "NULL" },
    );
    let columns =
        format!(r#""offset", {id}, stream, stream_version, type, data, {metadata}, recorded_at"#);
    let joined = format!(
        r#"e."offset", {}, e.stream, e.stream_version, e.type, e.data, {}, e.recorded_at"#,
        if id == "id" { "e.id" } else { id },
        if metadata == "metadata" {
            "e.metadata"
        } else {
            metadata
        }
    );
    sql.replace(COLUMNS, &columns)
        .replace(JOINED_COLUMNS, &joined)
}

/// The recorded time of the first event at or after offset `?1`: one rowid lookup, the
/// probe of the binary searches that turn a time bound into an offset bound.
const RECORDED_AT_FROM_SQL: &str =
    r#"SELECT recorded_at FROM events WHERE "offset" >= ?1 ORDER BY "offset" LIMIT 1"#;

/// The head version of stream `?1`, as the writer keeps it in `streams`: it outlives the
/// stream's events (retention may remove them), so versions are never reused.
pub(super) const STREAM_HEAD_SQL: &str = "SELECT version FROM streams WHERE name = ?1";

/// Sets the head version of stream `?1` to `?2`, adding the stream if it is new.
pub(super) const WRITE_STREAM_HEAD_SQL: &str = "INSERT INTO streams (name, version) VALUES (?1, ?2) \
    ON CONFLICT (name) DO UPDATE SET version = excluded.version";

/// The id and head version of stream `?1`. The head is the newest version still in the
/// log too: retention never removes a stream's newest event.
const STREAM_ID_VERSION_SQL: &str = "SELECT id, version FROM streams WHERE name = ?1";

/// The newest indexed version of the stream with id `?1`.
const INDEXED_MAX_VERSION_SQL: &str =
    "SELECT version FROM stream_index WHERE stream = ?1 ORDER BY version DESC LIMIT 1";

/// The offset of indexed version `?2` of the stream with id `?1` or, if retention
/// removed it, of the next indexed version still there.
const INDEXED_VERSION_OFFSET_SQL: &str = r#"SELECT "offset" FROM stream_index
    WHERE stream = ?1 AND version >= ?2 ORDER BY version LIMIT 1"#;

/// The version of the first event of stream `?2` at or after offset `?1`, which is
/// above the watermark: a scan of the tail by offset.
const TAIL_FIRST_VERSION_SQL: &str = r#"SELECT stream_version FROM events NOT INDEXED
    WHERE "offset" >= ?1 AND stream = ?2 ORDER BY "offset" LIMIT 1"#;

/// The version of the last event of stream `?3` with an offset in `(?1, ?2]`, `?1` the
/// watermark: a scan of the tail by offset.
const TAIL_LAST_VERSION_SQL: &str = r#"SELECT stream_version FROM events NOT INDEXED
    WHERE "offset" > ?1 AND "offset" <= ?2 AND stream = ?3 ORDER BY "offset" DESC LIMIT 1"#;

/// Events of stream `?1` with versions in `[?2, ?3]` whose type is one of `types`
/// (bound from `?4` on): indexed, then in the tail, each read once whatever the number
/// of types.
fn count_stream_types_sql(types: usize) -> String {
    let mut placeholders = String::new();
    push_placeholders(&mut placeholders, 4, types);
    format!(
        r#"SELECT
    (SELECT count(*) FROM stream_index AS i CROSS JOIN events AS e NOT INDEXED ON e."offset" = i."offset"
      WHERE i.stream = (SELECT id FROM streams WHERE name = ?1)
        AND i.version BETWEEN ?2 AND ?3 AND e.type IN ({placeholders}))
  + (SELECT count(*) FROM events NOT INDEXED
      WHERE "offset" > (SELECT indexed_through FROM stream_indexed WHERE singleton = 1)
        AND stream = ?1 AND stream_version BETWEEN ?2 AND ?3 AND type IN ({placeholders}))"#
    )
}

/// Events of stream `?1` with versions in `[?2, ?3]` (versions may have gaps once
/// retention removed some): indexed, then in the tail.
const COUNT_STREAM_VERSIONS_SQL: &str = r#"SELECT
    (SELECT count(*) FROM stream_index
      WHERE stream = (SELECT id FROM streams WHERE name = ?1) AND version BETWEEN ?2 AND ?3)
  + (SELECT count(*) FROM events NOT INDEXED
      WHERE "offset" > (SELECT indexed_through FROM stream_indexed WHERE singleton = 1)
        AND stream = ?1 AND stream_version BETWEEN ?2 AND ?3)"#;

/// Events with offsets in `[?1, ?2]` (offsets may have gaps once retention removed some).
const COUNT_OFFSET_RANGE_SQL: &str =
    r#"SELECT count(*) FROM events WHERE "offset" BETWEEN ?1 AND ?2"#;

/// Events of streams in `[?1, ?2)` with offsets in `[?3, ?4]`: the streams' indexed
/// entries in the range (every one of them is at or below the watermark), then the
/// tail above the watermark.
const COUNT_STREAM_RANGE_SQL: &str = r#"SELECT
    (SELECT count(*) FROM streams AS s CROSS JOIN stream_index AS i ON i.stream = s.id
      WHERE s.name >= ?1 AND s.name < ?2 AND i."offset" BETWEEN ?3 AND ?4)
  + (SELECT count(*) FROM events NOT INDEXED
      WHERE "offset" > max((SELECT indexed_through FROM stream_indexed WHERE singleton = 1), ?3 - 1)
        AND "offset" <= ?4 AND stream >= ?1 AND stream < ?2)"#;

/// Events of streams from `?1` on with offsets in `[?2, ?3]`, as above.
const COUNT_STREAM_FROM_SQL: &str = r#"SELECT
    (SELECT count(*) FROM streams AS s CROSS JOIN stream_index AS i ON i.stream = s.id
      WHERE s.name >= ?1 AND i."offset" BETWEEN ?2 AND ?3)
  + (SELECT count(*) FROM events NOT INDEXED
      WHERE "offset" > max((SELECT indexed_through FROM stream_indexed WHERE singleton = 1), ?2 - 1)
        AND "offset" <= ?3 AND stream >= ?1)"#;

/// What a page query's cursor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    /// Global offsets.
    Offset,
    /// Versions within the one stream the query is about.
    Version,
}

/// A query compiled to SQL.
///
/// The page SQL takes `?1` = the cursor (exclusive), `?2` = the window end (inclusive),
/// `?3` = the row limit, and then [`Plan::params`] from `?4` on.
#[derive(Debug)]
pub(super) struct Plan {
    /// What `?1`/`?2` count.
    pub(super) key: Key,
    /// The page query.
    pub(super) sql: String,
    /// Text parameters bound from `?4` on.
    pub(super) params: Vec<String>,
    /// Whether some filter is checked row by row, so pages are limited to windows of
    /// [`SCAN_WINDOW`] keys.
    pub(super) windowed: bool,
    /// For a type filter over offsets: the same page read as a sequential scan of the
    /// table in offset order, types checked per row, with the same parameters. It is
    /// cheaper than the merged index probes when most rows match (see
    /// [`LogReader::read_batch`](super::LogReader::read_batch)), and always windowed.
    pub(super) scan_sql: Option<String>,
    /// For [`Key::Version`] plans, the parameter that floors the tail's scan by offset:
    /// the offset of the last event read (every later version is above it), so paging
    /// through the tail scans it once rather than from the watermark on every page.
    pub(super) offset_floor_param: Option<usize>,
    /// The exact stream, for [`Key::Version`] plans.
    stream: Option<String>,
    /// Distinct types, sorted.
    types: Vec<String>,
    /// Disjoint `[lower, upper)` stream ranges, one per normalised prefix (`None` = no upper bound).
    prefixes: Vec<(String, Option<String>)>,
}

/// The part of the log a query covers, in [`Plan::key`] units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// Everything at or below this key has been visited (exclusive start).
    pub(super) cursor: u64,
    /// The last key to visit (inclusive).
    pub(super) end: u64,
}

impl Plan {
    /// Compiles `query`. Fails only on a query that cannot be answered (too many terms, an
    /// empty prefix list).
    pub(super) fn new(query: &ReadQuery) -> Result<Plan, LogError> {
        let mut types = query.types.clone();
        types.sort_unstable();
        types.dedup();
        if types.len() > MAX_FILTER_TERMS {
            return Err(LogError::InvalidQuery {
                reason: format!(
                    "{} event types given; at most {MAX_FILTER_TERMS} are allowed",
                    types.len()
                ),
            });
        }
        let (stream, prefixes) = match &query.stream {
            StreamFilter::Any => (None, Vec::new()),
            StreamFilter::Exact(stream) => (Some(stream.clone()), Vec::new()),
            StreamFilter::Prefixes(list) => (None, prefix_ranges(list)?),
        };

        let mut params = Vec::new();
        let mut sql = String::new();
        let mut scan_sql = None;
        let mut offset_floor_param = None;
        let (key, windowed) = if let Some(stream) = &stream {
            params.push(stream.clone());
            let (indexed_types, tail_types) = if types.is_empty() {
                (String::new(), String::new())
            } else {
                let first = params.len() + 4;
                params.extend(types.iter().cloned());
                let mut placeholders = String::new();
                push_placeholders(&mut placeholders, first, types.len());
                (
                    format!(" AND e.type IN ({placeholders})"),
                    format!(" AND type IN ({placeholders})"),
                )
            };
            let floor = params.len() + 4;
            offset_floor_param = Some(floor);
            // The indexed versions first, in key order, then the tail's, which are all
            // newer, in offset order (= version order within a stream). UNION ALL with a
            // LIMIT stops as soon as the page is full, so the tail is scanned only by a
            // page that reaches past the indexed versions (the constant term below
            // skips it when the page's range ends inside them). Each part orders itself
            // along the index it reads (no sort), so the page's order does not depend on
            // how SQLite chooses to scan (`reverse_unordered_selects` would reverse an
            // unordered one; tested in `read.rs`).
            sql.push_str(&format!(
                r#"SELECT * FROM (SELECT {JOINED_COLUMNS}
                     FROM stream_index AS i CROSS JOIN events AS e NOT INDEXED ON e."offset" = i."offset"
                     WHERE i.stream = (SELECT id FROM streams WHERE name = ?4)
                       AND i.version > ?1 AND i.version <= ?2{indexed_types}
                     ORDER BY i.version LIMIT ?3)
                   UNION ALL
                   SELECT * FROM (SELECT {COLUMNS} FROM events NOT INDEXED
                     WHERE "offset" > max((SELECT indexed_through FROM stream_indexed WHERE singleton = 1), ?{floor})
                       AND stream = ?4 AND stream_version > ?1 AND stream_version <= ?2{tail_types}
                       AND ?2 > coalesce((SELECT version FROM stream_index
                         WHERE stream = (SELECT id FROM streams WHERE name = ?4)
                         ORDER BY version DESC LIMIT 1), 0)
                     ORDER BY "offset" LIMIT ?3)
                   LIMIT ?3"#
            ));
            (Key::Version, !types.is_empty())
        } else {
            let residual = prefix_condition(&prefixes, 4, &mut params);
            if types.is_empty() {
                sql.push_str(&format!(
                    r#"SELECT {COLUMNS} FROM events NOT INDEXED WHERE "offset" > ?1 AND "offset" <= ?2{residual} ORDER BY "offset" LIMIT ?3"#
                ));
            } else {
                let first = params.len() + 4;
                params.extend(types.iter().cloned());
                let mut scan = format!(
                    r#"SELECT {COLUMNS} FROM events NOT INDEXED WHERE "offset" > ?1 AND "offset" <= ?2{residual} AND type IN ("#
                );
                push_placeholders(&mut scan, first, types.len());
                scan.push_str(r#") ORDER BY "offset" LIMIT ?3"#);
                scan_sql = Some(scan);
                let single = |n: usize| {
                    format!(
                        r#"SELECT {COLUMNS} FROM events INDEXED BY events_type_offset WHERE type = ?{n} AND "offset" > ?1 AND "offset" <= ?2{residual} ORDER BY "offset" LIMIT ?3"#
                    )
                };
                if types.len() == 1 {
                    sql.push_str(&single(first));
                } else {
                    // One ordered, limited probe per type, so a page costs O(types × page)
                    // however far the next match of a rare type is; then merge. The
                    // probes and the merge carry offsets only (read from the index
                    // alone unless a prefix needs the stream), and the page's rows are
                    // fetched by offset afterwards: merging whole rows copied and
                    // sorted `types × page` payloads to keep `page` of them (measured
                    // with three types: ~3x the cost per event of a replay's scan).
                    let probe = |n: usize| {
                        format!(
                            r#"SELECT "offset" FROM (SELECT "offset" FROM events INDEXED BY events_type_offset WHERE type = ?{n} AND "offset" > ?1 AND "offset" <= ?2{residual} ORDER BY "offset" LIMIT ?3)"#
                        )
                    };
                    let parts: Vec<String> = (0..types.len()).map(|i| probe(first + i)).collect();
                    sql.push_str(&format!(
                        r#"SELECT {COLUMNS} FROM events WHERE "offset" IN ({} ORDER BY 1 LIMIT ?3) ORDER BY "offset""#,
                        parts.join(" UNION ALL ")
                    ));
                }
            }
            (Key::Offset, !prefixes.is_empty())
        };
        Ok(Plan {
            key,
            sql,
            params,
            windowed,
            scan_sql,
            offset_floor_param,
            stream,
            types,
            prefixes,
        })
    }

    /// Turns the query's bounds into a [`Span`] of keys, as seen by `conn` (call it inside
    /// the read transaction that will use the span). `after` is an extra exclusive lower
    /// offset bound. `None`: nothing can match.
    pub(super) fn span(
        &self,
        conn: &Connection,
        query: &ReadQuery,
        after: u64,
        head: u64,
    ) -> rusqlite::Result<Option<Span>> {
        let Some((lo, hi)) = offset_bounds(conn, query, after, head)? else {
            return Ok(None);
        };
        match (self.key, &self.stream) {
            (Key::Version, Some(stream)) => version_bounds(conn, stream, lo, hi, head),
            _ => Ok(Some(Span {
                cursor: lo - 1,
                end: hi,
            })),
        }
    }

    /// Counts the events in `span`, each term answered from an index. `removed_through`
    /// is the retention horizon (0 when nothing was ever removed): below it, offsets and
    /// stream versions may have gaps, so ranges there are counted row by row.
    pub(super) fn count(
        &self,
        conn: &Connection,
        span: Span,
        removed_through: u64,
    ) -> rusqlite::Result<u64> {
        let (lo, hi) = (to_sql_int(span.cursor + 1), to_sql_int(span.end));
        // Offsets and stream versions are gap-free, so an unfiltered range counts itself.
        let whole_range = span.end - span.cursor;
        let query_count = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
            conn.prepare_cached(sql)?
                .query_row(params, |row| get_u64(row, 0))
        };
        match (self.key, &self.stream) {
            (Key::Version, Some(stream)) => {
                if self.types.is_empty() && removed_through > 0 {
                    return query_count(COUNT_STREAM_VERSIONS_SQL, &[stream, &lo, &hi]);
                }
                if self.types.is_empty() {
                    return Ok(whole_range);
                }
                let mut stmt = conn.prepare_cached(&count_stream_types_sql(self.types.len()))?;
                stmt.raw_bind_parameter(1, stream)?;
                stmt.raw_bind_parameter(2, lo)?;
                stmt.raw_bind_parameter(3, hi)?;
                for (i, ty) in self.types.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 4, ty)?;
                }
                let mut rows = stmt.raw_query();
                match rows.next()? {
                    Some(row) => get_u64(row, 0),
                    None => Ok(0),
                }
            }
            _ => match (self.types.is_empty(), self.prefixes.is_empty()) {
                (true, true) if span.cursor >= removed_through => Ok(whole_range),
                (true, true) => {
                    // Below the horizon, what remains; above it, the range counts itself.
                    let below_end = to_sql_int(span.end.min(removed_through));
                    let below = query_count(COUNT_OFFSET_RANGE_SQL, &[&lo, &below_end])?;
                    Ok(below + span.end.saturating_sub(removed_through))
                }
                (true, false) => {
                    let mut total = 0;
                    for (lower, upper) in &self.prefixes {
                        total += match upper {
                            Some(upper) => {
                                query_count(COUNT_STREAM_RANGE_SQL, &[lower, upper, &lo, &hi])?
                            }
                            None => query_count(COUNT_STREAM_FROM_SQL, &[lower, &lo, &hi])?,
                        };
                    }
                    Ok(total)
                }
                (false, _) => {
                    let (sql, params) = self.count_types_sql();
                    let mut total = 0;
                    for ty in &self.types {
                        let mut stmt = conn.prepare_cached(&sql)?;
                        stmt.raw_bind_parameter(1, ty)?;
                        stmt.raw_bind_parameter(2, lo)?;
                        stmt.raw_bind_parameter(3, hi)?;
                        for (i, p) in params.iter().enumerate() {
                            stmt.raw_bind_parameter(i + 4, p)?;
                        }
                        let mut rows = stmt.raw_query();
                        if let Some(row) = rows.next()? {
                            total += get_u64(row, 0)?;
                        }
                    }
                    Ok(total)
                }
            },
        }
    }
}

/// Events of type `?1` with offsets in `[?2, ?3]`, from the `(type, offset)` index alone.
const COUNT_TYPE_SQL: &str = r#"SELECT count(*) FROM events INDEXED BY events_type_offset
    WHERE type = ?1 AND "offset" BETWEEN ?2 AND ?3"#;

impl Plan {
    /// The subscribed types' share of the offsets in `[lo, hi]`: per-type counts from the
    /// `(type, offset)` index, so the cost is the matches in the range, not its rows.
    /// Stream prefixes are not counted in (they only make the share smaller).
    pub(super) fn type_density(
        &self,
        conn: &Connection,
        lo: u64,
        hi: u64,
    ) -> rusqlite::Result<f64> {
        if hi < lo {
            return Ok(0.0);
        }
        let mut matches = 0u64;
        for ty in &self.types {
            matches += conn.prepare_cached(COUNT_TYPE_SQL)?.query_row(
                rusqlite::params![ty, to_sql_int(lo), to_sql_int(hi)],
                |row| get_u64(row, 0),
            )?;
        }
        Ok(matches as f64 / (hi - lo + 1) as f64)
    }

    /// The count query for one type (`?1`) in offsets `[?2, ?3]`, with the prefix residual,
    /// and its parameters from `?4` on.
    fn count_types_sql(&self) -> (String, Vec<String>) {
        let mut params = Vec::new();
        let residual = prefix_condition(&self.prefixes, 4, &mut params);
        let sql = format!(
            r#"SELECT count(*) FROM events INDEXED BY events_type_offset
               WHERE type = ?1 AND "offset" BETWEEN ?2 AND ?3{residual}"#
        );
        (sql, params)
    }

    /// Every SQL statement reading `query` may run (probes, page query, count queries),
    /// for [`EventLog::explain`](super::EventLog::explain).
    pub(super) fn statements(&self, query: &ReadQuery) -> Vec<String> {
        let mut all = Vec::new();
        if query.from_time.is_some() || query.until_time.is_some() {
            all.push(RECORDED_AT_FROM_SQL.to_owned());
        }
        if self.stream.is_some() {
            all.extend(
                [
                    STREAM_ID_VERSION_SQL,
                    INDEXED_THROUGH_SQL,
                    INDEXED_MAX_VERSION_SQL,
                    INDEXED_VERSION_OFFSET_SQL,
                    TAIL_FIRST_VERSION_SQL,
                    TAIL_LAST_VERSION_SQL,
                ]
                .map(str::to_owned),
            );
        }
        all.push(self.sql.clone());
        all.extend(self.scan_sql.clone());
        match (
            &self.stream,
            self.types.is_empty(),
            self.prefixes.is_empty(),
        ) {
            (Some(_), false, _) => all.push(count_stream_types_sql(self.types.len())),
            (Some(_), true, _) => all.push(COUNT_STREAM_VERSIONS_SQL.to_owned()),
            (None, true, false) => {
                all.push(COUNT_STREAM_RANGE_SQL.to_owned());
                all.push(COUNT_STREAM_FROM_SQL.to_owned());
            }
            (None, false, _) => all.push(self.count_types_sql().0),
            _ => {}
        }
        all
    }
}

/// `(?first, ?first+1, ...)` placeholders, without the parentheses.
fn push_placeholders(sql: &mut String, first: usize, count: usize) {
    for i in 0..count {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("?{}", first + i));
    }
}

/// The residual stream-prefix condition (` AND (...)`, or empty), adding its parameters
/// to `params`, whose first element is SQL parameter `?first`. `+stream` keeps SQLite from
/// using any index for it: the plan has already chosen its driving index.
fn prefix_condition(
    prefixes: &[(String, Option<String>)],
    first: usize,
    params: &mut Vec<String>,
) -> String {
    if prefixes.is_empty() {
        return String::new();
    }
    let mut terms = Vec::with_capacity(prefixes.len());
    for (lower, upper) in prefixes {
        let lower_n = params.len() + first;
        params.push(lower.clone());
        match upper {
            Some(upper) => {
                let upper_n = params.len() + first;
                params.push(upper.clone());
                terms.push(format!("(+stream >= ?{lower_n} AND +stream < ?{upper_n})"));
            }
            None => terms.push(format!("+stream >= ?{lower_n}")),
        }
    }
    format!(" AND ({})", terms.join(" OR "))
}

/// Normalises prefixes into disjoint `[lower, upper)` ranges: sorted, deduplicated, and
/// without prefixes covered by a shorter one. An empty prefix matches everything, which
/// is no filter at all.
fn prefix_ranges(list: &[String]) -> Result<Vec<(String, Option<String>)>, LogError> {
    if list.is_empty() {
        return Err(LogError::InvalidQuery {
            reason: "StreamFilter::Prefixes needs at least one prefix; use StreamFilter::Any to match every stream".to_owned(),
        });
    }
    if list.len() > MAX_FILTER_TERMS {
        return Err(LogError::InvalidQuery {
            reason: format!(
                "{} stream prefixes given; at most {MAX_FILTER_TERMS} are allowed",
                list.len()
            ),
        });
    }
    let mut sorted: Vec<&String> = list.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut kept: Vec<&String> = Vec::with_capacity(sorted.len());
    for prefix in sorted {
        // Sorted order puts a prefix right before the strings it covers.
        if kept.last().is_some_and(|k| prefix.starts_with(k.as_str())) {
            continue;
        }
        kept.push(prefix);
    }
    if kept.first().is_some_and(|p| p.is_empty()) {
        return Ok(Vec::new());
    }
    Ok(kept
        .into_iter()
        .map(|p| (p.clone(), prefix_upper_bound(p)))
        .collect())
}

/// The smallest string greater than every string that starts with `prefix`, in byte-wise
/// (BINARY) order; `None` if there is none.
///
/// UTF-8 preserves code point order byte-wise, so incrementing the last code point does
/// it: every string in `[prefix, bound)` starts with `prefix`. The increment skips the
/// surrogate gap, and a last char of `char::MAX` is dropped and the one before it
/// incremented instead.
pub(super) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The query's offset range `[lo, hi]` (with `lo >= 1`, `hi <= head`), or `None` if empty.
pub(super) fn offset_bounds(
    conn: &Connection,
    query: &ReadQuery,
    after: u64,
    head: u64,
) -> rusqlite::Result<Option<(u64, u64)>> {
    let mut lo = query.from_offset.max(1).max(after.saturating_add(1));
    let mut hi = query.to_offset.map_or(head, |to| to.min(head));
    if lo > hi {
        return Ok(None);
    }
    if let Some(from) = query.from_time {
        // The first offset whose event is recorded at or after `from`: everything after
        // it is too.
        lo = first_recorded_at_or_after(conn, ceil_micros(from), lo, hi)?;
    }
    if let Some(until) = query.until_time {
        hi = first_recorded_at_or_after(conn, ceil_micros(until), lo, hi)?.saturating_sub(1);
    }
    Ok((lo <= hi).then_some((lo, hi)))
}

/// The first live event at or after offset `?1`.
const FIRST_LIVE_FROM_SQL: &str =
    r#"SELECT "offset" FROM events WHERE "offset" >= ?1 ORDER BY "offset" LIMIT 1"#;

/// The offset of the first live event at or after `offset`, if any: one rowid seek.
pub(super) fn first_live_at_or_after(
    conn: &Connection,
    offset: u64,
) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached(FIRST_LIVE_FROM_SQL)?
        .query_row([to_sql_int(offset)], |row| get_u64(row, 0))
        .optional()
}

/// Where a one-window read or count of `query` past `after` counts its window from:
/// the offset before the first live event that can match by offset alone (past the
/// query's time bound and any gap retention left). A window counted from `after` could
/// be spent on offsets that hold no row, and come back empty however near the first
/// match is.
pub(super) fn window_anchor(
    conn: &Connection,
    query: &ReadQuery,
    after: u64,
    head: u64,
) -> rusqlite::Result<u64> {
    let first = offset_bounds(conn, query, after, head)?.map_or(after + 1, |(lo, _)| lo);
    let first_live = first_live_at_or_after(conn, first)?.unwrap_or(first);
    Ok(after.max(first_live - 1))
}

/// The first offset in `[lo, hi]` at or after which every event is recorded at or after
/// `micros`; `hi + 1` if none is. A binary search over offsets, each probe one rowid
/// lookup of the first event at or after an offset (offsets may have gaps where
/// retention removed events): O(log² n) page reads, however the events are spread in
/// time.
pub(super) fn first_recorded_at_or_after(
    conn: &Connection,
    micros: i64,
    lo: u64,
    hi: u64,
) -> rusqlite::Result<u64> {
    let mut probe = conn.prepare_cached(RECORDED_AT_FROM_SQL)?;
    partition_point(lo, hi.saturating_add(1), |offset| {
        let recorded_at: Option<i64> = probe
            .query_row([to_sql_int(offset)], |row| row.get(0))
            .optional()?;
        // No event at or after `offset`: nothing there is before `micros`.
        Ok(recorded_at.is_some_and(|at| at < micros))
    })
}

/// Turns the offset range `[lo, hi]` into the versions of `stream` inside it. Offsets
/// grow with versions within a stream. Over the indexed versions a binary search (each
/// probe one lookup in `stream_index`) finds an end in O(log² n); an end in the tail
/// (above the watermark, `through`) is found by one bounded scan of it by offset.
fn version_bounds(
    conn: &Connection,
    stream: &str,
    lo: u64,
    hi: u64,
    head: u64,
) -> rusqlite::Result<Option<Span>> {
    let found: Option<(i64, u64)> = conn
        .prepare_cached(STREAM_ID_VERSION_SQL)?
        .query_row([stream], |row| Ok((row.get(0)?, get_u64(row, 1)?)))
        .optional()?;
    let Some((id, max_version)) = found else {
        return Ok(None);
    };
    let through = indexed_through(conn)?;
    let indexed_max: Option<u64> = conn
        .prepare_cached(INDEXED_MAX_VERSION_SQL)?
        .query_row([id], |row| get_u64(row, 0))
        .optional()?;
    // Every version below this is indexed; every version of the tail is at or above it.
    let past_indexed = indexed_max.map_or(1, |max| max + 1);
    let offset_of = |version: u64| -> rusqlite::Result<u64> {
        conn.prepare_cached(INDEXED_VERSION_OFFSET_SQL)?
            .query_row((id, to_sql_int(version)), |row| get_u64(row, 0))
    };
    // The first version whose offset is >= lo.
    let first = if lo <= 1 {
        1
    } else if lo <= through {
        // If no indexed version is at or after `lo`, the tail's versions all are.
        partition_point(1, past_indexed, |v| Ok(offset_of(v)? < lo))?
    } else {
        let first_in_tail: Option<u64> = conn
            .prepare_cached(TAIL_FIRST_VERSION_SQL)?
            .query_row((to_sql_int(lo), stream), |row| get_u64(row, 0))
            .optional()?;
        first_in_tail.unwrap_or(max_version + 1)
    };
    // One past the last version whose offset is <= hi.
    let past_last = if hi >= head {
        max_version + 1
    } else if hi > through {
        let last_in_tail: Option<u64> = conn
            .prepare_cached(TAIL_LAST_VERSION_SQL)?
            .query_row((to_sql_int(through), to_sql_int(hi), stream), |row| {
                get_u64(row, 0)
            })
            .optional()?;
        last_in_tail.map_or(past_indexed, |last| last + 1)
    } else {
        partition_point(first.min(past_indexed), past_indexed, |v| {
            Ok(offset_of(v)? <= hi)
        })?
    };
    Ok((first < past_last).then_some(Span {
        cursor: first - 1,
        end: past_last - 1,
    }))
}

/// The first `v` in `[lo, hi)` for which `pred(v)` is false, given that `pred` is true
/// then false along the range; `hi` if it is never false.
fn partition_point(
    mut lo: u64,
    mut hi: u64,
    mut pred: impl FnMut(u64) -> rusqlite::Result<bool>,
) -> rusqlite::Result<u64> {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// SQLite integers are i64; offsets and versions beyond that do not exist.
pub(super) fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads an offset, version or count column, which is never negative in a healthy log.
pub(super) fn get_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Integer,
            Box::new(e),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary search agrees with a plain filter on every bound, over offsets with
    /// gaps (retention removed some) and runs of equal times (one group's events).
    #[test]
    fn time_bounds_are_found_by_offset_over_gaps_and_equal_times() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            r#"CREATE TABLE events ("offset" INTEGER PRIMARY KEY, recorded_at INTEGER NOT NULL)"#,
        )
        .unwrap();
        let mut rows = Vec::new();
        let mut at = 1_000;
        for offset in 1..=300u64 {
            // Gaps: every offset divisible by 7, and 40..=90 whole.
            if offset % 7 == 0 || (40..=90).contains(&offset) {
                continue;
            }
            // Equal times in runs of up to 5, then a jump.
            if offset % 5 == 0 {
                at += (offset % 3) as i64 * 10 + 1;
            }
            rows.push((offset, at));
            conn.execute(
                r#"INSERT INTO events ("offset", recorded_at) VALUES (?1, ?2)"#,
                (to_sql_int(offset), at),
            )
            .unwrap();
        }
        for micros in 990..=at + 2 {
            for (lo, hi) in [(1, 300), (45, 200), (100, 101), (300, 300), (5, 4)] {
                let found = first_recorded_at_or_after(&conn, micros, lo, hi).unwrap();
                // The first offset in [lo, hi] from which every event is at or after
                // `micros`: one past the last event in range recorded before it.
                let want = rows
                    .iter()
                    .filter(|(offset, t)| (lo..=hi).contains(offset) && *t < micros)
                    .map(|(offset, _)| offset + 1)
                    .max()
                    .unwrap_or(lo)
                    .max(lo);
                let events_from = |from: u64| -> Vec<u64> {
                    rows.iter()
                        .map(|r| r.0)
                        .filter(|o| (from..=hi).contains(o))
                        .collect()
                };
                // Equal as event sets: offsets in a gap may differ.
                assert_eq!(
                    events_from(found),
                    events_from(want),
                    "micros {micros}, range [{lo}, {hi}]"
                );
            }
        }
    }

    #[test]
    fn prefix_upper_bounds() {
        assert_eq!(prefix_upper_bound("order-").as_deref(), Some("order."));
        assert_eq!(prefix_upper_bound("a\u{7f}").as_deref(), Some("a\u{80}"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_upper_bound("x\u{10FFFF}").as_deref(), Some("y"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound(""), None);
    }

    #[test]
    fn prefixes_are_normalised() {
        let list = ["ab", "a", "b", "b"].map(String::from);
        let ranges = prefix_ranges(&list).unwrap();
        assert_eq!(
            ranges,
            vec![
                ("a".to_owned(), Some("b".to_owned())),
                ("b".to_owned(), Some("c".to_owned()))
            ]
        );
        assert!(
            prefix_ranges(&[String::new(), "a".to_owned()])
                .unwrap()
                .is_empty()
        );
    }
}
