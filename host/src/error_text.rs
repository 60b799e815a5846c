//! An error and its causes as one line, each said once.
//!
//! Errors wrap errors: refract's own name the file and the fix, rusqlite's give SQLite's
//! message, and SQLite's own code then repeats it (`database or disk is full: Error code
//! 13: database or disk is full`). Printing the whole chain verbatim says the same thing
//! two or three times; this prints each cause only when it adds something.

use std::error::Error;

/// `error` and its causes, `: `-separated, leaving out causes whose text the line
/// already holds.
pub fn one_line(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(without_code(&cause_text)) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// SQLite's message without rusqlite's `Error code N: ` prefix.
fn without_code(text: &str) -> &str {
    text.strip_prefix("Error code ")
        .and_then(|rest| rest.split_once(": "))
        .map_or(text, |(_, message)| message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("control database /d/control.db: disk full; free space")]
        struct Outer(#[source] rusqlite::Error);
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let line = one_line(&Outer(full));
        assert_eq!(
            line,
            "control database /d/control.db: disk full; free space: database or disk is full"
        );
    }
}
