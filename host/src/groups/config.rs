//! The configuration of consumer groups: `[consumers]` (limits, and the defaults of
//! every group) and `[groups.<name>]` (a declared group's filters and settings).
//!
//! ```toml
//! [consumers]
//! max_groups = 64                  # groups, declared or created by a member's first join
//! max_members_per_group = 32
//! max_in_flight_per_member = 1000  # leases one member holds at once
//! max_poll_events = 1000           # events one poll or one SSE batch delivers at most
//! max_poll_wait_ms = 30000         # the longest a long poll waits for events
//! max_lease_ms = 3600000           # the longest lease a group or a poll may ask for
//! max_window_events = 10000        # un-acked events a group holds in memory
//! max_window_bytes = 67108864      # ... and their data and metadata bytes
//! commit_interval_ms = 200         # committed positions are written to control.db this often
//! partitions = 16                  # defaults for every group:
//! lease_ms = 30000
//! session_timeout_ms = 10000
//! max_deliveries = 5
//!
//! [groups.mailer]
//! types = ["order.placed"]         # empty: every type
//! stream_prefixes = ["order-"]     # empty: every stream
//! partitions = 16
//! lease_ms = 30000                 # an event not acked within this is redelivered
//! session_timeout_ms = 10000       # a member silent for this long leaves the group
//! max_deliveries = 5               # then the event goes to the group's dead letters
//! lag_alert = 10000                # /health is degraded when the group lags more
//! retention = "hold"               # or "release": retention may remove what it has not committed
//! start = "earliest"               # or "latest": where a new group starts
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::log::{MAX_FILTER_TERMS, ReadQuery, StreamFilter};

/// Default cap on the number of groups. Each holds a window of events in memory and a
/// row in `control.db`; a client that joins ever new group names is stopped here.
pub const DEFAULT_MAX_GROUPS: usize = 64;

/// Default cap on the members of one group. Each is a session the host keeps and a
/// share of the partitions; more members than partitions leave some idle.
pub const DEFAULT_MAX_MEMBERS_PER_GROUP: usize = 32;

/// Default cap on the leases one member holds at once: it gets no more events until it
/// acks some. This bounds what one slow or silent member pins.
pub const DEFAULT_MAX_IN_FLIGHT_PER_MEMBER: usize = 1000;

/// Default cap on the events of one poll answer or one SSE batch.
pub const DEFAULT_MAX_POLL_EVENTS: usize = 1000;

/// Default cap on how long a long poll waits for events before answering empty. A
/// member waiting in a poll counts as alive.
pub const DEFAULT_MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// Default cap on a lease, whether a group's `lease_ms` or a poll's: an event leased to
/// a member that died is redelivered at the latest this long after, so a client asking
/// for a day-long lease cannot pin a partition for a day.
pub const DEFAULT_MAX_LEASE: Duration = Duration::from_secs(3600);

/// Default cap on the un-acked events a group holds in memory (delivered or waiting for
/// their partition's member). The group reads no further into the log until some are
/// acked, which is the backpressure of a group whose members fall behind.
pub const DEFAULT_MAX_WINDOW_EVENTS: usize = 10_000;

/// Default cap on the data and metadata bytes of a group's window (at least one event is
/// always held, however large).
pub const DEFAULT_MAX_WINDOW_BYTES: usize = 64 * 1024 * 1024;

/// Default time between two writes of the groups' committed positions to `control.db`.
/// Acks between two writes that are lost in a crash are redelivered: at least once.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Default number of partitions a group splits the log into, by a hash of the stream.
pub const DEFAULT_PARTITIONS: u32 = 16;

/// The most partitions a group may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// Default lease: an event not acked (or nacked) this long after its delivery is
/// delivered again.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Default session timeout: a member that neither polls, acks, heartbeats nor holds a
/// subscription open for this long leaves the group, and its partitions move.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Default number of deliveries of one event before it goes to the dead letters.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// The longest group or member name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The longest `nack` reason kept, in bytes; a longer one is cut.
pub const MAX_REASON_BYTES: usize = 4096;

/// `[consumers]`: limits on consumer groups, and the defaults of every group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumersConfig {
    /// The most groups, declared or created by a first join.
    pub max_groups: usize,
    /// The most members of one group.
    pub max_members_per_group: usize,
    /// The most leases one member holds at once.
    pub max_in_flight_per_member: usize,
    /// The most events one poll (or SSE batch) delivers.
    pub max_poll_events: usize,
    /// The longest a long poll waits, in milliseconds.
    pub max_poll_wait_ms: u64,
    /// The longest lease, in milliseconds, a group's `lease_ms` or a poll may ask for.
    pub max_lease_ms: u64,
    /// The most un-acked events a group holds in memory.
    pub max_window_events: usize,
    /// The most data and metadata bytes of a group's un-acked events.
    pub max_window_bytes: usize,
    /// Milliseconds between two writes of committed positions to `control.db`.
    pub commit_interval_ms: u64,
    /// Partitions of a group that names none.
    pub partitions: u32,
    /// Lease of a group that names none, in milliseconds.
    pub lease_ms: u64,
    /// Session timeout of a group that names none, in milliseconds.
    pub session_timeout_ms: u64,
    /// Deliveries before dead-lettering, for a group that names none.
    pub max_deliveries: u32,
}

impl Default for ConsumersConfig {
    fn default() -> Self {
        ConsumersConfig {
            max_groups: DEFAULT_MAX_GROUPS,
            max_members_per_group: DEFAULT_MAX_MEMBERS_PER_GROUP,
            max_in_flight_per_member: DEFAULT_MAX_IN_FLIGHT_PER_MEMBER,
            max_poll_events: DEFAULT_MAX_POLL_EVENTS,
            max_poll_wait_ms: millis(DEFAULT_MAX_POLL_WAIT),
            max_lease_ms: millis(DEFAULT_MAX_LEASE),
            max_window_events: DEFAULT_MAX_WINDOW_EVENTS,
            max_window_bytes: DEFAULT_MAX_WINDOW_BYTES,
            commit_interval_ms: millis(DEFAULT_COMMIT_INTERVAL),
            partitions: DEFAULT_PARTITIONS,
            lease_ms: millis(DEFAULT_LEASE),
            session_timeout_ms: millis(DEFAULT_SESSION_TIMEOUT),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
        }
    }
}

/// `groups.<name>.retention`: whether retention waits for the group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionHold {
    /// Retention never removes an event the group has not committed.
    #[default]
    Hold,
    /// Retention may remove events the group has not committed yet; the group then
    /// never sees them (deleted) or gets them from the archive (archived).
    Release,
}

/// `groups.<name>.start`: where a group starts the first time it is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// At the start of the log.
    #[default]
    Earliest,
    /// After the head as of the group's creation: only new events.
    Latest,
}

/// `[groups.<name>]`: a declared group. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSection {
    /// Only events of these types; empty: every type.
    pub types: Vec<String>,
    /// Only events of streams starting with one of these; empty: every stream.
    pub stream_prefixes: Vec<String>,
    /// Partitions (default `consumers.partitions`).
    pub partitions: Option<u32>,
    /// Lease in milliseconds (default `consumers.lease_ms`).
    pub lease_ms: Option<u64>,
    /// Session timeout in milliseconds (default `consumers.session_timeout_ms`).
    pub session_timeout_ms: Option<u64>,
    /// Deliveries before dead-lettering (default `consumers.max_deliveries`).
    pub max_deliveries: Option<u32>,
    /// `/health` is degraded while the group lags more than this many offsets.
    pub lag_alert: Option<u64>,
    /// Whether retention waits for the group's committed position.
    pub retention: RetentionHold,
    /// Where the group starts when it is first created.
    pub start: StartAt,
}

/// Which events a group consumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct GroupFilter {
    /// Event types; empty: every type.
    pub types: Vec<String>,
    /// Stream prefixes; empty: every stream.
    pub stream_prefixes: Vec<String>,
}

impl GroupFilter {
    /// The filter in a canonical form (sorted, without repeats), so two spellings of the
    /// same filter compare equal.
    pub fn normalized(mut self) -> GroupFilter {
        self.types.sort();
        self.types.dedup();
        self.stream_prefixes.sort();
        self.stream_prefixes.dedup();
        self
    }

    /// The log query that reads the group's events.
    pub fn query(&self) -> ReadQuery {
        ReadQuery {
            types: self.types.clone(),
            stream: if self.stream_prefixes.is_empty() {
                StreamFilter::Any
            } else {
                StreamFilter::Prefixes(self.stream_prefixes.clone())
            },
            ..ReadQuery::default()
        }
    }

    /// Checks the filter's size; the error says what is allowed.
    pub fn check(&self) -> Result<(), String> {
        if self.types.len() > MAX_FILTER_TERMS || self.stream_prefixes.len() > MAX_FILTER_TERMS {
            return Err(format!(
                "a group filters on at most {MAX_FILTER_TERMS} types and {MAX_FILTER_TERMS} stream prefixes"
            ));
        }
        Ok(())
    }
}

/// A group's settings, resolved from its section (if declared) and `[consumers]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// Which events it consumes.
    pub filter: GroupFilter,
    /// Partitions the log is split into.
    pub partitions: u32,
    /// How long a delivered event stays leased to its member.
    pub lease: Duration,
    /// How long a silent member stays in the group.
    pub session_timeout: Duration,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// The lag above which `/health` is degraded.
    pub lag_alert: Option<u64>,
    /// Whether retention waits for the group.
    pub hold_retention: bool,
    /// Where a new group starts.
    pub start: StartAt,
    /// Whether it is declared in `refract.toml` (and so cannot be deleted by the API).
    pub declared: bool,
}

impl ConsumersConfig {
    /// Checks every limit; the error is the dotted key and what it accepts.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let at_least_one = [
            ("consumers.max_groups", self.max_groups as u64),
            (
                "consumers.max_members_per_group",
                self.max_members_per_group as u64,
            ),
            (
                "consumers.max_in_flight_per_member",
                self.max_in_flight_per_member as u64,
            ),
            ("consumers.max_poll_events", self.max_poll_events as u64),
            ("consumers.max_window_events", self.max_window_events as u64),
            ("consumers.max_window_bytes", self.max_window_bytes as u64),
            ("consumers.commit_interval_ms", self.commit_interval_ms),
            ("consumers.lease_ms", self.lease_ms),
            ("consumers.max_lease_ms", self.max_lease_ms),
            ("consumers.session_timeout_ms", self.session_timeout_ms),
            ("consumers.max_deliveries", u64::from(self.max_deliveries)),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err((key.to_owned(), "must be at least 1".to_owned()));
            }
        }
        check_lease("consumers.lease_ms", self.lease_ms, self.max_lease_ms)?;
        check_partitions("consumers.partitions", self.partitions)
    }

    /// The longest lease a poll may ask for.
    pub fn max_lease(&self) -> Duration {
        Duration::from_millis(self.max_lease_ms)
    }

    /// The settings of a group: its section's, else these defaults. `section` is `None`
    /// for a group created by a join, whose filter comes from that join.
    pub fn settings(&self, section: Option<&GroupSection>, filter: GroupFilter) -> GroupSettings {
        let declared = section.is_some();
        let section = section.cloned().unwrap_or_default();
        GroupSettings {
            filter: if declared {
                GroupFilter {
                    types: section.types.clone(),
                    stream_prefixes: section.stream_prefixes.clone(),
                }
                .normalized()
            } else {
                filter.normalized()
            },
            partitions: section.partitions.unwrap_or(self.partitions),
            lease: Duration::from_millis(section.lease_ms.unwrap_or(self.lease_ms)),
            session_timeout: Duration::from_millis(
                section
                    .session_timeout_ms
                    .unwrap_or(self.session_timeout_ms),
            ),
            max_deliveries: section.max_deliveries.unwrap_or(self.max_deliveries),
            lag_alert: section.lag_alert,
            // A group nobody declared was created by whichever client joined it first;
            // it must not be able to stop retention for good.
            hold_retention: declared && section.retention == RetentionHold::Hold,
            start: section.start,
            declared,
        }
    }

    /// The longest long-poll wait.
    pub fn max_poll_wait(&self) -> Duration {
        Duration::from_millis(self.max_poll_wait_ms)
    }

    /// The time between two writes of committed positions.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }
}

/// Checks every `[groups.<name>]` section against the limits.
pub fn validate_groups(
    groups: &BTreeMap<String, GroupSection>,
    consumers: &ConsumersConfig,
) -> Result<(), (String, String)> {
    if groups.len() > consumers.max_groups {
        return Err((
            "groups".to_owned(),
            format!(
                "declares {} groups, more than consumers.max_groups = {}",
                groups.len(),
                consumers.max_groups
            ),
        ));
    }
    for (name, section) in groups {
        check_name(name, "group").map_err(|problem| (format!("groups.{name}"), problem))?;
        let key = |field: &str| format!("groups.{name}.{field}");
        if let Some(partitions) = section.partitions {
            check_partitions(&key("partitions"), partitions)?;
        }
        for (field, value) in [
            ("lease_ms", section.lease_ms),
            ("session_timeout_ms", section.session_timeout_ms),
            ("max_deliveries", section.max_deliveries.map(u64::from)),
        ] {
            if value == Some(0) {
                return Err((key(field), "must be at least 1".to_owned()));
            }
        }
        if let Some(lease) = section.lease_ms {
            check_lease(&key("lease_ms"), lease, consumers.max_lease_ms)?;
        }
        GroupFilter {
            types: section.types.clone(),
            stream_prefixes: section.stream_prefixes.clone(),
        }
        .check()
        .map_err(|problem| (key("types"), problem))?;
    }
    Ok(())
}

fn check_lease(key: &str, lease_ms: u64, max_lease_ms: u64) -> Result<(), (String, String)> {
    if lease_ms > max_lease_ms {
        return Err((
            key.to_owned(),
            format!("must be at most consumers.max_lease_ms = {max_lease_ms}"),
        ));
    }
    Ok(())
}

fn check_partitions(key: &str, partitions: u32) -> Result<(), (String, String)> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err((
            key.to_owned(),
            format!("must be from 1 to {MAX_PARTITIONS}"),
        ));
    }
    Ok(())
}

/// Checks a group name (`[a-z0-9_-]`) or, with `what = "member"`, a member name (also
/// `A-Z` and `.`), each 1 to [`MAX_NAME_LEN`] bytes; the error says what is allowed.
pub fn check_name(name: &str, what: &str) -> Result<(), String> {
    let member = what == "member";
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'_'
                || b == b'-'
                || (member && (b.is_ascii_uppercase() || b == b'.'))
        });
    if valid {
        return Ok(());
    }
    let shown: String = name.chars().take(MAX_NAME_LEN + 8).collect();
    let allowed = if member {
        "a-z, A-Z, 0-9, `.`, `_` and `-`"
    } else {
        "a-z, 0-9, `_` and `-`"
    };
    Err(format!(
        "{shown:?} is not a {what} name: names are 1 to {MAX_NAME_LEN} characters of {allowed}"
    ))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", "A", "a/b", "..", &"a".repeat(65), "x y"] {
            assert!(check_name(bad, "group").is_err(), "{bad:?}");
        }
        check_name("mailer_2-x", "group").unwrap();
        check_name("Worker.1", "member").unwrap();
        assert!(check_name("Worker.1", "group").is_err());
    }

    #[test]
    fn undeclared_groups_never_hold_retention() {
        let consumers = ConsumersConfig::default();
        let joined = consumers.settings(None, GroupFilter::default());
        assert!(!joined.hold_retention && !joined.declared);
        let section = GroupSection::default();
        let declared = consumers.settings(Some(&section), GroupFilter::default());
        assert!(declared.hold_retention && declared.declared);
        let released = GroupSection {
            retention: RetentionHold::Release,
            ..GroupSection::default()
        };
        assert!(
            !consumers
                .settings(Some(&released), GroupFilter::default())
                .hold_retention
        );
    }

    #[test]
    fn bad_sections_name_their_key() {
        let mut groups = BTreeMap::new();
        groups.insert(
            "g".to_owned(),
            GroupSection {
                partitions: Some(0),
                ..GroupSection::default()
            },
        );
        let consumers = ConsumersConfig::default();
        assert_eq!(
            validate_groups(&groups, &consumers).unwrap_err().0,
            "groups.g.partitions"
        );
        let parsed: Result<GroupSection, _> = toml::from_str("lease = 3");
        assert!(parsed.is_err(), "unknown keys are refused");
        let zero = ConsumersConfig {
            max_poll_events: 0,
            ..ConsumersConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "consumers.max_poll_events");
        groups.insert(
            "g".to_owned(),
            GroupSection {
                lease_ms: Some(consumers.max_lease_ms + 1),
                ..GroupSection::default()
            },
        );
        assert_eq!(
            validate_groups(&groups, &consumers).unwrap_err().0,
            "groups.g.lease_ms",
            "a lease longer than consumers.max_lease_ms is refused"
        );
    }
}
