// The payment saga of an order, as a TypeScript reactor: the twin of the Rust
// `example-plugins/order-saga` (and of `order-saga-py`), emit for emit.
//
// | Event                              | The saga                                              |
// |------------------------------------|-------------------------------------------------------|
// | `order.placed` on `order-…`        | emits `payment.requested` on `payment-<order>` and schedules a payment timeout |
// | `payment.succeeded` on `payment-…` | emits `order.confirmed`, cancels the timeout           |
// | `payment.failed` on `payment-…`    | emits `order.cancelled` and the compensating `stock.released` |
// | the timeout (`refract.timer`)      | the same as a failed payment                           |
//
// Each order's step is one row of `sagas`, moved by a conditional `UPDATE`:
// only the first of a payment result and a timeout wins, so a late payment or
// a timer that fired just before its cancellation changes nothing. The timeout
// is the order's `payment_timeout_ms` (default 15 minutes) after the order was
// recorded; the saga never reads a clock.

import { type Db, type Effects, type Event, reactor, Statement, Timer } from "refract-sdk";

/** How long an order waits for its payment unless it says otherwise. */
export const DEFAULT_PAYMENT_TIMEOUT_MS = 15 * 60 * 1000;

/** `order.placed`. */
interface Placed {
  customer: string;
  total: number | bigint;
  payment_timeout_ms?: number | bigint;
}

/** `payment.succeeded` and `payment.failed`. */
interface PaymentResult {
  order_id: string;
  reason?: string | null;
}

/** The timeout's payload. */
interface Timeout {
  order_id: string;
}

const SCHEMA = `
    CREATE TABLE sagas (
        order_id   TEXT PRIMARY KEY,
        customer   TEXT NOT NULL,
        total      INTEGER NOT NULL,
        step       TEXT NOT NULL CHECK (step IN ('awaiting_payment', 'confirmed', 'cancelled')),
        reason     TEXT,
        updated_offset INTEGER NOT NULL
    );
`;

/** ?1 order, ?2 customer, ?3 total, ?4 offset. The first placement wins. */
const START = new Statement(
  `INSERT INTO sagas (order_id, customer, total, step, updated_offset)
   VALUES (?1, ?2, ?3, 'awaiting_payment', ?4) ON CONFLICT (order_id) DO NOTHING`,
);

/** ?1 order, ?2 new step, ?3 reason, ?4 offset: moves a saga still waiting for payment. */
const FINISH = new Statement(
  `UPDATE sagas SET step = ?2, reason = ?3, updated_offset = ?4
   WHERE order_id = ?1 AND step = 'awaiting_payment'`,
);

const timerKey = (orderId: string): string => `payment-timeout:${orderId}`;

export default reactor({
  name: "order-saga-ts",
  description: "Order payment saga (TypeScript): request, confirm, or cancel and release stock",
  eventTypes: ["order.placed", "payment.succeeded", "payment.failed"],
  emits: ["payment.requested", "order.confirmed", "order.cancelled", "stock.released"],

  init(db) {
    db.executeScript(SCHEMA);
  },

  react(event, db, effects) {
    const timer = Timer.of<Timeout>(event);
    if (timer !== undefined) {
      cancel(timer.payload.order_id, "payment timed out", event, db, effects);
      return;
    }
    switch (event.type) {
      case "order.placed": {
        const orderId = event.stream;
        const placed = event.data<Placed>();
        if (db.executeNow(START, orderId, placed.customer, placed.total, event.offset) === 0n) return;
        effects.emit(`payment-${orderId}`, "payment.requested", {
          order_id: orderId,
          amount: placed.total,
          customer: placed.customer,
        });
        const timeout = placed.payment_timeout_ms ?? DEFAULT_PAYMENT_TIMEOUT_MS;
        effects.schedule(timerKey(orderId), timeout, { order_id: orderId });
        return;
      }
      case "payment.succeeded": {
        const orderId = event.data<PaymentResult>().order_id;
        if (db.executeNow(FINISH, orderId, "confirmed", null, event.offset) === 0n) return;
        effects.cancel(timerKey(orderId));
        effects.emit(orderId, "order.confirmed", { order_id: orderId });
        return;
      }
      case "payment.failed": {
        const result = event.data<PaymentResult>();
        cancel(result.order_id, result.reason || "payment failed", event, db, effects);
        return;
      }
    }
  },
});

/** Cancels a saga still waiting for payment, with its compensation. */
function cancel(orderId: string, reason: string, event: Event, db: Db, effects: Effects): void {
  if (db.executeNow(FINISH, orderId, "cancelled", reason, event.offset) === 0n) return;
  effects.cancel(timerKey(orderId));
  effects.emit(orderId, "order.cancelled", { reason });
  effects.emit(`stock-${orderId}`, "stock.released", { order_id: orderId, reason });
}
