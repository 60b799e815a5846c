"""The SQL error a projector can react to."""

from enum import Enum


class SqlErrorKind(Enum):
    """The broad reason a SQL request failed; mirrors `sql-error-kind` in the WIT contract."""

    DENIED = "denied"
    """The sandbox refused the statement: ATTACH, a PRAGMA outside the read-only
    allowlist, transaction control, or a host-owned `_refract_` table."""
    INVALID = "invalid"
    """The SQL did not compile, or a parameter did not fit it."""
    CONSTRAINT = "constraint"
    """A constraint failed: UNIQUE, NOT NULL, CHECK or FOREIGN KEY."""
    LIMIT = "limit"
    """A size limit was hit: string or blob length, SQL length, expression depth, rows
    returned, or the database's page budget."""
    INTERRUPTED = "interrupted"
    """The statement ran past the batch deadline and was interrupted."""
    UNKNOWN_STATEMENT = "unknown-statement"
    """A statement handle that the host never returned."""
    OTHER = "other"
    """Anything else SQLite reported."""

    def __str__(self) -> str:
        return self.value


class SqlError(Exception):
    """A SQL request that the host or SQLite refused.

    A projector receives it as an exception it may catch; `kind` tells a constraint
    failure from a sandbox denial without parsing the message::

        try:
            db.execute_now(CLAIM, (name,))
        except SqlError as e:
            if e.kind is not SqlErrorKind.CONSTRAINT:
                raise
    """

    def __init__(self, kind: SqlErrorKind, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
