//! What `refract.toml` says about snapshots.
//!
//! ```toml
//! [projectors.balances.snapshots]   # per projector; default off
//! every_events = 100000              # a snapshot whenever the checkpoint moved this far
//! every_seconds = 3600               # ... or this long after the last one (if it moved)
//! keep = 3                           # snapshots kept per version, newest first
//!
//! [snapshots]                        # host-wide limits
//! point_in_time_cache = 4            # materialised point-in-time read models kept (LRU)
//! point_in_time_max_bytes = 1073741824
//! point_in_time_max_replay = 1000000 # events replayed on top of a snapshot, at most
//! stream_hint_every = 0              # append responses say `snapshot_due` past this; 0 = off
//! stream_keep = 3                    # stream snapshots kept per stream
//! stream_max_state_bytes = 1048576
//! ```
//!
//! Whatever the policy, a snapshot of the version being replaced is taken before every
//! swap and every rollback, so there is always a way back.

use serde::Deserialize;

/// Snapshots kept per version when `keep` is not set.
pub const DEFAULT_KEEP: usize = 2;

/// Materialised point-in-time read models kept for reuse when not configured.
pub const DEFAULT_POINT_IN_TIME_CACHE: usize = 4;

/// The bytes all materialised point-in-time read models may take together on disk
/// when not configured. Past it, the least recently used are deleted.
pub const DEFAULT_POINT_IN_TIME_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// The most events one point-in-time query may replay on top of its snapshot when not
/// configured: the client chooses the offset, so the replay's length needs a bound. A
/// query further than this from any snapshot is refused with the fix (a snapshot
/// policy with `every_events` below this).
pub const DEFAULT_POINT_IN_TIME_MAX_REPLAY: u64 = 1_000_000;

/// Stream snapshots kept per stream when not configured.
pub const DEFAULT_STREAM_KEEP: usize = 3;

/// The largest `state` a stream snapshot may carry when not configured (JSON text).
pub const DEFAULT_STREAM_MAX_STATE_BYTES: usize = 1024 * 1024;

/// `[projectors.<name>.snapshots]`: when to take read-model snapshots. Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotPolicy {
    /// A snapshot whenever the active version's checkpoint has moved this many offsets
    /// past its last one. 0: never by count.
    pub every_events: u64,
    /// A snapshot when this many seconds have passed since the last one and the
    /// checkpoint has moved. 0: never by time.
    pub every_seconds: u64,
    /// Snapshots kept per version, newest first (at least 1).
    pub keep: usize,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            every_events: 0,
            every_seconds: 0,
            keep: DEFAULT_KEEP,
        }
    }
}

impl SnapshotPolicy {
    /// Whether the policy ever takes a snapshot by itself.
    pub fn is_on(&self) -> bool {
        self.every_events > 0 || self.every_seconds > 0
    }

    /// Checks the values; on error, the key (under the section) and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.keep == 0 {
            return Err(("keep", "must be at least 1"));
        }
        Ok(())
    }
}

/// `[snapshots]`: host-wide limits of point-in-time queries and stream snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotsConfig {
    /// Materialised point-in-time read models kept for reuse (least recently used go).
    pub point_in_time_cache: usize,
    /// Bytes all materialised point-in-time read models may take on disk together.
    pub point_in_time_max_bytes: u64,
    /// Events a point-in-time query may replay on top of its snapshot, at most.
    pub point_in_time_max_replay: u64,
    /// An append response says `snapshot_due` once the stream has grown this many
    /// events past its last snapshot. 0: never.
    pub stream_hint_every: u64,
    /// Stream snapshots kept per stream, newest first.
    pub stream_keep: usize,
    /// The largest `state` of a stream snapshot, in bytes of JSON.
    pub stream_max_state_bytes: usize,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        Self {
            point_in_time_cache: DEFAULT_POINT_IN_TIME_CACHE,
            point_in_time_max_bytes: DEFAULT_POINT_IN_TIME_MAX_BYTES,
            point_in_time_max_replay: DEFAULT_POINT_IN_TIME_MAX_REPLAY,
            stream_hint_every: 0,
            stream_keep: DEFAULT_STREAM_KEEP,
            stream_max_state_bytes: DEFAULT_STREAM_MAX_STATE_BYTES,
        }
    }
}

impl SnapshotsConfig {
    /// Checks the values; on error, the key (under `snapshots.`) and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.point_in_time_cache == 0 {
            return Err(("point_in_time_cache", "must be at least 1"));
        }
        if self.stream_keep == 0 {
            return Err(("stream_keep", "must be at least 1"));
        }
        if self.stream_max_state_bytes == 0 {
            return Err(("stream_max_state_bytes", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn snapshot_keys_are_checked_with_the_configuration() -> Result<(), crate::config::ConfigError>
    {
        let parse = |text: &str| Config::parse(text, Path::new("refract.toml"));
        let config = parse("[projectors.b.snapshots]\nevery_events = 10\n")?;
        assert!(config.projector("b").snapshots.is_on());
        assert!(!config.projector("other").snapshots.is_on());
        for (text, key) in [
            (
                "[projectors.b.snapshots]\nkeep = 0\n",
                "projectors.b.snapshots.keep",
            ),
            (
                "[snapshots]\npoint_in_time_cache = 0\n",
                "snapshots.point_in_time_cache",
            ),
            ("[projectors.b.snapshots]\nevery = 3\n", "every"),
        ] {
            let error = parse(text)
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            assert!(error.contains(key), "{text}: {error}");
        }
        Ok(())
    }
}
