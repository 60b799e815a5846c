//! What the deploy buckets hold, as JSON: the desired version of each projector, and
//! each node's heartbeat report. Both carry a format number, so a node refuses (and
//! reports) a record written by a newer Refract instead of misreading it.

use serde::{Deserialize, Serialize};

/// The record format this build writes and reads.
pub const RECORD_FORMAT: u32 = 1;

/// What the cluster asks of a projector, under `desired.<projector>` in the
/// projectors bucket. Every node makes its own projector match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The projector.
    pub projector: String,
    /// The version every node should serve (short content hash).
    pub version: String,
    /// The SHA-256 of the component, hex: its name in the components object store.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// What brought this version in.
    pub action: Action,
    /// The promote mode of the node that wrote it (`auto` or `manual`). Every node
    /// swaps by its own `projectors.<name>.promote`; a node whose mode differs reports
    /// it as divergence.
    pub promote: String,
    /// The node that wrote it.
    pub origin: String,
    /// When, in milliseconds since the Unix epoch (the origin's clock; for people).
    pub at_ms: u64,
    /// A rollback every node carries out at one log offset: the id of the promote
    /// record (kind `rollback`) that does it. Nodes leave such a record to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinated: Option<String>,
}

/// How a desired version came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A deploy: replay it as a shadow, swap it in by the promote mode.
    Deploy,
    /// A rollback: bring it back (at once where it runs warm), whatever the promote
    /// mode says.
    Rollback,
    /// An abort of the named shadow version: drop it; the active version stays.
    Abort {
        /// The shadow version aborted.
        aborted: String,
    },
}

/// A node's heartbeat, under `node.<name>` in the nodes bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The node.
    pub node: String,
    /// When it was written, in milliseconds since the Unix epoch (its own clock).
    pub at_ms: u64,
    /// The head of its mirror of the log.
    pub log_head: u64,
    /// Messages between its mirror and the stream's head, if known.
    pub lag: Option<u64>,
    /// Its projectors.
    pub projectors: Vec<ProjectorReport>,
    /// Where the other nodes reach its HTTP API (`cluster.api_url`), to proxy queries.
    #[serde(default)]
    pub api_url: Option<String>,
}

/// One projector on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectorReport {
    /// The projector.
    pub name: String,
    /// The version serving its queries on this node.
    pub active_version: Option<String>,
    /// The node's own `projectors.<name>.promote`.
    pub promote: String,
    /// Its running versions.
    pub versions: Vec<VersionReport>,
    /// Why the node could not carry out the cluster's desired version, if it could not.
    pub cluster_error: Option<String>,
    /// Its hold for a coordinated swap in progress.
    #[serde(default)]
    pub held: Option<HeldFor>,
    /// The version a rollback returns to on this node.
    #[serde(default)]
    pub previous_version: Option<String>,
}

/// One running version on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionReport {
    /// The short content hash.
    pub version: String,
    /// `active`, `shadow` or `previous`.
    pub role: String,
    /// `live`, `catching-up`, `stalled`, ...
    pub state: String,
    /// Its checkpoint.
    pub checkpoint: u64,
    /// Events per second, over the last few seconds.
    pub events_per_second: f64,
    /// Its last error.
    pub last_error: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    let micros = crate::log::timestamp_to_micros(jiff::Timestamp::now()) / 1000;
    u64::try_from(micros).unwrap_or(0)
}

/// A coordinated swap of a `promote = "manual"` projector, under `promote.<projector>`
/// in the projectors bucket (see [`promote`](super::promote)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteRecord {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// This promote's id (a UUID v7).
    pub id: String,
    /// The projector.
    pub projector: String,
    /// The version every node swaps to: the shadow promoted, or the previous version
    /// rolled back to.
    pub version: String,
    /// A promote or a rollback.
    #[serde(default)]
    pub kind: PromoteKind,
    /// Where it stands.
    pub phase: PromotePhase,
    /// The node that coordinates it.
    pub origin: String,
    /// When the phase was written, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What a coordinated swap swaps in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromoteKind {
    /// The caught-up shadow (`refract promote`).
    #[default]
    Promote,
    /// The previous version (`refract rollback`): at once where it runs warm, else
    /// once it has caught up with the held active version.
    Rollback,
}

/// The phases of a coordinated swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromotePhase {
    /// Every live node holds its active version where it is and reports the offset.
    Hold,
    /// Every node swaps when its active version (held there) and its shadow both
    /// reach `offset`.
    Swap {
        /// The promote offset: the highest offset a node held at.
        offset: u64,
    },
    /// Abandoned (a node did not hold in time, or an abort): holds are lifted.
    Abandoned {
        /// Why.
        reason: String,
    },
}

/// A node's hold for a promote, reported in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFor {
    /// The promote's id.
    pub promote: String,
    /// The active version's checkpoint under the hold.
    pub checkpoint: u64,
    /// Why the node's diff gate (`projectors.<name>.diff_gate`) refuses the promoted
    /// shadow, run once the hold was in force; `None` when it passed or there is none.
    #[serde(default)]
    pub gate_refused: Option<String>,
}

/// A node's last swap of a projector, under `swap.<projector>.<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSwap {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The node.
    pub node: String,
    /// The projector.
    pub projector: String,
    /// The version swapped in.
    pub version: String,
    /// The offset the replaced version stopped at: the new version serves from there.
    pub offset: u64,
    /// The coordinated swap it carried out, if any.
    pub promote: Option<String>,
    /// For a coordinated swap: the promote offset, when the node could not swap at
    /// it (it was down during the hold and its active version had gone past it).
    pub missed_offset: Option<u64>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A node's lease on one slot of a placed projector, under `<projector>.<slot>` in the
/// leases bucket (see [`placement`](super::placement)). The holder rewrites it every
/// heartbeat; a lease whose revision stops changing expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The projector.
    pub projector: String,
    /// The node holding it; `None` when given up (a node shutting down).
    pub node: Option<String>,
    /// When it was written, in milliseconds since the Unix epoch (the holder's clock;
    /// for people: expiry is judged on each reader's own clock).
    pub at_ms: u64,
}
