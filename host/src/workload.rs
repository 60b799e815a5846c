//! Deterministic event workloads, for the demo and the benchmark.
//!
//! The same seed always yields the same events, on every machine: the generator is
//! ChaCha8, whose output is fixed by its specification rather than by a crate version.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::log::NewEvent;

/// Accounts opened before any money moves.
pub const BALANCES_ACCOUNTS: usize = 1_000;

/// The share of money movements that are deposits; the rest are withdrawals.
pub const BALANCES_DEPOSIT_SHARE: f64 = 0.7;

/// The largest single deposit or withdrawal, in cents.
pub const BALANCES_MAX_AMOUNT_CENTS: i64 = 50_000;

/// The `balances` workload: [`BALANCES_ACCOUNTS`] `account.opened` events (fewer if
/// `events` is smaller), then a 70/30 mix of `money.deposited` and `money.withdrawn`
/// with integer cents, until `events` events in all. Each account is its own stream,
/// `account-<n>`.
pub fn balances(seed: u64, events: usize) -> impl Iterator<Item = NewEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let accounts = BALANCES_ACCOUNTS.min(events).max(1);
    (0..events).map(move |index| {
        if index < accounts {
            let account = account_name(index);
            let owner = format!("owner-{}", rng.random_range(0..10_000u32));
            return NewEvent::new(
                format!("account-{account}"),
                "account.opened",
                json!({ "account": account, "owner": owner }).to_string(),
            );
        }
        let account = account_name(rng.random_range(0..accounts));
        let amount = rng.random_range(1..=BALANCES_MAX_AMOUNT_CENTS);
        let event_type = if rng.random_bool(BALANCES_DEPOSIT_SHARE) {
            "money.deposited"
        } else {
            "money.withdrawn"
        };
        NewEvent::new(
            format!("account-{account}"),
            event_type,
            json!({ "account": account, "amount": amount }).to_string(),
        )
    })
}

fn account_name(index: usize) -> String {
    format!("acc-{index:04}")
}

/// The `cars` story from the README: a car repainted and sold, and a customer renamed
/// after the sale, which `cars` v1 misses and v2 handles. `part` 1 is events 1 to 6,
/// part 2 is events 7 to 9.
pub fn cars_story(part: u8) -> Vec<NewEvent> {
    let event = |stream: &str, event_type: &str, data: serde_json::Value| {
        NewEvent::new(stream, event_type, data.to_string())
    };
    match part {
        1 => vec![
            event(
                "hrxs21",
                "car.created",
                json!({ "by": "Alice", "color": "blue" }),
            ),
            event("hrxs21", "car.repainted", json!({ "color": "red" })),
            event(
                "tye24p",
                "car.created",
                json!({ "by": "Alice", "color": "blue" }),
            ),
            event("b2dhuw", "customer.created", json!({ "name": "Bob" })),
            event("hrxs21", "car.sold", json!({ "to": "b2dhuw" })),
            event("b2dhuw", "customer.renamed", json!({ "name": "Charlie" })),
        ],
        _ => vec![
            event("hrxs21", "car.repainted", json!({ "color": "orange" })),
            event("wuionx", "customer.created", json!({ "name": "Dan" })),
            event("tye24p", "car.sold", json!({ "to": "wuionx" })),
        ],
    }
}

/// A small `order-summary` workload: `orders` orders from a handful of customers, some
/// shipped and some cancelled.
pub fn orders(seed: u64, orders: usize) -> Vec<NewEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let customers = ["ada", "grace", "linus", "barbara", "ken"];
    let mut events = Vec::with_capacity(orders * 2);
    for index in 0..orders {
        let stream = format!("order-{index:05}");
        let customer = customers[rng.random_range(0..customers.len())];
        let total: i64 = rng.random_range(500..=250_000);
        events.push(NewEvent::new(
            stream.clone(),
            "order.placed",
            json!({ "customer": customer, "total": total }).to_string(),
        ));
        match rng.random_range(0..10u8) {
            0..=5 => events.push(NewEvent::new(stream, "order.shipped", "{}")),
            6 => events.push(NewEvent::new(
                stream,
                "order.cancelled",
                json!({ "reason": "customer request" }).to_string(),
            )),
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_is_deterministic_and_shaped_as_documented() {
        let first: Vec<_> = balances(7, 5_000).collect();
        let again: Vec<_> = balances(7, 5_000).collect();
        let other: Vec<_> = balances(8, 5_000).collect();
        assert_eq!(first.len(), 5_000);
        assert_eq!(
            first.iter().map(|e| &e.data).collect::<Vec<_>>(),
            again.iter().map(|e| &e.data).collect::<Vec<_>>()
        );
        assert_ne!(
            first.iter().map(|e| &e.data).collect::<Vec<_>>(),
            other.iter().map(|e| &e.data).collect::<Vec<_>>()
        );
        assert!(
            first[..BALANCES_ACCOUNTS]
                .iter()
                .all(|e| e.event_type == "account.opened")
        );
        let deposits = first[BALANCES_ACCOUNTS..]
            .iter()
            .filter(|e| e.event_type == "money.deposited")
            .count() as f64;
        let share = deposits / (5_000 - BALANCES_ACCOUNTS) as f64;
        assert!((0.65..0.75).contains(&share), "deposit share {share}");
    }

    #[test]
    fn cars_story_has_nine_events() {
        assert_eq!(cars_story(1).len() + cars_story(2).len(), 9);
    }
}
