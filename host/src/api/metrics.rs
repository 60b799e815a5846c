//! `/metrics` in the Prometheus (OpenMetrics) text format, encoded by
//! `prometheus-client`.
//!
//! Every figure is read at scrape time from an [`EngineSnapshot`] (the log and the
//! engine already keep their counters), so nothing is double-booked.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `refract_events_appended_total` | counter | |
//! | `refract_log_head` | gauge | |
//! | `refract_log_unindexed_events` | gauge | |
//! | `refract_events_projected_total` | counter | projector, version |
//! | `refract_projector_checkpoint` | gauge | projector, version |
//! | `refract_projector_lag_events` | gauge | projector, version |
//! | `refract_projector_events_per_second` | gauge | projector, version |
//! | `refract_projector_version_info` | gauge (1) | projector, version, role, state |
//! | `refract_replay_progress_ratio` | gauge | projector, version |
//! | `refract_replay_eta_seconds` | gauge | projector, version |
//! | `refract_batch_latency_seconds` | histogram | projector, version |
//! | `refract_traps_total` | counter | projector, version |
//! | `refract_dead_letters_total` | counter | projector, version |
//! | `refract_deadline_overruns_total` | counter | projector, version |
//! | `refract_projector_overrun_seconds` | gauge | projector, version |
//! | `refract_log_lines_dropped_total` | counter | projector, version |
//! | `refract_reactor_events_emitted_total` | counter (0 for a projector) | projector, version |
//! | `refract_reactor_emits_suppressed_total` | counter (0 for a projector) | projector, version |
//! | `refract_reactor_timers_fired_total` | counter (0 for a projector) | projector, version |
//! | `refract_swaps_total` | counter | |
//! | `refract_rejected_plugins` | gauge | |
//! | `refract_subscribers` | gauge | |
//! | `refract_cluster_nats_connected` | gauge (0/1) | node |
//! | `refract_cluster_mirror_position` | gauge | node |
//! | `refract_cluster_stream_head` | gauge | node |
//! | `refract_cluster_mirror_lag_messages` | gauge | node |
//! | `refract_cluster_shared_snapshots_published_total` | counter | node |
//! | `refract_cluster_shared_snapshot_publish_failures_total` | counter | node |
//! | `refract_cluster_shared_snapshots_restored_total` | counter | node |
//! | `refract_cluster_shared_snapshot_restore_fallbacks_total` | counter | node |
//! | `refract_http_open_connections` | gauge | |
//! | `refract_http_unauthenticated_connections` | gauge | |
//! | `refract_http_evicted_connections_total` | counter | |
//! | `refract_http_refused_connections_total` | counter | |
//!
//! The `refract_cluster_` families appear in cluster mode only. Consumer groups add
//! theirs (`consumer_metrics`), and read-model snapshots theirs (`snapshot_metrics`).

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, watch};

use super::admission::Admission;
use crate::engine::ProjectorView;
use crate::engine::status::{BATCH_LATENCY_BUCKETS, VersionStatus};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The server's own counters, and the renderer.
#[derive(Debug)]
pub(crate) struct Metrics {
    head: watch::Receiver<u64>,
    subscribers: Arc<Semaphore>,
    max_subscribers: usize,
    admission: Arc<Admission>,
}

/// What the engine reported at scrape time.
#[derive(Debug, Clone, Default)]
pub(crate) struct EngineSnapshot {
    /// Every projector and its versions.
    pub projectors: Vec<ProjectorView>,
    /// Plugins-folder files that were refused.
    pub rejected: usize,
    /// Swaps since the host started.
    pub swaps: u64,
    /// Events appended through the host's log (API and engine alike) since it started;
    /// idempotent repeats are not counted.
    pub appended: u64,
    /// Events above the stream index's watermark (`EventLog::unindexed_tail`).
    pub unindexed: u64,
    /// Consumer groups and retention, when the host serves them.
    pub consumers: Option<super::consumer_metrics::ConsumerSnapshot>,
    /// The node's cluster status, in cluster mode.
    pub cluster: Option<crate::cluster::ClusterStatus>,
    /// Read-model snapshots on disk.
    pub snapshots: super::snapshot_metrics::SnapshotFigures,
}

impl Metrics {
    pub(crate) fn new(
        head: watch::Receiver<u64>,
        subscribers: Arc<Semaphore>,
        max_subscribers: usize,
        admission: Arc<Admission>,
    ) -> Metrics {
        Metrics {
            head,
            subscribers,
            max_subscribers,
            admission,
        }
    }

    /// The whole exposition, ending with `# EOF`.
    pub(crate) fn render(&self, mut engine: EngineSnapshot) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        if let Some(consumers) = engine.consumers.take() {
            registry.register_collector(Box::new(consumers));
        }
        registry.register_collector(Box::new(std::mem::take(&mut engine.snapshots)));
        let open = self.max_subscribers - self.subscribers.available_permits();
        let (connections, unauthenticated) = self.admission.counts();
        let (evicted, refused) = self.admission.turned_away();
        registry.register_collector(Box::new(Scrape {
            engine,
            head: *self.head.borrow(),
            subscribers: open,
            connections: Connections {
                open: connections,
                unauthenticated,
                evicted,
                refused,
            },
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// The figures of one scrape.
#[derive(Debug)]
struct Scrape {
    engine: EngineSnapshot,
    head: u64,
    subscribers: usize,
    connections: Connections,
}

/// The API's connections at scrape time.
#[derive(Debug)]
struct Connections {
    open: usize,
    unauthenticated: usize,
    evicted: u64,
    refused: u64,
}

/// The labels of a per-version series.
type VersionLabels = [(&'static str, String); 2];

impl Scrape {
    /// Every running version's status with its labels.
    fn versions(&self) -> impl Iterator<Item = (VersionLabels, &VersionStatus)> + '_ {
        self.engine.projectors.iter().flat_map(|projector| {
            projector.versions.iter().filter_map(move |version| {
                let status = version.status.as_ref()?;
                Some((
                    [
                        ("projector", projector.name.clone()),
                        ("version", version.version.clone()),
                    ],
                    status,
                ))
            })
        })
    }

    /// One per-version family: a descriptor, then one sample per running version.
    fn per_version(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        kind: MetricType,
        mut sample: impl FnMut(MetricEncoder<'_>, &VersionStatus) -> fmt::Result,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, status) in self.versions() {
            sample(family.encode_family(&labels)?, status)?;
        }
        Ok(())
    }
}

impl Scrape {
    /// The cluster families, labelled with the node's name.
    fn encode_cluster(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let Some(cluster) = &self.engine.cluster else {
            return Ok(());
        };
        let labels = [("node", cluster.node.clone())];
        let figures: [(&str, &str, u64); 4] = [
            (
                "refract_cluster_nats_connected",
                "1 while this node is connected to NATS",
                u64::from(cluster.nats == "connected"),
            ),
            (
                "refract_cluster_mirror_position",
                "The last JetStream sequence applied to this node's mirror of the log",
                cluster.mirror_position,
            ),
            (
                "refract_cluster_stream_head",
                "The JetStream stream's last sequence, as this node last heard it",
                cluster.stream_head.unwrap_or(0),
            ),
            (
                "refract_cluster_mirror_lag_messages",
                "JetStream messages not yet applied to this node's mirror (replication lag)",
                cluster.lag.unwrap_or(0),
            ),
        ];
        for (name, help, value) in figures {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        let shared = &cluster.shared_snapshots;
        let counters: [(&str, &str, u64); 4] = [
            (
                "refract_cluster_shared_snapshots_published",
                "Read-model snapshots this node published to the shared snapshots bucket",
                shared.published,
            ),
            (
                "refract_cluster_shared_snapshot_publish_failures",
                "Publishes to the shared snapshots bucket that failed (the local snapshot is kept)",
                shared.publish_failures,
            ),
            (
                "refract_cluster_shared_snapshots_restored",
                "Placed projectors this node started from another node's shared snapshot",
                shared.restored,
            ),
            (
                "refract_cluster_shared_snapshot_restore_fallbacks",
                "Shared snapshots refused (corrupt, too big, NATS down), the projector started from a local snapshot or offset 1",
                shared.restore_fallbacks,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn single(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let e = &mut encoder;
        single(
            e,
            "refract_log_head",
            "The highest offset in the event log",
            &ConstGauge::new(self.head as f64),
        )?;
        single(
            e,
            "refract_log_unindexed_events",
            "Events not yet in the log's stream index: what an exact-stream read scans by offset (below [log] stream_index_chunk plus one group while the writer runs)",
            &ConstGauge::new(self.engine.unindexed as f64),
        )?;
        single(
            e,
            "refract_events_appended",
            "Events appended through this host since it started (idempotent repeats not counted)",
            &ConstCounter::new(self.engine.appended),
        )?;
        single(
            e,
            "refract_swaps",
            "Hot swaps completed since the host started",
            &ConstCounter::new(self.engine.swaps),
        )?;
        single(
            e,
            "refract_rejected_plugins",
            "Plugins-folder components that could not be loaded",
            &ConstGauge::new(self.engine.rejected as i64),
        )?;
        single(
            e,
            "refract_subscribers",
            "Open event subscriptions (SSE)",
            &ConstGauge::new(self.subscribers as i64),
        )?;
        let connections = &self.connections;
        single(
            e,
            "refract_http_open_connections",
            "Open connections to the HTTP API",
            &ConstGauge::new(connections.open as i64),
        )?;
        single(
            e,
            "refract_http_unauthenticated_connections",
            "Open connections that have not yet sent a request with the token",
            &ConstGauge::new(connections.unauthenticated as i64),
        )?;
        single(
            e,
            "refract_http_evicted_connections",
            "Unauthenticated connections closed to make room for newer ones",
            &ConstCounter::new(connections.evicted),
        )?;
        single(
            e,
            "refract_http_refused_connections",
            "Connections refused because every slot was held by a client with the token",
            &ConstCounter::new(connections.refused),
        )?;
        self.per_version(
            e,
            "refract_events_projected",
            "Events applied by a projector version since the host started",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.events_projected).encode(m),
        )?;
        self.per_version(
            e,
            "refract_projector_checkpoint",
            "The last log offset reflected in a version's read model",
            MetricType::Gauge,
            |m, s| ConstGauge::new(s.checkpoint as f64).encode(m),
        )?;
        self.per_version(
            e,
            "refract_projector_lag_events",
            "How many log offsets a version's read model is behind the head",
            MetricType::Gauge,
            |m, s| ConstGauge::new(s.lag() as f64).encode(m),
        )?;
        self.per_version(
            e,
            "refract_projector_events_per_second",
            "Events applied per second over the last few seconds",
            MetricType::Gauge,
            |m, s| ConstGauge::new(s.events_per_second).encode(m),
        )?;
        self.per_version(
            e,
            "refract_traps",
            "Batches that trapped inside the guest since the host started",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.traps).encode(m),
        )?;
        self.per_version(
            e,
            "refract_dead_letters",
            "Events recorded as dead letters",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.dead_letters).encode(m),
        )?;
        self.per_version(
            e,
            "refract_deadline_overruns",
            "Calls that ran past their deadline and its grace before returning",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.deadline_overruns).encode(m),
        )?;
        self.per_version(
            e,
            "refract_projector_overrun_seconds",
            "How long a call still running past its deadline and grace has run (0: none)",
            MetricType::Gauge,
            |m, s| ConstGauge::new(s.overrun.as_ref().map_or(0.0, |o| o.running_seconds)).encode(m),
        )?;
        self.per_version(
            e,
            "refract_log_lines_dropped",
            "Projector log lines dropped over the per-call and per-second limits",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.log_lines_dropped).encode(m),
        )?;
        self.per_version(
            e,
            "refract_reactor_events_emitted",
            "Events a reactor emitted and the log newly appended, since its worker started",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.effects.map_or(0, |c| c.appended)).encode(m),
        )?;
        self.per_version(
            e,
            "refract_reactor_emits_suppressed",
            "Emits a reactor version made while it did not emit (a shadow, a warm version, history)",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.effects.map_or(0, |c| c.suppressed)).encode(m),
        )?;
        self.per_version(
            e,
            "refract_reactor_timers_fired",
            "refract.timer events a reactor's worker appended",
            MetricType::Counter,
            |m, s| ConstCounter::new(s.effects.map_or(0, |c| c.timers_fired)).encode(m),
        )?;
        self.per_version(
            e,
            "refract_batch_latency_seconds",
            "Time from reading a batch from the log to committing it",
            MetricType::Histogram,
            |mut m, s| {
                let latency = &s.batch_latency;
                let mut buckets: Vec<(f64, u64)> = BATCH_LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .zip(latency.counts.iter().copied())
                    .collect();
                // prometheus-client writes `le="+Inf"` for f64::MAX.
                buckets.push((f64::MAX, latency.overflow));
                m.encode_histogram::<NoLabelSet>(latency.sum_seconds, latency.count, &buckets, None)
            },
        )?;
        self.encode_versions_info(e)?;
        self.encode_replays(e)?;
        self.encode_cluster(e)
    }
}

impl Scrape {
    /// `refract_projector_version_info`: 1 per known version, with its role and state
    /// (the state's short name, so the label set stays small).
    fn encode_versions_info(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "refract_projector_version_info",
            "Every known projector version, with its role and state (always 1)",
            None,
            MetricType::Gauge,
        )?;
        for projector in &self.engine.projectors {
            for version in &projector.versions {
                let state = version
                    .status
                    .as_ref()
                    .map_or("stopped", |status| status.state.name());
                let labels: [(&str, &str); 4] = [
                    ("projector", &projector.name),
                    ("version", &version.version),
                    ("role", version.role.as_str()),
                    ("state", state),
                ];
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// Replay progress of every replaying version.
    fn encode_replays(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let replays: Vec<(VersionLabels, f64, Option<f64>)> = self
            .engine
            .projectors
            .iter()
            .flat_map(|projector| {
                projector.versions.iter().filter_map(|version| {
                    let replay = version.replay?;
                    Some((
                        [
                            ("projector", projector.name.clone()),
                            ("version", version.version.clone()),
                        ],
                        replay.percent / 100.0,
                        replay.eta_seconds,
                    ))
                })
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "refract_replay_progress_ratio",
                "How far a replaying version has got through the log, 0 to 1",
                None,
                MetricType::Gauge,
            )?;
            for (labels, ratio, _) in &replays {
                ConstGauge::new(*ratio).encode(family.encode_family(labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "refract_replay_eta_seconds",
            "Estimated seconds until a replaying version catches up, at its current rate",
            None,
            MetricType::Gauge,
        )?;
        for (labels, _, eta) in &replays {
            if let Some(eta) = eta {
                ConstGauge::new(*eta).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
