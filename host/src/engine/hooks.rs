//! What the engine tells a listener outside it as it happens: cluster mode hears of
//! every component deployed on this node, so it can give the deploy to the whole
//! cluster (see `crate::cluster::deploys`). A single-node host sets no hooks.

use tokio::sync::mpsc::UnboundedSender;

/// A component this node deployed on its own account (the plugins folder, `refract
/// deploy`, the API), not one it was asked to run by the cluster.
#[derive(Debug, Clone)]
pub struct LocalDeploy {
    /// The projector the component declares.
    pub projector: String,
    /// Its version (short content hash).
    pub version: String,
    /// The SHA-256 of its bytes, hex.
    pub sha256: String,
    /// The component. Deploys are operator actions, each bounded by
    /// `limits.max_component_bytes`, so an unbounded channel of them stays small.
    pub wasm: Vec<u8>,
    /// Deployed from the plugins folder as the host started: a node joining a cluster
    /// with an old file there must not undo a newer deploy, so the cluster only takes
    /// such a deploy for a projector it does not know yet.
    pub at_startup: bool,
}

/// A swap that happened: the version now serving, and the offset the replaced
/// version had reached when it stopped (the new one serves from there on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRecord {
    /// The projector.
    pub projector: String,
    /// The version swapped in.
    pub version: String,
    /// The replaced version's final checkpoint.
    pub offset: u64,
}

/// The listeners the engine reports to, and what it starts with; none by default.
#[derive(Debug, Clone, Default)]
pub struct EngineHooks {
    /// Hears of every component deployed here on this node's own account whose
    /// shadow replay started.
    pub deploys: Option<UnboundedSender<LocalDeploy>>,
    /// Hears of every swap.
    pub swaps: Option<UnboundedSender<SwapRecord>>,
    /// Active versions to hold at an offset from the start (see [`Engine::hold`]): a
    /// cluster node restarting in the middle of a coordinated swap. By projector: the
    /// offset, and the version being promoted (an active version that already is it
    /// is not held).
    ///
    /// [`Engine::hold`]: crate::engine::Engine::hold
    pub holds: std::collections::BTreeMap<String, (u64, String)>,
}

impl EngineHooks {
    /// Reports a swap.
    pub(in crate::engine) fn swapped(&self, swap: SwapRecord) {
        if let Some(swaps) = &self.swaps {
            let _ = swaps.send(swap);
        }
    }

    /// Reports a local deploy; a listener that has gone away is no error.
    pub(in crate::engine) fn deployed(&self, deploy: LocalDeploy) {
        if let Some(deploys) = &self.deploys {
            let _ = deploys.send(deploy);
        }
    }
}
