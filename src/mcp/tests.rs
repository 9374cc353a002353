//! Registry tests against real rmcp streamable-HTTP servers on loopback.

use std::{future::Future, sync::Arc, sync::atomic::Ordering, time::Duration};

use http::{HeaderName, Method, header};
use serde_json::{Map, Value, json};

use super::{
    McpConfig, McpRegistry, McpServer,
    test_server::{MockTools, RPC_ERROR_MESSAGE, TestServer, tool, tool_with_schema, url},
    tools::InjectedTool,
    tools::ToolSet,
};
use crate::provider::Secret;

/// Upper bound for anything the tests wait for.
const WAIT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits until the published tool set satisfies `pred`.
async fn wait_for(
    registry: &McpRegistry,
    what: &str,
    pred: impl Fn(&ToolSet) -> bool,
) -> Arc<ToolSet> {
    let mut rx = registry.subscribe();
    bounded(what, rx.wait_for(|set| pred(set)))
        .await
        .unwrap()
        .clone()
}

fn ids(set: &ToolSet) -> Vec<&str> {
    set.tools().iter().map(|t| t.id.as_str()).collect()
}

fn args(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

fn server(name: &str, srv: &TestServer) -> McpServer {
    McpServer::new(name, srv.url())
}

async fn started(config: McpConfig) -> Arc<McpRegistry> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    config.validate().unwrap();
    let registry = McpRegistry::start(config, None);
    bounded("ready", registry.ready()).await;
    registry
}

fn injected(registry: &McpRegistry, id: &str) -> InjectedTool {
    registry
        .snapshot()
        .get(id)
        .cloned()
        .unwrap_or_else(|| panic!("no tool {id}"))
}

#[tokio::test]
async fn tools_are_listed_across_pages_sorted_by_id() {
    let names = ["t7", "t1", "t5", "t3", "t2", "t6", "t4"];
    let srv = TestServer::start(MockTools::paged(&names, 3)).await;
    let registry = started(McpConfig::new().server(server("paged", &srv))).await;
    let set = registry.snapshot();
    assert_eq!(
        ids(&set),
        [
            "bmcp_paged_t1",
            "bmcp_paged_t2",
            "bmcp_paged_t3",
            "bmcp_paged_t4",
            "bmcp_paged_t5",
            "bmcp_paged_t6",
            "bmcp_paged_t7"
        ]
    );
    assert_eq!(srv.tools.list_calls.load(Ordering::SeqCst), 3, "3 pages");
    let t = set.get("bmcp_paged_t4").unwrap();
    assert_eq!((t.name.as_str(), t.server.as_str()), ("t4", "paged"));
    assert_eq!(t.server_url, srv.url().to_string());
    assert_eq!(t.description.as_deref(), Some("the t4 tool"));
    assert_eq!(t.input_schema.get(), r#"{"properties":{},"type":"object"}"#);
    let info = registry.tools();
    assert_eq!(info.len(), 7);
    assert_eq!(info[0].id, "bmcp_paged_t1");
    assert_eq!(info[0].name, "t1");
    registry.shutdown().await;
}

#[tokio::test]
async fn allow_and_deny_filter_original_names_deny_wins() {
    let srv = TestServer::start(MockTools::new(&[
        "list_a",
        "list_secret",
        "get_b",
        "delete_c",
    ]))
    .await;
    let registry = started(
        McpConfig::new().server(
            server("s", &srv)
                .with_allow("^list_")
                .with_allow("^get_")
                .with_deny("secret"),
        ),
    )
    .await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_s_get_b", "bmcp_s_list_a"]);
    registry.shutdown().await;
}

#[tokio::test]
async fn invalid_ids_and_non_object_schemas_are_skipped() {
    let long = "l".repeat(60);
    let srv = TestServer::start(MockTools::with_tools(vec![
        tool("dotted.name"),
        tool(&long),
        tool_with_schema("stringly", json!({"type": "string"})),
        tool_with_schema("untyped", json!({"properties": {}})),
        tool("fine"),
    ]))
    .await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_s_fine"]);
    registry.shutdown().await;
}

#[tokio::test]
async fn duplicate_ids_across_servers_first_configured_wins() {
    // server `a_b` + tool `c` and server `a` + tool `b_c` both give `bmcp_a_b_c`.
    let first = TestServer::start(MockTools::new(&["c"])).await;
    let second = TestServer::start(MockTools::new(&["b_c", "d"])).await;
    let registry = started(
        McpConfig::new()
            .server(server("a_b", &first))
            .server(server("a", &second)),
    )
    .await;
    let set = registry.snapshot();
    assert_eq!(ids(&set), ["bmcp_a_b_c", "bmcp_a_d"]);
    assert_eq!(set.get("bmcp_a_b_c").unwrap().server, "a_b");
    registry.shutdown().await;

    let registry = started(
        McpConfig::new()
            .server(server("a", &second))
            .server(server("a_b", &first)),
    )
    .await;
    let winner = injected(&registry, "bmcp_a_b_c");
    assert_eq!((winner.server.as_str(), winner.name.as_str()), ("a", "b_c"));
    registry.shutdown().await;
}

#[tokio::test]
async fn server_down_at_start_does_not_block_and_joins_when_up() {
    let addr = TestServer::unused_addr().await;
    let up = TestServer::start(MockTools::new(&["x"])).await;
    let registry = McpRegistry::start(
        McpConfig::new()
            .server(McpServer::new("late", url(addr)))
            .server(server("up", &up)),
        None,
    );
    // `start` returned without waiting; `ready` resolves after the first (failed) attempt.
    bounded("ready", registry.ready()).await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_up_x"]);
    let tool = InjectedTool {
        id: "bmcp_late_y".into(),
        name: "y".into(),
        server: "late".into(),
        server_url: url(addr).to_string(),
        description: None,
        input_schema: serde_json::value::to_raw_value(&json!({"type": "object"})).unwrap(),
    };
    let outcome = registry.call(&tool, Map::new()).await;
    assert_eq!(
        outcome.invocation_error().as_deref(),
        Some("server unavailable")
    );

    let _late = TestServer::start_on(addr, MockTools::new(&["y"])).await;
    let set = wait_for(&registry, "the late server's tools", |s| {
        s.get("bmcp_late_y").is_some()
    })
    .await;
    assert_eq!(ids(&set), ["bmcp_late_y", "bmcp_up_x"]);
    let outcome = registry
        .call(&injected(&registry, "bmcp_late_y"), Map::new())
        .await;
    assert_eq!(
        outcome.invocation_error().as_deref(),
        Some("tool error -32602: unknown tool y")
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn list_changed_notification_triggers_a_refresh() {
    let srv = TestServer::start(MockTools::new(&["add_tool"])).await;
    let registry = started(
        McpConfig::new()
            .server(server("s", &srv))
            .refresh_interval(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_s_add_tool"]);
    let before = registry.snapshot();
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_add_tool"), Map::new())
        .await;
    assert_eq!(outcome.text(1000), "added");
    let set = wait_for(&registry, "the added tool", |s| {
        s.get("bmcp_s_added").is_some()
    })
    .await;
    assert_eq!(ids(&set), ["bmcp_s_add_tool", "bmcp_s_added"]);
    // Snapshots are immutable: the one taken before is unchanged.
    assert_eq!(ids(&before), ["bmcp_s_add_tool"]);
    registry.shutdown().await;
}

#[tokio::test]
async fn list_changed_outside_a_request_triggers_a_refresh() {
    let srv = TestServer::start(MockTools::new(&["a"])).await;
    let registry = started(
        McpConfig::new()
            .server(server("s", &srv))
            .refresh_interval(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_s_a"]);
    srv.tools.push_and_notify(tool("b")).await;
    let set = wait_for(&registry, "the pushed tool", |s| {
        s.get("bmcp_s_b").is_some()
    })
    .await;
    assert_eq!(ids(&set), ["bmcp_s_a", "bmcp_s_b"]);
    registry.shutdown().await;
}

#[tokio::test]
async fn tool_list_is_refreshed_every_refresh_interval() {
    let srv = TestServer::start(MockTools::new(&["a"])).await;
    let registry = started(
        McpConfig::new()
            .server(server("s", &srv))
            .refresh_interval(Duration::from_millis(200)),
    )
    .await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_s_a"]);
    // No notification: only the TTL brings the new tool in.
    srv.tools.push(tool("b"));
    let set = wait_for(&registry, "the TTL refresh", |s| {
        s.get("bmcp_s_b").is_some()
    })
    .await;
    assert_eq!(ids(&set), ["bmcp_s_a", "bmcp_s_b"]);
    registry.shutdown().await;
}

#[tokio::test]
async fn failed_refresh_keeps_the_previous_tools() {
    let srv = TestServer::start(MockTools::new(&["echo"])).await;
    let registry = started(
        McpConfig::new()
            .server(server("s", &srv))
            .refresh_interval(Duration::from_secs(3600)),
    )
    .await;
    let mut attempts = registry.attempts();
    let before = *attempts.borrow_and_update();
    srv.stop().await;
    // The failed call makes the task refresh at once; the refresh fails, the reconnection
    // attempt fails too.
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_echo"), Map::new())
        .await;
    let error = outcome.invocation_error().unwrap();
    assert!(error.starts_with("transport error: "), "{error}");
    assert!(!error.contains("WorkerTransport"), "{error}");
    bounded("a failed reconnection", attempts.wait_for(|n| *n > before))
        .await
        .unwrap();
    assert_eq!(ids(&registry.snapshot()), ["bmcp_s_echo"]);
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_echo"), Map::new())
        .await;
    assert_eq!(
        outcome.invocation_error().as_deref(),
        Some("server unavailable")
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn unreachable_server_has_its_tools_withdrawn_after_the_refresh_interval() {
    let srv = TestServer::start(MockTools::new(&["a"])).await;
    let other = TestServer::start(MockTools::new(&["b"])).await;
    let registry = started(
        McpConfig::new()
            .server(server("s", &srv))
            .server(server("o", &other))
            .refresh_interval(Duration::from_millis(300)),
    )
    .await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_o_b", "bmcp_s_a"]);
    srv.stop().await;
    let set = wait_for(&registry, "withdrawal", |s| s.get("bmcp_s_a").is_none()).await;
    assert_eq!(ids(&set), ["bmcp_o_b"]);
    registry.shutdown().await;
}

#[tokio::test]
async fn auth_header_is_sent_on_every_request() {
    let srv = TestServer::start_with_auth(MockTools::new(&["whoami"]), Some("Bearer good")).await;
    let registry =
        started(McpConfig::new().server(
            server("s", &srv).with_header(header::AUTHORIZATION, Secret::new("Bearer good")),
        ))
        .await;
    assert_eq!(ids(&registry.snapshot()), ["bmcp_s_whoami"]);
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_whoami"), Map::new())
        .await;
    assert_eq!(outcome.text(1000), "Bearer good");
    registry.shutdown().await;
    let requests = srv.requests.lock().unwrap().clone();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some("Bearer good"))
    );

    // Without the header the server answers 401: no tools, but `ready` still resolves.
    let registry = started(McpConfig::new().server(
        server("s", &srv).with_header(HeaderName::from_static("x-api-key"), Secret::new("wrong")),
    ))
    .await;
    assert!(registry.snapshot().is_empty());
    registry.shutdown().await;
}

#[tokio::test]
async fn call_returns_text_and_sends_original_name_and_arguments() {
    let srv = TestServer::start(MockTools::new(&["echo"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let outcome = registry
        .call(
            &injected(&registry, "bmcp_s_echo"),
            args(json!({"owner": "admin"})),
        )
        .await;
    assert!(!outcome.is_error());
    assert_eq!(outcome.invocation_error(), None);
    assert_eq!(outcome.text(1000), r#"{"owner":"admin"}"#);
    assert_eq!(
        outcome.anthropic_content(1000),
        json!([{"type": "text", "text": "{\"owner\":\"admin\"}"}])
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn is_error_result_is_reported_with_its_text() {
    let srv = TestServer::start(MockTools::new(&["fail"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_fail"), Map::new())
        .await;
    assert!(outcome.is_error());
    assert_eq!(
        outcome.invocation_error().as_deref(),
        Some("permission denied")
    );
    assert_eq!(outcome.text(1000), "Error: permission denied");
    assert_eq!(
        outcome.anthropic_content(1000),
        json!([{"type": "text", "text": "permission denied"}])
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn json_rpc_error_message_is_kept_verbatim() {
    let srv = TestServer::start(MockTools::new(&["rpc_error"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_rpc_error"), Map::new())
        .await;
    let expected = format!("tool error -32603: {RPC_ERROR_MESSAGE}");
    assert_eq!(outcome.invocation_error(), Some(expected.clone()));
    assert_eq!(
        outcome.text(1000),
        format!("aibridge: tool call failed: {expected}")
    );
    assert!(outcome.is_error());
    registry.shutdown().await;
}

#[tokio::test]
async fn hanging_tool_times_out_and_is_cancelled_on_the_server() {
    let srv = TestServer::start(MockTools::new(&["hang"])).await;
    let registry = started(
        McpConfig::new()
            .server(server("s", &srv))
            .tool_timeout(Duration::from_millis(300)),
    )
    .await;
    let cancelled = srv.tools.hang_cancelled_notify.notified();
    tokio::pin!(cancelled);
    cancelled.as_mut().enable();
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_hang"), Map::new())
        .await;
    assert_eq!(
        outcome.invocation_error().as_deref(),
        Some("timed out after 0.3s")
    );
    if !srv.tools.hang_cancelled.load(Ordering::SeqCst) {
        bounded("notifications/cancelled", cancelled).await;
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn dropping_a_call_cancels_it_on_the_server() {
    let srv = TestServer::start(MockTools::new(&["hang"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let cancelled = srv.tools.hang_cancelled_notify.notified();
    tokio::pin!(cancelled);
    cancelled.as_mut().enable();
    let tool = injected(&registry, "bmcp_s_hang");
    tokio::select! {
        _ = registry.call(&tool, Map::new()) => panic!("the call cannot finish"),
        () = srv.tools.hang_started.notified() => {}
    }
    if !srv.tools.hang_cancelled.load(Ordering::SeqCst) {
        bounded("notifications/cancelled", cancelled).await;
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn call_to_a_stopped_server_fails() {
    let srv = TestServer::start(MockTools::new(&["echo"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let tool = injected(&registry, "bmcp_s_echo");
    srv.stop().await;
    let outcome = bounded("the failed call", registry.call(&tool, Map::new())).await;
    assert!(outcome.is_error());
    let error = outcome.invocation_error().unwrap();
    assert!(!error.is_empty());
    assert!(
        outcome
            .text(1000)
            .starts_with("aibridge: tool call failed: ")
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn large_result_is_truncated_with_a_note() {
    let srv = TestServer::start(MockTools::new(&["big"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_big"), Map::new())
        .await;
    let note = "\n[aibridge: tool result truncated from 10000 to 1000 bytes]";
    let text = outcome.text(1000);
    assert_eq!(text, format!("{}{note}", "x".repeat(1000)));
    let content = outcome.anthropic_content(1000);
    assert_eq!(content[0]["text"].as_str().unwrap(), text);
    assert_eq!(outcome.text(20_000).len(), 10_000);
    registry.shutdown().await;
}

#[tokio::test]
async fn image_content_is_rendered_per_api() {
    let srv = TestServer::start(MockTools::new(&["image"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let outcome = registry
        .call(&injected(&registry, "bmcp_s_image"), Map::new())
        .await;
    assert_eq!(
        outcome.anthropic_content(1000),
        json!([
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ])
    );
    assert_eq!(outcome.text(1000), "look\n[image image/png not shown]");
    registry.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_and_stops_the_tasks() {
    let srv = TestServer::start(MockTools::new(&["echo"])).await;
    let registry = started(McpConfig::new().server(server("s", &srv))).await;
    let tool = injected(&registry, "bmcp_s_echo");
    bounded("shutdown", registry.shutdown()).await;
    assert_eq!(srv.count(&Method::DELETE), 1, "the session is deleted");
    assert!(registry.snapshot().is_empty());
    let outcome = registry.call(&tool, Map::new()).await;
    assert_eq!(
        outcome.invocation_error().as_deref(),
        Some("server unavailable")
    );
    // Idempotent.
    bounded("second shutdown", registry.shutdown()).await;
}

#[tokio::test]
async fn shutdown_stops_a_task_waiting_to_reconnect() {
    let addr = TestServer::unused_addr().await;
    let registry = started(McpConfig::new().server(McpServer::new("down", url(addr)))).await;
    bounded("shutdown", registry.shutdown()).await;
}

#[tokio::test]
async fn no_servers_is_ready_at_once_with_no_tools() {
    let registry = started(McpConfig::new()).await;
    assert!(registry.snapshot().is_empty());
    assert!(registry.tools().is_empty());
    registry.shutdown().await;
}

#[test]
fn start_outside_a_runtime_defers_the_tasks() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let srv = runtime.block_on(TestServer::start(MockTools::new(&["a"])));
    let registry = McpRegistry::start(McpConfig::new().server(server("s", &srv)), None);
    assert!(registry.snapshot().is_empty());
    runtime.block_on(async {
        bounded("ready", registry.ready()).await;
        assert_eq!(ids(&registry.snapshot()), ["bmcp_s_a"]);
        registry.shutdown().await;
    });
    drop(srv);
}
