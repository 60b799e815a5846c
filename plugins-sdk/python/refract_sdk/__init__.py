"""Write Refract projectors in plain Python.

A projector turns events from Refract's log into a SQLite read model. componentize-py
builds it into a WebAssembly component that the host runs sandboxed: it sees the
events it subscribed to and its own database, and nothing else. This package hides
the component plumbing (the bindings componentize-py generates at build time from
`wit/projector.wit`): subclass `Projector`, bind `WitWorld = export(...)`, and build.

A complete projector::

    from refract_sdk import Db, Event, Info, Projector, Statement, export

    ADD = Statement(
        "INSERT INTO deposits (account, total, count) VALUES (?1, ?2, 1) "
        "ON CONFLICT (account) DO UPDATE SET "
        "total = total + excluded.total, count = count + 1"
    )

    class Deposits(Projector):
        info = Info("deposits", "Deposit totals per account",
                    event_types=["money.deposited"])

        def init(self, db: Db) -> None:
            db.execute_script(
                "CREATE TABLE deposits (account TEXT PRIMARY KEY, total INTEGER, count INTEGER)"
            )

        def handle(self, event: Event, db: Db) -> None:
            data = event.data
            db.execute(ADD, (data["account"], data["amount"]))

    WitWorld = export(Deposits)

The same code natively, against an in-memory SQLite: `refract_sdk.testing`.

How the SDK keeps the hot path cheap:

- A batch of events arrives in a few flat buffers; its text is decoded once, and each
  `Event` is a handful of slices of it. `event.data` parses the JSON on first use.
- A `Statement` is compiled by the host once per instance; later uses send a handle.
- `Db.execute` only buffers the write. The SDK sends a whole batch's writes in one
  `execute-batch` call, at the end of the batch or before a read.

Layout:

- `Projector` and `export`: what an author writes, and what turns it into the
  component (`_projector`).
- `Info`: name, description and subscriptions (`_info`).
- `Event`: one event of a batch (`_event`).
- `Db`, `Statement`, `Rows`, `Row`: the read model (`_db`).
- `SqlError`, `SqlErrorKind`: a refused SQL request (`_errors`).
- `log`: logging into the host's log.
- `reactor`: reactors (sagas) for the `refract:reactor` world: `Reactor`, `Effects`,
  `Timer`, `export_reactor` (imported as `refract_sdk.reactor`; its component side is
  `_reactor_component`).
- `testing`: `TestProjector` and `TestReactor`, which run a projector or a reactor
  natively for unit tests
  (on `_native`, the `sqlite3` stand-in for the host).
- `_batch` (private): the loop behind `init` and `handle`, shared by both sides.
- `_component` (private): the only code that touches the generated bindings; it is
  imported only inside the component.
"""

from . import log
from ._db import FLUSH_BYTES, FLUSH_VALUES, FLUSH_WRITES, Db, Row, Rows, Statement
from ._errors import SqlError, SqlErrorKind
from ._event import Event
from ._info import MAX_NAME_LEN, Info
from ._projector import IN_COMPONENT, Projector, export

__all__ = [
    "FLUSH_BYTES",
    "FLUSH_VALUES",
    "FLUSH_WRITES",
    "IN_COMPONENT",
    "MAX_NAME_LEN",
    "Db",
    "Event",
    "Info",
    "Projector",
    "Row",
    "Rows",
    "SqlError",
    "SqlErrorKind",
    "Statement",
    "export",
    "log",
]

__version__ = "0.1.0"
