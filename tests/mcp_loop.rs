//! The MCP tool loop, black box: a bridge in front of the scripted loopback upstream, with
//! real `rmcp` streamable-HTTP servers on loopback providing the injected tools.
//!
//! For each API (Anthropic Messages, Chat Completions, Responses) and mode (blocking,
//! streaming) the upstream is scripted with that API's exact wire shapes; the tests check
//! what the client receives (read the way the SDKs accumulate it), what the upstream and
//! the MCP server received, the records and the metrics.
#![cfg(feature = "mcp")]

mod common;
mod mcp_support;
mod mcp_wire;
mod support;

use std::time::Duration;

use aibridge::RequestBridge;
use aibridge::mcp::{McpConfig, McpServer};
use aibridge::metrics::Metrics;
use aibridge::recorder::{MemoryRecorder, Outcome, ToolUsage};
use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use mcp_support::{McpTestServer, ReceivedCall};
use mcp_wire::{Api, Call, ClientView, Usage, call, client_view, turn};
use prometheus::Registry;
use serde_json::{Value, json};
use support::MockUpstream;
use tower::ServiceExt;

/// The injected id of the reference tool (server `coder`, tool `coder_list_workspaces`).
pub const TOOL_ID: &str = "bmcp_coder_coder_list_workspaces";
const TOOL: &str = "coder_list_workspaces";
const ARGS: &str = r#"{"owner":"admin"}"#;
const PROMPT: &str = "list my workspaces";
const T1: &str = "Listing the workspaces now.";
const T2: &str = "You have one workspace: mock.";

const APIS: [Api; 3] = [Api::Messages, Api::Chat, Api::Responses];

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// === the environment ===

struct Env {
    upstream: MockUpstream,
    mcp: McpTestServer,
    bridge: RequestBridge,
    rec: MemoryRecorder,
    reg: Registry,
}

/// An MCP server `coder` serving `tools`, and a bridge (Anthropic + OpenAI) in front of a
/// fresh mock upstream, with the MCP configuration adjusted by `f`; waits until the bridge
/// has connected and asserts it has tools.
async fn env(tools: &[&str], f: impl FnOnce(McpConfig) -> McpConfig) -> Env {
    env_with(tools, |s| s, f).await
}

async fn env_with(
    tools: &[&str],
    server: impl FnOnce(McpServer) -> McpServer,
    f: impl FnOnce(McpConfig) -> McpConfig,
) -> Env {
    let upstream = MockUpstream::start().await;
    let mcp = McpTestServer::start(tools).await;
    let config = f(McpConfig::new().server(server(McpServer::new("coder", mcp.url()))));
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.metrics(metrics).mcp(config));
    bounded("mcp_ready", bridge.mcp_ready()).await;
    assert!(
        !bridge.mcp_tools().is_empty(),
        "the bridge has no MCP tools"
    );
    Env {
        upstream,
        mcp,
        bridge,
        rec,
        reg,
    }
}

fn usage(input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input,
        cached,
        output,
    }
}

/// The spec's reference numbers of a two-iteration loop, per API.
fn reference_usage(api: Api) -> [Usage; 2] {
    match api {
        Api::Messages => [usage(7545, 0, 74), usage(7763, 0, 128)],
        Api::Chat => [usage(4862, 0, 45), usage(5049, 4864, 60)],
        Api::Responses => [usage(6269, 0, 18), usage(6463, 6144, 182)],
    }
}

/// Per-API ids for the n-th upstream message (1-based).
fn msg_id(api: Api, n: usize) -> String {
    match api {
        Api::Messages => format!("msg_0{n}"),
        Api::Chat => format!("chatcmpl-0{n}"),
        Api::Responses => format!("resp_0{n}"),
    }
}

fn final_stop(api: Api) -> &'static str {
    match api {
        Api::Messages => "end_turn",
        Api::Chat => "stop",
        Api::Responses => "completed",
    }
}

fn tool_stop(api: Api) -> &'static str {
    match api {
        Api::Messages => "tool_use",
        Api::Chat => "tool_calls",
        Api::Responses => "completed",
    }
}

/// The texts a client accumulates from iterations whose texts are `texts`: all of them
/// when streaming (Chat concatenates them into one content string), only the last
/// response's when blocking (S19).
fn expected_texts(api: Api, stream: bool, texts: &[&str]) -> Vec<String> {
    match (api, stream) {
        (_, false) => texts.last().map(|t| (*t).to_owned()).into_iter().collect(),
        (Api::Chat, true) => vec![texts.concat()],
        (_, true) => texts.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// Every member of `want` (recursively) is in `got` with the same value.
fn assert_contains(got: &Value, want: &Value, what: &str) {
    match want {
        Value::Object(m) => {
            for (k, v) in m {
                assert_contains(&got[k], v, &format!("{what}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{what}: got {got}"),
    }
}

async fn send_req(e: &Env, api: Api, body: &str) -> Collected {
    let resp = bounded(
        "the response",
        send(&e.bridge, post(api.path(), body.to_owned())),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    resp
}

/// The client's view, after checking no injected name reached it.
fn view_of(api: Api, stream: bool, resp: &Collected) -> ClientView {
    assert!(
        !resp.text().contains("bmcp_"),
        "an injected name reached the client: {}",
        resp.text()
    );
    client_view(api, stream, &resp.body)
}

// === upstream request checks ===

/// The names of the tools of an upstream request body.
fn tool_names(api: Api, body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let name = match api {
                Api::Chat => &t["function"]["name"],
                _ => &t["name"],
            };
            name.as_str().unwrap().to_owned()
        })
        .collect()
}

/// Asserts the request carries the injected tools `ids` where the API puts them, and the
/// parallel-call setting.
fn assert_injected(api: Api, body: &Value, ids: &[&str]) {
    let names = tool_names(api, body);
    let client = api.client_tool().to_owned();
    let mut want: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    match api {
        Api::Messages => {
            want.push(client);
            assert_eq!(
                body["tool_choice"],
                json!({"type": "auto", "disable_parallel_tool_use": true})
            );
            // The client's cache breakpoint stays on its own tool.
            assert_eq!(
                body["tools"][ids.len()]["cache_control"],
                json!({"type": "ephemeral"})
            );
        }
        Api::Chat | Api::Responses => {
            want.insert(0, client);
            assert_eq!(body["parallel_tool_calls"], false);
        }
    }
    assert_eq!(names, want, "tools of the upstream request");
}

/// How the model is told about one call's result.
#[derive(Debug, Clone)]
enum Res {
    /// A successful result with this text.
    Ok(&'static str),
    /// An `isError` result with this text.
    IsError(&'static str),
    /// A failed or refused call: the full text the model sees.
    Failed(String),
}

/// Asserts the upstream request body ends with the assistant turn (`text` and `calls`) and
/// the tool results, in the API's format.
fn assert_continuation(
    api: Api,
    body: &Value,
    prior_id: &str,
    text: Option<&str>,
    calls: &[Call],
    results: &[(&str, Res)],
) {
    match api {
        Api::Messages => {
            let msgs = body["messages"].as_array().unwrap();
            let n = msgs.len();
            let mut content = Vec::new();
            if let Some(t) = text {
                content.push(json!({"type": "text", "text": t}));
            }
            for c in calls {
                let input: Value = serde_json::from_str(&c.args).unwrap();
                content
                    .push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
            }
            assert_eq!(
                msgs[n - 2],
                json!({"role": "assistant", "content": content}),
                "assistant turn"
            );
            let blocks: Vec<Value> = results
                .iter()
                .map(|(id, r)| {
                    let (text, err) = match r {
                        Res::Ok(t) => ((*t).to_owned(), false),
                        Res::IsError(t) => ((*t).to_owned(), true),
                        Res::Failed(t) => (t.clone(), true),
                    };
                    json!({"type": "tool_result", "tool_use_id": id,
                           "content": [{"type": "text", "text": text}], "is_error": err})
                })
                .collect();
            assert_eq!(
                msgs[n - 1],
                json!({"role": "user", "content": blocks}),
                "tool results"
            );
        }
        Api::Chat => {
            let msgs = body["messages"].as_array().unwrap();
            let n = msgs.len();
            let k = results.len();
            let tool_calls: Vec<Value> = calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args}}))
                .collect();
            assert_eq!(
                msgs[n - 1 - k],
                json!({"role": "assistant", "content": text, "tool_calls": tool_calls}),
                "assistant turn"
            );
            for (i, (id, r)) in results.iter().enumerate() {
                assert_eq!(
                    msgs[n - k + i],
                    json!({"role": "tool", "tool_call_id": id, "content": openai_text(r)}),
                    "tool result {i}"
                );
            }
        }
        Api::Responses => {
            let input = body["input"].as_array().unwrap();
            let n = input.len();
            let k = results.len();
            let mut items: Vec<Value> = Vec::new();
            if let Some(t) = text {
                items.push(json!({"id": format!("msg_{prior_id}"), "type": "message", "status": "completed", "role": "assistant",
                                  "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": t}]}));
            }
            for c in calls {
                items.push(json!({"id": format!("fc_{}", c.id), "type": "function_call", "status": "completed",
                                  "arguments": c.args, "call_id": c.id, "name": c.name}));
            }
            let start = n - k - items.len();
            assert_eq!(
                &input[start..n - k],
                &items[..],
                "the response's output items"
            );
            for (i, (id, r)) in results.iter().enumerate() {
                assert_eq!(
                    input[n - k + i],
                    json!({"type": "function_call_output", "call_id": id, "output": openai_text(r)}),
                    "tool result {i}"
                );
            }
        }
    }
}

fn openai_text(r: &Res) -> String {
    match r {
        Res::Ok(t) => (*t).to_owned(),
        Res::IsError(t) => format!("Error: {t}"),
        Res::Failed(t) => t.clone(),
    }
}

/// The messages/input of the client's request, as sent upstream on the first call.
fn history(api: Api, body: &Value) -> Value {
    match api {
        Api::Messages | Api::Chat => body["messages"].clone(),
        Api::Responses => body["input"].clone(),
    }
}

// === record checks ===

/// One interception of `api`, ended with `outcome`; one prompt; token rows per `usages`
/// with the n-th message id.
fn assert_records(e: &Env, api: Api, stream: bool, usages: &[Usage], outcome: Outcome) {
    let ints = e.rec.interceptions();
    assert_eq!(ints.len(), 1);
    assert_eq!(ints[0].streaming, stream);
    assert_eq!(ints[0].model, api.model());
    let prompts = e.rec.prompt_usages();
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    assert_eq!(prompts[0].prompt, PROMPT);
    assert_eq!(
        prompts[0].provider_response_id.as_deref(),
        Some(msg_id(api, 1).as_str())
    );
    let tokens = e.rec.token_usages();
    assert_eq!(tokens.len(), usages.len(), "token rows: {tokens:?}");
    for (i, (row, u)) in tokens.iter().zip(usages).enumerate() {
        let (input, output, cache_read) = api.recorded(*u);
        assert_eq!(
            (
                row.input_tokens,
                row.output_tokens,
                row.cache_read_input_tokens
            ),
            (input, output, cache_read),
            "token row {i}"
        );
        assert_eq!(
            row.provider_response_id.as_deref(),
            Some(msg_id(api, i + 1).as_str()),
            "token row {i}"
        );
    }
    let ended = e.rec.interceptions_ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].outcome, outcome, "{:?}", ended[0].error);
}

fn injected_rows(rec: &MemoryRecorder) -> Vec<ToolUsage> {
    rec.tool_usages()
        .into_iter()
        .filter(|t| t.injected)
        .collect()
}

/// Asserts one injected ToolUsage.
fn assert_injected_row(
    row: &ToolUsage,
    e: &Env,
    tool: &str,
    call_id: &str,
    response_id: &str,
    input: &str,
    error: Option<&str>,
) {
    assert!(row.injected);
    assert!(!row.provider_executed);
    assert_eq!(row.tool, tool);
    assert_eq!(row.tool_call_id, call_id);
    assert_eq!(row.server_url.as_deref(), Some(e.mcp.url_string().as_str()));
    assert_eq!(
        serde_json::from_str::<Value>(&row.input).unwrap(),
        serde_json::from_str::<Value>(input).unwrap()
    );
    assert_eq!(row.invocation_error.as_deref(), error);
    assert_eq!(row.provider_response_id.as_deref(), Some(response_id));
}

fn injected_metric(e: &Env, api: Api, tool: &str) -> f64 {
    prom::try_value(
        &e.reg,
        "injected_tool_invocations_total",
        &[
            ("provider", api.provider()),
            ("model", api.model()),
            ("server", &e.mcp.url_string()),
            ("name", tool),
        ],
    )
    .unwrap_or(0.0)
}

// === the reference scenario ===

/// The model calls the injected tool once, then answers with text.
async fn reference(api: Api, stream: bool) {
    let e = env(&[TOOL], |c| c).await;
    let usages = reference_usage(api);
    let c1 = call("call_01", TOOL_ID, ARGS);
    let t1 = turn(&msg_id(api, 1), Some(T1), vec![c1.clone()], usages[0]);
    let t2 = turn(&msg_id(api, 2), Some(T2), vec![], usages[1]);
    e.upstream.push(api.answer(stream, &t1));
    e.upstream.push(api.answer(stream, &t2));
    let client_body = api.request(stream, PROMPT);

    let resp = send_req(&e, api, &client_body).await;

    // The client: one coherent message.
    let view = view_of(api, stream, &resp);
    assert_eq!(view.texts, expected_texts(api, stream, &[T1, T2]));
    assert!(view.calls.is_empty(), "{:?}", view.calls);
    assert_eq!(view.stop, final_stop(api));
    assert_contains(&view.usage, &api.summed_usage(&usages), "usage");
    let want_id = match (api, stream) {
        // Anthropic streams keep the first message_start, Chat chunks keep their ids;
        // Responses shows one lifecycle, the first upstream id, streamed or not (S20,
        // revised by issue 16).
        (Api::Messages | Api::Chat, true) | (Api::Responses, _) => msg_id(api, 1),
        _ => msg_id(api, 2),
    };
    assert_eq!(view.id, want_id);
    if api == Api::Responses {
        for tools in &view.echoed_tools {
            assert_eq!(tools.as_array().unwrap().len(), 1, "echoed tools: {tools}");
        }
    }

    // The MCP server: exactly one tools/call with the model's arguments.
    assert_eq!(
        e.mcp.calls(),
        vec![ReceivedCall {
            name: TOOL.to_owned(),
            arguments: serde_json::from_str(ARGS).unwrap(),
        }]
    );

    // The upstream: the injected tools on both calls, the turn appended to the second.
    let reqs = e.upstream.requests();
    assert_eq!(reqs.len(), 2);
    let client: Value = serde_json::from_str(&client_body).unwrap();
    let first = reqs[0].json();
    let second = reqs[1].json();
    assert_injected(api, &first, &[TOOL_ID]);
    assert_injected(api, &second, &[TOOL_ID]);
    assert_eq!(history(api, &first), history(api, &client));
    assert_continuation(
        api,
        &second,
        &msg_id(api, 1),
        Some(T1),
        &[c1],
        &[("call_01", Res::Ok("mock"))],
    );
    if api == Api::Chat && stream {
        assert_eq!(second["stream_options"], json!({"include_usage": true}));
    }

    // Records and metrics.
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, stream, &usages, Outcome::Completed);
    let tools = e.rec.tool_usages();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_injected_row(&tools[0], &e, TOOL, "call_01", &msg_id(api, 1), ARGS, None);
    assert_eq!(injected_metric(&e, api, TOOL), 1.0);
}

#[tokio::test]
async fn anthropic_blocking_injected_tool_round_trip() {
    reference(Api::Messages, false).await;
}

#[tokio::test]
async fn anthropic_streaming_injected_tool_round_trip() {
    reference(Api::Messages, true).await;
}

#[tokio::test]
async fn chat_blocking_injected_tool_round_trip() {
    reference(Api::Chat, false).await;
}

#[tokio::test]
async fn chat_streaming_injected_tool_round_trip() {
    reference(Api::Chat, true).await;
}

#[tokio::test]
async fn responses_blocking_injected_tool_round_trip() {
    reference(Api::Responses, false).await;
}

#[tokio::test]
async fn responses_streaming_injected_tool_round_trip() {
    reference(Api::Responses, true).await;
}

// === failing tools ===

/// The model calls `tool` (answering with `result`), then answers with text; the client
/// request still succeeds and the invocation error is recorded.
async fn failing_tool(
    api: Api,
    stream: bool,
    tool: &str,
    f: impl FnOnce(McpConfig) -> McpConfig,
    result: Res,
    error: &str,
) -> Env {
    let e = env(&[tool], f).await;
    let id = format!("bmcp_coder_{tool}");
    let usages = reference_usage(api);
    let c1 = call("call_01", &id, "{}");
    e.upstream.push(api.answer(
        stream,
        &turn(&msg_id(api, 1), Some(T1), vec![c1.clone()], usages[0]).echo(&[&id]),
    ));
    e.upstream.push(api.answer(
        stream,
        &turn(&msg_id(api, 2), Some(T2), vec![], usages[1]).echo(&[&id]),
    ));
    let resp = send_req(&e, api, &api.request(stream, PROMPT)).await;
    let view = view_of(api, stream, &resp);
    assert_eq!(view.texts, expected_texts(api, stream, &[T1, T2]));
    assert_eq!(view.stop, final_stop(api));
    let reqs = e.upstream.requests();
    assert_eq!(reqs.len(), 2);
    assert_continuation(
        api,
        &reqs[1].json(),
        &msg_id(api, 1),
        Some(T1),
        &[c1],
        &[("call_01", result)],
    );
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, stream, &usages, Outcome::Completed);
    let rows = injected_rows(&e.rec);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_injected_row(
        &rows[0],
        &e,
        tool,
        "call_01",
        &msg_id(api, 1),
        "{}",
        Some(error),
    );
    // An executed call counts even when it failed.
    assert_eq!(injected_metric(&e, api, tool), 1.0);
    e
}

#[tokio::test]
async fn is_error_result_is_an_invocation_error_the_model_sees() {
    for api in APIS {
        for stream in [false, true] {
            let e = failing_tool(
                api,
                stream,
                "fail",
                |c| c,
                Res::IsError("permission denied"),
                "permission denied",
            )
            .await;
            assert_eq!(e.mcp.calls().len(), 1);
        }
    }
}

#[tokio::test]
async fn hanging_tool_times_out_and_the_model_sees_the_error() {
    for api in APIS {
        for stream in [false, true] {
            let e = failing_tool(
                api,
                stream,
                "hang",
                |c| c.tool_timeout(Duration::from_millis(200)),
                Res::Failed("aibridge: tool call failed: timed out after 0.2s".to_owned()),
                "timed out after 0.2s",
            )
            .await;
            // The timed-out request is cancelled on the server.
            e.mcp.wait_cancelled(1).await;
        }
    }
}

// === no injection ===

#[tokio::test]
async fn server_down_means_no_tools_and_the_request_is_forwarded_unchanged() {
    let upstream = MockUpstream::start().await;
    let config = McpConfig::new().server(McpServer::new("coder", McpTestServer::down_url().await));
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.mcp(config));
    bounded("mcp_ready", bridge.mcp_ready()).await;
    assert!(bridge.mcp_tools().is_empty());
    let mut n = 0;
    for api in APIS {
        for stream in [false, true] {
            let t = turn(&msg_id(api, 1), Some(T2), vec![], reference_usage(api)[0]);
            upstream.push(api.answer(stream, &t));
            let body = api.request(stream, PROMPT);
            let resp = bounded("response", send(&bridge, post(api.path(), body.clone()))).await;
            assert_eq!(resp.status, StatusCode::OK);
            n += 1;
            let reqs = upstream.requests();
            assert_eq!(reqs.len(), n);
            assert_eq!(
                reqs[n - 1].body,
                Bytes::from(body),
                "{api:?} stream={stream}: the body must be forwarded unchanged"
            );
        }
    }
    bounded("the ends", rec.wait_for_ended(n)).await;
    assert!(rec.tool_usages().is_empty());
}

#[tokio::test]
async fn haiku_models_get_no_injected_tools_blocking_and_streaming() {
    let e = env(&[TOOL], |c| c).await;
    for stream in [false, true] {
        let api = Api::Messages;
        let t = turn("msg_h", Some(T2), vec![], reference_usage(api)[0]);
        e.upstream.push(api.answer(stream, &t));
        let body = api.request_with(stream, PROMPT, "claude-haiku-4-5-20251001");
        let resp = send_req(&e, api, &body).await;
        assert!(!resp.text().contains("bmcp_"));
        let reqs = e.upstream.requests();
        assert_eq!(reqs.last().unwrap().body, Bytes::from(body));
    }
    // A custom predicate replaces the default.
    let e = env(&[TOOL], |c| {
        c.skip_injection_when(|m| m.starts_with("gpt-4.1"))
    })
    .await;
    for (api, injected) in [(Api::Chat, false), (Api::Responses, true)] {
        let t = turn(&msg_id(api, 1), Some(T2), vec![], reference_usage(api)[0]);
        e.upstream.push(api.answer(false, &t));
        let body = api.request(false, PROMPT);
        send_req(&e, api, &body).await;
        let sent = e.upstream.requests().last().unwrap().json();
        assert_eq!(
            tool_names(api, &sent).contains(&TOOL_ID.to_owned()),
            injected,
            "{api:?}"
        );
    }
    assert!(e.mcp.calls().is_empty());
}

#[tokio::test]
async fn haiku_on_chat_and_responses_gets_the_injected_tools() {
    // The default predicate skips only Messages: Copilot's `claude-haiku-4.5` through
    // Chat Completions or Responses gets the tools.
    let e = env(&[TOOL], |c| c).await;
    for api in [Api::Chat, Api::Responses] {
        let t = turn(&msg_id(api, 1), Some(T2), vec![], reference_usage(api)[0]);
        e.upstream.push(api.answer(false, &t));
        let body = api.request_with(false, PROMPT, "claude-haiku-4.5");
        send_req(&e, api, &body).await;
        let sent = e.upstream.requests().last().unwrap().json();
        assert!(
            tool_names(api, &sent).contains(&TOOL_ID.to_owned()),
            "{api:?}: {sent}"
        );
    }
}

/// Every upstream call of a tool loop reports to the breaker: an overload error event
/// opening the second call's stream (after the first call's content was relayed) trips a
/// breaker of threshold 1, and a half-open probe whose loop made two successful calls
/// closes a breaker that needs two successes.
#[tokio::test]
async fn the_breaker_hears_every_call_of_the_loop() {
    use aibridge::provider::{CircuitBreakerConfig, RetryConfig};
    let api = Api::Messages;
    let upstream = MockUpstream::start().await;
    let mcp = McpTestServer::start(&[TOOL]).await;
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let open = Duration::from_millis(50);
    let cfg = CircuitBreakerConfig::default()
        .with_failure_threshold(1)
        .with_open_timeout(open)
        .with_half_open_max_requests(2);
    let config = McpConfig::new().server(McpServer::new("coder", mcp.url()));
    let (bridge, rec) = bridge_with(|b| {
        let p = anthropic(&upstream.base_url())
            .with_retry(RetryConfig::default().with_max_retries(0))
            .with_circuit_breaker(cfg);
        b.provider(p).metrics(metrics).mcp(config)
    });
    bounded("mcp_ready", bridge.mcp_ready()).await;
    let e = Env {
        upstream,
        mcp,
        bridge,
        rec,
        reg,
    };
    let u = reference_usage(api);
    let c1 = call("call_01", TOOL_ID, ARGS);
    e.upstream
        .push(api.answer(true, &turn("msg_1", Some(T1), vec![c1], u[0])));
    e.upstream.push(support::MockResponse::sse(
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    ));
    let resp = send_req(&e, api, &api.request(true, PROMPT)).await;
    assert!(resp.text().contains("overloaded_error"), "{}", resp.text());
    assert_eq!(e.upstream.request_count(), 2);
    let state = || {
        prom::value(
            &e.reg,
            "circuit_breaker_state",
            &[
                ("provider", "anthropic"),
                ("endpoint", "/v1/messages"),
                ("model", api.model()),
            ],
        )
    };
    assert_eq!(state(), 1.0, "the second call's overload opened it");
    let rejected = bounded(
        "the rejection",
        send(&e.bridge, post(api.path(), api.request(false, PROMPT))),
    )
    .await;
    assert_eq!(rejected.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.upstream.request_count(), 2, "rejected before any call");
    // Half-open after the open timeout (time passing, not synchronisation).
    tokio::time::sleep(open).await;
    let c1 = call("call_01", TOOL_ID, ARGS);
    e.upstream
        .push(api.answer(false, &turn("msg_2", Some(T1), vec![c1], u[0])));
    e.upstream
        .push(api.answer(false, &turn("msg_3", Some(T2), vec![], u[1])));
    send_req(&e, api, &api.request(false, PROMPT)).await;
    assert_eq!(state(), 0.0, "two successful calls of the probe closed it");
}

// === a client tool and an injected tool in the same answer ===

async fn mixed(api: Api, stream: bool) {
    let e = env(&[TOOL], |c| c).await;
    let u = reference_usage(api)[0];
    let injected = call("call_inj", TOOL_ID, ARGS);
    let client = call("call_client", api.client_tool(), r#"{"path":"README.md"}"#);
    // The injected call comes first, so the client's call must be renumbered.
    e.upstream.push(api.answer(
        stream,
        &turn(&msg_id(api, 1), Some(T1), vec![injected, client.clone()], u),
    ));
    let resp = send_req(&e, api, &api.request(stream, PROMPT)).await;
    let view = view_of(api, stream, &resp);
    assert_eq!(view.texts, vec![T1.to_owned()]);
    assert_eq!(view.call_names(), vec![api.client_tool()]);
    let args: Value = serde_json::from_str(&view.calls[0].2).unwrap();
    assert_eq!(args, json!({"path": "README.md"}));
    assert_eq!(view.stop, tool_stop(api));
    // One upstream call; the injected call is not executed.
    assert_eq!(e.upstream.requests().len(), 1);
    assert!(e.mcp.calls().is_empty());
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, stream, &[u], Outcome::Completed);
    let rows = e.rec.tool_usages();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let client_row = rows.iter().find(|r| !r.injected).unwrap();
    assert_eq!(client_row.tool, api.client_tool());
    assert_eq!(client_row.tool_call_id, "call_client");
    let inj = rows.iter().find(|r| r.injected).unwrap();
    assert_injected_row(
        inj,
        &e,
        TOOL,
        "call_inj",
        &msg_id(api, 1),
        ARGS,
        Some("not executed: the response also called client tools"),
    );
    assert_eq!(injected_metric(&e, api, TOOL), 0.0);
}

#[tokio::test]
async fn client_and_injected_calls_in_one_answer_end_the_loop() {
    for api in APIS {
        for stream in [false, true] {
            mixed(api, stream).await;
        }
    }
}

// === the loop bound ===

async fn loop_bound(api: Api, stream: bool) {
    let e = env(&[TOOL], |c| c.max_iterations(2)).await;
    let us = [usage(100, 0, 10), usage(200, 0, 20), usage(300, 0, 30)];
    let calls: Vec<Call> = (1..=3)
        .map(|n| call(&format!("call_0{n}"), TOOL_ID, ARGS))
        .collect();
    let texts = ["step 1", "step 2", "step 3"];
    for n in 0..3 {
        // The upstream always calls the tool, even on the last call without it.
        e.upstream.push(api.answer(
            stream,
            &turn(
                &msg_id(api, n + 1),
                Some(texts[n]),
                vec![calls[n].clone()],
                us[n],
            ),
        ));
    }
    let client_body = api.request(stream, PROMPT);
    let resp = send_req(&e, api, &client_body).await;
    let view = view_of(api, stream, &resp);
    assert_eq!(view.texts, expected_texts(api, stream, &texts));
    assert!(view.calls.is_empty());
    // The leftover injected call is hidden and the stop reason rewritten.
    assert_eq!(view.stop, final_stop(api));
    assert_contains(&view.usage, &api.summed_usage(&us), "usage");

    let reqs = e.upstream.requests();
    assert_eq!(reqs.len(), 3, "exactly three upstream calls");
    assert_eq!(e.mcp.calls().len(), 1, "only the first call is executed");
    assert_injected(api, &reqs[1].json(), &[TOOL_ID]);
    let last = reqs[2].json();
    let client: Value = serde_json::from_str(&client_body).unwrap();
    // The client's own tools, exactly as sent; no tool_choice / parallel_tool_calls added.
    assert_eq!(last["tools"], client["tools"]);
    assert!(last.get("tool_choice").is_none(), "{last}");
    assert!(last.get("parallel_tool_calls").is_none(), "{last}");
    let limit = Res::Failed("aibridge: tool loop limit reached (2 iterations)".to_owned());
    assert_continuation(
        api,
        &last,
        &msg_id(api, 2),
        Some(texts[1]),
        &calls[1..2],
        &[("call_02", limit)],
    );
    // The whole history is kept: the first turn and its result precede.
    assert_continuation(
        api,
        &reqs[1].json(),
        &msg_id(api, 1),
        Some(texts[0]),
        &calls[..1],
        &[("call_01", Res::Ok("mock"))],
    );

    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, stream, &us, Outcome::Completed);
    let rows = injected_rows(&e.rec);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_injected_row(&rows[0], &e, TOOL, "call_01", &msg_id(api, 1), ARGS, None);
    for (n, row) in rows.iter().enumerate().skip(1) {
        assert_injected_row(
            row,
            &e,
            TOOL,
            &format!("call_0{}", n + 1),
            &msg_id(api, n + 1),
            ARGS,
            Some("tool loop limit reached"),
        );
    }
    assert_eq!(injected_metric(&e, api, TOOL), 1.0);
}

#[tokio::test]
async fn loop_bound_makes_one_last_call_with_the_clients_own_tools() {
    for api in APIS {
        for stream in [false, true] {
            loop_bound(api, stream).await;
        }
    }
}

// === determinism, filters, tool listing ===

#[tokio::test]
async fn same_request_gives_identical_upstream_bytes() {
    let e = env(&[TOOL, "echo", "fail"], |c| c).await;
    let mut n = 0;
    for api in APIS {
        for stream in [false, true] {
            let body = api.request(stream, PROMPT);
            for _ in 0..10 {
                let t = turn(&msg_id(api, 1), Some(T2), vec![], reference_usage(api)[0]);
                e.upstream.push(api.answer(stream, &t));
                send_req(&e, api, &body).await;
            }
            let reqs = e.upstream.requests();
            let bodies: Vec<&Bytes> = reqs[n..].iter().map(|r| &r.body).collect();
            n = reqs.len();
            assert_eq!(bodies.len(), 10);
            assert!(
                bodies.iter().all(|b| *b == bodies[0]),
                "{api:?} stream={stream}: upstream bodies differ"
            );
            let ids = [
                "bmcp_coder_coder_list_workspaces",
                "bmcp_coder_echo",
                "bmcp_coder_fail",
            ];
            assert_injected(api, &serde_json::from_slice(bodies[0]).unwrap(), &ids);
        }
    }
}

#[tokio::test]
async fn allow_and_deny_filter_the_injected_tools() {
    let all = [TOOL, "coder_delete_workspace", "echo"];
    let e = env_with(&all, |s| s.with_allow("^coder_").with_deny("delete"), |c| c).await;
    let ids: Vec<String> = e.bridge.mcp_tools().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, [TOOL_ID]);
    let api = Api::Messages;
    e.upstream.push(api.answer(
        false,
        &turn("msg_1", Some(T2), vec![], reference_usage(api)[0]),
    ));
    send_req(&e, api, &api.request(false, PROMPT)).await;
    assert_injected(api, &e.upstream.requests()[0].json(), &[TOOL_ID]);

    let e = env_with(&all, |s| s.with_deny("^echo$"), |c| c).await;
    let ids: Vec<String> = e.bridge.mcp_tools().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["bmcp_coder_coder_delete_workspace", TOOL_ID]);
}

#[tokio::test]
async fn mcp_tools_lists_sorted_ids_across_servers() {
    let zeta = McpTestServer::start(&["fail", "echo"]).await;
    let alpha = McpTestServer::start(&["echo", TOOL]).await;
    let upstream = MockUpstream::start().await;
    let config = McpConfig::new()
        .server(McpServer::new("zeta", zeta.url()))
        .server(McpServer::new("alpha", alpha.url()));
    let (bridge, _rec) = bridge(&upstream.base_url(), |b| b.mcp(config));
    bounded("mcp_ready", bridge.mcp_ready()).await;
    let tools = bridge.mcp_tools();
    let ids: Vec<&str> = tools.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "bmcp_alpha_coder_list_workspaces",
            "bmcp_alpha_echo",
            "bmcp_zeta_echo",
            "bmcp_zeta_fail"
        ]
    );
    let t = &tools[0];
    assert_eq!((t.server.as_str(), t.name.as_str()), ("alpha", TOOL));
    assert_eq!(t.description, "the coder_list_workspaces tool");
    // Chat appends them after the client's tools in that order.
    let api = Api::Chat;
    upstream.push(api.answer(
        false,
        &turn("c1", Some(T2), vec![], reference_usage(api)[0]),
    ));
    let resp = bounded(
        "response",
        send(&bridge, post(api.path(), api.request(false, PROMPT))),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_injected(api, &upstream.requests()[0].json(), &ids);
}

// === streaming while tools run ===

/// A streaming response read frame by frame.
struct Reader {
    body: aibridge::body::Body,
    buf: Vec<u8>,
}

impl Reader {
    async fn start(bridge: &RequestBridge, api: Api, body: String) -> Reader {
        let resp = bounded(
            "the response head",
            bridge.clone().oneshot(post(api.path(), body)),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Reader {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Reads until `pred` holds for everything read so far (bounded).
    async fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        bounded(what, async {
            while !pred(&self.text()) {
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.buf.extend_from_slice(&data);
                        }
                    }
                    other => panic!("the body ended ({other:?}) before {what}: {}", self.text()),
                }
            }
        })
        .await;
    }

    /// Reads to the end.
    async fn rest(mut self) -> Collected {
        let rest = bounded("the end of the body", self.body.collect())
            .await
            .unwrap()
            .to_bytes();
        self.buf.extend_from_slice(&rest);
        Collected {
            status: StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: Bytes::from(self.buf),
        }
    }
}

fn keep_alive_marker(api: Api) -> &'static str {
    match api {
        Api::Messages => "event: ping\n",
        Api::Chat | Api::Responses => ": keep-alive\n\n",
    }
}

/// The first half of `T1` as the SSE data carries it.
fn first_text_piece() -> String {
    T1[..T1.len() / 2].to_owned()
}

async fn keep_alive_while_the_tool_runs(api: Api) {
    let e = env(&["gated"], |c| {
        c.keep_alive_interval(Duration::from_millis(20))
    })
    .await;
    let usages = reference_usage(api);
    let c1 = call("call_01", "bmcp_coder_gated", "{}");
    e.upstream.push(api.answer(
        true,
        &turn(&msg_id(api, 1), Some(T1), vec![c1], usages[0]).echo(&["bmcp_coder_gated"]),
    ));
    e.upstream.push(api.answer(
        true,
        &turn(&msg_id(api, 2), Some(T2), vec![], usages[1]).echo(&["bmcp_coder_gated"]),
    ));
    let mut r = Reader::start(&e.bridge, api, api.request(true, PROMPT)).await;
    // The first iteration's text arrives while the tool cannot have finished: it waits for
    // `release`, which comes only after.
    let piece = first_text_piece();
    r.until("the first text", |t| t.contains(&piece)).await;
    e.mcp.wait_started(1).await;
    let marker = keep_alive_marker(api);
    let before = r.text().matches(marker).count();
    r.until("two keep-alives", |t| {
        t.matches(marker).count() >= before + 2
    })
    .await;
    assert!(!r.text().contains(T2), "the second iteration ran too early");
    assert_eq!(e.upstream.requests().len(), 1);
    e.mcp.release();
    let resp = r.rest().await;
    let view = view_of(api, true, &resp);
    assert_eq!(view.texts, expected_texts(api, true, &[T1, T2]));
    assert_eq!(view.stop, final_stop(api));
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, true, &usages, Outcome::Completed);
    let rows = injected_rows(&e.rec);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].invocation_error, None);
}

#[tokio::test]
async fn anthropic_streams_text_first_and_pings_while_the_tool_runs() {
    keep_alive_while_the_tool_runs(Api::Messages).await;
}

#[tokio::test]
async fn chat_streams_text_first_and_keeps_alive_while_the_tool_runs() {
    keep_alive_while_the_tool_runs(Api::Chat).await;
}

#[tokio::test]
async fn responses_streams_text_first_and_keeps_alive_while_the_tool_runs() {
    keep_alive_while_the_tool_runs(Api::Responses).await;
}

/// OpenAI streams a tool call without preamble text with the role in the first tool-call
/// chunk. When that call is injected, the chunk is relayed without it, so the client still
/// gets the role once (SDK accumulators take the message's `role` from it), before the tool
/// finishes.
#[tokio::test]
async fn chat_role_reaches_the_client_once_when_the_first_chunk_is_an_injected_call() {
    let api = Api::Chat;
    let e = env(&["gated"], |c| {
        c.keep_alive_interval(Duration::from_millis(20))
    })
    .await;
    let usages = reference_usage(api);
    let c1 = call("call_01", "bmcp_coder_gated", "{}");
    e.upstream
        .push(api.answer(true, &turn(&msg_id(api, 1), None, vec![c1], usages[0])));
    e.upstream
        .push(api.answer(true, &turn(&msg_id(api, 2), Some(T2), vec![], usages[1])));
    let mut r = Reader::start(&e.bridge, api, api.request(true, PROMPT)).await;
    r.until("a keep-alive", |t| t.contains(": keep-alive\n\n"))
        .await;
    e.mcp.wait_started(1).await;
    let first = support::parse_sse(r.text().as_bytes())[0].json();
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": null, "refusal": null})
    );
    e.mcp.release();
    let resp = r.rest().await;
    let view = view_of(api, true, &resp); // checks: exactly one role
    assert_eq!(view.texts, vec![T2.to_owned()]);
    assert_eq!(view.stop, "stop");
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, true, &usages, Outcome::Completed);
}

/// A Chat stream whose very first chunk is the injected call, without a role: nothing
/// visible was relayed when the tool starts, so the head and one keep-alive go out at
/// once; the role then comes from the next iteration's opening chunk.
#[tokio::test]
async fn chat_head_and_a_keep_alive_go_out_at_once_when_nothing_was_relayed() {
    let api = Api::Chat;
    // A long interval: only the immediate keep-alive can arrive while the tool waits.
    let e = env(&["gated"], |c| {
        c.keep_alive_interval(Duration::from_secs(3600))
    })
    .await;
    let usages = reference_usage(api);
    let c1 = call("call_01", "bmcp_coder_gated", "{}");
    let first = mcp_wire::chat_sse(&turn(&msg_id(api, 1), None, vec![c1], usages[0]));
    let roleless = first.replacen(r#""role":"assistant","#, "", 1);
    assert_ne!(first, roleless);
    e.upstream.push(support::MockResponse::sse(roleless));
    e.upstream
        .push(api.answer(true, &turn(&msg_id(api, 2), Some(T2), vec![], usages[1])));
    // The head arrives although the tool is still waiting.
    let mut r = Reader::start(&e.bridge, api, api.request(true, PROMPT)).await;
    r.until("a keep-alive", |t| t.contains(": keep-alive\n\n"))
        .await;
    e.mcp.wait_started(1).await;
    assert_eq!(r.text(), ": keep-alive\n\n", "only the keep-alive so far");
    e.mcp.release();
    let resp = r.rest().await;
    let view = view_of(api, true, &resp); // checks: exactly one role
    assert_eq!(view.texts, vec![T2.to_owned()]);
    assert_eq!(view.stop, "stop");
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, true, &usages, Outcome::Completed);
}

// === client disconnect during a tool call ===

async fn disconnect_streaming(api: Api) {
    let e = env(&["hang"], |c| c).await;
    let c1 = call("call_01", "bmcp_coder_hang", "{}");
    let u = reference_usage(api)[0];
    e.upstream
        .push(api.answer(true, &turn(&msg_id(api, 1), Some(T1), vec![c1], u)));
    let mut r = Reader::start(&e.bridge, api, api.request(true, PROMPT)).await;
    let piece = first_text_piece();
    r.until("the first text", |t| t.contains(&piece)).await;
    e.mcp.wait_started(1).await;
    drop(r);
    // The call is cancelled on the MCP server and the interception ends cancelled.
    e.mcp.wait_cancelled(1).await;
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, true, &[u], Outcome::Cancelled);
    assert_eq!(e.upstream.requests().len(), 1);
    // The interrupted call is recorded.
    let rows = injected_rows(&e.rec);
    assert_eq!(rows.len(), 1, "{api:?}: {rows:?}");
    assert_injected_row(
        &rows[0],
        &e,
        "hang",
        "call_01",
        &msg_id(api, 1),
        "{}",
        Some("cancelled"),
    );
}

#[tokio::test]
async fn client_disconnect_during_the_tool_call_cancels_streaming() {
    for api in APIS {
        disconnect_streaming(api).await;
    }
}

#[tokio::test]
async fn client_disconnect_during_the_tool_call_cancels_blocking() {
    for api in APIS {
        let e = env(&["hang"], |c| c).await;
        let c1 = call("call_01", "bmcp_coder_hang", "{}");
        let u = reference_usage(api)[0];
        e.upstream
            .push(api.answer(false, &turn(&msg_id(api, 1), Some(T1), vec![c1], u)));
        let bridge = e.bridge.clone();
        let client = tokio::spawn(async move {
            let _ = bridge
                .oneshot(post(api.path(), api.request(false, PROMPT)))
                .await;
        });
        e.mcp.wait_started(1).await;
        client.abort();
        e.mcp.wait_cancelled(1).await;
        bounded("the end", e.rec.wait_for_ended(1)).await;
        // The first response's prompt and token rows are kept.
        assert_records(&e, api, false, &[u], Outcome::Cancelled);
        let rows = injected_rows(&e.rec);
        assert_eq!(rows.len(), 1, "{api:?}: {rows:?}");
        assert_injected_row(
            &rows[0],
            &e,
            "hang",
            "call_01",
            &msg_id(api, 1),
            "{}",
            Some("cancelled"),
        );
    }
}

/// Keep-alives continue after the tool finished, while the next upstream call has not
/// produced a relayed event yet (the model "thinks" before its first byte).
async fn keep_alive_while_waiting_for_the_next_iteration(api: Api) {
    let e = env(&[TOOL], |c| {
        c.keep_alive_interval(Duration::from_millis(20))
    })
    .await;
    let usages = reference_usage(api);
    let c1 = call("call_01", TOOL_ID, ARGS);
    e.upstream
        .push(api.answer(true, &turn(&msg_id(api, 1), Some(T1), vec![c1], usages[0])));
    let (held, gate) = api
        .answer(true, &turn(&msg_id(api, 2), Some(T2), vec![], usages[1]))
        .held();
    e.upstream.push(held);
    let mut r = Reader::start(&e.bridge, api, api.request(true, PROMPT)).await;
    let piece = first_text_piece();
    r.until("the first text", |t| t.contains(&piece)).await;
    // The tool has run and the second upstream call is waiting for its head.
    e.upstream.wait_for_requests(2).await;
    let marker = keep_alive_marker(api);
    let before = r.text().matches(marker).count();
    r.until("keep-alives while the next call is pending", |t| {
        t.matches(marker).count() >= before + 2
    })
    .await;
    gate.release();
    let resp = r.rest().await;
    let view = view_of(api, true, &resp);
    assert_eq!(view.texts, expected_texts(api, true, &[T1, T2]));
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, true, &usages, Outcome::Completed);
}

#[tokio::test]
async fn keep_alives_continue_until_the_next_iteration_relays() {
    for api in APIS {
        keep_alive_while_waiting_for_the_next_iteration(api).await;
    }
}

// === more shapes ===

/// The first answer is only the injected call (no text); parallel injected calls run in
/// order and their results are appended in call order.
async fn tool_only_and_parallel(api: Api, stream: bool) {
    let e = env(&[TOOL, "echo"], |c| c).await;
    let usages = reference_usage(api);
    let c1 = call("call_01", TOOL_ID, ARGS);
    let c2 = call("call_02", "bmcp_coder_echo", r#"{"n":2}"#);
    e.upstream.push(api.answer(
        stream,
        &turn(
            &msg_id(api, 1),
            None,
            vec![c1.clone(), c2.clone()],
            usages[0],
        ),
    ));
    e.upstream
        .push(api.answer(stream, &turn(&msg_id(api, 2), Some(T2), vec![], usages[1])));
    let resp = send_req(&e, api, &api.request(stream, PROMPT)).await;
    let view = view_of(api, stream, &resp);
    assert_eq!(view.texts, vec![T2.to_owned()]);
    assert!(view.calls.is_empty());
    assert_contains(&view.usage, &api.summed_usage(&usages), "usage");
    let calls = e.mcp.calls();
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [TOOL, "echo"], "in call order");
    let reqs = e.upstream.requests();
    assert_eq!(reqs.len(), 2);
    assert_continuation(
        api,
        &reqs[1].json(),
        &msg_id(api, 1),
        None,
        &[c1, c2],
        &[
            ("call_01", Res::Ok("mock")),
            ("call_02", Res::Ok(r#"{"n":2}"#)),
        ],
    );
    bounded("the end", e.rec.wait_for_ended(1)).await;
    assert_records(&e, api, stream, &usages, Outcome::Completed);
    assert_eq!(injected_rows(&e.rec).len(), 2);
}

#[tokio::test]
async fn tool_only_answers_and_parallel_injected_calls() {
    for api in APIS {
        for stream in [false, true] {
            tool_only_and_parallel(api, stream).await;
        }
    }
}

/// Arguments that are not a JSON object are not sent; the model gets the error.
#[tokio::test]
async fn invalid_arguments_are_not_sent_to_the_server() {
    for api in [Api::Chat, Api::Responses] {
        for stream in [false, true] {
            let e = env(&[TOOL], |c| c).await;
            let usages = reference_usage(api);
            let c1 = call("call_01", TOOL_ID, "[1,2]");
            e.upstream.push(api.answer(
                stream,
                &turn(&msg_id(api, 1), Some(T1), vec![c1.clone()], usages[0]),
            ));
            e.upstream
                .push(api.answer(stream, &turn(&msg_id(api, 2), Some(T2), vec![], usages[1])));
            send_req(&e, api, &api.request(stream, PROMPT)).await;
            assert!(e.mcp.calls().is_empty());
            let reqs = e.upstream.requests();
            let reason = "invalid arguments: expected a JSON object, got an array";
            assert_continuation(
                api,
                &reqs[1].json(),
                &msg_id(api, 1),
                Some(T1),
                &[c1],
                &[(
                    "call_01",
                    Res::Failed(format!("aibridge: tool call failed: {reason}")),
                )],
            );
            bounded("the end", e.rec.wait_for_ended(1)).await;
            let rows = injected_rows(&e.rec);
            assert_eq!(rows.len(), 1);
            assert_injected_row(
                &rows[0],
                &e,
                TOOL,
                "call_01",
                &msg_id(api, 1),
                "[1,2]",
                Some(reason),
            );
            // Not executed: not counted.
            assert_eq!(injected_metric(&e, api, TOOL), 0.0);
        }
    }
}

/// Anthropic with extended thinking: the thinking block (with its signature) goes back to
/// the model in the assistant turn, is relayed to the client, and is recorded.
#[tokio::test]
async fn anthropic_thinking_blocks_are_kept_in_the_assistant_turn() {
    for stream in [false, true] {
        let api = Api::Messages;
        let e = env(&[TOOL], |c| c).await;
        let usages = reference_usage(api);
        let c1 = call("toolu_01", TOOL_ID, ARGS);
        let t1 = turn("msg_01", Some(T1), vec![c1.clone()], usages[0]);
        let thinking = "The user wants workspaces.";
        let first = if stream {
            // Insert a thinking block at index 0 and shift the others.
            let sse = mcp_wire::anthropic_sse(&t1)
                .replace(r#""index":1"#, r#""index":2"#)
                .replace(r#""index":0"#, r#""index":1"#);
            let block = format!(
                "event: content_block_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\nevent: content_block_stop\ndata: {}\n\n",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": thinking}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-abc"}}),
                json!({"type": "content_block_stop", "index": 0}),
            );
            let at = sse.find("event: content_block_start").unwrap();
            support::MockResponse::sse(format!("{}{block}{}", &sse[..at], &sse[at..]))
        } else {
            let mut v = mcp_wire::anthropic_json(&t1);
            v["content"].as_array_mut().unwrap().insert(
                0,
                json!({"type": "thinking", "thinking": thinking, "signature": "sig-abc"}),
            );
            support::MockResponse::json(200, v.to_string())
        };
        e.upstream.push(first);
        e.upstream
            .push(api.answer(stream, &turn("msg_02", Some(T2), vec![], usages[1])));
        let resp = send_req(&e, api, &api.request(stream, PROMPT)).await;
        assert!(!resp.text().contains("bmcp_"));
        if stream {
            // thinking (0), text (1), text of the second message (2).
            let starts: Vec<Value> = support::parse_sse(&resp.body)
                .iter()
                .filter(|e| e.event.as_deref() == Some("content_block_start"))
                .map(|e| e.json())
                .collect();
            let kinds: Vec<(u64, &str)> = starts
                .iter()
                .map(|s| {
                    (
                        s["index"].as_u64().unwrap(),
                        s["content_block"]["type"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(kinds, [(0, "thinking"), (1, "text"), (2, "text")]);
        }
        let second = e.upstream.requests()[1].json();
        let msgs = second["messages"].as_array().unwrap();
        assert_eq!(
            msgs[msgs.len() - 2]["content"][0],
            json!({"type": "thinking", "thinking": thinking, "signature": "sig-abc"})
        );
        assert_eq!(msgs[msgs.len() - 2]["content"][1]["text"], T1);
        assert_eq!(msgs[msgs.len() - 2]["content"][2]["id"], "toolu_01");
        bounded("the end", e.rec.wait_for_ended(1)).await;
        let thoughts = e.rec.model_thoughts();
        assert_eq!(thoughts.len(), 1);
        assert_eq!(thoughts[0].content, thinking);
        assert_eq!(thoughts[0].provider_response_id.as_deref(), Some("msg_01"));
    }
}

/// The second upstream call fails: a blocking client gets the upstream's error as is; a
/// streaming client, which already has the first iteration's bytes, gets one terminal
/// error event naming it. The first message's usage is recorded.
#[tokio::test]
async fn upstream_error_in_the_second_iteration() {
    for api in APIS {
        for stream in [false, true] {
            let e = env(&[TOOL], |c| c).await;
            let usages = reference_usage(api);
            let c1 = call("call_01", TOOL_ID, ARGS);
            e.upstream.push(api.answer(
                stream,
                &turn(&msg_id(api, 1), Some(T1), vec![c1], usages[0]),
            ));
            let error = match api {
                Api::Messages => {
                    json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 205429 tokens > 200000 maximum"}})
                }
                _ => {
                    json!({"error": {"message": "Input tokens exceed the configured limit", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
                }
            };
            e.upstream.push(
                support::MockResponse::json(400, error.to_string())
                    .header("x-should-retry", "false"),
            );
            let resp = bounded(
                "the response",
                send(&e.bridge, post(api.path(), api.request(stream, PROMPT))),
            )
            .await;
            let text = resp.text();
            assert!(!text.contains("bmcp_"), "{text}");
            let message = error["error"]["message"].as_str().unwrap();
            if stream {
                assert_eq!(resp.status, StatusCode::OK);
                let events = support::parse_sse(&resp.body);
                let last = events.last().unwrap();
                match api {
                    Api::Chat => assert!(last.json()["error"].is_object(), "{text}"),
                    _ => assert_eq!(last.event.as_deref(), Some("error"), "{text}"),
                }
                assert!(last.data.contains(message), "{}", last.data);
                assert!(text.contains(T1[..T1.len() / 2].trim()), "{text}");
                // The upstream's own error type (or code) and message, not a generic one.
                let ev = last.json();
                match api {
                    Api::Messages => {
                        assert_eq!(ev["error"]["type"], "invalid_request_error", "{ev}");
                        assert_eq!(ev["error"]["message"], message);
                    }
                    Api::Chat => {
                        assert_eq!(ev["error"]["type"], "invalid_request_error", "{ev}");
                        assert_eq!(ev["error"]["code"], "context_length_exceeded", "{ev}");
                        assert_eq!(ev["error"]["message"], message);
                    }
                    Api::Responses => {
                        assert_eq!(ev["code"], "context_length_exceeded", "{ev}");
                        assert_eq!(ev["message"], message);
                    }
                }
            } else {
                assert_eq!(resp.status, StatusCode::BAD_REQUEST);
                assert_eq!(resp.json(), error);
            }
            bounded("the end", e.rec.wait_for_ended(1)).await;
            assert_records(&e, api, stream, &usages[..1], Outcome::Failed);
            assert_eq!(injected_rows(&e.rec).len(), 1);
        }
    }
}

/// Copilot's Chat shapes: the injected call at tool-call index 1 with empty arguments, the
/// role repeated in every chunk, usage on the finish chunk, no usage-only chunk.
#[tokio::test]
async fn chat_copilot_shaped_stream_with_the_call_at_index_1() {
    let api = Api::Chat;
    let e = env(&[TOOL], |c| c).await;
    let chunk = |id: &str, delta: Value, finish: Value, usage: Value| {
        let mut c = json!({"id": id, "created": 1, "model": "gpt-4.1",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if !usage.is_null() {
            c["usage"] = usage;
        }
        format!("data: {c}\n\n")
    };
    let first = [
        chunk(
            "c1",
            json!({"role": "assistant", "content": "Checking."}),
            Value::Null,
            Value::Null,
        ),
        chunk(
            "c1",
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 1, "id": "call_cp", "type": "function", "function": {"name": TOOL_ID, "arguments": ""}}]}),
            Value::Null,
            Value::Null,
        ),
        chunk(
            "c1",
            json!({"role": "assistant", "content": null}),
            Value::from("tool_calls"),
            json!({"prompt_tokens": 25939, "completion_tokens": 58, "total_tokens": 25997, "prompt_tokens_details": {"cached_tokens": 25429}}),
        ),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    let second = [
        chunk(
            "c2",
            json!({"role": "assistant", "content": "Done."}),
            Value::Null,
            Value::Null,
        ),
        chunk(
            "c2",
            json!({"role": "assistant", "content": null}),
            Value::from("stop"),
            json!({"prompt_tokens": 26166, "completion_tokens": 39, "total_tokens": 26205, "prompt_tokens_details": {"cached_tokens": 25934}}),
        ),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    e.upstream.push(support::MockResponse::sse(first));
    e.upstream.push(support::MockResponse::sse(second));
    let resp = send_req(&e, api, &api.request(true, PROMPT)).await;
    let text = resp.text();
    assert!(
        !text.contains("bmcp_") && !text.contains("tool_calls\":["),
        "{text}"
    );
    let chunks: Vec<Value> = support::parse_sse(&resp.body)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| e.json())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Checking.Done.");
    let finishes: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finishes, ["stop"]);
    let usage: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["usage"].is_object())
        .map(|c| &c["usage"])
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["prompt_tokens"], 25939 + 26166);
    assert_eq!(usage[0]["completion_tokens"], 58 + 39);
    assert_eq!(
        e.mcp.calls(),
        vec![ReceivedCall {
            name: TOOL.to_owned(),
            arguments: json!({})
        }]
    );
    let second = e.upstream.requests()[1].json();
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(
        msgs[msgs.len() - 2],
        json!({"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_cp", "type": "function", "function": {"name": TOOL_ID, "arguments": ""}}]})
    );
    assert_eq!(
        msgs[msgs.len() - 1],
        json!({"role": "tool", "tool_call_id": "call_cp", "content": "mock"})
    );
    bounded("the end", e.rec.wait_for_ended(1)).await;
    let tokens = e.rec.token_usages();
    let rows: Vec<(u64, u64, u64)> = tokens
        .iter()
        .map(|t| (t.input_tokens, t.output_tokens, t.cache_read_input_tokens))
        .collect();
    assert_eq!(rows, [(510, 58, 25429), (232, 39, 25934)]);
    assert_eq!(injected_rows(&e.rec).len(), 1);
}

/// The client leaves after the tool ran, while the next upstream call waits for its
/// answer: that call is dropped at once (D8) and the interception ends cancelled.
#[tokio::test]
async fn client_disconnect_while_the_next_upstream_call_is_pending() {
    for api in APIS {
        let e = env(&[TOOL], |c| c).await;
        let usages = reference_usage(api);
        let c1 = call("call_01", TOOL_ID, ARGS);
        e.upstream
            .push(api.answer(true, &turn(&msg_id(api, 1), Some(T1), vec![c1], usages[0])));
        let (held, gate) = api
            .answer(true, &turn(&msg_id(api, 2), Some(T2), vec![], usages[1]))
            .held();
        e.upstream.push(held);
        let mut r = Reader::start(&e.bridge, api, api.request(true, PROMPT)).await;
        let piece = first_text_piece();
        r.until("the first text", |t| t.contains(&piece)).await;
        e.upstream.wait_for_requests(2).await;
        drop(r);
        bounded("the upstream call to be dropped", gate.closed()).await;
        bounded("the end", e.rec.wait_for_ended(1)).await;
        assert_records(&e, api, true, &usages[..1], Outcome::Cancelled);
        let rows = injected_rows(&e.rec);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].invocation_error, None);
    }
}
