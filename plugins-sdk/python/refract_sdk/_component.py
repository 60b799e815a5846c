"""The component side: the host's `sql` imports behind `Db`, and the class that
implements the world's exports. Imported only inside the component, where
componentize-py generates the `wit_world` bindings at build time (they are never
checked in).

A projector is built against `refract:projector@0.2.0` and sends its deferred writes
with `execute-packed`. A reactor is built against `refract:reactor@0.1.0`, which
includes `refract:projector@0.1.0`: the bindings then have `execute-batch` instead, and
its writes are unpacked into the 0.1.0 `write` records (`PROJECTOR_0_2` tells which).
"""

from typing import Any

import wit_world
from componentize_py_types import Err
from wit_world.imports import sql, types

from . import _batch
from ._db import Db, Rows, WriteFailed
from ._errors import SqlError, SqlErrorKind
from ._packed import Malformed, PackedWrites, unpack
from ._projector import Projector, check

PROJECTOR_0_2 = hasattr(sql, "execute_packed")
"""Whether the bindings are those of `refract:projector@0.2.0` (a projector) rather
than 0.1.0 (the reactor world)."""

_KINDS = {
    types.SqlErrorKind.DENIED: SqlErrorKind.DENIED,
    types.SqlErrorKind.INVALID: SqlErrorKind.INVALID,
    types.SqlErrorKind.CONSTRAINT: SqlErrorKind.CONSTRAINT,
    types.SqlErrorKind.LIMIT: SqlErrorKind.LIMIT,
    types.SqlErrorKind.INTERRUPTED: SqlErrorKind.INTERRUPTED,
    types.SqlErrorKind.UNKNOWN_STATEMENT: SqlErrorKind.UNKNOWN_STATEMENT,
    types.SqlErrorKind.OTHER: SqlErrorKind.OTHER,
}


def _sql_error(error: Any) -> SqlError:
    return SqlError(_KINDS.get(error.kind, SqlErrorKind.OTHER), error.message)


def _value(value: Any) -> Any:
    return None if type(value) is types.SqlValue_Null else value.value


class ComponentBackend:
    """The host's `refract:projector/sql` imports. `execute` and `query` take values
    built as the generated `sql-value` cases; deferred writes go to `execute-packed`
    as the packed buffers they already are."""

    null = types.SqlValue_Null()
    integer = types.SqlValue_Integer
    real = types.SqlValue_Real
    text = types.SqlValue_Text
    blob = types.SqlValue_Blob

    @staticmethod
    def prepare(text: str) -> int:
        try:
            return sql.prepare(text)
        except Err as e:
            raise _sql_error(e.value) from None

    @staticmethod
    def execute_packed(packed: PackedWrites) -> None:
        if PROJECTOR_0_2:
            batch = sql.WriteBatch(
                packed.statements, packed.param_ends, bytes(packed.kinds), packed.numbers,
                packed.data(),
            )
            try:
                sql.execute_packed(batch)
            except Err as e:
                raise WriteFailed(e.value.index, _sql_error(e.value.error)) from None
        else:
            _execute_batch_0_1(packed)

    @staticmethod
    def execute(handle: int, _sql: str, values: list[Any]) -> int:
        try:
            return sql.execute(handle, values)
        except Err as e:
            raise _sql_error(e.value) from None

    @staticmethod
    def query(handle: int, _sql: str, values: list[Any]) -> Rows:
        try:
            result = sql.query(handle, values)
        except Err as e:
            raise _sql_error(e.value) from None
        return Rows(result.columns, [[_value(v) for v in row] for row in result.rows])

    @staticmethod
    def execute_script(text: str) -> None:
        try:
            sql.execute_script(text)
        except Err as e:
            raise _sql_error(e.value) from None


_VALUE_0_1 = {
    type(None): lambda _: types.SqlValue_Null(),
    int: types.SqlValue_Integer,
    float: types.SqlValue_Real,
    str: types.SqlValue_Text,
    bytes: types.SqlValue_Blob,
}


def _execute_batch_0_1(packed: PackedWrites) -> None:
    """The 0.1.0 path (the reactor world): the packed writes as `write` records, sent
    with `execute-batch`."""
    writes = []
    try:
        for write in unpack(
            packed.statements, packed.param_ends, packed.kinds, packed.numbers, packed.data()
        ):
            writes.append(sql.Write(write.statement, [_VALUE_0_1[type(v)](v) for v in write.values]))
    except Malformed as e:  # an SDK bug: the SDK packed these writes itself
        raise WriteFailed(e.index, e.error) from None
    try:
        sql.execute_batch(writes)
    except Err as e:
        raise WriteFailed(e.value.index, _sql_error(e.value.error)) from None


def world(projector_class: type[Projector]) -> Any:
    """The `WitWorld` class componentize-py instantiates: one projector instance and
    one `Db` for the life of the component instance."""
    info = check(projector_class)
    projector = projector_class()
    db = Db(ComponentBackend())
    subscriptions = types.Subscriptions(list(info.event_types), list(info.stream_prefixes))
    if PROJECTOR_0_2:
        reads = types.EventFields(0)
        if "id" in info.reads:
            reads |= types.EventFields.ID
        if "metadata" in info.reads:
            reads |= types.EventFields.METADATA
        metadata = types.ProjectorInfo(info.name, info.description, subscriptions, reads)
    else:
        metadata = types.ProjectorInfo(info.name, info.description, subscriptions)

    class WitWorld(wit_world.WitWorld):
        def metadata(self) -> types.ProjectorInfo:
            return metadata

        def init(self) -> None:
            message = _batch.init(projector, db)
            if message is not None:
                raise Err(message)

        def handle(self, batch: types.EventBatch) -> None:
            failed = _batch.handle(projector, db, batch)
            if failed is not None:
                raise Err(types.HandleError(failed.offset, failed.message))

    WitWorld.__qualname__ = WitWorld.__name__ = f"WitWorld[{projector_class.__name__}]"
    return WitWorld
