//! Deploys in cluster mode: one deploy for the whole cluster, and every node's view of
//! every projector.
//!
//! # The flow
//! 1. A deploy on any node (its plugins folder, `refract deploy`, the API) starts the
//!    shadow replay there as on a single node, and the engine reports it
//!    ([`EngineHooks`](crate::engine::EngineHooks)).
//! 2. [`publish`] stores the component in the `<stream>-components` object store under
//!    the SHA-256 of its bytes, then writes `desired.<projector>` in the
//!    `<stream>-projectors` key-value bucket: version, hash, size, promote mode.
//! 3. Every node watches that bucket ([`apply`]). When the desired version is neither
//!    its active version nor its shadow, it fetches the component, checks its size
//!    against `limits.max_component_bytes` and its SHA-256 against the record, and
//!    deploys it locally: the shadow replays its own mirror of the log.
//! 4. Each node swaps by its own promote mode: `auto` swaps when its shadow reaches lag
//!    zero (as on a single node), so for a while some nodes serve the new version and
//!    some the old. The cluster view shows which node serves which.
//! 5. A rollback on any node is carried out on every node at one log offset, by the
//!    promote record of a manual promote ([`rollback`]). An abort on any node is
//!    applied there and written as the new desired record (`action: abort`); every
//!    node drops the shadow the same way (no node's served version changes). A node
//!    that was down applies the newest desired record when it returns.
//!
//! # Status
//! Every node writes a heartbeat ([`heartbeat`]) every [`HEARTBEAT_INTERVAL`] to the
//! `<stream>-nodes` bucket: its log head, lag, and each projector's versions, roles,
//! checkpoints, states, events per second and errors. Every node watches that bucket;
//! a node whose heartbeat has not changed for [`UNREACHABLE_AFTER`] is `unreachable`.
//! [`view`] turns the reports into the cluster view (`GET /v1/cluster/projectors`,
//! `refract status --cluster`) and its divergence: nodes unreachable, serving a
//! version other than the desired one for longer than [`CONVERGE_GRACE`], stuck, or
//! failing to apply the desired version.
//!
//! # Promote
//! A `promote = "manual"` projector swaps on every node at one log offset, by a
//! promote record: see [`promote`].
//!
//! # Placement
//! A projector with `nodes = N` runs on N nodes, by leases: see [`placement`].

pub mod apply;
pub(crate) mod buckets;
pub mod heartbeat;
pub mod placement;
pub mod promote;
pub mod publish;
pub mod records;
pub mod rollback;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::Shared;
use crate::engine::Engine;
use buckets::Buckets;
use records::{Desired, NodeReport};

/// How often a node writes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a node's heartbeat may stay unchanged before the others show it as
/// `unreachable`: several missed heartbeats, so one slow write is not an outage.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(5);

/// How long the nodes may serve different versions of a projector after its desired
/// version changed (the replay and the swap take time) before it counts as divergence.
pub const CONVERGE_GRACE: Duration = Duration::from_secs(300);

/// How often a node compares its projectors with the desired versions even when
/// nothing changed in the bucket, so a failed fetch or deploy is retried.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

/// What the deploy tasks of one node share.
pub(crate) struct Deploys {
    pub(crate) cluster: Arc<Shared>,
    pub(crate) engine: Arc<Engine>,
    /// The buckets, once opened.
    buckets: Mutex<Option<Buckets>>,
    /// Opened buckets become available.
    opened: Notify,
    /// The desired version of each projector, as last read, with its revision and
    /// when this node first saw that revision.
    pub(crate) desired: Mutex<BTreeMap<String, SeenDesired>>,
    /// Why the desired version of a projector could not be applied here.
    pub(crate) errors: Mutex<BTreeMap<String, String>>,
    /// Every node's last heartbeat, as watched.
    pub(crate) reports: Mutex<BTreeMap<String, SeenReport>>,
    /// Set when the desired records changed, to reconcile at once.
    pub(crate) changed: Notify,
    /// Each projector's promote record, with its revision.
    pub(crate) promotes: Mutex<BTreeMap<String, (u64, records::PromoteRecord)>>,
    /// This node's holds for promotes in progress, by projector.
    pub(crate) held: Mutex<BTreeMap<String, records::HeldFor>>,
    /// The promote (id and offset) a swap this node is making carries out.
    pub(crate) promoting: Mutex<BTreeMap<String, (String, u64)>>,
    /// Every node's last swap record, by projector and node.
    pub(crate) swaps: Mutex<BTreeMap<(String, String), records::NodeSwap>>,
    /// The leases of each placed projector, as this node last read them.
    pub(crate) leases: Mutex<BTreeMap<String, Vec<placement::SeenLease>>>,
    /// Whether this node holds a lease of each placed projector (absent: not known yet).
    pub(crate) placed_here: Mutex<BTreeMap<String, bool>>,
}

/// A desired record as this node knows it.
#[derive(Debug, Clone)]
pub(crate) struct SeenDesired {
    pub(crate) record: Desired,
    pub(crate) revision: u64,
    pub(crate) since: Instant,
}

/// A node's heartbeat as this node knows it.
#[derive(Debug, Clone)]
pub(crate) struct SeenReport {
    pub(crate) report: NodeReport,
    pub(crate) revision: u64,
    /// When this node last saw the heartbeat change (or, for the first sighting, when
    /// it was written by the server's clock, mapped onto ours).
    pub(crate) changed: Instant,
}

/// Locks a mutex, also after a panic elsewhere.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Deploys {
    pub(crate) fn new(cluster: Arc<Shared>, engine: Arc<Engine>) -> Deploys {
        Deploys {
            cluster,
            engine,
            buckets: Mutex::new(None),
            opened: Notify::new(),
            desired: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            reports: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            promotes: Mutex::new(BTreeMap::new()),
            held: Mutex::new(BTreeMap::new()),
            promoting: Mutex::new(BTreeMap::new()),
            swaps: Mutex::new(BTreeMap::new()),
            leases: Mutex::new(BTreeMap::new()),
            placed_here: Mutex::new(BTreeMap::new()),
        }
    }

    /// The buckets, waiting until they are open.
    pub(crate) async fn buckets(&self) -> Buckets {
        loop {
            let opened = self.opened.notified();
            if let Some(buckets) = lock(&self.buckets).clone() {
                return buckets;
            }
            opened.await;
        }
    }

    /// The buckets if open now.
    pub(crate) fn buckets_now(&self) -> Option<Buckets> {
        lock(&self.buckets).clone()
    }

    /// Records why the desired version of `projector` cannot be applied here, or that
    /// it can (`None`).
    pub(crate) fn set_error(&self, projector: &str, error: Option<String>) {
        let mut errors = lock(&self.errors);
        match error {
            Some(error) => {
                if errors.get(projector) != Some(&error) {
                    tracing::warn!(node = %self.cluster.config.node, %projector, "cluster deploy: {error}");
                }
                errors.insert(projector.to_owned(), error);
            }
            None => {
                errors.remove(projector);
            }
        }
    }
}

/// Opens the buckets (retrying until NATS answers), then makes them available.
pub(crate) async fn open_buckets(deploys: Arc<Deploys>, mut stop: watch::Receiver<bool>) {
    let mut pause = super::config::RETRY_INITIAL;
    loop {
        if deploys.cluster.client.connection_state() == async_nats::connection::State::Connected {
            match buckets::open(&deploys.cluster.jetstream, &deploys.cluster.config).await {
                Ok(buckets) => {
                    *lock(&deploys.buckets) = Some(buckets);
                    deploys.opened.notify_waiters();
                    return;
                }
                Err(error) => {
                    tracing::warn!(node = %deploys.cluster.config.node, "cluster deploys: cannot open the buckets: {error}; retrying");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(super::config::RETRY_MAX);
    }
}
