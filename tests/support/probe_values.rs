//! What the TypeScript and Python probes (`tests/fixtures/ts-probe`,
//! `tests/fixtures/py-probe`) write into their `vals (seq, v)` table through
//! `execute-packed`, and the checks that read it back from the read model. Both probes
//! write the same SQL values, each from its own language's types, so one list of
//! expectations serves both SDKs.

use rusqlite::Connection;
use rusqlite::types::Value;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The probes' `vals` rows with `seq` in `range`, as `(seq, value)`.
pub fn vals(conn: &Connection, range: std::ops::Range<i64>) -> Result<Vec<(i64, Value)>> {
    let mut statement =
        conn.prepare("SELECT seq, v FROM vals WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")?;
    let rows = statement.query_map([range.start, range.end], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A value with reals as their bits, so that `-0.0` and `0.0` differ and NaN equals
/// itself.
fn exact(value: &Value) -> String {
    match value {
        Value::Real(real) => format!("Real({:#018x})", real.to_bits()),
        other => format!("{other:?}"),
    }
}

/// What the `values` event writes, by `seq`: every value stored with its exact type and
/// bits. NaN is stored as NULL, which is SQLite's own rule for binding a NaN.
pub fn expected_values() -> Vec<(i64, Value)> {
    let text = "Zoë \"Z\" O'Neil 🎉 日本語 \u{0} end";
    [
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer((1 << 53) + 2),
        Value::Integer(-1),
        Value::Integer(1),
        Value::Real(-0.0),
        Value::Real(0.0),
        Value::Real(1e308),
        Value::Real(-1.5e-300),
        Value::Real(5e-324),
        Value::Real(f64::INFINITY),
        Value::Real(f64::NEG_INFINITY),
        Value::Null,
        Value::Text(String::new()),
        Value::Text(text.to_owned()),
        Value::Blob(Vec::new()),
        Value::Blob(vec![0, 255, 128, 10]),
        Value::Null,
        Value::Null,
        Value::Integer(i64::MIN),
    ]
    .into_iter()
    .zip(0..)
    .map(|(value, seq)| (seq, value))
    .collect()
}

/// Checks the rows of the `values` event, value for value and bit for bit.
pub fn assert_values(conn: &Connection, sdk: &str) -> Result {
    let got: Vec<(i64, String)> = vals(conn, 0..1_000)?
        .iter()
        .map(|(seq, value)| (*seq, exact(value)))
        .collect();
    let want: Vec<(i64, String)> = expected_values()
        .iter()
        .map(|(seq, value)| (*seq, exact(value)))
        .collect();
    assert_eq!(got, want, "the {sdk} probe's `values`, read back");
    let types: Vec<String> = conn
        .prepare("SELECT typeof(v) FROM vals WHERE seq IN (13, 15) ORDER BY seq")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(
        types,
        ["text", "blob"],
        "empty text and an empty blob keep their types"
    );
    Ok(())
}

/// Checks the rows of the `wide` event: 499 rows from one write of 998 parameters.
pub fn assert_wide(conn: &Connection, sdk: &str) -> Result {
    let want: Vec<(i64, Value)> = (0..499_i64)
        .map(|i| {
            let value = if i % 2 == 0 {
                Value::Integer(i * 7)
            } else {
                Value::Text(format!("w{i}é"))
            };
            (1_000 + i, value)
        })
        .collect();
    assert_eq!(vals(conn, 1_000..2_000)?, want, "the {sdk} probe's `wide`");
    Ok(())
}

/// Checks the rows of the `many` event: 10,000 small texts and five of almost 1 MiB,
/// written across several flushes.
pub fn assert_many(conn: &Connection, sdk: &str) -> Result {
    let small: Vec<(i64, Value)> = (0..10_000_i64)
        .map(|i| (10_000 + i, Value::Text(format!("row {i} é"))))
        .collect();
    assert_eq!(
        vals(conn, 10_000..20_000)?,
        small,
        "the {sdk} probe's small writes"
    );
    let large: Vec<(i64, i64, String)> = conn
        .prepare(
            "SELECT seq, length(v), substr(v, 1, 1) || substr(v, -1, 1) FROM vals \
             WHERE seq >= 30000 AND seq < 31000 ORDER BY seq",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let want: Vec<(i64, i64, String)> = (0..5_u8)
        .map(|i| {
            let letter = char::from(b'a' + i);
            (
                30_000 + i64::from(i),
                (1 << 20) - 16,
                format!("{letter}{letter}"),
            )
        })
        .collect();
    assert_eq!(large, want, "the {sdk} probe's large writes");
    Ok(())
}
