"""The base class a projector extends, and `export`, which makes it the component."""

import sys
from typing import Any

from ._db import Db
from ._event import Event
from ._info import Info

IN_COMPONENT = sys.platform == "wasi"
"""True inside the WebAssembly component that componentize-py builds; False when the
same code runs natively (tests, type checkers)."""


class Projector:
    """A projector: builds one read model from the events it subscribes to.

    Subclass it, set `info`, and write `init` and `handle`::

        class Deposits(Projector):
            info = Info("deposits", "Deposit totals per account",
                        event_types=["money.deposited"])

            def init(self, db):
                db.execute_script("CREATE TABLE deposits (account TEXT PRIMARY KEY, total INTEGER)")

            def handle(self, event, db):
                db.execute(ADD, (event.data["account"], event.data["amount"]))

        WitWorld = export(Deposits)

    The host reads `info` once per instance, calls `init` once per fresh database,
    and `handle` for every delivered event, in offset order, in batches. Each batch
    runs in one transaction that the host commits with the projector's checkpoint,
    or rolls back if any event fails, so a projector never sees its own half-applied
    batch. Keep all state in the database: the component may be re-instantiated at
    any time, and a replay must rebuild the same model.
    """

    info: Info
    """The projector's name, description and subscriptions."""

    def init(self, db: Db) -> None:
        """Creates the read model's schema in a fresh, empty database. An exception
        fails the deploy with its message."""
        raise NotImplementedError

    def handle(self, event: Event, db: Db) -> None:
        """Applies one event. An exception fails the batch and names this event."""
        raise NotImplementedError


def check(projector: Any) -> Info:
    """Checks that `projector` is a usable `Projector` subclass and returns its info;
    raises `TypeError` or `ValueError` naming what to fix."""
    if not (isinstance(projector, type) and issubclass(projector, Projector)):
        raise TypeError(
            f"export() takes a Projector subclass, not {projector!r}: write "
            "`class MyProjector(Projector): ...` and `WitWorld = export(MyProjector)`"
        )
    name = projector.__name__
    info = getattr(projector, "info", None)
    if not isinstance(info, Info):
        raise TypeError(
            f"{name}.info must be an Info, not {type(info).__name__}: add "
            f'`info = Info("{name.lower()}", "what the read model holds")` to the class'
        )
    for method in ("init", "handle"):
        if getattr(projector, method) is getattr(Projector, method):
            raise TypeError(
                f"{name} must define {method}(self, {'event, ' if method == 'handle' else ''}db)"
            )
    problem = info.problem()
    if problem is not None:
        raise ValueError(f"{name}.info: {problem}")
    return info


def export(projector: type[Projector]) -> Any:
    """Makes `projector` the component's implementation of the Refract contract.

    componentize-py looks for a class named `WitWorld` in the module it builds, so
    bind the result to that name, once, at module level::

        WitWorld = export(Balances)

    Inside the component it returns the class that implements the WIT exports;
    natively (tests) it checks `projector` and returns it unchanged.
    """
    check(projector)
    if not IN_COMPONENT:
        return projector
    from ._component import world  # only the component has the generated bindings

    return world(projector)
