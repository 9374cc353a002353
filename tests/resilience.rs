//! Circuit breaker and upstream retries (resilience.md) over real loopback HTTP.
//!
//! The breaker tests follow the spec's four reference scenarios (threshold 2, open timeout
//! 50 ms, centralized key, upstream 429 with `x-should-retry: false`, retries off); waiting
//! for the open timeout is the behaviour under test. Everything else synchronises on the
//! mock upstream and the recorder.

mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aibridge::RequestBridge;
use aibridge::bridge::UpstreamTimeouts;
use aibridge::metrics::Metrics;
use aibridge::provider::{CircuitBreakerConfig, CredentialPolicy, RetryConfig};
use aibridge::recorder::{MemoryRecorder, Outcome};
use bytes::Bytes;
use common::prom::{at, value};
use common::*;
use http::Request;
use http_body_util::Full;
use prometheus::Registry;
use support::{HeadGate, MockResponse, MockUpstream, fixture};

const OPEN: Duration = Duration::from_millis(50);
const MSG: &str = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;
const MSG_STREAM: &str =
    r#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
const CHAT_RATE_LIMITED: &str = "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n";
const OPEN_ANTHROPIC: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"circuit breaker is open"}}"#;
const OPEN_OPENAI: &str = r#"{"error":{"message":"circuit breaker is open","type":"server_error","param":null,"code":"service_unavailable"}}"#;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ep {
    Messages,
    Chat,
}
use Ep::{Chat, Messages};

impl Ep {
    fn path(self) -> &'static str {
        ["/anthropic/v1/messages", "/openai/v1/chat/completions"][self as usize]
    }
    /// The breaker's labels for this endpoint and model.
    fn key(self, model: &str) -> String {
        let pe = [
            "anthropic,endpoint=/v1/messages",
            "openai,endpoint=/v1/chat/completions",
        ];
        format!("provider={},model={model}", pe[self as usize])
    }
    fn model(self) -> &'static str {
        ["claude-sonnet-4-5", "gpt-4.1"][self as usize]
    }
    fn request(self, model: &str) -> Request<Full<Bytes>> {
        post(self.path(), MSG.replace("claude-sonnet-4-5", model))
    }
    fn ok(self) -> MockResponse {
        let f = [
            "anthropic/text_blocking.upstream.json",
            "openai/chat-simple.response.json",
        ];
        MockResponse::json(200, fixture(f[self as usize]))
    }
    fn open_body(self) -> &'static str {
        [OPEN_ANTHROPIC, OPEN_OPENAI][self as usize]
    }
}

fn rate_limited() -> MockResponse {
    let body = r#"{"error":{"message":"rate limited"}}"#;
    MockResponse::json(429, body).header("x-should-retry", "false")
}

fn breaker(half_open: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .with_failure_threshold(2)
        .with_open_timeout(OPEN)
        .with_half_open_max_requests(half_open)
}

/// Threshold 2 and an open timeout of 1 s (still `Retry-After: 1`), for tests that check
/// rejections a few requests after the trip and never wait for recovery.
fn steady_breaker() -> CircuitBreakerConfig {
    breaker(1).with_open_timeout(Duration::from_secs(1))
}

fn fast_retries(n: u32) -> RetryConfig {
    RetryConfig::default()
        .with_max_retries(n)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(20))
}

/// A mock upstream and a bridge whose two providers use this breaker and retry policy.
struct Rig {
    upstream: MockUpstream,
    bridge: RequestBridge,
    rec: MemoryRecorder,
    reg: Registry,
}

impl Rig {
    async fn new(cfg: CircuitBreakerConfig, retry: RetryConfig) -> Rig {
        let upstream = MockUpstream::start().await;
        Rig::at(upstream, cfg, retry)
    }
    fn at(upstream: MockUpstream, cfg: CircuitBreakerConfig, retry: RetryConfig) -> Rig {
        let (reg, base) = (Registry::new(), upstream.base_url());
        let metrics = Metrics::new(&reg).unwrap();
        let (bridge, rec) = bridge_with(|b| {
            let a = anthropic(&base).with_retry(retry.clone());
            let o = openai(&base).with_retry(retry);
            b.provider(a.with_circuit_breaker(cfg.clone()))
                .provider(o.with_circuit_breaker(cfg))
                .metrics(metrics)
        });
        Rig {
            upstream,
            bridge,
            rec,
            reg,
        }
    }
    async fn send(&self, req: Request<Full<Bytes>>) -> Collected {
        send(&self.bridge, req).await
    }
    async fn status(&self, ep: Ep, model: &str) -> u16 {
        self.send(ep.request(model)).await.status.as_u16()
    }
    fn metric(&self, name: &str, ep: Ep, model: &str) -> f64 {
        value(&self.reg, name, &at(&ep.key(model)))
    }
    fn state(&self, ep: Ep, model: &str) -> f64 {
        self.metric("circuit_breaker_state", ep, model)
    }
    fn calls(&self) -> usize {
        self.upstream.request_count()
    }
    /// Two 429s trip the breaker of (ep, model).
    async fn trip(&self, ep: Ep, model: &str) {
        for _ in 0..2 {
            self.upstream.push(rate_limited());
            assert_eq!(self.status(ep, model).await, 429, "{ep:?}");
        }
    }
    async fn assert_rejected(&self, ep: Ep, model: &str) -> Collected {
        let resp = self.send(ep.request(model)).await;
        assert_open(&resp, ep);
        resp
    }
}

fn assert_open(resp: &Collected, ep: Ep) {
    assert_eq!(resp.status, 503, "{ep:?}: {}", resp.text());
    assert_eq!(
        resp.headers["retry-after"], "1",
        "50 ms rounded up, at least 1"
    );
    assert_eq!(resp.headers["content-type"], "application/json");
    assert!(resp.headers.contains_key("x-aibridge-interception-id"));
    assert_eq!(resp.text(), ep.open_body(), "{ep:?}");
}

#[tokio::test]
async fn breaker_trips_rejects_without_calling_upstream_and_recovers() {
    for ep in [Messages, Chat] {
        let r = Rig::new(breaker(1), fast_retries(0)).await;
        let m = ep.model();
        r.trip(ep, m).await;
        let resp = r.assert_rejected(ep, m).await;
        assert_eq!(r.calls(), 2, "{ep:?}: the upstream is not called");
        assert_eq!(r.metric("circuit_breaker_trips_total", ep, m), 1.0);
        assert_eq!(r.state(ep, m), 1.0);
        assert_eq!(r.metric("circuit_breaker_rejects_total", ep, m), 1.0);
        ended(&r.rec, 3).await;
        assert_eq!(
            r.rec.interceptions().len(),
            3,
            "the rejected request was recorded"
        );
        let id = resp.headers["x-aibridge-interception-id"].to_str().unwrap();
        let ends = r.rec.interceptions_ended();
        let end = ends.iter().find(|e| e.id.to_string() == id).unwrap();
        assert_eq!(end.outcome, Outcome::Failed);
        assert_eq!(end.error.as_deref(), Some("circuit breaker is open"));

        tokio::time::sleep(OPEN).await;
        r.upstream.push(ep.ok());
        assert_eq!(r.status(ep, m).await, 200, "{ep:?}");
        assert_eq!(r.calls(), 3);
        assert_eq!(r.state(ep, m), 0.0, "{ep:?}: closed again");
        assert_eq!(r.metric("circuit_breaker_trips_total", ep, m), 1.0);
        r.upstream.push(ep.ok());
        assert_eq!(r.status(ep, m).await, 200, "{ep:?}");
    }
}

#[tokio::test]
async fn half_open_failure_trips_again() {
    for ep in [Messages, Chat] {
        let r = Rig::new(breaker(1), fast_retries(0)).await;
        let m = ep.model();
        r.trip(ep, m).await;
        tokio::time::sleep(OPEN).await;
        r.upstream.push(rate_limited());
        assert_eq!(r.status(ep, m).await, 429, "{ep:?}: the probe");
        assert_eq!(r.calls(), 3);
        assert_eq!(r.metric("circuit_breaker_trips_total", ep, m), 2.0);
        assert_eq!(r.state(ep, m), 1.0);
        r.assert_rejected(ep, m).await;
        assert_eq!(r.calls(), 3);
    }
}

#[tokio::test]
async fn half_open_admits_exactly_the_quota_of_concurrent_requests() {
    for ep in [Messages, Chat] {
        let r = Rig::new(breaker(2), fast_retries(0)).await;
        let m = ep.model();
        r.trip(ep, m).await;
        r.assert_rejected(ep, m).await;
        tokio::time::sleep(OPEN).await;
        let mut gates = Vec::new();
        for _ in 0..2 {
            let (resp, gate) = ep.ok().held();
            r.upstream.push(resp);
            gates.push(gate);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..5 {
            let (bridge, tx) = (r.bridge.clone(), tx.clone());
            tokio::spawn(async move { tx.send(send(&bridge, ep.request(m)).await).unwrap() });
        }
        // The two admitted requests are held upstream: the first three answers are rejects.
        for _ in 0..3 {
            assert_open(&rx.recv().await.unwrap(), ep);
        }
        r.upstream.wait_for_requests(4).await;
        assert_eq!(r.state(ep, m), 0.5, "{ep:?}: half-open");
        gates.into_iter().for_each(HeadGate::release);
        for _ in 0..2 {
            assert_eq!(rx.recv().await.unwrap().status, 200, "{ep:?}");
        }
        assert_eq!(r.calls(), 4, "{ep:?}: exactly two reached the upstream");
        assert_eq!(r.upstream.unanswered(), 0);
        assert_eq!(
            r.metric("circuit_breaker_rejects_total", ep, m),
            4.0,
            "1 + 3"
        );
        assert_eq!(r.state(ep, m), 0.0, "two successes close it");
        assert_eq!(r.metric("circuit_breaker_trips_total", ep, m), 1.0);
    }
}

#[tokio::test]
async fn breakers_are_isolated_per_model_and_per_endpoint() {
    let r = Rig::new(steady_breaker(), fast_retries(0)).await;
    r.trip(Messages, "claude-a").await;
    r.trip(Chat, "gpt-4.1").await;
    r.assert_rejected(Messages, "claude-a").await;
    r.assert_rejected(Chat, "gpt-4.1").await;
    assert_eq!(r.calls(), 4);

    r.upstream.push(Messages.ok());
    assert_eq!(r.status(Messages, "claude-b").await, 200, "other model");
    r.upstream.push(Chat.ok());
    assert_eq!(r.status(Chat, "gpt-4.1-mini").await, 200, "other model");
    r.upstream.push(MockResponse::json(
        200,
        fixture("openai/responses-simple.response.json"),
    ));
    let resp = r.send(post(
        "/openai/v1/responses",
        r#"{"model":"gpt-4.1","input":"hi"}"#,
    ));
    assert_eq!(resp.await.status, 200, "same model, other endpoint");
    assert_eq!(r.calls(), 7);
    assert_eq!(r.state(Messages, "claude-a"), 1.0);
    assert_eq!(r.state(Messages, "claude-b"), 0.0);
    assert_eq!(r.state(Chat, "gpt-4.1"), 1.0);
    assert_eq!(r.state(Chat, "gpt-4.1-mini"), 0.0);
    let responses = at("provider=openai,endpoint=/v1/responses,model=gpt-4.1");
    assert_eq!(value(&r.reg, "circuit_breaker_state", &responses), 0.0);
}

#[tokio::test]
async fn an_overload_event_before_content_is_a_breaker_failure_and_after_content_is_not() {
    let r = Rig::new(steady_breaker(), fast_retries(0)).await;
    for (ep, event, body) in [
        (Messages, OVERLOADED, MSG_STREAM),
        (Chat, CHAT_RATE_LIMITED, CHAT_STREAM),
    ] {
        for _ in 0..2 {
            r.upstream.push(MockResponse::sse(event));
            let resp = r.send(post(ep.path(), body)).await;
            assert_eq!(resp.status, 200, "{ep:?}");
            assert_eq!(
                resp.text(),
                event,
                "{ep:?}: the in-band error is relayed verbatim"
            );
        }
        assert_open(&r.send(post(ep.path(), body)).await, ep);
        assert_eq!(r.metric("circuit_breaker_trips_total", ep, ep.model()), 1.0);
    }
    assert_eq!(r.calls(), 4);
    ended(&r.rec, 6).await;
    let error = Some("upstream stream error: overloaded_error: Overloaded");
    let ends = r.rec.interceptions_ended();
    assert_eq!(
        ends.iter().filter(|e| e.error.as_deref() == error).count(),
        2
    );

    // After content the same error is a mid-stream failure: a breaker success.
    let full = fixture("anthropic/text_stream.upstream.sse");
    let text = std::str::from_utf8(&full).unwrap();
    let late = format!(
        "{}{OVERLOADED}",
        &text[..text.find("event: content_block_delta").unwrap()]
    );
    for _ in 0..3 {
        r.upstream.push(MockResponse::sse(late.clone()));
        let resp = r.send(post(
            Messages.path(),
            MSG_STREAM.replace("claude-sonnet-4-5", "late"),
        ));
        assert_eq!(resp.await.text(), late);
    }
    assert_eq!(r.state(Messages, "late"), 0.0);
    assert_eq!(r.calls(), 7);
}

#[tokio::test]
async fn byok_rate_limits_can_be_ignored_by_the_breaker() {
    let upstream = MockUpstream::start().await;
    let cfg = steady_breaker().with_ignore_byok_rate_limits(true);
    let (bridge, rec) = bridge_with(|b| {
        let p =
            anthropic(&upstream.base_url()).with_credential_policy(CredentialPolicy::ClientFirst);
        b.provider(p.with_retry(fast_retries(0)).with_circuit_breaker(cfg))
    });
    let r = Rig {
        upstream,
        bridge,
        rec,
        reg: Registry::new(),
    };
    let byok = || {
        let mut req = Messages.request("m");
        req.headers_mut()
            .insert("x-api-key", "sk-ant-client-own-key-42".parse().unwrap());
        req
    };
    for _ in 0..3 {
        r.upstream.push(rate_limited());
        assert_eq!(r.send(byok()).await.status, 429);
    }
    assert_eq!(r.calls(), 3, "BYOK 429s do not count");
    assert_eq!(
        r.upstream.requests()[2].header("x-api-key"),
        Some("sk-ant-client-own-key-42")
    );
    r.trip(Messages, "m").await; // with the centralized key they do
    assert_open(&r.send(byok()).await, Messages);
    assert_eq!(r.calls(), 5);
}

#[tokio::test]
async fn retries_count_as_one_breaker_outcome_and_one_interception() {
    let r = Rig::new(breaker(1), fast_retries(2)).await;
    for _ in 0..3 {
        r.upstream.push(MockResponse::json(429, "{}"));
    }
    assert_eq!(r.status(Messages, "m").await, 429);
    assert_eq!(r.calls(), 3);
    assert_eq!(r.state(Messages, "m"), 0.0, "one failure, threshold 2");
    r.upstream.push(Messages.ok());
    assert_eq!(r.status(Messages, "m").await, 200);
    ended(&r.rec, 2).await;
    assert_eq!(
        r.rec.interceptions().len(),
        2,
        "one interception per request"
    );
    assert_eq!(r.rec.interceptions_ended().len(), 2);
}

// ---- retries ----

#[tokio::test]
async fn connection_failures_are_retried_then_answered_502() {
    // A listener that accepts and drops every connection: closed before the head.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepts = Arc::new(AtomicUsize::new(0));
    let counter = accepts.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let (bridge, rec) = bridge_with(|b| b.provider(anthropic(&base).with_retry(fast_retries(2))));
    let resp = send(&bridge, Messages.request("m")).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    let msg = "aibridge: upstream unreachable (connection reset)";
    assert_eq!(resp.json()["error"]["message"], msg);
    assert_eq!(
        accepts.load(Ordering::SeqCst),
        3,
        "first attempt and two retries"
    );
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions().len(), 1);

    // Connection refused: retried with back-off (2 retries ≥ 0.75 · (100 + 100) ms).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let slow = fast_retries(2)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_millis(100));
    let base = format!("http://127.0.0.1:{port}");
    let (bridge, _) = bridge_with(|b| b.provider(openai(&base).with_retry(slow)));
    let start = Instant::now();
    let resp = send(&bridge, Chat.request("m")).await;
    assert_eq!(resp.status, 502);
    let msg = "aibridge: upstream unreachable (connection refused)";
    assert_eq!(resp.json()["error"]["message"], msg);
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn retryable_statuses_are_retried_up_to_max_retries_with_identical_bytes() {
    for status in [408, 409, 429, 500, 503, 529] {
        let r = Rig::new(CircuitBreakerConfig::default(), fast_retries(2)).await;
        for i in 1..=3 {
            r.upstream
                .push(MockResponse::json(status, format!(r#"{{"attempt":{i}}}"#)));
        }
        r.upstream.push(Messages.ok()); // must stay unused
        let resp = r.send(Messages.request("claude-sonnet-4-5")).await;
        assert_eq!(resp.status, status);
        assert_eq!(
            resp.text(),
            r#"{"attempt":3}"#,
            "{status}: the last attempt is relayed"
        );
        assert_eq!(r.calls(), 3, "{status}");
        assert_eq!(r.upstream.pending_responses(), 1);
        assert!(
            r.upstream
                .requests()
                .iter()
                .all(|q| q.body == MSG.as_bytes()),
            "{status}"
        );
        ended(&r.rec, 1).await;
        assert_eq!(r.rec.interceptions().len(), 1, "{status}: one interception");
        assert_eq!(r.rec.interceptions_ended().len(), 1);
        assert_eq!(r.rec.interceptions_ended()[0].outcome, Outcome::Failed);
    }

    // An edited Chat stream body: every attempt sends the same bytes; the answer is the 200.
    let r = Rig::new(CircuitBreakerConfig::default(), fast_retries(2)).await;
    r.upstream.push(MockResponse::json(529, "{}"));
    r.upstream.push(MockResponse::json(503, "{}"));
    r.upstream
        .push(MockResponse::sse(fixture("openai/chat-simple.sse")));
    assert_eq!(r.send(post(Chat.path(), CHAT_STREAM)).await.status, 200);
    let reqs = r.upstream.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter()
            .all(|q| q.body == reqs[0].body && q.body_complete)
    );
    assert_eq!(reqs[0].json()["stream_options"]["include_usage"], true);
    ended(&r.rec, 1).await;
    assert_eq!(r.rec.interceptions_ended()[0].outcome, Outcome::Completed);
    assert_eq!(r.rec.token_usages().len(), 1);
    assert_eq!(r.rec.prompt_usages().len(), 1);
}

#[tokio::test]
async fn x_should_retry_overrides_the_status_and_other_4xx_are_final() {
    let cases: [(MockResponse, usize, u16); 3] = [
        (
            MockResponse::json(503, "{}").header("x-should-retry", "false"),
            1,
            503,
        ),
        (
            MockResponse::json(400, "{}").header("x-should-retry", "true"),
            2,
            200,
        ),
        (MockResponse::json(400, r#"{"type":"error"}"#), 1, 400),
    ];
    for (first, calls, status) in cases {
        let r = Rig::new(CircuitBreakerConfig::default(), fast_retries(2)).await;
        r.upstream.push(first);
        r.upstream.push(Messages.ok());
        assert_eq!(r.status(Messages, "m").await, status);
        assert_eq!(r.calls(), calls, "{status}");
        assert_eq!(r.upstream.pending_responses(), 2 - calls);
    }
}

/// Retries once after a 429 with these headers (1 ms back-off); returns the time from
/// before the first call to the arrival of the second.
async fn second_arrival_after(headers: &[(&str, &str)]) -> Duration {
    let upstream = MockUpstream::start().await;
    let first = headers
        .iter()
        .fold(MockResponse::json(429, "{}"), |r, (k, v)| r.header(k, v));
    upstream.push(first);
    upstream.push(Messages.ok());
    let retry = fast_retries(1).with_initial_backoff(Duration::from_millis(1));
    let r = Rig::at(upstream, CircuitBreakerConfig::default(), retry);
    let start = Instant::now();
    let bridge = r.bridge.clone();
    let task = tokio::spawn(async move { send(&bridge, Messages.request("m")).await });
    r.upstream.wait_for_requests(2).await;
    let elapsed = start.elapsed();
    assert_eq!(task.await.unwrap().status, 200);
    elapsed
}

#[tokio::test]
async fn retry_after_hints_are_honoured_below_sixty_seconds() {
    // The second request cannot arrive before the hint, measured from before the first.
    let d = second_arrival_after(&[("retry-after-ms", "300"), ("retry-after", "30")]).await;
    assert!(
        d >= Duration::from_millis(300) && d < Duration::from_secs(10),
        "ms wins: {d:?}"
    );
    let d = second_arrival_after(&[("retry-after", "1")]).await;
    assert!(
        d >= Duration::from_secs(1) && d < Duration::from_secs(10),
        "{d:?}"
    );
    // At or above the 60 s cap the hint is ignored in favour of the back-off.
    for hint in [("retry-after", "120"), ("retry-after-ms", "60000")] {
        let d = second_arrival_after(&[hint]).await;
        assert!(d < Duration::from_secs(5), "{hint:?}: {d:?}");
    }
}

#[tokio::test]
async fn a_stream_that_starts_with_an_overload_error_is_retried_invisibly() {
    let full = fixture("anthropic/text_stream.upstream.sse");
    let r = Rig::new(CircuitBreakerConfig::default(), fast_retries(2)).await;
    r.upstream.push(MockResponse::sse(OVERLOADED));
    r.upstream.push(MockResponse::sse(full.clone()));
    let resp = r.send(post(Messages.path(), MSG_STREAM)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, full, "the client sees only the second stream");
    assert_eq!(r.calls(), 2);
    ended(&r.rec, 1).await;
    assert_eq!(r.rec.interceptions().len(), 1);
    assert_eq!(r.rec.interceptions_ended()[0].outcome, Outcome::Completed);
    assert_eq!(r.rec.token_usages().len(), 1);

    let chat = fixture("openai/chat-simple.sse");
    r.upstream.push(MockResponse::sse(CHAT_RATE_LIMITED));
    r.upstream.push(MockResponse::sse(chat.clone()));
    let with_usage = CHAT_STREAM.replace(
        "\"stream\":true",
        r#""stream":true,"stream_options":{"include_usage":true}"#,
    );
    let resp = r.send(post(Chat.path(), with_usage)).await;
    assert_eq!(resp.body, chat);
    assert_eq!(r.calls(), 4);
}

#[tokio::test]
async fn nothing_is_retried_once_bytes_were_relayed() {
    let full = fixture("anthropic/text_stream.upstream.sse");
    let text = std::str::from_utf8(&full).unwrap();
    let cut = text.find("event: content_block_delta").unwrap();
    let r = Rig::new(CircuitBreakerConfig::default(), fast_retries(2)).await;
    r.upstream
        .push(MockResponse::sse(full.slice(..cut)).then_abort());
    r.upstream.push(MockResponse::sse(full.clone())); // must stay unused
    let resp = r.send(post(Messages.path(), MSG_STREAM)).await;
    assert_eq!(resp.status, 200);
    let terminal = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"aibridge: upstream stream failed: connection closed before the message ended\"}}\n\n";
    assert_eq!(resp.text(), format!("{}{terminal}", &text[..cut]));
    assert_eq!(r.calls(), 1);
    assert_eq!(r.upstream.pending_responses(), 1);

    // An overload error that is not the first event is relayed, not retried.
    let r = Rig::new(CircuitBreakerConfig::default(), fast_retries(2)).await;
    let late = format!("{}{OVERLOADED}", &text[..text.find("\n\n").unwrap() + 2]);
    r.upstream.push(MockResponse::sse(late.clone()));
    r.upstream.push(MockResponse::sse(full.clone())); // must stay unused
    let resp = r.send(post(Messages.path(), MSG_STREAM)).await;
    assert_eq!(resp.text(), late);
    assert_eq!(r.calls(), 1);
    ended(&r.rec, 1).await;
    assert_eq!(r.rec.interceptions_ended()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn a_response_head_timeout_is_a_504_and_not_retried() {
    let upstream = MockUpstream::start().await;
    let (held, gate) = Messages.ok().held();
    upstream.push(held);
    upstream.push(Messages.ok()); // must stay unused
    let timeouts = UpstreamTimeouts::default().with_response(Duration::from_millis(200));
    let (bridge, rec) = bridge_with(|b| {
        let p = anthropic(&upstream.base_url()).with_retry(fast_retries(2));
        b.provider(p).upstream_timeouts(timeouts)
    });
    let resp = send(&bridge, Messages.request("m")).await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.json()["error"]["type"], "api_error");
    let closed = tokio::time::timeout(Duration::from_secs(5), gate.closed()).await;
    closed.expect("upstream request dropped");
    assert_eq!(upstream.request_count(), 1);
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Failed);
}

/// The response timeout covers a blocking body: an upstream that sends the head and part
/// of the body, then stalls, gets a 504 once the timeout from the send has passed.
#[tokio::test]
async fn a_blocking_body_that_stalls_after_the_head_is_a_504() {
    let upstream = MockUpstream::start().await;
    let (resp, ctl) = MockResponse::streamed(200, "application/json");
    upstream.push(resp);
    let timeouts = UpstreamTimeouts::default().with_response(Duration::from_millis(300));
    let (bridge, rec) = bridge_with(|b| {
        let p = anthropic(&upstream.base_url()).with_retry(fast_retries(0));
        b.provider(p).upstream_timeouts(timeouts)
    });
    // Part of the body; the controller stays alive, so the body stays open.
    ctl.send(r#"{"id":"msg_1","type":"message","#)
        .await
        .unwrap();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        send(&bridge, Messages.request("m")),
    )
    .await;
    let resp = resp.expect("the body timeout must end the request");
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_eq!(resp.json()["error"]["type"], "api_error");
    ended(&rec, 1).await;
    let end = &rec.interceptions_ended()[0];
    assert_eq!(end.outcome, Outcome::Failed);
    drop(ctl);
}
