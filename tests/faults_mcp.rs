//! MCP faults in the middle of a tool loop, through the bridge: the client disconnects
//! during a tool call (the call is cancelled on the MCP server and the interception ends
//! cancelled), and the MCP server crashes, hangs past the tool timeout or answers garbage
//! (the model gets an error tool result, the loop goes on, the client gets one complete
//! stream and the injected call is recorded with its error).
#![cfg(feature = "mcp")]

mod common;
mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aibridge::mcp::{McpConfig, McpServer};
use aibridge::recorder::{MemoryRecorder, Outcome};
use aibridge::{Body, RequestBridge};
use bytes::Bytes;
use common::{anthropic, bridge_with, ended, post, send};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use support::{MockResponse, MockUpstream, fixture};
use tokio::sync::Notify;
use tower::ServiceExt;

const STREAM_REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"list my workspaces"}]}"#;

/// What the test MCP server's tools do.
#[derive(Default)]
struct Behaviour {
    /// A call started (one stored permit).
    started: Notify,
    /// A `hang` call was cancelled by the client.
    cancelled: AtomicBool,
    cancelled_notify: Notify,
    /// Answer `tools/call` with garbage instead of JSON-RPC.
    garbage: AtomicBool,
}

#[derive(Clone)]
struct Handler(Arc<Behaviour>);

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema: JsonObject =
            serde_json::from_value(serde_json::json!({"type":"object","properties":{}})).unwrap();
        let schema = Arc::new(schema);
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("hang", "never answers", schema.clone()),
            Tool::new("echo", "echoes", schema),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.0.started.notify_one();
        if request.name == "hang" {
            context.ct.cancelled().await;
            self.0.cancelled.store(true, Ordering::SeqCst);
            self.0.cancelled_notify.notify_waiters();
            return Err(ErrorData::internal_error("cancelled", None));
        }
        Ok(CallToolResult::success(vec![ContentBlock::text("ok")]).into())
    }
}

/// An MCP server on loopback; `stop` kills it (every connection) like a crash.
struct McpTestServer {
    url: http::Uri,
    behaviour: Arc<Behaviour>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl McpTestServer {
    async fn start() -> Self {
        let behaviour = Arc::new(Behaviour::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let b = behaviour.clone();
        let mcp = StreamableHttpService::new(
            move || Ok(Handler(b.clone())),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None),
        );
        let b = behaviour.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (mcp, b) = (mcp.clone(), b.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (mcp, b) = (mcp.clone(), b.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let is_call = bytes.windows(10).any(|w| w == b"tools/call");
                        if is_call && b.garbage.load(Ordering::SeqCst) {
                            b.started.notify_one();
                            let resp = http::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(
                                    Full::new(Bytes::from_static(b"data: {not json at all\n\n"))
                                        .boxed(),
                                )
                                .unwrap();
                            return Ok::<_, Infallible>(resp);
                        }
                        let req = http::Request::from_parts(parts, Full::new(bytes));
                        let resp = mcp.handle(req).await;
                        Ok(resp.map(|b| b.map_err(|e| match e {}).boxed()))
                    }
                });
                conns.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            url,
            behaviour,
            task: Mutex::new(Some(task)),
        }
    }

    /// Kills the server: the listener and every open connection go away.
    async fn crash(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }
}

/// An upstream Messages stream whose model calls the injected tool `tool`.
fn calls(tool: &str) -> Bytes {
    let ev = |kind: &str, data: &str| format!("event: {kind}\ndata: {data}\n\n");
    let s = [
        ev("message_start", r#"{"type":"message_start","message":{"id":"msg_loop_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":20,"output_tokens":1}}}"#),
        ev("content_block_start", &format!(r#"{{"type":"content_block_start","index":0,"content_block":{{"type":"tool_use","id":"toolu_mcp_1","name":"{tool}","input":{{}}}}}}"#)),
        ev("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#),
        ev("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ev("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}"#),
        ev("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .concat();
    Bytes::from(s)
}

async fn setup(
    tool_timeout: Duration,
) -> (MockUpstream, McpTestServer, RequestBridge, MemoryRecorder) {
    let upstream = MockUpstream::start().await;
    let server = McpTestServer::start().await;
    let mcp = McpConfig::new()
        .server(McpServer::new("srv", server.url.clone()))
        .tool_timeout(tool_timeout)
        .keep_alive_interval(Duration::from_millis(100));
    let base = upstream.base_url();
    let (bridge, rec) = bridge_with(|b| b.provider(anthropic(&base)).mcp(mcp));
    tokio::time::timeout(Duration::from_secs(10), bridge.mcp_ready())
        .await
        .expect("MCP ready");
    let tools: Vec<String> = bridge.mcp_tools().iter().map(|t| t.id.clone()).collect();
    assert_eq!(tools, ["bmcp_srv_echo", "bmcp_srv_hang"]);
    (upstream, server, bridge, rec)
}

#[tokio::test]
async fn a_client_disconnect_during_a_tool_call_cancels_it_on_the_mcp_server() {
    let (upstream, server, bridge, rec) = setup(Duration::from_secs(60)).await;
    upstream.push(MockResponse::sse(calls("bmcp_srv_hang")));
    let resp = bridge
        .clone()
        .oneshot(post("/anthropic/v1/messages", STREAM_REQ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body: Body = resp.into_body();
    tokio::time::timeout(Duration::from_secs(10), server.behaviour.started.notified())
        .await
        .expect("the tool call started");
    // The head and a keep-alive arrived; the client goes away mid-call.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    let cancelled = server.behaviour.cancelled_notify.notified();
    drop(body);
    tokio::time::timeout(Duration::from_secs(1), cancelled)
        .await
        .expect("the MCP call is cancelled within a second");
    assert!(server.behaviour.cancelled.load(Ordering::SeqCst));
    ended(&rec, 1).await;
    let e = &rec.interceptions_ended()[0];
    assert_eq!(e.outcome, Outcome::Cancelled);
    assert_eq!(upstream.request_count(), 1, "no second upstream call");
}

/// Runs one loop whose tool call fails through `fault`; the loop must go on.
async fn failing_call_continues_the_loop(
    tool: &str,
    tool_timeout: Duration,
    fault: impl AsyncFnOnce(&McpTestServer),
) -> (MemoryRecorder, MockUpstream, String) {
    let (upstream, server, bridge, rec) = setup(tool_timeout).await;
    upstream.push(MockResponse::sse(calls(tool)));
    let (second, ctl) = MockResponse::streamed(200, "text/event-stream");
    upstream.push(second);
    let task = tokio::spawn({
        let bridge = bridge.clone();
        async move { send(&bridge, post("/anthropic/v1/messages", STREAM_REQ)).await }
    });
    fault(&server).await;
    // Well before the 60 s tool timeout of the crash case: the broken call fails on its own.
    let reqs = tokio::time::timeout(Duration::from_secs(10), upstream.wait_for_requests(2))
        .await
        .expect("the loop made its second upstream call");
    let final_stream = fixture("anthropic/text_stream.upstream.sse");
    ctl.send(final_stream.clone()).await.unwrap();
    ctl.finish();
    let resp = task.await.unwrap();
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
    assert!(
        !text.contains("bmcp_srv_"),
        "the injected call stays hidden: {text}"
    );
    // The model got an error tool result for its call.
    let second = reqs[1].json();
    let turns = second["messages"].as_array().unwrap();
    let result = &turns.last().unwrap()["content"][0];
    assert_eq!(result["type"], "tool_result", "{second}");
    assert_eq!(result["tool_use_id"], "toolu_mcp_1");
    assert_eq!(result["is_error"], true, "{result}");
    ended(&rec, 1).await;
    assert_eq!(rec.interceptions_ended()[0].outcome, Outcome::Completed);
    let tools = rec.tool_usages();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert!(tools[0].injected);
    let error = tools[0]
        .invocation_error
        .clone()
        .expect("the call's error is recorded");
    (rec, upstream, error)
}

#[tokio::test]
async fn an_mcp_server_that_crashes_mid_call_gives_an_error_result_and_the_loop_goes_on() {
    // The crash is noticed by the transport (the call's SSE stream breaks, its one
    // reconnection is refused), not by the tool timeout: that is 60 s here, far beyond the
    // 10 s the helper waits for the loop's second upstream call.
    let (_, _, error) = failing_call_continues_the_loop(
        "bmcp_srv_hang",
        Duration::from_secs(60),
        async |server: &McpTestServer| {
            tokio::time::timeout(Duration::from_secs(10), server.behaviour.started.notified())
                .await
                .expect("the tool call started");
            server.crash().await;
        },
    )
    .await;
    assert!(!error.is_empty());
    assert!(
        !error.contains("timed out") && !error.contains("timeout"),
        "the crash, not the timeout, ended the call: {error}"
    );
}

#[tokio::test]
async fn an_mcp_server_that_hangs_times_out_into_an_error_result() {
    let (_, _, error) = failing_call_continues_the_loop(
        "bmcp_srv_hang",
        Duration::from_millis(300),
        async |_: &McpTestServer| {},
    )
    .await;
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "{error}"
    );
}

#[tokio::test]
async fn an_mcp_server_that_answers_garbage_gives_an_error_result() {
    let (_, _, error) = failing_call_continues_the_loop(
        "bmcp_srv_echo",
        Duration::from_secs(5),
        async |server: &McpTestServer| server.behaviour.garbage.store(true, Ordering::SeqCst),
    )
    .await;
    assert!(!error.is_empty());
}
