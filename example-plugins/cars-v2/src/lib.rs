//! Version 2 of the `cars` projector: the fix of version 1 (crate `cars-v1`).
//!
//! It also handles `customer.renamed`: the customer's new name goes to
//! `customers` and to every car that customer bought. Same projector name, same
//! schema; replaying the log through this version rebuilds a read model in which
//! no car carries a stale customer name.

use std::borrow::Cow;

use refract_sdk::{Db, Event, Info, Projector, Result, Statement, params};
use serde::Deserialize;

/// The `cars` projector, version 2.
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

/// `customer.created` and `customer.renamed`: `{name}`.
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
    CREATE INDEX cars_by_customer ON cars (customer_id);
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

/// For `customer.created` and `customer.renamed`. A rename of an unknown customer
/// creates it, so a later sale still finds the name.
static SET_CUSTOMER: Statement = Statement::new(
    "INSERT INTO customers (customer_id, name) VALUES (?1, ?2)
     ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name",
);

/// The fix: every car the customer bought carries the new name.
static RENAME_ON_CARS: Statement =
    Statement::new("UPDATE cars SET customer_name = ?2 WHERE customer_id = ?1");

impl Projector for Cars {
    fn info() -> Info {
        Info::new("cars", "Cars with their color and buyer, and customers").event_types([
            "car.created",
            "car.repainted",
            "car.sold",
            "customer.created",
            "customer.renamed",
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
                db.execute(&SET_CUSTOMER, params![id, e.name])
            }
            "customer.renamed" => {
                let e: Named<'_> = event.data()?;
                db.execute(&SET_CUSTOMER, params![id, &e.name])?;
                db.execute(&RENAME_ON_CARS, params![id, e.name])
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
    fn the_story_carries_the_new_customer_name() -> Result<()> {
        let mut t = TestProjector::<Cars>::new()?;
        let delivered = t.apply(story())?;
        assert_eq!(delivered, 9);
        assert_eq!(
            cars(&t)?,
            [
                car("hrxs21", "orange", Some(("Charlie", "b2dhuw"))),
                car("tye24p", "blue", Some(("Dan", "wuionx"))),
            ]
        );
        let customers: Vec<(String, String)> =
            t.query_as("SELECT customer_id, name FROM customers ORDER BY customer_id")?;
        assert_eq!(
            customers,
            [
                ("b2dhuw".into(), "Charlie".into()),
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
            car("hrxs21", "orange", Some(("Charlie", "b2dhuw")))
        );
        Ok(())
    }

    #[test]
    fn a_rename_reaches_every_car_of_the_customer() -> Result<()> {
        let mut t = TestProjector::<Cars>::new()?;
        let mut events = vec![
            Event::build("customer.created")
                .stream("c1")
                .data(json!({"name": "Eve"})),
        ];
        for id in ["car-a", "car-b"] {
            events.push(
                Event::build("car.created")
                    .stream(id)
                    .data(json!({"by": "Alice", "color": "grey"})),
            );
            events.push(
                Event::build("car.sold")
                    .stream(id)
                    .data(json!({"to": "c1"})),
            );
        }
        events.push(
            Event::build("customer.renamed")
                .stream("c1")
                .data(json!({"name": "Eva"})),
        );
        t.apply(events)?;
        let names: Vec<(String,)> = t.query_as("SELECT customer_name FROM cars ORDER BY car_id")?;
        assert_eq!(names, [("Eva".into(),), ("Eva".into(),)]);
        Ok(())
    }
}
