//! The MCP tool loop through Bedrock and through Vertex (blocking and streaming): the loop
//! is the Anthropic one, the transport the cloud's. Each loop iteration's call is edited,
//! signed or authorized again, and a Bedrock EventStream answer feeds the loop like an SSE
//! one.

mod common;
mod mcp_support;
mod mcp_wire;
mod support;

use std::time::Duration;

use aibridge::mcp::{McpConfig, McpServer};
use aibridge::provider::{Bedrock, ModelMap, Provider, Secret, Vertex};
use aibridge::recorder::Outcome;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine as _;
use common::{bridge_with, ended, post, send};
use mcp_support::{McpTestServer, ReceivedCall};
use mcp_wire::{Api, Usage, anthropic_sse, call, client_view, turn};
use support::{MockResponse, MockUpstream, parse_sse};

/// The injected id of the test tool (server `coder`, tool `coder_list_workspaces`).
pub const TOOL_ID: &str = "bmcp_coder_coder_list_workspaces";
const TOOL: &str = "coder_list_workspaces";
const ARGS: &str = r#"{"owner":"admin"}"#;
const T1: &str = "Listing the workspaces now.";
const T2: &str = "You have one workspace: mock.";
const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const VERTEX_MODEL: &str = "claude-sonnet-4-5@20250929";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cloud {
    Bedrock,
    Vertex,
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input,
        cached: 0,
        output,
    }
}

/// The Anthropic SSE of a turn as Bedrock's EventStream, sent one byte per chunk.
fn event_stream(sse: &str) -> MockResponse {
    let mut body = Vec::new();
    for ev in parse_sse(sse.as_bytes()) {
        let payload = serde_json::json!({
            "bytes": base64::engine::general_purpose::STANDARD.encode(&ev.data),
        });
        let msg = Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String("chunk".into()),
            ));
        write_message_to(&msg, &mut body).unwrap();
    }
    let n = body.len();
    MockResponse::raw(200, "application/vnd.amazon.eventstream", body).chunked(vec![1; n])
}

async fn tool_loop(cloud: Cloud, stream: bool) {
    let upstream = MockUpstream::start().await;
    let tokens = MockUpstream::start().await;
    let mcp = McpTestServer::start(&[TOOL]).await;
    let t1 = turn(
        "msg_01",
        Some(T1),
        vec![call("toolu_01", TOOL_ID, ARGS)],
        usage(100, 10),
    );
    let t2 = turn("msg_02", Some(T2), vec![], usage(150, 20));
    for t in [&t1, &t2] {
        upstream.push(match (cloud, stream) {
            (Cloud::Bedrock, true) => event_stream(&anthropic_sse(t)),
            _ => Api::Messages.answer(stream, t),
        });
    }
    tokens.push(MockResponse::json(
        200,
        r#"{"access_token":"ya29.loop-token","expires_in":3600}"#,
    ));
    let base = upstream.base_url().parse().unwrap();
    let provider: Box<dyn FnOnce(aibridge::bridge::Builder) -> aibridge::bridge::Builder> =
        match cloud {
            Cloud::Bedrock => Box::new(move |b| {
                b.provider(
                    Bedrock::new("us-east-1")
                        .with_base_url(base)
                        .with_static_credentials("AKIALOOPTEST", Secret::new("loop-secret"), None)
                        .with_models(ModelMap::new().with_pair(BEDROCK_MODEL, BEDROCK_MODEL)),
                )
            }),
            Cloud::Vertex => {
                let meta = tokens.base_url();
                Box::new(move |b| {
                    b.provider(
                        Vertex::new("p", "global")
                            .with_base_url(base)
                            .with_metadata_server_at(meta)
                            .with_models(
                                ModelMap::parse(&format!("claude-*={VERTEX_MODEL}")).unwrap(),
                            ),
                    )
                })
            }
        };
    let config = McpConfig::new().server(McpServer::new("coder", mcp.url()));
    let (bridge, rec) = bridge_with(|b| provider(b).mcp(config));
    tokio::time::timeout(Duration::from_secs(10), bridge.mcp_ready())
        .await
        .unwrap();
    let name = match cloud {
        Cloud::Bedrock => Bedrock::new("x").name().to_owned(),
        Cloud::Vertex => Vertex::new("p", "global").name().to_owned(),
    };
    let body = Api::Messages.request(stream, "list my workspaces");
    let resp = send(&bridge, post(&format!("/{name}/v1/messages"), body)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(!resp.text().contains("bmcp_"), "{}", resp.text());
    let view = client_view(Api::Messages, stream, &resp.body);
    let want: Vec<String> = if stream {
        vec![T1.to_owned(), T2.to_owned()]
    } else {
        vec![T2.to_owned()]
    };
    assert_eq!(view.texts, want);
    assert!(view.calls.is_empty());
    assert_eq!(view.stop, "end_turn");
    assert_eq!(
        mcp.calls(),
        vec![ReceivedCall {
            name: TOOL.to_owned(),
            arguments: serde_json::from_str(ARGS).unwrap(),
        }]
    );
    let reqs = upstream.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        let v = r.json();
        assert!(v.get("model").is_none(), "model sent to the cloud");
        let names: Vec<&str> = v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [TOOL_ID, "Read"]);
        match cloud {
            Cloud::Bedrock => {
                assert_eq!(v["anthropic_version"], "bedrock-2023-05-31");
                assert!(v.get("stream").is_none());
                let op = if stream {
                    "invoke-with-response-stream"
                } else {
                    "invoke"
                };
                assert_eq!(
                    r.path(),
                    format!("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/{op}")
                );
                assert!(
                    r.header("authorization")
                        .unwrap()
                        .starts_with("AWS4-HMAC-SHA256 ")
                );
            }
            Cloud::Vertex => {
                assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
                let op = if stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                };
                assert!(
                    r.path().ends_with(&format!("/models/{VERTEX_MODEL}:{op}")),
                    "{}",
                    r.path()
                );
                assert_eq!(r.header("authorization"), Some("Bearer ya29.loop-token"));
            }
        }
    }
    // The second call carries the tool turn; each call has its own signature.
    let second = reqs[1].json();
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    if cloud == Cloud::Bedrock {
        assert_ne!(
            reqs[0].header("authorization"),
            reqs[1].header("authorization")
        );
    }
    ended(&rec, 1).await;
    let model = match cloud {
        Cloud::Bedrock => BEDROCK_MODEL,
        Cloud::Vertex => VERTEX_MODEL,
    };
    assert_eq!(rec.interceptions()[0].model, model);
    let tools = rec.tool_usages();
    assert_eq!(tools.len(), 1);
    assert!(tools[0].injected);
    assert_eq!(tools[0].tool, TOOL_ID.trim_start_matches("bmcp_coder_"));
    let t = rec.token_usages();
    assert_eq!(t.iter().map(|t| t.input_tokens).sum::<u64>(), 250);
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Completed);
}

#[tokio::test]
async fn bedrock_blocking_tool_loop() {
    tool_loop(Cloud::Bedrock, false).await;
}

#[tokio::test]
async fn bedrock_streaming_tool_loop() {
    tool_loop(Cloud::Bedrock, true).await;
}

#[tokio::test]
async fn vertex_blocking_tool_loop() {
    tool_loop(Cloud::Vertex, false).await;
}

#[tokio::test]
async fn vertex_streaming_tool_loop() {
    tool_loop(Cloud::Vertex, true).await;
}
