//! Comparing two read models table by table, for `refract diff` and
//! `GET /v1/projectors/{name}/diff`: row counts, a content checksum, a sample of the
//! rows only one side has, and the projector's diff gate, which an automatic swap
//! must pass and which can be run on any pair.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::fallible_iterator::FallibleIterator as _;
use rusqlite::{Connection, ErrorCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::data_dir::DataDir;
use crate::engine::control::{Control, ControlError, Role};
use crate::engine::version_files::open_read_only;

/// How often (in SQLite VM instructions) a comparison with a deadline checks the clock.
const DEADLINE_CHECK_OPS: std::ffi::c_int = 10_000;

/// One table compared across two read models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// Rows in the base read model, or `None` if it has no such table.
    pub base_rows: Option<u64>,
    /// Rows in the other read model, or `None` if it has no such table.
    pub other_rows: Option<u64>,
    /// A checksum of the base table's content, independent of row order.
    pub base_checksum: Option<String>,
    /// The same for the other table.
    pub other_checksum: Option<String>,
    /// The tables' columns differ, so rows are not compared one by one.
    pub schema_differs: bool,
    /// Up to the sample size, rows only the base has, as SQL literals.
    pub only_in_base: Vec<Vec<String>>,
    /// Up to the sample size, rows only the other has.
    pub only_in_other: Vec<Vec<String>>,
}

impl TableDiff {
    /// Whether both sides hold the same rows.
    pub fn same(&self) -> bool {
        self.base_checksum.is_some()
            && self.base_checksum == self.other_checksum
            && !self.schema_differs
    }
}

/// One side of a [`VersionDiff`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComparedVersion {
    /// The version's short content hash.
    pub version: String,
    /// Its role when compared.
    pub role: Role,
}

/// What the projector's diff gate (`projectors.<name>.diff_gate`) says about the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateVerdict {
    /// The gate's SQL file.
    pub file: PathBuf,
    /// No assertion returned a violating row.
    pub passed: bool,
    /// Why it refused (the assertion and its first violating row), when it did.
    pub reason: Option<String>,
}

/// A projector's version compared with its active version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionDiff {
    /// The projector.
    pub projector: String,
    /// The active version, the base of the comparison.
    pub base: ComparedVersion,
    /// The version compared with it: the shadow, the previous version, or the one named.
    pub other: ComparedVersion,
    /// Every table, by name.
    pub tables: Vec<TableDiff>,
    /// The diff gate's verdict on swapping `other` in, when the projector has a gate.
    pub gate: Option<GateVerdict>,
}

/// What to compare, for [`diff_versions`].
#[derive(Debug, Clone, Default)]
pub struct DiffRequest<'a> {
    /// The projector.
    pub projector: &'a str,
    /// The version to compare with the active one; by default the shadow, else the
    /// previous version.
    pub version: Option<&'a str>,
    /// Differing rows to sample per table and side.
    pub sample: usize,
    /// The projector's diff gate file, if it has one.
    pub gate: Option<&'a Path>,
    /// Give up (with [`DiffError::TimedOut`]) if the comparison runs past this.
    pub deadline: Option<Instant>,
}

/// Why two versions could not be compared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// No projector of that name has ever been deployed.
    #[error("no projector named `{0}`; `refract status` lists the projectors")]
    UnknownProjector(String),
    /// The projector has no active version to compare with.
    #[error("projector `{0}` has no active version to compare with")]
    NoActiveVersion(String),
    /// No version was named and the projector has neither a shadow nor a previous version.
    #[error("projector `{0}` has no shadow or previous version; name the version to compare")]
    NothingToCompare(String),
    /// The named version is not one of the projector's.
    #[error("projector `{projector}` has no version `{version}`")]
    UnknownVersion {
        /// The projector.
        projector: String,
        /// The version asked for.
        version: String,
    },
    /// The version's read model is gone (an old version, pruned by `keep_versions`).
    #[error("the read model of version {version} was deleted ({})", path.display())]
    Deleted {
        /// The version.
        version: String,
        /// Where its read model was.
        path: PathBuf,
    },
    /// The comparison ran past its deadline.
    #[error("the comparison took too long and was stopped; compare fewer or smaller tables")]
    TimedOut,
    /// `control.db` failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A read model could not be read.
    #[error("cannot compare {} with {}: {source}", base.display(), other.display())]
    Sqlite {
        /// The active version's read model.
        base: PathBuf,
        /// The other read model.
        other: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// Compares a projector's version (by default its shadow, else its previous version)
/// with its active version, reading `control.db` and both read models read-only, and
/// runs the projector's diff gate on the pair.
pub fn diff_versions(data: &DataDir, request: &DiffRequest<'_>) -> Result<VersionDiff, DiffError> {
    let name = request.projector;
    if !data.control_db().exists() {
        return Err(DiffError::UnknownProjector(name.to_owned()));
    }
    let versions = Control::open(&data.control_db())?.versions_of(name)?;
    if versions.is_empty() {
        return Err(DiffError::UnknownProjector(name.to_owned()));
    }
    let active = versions
        .iter()
        .find(|record| record.role == Role::Active)
        .ok_or_else(|| DiffError::NoActiveVersion(name.to_owned()))?;
    let other = match request.version {
        Some(version) => versions
            .iter()
            .find(|record| record.version == version)
            .ok_or_else(|| DiffError::UnknownVersion {
                projector: name.to_owned(),
                version: version.to_owned(),
            })?,
        None => versions
            .iter()
            .find(|record| record.role == Role::Shadow)
            .or_else(|| versions.iter().find(|record| record.role == Role::Previous))
            .ok_or_else(|| DiffError::NothingToCompare(name.to_owned()))?,
    };
    let base_db = data.version_db(name, &active.version);
    let other_db = data.version_db(name, &other.version);
    for (version, path) in [(&active.version, &base_db), (&other.version, &other_db)] {
        if !path.exists() {
            return Err(DiffError::Deleted {
                version: version.clone(),
                path: path.clone(),
            });
        }
    }
    let tables =
        compare_until(&base_db, &other_db, request.sample, request.deadline).map_err(|source| {
            match source.sqlite_error_code() {
                Some(ErrorCode::OperationInterrupted) => DiffError::TimedOut,
                _ => DiffError::Sqlite {
                    base: base_db.clone(),
                    other: other_db.clone(),
                    source,
                },
            }
        })?;
    let gate = request.gate.map(|file| {
        let verdict = run_gate(file, &other_db, Some(&base_db));
        GateVerdict {
            file: file.to_owned(),
            passed: verdict.is_ok(),
            reason: verdict.err(),
        }
    });
    Ok(VersionDiff {
        projector: name.to_owned(),
        base: ComparedVersion {
            version: active.version.clone(),
            role: active.role,
        },
        other: ComparedVersion {
            version: other.version.clone(),
            role: other.role,
        },
        tables,
        gate,
    })
}

/// Compares every projector table (not SQLite's, not the host's `_refract_` tables)
/// of `base` and `other`, both opened read-only.
pub fn compare(base: &Path, other: &Path, sample: usize) -> rusqlite::Result<Vec<TableDiff>> {
    compare_until(base, other, sample, None)
}

/// [`compare`], interrupted (SQLite's `OperationInterrupted`) once past `deadline`.
pub fn compare_until(
    base: &Path,
    other: &Path,
    sample: usize,
    deadline: Option<Instant>,
) -> rusqlite::Result<Vec<TableDiff>> {
    let mut conn = open_read_only(base)?;
    if let Some(deadline) = deadline {
        conn.progress_handler(DEADLINE_CHECK_OPS, Some(move || Instant::now() >= deadline))?;
    }
    conn.execute("ATTACH DATABASE ?1 AS other", [read_only_uri(other)])?;
    let mut tables = table_names(&conn, "main")?;
    for table in table_names(&conn, "other")? {
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    tables.sort();
    let mut diffs = Vec::new();
    for table in tables {
        let base_columns = columns(&conn, "main", &table)?;
        let other_columns = columns(&conn, "other", &table)?;
        let side =
            |schema: &str, columns: &[String]| -> rusqlite::Result<(Option<u64>, Option<String>)> {
                if columns.is_empty() {
                    return Ok((None, None));
                }
                let (rows, checksum) = checksum(&conn, schema, &table, columns.len())?;
                Ok((Some(rows), Some(checksum)))
            };
        let (base_rows, base_checksum) = side("main", &base_columns)?;
        let (other_rows, other_checksum) = side("other", &other_columns)?;
        let schema_differs = base_columns != other_columns;
        let (only_in_base, only_in_other) = if schema_differs || base_checksum == other_checksum {
            (Vec::new(), Vec::new())
        } else {
            (
                except(&conn, "main", "other", &table, sample)?,
                except(&conn, "other", "main", &table, sample)?,
            )
        };
        diffs.push(TableDiff {
            table,
            base_rows,
            other_rows,
            base_checksum,
            other_checksum,
            schema_differs,
            only_in_base,
            only_in_other,
        });
    }
    Ok(diffs)
}

fn table_names(conn: &Connection, schema: &str) -> rusqlite::Result<Vec<String>> {
    let sql = format!(
        "SELECT name FROM {schema}.sqlite_schema WHERE type = 'table'
           AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_refract\\_%' ESCAPE '\\'
         ORDER BY name"
    );
    let mut statement = conn.prepare(&sql)?;
    let names = statement.query_map([], |row| row.get(0))?;
    names.collect()
}

fn columns(conn: &Connection, schema: &str, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare(&format!("PRAGMA {schema}.table_info({})", quote(table)))?;
    let names = statement.query_map([], |row| row.get(1))?;
    names.collect()
}

/// Row count and a sha256 over the rows sorted by every column, so two tables with
/// the same rows inserted in a different order agree.
fn checksum(
    conn: &Connection,
    schema: &str,
    table: &str,
    columns: usize,
) -> rusqlite::Result<(u64, String)> {
    let order: Vec<String> = (1..=columns).map(|index| index.to_string()).collect();
    let sql = format!(
        "SELECT * FROM {schema}.{} ORDER BY {}",
        quote(table),
        order.join(", ")
    );
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query([])?;
    let mut hasher = Sha256::new();
    let mut count = 0;
    while let Some(row) = rows.next()? {
        count += 1;
        for index in 0..columns {
            // The literal form carries the type (quotes for text, x'' for blobs).
            hasher.update(value_text(row.get_ref(index)?).as_bytes());
            hasher.update([0x1f]);
        }
        hasher.update([0x1e]);
    }
    Ok((count, hex::encode(hasher.finalize())))
}

fn except(
    conn: &Connection,
    left: &str,
    right: &str,
    table: &str,
    limit: usize,
) -> rusqlite::Result<Vec<Vec<String>>> {
    let table = quote(table);
    let sql =
        format!("SELECT * FROM {left}.{table} EXCEPT SELECT * FROM {right}.{table} LIMIT {limit}");
    let mut statement = conn.prepare(&sql)?;
    let columns = statement.column_count();
    let rows = statement.query_map([], |row| {
        (0..columns)
            .map(|index| row.get_ref(index).map(value_text))
            .collect()
    })?;
    rows.collect()
}

/// A SQL identifier, double-quoted.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Runs a diff gate: every statement in the file is a query returning the rows that
/// violate an assertion, run read-only against the shadow with the active read model
/// attached as `active`. Passes when no query returns a row.
pub(crate) fn run_gate(
    gate: &Path,
    shadow_db: &Path,
    active_db: Option<&Path>,
) -> Result<(), String> {
    let sql = fs::read_to_string(gate)
        .map_err(|error| format!("cannot read {}: {error}", gate.display()))?;
    let conn =
        open_read_only(shadow_db).map_err(|error| format!("cannot open the shadow: {error}"))?;
    if let Some(active) = active_db {
        conn.execute("ATTACH DATABASE ?1 AS active", [read_only_uri(active)])
            .map_err(|error| format!("cannot attach the active read model: {error}"))?;
    }
    let mut statements = rusqlite::Batch::new(&conn, &sql);
    let mut index = 0;
    while let Some(mut statement) = statements
        .next()
        .map_err(|error| format!("assertion {}: {error}", index + 1))?
    {
        index += 1;
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        if let Some(row) = rows
            .next()
            .map_err(|error| format!("assertion {index}: {error}"))?
        {
            let first = (0..columns)
                .map(|column| row.get_ref(column).map_or_else(|_| "?".into(), value_text))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "assertion {index} returned a violating row ({first})"
            ));
        }
    }
    Ok(())
}

/// A `file:` URI that opens `path` read-only when attached.
pub(crate) fn read_only_uri(path: &Path) -> String {
    // In a URI, `%`, `?` and `#` in the path must be escaped.
    let path = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{path}?mode=ro")
}

/// A SQL value as short text, for messages.
pub(crate) fn value_text(value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(text) => format!("'{}'", String::from_utf8_lossy(text)),
        ValueRef::Blob(blob) => format!("x'{}'", hex::encode(blob)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path, name: &str, sql: &str) -> PathBuf {
        let path = dir.join(name);
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        path
    }

    #[test]
    fn same_rows_in_another_order_are_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let a = db(
            dir.path(),
            "a.db",
            "CREATE TABLE t(k, v); INSERT INTO t VALUES (1,'x'),(2,'y');
             CREATE TABLE _refract_checkpoint(x); INSERT INTO _refract_checkpoint VALUES (1);",
        );
        let b = db(
            dir.path(),
            "b.db",
            "CREATE TABLE t(k, v); INSERT INTO t VALUES (2,'y'),(1,'x');
             CREATE TABLE _refract_checkpoint(x); INSERT INTO _refract_checkpoint VALUES (2);",
        );
        let diffs = compare(&a, &b, 5).unwrap();
        assert_eq!(diffs.len(), 1, "host tables are not compared");
        assert!(diffs[0].same());
        assert_eq!(diffs[0].base_rows, Some(2));
    }

    #[test]
    fn differences_are_counted_and_sampled() {
        let dir = tempfile::tempdir().unwrap();
        let a = db(
            dir.path(),
            "a.db",
            "CREATE TABLE cars(id, name); INSERT INTO cars VALUES ('h','Bob'),('t',NULL);
             CREATE TABLE gone(x);",
        );
        let b = db(
            dir.path(),
            "b.db",
            "CREATE TABLE cars(id, name); INSERT INTO cars VALUES ('h','Charlie'),('t',NULL);
             CREATE TABLE added(y); CREATE TABLE \"we\"\"ird\"(z);",
        );
        let diffs = compare(&a, &b, 5).unwrap();
        let names: Vec<&str> = diffs.iter().map(|diff| diff.table.as_str()).collect();
        assert_eq!(names, ["added", "cars", "gone", "we\"ird"]);
        let cars = &diffs[1];
        assert!(!cars.same());
        assert_eq!(cars.only_in_base, [["'h'", "'Bob'"]]);
        assert_eq!(cars.only_in_other, [["'h'", "'Charlie'"]]);
        assert_eq!(diffs[0].base_rows, None);
        assert_eq!(diffs[2].other_rows, None);
        assert!(diffs[2].schema_differs);
    }

    #[test]
    fn a_comparison_past_its_deadline_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let rows =
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)";
        let a = db(
            dir.path(),
            "a.db",
            &format!("CREATE TABLE t(k); INSERT INTO t {rows} SELECT i FROM n;"),
        );
        let b = db(dir.path(), "b.db", "CREATE TABLE t(k);");
        let error = compare_until(&a, &b, 5, Some(Instant::now())).unwrap_err();
        assert_eq!(
            error.sqlite_error_code(),
            Some(ErrorCode::OperationInterrupted),
            "{error}"
        );
        assert_eq!(
            compare_until(&a, &b, 5, None).unwrap()[0].base_rows,
            Some(50000)
        );
    }
}
