//! The SDK's one error type, and the SQL error a projector can react to.

use std::fmt;

/// The result of every fallible SDK call, and of a projector's `init` and `handle`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a projector call failed.
///
/// `?` converts SQL errors and `serde_json` errors into it, and a plain message
/// converts with [`Error::msg`] or `.into()`:
///
/// ```
/// # fn check(amount: i64) -> refract_sdk::Result<()> {
/// if amount < 0 {
///     return Err(format!("negative amount {amount}").into());
/// }
/// # Ok(())
/// # }
/// # assert!(check(-1).is_err());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host or SQLite refused a SQL request. The [`SqlError`] keeps its kind,
    /// so a projector can tell a constraint failure from a sandbox denial.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// Event data or metadata was not the JSON the projector expected.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A query result did not hold what the projector asked for: no such column,
    /// or a value of another type.
    #[error("{0}")]
    Column(String),
    /// The projector's own message.
    #[error("{0}")]
    Message(String),
}

impl Error {
    /// An error with the projector's own message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Message(message.to_string())
    }

    /// The kind of a SQL error, or `None` for any other error.
    pub fn sql_kind(&self) -> Option<SqlErrorKind> {
        match self {
            Error::Sql(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Message(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Message(message.to_owned())
    }
}

/// A SQL request that the host or SQLite refused. A projector receives it as a
/// value it can handle, never as a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct SqlError {
    kind: SqlErrorKind,
    message: String,
}

impl SqlError {
    /// A SQL error of `kind` with a message for the operator.
    pub fn new(kind: SqlErrorKind, message: impl Into<String>) -> Self {
        SqlError {
            kind,
            message: message.into(),
        }
    }

    /// The broad reason, to react to without parsing the message.
    pub fn kind(&self) -> SqlErrorKind {
        self.kind
    }

    /// The message from the host or from SQLite.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The broad reason a SQL request failed. It mirrors `sql-error-kind` in the WIT
/// contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqlErrorKind {
    /// The sandbox refused the statement: ATTACH, a PRAGMA outside the read-only
    /// allowlist, transaction control, or a host-owned `_refract_` table.
    Denied,
    /// The SQL did not compile, or a parameter did not fit it.
    Invalid,
    /// A constraint failed: UNIQUE, NOT NULL, CHECK or FOREIGN KEY.
    Constraint,
    /// A size limit was hit: string or blob length, SQL length, expression depth,
    /// rows returned, or the database's page budget.
    Limit,
    /// The statement ran past the batch deadline and was interrupted.
    Interrupted,
    /// A statement handle that the host never returned.
    UnknownStatement,
    /// Anything else SQLite reported.
    Other,
}

impl SqlErrorKind {
    /// The kind's name as the WIT contract spells it, for example `unknown-statement`.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlErrorKind::Denied => "denied",
            SqlErrorKind::Invalid => "invalid",
            SqlErrorKind::Constraint => "constraint",
            SqlErrorKind::Limit => "limit",
            SqlErrorKind::Interrupted => "interrupted",
            SqlErrorKind::UnknownStatement => "unknown-statement",
            SqlErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for SqlErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_error_displays_kind_and_message() {
        let e = Error::from(SqlError::new(SqlErrorKind::Constraint, "UNIQUE failed"));
        assert_eq!(e.to_string(), "constraint: UNIQUE failed");
        assert_eq!(e.sql_kind(), Some(SqlErrorKind::Constraint));
        assert_eq!(Error::msg("x").sql_kind(), None);
    }
}
