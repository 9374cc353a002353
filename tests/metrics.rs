//! Prometheus metrics (metrics.md) observed from outside: a real registry, a bridge in
//! front of the loopback mock upstream, values read back with `registry.gather()`.
//!
//! The tests run on the current-thread runtime: an interception's metrics are updated by
//! its task right after it queues its ended record, without an await in between, so once
//! `MemoryRecorder::wait_for_ended` returns they are in place.

mod common;
mod support;

use std::time::Duration;

use aibridge::bridge::Builder;
use aibridge::metrics::Metrics;
use aibridge::provider::{CircuitBreakerConfig, RetryConfig};
use aibridge::recorder::{MemoryRecorder, RecordKind, RecordQueueConfig};
use aibridge::{Actor, RequestBridge};
use bytes::Bytes;
use common::prom::{at, buckets, histogram, kind, series, total, try_value, value};
use common::*;
use http::Request;
use http_body_util::Full;
use prometheus::Registry;
use prometheus::proto::MetricType;
use support::{MockResponse, MockUpstream, fixture};

const CHAT: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hello"}]}"#;
const MSG_STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"read /tmp/hello.txt"}]}"#;
const MSG: &str = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_PATH: &str = "/openai/v1/chat/completions";
/// `interceptions_inflight` labels of a gpt-4.1 Chat request.
const CHAT_INFLIGHT: &str = "provider=openai,model=gpt-4.1,route=/v1/chat/completions";

/// `bridge()` (Anthropic + OpenAI, default retries and breakers) with fresh metrics.
fn metered(
    base: &str,
    f: impl FnOnce(Builder) -> Builder,
) -> (RequestBridge, MemoryRecorder, Registry) {
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, rec) = bridge(base, |b| f(b.metrics(metrics)));
    (bridge, rec, reg)
}

fn with(mut req: Request<Full<Bytes>>, name: &'static str, value: &str) -> Request<Full<Bytes>> {
    req.headers_mut().insert(name, value.parse().unwrap());
    req
}

/// The value of the series with exactly the labels of `spec` (`"k=v,k=v"`).
fn val(reg: &Registry, name: &str, spec: &str) -> f64 {
    value(reg, name, &at(spec))
}

/// `interceptions_total` with `method="POST"`: `pm` is `provider=…,model=…`.
fn ended_count(
    reg: &Registry,
    pm: &str,
    status: &str,
    route: &str,
    who: &str,
    client: &str,
) -> f64 {
    let spec = format!(
        "{pm},status={status},route={route},method=POST,initiator_id={who},client={client}"
    );
    val(reg, "interceptions_total", &spec)
}

/// Asserts `tokens_total` holds exactly these types for the labels `who` (no other series).
fn assert_tokens(reg: &Registry, who: &str, want: &[(&str, f64)]) {
    for (t, n) in want {
        assert_eq!(
            val(reg, "tokens_total", &format!("{who},type={t}")),
            *n,
            "type={t}"
        );
    }
    let all = series(reg, "tokens_total");
    assert_eq!(all.len(), want.len(), "{all:?}");
}

fn records(reg: &Registry, kind: &str, outcome: &str) -> Option<f64> {
    try_value(
        reg,
        "records_total",
        &[("kind", kind), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn blocking_chat_request_observes_every_interception_metric() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("openai/chat-simple.response.json"),
    ));
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b);
    let mut req = with(
        post(CHAT_PATH, CHAT),
        "user-agent",
        "claude-cli/2.1.332 (external, cli)",
    );
    req.extensions_mut().insert(Actor::new("actor"));
    assert_eq!(send(&bridge, req).await.status, 200);
    ended(&rec, 1).await;

    let pm = "provider=openai,model=gpt-4.1";
    let route = "/v1/chat/completions";
    assert_eq!(
        ended_count(&reg, pm, "completed", route, "actor", "Claude Code"),
        1.0
    );
    assert_eq!(series(&reg, "interceptions_total").len(), 1);
    assert_eq!(val(&reg, "interceptions_inflight", CHAT_INFLIGHT), 0.0);
    let (n, duration) = histogram(&reg, "interceptions_duration_seconds", &at(pm));
    assert_eq!(n, 1);
    assert_eq!(series(&reg, "interceptions_duration_seconds").len(), 1);
    let overhead_labels = at("provider=openai,route=/v1/chat/completions");
    let (n, overhead) = histogram(&reg, "interception_overhead_seconds", &overhead_labels);
    assert_eq!(n, 1);
    assert!(
        overhead < duration,
        "overhead {overhead} < duration {duration}"
    );
    let who = "provider=openai,model=gpt-4.1,initiator_id=actor,client=Claude Code";
    let zero_extras = [
        "prompt_audio",
        "completion_reasoning",
        "completion_audio",
        "completion_accepted_prediction",
        "completion_rejected_prediction",
    ];
    let mut want = vec![("input", 19.0), ("output", 200.0)];
    want.extend([
        ("cache_read_input_tokens", 0.0),
        ("cache_write_input_tokens", 0.0),
    ]);
    want.extend(zero_extras.map(|t| (t, 0.0)));
    assert_tokens(&reg, who, &want);
    assert_eq!(val(&reg, "prompts_total", who), 1.0);
    assert!(series(&reg, "non_injected_tool_selections_total").is_empty());
    for k in [
        "interception",
        "interception_ended",
        "token_usage",
        "prompt_usage",
    ] {
        assert_eq!(records(&reg, k, "written"), Some(1.0), "{k}");
    }
    assert_eq!(
        series(&reg, "records_total").len(),
        4,
        "{:?}",
        series(&reg, "records_total")
    );
    assert_eq!(val(&reg, "record_queue_depth", ""), 0.0);
    let key = "provider=openai,endpoint=/v1/chat/completions,model=gpt-4.1";
    assert_eq!(
        val(&reg, "circuit_breaker_state", key),
        0.0,
        "created on first use"
    );
    assert!(series(&reg, "circuit_breaker_trips_total").is_empty());
    assert!(series(&reg, "passthrough_total").is_empty());
}

#[tokio::test]
async fn mixed_run_exposes_every_family_with_the_spec_type_labels_and_buckets() {
    let upstream = MockUpstream::start().await;
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let base = upstream.base_url();
    let no_retry = RetryConfig::default().with_max_retries(0);
    let trip_fast = CircuitBreakerConfig::default().with_failure_threshold(1);
    let (bridge, rec) = bridge_with(|b| {
        let openai = openai(&base)
            .with_retry(no_retry)
            .with_circuit_breaker(trip_fast);
        b.provider(anthropic(&base))
            .provider(openai)
            .metrics(metrics)
    });
    // A Chat tool selection (Kilo Code by UA), a passthrough, a trip and a reject.
    upstream.push(MockResponse::json(
        200,
        fixture("openai/chat-tool-read_file.response.json"),
    ));
    let resp = send(
        &bridge,
        with(post(CHAT_PATH, CHAT), "user-agent", "Kilo-Code/4.1"),
    )
    .await;
    assert_eq!(resp.status, 200);
    upstream.push(MockResponse::json(200, r#"{"data":[]}"#));
    assert_eq!(send(&bridge, get("/openai/v1/models")).await.status, 200);
    let mini = CHAT.replace("gpt-4.1", "gpt-4.1-mini");
    upstream.push(MockResponse::json(
        429,
        r#"{"error":{"message":"slow down"}}"#,
    ));
    assert_eq!(
        send(&bridge, post(CHAT_PATH, mini.clone())).await.status,
        429
    );
    assert_eq!(send(&bridge, post(CHAT_PATH, mini)).await.status, 503);
    ended(&rec, 3).await;

    let route = "/v1/chat/completions";
    let pm = "provider=openai,model=gpt-4.1";
    assert_eq!(
        ended_count(&reg, pm, "completed", route, "alice", "Kilo Code"),
        1.0
    );
    let pm_mini = "provider=openai,model=gpt-4.1-mini";
    let failed = ended_count(&reg, pm_mini, "failed", route, "alice", "Unknown");
    assert_eq!(failed, 2.0, "the 429 and the reject");
    let tool = "provider=openai,model=gpt-4.1,name=read_file";
    assert_eq!(val(&reg, "non_injected_tool_selections_total", tool), 1.0);
    let key = "provider=openai,endpoint=/v1/chat/completions,model=gpt-4.1-mini";
    assert_eq!(val(&reg, "circuit_breaker_state", key), 1.0);
    assert_eq!(val(&reg, "circuit_breaker_trips_total", key), 1.0);
    assert_eq!(val(&reg, "circuit_breaker_rejects_total", key), 1.0);
    assert_eq!(
        val(
            &reg,
            "passthrough_total",
            "provider=openai,route=/v1/models,method=GET"
        ),
        1.0
    );

    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let breaker = "endpoint,model,provider";
    let spec = [
        (
            "interceptions_total",
            COUNTER,
            "client,initiator_id,method,model,provider,route,status",
        ),
        ("interceptions_inflight", GAUGE, "model,provider,route"),
        (
            "interceptions_duration_seconds",
            HISTOGRAM,
            "model,provider",
        ),
        ("passthrough_total", COUNTER, "method,provider,route"),
        (
            "prompts_total",
            COUNTER,
            "client,initiator_id,model,provider",
        ),
        (
            "tokens_total",
            COUNTER,
            "client,initiator_id,model,provider,type",
        ),
        (
            "non_injected_tool_selections_total",
            COUNTER,
            "model,name,provider",
        ),
        ("circuit_breaker_state", GAUGE, breaker),
        ("circuit_breaker_trips_total", COUNTER, breaker),
        ("circuit_breaker_rejects_total", COUNTER, breaker),
        ("interception_overhead_seconds", HISTOGRAM, "provider,route"),
        ("records_total", COUNTER, "kind,outcome"),
        ("record_queue_depth", GAUGE, ""),
        ("record_interception_seconds", HISTOGRAM, ""),
    ];
    for (name, t, labels) in spec {
        assert_eq!(kind(&reg, name), Some(t), "{name}");
        let all = series(&reg, name);
        assert!(!all.is_empty(), "{name}");
        for s in all {
            let names: Vec<&str> = s.keys().map(String::as_str).collect();
            assert_eq!(names.join(","), labels, "{name}");
        }
    }
    let duration_buckets = [0.5, 2.0, 5.0, 15.0, 30.0, 60.0, 120.0];
    assert_eq!(
        buckets(&reg, "interceptions_duration_seconds"),
        duration_buckets
    );
    let fine = [
        0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        0.25,
    ];
    assert_eq!(buckets(&reg, "interception_overhead_seconds"), fine);
    assert_eq!(buckets(&reg, "record_interception_seconds"), fine);
}

#[tokio::test]
async fn anthropic_streaming_tool_counts_tokens_without_extras_and_the_tool_selection() {
    // The spec's scenario: usage 2/61/13993/22 and no `cache_creation` object, so no extras.
    let full = String::from_utf8(fixture("anthropic/tool_stream.upstream.sse").to_vec()).unwrap();
    let cut = r#","cache_creation":{"ephemeral_5m_input_tokens":22,"ephemeral_1h_input_tokens":0}"#;
    assert!(full.contains(cut));
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::sse(full.replace(cut, "")));
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b);
    let req = with(
        post("/anthropic/v1/messages", MSG_STREAM),
        "x-cursor-client-version",
        "1.7",
    );
    assert_eq!(send(&bridge, req).await.status, 200);
    ended(&rec, 1).await;

    let pm = "provider=anthropic,model=claude-sonnet-4-5";
    assert_eq!(
        ended_count(&reg, pm, "completed", "/v1/messages", "alice", "Cursor"),
        1.0
    );
    let who = format!("{pm},initiator_id=alice,client=Cursor");
    let want = [
        ("input", 2.0),
        ("output", 61.0),
        ("cache_read_input_tokens", 13993.0),
    ];
    assert_tokens(
        &reg,
        &who,
        &[&want[..], &[("cache_write_input_tokens", 22.0)]].concat(),
    );
    assert_eq!(val(&reg, "prompts_total", &who), 1.0);
    let tool = format!("{pm},name=Read");
    assert_eq!(val(&reg, "non_injected_tool_selections_total", &tool), 1.0);
    assert_eq!(series(&reg, "non_injected_tool_selections_total").len(), 1);
    assert_eq!(records(&reg, "tool_usage", "written"), Some(1.0));
    let overhead_labels = at("provider=anthropic,route=/v1/messages");
    assert_eq!(
        histogram(&reg, "interception_overhead_seconds", &overhead_labels).0,
        1
    );
}

#[tokio::test]
async fn responses_cached_input_counts_the_split_and_output_reasoning() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("openai/responses-cached.response.json"),
    ));
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b);
    let body = r#"{"model":"gpt-5","input":"summarize the file"}"#;
    let req = with(post("/openai/v1/responses", body), "originator", "roo-code");
    assert_eq!(send(&bridge, req).await.status, 200);
    ended(&rec, 1).await;
    let pm = "provider=openai,model=gpt-5";
    assert_eq!(
        ended_count(&reg, pm, "completed", "/v1/responses", "alice", "Roo Code"),
        1.0
    );
    let mut want = vec![
        ("input", 129.0),
        ("output", 44.0),
        ("cache_read_input_tokens", 11904.0),
    ];
    want.extend([("cache_write_input_tokens", 0.0), ("output_reasoning", 0.0)]);
    assert_tokens(
        &reg,
        &format!("{pm},initiator_id=alice,client=Roo Code"),
        &want,
    );
    let inflight = format!("{pm},route=/v1/responses");
    assert_eq!(val(&reg, "interceptions_inflight", &inflight), 0.0);
}

#[tokio::test]
async fn passthrough_counts_the_route_pattern_not_the_raw_path() {
    let upstream = MockUpstream::start().await;
    for _ in 0..4 {
        upstream.push(MockResponse::json(200, r#"{"data":[]}"#));
    }
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b);
    let paths = [
        "/openai/v1/models",
        "/openai/v1/models/gpt-4.1",
        "/openai/v1/models/o3",
    ];
    for path in paths.into_iter().chain(["/anthropic/v1/models"]) {
        assert_eq!(send(&bridge, get(path)).await.status, 200, "{path}");
    }
    let pt = |spec: &str| val(&reg, "passthrough_total", &format!("{spec},method=GET"));
    assert_eq!(pt("provider=openai,route=/v1/models"), 1.0);
    assert_eq!(pt("provider=openai,route=/v1/models/"), 2.0);
    assert_eq!(pt("provider=anthropic,route=/v1/models"), 1.0);
    assert_eq!(series(&reg, "passthrough_total").len(), 3);
    assert!(
        series(&reg, "interceptions_total").is_empty(),
        "not an interception"
    );
    assert!(rec.interceptions().is_empty());

    // A transport failure is counted as well.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (bridge, _, reg) = metered(&format!("http://127.0.0.1:{port}"), |b| b);
    assert_eq!(send(&bridge, get("/openai/v1/models")).await.status, 502);
    let labels = "provider=openai,route=/v1/models,method=GET";
    assert_eq!(val(&reg, "passthrough_total", labels), 1.0);
}

#[tokio::test]
async fn inflight_is_one_while_the_upstream_is_held_and_zero_after() {
    let upstream = MockUpstream::start().await;
    let ok = MockResponse::json(200, fixture("openai/chat-simple.response.json"));
    let (held, gate) = ok.held();
    upstream.push(held);
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b);
    let task = tokio::spawn({
        let bridge = bridge.clone();
        async move { send(&bridge, post(CHAT_PATH, CHAT)).await }
    });
    upstream.wait_for_requests(1).await;
    assert_eq!(val(&reg, "interceptions_inflight", CHAT_INFLIGHT), 1.0);
    assert!(
        series(&reg, "interceptions_total").is_empty(),
        "not ended yet"
    );
    assert!(series(&reg, "interceptions_duration_seconds").is_empty());
    gate.release();
    assert_eq!(task.await.unwrap().status, 200);
    ended(&rec, 1).await;
    assert_eq!(val(&reg, "interceptions_inflight", CHAT_INFLIGHT), 0.0);
    assert_eq!(total(&reg, "interceptions_total"), 1.0);
}

#[tokio::test]
async fn failed_and_cancelled_interceptions_are_counted_by_status() {
    use tower::ServiceExt;
    let upstream = MockUpstream::start().await;
    let err = r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#;
    upstream.push(MockResponse::json(400, err).header("x-should-retry", "false"));
    let ok = MockResponse::json(200, fixture("anthropic/text_blocking.upstream.json"));
    let (held, gate) = ok.held();
    upstream.push(held);
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b);
    assert_eq!(
        send(&bridge, post("/anthropic/v1/messages", MSG))
            .await
            .status,
        400
    );
    let handle = tokio::spawn(bridge.clone().oneshot(post("/anthropic/v1/messages", MSG)));
    upstream.wait_for_requests(2).await;
    handle.abort(); // the client goes away while the upstream is held
    let closed = tokio::time::timeout(Duration::from_secs(5), gate.closed()).await;
    closed.expect("upstream request dropped");
    ended(&rec, 2).await;

    let pm = "provider=anthropic,model=claude-sonnet-4-5";
    let route = "/v1/messages";
    assert_eq!(
        ended_count(&reg, pm, "failed", route, "alice", "Unknown"),
        1.0
    );
    assert_eq!(
        ended_count(&reg, pm, "cancelled", route, "alice", "Unknown"),
        1.0
    );
    assert_eq!(
        val(
            &reg,
            "interceptions_inflight",
            &format!("{pm},route={route}")
        ),
        0.0
    );
    assert_eq!(
        histogram(&reg, "interceptions_duration_seconds", &at(pm)).0,
        2
    );
    let key = "provider=anthropic,endpoint=/v1/messages,model=claude-sonnet-4-5";
    assert_eq!(
        val(&reg, "circuit_breaker_state", key),
        0.0,
        "a 400 is a breaker success"
    );
    assert!(series(&reg, "circuit_breaker_trips_total").is_empty());
}

/// A MemoryRecorder whose `record_interception` takes 30 ms (a slow database).
#[derive(Clone, Default)]
struct SlowStart(MemoryRecorder);

#[aibridge::async_trait]
impl aibridge::Recorder for SlowStart {
    async fn record_interception(
        &self,
        rec: &aibridge::recorder::Interception,
    ) -> Result<(), aibridge::BoxError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.0.record_interception(rec).await
    }
    async fn record_interception_ended(
        &self,
        rec: &aibridge::recorder::InterceptionEnded,
    ) -> Result<(), aibridge::BoxError> {
        self.0.record_interception_ended(rec).await
    }
    async fn record_token_usage(
        &self,
        rec: &aibridge::recorder::TokenUsage,
    ) -> Result<(), aibridge::BoxError> {
        self.0.record_token_usage(rec).await
    }
    async fn record_prompt_usage(
        &self,
        rec: &aibridge::recorder::PromptUsage,
    ) -> Result<(), aibridge::BoxError> {
        self.0.record_prompt_usage(rec).await
    }
    async fn record_tool_usage(
        &self,
        rec: &aibridge::recorder::ToolUsage,
    ) -> Result<(), aibridge::BoxError> {
        self.0.record_tool_usage(rec).await
    }
    async fn record_model_thought(
        &self,
        rec: &aibridge::recorder::ModelThought,
    ) -> Result<(), aibridge::BoxError> {
        self.0.record_model_thought(rec).await
    }
}

#[tokio::test]
async fn overhead_includes_the_awaited_record_interception() {
    // The client waits for `record_interception` before anything goes upstream, so that
    // wait is time the bridge added.
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let slow = SlowStart::default();
    let (bridge, _, reg) = metered(&upstream.base_url(), |b| b.recorder(slow.clone()));
    assert_eq!(
        send(&bridge, post("/anthropic/v1/messages", MSG))
            .await
            .status,
        200
    );
    slow.0.wait_for_ended(1).await;
    let labels = at("provider=anthropic,route=/v1/messages");
    let (n, overhead) = histogram(&reg, "interception_overhead_seconds", &labels);
    assert_eq!(n, 1);
    assert!(
        overhead >= 0.03,
        "overhead {overhead} includes the 30 ms write"
    );
    // The awaited record's own latency, apart.
    let (n, took) = histogram(&reg, "record_interception_seconds", &at(""));
    assert_eq!(n, 1);
    assert!(
        took >= 0.03,
        "record_interception {took} took the 30 ms write"
    );
}

#[tokio::test]
async fn overhead_excludes_the_retry_back_off() {
    let upstream = MockUpstream::start().await;
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    upstream.push(MockResponse::json(529, overloaded).header("retry-after-ms", "200"));
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b);
    assert_eq!(
        send(&bridge, post("/anthropic/v1/messages", MSG))
            .await
            .status,
        200
    );
    ended(&rec, 1).await;
    let pm = at("provider=anthropic,model=claude-sonnet-4-5");
    let (_, duration) = histogram(&reg, "interceptions_duration_seconds", &pm);
    let labels = at("provider=anthropic,route=/v1/messages");
    let (n, overhead) = histogram(&reg, "interception_overhead_seconds", &labels);
    assert_eq!(n, 1, "one observation per interception, not per attempt");
    assert!(
        duration >= 0.2,
        "duration {duration} includes the 200 ms hint"
    );
    let excluded = overhead <= duration - 0.2 + 1e-6;
    assert!(
        excluded,
        "overhead {overhead} excludes the back-off (duration {duration})"
    );
    assert!(overhead < 0.1, "overhead {overhead}");
}

#[tokio::test]
async fn records_are_counted_by_final_outcome_and_token_metrics_do_not_wait_for_them() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("openai/chat-simple.response.json"),
    ));
    let queue = RecordQueueConfig::default()
        .with_max_attempts(2)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(2));
    let (bridge, rec, reg) = metered(&upstream.base_url(), |b| b.record_queue(queue));
    rec.fail_next(RecordKind::TokenUsage, 100); // fails finally
    rec.fail_next(RecordKind::PromptUsage, 1); // written on the second attempt
    assert_eq!(send(&bridge, post(CHAT_PATH, CHAT)).await.status, 200);
    ended(&rec, 1).await;
    assert_eq!(records(&reg, "token_usage", "failed"), Some(1.0));
    assert_eq!(records(&reg, "token_usage", "written"), None);
    assert_eq!(records(&reg, "prompt_usage", "written"), Some(1.0));
    assert_eq!(records(&reg, "prompt_usage", "failed"), None);
    assert_eq!(records(&reg, "interception_ended", "written"), Some(1.0));
    assert!(rec.token_usages().is_empty());
    let input = "provider=openai,model=gpt-4.1,type=input,initiator_id=alice,client=Unknown";
    assert_eq!(
        val(&reg, "tokens_total", input),
        19.0,
        "counted although the write failed"
    );
    assert_eq!(val(&reg, "record_queue_depth", ""), 0.0);

    // record_interception failing: 503, counted as failed, never an interception metric.
    rec.fail_next(RecordKind::Interception, 1);
    assert_eq!(send(&bridge, post(CHAT_PATH, CHAT)).await.status, 503);
    assert_eq!(records(&reg, "interception", "failed"), Some(1.0));
    assert_eq!(records(&reg, "interception", "written"), Some(1.0));
    assert_eq!(total(&reg, "interceptions_total"), 1.0);
    assert_eq!(val(&reg, "interceptions_inflight", CHAT_INFLIGHT), 0.0);
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn initiator_label_can_be_switched_off_entirely() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::json(
        200,
        fixture("openai/chat-simple.response.json"),
    ));
    let reg = Registry::new();
    let metrics = Metrics::builder()
        .initiator_id_label(false)
        .register(&reg)
        .unwrap();
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.metrics(metrics));
    assert_eq!(send(&bridge, post(CHAT_PATH, CHAT)).await.status, 200);
    ended(&rec, 1).await;
    for name in ["interceptions_total", "prompts_total", "tokens_total"] {
        let s = series(&reg, name);
        assert!(!s.is_empty(), "{name}");
        assert!(
            s.iter().all(|l| !l.contains_key("initiator_id")),
            "{name}: {s:?}"
        );
    }
    let pm = "provider=openai,model=gpt-4.1";
    let l = format!("{pm},status=completed,route=/v1/chat/completions,method=POST,client=Unknown");
    assert_eq!(val(&reg, "interceptions_total", &l), 1.0);
    assert_eq!(
        val(&reg, "prompts_total", &format!("{pm},client=Unknown")),
        1.0
    );
    let output = format!("{pm},type=output,client=Unknown");
    assert_eq!(val(&reg, "tokens_total", &output), 200.0);
}

#[test]
fn registering_twice_in_one_registry_fails() {
    let reg = Registry::new();
    Metrics::new(&reg).unwrap();
    assert!(Metrics::new(&reg).is_err());
    assert!(
        Metrics::builder()
            .initiator_id_label(false)
            .register(&reg)
            .is_err()
    );
    assert!(
        Metrics::new(&Registry::new()).is_ok(),
        "another registry is fine"
    );
}
