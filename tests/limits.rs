//! Limit 12: huge request bodies. The bytes buffered at once across all requests are
//! bounded by the bridge-wide budget (excess requests get a provider-shaped 503 with
//! `Retry-After`, small ones still pass), and recorded prompts and tool inputs are cut to
//! their caps with a marker and the original length.

mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aibridge::{Actor, RequestBridge};
use bytes::Bytes;
use common::{anthropic, bridge, bridge_with, ended, post, send};
use support::{MockResponse, MockUpstream, fixture};

const MIB: usize = 1024 * 1024;

/// Serves the bridge on `127.0.0.1:0` over HTTP/1.1, with an actor on every request.
async fn serve(bridge: RequestBridge) -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let svc = tower::ServiceBuilder::new()
        .map_request(|mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Actor::new("mallory"));
            req
        })
        .service(bridge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A Messages request whose prompt makes the body `size` bytes long.
fn messages_body(size: usize) -> Bytes {
    let head = r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":""#;
    let tail = r#""}]}"#;
    let mut body = String::with_capacity(size);
    body.push_str(head);
    body.push_str(&"x".repeat(size - head.len() - tail.len()));
    body.push_str(tail);
    Bytes::from(body)
}

/// POSTs `body` to the bridge's Anthropic Messages route (with a `Content-Length`, or
/// chunked when `chunked`); returns the status, `Retry-After` and the body.
async fn post_messages(
    client: &reqwest::Client,
    addr: SocketAddr,
    body: Bytes,
    chunked: bool,
) -> (u16, Option<String>, String) {
    let body = if chunked {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(256 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(futures::stream::iter(chunks))
    } else {
        reqwest::Body::from(body)
    };
    let resp = client
        .post(format!("http://{addr}/anthropic/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_bodies_over_the_buffer_budget_get_503_and_small_requests_pass() {
    let upstream = MockUpstream::start().await;
    let ok = fixture("anthropic/text_blocking.upstream.json");
    // The first two large requests are held at the upstream, keeping their bodies (and
    // their budget) in the bridge.
    let (first, gate1) = MockResponse::json(200, ok.clone()).held();
    let (second, gate2) = MockResponse::json(200, ok.clone()).held();
    upstream.push(first);
    upstream.push(second);
    let (bridge, rec) = bridge_with(|b| {
        b.provider(anthropic(&upstream.base_url()))
            .max_request_body(4 * MIB)
            .request_buffer_budget(7 * MIB)
    });
    let addr = serve(bridge).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let large = messages_body(3 * MIB);

    let held: Vec<_> = (0..2)
        .map(|_| {
            let (client, large) = (client.clone(), large.clone());
            tokio::spawn(async move { post_messages(&client, addr, large, false).await })
        })
        .collect();
    upstream.wait_for_requests(2).await;

    // 6 MiB of 7 are held: a third large body (declared or chunked) cannot get its share
    // within the default wait of 1 s, and is refused without reaching the upstream.
    for chunked in [false, true] {
        let start = Instant::now();
        let (status, retry_after, body) =
            post_messages(&client, addr, large.clone(), chunked).await;
        assert_eq!(status, 503, "chunked: {chunked}: {body}");
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(
            body,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"aibridge: too many request bytes are buffered; retry shortly"}}"#
        );
    }
    assert_eq!(upstream.request_count(), 2);

    // A small request still fits, at once.
    upstream.push(MockResponse::json(200, ok.clone()));
    let start = Instant::now();
    let (status, _, body) = post_messages(&client, addr, messages_body(1024), false).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    // The held requests finish; their budget comes back and a large body passes again.
    gate1.release();
    gate2.release();
    for h in held {
        let (status, _, body) = h.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    ended(&rec, 3).await;
    upstream.push(MockResponse::json(200, ok));
    let (status, _, body) = post_messages(&client, addr, large, true).await;
    assert_eq!(status, 200, "{body}");
    ended(&rec, 4).await;
    assert_eq!(
        rec.interceptions().len(),
        4,
        "refused requests are not recorded"
    );
}

#[tokio::test]
async fn a_budget_smaller_than_the_body_limit_is_refused_at_build() {
    let err = RequestBridge::builder()
        .provider(anthropic("http://127.0.0.1:1"))
        .recorder(aibridge::recorder::NoopRecorder)
        .max_request_body(2 * MIB)
        .request_buffer_budget(MIB)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid limit: request_buffer_budget (1048576 bytes) must be at least max_request_body (2097152 bytes)"
    );
}

#[tokio::test]
async fn recorded_prompts_and_tool_inputs_are_cut_to_their_caps() {
    let upstream = MockUpstream::start().await;
    // The model calls a client tool with a 100 KiB input.
    let input = serde_json::json!({"path": "y".repeat(100 * 1024)});
    let answer = serde_json::json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "write_file", "input": input}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5}
    });
    upstream.push(MockResponse::json(200, answer.to_string()));
    upstream.push(MockResponse::json(200, answer.to_string()));
    // Defaults: 64 KiB each.
    let (default_bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let body = messages_body(200 * 1024);
    let resp = send(
        &default_bridge,
        post("/anthropic/v1/messages", body.clone()),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    ended(&rec, 1).await;
    let sent = upstream.requests()[0].body.clone();
    assert_eq!(sent, body, "the whole prompt still goes upstream");

    let prompt = &rec.prompt_usages()[0].prompt;
    let prompt_len = 200 * 1024 - 70; // the body minus the JSON around the text
    let marker = format!("…[truncated: {prompt_len} bytes]");
    assert!(prompt.len() <= 64 * 1024, "{}", prompt.len());
    assert!(prompt.len() > 64 * 1024 - 64, "{}", prompt.len());
    assert!(
        prompt.ends_with(&marker),
        "{}",
        &prompt[prompt.len() - 64..]
    );
    assert!(
        prompt[..prompt.len() - marker.len()]
            .bytes()
            .all(|b| b == b'x')
    );

    let tool = &rec.tool_usages()[0];
    assert!(tool.input.len() <= 64 * 1024, "{}", tool.input.len());
    let v: serde_json::Value = serde_json::from_str(&tool.input).unwrap();
    assert_eq!(v["aibridge_truncated"], true);
    assert_eq!(v["original_bytes"], input.to_string().len());
    let prefix = v["prefix"].as_str().unwrap();
    assert!(input.to_string().starts_with(prefix));
    assert!(prefix.len() > 64 * 1024 - 128, "{}", prefix.len());

    // Configured caps; values within them are kept whole.
    let (small_caps, rec) = bridge(&upstream.base_url(), |b| {
        b.max_recorded_prompt(100)
            .max_recorded_tool_input(200 * 1024)
    });
    let resp = send(
        &small_caps,
        post("/anthropic/v1/messages", messages_body(1000)),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    ended(&rec, 1).await;
    let prompt = &rec.prompt_usages()[0].prompt;
    assert!(prompt.len() <= 100, "{prompt}");
    assert!(prompt.ends_with("…[truncated: 930 bytes]"), "{prompt}");
    assert_eq!(rec.tool_usages()[0].input, input.to_string());
}
