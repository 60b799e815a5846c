"""Reactors in plain Python: sagas and process managers that react to events by
emitting events, exactly once (the `refract:reactor@0.1.0` world, `wit/reactor/`).

A reactor is a projector with effects: it keeps its state in its own SQLite database
like a read model, and for each event it may emit events and schedule or cancel
timers through `Effects`. The host buffers a batch's effects and applies them only
after the batch succeeds, under deterministic ids, so a replayed batch re-emits
nothing twice. A reactor never reads a clock: a timer's due time is its cause's
`recorded_at` plus a delay, and the host delivers a `refract.timer` event (see
`Timer.of`) when it is due.

A reactor::

    from refract_sdk import Db, Event, Info
    from refract_sdk.reactor import Effects, Reactor, export_reactor

    class Greeter(Reactor):
        info = Info("greeter", "Welcomes new users", event_types=["user.joined"])
        emits = ["mail.requested"]

        def init(self, db: Db) -> None:
            db.execute_script("CREATE TABLE seen (user TEXT PRIMARY KEY)")

        def react(self, event: Event, db: Db, effects: Effects) -> None:
            effects.emit(f"mail-{event.stream}", "mail.requested", {"to": event.stream})

    WitWorld = export_reactor(Greeter)

Build it with componentize-py against the reactor world:
`componentize-py -d wit/reactor -w reactor componentize <module> -p . -p plugins-sdk/python`.
"""

import json
from typing import Any

from ._db import Db
from ._event import Event
from ._info import Info
from ._projector import IN_COMPONENT, Projector, check

TIMER_EVENT_TYPE = "refract.timer"
"""The type of the event the host appends when a timer is due."""


class EffectRefused(Exception):
    """The host refused an emit or a timer request (an undeclared event type, a bad
    stream name...). Raised from `Effects`; left uncaught, it fails the batch at the
    event being handled, naming the host's message."""


class Effects:
    """A batch's effects, each caused by the event being handled.

    `backend` is the host's `emit` and `timers` imports inside the component, or any
    object with the same three methods natively (see `RecordingEffects`)."""

    __slots__ = ("_backend", "_cause")

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._cause = 0

    def emit(
        self,
        stream: str,
        event_type: str,
        data: Any,
        metadata: dict[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> None:
        """Emits `event_type` with `data` (any JSON value) on `stream`. The host adds
        `causation_id`, `correlation_id` and `reactor` to `metadata`.
        `expected_version` is the version the stream must be at just before it (0:
        the stream must not exist yet)."""
        self._backend.emit(
            self._cause,
            stream,
            event_type,
            json.dumps(data, separators=(",", ":")),
            None if metadata is None else json.dumps(metadata, separators=(",", ":")),
            expected_version,
        )

    def schedule(self, key: str, delay_ms: int, payload: Any) -> None:
        """Schedules timer `key` to fire `delay_ms` milliseconds after the cause's
        `recorded_at`, carrying `payload` (any JSON value). A pending `key` is
        replaced."""
        self._backend.schedule(
            self._cause, key, delay_ms, json.dumps(payload, separators=(",", ":"))
        )

    def cancel(self, key: str) -> None:
        """Cancels the pending timer `key`, if any."""
        self._backend.cancel(key)


class Timer:
    """A `refract.timer` event of this reactor: its `key`, `due_at_micros` and the
    `payload` given to `Effects.schedule`."""

    __slots__ = ("key", "due_at_micros", "payload")

    def __init__(self, key: str, due_at_micros: int, payload: Any) -> None:
        self.key = key
        self.due_at_micros = due_at_micros
        self.payload = payload

    @staticmethod
    def of(event: Event) -> "Timer | None":
        """The timer `event` carries, or None if it is not a timer event."""
        if event.type != TIMER_EVENT_TYPE:
            return None
        data = event.data
        return Timer(data["key"], data["due_at"], data.get("payload"))


class Reactor(Projector):
    """A reactor. Subclass it, set `info` and `emits`, and write `init` and `react`.

    `emits` lists the event types it may emit; an emit of any other type is refused.
    The host delivers the reactor's own timer events whatever its subscriptions."""

    emits: list[str]
    """The event types this reactor may emit."""

    _effects: Effects

    def react(self, event: Event, db: Db, effects: Effects) -> None:
        """Reacts to one event. An exception fails the batch, with none of its
        effects, and names this event."""
        raise NotImplementedError

    def handle(self, event: Event, db: Db) -> None:
        effects = self._effects
        effects._cause = event.offset
        self.react(event, db, effects)


def check_reactor(reactor: Any) -> Info:
    """Checks that `reactor` is a usable `Reactor` subclass and returns its info."""
    if not (isinstance(reactor, type) and issubclass(reactor, Reactor)):
        raise TypeError(
            f"export_reactor() takes a Reactor subclass, not {reactor!r}: write "
            "`class MyReactor(Reactor): ...` and `WitWorld = export_reactor(MyReactor)`"
        )
    info = check(reactor)
    name = reactor.__name__
    if reactor.react is Reactor.react:
        raise TypeError(f"{name} must define react(self, event, db, effects)")
    emits = getattr(reactor, "emits", None)
    if not (isinstance(emits, (list, tuple)) and all(isinstance(t, str) for t in emits)):
        raise TypeError(
            f'{name}.emits must be a list of event types, for example `emits = ["order.confirmed"]`'
        )
    return info


def export_reactor(reactor: type[Reactor]) -> Any:
    """Makes `reactor` the component's implementation of the reactor world; bind the
    result to `WitWorld` at module level. Natively it checks `reactor` and returns it."""
    check_reactor(reactor)
    if not IN_COMPONENT:
        return reactor
    from ._reactor_component import world  # only the component has the bindings

    return world(reactor)


class RecordingEffects:
    """A native stand-in for the host's effect imports, for unit tests: it records
    each request as a tuple in `requests`."""

    def __init__(self) -> None:
        self.requests: list[tuple[Any, ...]] = []

    def emit(self, cause: int, stream: str, event_type: str, data: str, metadata: Any, expected: Any) -> None:
        self.requests.append(("emit", cause, stream, event_type, json.loads(data)))

    def schedule(self, cause: int, key: str, delay_ms: int, payload: str) -> None:
        self.requests.append(("schedule", cause, key, delay_ms, json.loads(payload)))

    def cancel(self, key: str) -> None:
        self.requests.append(("cancel", key))
