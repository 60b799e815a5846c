//! `[retention]` in `refract.toml`: retention policies, one per stream prefix.
//!
//! ```toml
//! [retention]
//! interval_ms = 60000                # time between two retention passes
//!
//! [retention.prefixes."audit-"]      # streams whose name starts with "audit-"
//! max_age = "30d"                    # humantime: "12h", "30d", "1y"
//! max_events_per_stream = 10000      # keep the newest N events of each stream
//! max_bytes = 1073741824             # keep the prefix's event text under this
//! mode = "archive"                   # "archive" (default): move to <data-dir>/archive/
//!                                    # "delete": drop for good
//! ```
//!
//! No `[retention.prefixes.*]` entry means keep everything forever: the default. An
//! event past any of its policy's limits is removed (subject to the safety floor, see
//! [`super`]). When prefixes overlap, the longest one that matches a stream governs it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Time between two retention passes when `retention.interval_ms` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The shortest `retention.interval_ms` accepted: a pass reads the head of every
/// policy's streams, so it must not run in a tight loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Milliseconds between two passes.
    pub interval_ms: u64,
    /// Policies, by stream prefix (`""` is every stream).
    pub prefixes: BTreeMap<String, PolicySection>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_ms: u64::try_from(DEFAULT_INTERVAL.as_millis()).unwrap_or(60_000),
            prefixes: BTreeMap::new(),
        }
    }
}

/// `[retention.prefixes."<prefix>"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Events older than this are past the policy (humantime, e.g. `"30d"`).
    #[serde(default)]
    pub max_age: Option<String>,
    /// Only the newest this-many events of each stream are kept.
    #[serde(default)]
    pub max_events_per_stream: Option<u64>,
    /// The oldest events go until the prefix's event text (data and metadata) is at most
    /// this many bytes.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// What happens to an event past the policy.
    #[serde(default)]
    pub mode: Mode,
}

/// What retention does with an event past its policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Move it to the archive, where replays, reads and counts still see it.
    #[default]
    Archive,
    /// Drop it for good.
    Delete,
}

impl Mode {
    /// `archive` or `delete`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Archive => "archive",
            Mode::Delete => "delete",
        }
    }
}

/// A checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The stream prefix it governs.
    pub prefix: String,
    /// See [`PolicySection::max_age`].
    pub max_age: Option<Duration>,
    /// See [`PolicySection::max_events_per_stream`].
    pub max_events_per_stream: Option<u64>,
    /// See [`PolicySection::max_bytes`].
    pub max_bytes: Option<u64>,
    /// See [`PolicySection::mode`].
    pub mode: Mode,
}

impl RetentionConfig {
    /// Checks the section; the error is the dotted key at fault and what it accepts.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.policies().map(drop)
    }

    /// Time between two passes.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The policies, checked, longest prefix first (so the first that matches a stream
    /// is the one that governs it).
    pub fn policies(&self) -> Result<Vec<Policy>, (String, String)> {
        let min = MIN_INTERVAL.as_millis();
        if u128::from(self.interval_ms) < min {
            return Err((
                "retention.interval_ms".to_owned(),
                format!("must be at least {min} (milliseconds)"),
            ));
        }
        let mut policies = Vec::new();
        for (prefix, section) in &self.prefixes {
            let key = |name: &str| format!("retention.prefixes.{prefix:?}.{name}");
            let max_age = section
                .max_age
                .as_deref()
                .map(|text| {
                    humantime::parse_duration(text).map_err(|e| {
                        (
                            key("max_age"),
                            format!(
                                "`{text}` is not a duration ({e}); write it like \"12h\", \"30d\" or \"1y\""
                            ),
                        )
                    })
                })
                .transpose()?;
            if max_age.is_some_and(|age| age.is_zero()) {
                return Err((key("max_age"), "must be longer than 0".to_owned()));
            }
            if section.max_events_per_stream == Some(0) {
                return Err((
                    key("max_events_per_stream"),
                    "must be at least 1 (the newest event of a stream is always kept)".to_owned(),
                ));
            }
            if section.max_bytes == Some(0) {
                return Err((key("max_bytes"), "must be at least 1".to_owned()));
            }
            if max_age.is_none()
                && section.max_events_per_stream.is_none()
                && section.max_bytes.is_none()
            {
                return Err((
                    key("max_age"),
                    "a policy needs at least one of max_age, max_events_per_stream or \
                     max_bytes; remove the section to keep these streams forever"
                        .to_owned(),
                ));
            }
            policies.push(Policy {
                prefix: prefix.clone(),
                max_age,
                max_events_per_stream: section.max_events_per_stream,
                max_bytes: section.max_bytes,
                mode: section.mode,
            });
        }
        policies.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        Ok(policies)
    }
}

/// The policy governing `stream`: the longest matching prefix.
pub fn governing<'p>(policies: &'p [Policy], stream: &str) -> Option<&'p Policy> {
    policies
        .iter()
        .find(|policy| stream.as_bytes().starts_with(policy.prefix.as_bytes()))
}

/// The delete-mode prefixes whose streams a projector subscribing to `subscribed`
/// (stream prefixes; empty means every stream) may read: its replay will lack what they
/// deleted.
pub fn deleting_overlap(policies: &[Policy], subscribed: &[String]) -> Vec<String> {
    policies
        .iter()
        .filter(|policy| policy.mode == Mode::Delete)
        .filter(|policy| {
            subscribed.is_empty()
                || subscribed.iter().any(|s| {
                    s.as_bytes().starts_with(policy.prefix.as_bytes())
                        || policy.prefix.as_bytes().starts_with(s.as_bytes())
                })
        })
        .map(|policy| policy.prefix.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Policy>, (String, String)> {
        let config: RetentionConfig =
            toml::from_str(text).map_err(|e| (String::new(), e.to_string()))?;
        config.policies()
    }

    #[test]
    fn policies_parse_and_the_longest_prefix_governs() {
        let policies = parse(
            "[prefixes.\"a\"]\nmax_age = \"30d\"\n[prefixes.\"ab\"]\nmax_events_per_stream = 3\nmode = \"delete\"\n",
        )
        .unwrap();
        assert_eq!(
            policies[1].max_age,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
        assert_eq!(governing(&policies, "abc").unwrap().mode, Mode::Delete);
        assert_eq!(governing(&policies, "ax").unwrap().mode, Mode::Archive);
        assert!(governing(&policies, "b").is_none());
        assert_eq!(deleting_overlap(&policies, &[]), ["ab"]);
        assert_eq!(deleting_overlap(&policies, &["a".to_owned()]), ["ab"]);
        assert_eq!(deleting_overlap(&policies, &["abz".to_owned()]), ["ab"]);
        assert!(deleting_overlap(&policies, &["ax".to_owned()]).is_empty());
    }

    #[test]
    fn bad_policies_name_the_key_and_the_fix() {
        let (key, problem) = parse("[prefixes.\"a\"]\nmax_age = \"soon\"\n").unwrap_err();
        assert_eq!(key, "retention.prefixes.\"a\".max_age");
        assert!(problem.contains("30d"), "{problem}");
        let (key, problem) = parse("[prefixes.\"a\"]\nmode = \"archive\"\n").unwrap_err();
        assert!(key.starts_with("retention.prefixes"), "{key}");
        assert!(problem.contains("keep these streams forever"), "{problem}");
        let (_, problem) =
            parse("[prefixes.\"a\"]\nmax_age = \"1d\"\nmode = \"trash\"\n").unwrap_err();
        assert!(
            problem.contains("archive") && problem.contains("delete"),
            "{problem}"
        );
        let (_, problem) = parse("[prefixes.\"a\"]\nmax_agee = \"1d\"\n").unwrap_err();
        assert!(problem.contains("max_agee"), "{problem}");
        let (key, _) = parse("[prefixes.\"a\"]\nmax_events_per_stream = 0\n").unwrap_err();
        assert!(key.ends_with("max_events_per_stream"), "{key}");
    }
}
