//! Regression tests for the defects of issue 17 found in review and under hostile load: each
//! failed on the code before its fix. Real loopback HTTP to the mock upstream; every wait is
//! on an event (a request arriving, a connection closing, a record), bounded so a bug fails
//! instead of hanging.

mod common;
mod faultkit;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aibridge::bridge::{Builder, UpstreamTimeouts};
use aibridge::provider::{CircuitBreakerConfig, RetryConfig};
use aibridge::recorder::{
    Interception, InterceptionEnded, MemoryRecorder, ModelThought, Outcome, PromptUsage,
    RecordQueueConfig, Recorder, TokenUsage, ToolUsage,
};
use aibridge::{BoxError, RequestBridge};
use bytes::Bytes;
use common::{anthropic, bridge_with, ended, openai, post, send};
use faultkit::Api;
use http_body_util::BodyExt;
use support::{MockResponse, MockUpstream, fixture};
use tokio::sync::{Notify, oneshot};
use tower::ServiceExt;

const MSG: &str = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;
const MSG_STREAM: &str =
    r#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn ok() -> MockResponse {
    MockResponse::json(200, fixture("anthropic/text_blocking.upstream.json"))
}

fn no_retry() -> RetryConfig {
    RetryConfig::default().with_max_retries(0)
}

/// Both providers in front of `base`, without retries or breaker: one upstream call per
/// request.
fn plain(b: Builder, base: &str) -> Builder {
    b.provider(
        anthropic(base)
            .with_retry(no_retry())
            .without_circuit_breaker(),
    )
    .provider(
        openai(base)
            .with_retry(no_retry())
            .without_circuit_breaker(),
    )
}

/// The ends recorded so far, as (outcome, error).
fn ends(rec: &MemoryRecorder) -> Vec<(Outcome, String)> {
    rec.interceptions_ended()
        .into_iter()
        .map(|e| (e.outcome, e.error.unwrap_or_default()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Defect 1: a half-open probe whose client leaves gives its slot back

#[tokio::test]
async fn a_half_open_probe_whose_client_leaves_frees_its_slot() {
    let upstream = MockUpstream::start().await;
    let open = Duration::from_millis(50);
    let cfg = CircuitBreakerConfig::default()
        .with_failure_threshold(1)
        .with_open_timeout(open)
        .with_half_open_max_requests(3);
    let (bridge, rec) = bridge_with(|b| {
        b.provider(
            anthropic(&upstream.base_url())
                .with_retry(no_retry())
                .with_circuit_breaker(cfg),
        )
    });
    upstream.push(MockResponse::json(429, "{}").header("x-should-retry", "false"));
    assert_eq!(
        send(&bridge, post("/anthropic/v1/messages", MSG))
            .await
            .status,
        429
    );
    // Waiting for the open timeout is the behaviour under test.
    tokio::time::sleep(open).await;

    // Probe 1: a stream whose client goes away before the upstream answers (Esc in Claude
    // Code). Neither success nor failure, but its slot must come back.
    let (held, gate) = MockResponse::sse(fixture("anthropic/text_stream.upstream.sse")).held();
    upstream.push(held);
    let task = tokio::spawn(
        bridge
            .clone()
            .oneshot(post("/anthropic/v1/messages", MSG_STREAM)),
    );
    upstream.wait_for_requests(2).await;
    task.abort();
    tokio::time::timeout(Duration::from_secs(5), gate.closed())
        .await
        .expect("upstream call dropped");
    ended(&rec, 2).await;
    // Probes 2 and 3 succeed.
    for _ in 0..2 {
        upstream.push(ok());
        assert_eq!(
            send(&bridge, post("/anthropic/v1/messages", MSG))
                .await
                .status,
            200
        );
    }
    // Before the fix: admitted 3, successes 2, and every later request got 503 forever.
    for _ in 0..3 {
        upstream.push(ok());
        let resp = send(&bridge, post("/anthropic/v1/messages", MSG)).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
}

// ---------------------------------------------------------------------------------------------
// Defect 2: an upstream retry hint that no `Duration` can hold

#[tokio::test]
async fn an_unrepresentable_retry_after_ms_is_ignored_not_a_panic() {
    for hint in ["inf", "1e30", "NaN", "-5", "18446744073709551616000"] {
        let upstream = MockUpstream::start().await;
        let retry = RetryConfig::default()
            .with_max_retries(1)
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(5));
        let (bridge, rec) = bridge_with(|b| {
            b.provider(
                anthropic(&upstream.base_url())
                    .with_retry(retry)
                    .without_circuit_breaker(),
            )
        });
        upstream.push(MockResponse::json(429, "{}").header("retry-after-ms", hint));
        upstream.push(ok());
        let resp = send(&bridge, post("/anthropic/v1/messages", MSG)).await;
        assert_eq!(resp.status, 200, "{hint}: {}", resp.text());
        assert_eq!(
            upstream.request_count(),
            2,
            "{hint}: retried with the back-off"
        );
        ended(&rec, 1).await;
        assert_eq!(ends(&rec), [(Outcome::Completed, String::new())], "{hint}");
    }
}

// ---------------------------------------------------------------------------------------------
// Defect 3: a recorded interception always gets its end

/// A recorder whose `record_interception` commits in the background, like the SQLite
/// writer: once called, the row lands when the gate opens, whether or not the caller still
/// waits. Everything else goes to the `MemoryRecorder`.
#[derive(Debug, Clone)]
struct Committing {
    mem: MemoryRecorder,
    gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    entered: Arc<Notify>,
}

impl Committing {
    fn new() -> (Self, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel();
        let rec = Committing {
            mem: MemoryRecorder::new(),
            gate: Arc::new(Mutex::new(Some(rx))),
            entered: Arc::new(Notify::new()),
        };
        (rec, tx)
    }
}

#[aibridge::async_trait]
impl Recorder for Committing {
    async fn record_interception(&self, rec: &Interception) -> Result<(), BoxError> {
        let gate = self.gate.lock().unwrap().take();
        let (done_tx, done_rx) = oneshot::channel();
        let (mem, rec) = (self.mem.clone(), rec.clone());
        tokio::spawn(async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            let r = mem.record_interception(&rec).await;
            let _ = done_tx.send(r);
        });
        self.entered.notify_one();
        done_rx.await.map_err(|_| BoxError::from("writer gone"))?
    }
    async fn record_interception_ended(&self, rec: &InterceptionEnded) -> Result<(), BoxError> {
        self.mem.record_interception_ended(rec).await
    }
    async fn record_token_usage(&self, rec: &TokenUsage) -> Result<(), BoxError> {
        self.mem.record_token_usage(rec).await
    }
    async fn record_prompt_usage(&self, rec: &PromptUsage) -> Result<(), BoxError> {
        self.mem.record_prompt_usage(rec).await
    }
    async fn record_tool_usage(&self, rec: &ToolUsage) -> Result<(), BoxError> {
        self.mem.record_tool_usage(rec).await
    }
    async fn record_model_thought(&self, rec: &ModelThought) -> Result<(), BoxError> {
        self.mem.record_model_thought(rec).await
    }
}

fn committing_bridge(
    base: &str,
    call_timeout: Duration,
) -> (RequestBridge, Committing, oneshot::Sender<()>) {
    let (rec, gate) = Committing::new();
    let bridge = RequestBridge::builder()
        .provider(
            anthropic(base)
                .with_retry(no_retry())
                .without_circuit_breaker(),
        )
        .recorder(rec.clone())
        .record_queue(RecordQueueConfig::default().with_call_timeout(call_timeout))
        .build()
        .unwrap();
    (bridge, rec, gate)
}

#[tokio::test]
async fn a_client_that_leaves_while_the_interception_is_recorded_still_gets_an_end() {
    let upstream = MockUpstream::start().await;
    let (bridge, rec, gate) = committing_bridge(&upstream.base_url(), Duration::from_secs(30));
    let task = tokio::spawn(bridge.clone().oneshot(post("/anthropic/v1/messages", MSG)));
    rec.entered.notified().await;
    task.abort(); // the client (or a host timeout layer) drops the response future
    let _ = task.await;
    gate.send(()).unwrap(); // the database recovers: the row lands
    ended(&rec.mem, 1).await;
    assert_eq!(rec.mem.interceptions().len(), 1);
    assert_eq!(
        ends(&rec.mem),
        [(Outcome::Cancelled, "client disconnected".to_owned())]
    );
    assert_eq!(upstream.request_count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn an_interception_row_that_lands_after_its_timeout_is_ended_failed() {
    let upstream = MockUpstream::start().await;
    let (bridge, rec, gate) = committing_bridge(&upstream.base_url(), Duration::from_millis(200));
    let resp = send(&bridge, post("/anthropic/v1/messages", MSG)).await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(rec.mem.interceptions().is_empty(), "not landed yet");
    gate.send(()).unwrap(); // the stalled write commits after all
    ended(&rec.mem, 1).await;
    assert_eq!(rec.mem.interceptions().len(), 1);
    assert_eq!(
        ends(&rec.mem),
        [(
            Outcome::Failed,
            "recorder timed out recording the interception; request not sent upstream".to_owned()
        )]
    );
    assert_eq!(upstream.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Defect 4 and limit 11: a client that stops reading

/// A stream of many small Messages events that the mock keeps sending: enough to fill the
/// bridge's body channel and the socket buffers of a client that reads nothing.
fn endless_events() -> Bytes {
    let ev = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}\n\n";
    let start = fixture("anthropic/text_stream.upstream.sse");
    let text = std::str::from_utf8(&start).unwrap();
    let head = &text[..text.find("event: content_block_delta").unwrap()];
    Bytes::from(format!("{head}{}", ev.repeat(64)))
}

#[tokio::test]
async fn shutdown_is_not_held_by_a_client_that_reads_nothing_and_the_end_is_recorded() {
    let upstream = MockUpstream::start().await;
    let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
    upstream.push(mock);
    let (bridge, rec) = bridge_with(|b| plain(b, &upstream.base_url()));
    let fut = bridge
        .clone()
        .oneshot(post("/anthropic/v1/messages", MSG_STREAM));
    // Far more than the bridge's body channel holds: the client holds its body and reads
    // nothing, so the bridge stops reading the upstream with most of it unsent.
    for _ in 0..256 {
        ctl.send(endless_events()).await.unwrap();
    }
    let resp = fut.await.unwrap();
    assert_eq!(resp.status(), 200);
    // Six seconds: cancel at 4 s, then at most 1 s for the terminal event.
    // Before the fix the terminal event's send waited forever on the full channel: the task
    // never ended, the end record was never written nor counted.
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        bridge.shutdown(Duration::from_secs(6)),
    )
    .await
    .expect("shutdown returns by its deadline");
    assert_eq!(report.dropped_records, 0, "{report:?}");
    let e = ends(&rec);
    assert_eq!(e.len(), 1, "the end was recorded: {e:?}");
    assert_eq!(e[0].0, Outcome::Cancelled);
    assert!(e[0].1.starts_with("bridge shutting down"), "{e:?}");
    assert!(e[0].1.contains("terminal event not delivered"), "{e:?}");
    tokio::time::timeout(Duration::from_secs(5), ctl.closed())
        .await
        .expect("upstream call dropped");
    // The client's body ends with an error, not as if the stream were complete.
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "a cut stream must not look complete");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cancelled_after_the_write_timeout() {
    let upstream = MockUpstream::start().await;
    let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
    upstream.push(mock);
    let (bridge, rec) = bridge_with(|b| {
        plain(b, &upstream.base_url()).client_write_timeout(Duration::from_millis(300))
    });
    let fut = bridge
        .clone()
        .oneshot(post("/anthropic/v1/messages", MSG_STREAM));
    for _ in 0..256 {
        ctl.send(endless_events()).await.unwrap();
    }
    // The client holds its body and reads nothing.
    let resp = fut.await.unwrap();
    ended(&rec, 1).await;
    assert_eq!(
        ends(&rec),
        [(
            Outcome::Cancelled,
            "client stopped reading for more than 1s".to_owned()
        )]
    );
    tokio::time::timeout(Duration::from_secs(5), ctl.closed())
        .await
        .expect("upstream call dropped");
    // The body ends with an error: the cut is not mistaken for a complete stream.
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(bridge.inflight_requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Defect 7: after the terminal event, a reset or a stall ends the stream cleanly

#[tokio::test]
async fn a_reset_after_the_terminal_event_is_a_completed_stream() {
    for api in Api::ALL {
        let upstream = MockUpstream::start().await;
        let full = api.stream();
        upstream.push(MockResponse::sse(full.clone()).then_abort());
        let (bridge, rec) = bridge_with(|b| plain(b, &upstream.base_url()));
        let resp = send(&bridge, post(api.path(), api.stream_request())).await;
        assert_eq!(resp.status, 200, "{api:?}");
        assert_eq!(
            resp.body, full,
            "{api:?}: exactly the upstream's bytes, no error event"
        );
        ended(&rec, 1).await;
        assert_eq!(ends(&rec), [(Outcome::Completed, String::new())], "{api:?}");
        assert_eq!(rec.token_usages().len(), 1, "{api:?}");
    }
}

#[tokio::test]
async fn a_stall_after_the_terminal_event_ends_the_stream_without_the_idle_timeout() {
    // The idle timeout is 600 s: before the fix the interception stayed open that long.
    for api in Api::ALL {
        let upstream = MockUpstream::start().await;
        let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
        upstream.push(mock);
        let (bridge, rec) = bridge_with(|b| {
            plain(b, &upstream.base_url()).upstream_timeouts(UpstreamTimeouts::default())
        });
        let full = api.stream();
        let fut = bridge
            .clone()
            .oneshot(post(api.path(), api.stream_request()));
        ctl.send(full.clone()).await.unwrap();
        let resp = fut.await.unwrap();
        // The upstream sends nothing more and keeps the connection open.
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("{api:?}: the stream did not end"))
            .unwrap()
            .to_bytes();
        assert_eq!(body, full, "{api:?}");
        ended(&rec, 1).await;
        assert_eq!(ends(&rec), [(Outcome::Completed, String::new())], "{api:?}");
        tokio::time::timeout(Duration::from_secs(5), ctl.closed())
            .await
            .unwrap_or_else(|_| panic!("{api:?}: upstream not dropped"));
    }
}
