//! Anthropic Messages through the bridge over real loopback HTTP to a mock upstream.

mod common;
mod support;

use std::time::Duration;

use aibridge::recorder::{Outcome, RecordKind};
use bytes::Bytes;
use common::*;
use support::{MockResponse, MockUpstream, fixture, fixture_json};

const TEXT_REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":"say hello"}]}"#;
const STREAM_REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hello"}]}"#;

fn stream_cases() -> Vec<String> {
    let dir = support::fixture_path("anthropic");
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".upstream.sse").map(str::to_owned))
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "fixtures missing: {cases:?}");
    cases
}

fn blocking_cases() -> Vec<String> {
    let dir = support::fixture_path("anthropic");
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".upstream.json").map(str::to_owned))
        .filter(|c| support::fixture_path(&format!("anthropic/{c}.expect.json")).exists())
        .collect();
    cases.sort();
    cases
}

/// Checks the records of the single interception in `rec` against an expect.json.
fn check_records(rec: &aibridge::recorder::MemoryRecorder, expect: &serde_json::Value, case: &str) {
    let tokens = rec.token_usages();
    let want_tokens = expect["token_usages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        tokens.len(),
        want_tokens.len(),
        "{case}: token rows {tokens:?}"
    );
    for (got, want) in tokens.iter().zip(&want_tokens) {
        assert_eq!(
            got.input_tokens,
            want["input"].as_u64().unwrap(),
            "{case}: input"
        );
        assert_eq!(
            got.output_tokens,
            want["output"].as_u64().unwrap(),
            "{case}: output"
        );
        assert_eq!(
            got.cache_read_input_tokens,
            want["cache_read"].as_u64().unwrap_or(0),
            "{case}: cache_read"
        );
        assert_eq!(
            got.cache_write_input_tokens,
            want["cache_write"].as_u64().unwrap_or(0),
            "{case}: cache_write"
        );
        if let Some(id) = want["provider_response_id"].as_str() {
            assert_eq!(
                got.provider_response_id.as_deref(),
                Some(id),
                "{case}: response id"
            );
        }
        let extra: std::collections::BTreeMap<String, u64> = want["extra"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(got.extra, extra, "{case}: extras");
    }
    let tools = rec.tool_usages();
    let want_tools = expect["tool_usages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(tools.len(), want_tools.len(), "{case}: tool rows {tools:?}");
    for (got, want) in tools.iter().zip(&want_tools) {
        assert_eq!(got.tool, want["tool"].as_str().unwrap(), "{case}");
        assert_eq!(
            got.tool_call_id,
            want["tool_call_id"].as_str().unwrap(),
            "{case}"
        );
        let input: serde_json::Value = serde_json::from_str(&got.input).unwrap();
        assert_eq!(input, want["input"], "{case}: tool input");
        assert_eq!(
            got.provider_executed,
            want["provider_executed"].as_bool().unwrap_or(false),
            "{case}"
        );
        assert!(!got.injected);
    }
    let thoughts: Vec<String> = rec
        .model_thoughts()
        .into_iter()
        .map(|t| t.content)
        .collect();
    let want_thoughts: Vec<String> = expect["thoughts"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    assert_eq!(thoughts, want_thoughts, "{case}: thoughts");
    let ended = rec.interceptions_ended();
    assert_eq!(ended.len(), 1, "{case}");
    assert_eq!(
        ended[0].outcome.as_str(),
        expect["outcome"].as_str().unwrap(),
        "{case}: outcome {:?}",
        ended[0]
    );
    assert_eq!(
        ended[0].error.as_deref(),
        expect["error"].as_str(),
        "{case}: error"
    );
}

#[tokio::test]
async fn every_stream_fixture_is_relayed_byte_for_byte_and_recorded_under_any_chunking() {
    for case in stream_cases() {
        let upstream_bytes = fixture(&format!("anthropic/{case}.upstream.sse"));
        let expect = fixture_json(&format!("anthropic/{case}.expect.json"));
        let completed = expect["outcome"] == "completed"
            || expect["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("upstream stream error"));
        for chunks in [
            vec![],
            vec![1; upstream_bytes.len()],
            vec![7; upstream_bytes.len() / 7 + 1],
            vec![4096],
        ] {
            let upstream = MockUpstream::start().await;
            upstream.push(
                MockResponse::sse(upstream_bytes.clone())
                    .chunked(chunks.clone())
                    .header("request-id", "req_1"),
            );
            let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
            let resp = send(
                &bridge,
                post("/anthropic/v1/messages?beta=true", STREAM_REQ),
            )
            .await;
            assert_eq!(resp.status, 200, "{case}");
            assert_eq!(resp.headers["content-type"], "text/event-stream", "{case}");
            assert_eq!(resp.headers["request-id"], "req_1");
            assert!(resp.headers.contains_key("x-aibridge-interception-id"));
            if completed {
                assert_eq!(
                    resp.body,
                    upstream_bytes,
                    "{case}: relay must be byte-faithful (chunks {:?})",
                    chunks.first()
                );
            } else {
                // Every complete upstream event, then exactly one terminal error event.
                let text = std::str::from_utf8(&upstream_bytes).unwrap();
                let cut = text.rfind("\n\n").map_or(0, |i| i + 2);
                let error = expect["error"].as_str().unwrap();
                let terminal = format!(
                    "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"{error}\"}}}}\n\n"
                );
                assert_eq!(resp.text(), format!("{}{terminal}", &text[..cut]), "{case}");
            }
            ended(&rec, 1).await;
            check_records(&rec, &expect, &case);
            let req = &upstream.requests()[0];
            assert_eq!(req.path_and_query, "/v1/messages?beta=true");
            assert_eq!(req.body, STREAM_REQ.as_bytes());
        }
    }
}

#[tokio::test]
async fn every_blocking_fixture_is_relayed_verbatim_and_recorded() {
    let cases = blocking_cases();
    assert!(!cases.is_empty());
    for case in cases {
        let body = fixture(&format!("anthropic/{case}.upstream.json"));
        let expect = fixture_json(&format!("anthropic/{case}.expect.json"));
        let status = expect["status"].as_u64().unwrap_or(200) as u16;
        let upstream = MockUpstream::start().await;
        upstream.push(MockResponse::json(status, body.clone()).header("x-should-retry", "false"));
        let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
        let resp = send(&bridge, post("/anthropic/v1/messages", TEXT_REQ)).await;
        assert_eq!(resp.status, status, "{case}");
        assert_eq!(resp.body, body, "{case}");
        ended(&rec, 1).await;
        check_records(&rec, &expect, &case);
    }
}

#[tokio::test]
async fn blocking_request_reaches_upstream_with_the_d4_header_rules_and_is_recorded() {
    let upstream = MockUpstream::start().await;
    let body = fixture("anthropic/text_blocking.upstream.json");
    upstream.push(
        MockResponse::json(200, body.clone())
            .header("set-cookie", "a=b")
            .header("anthropic-ratelimit-requests-remaining", "9"),
    );
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let mut req = post("/anthropic/v1/messages?beta=true", TEXT_REQ);
    let h = req.headers_mut();
    h.insert(
        "authorization",
        "Bearer client-secret-token".parse().unwrap(),
    );
    h.insert(
        "anthropic-beta",
        "interleaved-thinking-2025-05-14,context-management-2025-06-27"
            .parse()
            .unwrap(),
    );
    h.insert("x-ai-bridge-actor-id", "mallory".parse().unwrap());
    h.insert(
        "user-agent",
        "claude-cli/2.1.332 (external, sdk-cli)".parse().unwrap(),
    );
    h.insert("x-claude-code-session-id", "sess-1".parse().unwrap());
    h.insert("accept-encoding", "gzip, br".parse().unwrap());
    let resp = send(&bridge, req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, body);
    assert!(!resp.headers.contains_key("set-cookie"));
    assert_eq!(resp.headers["anthropic-ratelimit-requests-remaining"], "9");
    let id = resp.headers["x-aibridge-interception-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let up = &upstream.requests()[0];
    assert_eq!(up.path_and_query, "/v1/messages?beta=true");
    assert_eq!(
        up.body,
        TEXT_REQ.as_bytes(),
        "request bytes forwarded untouched"
    );
    assert_eq!(up.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(
        up.header("authorization"),
        None,
        "client credential stripped under Centralized"
    );
    assert_eq!(
        up.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14,context-management-2025-06-27")
    );
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(up.header("x-ai-bridge-actor-id"), None);
    assert_eq!(up.header("accept-encoding"), Some("identity"));

    ended(&rec, 1).await;
    let i = &rec.interceptions()[0];
    assert_eq!(i.id.to_string(), id);
    assert_eq!(i.initiator_id, "alice");
    assert_eq!(i.metadata["team"], "infra");
    assert_eq!(i.provider.as_str(), "anthropic");
    assert_eq!(i.provider_name, "anthropic");
    assert_eq!(i.api.as_str(), "messages");
    assert_eq!(i.model, "claude-sonnet-4-5");
    assert!(!i.streaming);
    assert_eq!(i.client, "Claude Code");
    assert_eq!(i.client_session_id.as_deref(), Some("sess-1"));
    assert_eq!(i.credential_kind.as_str(), "centralized");
    assert_eq!(i.credential_hint.as_deref(), Some("sk-a...6789"));
    let prompts = rec.prompt_usages();
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].prompt, "say hello");
    assert!(prompts[0].provider_response_id.is_some());
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Completed);
}

#[tokio::test]
async fn upstream_http_error_is_relayed_verbatim_and_recorded_as_failed() {
    let upstream = MockUpstream::start().await;
    let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 205429 tokens > 200000 maximum"},"request_id":"req_011"}"#;
    upstream.push(MockResponse::json(400, body).header("x-should-retry", "false"));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let resp = send(&bridge, post("/anthropic/v1/messages", STREAM_REQ)).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.body, body.as_bytes());
    assert!(resp.headers.contains_key("x-aibridge-interception-id"));
    ended(&rec, 1).await;
    let e = &rec.interceptions_ended()[0];
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(
        e.error.as_deref(),
        Some(
            "upstream returned 400: invalid_request_error: prompt is too long: 205429 tokens > 200000 maximum"
        )
    );
    assert!(rec.token_usages().is_empty());
    assert_eq!(
        rec.prompt_usages().len(),
        1,
        "S14: the prompt is recorded when a call was attempted"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_anthropic_error_and_a_failed_interception() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (bridge, rec) = bridge(&format!("http://127.0.0.1:{port}"), |b| b);
    let resp = send(&bridge, post("/anthropic/v1/messages", TEXT_REQ)).await;
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.json(),
        serde_json::json!({"type":"error","error":{"type":"api_error","message":"aibridge: upstream unreachable (connection refused)"}})
    );
    assert!(resp.headers.contains_key("x-aibridge-interception-id"));
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn upstream_drop_mid_stream_ends_with_one_terminal_error_event() {
    let full = fixture("anthropic/text_stream.upstream.sse");
    let cut = full.len() / 2;
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::sse(full.slice(..cut)).then_abort());
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let resp = send(&bridge, post("/anthropic/v1/messages", STREAM_REQ)).await;
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert_eq!(text.matches("event: error").count(), 1, "{text}");
    assert!(text.ends_with(
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"aibridge: upstream stream failed: connection closed before the message ended\"}}\n\n"
    ));
    ended(&rec, 1).await;
    let e = &rec.interceptions_ended()[0];
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(
        e.error.as_deref(),
        Some("aibridge: upstream stream failed: connection closed before the message ended")
    );
    assert_eq!(rec.token_usages().len(), 1, "usage seen so far is recorded");
}

#[tokio::test]
async fn clean_eof_before_message_stop_is_not_a_silent_truncation() {
    let full = fixture("anthropic/text_stream.upstream.sse");
    let cut = std::str::from_utf8(&full)
        .unwrap()
        .find("event: message_delta")
        .unwrap();
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::sse(full.slice(..cut)));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let resp = send(&bridge, post("/anthropic/v1/messages", STREAM_REQ)).await;
    assert!(
        resp.body.starts_with(&full[..cut]),
        "everything complete is relayed first"
    );
    assert!(
        resp.text()
            .ends_with("connection closed before the message ended\"}}\n\n")
    );
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn idle_upstream_stream_ends_with_the_idle_terminal_event() {
    let upstream = MockUpstream::start().await;
    let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
    upstream.push(resp);
    let (bridge, rec) = bridge(&upstream.base_url(), |b| {
        b.upstream_timeouts(
            aibridge::bridge::UpstreamTimeouts::default().with_stream_idle(Duration::from_secs(1)),
        )
    });
    let start = fixture("anthropic/text_stream.upstream.sse");
    let first_event_end = std::str::from_utf8(&start).unwrap().find("\n\n").unwrap() + 2;
    let task = tokio::spawn({
        let bridge = bridge.clone();
        async move { send(&bridge, post("/anthropic/v1/messages", STREAM_REQ)).await }
    });
    ctl.send(start.slice(..first_event_end)).await.unwrap();
    let resp = task.await.unwrap();
    assert!(resp.body.starts_with(&start[..first_event_end]));
    assert!(
        resp.text()
            .ends_with("aibridge: upstream stream failed: idle for more than 1s\"}}\n\n"),
        "{}",
        resp.text()
    );
    tokio::time::timeout(Duration::from_secs(1), ctl.closed())
        .await
        .expect("upstream request dropped");
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_upstream_and_still_records() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let upstream = MockUpstream::start().await;
    let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
    upstream.push(mock);
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let full = fixture("anthropic/text_stream.upstream.sse");
    let text = std::str::from_utf8(&full).unwrap();
    let first_two = text.match_indices("\n\n").nth(1).unwrap().0 + 2;
    let fut = bridge
        .clone()
        .oneshot(post("/anthropic/v1/messages", STREAM_REQ));
    ctl.send(full.slice(..first_two)).await.unwrap();
    let resp = fut.await.unwrap();
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(full.starts_with(&frame));
    drop(body); // the client goes away
    tokio::time::timeout(Duration::from_secs(1), ctl.closed())
        .await
        .expect("upstream cancelled within a second");
    ended(&rec, 1).await;
    let e = &rec.interceptions_ended()[0];
    assert_eq!(e.outcome, Outcome::Cancelled);
    assert_eq!(e.error.as_deref(), Some("client disconnected"));
    assert_eq!(
        rec.token_usages().len(),
        1,
        "usage from message_start is recorded"
    );
    assert_eq!(rec.prompt_usages().len(), 1);
}

#[tokio::test]
async fn client_disconnect_before_the_head_cancels_upstream() {
    use tower::ServiceExt;
    let upstream = MockUpstream::start().await;
    let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
    upstream.push(mock);
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let fut = bridge
        .clone()
        .oneshot(post("/anthropic/v1/messages", STREAM_REQ));
    let handle = tokio::spawn(fut);
    upstream.wait_for_requests(1).await;
    handle.abort(); // drops the service future before any byte arrived
    tokio::time::timeout(Duration::from_secs(1), ctl.closed())
        .await
        .expect("upstream cancelled");
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Cancelled);
}

#[tokio::test]
async fn recorder_failure_answers_503_and_never_calls_upstream() {
    let upstream = MockUpstream::start().await;
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    rec.fail_next(RecordKind::Interception, 1);
    let resp = send(&bridge, post("/anthropic/v1/messages", TEXT_REQ)).await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"]["type"], "api_error");
    assert_eq!(
        resp.json()["error"]["message"],
        "aibridge: usage recording is unavailable; the request was not sent upstream"
    );
    assert_eq!(upstream.request_count(), 0);
    assert!(rec.interceptions().is_empty());
}

#[tokio::test]
async fn bad_input_gets_anthropic_shaped_errors_and_no_records() {
    let upstream = MockUpstream::start().await;
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.max_request_body(1024));
    let cases: Vec<(http::Request<http_body_util::Full<Bytes>>, u16, &str, &str)> = vec![
        (
            post("/anthropic/v1/messages", ""),
            400,
            "invalid_request_error",
            "aibridge: request body is empty",
        ),
        (
            post("/anthropic/v1/messages", "[1]"),
            400,
            "invalid_request_error",
            "aibridge: request body must be a JSON object",
        ),
        (
            post("/anthropic/v1/messages", r#"{"stream":true}"#),
            400,
            "invalid_request_error",
            "aibridge: \"model\" must be a non-empty string",
        ),
        (
            post("/anthropic/v1/messages", "x".repeat(2000)),
            413,
            "request_too_large",
            "aibridge: request body exceeds the limit of 1024 bytes",
        ),
        (
            {
                let mut r = post("/anthropic/v1/messages", TEXT_REQ);
                r.headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
                r
            },
            415,
            "invalid_request_error",
            "aibridge: request bodies with Content-Encoding gzip are not supported",
        ),
        (
            {
                let mut r = post("/anthropic/v1/messages", TEXT_REQ);
                *r.method_mut() = http::Method::GET;
                r
            },
            405,
            "invalid_request_error",
            "aibridge: method GET is not allowed on /anthropic/v1/messages; use POST",
        ),
        (
            {
                let mut r = post("/anthropic/v1/messages", TEXT_REQ);
                r.extensions_mut().clear();
                r
            },
            401,
            "authentication_error",
            "aibridge: request has no authenticated actor",
        ),
        (
            post("/anthropic/v1/messages/batches", TEXT_REQ),
            404,
            "not_found_error",
            "aibridge: route not supported: POST /anthropic/v1/messages/batches",
        ),
    ];
    for (req, status, kind, message) in cases {
        let resp = send(&bridge, req).await;
        assert_eq!(resp.status, status, "{message}");
        assert_eq!(resp.headers["content-type"], "application/json");
        let v = resp.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind, "{message}");
        assert_eq!(v["error"]["message"], message);
    }
    let resp = send(&bridge, post("/anthropic/v1/messages", "{\"model\":")).await;
    assert_eq!(resp.status, 400);
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("aibridge: request body is not valid JSON: ")
    );
    let mut get = post("/anthropic/v1/messages", TEXT_REQ);
    *get.method_mut() = http::Method::GET;
    assert_eq!(send(&bridge, get).await.headers["allow"], "POST");
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    let resp = send(&bridge, post("/anthropic/v1/messages", TEXT_REQ)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        upstream.request_count(),
        1,
        "only the valid request went upstream"
    );
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions().len(), 1);
}

#[tokio::test]
async fn unknown_prefix_gets_plain_404_and_head_gets_no_body() {
    let upstream = MockUpstream::start().await;
    let (bridge, _) = bridge(&upstream.base_url(), |b| b);
    let resp = send(&bridge, post("/nope/v1/messages", TEXT_REQ)).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text(), "route not supported: POST /nope/v1/messages\n");
    let mut head = post("/api/hello", "");
    *head.method_mut() = http::Method::HEAD;
    let resp = send(&bridge, head).await;
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty());
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn passthrough_streams_both_ways_forwards_queries_and_records_nothing() {
    let upstream = MockUpstream::start().await;
    upstream.push(
        MockResponse::json(200, r#"{"input_tokens":12}"#)
            .header("x-custom", "kept")
            .chunked(vec![3, 3]),
    );
    upstream.push(MockResponse::json(200, r#"{"data":[]}"#));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let body = r#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#;
    let mut req = post("/anthropic/v1/messages/count_tokens?beta=true", body);
    req.headers_mut()
        .insert("accept-encoding", "gzip".parse().unwrap());
    let resp = send(&bridge, req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, r#"{"input_tokens":12}"#.as_bytes());
    assert_eq!(
        resp.headers["x-custom"], "kept",
        "passthrough keeps upstream headers"
    );
    let mut get = post("/anthropic/v1/models?limit=5", "");
    *get.method_mut() = http::Method::GET;
    get.extensions_mut().clear();
    let resp = send(&bridge, get).await;
    assert_eq!(resp.status, 200);
    let reqs = upstream.requests();
    assert_eq!(
        reqs[0].path_and_query,
        "/v1/messages/count_tokens?beta=true"
    );
    assert_eq!(reqs[0].body, body.as_bytes(), "{:?}", reqs[0].headers);
    assert_eq!(reqs[0].header("accept-encoding"), Some("gzip"));
    assert_eq!(reqs[0].header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(reqs[1].method, http::Method::GET);
    assert_eq!(reqs[1].path_and_query, "/v1/models?limit=5");
    assert!(rec.interceptions().is_empty());
}

#[tokio::test]
async fn passthrough_to_an_unreachable_upstream_is_a_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (bridge, _) = bridge(&format!("http://127.0.0.1:{port}"), |b| b);
    let mut get = post("/anthropic/v1/models", "");
    *get.method_mut() = http::Method::GET;
    let resp = send(&bridge, get).await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error"]["type"], "api_error");
}

#[tokio::test]
async fn shutdown_rejects_new_requests_and_ends_open_streams_with_a_terminal_event() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let upstream = MockUpstream::start().await;
    let (mock, ctl) = MockResponse::streamed(200, "text/event-stream");
    upstream.push(mock);
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let full = fixture("anthropic/text_stream.upstream.sse");
    let first = std::str::from_utf8(&full).unwrap().find("\n\n").unwrap() + 2;
    let fut = bridge
        .clone()
        .oneshot(post("/anthropic/v1/messages", STREAM_REQ));
    ctl.send(full.slice(..first)).await.unwrap();
    let resp = fut.await.unwrap();
    let reader = tokio::spawn(async move { resp.into_body().collect().await.unwrap().to_bytes() });
    let report = bridge.shutdown(Duration::from_millis(300)).await;
    assert_eq!(report.cancelled_requests, 1);
    assert_eq!(report.dropped_records, 0);
    let body = reader.await.unwrap();
    assert!(String::from_utf8_lossy(&body).ends_with("aibridge: gateway is shutting down\"}}\n\n"));
    let e = &rec.interceptions_ended()[0];
    assert_eq!(e.outcome, Outcome::Cancelled);
    assert_eq!(e.error.as_deref(), Some("bridge shutting down"));
    let resp = send(&bridge, post("/anthropic/v1/messages", TEXT_REQ)).await;
    assert_eq!(resp.status, 503);
    assert_eq!(
        resp.json()["error"]["message"],
        "aibridge: gateway is shutting down"
    );
}
