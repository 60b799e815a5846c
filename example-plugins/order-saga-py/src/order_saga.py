"""The payment saga of an order, as a Python reactor: the twin of the Rust
`example-plugins/order-saga`, emit for emit.

| Event                              | The saga                                              |
|------------------------------------|-------------------------------------------------------|
| `order.placed` on `order-…`        | emits `payment.requested` on `payment-<order>` and schedules a payment timeout |
| `payment.succeeded` on `payment-…` | emits `order.confirmed`, cancels the timeout           |
| `payment.failed` on `payment-…`    | emits `order.cancelled` and the compensating `stock.released` |
| the timeout (`refract.timer`)      | the same as a failed payment                           |

Each order's step is one row of `sagas`, moved by a conditional `UPDATE`: only the
first of a payment result and a timeout wins. The timeout is the order's
`payment_timeout_ms` (default 15 minutes) after the order was recorded; the saga never
reads a clock.
"""

from refract_sdk import Db, Event, Info, Statement
from refract_sdk.reactor import Effects, Reactor, Timer, export_reactor

DEFAULT_PAYMENT_TIMEOUT_MS = 15 * 60 * 1000

SCHEMA = """
    CREATE TABLE sagas (
        order_id   TEXT PRIMARY KEY,
        customer   TEXT NOT NULL,
        total      INTEGER NOT NULL,
        step       TEXT NOT NULL CHECK (step IN ('awaiting_payment', 'confirmed', 'cancelled')),
        reason     TEXT,
        updated_offset INTEGER NOT NULL
    );
"""

# ?1 order, ?2 customer, ?3 total, ?4 offset. The first placement wins.
START = Statement(
    """INSERT INTO sagas (order_id, customer, total, step, updated_offset)
       VALUES (?1, ?2, ?3, 'awaiting_payment', ?4) ON CONFLICT (order_id) DO NOTHING"""
)

# ?1 order, ?2 new step, ?3 reason, ?4 offset: moves a saga still waiting for payment.
FINISH = Statement(
    """UPDATE sagas SET step = ?2, reason = ?3, updated_offset = ?4
       WHERE order_id = ?1 AND step = 'awaiting_payment'"""
)


def timer_key(order_id: str) -> str:
    return f"payment-timeout:{order_id}"


class OrderSaga(Reactor):
    info = Info(
        "order-saga-py",
        "Order payment saga (Python): request, confirm, or cancel and release stock",
        event_types=["order.placed", "payment.succeeded", "payment.failed"],
    )
    emits = ["payment.requested", "order.confirmed", "order.cancelled", "stock.released"]

    def init(self, db: Db) -> None:
        db.execute_script(SCHEMA)

    def react(self, event: Event, db: Db, effects: Effects) -> None:
        timer = Timer.of(event)
        if timer is not None:
            cancel(timer.payload["order_id"], "payment timed out", event, db, effects)
            return
        if event.type == "order.placed":
            order_id, placed = event.stream, event.data
            started = db.execute_now(
                START, (order_id, placed["customer"], placed["total"], event.offset)
            )
            if started == 0:
                return
            effects.emit(
                f"payment-{order_id}",
                "payment.requested",
                {"order_id": order_id, "amount": placed["total"], "customer": placed["customer"]},
            )
            timeout = placed.get("payment_timeout_ms", DEFAULT_PAYMENT_TIMEOUT_MS)
            effects.schedule(timer_key(order_id), timeout, {"order_id": order_id})
        elif event.type == "payment.succeeded":
            order_id = event.data["order_id"]
            if db.execute_now(FINISH, (order_id, "confirmed", None, event.offset)) == 0:
                return
            effects.cancel(timer_key(order_id))
            effects.emit(order_id, "order.confirmed", {"order_id": order_id})
        elif event.type == "payment.failed":
            data = event.data
            cancel(data["order_id"], data.get("reason") or "payment failed", event, db, effects)


def cancel(order_id: str, reason: str, event: Event, db: Db, effects: Effects) -> None:
    """Cancels a saga still waiting for payment, with its compensation."""
    if db.execute_now(FINISH, (order_id, "cancelled", reason, event.offset)) == 0:
        return
    effects.cancel(timer_key(order_id))
    effects.emit(order_id, "order.cancelled", {"reason": reason})
    effects.emit(
        f"stock-{order_id}", "stock.released", {"order_id": order_id, "reason": reason}
    )


WitWorld = export_reactor(OrderSaga)
