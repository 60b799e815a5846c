//! The coordinated swap of a `promote = "manual"` projector: every node swaps at one
//! log offset, so no two nodes serve different versions for the same offset.
//!
//! # The mechanism: a promote record, `promote.<projector>`
//! 1. `refract promote` (the API) on any node checks that every live node runs the
//!    desired version as a shadow that has caught up with its active version, then
//!    writes the record in phase `hold` (compare-and-swap on the key's revision, so
//!    two promotes never interleave).
//! 2. Every node holds its active version where it is ([`Engine::hold`]: it projects
//!    no further event), runs its diff gate (`projectors.<name>.diff_gate`, the same
//!    gate as a single node's automatic swap) on the shadow against the held active
//!    version, and reports the checkpoint and the gate's verdict in its heartbeat.
//! 3. When every live node has held (within [`PROMOTE_HOLD_TIMEOUT`]) and every gate
//!    passed, the coordinator writes phase `swap` with the promote offset `O`, the
//!    highest checkpoint held (compare-and-swap again). Otherwise it writes
//!    `abandoned`, and the holds are lifted.
//! 4. Each node raises its hold to `O`, waits until its active version's checkpoint is
//!    `O` and its shadow's is at least `O`, and swaps: the old version served every
//!    offset up to `O`, the new one serves from `O`. It writes its swap record,
//!    `swap.<projector>.<node>`, with the offset its old version stopped at.
//!
//! A rollback goes through the same record, of kind `rollback` (see
//! [`rollback`](super::rollback)); an abort of a shadow abandons a promote to it that
//! is still holding, and is refused while nodes swap to it ([`before_abort`]).
//!
//! A node that is down during the promote reads the record when it starts, before its
//! engine starts, and starts its active version held at `O`
//! ([`startup_holds`]), so it swaps at `O` too. One that cannot (it was down during the
//! hold with its active version already past `O`, or NATS is unreachable as it
//! starts) swaps as soon as it can and says so in its swap record (`missed_offset`);
//! the cluster view reports it.
//!
//! [`Engine::hold`]: crate::engine::Engine::hold

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use super::records::{
    HeldFor, NodeSwap, PromoteKind, PromotePhase, PromoteRecord, RECORD_FORMAT, now_ms,
};
use super::{Deploys, HEARTBEAT_INTERVAL, UNREACHABLE_AFTER, lock};
use crate::engine::SwapRecord;
use crate::engine::control::Role;

/// How long a promote waits for every live node to hold its active version before
/// it is abandoned: several heartbeats.
pub const PROMOTE_HOLD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a starting node waits for NATS to read the promotes in progress before
/// its engine starts without holds.
pub const STARTUP_HOLDS_TIMEOUT: Duration = Duration::from_secs(5);

/// The key of a projector's promote record.
pub fn promote_key(projector: &str) -> String {
    format!("promote.{projector}")
}

/// The key of a node's swap record.
pub fn swap_key(projector: &str, node: &str) -> String {
    format!("swap.{projector}.{node}")
}

/// What a coordinated promote did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Promoted {
    /// The version every node swaps to.
    pub version: String,
    /// The offset every node swaps at.
    pub offset: u64,
    /// The promote's id.
    pub promote: String,
}

/// Coordinates a promote of `projector` (step 1 and 3 of the module documentation).
///
/// # Errors
/// Why the cluster cannot promote now, with the fix.
pub(crate) async fn coordinate(deploys: &Deploys, projector: &str) -> Result<Promoted, String> {
    let desired = lock(&deploys.desired)
        .get(projector)
        .map(|seen| seen.record.clone())
        .ok_or_else(|| {
            format!("the cluster has no desired version of `{projector}`; deploy one first")
        })?;
    let version = desired.version.clone();
    let participants = participants(deploys, projector, |state| {
        let caught_up = state.shadow_version.as_deref() == Some(version.as_str())
            && state.shadow_state.as_deref() == Some("live")
            && state.shadow_checkpoint >= state.checkpoint;
        (!caught_up).then(|| {
            format!(
                "shadow {} is {} at {} (active at {})",
                state.shadow_version.as_deref().unwrap_or("none"),
                state.shadow_state.as_deref().unwrap_or("-"),
                state
                    .shadow_checkpoint
                    .map_or("-".into(), |c| c.to_string()),
                state.checkpoint.map_or("-".into(), |c| c.to_string()),
            )
        })
    })
    .map_err(|not_ready| {
        format!(
            "not every live node's shadow of `{projector}` version {version} has caught up: {}; wait (`refract status --cluster`), then promote",
            not_ready.join("; ")
        )
    })?;
    let id = uuid::Uuid::now_v7().to_string();
    carry_out(
        deploys,
        projector,
        &version,
        PromoteKind::Promote,
        id,
        &participants,
    )
    .await
}

/// The live nodes that run `projector` (every live node, or for a placed projector
/// those holding its leases), or why some are not ready: `not_ready` says what is
/// wrong with a node's projector, if anything.
///
/// # Errors
/// One sentence per node not ready.
pub(crate) fn participants(
    deploys: &Deploys,
    projector: &str,
    not_ready: impl Fn(&super::view::NodeProjector) -> Option<String>,
) -> Result<Vec<String>, Vec<String>> {
    let view = super::view::build(deploys);
    let on_nodes = view
        .projectors
        .iter()
        .find(|p| p.name == projector)
        .map(|p| p.nodes.clone())
        .unwrap_or_default();
    let mut participants = Vec::new();
    let mut problems = Vec::new();
    for node in view.nodes.iter().filter(|n| n.state == "up") {
        let Some(state) = on_nodes.iter().find(|p| p.node == node.node) else {
            // A placed projector runs on the nodes holding its leases only.
            if super::placement::wanted(deploys, projector).is_none() {
                problems.push(format!("{} does not run it", node.node));
            }
            continue;
        };
        participants.push(node.node.clone());
        if let Some(problem) = not_ready(state) {
            problems.push(format!("{}: {problem}", node.node));
        }
    }
    if participants.is_empty() {
        problems.push("no live node runs it".to_owned());
    }
    if problems.is_empty() {
        Ok(participants)
    } else {
        Err(problems)
    }
}

/// Writes the promote record `id` for `version` (phase `hold`), waits for every
/// participant to hold, then writes phase `swap` with the promote offset.
///
/// # Errors
/// Another promote in progress, NATS refusing, or a node that did not hold (the
/// promote is then abandoned).
pub(crate) async fn carry_out(
    deploys: &Deploys,
    projector: &str,
    version: &str,
    kind: PromoteKind,
    id: String,
    participants: &[String],
) -> Result<Promoted, String> {
    let buckets = deploys
        .buckets_now()
        .ok_or("the cluster's buckets are not open yet")?;
    let key = promote_key(projector);
    let current = buckets
        .projectors
        .entry(key.clone())
        .await
        .map_err(|e| format!("cannot read the promote record: {e}"))?;
    let mut record = PromoteRecord {
        format: RECORD_FORMAT,
        id,
        projector: projector.to_owned(),
        version: version.to_owned(),
        kind,
        phase: PromotePhase::Hold,
        origin: deploys.cluster.config.node.clone(),
        at_ms: now_ms(),
    };
    let value =
        |record: &PromoteRecord| Bytes::from(serde_json::to_vec(record).unwrap_or_default());
    match current {
        Some(entry) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
            if let Ok(previous) = serde_json::from_slice::<PromoteRecord>(&entry.value)
                && previous.phase == PromotePhase::Hold
                && now_ms().saturating_sub(previous.at_ms)
                    < u64::try_from(PROMOTE_HOLD_TIMEOUT.as_millis()).unwrap_or(u64::MAX) * 2
            {
                return Err(format!(
                    "another promote or rollback of `{projector}` (by {}) is in progress; retry when it is done",
                    previous.origin
                ));
            }
            buckets
                .projectors
                .update(&key, value(&record), entry.revision)
                .await
                .map_err(|e| e.to_string())
        }
        _ => buckets
            .projectors
            .create(&key, value(&record))
            .await
            .map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("another node wrote the promote record of `{projector}` at the same time ({e}); retry"))?;
    tracing::info!(node = %deploys.cluster.config.node, %projector, %version, ?kind, id = %record.id, "cluster promote: every live node holds its active version");
    let deadline = Instant::now() + PROMOTE_HOLD_TIMEOUT;
    let offset = loop {
        let reports = lock(&deploys.reports).clone();
        let mut held = Vec::new();
        let mut waiting = Vec::new();
        let mut refused = Vec::new();
        for node in participants {
            let seen = reports.get(node);
            let gone = seen.is_none_or(|s| s.changed.elapsed() >= UNREACHABLE_AFTER);
            let hold = seen.and_then(|s| {
                s.report
                    .projectors
                    .iter()
                    .find(|p| p.name == projector)
                    .and_then(|p| p.held.clone())
                    .filter(|h| h.promote == record.id)
            });
            match hold {
                Some(hold) => {
                    if let Some(reason) = &hold.gate_refused {
                        refused.push(format!("{node}: {reason}"));
                    }
                    held.push(hold.checkpoint);
                }
                None if gone => {}
                None => waiting.push(node.clone()),
            }
        }
        if waiting.is_empty() && !refused.is_empty() {
            let reason = refused.join("; ");
            record.phase = PromotePhase::Abandoned {
                reason: reason.clone(),
            };
            record.at_ms = now_ms();
            let _ = buckets.projectors.put(&key, value(&record)).await;
            return Err(format!(
                "the diff gate refused the promote of `{projector}` to {version}: {reason}; every node goes on serving its active version: deploy a fixed version, or change projectors.{projector}.diff_gate"
            ));
        }
        if waiting.is_empty() && !held.is_empty() {
            break held.into_iter().max().unwrap_or(0);
        }
        if Instant::now() > deadline {
            let reason = format!(
                "{} did not hold within {}s",
                waiting.join(", "),
                PROMOTE_HOLD_TIMEOUT.as_secs()
            );
            record.phase = PromotePhase::Abandoned {
                reason: reason.clone(),
            };
            record.at_ms = now_ms();
            let _ = buckets.projectors.put(&key, value(&record)).await;
            return Err(format!(
                "the {} of `{projector}` was abandoned: {reason}; every node goes on serving its active version",
                kind_name(kind)
            ));
        }
        tokio::time::sleep(HEARTBEAT_INTERVAL / 4).await;
    };
    let entry = buckets
        .projectors
        .entry(key.clone())
        .await
        .map_err(|e| format!("cannot read the promote record: {e}"))?
        .ok_or("the promote record vanished")?;
    record.phase = PromotePhase::Swap { offset };
    record.at_ms = now_ms();
    buckets
        .projectors
        .update(&key, value(&record), entry.revision)
        .await
        .map_err(|e| format!("the promote record changed under this promote ({e}); see `refract status --cluster`"))?;
    tracing::info!(node = %deploys.cluster.config.node, %projector, %version, ?kind, offset, "cluster promote: every node swaps at this offset");
    Ok(Promoted {
        version: version.to_owned(),
        offset,
        promote: record.id,
    })
}

/// Before an abort of `projector`'s shadow `version`: a coordinated swap to it that
/// is still holding is abandoned (every node lifts its hold, and none swaps); one
/// whose nodes are already swapping refuses the abort, which would leave nodes serving
/// different versions.
///
/// # Errors
/// The swap under way, and what to do instead.
pub(crate) async fn before_abort(
    deploys: &Deploys,
    projector: &str,
    version: &str,
) -> Result<(), String> {
    let Some((revision, mut record)) = lock(&deploys.promotes).get(projector).cloned() else {
        return Ok(());
    };
    if record.version != version {
        return Ok(());
    }
    match record.phase {
        PromotePhase::Hold => {
            let buckets = deploys
                .buckets_now()
                .ok_or("the cluster's buckets are not open yet")?;
            record.phase = PromotePhase::Abandoned {
                reason: format!("aborted on node {}", deploys.cluster.config.node),
            };
            record.at_ms = now_ms();
            let value = Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
            buckets
                .projectors
                .update(promote_key(projector), value, revision)
                .await
                .map(|_| ())
                .map_err(|e| format!("the {} of `{projector}` moved on meanwhile ({e}); see `refract status --cluster`", kind_name(record.kind)))
        }
        PromotePhase::Swap { offset } => Err(format!(
            "every node is swapping `{projector}` to version {version} at offset {offset} ({} {}); aborting now would leave nodes serving different versions: wait for it, then roll back",
            kind_name(record.kind),
            record.id
        )),
        PromotePhase::Abandoned { .. } => Ok(()),
    }
}

/// `promote` or `rollback`, for messages.
fn kind_name(kind: PromoteKind) -> &'static str {
    match kind {
        PromoteKind::Promote => "promote",
        PromoteKind::Rollback => "rollback",
    }
}

/// Carries out this node's part of a promote record, once per tick until done: true
/// when done.
pub(crate) async fn apply(deploys: &Deploys, record: &PromoteRecord) -> Result<bool, String> {
    let name = record.projector.clone();
    let Some(view) = deploys.engine.projector(&name) else {
        return Ok(false);
    };
    let status_of = |role: Role| {
        view.versions
            .iter()
            .find(|v| v.role == role)
            .and_then(|v| v.status.clone())
    };
    let active = status_of(Role::Active);
    let shadow = status_of(Role::Shadow);
    match &record.phase {
        PromotePhase::Hold => {
            if lock(&deploys.held)
                .get(&name)
                .is_some_and(|h| h.promote == record.id)
            {
                return Ok(true);
            }
            let Some(active) = active else {
                return Ok(false);
            };
            if active.version == record.version {
                return Ok(true);
            }
            let checkpoint = engine_hold(deploys, &name, Some(active.checkpoint)).await?;
            let gate_refused = match record.kind {
                PromoteKind::Promote => {
                    gate(deploys, &name, &active.version, &record.version, checkpoint).await
                }
                // A rollback returns to a version that served: as on a single node,
                // no gate stands in its way.
                PromoteKind::Rollback => None,
            };
            lock(&deploys.held).insert(
                name.clone(),
                HeldFor {
                    promote: record.id.clone(),
                    checkpoint,
                    gate_refused,
                },
            );
            tracing::info!(node = %deploys.cluster.config.node, projector = %name, checkpoint, "cluster promote: holding the active version");
            Ok(true)
        }
        PromotePhase::Swap { offset } => {
            let offset = *offset;
            let Some(active) = active else {
                return Ok(false);
            };
            if active.version == record.version {
                lock(&deploys.held).remove(&name);
                return Ok(true);
            }
            let holding = lock(&deploys.held)
                .get(&name)
                .is_some_and(|h| h.promote == record.id && h.checkpoint == offset);
            if !holding {
                let checkpoint = engine_hold(deploys, &name, Some(offset)).await?;
                lock(&deploys.held).insert(
                    name.clone(),
                    HeldFor {
                        promote: record.id.clone(),
                        checkpoint: offset,
                        gate_refused: None,
                    },
                );
                if checkpoint > offset {
                    tracing::warn!(node = %deploys.cluster.config.node, projector = %name, checkpoint, offset, "cluster promote: the active version is already past the promote offset; swapping as soon as possible");
                }
            }
            // A rollback's version comes back by the engine's own rollback: warm, it
            // swaps in at once; otherwise it catches up with the active version, held
            // at the offset, and swaps in there.
            let shadow_ready = record.kind == PromoteKind::Rollback
                || shadow.as_ref().is_some_and(|s| {
                    s.version == record.version && s.checkpoint >= offset.max(active.checkpoint)
                });
            if active.checkpoint < offset || !shadow_ready {
                return Ok(false);
            }
            lock(&deploys.promoting).insert(name.clone(), (record.id.clone(), offset));
            let engine = Arc::clone(&deploys.engine);
            let projector = name.clone();
            let kind = record.kind;
            let swapped = tokio::task::spawn_blocking(move || match kind {
                PromoteKind::Promote => engine.promote(&projector),
                PromoteKind::Rollback => engine.rollback(&projector),
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            lock(&deploys.held).remove(&name);
            tracing::info!(node = %deploys.cluster.config.node, projector = %name, version = %swapped, offset, ?kind, "cluster promote: swapped");
            Ok(true)
        }
        PromotePhase::Abandoned { .. } => {
            if lock(&deploys.held).remove(&name).is_some() {
                engine_hold(deploys, &name, None).await?;
            }
            Ok(true)
        }
    }
}

/// Runs this node's diff gate for `projector`, if it has one, on the shadow `shadow`
/// against the active version `active` held at `checkpoint`: the same gate, on the
/// same read models, as a single node's automatic swap. Why it refuses, if it does.
async fn gate(
    deploys: &Deploys,
    projector: &str,
    active: &str,
    shadow: &str,
    checkpoint: u64,
) -> Option<String> {
    let gate = deploys.engine.config().projector(projector).diff_gate?;
    // The shadow was caught up when the promote began; it reaches the hold soon.
    let deadline = Instant::now() + PROMOTE_HOLD_TIMEOUT / 2;
    loop {
        let reached = deploys.engine.projector(projector).is_some_and(|view| {
            view.versions.iter().any(|v| {
                v.version == shadow
                    && v.role == Role::Shadow
                    && v.status
                        .as_ref()
                        .is_some_and(|s| s.checkpoint >= checkpoint)
            })
        });
        if reached {
            break;
        }
        if Instant::now() > deadline {
            return Some(format!(
                "the shadow {shadow} did not reach the held offset {checkpoint} to run the diff gate"
            ));
        }
        tokio::time::sleep(HEARTBEAT_INTERVAL / 10).await;
    }
    let data = deploys.engine.data_dir();
    let shadow_db = data.version_db(projector, shadow);
    let active_db = data.version_db(projector, active);
    let path = gate.clone();
    // SQLite: off the async runtime.
    let verdict = tokio::task::spawn_blocking(move || {
        crate::engine::diff::run_gate(&path, &shadow_db, Some(&active_db))
    })
    .await
    .unwrap_or_else(|error| Err(error.to_string()));
    verdict.err().map(|reason| {
        tracing::warn!(node = %deploys.cluster.config.node, %projector, %shadow, "cluster promote: the diff gate refuses: {reason}");
        format!("diff gate {} refused version {shadow}: {reason}", gate.display())
    })
}

async fn engine_hold(deploys: &Deploys, name: &str, ceiling: Option<u64>) -> Result<u64, String> {
    let engine = Arc::clone(&deploys.engine);
    let projector = name.to_owned();
    tokio::task::spawn_blocking(move || engine.hold(&projector, ceiling))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Writes a swap record for every swap this node makes.
pub(crate) async fn record_swaps(
    deploys: Arc<Deploys>,
    mut swaps: UnboundedReceiver<SwapRecord>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let swap = tokio::select! {
            swap = swaps.recv() => swap,
            _ = stop.changed() => return,
        };
        let Some(swap) = swap else { return };
        let promoting = lock(&deploys.promoting).remove(&swap.projector);
        let node = deploys.cluster.config.node.clone();
        let record = NodeSwap {
            format: RECORD_FORMAT,
            node: node.clone(),
            projector: swap.projector.clone(),
            version: swap.version.clone(),
            offset: swap.offset,
            missed_offset: promoting
                .as_ref()
                .map(|(_, offset)| *offset)
                .filter(|offset| *offset != swap.offset),
            promote: promoting.map(|(id, _)| id),
            at_ms: now_ms(),
        };
        tracing::info!(%node, projector = %swap.projector, version = %swap.version, offset = swap.offset, "swap record");
        let buckets = tokio::select! {
            buckets = deploys.buckets() => buckets,
            _ = stop.changed() => return,
        };
        let value = Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
        let key = swap_key(&swap.projector, &node);
        let mut pause = crate::cluster::config::RETRY_INITIAL;
        while let Err(error) = buckets.projectors.put(&key, value.clone()).await {
            tracing::warn!(%node, "cannot write the swap record: {error}; retrying");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            pause = (pause * 2).min(crate::cluster::config::RETRY_MAX);
        }
    }
}

/// The holds a starting node's engine must start with: for every promote in phase
/// `swap`, its offset and version. Empty when NATS does not answer within
/// [`STARTUP_HOLDS_TIMEOUT`] (the node then swaps late, and says so).
pub async fn startup_holds(node: &crate::cluster::ClusterNode) -> BTreeMap<String, (u64, String)> {
    let shared = Arc::clone(&node.shared);
    let read = async move {
        while shared.client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let buckets = super::buckets::open(&shared.jetstream, &shared.config).await?;
        let mut holds = BTreeMap::new();
        let keys: Vec<String> = {
            use futures_util::TryStreamExt as _;
            buckets
                .projectors
                .keys()
                .await
                .map_err(|e| e.to_string())?
                .try_collect()
                .await
                .map_err(|e| e.to_string())?
        };
        for key in keys.into_iter().filter(|k| k.starts_with("promote.")) {
            let Some(value) = buckets
                .projectors
                .get(&key)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<PromoteRecord>(&value) else {
                continue;
            };
            let PromotePhase::Swap { offset } = record.phase else {
                continue;
            };
            // Only while it is still what the cluster asks for (not since rolled back
            // or replaced by a newer deploy).
            let desired = buckets
                .projectors
                .get(super::publish::desired_key(&record.projector))
                .await
                .map_err(|e| e.to_string())?
                .and_then(|value| serde_json::from_slice::<super::records::Desired>(&value).ok());
            if desired.is_some_and(|d| d.version == record.version) {
                holds.insert(record.projector, (offset, record.version));
            }
        }
        Ok::<_, String>(holds)
    };
    match tokio::time::timeout(STARTUP_HOLDS_TIMEOUT, read).await {
        Ok(Ok(holds)) => holds,
        Ok(Err(error)) => {
            tracing::warn!("cannot read the promotes in progress: {error}; starting without holds");
            BTreeMap::new()
        }
        Err(_) => {
            tracing::warn!(
                "NATS did not answer within {STARTUP_HOLDS_TIMEOUT:?}; starting without holds for promotes in progress"
            );
            BTreeMap::new()
        }
    }
}
