//! `GET /health` and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::metrics::{self, EngineSnapshot};
use super::state::{ApiState, blocking};
use crate::engine::control::Role;
use crate::engine::{ProjectorView, Rejected};
use crate::storage_fault::free_bytes;

/// The body of `/health`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    /// `ok` or `degraded`.
    status: &'static str,
    /// Why it is degraded; empty when ok.
    reasons: Vec<String>,
    /// Cluster placement: who holds each lease of each placed projector.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    placement:
        std::collections::BTreeMap<String, Vec<crate::cluster::deploys::placement::LeaseView>>,
}

/// `GET /health`: 200 `ok`, or 503 `degraded` with the reasons, one sentence each:
/// a version that is not projecting (stalled, failed, retrying a host fault, ahead of
/// the log), an active version lagging more than `server.health_max_lag` events, a
/// refused plugin file, a host that runs read-only, a disk with less than
/// `server.health_min_free_bytes` free, and in cluster mode NATS unreachable or the
/// mirror failing or lagging (see
/// [`ClusterStatus::degraded_reasons`](crate::cluster::ClusterStatus::degraded_reasons)),
/// and a consumer group lagging more than its `lag_alert`.
pub(crate) async fn health(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let engine = std::sync::Arc::clone(state.engine());
    let min_free = state.config().health_min_free_bytes;
    // The engine's views are behind locks its controller may hold for a while.
    let max_lag = state.config().health_max_lag;
    let mut reasons = blocking(move || {
        let mut reasons = Vec::new();
        if let Some(read_only) = engine.read_only() {
            reasons.push(format!("the host is read-only: {}", read_only.reason));
        }
        if let Some(low) = low_disk_space(engine.data_dir().root(), min_free) {
            reasons.push(low);
        }
        Ok((reasons, engine.projectors(), engine.rejected()))
    })
    .await
    .map(|(mut reasons, projectors, rejected)| {
        reasons.extend(degraded_reasons(&projectors, &rejected, max_lag));
        reasons
    })?;
    let mut placement = std::collections::BTreeMap::new();
    if let Some(cluster) = state.cluster() {
        reasons.extend(cluster.status().degraded_reasons(max_lag));
        if let Some(view) = cluster.projectors() {
            placement.extend(
                view.projectors
                    .iter()
                    .filter(|p| p.placed_on.is_some())
                    .map(|p| (p.name.clone(), p.leases.clone())),
            );
            reasons.extend(
                view.divergence
                    .into_iter()
                    .map(|reason| format!("cluster divergence: {reason}")),
            );
        }
    }
    reasons.extend(consumer_reasons(&state).await?);
    reasons.dedup();
    let (status, code) = if reasons.is_empty() {
        ("ok", StatusCode::OK)
    } else {
        ("degraded", StatusCode::SERVICE_UNAVAILABLE)
    };
    Ok((
        code,
        Json(Health {
            status,
            reasons,
            placement,
        }),
    )
        .into_response())
}

/// Consumer groups lagging past their `lag_alert`, one sentence each.
async fn consumer_reasons(state: &ApiState) -> Result<Vec<String>, ApiError> {
    let Some(groups) = state.groups_if_any().cloned() else {
        return Ok(Vec::new());
    };
    let views = blocking(move || Ok(groups.views(std::time::Instant::now())?)).await?;
    Ok(views
        .iter()
        .filter_map(|group| {
            let alert = group.lag_alert?;
            (group.lag > alert).then(|| {
                format!(
                    "consumer group `{}` is {} offsets behind the log, above groups.{}.lag_alert = {alert}",
                    group.name, group.lag, group.name
                )
            })
        })
        .collect())
}

/// A reason when the disk holding `data_dir` has less than `min_free` bytes free.
fn low_disk_space(data_dir: &std::path::Path, min_free: u64) -> Option<String> {
    let free = free_bytes(data_dir).ok()?;
    (free < min_free).then(|| {
        format!(
            "the disk holding the data directory {} has {free} bytes free, below \
             server.health_min_free_bytes = {min_free}: free space on it before appends and \
             projectors fail",
            data_dir.display()
        )
    })
}

/// Everything about the projectors that makes the host degraded, one sentence each.
fn degraded_reasons(
    projectors: &[ProjectorView],
    rejected: &[Rejected],
    max_lag: u64,
) -> Vec<String> {
    let mut reasons = Vec::new();
    for projector in projectors {
        if let Some(why) = &projector.unavailable {
            reasons.push(format!("projector `{}`: {why}", projector.name));
        }
        for version in &projector.versions {
            let name = &projector.name;
            let id = &version.version;
            if version.role == Role::Failed {
                let why = version
                    .status
                    .as_ref()
                    .and_then(|s| s.last_error.clone())
                    .unwrap_or_else(|| "see `refract status`".to_owned());
                reasons.push(format!("projector `{name}` version {id} failed: {why}"));
            }
            let Some(status) = &version.status else {
                continue;
            };
            if !status.state.is_healthy() {
                reasons.push(format!(
                    "projector `{name}` version {id} ({}) is {}",
                    version.role.as_str(),
                    status.state
                ));
            }
            if version.role == Role::Active && status.lag() > max_lag {
                reasons.push(format!(
                    "projector `{name}` version {id} (active) is {} events behind the log, \
                     above server.health_max_lag = {max_lag}",
                    status.lag()
                ));
            }
        }
    }
    for file in rejected {
        reasons.push(format!(
            "plugin file `{}` was refused: {}",
            file.path.display(),
            file.reason
        ));
    }
    reasons
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let engine = std::sync::Arc::clone(state.engine());
    let groups = state.groups_if_any().cloned();
    let cluster = state.cluster().map(crate::cluster::ClusterNode::status);
    let retention = state.retention().cloned();
    let snapshot = blocking(move || {
        let retention = retention.map(|retention| retention.status());
        let consumers = match (groups, retention) {
            (None, None) => None,
            (groups, retention) => Some(super::consumer_metrics::ConsumerSnapshot {
                groups: match groups {
                    Some(groups) => groups.views(std::time::Instant::now())?,
                    None => Vec::new(),
                },
                retention,
            }),
        };
        let store = crate::snapshots::store::Store::new(engine.data_dir());
        let snapshots = super::snapshot_metrics::SnapshotFigures {
            projectors: store
                .projectors()
                .into_iter()
                .map(|name| {
                    let summaries = store.summaries(&name);
                    (name, summaries)
                })
                .collect(),
        };
        Ok(EngineSnapshot {
            snapshots,
            projectors: engine.projectors(),
            rejected: engine.rejected().len(),
            swaps: engine.swaps_total(),
            appended: engine.log().appended_total(),
            unindexed: engine.log().unindexed_tail()?,
            consumers,
            cluster,
        })
    })
    .await?;
    let text = state
        .metrics()
        .render(snapshot)
        .map_err(|e| ApiError::internal("encoding the metrics", &e))?;
    Ok(([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::engine::State as VersionState;
    use crate::engine::VersionView;
    use crate::engine::status::LatencyHistogram;

    fn version(role: Role, state: VersionState, checkpoint: u64, head: u64) -> VersionView {
        VersionView {
            version: "v1".into(),
            role,
            contract: Some("refract:projector@0.2.0".into()),
            status: Some(crate::engine::VersionStatus {
                projector: "p".into(),
                version: "v1".into(),
                state,
                checkpoint,
                head,
                events_per_second: 0.0,
                last_error: Some("boom".into()),
                dead_letters: 0,
                events_projected: 0,
                traps: 0,
                overrun: None,
                deadline_overruns: 0,
                log_lines_dropped: 0,
                effects: None,
                batch_latency: LatencyHistogram::default(),
            }),
            replay: None,
        }
    }

    fn projector(versions: Vec<VersionView>) -> ProjectorView {
        ProjectorView {
            name: "p".into(),
            active_version: Some("v1".into()),
            unavailable: None,
            versions,
        }
    }

    #[test]
    fn healthy_versions_give_no_reasons() {
        let views = [projector(vec![version(
            Role::Active,
            VersionState::Live,
            10,
            10,
        )])];
        assert!(degraded_reasons(&views, &[], 100).is_empty());
    }

    #[test]
    fn stalls_failures_lag_and_refused_files_are_reasons() {
        let stalled = VersionState::Stalled {
            at: 7,
            message: "trap".into(),
        };
        let views = [projector(vec![
            version(Role::Active, VersionState::CatchingUp, 0, 500),
            version(Role::Shadow, stalled, 6, 500),
            version(Role::Failed, VersionState::Retired, 0, 500),
        ])];
        let rejected = [Rejected {
            path: PathBuf::from("plugins/bad.wasm"),
            reason: "not a component".into(),
        }];
        let reasons = degraded_reasons(&views, &rejected, 100);
        assert_eq!(reasons.len(), 4, "{reasons:#?}");
        assert!(reasons[0].contains("500 events behind"), "{}", reasons[0]);
        assert!(reasons[1].contains("stalled at 7: trap"), "{}", reasons[1]);
        assert!(reasons[2].contains("failed: boom"), "{}", reasons[2]);
        assert!(reasons[3].contains("bad.wasm"), "{}", reasons[3]);
        // Retrying a host fault, or finding the log behind: degraded too.
        let views = [projector(vec![
            version(
                Role::Active,
                VersionState::Retrying {
                    attempts: 3,
                    message: "database or disk is full".into(),
                },
                5,
                5,
            ),
            version(
                Role::Previous,
                VersionState::AheadOfLog {
                    checkpoint: 9,
                    head: 0,
                },
                9,
                0,
            ),
        ])];
        let reasons = degraded_reasons(&views, &[], 100);
        assert_eq!(reasons.len(), 2, "{reasons:#?}");
        assert!(
            reasons[0].contains("retrying after 3 failures"),
            "{}",
            reasons[0]
        );
        assert!(reasons[1].contains("ahead of the log"), "{}", reasons[1]);
        // At the threshold is still fine.
        let views = [projector(vec![version(
            Role::Active,
            VersionState::Live,
            0,
            100,
        )])];
        assert!(degraded_reasons(&views, &[], 100).is_empty());
    }
}
