"""The component side of a reactor: the host's `emit` and `timers` imports behind
`Effects`, and the class implementing the reactor world's exports. Imported only
inside a component built against `wit/reactor` (`-w reactor`)."""

from typing import Any

import wit_world
from componentize_py_types import Err
from wit_world.imports import emit as wit_emit
from wit_world.imports import timers as wit_timers

from ._component import world as projector_world
from .reactor import EffectRefused, Effects, Reactor


class ComponentEffects:
    """The host's effect imports; a refusal becomes `EffectRefused`."""

    @staticmethod
    def emit(cause: int, stream: str, event_type: str, data: str, metadata: Any, expected: Any) -> None:
        try:
            wit_emit.emit(cause, wit_emit.NewEvent(stream, event_type, data, metadata, expected))
        except Err as e:
            raise EffectRefused(e.value.message) from None

    @staticmethod
    def schedule(cause: int, key: str, delay_ms: int, payload: str) -> None:
        try:
            wit_timers.schedule(cause, key, delay_ms, payload)
        except Err as e:
            raise EffectRefused(e.value.message) from None

    @staticmethod
    def cancel(key: str) -> None:
        try:
            wit_timers.cancel(key)
        except Err as e:
            raise EffectRefused(e.value.message) from None


def world(reactor_class: type[Reactor]) -> Any:
    """The `WitWorld` class of the reactor world: the projector world's exports, with
    the reactor's effects wired in, plus `reactor-info`."""
    info = wit_world.ReactorInfo(list(reactor_class.emits))

    class Wired(reactor_class):  # type: ignore[misc, valid-type]
        _effects = Effects(ComponentEffects())

    Wired.__name__ = reactor_class.__name__
    base = projector_world(Wired)

    class WitWorld(base):  # type: ignore[misc, valid-type]
        def reactor_info(self) -> Any:
            return info

    WitWorld.__qualname__ = WitWorld.__name__ = f"WitWorld[{reactor_class.__name__}]"
    return WitWorld
