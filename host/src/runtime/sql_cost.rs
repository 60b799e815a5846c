//! What one SQL statement can cost, and what bounds it.
//!
//! SQLite checks a deadline (the progress handler, `sqlite3_interrupt`) between the
//! steps of its virtual machine, never inside one. A step that calls a function runs the
//! function to its end, so a statement can only be stopped as promptly as its slowest
//! single function call allows. Before this module, `replace` over a 16 MiB value ran for
//! minutes in one step, against a 10 second deadline. The worst case of a statement is
//! therefore its deadline plus the worst single step, and this module bounds the step:
//!
//! - **Input sizes**, through SQLite's limits ([`apply_limits`]): a value is at most
//!   `limits.max_value_bytes`, a `LIKE`/`GLOB` pattern `limits.max_like_pattern_bytes`, a
//!   call has at most `limits.max_function_args` arguments and a row `limits.max_columns`
//!   columns.
//! - **Functions whose built-in cost is not linear** are replaced ([`install`]) or denied
//!   ([`COSTLY_FUNCTIONS`]), following the audit below.
//!
//! The guest's read-model connection and the API's query connection get the same
//! limits and the same functions.
//!
//! # The audit
//!
//! Every function `pragma_function_list` lists in the bundled SQLite (3.54.1, rusqlite
//! 0.41), and the table-valued functions. `n` is a value's size (at most
//! `max_value_bytes`), `m` another argument's, `k` the number of arguments (at most
//! `max_function_args`). "Checked" means SQLite compares the result's size with
//! `max_value_bytes` as it grows, so a call that would build more stops early with a
//! `limit` error.
//!
//! | Functions | One call costs | Decision |
//! |---|---|---|
//! | `abs` `sign` `round` `likely` `unlikely` `likelihood` `coalesce` `ifnull` `iif` `if` `nullif` `typeof` `subtype` `changes` `last_insert_rowid` `sqlite_version` `sqlite_source_id` `sqlite_compileoption_get` `sqlite_compileoption_used` `fts5_source_id`, scalar `min` `max` | constant, or linear in `k` | allowed |
//! | aggregates and window functions: `count` `sum` `total` `avg` `min` `max` `row_number` `rank` `dense_rank` `percent_rank` `cume_dist` `ntile` `lag` `lead` `first_value` `last_value` `nth_value` | constant per row; each row is a step of its own | allowed |
//! | `length` `octet_length` `upper` `lower` `hex` `quote` `unicode` `soundex` `substr` `substring` `char` `concat` `concat_ws` `unistr` `unistr_quote` `zeroblob` `printf` `format`, one-argument `trim` `ltrim` `rtrim` `unhex` | linear in `n` (times `k`); results checked | allowed |
//! | `group_concat` `string_agg` | linear per row; the result is checked as it grows | allowed |
//! | `json` `jsonb` `json_array` `json_object` `json_extract` `->` `->>` `json_insert` `json_replace` `json_set` `json_remove` `json_array_insert` `json_type` `json_valid` `json_quote` `json_array_length` `json_error_position` and their `jsonb_` forms; table-valued `json_each` `json_tree` | linear in `n`, times `k` for the editing functions (each path is one pass); nesting is capped at 1,000 by SQLite | allowed |
//! | `like` `glob` (the `LIKE` and `GLOB` operators) | `n` times the pattern's length | allowed, with the pattern capped at `max_like_pattern_bytes`: SQLite's own functions are kept, because replacing them would stop `LIKE 'prefix%'` from using an index |
//! | `replace` `instr` | SQLite's compare the pattern at every position: `n × m`, 20 seconds at 1 MiB | **replaced** by linear versions (a two-way substring search), identical in result |
//! | `trim` `ltrim` `rtrim` `unhex` with a character list | SQLite's scan the list for every character: `n × m`, 14 s at 100 KB | **replaced** by linear versions (a set of characters), identical in result; over text that is not valid UTF-8 they fall back to SQLite's, refused past `max_function_cost` |
//! | `json_patch` `jsonb_patch` | every patch key is searched for among the target's: `n × m`, 98 s at 430 KB | **guarded**: SQLite's own, refused when the target's bytes times the patch's exceed `max_function_cost` |
//! | `json_pretty` | the output grows as nesting times indent, and its size is checked only at the end: 1.6 GB and 15 s for a 2 KB input | **denied**; format JSON in the client |
//! | `json_group_array` `json_group_object` `jsonb_group_array` `jsonb_group_object` | the result grows row by row without a size check: 2 GB in 16 s | **denied**; `json('[' \|\| group_concat(json_quote(x)) \|\| ']')` builds the same array, checked |
//! | `highlight` `snippet` (FTS3/4/5) | the output is matches times the marker's length, unchecked: minutes for 100 KB | **denied** |
//! | `bm25` `offsets` `matchinfo` `optimize` `match` `fts5` `fts5_insttoken` `fts5_locale` `fts5_get_locale` `rtreecheck` `rtreenode` `rtreedepth`; table-valued `fts3tokenize` `fts4aux` `fts5vocab` | linear in the document or the index, which is read through nested statements that the progress handler interrupts | allowed |
//! | `date` `time` `datetime` `julianday` `unixepoch` `strftime` `timediff` | linear in the format | replaced for determinism (`sql_functions`), not for cost |
//! | `random` `randomblob` `current_date` `current_time` `current_timestamp` `total_changes` `load_extension` `fts3_tokenizer` | - | denied: nondeterministic, or reach outside the database (`DENIED_FUNCTIONS`) |
//! | `sqlite_log` | writes to SQLite's process-wide error log | denied |
//! | table-valued `dbstat` | a scan of every page | denied for the guest: it lists the host's tables |
//!
//! What remains are steps whose cost grows with the read model itself rather than with
//! a value: `count(*)` over a whole table (interrupted by `sqlite3_interrupt`, which the
//! runtime's watchdog sends at the call's deadline), `DELETE` without `WHERE`, `DROP
//! TABLE`, a sort. They are bounded by `limits.max_page_count` and `limits.max_temp_bytes`.

use std::sync::{Arc, Mutex, PoisonError};

use memchr::memmem;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql, ffi, params_from_iter};

use super::limits::SandboxLimits;

/// Functions denied to the guest and to API queries because no bound on one call can be
/// given (see the audit in the module documentation).
pub const COSTLY_FUNCTIONS: &[&str] = &[
    "json_pretty",
    "json_group_array",
    "json_group_object",
    "jsonb_group_array",
    "jsonb_group_object",
    "highlight",
    "snippet",
];

/// The subtype SQLite's JSON functions give their text results, so that JSON built by
/// one function is embedded as JSON (not as a string) by the next.
const JSON_SUBTYPE: u32 = b'J' as u32;

/// Sets SQLite's limits on `conn` from `limits`: every size the cost of one step depends
/// on.
pub(crate) fn apply_limits(conn: &Connection, limits: &SandboxLimits) -> rusqlite::Result<()> {
    let int = |value: usize| i32::try_from(value).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, int(limits.max_value_bytes))?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, int(limits.max_sql_bytes))?;
    conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, int(limits.max_expr_depth))?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_VARIABLE_NUMBER,
        int(limits.max_params_per_statement),
    )?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH,
        int(limits.max_like_pattern_bytes),
    )?;
    conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, int(limits.max_columns))?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_FUNCTION_ARG,
        int(limits.max_function_args),
    )?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(Limit::SQLITE_LIMIT_WORKER_THREADS, 0)?;
    conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 100)?;
    Ok(())
}

/// Replaces the functions the audit marks "replaced" or "guarded" on `conn`.
pub(crate) fn install(conn: &Connection, limits: &SandboxLimits) -> rusqlite::Result<()> {
    let builtin = Arc::new(Builtin::new(limits.clone()));
    // Like the built-ins they stand for: deterministic and harmless, so they also work
    // in indexes, generated columns and views under an untrusted schema.
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    let max_value = limits.max_value_bytes;
    {
        let builtin = Arc::clone(&builtin);
        conn.create_scalar_function("replace", 3, flags, move |ctx| {
            replace(ctx, max_value, &builtin)
        })?;
    }
    {
        let builtin = Arc::clone(&builtin);
        conn.create_scalar_function("instr", 2, flags, move |ctx| instr(ctx, &builtin))?;
    }
    for (name, ends) in [
        ("trim", Ends::Both),
        ("ltrim", Ends::Left),
        ("rtrim", Ends::Right),
    ] {
        let builtin = Arc::clone(&builtin);
        conn.create_scalar_function(name, 2, flags, move |ctx| trim(ctx, name, ends, &builtin))?;
    }
    {
        let builtin = Arc::clone(&builtin);
        conn.create_scalar_function("unhex", 2, flags, move |ctx| unhex(ctx, &builtin))?;
    }
    for (name, subtype) in [("json_patch", Some(JSON_SUBTYPE)), ("jsonb_patch", None)] {
        let builtin = Arc::clone(&builtin);
        conn.create_scalar_function(
            name,
            2,
            flags | FunctionFlags::SQLITE_RESULT_SUBTYPE,
            move |ctx| json_patch(ctx, name, subtype, &builtin),
        )?;
    }
    Ok(())
}

/// SQLite's own implementations, on a private in-memory connection with the same
/// limits, for the calls the replacements hand back: arguments that are numbers (whose
/// text SQLite formats its own way, and which are short), and the guarded functions.
struct Builtin {
    limits: SandboxLimits,
    conn: Mutex<Option<Connection>>,
}

impl Builtin {
    fn new(limits: SandboxLimits) -> Self {
        Self {
            limits,
            conn: Mutex::new(None),
        }
    }

    /// `name(args...)` as SQLite's built-in computes it.
    fn call(&self, name: &str, args: &[ValueRef<'_>]) -> rusqlite::Result<Output> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = match guard.as_mut() {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_in_memory()?;
                apply_limits(&conn, &self.limits)?;
                guard.insert(conn)
            }
        };
        let placeholders = (1..=args.len())
            .map(|index| format!("?{index}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut statement = conn.prepare_cached(&format!("SELECT {name}({placeholders})"))?;
        statement.query_row(
            params_from_iter(args.iter().map(|arg| ToSqlOutput::Borrowed(*arg))),
            |row| {
                // Text as bytes: SQLite's may not be valid UTF-8.
                Ok(match row.get_ref(0)? {
                    ValueRef::Text(bytes) => Output::Text(bytes.to_vec()),
                    ValueRef::Blob(bytes) => Output::Value(Value::Blob(bytes.to_vec())),
                    ValueRef::Integer(value) => Output::Value(Value::Integer(value)),
                    ValueRef::Real(value) => Output::Value(Value::Real(value)),
                    ValueRef::Null => Output::Value(Value::Null),
                })
            },
        )
    }
}

/// A function's result: a value, or text as raw bytes (SQLite's text need not be valid
/// UTF-8, for instance a blob read as text, and these functions return what SQLite's
/// would).
enum Output {
    Value(Value),
    Text(Vec<u8>),
}

impl ToSql for Output {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Self::Value(value) => ToSqlOutput::Borrowed(value.into()),
            Self::Text(bytes) => ToSqlOutput::Borrowed(ValueRef::Text(bytes)),
        })
    }
}

/// An argument as SQLite's `sqlite3_value_text` would read it, when that is its bytes:
/// `Ok(None)` for NULL, `Err(())` for a number (which the caller hands to SQLite).
fn text_of(value: ValueRef<'_>) -> Result<Option<&[u8]>, ()> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(Some(bytes)),
        ValueRef::Integer(_) | ValueRef::Real(_) => Err(()),
    }
}

/// Whether any argument is a number, so the call goes to SQLite's own function.
fn has_number(ctx: &Context<'_>) -> bool {
    (0..ctx.len())
        .any(|index| matches!(ctx.get_raw(index), ValueRef::Integer(_) | ValueRef::Real(_)))
}

/// Hands the whole call to SQLite's built-in `name`.
fn delegate(ctx: &Context<'_>, name: &str, builtin: &Builtin) -> rusqlite::Result<Output> {
    let args: Vec<ValueRef<'_>> = (0..ctx.len()).map(|index| ctx.get_raw(index)).collect();
    builtin.call(name, &args)
}

/// SQLite's "string or blob too big", which the sandbox reports as a `limit` error
/// naming `limits.max_value_bytes`.
fn too_big() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_TOOBIG), None)
}

/// A call refused for its cost: the message says "too large", so the sandbox reports it
/// as a `limit` error, and names the key.
fn too_costly(name: &str, what: &str, cost: u64, max: u64) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(
        format!(
            "{name}() over {what} is too large to compute in one step: its cost is {cost}, the limit {max} (`limits.max_function_cost`)"
        )
        .into(),
    )
}

/// `replace(X, Y, Z)`: every occurrence of Y in X replaced by Z, in one linear pass.
fn replace(ctx: &Context<'_>, max_value: usize, builtin: &Builtin) -> rusqlite::Result<Output> {
    if has_number(ctx) {
        return delegate(ctx, "replace", builtin);
    }
    // SQLite's order of checks, which decides between NULL and X for odd arguments.
    let (Ok(Some(haystack)), Ok(pattern)) = (text_of(ctx.get_raw(0)), text_of(ctx.get_raw(1)))
    else {
        return Ok(Output::Value(Value::Null));
    };
    let Some(pattern) = pattern else {
        return Ok(Output::Value(Value::Null));
    };
    // SQLite reads the pattern as a C string: an empty one, or one starting with NUL,
    // replaces nothing.
    if pattern.first().is_none_or(|&byte| byte == 0) {
        return Ok(Output::Text(haystack.to_vec()));
    }
    let Ok(Some(replacement)) = text_of(ctx.get_raw(2)) else {
        return Ok(Output::Value(Value::Null));
    };
    let finder = memmem::Finder::new(pattern);
    let matches = finder.find_iter(haystack).count();
    let grown = matches.saturating_mul(replacement.len());
    let size = (haystack.len() + grown).saturating_sub(matches * pattern.len());
    if size > max_value {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(size);
    let mut from = 0;
    for at in finder.find_iter(haystack) {
        out.extend_from_slice(&haystack[from..at]);
        out.extend_from_slice(replacement);
        from = at + pattern.len();
    }
    out.extend_from_slice(&haystack[from..]);
    Ok(Output::Text(out))
}

/// Whether `byte` continues a UTF-8 sequence rather than starting one.
fn is_continuation(byte: u8) -> bool {
    byte & 0xC0 == 0x80
}

/// `instr(X, Y)`: the 1-based position of the first Y in X (characters for text, bytes
/// for two blobs), or 0.
fn instr(ctx: &Context<'_>, builtin: &Builtin) -> rusqlite::Result<Output> {
    if has_number(ctx) {
        return delegate(ctx, "instr", builtin);
    }
    let (haystack, needle) = (ctx.get_raw(0), ctx.get_raw(1));
    let as_text = !matches!((haystack, needle), (ValueRef::Blob(_), ValueRef::Blob(_)));
    let (Ok(Some(haystack)), Ok(Some(needle))) = (text_of(haystack), text_of(needle)) else {
        return Ok(Output::Value(Value::Null));
    };
    let position = if needle.is_empty() {
        1
    } else if !as_text {
        memmem::find(haystack, needle).map_or(0, |at| at + 1)
    } else if is_continuation(needle[0]) {
        // SQLite compares text only where a character starts (and at the very first
        // byte): a needle that starts mid-character can match only there.
        usize::from(haystack.starts_with(needle))
    } else {
        // Every match starts where the needle does, so at a character: the first match
        // is SQLite's, and its position is counted in characters.
        memmem::find(haystack, needle).map_or(0, |at| {
            1 + haystack[1..=at]
                .iter()
                .filter(|&&byte| !is_continuation(byte))
                .count()
        })
    };
    Ok(Output::Value(Value::Integer(
        i64::try_from(position).unwrap_or(i64::MAX),
    )))
}

/// Which ends `trim` strips.
#[derive(Clone, Copy)]
enum Ends {
    Left,
    Right,
    Both,
}

/// `trim(X, Y)`, `ltrim(X, Y)`, `rtrim(X, Y)`: the characters of Y stripped from X's
/// ends, with Y's characters in a set rather than scanned for each of X's.
fn trim(ctx: &Context<'_>, name: &str, ends: Ends, builtin: &Builtin) -> rusqlite::Result<Output> {
    if has_number(ctx) {
        return delegate(ctx, name, builtin);
    }
    let (Ok(Some(text)), Ok(Some(list))) = (text_of(ctx.get_raw(0)), text_of(ctx.get_raw(1)))
    else {
        return Ok(Output::Value(Value::Null));
    };
    // SQLite reads the list as a C string.
    let list = list.split(|&byte| byte == 0).next().unwrap_or_default();
    let (Ok(text_str), Ok(list_str)) = (std::str::from_utf8(text), std::str::from_utf8(list))
    else {
        return fallback(ctx, name, text.len(), list.len(), builtin);
    };
    let set = CharSet::new(list_str);
    let mut kept = text_str;
    if matches!(ends, Ends::Left | Ends::Both) {
        kept = kept.trim_start_matches(|c| set.contains(c));
    }
    if matches!(ends, Ends::Right | Ends::Both) {
        kept = kept.trim_end_matches(|c| set.contains(c));
    }
    Ok(Output::Text(kept.as_bytes().to_vec()))
}

/// `unhex(X, Y)`: X's pairs of hex digits as a blob, ignoring the characters of Y
/// between pairs; NULL if X holds anything else.
fn unhex(ctx: &Context<'_>, builtin: &Builtin) -> rusqlite::Result<Output> {
    if has_number(ctx) {
        return delegate(ctx, "unhex", builtin);
    }
    let (Ok(Some(hex)), Ok(Some(pass))) = (text_of(ctx.get_raw(0)), text_of(ctx.get_raw(1))) else {
        return Ok(Output::Value(Value::Null));
    };
    // SQLite reads X as a C string, and Y whole.
    let hex = hex.split(|&byte| byte == 0).next().unwrap_or_default();
    let (Ok(hex_str), Ok(pass_str)) = (std::str::from_utf8(hex), std::str::from_utf8(pass)) else {
        return fallback(ctx, "unhex", hex.len(), pass.len(), builtin);
    };
    let set = CharSet::new(pass_str);
    let mut out = Vec::with_capacity(hex.len() / 2);
    let mut chars = hex_str.chars().peekable();
    while let Some(&c) = chars.peek() {
        if !c.is_ascii_hexdigit() {
            if !set.contains(c) {
                return Ok(Output::Value(Value::Null));
            }
            chars.next();
            continue;
        }
        chars.next();
        let Some(low) = chars.next().and_then(|d| d.to_digit(16)) else {
            return Ok(Output::Value(Value::Null));
        };
        let high = c.to_digit(16).unwrap_or_default();
        out.push(u8::try_from(high * 16 + low).unwrap_or_default());
    }
    Ok(Output::Value(Value::Blob(out)))
}

/// A set of characters with a constant-time lookup: a table for ASCII, a hash set for
/// the rest.
struct CharSet {
    ascii: [bool; 128],
    other: std::collections::HashSet<char>,
}

impl CharSet {
    fn new(chars: &str) -> Self {
        let mut set = Self {
            ascii: [false; 128],
            other: std::collections::HashSet::new(),
        };
        for c in chars.chars() {
            match usize::try_from(u32::from(c)) {
                Ok(index) if index < 128 => set.ascii[index] = true,
                _ => {
                    set.other.insert(c);
                }
            }
        }
        set
    }

    fn contains(&self, c: char) -> bool {
        match usize::try_from(u32::from(c)) {
            Ok(index) if index < 128 => self.ascii[index],
            _ => self.other.contains(&c),
        }
    }
}

/// SQLite's own `name` for text that is not valid UTF-8 (where its byte-wise matching
/// differs from character-wise), if the call's `n × m` cost fits the limit.
fn fallback(
    ctx: &Context<'_>,
    name: &str,
    n: usize,
    m: usize,
    builtin: &Builtin,
) -> rusqlite::Result<Output> {
    let cost = (n as u64).saturating_mul(m as u64);
    let max = builtin.limits.max_function_cost;
    if cost > max {
        return Err(too_costly(name, "text that is not valid UTF-8", cost, max));
    }
    delegate(ctx, name, builtin)
}

/// `json_patch(T, P)` and `jsonb_patch(T, P)`: SQLite's own, refused when the target's
/// size times the patch's exceeds `limits.max_function_cost`.
fn json_patch(
    ctx: &Context<'_>,
    name: &str,
    subtype: Option<u32>,
    builtin: &Builtin,
) -> rusqlite::Result<(Output, Option<u32>)> {
    let size = |value: ValueRef<'_>| match value {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.len() as u64,
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 1,
    };
    let cost = size(ctx.get_raw(0)).saturating_mul(size(ctx.get_raw(1)));
    let max = builtin.limits.max_function_cost;
    if cost > max {
        return Err(too_costly(
            name,
            "documents this size (the target's bytes times the patch's)",
            cost,
            max,
        ));
    }
    let result = delegate(ctx, name, builtin)?;
    let subtype = match &result {
        Output::Text(_) | Output::Value(Value::Text(_)) => subtype,
        _ => None,
    };
    Ok((result, subtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same calls through SQLite's built-ins and through the replacements agree.
    #[test]
    fn replacements_agree_with_sqlite() -> rusqlite::Result<()> {
        let limits = SandboxLimits::default();
        let plain = Connection::open_in_memory()?;
        apply_limits(&plain, &limits)?;
        let bounded = Connection::open_in_memory()?;
        apply_limits(&bounded, &limits)?;
        install(&bounded, &limits)?;
        let values = [
            "NULL",
            "''",
            "'a'",
            "'abcabcab'",
            "'bc'",
            "'é'",
            "'aéb éé'",
            "'x' || char(0) || 'y'",
            "char(0) || 'a'",
            "x'00ff'",
            "x'616263'",
            "x'62'",
            "x'a9'",
            "CAST(x'c3a9ff61' AS TEXT)",
            "CAST(x'a961' AS TEXT)",
            "12",
            "1.5",
            "'1A2b'",
            "'1A 2b-'",
            "' -'",
            "'  xx  '",
            "' x'",
            "'ab ab'",
        ];
        let mut calls = Vec::new();
        for a in values {
            for b in values {
                calls.push(format!("instr({a}, {b})"));
                calls.push(format!("trim({a}, {b})"));
                calls.push(format!("ltrim({a}, {b})"));
                calls.push(format!("rtrim({a}, {b})"));
                calls.push(format!("unhex({a}, {b})"));
                for c in ["NULL", "''", "'Z'", "'zz'", "x'00'", "7"] {
                    calls.push(format!("replace({a}, {b}, {c})"));
                }
            }
        }
        calls.push(
            "json_patch('{\"a\":1,\"b\":{\"c\":2}}', '{\"b\":{\"c\":null},\"d\":[1]}')".into(),
        );
        calls.push("json_object('x', json_patch('{\"a\":1}', '{\"b\":2}'))".into());
        calls.push("hex(jsonb_patch('{\"a\":1}', '{\"b\":2}'))".into());
        for call in &calls {
            let sql = format!("SELECT typeof({call}), hex({call})");
            let read = |conn: &Connection| {
                conn.query_row(&sql, [], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
            };
            assert_eq!(read(&bounded)?, read(&plain)?, "{call}");
        }
        Ok(())
    }

    #[test]
    fn replace_stays_linear_and_checks_its_size() -> rusqlite::Result<()> {
        let limits = SandboxLimits::default();
        let conn = Connection::open_in_memory()?;
        apply_limits(&conn, &limits)?;
        install(&conn, &limits)?;
        // SQLite's own took about 20 seconds for this.
        let n = i64::try_from(limits.max_value_bytes - 1).unwrap_or_default();
        let started = std::time::Instant::now();
        let length: i64 = conn.query_row(
            "SELECT length(replace(printf('%.*c', ?1, 'a'), printf('%.*c', ?1 / 2, 'a') || 'b', 'x'))",
            [n],
            |row| row.get(0),
        )?;
        assert_eq!(length, n);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let err = conn
            .query_row(
                "SELECT replace(printf('%.*c', 1000, 'a'), 'a', printf('%.*c', 2000, 'b'))",
                [],
                |row| row.get::<_, String>(0),
            )
            .expect_err("a million times two thousand bytes is too big");
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::TooBig));
        Ok(())
    }

    #[test]
    fn json_patch_over_the_cost_is_refused_naming_the_key() -> rusqlite::Result<()> {
        let limits = SandboxLimits {
            max_function_cost: 1000,
            ..SandboxLimits::default()
        };
        let conn = Connection::open_in_memory()?;
        apply_limits(&conn, &limits)?;
        install(&conn, &limits)?;
        let err = conn
            .query_row(
                "SELECT json_patch(json_object('a', printf('%.*c', 100, 'x')), json_object('b', printf('%.*c', 100, 'y')))",
                [],
                |row| row.get::<_, String>(0),
            )
            .expect_err("over the cost");
        assert!(
            err.to_string().contains("`limits.max_function_cost`"),
            "{err}"
        );
        Ok(())
    }
}
