//! The `bindgen!` sites: Rust types for each version of the `refract:projector` world,
//! one module per version, both here.
//!
//! The host serves both versions with one implementation (see `host_sql`, `host_log`):
//! the types the two versions share (`sql-value`, `sql-error`, `rows`, `write-error`,
//! `event-batch`, `handle-error`, the log `level`) have the same shape in both, and
//! component-model types are checked by shape, not by name, so 0.1.0's Rust types lift
//! and lower 0.2.0's values too. Only what differs has a type per version:
//! `projector-info` (0.2.0 adds `reads`) and the world's exports.

/// `refract:projector@0.1.0` (`wit/projector.wit`), the first released contract. The
/// reactor world includes it.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "projector",
    });
}

/// `refract:projector@0.2.0` (`wit/projector-0.2/projector.wit`): packed writes
/// (`execute-packed`) and the optional event fields a projector reads.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/projector-0.2",
        world: "projector",
    });
}

use wasmtime::Store;
use wasmtime::component::{Func, Instance, InstancePre};

use super::batch::EventFields;
use super::store::StoreState;

// The types both versions share, under short names, taken from 0.1.0.
pub(crate) use v0_1::refract::projector::log::Level;
pub(crate) use v0_1::refract::projector::sql::{Rows, WriteError};
pub(crate) use v0_1::refract::projector::types::{SqlError, SqlErrorKind, SqlValue};
pub(crate) use v0_1::{EventBatch, HandleError};

/// A version of the `refract:projector` contract the host implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContractVersion {
    /// `refract:projector@0.1.0`: writes as `execute-batch(list<write>)`.
    V0_1,
    /// `refract:projector@0.2.0`: packed writes (`execute-packed`) and
    /// `projector-info.reads`.
    V0_2,
}

impl ContractVersion {
    /// Every version, oldest first.
    pub const ALL: [ContractVersion; 2] = [ContractVersion::V0_1, ContractVersion::V0_2];

    /// The package version, for example `0.2.0`.
    pub fn semver(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => "0.1.0",
            ContractVersion::V0_2 => "0.2.0",
        }
    }

    /// The version a `refract:projector/<interface>@<version>` import names, if it is
    /// one the host implements.
    pub(crate) fn of_import(name: &str) -> Option<ContractVersion> {
        let rest = name.strip_prefix("refract:projector/")?;
        let (_, version) = rest.split_once('@')?;
        Self::ALL
            .into_iter()
            .find(|contract| contract.semver() == version)
    }
}

impl std::fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refract:projector@{}", self.semver())
    }
}

/// A component pre-linked as the contract version it implements.
pub(crate) enum ProjectorPre {
    /// A 0.1.0 projector (or a reactor, whose world includes 0.1.0).
    V0_1(v0_1::ProjectorPre<StoreState>),
    /// A 0.2.0 projector.
    V0_2(v0_2::ProjectorPre<StoreState>),
}

impl ProjectorPre {
    /// Checks the component's exports against `version`'s world.
    pub(crate) fn new(
        version: ContractVersion,
        instance_pre: InstancePre<StoreState>,
    ) -> wasmtime::Result<Self> {
        Ok(match version {
            ContractVersion::V0_1 => Self::V0_1(v0_1::ProjectorPre::new(instance_pre)?),
            ContractVersion::V0_2 => Self::V0_2(v0_2::ProjectorPre::new(instance_pre)?),
        })
    }

    /// The contract version the component implements.
    pub(crate) fn version(&self) -> ContractVersion {
        match self {
            Self::V0_1(_) => ContractVersion::V0_1,
            Self::V0_2(_) => ContractVersion::V0_2,
        }
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<StoreState> {
        match self {
            Self::V0_1(pre) => pre.instance_pre(),
            Self::V0_2(pre) => pre.instance_pre(),
        }
    }
}

/// The exports of one instance, of either version.
pub(crate) enum Projector {
    /// A 0.1.0 instance.
    V0_1(v0_1::Projector),
    /// A 0.2.0 instance, and its `handle` export: its `event-batch` has the same shape
    /// as 0.1.0's, so the host's one [`EventBatch`] is passed to either.
    V0_2 {
        bindings: v0_2::Projector,
        handle: Func,
    },
}

/// `projector-info` of either version. 0.1.0 has no `reads`: its projectors read every
/// field.
pub(crate) struct RawInfo {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) stream_prefixes: Vec<String>,
    pub(crate) reads: EventFields,
}

impl Projector {
    pub(crate) fn new(
        pre: &ProjectorPre,
        store: &mut Store<StoreState>,
        instance: &Instance,
    ) -> wasmtime::Result<Self> {
        Ok(match pre {
            ProjectorPre::V0_1(_) => Self::V0_1(v0_1::Projector::new(&mut *store, instance)?),
            ProjectorPre::V0_2(_) => Self::V0_2 {
                bindings: v0_2::Projector::new(&mut *store, instance)?,
                handle: instance
                    .get_func(&mut *store, "handle")
                    .ok_or_else(|| wasmtime::format_err!("the component exports no `handle`"))?,
            },
        })
    }

    pub(crate) fn call_metadata(&self, store: &mut Store<StoreState>) -> wasmtime::Result<RawInfo> {
        Ok(match self {
            Self::V0_1(bindings) => {
                let info = bindings.call_metadata(store)?;
                RawInfo {
                    name: info.name,
                    description: info.description,
                    event_types: info.subscriptions.event_types,
                    stream_prefixes: info.subscriptions.stream_prefixes,
                    reads: EventFields::ALL,
                }
            }
            Self::V0_2 { bindings, .. } => {
                let info = bindings.call_metadata(store)?;
                let reads = info.reads;
                RawInfo {
                    name: info.name,
                    description: info.description,
                    event_types: info.subscriptions.event_types,
                    stream_prefixes: info.subscriptions.stream_prefixes,
                    reads: EventFields {
                        id: reads.contains(v0_2::refract::projector::types::EventFields::ID),
                        metadata: reads
                            .contains(v0_2::refract::projector::types::EventFields::METADATA),
                    },
                }
            }
        })
    }

    pub(crate) fn call_init(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::V0_1(bindings) => bindings.call_init(store),
            Self::V0_2 { bindings, .. } => bindings.call_init(store),
        }
    }

    pub(crate) fn call_handle(
        &self,
        store: &mut Store<StoreState>,
        batch: &EventBatch,
    ) -> wasmtime::Result<Result<(), HandleError>> {
        match self {
            Self::V0_1(bindings) => bindings.call_handle(store, batch),
            Self::V0_2 { handle, .. } => {
                // Type-checked per call (a walk over two small records, once a batch):
                // the typed function borrows the batch, so it cannot be kept.
                let typed = handle.typed::<(&EventBatch,), (Result<(), HandleError>,)>(&*store)?;
                Ok(typed.call(&mut *store, (batch,))?.0)
            }
        }
    }
}
