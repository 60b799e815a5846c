//! Native unit tests for projectors: run a projector's real `init` and `handle`
//! against an in-memory SQLite, with no wasm build.
//!
//! ```
//! use refract_sdk::testing::{TestProjector, json};
//! use refract_sdk::{Db, Event, Info, Projector, Result, Statement, params};
//!
//! struct Streams;
//!
//! static SEEN: Statement = Statement::new(
//!     "INSERT INTO streams (stream, events) VALUES (?1, 1)
//!      ON CONFLICT (stream) DO UPDATE SET events = events + 1",
//! );
//!
//! impl Projector for Streams {
//!     fn info() -> Info {
//!         Info::new("streams", "Events per stream").stream_prefixes(["acc-"])
//!     }
//!     fn init(db: &mut Db) -> Result<()> {
//!         db.execute_script("CREATE TABLE streams (stream TEXT PRIMARY KEY, events INTEGER)")
//!     }
//!     fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
//!         db.execute(&SEEN, params![event.stream()])
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let mut t = TestProjector::<Streams>::new()?;
//! let delivered = t.apply([
//!     Event::build("a").stream("acc-1"),
//!     Event::build("b").stream("order-1"), // not subscribed: never delivered
//!     Event::build("c").stream("acc-1").data(json!({"any": "payload"})),
//! ])?;
//! assert_eq!(delivered, 2);
//! assert_eq!(t.query_as::<(String, i64)>("SELECT stream, events FROM streams")?, [("acc-1".into(), 2)]);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::marker::PhantomData;

use serde::Serialize;

use crate::batch::{self, Batch, FIELDS, Failed};
use crate::db::FromRow;
use crate::sys::Backend;
use crate::sys::native::{query, sql_error};
use crate::{Db, Error, Event, Info, Projector, Result, Rows};

pub use serde_json::json;

/// The default `recorded_at` of the event at offset 0: 2024-01-01T00:00:00Z. Each
/// later offset adds one second, so timestamps are deterministic.
pub const DEFAULT_EPOCH_MICROS: i64 = 1_704_067_200_000_000;

/// A projector running natively, as the host would run it: `init` once, then
/// batches of events, each in one transaction that rolls back if the batch fails.
/// Only subscribed events are delivered.
pub struct TestProjector<P> {
    db: Db,
    info: Info,
    /// The offset of the last event applied, delivered or not.
    last_offset: u64,
    /// Every stream's version so far.
    versions: HashMap<String, u64>,
    projector: PhantomData<fn() -> P>,
}

impl<P: Projector> TestProjector<P> {
    /// A fresh in-memory read model after `P::init`. Fails if the projector's name
    /// breaks the host's rule or `init` fails.
    pub fn new() -> Result<Self> {
        let info = P::info();
        info.validate().map_err(Error::Message)?;
        let mut db = Db::new(Backend::open()?);
        transaction(&db, "BEGIN")?;
        if let Err(message) = batch::init::<P>(&mut db) {
            transaction(&db, "ROLLBACK")?;
            return Err(Error::Message(format!(
                "init of projector {:?} failed: {message}",
                info.name()
            )));
        }
        transaction(&db, "COMMIT")?;
        Ok(TestProjector {
            db,
            info,
            last_offset: 0,
            versions: HashMap::new(),
            projector: PhantomData,
        })
    }

    /// What the projector said about itself.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The offset of the last event applied so far, delivered or not; 0 before any.
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// Appends `events` to the test's log and delivers the subscribed ones as one
    /// batch, in one transaction. Returns how many were delivered.
    ///
    /// Events get the next offsets and stream versions unless the builder sets
    /// them. On failure the transaction rolls back, and the error names the event.
    pub fn apply(
        &mut self,
        events: impl IntoIterator<Item = EventBuilder>,
    ) -> std::result::Result<usize, BatchError> {
        let mut packed = PackedBatch::default();
        for builder in events {
            let offset = builder.offset.unwrap_or(self.last_offset + 1);
            if offset <= self.last_offset {
                return Err(BatchError {
                    offset,
                    message: format!("offsets must grow: {offset} follows {}", self.last_offset),
                });
            }
            self.last_offset = offset;
            let version = self.versions.entry(builder.stream.clone()).or_insert(0);
            *version = builder.stream_version.unwrap_or(*version + 1);
            if self.info.accepts(&builder.event_type, &builder.stream) {
                packed.push(&builder, offset, *version, &self.info);
            }
        }
        let delivered = packed.offsets.len();
        if delivered == 0 {
            return Ok(0);
        }
        let last = packed.offsets.last().copied().unwrap_or(0);
        let host_error = |e: Error| BatchError {
            offset: last,
            message: e.to_string(),
        };
        transaction(&self.db, "BEGIN").map_err(host_error)?;
        match batch::handle::<P>(&mut self.db, &packed.view()) {
            Ok(()) => {
                transaction(&self.db, "COMMIT").map_err(host_error)?;
                Ok(delivered)
            }
            Err(Failed { offset, message }) => {
                transaction(&self.db, "ROLLBACK").map_err(host_error)?;
                Err(BatchError { offset, message })
            }
        }
    }

    /// Runs any SQL query against the read model, outside the sandbox.
    pub fn query(&self, sql: &str) -> Result<Rows> {
        self.db.backend().trusted(|conn| {
            let mut statement = conn.prepare(sql).map_err(sql_error)?;
            Ok(query(&mut statement, &[])?)
        })
    }

    /// Runs a query and converts every row, for example into tuples.
    pub fn query_as<T: FromRow>(&self, sql: &str) -> Result<Vec<T>> {
        self.query(sql)?.decode()
    }
}

fn transaction(db: &Db, sql: &str) -> Result<()> {
    db.backend()
        .trusted(|conn| conn.execute_batch(sql))
        .map_err(|e| Error::Sql(sql_error(e)))
}

impl<P> std::fmt::Debug for TestProjector<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProjector")
            .field("info", &self.info)
            .field("last_offset", &self.last_offset)
            .finish_non_exhaustive()
    }
}

/// A batch that failed: the event that failed it, and why. It is what the host
/// would log and retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event at offset {offset} failed: {message}")]
pub struct BatchError {
    /// The offset of the event that failed.
    pub offset: u64,
    /// What the projector or SQLite said.
    pub message: String,
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        Error::Message(e.to_string())
    }
}

/// An event for a test, built up field by field; [`Event::build`] starts one.
///
/// Unset fields get deterministic defaults when applied: the next offset, the
/// stream's next version, a UUID-shaped id from the offset, and a timestamp of
/// [`DEFAULT_EPOCH_MICROS`] plus one second per offset. Data defaults to `{}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBuilder {
    event_type: String,
    stream: String,
    data: String,
    metadata: Option<String>,
    id: Option<String>,
    offset: Option<u64>,
    stream_version: Option<u64>,
    recorded_at_micros: Option<i64>,
}

impl EventBuilder {
    /// An event of this type on stream `test`, with data `{}`.
    pub fn new(event_type: impl Into<String>) -> Self {
        EventBuilder {
            event_type: event_type.into(),
            stream: "test".to_owned(),
            data: "{}".to_owned(),
            metadata: None,
            id: None,
            offset: None,
            stream_version: None,
            recorded_at_micros: None,
        }
    }

    /// The stream, for example the account or order id.
    #[must_use]
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }

    /// The payload, serialized to JSON; `json!({...})` or any `Serialize` type.
    ///
    /// # Panics
    /// If `data` cannot be serialized to JSON, for example a map with non-string keys.
    #[must_use]
    pub fn data(mut self, data: impl Serialize) -> Self {
        self.data = to_json(&data);
        self
    }

    /// The payload as JSON text, taken as is, even if it is not valid JSON.
    #[must_use]
    pub fn data_json(mut self, json: impl Into<String>) -> Self {
        self.data = json.into();
        self
    }

    /// The metadata, serialized to JSON.
    ///
    /// # Panics
    /// If `metadata` cannot be serialized to JSON.
    #[must_use]
    pub fn metadata(mut self, metadata: impl Serialize) -> Self {
        self.metadata = Some(to_json(&metadata));
        self
    }

    /// The event id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The log offset; it must be greater than every offset applied before.
    #[must_use]
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// The version within the stream.
    #[must_use]
    pub fn stream_version(mut self, version: u64) -> Self {
        self.stream_version = Some(version);
        self
    }

    /// When the log recorded the event, in microseconds since the Unix epoch.
    #[must_use]
    pub fn recorded_at_micros(mut self, micros: i64) -> Self {
        self.recorded_at_micros = Some(micros);
        self
    }

    /// The event as a projector would see it, for testing a parsing function
    /// directly. Unset offsets and versions read as 1.
    pub fn as_event(&self) -> Event<'_> {
        let offset = self.offset.unwrap_or(1);
        Event::from_parts(
            offset,
            self.stream_version.unwrap_or(1),
            self.recorded_at_micros
                .unwrap_or_else(|| default_recorded_at(offset)),
            self.id.as_deref().unwrap_or(""),
            &self.stream,
            &self.event_type,
            &self.data,
            self.metadata.as_deref().unwrap_or(""),
        )
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| panic!("test event data does not serialize to JSON: {e}"))
}

fn default_recorded_at(offset: u64) -> i64 {
    let seconds = i64::try_from(offset).unwrap_or(i64::MAX);
    DEFAULT_EPOCH_MICROS.saturating_add(seconds.saturating_mul(1_000_000))
}

fn default_id(offset: u64) -> String {
    format!("00000000-0000-7000-8000-{offset:012x}")
}

/// A batch in the host's packed layout, so native tests exercise the same
/// unpacking code as the component.
#[derive(Default)]
struct PackedBatch {
    offsets: Vec<u64>,
    stream_versions: Vec<u64>,
    recorded_at: Vec<i64>,
    ends: Vec<u32>,
    text: Vec<u8>,
}

impl PackedBatch {
    /// Packs one event; a field the projector says it ignores is sent empty, as the
    /// host does.
    fn push(&mut self, event: &EventBuilder, offset: u64, version: u64, info: &Info) {
        self.offsets.push(offset);
        self.stream_versions.push(version);
        self.recorded_at.push(
            event
                .recorded_at_micros
                .unwrap_or_else(|| default_recorded_at(offset)),
        );
        let id = match info.reads_ids() {
            true => event.id.clone().unwrap_or_else(|| default_id(offset)),
            false => String::new(),
        };
        let metadata = match info.reads_metadata() {
            true => event.metadata.as_deref().unwrap_or(""),
            false => "",
        };
        let fields = [
            id.as_str(),
            &event.stream,
            &event.event_type,
            &event.data,
            metadata,
        ];
        debug_assert_eq!(fields.len(), FIELDS);
        for field in fields {
            self.text.extend_from_slice(field.as_bytes());
            self.ends
                .push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
        }
    }

    fn view(&self) -> Batch<'_> {
        Batch {
            offsets: &self.offsets,
            stream_versions: &self.stream_versions,
            recorded_at: &self.recorded_at,
            ends: &self.ends,
            text: &self.text,
        }
    }
}
