//! The SDK's semantics, natively: deferred writes, read-your-writes, failure
//! attribution, subscriptions, and the sandbox approximation.

use refract_sdk::testing::{EventBuilder, TestProjector, json};
use refract_sdk::{
    Db, Error, Event, Info, Projector, Result, SqlErrorKind, Statement, Value, params,
};

/// Records every event it receives; `data.v` must be below 10 (a CHECK constraint),
/// and a few event types exercise the rest of the API.
struct Recorder;

static RECORD: Statement = Statement::new(
    "INSERT INTO seen (offset_, id, stream, version, type, at, v, meta) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
);
static COUNT: Statement = Statement::new("SELECT count(*) AS n, max(v) AS top FROM seen");
static CLAIM: Statement = Statement::new("INSERT INTO names (name) VALUES (?1)");
static NOTE: Statement = Statement::new("INSERT INTO notes (note) VALUES (?1)");
static BROKEN: Statement = Statement::new("INSERT INTO nowhere VALUES (?1)");
static ATTACH: Statement = Statement::new("ATTACH DATABASE ':memory:' AS evil");

impl Projector for Recorder {
    fn info() -> Info {
        Info::new("recorder", "Records events")
            .event_types(["seen", "count", "claim", "swallow", "broken", "attach"])
            .stream_prefixes(["s-"])
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script(
            "CREATE TABLE seen (offset_ INTEGER, id TEXT, stream TEXT, version INTEGER, type TEXT,
                                at INTEGER, v INTEGER CHECK (v < 10), meta TEXT);
             CREATE TABLE names (name TEXT PRIMARY KEY);
             CREATE TABLE notes (note TEXT);",
        )
    }

    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Data {
            #[serde(default)]
            v: i64,
        }
        #[derive(serde::Deserialize)]
        struct Meta<'a> {
            user: &'a str,
        }
        let data: Data = event.data()?;
        let user = event.metadata_as::<Meta<'_>>()?.map(|m| m.user);
        db.execute(
            &RECORD,
            params![
                event.offset(),
                event.id(),
                event.stream(),
                event.stream_version(),
                event.event_type(),
                event.recorded_at_micros(),
                data.v,
                user
            ],
        )?;
        match event.event_type() {
            "count" => {
                // Reads see the writes buffered before them, in this same batch.
                let rows = db.query(&COUNT, params![])?;
                let row = rows.first().ok_or("no row")?;
                let n: i64 = row.get("n")?;
                db.execute(&NOTE, params![format!("count={n}")])
            }
            "claim" => match db.execute_now(&CLAIM, params![event.stream()]) {
                Ok(_) => db.execute(&NOTE, params!["claimed"]),
                Err(e) if e.sql_kind() == Some(SqlErrorKind::Constraint) => {
                    db.execute(&NOTE, params!["taken"])
                }
                Err(e) => Err(e),
            },
            "swallow" => {
                // A failed deferred write fails the batch even if the projector
                // ignores the error.
                let _ignored = db.flush();
                Ok(())
            }
            "broken" => db.execute(&BROKEN, params![1]),
            "attach" => {
                let e = db
                    .execute_now(&ATTACH, params![])
                    .expect_err("ATTACH is denied");
                db.execute(&NOTE, params![e.to_string()])
            }
            _ => Ok(()),
        }
    }
}

fn ev(event_type: &str, v: i64) -> EventBuilder {
    Event::build(event_type)
        .stream("s-1")
        .data(json!({ "v": v }))
}

fn notes(t: &TestProjector<Recorder>) -> Result<Vec<String>> {
    Ok(
        t.query_as::<(String,)>("SELECT note FROM notes ORDER BY rowid")?
            .into_iter()
            .map(|(n,)| n)
            .collect(),
    )
}

#[test]
fn events_arrive_with_all_their_fields() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    t.apply([
        ev("seen", 1).metadata(json!({"user": "ann"})),
        ev("seen", 2).id("custom-id").recorded_at_micros(42),
        Event::build("seen").stream("s-2"),
    ])?;
    type Seen = (i64, String, String, i64, String, i64, i64, Option<String>);
    let rows: Vec<Seen> = t.query_as("SELECT * FROM seen ORDER BY offset_")?;
    assert_eq!(
        rows,
        [
            (
                1,
                "00000000-0000-7000-8000-000000000001".into(),
                "s-1".into(),
                1,
                "seen".into(),
                1_704_067_201_000_000,
                1,
                Some("ann".into())
            ),
            (
                2,
                "custom-id".into(),
                "s-1".into(),
                2,
                "seen".into(),
                42,
                2,
                None
            ),
            (
                3,
                "00000000-0000-7000-8000-000000000003".into(),
                "s-2".into(),
                1,
                "seen".into(),
                1_704_067_203_000_000,
                0,
                None
            ),
        ]
    );
    Ok(())
}

#[test]
fn only_subscribed_events_are_delivered_but_all_take_offsets() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    let delivered = t.apply([
        ev("seen", 1),
        ev("other.type", 1),
        Event::build("seen").stream("x-1"),
        ev("seen", 2),
    ])?;
    assert_eq!(delivered, 2);
    assert_eq!(t.last_offset(), 4);
    let offsets: Vec<(i64, i64)> =
        t.query_as("SELECT offset_, version FROM seen ORDER BY offset_")?;
    // Stream versions count every event of the stream, delivered or not.
    assert_eq!(offsets, [(1, 1), (4, 3)]);
    Ok(())
}

#[test]
fn queries_see_the_writes_buffered_before_them() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    t.apply([ev("seen", 1), ev("seen", 2), ev("count", 3)])?;
    assert_eq!(notes(&t)?, ["count=3"]);
    Ok(())
}

#[test]
fn an_immediate_write_returns_its_error_as_a_value() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    t.apply([ev("claim", 0), ev("claim", 0)])?;
    assert_eq!(notes(&t)?, ["claimed", "taken"]);
    Ok(())
}

#[test]
fn a_failed_deferred_write_names_the_event_that_issued_it() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    let err = t
        .apply([ev("seen", 1), ev("seen", 99), ev("seen", 2), ev("seen", 3)])
        .expect_err("the CHECK constraint fails");
    assert_eq!(err.offset, 2);
    assert!(err.message.contains("constraint"), "{err}");
    assert!(err.message.contains("INSERT INTO seen"), "{err}");
    // The whole batch rolled back.
    assert!(t.query("SELECT * FROM seen")?.is_empty());
    // And the projector goes on with the next batch.
    t.apply([ev("seen", 1)])?;
    assert_eq!(t.query("SELECT * FROM seen")?.len(), 1);
    Ok(())
}

#[test]
fn a_swallowed_deferred_failure_still_fails_the_batch() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    let err = t
        .apply([ev("seen", 1), ev("swallow", 50), ev("seen", 2)])
        .expect_err("the failure is not lost");
    assert_eq!(err.offset, 2);
    Ok(())
}

#[test]
fn a_statement_that_does_not_compile_fails_its_event() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    let err = t
        .apply([ev("seen", 1), ev("broken", 1)])
        .expect_err("no such table");
    assert_eq!(err.offset, 2);
    assert!(err.message.contains("nowhere"), "{err}");
    Ok(())
}

#[test]
fn bad_event_data_fails_its_event() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    let err = t
        .apply([
            ev("seen", 1),
            Event::build("seen").stream("s-1").data_json("{not json"),
        ])
        .expect_err("bad JSON");
    assert_eq!(err.offset, 2);
    assert!(err.message.starts_with("JSON: "), "{err}");
    let err: Error = err.into();
    assert!(err.to_string().contains("offset 2"), "{err}");
    Ok(())
}

#[test]
fn the_sandbox_approximation_denies_attach() -> Result<()> {
    let mut t = TestProjector::<Recorder>::new()?;
    t.apply([ev("attach", 0)])?;
    let notes = notes(&t)?;
    assert!(notes[0].starts_with("denied: "), "{notes:?}");
    Ok(())
}

#[test]
fn a_bad_name_is_refused_like_the_host_would() {
    struct BadName;
    impl Projector for BadName {
        fn info() -> Info {
            Info::new("Bad Name", "")
        }
        fn init(_db: &mut Db) -> Result<()> {
            Ok(())
        }
        fn handle(_event: &Event<'_>, _db: &mut Db) -> Result<()> {
            Ok(())
        }
    }
    let err = TestProjector::<BadName>::new().expect_err("invalid name");
    assert!(err.to_string().contains("[a-z0-9_-]"), "{err}");
}

#[test]
fn a_failing_init_is_reported() {
    struct NoSchema;
    impl Projector for NoSchema {
        fn info() -> Info {
            Info::new("no-schema", "")
        }
        fn init(db: &mut Db) -> Result<()> {
            db.execute_script("CREATE TABLE x (")
        }
        fn handle(_event: &Event<'_>, _db: &mut Db) -> Result<()> {
            Ok(())
        }
    }
    let err = TestProjector::<NoSchema>::new().expect_err("invalid SQL");
    assert!(
        err.to_string()
            .contains("init of projector \"no-schema\" failed"),
        "{err}"
    );
}

#[test]
fn many_writes_flush_in_chunks() -> Result<()> {
    struct Bulk;
    static INSERT: Statement = Statement::new("INSERT INTO t (v, s) VALUES (?1, ?2)");
    impl Projector for Bulk {
        fn info() -> Info {
            Info::new("bulk", "")
        }
        fn init(db: &mut Db) -> Result<()> {
            db.execute_script("CREATE TABLE t (v INTEGER, s TEXT)")
        }
        fn handle(_event: &Event<'_>, db: &mut Db) -> Result<()> {
            let text = "x".repeat(1000);
            for i in 0..(Db::FLUSH_WRITES as i64 * 3) {
                db.execute(&INSERT, params![i, text.as_str()])?;
            }
            Ok(())
        }
    }
    let mut t = TestProjector::<Bulk>::new()?;
    t.apply([Event::build("any")])?;
    let rows: Vec<(i64, i64)> = t.query_as("SELECT count(*), sum(length(s)) FROM t")?;
    let n = Db::FLUSH_WRITES as i64 * 3;
    assert_eq!(rows, [(n, n * 1000)]);
    Ok(())
}

#[test]
fn values_round_trip() -> Result<()> {
    struct Types;
    static INSERT: Statement =
        Statement::new("INSERT INTO t (i, r, s, b, n, f) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    impl Projector for Types {
        fn info() -> Info {
            Info::new("types", "")
        }
        fn init(db: &mut Db) -> Result<()> {
            db.execute_script("CREATE TABLE t (i, r, s, b, n, f)")
        }
        fn handle(_event: &Event<'_>, db: &mut Db) -> Result<()> {
            db.execute(
                &INSERT,
                params![-7_i64, 2.5, "ünïcode", vec![0_u8, 255], None::<i64>, true],
            )
        }
    }
    let mut t = TestProjector::<Types>::new()?;
    t.apply([Event::build("any")])?;
    let rows = t.query("SELECT * FROM t")?;
    assert_eq!(
        rows.first().map(|r| r.values().to_vec()),
        Some(vec![
            Value::Integer(-7),
            Value::Real(2.5),
            Value::from("ünïcode"),
            Value::from(vec![0_u8, 255]),
            Value::Null,
            Value::Integer(1),
        ])
    );
    Ok(())
}

/// Reads the id and metadata of every event, though it says it reads neither.
struct Blind;

static BLIND: Statement = Statement::new("INSERT INTO seen (id, meta) VALUES (?1, ?2)");

impl Projector for Blind {
    fn info() -> Info {
        Info::new("blind", "Says it reads no ids or metadata")
            .ignores_ids()
            .ignores_metadata()
    }

    fn init(db: &mut Db) -> Result<()> {
        db.execute_script("CREATE TABLE seen (id TEXT, meta TEXT)")
    }

    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
        db.execute(&BLIND, params![event.id(), event.metadata()])
    }
}

#[test]
fn fields_a_projector_ignores_arrive_empty_as_from_the_host() -> Result<()> {
    let mut t = TestProjector::<Blind>::new()?;
    assert!(!t.info().reads_ids() && !t.info().reads_metadata());
    t.apply([Event::build("any")
        .id("the-id")
        .metadata(json!({"user": "ann"}))])?;
    let rows: Vec<(String, Option<String>)> = t.query_as("SELECT id, meta FROM seen")?;
    assert_eq!(rows, [(String::new(), None)]);
    Ok(())
}
