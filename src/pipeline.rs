//! [`Shared`]: what every request of one bridge shares, handed down by the bridge.
//!
//! The bridge owns one `Arc<Shared>` and passes it to the interceptors and to passthrough,
//! so neither of them reaches into the bridge: the dependencies go one way,
//! `bridge → intercept / passthrough → pipeline`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

use crate::breaker::Breakers;
use crate::metrics::Metrics;
use crate::recorder::queue::RecordQueue;
use crate::recorder::response_ids::ResponseIdMap;
use crate::upstream::UpstreamTimeouts;

/// Default of `Builder::client_write_timeout`.
pub(crate) const DEFAULT_CLIENT_WRITE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(60);

/// The state every interception and passthrough request of a bridge uses.
pub(crate) struct Shared {
    /// The record queue between the interceptors and the recorder.
    pub(crate) queue: RecordQueue,
    /// The upstream HTTP client.
    pub(crate) client: reqwest::Client,
    /// Largest request body, bridged and passthrough.
    pub(crate) max_request_body: usize,
    /// Upstream timeouts.
    pub(crate) timeouts: UpstreamTimeouts,
    /// Longest time a streaming client may accept no bytes (`Builder::client_write_timeout`).
    pub(crate) client_write_stall: std::time::Duration,
    /// Metrics, when the host registered them.
    pub(crate) metrics: Option<Metrics>,
    /// The circuit breakers, one per (provider, endpoint, model).
    pub(crate) breakers: Breakers,
    /// The policy stage, when the host configured one.
    pub(crate) policy: Option<Arc<dyn crate::policy::Policy>>,
    /// The price table of `TokenUsage::cost_usd`.
    pub(crate) prices: Arc<crate::policy::Prices>,
    /// Presented Responses ids → last upstream ids (S20).
    pub(crate) response_ids: ResponseIdMap,
    /// Where the tool loop takes its tools from (the MCP registry), when configured.
    #[cfg(feature = "mcp")]
    pub(crate) tool_source: Option<Arc<dyn crate::intercept::ToolSource>>,
    /// Set to true when in-flight work must be cancelled (shutdown deadline).
    pub(crate) cancel: watch::Sender<bool>,
    /// Requests in flight, until their response body ends or is dropped.
    inflight: AtomicUsize,
    /// Interception tasks still running (they outlive the response body by the time it
    /// takes to queue their last records).
    tasks: AtomicUsize,
    /// Notified when either count drops to zero.
    idle: Notify,
}

impl Shared {
    pub(crate) fn new(
        queue: RecordQueue,
        client: reqwest::Client,
        max_request_body: usize,
        timeouts: UpstreamTimeouts,
        metrics: Option<Metrics>,
    ) -> Self {
        Self {
            queue,
            client,
            max_request_body,
            timeouts,
            client_write_stall: DEFAULT_CLIENT_WRITE_TIMEOUT,
            metrics,
            breakers: Breakers::default(),
            policy: None,
            prices: Arc::new(crate::policy::Prices::builtin()),
            response_ids: ResponseIdMap::default(),
            #[cfg(feature = "mcp")]
            tool_source: None,
            cancel: watch::Sender::new(false),
            inflight: AtomicUsize::new(0),
            tasks: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Requests currently in flight.
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    fn is_idle(&self) -> bool {
        self.inflight.load(Ordering::SeqCst) == 0 && self.tasks.load(Ordering::Acquire) == 0
    }

    /// Waits until no request and no interception task is in flight; false if the
    /// deadline passed first.
    pub(crate) async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            if self.is_idle() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_idle();
            }
        }
    }

    /// Counts a request as in flight until the guard is dropped.
    pub(crate) fn track_request(self: &Arc<Self>) -> Tracked {
        Tracked::start(self.clone(), Counter::Requests)
    }

    /// Counts a running interception task until the guard is dropped.
    pub(crate) fn track_task(self: &Arc<Self>) -> Tracked {
        Tracked::start(self.clone(), Counter::Tasks)
    }

    fn counter(&self, which: Counter) -> &AtomicUsize {
        match which {
            Counter::Requests => &self.inflight,
            Counter::Tasks => &self.tasks,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Counter {
    Requests,
    Tasks,
}

/// Counts a request or an interception task as running until dropped.
pub(crate) struct Tracked {
    shared: Arc<Shared>,
    which: Counter,
}

impl Tracked {
    fn start(shared: Arc<Shared>, which: Counter) -> Self {
        // SeqCst: pairs with the shutdown flag (see `bridge::Inner::shutting_down`).
        shared.counter(which).fetch_add(1, Ordering::SeqCst);
        Self { shared, which }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self
            .shared
            .counter(self.which)
            .fetch_sub(1, Ordering::AcqRel)
            == 1
        {
            self.shared.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{NoopRecorder, RecordQueueConfig};

    fn shared() -> Arc<Shared> {
        let queue = RecordQueue::start(Arc::new(NoopRecorder), RecordQueueConfig::default());
        Arc::new(Shared::new(
            queue,
            reqwest::Client::new(),
            1024,
            UpstreamTimeouts::default(),
            None,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_and_tasks_alike() {
        let shared = shared();
        let request = shared.track_request();
        let task = shared.track_task();
        assert_eq!(shared.inflight(), 1);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        assert!(
            !shared.wait_idle(soon).await,
            "a request is still in flight"
        );
        drop(request);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        assert!(!shared.wait_idle(soon).await, "a task is still running");
        let waiter = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
                shared.wait_idle(far).await
            })
        };
        drop(task);
        assert!(waiter.await.unwrap(), "the last guard wakes the waiter");
        assert_eq!(shared.inflight(), 0);
    }
}
