//! The payment saga of an order, as a Refract reactor.
//!
//! | Event                                  | The saga                                          |
//! |----------------------------------------|---------------------------------------------------|
//! | `order.placed` on `order-…`            | emits `payment.requested` on `payment-<order>` and schedules a payment timeout |
//! | `payment.succeeded` on `payment-…`     | emits `order.confirmed`, cancels the timeout       |
//! | `payment.failed` on `payment-…`        | emits `order.cancelled` and the compensating `stock.released` |
//! | the timeout (`refract.timer`)          | the same as a failed payment                       |
//!
//! Each order's step is one row of `sagas`, moved by a conditional `UPDATE`: only the
//! first of a payment result and a timeout wins, so a late payment or a timer that
//! fired just before its cancellation changes nothing. The timeout is the order's
//! `payment_timeout_ms` (default 15 minutes) after the order was recorded; the saga
//! never reads a clock.

use std::borrow::Cow;
use std::time::Duration;

use refract_reactor_sdk::{Db, Effects, Event, Info, Reactor, Result, Statement, Timer, params};
use serde::Deserialize;
use serde_json::json;

/// The `order-saga` reactor.
pub struct OrderSaga;

refract_reactor_sdk::export_reactor!(OrderSaga);

/// How long an order waits for its payment unless it says otherwise.
pub const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `order.placed`: `{customer, total, payment_timeout_ms?}`.
#[derive(Deserialize)]
struct Placed<'a> {
    #[serde(borrow)]
    customer: Cow<'a, str>,
    total: i64,
    payment_timeout_ms: Option<u64>,
}

/// `payment.succeeded` and `payment.failed`: `{order_id, reason?}`.
#[derive(Deserialize)]
struct PaymentResult<'a> {
    #[serde(borrow)]
    order_id: Cow<'a, str>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

/// The timeout's payload: `{order_id}`.
#[derive(Deserialize)]
struct Timeout<'a> {
    #[serde(borrow)]
    order_id: Cow<'a, str>,
}

const SCHEMA: &str = "
    CREATE TABLE sagas (
        order_id   TEXT PRIMARY KEY,
        customer   TEXT NOT NULL,
        total      INTEGER NOT NULL,
        step       TEXT NOT NULL CHECK (step IN ('awaiting_payment', 'confirmed', 'cancelled')),
        reason     TEXT,
        updated_offset INTEGER NOT NULL
    );
";

/// ?1 order, ?2 customer, ?3 total, ?4 offset. The first placement wins.
static START: Statement = Statement::new(
    "INSERT INTO sagas (order_id, customer, total, step, updated_offset)
     VALUES (?1, ?2, ?3, 'awaiting_payment', ?4) ON CONFLICT (order_id) DO NOTHING",
);

/// ?1 order, ?2 new step, ?3 reason, ?4 offset: moves a saga still waiting for payment.
static FINISH: Statement = Statement::new(
    "UPDATE sagas SET step = ?2, reason = ?3, updated_offset = ?4
     WHERE order_id = ?1 AND step = 'awaiting_payment'",
);

fn timer_key(order_id: &str) -> String {
    format!("payment-timeout:{order_id}")
}

impl Reactor for OrderSaga {
    fn info() -> Info {
        Info::new(
            "order-saga",
            "Order payment saga: request, confirm, or cancel and release stock",
        )
        .event_types(["order.placed", "payment.succeeded", "payment.failed"])
    }

    fn emits() -> &'static [&'static str] {
        &[
            "payment.requested",
            "order.confirmed",
            "order.cancelled",
            "stock.released",
        ]
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script(SCHEMA)
    }

    fn react(event: &Event<'_>, db: &mut Db, effects: &mut Effects) -> Result<()> {
        let offset = i64::try_from(event.offset()).unwrap_or(i64::MAX);
        if let Some(timer) = Timer::of(event)? {
            let timeout: Timeout<'_> = timer.payload()?;
            return cancel(&timeout.order_id, "payment timed out", offset, db, effects);
        }
        match event.event_type() {
            "order.placed" => {
                let order_id = event.stream();
                let placed: Placed<'_> = event.data()?;
                let started = db.execute_now(
                    &START,
                    params![order_id, &*placed.customer, placed.total, offset],
                )?;
                if started == 0 {
                    return Ok(());
                }
                effects.emit(
                    &format!("payment-{order_id}"),
                    "payment.requested",
                    &json!({"order_id": order_id, "amount": placed.total, "customer": placed.customer}),
                )?;
                let timeout = placed
                    .payment_timeout_ms
                    .map_or(DEFAULT_PAYMENT_TIMEOUT, Duration::from_millis);
                effects.schedule(
                    &timer_key(order_id),
                    timeout,
                    &json!({"order_id": order_id}),
                )
            }
            "payment.succeeded" => {
                let result: PaymentResult<'_> = event.data()?;
                let order_id = &*result.order_id;
                if db.execute_now(
                    &FINISH,
                    params![order_id, "confirmed", None::<&str>, offset],
                )? == 0
                {
                    return Ok(());
                }
                effects.cancel(&timer_key(order_id))?;
                effects.emit(order_id, "order.confirmed", &json!({"order_id": order_id}))
            }
            "payment.failed" => {
                let result: PaymentResult<'_> = event.data()?;
                let reason = result.reason.as_deref().unwrap_or("payment failed");
                cancel(&result.order_id, reason, offset, db, effects)
            }
            _ => Ok(()),
        }
    }
}

/// Cancels a saga still waiting for payment, with its compensation.
fn cancel(
    order_id: &str,
    reason: &str,
    offset: i64,
    db: &mut Db,
    effects: &mut Effects,
) -> Result<()> {
    if db.execute_now(&FINISH, params![order_id, "cancelled", reason, offset])? == 0 {
        return Ok(());
    }
    effects.cancel(&timer_key(order_id))?;
    effects.emit(order_id, "order.cancelled", &json!({"reason": reason}))?;
    effects.emit(
        &format!("stock-{order_id}"),
        "stock.released",
        &json!({"order_id": order_id, "reason": reason}),
    )
}
