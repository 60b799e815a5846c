//! The saga's logic, natively: no wasm build, no host.

use order_saga::OrderSaga;
use refract_reactor_sdk::Event;
use refract_reactor_sdk::testing::{DEFAULT_EPOCH_MICROS, Effect, TestReactor, json};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn emitted(effects: &[Effect]) -> Vec<(String, String)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Emit { event, .. } => Some((event.event_type.clone(), event.stream.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_order_requests_payment_and_schedules_its_timeout() -> Result {
    let mut saga = TestReactor::<OrderSaga>::new()?;
    let effects = saga.apply([Event::build("order.placed")
        .stream("order-1")
        .data(json!({"customer": "ann", "total": 500, "payment_timeout_ms": 60_000}))])?;
    assert_eq!(
        emitted(&effects),
        [("payment.requested".to_owned(), "payment-order-1".to_owned())]
    );
    let due = effects.iter().find_map(|effect| match effect {
        Effect::Schedule { key, due_at, .. } => Some((key.clone(), *due_at)),
        _ => None,
    });
    let (key, due_at) = due.ok_or("no timer scheduled")?;
    assert_eq!(key, "payment-timeout:order-1");
    assert_eq!(
        due_at,
        DEFAULT_EPOCH_MICROS + 1_000_000 + 60_000_000,
        "due a minute after the order (offset 1, recorded a second past the epoch)"
    );
    Ok(())
}

#[test]
fn a_failed_payment_cancels_and_compensates_once() -> Result {
    let mut saga = TestReactor::<OrderSaga>::new()?;
    saga.apply([Event::build("order.placed")
        .stream("order-1")
        .data(json!({"customer": "ann", "total": 500}))])?;
    let failed = || {
        Event::build("payment.failed")
            .stream("payment-order-1")
            .data(json!({"order_id": "order-1", "reason": "declined"}))
    };
    let effects = saga.apply([failed()])?;
    assert_eq!(
        emitted(&effects),
        [
            ("order.cancelled".to_owned(), "order-1".to_owned()),
            ("stock.released".to_owned(), "stock-order-1".to_owned()),
        ]
    );
    assert!(effects.contains(&Effect::Cancel {
        key: "payment-timeout:order-1".into()
    }));
    // A second result for a finished saga changes nothing.
    assert!(saga.apply([failed()])?.is_empty());
    let steps: Vec<(String, String)> = saga.query_as("SELECT order_id, step FROM sagas")?;
    assert_eq!(steps, [("order-1".to_owned(), "cancelled".to_owned())]);
    Ok(())
}
