//! What a projector says about itself: name, description, subscriptions, and the
//! optional event fields it reads.

/// A projector's name, description and subscriptions, returned by
/// [`Projector::info`](crate::Projector::info).
///
/// The host delivers an event when its type is one of the subscribed event types
/// (or none are listed) and its stream starts with one of the stream prefixes (or
/// none are listed). With neither list, the projector receives every event.
///
/// ```
/// use refract_sdk::Info;
///
/// let info = Info::new("balances", "Account balances in cents")
///     .event_types(["account.opened", "money.deposited"])
///     .stream_prefixes(["acc-"]);
/// assert!(info.accepts("money.deposited", "acc-1"));
/// assert!(!info.accepts("money.deposited", "order-1"));
/// assert!(!info.accepts("account.closed", "acc-1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    name: String,
    description: String,
    event_types: Vec<String>,
    stream_prefixes: Vec<String>,
    reads_ids: bool,
    reads_metadata: bool,
}

impl Info {
    /// The longest name the host accepts.
    pub const MAX_NAME_LEN: usize = 64;

    /// A projector named `name` (1 to 64 characters of `[a-z0-9_-]`; every
    /// version of one projector carries the same name) with a one-line
    /// description of its read model. It receives every event until
    /// [`event_types`](Info::event_types) or
    /// [`stream_prefixes`](Info::stream_prefixes) narrows it.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Info {
            name: name.into(),
            description: description.into(),
            event_types: Vec::new(),
            stream_prefixes: Vec::new(),
            reads_ids: true,
            reads_metadata: true,
        }
    }

    /// Says the projector never reads [`Event::id`](crate::Event::id): the host then
    /// sends every id as empty text and does not read ids from its log, which makes a
    /// replay cheaper. [`TestProjector`](crate::testing::TestProjector) blanks them
    /// too, so a test shows a projector that reads them anyway. Built with the
    /// `contract-0-1` feature, the host sends ids regardless (0.1.0 has no such
    /// declaration).
    ///
    /// ```
    /// # use refract_sdk::Info;
    /// let info = Info::new("balances", "Balances").ignores_ids().ignores_metadata();
    /// assert!(!info.reads_ids() && !info.reads_metadata());
    /// ```
    #[must_use]
    pub fn ignores_ids(mut self) -> Self {
        self.reads_ids = false;
        self
    }

    /// Says the projector never reads [`Event::metadata`](crate::Event::metadata):
    /// the host then sends no metadata and does not read it from its log. See
    /// [`ignores_ids`](Info::ignores_ids).
    #[must_use]
    pub fn ignores_metadata(mut self) -> Self {
        self.reads_metadata = false;
        self
    }

    /// Whether the projector reads event ids (the default).
    pub fn reads_ids(&self) -> bool {
        self.reads_ids
    }

    /// Whether the projector reads event metadata (the default).
    pub fn reads_metadata(&self) -> bool {
        self.reads_metadata
    }

    /// Receives only events of these exact types.
    #[must_use]
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Receives only events whose stream starts with one of these prefixes.
    #[must_use]
    pub fn stream_prefixes<S: Into<String>>(
        mut self,
        prefixes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.stream_prefixes
            .extend(prefixes.into_iter().map(Into::into));
        self
    }

    /// The projector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one-line description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The subscribed event types; empty means every type.
    pub fn subscribed_types(&self) -> &[String] {
        &self.event_types
    }

    /// The subscribed stream prefixes; empty means every stream.
    pub fn subscribed_prefixes(&self) -> &[String] {
        &self.stream_prefixes
    }

    /// Whether the host delivers an event of `event_type` on `stream`.
    pub fn accepts(&self, event_type: &str, stream: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.stream_prefixes.is_empty()
                || self
                    .stream_prefixes
                    .iter()
                    .any(|p| stream.starts_with(p.as_str())))
    }

    /// Checks the name against the rule the host enforces, so a native test fails
    /// the same way the host would.
    pub fn validate(&self) -> Result<(), String> {
        let valid_chars = self
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if self.name.is_empty() || self.name.len() > Self::MAX_NAME_LEN || !valid_chars {
            return Err(format!(
                "projector name {:?} is invalid: use 1 to {} characters of [a-z0-9_-]",
                self.name,
                Self::MAX_NAME_LEN
            ));
        }
        Ok(())
    }

    /// Splits into owned parts: name, description, event types, stream prefixes.
    #[cfg_attr(
        not(target_arch = "wasm32"),
        expect(dead_code, reason = "only the wasm glue hands the info to the host")
    )]
    pub(crate) fn into_parts(self) -> (String, String, Vec<String>, Vec<String>) {
        (
            self.name,
            self.description,
            self.event_types,
            self.stream_prefixes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subscriptions_means_everything() {
        let info = Info::new("all", "everything");
        assert!(info.accepts("any.type", "any-stream"));
    }

    #[test]
    fn names_follow_the_host_rule() {
        assert!(Info::new("cars-v2_x", "").validate().is_ok());
        assert!(Info::new("", "").validate().is_err());
        assert!(Info::new("Cars", "").validate().is_err());
        assert!(Info::new("a".repeat(65), "").validate().is_err());
    }
}
