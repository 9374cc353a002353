//! Which upstream response a presented Responses id stands for (openai-responses.md S20,
//! revised): a tool loop shows the client its FIRST upstream response id, while the
//! upstream stored the conversation under the LAST one. A later request's
//! `previous_response_id`, and the `{id}` of a `/v1/responses/{id}` passthrough call, that
//! name a presented id are sent upstream as the last upstream id of that interception.
//!
//! The bridge remembers its own interceptions' pairs in a bounded in-process cache and
//! asks a [`ResponseIds`] store for ids it does not know (another replica's, or from before
//! a restart). The SQL recorders are such stores: they answer from the token-usage rows'
//! `provider_response_id` (`Builder::response_ids`). A host with its own
//! [`Recorder`](crate::Recorder) and no store gets the cache only: the mapping then holds
//! within one process and is lost on restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::BoxError;

/// A store that resolves a presented Responses id (the first upstream response id of a
/// tool-loop interception) to the last upstream response id of the same interception
/// (openai-responses.md S20): the bridge shows a client one response lifecycle, the first
/// upstream id, while the upstream stored the conversation under the last one, and sends a
/// later `previous_response_id` (or `/v1/responses/{id}` call) naming the presented id
/// upstream as the last id.
///
/// The bridge keeps its own pairs in a bounded in-process cache and asks the store given to
/// [`Builder::response_ids`](crate::bridge::Builder::response_ids) only for ids it does not
/// know (another replica's, or from before a restart). [`SqliteRecorder`] and
/// [`PostgresRecorder`] implement it from their token-usage rows. A host with its own
/// [`Recorder`](crate::Recorder) and no store gets the cache only: the mapping then holds
/// within one process and is lost on restart. Lookups slower than 2 s, or failing, leave
/// the id as the client sent it.
///
/// [`SqliteRecorder`]: https://docs.rs/aibridge/latest/aibridge/recorder/struct.SqliteRecorder.html
/// [`PostgresRecorder`]: https://docs.rs/aibridge/latest/aibridge/recorder/struct.PostgresRecorder.html
///
/// ```
/// use aibridge::recorder::ResponseIds;
/// struct Nothing;
/// #[aibridge::async_trait]
/// impl ResponseIds for Nothing {
///     async fn last_upstream_id(&self, _presented: &str) -> Result<Option<String>, aibridge::BoxError> {
///         Ok(None)
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait ResponseIds: Send + Sync + 'static {
    /// The last upstream response id of the interception whose first upstream response
    /// had the id `presented`; `None` when unknown (or when it was the only one).
    async fn last_upstream_id(&self, presented: &str) -> Result<Option<String>, BoxError>;
}

#[async_trait::async_trait]
impl<T: ResponseIds + ?Sized> ResponseIds for Arc<T> {
    async fn last_upstream_id(&self, presented: &str) -> Result<Option<String>, BoxError> {
        (**self).last_upstream_id(presented).await
    }
}

/// Pairs kept in process (oldest forgotten first).
const CACHE_CAPACITY: usize = 10_000;

/// How long a lookup in the store may take before the id is sent as it is.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The bridge's resolver: the in-process cache in front of an optional store.
#[derive(Default)]
pub(crate) struct ResponseIdMap {
    cache: Mutex<Cache>,
    store: Option<Arc<dyn ResponseIds>>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, String>,
    order: VecDeque<String>,
}

impl std::fmt::Debug for ResponseIdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseIdMap")
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseIdMap {
    /// A resolver asking `store` for ids the cache does not hold.
    pub(crate) fn new(store: Option<Arc<dyn ResponseIds>>) -> Self {
        Self {
            cache: Mutex::default(),
            store,
        }
    }

    /// Remembers that `presented` stands for `last`.
    pub(crate) fn remember(&self, presented: String, last: String) {
        if presented == last {
            return;
        }
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.map.insert(presented.clone(), last).is_none() {
            c.order.push_back(presented);
        }
        while c.order.len() > CACHE_CAPACITY {
            if let Some(old) = c.order.pop_front() {
                c.map.remove(&old);
            }
        }
    }

    /// The id to send upstream for `presented`: the last upstream id of its interception,
    /// or `None` to send it as it is. A failing or slow store is logged and ignored.
    pub(crate) async fn resolve(&self, presented: &str) -> Option<String> {
        if let Some(last) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .get(presented)
        {
            return Some(last.clone());
        }
        let store = self.store.as_ref()?;
        let last =
            match tokio::time::timeout(LOOKUP_TIMEOUT, store.last_upstream_id(presented)).await {
                Ok(Ok(last)) => last?,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "response id lookup failed; id sent as it is");
                    return None;
                }
                Err(_) => {
                    tracing::warn!("response id lookup timed out; id sent as it is");
                    return None;
                }
            };
        if last == presented {
            return None;
        }
        self.remember(presented.to_owned(), last.clone());
        Some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    #[async_trait::async_trait]
    impl ResponseIds for Fixed {
        async fn last_upstream_id(&self, presented: &str) -> Result<Option<String>, BoxError> {
            match presented {
                "resp_a" => Ok(Some("resp_z".to_owned())),
                "resp_same" => Ok(Some("resp_same".to_owned())),
                "resp_err" => Err("database down".into()),
                _ => Ok(None),
            }
        }
    }

    #[tokio::test]
    async fn cache_first_then_the_store() {
        let map = ResponseIdMap::new(Some(Arc::new(Fixed)));
        map.remember("resp_1".into(), "resp_2".into());
        assert_eq!(map.resolve("resp_1").await.as_deref(), Some("resp_2"));
        assert_eq!(map.resolve("resp_a").await.as_deref(), Some("resp_z"));
        assert_eq!(map.resolve("resp_same").await, None);
        assert_eq!(map.resolve("resp_err").await, None);
        assert_eq!(map.resolve("resp_unknown").await, None);
        let alone = ResponseIdMap::default();
        assert_eq!(alone.resolve("resp_a").await, None, "cache only");
    }

    #[test]
    fn the_cache_is_bounded() {
        let map = ResponseIdMap::default();
        for i in 0..=CACHE_CAPACITY {
            map.remember(format!("p{i}"), format!("l{i}"));
        }
        let c = map.cache.lock().unwrap();
        assert_eq!(c.map.len(), CACHE_CAPACITY);
        assert!(!c.map.contains_key("p0"), "the oldest is forgotten");
    }
}
