//! In-process MCP servers (rmcp, streamable HTTP) on loopback, for the registry tests.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
        JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
        Tool,
    },
    service::{NotificationContext, RequestContext},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tokio::{net::TcpListener, sync::Notify, task::JoinSet};

/// The JSON-RPC error message of the `rpc_error` tool.
pub(super) const RPC_ERROR_MESSAGE: &str =
    "500 Internal error deleting template: unauthorized: rbac: forbidden";

/// The tools a test server lists and how it answers calls.
#[derive(Debug, Default)]
pub(super) struct MockTools {
    tools: Mutex<Vec<Tool>>,
    /// Tools per `tools/list` page (0 = all on one page).
    page_size: usize,
    /// `tools/list` requests served.
    pub(super) list_calls: AtomicUsize,
    /// Set when a `hang` call was cancelled by the client.
    pub(super) hang_cancelled: AtomicBool,
    pub(super) hang_cancelled_notify: Notify,
    /// Notified (one stored permit) when a `hang` call starts.
    pub(super) hang_started: Notify,
    /// The peer of the latest initialized session, for notifications outside requests.
    peer: Mutex<Option<rmcp::Peer<RoleServer>>>,
}

/// A running test server.
#[derive(Debug)]
pub(super) struct TestServer {
    pub(super) addr: SocketAddr,
    pub(super) tools: Arc<MockTools>,
    /// `(method, authorization header)` of every HTTP request.
    pub(super) requests: Arc<Mutex<Vec<(http::Method, Option<String>)>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Handler(Arc<MockTools>);

// === impl MockTools ===

impl MockTools {
    pub(super) fn new(names: &[&str]) -> Arc<Self> {
        Self::paged(names, 0)
    }

    pub(super) fn paged(names: &[&str], page_size: usize) -> Arc<Self> {
        Arc::new(Self {
            tools: Mutex::new(names.iter().map(|n| tool(n)).collect()),
            page_size,
            ..Self::default()
        })
    }

    pub(super) fn with_tools(tools: Vec<Tool>) -> Arc<Self> {
        Arc::new(Self {
            tools: Mutex::new(tools),
            ..Self::default()
        })
    }

    pub(super) fn push(&self, tool: Tool) {
        self.tools.lock().unwrap().push(tool);
    }

    /// Adds a tool and sends `notifications/tools/list_changed` outside any request (on the
    /// session's standalone SSE stream).
    pub(super) async fn push_and_notify(&self, tool: Tool) {
        self.push(tool);
        let peer = self.peer.lock().unwrap().clone().expect("a session");
        peer.notify_tool_list_changed().await.unwrap();
    }
}

/// A tool with an empty object schema.
pub(super) fn tool(name: &str) -> Tool {
    tool_with_schema(
        name,
        serde_json::json!({"type": "object", "properties": {}}),
    )
}

pub(super) fn tool_with_schema(name: &str, schema: serde_json::Value) -> Tool {
    let schema: JsonObject = serde_json::from_value(schema).unwrap();
    Tool::new(
        name.to_owned(),
        format!("the {name} tool"),
        Arc::new(schema),
    )
}

// === impl TestServer ===

impl TestServer {
    /// Serves `tools` on a fresh loopback port.
    pub(super) async fn start(tools: Arc<MockTools>) -> Self {
        Self::start_with_auth(tools, None).await
    }

    /// Serves `tools`; every request without `Authorization: {auth}` gets a 401.
    pub(super) async fn start_with_auth(tools: Arc<MockTools>, auth: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, tools, auth)
    }

    /// Serves `tools` on `addr` (a port used before), retrying the bind briefly.
    pub(super) async fn start_on(addr: SocketAddr, tools: Arc<MockTools>) -> Self {
        let mut tries = 0;
        let listener = loop {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            match socket.bind(addr).and_then(|()| socket.listen(64)) {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "rebinding test server");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        Self::serve(listener, tools, None)
    }

    /// A loopback address nobody listens on (for a server that is down).
    pub(super) async fn unused_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    pub(super) fn url(&self) -> http::Uri {
        url(self.addr)
    }

    /// How many requests with this method the server saw.
    pub(super) fn count(&self, method: &http::Method) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == method)
            .count()
    }

    /// Stops accepting and drops every open connection.
    pub(super) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    fn serve(listener: TcpListener, tools: Arc<MockTools>, auth: Option<&str>) -> Self {
        let addr = listener.local_addr().unwrap();
        let handler_tools = tools.clone();
        let mcp = StreamableHttpService::new(
            move || Ok(Handler(handler_tools.clone())),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let auth = auth.map(str::to_owned);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let (mcp, log, auth) = (mcp.clone(), log.clone(), auth.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (mcp, log, auth) = (mcp.clone(), log.clone(), auth.clone());
                    async move {
                        let seen = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        log.lock()
                            .unwrap()
                            .push((req.method().clone(), seen.clone()));
                        if auth.is_some() && seen != auth {
                            return Ok::<_, Infallible>(unauthorized());
                        }
                        Ok(mcp.handle(req).await)
                    }
                });
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            tools,
            requests,
            task,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn url(addr: SocketAddr) -> http::Uri {
    format!("http://{addr}/mcp").parse().unwrap()
}

fn unauthorized() -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, "Bearer realm=\"test\"")
        .body(Full::new(Bytes::from_static(b"unauthorized")).boxed())
        .unwrap()
}

// === impl Handler ===

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        *self.0.peer.lock().unwrap() = Some(context.peer);
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.0.list_calls.fetch_add(1, Ordering::SeqCst);
        let tools = self.0.tools.lock().unwrap().clone();
        if self.0.page_size == 0 {
            return Ok(ListToolsResult::with_all_items(tools));
        }
        let start: usize = request
            .and_then(|r| r.cursor)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let end = (start + self.0.page_size).min(tools.len());
        let mut page = ListToolsResult::with_all_items(tools[start..end].to_vec());
        if end < tools.len() {
            page.next_cursor = Some(end.to_string());
        }
        Ok(page)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = match request.name.as_ref() {
            "echo" => {
                let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
                CallToolResult::success(vec![ContentBlock::text(args.to_string())])
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("permission denied")]),
            "rpc_error" => {
                return Err(ErrorData::new(ErrorCode(-32603), RPC_ERROR_MESSAGE, None));
            }
            "hang" => {
                self.0.hang_started.notify_one();
                tokio::select! {
                    () = context.ct.cancelled() => {
                        self.0.hang_cancelled.store(true, Ordering::SeqCst);
                        self.0.hang_cancelled_notify.notify_waiters();
                        return Err(ErrorData::internal_error("cancelled", None));
                    }
                    () = tokio::time::sleep(Duration::from_secs(3600)) => {
                        CallToolResult::success(vec![])
                    }
                }
            }
            "big" => CallToolResult::success(vec![ContentBlock::text("x".repeat(10_000))]),
            "image" => CallToolResult::success(vec![
                ContentBlock::text("look"),
                ContentBlock::image("iVBORw0KGgo=", "image/png"),
            ]),
            "add_tool" => {
                self.0.push(tool("added"));
                context.peer.notify_tool_list_changed().await.unwrap();
                CallToolResult::success(vec![ContentBlock::text("added")])
            }
            "whoami" => {
                let auth = context
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| parts.headers.get(header::AUTHORIZATION))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                CallToolResult::success(vec![ContentBlock::text(auth)])
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
