//! Replays of real client traffic (tests/fixtures/clients) through the bridge: the bytes
//! and headers reach the upstream unchanged, and client, session, prompt and correlating
//! tool call are detected as the fixtures' README says.

mod common;
mod support;

use common::*;
use http_body_util::Full;
use support::{ClientRequest, MockResponse, MockUpstream, client_log, fixture};

struct Expect {
    client: &'static str,
    session: Option<&'static str>,
    prompt: Option<&'static str>,
    correlating: Option<&'static str>,
}

fn expected(file: &str, seq: u64) -> Option<Expect> {
    let e = |client, session, prompt, correlating| {
        Some(Expect {
            client,
            session,
            prompt,
            correlating,
        })
    };
    match (file, seq) {
        ("cc-p-quiet.jsonl", 1) => e(
            "Claude Code",
            Some("093442a6-5546-47f3-b3d4-81c700743216"),
            Some("say hello"),
            None,
        ),
        ("cc-tool.jsonl", 1) => e(
            "Claude Code",
            Some("19cf2efc-e90a-45b2-992f-efa5bbe9048f"),
            Some("say hello"),
            None,
        ),
        ("cc-tool.jsonl", 2) => e(
            "Claude Code",
            Some("19cf2efc-e90a-45b2-992f-efa5bbe9048f"),
            None,
            Some("toolu_b9c1cbb99c8e4dabaf9033af"),
        ),
        ("cc-authtoken.jsonl", 1) => e(
            "Claude Code",
            Some("b3b99b86-b759-4b05-b6e7-14099f5638bf"),
            Some("say hello"),
            None,
        ),
        ("cc-haiku.jsonl", 1) => e(
            "Claude Code",
            Some("f3b27b75-a69c-43e0-aa73-58db1b908d4f"),
            Some("say hello"),
            None,
        ),
        _ => None,
    }
}

fn replay(req: &ClientRequest) -> http::Request<Full<bytes::Bytes>> {
    let mut r = req.to_request("/anthropic").map(Full::new);
    r.extensions_mut().insert(aibridge::Actor::new("alice"));
    r
}

fn is_stream(req: &ClientRequest) -> bool {
    req.body_json().is_some_and(|b| b["stream"] == true)
}

#[tokio::test]
async fn claude_code_requests_are_forwarded_untouched_and_detected() {
    for file in [
        "cc-p-quiet.jsonl",
        "cc-tool.jsonl",
        "cc-authtoken.jsonl",
        "cc-haiku.jsonl",
    ] {
        for logged in client_log(file) {
            let upstream = MockUpstream::start().await;
            upstream.push(MockResponse::sse(fixture(
                "anthropic/text_stream.upstream.sse",
            )));
            let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
            let resp = send(&bridge, replay(&logged)).await;
            assert_eq!(resp.status, 200, "{file} #{}", logged.seq);
            let up = &upstream.requests()[0];
            assert_eq!(
                up.path_and_query, logged.path,
                "{file}: query string forwarded"
            );
            assert_eq!(up.body, logged.body_bytes(), "{file}: body bytes unchanged");
            for (name, value) in logged.replay_headers() {
                let lower = name.to_ascii_lowercase();
                if ["accept-encoding", "connection"].contains(&lower.as_str()) {
                    continue;
                }
                assert_eq!(
                    up.header_all(&lower),
                    vec![value.as_str()],
                    "{file}: header {name}"
                );
            }
            assert_eq!(up.header("x-api-key"), Some(ANTHROPIC_KEY));
            ended(&rec, 1).await;
            let want = expected(file, logged.seq).expect("expectation");
            let i = &rec.interceptions()[0];
            assert_eq!(i.client, want.client, "{file}");
            assert_eq!(i.client_session_id.as_deref(), want.session, "{file}");
            assert_eq!(
                i.correlating_tool_call_id.as_deref(),
                want.correlating,
                "{file}"
            );
            assert!(i.streaming);
            let prompts: Vec<String> = rec.prompt_usages().into_iter().map(|p| p.prompt).collect();
            assert_eq!(
                prompts,
                want.prompt
                    .map(str::to_owned)
                    .into_iter()
                    .collect::<Vec<_>>(),
                "{file}"
            );
        }
    }
}

#[tokio::test]
async fn sdk_anthropic_traffic_is_bridged_or_passed_through() {
    for file in ["python-sdk.jsonl", "ts-sdk.jsonl"] {
        let (mut bridged_seen, mut passthrough_seen) = (0, 0);
        for logged in client_log(file) {
            let path = logged.path_only().to_owned();
            if !path.starts_with("/v1/messages") && !path.starts_with("/v1/models") {
                continue;
            }
            if logged.header("anthropic-version").is_none() && path.starts_with("/v1/models") {
                continue; // the OpenAI SDK's models.list
            }
            let upstream = MockUpstream::start().await;
            let bridged = path == "/v1/messages";
            if bridged && is_stream(&logged) {
                upstream.push(MockResponse::sse(fixture(
                    "anthropic/tool_stream.upstream.sse",
                )));
            } else if bridged {
                upstream.push(MockResponse::json(
                    200,
                    fixture("anthropic/text_blocking.upstream.json"),
                ));
            } else {
                upstream.push(MockResponse::json(200, r#"{"input_tokens":3}"#));
            }
            let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
            let resp = send(&bridge, replay(&logged)).await;
            assert_eq!(resp.status, 200, "{file} #{} {path}", logged.seq);
            assert_eq!(upstream.requests()[0].body, logged.body_bytes());
            if bridged {
                bridged_seen += 1;
                ended(&rec, 1).await;
                let i = &rec.interceptions()[0];
                assert_eq!(i.client, "Unknown", "{file}: SDKs are not a named client");
                assert_eq!(i.client_session_id, None);
                let prompt = rec.prompt_usages().pop().map(|p| p.prompt);
                let want = if logged.header("x-fake-mode") == Some("tool") {
                    "weather?"
                } else {
                    "say hello"
                };
                assert_eq!(prompt.as_deref(), Some(want), "{file} #{}", logged.seq);
            } else {
                passthrough_seen += 1;
                assert!(
                    rec.interceptions().is_empty(),
                    "{file}: passthrough records nothing"
                );
            }
        }
        assert!(
            bridged_seen >= 3 && passthrough_seen >= 2,
            "{file}: {bridged_seen} bridged, {passthrough_seen} passthrough"
        );
    }
}
