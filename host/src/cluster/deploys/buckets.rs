//! The three JetStream buckets of a cluster's deploys, named after its stream so
//! separate clusters on one NATS never share them:
//!
//! - `<stream>-components` (object store): every component deployed, named by the
//!   SHA-256 of its bytes.
//! - `<stream>-projectors` (key-value): `desired.<projector>`, the version every node
//!   should serve ([`Desired`](super::records::Desired)).
//! - `<stream>-nodes` (key-value): `node.<name>`, each node's heartbeat
//!   ([`NodeReport`](super::records::NodeReport)).
//! - `<stream>-leases` (key-value): `<projector>.<slot>`, which node runs a placed
//!   projector ([`Lease`](super::records::Lease); see [`placement`](super::placement)).
//!
//! Each is created by the first node that needs it, with the stream's replica count.

use async_nats::jetstream::{self, kv, object_store, stream};

use crate::cluster::config::ClusterConfig;

/// Versions of each key kept in the projectors bucket: enough to read what the
/// cluster asked for lately (`nats kv history`).
const DESIRED_HISTORY: i64 = 10;

/// The largest record in a key-value bucket. Records are small JSON documents; a
/// node report grows with the projectors, 1 MiB is thousands of them.
const MAX_RECORD_BYTES: i32 = 1024 * 1024;

/// The deploy buckets of one cluster.
#[derive(Clone)]
pub(crate) struct Buckets {
    /// The components, by SHA-256.
    pub(crate) components: object_store::ObjectStore,
    /// The desired version of each projector.
    pub(crate) projectors: kv::Store,
    /// Each node's heartbeat.
    pub(crate) nodes: kv::Store,
    /// The leases of placed projectors.
    pub(crate) leases: kv::Store,
}

/// Opens the buckets, creating those missing.
///
/// # Errors
/// JetStream unreachable or refusing (too few servers for the replicas), as text.
pub(crate) async fn open(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<Buckets, String> {
    let components_name = format!("{}-components", config.stream);
    let components = match jetstream.get_object_store(&components_name).await {
        Ok(store) => store,
        Err(_) => jetstream
            .create_object_store(object_store::Config {
                bucket: components_name.clone(),
                description: Some("Refract projector components, by SHA-256".into()),
                num_replicas: config.replicas,
                ..object_store::Config::default()
            })
            .await
            .map_err(|error| format!("object store `{components_name}`: {error}"))?,
    };
    let projectors = key_value(
        jetstream,
        format!("{}-projectors", config.stream),
        "Refract: the version each projector should serve",
        DESIRED_HISTORY,
        config.replicas,
    )
    .await?;
    let nodes = key_value(
        jetstream,
        format!("{}-nodes", config.stream),
        "Refract: each node's heartbeat",
        1,
        config.replicas,
    )
    .await?;
    let leases = key_value(
        jetstream,
        format!("{}-leases", config.stream),
        "Refract: which nodes run each placed projector",
        1,
        config.replicas,
    )
    .await?;
    Ok(Buckets {
        components,
        projectors,
        nodes,
        leases,
    })
}

async fn key_value(
    jetstream: &jetstream::Context,
    bucket: String,
    description: &str,
    history: i64,
    replicas: usize,
) -> Result<kv::Store, String> {
    if let Ok(store) = jetstream.get_key_value(&bucket).await {
        return Ok(store);
    }
    // The stream a key-value bucket is, as `create_key_value` makes it. That call
    // first asks for the account's limits, whose answer from nats-server 2.9 the
    // client cannot read; the bucket itself works the same on every server version.
    jetstream
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: history,
            max_message_size: MAX_RECORD_BYTES,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            num_replicas: replicas,
            discard: stream::DiscardPolicy::New,
            ..stream::Config::default()
        })
        .await
        .map_err(|error| format!("key-value bucket `{bucket}`: {error}"))?;
    jetstream
        .get_key_value(&bucket)
        .await
        .map_err(|error| format!("key-value bucket `{bucket}`: {error}"))
}
