"""The read model: prepared statements, deferred writes, immediate writes, queries.

`Db` is the same object in the component and in native tests; only its backend
differs (`_component.ComponentBackend` calls the host's `sql` imports,
`_native.NativeBackend` runs the stdlib `sqlite3`). A backend provides:

- `prepare(sql) -> handle` (an int), `execute_packed(writes)` (sends a
  `_packed.PackedWrites`; raises `WriteFailed`), `execute(handle, sql, values) -> int`,
  `query(handle, sql, values) -> Rows`, `execute_script(sql)`; every SQL failure is
  raised as `SqlError`;
- the value constructors `null`, `integer`, `real`, `text` and `blob`, which turn a
  checked Python value into what `execute` and `query` send.
"""

from typing import Any
from collections.abc import Iterator, Sequence

from ._errors import SqlError
from ._packed import I64_MAX, I64_MIN, PackedWrites, position, _out_of_range, _utf8_length

FLUSH_WRITES = 4096
"""Buffered writes that make the SDK flush before the batch ends. It keeps each
`execute-packed` call, and the guest memory it uses, well under the host's caps even
when one event issues many writes. The same value as the Rust SDK's."""

FLUSH_BYTES = 4 << 20
"""Buffered parameter bytes (UTF-8 text and blobs) that make the SDK flush early."""

FLUSH_VALUES = 64 << 10
"""Buffered parameters that make the SDK flush early, for writes with many
parameters each."""


class Statement:
    """One SQL statement, compiled by the host the first time it is used and then
    named by a small handle, so the hot path never sends SQL text.

    Declare statements once, at module level, next to the projector::

        DEPOSIT = Statement(
            "INSERT INTO balances (account, balance) VALUES (?1, ?2) "
            "ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance"
        )
    """

    __slots__ = ("sql", "_backend", "_handle")

    def __init__(self, sql: str) -> None:
        if not isinstance(sql, str):
            raise TypeError(f"Statement takes SQL text (str), not {type(sql).__name__}")
        self.sql = sql
        """The SQL text; parameters are `?1`, `?2`, and so on."""
        # The backend that prepared it and the handle it returned: a handle is valid
        # only for the instance (or native database) that issued it.
        self._backend: Any = None
        self._handle: Any = None

    def __repr__(self) -> str:
        return f"Statement({self.sql!r})"


class Row:
    """One row of `Rows`: values by index (from 0) or by column name.

    >>> row = Rows(["account", "balance"], [("acc-1", 350)])[0]
    >>> row["account"], row[1], tuple(row)
    ('acc-1', 350, ('acc-1', 350))
    """

    __slots__ = ("_columns", "_values")

    def __init__(self, columns: Sequence[str], values: tuple[Any, ...]) -> None:
        self._columns = columns
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            try:
                key = list(self._columns).index(key)
            except ValueError:
                raise KeyError(
                    f"no column named {key!r}; the query returned {list(self._columns)!r}"
                ) from None
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._columns, self._values, strict=False))!r})"


class Rows:
    """The rows a query returned, with their column names. A sequence of `Row`.

    >>> rows = Rows(["account", "balance"], [("acc-1", 350), ("acc-2", 0)])
    >>> [row["balance"] for row in rows], rows.first()["account"], len(rows)
    ([350, 0], 'acc-1', 2)
    """

    __slots__ = ("columns", "_rows")

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.columns: tuple[str, ...] = tuple(columns)
        """The column names, in order."""
        self._rows = [tuple(row) for row in rows]

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Row:
        return Row(self.columns, self._rows[index])

    def __iter__(self) -> Iterator[Row]:
        columns = self.columns
        return (Row(columns, values) for values in self._rows)

    def first(self) -> Row | None:
        """The first row, or None when there are none."""
        return Row(self.columns, self._rows[0]) if self._rows else None

    def tuples(self) -> list[tuple[Any, ...]]:
        """Every row as a tuple, in column order."""
        return list(self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rows):
            return NotImplemented
        return (self.columns, self._rows) == (other.columns, other._rows)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Rows({list(self.columns)!r}, {self._rows!r})"


class WriteFailed(Exception):
    """Raised by a backend's `execute_batch`: write `index` failed with `error`; the
    writes before it were applied."""

    def __init__(self, index: int, error: SqlError) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


class Failure:
    """A deferred write that failed, with the event that issued it."""

    __slots__ = ("offset", "error", "sql")

    def __init__(self, offset: int | None, error: SqlError, sql: str) -> None:
        self.offset = offset
        """The offset of the event that issued the write; None during `init`."""
        self.error = error
        """What the host or SQLite said."""
        self.sql = sql
        """The statement's SQL, for the operator."""

    def describe(self) -> str:
        return f"deferred write failed: {self.error} (statement: {self.sql})"


Params = Sequence[Any]


class Db:
    """The projector's read model: its own SQLite database, inside the transaction
    the host opened for the current `init` or `handle` call.

    - `execute` is **deferred**: the write joins a buffer that the SDK sends in one
      host call at the end of the batch, and before any query or immediate write, so
      reads always see earlier writes. If a deferred write fails, the batch fails and
      names the event that issued it; later SQL calls in the same batch raise the same
      error.
    - `execute_now` runs at once and raises its error, for a projector that wants to
      react to, say, a constraint failure.
    - `query` reads rows.
    - `execute_script` runs parameterless SQL, such as the schema in `init`.

    Parameters are a sequence (a tuple or list) bound in order to `?1`, `?2`, ...:
    `None`, `int` (64-bit signed; a larger one raises `ValueError`), `float`, `str`,
    and `bytes` (or `bytearray`/`memoryview`). `bool` binds as 0 or 1.
    """

    __slots__ = (
        "_backend",
        "_packed",
        "_origins",
        "_offset",
        "_failure",
        "_null",
        "_integer",
        "_real",
        "_text",
        "_blob",
    )

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        # Deferred writes, packed as `execute-packed` sends them, and per write the
        # statement and the offset of the event that issued it, for error messages.
        self._packed = PackedWrites()
        self._origins: list[tuple[Statement, int | None]] = []
        self._offset: int | None = None
        self._failure: Failure | None = None
        self._null = backend.null
        self._integer = backend.integer
        self._real = backend.real
        self._text = backend.text
        self._blob = backend.blob

    # The SDK's own bookkeeping, for the batch loop.

    def _reset(self) -> None:
        """Starts an `init` or `handle` call: nothing pending, no failure."""
        self._packed.clear()
        self._origins = []
        self._offset = None
        self._failure = None

    def _take_failure(self) -> Failure | None:
        failure, self._failure = self._failure, None
        return failure

    # The API.

    def execute(self, statement: Statement, params: Params = ()) -> None:
        """Queues a write; the SDK sends it with the rest of the batch. Raises only if
        the statement does not compile, a parameter has no SQL type, or an earlier
        deferred write failed::

            OPEN = Statement("INSERT INTO accounts (id, owner) VALUES (?1, ?2)")

            def handle(self, event, db):
                db.execute(OPEN, (event.stream, event.data["owner"]))
        """
        if self._failure is not None:
            raise self._failure.error
        try:
            handle = (
                statement._handle
                if statement._backend is self._backend
                else self._prepare(statement)
            )
        except AttributeError:
            raise _not_a_statement(statement) from None
        packed = self._packed
        packed.push(handle, params)
        self._origins.append((statement, self._offset))
        if (
            len(packed.statements) >= FLUSH_WRITES
            or len(packed.kinds) >= FLUSH_VALUES
            or packed.byte_length >= FLUSH_BYTES
        ):
            self.flush()

    def execute_now(self, statement: Statement, params: Params = ()) -> int:
        """Runs a write at once, after any deferred writes, and returns how many rows
        it changed. Raises `SqlError`, which the projector may catch::

            try:
                db.execute_now(CLAIM, (name,))
            except SqlError as e:
                if e.kind is not SqlErrorKind.CONSTRAINT:
                    raise
        """
        self.flush()
        handle = self._prepare(statement)
        return self._backend.execute(handle, statement.sql, self._convert(params)[0])

    def query(self, statement: Statement, params: Params = ()) -> Rows:
        """Runs a query, after any deferred writes, and returns its rows. The host
        caps how many rows and bytes come back::

            OWNER = Statement("SELECT owner FROM accounts WHERE id = ?1")

            row = db.query(OWNER, (account,)).first()
            owner = row["owner"] if row else None
        """
        self.flush()
        handle = self._prepare(statement)
        return self._backend.query(handle, statement.sql, self._convert(params)[0])

    def execute_script(self, sql: str) -> None:
        """Runs SQL text without parameters, possibly several statements, after any
        deferred writes. Meant for the schema in `init`: the text crosses to the host
        on every call."""
        self.flush()
        self._backend.execute_script(sql)

    def flush(self) -> None:
        """Sends the deferred writes now. The SDK does this by itself at the end of
        each batch and before every query, so a projector rarely needs to."""
        if self._failure is not None:
            raise self._failure.error
        packed = self._packed
        if not packed.statements:
            return
        origins = self._origins
        self._origins = []
        try:
            self._backend.execute_packed(packed)
        except WriteFailed as failed:
            if 0 <= failed.index < len(origins):
                statement, offset = origins[failed.index]
                sql = statement.sql
            else:
                offset, sql = self._offset, ""
            self._failure = Failure(
                offset if offset is not None else self._offset, failed.error, sql
            )
            raise failed.error from None
        finally:
            packed.clear()

    # Internals.

    def _prepare(self, statement: Statement) -> Any:
        if self._failure is not None:
            raise self._failure.error
        if not isinstance(statement, Statement):
            raise _not_a_statement(statement)
        backend = self._backend
        if statement._backend is not backend:
            statement._handle = backend.prepare(statement.sql)
            statement._backend = backend
        return statement._handle

    def _convert(self, params: Params) -> tuple[list[Any], int]:
        """Checks each parameter and turns it into the backend's SQL value; returns the
        values and the bytes of their text and blobs. The common types are tested
        first, by exact type, to keep the hot path short."""
        if type(params) is not tuple and isinstance(params, (str, bytes)):
            raise TypeError(
                f"parameters must be a sequence such as a tuple, not {type(params).__name__}: "
                "write `(value,)` for one parameter"
            )
        out = []
        append = out.append
        size = 0
        for value in params:
            kind = type(value)
            if kind is str:
                if not value.isascii():
                    _utf8_length(value, params)
                size += len(value)
                append(self._text(value))
            elif kind is int:
                if not I64_MIN <= value <= I64_MAX:
                    raise _out_of_range(value, params)
                append(self._integer(value))
            elif value is None:
                append(self._null)
            elif kind is float:
                append(self._real(value))
            elif kind is bytes:
                size += len(value)
                append(self._blob(value))
            else:
                converted, extra = self._convert_other(value, params)
                size += extra
                append(converted)
        return out, size

    def _convert_other(self, value: Any, params: Params) -> tuple[Any, int]:
        """The uncommon parameter types, and the error for those without a SQL type."""
        if isinstance(value, int):  # bool, IntEnum and other int subclasses
            number = int(value)
            if not I64_MIN <= number <= I64_MAX:
                raise _out_of_range(number, params)
            return self._integer(number), 0
        if isinstance(value, str):
            text = str.__str__(value)
            if not text.isascii():
                _utf8_length(text, params)
            return self._text(text), len(text)
        if isinstance(value, float):
            return self._real(float(value)), 0
        if isinstance(value, (bytes, bytearray, memoryview)):
            blob = bytes(value)
            return self._blob(blob), len(blob)
        raise TypeError(
            f"parameter {position(value, params)} is {value!r}, a {type(value).__name__}; SQL "
            "parameters are None, int, float, str or bytes"
        )


def _not_a_statement(value: Any) -> TypeError:
    return TypeError(
        f"expected a Statement, not {type(value).__name__} ({value!r}): declare "
        '`NAME = Statement("...")` once at module level and pass NAME'
    )
