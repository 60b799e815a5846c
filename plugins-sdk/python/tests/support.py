"""Small projectors and helpers shared by the SDK's tests."""

from refract_sdk import Db, Event, Info, Projector, Statement
from refract_sdk._packed import unpack

SCHEMA = "CREATE TABLE seen (offset INTEGER PRIMARY KEY, stream TEXT, type TEXT, payload TEXT)"
SEEN = Statement("INSERT INTO seen (offset, stream, type, payload) VALUES (?1, ?2, ?3, ?4)")


class Recorder(Projector):
    """Records every delivered event, and keeps the `Event` objects it was handed."""

    info = Info("recorder", "Every event, as delivered")
    events: list = []

    def init(self, db: Db) -> None:
        db.execute_script(SCHEMA)
        type(self).events = []

    def handle(self, event: Event, db: Db) -> None:
        type(self).events.append(event)
        db.execute(SEEN, (event.offset, event.stream, event.type, event.data_json))


class SpyBackend:
    """A backend that records what the SDK sends, and fails on request."""

    null = None
    integer = int
    real = float
    text = str
    blob = bytes

    def __init__(self) -> None:
        self.prepared: list = []
        self.batches: list = []

    def prepare(self, sql):
        self.prepared.append(sql)
        return len(self.prepared)

    def execute_packed(self, packed):
        """Records each call's writes as (handle, sql, values), decoded from the packed
        buffers as the host decodes them."""
        writes = unpack(
            packed.statements, packed.param_ends, bytes(packed.kinds), packed.numbers,
            packed.data(),
        )
        self.batches.append(
            [(w.statement, self.prepared[w.statement - 1], w.values) for w in writes]
        )
