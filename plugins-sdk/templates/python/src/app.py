"""{{name}}: stock on hand per SKU, from `stock.added` and `stock.removed` events
whose data is `{"sku": "...", "qty": <integer>}`."""

from refract_sdk import Db, Event, Info, Projector, Statement, export

SCHEMA = """
    CREATE TABLE stock (
        sku         TEXT PRIMARY KEY,
        qty         INTEGER NOT NULL,
        last_offset INTEGER NOT NULL
    );
"""

# Declared once; the host compiles it on first use and the SDK sends a handle after.
MOVE = Statement(
    """INSERT INTO stock (sku, qty, last_offset) VALUES (?1, ?2, ?3)
       ON CONFLICT (sku) DO UPDATE SET
           qty = qty + excluded.qty,
           last_offset = excluded.last_offset"""
)


class ReadModel(Projector):
    info = Info(
        "{{name}}",
        "Stock on hand per SKU",
        event_types=["stock.added", "stock.removed"],
    )

    def init(self, db: Db) -> None:
        db.execute_script(SCHEMA)

    def handle(self, event: Event, db: Db) -> None:
        data = event.data
        qty = data["qty"] if event.type == "stock.added" else -data["qty"]
        # Deferred: the SDK sends the whole batch's writes in one call.
        db.execute(MOVE, (data["sku"], qty, event.offset))


# componentize-py builds the class bound to `WitWorld` into the component.
WitWorld = export(ReadModel)
