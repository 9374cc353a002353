//! `RecordQueueConfig::interception`: the interception record awaited before the upstream
//! call (the default) or queued ahead of its children. Queued, the client does not wait for
//! it, and still no child row and no end is written before it, nor at all if it fails.

mod common;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aibridge::recorder::{
    Interception, InterceptionEnded, InterceptionRecord, MemoryRecorder, ModelThought,
    PermanentError, PromptUsage, RecordQueueConfig, Recorder, TokenUsage, ToolUsage,
};
use aibridge::{BoxError, RequestBridge};
use common::{anthropic, ended, post, prom, send};
use support::{MockResponse, MockUpstream, fixture};
use tokio::sync::Semaphore;

const REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":"say hello"}]}"#;

/// A `MemoryRecorder` whose `record_interception` waits for a permit (or fails for good),
/// logging the kinds it stores in order.
#[derive(Debug, Clone)]
struct Gated {
    mem: MemoryRecorder,
    gate: Arc<Semaphore>,
    refuse: bool,
    order: Arc<Mutex<Vec<&'static str>>>,
}

impl Gated {
    fn new(refuse: bool) -> Self {
        Self {
            mem: MemoryRecorder::new(),
            gate: Arc::new(Semaphore::new(0)),
            refuse,
            order: Arc::default(),
        }
    }

    fn log(&self, kind: &'static str, r: Result<(), BoxError>) -> Result<(), BoxError> {
        if r.is_ok() {
            self.order.lock().unwrap().push(kind);
        }
        r
    }

    fn order(&self) -> Vec<&'static str> {
        self.order.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Recorder for Gated {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        if self.refuse {
            return Err(PermanentError::new("refused for good").into());
        }
        self.gate.acquire().await.unwrap().forget();
        let r = self.mem.record_interception(rec).await;
        self.log("interception", r)
    }
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        let r = self.mem.record_interception_ended(rec).await;
        self.log("ended", r)
    }
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        let r = self.mem.record_token_usage(rec).await;
        self.log("token_usage", r)
    }
    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        let r = self.mem.record_prompt_usage(rec).await;
        self.log("prompt_usage", r)
    }
    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        let r = self.mem.record_tool_usage(rec).await;
        self.log("tool_usage", r)
    }
    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        let r = self.mem.record_model_thought(rec).await;
        self.log("model_thought", r)
    }
}

fn bridge(upstream: &MockUpstream, rec: &Gated) -> (RequestBridge, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let bridge = RequestBridge::builder()
        .provider(anthropic(&upstream.base_url()))
        .recorder(rec.clone())
        .record_queue(RecordQueueConfig::default().with_interception(InterceptionRecord::Queued))
        .metrics(aibridge::metrics::Metrics::new(&registry).unwrap())
        .build()
        .unwrap();
    (bridge, registry)
}

fn records(registry: &prometheus::Registry, kind: &str, outcome: &str) -> f64 {
    prom::try_value(
        registry,
        "records_total",
        &prom::at(&format!("kind={kind},outcome={outcome}")),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_queued_interception_does_not_hold_the_request_and_lands_before_its_children() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let rec = Gated::new(false);
    let (bridge, registry) = bridge(&upstream, &rec);
    // The interception cannot land (its gate is shut), and yet the request is relayed.
    let resp = send(&bridge, post("/anthropic/v1/messages", REQ)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(upstream.request_count(), 1);
    assert!(rec.mem.interceptions().is_empty());
    assert!(
        rec.order().is_empty(),
        "children wait for their interception"
    );

    rec.gate.add_permits(1);
    ended(&rec.mem, 1).await;
    let order = rec.order();
    assert_eq!(order.first(), Some(&"interception"), "{order:?}");
    assert_eq!(order.last(), Some(&"ended"), "{order:?}");
    assert!(order.contains(&"token_usage"), "{order:?}");
    assert!(order.contains(&"prompt_usage"), "{order:?}");
    let report = bridge.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.dropped_records, 0);
    assert_eq!(records(&registry, "interception", "written"), 1.0);
    assert_eq!(records(&registry, "token_usage", "written"), 1.0);
}

#[tokio::test]
async fn the_children_of_a_queued_interception_that_fails_are_failed_not_written() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let rec = Gated::new(true);
    let (bridge, registry) = bridge(&upstream, &rec);
    let resp = send(&bridge, post("/anthropic/v1/messages", REQ)).await;
    assert_eq!(resp.status, 200, "relayed before the interception failed");
    let report = bridge.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.dropped_records, 0);
    assert!(rec.order().is_empty(), "{:?}", rec.order());
    assert_eq!(records(&registry, "interception", "failed"), 1.0);
    assert_eq!(records(&registry, "token_usage", "failed"), 1.0);
    assert_eq!(records(&registry, "prompt_usage", "failed"), 1.0);
    assert_eq!(records(&registry, "interception_ended", "failed"), 1.0);
    assert_eq!(records(&registry, "token_usage", "written"), 0.0);
}
