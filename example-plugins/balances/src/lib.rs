//! Account balances in cents, from `account.opened`, `money.deposited` and
//! `money.withdrawn`. This is the benchmark workload, so its hot path is lean:
//! borrowed parsing, one prepared upsert per event, and no reads.
//!
//! A deposit or withdrawal for an account that was never opened still counts: the
//! upsert creates the row with `owner` NULL, and a later `account.opened` fills in
//! the owner and keeps the balance. Balances may go negative; the projector
//! reports what the log says, and rules about overdrafts belong to whoever appends
//! the events.

use std::borrow::Cow;

use refract_sdk::{Db, Event, Info, Projector, Result, Statement, params};
use serde::Deserialize;

/// The `balances` projector.
pub struct Balances;

refract_sdk::export!(Balances);

/// `account.opened`: `{account, owner}`.
#[derive(Deserialize)]
struct Opened<'a> {
    #[serde(borrow)]
    account: Cow<'a, str>,
    #[serde(borrow)]
    owner: Cow<'a, str>,
}

/// `money.deposited` and `money.withdrawn`: `{account, amount}`, amount in cents.
#[derive(Deserialize)]
struct Movement<'a> {
    #[serde(borrow)]
    account: Cow<'a, str>,
    amount: i64,
}

const SCHEMA: &str = "
    CREATE TABLE balances (
        account     TEXT PRIMARY KEY,
        owner       TEXT,
        balance     INTEGER NOT NULL,
        tx_count    INTEGER NOT NULL,
        last_offset INTEGER NOT NULL
    );
";

/// Opens an account, or names the owner of one that already saw money.
static OPEN: Statement = Statement::new(
    "INSERT INTO balances (account, owner, balance, tx_count, last_offset)
     VALUES (?1, ?2, 0, 0, ?3)
     ON CONFLICT (account) DO UPDATE SET
         owner = excluded.owner,
         last_offset = excluded.last_offset",
);

/// Adds a signed amount; creates the account (owner NULL) if it was never opened.
static MOVE: Statement = Statement::new(
    "INSERT INTO balances (account, owner, balance, tx_count, last_offset)
     VALUES (?1, NULL, ?2, 1, ?3)
     ON CONFLICT (account) DO UPDATE SET
         balance = balance + excluded.balance,
         tx_count = tx_count + 1,
         last_offset = excluded.last_offset",
);

impl Projector for Balances {
    fn info() -> Info {
        let info = Info::new(
            "balances",
            "Account balances in cents, with owners and transaction counts",
        )
        .event_types(["account.opened", "money.deposited", "money.withdrawn"]);
        // It reads neither ids nor metadata: the host leaves both out of its batches.
        if cfg!(feature = "reads-all-fields") {
            info
        } else {
            info.ignores_ids().ignores_metadata()
        }
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script(SCHEMA)
    }

    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
        let offset = event.offset();
        match event.event_type() {
            "account.opened" => {
                let e: Opened<'_> = event.data()?;
                db.execute(&OPEN, params![e.account, e.owner, offset])
            }
            "money.deposited" => {
                let e: Movement<'_> = event.data()?;
                db.execute(&MOVE, params![e.account, e.amount, offset])
            }
            "money.withdrawn" => {
                let e: Movement<'_> = event.data()?;
                let delta = e
                    .amount
                    .checked_neg()
                    .ok_or("withdrawal amount out of range")?;
                db.execute(&MOVE, params![e.account, delta, offset])
            }
            // Not subscribed: the host never delivers other types.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use refract_sdk::testing::{EventBuilder, TestProjector, json};

    use super::*;

    type Row = (String, Option<String>, i64, i64, i64);

    fn opened(account: &str, owner: &str) -> EventBuilder {
        Event::build("account.opened")
            .stream(account)
            .data(json!({"account": account, "owner": owner}))
    }

    fn deposited(account: &str, amount: i64) -> EventBuilder {
        Event::build("money.deposited")
            .stream(account)
            .data(json!({"account": account, "amount": amount}))
    }

    fn withdrawn(account: &str, amount: i64) -> EventBuilder {
        Event::build("money.withdrawn")
            .stream(account)
            .data(json!({"account": account, "amount": amount}))
    }

    fn rows(t: &TestProjector<Balances>) -> Result<Vec<Row>> {
        t.query_as(
            "SELECT account, owner, balance, tx_count, last_offset FROM balances ORDER BY account",
        )
    }

    #[test]
    fn deposits_and_withdrawals_move_the_balance() -> Result<()> {
        let mut t = TestProjector::<Balances>::new()?;
        t.apply([
            opened("acc-1", "Alice"),
            deposited("acc-1", 10_000),
            withdrawn("acc-1", 2_550),
            opened("acc-2", "Bob"),
        ])?;
        assert_eq!(
            rows(&t)?,
            [
                ("acc-1".into(), Some("Alice".into()), 7_450, 2, 3),
                ("acc-2".into(), Some("Bob".into()), 0, 0, 4),
            ]
        );
        Ok(())
    }

    #[test]
    fn money_for_an_unopened_account_creates_it_without_owner() -> Result<()> {
        let mut t = TestProjector::<Balances>::new()?;
        t.apply([deposited("acc-9", 500)])?;
        assert_eq!(rows(&t)?, [("acc-9".into(), None, 500, 1, 1)]);
        t.apply([opened("acc-9", "Dana")])?;
        assert_eq!(
            rows(&t)?,
            [("acc-9".into(), Some("Dana".into()), 500, 1, 2)]
        );
        Ok(())
    }

    #[test]
    fn unsubscribed_events_are_not_delivered() -> Result<()> {
        let mut t = TestProjector::<Balances>::new()?;
        let delivered = t.apply([
            opened("acc-1", "Alice"),
            Event::build("account.closed").stream("acc-1"),
        ])?;
        assert_eq!(delivered, 1);
        Ok(())
    }

    #[test]
    fn names_with_json_escapes_parse() -> Result<()> {
        let mut t = TestProjector::<Balances>::new()?;
        t.apply([opened("acc-1", "Zoë \"Z\" O'Neil")])?;
        assert_eq!(rows(&t)?[0].1.as_deref(), Some("Zoë \"Z\" O'Neil"));
        Ok(())
    }

    #[test]
    fn a_bad_event_fails_the_batch_and_rolls_it_back() -> Result<()> {
        let mut t = TestProjector::<Balances>::new()?;
        t.apply([deposited("acc-1", 100)])?;
        let err = t
            .apply([
                deposited("acc-1", 100),
                Event::build("money.deposited")
                    .stream("acc-1")
                    .data(json!({"account": "acc-1", "amount": "lots"})),
            ])
            .unwrap_err();
        assert_eq!(err.offset, 3);
        assert!(err.message.contains("invalid type"), "{err}");
        // The first deposit of the failed batch rolled back with it.
        assert_eq!(rows(&t)?, [("acc-1".into(), None, 100, 1, 1)]);
        Ok(())
    }

    /// The read model equals balances computed independently, in plain Rust.
    #[test]
    fn matches_an_independent_computation() -> Result<()> {
        let mut t = TestProjector::<Balances>::new()?;
        let mut expected: BTreeMap<String, Row> = BTreeMap::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut offset: i64 = 0;
        for _batch in 0..20 {
            let mut events = Vec::new();
            for _ in 0..250 {
                offset += 1;
                let account = format!("acc-{}", next(40));
                let amount = i64::try_from(next(100_000)).unwrap_or_default();
                let row = expected
                    .entry(account.clone())
                    .or_insert_with(|| (account.clone(), None, 0, 0, 0));
                row.4 = offset;
                events.push(match next(10) {
                    0 => {
                        let owner = format!("owner-{}", next(1000));
                        row.1 = Some(owner.clone());
                        opened(&account, &owner)
                    }
                    1..=5 => {
                        row.2 += amount;
                        row.3 += 1;
                        deposited(&account, amount)
                    }
                    _ => {
                        row.2 -= amount;
                        row.3 += 1;
                        withdrawn(&account, amount)
                    }
                });
            }
            t.apply(events)?;
        }
        let expected: Vec<Row> = expected.into_values().collect();
        assert_eq!(rows(&t)?, expected);
        Ok(())
    }
}
