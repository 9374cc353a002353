//! OpenAI Chat Completions, Responses and Copilot through the bridge over loopback HTTP:
//! byte-faithful relay of every fixture stream, records, provider-shaped errors.

mod common;
mod support;

use aibridge::provider::{Copilot, RetryConfig};
use aibridge::recorder::{MemoryRecorder, Outcome, ThoughtSource};
use common::*;
use support::{MockResponse, MockUpstream, fixture};

const CHAT_STREAM: &str = r#"{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"say hello"}]}"#;
const CHAT_STREAM_NO_USAGE: &str =
    r#"{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"say hello"}]}"#;
const CHAT_BLOCKING: &str =
    r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"say hello"}]}"#;
const RESPONSES_STREAM: &str =
    r#"{"model":"gpt-5-codex","stream":true,"input":"say hello","store":false}"#;
const RESPONSES_BLOCKING: &str = r#"{"model":"gpt-5-codex","input":[{"role":"user","content":[{"type":"input_text","text":"say hello"}]}]}"#;

/// (input, output, cache_read) of every token row.
fn tokens(rec: &MemoryRecorder) -> Vec<(u64, u64, u64)> {
    rec.token_usages()
        .iter()
        .map(|t| (t.input_tokens, t.output_tokens, t.cache_read_input_tokens))
        .collect()
}

async fn relay(
    path: &str,
    request: &'static str,
    upstream_body: MockResponse,
) -> (Collected, MemoryRecorder, MockUpstream) {
    let upstream = MockUpstream::start().await;
    upstream.push(upstream_body.header("x-should-retry", "false"));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let resp = send(&bridge, post(path, request)).await;
    ended(&rec, 1).await;
    (resp, rec, upstream)
}

#[tokio::test]
async fn chat_streams_are_relayed_byte_for_byte_and_recorded() {
    for (file, want_tokens, tool) in [
        ("chat-simple.sse", vec![(19, 238, 0)], None),
        (
            "chat-tool-read_file.sse",
            vec![(60, 15, 0)],
            Some(("read_file", r#"{"path":"README.md"}"#)),
        ),
        ("copilot-chat-tool-first.sse", vec![(5246, 65, 20470)], None),
        ("copilot-chat-tool-index1.sse", vec![(510, 58, 25429)], None),
    ] {
        let sse = fixture(&format!("openai/{file}"));
        for chunks in [vec![], vec![1; sse.len()], vec![13; sse.len() / 13 + 1]] {
            let (resp, rec, upstream) = relay(
                "/openai/v1/chat/completions",
                CHAT_STREAM,
                MockResponse::sse(sse.clone()).chunked(chunks),
            )
            .await;
            assert_eq!(resp.status, 200, "{file}");
            assert_eq!(resp.body, sse, "{file}: byte-faithful");
            assert_eq!(
                upstream.requests()[0].body,
                CHAT_STREAM.as_bytes(),
                "{file}: no edit when the client asked for usage"
            );
            assert_eq!(tokens(&rec), want_tokens, "{file}");
            assert_eq!(
                rec.interceptions_ended()[0].outcome,
                Outcome::Completed,
                "{file}"
            );
            if let Some((name, input)) = tool {
                let t = &rec.tool_usages()[0];
                assert_eq!((t.tool.as_str(), t.input.as_str()), (name, input), "{file}");
            }
            assert_eq!(rec.interceptions()[0].api.as_str(), "chat_completions");
        }
    }
}

#[tokio::test]
async fn chat_stream_without_usage_request_gets_it_upstream_and_the_usage_chunk_is_withheld() {
    let sse = fixture("openai/chat-simple.sse");
    let (resp, rec, upstream) = relay(
        "/openai/v1/chat/completions",
        CHAT_STREAM_NO_USAGE,
        MockResponse::sse(sse.clone()),
    )
    .await;
    let sent: serde_json::Value = upstream.requests()[0].json();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "S2: the bridge asks for usage"
    );
    let text = resp.text();
    assert!(
        !text.contains("\"usage\":{"),
        "the client did not ask for the usage chunk"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    let expected: String = String::from_utf8_lossy(&sse)
        .split_inclusive("\n\n")
        .filter(|ev| !(ev.contains("\"usage\":{") && ev.contains("\"choices\":[]")))
        .collect();
    assert_eq!(text, expected, "every other chunk is relayed unchanged");
    assert_eq!(tokens(&rec), vec![(19, 238, 0)], "usage is still recorded");
}

#[tokio::test]
async fn chat_in_band_error_is_relayed_and_the_interception_fails() {
    let sse = fixture("openai/chat-error.sse");
    let (resp, rec, _) = relay(
        "/openai/v1/chat/completions",
        CHAT_STREAM,
        MockResponse::sse(sse.clone()),
    )
    .await;
    assert_eq!(resp.body, sse);
    let e = &rec.interceptions_ended()[0];
    assert_eq!(e.outcome, Outcome::Failed);
    assert!(
        e.error
            .as_deref()
            .unwrap()
            .starts_with("upstream stream error: "),
        "{e:?}"
    );
    assert!(tokens(&rec).is_empty());
    assert_eq!(rec.prompt_usages().len(), 1);
}

#[tokio::test]
async fn chat_stream_cut_mid_way_ends_with_the_openai_terminal_chunk() {
    let sse = fixture("openai/chat-simple.sse");
    let cut = String::from_utf8_lossy(&sse).find("\n\n").unwrap() + 2;
    let (resp, rec, _) = relay(
        "/openai/v1/chat/completions",
        CHAT_STREAM,
        MockResponse::sse(sse.slice(..cut)).then_abort(),
    )
    .await;
    let text = resp.text();
    assert!(text.starts_with(std::str::from_utf8(&sse[..cut]).unwrap()));
    assert!(text.ends_with(
        "data: {\"error\":{\"message\":\"aibridge: upstream stream failed: connection closed before the message ended\",\"type\":\"server_error\",\"param\":null,\"code\":\"upstream_stream_error\"}}\n\n"
    ), "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Failed);
}

#[tokio::test]
async fn chat_blocking_fixtures_are_relayed_verbatim_and_recorded() {
    for (file, want) in [
        ("chat-simple.response.json", (19, 200, 0)),
        ("chat-tool-read_file.response.json", (60, 15, 0)),
    ] {
        let body = fixture(&format!("openai/{file}"));
        let (resp, rec, _) = relay(
            "/openai/v1/chat/completions",
            CHAT_BLOCKING,
            MockResponse::json(200, body.clone()),
        )
        .await;
        assert_eq!(resp.body, body, "{file}");
        assert_eq!(tokens(&rec), vec![want], "{file}");
    }
    let body = fixture("openai/chat-simple.response.json");
    let (_, rec, _) = relay(
        "/openai/v1/chat/completions",
        CHAT_BLOCKING,
        MockResponse::json(200, body),
    )
    .await;
    let extra = &rec.token_usages()[0].extra;
    for k in [
        "prompt_audio",
        "completion_reasoning",
        "completion_audio",
        "completion_accepted_prediction",
        "completion_rejected_prediction",
    ] {
        assert_eq!(extra.get(k), Some(&0), "{k}");
    }
    assert_eq!(extra.len(), 5, "S7: no duplicates of main columns");
}

#[tokio::test]
async fn responses_streams_are_relayed_byte_for_byte_and_recorded() {
    for (file, want, outcome) in [
        (
            "responses-simple.sse",
            vec![(11, 18, 0)],
            Outcome::Completed,
        ),
        (
            "responses-cached.sse",
            vec![(1165, 54, 15744)],
            Outcome::Completed,
        ),
        ("codex.sse", vec![(4006, 13, 0)], Outcome::Completed),
        (
            "responses-wrong-format.sse",
            vec![(11, 18, 0)],
            Outcome::Completed,
        ),
        ("responses-error.sse", vec![], Outcome::Failed),
        ("responses-failed.sse", vec![], Outcome::Failed),
    ] {
        let sse = fixture(&format!("openai/{file}"));
        for chunks in [vec![], vec![7; sse.len() / 7 + 1]] {
            let (resp, rec, upstream) = relay(
                "/openai/v1/responses",
                RESPONSES_STREAM,
                MockResponse::sse(sse.clone()).chunked(chunks),
            )
            .await;
            assert_eq!(resp.body, sse, "{file}: byte-faithful, ids untouched");
            assert_eq!(
                upstream.requests()[0].body,
                RESPONSES_STREAM.as_bytes(),
                "{file}: no edits"
            );
            assert_eq!(tokens(&rec), want, "{file}");
            assert_eq!(rec.interceptions_ended()[0].outcome, outcome, "{file}");
        }
    }
    let (_, rec, _) = relay(
        "/openai/v1/responses",
        RESPONSES_STREAM,
        MockResponse::sse(fixture("openai/codex.sse")),
    )
    .await;
    let thoughts = rec.model_thoughts();
    assert_eq!(thoughts.len(), 1);
    assert_eq!(thoughts[0].source, ThoughtSource::ReasoningSummary);
    assert_eq!(thoughts[0].content, "Preparing simple response");
}

#[tokio::test]
async fn responses_blocking_and_background_and_prompt() {
    let body = fixture("openai/responses-cached.response.json");
    let (resp, rec, _) = relay(
        "/openai/v1/responses",
        RESPONSES_BLOCKING,
        MockResponse::json(200, body.clone()),
    )
    .await;
    assert_eq!(resp.body, body);
    assert_eq!(tokens(&rec), vec![(129, 44, 11904)]);
    assert_eq!(rec.prompt_usages()[0].prompt, "say hello");

    let upstream = MockUpstream::start().await;
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let resp = send(
        &bridge,
        post(
            "/openai/v1/responses",
            r#"{"model":"gpt-5","background":true,"input":"x"}"#,
        ),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json(),
        serde_json::json!({"error":{"message":"aibridge: background responses are not supported","type":"invalid_request_error","param":"background","code":"unsupported_parameter"}})
    );
    assert_eq!(upstream.request_count(), 0);
    assert!(rec.interceptions().is_empty());
}

#[tokio::test]
async fn openai_errors_are_openai_shaped() {
    let upstream = MockUpstream::start().await;
    let (bridge, _) = bridge(&upstream.base_url(), |b| b);
    for (path, body, status, code) in [
        (
            "/openai/v1/chat/completions",
            "",
            400,
            "invalid_request_body",
        ),
        (
            "/openai/v1/chat/completions",
            r#"{"messages":[]}"#,
            400,
            "missing_required_parameter",
        ),
        (
            "/openai/v1/completions",
            CHAT_BLOCKING,
            404,
            "route_not_supported",
        ),
        (
            "/openai/chat/completions",
            CHAT_BLOCKING,
            404,
            "route_not_supported",
        ),
    ] {
        let resp = send(&bridge, post(path, body)).await;
        assert_eq!(resp.status, status, "{path} {body}");
        let v = resp.json();
        assert_eq!(v["error"]["code"], code, "{path}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("aibridge: ")
        );
        assert!(v["error"].get("param").is_some());
    }
    let mut no_actor = post("/openai/v1/chat/completions", CHAT_BLOCKING);
    no_actor.extensions_mut().clear();
    let resp = send(&bridge, no_actor).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"]["code"], "invalid_api_key");
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn copilot_needs_the_clients_own_token_and_forwards_it_unchanged() {
    let upstream = MockUpstream::start().await;
    upstream.push(MockResponse::sse(fixture(
        "openai/copilot-chat-tool-first.sse",
    )));
    let (bridge, rec) = bridge_with(|b| {
        b.provider(
            Copilot::new()
                .with_name("copilot-business")
                .with_base_url(upstream.base_url().parse().unwrap())
                .with_retry(RetryConfig::default().with_max_retries(0)),
        )
    });
    let mut req = post("/copilot-business/chat/completions", CHAT_STREAM);
    req.headers_mut().insert(
        "authorization",
        "Bearer ghu_user_token_0123456789".parse().unwrap(),
    );
    req.headers_mut()
        .insert("x-api-key", "must-not-travel".parse().unwrap());
    req.headers_mut()
        .insert("editor-version", "vscode/1.99".parse().unwrap());
    let resp = send(&bridge, req).await;
    assert_eq!(resp.status, 200);
    let up = &upstream.requests()[0];
    assert_eq!(up.path_and_query, "/chat/completions");
    assert_eq!(
        up.header("authorization"),
        Some("Bearer ghu_user_token_0123456789")
    );
    assert_eq!(up.header("x-api-key"), None);
    assert_eq!(up.header("editor-version"), Some("vscode/1.99"));
    ended(&rec, 1).await;
    let i = &rec.interceptions()[0];
    assert_eq!(
        (i.provider.as_str(), i.provider_name.as_str()),
        ("copilot", "copilot-business")
    );
    assert_eq!(i.credential_kind.as_str(), "byok");
    let resp = send(
        &bridge,
        post("/copilot-business/chat/completions", CHAT_STREAM),
    )
    .await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.json()["error"]["message"],
        "aibridge: this provider requires your own token in the Authorization header (Bearer)"
    );
    assert_eq!(upstream.request_count(), 1);
}
