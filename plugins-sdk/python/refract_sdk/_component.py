"""The component side: the host's `sql` imports behind `Db`, and the class that
implements the world's exports. Imported only inside the component, where
componentize-py generates the `wit_world` bindings at build time (they are never
checked in).
"""

from typing import Any

import wit_world
from componentize_py_types import Err
from wit_world.imports import sql, types

from . import _batch
from ._db import Db, Rows, WriteFailed
from ._errors import SqlError, SqlErrorKind
from ._projector import Projector, check

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
    """The host's `refract:projector/sql` imports. Values are built as the generated
    `sql-value` cases, so a batch of writes goes to `execute-batch` as it is."""

    null = types.SqlValue_Null()
    integer = types.SqlValue_Integer
    real = types.SqlValue_Real
    text = types.SqlValue_Text
    blob = types.SqlValue_Blob

    write = sql.Write

    @staticmethod
    def prepare(text: str) -> int:
        try:
            return sql.prepare(text)
        except Err as e:
            raise _sql_error(e.value) from None

    @staticmethod
    def execute_batch(writes: list[Any]) -> None:
        try:
            sql.execute_batch(writes)
        except Err as e:
            raise WriteFailed(e.value.index, _sql_error(e.value.error)) from None

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


def world(projector_class: type[Projector]) -> Any:
    """The `WitWorld` class componentize-py instantiates: one projector instance and
    one `Db` for the life of the component instance."""
    info = check(projector_class)
    projector = projector_class()
    db = Db(ComponentBackend())
    metadata = types.ProjectorInfo(
        info.name,
        info.description,
        types.Subscriptions(list(info.event_types), list(info.stream_prefixes)),
    )

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
