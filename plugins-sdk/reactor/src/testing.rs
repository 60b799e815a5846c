//! Running a reactor natively, for unit tests without a wasm build: the same batch loop
//! and state database as [`refract_sdk::testing::TestProjector`], with the effects of
//! each batch returned instead of sent to a host.
//!
//! ```
//! # use refract_reactor_sdk::{Db, Effects, Event, Info, Reactor, Result};
//! # pub struct Greeter;
//! # impl Reactor for Greeter {
//! #     fn info() -> Info { Info::new("greeter", "").event_types(["account.opened"]) }
//! #     fn emits() -> &'static [&'static str] { &["greeting.sent"] }
//! #     fn init(_db: &mut Db) -> Result<()> { Ok(()) }
//! #     fn react(event: &Event<'_>, _db: &mut Db, fx: &mut Effects) -> Result<()> {
//! #         fx.emit(event.stream(), "greeting.sent", &serde_json::json!({}))
//! #     }
//! # }
//! use refract_reactor_sdk::testing::{Effect, TestReactor, json};
//!
//! # fn main() -> Result<()> {
//! let mut t = TestReactor::<Greeter>::new()?;
//! let effects = t.apply([Event::build("account.opened").stream("acc-1").data(json!({}))])?;
//! assert!(matches!(&effects[..], [Effect::Emit { cause: 1, .. }]));
//! # Ok(())
//! # }
//! ```

use std::cell::RefCell;

pub use refract_sdk::testing::{BatchError, DEFAULT_EPOCH_MICROS, EventBuilder, json};

pub use crate::effects::Effect;
use crate::{Adapter, Error, FromRow, Reactor, Result, Rows};

thread_local! {
    static RECORDED: RefCell<Vec<Effect>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn record(effects: Vec<Effect>) {
    RECORDED.with_borrow_mut(|recorded| recorded.extend(effects));
}

/// A reactor running natively: `init` once, then batches of events.
pub struct TestReactor<R: Reactor> {
    inner: refract_sdk::testing::TestProjector<Adapter<R>>,
}

impl<R: Reactor> TestReactor<R> {
    /// A fresh in-memory state database after `R::init`.
    pub fn new() -> Result<Self> {
        Ok(Self {
            inner: refract_sdk::testing::TestProjector::new()?,
        })
    }

    /// Delivers the subscribed `events` as one batch and returns its effects, in
    /// order. On failure nothing is kept, as on the host.
    pub fn apply(&mut self, events: impl IntoIterator<Item = EventBuilder>) -> Result<Vec<Effect>> {
        RECORDED.with_borrow_mut(Vec::clear);
        let applied = self.inner.apply(events);
        let effects = RECORDED.with_borrow_mut(std::mem::take);
        applied.map_err(|e| Error::Message(e.to_string()))?;
        Ok(effects)
    }

    /// Runs a query against the state, with the sandbox lifted.
    pub fn query(&self, sql: &str) -> Result<Rows> {
        self.inner.query(sql)
    }

    /// Runs a query and decodes every row.
    pub fn query_as<T: FromRow>(&self, sql: &str) -> Result<Vec<T>> {
        self.inner.query_as(sql)
    }
}
