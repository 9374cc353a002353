//! Recorder faults: a Recorder that fails, stalls past its call timeout or panics. The relay
//! is never affected (byte-for-byte bodies), failed calls are retried, final outcomes are
//! counted in `records_total`, and the queue's workers survive everything.

mod common;
mod faultkit;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aibridge::recorder::{
    Interception, InterceptionEnded, MemoryRecorder, ModelThought, Outcome, PromptUsage, RecordId,
    RecordKind, RecordQueueConfig, Recorder, TokenUsage, ToolUsage,
};
use aibridge::{BoxError, RequestBridge};
use common::{anthropic, ended, openai, post, prom, send};
use faultkit::Api;
use support::{MockResponse, MockUpstream};

#[derive(Clone, Copy, Debug)]
enum Fault {
    Fail,
    Stall,
    Panic,
}

/// A `MemoryRecorder` whose first attempts at each record of some kinds fail, never answer,
/// or panic.
#[derive(Debug, Clone, Default)]
struct Faulty {
    mem: MemoryRecorder,
    plan: Arc<Mutex<HashMap<RecordKind, (Fault, usize)>>>,
    attempts: Arc<Mutex<HashMap<RecordId, usize>>>,
    calls: Arc<Mutex<HashMap<RecordKind, usize>>>,
}

impl Faulty {
    /// The first `n` attempts at each record of `kind` suffer `fault` (from now on).
    fn inject(&self, kind: RecordKind, fault: Fault, n: usize) {
        self.plan.lock().unwrap().insert(kind, (fault, n));
    }

    fn calls(&self, kind: RecordKind) -> usize {
        self.calls.lock().unwrap().get(&kind).copied().unwrap_or(0)
    }

    async fn before(&self, kind: RecordKind, id: RecordId) -> Result<(), BoxError> {
        *self.calls.lock().unwrap().entry(kind).or_default() += 1;
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(id).or_default();
            *n += 1;
            *n
        };
        let fault = match self.plan.lock().unwrap().get(&kind) {
            Some((f, n)) if attempt <= *n => Some(*f),
            _ => None,
        };
        match fault {
            None => Ok(()),
            Some(Fault::Fail) => Err(format!("injected failure for {}", kind.as_str()).into()),
            Some(Fault::Stall) => std::future::pending().await,
            Some(Fault::Panic) => panic!("injected panic in record {}", kind.as_str()),
        }
    }
}

#[aibridge::async_trait]
impl Recorder for Faulty {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        self.before(RecordKind::Interception, rec.id).await?;
        self.mem.record_interception(rec).await
    }
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        self.before(RecordKind::InterceptionEnded, rec.id).await?;
        self.mem.record_interception_ended(rec).await
    }
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        self.before(RecordKind::TokenUsage, rec.id).await?;
        self.mem.record_token_usage(rec).await
    }
    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        self.before(RecordKind::PromptUsage, rec.id).await?;
        self.mem.record_prompt_usage(rec).await
    }
    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        self.before(RecordKind::ToolUsage, rec.id).await?;
        self.mem.record_tool_usage(rec).await
    }
    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        self.before(RecordKind::ModelThought, rec.id).await?;
        self.mem.record_model_thought(rec).await
    }
}

struct Setup {
    bridge: RequestBridge,
    rec: Faulty,
    registry: prometheus::Registry,
    upstream: MockUpstream,
}

async fn setup(queue: RecordQueueConfig) -> Setup {
    let upstream = MockUpstream::start().await;
    let rec = Faulty::default();
    let registry = prometheus::Registry::new();
    let base = upstream.base_url();
    let bridge = RequestBridge::builder()
        .provider(anthropic(&base))
        .provider(openai(&base))
        .recorder(rec.clone())
        .record_queue(queue)
        .metrics(aibridge::metrics::Metrics::new(&registry).unwrap())
        .build()
        .unwrap();
    Setup {
        bridge,
        rec,
        registry,
        upstream,
    }
}

fn fast(attempts: u32) -> RecordQueueConfig {
    RecordQueueConfig::default()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
        .with_call_timeout(Duration::from_millis(200))
}

impl Setup {
    /// One streamed exchange per API; each body must be the upstream's, byte for byte.
    async fn run_all_apis(&self) {
        for api in Api::ALL {
            self.upstream.push(MockResponse::sse(api.stream()));
            let resp = send(&self.bridge, post(api.path(), api.stream_request())).await;
            assert_eq!(resp.status, 200, "{api:?}");
            assert_eq!(resp.body, api.stream(), "{api:?}: relay unaffected");
        }
    }

    fn records(&self, kind: &str, outcome: &str) -> f64 {
        prom::try_value(
            &self.registry,
            "records_total",
            &prom::at(&format!("kind={kind},outcome={outcome}")),
        )
        .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn failing_calls_are_retried_and_final_failures_counted_without_touching_the_relay() {
    let s = setup(fast(3)).await;
    // Each token usage fails twice and lands on the third attempt; prompts never land.
    s.rec.inject(RecordKind::TokenUsage, Fault::Fail, 2);
    s.rec.inject(RecordKind::PromptUsage, Fault::Fail, 1000);
    s.run_all_apis().await;
    ended(&s.rec.mem, 3).await;
    assert_eq!(s.rec.mem.token_usages().len(), 3, "retried until written");
    assert_eq!(s.rec.calls(RecordKind::TokenUsage), 9);
    assert!(s.rec.mem.prompt_usages().is_empty());
    assert_eq!(s.rec.calls(RecordKind::PromptUsage), 9, "3 attempts each");
    assert_eq!(s.records("token_usage", "written"), 3.0);
    assert_eq!(s.records("prompt_usage", "failed"), 3.0);
    assert_eq!(s.records("interception_ended", "written"), 3.0);
    for e in s.rec.mem.interceptions_ended() {
        assert_eq!(e.outcome, Outcome::Completed);
    }
}

#[tokio::test]
async fn a_recorder_stalling_past_the_call_timeout_is_retried() {
    let s = setup(fast(2)).await;
    s.rec.inject(RecordKind::TokenUsage, Fault::Stall, 1);
    s.rec.inject(RecordKind::InterceptionEnded, Fault::Stall, 1);
    s.run_all_apis().await;
    ended(&s.rec.mem, 3).await;
    assert_eq!(s.rec.mem.token_usages().len(), 3);
    assert_eq!(
        s.rec.calls(RecordKind::TokenUsage),
        6,
        "each timed out once"
    );
    assert_eq!(s.records("token_usage", "written"), 3.0);
    assert_eq!(s.records("token_usage", "failed"), 0.0);

    // record_interception is awaited inline with no retry: a stall past the timeout is a
    // provider-shaped 503 and the upstream is never called.
    s.rec.inject(RecordKind::Interception, Fault::Stall, 1);
    for api in Api::ALL {
        let resp = send(&s.bridge, post(api.path(), api.stream_request())).await;
        assert_eq!(resp.status, 503, "{api:?}");
        api.assert_error_body(
            &resp.body,
            "aibridge: usage recording is unavailable; the request was not sent upstream",
        );
    }
    assert_eq!(s.upstream.request_count(), 3);
    assert_eq!(s.records("interception", "failed"), 3.0);
}

#[tokio::test]
async fn a_panicking_recorder_kills_neither_the_relay_nor_the_workers() {
    // Two workers and more panics than workers: a worker killed by a panic would leave
    // records unwritten and the interceptions never ended.
    let s = setup(fast(2).with_workers(2)).await;
    s.rec.inject(RecordKind::TokenUsage, Fault::Panic, 1);
    s.rec
        .inject(RecordKind::PromptUsage, Fault::Panic, usize::MAX);
    s.rec.inject(RecordKind::InterceptionEnded, Fault::Panic, 1);
    s.run_all_apis().await;
    ended(&s.rec.mem, 3).await;
    assert_eq!(
        s.rec.mem.token_usages().len(),
        3,
        "the retry after a panic lands"
    );
    assert!(s.rec.mem.prompt_usages().is_empty());
    assert_eq!(s.records("token_usage", "written"), 3.0);
    assert_eq!(s.records("prompt_usage", "failed"), 3.0);
    assert_eq!(s.records("interception_ended", "written"), 3.0);

    // A panic in the inline record_interception is a 503, not a dropped connection.
    s.rec.inject(RecordKind::Interception, Fault::Panic, 1);
    for api in Api::ALL {
        let resp = send(&s.bridge, post(api.path(), api.stream_request())).await;
        assert_eq!(resp.status, 503, "{api:?}");
        api.assert_error_body(
            &resp.body,
            "aibridge: usage recording is unavailable; the request was not sent upstream",
        );
    }
    assert_eq!(s.records("interception", "failed"), 3.0);

    // And the bridge still works, records and all.
    s.rec.inject(RecordKind::PromptUsage, Fault::Panic, 0);
    s.rec.inject(RecordKind::Interception, Fault::Panic, 0);
    s.run_all_apis().await;
    ended(&s.rec.mem, 6).await;
    assert_eq!(s.rec.mem.token_usages().len(), 6);
    assert_eq!(s.rec.mem.prompt_usages().len(), 3);
    let report = s.bridge.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.dropped_records, 0);
    assert_eq!(s.bridge.inflight_requests(), 0);
}
