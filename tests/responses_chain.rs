//! One Responses lifecycle through the tool loop, and the chain after it
//! (openai-responses.md S20, revised by issue 16): the client sees the FIRST upstream
//! response id on every event and on the final object; a later `previous_response_id`, or a
//! `/v1/responses/{id}` passthrough call, naming it reaches the upstream as the LAST upstream
//! id of that interception: through the bridge that ran the loop (its cache) and through a
//! second bridge sharing the same PostgreSQL database (the recorder's rows), as a replica or
//! a restarted process would.
#![cfg(all(feature = "postgres", feature = "mcp"))]

mod common;
mod mcp_support;
mod mcp_wire;
#[path = "../src/recorder/sql/tests/pg_server.rs"]
mod pg_server;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aibridge::RequestBridge;
use aibridge::mcp::{McpConfig, McpServer};
use aibridge::recorder::PostgresRecorder;
use common::{get, openai, post, send};
use mcp_support::McpTestServer;
use mcp_wire::{Api, Usage, call, turn};
use pg_server::PgServer;
use serde_json::Value;
use support::{MockResponse, MockUpstream, parse_sse};

const TOOL: &str = "coder_list_workspaces";
const TOOL_ID: &str = "bmcp_coder_coder_list_workspaces";

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn bridge(url: &str, base: &str, mcp: &McpTestServer) -> RequestBridge {
    let rec = Arc::new(PostgresRecorder::connect(url).await.unwrap());
    let config = McpConfig::new().server(McpServer::new("coder", mcp.url()));
    let bridge = RequestBridge::builder()
        .provider(openai(base))
        .recorder(rec.clone())
        .response_ids(rec)
        .mcp(config)
        .build()
        .unwrap();
    bounded("mcp_ready", bridge.mcp_ready()).await;
    bridge
}

/// Waits until the token usage of the upstream response `id` is in the database (records
/// are written after the response, through the queue).
async fn wait_recorded(url: &str, id: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM aibridge_token_usages WHERE provider_response_id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        if n == 1 {
            return;
        }
        assert!(Instant::now() < end, "token usage of {id} not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn u(input: u64, output: u64) -> Usage {
    Usage {
        input,
        cached: 0,
        output,
    }
}

/// The ids the client was shown: every `response.id` of a stream, or the blocking body's.
fn shown_ids(stream: bool, body: &[u8]) -> Vec<String> {
    if !stream {
        let v: Value = serde_json::from_slice(body).unwrap();
        return vec![v["id"].as_str().unwrap().to_owned()];
    }
    parse_sse(body)
        .iter()
        .filter_map(|e| e.json()["response"]["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn one_lifecycle_and_the_chain_across_bridges_sharing_a_database() {
    let server = PgServer::start();
    let url = server.create_database("chain").await;
    let upstream = MockUpstream::start().await;
    let mcp = McpTestServer::start(&[TOOL]).await;
    let base = upstream.base_url();
    let a = bridge(&url, &base, &mcp).await;
    let b = bridge(&url, &base, &mcp).await;
    let api = Api::Responses;
    for (stream, iterations) in [(true, 1), (false, 1), (true, 2), (false, 2)] {
        // `iterations` tool iterations, then the answer: upstream ids r_1 … r_n.
        let tag = format!("{}_{iterations}", if stream { "s" } else { "b" });
        let ids: Vec<String> = (1..=iterations + 1)
            .map(|n| format!("resp_{tag}_{n}"))
            .collect();
        for (n, id) in ids.iter().enumerate() {
            let calls = if n < iterations {
                vec![call(&format!("call_{n}"), TOOL_ID, r#"{"owner":"admin"}"#)]
            } else {
                vec![]
            };
            upstream.push(api.answer(stream, &turn(id, Some("text"), calls, u(10, 5))));
        }
        let resp = bounded(
            "the loop",
            send(
                &a,
                post(api.path(), api.request(stream, "list my workspaces")),
            ),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let (first, last) = (&ids[0], ids.last().unwrap());
        let shown = shown_ids(stream, &resp.body);
        assert!(!shown.is_empty());
        assert!(
            shown.iter().all(|id| id == first),
            "stream={stream} iterations={iterations}: one id, the first: {shown:?}"
        );
        wait_recorded(&url, last).await;
        // A follow-up naming the presented id reaches the upstream as the last id: through
        // the bridge that ran the loop, and through the other one (the database).
        for (name, bridge) in [("same bridge", &a), ("second bridge", &b)] {
            upstream.push(api.answer(false, &turn("resp_next", Some("ok"), vec![], u(1, 1))));
            let mut next: Value = serde_json::from_str(&api.request(false, "and now?")).unwrap();
            next["previous_response_id"] = Value::String(first.clone());
            let resp = bounded(
                "the follow-up",
                send(bridge, post(api.path(), next.to_string())),
            )
            .await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            let sent = upstream.requests().last().unwrap().json();
            assert_eq!(
                sent["previous_response_id"],
                last.as_str(),
                "{name}: stream={stream} iterations={iterations}"
            );
            // `/v1/responses/{id}` passthrough calls too.
            upstream.push(MockResponse::json(200, "{}"));
            let resp = bounded(
                "the passthrough",
                send(
                    bridge,
                    get(&format!("/openai/v1/responses/{first}/input_items")),
                ),
            )
            .await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            assert_eq!(
                upstream.requests().last().unwrap().path(),
                format!("/v1/responses/{last}/input_items"),
                "{name}"
            );
        }
    }
    // An id no interception presented is sent as it is.
    upstream.push(MockResponse::json(200, "{}"));
    send(&b, get("/openai/v1/responses/resp_unknown")).await;
    assert_eq!(
        upstream.requests().last().unwrap().path(),
        "/v1/responses/resp_unknown"
    );
}
