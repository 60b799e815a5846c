//! Orders and per-customer totals, from `order.placed`, `order.shipped` and
//! `order.cancelled`. The order id is the event's stream; totals are in cents.
//!
//! An order is `placed` until it is shipped or cancelled; both are final. An event
//! that does not fit (shipping or cancelling an unknown order or one that is no
//! longer `placed`, or placing an order id a second time) changes nothing and is
//! recorded in `ignored_events`, so the outcome is deterministic and visible.
//!
//! Every decision is made in SQL by the deferred writes themselves, so the
//! projector never reads while handling an event and keeps one host call per batch.

use std::borrow::Cow;

use refract_sdk::{Db, Event, Info, Projector, Result, Statement, params};
use serde::Deserialize;

/// The `order-summary` projector.
pub struct OrderSummary;

refract_sdk::export!(OrderSummary);

/// `order.placed`: `{customer, total}`.
#[derive(Deserialize)]
struct Placed<'a> {
    #[serde(borrow)]
    customer: Cow<'a, str>,
    total: i64,
}

/// `order.cancelled`: `{reason}`; a missing reason reads as NULL.
#[derive(Deserialize)]
struct Cancelled<'a> {
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

const SCHEMA: &str = "
    CREATE TABLE orders (
        order_id       TEXT PRIMARY KEY,
        customer       TEXT NOT NULL,
        total          INTEGER NOT NULL,
        status         TEXT NOT NULL CHECK (status IN ('placed', 'shipped', 'cancelled')),
        cancel_reason  TEXT,
        placed_offset  INTEGER NOT NULL,
        updated_offset INTEGER NOT NULL
    );
    CREATE INDEX orders_by_customer ON orders (customer);

    -- Per customer: orders and cents placed, shipped and cancelled. Placed counts
    -- every order ever placed; open is what is neither shipped nor cancelled.
    CREATE TABLE customer_totals (
        customer         TEXT PRIMARY KEY,
        orders_placed    INTEGER NOT NULL,
        orders_shipped   INTEGER NOT NULL,
        orders_cancelled INTEGER NOT NULL,
        total_placed     INTEGER NOT NULL,
        total_shipped    INTEGER NOT NULL,
        total_cancelled  INTEGER NOT NULL,
        orders_open INTEGER GENERATED ALWAYS AS
            (orders_placed - orders_shipped - orders_cancelled) VIRTUAL,
        total_open  INTEGER GENERATED ALWAYS AS
            (total_placed - total_shipped - total_cancelled) VIRTUAL
    );

    -- Events that changed nothing, and the order's status when they arrived (NULL:
    -- the order was unknown).
    CREATE TABLE ignored_events (
        event_offset INTEGER PRIMARY KEY,
        order_id     TEXT NOT NULL,
        event_type   TEXT NOT NULL,
        order_status TEXT
    );
";

/// ?1 order id, ?2 customer, ?3 total, ?4 offset. The first placement wins.
static PLACE: Statement = Statement::new(
    "INSERT INTO orders (order_id, customer, total, status, placed_offset, updated_offset)
     VALUES (?1, ?2, ?3, 'placed', ?4, ?4)
     ON CONFLICT (order_id) DO NOTHING",
);

/// ?1 order id, ?2 offset: counts the order if this event placed it.
static COUNT_PLACED: Statement = Statement::new(
    "INSERT INTO customer_totals (customer, orders_placed, orders_shipped, orders_cancelled,
                                  total_placed, total_shipped, total_cancelled)
     SELECT customer, 1, 0, 0, total, 0, 0 FROM orders WHERE order_id = ?1 AND placed_offset = ?2
     ON CONFLICT (customer) DO UPDATE SET
         orders_placed = orders_placed + 1,
         total_placed = total_placed + excluded.total_placed",
);

/// ?1 order id, ?2 offset: records a placement that lost to an earlier one.
static IGNORE_DUPLICATE: Statement = Statement::new(
    "INSERT INTO ignored_events (event_offset, order_id, event_type, order_status)
     SELECT ?2, ?1, 'order.placed', status FROM orders WHERE order_id = ?1 AND placed_offset <> ?2",
);

/// ?1 order id, ?2 offset, ?3 event type: records the event unless the order is placed.
/// It runs before the status changes.
static IGNORE_UNLESS_PLACED: Statement = Statement::new(
    "INSERT INTO ignored_events (event_offset, order_id, event_type, order_status)
     SELECT ?2, ?1, ?3, (SELECT status FROM orders WHERE order_id = ?1)
     WHERE NOT EXISTS (SELECT 1 FROM orders WHERE order_id = ?1 AND status = 'placed')",
);

/// ?1 order id. Runs while the order is still `placed`.
static COUNT_SHIPPED: Statement = Statement::new(
    "UPDATE customer_totals SET
         orders_shipped = orders_shipped + 1,
         total_shipped = total_shipped + o.total
     FROM (SELECT customer, total FROM orders WHERE order_id = ?1 AND status = 'placed') AS o
     WHERE customer_totals.customer = o.customer",
);

/// ?1 order id, ?2 offset.
static SHIP: Statement = Statement::new(
    "UPDATE orders SET status = 'shipped', updated_offset = ?2
     WHERE order_id = ?1 AND status = 'placed'",
);

/// ?1 order id. Runs while the order is still `placed`.
static COUNT_CANCELLED: Statement = Statement::new(
    "UPDATE customer_totals SET
         orders_cancelled = orders_cancelled + 1,
         total_cancelled = total_cancelled + o.total
     FROM (SELECT customer, total FROM orders WHERE order_id = ?1 AND status = 'placed') AS o
     WHERE customer_totals.customer = o.customer",
);

/// ?1 order id, ?2 offset, ?3 reason.
static CANCEL: Statement = Statement::new(
    "UPDATE orders SET status = 'cancelled', cancel_reason = ?3, updated_offset = ?2
     WHERE order_id = ?1 AND status = 'placed'",
);

impl Projector for OrderSummary {
    fn info() -> Info {
        Info::new(
            "order-summary",
            "Orders with their status, and per-customer totals placed, shipped and cancelled",
        )
        .event_types(["order.placed", "order.shipped", "order.cancelled"])
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script(SCHEMA)
    }

    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
        let order = event.stream();
        let offset = event.offset();
        match event.event_type() {
            "order.placed" => {
                let e: Placed<'_> = event.data()?;
                db.execute(&PLACE, params![order, e.customer, e.total, offset])?;
                db.execute(&COUNT_PLACED, params![order, offset])?;
                db.execute(&IGNORE_DUPLICATE, params![order, offset])
            }
            kind @ "order.shipped" => {
                db.execute(&IGNORE_UNLESS_PLACED, params![order, offset, kind])?;
                db.execute(&COUNT_SHIPPED, params![order])?;
                db.execute(&SHIP, params![order, offset])
            }
            kind @ "order.cancelled" => {
                let e: Cancelled<'_> = event.data()?;
                db.execute(&IGNORE_UNLESS_PLACED, params![order, offset, kind])?;
                db.execute(&COUNT_CANCELLED, params![order])?;
                db.execute(&CANCEL, params![order, offset, e.reason])
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use refract_sdk::testing::{EventBuilder, TestProjector, json};

    use super::*;

    /// customer, placed, shipped, cancelled, open (orders); placed, shipped,
    /// cancelled, open (cents).
    type Totals = (String, i64, i64, i64, i64, i64, i64, i64, i64);

    /// offset, order id, event type, the order's status then.
    type Ignored = (i64, String, String, Option<String>);

    fn placed(order: &str, customer: &str, total: i64) -> EventBuilder {
        Event::build("order.placed")
            .stream(order)
            .data(json!({"customer": customer, "total": total}))
    }

    fn shipped(order: &str) -> EventBuilder {
        Event::build("order.shipped").stream(order)
    }

    fn cancelled(order: &str, reason: &str) -> EventBuilder {
        Event::build("order.cancelled")
            .stream(order)
            .data(json!({"reason": reason}))
    }

    fn totals(t: &TestProjector<OrderSummary>) -> Result<Vec<Totals>> {
        t.query_as(
            "SELECT customer, orders_placed, orders_shipped, orders_cancelled, orders_open,
                    total_placed, total_shipped, total_cancelled, total_open
             FROM customer_totals ORDER BY customer",
        )
    }

    fn ignored(t: &TestProjector<OrderSummary>) -> Result<Vec<Ignored>> {
        t.query_as(
            "SELECT event_offset, order_id, event_type, order_status
             FROM ignored_events ORDER BY event_offset",
        )
    }

    fn lifecycle() -> Vec<EventBuilder> {
        vec![
            placed("o-1", "ann", 1_000),
            placed("o-2", "ann", 2_500),
            placed("o-3", "ben", 700),
            shipped("o-1"),
            cancelled("o-2", "changed mind"),
        ]
    }

    #[test]
    fn totals_follow_the_lifecycle() -> Result<()> {
        let mut t = TestProjector::<OrderSummary>::new()?;
        t.apply(lifecycle())?;
        assert_eq!(
            totals(&t)?,
            [
                ("ann".into(), 2, 1, 1, 0, 3_500, 1_000, 2_500, 0),
                ("ben".into(), 1, 0, 0, 1, 700, 0, 0, 700),
            ]
        );
        let orders: Vec<(String, String, Option<String>)> =
            t.query_as("SELECT order_id, status, cancel_reason FROM orders ORDER BY order_id")?;
        assert_eq!(
            orders,
            [
                ("o-1".into(), "shipped".into(), None),
                (
                    "o-2".into(),
                    "cancelled".into(),
                    Some("changed mind".into())
                ),
                ("o-3".into(), "placed".into(), None),
            ]
        );
        assert!(ignored(&t)?.is_empty());
        Ok(())
    }

    #[test]
    fn events_that_do_not_fit_change_nothing_and_are_recorded() -> Result<()> {
        let mut t = TestProjector::<OrderSummary>::new()?;
        t.apply(lifecycle())?;
        let before = totals(&t)?;
        t.apply([
            shipped("o-404"),             // 6: unknown order
            cancelled("o-1", "too late"), // 7: already shipped
            shipped("o-2"),               // 8: already cancelled
            placed("o-3", "mallory", 1),  // 9: order id taken
        ])?;
        assert_eq!(totals(&t)?, before);
        assert_eq!(
            ignored(&t)?,
            [
                (6, "o-404".into(), "order.shipped".into(), None),
                (
                    7,
                    "o-1".into(),
                    "order.cancelled".into(),
                    Some("shipped".into())
                ),
                (
                    8,
                    "o-2".into(),
                    "order.shipped".into(),
                    Some("cancelled".into())
                ),
                (
                    9,
                    "o-3".into(),
                    "order.placed".into(),
                    Some("placed".into())
                ),
            ]
        );
        Ok(())
    }

    #[test]
    fn batching_does_not_change_the_result() -> Result<()> {
        let mut all_at_once = TestProjector::<OrderSummary>::new()?;
        all_at_once.apply(lifecycle())?;
        let mut one_by_one = TestProjector::<OrderSummary>::new()?;
        for event in lifecycle() {
            one_by_one.apply([event])?;
        }
        assert_eq!(totals(&all_at_once)?, totals(&one_by_one)?);
        Ok(())
    }
}
