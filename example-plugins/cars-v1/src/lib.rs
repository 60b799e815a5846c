//! Version 1 of the `cars` projector: cars, their colors and buyers, and customers.
//!
//! The car or customer id is the event's stream. This version deliberately does
//! not subscribe to `customer.renamed`, so a sold car keeps the name its customer
//! had when it was sold, and so does `customers`. Version 2 (crate `cars-v2`)
//! fixes that; replaying the log through it rebuilds the read model.

use std::borrow::Cow;

use refract_sdk::{Db, Event, Info, Projector, Result, Statement, params};
use serde::Deserialize;

/// The `cars` projector, version 1.
pub struct Cars;

refract_sdk::export!(Cars);

/// `car.created`: `{by, color}`.
#[derive(Deserialize)]
struct Created<'a> {
    #[serde(borrow)]
    by: Cow<'a, str>,
    #[serde(borrow)]
    color: Cow<'a, str>,
}

/// `car.repainted`: `{color}`.
#[derive(Deserialize)]
struct Repainted<'a> {
    #[serde(borrow)]
    color: Cow<'a, str>,
}

/// `car.sold`: `{to}`, a customer id.
#[derive(Deserialize)]
struct Sold<'a> {
    #[serde(borrow)]
    to: Cow<'a, str>,
}

/// `customer.created`: `{name}`.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

const SCHEMA: &str = "
    CREATE TABLE cars (
        car_id        TEXT PRIMARY KEY,
        creator       TEXT,
        color         TEXT,
        sold          INTEGER NOT NULL DEFAULT 0,
        customer_name TEXT,
        customer_id   TEXT
    );
    CREATE TABLE customers (
        customer_id TEXT PRIMARY KEY,
        name        TEXT
    );
";

static CREATE_CAR: Statement = Statement::new(
    "INSERT INTO cars (car_id, creator, color) VALUES (?1, ?2, ?3)
     ON CONFLICT (car_id) DO UPDATE SET creator = excluded.creator, color = excluded.color",
);

/// A repaint of an unknown car changes nothing.
static REPAINT: Statement = Statement::new("UPDATE cars SET color = ?2 WHERE car_id = ?1");

/// Copies the customer's current name onto the car; NULL if the customer is unknown.
static SELL: Statement = Statement::new(
    "UPDATE cars SET
         sold = 1,
         customer_id = ?2,
         customer_name = (SELECT name FROM customers WHERE customer_id = ?2)
     WHERE car_id = ?1",
);

static CREATE_CUSTOMER: Statement = Statement::new(
    "INSERT INTO customers (customer_id, name) VALUES (?1, ?2)
     ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name",
);

impl Projector for Cars {
    fn info() -> Info {
        Info::new("cars", "Cars with their color and buyer, and customers").event_types([
            "car.created",
            "car.repainted",
            "car.sold",
            "customer.created",
        ])
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script(SCHEMA)
    }

    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
        let id = event.stream();
        match event.event_type() {
            "car.created" => {
                let e: Created<'_> = event.data()?;
                db.execute(&CREATE_CAR, params![id, e.by, e.color])
            }
            "car.repainted" => {
                let e: Repainted<'_> = event.data()?;
                db.execute(&REPAINT, params![id, e.color])
            }
            "car.sold" => {
                let e: Sold<'_> = event.data()?;
                db.execute(&SELL, params![id, e.to])
            }
            "customer.created" => {
                let e: Named<'_> = event.data()?;
                db.execute(&CREATE_CUSTOMER, params![id, e.name])
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use refract_sdk::testing::{EventBuilder, TestProjector, json};

    use super::*;

    type CarRow = (String, String, String, bool, Option<String>, Option<String>);

    /// The story both versions are tested with.
    fn story() -> Vec<EventBuilder> {
        vec![
            Event::build("car.created")
                .stream("hrxs21")
                .data(json!({"by": "Alice", "color": "blue"})),
            Event::build("car.repainted")
                .stream("hrxs21")
                .data(json!({"color": "red"})),
            Event::build("car.created")
                .stream("tye24p")
                .data(json!({"by": "Alice", "color": "blue"})),
            Event::build("customer.created")
                .stream("b2dhuw")
                .data(json!({"name": "Bob"})),
            Event::build("car.sold")
                .stream("hrxs21")
                .data(json!({"to": "b2dhuw"})),
            Event::build("customer.renamed")
                .stream("b2dhuw")
                .data(json!({"name": "Charlie"})),
            Event::build("car.repainted")
                .stream("hrxs21")
                .data(json!({"color": "orange"})),
            Event::build("customer.created")
                .stream("wuionx")
                .data(json!({"name": "Dan"})),
            Event::build("car.sold")
                .stream("tye24p")
                .data(json!({"to": "wuionx"})),
        ]
    }

    fn cars(t: &TestProjector<Cars>) -> Result<Vec<CarRow>> {
        t.query_as(
            "SELECT car_id, creator, color, sold, customer_name, customer_id
             FROM cars ORDER BY car_id",
        )
    }

    fn car(id: &str, color: &str, sold_to: Option<(&str, &str)>) -> CarRow {
        (
            id.into(),
            "Alice".into(),
            color.into(),
            sold_to.is_some(),
            sold_to.map(|(name, _)| name.into()),
            sold_to.map(|(_, id)| id.into()),
        )
    }

    #[test]
    fn the_story_keeps_the_old_customer_name() -> Result<()> {
        let mut t = TestProjector::<Cars>::new()?;
        let delivered = t.apply(story())?;
        assert_eq!(delivered, 8, "v1 does not receive customer.renamed");
        assert_eq!(
            cars(&t)?,
            [
                car("hrxs21", "orange", Some(("Bob", "b2dhuw"))),
                car("tye24p", "blue", Some(("Dan", "wuionx"))),
            ]
        );
        let customers: Vec<(String, String)> =
            t.query_as("SELECT customer_id, name FROM customers ORDER BY customer_id")?;
        assert_eq!(
            customers,
            [
                ("b2dhuw".into(), "Bob".into()),
                ("wuionx".into(), "Dan".into())
            ]
        );
        Ok(())
    }

    #[test]
    fn the_story_reads_the_same_one_event_per_batch() -> Result<()> {
        let mut t = TestProjector::<Cars>::new()?;
        for event in story() {
            t.apply([event])?;
        }
        assert_eq!(
            cars(&t)?[0],
            car("hrxs21", "orange", Some(("Bob", "b2dhuw")))
        );
        Ok(())
    }

    #[test]
    fn repainting_an_unknown_car_changes_nothing() -> Result<()> {
        let mut t = TestProjector::<Cars>::new()?;
        t.apply([Event::build("car.repainted")
            .stream("nope")
            .data(json!({"color": "green"}))])?;
        assert!(cars(&t)?.is_empty());
        Ok(())
    }
}
