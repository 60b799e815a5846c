//! Write Refract reactors in plain Rust.
//!
//! A reactor is to the write side what a projector is to the read side: it receives the
//! events it subscribes to, keeps its own state in a SQLite database (the same
//! [`Db`] as a projector's read model), and reacts by emitting events and scheduling
//! timers through [`Effects`]. The host appends the emits exactly once, after the batch
//! succeeds, with ids derived from the source event, and `causation_id` and
//! `correlation_id` pointing back to it. Timers fire as `refract.timer` events
//! ([`Timer`]) a delay after the source event was recorded: a reactor never reads a
//! clock, so a replay makes the same decisions.
//!
//! This crate builds on `refract-sdk` (its [`Db`], [`Event`], [`Info`] and
//! [`Statement`] are re-exported) and targets the `refract:reactor` WIT world, a
//! superset of the projector world, in a crate of its own so that projectors never carry
//! the reactor contract.
//!
//! ```
//! use refract_reactor_sdk::{Db, Effects, Event, Info, Reactor, Result};
//!
//! /// Greets every new account.
//! pub struct Greeter;
//!
//! impl Reactor for Greeter {
//!     fn info() -> Info {
//!         Info::new("greeter", "Welcomes new accounts").event_types(["account.opened"])
//!     }
//!     fn emits() -> &'static [&'static str] {
//!         &["greeting.sent"]
//!     }
//!     fn init(_db: &mut Db) -> Result<()> {
//!         Ok(())
//!     }
//!     fn react(event: &Event<'_>, _db: &mut Db, effects: &mut Effects) -> Result<()> {
//!         effects.emit(event.stream(), "greeting.sent", &serde_json::json!({"hello": true}))
//!     }
//! }
//!
//! refract_reactor_sdk::export_reactor!(Greeter);
//! # fn main() {}
//! ```
#![deny(missing_docs)]

mod effects;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod timer;

use std::marker::PhantomData;

pub use effects::{Effects, NewEvent};
pub use refract_sdk::{
    Db, Error, Event, FromRow, Info, Projector, Result, Row, Rows, Statement, Value, log, params,
};
pub use timer::{TIMER_EVENT_TYPE, Timer};

/// A reactor: reacts to the events it subscribes to by emitting events, exactly once.
///
/// The host calls [`info`](Reactor::info) and [`emits`](Reactor::emits) once per
/// instance, [`init`](Reactor::init) once per fresh state database, and
/// [`react`](Reactor::react) for every delivered event, in offset order, in batches.
/// A batch's state writes, timers and emits are kept together or not at all. All state
/// lives in the database.
pub trait Reactor {
    /// The reactor's name, description and subscriptions. Its own timer events are
    /// delivered whatever the subscriptions say.
    fn info() -> Info;

    /// The event types it may emit; emitting any other fails the batch.
    fn emits() -> &'static [&'static str];

    /// Creates the state's schema in a fresh, empty database.
    fn init(db: &mut Db) -> Result<()>;

    /// Reacts to one event. An error fails the batch (nothing of it is emitted) and
    /// names this event.
    fn react(event: &Event<'_>, db: &mut Db, effects: &mut Effects) -> Result<()>;
}

/// A [`Reactor`] seen as a projector, for the parts the two share: the batch loop,
/// the state database, the metadata. Not for direct use.
#[doc(hidden)]
pub struct Adapter<R>(PhantomData<R>);

impl<R: Reactor> Projector for Adapter<R> {
    fn info() -> Info {
        R::info()
    }

    fn init(db: &mut Db) -> Result<()> {
        R::init(db)
    }

    fn handle(event: &Event<'_>, db: &mut Db) -> Result<()> {
        let mut effects = Effects::for_event(event);
        let result = R::react(event, db, &mut effects);
        effects.finish();
        result
    }
}

/// Exports a [`Reactor`] as the component's implementation of the
/// `refract:reactor` contract. Call it once, at the top level of the crate. On targets
/// other than wasm it only checks that the type implements [`Reactor`].
#[macro_export]
macro_rules! export_reactor {
    ($reactor:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(
            unsafe_code,
            unused_qualifications,
            reason = "the component's export functions are canonical-ABI glue"
        )]
        const _: () = {
            struct RefractReactor;

            impl $crate::__private::bindings::Guest for RefractReactor {
                fn metadata() -> $crate::__private::sdk::bindings::ProjectorInfo {
                    $crate::__private::sdk::metadata::<$crate::Adapter<$reactor>>()
                }

                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::sdk::init::<$crate::Adapter<$reactor>>()
                }

                fn handle(
                    batch: $crate::__private::sdk::bindings::EventBatch,
                ) -> ::core::result::Result<(), $crate::__private::sdk::bindings::HandleError>
                {
                    $crate::__private::sdk::handle::<$crate::Adapter<$reactor>>(&batch)
                }

                fn reactor_info() -> $crate::__private::bindings::ReactorInfo {
                    $crate::__private::reactor_info::<$reactor>()
                }
            }

            $crate::__private::bindings::__export_reactor_world!(
                RefractReactor with_types_in $crate::__private::bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            const fn assert_reactor<R: $crate::Reactor>() {}
            assert_reactor::<$reactor>();
        };
    };
}

/// What `export_reactor!` expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::effects::wasm::{bindings, reactor_info};
    #[cfg(target_arch = "wasm32")]
    pub use refract_sdk::__private as sdk;
}
