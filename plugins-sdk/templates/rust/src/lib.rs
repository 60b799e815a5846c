//! `{{name}}`: how many items each stream holds, from `item.added` and `item.removed`.

use std::borrow::Cow;

use refract_sdk::{Db, Event, Info, Projector, Result, Statement, params};
use serde::Deserialize;

/// The projector.
pub struct Items;

refract_sdk::export!(Items);

/// The data of `item.added` and `item.removed`: `{"item": "...", "quantity": 2}`.
#[derive(Deserialize)]
struct Change<'a> {
    #[serde(borrow)]
    item: Cow<'a, str>,
    quantity: i64,
}

/// Adds a signed quantity to a stream's item.
static ADD: Statement = Statement::new(
    "INSERT INTO items (stream, item, quantity) VALUES (?1, ?2, ?3)
     ON CONFLICT (stream, item) DO UPDATE SET quantity = quantity + excluded.quantity",
);

impl Projector for Items {
    fn info() -> Info {
        Info::new("{{name}}", "How many items each stream holds")
            .event_types(["item.added", "item.removed"])
            // It never reads an event's id or metadata: the host need not send them.
            .ignores_ids()
            .ignores_metadata()
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script(
            "CREATE TABLE items (
                stream   TEXT NOT NULL,
                item     TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                PRIMARY KEY (stream, item)
            )",
        )
    }

    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
        let change: Change<'_> = event.data()?;
        let quantity = match event.event_type() {
            "item.removed" => -change.quantity,
            _ => change.quantity,
        };
        db.execute(&ADD, params![event.stream(), change.item, quantity])
    }
}

#[cfg(test)]
mod tests {
    use refract_sdk::testing::{TestProjector, json};

    use super::*;

    #[test]
    fn removals_subtract() -> refract_sdk::Result<()> {
        let mut t = TestProjector::<Items>::new()?;
        t.apply([
            Event::build("item.added")
                .stream("cart-1")
                .data(json!({"item": "apple", "quantity": 3})),
            Event::build("item.removed")
                .stream("cart-1")
                .data(json!({"item": "apple", "quantity": 1})),
        ])?;
        let rows: Vec<(String, String, i64)> =
            t.query_as("SELECT stream, item, quantity FROM items")?;
        assert_eq!(rows, [("cart-1".to_owned(), "apple".to_owned(), 2)]);
        Ok(())
    }
}
