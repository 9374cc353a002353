//! A small MCP server for the end-to-end tests and manual trials of MCP tool injection:
//! `rmcp` over streamable HTTP on loopback, with deterministic tools.
//!
//! ```text
//! cargo run --example mcp_test_server -- [--listen 127.0.0.1:0] [--log calls.jsonl]
//! ```
//!
//! Once bound it prints exactly one stdout line, `mcp test server listening on
//! http://ADDR/mcp`, and serves until killed. Every `tools/call` is appended to the `--log`
//! file as one JSON line `{"tool": …, "arguments": {…}}` before it is answered.
//!
//! Tools:
//! - `list_workspaces(owner)`: text `workspaces of {owner}: dev-1, dev-2`;
//! - `delete_workspace(name)`: text `deleted {name}` (for deny filters; never call it for real).

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
use serde_json::{Value, json};

#[derive(Clone)]
struct Tools {
    log: Option<Arc<Mutex<std::fs::File>>>,
}

fn tool(name: &str, description: &str, arg: &str) -> Tool {
    let schema: JsonObject = serde_json::from_value(json!({
        "type": "object",
        "properties": {arg: {"type": "string"}},
        "required": [arg],
    }))
    .expect("a JSON object");
    Tool::new(name.to_owned(), description.to_owned(), Arc::new(schema))
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            tool("list_workspaces", "List the workspaces of a user.", "owner"),
            tool("delete_workspace", "Delete a workspace.", "name"),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        if let Some(log) = &self.log {
            let line = json!({"tool": request.name, "arguments": args});
            let mut file = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = writeln!(file, "{line}");
            let _ = file.flush();
        }
        let arg = |name: &str| {
            args.get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let text = match request.name.as_ref() {
            "list_workspaces" => format!("workspaces of {}: dev-1, dev-2", arg("owner")),
            "delete_workspace" => format!("deleted {}", arg("name")),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

struct Args {
    listen: SocketAddr,
    log: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => out.listen = value.parse().map_err(|e| format!("--listen: {e}"))?,
            "--log" => out.log = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mcp_test_server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let log = match &args.log {
        None => None,
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                eprintln!("mcp_test_server: {}: {e}", path.display());
                return std::process::ExitCode::from(1);
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mcp_test_server: cannot bind {}: {e}", args.listen);
            return std::process::ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().map_or(args.listen, |a| a);
    let tools = Tools { log };
    let mcp = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_sse_keep_alive(None),
    );
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mcp test server listening on http://{addr}/mcp");
        let _ = out.flush();
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let mcp = mcp.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let mcp = mcp.clone();
                async move { Ok::<_, Infallible>(mcp.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
