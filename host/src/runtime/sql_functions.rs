//! SQLite's date and time functions, made deterministic for projectors.
//!
//! `date`, `time`, `datetime`, `julianday`, `unixepoch`, `strftime` and `timediff` read the
//! wall clock when given `'now'` (or no time value at all), and the host's time zone with
//! the `'localtime'` and `'utc'` modifiers. A replay at another time or on another machine
//! would then build a different read model. SQLite tells the authorizer only a function's
//! name, not its arguments, so these functions are replaced on the read-model connection:
//! the replacement refuses those arguments and hands every other call to SQLite's own
//! implementation on a private in-memory connection, so results are exactly SQLite's.
//! Projectors take time from their events' `recorded-at` instead.
//!
//! The replacements are slower than the built-ins (a few microseconds a call); date
//! arithmetic is rare on a projector's hot path.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::sql::Guard;

/// The functions replaced, and the index of the first time-value argument of each.
const TIME_FUNCTIONS: &[(&str, usize)] = &[
    ("date", 0),
    ("time", 0),
    ("datetime", 0),
    ("julianday", 0),
    ("unixepoch", 0),
    ("strftime", 1),
    ("timediff", 0),
];

/// Arguments that read the clock or the time zone, compared case-insensitively.
const REFUSED_ARGUMENTS: &[&str] = &["now", "localtime", "utc"];

/// Replaces the date and time functions on `conn`. A refusal is reported through `guard`
/// so the guest sees it as `denied`.
pub(crate) fn install(conn: &Connection, guard: &Arc<Guard>) -> rusqlite::Result<()> {
    let builtin = Arc::new(Mutex::new(Connection::open_in_memory()?));
    for &(name, first_time_arg) in TIME_FUNCTIONS {
        let (builtin, guard) = (Arc::clone(&builtin), Arc::clone(guard));
        conn.create_scalar_function(
            name,
            -1,
            // Innocuous and deterministic, like the built-ins they stand for, so they also
            // work in generated columns, indexes, CHECKs and DEFAULTs (which is where a
            // DEFAULT of `datetime('now')` is refused).
            FunctionFlags::SQLITE_UTF8
                | FunctionFlags::SQLITE_DETERMINISTIC
                | FunctionFlags::SQLITE_INNOCUOUS,
            move |context| evaluate(name, first_time_arg, context, &builtin, &guard),
        )?;
    }
    Ok(())
}

fn evaluate(
    name: &str,
    first_time_arg: usize,
    context: &Context<'_>,
    builtin: &Mutex<Connection>,
    guard: &Guard,
) -> rusqlite::Result<Value> {
    let refuse = |reason: String| {
        guard.deny(reason.clone());
        Err(rusqlite::Error::UserFunctionError(reason.into()))
    };
    if context.len() <= first_time_arg {
        return refuse(format!(
            "{name}() without a time value reads the clock; pass the event's recorded-at instead"
        ));
    }
    let mut args = Vec::with_capacity(context.len());
    for index in 0..context.len() {
        let value = context.get::<Value>(index)?;
        if let Value::Text(text) = &value
            && let Some(refused) = REFUSED_ARGUMENTS
                .iter()
                .find(|refused| text.trim().eq_ignore_ascii_case(refused))
        {
            return refuse(format!(
                "{name}(…, '{refused}') reads the host's clock or time zone, so a replay would differ; use the event's recorded-at"
            ));
        }
        args.push(value);
    }
    let placeholders = (1..=args.len())
        .map(|index| format!("?{index}"))
        .collect::<Vec<_>>()
        .join(", ");
    let builtin = builtin.lock().unwrap_or_else(PoisonError::into_inner);
    let mut statement = builtin.prepare_cached(&format!("SELECT {name}({placeholders})"))?;
    statement.query_row(params_from_iter(args), |row| row.get::<_, Value>(0))
}
