"""Native unit tests for projectors: run a projector's real `init` and `handle`
against an in-memory SQLite (the standard library's `sqlite3`), with no wasm build.

    import unittest
    from refract_sdk.testing import TestProjector, event
    from balances import Balances

    class BalancesTest(unittest.TestCase):
        def test_deposit(self):
            t = TestProjector(Balances)
            t.apply([event("money.deposited", stream="acc-1",
                           data={"account": "acc-1", "amount": 250})])
            self.assertEqual(t.rows("SELECT account, balance FROM balances"), [("acc-1", 250)])

Events go through the same packed batch and the same unpacking code as in the
component, writes are deferred and flushed once per batch exactly as there, and each
batch runs in a transaction that rolls back if an event fails.
"""

import json
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable

from . import _batch
from ._db import Db, Rows
from ._event import Event, Utf8Text
from ._info import Info
from ._native import NativeBackend
from ._projector import Projector, check
from .reactor import TIMER_EVENT_TYPE, Effects, Reactor, RecordingEffects, check_reactor

__all__ = ["DEFAULT_EPOCH_MICROS", "BatchError", "InitError", "TestEvent", "TestProjector", "event"]

DEFAULT_EPOCH_MICROS = 1_704_067_200_000_000
"""The default `recorded_at_micros` of the event at offset 0: 2024-01-01T00:00:00Z.
Each later offset adds one second, so timestamps are deterministic."""


class BatchError(Exception):
    """A batch that failed: the event that failed it, and why. It is what the host
    would log and retry."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(offset, message)
        self.offset = offset
        """The offset of the event that failed."""
        self.message = message
        """What the projector or SQLite said."""

    def __str__(self) -> str:
        return f"event at offset {self.offset} failed: {self.message}"


class InitError(Exception):
    """The projector's `init` failed; the message is the host's init error."""


@dataclass
class TestEvent:
    """An event for a test; `event()` makes one. Unset fields get deterministic
    defaults when applied: the next offset, the stream's next version, a UUID-shaped
    id from the offset, and `DEFAULT_EPOCH_MICROS` plus one second per offset."""

    __test__ = False  # not a test case, whatever pytest's name matching thinks

    type: str
    stream: str = "test"
    data_json: str = "{}"
    metadata_json: str | None = None
    id: str | None = None
    offset: int | None = None
    stream_version: int | None = None
    recorded_at_micros: int | None = None

    def as_event(self) -> Event:
        """The event as a projector would see it, for testing a parsing function
        directly. Unset offsets and versions read as 1."""
        offset = 1 if self.offset is None else self.offset
        packed = _Packed()
        packed.push(self, offset, 1 if self.stream_version is None else self.stream_version)
        text = packed.text_view()
        ends = packed.ends
        return Event(offset, packed.stream_versions[0], packed.recorded_at[0], text, 0, *ends)


def event(
    type: str,
    *,
    stream: str = "test",
    data: Any = None,
    data_json: str | None = None,
    metadata: Any = None,
    id: str | None = None,
    offset: int | None = None,
    stream_version: int | None = None,
    recorded_at_micros: int | None = None,
) -> TestEvent:
    """An event of `type` on `stream` (default `test`). `data` and `metadata` are
    serialized to JSON (`data` defaults to `{}`); `data_json` takes the payload as
    text, as is, even if it is not valid JSON."""
    if data is not None and data_json is not None:
        raise TypeError("give data or data_json, not both")
    return TestEvent(
        type=type,
        stream=stream,
        data_json=data_json if data_json is not None else _to_json({} if data is None else data),
        metadata_json=None if metadata is None else _to_json(metadata),
        id=id,
        offset=offset,
        stream_version=stream_version,
        recorded_at_micros=recorded_at_micros,
    )


def _to_json(value: Any) -> str:
    # Compact and UTF-8, as the host stores appended JSON.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class TestProjector:
    """A projector running natively, as the host would run it: `init` once, then
    batches of events, each in one transaction that rolls back if the batch fails.
    Only subscribed events are delivered."""

    __test__ = False

    def __init__(self, projector: type[Projector]) -> None:
        """A fresh in-memory read model after the projector's `init`. Raises
        `ValueError`/`TypeError` if the class is not a usable projector (a bad name,
        say) and `InitError` if `init` fails."""
        self.info: Info = check(projector)
        self._projector = projector()
        self._backend = NativeBackend()
        self._db = Db(self._backend)
        self.last_offset = 0
        """The offset of the last event applied, delivered or not; 0 before any."""
        self._versions: dict[str, int] = {}
        self._transaction("BEGIN")
        message = _batch.init(self._projector, self._db)
        if message is not None:
            self._transaction("ROLLBACK")
            raise InitError(f"init of projector {self.info.name!r} failed: {message}")
        self._transaction("COMMIT")

    def apply(self, events: Iterable[TestEvent]) -> int:
        """Appends `events` to the test's log and delivers the subscribed ones as one
        batch, in one transaction. Returns how many were delivered.

        Events get the next offsets and stream versions unless they set them. On
        failure the transaction rolls back and `BatchError` names the event."""
        packed = _Packed(reads=self.info.reads)
        for item in events:
            offset = self.last_offset + 1 if item.offset is None else item.offset
            if offset <= self.last_offset:
                raise BatchError(offset, f"offsets must grow: {offset} follows {self.last_offset}")
            self.last_offset = offset
            version = (
                self._versions.get(item.stream, 0) + 1
                if item.stream_version is None
                else item.stream_version
            )
            self._versions[item.stream] = version
            if self._accepts(item.type, item.stream):
                packed.push(item, offset, version)
        delivered = len(packed.offsets)
        if delivered == 0:
            return 0
        self._transaction("BEGIN")
        failed = _batch.handle(self._projector, self._db, packed)
        if failed is not None:
            self._transaction("ROLLBACK")
            raise BatchError(failed.offset, failed.message)
        self._transaction("COMMIT")
        return delivered

    def _accepts(self, event_type: str, stream: str) -> bool:
        return self.info.accepts(event_type, stream)

    def query(self, sql: str, params: Any = ()) -> Rows:
        """Runs any SQL query against the read model, outside the sandbox."""
        return self._backend.trusted(lambda _conn: self._backend.run_query(sql, params))

    def rows(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Runs a query and returns its rows as tuples."""
        return self.query(sql, params).tuples()

    def _transaction(self, sql: str) -> None:
        self._backend.trusted(lambda conn: conn.execute(sql))

    def __repr__(self) -> str:
        return f"TestProjector({self.info.name!r}, last_offset={self.last_offset})"


@dataclass
class _Packed:
    """A batch in the host's packed layout (`event-batch`), so native tests exercise
    the same unpacking code as the component. Like the host, it leaves out the
    optional fields the projector does not read."""

    offsets: list[int] = field(default_factory=list)
    stream_versions: list[int] = field(default_factory=list)
    recorded_at: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    _text: bytearray = field(default_factory=bytearray)
    reads: frozenset[str] = frozenset(("id", "metadata"))

    @property
    def text(self) -> bytes:
        return bytes(self._text)

    def text_view(self) -> Any:
        raw = self.text
        decoded = raw.decode("utf-8")
        return decoded if len(decoded) == len(raw) else Utf8Text(raw)

    def push(self, item: TestEvent, offset: int, version: int) -> None:
        self.offsets.append(offset)
        self.stream_versions.append(version)
        self.recorded_at.append(
            DEFAULT_EPOCH_MICROS + offset * 1_000_000
            if item.recorded_at_micros is None
            else item.recorded_at_micros
        )
        fields = (
            ""
            if "id" not in self.reads
            else item.id
            if item.id is not None
            else f"00000000-0000-7000-8000-{offset:012x}",
            item.stream,
            item.type,
            item.data_json,
            (item.metadata_json or "") if "metadata" in self.reads else "",
        )
        for text in fields:
            self._text += text.encode("utf-8")
            self.ends.append(len(self._text))


class TestReactor(TestProjector):
    """A reactor running natively, as `TestProjector` runs a projector, with its
    effects recorded in `effects.requests` instead of applied: `("emit", cause,
    stream, type, data)`, `("schedule", cause, key, delay_ms, payload)` and
    `("cancel", key)`, data and payloads parsed back from JSON. A failed batch's
    requests are dropped, as the host drops them. The reactor's own timer events
    (`timer_event`) are delivered whatever its subscriptions."""

    __test__ = False

    def __init__(self, reactor: type[Reactor]) -> None:
        check_reactor(reactor)
        self.effects = RecordingEffects()
        wired = type(reactor.__name__, (reactor,), {"_effects": Effects(self.effects)})
        super().__init__(wired)

    def _accepts(self, event_type: str, stream: str) -> bool:
        return (
            event_type == TIMER_EVENT_TYPE and stream == f"refract.timer/{self.info.name}"
        ) or self.info.accepts(event_type, stream)

    def apply(self, events: Iterable[TestEvent]) -> int:
        recorded = len(self.effects.requests)
        try:
            return super().apply(events)
        except BatchError:
            del self.effects.requests[recorded:]
            raise

    def timer_event(self, key: str, payload: Any, due_at_micros: int = 0) -> TestEvent:
        """The `refract.timer` event the host appends when timer `key` is due."""
        return event(
            TIMER_EVENT_TYPE,
            stream=f"refract.timer/{self.info.name}",
            data={"key": key, "due_at": due_at_micros, "payload": payload},
        )
