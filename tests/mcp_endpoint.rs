//! The MCP endpoint for editors, black box: a real `rmcp` client (the editor) talks MCP
//! streamable HTTP to `RequestBridge::mcp_endpoint` mounted behind a token-auth host on
//! loopback; the tools come from a real `rmcp` server.
#![cfg(feature = "mcp-server")]

mod common;
mod mcp_support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aibridge::mcp::{ActorHeaders, McpConfig, McpCredential, McpCredentials, McpServer};
use aibridge::metrics::Metrics;
use aibridge::policy::{Allow, Decision, Denial, DenyKind, Policy, PolicyRequest, ToolFilter};
use aibridge::provider::{Api, ProviderKind, Secret};
use aibridge::recorder::{MemoryRecorder, Outcome, ToolUsage};
use aibridge::{Actor, RequestBridge};
use common::*;
use http::header::AUTHORIZATION;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mcp_support::McpTestServer;
use prometheus::Registry;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientRequest, PingRequest};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;

const TOOL: &str = "coder_list_workspaces";
const TOOL_ID: &str = "bmcp_coder_coder_list_workspaces";
const EDITOR_UA: &str = "claude-cli/2.0.14 (external, cli)";

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The editor: notes `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct Editor {
    list_changed: Arc<Notify>,
}

impl ClientHandler for Editor {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed.notify_one();
    }
}

struct Env {
    mcp: McpTestServer,
    rec: MemoryRecorder,
    reg: Registry,
    /// `http://127.0.0.1:PORT/api/v2/aibridge/mcp`
    url: String,
    _bridge: RequestBridge,
}

/// A `coder` MCP server, a bridge with MCP adjusted by `f`, and a host serving the bridge's
/// MCP endpoint at `/api/v2/aibridge/mcp` behind token auth: `Authorization: Bearer
/// gw-{actor}` is the actor `{actor}`; anything else is 401.
async fn env(f: impl FnOnce(McpConfig) -> McpConfig) -> Env {
    env_with(f, |b| b).await
}

async fn env_with(
    f: impl FnOnce(McpConfig) -> McpConfig,
    host: impl FnOnce(aibridge::bridge::Builder) -> aibridge::bridge::Builder,
) -> Env {
    let mcp = McpTestServer::start(&[TOOL, "echo", "fail"]).await;
    let config = f(McpConfig::new().server(McpServer::new("coder", mcp.url())));
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, rec) = bridge("http://127.0.0.1:9", |b| {
        host(b.metrics(metrics).mcp(config))
    });
    bounded("mcp_ready", bridge.mcp_ready()).await;
    let endpoint = bridge.mcp_endpoint().expect("MCP is configured");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let endpoint = endpoint.clone();
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                let endpoint = endpoint.clone();
                async move {
                    let actor = req
                        .headers()
                        .get(AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer gw-"))
                        .map(Actor::new);
                    let path_ok = req.uri().path() == "/api/v2/aibridge/mcp";
                    match actor {
                        Some(actor) if path_ok => {
                            req.extensions_mut().insert(actor);
                            endpoint.oneshot(req).await
                        }
                        _ => Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(401)
                                .body(aibridge::Body::empty())
                                .unwrap(),
                        ),
                    }
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Env {
        mcp,
        rec,
        reg,
        url: format!("http://{addr}/api/v2/aibridge/mcp"),
        _bridge: bridge,
    }
}

/// An MCP session of `actor`'s editor with the endpoint.
async fn connect(e: &Env, actor: &str, editor: Editor) -> RunningService<RoleClient, Editor> {
    let http = reqwest::Client::builder()
        .user_agent(EDITOR_UA)
        .build()
        .unwrap();
    let config = StreamableHttpClientTransportConfig::with_uri(e.url.clone())
        .auth_header(format!("gw-{actor}"));
    let transport = StreamableHttpClientTransport::with_client(http, config);
    bounded("initialize", editor.serve(transport))
        .await
        .expect("the editor's session starts")
}

fn params(id: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(id.to_owned()).with_arguments(args.as_object().unwrap().clone())
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tool usages, in the order of their interceptions.
fn usages_in_order(rec: &MemoryRecorder) -> Vec<ToolUsage> {
    let order: Vec<_> = rec.interceptions().iter().map(|i| i.id).collect();
    let mut usages = rec.tool_usages();
    usages.sort_by_key(|u| order.iter().position(|id| *id == u.interception_id));
    usages
}

#[tokio::test]
async fn an_editor_lists_and_calls_the_tools_and_every_call_is_recorded() {
    let e = env(|c| c).await;
    let editor = connect(&e, "alice", Editor::default()).await;

    // ping
    bounded(
        "ping",
        editor.send_request(ClientRequest::PingRequest(PingRequest {
            method: Default::default(),
            extensions: Default::default(),
        })),
    )
    .await
    .expect("ping is answered");

    // tools/list: the bmcp_ ids with the server's schemas.
    let tools = bounded("tools/list", editor.list_all_tools())
        .await
        .unwrap();
    let ids: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(ids, [TOOL_ID, "bmcp_coder_echo", "bmcp_coder_fail"]);
    assert_eq!(
        Value::Object((*tools[0].input_schema).clone()),
        json!({
            "type": "object",
            "properties": {"owner": {"type": "string", "description": "the workspace owner"}},
            "required": ["owner"]
        })
    );
    assert_eq!(
        tools[0].description.as_deref(),
        Some("the coder_list_workspaces tool")
    );

    // tools/call: a result, an error result, an unknown tool.
    let ok = bounded(
        "call",
        editor.call_tool(params(TOOL_ID, json!({"owner": "admin"}))),
    )
    .await
    .unwrap();
    assert_eq!(text(&ok), "mock");
    assert_ne!(ok.is_error, Some(true));
    let failed = bounded(
        "call",
        editor.call_tool(params("bmcp_coder_fail", json!({}))),
    )
    .await
    .unwrap();
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(text(&failed), "permission denied");
    let unknown = bounded(
        "call",
        editor.call_tool(params("bmcp_coder_nope", json!({}))),
    )
    .await;
    let err = unknown.expect_err("an unknown tool is an error");
    assert!(err.to_string().contains("tool not available"), "{err}");

    // The server saw the two executable calls, with the original names.
    let calls = e.mcp.wait_calls(2).await;
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [TOOL, "fail"]);
    assert_eq!(calls[0].arguments, json!({"owner": "admin"}));

    // Every call recorded: an interception (api mcp), one injected tool usage, its end.
    ended(&e.rec, 3).await;
    let interceptions = e.rec.interceptions();
    assert_eq!(interceptions.len(), 3);
    for i in &interceptions {
        assert_eq!(i.api, Api::Mcp);
        assert_eq!(i.provider, ProviderKind::Mcp);
        assert_eq!(i.provider_name, "mcp");
        assert_eq!(i.initiator_id, "alice");
        assert_eq!(i.client, "Claude Code");
        assert_eq!(i.user_agent.as_deref(), Some(EDITOR_UA));
        assert!(
            i.client_session_id.is_some(),
            "the MCP session id is recorded"
        );
    }
    let usages = usages_in_order(&e.rec);
    let url = e.mcp.url_string();
    let seen: Vec<(&str, Option<&str>, &str, Option<&str>, bool)> = usages
        .iter()
        .map(|u| {
            (
                u.tool.as_str(),
                u.server_url.as_deref(),
                u.input.as_str(),
                u.invocation_error.as_deref(),
                u.injected,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (TOOL, Some(url.as_str()), r#"{"owner":"admin"}"#, None, true),
            (
                "fail",
                Some(url.as_str()),
                "{}",
                Some("permission denied"),
                true
            ),
            (
                "bmcp_coder_nope",
                None,
                "{}",
                Some("tool not available to this actor"),
                true
            ),
        ]
    );
    let outcomes: Vec<Outcome> = interceptions
        .iter()
        .map(|i| {
            e.rec
                .interceptions_ended()
                .into_iter()
                .find(|x| x.id == i.id)
                .unwrap()
                .outcome
        })
        .collect();
    assert_eq!(
        outcomes,
        [Outcome::Completed, Outcome::Completed, Outcome::Failed]
    );

    // Counted: the two executed calls.
    let count = |name: &str| {
        prom::value(
            &e.reg,
            "injected_tool_invocations_total",
            &[
                ("provider", "mcp"),
                ("model", ""),
                ("server", url.as_str()),
                ("name", name),
            ],
        )
    };
    assert_eq!(count(TOOL), 1.0);
    assert_eq!(count("fail"), 1.0);
    editor.cancel().await.unwrap();
}

#[tokio::test]
async fn the_editor_hears_list_changed_when_the_tool_set_changes() {
    let e = env(|c| c).await;
    let editor = Editor::default();
    let changed = editor.list_changed.clone();
    let session = connect(&e, "alice", editor).await;
    let before = session.list_all_tools().await.unwrap();
    assert_eq!(before.len(), 3);
    let notified = changed.notified();
    e.mcp.set_tools(&[TOOL, "echo", "fail", "gated"]).await;
    bounded("notifications/tools/list_changed", notified).await;
    let after = session.list_all_tools().await.unwrap();
    let ids: Vec<&str> = after.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        ids,
        [
            TOOL_ID,
            "bmcp_coder_echo",
            "bmcp_coder_fail",
            "bmcp_coder_gated"
        ]
    );
    session.cancel().await.unwrap();
}

/// alice has her own Coder credential; bob is refused.
struct Creds(ActorHeaders);

#[async_trait::async_trait]
impl McpCredentials for Creds {
    async fn credential(&self, actor: &Actor, server: &str) -> McpCredential {
        if actor.id() == "bob" {
            return McpCredential::refused("no Coder account");
        }
        self.0.credential(actor, server).await
    }
}

#[tokio::test]
async fn calls_use_the_actors_own_credential_and_a_denied_tool_is_not_executed() {
    let e = env(|c| {
        c.credentials(Creds(ActorHeaders::new().with(
            "alice",
            "coder",
            AUTHORIZATION,
            Secret::new("Bearer alice-coder"),
        )))
    })
    .await;
    let alice = connect(&e, "alice", Editor::default()).await;
    let bob = connect(&e, "bob", Editor::default()).await;

    assert_eq!(alice.list_all_tools().await.unwrap().len(), 3);
    assert!(
        bob.list_all_tools().await.unwrap().is_empty(),
        "bob gets no tools"
    );

    let ok = alice
        .call_tool(params(TOOL_ID, json!({"owner": "alice"})))
        .await
        .unwrap();
    assert_eq!(text(&ok), "mock");
    let denied = bob
        .call_tool(params(TOOL_ID, json!({"owner": "bob"})))
        .await;
    assert!(denied.is_err(), "bob's call is refused");

    // The server saw only alice's call, with her credential.
    assert_eq!(
        e.mcp.call_auth(),
        [(TOOL.to_owned(), Some("Bearer alice-coder".to_owned()))]
    );
    ended(&e.rec, 2).await;
    let by_actor: Vec<(String, Option<String>)> = e
        .rec
        .interceptions()
        .iter()
        .map(|i| {
            let u = e
                .rec
                .tool_usages()
                .into_iter()
                .find(|u| u.interception_id == i.id)
                .unwrap();
            (i.initiator_id.clone(), u.invocation_error)
        })
        .collect();
    assert!(
        by_actor.contains(&("alice".to_owned(), None)),
        "{by_actor:?}"
    );
    assert!(
        by_actor.contains(&(
            "bob".to_owned(),
            Some("tool not available to this actor".to_owned())
        )),
        "{by_actor:?}"
    );
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
}

/// alice may use only `coder_list_*`; mallory is denied everything.
struct ToolPolicy;

#[async_trait::async_trait]
impl Policy for ToolPolicy {
    async fn check(&self, req: &PolicyRequest<'_>) -> Decision {
        assert_eq!(req.api, Api::Mcp, "the endpoint asks with api mcp");
        if req.actor.id() == "mallory" {
            return Decision::Deny(Denial::new(
                DenyKind::Forbidden,
                "mallory may not use tools",
            ));
        }
        let mut allow = Allow::default();
        allow.mcp_tools = Some(ToolFilter::new(["^coder_list"]).unwrap());
        Decision::Allow(allow)
    }
}

#[tokio::test]
async fn the_policys_tool_filter_and_denials_apply_to_the_endpoint() {
    let e = env_with(|c| c, |b| b.policy(ToolPolicy)).await;
    let alice = connect(&e, "alice", Editor::default()).await;
    let listed = alice.list_all_tools().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(ids, [TOOL_ID], "only the allowed tool is listed");
    let ok = alice
        .call_tool(params(TOOL_ID, json!({"owner": "alice"})))
        .await
        .unwrap();
    assert_eq!(text(&ok), "mock");
    let refused = alice
        .call_tool(params("bmcp_coder_echo", json!({"x": 1})))
        .await;
    let err = refused.expect_err("a filtered tool is refused");
    assert!(err.to_string().contains("not allowed"), "{err}");

    let mallory = connect(&e, "mallory", Editor::default()).await;
    assert!(
        mallory.list_all_tools().await.is_err(),
        "mallory's list is denied"
    );
    let denied = mallory
        .call_tool(params(TOOL_ID, json!({"owner": "x"})))
        .await;
    assert!(denied.is_err());

    // Only alice's allowed call reached the server.
    assert_eq!(e.mcp.call_auth().len(), 1);
    assert_eq!(e.mcp.calls()[0].name, TOOL);
    ended(&e.rec, 3).await;
    let mut seen: Vec<(String, String, Outcome, Option<String>)> = e
        .rec
        .interceptions()
        .iter()
        .map(|i| {
            let u = e
                .rec
                .tool_usages()
                .into_iter()
                .find(|u| u.interception_id == i.id)
                .unwrap();
            let end = e
                .rec
                .interceptions_ended()
                .into_iter()
                .find(|x| x.id == i.id)
                .unwrap();
            (
                i.initiator_id.clone(),
                u.tool,
                end.outcome,
                u.invocation_error,
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    assert_eq!(
        seen,
        [
            (
                "alice".to_owned(),
                TOOL.to_owned(),
                Outcome::Completed,
                None
            ),
            (
                "alice".to_owned(),
                "echo".to_owned(),
                Outcome::Failed,
                Some("not executed: the tool is not allowed for this request by policy".to_owned())
            ),
            (
                "mallory".to_owned(),
                TOOL.to_owned(),
                Outcome::Denied,
                Some("mallory may not use tools".to_owned())
            ),
        ]
    );
    alice.cancel().await.unwrap();
    mallory.cancel().await.unwrap();
}

/// Claude Code 2.1 talks the stateless protocol (2026-07-28): no `initialize` on the
/// handler that answers; the request's own actor is used.
#[tokio::test]
async fn a_stateless_request_uses_the_requests_actor() {
    let e = env(|c| c).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(&e.url)
        .header("authorization", "Bearer gw-alice")
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
        )
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    assert!(body.contains(TOOL_ID), "{body}");
    assert!(!body.contains("another actor"), "{body}");
}
