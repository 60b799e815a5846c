//! Write Refract projectors in plain Rust.
//!
//! A projector turns events from Refract's log into a SQLite read model. It is
//! compiled to a WebAssembly component (`wasm32-wasip2`) and runs sandboxed in the
//! host: it sees the events it subscribed to and its own database, and nothing
//! else. This crate hides the component plumbing: implement [`Projector`], call
//! [`export!`], and build.
//!
//! # A complete projector
//!
//! ```
//! use std::borrow::Cow;
//!
//! use refract_sdk::{Db, Event, Info, Projector, Result, Statement, params};
//! use serde::Deserialize;
//!
//! /// Deposit totals per account.
//! pub struct Deposits;
//!
//! #[derive(Deserialize)]
//! struct Deposited<'a> {
//!     #[serde(borrow)]
//!     account: Cow<'a, str>,
//!     amount: i64,
//! }
//!
//! static ADD: Statement = Statement::new(
//!     "INSERT INTO deposits (account, total, count) VALUES (?1, ?2, 1)
//!      ON CONFLICT (account) DO UPDATE SET total = total + excluded.total, count = count + 1",
//! );
//!
//! impl Projector for Deposits {
//!     fn info() -> Info {
//!         Info::new("deposits", "Deposit totals per account").event_types(["money.deposited"])
//!     }
//!
//!     fn init(db: &mut Db) -> Result<()> {
//!         db.execute_script(
//!             "CREATE TABLE deposits (account TEXT PRIMARY KEY, total INTEGER, count INTEGER)",
//!         )
//!     }
//!
//!     fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
//!         let deposit: Deposited<'_> = event.data()?;
//!         db.execute(&ADD, params![deposit.account, deposit.amount])
//!     }
//! }
//!
//! refract_sdk::export!(Deposits);
//!
//! // The same code, natively, against an in-memory SQLite:
//! # fn main() -> refract_sdk::Result<()> {
//! use refract_sdk::testing::{TestProjector, json};
//!
//! let mut t = TestProjector::<Deposits>::new()?;
//! t.apply([
//!     Event::build("money.deposited").stream("acc-1").data(json!({"account": "acc-1", "amount": 250})),
//!     Event::build("money.withdrawn").stream("acc-1").data(json!({"account": "acc-1", "amount": 50})),
//!     Event::build("money.deposited").stream("acc-1").data(json!({"account": "acc-1", "amount": 100})),
//! ])?;
//! let totals: Vec<(String, i64, i64)> = t.query_as("SELECT account, total, count FROM deposits")?;
//! assert_eq!(totals, [("acc-1".to_owned(), 350, 2)]);
//! # Ok(())
//! # }
//! ```
//!
//! Build the component with
//! `cargo build --release --target wasm32-wasip2` and a `cdylib` crate type; the
//! `.wasm` in `target/wasm32-wasip2/release/` is the component the host loads.
//!
//! # How the SDK keeps the hot path cheap
//!
//! - A batch of events arrives in a few flat buffers. Each [`Event`] borrows its
//!   fields from them, and [`Event::data`] deserializes borrowed where it can.
//! - A [`Statement`] is compiled once per instance; later uses send a small handle.
//! - [`Db::execute`] only buffers the write, into flat buffers reused from batch to
//!   batch, laid out as the contract's packed `write-batch`. The SDK sends a whole
//!   batch's writes in one host call, at the end of the batch or before a read, as
//!   those buffers are: no allocation per write, a handful of copies per batch.
//!
//! # Layout
//!
//! - [`Projector`] and [`export!`]: what an author implements and the macro that
//!   turns it into a component.
//! - `info`: [`Info`], the projector's name, description and subscriptions.
//! - `event`: [`Event`], one event borrowed from its batch.
//! - `db`: [`Db`], [`Statement`], [`Rows`] and [`Row`]: the read model.
//! - `value`: [`Value`], [`FromValue`] and [`params!`]: SQL values in and out.
//! - `error`: [`Error`], [`SqlError`] and [`SqlErrorKind`].
//! - [`log`]: logging into the host's log.
//! - [`testing`] (native only): [`TestProjector`](testing::TestProjector) runs a
//!   projector against an in-memory SQLite for unit tests.
//! - `batch` (private): the loop behind the exports, shared by both targets.
//! - `sys` (private): the only target-specific code; the component imports on wasm
//!   (the buffered writes sent as one `execute-packed`), rusqlite natively.
//!
//! # Contract versions
//!
//! The SDK targets `refract:projector@0.2.0`: writes cross as one packed `write-batch`,
//! and [`Info::ignores_ids`]/[`Info::ignores_metadata`] tell the host what it need not
//! read. With the `contract-0-1` feature the same source targets the released 0.1.0
//! (writes as `execute-batch`, every field delivered), which hosts still load. Inside
//! a workspace, prefer the `refract-sdk-0-1` package (`plugins-sdk/contract-0-1`):
//! cargo unifies features across one build, so a feature one crate enables would move
//! every crate built beside it.
#![deny(missing_docs)]

mod batch;
mod db;
mod error;
mod event;
mod info;
pub mod log;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod value;

pub use db::{ColumnIndex, Db, FromRow, Row, RowIter, Rows, Statement};
pub use error::{Error, Result, SqlError, SqlErrorKind};
pub use event::Event;
pub use info::Info;
pub use value::{FromValue, Value};

/// A projector: builds one read model from the events it subscribes to.
///
/// The host calls [`info`](Projector::info) once per instance,
/// [`init`](Projector::init) once per fresh database, and
/// [`handle`](Projector::handle) for every delivered event, in offset order, in
/// batches. Each batch runs in one transaction that the host commits with the
/// projector's checkpoint, or rolls back if any event fails, so a projector never
/// sees its own half-applied batch. All state lives in the database: the component
/// may be re-instantiated at any time, and a replay must rebuild the same model.
pub trait Projector {
    /// The projector's name, description and subscriptions.
    fn info() -> Info;

    /// Creates the read model's schema in a fresh, empty database.
    fn init(db: &mut Db) -> Result<()>;

    /// Applies one event. An error fails the batch and names this event.
    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()>;
}

/// Exports a [`Projector`] as the component's implementation of the Refract
/// contract. Call it once, at the top level of the crate:
///
/// ```
/// # use refract_sdk::{Db, Event, Info, Projector, Result};
/// struct Nothing;
///
/// impl Projector for Nothing {
///     fn info() -> Info {
///         Info::new("nothing", "An empty read model")
///     }
///     fn init(_db: &mut Db) -> Result<()> {
///         Ok(())
///     }
///     fn handle(_event: &Event<'_>, _db: &mut Db) -> Result<()> {
///         Ok(())
///     }
/// }
///
/// refract_sdk::export!(Nothing);
/// # fn main() {}
/// ```
///
/// On targets other than wasm it only checks that the type implements
/// [`Projector`], so the crate still builds and unit-tests natively.
#[macro_export]
macro_rules! export {
    ($projector:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(
            unsafe_code,
            unused_qualifications,
            reason = "the component's export functions are canonical-ABI glue"
        )]
        const _: () = {
            struct RefractComponent;

            impl $crate::__private::bindings::Guest for RefractComponent {
                fn metadata() -> $crate::__private::bindings::ProjectorInfo {
                    $crate::__private::metadata::<$projector>()
                }

                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init::<$projector>()
                }

                fn handle(
                    batch: $crate::__private::bindings::EventBatch,
                ) -> ::core::result::Result<(), $crate::__private::bindings::HandleError> {
                    $crate::__private::handle::<$projector>(&batch)
                }
            }

            $crate::__private::bindings::__export_world!(
                RefractComponent with_types_in $crate::__private::bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            const fn assert_projector<P: $crate::Projector>() {}
            assert_projector::<$projector>();
        };
    };
}

/// What `export!` expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::sys::wasm::{bindings, handle, init, metadata};
}

#[cfg(not(target_arch = "wasm32"))]
impl Event<'_> {
    /// Starts building an event for a native test; see [`testing`].
    pub fn build(event_type: impl Into<String>) -> testing::EventBuilder {
        testing::EventBuilder::new(event_type)
    }
}
