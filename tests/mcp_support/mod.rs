//! Real MCP servers for the tool-loop tests: `rmcp` streamable-HTTP servers on a loopback
//! port, serving a fixed set of tools and recording every `tools/call` they receive.
//!
//! Tools (any subset can be served):
//!
//! | tool | answer |
//! | --- | --- |
//! | `coder_list_workspaces` | text `mock` (the spec's reference scenario) |
//! | `coder_delete_workspace`, `echo` | text = the arguments as compact JSON |
//! | `fail` | `isError: true`, text `permission denied` |
//! | `hang` | never answers; notices the client's cancellation |
//! | `gated` | answers text `released` once the test calls [`McpTestServer::release`] |
//!
//! Nothing here sleeps: tests wait on watch channels (`wait_started`, `wait_calls`,
//! `wait_cancelled`).
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Every tool the test server knows.
pub const ALL_TOOLS: &[&str] = &[
    "coder_list_workspaces",
    "coder_delete_workspace",
    "echo",
    "fail",
    "hang",
    "gated",
];

/// One `tools/call` the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCall {
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug)]
struct State {
    tools: std::sync::Mutex<Vec<Tool>>,
    /// Per call: the tool name and the `Authorization` header it came with.
    call_auth: watch::Sender<Vec<(String, Option<String>)>>,
    /// `Authorization` values answered with 401 before MCP sees the request.
    rejected: std::sync::Mutex<Vec<String>>,
    /// Per MCP session id: every `Authorization` value its requests carried.
    sessions: watch::Sender<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
    /// Session ids the client closed with DELETE.
    deleted: watch::Sender<std::collections::BTreeSet<String>>,
    /// Peers of initialized sessions (for `notifications/tools/list_changed`).
    peers: std::sync::Mutex<Vec<rmcp::Peer<RoleServer>>>,
    calls: watch::Sender<Vec<ReceivedCall>>,
    /// `hang`/`gated` calls that have started.
    started: watch::Sender<usize>,
    /// `hang`/`gated` calls cancelled by the client.
    cancelled: watch::Sender<usize>,
    release: Notify,
}

/// A running MCP test server. Dropping it stops it.
#[derive(Debug)]
pub struct McpTestServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Handler(Arc<State>);

fn schema(name: &str) -> Value {
    match name {
        "coder_list_workspaces" => json!({
            "type": "object",
            "properties": {"owner": {"type": "string", "description": "the workspace owner"}},
            "required": ["owner"]
        }),
        _ => json!({"type": "object", "properties": {}}),
    }
}

fn tool(name: &str) -> Tool {
    let schema: JsonObject = serde_json::from_value(schema(name)).unwrap();
    Tool::new(
        name.to_owned(),
        format!("the {name} tool"),
        Arc::new(schema),
    )
}

impl McpTestServer {
    /// Serves these tools (names from [`ALL_TOOLS`]) on `127.0.0.1:0`.
    pub async fn start(names: &[&str]) -> Self {
        for n in names {
            assert!(ALL_TOOLS.contains(n), "unknown test tool {n}");
        }
        let state = Arc::new(State {
            tools: std::sync::Mutex::new(names.iter().map(|n| tool(n)).collect()),
            call_auth: watch::Sender::new(Vec::new()),
            rejected: std::sync::Mutex::new(Vec::new()),
            sessions: watch::Sender::new(Default::default()),
            deleted: watch::Sender::new(Default::default()),
            peers: std::sync::Mutex::new(Vec::new()),
            calls: watch::Sender::new(Vec::new()),
            started: watch::Sender::new(0),
            cancelled: watch::Sender::new(0),
            release: Notify::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler_state = state.clone();
        let http_state = state.clone();
        let mcp = StreamableHttpService::new(
            move || Ok(Handler(handler_state.clone())),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None),
        );
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let mcp = mcp.clone();
                let state = http_state.clone();
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let mcp = mcp.clone();
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.serve(&mcp, req).await) }
                });
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// A loopback URL nobody listens on (an MCP server that is down).
    pub async fn down_url() -> http::Uri {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/mcp").parse().unwrap()
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> http::Uri {
        self.url_string().parse().unwrap()
    }

    pub fn url_string(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every `tools/call` received so far.
    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.state.calls.borrow().clone()
    }

    /// Waits (bounded) until at least `n` calls arrived.
    pub async fn wait_calls(&self, n: usize) -> Vec<ReceivedCall> {
        let mut rx = self.state.calls.subscribe();
        bounded("tools/call", rx.wait_for(|c| c.len() >= n))
            .await
            .unwrap()
            .clone()
    }

    /// Waits (bounded) until `n` `hang`/`gated` calls have started.
    pub async fn wait_started(&self, n: usize) {
        let mut rx = self.state.started.subscribe();
        bounded("tool start", rx.wait_for(|c| *c >= n))
            .await
            .unwrap();
    }

    /// Waits (bounded) until `n` `hang`/`gated` calls were cancelled by the client.
    pub async fn wait_cancelled(&self, n: usize) {
        let mut rx = self.state.cancelled.subscribe();
        bounded("tool cancellation", rx.wait_for(|c| *c >= n))
            .await
            .unwrap();
    }

    /// How many `hang`/`gated` calls were cancelled.
    pub fn cancelled(&self) -> usize {
        *self.state.cancelled.borrow()
    }

    /// Per call so far: the tool name and its `Authorization` header.
    pub fn call_auth(&self) -> Vec<(String, Option<String>)> {
        self.state.call_auth.borrow().clone()
    }

    /// Answers requests carrying `Authorization: {value}` with 401 from now on.
    pub fn reject(&self, value: &str) {
        self.state.rejected.lock().unwrap().push(value.to_owned());
    }

    /// Per MCP session id: the `Authorization` values its requests carried.
    pub fn sessions(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        self.state.sessions.borrow().clone()
    }

    /// Sessions opened and not closed with DELETE.
    pub fn live_sessions(&self) -> usize {
        let deleted = self.state.deleted.borrow().clone();
        self.state
            .sessions
            .borrow()
            .keys()
            .filter(|id| !deleted.contains(*id))
            .count()
    }

    /// Waits (bounded) until `n` sessions were closed with DELETE.
    pub async fn wait_deleted(&self, n: usize) -> std::collections::BTreeSet<String> {
        let mut rx = self.state.deleted.subscribe();
        bounded("session DELETE", rx.wait_for(|d| d.len() >= n))
            .await
            .unwrap()
            .clone()
    }

    /// Serves these tools from now on and sends `notifications/tools/list_changed` to
    /// every initialized session.
    pub async fn set_tools(&self, names: &[&str]) {
        *self.state.tools.lock().unwrap() = names.iter().map(|n| tool(n)).collect();
        let peers = self.state.peers.lock().unwrap().clone();
        for peer in peers {
            let _ = peer.notify_tool_list_changed().await;
        }
    }

    /// Lets one waiting (or the next) `gated` call answer.
    pub fn release(&self) {
        self.state.release.notify_one();
    }
}

impl Drop for McpTestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

impl State {
    /// The HTTP side: 401 for rejected credentials; notes which credential each session
    /// uses and which sessions were deleted; MCP for the rest.
    async fn serve(
        &self,
        mcp: &StreamableHttpService<Handler, LocalSessionManager>,
        req: http::Request<Incoming>,
    ) -> http::Response<http_body_util::combinators::BoxBody<bytes::Bytes, Infallible>> {
        use http_body_util::BodyExt;
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(a) = &auth
            && self.rejected.lock().unwrap().contains(a)
        {
            return http::Response::builder()
                .status(401)
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"unauthorized")).boxed())
                .unwrap();
        }
        let session = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let delete = req.method() == http::Method::DELETE;
        let resp = mcp.handle(req).await;
        let session = session.or_else(|| {
            resp.headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        if let Some(id) = session {
            self.sessions.send_modify(|s| {
                s.entry(id.clone())
                    .or_default()
                    .insert(auth.clone().unwrap_or_default());
            });
            if delete {
                self.deleted.send_modify(|d| {
                    d.insert(id);
                });
            }
        }
        resp
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        self.0.peers.lock().unwrap().push(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.0.tools.lock().unwrap().clone(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let args: Map<String, Value> = request.arguments.unwrap_or_default();
        let auth = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get(http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0
            .call_auth
            .send_modify(|c| c.push((name.clone(), auth)));
        self.0.calls.send_modify(|c| {
            c.push(ReceivedCall {
                name: name.clone(),
                arguments: Value::Object(args.clone()),
            });
        });
        let result = match name.as_str() {
            "coder_list_workspaces" => CallToolResult::success(vec![ContentBlock::text("mock")]),
            "coder_delete_workspace" | "echo" => {
                CallToolResult::success(vec![ContentBlock::text(Value::Object(args).to_string())])
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("permission denied")]),
            "hang" | "gated" => {
                self.0.started.send_modify(|n| *n += 1);
                let released = async {
                    if name == "gated" {
                        self.0.release.notified().await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = context.ct.cancelled() => {
                        self.0.cancelled.send_modify(|n| *n += 1);
                        return Err(ErrorData::internal_error("cancelled", None));
                    }
                    () = released => CallToolResult::success(vec![ContentBlock::text("released")]),
                }
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}
