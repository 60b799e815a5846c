//! Cluster mode: the event log replicated by NATS JetStream, appends on any node, every
//! node a full read replica.
//!
//! JetStream is the source of truth. The log is one JetStream stream (replicated by
//! JetStream's own Raft); each message carries one or more append requests
//! ([`wire`]). Every node keeps a **mirror** of it in its own `events.db`, fed in
//! stream order by a JetStream consumer ([`mirror`]) through the log's one entry point
//! for replicated requests, [`EventLog::apply_ordered`]. Applying is deterministic, so
//! every node holds the same events at the same offsets, and projections, reads,
//! queries and subscriptions stay local.
//!
//! An append on any node ([`append`]) is validated, given ids for the events that have
//! none, published as one message with a `Nats-Msg-Id`, and acknowledged to the client
//! once JetStream has stored it (a majority of the replicas) **and** this node's
//! mirror has applied it: the outcome (offsets, or a 409 conflict) is what every node
//! computes for that message. The README's "Scaling out" section has the whole design
//! and its proof.
//!
//! # Layout
//! - [`config`]: `[cluster]`, `--cluster` / `--node`, every cluster limit.
//! - [`connection`]: the NATS client and the stream.
//! - [`wire`]: the message format.
//! - [`mirror`]: the consumer that feeds the local mirror, and the waiters it answers.
//! - [`append`]: the append path.
//! - [`status`]: connectivity, mirror position against the stream's head, health
//!   reasons, metrics.
//! - [`migrate`]: `refract cluster init --from <data-dir>`.
//! - [`deploys`]: one deploy for the whole cluster (components in an object store,
//!   desired versions in a key-value bucket), heartbeats and the cluster view.
//!
//! Nothing outside this room talks to NATS; the API and the CLI use [`ClusterNode`].

pub mod append;
pub mod config;
pub mod connection;
pub mod deploys;
pub mod migrate;
pub mod mirror;
pub mod shared_snapshots;
pub mod status;
pub mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use append::AppendError;
pub use config::{ClusterConfig, ClusterConfigError, ClusterSection};
pub use status::ClusterStatus;

use crate::log::{EventLog, LogError};

/// What a node's waiting appender receives: the outcome of each request of its message.
pub(crate) type Outcomes = Vec<Result<Vec<u64>, LogError>>;

/// Why cluster mode could not start or went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The NATS client could not be set up (a bad URL).
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The configured URLs.
        urls: String,
        /// What the client said.
        reason: String,
    },
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file `{}`", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// NATS is not connected.
    #[error("NATS is unreachable (no connection to {urls})")]
    Disconnected {
        /// The configured URLs.
        urls: String,
    },
    /// The stream could not be opened or created.
    #[error("JetStream stream `{stream}`: {reason}")]
    Stream {
        /// The stream name.
        stream: String,
        /// What went wrong, and the fix.
        reason: String,
    },
    /// The consumer feeding the mirror failed; the mirror resumes from its position.
    #[error("the JetStream consumer of `{stream}` failed: {reason}")]
    Consumer {
        /// The stream name.
        stream: String,
        /// What went wrong.
        reason: String,
    },
    /// A message this build must not apply (written by a newer Refract).
    #[error("JetStream sequence {sequence}: {source}")]
    Message {
        /// The message's stream sequence.
        sequence: u64,
        /// Why.
        source: wire::WireError,
    },
    /// The local log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A running cluster node: the NATS connection, the mirror consumer, the append path
/// and the status. Cheap to clone.
#[derive(Clone)]
pub struct ClusterNode {
    shared: Arc<Shared>,
}

/// State shared by the append path, the mirror task and the status readers.
pub(crate) struct Shared {
    pub(crate) config: ClusterConfig,
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: async_nats::jetstream::Context,
    pub(crate) log: EventLog,
    pub(crate) subject: String,
    /// Appenders waiting for their message to be applied, by `Nats-Msg-Id`.
    pub(crate) waiters: Mutex<HashMap<String, oneshot::Sender<Outcomes>>>,
    /// Appends on their way to the publisher (see [`append::publisher`]).
    pub(crate) queue: tokio::sync::mpsc::UnboundedSender<append::Queued>,
    pub(crate) progress: Mutex<status::Progress>,
    /// The deploy tasks' state, once started ([`ClusterNode::start_deploys`]).
    pub(crate) deploys: std::sync::OnceLock<Arc<deploys::Deploys>>,
    /// What this node published to and restored from the shared snapshots.
    pub(crate) shared_snapshots: shared_snapshots::Tracker,
}

impl Shared {
    /// Takes the waiter of a message id, if this node published it and still waits.
    pub(crate) fn take_waiter(&self, id: &str) -> Option<oneshot::Sender<Outcomes>> {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    pub(crate) fn progress(&self) -> std::sync::MutexGuard<'_, status::Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The node's background tasks, stopped by [`ClusterNode::shutdown`].
pub struct ClusterTasks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterNode {
    /// Connects to NATS (in the background: a node starts while NATS is down) and
    /// starts the mirror consumer and the head poller on `runtime`.
    ///
    /// # Errors
    /// A bad URL, an unreadable credentials file, or a log that cannot be a mirror of a
    /// cluster (it holds events of its own; see [`migrate`]).
    pub async fn start(
        config: ClusterConfig,
        log: EventLog,
    ) -> Result<(ClusterNode, ClusterTasks), ClusterError> {
        let position = {
            let log = log.clone();
            tokio::task::spawn_blocking(move || -> Result<_, LogError> {
                Ok((log.mirror_position()?, log.head()?))
            })
            .await
            .map_err(|e| ClusterError::Consumer {
                stream: config.stream.clone(),
                reason: e.to_string(),
            })??
        };
        if let (None, head) = &position
            && *head > 0
        {
            return Err(LogError::MirrorMismatch {
                path: log.path().to_owned(),
                reason: format!(
                    "it already holds {head} events of its own, so it cannot be a cluster node's mirror; \
                     start the node with an empty data directory, or publish this log into the \
                     cluster first with `refract cluster init --from <data-dir>`"
                ),
            }
            .into());
        }
        let client = connection::connect(&config, &format!("refract-{}", config.node)).await?;
        let jetstream = connection::jetstream(client.clone());
        let subject = connection::subject(&config.stream);
        let progress = status::Progress::new(position.0.as_ref(), position.1);
        let (queue, queued) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config,
            client,
            jetstream,
            log,
            subject,
            waiters: Mutex::new(HashMap::new()),
            queue,
            progress: Mutex::new(progress),
            deploys: std::sync::OnceLock::new(),
            shared_snapshots: shared_snapshots::Tracker::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(mirror::follow(Arc::clone(&shared), stopped.clone())),
            tokio::spawn(status::poll_head(Arc::clone(&shared), stopped.clone())),
            tokio::spawn(append::publisher(Arc::clone(&shared), queued, stopped)),
        ];
        Ok((ClusterNode { shared }, ClusterTasks { stop, tasks }))
    }

    /// This node's configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// Appends a batch through the cluster (see [`append`]).
    ///
    /// # Errors
    /// See [`AppendError`].
    pub async fn append(&self, events: Vec<crate::log::NewEvent>) -> Result<Vec<u64>, AppendError> {
        append::append(&self.shared, events).await
    }

    /// Connectivity, mirror position, the stream's head and lag.
    pub fn status(&self) -> ClusterStatus {
        status::snapshot(&self.shared)
    }

    /// Starts the cluster's deploys on this node (see [`deploys`]): gives every
    /// deploy `local` reports to the cluster, applies the cluster's desired versions
    /// to `engine`, and writes and watches heartbeats. Call once, after the engine
    /// started with `local`'s sender in its hooks.
    pub fn start_deploys(
        &self,
        engine: Arc<crate::engine::Engine>,
        local: tokio::sync::mpsc::UnboundedReceiver<crate::engine::LocalDeploy>,
        swaps: tokio::sync::mpsc::UnboundedReceiver<crate::engine::SwapRecord>,
        tasks: &mut ClusterTasks,
    ) {
        let state = Arc::new(deploys::Deploys::new(Arc::clone(&self.shared), engine));
        if self.shared.deploys.set(Arc::clone(&state)).is_err() {
            tracing::error!("the cluster's deploys were started twice; ignoring the second");
            return;
        }
        let stop = tasks.stop.subscribe();
        tasks.tasks.extend([
            tokio::spawn(deploys::open_buckets(Arc::clone(&state), stop.clone())),
            tokio::spawn(deploys::publish::local_deploys(
                Arc::clone(&state),
                local,
                stop.clone(),
            )),
            tokio::spawn(deploys::apply::watch_desired(
                Arc::clone(&state),
                stop.clone(),
            )),
            tokio::spawn(deploys::apply::reconcile(Arc::clone(&state), stop.clone())),
            tokio::spawn(deploys::heartbeat::beat(Arc::clone(&state), stop.clone())),
            tokio::spawn(deploys::placement::run(Arc::clone(&state), stop.clone())),
            tokio::spawn(shared_snapshots::publish::run(
                Arc::clone(&state),
                stop.clone(),
            )),
            tokio::spawn(deploys::promote::record_swaps(
                Arc::clone(&state),
                swaps,
                stop.clone(),
            )),
            tokio::spawn(deploys::heartbeat::watch_nodes(state, stop)),
        ]);
    }

    /// Tells the cluster about a rollback (`action` = `rollback`, `version` the one
    /// now coming back) or an abort (`abort`, `version` the shadow dropped) just made
    /// on this node, so every node does the same. Written in the background, retried
    /// until NATS takes it; the projector's `cluster_error` shows it meanwhile.
    pub fn announce_change(&self, action: &str, projector: &str, version: &str) {
        let Some(state) = self.shared.deploys.get().cloned() else {
            return;
        };
        let (action, version) = match action {
            "rollback" => (deploys::records::Action::Rollback, version.to_owned()),
            "abort" => {
                let Some(active) = state
                    .engine
                    .read_model(projector)
                    .map(|model| model.version)
                else {
                    return;
                };
                (
                    deploys::records::Action::Abort {
                        aborted: version.to_owned(),
                    },
                    active,
                )
            }
            _ => return,
        };
        let projector = projector.to_owned();
        tokio::spawn(async move {
            deploys::publish::announce(&state, &projector, &version, action).await;
        });
    }

    /// Promotes `projector` on every node at one log offset, if the cluster asks for it
    /// with `promote = "manual"` (see [`deploys::promote`]); `None` when it does not
    /// (promote it on this node as on a single node).
    ///
    /// # Errors
    /// Why the cluster cannot promote now, with the fix.
    pub async fn promote(
        &self,
        projector: &str,
    ) -> Option<Result<deploys::promote::Promoted, String>> {
        let state = self.shared.deploys.get()?;
        let manual = deploys::lock(&state.desired)
            .get(projector)
            .is_some_and(|seen| seen.record.promote == "manual");
        if !manual {
            return None;
        }
        Some(deploys::promote::coordinate(state, projector).await)
    }

    /// Where a query for `projector` goes: here, or (cluster placement) to a node that
    /// runs it.
    pub fn query_route(&self, projector: &str) -> deploys::placement::QueryRoute {
        match self.shared.deploys.get() {
            Some(state) => deploys::placement::query_route(state, projector),
            None => deploys::placement::QueryRoute::Local,
        }
    }

    /// Before an abort of `projector`'s shadow `version` on this node: abandons a
    /// coordinated swap to it still holding, refuses while nodes swap to it (see
    /// [`deploys::promote::before_abort`]).
    ///
    /// # Errors
    /// The swap under way, and what to do instead.
    pub async fn before_abort(&self, projector: &str, version: &str) -> Result<(), String> {
        match self.shared.deploys.get() {
            Some(state) => deploys::promote::before_abort(state, projector, version).await,
            None => Ok(()),
        }
    }

    /// Rolls `projector` back on every node at one log offset (see
    /// [`deploys::rollback`]); `None` before [`ClusterNode::start_deploys`].
    ///
    /// # Errors
    /// Why the cluster cannot roll back now, with the fix.
    pub async fn rollback(
        &self,
        projector: &str,
    ) -> Option<Result<deploys::promote::Promoted, String>> {
        let state = self.shared.deploys.get()?;
        Some(deploys::rollback::coordinate(state, projector).await)
    }

    /// Every node's view of every projector, with what diverges; `None` before
    /// [`ClusterNode::start_deploys`].
    pub fn projectors(&self) -> Option<deploys::view::ClusterView> {
        self.shared
            .deploys
            .get()
            .map(|state| deploys::view::build(state))
    }
}

impl ClusterTasks {
    /// Stops the mirror and the head poller and waits for them; the client's
    /// connection closes when the last handle is dropped.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
