//! Snapshots shared between cluster nodes, so a placed projector that moves to a node
//! new to it starts from a recent snapshot instead of replaying the log from offset 1.
//!
//! # Where they live
//! The JetStream object store `<stream>-snapshots` (created by the first node that
//! needs it, with the stream's replica count) holds read-model snapshots exactly as the
//! snapshot store writes them (`VACUUM INTO` copies, see [`crate::snapshots::store`]),
//! one object per snapshot, named `<projector>/<version>/<checkpoint, 20 digits>`
//! ([`object_name`]). The object's metadata carries what the local manifest records:
//! the sha256 of the file, its size, when it was taken, and the node that published
//! it. Offsets are JetStream sequences, identical on every node's mirror, so a
//! checkpoint means the same events on every node; the version is the component's
//! hash, so a snapshot is only ever used by the same code that built it.
//!
//! # Publish ([`publish`])
//! A task on every node looks, every [`PUBLISH_TICK`], at the local snapshots of the
//! placed projectors this node holds a lease for, and publishes the newest snapshot of
//! each version that is not in the bucket yet, then deletes the version's older shared
//! ones beyond `cluster.shared_snapshot_keep` ([`to_prune`]). It reads the snapshot
//! files the snapshot schedule, a swap or `refract snapshot` wrote, so the engine and
//! the schedule know nothing of it; a NATS failure is logged, counted and shown in
//! `GET /v1/cluster` and `/metrics`, and never touches the local snapshot.
//!
//! An upload that began and failed or timed out is not retried for that snapshot (see
//! `publish::Next`): the client leaves the chunks it published, so one attempt per
//! snapshot bounds them, and the bucket's size cap
//! (`cluster.shared_snapshot_bucket_max_bytes`, [`open_bucket`]) bounds the total, so
//! the bucket can never fill the disk of the servers holding the log.
//!
//! # Restore ([`restore`])
//! When the cluster's desired version of a placed projector is deployed on a node that
//! holds its lease and does not run it, the node first looks in the bucket for the
//! newest snapshot of that version at or below its mirror's head and above its own
//! newest local one ([`choose`]), fetches it (bounded by
//! `cluster.shared_snapshot_max_bytes` and `cluster.shared_snapshot_fetch_timeout_ms`)
//! into a temporary file in the local snapshot store, and imports it there after
//! checking its sha256 and what the database says about itself (projector, version,
//! checkpoint; [`Store::import`]). The engine's deploy then seeds the read model from
//! the newest local snapshot, through the same path a node that ran the projector
//! before takes, and replays only the events after it. Any failure leaves the local
//! store as it was (temporary file deleted) and the projector starts from its local
//! snapshot or offset 1; the reason is logged and shown in `GET /v1/cluster`.
//!
//! [`Store::import`]: crate::snapshots::store::Store::import

pub mod publish;
pub mod restore;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_nats::jetstream::{self, object_store};
use serde::{Deserialize, Serialize};

use crate::snapshots::store::{Reason, SnapshotEntry};

/// How often the publisher looks for new local snapshots of the projectors placed here.
pub const PUBLISH_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// How long listing the bucket or one put's bookkeeping may take before the attempt is
/// given up (and retried at the next tick, or the restore falls back).
pub const BUCKET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The format of the metadata this build writes; an object with a newer one is not
/// used.
pub const SHARED_FORMAT: u32 = 1;

/// How many restores `GET /v1/cluster` shows: the newest one per projector, at most
/// this many projectors (the oldest dropped first).
const MAX_RESTORES_SHOWN: usize = 64;

/// The object name of one snapshot: `<projector>/<version>/<checkpoint>`, the
/// checkpoint zero-padded so names sort by offset.
pub fn object_name(projector: &str, version: &str, checkpoint: u64) -> String {
    format!("{projector}/{version}/{checkpoint:020}")
}

/// The bucket's name for a cluster's stream.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}-snapshots")
}

/// One shared snapshot, as its object's name and metadata describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSnapshot {
    /// The object's name.
    pub name: String,
    /// The projector.
    pub projector: String,
    /// The snapshot, as the local manifest would list it.
    pub entry: SnapshotEntry,
    /// The node that published it.
    pub node: String,
}

impl SharedSnapshot {
    /// The metadata written with the object.
    pub fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("refract_format".to_owned(), SHARED_FORMAT.to_string()),
            ("projector".to_owned(), self.projector.clone()),
            ("version".to_owned(), self.entry.version.clone()),
            ("checkpoint".to_owned(), self.entry.checkpoint.to_string()),
            ("sha256".to_owned(), self.entry.sha256.clone()),
            ("bytes".to_owned(), self.entry.bytes.to_string()),
            ("taken_at".to_owned(), self.entry.taken_at.clone()),
            ("node".to_owned(), self.node.clone()),
        ])
    }

    /// Reads an object's name and metadata; why not, when they are not a shared
    /// snapshot this build can use (another format, a name that disagrees with the
    /// metadata, a missing field).
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn from_object(
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<SharedSnapshot, String> {
        let field = |key: &str| {
            metadata
                .get(key)
                .cloned()
                .ok_or_else(|| format!("object {name} has no `{key}` in its metadata"))
        };
        let format: u32 = field("refract_format")?
            .parse()
            .map_err(|_| format!("object {name}: refract_format is not a number"))?;
        if format > SHARED_FORMAT {
            return Err(format!(
                "object {name} has format {format}, newer than this node's {SHARED_FORMAT}: upgrade this node"
            ));
        }
        let projector = field("projector")?;
        let version = field("version")?;
        let checkpoint: u64 = field("checkpoint")?
            .parse()
            .map_err(|_| format!("object {name}: checkpoint is not an offset"))?;
        let bytes: u64 = field("bytes")?
            .parse()
            .map_err(|_| format!("object {name}: bytes is not a size"))?;
        let sha256 = field("sha256")?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("object {name}: sha256 is not a SHA-256 in hex"));
        }
        if object_name(&projector, &version, checkpoint) != name {
            return Err(format!(
                "object {name} says it is projector `{projector}` version {version} at offset {checkpoint}, which its name does not match"
            ));
        }
        Ok(SharedSnapshot {
            name: name.to_owned(),
            projector,
            entry: SnapshotEntry {
                version,
                checkpoint,
                bytes,
                sha256,
                taken_at: metadata.get("taken_at").cloned().unwrap_or_default(),
                reason: Reason::Shared,
            },
            node: metadata.get("node").cloned().unwrap_or_default(),
        })
    }
}

/// The snapshot a node should restore `version` of a projector from: the newest shared
/// one of that version at or below `mirror_head` (the node replays its own mirror from
/// there, so it must have the events up to the checkpoint) and above `local`, the
/// checkpoint of the node's own newest snapshot of the version (no gain otherwise).
pub fn choose<'a>(
    shared: &'a [SharedSnapshot],
    version: &str,
    mirror_head: u64,
    local: Option<u64>,
) -> Option<&'a SharedSnapshot> {
    shared
        .iter()
        .filter(|snapshot| {
            snapshot.entry.version == version
                && snapshot.entry.checkpoint <= mirror_head
                && local.is_none_or(|local| snapshot.entry.checkpoint > local)
        })
        .max_by_key(|snapshot| snapshot.entry.checkpoint)
}

/// The shared snapshots of `version` beyond the newest `keep`, to delete.
pub fn to_prune<'a>(
    shared: &'a [SharedSnapshot],
    version: &str,
    keep: usize,
) -> Vec<&'a SharedSnapshot> {
    let mut of_version: Vec<&SharedSnapshot> = shared
        .iter()
        .filter(|snapshot| snapshot.entry.version == version)
        .collect();
    of_version.sort_by_key(|snapshot| std::cmp::Reverse(snapshot.entry.checkpoint));
    of_version.into_iter().skip(keep.max(1)).collect()
}

/// Opens the bucket, creating it when missing, capped at `max_bytes`
/// (`cluster.shared_snapshot_bucket_max_bytes`). A bucket an earlier build created
/// without a cap gets it here (its stream's `max_bytes` is updated); if NATS refuses,
/// the bucket is used uncapped and a warning says how to cap it by hand.
///
/// # Errors
/// JetStream unreachable or refusing, as text naming the bucket.
pub(crate) async fn open_bucket(
    jetstream: &jetstream::Context,
    stream: &str,
    replicas: usize,
    max_bytes: u64,
) -> Result<object_store::ObjectStore, String> {
    let name = bucket_name(stream);
    let cap = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    let opened = async {
        if let Ok(store) = jetstream.get_object_store(&name).await {
            cap_existing(jetstream, &name, cap).await;
            return Ok(store);
        }
        jetstream
            .create_object_store(object_store::Config {
                bucket: name.clone(),
                description: Some("Refract read-model snapshots shared between nodes".into()),
                num_replicas: replicas,
                max_bytes: cap,
                ..object_store::Config::default()
            })
            .await
            .map_err(|error| format!("object store `{name}`: {error}"))
    };
    tokio::time::timeout(BUCKET_TIMEOUT, opened)
        .await
        .map_err(|_| {
            format!("object store `{name}`: NATS did not answer within {BUCKET_TIMEOUT:?}")
        })?
}

/// Gives an existing bucket created without a size cap (JetStream's `max_bytes` of -1
/// or 0) the configured one. A bucket that has a cap keeps it: an operator may have set
/// it on purpose, and nodes configured differently must not fight over it.
async fn cap_existing(jetstream: &jetstream::Context, bucket: &str, cap: i64) {
    let stream_name = format!("OBJ_{bucket}");
    let mut stream = match jetstream.get_stream(&stream_name).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%bucket, "shared snapshots: cannot read the bucket's size cap: {error}");
            return;
        }
    };
    let mut config = match stream.info().await {
        Ok(info) => info.config.clone(),
        Err(error) => {
            tracing::warn!(%bucket, "shared snapshots: cannot read the bucket's size cap: {error}");
            return;
        }
    };
    if config.max_bytes > 0 {
        return;
    }
    config.max_bytes = cap;
    match jetstream.update_stream(config).await {
        Ok(_) => {
            tracing::info!(%bucket, max_bytes = cap, "shared snapshots: capped a bucket created without a size cap");
        }
        Err(error) => {
            tracing::warn!(%bucket, "shared snapshots: the bucket has no size cap and NATS refused one ({error}); cap it by hand: nats stream edit {stream_name} --max-bytes {cap}");
        }
    }
}

/// Every shared snapshot of `projector` in the bucket; objects that are not usable
/// shared snapshots are logged and passed over.
///
/// # Errors
/// The bucket cannot be listed, as text.
pub(crate) async fn list(
    bucket: &object_store::ObjectStore,
    projector: &str,
) -> Result<Vec<SharedSnapshot>, String> {
    use futures_util::StreamExt as _;
    let prefix = format!("{projector}/");
    let listed = async {
        let mut objects = bucket
            .list()
            .await
            .map_err(|error| format!("cannot list the shared snapshots: {error}"))?;
        let mut found = Vec::new();
        while let Some(info) = objects.next().await {
            let info =
                info.map_err(|error| format!("cannot list the shared snapshots: {error}"))?;
            if !info.name.starts_with(&prefix) {
                continue;
            }
            match SharedSnapshot::from_object(&info.name, &info.metadata) {
                Ok(snapshot) if snapshot.projector == projector => found.push(snapshot),
                Ok(_) => {}
                Err(error) => tracing::warn!(%projector, "passing over a shared snapshot: {error}"),
            }
        }
        Ok(found)
    };
    tokio::time::timeout(BUCKET_TIMEOUT, listed)
        .await
        .map_err(|_| format!("listing the shared snapshots took more than {BUCKET_TIMEOUT:?}"))?
}

/// What a node's shared snapshots did, as `GET /v1/cluster` and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedSnapshotsStatus {
    /// Snapshots this node published.
    pub published: u64,
    /// The id (`<version>/<checkpoint>`) of each placed projector's snapshot this node
    /// published last.
    pub last_published: BTreeMap<String, String>,
    /// Publishes that failed (NATS down or refusing, a snapshot above
    /// `cluster.shared_snapshot_max_bytes`); the local snapshot is kept either way.
    pub publish_failures: u64,
    /// The last publish failure, with the projector and the snapshot.
    pub last_publish_error: Option<String>,
    /// Restores from a shared snapshot that this node installed.
    pub restored: u64,
    /// Restores that failed and fell back to a local snapshot or offset 1.
    pub restore_fallbacks: u64,
    /// The last restore decision of each placed projector that came to this node.
    pub restores: BTreeMap<String, RestoreRecord>,
}

/// How a placed projector started on this node when its lease came here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// The version deployed.
    pub version: String,
    /// `restored` (from a shared snapshot), `local` (no newer shared snapshot than
    /// this node's own, or none at all: the engine starts from its own newest snapshot
    /// or offset 1) or `fell_back` (a shared snapshot was there but could not be used).
    pub outcome: String,
    /// The offset the projector's replay starts after: the snapshot's checkpoint, or 0
    /// for a replay from offset 1.
    pub started_from: u64,
    /// The shared snapshot used or refused (`<version>/<checkpoint>`).
    pub snapshot: Option<String>,
    /// The node that published it.
    pub published_by: Option<String>,
    /// Why a shared snapshot was not used.
    pub reason: Option<String>,
}

/// The shared-snapshot state of one node: counters and the bucket, once opened.
#[derive(Default)]
pub(crate) struct Tracker {
    status: Mutex<SharedSnapshotsStatus>,
    bucket: tokio::sync::Mutex<Option<object_store::ObjectStore>>,
}

impl Tracker {
    /// The status now.
    pub(crate) fn status(&self) -> SharedSnapshotsStatus {
        lock(&self.status).clone()
    }

    /// The bucket, opened (and created) on first use.
    pub(crate) async fn bucket(
        &self,
        jetstream: &jetstream::Context,
        stream: &str,
        replicas: usize,
        max_bytes: u64,
    ) -> Result<object_store::ObjectStore, String> {
        let mut bucket = self.bucket.lock().await;
        if let Some(opened) = bucket.as_ref() {
            return Ok(opened.clone());
        }
        let opened = open_bucket(jetstream, stream, replicas, max_bytes).await?;
        *bucket = Some(opened.clone());
        Ok(opened)
    }

    fn published(&self, projector: &str, id: String) {
        let mut status = lock(&self.status);
        status.published += 1;
        status.last_published.insert(projector.to_owned(), id);
    }

    fn publish_failed(&self, error: String) {
        let mut status = lock(&self.status);
        status.publish_failures += 1;
        status.last_publish_error = Some(error);
    }

    fn restore_decided(&self, projector: &str, record: RestoreRecord) {
        let mut status = lock(&self.status);
        match record.outcome.as_str() {
            "restored" => status.restored += 1,
            "fell_back" => status.restore_fallbacks += 1,
            _ => {}
        }
        if status.restores.len() >= MAX_RESTORES_SHOWN && !status.restores.contains_key(projector) {
            let first = status.restores.keys().next().cloned();
            if let Some(first) = first {
                status.restores.remove(&first);
            }
        }
        status.restores.insert(projector.to_owned(), record);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The node's `<stream>-snapshots` bucket, opened once (and capped) with this node's
/// cluster configuration: what publishing and restoring both write to and read from.
pub(crate) async fn node_bucket(
    deploys: &crate::cluster::deploys::Deploys,
) -> Result<object_store::ObjectStore, String> {
    let config = &deploys.cluster.config;
    deploys
        .cluster
        .shared_snapshots
        .bucket(
            &deploys.cluster.jetstream,
            &config.stream,
            config.replicas,
            config.shared_snapshots.bucket_max_bytes,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(version: &str, checkpoint: u64) -> SharedSnapshot {
        SharedSnapshot {
            name: object_name("cars", version, checkpoint),
            projector: "cars".into(),
            entry: SnapshotEntry {
                version: version.into(),
                checkpoint,
                bytes: 4096,
                sha256: "ab".repeat(32),
                taken_at: "2026-11-26T12:00:00Z".into(),
                reason: Reason::Shared,
            },
            node: "n1".into(),
        }
    }

    #[test]
    fn names_sort_by_offset_and_round_trip_through_the_metadata() {
        assert!(object_name("cars", "v1", 9) < object_name("cars", "v1", 10));
        let snapshot = shared("v1", 42);
        assert_eq!(snapshot.name, "cars/v1/00000000000000000042");
        let read = SharedSnapshot::from_object(&snapshot.name, &snapshot.metadata())
            .expect("its own metadata reads back");
        assert_eq!(read, snapshot);
    }

    #[test]
    fn metadata_that_disagrees_with_the_name_or_is_newer_is_refused() {
        let snapshot = shared("v1", 42);
        let mut metadata = snapshot.metadata();
        metadata.insert("checkpoint".into(), "43".into());
        let error = SharedSnapshot::from_object(&snapshot.name, &metadata).unwrap_err();
        assert!(error.contains("does not match"), "{error}");
        let mut metadata = snapshot.metadata();
        metadata.insert("refract_format".into(), "99".into());
        let error = SharedSnapshot::from_object(&snapshot.name, &metadata).unwrap_err();
        assert!(error.contains("upgrade this node"), "{error}");
        let mut metadata = snapshot.metadata();
        metadata.insert("sha256".into(), "not-hex".into());
        let error = SharedSnapshot::from_object(&snapshot.name, &metadata).unwrap_err();
        assert!(error.contains("SHA-256"), "{error}");
        let mut metadata = snapshot.metadata();
        metadata.remove("bytes");
        let error = SharedSnapshot::from_object(&snapshot.name, &metadata).unwrap_err();
        assert!(error.contains("`bytes`"), "{error}");
    }

    #[test]
    fn a_restore_takes_the_newest_of_its_version_the_mirror_has_reached_above_its_own() {
        let all = vec![
            shared("v1", 10),
            shared("v1", 30),
            shared("v1", 50),
            shared("v2", 60),
        ];
        let pick = |version: &str, head: u64, local: Option<u64>| {
            choose(&all, version, head, local).map(|s| s.entry.checkpoint)
        };
        assert_eq!(pick("v1", 100, None), Some(50));
        // The mirror has not reached 50 yet.
        assert_eq!(pick("v1", 49, None), Some(30));
        // Its own snapshot at 30 is as good; at 20, 50 is better.
        assert_eq!(pick("v1", 49, Some(30)), None);
        assert_eq!(pick("v1", 100, Some(20)), Some(50));
        // Never another version's.
        assert_eq!(pick("v2", 59, None), None);
        assert_eq!(pick("v3", 100, None), None);
    }

    #[test]
    fn pruning_keeps_the_newest_of_one_version_only() {
        let all = vec![
            shared("v1", 10),
            shared("v2", 5),
            shared("v1", 30),
            shared("v1", 20),
        ];
        let dropped: Vec<u64> = to_prune(&all, "v1", 2)
            .iter()
            .map(|s| s.entry.checkpoint)
            .collect();
        assert_eq!(dropped, vec![10]);
        assert!(to_prune(&all, "v2", 2).is_empty());
        // keep 0 still keeps the newest: it is what a failover restores.
        assert_eq!(to_prune(&all, "v1", 0).len(), 2);
    }
}
