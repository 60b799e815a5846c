//! Golden fixtures, the test format every language shares (`refract test`).
//!
//! A fixture is `<stem>.jsonl`, events one per line in the shape `refract append --file`
//! takes, and `<stem>.expect.json` beside it: a JSON array of
//! `{"sql": "SELECT …", "rows": [[v, …], …]}`, rows as arrays in column order, values
//! as JSON integers, floats, strings and null (a blob is written `"x'0a1b'"`).
//!
//! [`run`] appends the events to a fresh temporary log, replays them through the real
//! component in the real sandbox into a temporary read model, runs each query and
//! compares rows exactly, in order. Integers compare exactly; a float matches any
//! number of the same value.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rusqlite::OpenFlags;
use rusqlite::types::ValueRef;
use serde::Deserialize;
use serde_json::Value;

use crate::engine::{BatchLimits, Projection, ProjectionError, Step};
use crate::log::jsonl::read_events;
use crate::log::{EventLog, LogOptions, NewEvent};
use crate::runtime::{DbOptions, LoadedProjector};

/// The suffix of a fixture's events file.
pub const EVENTS_SUFFIX: &str = ".jsonl";

/// The suffix of a fixture's expectations file, beside its events.
pub const EXPECT_SUFFIX: &str = ".expect.json";

/// Differing rows shown per query; the rest are counted.
pub const MAX_SHOWN_ROWS: usize = 10;

/// Why fixtures could not be found, read or run (as opposed to failing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// A fixture path does not exist, or names no fixture.
    #[error("{path}: {problem}")]
    NotFound {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file is not a valid fixture file.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when known.
        message: String,
    },
    /// The temporary log or read model failed: the host's fault, not the projector's.
    #[error("cannot run the fixture {path}: {message}")]
    Host {
        /// The fixture's events file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// One expected query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedQuery {
    /// The query, run read-only against the read model.
    pub sql: String,
    /// Its rows, in order, each an array of values in column order.
    pub rows: Vec<Vec<Value>>,
}

/// A fixture, read.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The events file.
    pub events_path: PathBuf,
    /// The expectations file.
    pub expect_path: PathBuf,
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// The queries and their expected rows.
    pub queries: Vec<ExpectedQuery>,
}

/// What running a fixture showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every query returned its expected rows.
    Passed {
        /// Queries checked.
        queries: usize,
    },
    /// Some queries returned other rows (or failed).
    Mismatch(Vec<QueryMismatch>),
    /// The projector failed: a handler error or a trap.
    GuestFailed {
        /// The exact event, when known.
        offset: Option<u64>,
        /// The host's message (language-neutral, with the guest's last stderr lines).
        message: String,
    },
}

impl Outcome {
    /// Whether the fixture passed.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed { .. })
    }
}

/// A query whose rows differ from the expected ones.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMismatch {
    /// Its position in the expectations file, from 1.
    pub index: usize,
    /// The query.
    pub sql: String,
    /// How many rows were expected.
    pub expected_rows: usize,
    /// How many came back (0 when it failed).
    pub actual_rows: usize,
    /// The rows that differ, by position, up to [`MAX_SHOWN_ROWS`].
    pub differing: Vec<RowDiff>,
    /// How many rows differ in all.
    pub differing_total: usize,
    /// The query's own error, when it failed (a missing table, bad SQL).
    pub error: Option<String>,
}

/// One differing row: what was expected and what came back at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct RowDiff {
    /// The row's position, from 1.
    pub row: usize,
    /// The expected row, if there was one at that position.
    pub expected: Option<Vec<Value>>,
    /// The actual row, if there was one.
    pub actual: Option<Vec<Value>>,
}

/// The fixtures named by `paths`: `.jsonl` files, or folders searched (not recursively)
/// for `*.jsonl`, in name order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FixtureError> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| FixtureError::Read {
                path: path.clone(),
                source,
            })?;
            let mut here: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|file| file.is_file() && has_suffix(file, EVENTS_SUFFIX))
                .collect();
            if here.is_empty() {
                return Err(FixtureError::NotFound {
                    path: path.clone(),
                    problem: format!("no `*{EVENTS_SUFFIX}` fixture in this folder"),
                });
            }
            here.sort();
            found.extend(here);
        } else if path.is_file() {
            found.push(path.clone());
        } else {
            return Err(FixtureError::NotFound {
                path: path.clone(),
                problem: "no such file or folder".into(),
            });
        }
    }
    Ok(found)
}

fn has_suffix(path: &Path, suffix: &str) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(suffix) && name.len() > suffix.len())
}

/// Reads the fixture whose events are `events_path` (`<stem>.jsonl`) and whose
/// expectations are `<stem>.expect.json` beside it.
pub fn load(events_path: &Path) -> Result<Fixture, FixtureError> {
    let name = events_path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let Some(stem) = name.strip_suffix(EVENTS_SUFFIX).filter(|s| !s.is_empty()) else {
        return Err(FixtureError::NotFound {
            path: events_path.to_owned(),
            problem: format!("a fixture's events file is named `<stem>{EVENTS_SUFFIX}`"),
        });
    };
    let expect_path = events_path.with_file_name(format!("{stem}{EXPECT_SUFFIX}"));
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| FixtureError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let events_text = read(events_path)?;
    let events = read_events(
        events_text.as_slice(),
        &format!("`{}`", events_path.display()),
    )
    .map_err(|error| FixtureError::Invalid {
        path: events_path.to_owned(),
        message: format!("line {}: {}", error.line, error.message),
    })?
    .events;
    if !expect_path.is_file() {
        return Err(FixtureError::NotFound {
            path: expect_path,
            problem: "every fixture needs its expectations beside its events: a JSON array of {\"sql\": \"SELECT …\", \"rows\": [[…], …]}".to_owned(),
        });
    }
    let queries: Vec<ExpectedQuery> =
        serde_json::from_slice(&read(&expect_path)?).map_err(|error| FixtureError::Invalid {
            path: expect_path.clone(),
            message: format!(
                "{error}; expected a JSON array of {{\"sql\": \"SELECT …\", \"rows\": [[…], …]}}"
            ),
        })?;
    if queries.is_empty() {
        return Err(FixtureError::Invalid {
            path: expect_path,
            message: "no queries: a fixture checks at least one".into(),
        });
    }
    for (index, query) in queries.iter().enumerate() {
        if let Some(value) = query
            .rows
            .iter()
            .flatten()
            .find(|value| matches!(value, Value::Array(_) | Value::Object(_) | Value::Bool(_)))
        {
            return Err(FixtureError::Invalid {
                path: expect_path,
                message: format!(
                    "query {}: the value {value} cannot come from SQLite; use integers, floats, strings and null",
                    index + 1
                ),
            });
        }
    }
    Ok(Fixture {
        events_path: events_path.to_owned(),
        expect_path,
        events,
        queries,
    })
}

/// Runs `fixture` through `loaded` in a fresh temporary log and read model under
/// `scratch` (which must be an empty folder), in batches of `batch`.
pub fn run(
    loaded: &LoadedProjector,
    fixture: &Fixture,
    scratch: &Path,
    batch: BatchLimits,
) -> Result<Outcome, FixtureError> {
    let host = |message: String| FixtureError::Host {
        path: fixture.events_path.clone(),
        message,
    };
    let log = EventLog::open(&scratch.join("events.db"), LogOptions::default())
        .map_err(|e| host(format!("the temporary log: {e}")))?;
    if !fixture.events.is_empty() {
        log.append(fixture.events.clone())
            .map_err(|error| FixtureError::Invalid {
                path: fixture.events_path.clone(),
                message: format!("the log refused the events: {error}"),
            })?;
    }
    let head = log.head().map_err(|e| host(e.to_string()))?;
    let db_path = scratch.join("read-model.db");
    let reader = log.reader().map_err(|e| host(e.to_string()))?;
    let mut projection =
        match Projection::open(loaded.clone(), &db_path, DbOptions::replay(), reader, batch) {
            Ok(projection) => projection,
            Err(error) => return guest_or_host(&error, None, &host),
        };
    let mut narrowing = false;
    loop {
        match projection.step(Some(head)) {
            Ok(Step::CaughtUp) => break,
            Ok(_) => {}
            Err(ProjectionError::Projector(error)) if error.is_poison() => {
                let offset = error.offset();
                if offset.is_some() || narrowing {
                    return Ok(Outcome::GuestFailed {
                        offset,
                        message: error.to_string(),
                    });
                }
                // A trap in a batch of several events does not say which one: replay
                // the batch one event at a time, as the engine does, to name it.
                narrowing = true;
                projection.set_limits(BatchLimits {
                    max_events: 1,
                    ..batch
                });
            }
            Err(error) => return guest_or_host(&error, projection.last_batch(), &host),
        }
    }
    drop(projection);
    compare(&db_path, &fixture.queries).map_err(|e| host(format!("the read model: {e}")))
}

/// A projection error outside the step loop: the guest's when it is poison (init failed,
/// the instance would not start), the host's otherwise.
fn guest_or_host(
    error: &ProjectionError,
    batch: Option<(u64, u64)>,
    host: &impl Fn(String) -> FixtureError,
) -> Result<Outcome, FixtureError> {
    let guest = match error {
        ProjectionError::Projector(projector) => projector.is_poison(),
        ProjectionError::Runtime(runtime) => runtime.is_guest_fault(),
        _ => false,
    };
    if guest {
        let offset = match error {
            ProjectionError::Projector(projector) => projector.offset(),
            _ => None,
        }
        .or_else(|| {
            batch
                .filter(|(first, last)| first == last)
                .map(|(first, _)| first)
        });
        Ok(Outcome::GuestFailed {
            offset,
            message: error.to_string(),
        })
    } else {
        Err(host(error.to_string()))
    }
}

/// Runs every query read-only and compares its rows with the expected ones.
fn compare(db_path: &Path, queries: &[ExpectedQuery]) -> rusqlite::Result<Outcome> {
    let conn = rusqlite::Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut mismatches = Vec::new();
    for (index, query) in queries.iter().enumerate() {
        let mismatch = |actual_rows, differing: Vec<RowDiff>, total, error| QueryMismatch {
            index: index + 1,
            sql: query.sql.clone(),
            expected_rows: query.rows.len(),
            actual_rows,
            differing,
            differing_total: total,
            error,
        };
        let actual = match rows(&conn, &query.sql) {
            Ok(actual) => actual,
            Err(error) => {
                mismatches.push(mismatch(0, Vec::new(), 0, Some(error.to_string())));
                continue;
            }
        };
        let positions = query.rows.len().max(actual.len());
        let mut differing = Vec::new();
        let mut total = 0;
        for position in 0..positions {
            let (expected, got) = (query.rows.get(position), actual.get(position));
            let same = match (expected, got) {
                (Some(expected), Some(got)) => rows_match(expected, got),
                _ => false,
            };
            if !same {
                total += 1;
                if differing.len() < MAX_SHOWN_ROWS {
                    differing.push(RowDiff {
                        row: position + 1,
                        expected: expected.cloned(),
                        actual: got.cloned(),
                    });
                }
            }
        }
        if total > 0 {
            mismatches.push(mismatch(actual.len(), differing, total, None));
        }
    }
    Ok(if mismatches.is_empty() {
        Outcome::Passed {
            queries: queries.len(),
        }
    } else {
        Outcome::Mismatch(mismatches)
    })
}

/// A query's rows as JSON values.
fn rows(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut statement = conn.prepare(sql)?;
    let columns = statement.column_count();
    let rows = statement.query_map([], |row| {
        (0..columns)
            .map(|index| row.get_ref(index).map(to_json))
            .collect()
    })?;
    rows.collect()
}

fn to_json(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(text) => Value::from(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(blob) => Value::from(format!("x'{}'", hex::encode(blob))),
    }
}

fn rows_match(expected: &[Value], actual: &[Value]) -> bool {
    expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(expected, actual)| values_match(expected, actual))
}

/// Integers exactly; a float matches any number of the same value.
fn values_match(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(e), Value::Number(a)) if e.is_f64() || a.is_f64() => {
            e.as_f64() == a.as_f64()
        }
        _ => expected == actual,
    }
}

/// A failed fixture, for people: per query, the counts and only the rows that differ.
pub fn render_failure(outcome: &Outcome) -> String {
    let mut out = String::new();
    match outcome {
        Outcome::Passed { .. } => {}
        Outcome::GuestFailed { offset, message } => {
            let at = offset.map_or_else(String::new, |offset| format!(" at offset {offset}"));
            let _ = writeln!(out, "  the projector failed{at}:");
            let _ = writeln!(out, "    {message}");
        }
        Outcome::Mismatch(mismatches) => {
            for mismatch in mismatches {
                let _ = writeln!(
                    out,
                    "  query {}: {}",
                    mismatch.index,
                    one_line(&mismatch.sql)
                );
                if let Some(error) = &mismatch.error {
                    let _ = writeln!(out, "    the query failed: {error}");
                    continue;
                }
                let _ = writeln!(
                    out,
                    "    expected {} row{}, got {}; {} differ{}:",
                    mismatch.expected_rows,
                    plural(mismatch.expected_rows),
                    mismatch.actual_rows,
                    mismatch.differing_total,
                    if mismatch.differing_total == 1 {
                        "s"
                    } else {
                        ""
                    }
                );
                for diff in &mismatch.differing {
                    let show = |row: &Option<Vec<Value>>| {
                        row.as_ref().map_or_else(
                            || "(no row)".to_owned(),
                            |row| Value::Array(row.clone()).to_string(),
                        )
                    };
                    let _ = writeln!(out, "    row {}", diff.row);
                    let _ = writeln!(out, "      expected: {}", show(&diff.expected));
                    let _ = writeln!(out, "      actual:   {}", show(&diff.actual));
                }
                let hidden = mismatch.differing_total - mismatch.differing.len();
                if hidden > 0 {
                    let _ = writeln!(out, "    … and {hidden} more differing rows");
                }
            }
        }
    }
    out
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read_model(sql: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rm.db");
        rusqlite::Connection::open(&path)
            .and_then(|conn| conn.execute_batch(sql))
            .expect("built");
        (dir, path)
    }

    fn expect(sql: &str, rows: &Value) -> ExpectedQuery {
        serde_json::from_value(json!({"sql": sql, "rows": rows})).expect("valid")
    }

    #[test]
    fn equal_rows_pass_and_floats_match_numbers() {
        let (_dir, db) = read_model(
            "CREATE TABLE t(k TEXT, n INTEGER, f REAL, z); INSERT INTO t VALUES ('a', 1, 2.0, NULL);",
        );
        let outcome = compare(
            &db,
            &[expect("SELECT * FROM t", &json!([["a", 1, 2, null]]))],
        )
        .expect("ran");
        assert_eq!(outcome, Outcome::Passed { queries: 1 });
    }

    #[test]
    fn only_differing_rows_are_reported_with_counts() {
        let (_dir, db) = read_model(
            "CREATE TABLE t(k TEXT, n INTEGER); INSERT INTO t VALUES ('a', 1), ('b', 2), ('c', 3);",
        );
        let outcome = compare(
            &db,
            &[
                expect(
                    "SELECT * FROM t ORDER BY k",
                    &json!([["a", 1], ["b", 20], ["c", 3], ["d", 4]]),
                ),
                expect("SELECT * FROM missing", &json!([])),
            ],
        )
        .expect("ran");
        let Outcome::Mismatch(mismatches) = &outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(mismatches[0].expected_rows, 4);
        assert_eq!(mismatches[0].actual_rows, 3);
        assert_eq!(mismatches[0].differing_total, 2);
        assert_eq!(mismatches[0].differing[0].row, 2);
        assert!(
            mismatches[1]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("missing"))
        );
        let text = render_failure(&outcome);
        assert!(text.contains("expected 4 rows, got 3; 2 differ:"), "{text}");
        assert!(text.contains("expected: [\"b\",20]"), "{text}");
        assert!(text.contains("actual:   [\"b\",2]"), "{text}");
        assert!(text.contains("actual:   (no row)"), "{text}");
        assert!(
            !text.contains("[\"a\",1]"),
            "equal rows are not shown: {text}"
        );
    }
}
