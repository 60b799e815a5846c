//! The snapshots' part of `/metrics`, encoded by its own collector.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `refract_snapshots` | gauge | projector, version |
//! | `refract_snapshot_newest_checkpoint` | gauge | projector, version |
//! | `refract_snapshot_bytes` | gauge | projector, version |

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::snapshots::VersionSummary;

/// The read-model snapshots on disk at scrape time, per projector.
#[derive(Debug, Clone, Default)]
pub(crate) struct SnapshotFigures {
    /// Each projector with a summary per version.
    pub projectors: Vec<(String, Vec<VersionSummary>)>,
}

/// Every per-version family: name, help, value.
type Figure = (&'static str, &'static str, fn(&VersionSummary) -> u64);

const FIGURES: &[Figure] = &[
    (
        "refract_snapshots",
        "Read-model snapshots kept for a projector version",
        |s| s.count as u64,
    ),
    (
        "refract_snapshot_newest_checkpoint",
        "The checkpoint of a version's newest snapshot",
        |s| s.newest_checkpoint,
    ),
    (
        "refract_snapshot_bytes",
        "Bytes on disk of a version's snapshots",
        |s| s.bytes,
    ),
];

impl Collector for SnapshotFigures {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        for (name, help, value) in FIGURES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (projector, versions) in &self.projectors {
                for summary in versions {
                    let labels = [
                        ("projector", projector.as_str()),
                        ("version", summary.version.as_str()),
                    ];
                    ConstGauge::new(value(summary) as f64)
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
