//! What a node knows about itself in the cluster: NATS connectivity, its mirror's
//! position against the stream's head (the replication lag), and what is wrong.

use std::sync::Arc;

use async_nats::connection::State as ConnectionState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Shared;
use super::config::HEAD_POLL;
use crate::log::MirrorPosition;

/// What the mirror is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorState {
    /// Waiting for NATS or for the stream.
    Connecting,
    /// Following the stream.
    Following,
    /// The consumer failed; it resumes from the mirror's position after a pause.
    Retrying,
    /// A message this node cannot apply, or a mirror that does not match the stream:
    /// needs an operator (the reason says what to do). Retried all the same.
    Failed,
}

impl MirrorState {
    /// The state's name, as `/v1/cluster` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorState::Connecting => "connecting",
            MirrorState::Following => "following",
            MirrorState::Retrying => "retrying",
            MirrorState::Failed => "failed",
        }
    }
}

/// The mutable side of a node's status, updated by the mirror and the head poller.
#[derive(Debug)]
pub(crate) struct Progress {
    /// The stream identity the mirror copies, once known.
    pub(crate) source: Option<String>,
    /// The last stream sequence applied to the mirror.
    pub(crate) position: u64,
    /// The mirror's head offset.
    pub(crate) head: u64,
    /// The stream's last sequence, as last heard from JetStream.
    pub(crate) stream_head: Option<u64>,
    pub(crate) state: MirrorState,
    pub(crate) last_error: Option<String>,
    /// Messages that were not Refract messages, skipped (identically on every node).
    pub(crate) skipped: u64,
}

impl Progress {
    pub(crate) fn new(position: Option<&MirrorPosition>, head: u64) -> Progress {
        Progress {
            source: position.map(|p| p.source.clone()),
            position: position.map_or(0, |p| p.position),
            head,
            stream_head: None,
            state: MirrorState::Connecting,
            last_error: None,
            skipped: 0,
        }
    }

    /// Records a change of state; an error is kept until the next success.
    pub(crate) fn set(&mut self, state: MirrorState, error: Option<String>) {
        self.state = state;
        if error.is_some() || state == MirrorState::Following {
            self.last_error = error;
        }
    }

    /// Records messages applied up to `position`, with `pending` more known to exist.
    pub(crate) fn applied(&mut self, position: u64, head: u64, pending: u64) {
        self.position = position;
        self.head = head;
        let seen = position + pending;
        self.stream_head = Some(self.stream_head.map_or(seen, |known| known.max(seen)));
        if self.state != MirrorState::Following {
            self.state = MirrorState::Following;
            self.last_error = None;
        }
    }
}

/// A node's cluster status, as `GET /v1/cluster` and `refract status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// The JetStream stream.
    pub stream: String,
    /// The configured NATS URLs.
    pub urls: Vec<String>,
    /// `connected`, `disconnected` or `connecting`.
    pub nats: String,
    /// What the mirror is doing.
    pub mirror: MirrorState,
    /// The last stream sequence applied to this node's mirror.
    pub mirror_position: u64,
    /// The mirror's head offset (the local log's head).
    pub mirror_head: u64,
    /// The stream's last sequence, as last heard from JetStream (`None` before the
    /// first answer).
    pub stream_head: Option<u64>,
    /// Messages between the mirror and the stream's head.
    pub lag: Option<u64>,
    /// Messages skipped because they were not Refract messages.
    pub skipped_messages: u64,
    /// The last problem, until the mirror follows again.
    pub last_error: Option<String>,
    /// Snapshots published to and restored from the other nodes (placement).
    #[serde(default)]
    pub shared_snapshots: super::shared_snapshots::SharedSnapshotsStatus,
}

impl ClusterStatus {
    /// Why this node is degraded, one sentence each: NATS unreachable, the mirror
    /// failing, or the mirror more than `max_lag` messages behind.
    pub fn degraded_reasons(&self, max_lag: u64) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.nats != "connected" {
            reasons.push(format!(
                "cluster: NATS is unreachable ({}): appends are refused with 503; reads serve this node's mirror at offset {}",
                self.urls.join(","),
                self.mirror_head
            ));
        }
        if matches!(self.mirror, MirrorState::Failed | MirrorState::Retrying) {
            reasons.push(format!(
                "cluster: the mirror is {}: {}",
                if self.mirror == MirrorState::Failed {
                    "stopped"
                } else {
                    "retrying"
                },
                self.last_error.as_deref().unwrap_or("see the host's log")
            ));
        }
        if let Some(lag) = self.lag
            && lag > max_lag
        {
            reasons.push(format!(
                "cluster: the mirror is {lag} messages behind the stream, above server.health_max_lag = {max_lag}"
            ));
        }
        reasons
    }
}

/// The node's status now.
pub(crate) fn snapshot(shared: &Shared) -> ClusterStatus {
    let nats = match shared.client.connection_state() {
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Pending => "connecting",
    };
    let progress = shared.progress();
    ClusterStatus {
        node: shared.config.node.clone(),
        stream: shared.config.stream.clone(),
        urls: shared.config.urls.clone(),
        nats: nats.to_owned(),
        mirror: progress.state,
        mirror_position: progress.position,
        mirror_head: progress.head,
        stream_head: progress.stream_head,
        lag: progress
            .stream_head
            .map(|head| head.saturating_sub(progress.position)),
        skipped_messages: progress.skipped,
        last_error: progress.last_error.clone(),
        shared_snapshots: shared.shared_snapshots.status(),
    }
}

/// Asks JetStream for the stream's head every [`HEAD_POLL`], so the lag is known
/// even when no message arrives (a stalled consumer, a node far behind).
pub(crate) async fn poll_head(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut stream = None;
    loop {
        if shared.client.connection_state() == ConnectionState::Connected {
            if stream.is_none() {
                stream = shared
                    .jetstream
                    .get_stream(&shared.config.stream)
                    .await
                    .ok();
            }
            if let Some(handle) = stream.as_mut() {
                match handle.info().await {
                    Ok(info) => {
                        let last = info.state.last_sequence;
                        let mut progress = shared.progress();
                        progress.stream_head = Some(last);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "cannot read the stream's head");
                        stream = None;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(HEAD_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}
