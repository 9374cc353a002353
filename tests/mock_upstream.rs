//! Tests of the test support itself: the mock upstream server, the client logs and the
//! consistency of the Anthropic fixtures with their expectations.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{
    MockResponse, MockUpstream, NO_RESPONSE_QUEUED, client_log, compact_json, fixture,
    fixture_json, fixture_path, parse_sse,
};

/// Upper bound for awaiting an event; reaching it means the event never happened.
const BOUND: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(method: Method, url: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Sends raw bytes, reads until the server closes, returns everything read.
async fn raw_exchange(addr: SocketAddr, raw: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    bounded("raw response", stream.read_to_end(&mut out))
        .await
        .unwrap();
    out
}

/// Reads from `stream` until `buf` contains `needle`.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) {
    bounded("bytes from the mock", async {
        while !buf.windows(needle.len()).any(|w| w == needle) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before {needle:?} arrived");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
}

/// Splits a raw HTTP/1.1 response into (head, chunk payloads), decoding chunked encoding.
fn decode_chunked(raw: &[u8]) -> (String, Vec<Vec<u8>>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut rest = &raw[split + 4..];
    let mut chunks = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        chunks.push(rest[..size].to_vec());
        rest = &rest[size + 2..];
    }
    (head, chunks)
}

// ---------------------------------------------------------------------------------------------
// Mock upstream

#[tokio::test]
async fn answers_queued_responses_in_fifo_order_and_records_requests() {
    let mock = MockUpstream::start().await;
    assert_eq!(
        mock.base_url(),
        format!("http://127.0.0.1:{}", mock.addr().port())
    );
    mock.push(MockResponse::json(201, r#"{"first":true}"#).header("request-id", "req_1"));
    mock.push(MockResponse::sse("event: ping\ndata: {}\n\n"));
    assert_eq!(mock.pending_responses(), 2);

    let c = client();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/v1/messages?beta=true", mock.base_url()))
        .header("content-type", "application/json")
        .header("anthropic-beta", "a-2025,b-2026")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap();
    let first = c.request(req).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["content-type"], "application/json");
    assert_eq!(first.headers()["request-id"], "req_1");
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"first":true}"#);

    let second = c
        .request(request(
            Method::GET,
            &format!("{}/v1/models", mock.base_url()),
            "",
        ))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["content-type"], "text/event-stream");
    let body = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"event: ping\ndata: {}\n\n");

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, Method::POST);
    assert_eq!(reqs[0].path_and_query, "/v1/messages?beta=true");
    assert_eq!(reqs[0].path(), "/v1/messages");
    assert_eq!(reqs[0].query(), Some("beta=true"));
    assert_eq!(reqs[0].header("anthropic-beta"), Some("a-2025,b-2026"));
    assert_eq!(reqs[0].header_all("x-multi"), vec!["one", "two"]);
    assert_eq!(&reqs[0].body[..], b"{\"model\":\"m\"}");
    assert_eq!(reqs[0].json(), json!({"model": "m"}));
    assert!(reqs[0].body_complete);
    assert_eq!(reqs[1].method, Method::GET);
    assert_eq!(reqs[1].path_and_query, "/v1/models");
    assert_eq!(reqs[1].query(), None);
    assert!(reqs[1].body.is_empty());
    assert_eq!(mock.unanswered(), 0);
    assert_eq!(mock.pending_responses(), 0);
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn empty_queue_answers_500_and_counts_it() {
    let mock = MockUpstream::start().await;
    let resp = client()
        .request(request(
            Method::POST,
            &format!("{}/x", mock.base_url()),
            "{}",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], NO_RESPONSE_QUEUED.as_bytes());
    assert_eq!(mock.unanswered(), 1);
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn json_has_content_length_and_sse_is_chunked() {
    let mock = MockUpstream::start().await;
    mock.push(MockResponse::json(200, "{\"a\":1}"));
    mock.push(MockResponse::sse("data: x\n\n"));
    let get = "GET /a HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n";

    let raw = raw_exchange(mock.addr(), get).await;
    let text = String::from_utf8(raw).unwrap().to_ascii_lowercase();
    assert!(text.contains("\r\ncontent-length: 7\r\n"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.ends_with("\r\n\r\n{\"a\":1}"), "{text}");

    let raw = raw_exchange(mock.addr(), get).await;
    let (head, chunks) = decode_chunked(&raw);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(chunks.concat(), b"data: x\n\n");
}

#[tokio::test]
async fn chunked_sends_each_chunk_with_its_exact_size() {
    let mock = MockUpstream::start().await;
    let body = "0123456789abcdefghij"; // 20 bytes
    // 3 + 5 + 1 + 0 (ignored) + remainder 11.
    mock.push(MockResponse::sse(body).chunked(vec![3, 5, 1, 0]));
    // Sizes past the end are cut; nothing is left for a remainder chunk.
    mock.push(MockResponse::sse("abcdef").chunked(vec![4, 10]));
    let get = "GET / HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n";

    let (_, chunks) = decode_chunked(&raw_exchange(mock.addr(), get).await);
    let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 5, 1, 11]);
    assert_eq!(chunks.concat(), body.as_bytes());

    let (_, chunks) = decode_chunked(&raw_exchange(mock.addr(), get).await);
    assert_eq!(chunks, vec![b"abcd".to_vec(), b"ef".to_vec()]);
}

#[tokio::test]
async fn chunked_json_keeps_its_content_length_and_full_body() {
    let mock = MockUpstream::start().await;
    let body = fixture("anthropic/text_blocking.upstream.json");
    mock.push(MockResponse::json(200, body.clone()).chunked(vec![1, 2, 3, 50]));
    let resp = client()
        .request(request(Method::POST, &mock.base_url(), "{}"))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, body);
}

#[tokio::test]
async fn then_abort_delivers_the_bytes_then_a_body_error() {
    let mock = MockUpstream::start().await;
    mock.push(
        MockResponse::sse("event: a\ndata: 1\n\nevent: b\ndata: 2\n\n")
            .chunked(vec![10])
            .then_abort(),
    );
    let resp = client()
        .request(request(Method::POST, &mock.base_url(), "{}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut error = None;
    while let Some(frame) = bounded("a body frame", body.frame()).await {
        match frame {
            Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert_eq!(got, b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n");
    assert!(error.is_some(), "the body ended cleanly instead of failing");

    // Also on the wire: no terminating zero-size chunk.
    mock.push(MockResponse::sse("data: 1\n\n").then_abort());
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: mock\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = bounded("connection close", stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("data: 1\n\n"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");
}

#[tokio::test]
async fn streamed_body_is_driven_by_the_controller() {
    let mock = MockUpstream::start().await;
    let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
    mock.push(resp.header("x-request-id", "req_s"));
    let resp = client()
        .request(request(Method::POST, &mock.base_url(), "{}"))
        .await
        .unwrap();
    // The head arrived before any chunk was sent.
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-request-id"], "req_s");
    let mut body = resp.into_body();

    ctl.send("event: one\n\n").await.unwrap();
    let frame = bounded("first chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "event: one\n\n");
    ctl.send(Bytes::from_static(b"event: two\n\n"))
        .await
        .unwrap();
    let frame = bounded("second chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "event: two\n\n");
    assert!(!ctl.is_closed());
    ctl.finish();
    let rest = bounded("clean end", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn streamed_abort_fails_the_client_body() {
    let mock = MockUpstream::start().await;
    let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
    mock.push(resp);
    let resp = client()
        .request(request(Method::POST, &mock.base_url(), "{}"))
        .await
        .unwrap();
    ctl.send("partial").await.unwrap();
    ctl.abort();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(frame) = bounded("a body frame", body.frame()).await {
        match frame {
            Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert_eq!(got, b"partial");
    assert!(failed, "the body ended cleanly instead of failing");
}

#[tokio::test]
async fn streamed_closed_resolves_when_the_client_goes_away() {
    let mock = MockUpstream::start().await;
    let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
    mock.push(resp);
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    stream
        .write_all(b"POST /v1/messages HTTP/1.1\r\nHost: mock\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, b"\r\n\r\n").await;
    ctl.send("event: ping\n\n").await.unwrap();
    read_until(&mut stream, &mut buf, b"event: ping\n\n").await;
    assert!(
        !ctl.is_closed(),
        "closed while the client was still connected"
    );

    drop(stream);
    bounded("closed() after the client left", ctl.closed()).await;
    assert!(ctl.is_closed());
    assert!(ctl.send("more").await.is_err());
}

#[tokio::test]
async fn streamed_closed_resolves_with_the_hyper_client_too() {
    let mock = MockUpstream::start().await;
    let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
    mock.push(resp);
    let resp = client()
        .request(request(Method::POST, &mock.base_url(), "{}"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    ctl.send("x").await.unwrap();
    let _ = bounded("first chunk", body.frame()).await;
    // Dropping an unfinished response body makes hyper close the connection.
    drop(body);
    bounded("closed() after the response was dropped", ctl.closed()).await;
}

#[tokio::test]
async fn held_head_is_sent_on_release() {
    let mock = MockUpstream::start().await;
    let (resp, gate) = MockResponse::json(200, "{\"ok\":true}").held();
    mock.push(resp);
    let c = client();
    let url = mock.base_url();
    let pending = tokio::spawn(async move { c.request(request(Method::POST, &url, "{}")).await });
    mock.wait_for_requests(1).await;
    assert!(!pending.is_finished());
    gate.release();
    let resp = bounded("the released response", pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{\"ok\":true}");
}

#[tokio::test]
async fn held_closed_resolves_when_the_client_gives_up() {
    let mock = MockUpstream::start().await;
    let (resp, gate) = MockResponse::json(200, "{}").held();
    mock.push(resp);
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: mock\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    mock.wait_for_requests(1).await;
    drop(stream);
    bounded("gate closed() after the client left", gate.closed()).await;
}

#[tokio::test]
async fn wait_for_requests_waits_until_enough_arrived() {
    let mock = MockUpstream::start().await;
    mock.push(MockResponse::json(200, "{}"));
    mock.push(MockResponse::json(200, "{}"));
    let (resp, ctl) = MockResponse::streamed(200, "text/plain");
    mock.push(resp);

    let c = client();
    let url = mock.base_url();
    let sender = tokio::spawn(async move {
        for path in ["/1", "/2", "/3"] {
            let resp = c
                .request(request(Method::POST, &format!("{url}{path}"), "{}"))
                .await
                .unwrap();
            if path != "/3" {
                resp.into_body().collect().await.unwrap();
            }
        }
    });
    let reqs = bounded("three requests", mock.wait_for_requests(3)).await;
    let paths: Vec<&str> = reqs.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(paths, vec!["/1", "/2", "/3"]);
    // Already satisfied: returns at once.
    assert_eq!(mock.wait_for_requests(1).await.len(), 3);
    ctl.finish();
    bounded("the sender", sender).await.unwrap();
}

#[tokio::test]
async fn aborted_request_body_is_recorded_as_incomplete() {
    let mock = MockUpstream::start().await;
    mock.push(MockResponse::json(200, "{}"));
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /v1/messages HTTP/1.1\r\nHost: mock\r\nContent-Length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let reqs = bounded("the aborted request", mock.wait_for_requests(1)).await;
    assert!(!reqs[0].body_complete);
    assert_eq!(&reqs[0].body[..], b"{\"model\":");
}

#[tokio::test]
async fn dropping_the_mock_closes_open_streams() {
    let mock = MockUpstream::start().await;
    let (resp, ctl) = MockResponse::streamed(200, "text/event-stream");
    mock.push(resp);
    let resp = client()
        .request(request(Method::POST, &mock.base_url(), "{}"))
        .await
        .unwrap();
    drop(mock);
    bounded("closed() after the mock was dropped", ctl.closed()).await;
    let result = bounded(
        "the body after the mock was dropped",
        resp.into_body().collect(),
    )
    .await;
    assert!(
        result.is_err(),
        "body ended cleanly after the server went away"
    );
}

// ---------------------------------------------------------------------------------------------
// Real-client request logs

#[test]
fn client_logs_parse_with_the_documented_request_counts() {
    let counts = [
        ("cc-p-quiet.jsonl", 1),
        ("cc-tool.jsonl", 2),
        ("cc-authtoken.jsonl", 1),
        ("cc-haiku.jsonl", 1),
        ("codex.jsonl", 1),
        ("codex-tool.jsonl", 2),
        ("python-sdk.jsonl", 12),
        ("ts-sdk.jsonl", 9),
    ];
    for (file, n) in counts {
        let log = client_log(file);
        assert_eq!(log.len(), n, "{file}");
        for (i, r) in log.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1, "{file}");
            assert!(r.path.starts_with("/v1/"), "{file}: {}", r.path);
            assert_eq!(r.body.is_some(), r.method != "GET", "{file} #{}", r.seq);
        }
    }
    let cc = client_log("cc-tool.jsonl");
    assert_eq!(cc[0].method, "POST");
    assert_eq!(cc[0].path, "/v1/messages?beta=true");
    assert_eq!(cc[0].path_only(), "/v1/messages");
    assert_eq!(cc[0].query(), Some("beta=true"));
    assert_eq!(
        cc[0].header("x-claude-code-session-id"),
        Some("19cf2efc-e90a-45b2-992f-efa5bbe9048f")
    );
    assert!(cc[0].header("X-API-KEY").unwrap().contains("***(len=22)"));
}

#[test]
fn replayed_bodies_reproduce_the_logged_bytes() {
    for file in [
        "cc-p-quiet.jsonl",
        "cc-tool.jsonl",
        "cc-authtoken.jsonl",
        "cc-haiku.jsonl",
        "codex.jsonl",
        "codex-tool.jsonl",
        "python-sdk.jsonl",
        "ts-sdk.jsonl",
    ] {
        for r in client_log(file) {
            let bytes = r.body_bytes();
            assert_eq!(bytes.len(), r.body_len, "{file} #{}", r.seq);
            if let Some(value) = r.body_json() {
                let reparsed: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(reparsed, value, "{file} #{}", r.seq);
            }
        }
    }
    // Key order is the client's, not alphabetical.
    let cc = client_log("cc-p-quiet.jsonl");
    assert!(cc[0].body_bytes().starts_with(b"{\"model\":"));
    let py = client_log("python-sdk.jsonl");
    assert_eq!(
        py[0].body_bytes(),
        Bytes::from_static(
            br#"{"max_tokens":64,"messages":[{"role":"user","content":"say hello"}],"model":"claude-sonnet-4-5"}"#
        )
    );
}

#[test]
fn compact_json_keeps_strings_and_restores_non_ascii() {
    assert_eq!(
        compact_json("{ \"a\" : [1, 2],\n \"b\": \"x  y\\\" z\" }"),
        r#"{"a":[1,2],"b":"x  y\" z"}"#
    );
    assert_eq!(compact_json(r#""caf\u00e9 \ud83c\udf0d""#), "\"café 🌍\"");
    // ASCII escapes, control characters and lone surrogates stay escaped.
    assert_eq!(
        compact_json(r#""\u0041\u001b\n\ud800x""#),
        r#""\u0041\u001b\n\ud800x""#
    );
}

#[test]
fn replay_requests_drop_host_length_and_masked_credentials() {
    let log = client_log("cc-tool.jsonl");
    let req = log[1].to_request("/anthropic");
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri(), "/anthropic/v1/messages?beta=true");
    assert!(req.headers().get("host").is_none());
    assert!(req.headers().get("content-length").is_none());
    assert!(req.headers().get("x-api-key").is_none());
    assert_eq!(
        req.headers()["x-claude-code-session-id"],
        "19cf2efc-e90a-45b2-992f-efa5bbe9048f"
    );
    assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
    assert_eq!(req.body(), &log[1].body_bytes());

    let py = client_log("python-sdk.jsonl");
    let get = py[3].to_request("http://127.0.0.1:1/api/v2/aibridge/anthropic");
    assert_eq!(get.method(), Method::GET);
    assert_eq!(
        get.uri(),
        "http://127.0.0.1:1/api/v2/aibridge/anthropic/v1/models"
    );
    assert!(get.headers().get("authorization").is_none());
    assert!(get.body().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Anthropic fixtures

const CASES: &[&str] = &[
    "text_stream",
    "crlf_stream",
    "odd_framing_stream",
    "text_blocking",
    "tool_stream",
    "tool_blocking",
    "parallel_tools_stream",
    "thinking_stream",
    "thinking_omitted_stream",
    "thinking_blocking",
    "web_search_stream",
    "mcp_connector_blocking",
    "cache_split_blocking",
    "message_delta_input_stream",
    "error_event_stream",
    "truncated_tool_stream",
    "error_400",
];

/// A deliberately simple, independent reading of an Anthropic response (spec anthropic.md),
/// used only to check that each fixture agrees with its `.expect.json`.
#[derive(Default)]
struct Oracle {
    id: Option<String>,
    usage: BTreeMap<String, i64>,
    saw_start: bool,
    tools: Vec<Value>,
    thoughts: Vec<String>,
    open: BTreeMap<i64, (Value, String)>,
    outcome: &'static str,
    error: Option<String>,
}

impl Oracle {
    fn merge_usage(&mut self, usage: &Value) {
        let Some(obj) = usage.as_object() else { return };
        for (k, v) in obj {
            match v {
                Value::Number(n) if n.is_i64() => {
                    self.usage.insert(k.clone(), n.as_i64().unwrap());
                }
                Value::Object(inner) if k == "cache_creation" || k == "server_tool_use" => {
                    for (ik, iv) in inner {
                        if let Some(n) = iv.as_i64() {
                            self.usage.insert(format!("{k}.{ik}"), n);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn block_done(&mut self, block: &Value, streamed_input: Option<&str>) {
        let ty = block["type"].as_str().unwrap();
        match ty {
            "tool_use" | "server_tool_use" | "mcp_tool_use" => {
                let input = match streamed_input {
                    Some("") => json!({}),
                    Some(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
                    None => block["input"].clone(),
                };
                self.tools.push(json!({
                    "tool": block["name"],
                    "tool_call_id": block["id"],
                    "input": input,
                    "provider_executed": ty != "tool_use",
                }));
            }
            "thinking" => {
                let text = streamed_input.unwrap_or_else(|| block["thinking"].as_str().unwrap());
                if !text.is_empty() {
                    self.thoughts.push(text.to_owned());
                }
            }
            _ => {}
        }
    }

    fn token_usages(&self) -> Vec<Value> {
        if !self.saw_start {
            return Vec::new();
        }
        let get = |k: &str| self.usage.get(k).copied().unwrap_or(0);
        let mut extra = serde_json::Map::new();
        for (k, v) in &self.usage {
            let name = match k.as_str() {
                "cache_creation.ephemeral_5m_input_tokens" => "cache_ephemeral_5m_input".to_owned(),
                "cache_creation.ephemeral_1h_input_tokens" => "cache_ephemeral_1h_input".to_owned(),
                other => match other.strip_prefix("server_tool_use.") {
                    Some(name) => name.to_owned(),
                    None => continue,
                },
            };
            extra.insert(name, json!(v));
        }
        vec![json!({
            "provider_response_id": self.id,
            "input": get("input_tokens"),
            "output": get("output_tokens"),
            "cache_read": get("cache_read_input_tokens"),
            "cache_write": get("cache_creation_input_tokens"),
            "extra": extra,
        })]
    }

    fn from_json(body: &Value) -> Oracle {
        let mut o = Oracle {
            outcome: "completed",
            ..Oracle::default()
        };
        if body["type"] == "error" {
            o.outcome = "failed";
            o.error = Some(format!(
                "upstream returned 400: {}: {}",
                body["error"]["type"].as_str().unwrap(),
                body["error"]["message"].as_str().unwrap()
            ));
            return o;
        }
        o.saw_start = true;
        o.id = body["id"].as_str().map(str::to_owned);
        o.merge_usage(&body["usage"]);
        for block in body["content"].as_array().unwrap() {
            o.block_done(block, None);
        }
        o
    }

    fn from_sse(raw: &[u8]) -> Oracle {
        let mut o = Oracle {
            outcome: "failed",
            error: Some(
                "aibridge: upstream stream failed: connection closed before the message ended"
                    .to_owned(),
            ),
            ..Oracle::default()
        };
        for ev in parse_sse(raw) {
            let data = ev.json();
            let ty = data["type"].as_str().unwrap().to_owned();
            assert_eq!(
                ev.event.as_deref(),
                Some(ty.as_str()),
                "event name != data.type"
            );
            match ty.as_str() {
                "message_start" => {
                    o.saw_start = true;
                    o.id = data["message"]["id"].as_str().map(str::to_owned);
                    o.merge_usage(&data["message"]["usage"]);
                }
                "content_block_start" => {
                    let idx = data["index"].as_i64().unwrap();
                    o.open
                        .insert(idx, (data["content_block"].clone(), String::new()));
                }
                "content_block_delta" => {
                    let idx = data["index"].as_i64().unwrap();
                    let (_, acc) = o.open.get_mut(&idx).expect("delta for an open block");
                    let d = &data["delta"];
                    match d["type"].as_str().unwrap() {
                        "input_json_delta" => acc.push_str(d["partial_json"].as_str().unwrap()),
                        "thinking_delta" => acc.push_str(d["thinking"].as_str().unwrap()),
                        _ => {}
                    }
                }
                "content_block_stop" => {
                    let idx = data["index"].as_i64().unwrap();
                    let (block, acc) = o.open.remove(&idx).expect("stop for an open block");
                    o.block_done(&block, Some(&acc));
                }
                "message_delta" => o.merge_usage(&data["usage"]),
                "message_stop" => {
                    o.outcome = "completed";
                    o.error = None;
                }
                "error" => {
                    o.outcome = "failed";
                    o.error = Some(format!(
                        "upstream stream error: {}: {}",
                        data["error"]["type"].as_str().unwrap(),
                        data["error"]["message"].as_str().unwrap()
                    ));
                }
                _ => {}
            }
        }
        if o.outcome == "failed" {
            let open = std::mem::take(&mut o.open);
            for (block, acc) in open.values() {
                o.block_done(block, Some(acc));
            }
        }
        o
    }
}

#[test]
fn anthropic_fixtures_agree_with_their_expectations() {
    for case in CASES {
        let expect = fixture_json(&format!("anthropic/{case}.expect.json"));
        let sse_path = format!("anthropic/{case}.upstream.sse");
        let oracle = if fixture_path(&sse_path).exists() {
            let raw = fixture(&sse_path);
            assert!(
                raw.ends_with(b"\n\n") || raw.ends_with(b"\r\n\r\n"),
                "{case}: the last event is not terminated"
            );
            Oracle::from_sse(&raw)
        } else {
            Oracle::from_json(&fixture_json(&format!("anthropic/{case}.upstream.json")))
        };
        assert_eq!(
            Value::Array(oracle.token_usages()),
            expect["token_usages"],
            "{case}: token usages"
        );
        assert_eq!(
            Value::Array(oracle.tools.clone()),
            expect["tool_usages"],
            "{case}: tools"
        );
        assert_eq!(
            json!(oracle.thoughts),
            expect["thoughts"],
            "{case}: thoughts"
        );
        assert_eq!(expect["outcome"], oracle.outcome, "{case}: outcome");
        assert_eq!(expect["error"], json!(oracle.error), "{case}: error");
        let status = if *case == "error_400" { 400 } else { 200 };
        assert_eq!(expect["status"], status, "{case}: status");
    }
}

#[test]
fn every_anthropic_fixture_is_listed() {
    let dir = fixture_path("anthropic");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".expect.json").map(str::to_owned)
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| (*c).to_owned()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

#[test]
fn anthropic_fixtures_carry_the_spec_numbers() {
    // (case, input, output, cache_read, cache_write) from spec anthropic.md "Expected numbers".
    let table = [
        ("tool_stream", 2, 61, 13993, 22),
        ("tool_blocking", 5, 84, 23490, 0),
        ("text_stream", 18, 240, 0, 0),
        ("text_blocking", 18, 254, 0, 0),
        ("error_event_stream", 18, 1, 0, 0),
        ("cache_split_blocking", 12, 33, 0, 150),
    ];
    for (case, input, output, read, write) in table {
        let expect = fixture_json(&format!("anthropic/{case}.expect.json"));
        let usages = expect["token_usages"].as_array().unwrap();
        assert_eq!(usages.len(), 1, "{case}");
        let u = &usages[0];
        assert_eq!(
            (
                &u["input"],
                &u["output"],
                &u["cache_read"],
                &u["cache_write"]
            ),
            (&json!(input), &json!(output), &json!(read), &json!(write)),
            "{case}"
        );
    }
    let tb = fixture_json("anthropic/tool_blocking.expect.json");
    assert_eq!(
        tb["token_usages"][0]["extra"],
        json!({"cache_ephemeral_1h_input": 0, "cache_ephemeral_5m_input": 0, "web_search_requests": 0})
    );
    let cs = fixture_json("anthropic/cache_split_blocking.expect.json");
    assert_eq!(
        cs["token_usages"][0]["extra"],
        json!({"cache_ephemeral_5m_input": 100, "cache_ephemeral_1h_input": 50})
    );
    let e400 = fixture_json("anthropic/error_400.upstream.json");
    assert_eq!(
        e400["error"]["message"],
        "prompt is too long: 205429 tokens > 200000 maximum"
    );
    assert!(
        fixture_json("anthropic/error_400.expect.json")["token_usages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn sse_parser_follows_the_standard_on_odd_framing() {
    let crlf = parse_sse(&fixture("anthropic/crlf_stream.upstream.sse"));
    let lf = fixture("anthropic/crlf_stream.upstream.sse")
        .iter()
        .copied()
        .filter(|b| *b != b'\r')
        .collect::<Vec<u8>>();
    assert_eq!(crlf, parse_sse(&lf));
    assert!(
        fixture("anthropic/crlf_stream.upstream.sse")
            .windows(2)
            .any(|w| w == b"\r\n")
    );

    let odd = parse_sse(&fixture("anthropic/odd_framing_stream.upstream.sse"));
    let names: Vec<&str> = odd.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "some_future_event",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(
        odd[5].data.contains('\n'),
        "multi-line data joined with \\n"
    );
    assert_eq!(odd[5].json()["usage"]["output_tokens"], 64);

    // CR-only line ends, a dangling unterminated event, and data without an event name.
    let cr = parse_sse(b"data: a\rdata: b\r\revent: x\rdata: c\n\ndata: dangling");
    assert_eq!(cr.len(), 2);
    assert_eq!(cr[0].event, None);
    assert_eq!(cr[0].data, "a\nb");
    assert_eq!(cr[1].event.as_deref(), Some("x"));
}

#[test]
fn request_fixtures_match_their_expected_detections() {
    let expected = fixture_json("anthropic/requests/expected.json");
    let entries = expected.as_object().unwrap();
    assert_eq!(entries.len(), 5);
    for (file, exp) in entries {
        let raw = fixture(&format!("anthropic/requests/{file}"));
        let body: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(body["model"], exp["model"], "{file}");
        assert_eq!(
            body["stream"] == json!(true),
            exp["streaming"] == json!(true),
            "{file}"
        );
        let text = String::from_utf8(raw.to_vec()).unwrap();
        if let Some(prompt) = exp["prompt"].as_str() {
            assert!(text.contains(prompt), "{file}");
        }
        if let Some(id) = exp["correlating_tool_call_id"].as_str() {
            let last = body["messages"].as_array().unwrap().last().unwrap();
            assert_eq!(last["content"][0]["type"], "tool_result", "{file}");
            assert_eq!(last["content"][0]["tool_use_id"], id, "{file}");
        }
    }
    let cc = fixture_json("anthropic/requests/claude_code_style.json");
    let messages = cc["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["role"], "system");
    let user_id: Value = serde_json::from_str(cc["metadata"]["user_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        user_id["session_id"],
        expected["claude_code_style.json"]["session_id_from_body"]
    );
}
