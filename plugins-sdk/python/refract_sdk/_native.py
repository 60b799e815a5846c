"""The native stand-in for the host: the same calls, backed by an in-memory SQLite
(the standard library's `sqlite3`), so projector logic unit-tests with no wasm build.

It applies the host's SQL sandbox rules with an authorizer (no ATTACH, no transaction
control, PRAGMAs only from the read-only allowlist, no `_refract_` objects, no
temporary objects, no nondeterministic functions, virtual tables only from the allowed
modules) and turns foreign keys on, so that a statement the host would deny fails in
native tests too. The host is the authority: its date and time functions also refuse
`'now'`, which this stand-in does not check.
"""

import sqlite3
from typing import Any, TypeVar
from collections.abc import Callable

from ._db import Rows, WriteFailed
from ._errors import SqlError, SqlErrorKind
from ._packed import Malformed, PackedWrites, unpack

# The host's rules, copied from `host/src/runtime/sql.rs` (the authority).

PRAGMAS_ANY_ARGUMENT = frozenset(
    (
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
    )
)
"""PRAGMAs a projector may run with any argument: they only describe the schema."""

PRAGMAS_READ_ONLY = frozenset(
    ("user_version", "data_version", "schema_version", "page_count", "page_size", "freelist_count")
)
"""PRAGMAs a projector may read but not set."""

DENIED_FUNCTIONS = frozenset(
    (
        "random",
        "randomblob",
        "current_timestamp",
        "current_date",
        "current_time",
        "total_changes",
        "load_extension",
        "fts3_tokenizer",
    )
)
"""SQL functions a projector may not call: their results differ from run to run, or
they reach outside the database."""

VIRTUAL_TABLE_MODULES = frozenset(("fts3", "fts4", "fts5", "rtree"))
"""Virtual-table modules a projector may create tables with."""

HOST_TABLE_PREFIX = "_refract_"
"""The prefix of host-owned tables, indexes, triggers and views."""

STATEMENT_CACHE = 256
"""Prepared statements `sqlite3` keeps per connection; more than any projector
declares."""

T = TypeVar("T")

_S = sqlite3
# Actions and which of their two arguments name schema objects.
_NAMES_BOTH = frozenset(
    (
        _S.SQLITE_CREATE_INDEX,
        _S.SQLITE_DROP_INDEX,
        _S.SQLITE_DROP_TEMP_INDEX,
        _S.SQLITE_CREATE_TRIGGER,
        _S.SQLITE_DROP_TRIGGER,
        _S.SQLITE_DROP_TEMP_TRIGGER,
    )
)
_NAMES_FIRST = frozenset(
    (
        _S.SQLITE_CREATE_TABLE,
        _S.SQLITE_DROP_TABLE,
        _S.SQLITE_DROP_TEMP_TABLE,
        _S.SQLITE_DELETE,
        _S.SQLITE_INSERT,
        _S.SQLITE_READ,
        _S.SQLITE_UPDATE,
        _S.SQLITE_ANALYZE,
        _S.SQLITE_DROP_VTABLE,
        _S.SQLITE_CREATE_VIEW,
        _S.SQLITE_DROP_VIEW,
        _S.SQLITE_DROP_TEMP_VIEW,
        _S.SQLITE_REINDEX,
    )
)
_TEMPORARY = frozenset(
    (
        _S.SQLITE_CREATE_TEMP_INDEX,
        _S.SQLITE_CREATE_TEMP_TABLE,
        _S.SQLITE_CREATE_TEMP_TRIGGER,
        _S.SQLITE_CREATE_TEMP_VIEW,
    )
)
_ALLOWED = frozenset((_S.SQLITE_SELECT, _S.SQLITE_RECURSIVE))


def _host_owned(name: Any) -> bool:
    return isinstance(name, str) and name[: len(HOST_TABLE_PREFIX)].lower() == HOST_TABLE_PREFIX


def _denied(action: int, arg1: Any, arg2: Any) -> bool:
    """Whether the host's sandbox denies this action to a projector."""
    if action in _NAMES_FIRST:
        return _host_owned(arg1)
    if action in _TEMPORARY:  # would not survive a restart, so a replay could differ
        return True
    if action in _ALLOWED:
        return False
    if action == _S.SQLITE_FUNCTION:
        return (arg2 or "").lower() in DENIED_FUNCTIONS
    if action == _S.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        return not (name in PRAGMAS_ANY_ARGUMENT or (arg2 is None and name in PRAGMAS_READ_ONLY))
    if action in _NAMES_BOTH:
        return _host_owned(arg1) or _host_owned(arg2)
    if action == _S.SQLITE_ALTER_TABLE:  # (database, table)
        return _host_owned(arg2)
    if action == _S.SQLITE_CREATE_VTABLE:  # (table, module)
        return _host_owned(arg1) or (arg2 or "").lower() not in VIRTUAL_TABLE_MODULES
    # Transaction control, savepoints, ATTACH, DETACH, temporary objects, and anything
    # newer than this list.
    return True


class NativeBackend:
    """An in-memory read model with the sandbox approximation installed. Values are
    plain Python values, which `sqlite3` binds as they are; packed writes are decoded
    by `_packed.unpack`, which follows the contract's layout, as the host does."""

    null = None
    integer = int
    real = float
    text = str
    blob = bytes

    def __init__(self) -> None:
        # Autocommit mode: the harness issues BEGIN/COMMIT/ROLLBACK itself, as the host.
        self.conn = sqlite3.connect(
            ":memory:", isolation_level=None, cached_statements=STATEMENT_CACHE
        )
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._trusted = False
        self.conn.set_authorizer(self._authorize)
        # A statement's handle is its index here, plus one (the host's handles are
        # small integers too); `sqlite3` caches the compiled statement by its text.
        self._statements: list[str] = []
        self._handles: dict[str, int] = {}

    def _authorize(self, action: int, arg1: Any, arg2: Any, _db: Any, _trigger: Any) -> int:
        if self._trusted or not _denied(action, arg1, arg2):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    def trusted(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `run` with the sandbox lifted, as the host does for its own statements."""
        self._trusted = True
        try:
            return run(self.conn)
        finally:
            self._trusted = False

    def prepare(self, sql: str) -> int:
        # Compiling now reports a bad statement where the host would: at `prepare`.
        known = self._handles.get(sql)
        if known is not None:
            return known
        if not sql.strip(" \t\r\n;"):
            raise SqlError(SqlErrorKind.INVALID, "the statement is empty")
        try:
            self.conn.execute(f"EXPLAIN {sql}")
        except sqlite3.ProgrammingError as e:
            # `sqlite3` counts parameters only once the statement has compiled, so a
            # complaint about them means it compiled (and the authorizer let it through).
            if not str(e).startswith("Incorrect number of bindings"):
                raise sql_error(e) from None
        except (sqlite3.Error, ValueError) as e:
            raise sql_error(e) from None
        self._statements.append(sql)
        handle = self._handles[sql] = len(self._statements)
        return handle

    def execute_packed(self, packed: PackedWrites) -> None:
        """Runs packed writes in order and stops at the first failure, as the host's
        `execute-packed` does."""
        execute = self.conn.execute
        index = 0
        writes = unpack(
            packed.statements, packed.param_ends, bytes(packed.kinds), packed.numbers,
            packed.data(),
        )
        try:
            for index, write in enumerate(writes):
                if not 1 <= write.statement <= len(self._statements):
                    raise WriteFailed(
                        index,
                        SqlError(
                            SqlErrorKind.UNKNOWN_STATEMENT,
                            f"no statement has handle {write.statement}",
                        ),
                    )
                try:
                    execute(self._statements[write.statement - 1], write.values)
                except (sqlite3.Error, OverflowError, ValueError) as e:
                    raise WriteFailed(index, sql_error(e)) from None
        except Malformed as e:
            raise WriteFailed(e.index, e.error) from None

    def execute(self, _handle: Any, sql: str, values: list[Any]) -> int:
        try:
            cursor = self.conn.execute(sql, values)
        except (sqlite3.Error, OverflowError, ValueError) as e:
            raise sql_error(e) from None
        return max(cursor.rowcount, 0)

    def query(self, _handle: Any, sql: str, values: list[Any]) -> Rows:
        return self.run_query(sql, values)

    def run_query(self, sql: str, values: Any = ()) -> Rows:
        try:
            cursor = self.conn.execute(sql, values)
            rows = cursor.fetchall()
        except (sqlite3.Error, OverflowError, ValueError) as e:
            raise sql_error(e) from None
        columns = [column[0] for column in cursor.description or ()]
        return Rows(columns, rows)

    def execute_script(self, sql: str) -> None:
        try:
            # `executescript` would COMMIT first; run the statements one by one instead,
            # inside the harness's transaction, as the host does.
            for statement in _statements(sql):
                self.conn.execute(statement)
        except (sqlite3.Error, ValueError) as e:
            raise sql_error(e) from None


def _statements(sql: str) -> list[str]:
    """Splits SQL text into complete statements (`sqlite3.complete_statement` knows
    where strings, comments and triggers end)."""
    statements, current = [], ""
    for piece in sql.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                statements.append(current)
            current = ""
    if current.strip(" \t\r\n;"):
        statements.append(current[:-1])  # the text ended without a semicolon
    return statements


def sql_error(e: BaseException) -> SqlError:
    """Maps a `sqlite3` error onto the kinds the host reports."""
    code = getattr(e, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_CONSTRAINT:
        kind = SqlErrorKind.CONSTRAINT
    elif primary in (sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_FULL):
        kind = SqlErrorKind.LIMIT
    elif primary == sqlite3.SQLITE_INTERRUPT:
        kind = SqlErrorKind.INTERRUPTED
    elif primary == sqlite3.SQLITE_AUTH or "not authorized" in str(e):
        kind = SqlErrorKind.DENIED
    elif primary == sqlite3.SQLITE_ERROR or isinstance(e, sqlite3.ProgrammingError):
        # A syntax error, an unknown table or column, a wrong parameter count.
        kind = SqlErrorKind.INVALID
    elif isinstance(e, sqlite3.IntegrityError):
        kind = SqlErrorKind.CONSTRAINT
    else:
        kind = SqlErrorKind.OTHER
    return SqlError(kind, str(e))
