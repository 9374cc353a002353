//! MCP tool narrowing by the policy (issue 12, `Allow::mcp_tools`), black box: a real
//! `rmcp` server with two tools, a `RulesPolicy` allowing one of them by a regex on the
//! original name. The refused tool is not injected, and a model that calls it anyway gets
//! the not-executed result (the server never sees the call), recorded with the reason,
//! in both the blocking and the streaming loops of every API.
#![cfg(feature = "mcp")]

mod common;
mod mcp_support;
mod mcp_wire;
mod support;

use std::time::Duration;

use aibridge::mcp::{McpConfig, McpServer};
use aibridge::policy::{Rules, RulesPolicy};
use aibridge::recorder::Outcome;
use common::*;
use http::StatusCode;
use mcp_support::{McpTestServer, ReceivedCall};
use mcp_wire::{Api, Usage, call, turn};
use serde_json::Value;
use support::MockUpstream;

const LIST: &str = "coder_list_workspaces";
const DELETE: &str = "coder_delete_workspace";
const LIST_ID: &str = "bmcp_coder_coder_list_workspaces";
/// The injected tool `mcp_wire` echoes in Responses answers (the only one injected here).
pub const TOOL_ID: &str = LIST_ID;
const DELETE_ID: &str = "bmcp_coder_coder_delete_workspace";
const REFUSED: &str = "not executed: the tool is not allowed for this request by policy";

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn tool_names(api: Api, body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let name = match api {
                Api::Chat => &t["function"]["name"],
                _ => &t["name"],
            };
            name.as_str().map(str::to_owned)
        })
        .collect()
}

fn msg_id(api: Api, n: usize) -> String {
    match api {
        Api::Messages => format!("msg_0{n}"),
        Api::Chat => format!("chatcmpl-0{n}"),
        Api::Responses => format!("resp_0{n}"),
    }
}

async fn narrowed(api: Api, stream: bool) {
    let upstream = MockUpstream::start().await;
    let mcp = McpTestServer::start(&[LIST, DELETE]).await;
    let mut rules = Rules::default();
    rules.default.mcp_tools = Some(vec!["^coder_list_".into()]);
    let policy = RulesPolicy::builder().rules(rules).build().unwrap();
    let config = McpConfig::new().server(McpServer::new("coder", mcp.url()));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.mcp(config).policy(policy));
    bounded("mcp_ready", bridge.mcp_ready()).await;
    assert_eq!(bridge.mcp_tools().len(), 2, "both tools are registered");

    let usage = Usage {
        input: 10,
        cached: 0,
        output: 5,
    };
    // The model calls the refused tool anyway (it knows the name from elsewhere).
    let t1 = turn(
        &msg_id(api, 1),
        Some("Deleting."),
        vec![call("call_01", DELETE_ID, r#"{"id":"w1"}"#)],
        usage,
    );
    let t2 = turn(&msg_id(api, 2), Some("I may not delete it."), vec![], usage);
    upstream.push(api.answer(stream, &t1));
    upstream.push(api.answer(stream, &t2));

    let resp = bounded(
        "the response",
        send(&bridge, post(api.path(), api.request(stream, "delete w1"))),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert!(!resp.text().contains("bmcp_"), "{}", resp.text());
    bounded("the end", rec.wait_for_ended(1)).await;

    // Injection: only the allowed tool went upstream, on both calls.
    let reqs = upstream.requests();
    assert_eq!(
        reqs.len(),
        2,
        "the refused call is answered and the loop goes on"
    );
    for r in &reqs {
        let names = tool_names(api, &r.json());
        assert!(names.iter().any(|n| n == LIST_ID), "{api:?} {names:?}");
        assert!(!names.iter().any(|n| n == DELETE_ID), "{api:?} {names:?}");
    }
    // The model is told the call was refused.
    let second = reqs[1].json().to_string();
    assert!(second.contains(REFUSED), "{api:?} {second}");
    // Execution: the server never saw a call.
    assert_eq!(mcp.calls(), Vec::<ReceivedCall>::new());
    // The record names the refused tool and why it did not run.
    let rows: Vec<_> = rec
        .tool_usages()
        .into_iter()
        .filter(|t| t.injected)
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].tool, DELETE);
    assert_eq!(rows[0].invocation_error.as_deref(), Some(REFUSED));
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Completed);
}

#[tokio::test]
async fn anthropic_blocking_refuses_a_filtered_tool() {
    narrowed(Api::Messages, false).await;
}

#[tokio::test]
async fn anthropic_streaming_refuses_a_filtered_tool() {
    narrowed(Api::Messages, true).await;
}

#[tokio::test]
async fn chat_blocking_refuses_a_filtered_tool() {
    narrowed(Api::Chat, false).await;
}

#[tokio::test]
async fn chat_streaming_refuses_a_filtered_tool() {
    narrowed(Api::Chat, true).await;
}

#[tokio::test]
async fn responses_blocking_refuses_a_filtered_tool() {
    narrowed(Api::Responses, false).await;
}

#[tokio::test]
async fn responses_streaming_refuses_a_filtered_tool() {
    narrowed(Api::Responses, true).await;
}
