//! The authenticated user on whose behalf a request runs.

use std::collections::BTreeMap;

/// The authenticated user of a request. The host inserts it into the request extensions;
/// its id becomes the records' `initiator_id`.
///
/// ```
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(aibridge::Actor::new("user-42").with_metadata("team", "infra"));
/// let actor = req.extensions().get::<aibridge::Actor>().unwrap();
/// assert_eq!(actor.id(), "user-42");
/// assert_eq!(actor.metadata()["team"], "infra");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    id: String,
    metadata: BTreeMap<String, String>,
}

impl Actor {
    /// An actor with this id. An empty id is treated as "no actor" (401) by the bridge.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// Adds a metadata entry (copied into the interception record).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The actor id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actor metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}
