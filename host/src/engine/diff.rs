//! Comparing two read models: table by table for `refract diff` (row counts, a content
//! checksum, and a sample of the rows only one side has), and the diff gate an
//! automatic swap must pass.

use std::fs;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::fallible_iterator::FallibleIterator as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::version_files::open_read_only;

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

/// Compares every projector table (not SQLite's, not the host's `_refract_` tables)
/// of `base` and `other`, both opened read-only.
pub fn compare(base: &Path, other: &Path, sample: usize) -> rusqlite::Result<Vec<TableDiff>> {
    let conn = open_read_only(base)?;
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

    fn db(dir: &Path, name: &str, sql: &str) -> std::path::PathBuf {
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
}
