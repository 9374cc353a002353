//! MCP per actor, black box: two actors with their own credentials for one real `rmcp`
//! streamable-HTTP server, through a bridge in front of the scripted loopback upstream.
//!
//! The server notes the `Authorization` header of every call and every session, answers
//! rejected credentials with 401, and notes the sessions closed with DELETE.
#![cfg(feature = "mcp")]

mod common;
mod mcp_support;
mod mcp_wire;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aibridge::mcp::{ActorHeaders, McpConfig, McpCredential, McpCredentials, McpServer};
use aibridge::metrics::Metrics;
use aibridge::provider::Secret;
use aibridge::recorder::MemoryRecorder;
use aibridge::{Actor, RequestBridge};
use common::*;
use http::StatusCode;
use http::header::AUTHORIZATION;
use mcp_support::McpTestServer;
use mcp_wire::{Api, Usage, call, turn};
use prometheus::Registry;
use support::MockUpstream;

/// The injected id of the reference tool (server `coder`, tool `coder_list_workspaces`).
pub const TOOL_ID: &str = "bmcp_coder_coder_list_workspaces";
const TOOL: &str = "coder_list_workspaces";
const ARGS: &str = r#"{"owner":"admin"}"#;
const SHARED: &str = "Bearer shared-token";

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn bearer(actor: &str) -> String {
    format!("Bearer {actor}-token")
}

struct Env {
    upstream: MockUpstream,
    mcp: McpTestServer,
    bridge: RequestBridge,
    rec: MemoryRecorder,
    reg: Registry,
}

/// A `coder` server (static header [`SHARED`]) and a bridge whose MCP configuration is
/// adjusted by `f`.
async fn env(f: impl FnOnce(McpConfig) -> McpConfig) -> Env {
    let upstream = MockUpstream::start().await;
    let mcp = McpTestServer::start(&[TOOL, "echo"]).await;
    let server = McpServer::new("coder", mcp.url()).with_header(AUTHORIZATION, Secret::new(SHARED));
    let config = f(McpConfig::new().server(server));
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.metrics(metrics).mcp(config));
    bounded("mcp_ready", bridge.mcp_ready()).await;
    Env {
        upstream,
        mcp,
        bridge,
        rec,
        reg,
    }
}

/// Per-actor headers for these actors: `Authorization: Bearer {actor}-token`.
fn headers_for(actors: &[&str]) -> ActorHeaders {
    actors.iter().fold(ActorHeaders::new(), |h, a| {
        h.with(*a, "coder", AUTHORIZATION, Secret::new(bearer(a)))
    })
}

fn usage() -> Usage {
    Usage {
        input: 10,
        cached: 0,
        output: 5,
    }
}

async fn send_as(e: &Env, actor: &str) -> Collected {
    let mut req = post(
        Api::Messages.path(),
        Api::Messages.request(false, "list my workspaces"),
    );
    req.extensions_mut().insert(Actor::new(actor));
    let resp = bounded("the response", send(&e.bridge, req)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    resp
}

/// One blocking Messages tool loop for `actor`: the model calls the reference tool once.
async fn tool_loop(e: &Env, actor: &str) {
    let n = e.upstream.request_count();
    let first = turn(
        &format!("msg_{n}a"),
        None,
        vec![call("toolu_1", TOOL_ID, ARGS)],
        usage(),
    );
    let second = turn(&format!("msg_{n}b"), Some("done"), vec![], usage());
    e.upstream.push(Api::Messages.answer(false, &first));
    e.upstream.push(Api::Messages.answer(false, &second));
    send_as(e, actor).await;
}

/// One plain request for `actor` (the model answers at once); returns the injected tool
/// names the upstream saw.
async fn plain(e: &Env, actor: &str) -> Vec<String> {
    let n = e.upstream.request_count();
    e.upstream.push(Api::Messages.answer(
        false,
        &turn(&format!("msg_{n}"), Some("hi"), vec![], usage()),
    ));
    send_as(e, actor).await;
    let reqs = e.upstream.requests();
    let body = reqs.last().unwrap().json();
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .filter(|n| n.starts_with("bmcp_"))
        .map(str::to_owned)
        .collect()
}

/// Asserts no session ever carried two credentials; returns the credentials of the
/// sessions in use.
fn session_credentials(mcp: &McpTestServer) -> Vec<String> {
    mcp.sessions()
        .into_iter()
        .map(|(id, auths)| {
            assert_eq!(auths.len(), 1, "session {id} was used with {auths:?}");
            auths.into_iter().next().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn each_actor_calls_with_its_own_credential_in_its_own_session() {
    let e = env(|c| c.credentials(headers_for(&["alice", "bob"]))).await;
    tool_loop(&e, "alice").await;
    tool_loop(&e, "bob").await;
    tool_loop(&e, "alice").await;
    // carol has no entry: the server's static headers, the shared session.
    tool_loop(&e, "carol").await;

    let auth: Vec<Option<String>> = e
        .mcp
        .call_auth()
        .into_iter()
        .map(|(tool, a)| {
            assert_eq!(tool, TOOL);
            a
        })
        .collect();
    assert_eq!(
        auth,
        [
            bearer("alice"),
            bearer("bob"),
            bearer("alice"),
            SHARED.to_owned()
        ]
        .map(Some)
    );
    // One session per credential: alice's second loop reused hers.
    let mut creds = session_credentials(&e.mcp);
    creds.sort();
    assert_eq!(creds, [bearer("alice"), bearer("bob"), SHARED.to_owned()]);

    ended(&e.rec, 4).await;
    let usages = e.rec.tool_usages();
    assert_eq!(usages.len(), 4);
    for u in &usages {
        assert!(u.injected && u.invocation_error.is_none(), "{u:?}");
        assert_eq!(u.tool, TOOL);
        assert_eq!(u.server_url.as_deref(), Some(e.mcp.url_string().as_str()));
    }
}

/// Refuses `carol`; everyone else uses the table.
struct RefuseCarol(ActorHeaders);

#[async_trait::async_trait]
impl McpCredentials for RefuseCarol {
    async fn credential(&self, actor: &Actor, server: &str) -> McpCredential {
        if actor.id() == "carol" {
            return McpCredential::refused("carol has no Coder account");
        }
        self.0.credential(actor, server).await
    }
}

#[tokio::test]
async fn a_rejected_or_refused_credential_removes_the_tools_for_that_actor_only() {
    let e = env(|c| c.credentials(RefuseCarol(headers_for(&["alice", "bob"])))).await;
    e.mcp.reject(&bearer("bob"));

    // bob: the server answers his credential with 401: no tools, no error.
    assert_eq!(plain(&e, "bob").await, Vec::<String>::new());
    // carol: refused by the host: no tools, no error.
    assert_eq!(plain(&e, "carol").await, Vec::<String>::new());
    // alice keeps them, and her calls work.
    assert_eq!(
        plain(&e, "alice").await,
        ["bmcp_coder_coder_list_workspaces", "bmcp_coder_echo"]
    );
    tool_loop(&e, "alice").await;
    assert_eq!(
        e.mcp.call_auth(),
        [(TOOL.to_owned(), Some(bearer("alice")))]
    );
    // dave (no entry) uses the shared session.
    assert_eq!(plain(&e, "dave").await.len(), 2);

    let at = |reason: &str| {
        prom::value(
            &e.reg,
            "mcp_actor_unavailable_total",
            &prom::at(&format!("server=coder,reason={reason}")),
        )
    };
    assert_eq!(at("failed"), 1.0);
    assert_eq!(at("refused"), 1.0);
    // bob's failure is remembered (backoff): a second request does not reconnect.
    let sessions_before = e.mcp.sessions().len();
    assert!(plain(&e, "bob").await.is_empty());
    assert_eq!(at("failed"), 2.0);
    assert_eq!(e.mcp.sessions().len(), sessions_before);
}

#[tokio::test]
async fn idle_sessions_are_closed_with_a_delete() {
    let e = env(|c| {
        c.credentials(headers_for(&["alice"]))
            .session_idle_timeout(Duration::from_millis(200))
    })
    .await;
    tool_loop(&e, "alice").await;
    let deleted = e.mcp.wait_deleted(1).await;
    let sessions = e.mcp.sessions();
    let alice: BTreeSet<String> = sessions
        .iter()
        .filter(|(_, a)| a.contains(&bearer("alice")))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(deleted, alice, "the idle session closed is alice's");
    // The shared session stays.
    assert_eq!(e.mcp.live_sessions(), 1);
    // alice comes back: a new session.
    tool_loop(&e, "alice").await;
    assert_eq!(e.mcp.call_auth().len(), 2);
    assert_eq!(
        session_credentials(&e.mcp)
            .iter()
            .filter(|c| **c == bearer("alice"))
            .count(),
        2
    );
}

#[tokio::test]
async fn the_live_session_bound_holds_under_many_actors() {
    const BOUND: usize = 3;
    let actors: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = actors.iter().map(String::as_str).collect();
    let e = env(|c| c.credentials(headers_for(&names)).max_sessions(BOUND)).await;
    for actor in &names {
        assert_eq!(plain(&e, actor).await.len(), 2, "{actor} gets the tools");
        // the shared session plus at most BOUND per-actor sessions
        assert!(
            e.mcp.live_sessions() <= BOUND + 1,
            "{} live sessions",
            e.mcp.live_sessions()
        );
    }
    assert_eq!(e.mcp.sessions().len(), 1 + names.len());
    let deleted = e.mcp.wait_deleted(names.len() - BOUND).await;
    assert_eq!(deleted.len(), names.len() - BOUND);
    // The most recent actors kept their sessions: user9 calls without reconnecting.
    let before = e.mcp.sessions().len();
    tool_loop(&e, "user9").await;
    assert_eq!(e.mcp.sessions().len(), before);
    assert_eq!(
        e.mcp.call_auth(),
        [(TOOL.to_owned(), Some(bearer("user9")))]
    );
}
