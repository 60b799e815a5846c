//! The consumers' part of `/metrics`: consumer groups (and retention), encoded next to
//! the engine's figures by their own collector.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `refract_group_committed_offset` | gauge | group |
//! | `refract_group_lag_events` | gauge | group |
//! | `refract_group_members` | gauge | group |
//! | `refract_group_in_flight` | gauge | group |
//! | `refract_group_delivered_total` | counter | group |
//! | `refract_group_acked_total` | counter | group |
//! | `refract_group_redeliveries_total` | counter | group |
//! | `refract_group_dead_letters_total` | counter | group |
//! | `refract_retention_archived_events_total` | counter | |
//! | `refract_retention_deleted_events_total` | counter | |
//! | `refract_retention_removed_bytes_total` | counter | |
//! | `refract_retention_reclaimed_bytes_total` | counter | |
//! | `refract_retention_archive_bytes` | gauge | |
//! | `refract_retention_archive_segments` | gauge | |
//! | `refract_retention_truncated_before` | gauge | |

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::groups::GroupView;

/// What the consumers reported at scrape time.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsumerSnapshot {
    /// Every consumer group.
    pub groups: Vec<GroupView>,
    /// Retention, when it runs.
    pub retention: Option<crate::retention::RetentionStatus>,
}

/// How one retention figure is read and encoded.
type RetentionFigure = (
    &'static str,
    &'static str,
    MetricType,
    fn(&crate::retention::RetentionStatus) -> u64,
);

/// Every retention family: name, help, type, value.
const RETENTION_FIGURES: &[RetentionFigure] = &[
    (
        "refract_retention_archived_events",
        "Events retention moved from events.db to the archive, all time",
        MetricType::Counter,
        |r| r.horizon.archived_events,
    ),
    (
        "refract_retention_deleted_events",
        "Events retention deleted for good, all time",
        MetricType::Counter,
        |r| r.horizon.deleted_events,
    ),
    (
        "refract_retention_removed_bytes",
        "Event text (data and metadata) retention removed from events.db, all time",
        MetricType::Counter,
        |r| r.horizon.removed_bytes,
    ),
    (
        "refract_retention_reclaimed_bytes",
        "File space incremental vacuum gave back after retention removed events, all time",
        MetricType::Counter,
        |r| r.horizon.reclaimed_bytes,
    ),
    (
        "refract_retention_archive_bytes",
        "Size of the archive's segments on disk",
        MetricType::Gauge,
        |r| r.archive_bytes,
    ),
    (
        "refract_retention_archive_segments",
        "Segments in the archive",
        MetricType::Gauge,
        |r| r.archive_segments as u64,
    ),
    (
        "refract_retention_truncated_before",
        "Events below this offset may be gone from events.db (archived or deleted)",
        MetricType::Gauge,
        |r| r.truncated_before,
    ),
];

/// How one per-group figure is read and encoded.
type GroupFigure = (
    &'static str,
    &'static str,
    MetricType,
    fn(&GroupView) -> u64,
);

/// Every per-group family: name, help, type, value.
const GROUP_FIGURES: &[GroupFigure] = &[
    (
        "refract_group_committed_offset",
        "Everything at or below this offset is acked or dead-lettered by the group",
        MetricType::Gauge,
        |g| g.committed,
    ),
    (
        "refract_group_lag_events",
        "How many log offsets the group's committed position is behind the head",
        MetricType::Gauge,
        |g| g.lag,
    ),
    (
        "refract_group_members",
        "Members in the group now",
        MetricType::Gauge,
        |g| g.members.len() as u64,
    ),
    (
        "refract_group_in_flight",
        "Events leased to the group's members now",
        MetricType::Gauge,
        |g| g.in_flight as u64,
    ),
    (
        "refract_group_delivered",
        "Deliveries (first ones and redeliveries) since the host started",
        MetricType::Counter,
        |g| g.stats.delivered,
    ),
    (
        "refract_group_acked",
        "Events acked since the host started",
        MetricType::Counter,
        |g| g.stats.acked,
    ),
    (
        "refract_group_redeliveries",
        "Deliveries of an event delivered before, all time",
        MetricType::Counter,
        |g| g.redeliveries,
    ),
    (
        "refract_group_dead_letters",
        "Events in the group's dead letters",
        MetricType::Counter,
        |g| g.dead_letters,
    ),
];

impl Collector for ConsumerSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        for (name, help, kind, value) in GROUP_FIGURES {
            let mut family = encoder.encode_descriptor(name, help, None, *kind)?;
            for group in &self.groups {
                let labels = [("group", group.name.as_str())];
                let metric = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(group)).encode(metric)?,
                    _ => ConstGauge::new(value(group) as f64).encode(metric)?,
                }
            }
        }
        if let Some(retention) = &self.retention {
            for (name, help, kind, value) in RETENTION_FIGURES {
                let family = encoder.encode_descriptor(name, help, None, *kind)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(retention)).encode(family)?,
                    _ => ConstGauge::new(value(retention) as f64).encode(family)?,
                }
            }
        }
        Ok(())
    }
}
