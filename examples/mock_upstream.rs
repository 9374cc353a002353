//! A fast mock AI provider for load benchmarks (`scripts/bench.sh`, `BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release --example mock_upstream            # prints: mock upstream listening on http://ADDR
//! ```
//!
//! Serves Anthropic `POST …/messages`, OpenAI `POST …/chat/completions` and
//! `POST …/responses` (matched by path suffix, so any base-URL prefix works), answering a
//! blocking JSON body or an SSE stream according to the request's `"stream": true`.
//!
//! The shape of the answer comes from the request's `model`, so that it survives any gateway
//! in between (gateways forward the model, not always the query or custom headers): a model
//! `…mock-e200-b64-t0-d0` means 200 content events of 64 bytes of text each, 0 ms to the
//! first byte and 0 µs between events. Missing parts fall back to the environment:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `MOCK_LISTEN` | `127.0.0.1:0` | socket address |
//! | `MOCK_THREADS` | `1` | tokio worker threads |
//! | `MOCK_EVENTS` (`e`) | `20` | content events (text deltas) per stream |
//! | `MOCK_EVENT_BYTES` (`b`) | `32` | bytes of text per content event |
//! | `MOCK_TTFB_MS` (`t`) | `0` | delay before the response head |
//! | `MOCK_DELAY_US` (`d`) | `0` | delay between SSE events |
//!
//! A model part `m1` (Messages only) makes the answer a `tool_use` of the MCP tool
//! `bmcp_bench_list_workspaces` (`{"owner":"bench"}`, stop reason `tool_use`) unless the request
//! already carries a `tool_result`: the first and the second turn of an MCP loop with one tool.
//!
//! Bodies are built once per shape and kept as `Bytes`; per request the mock only reads the
//! body and finds `"model"` and `"stream"` with `memchr`, so it is never the bottleneck of
//! a benchmark. Streams are sent chunked: without inter-event delay in runs of about
//! 16 KiB; with a delay, one event per write.
#![allow(
    clippy::print_stdout,
    reason = "the mock prints its listening line on stdout"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Api {
    Messages,
    Chat,
    Responses,
}

/// The shape of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    api: Api,
    stream: bool,
    /// Chat: the request asked for `stream_options.include_usage`.
    include_usage: bool,
    events: usize,
    event_bytes: usize,
    /// Messages: answer with a call of the MCP tool instead of text (`m1`, no tool result yet).
    tool_use: bool,
}

#[derive(Debug, Clone, Copy)]
struct Defaults {
    events: usize,
    event_bytes: usize,
    ttfb_ms: u64,
    delay_us: u64,
}

/// A prebuilt answer: the SSE events (or the one JSON body).
struct Prebuilt {
    /// Every event, each a complete SSE frame (blocking: one element, the JSON body).
    events: Vec<Bytes>,
    /// All events concatenated (a blocking body).
    whole: Bytes,
    /// The events in runs of about 16 KiB (a stream without delay, chunked like a network
    /// read would be).
    runs: Vec<Bytes>,
}

struct State {
    defaults: Defaults,
    cache: RwLock<HashMap<Shape, Arc<Prebuilt>>>,
}

#[expect(
    clippy::disallowed_methods,
    reason = "the mock is configured by its environment"
)]
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value after `"key"` and its colon, with whitespace skipped.
fn json_value_after<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memchr::memmem::find(body, key)?;
    let rest = &body[at + key.len()..];
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    Some(rest.trim_ascii_start())
}

/// Parses `mock-e200-b64-t0-d0-m1` parts out of the model string: events, bytes, TTFB,
/// delay, tool mode.
fn shape_params(model: &[u8], d: Defaults) -> (usize, usize, u64, u64, bool) {
    let (mut e, mut b, mut t, mut dl) = (d.events, d.event_bytes, d.ttfb_ms, d.delay_us);
    let mut m = false;
    if let Some(at) = memchr::memmem::find(model, b"mock-") {
        for part in model[at + 5..].split(|&c| c == b'-') {
            let Some((&k, v)) = part.split_first() else {
                continue;
            };
            let Some(n) = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            match k {
                b'e' => e = n as usize,
                b'b' => b = n as usize,
                b't' => t = n,
                b'd' => dl = n,
                b'm' => m = n > 0,
                _ => {}
            }
        }
    }
    (e, b, t, dl, m)
}

/// The MCP tool the `m1` shape calls (server `bench` of `examples/mcp_test_server.rs`).
const TOOL_CALL: &str = r#"{"type":"tool_use","id":"toolu_mock","name":"bmcp_bench_list_workspaces","input":{"owner":"bench"}}"#;

fn text(n: usize) -> String {
    const WORDS: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";
    WORDS.chars().cycle().take(n).collect()
}

fn sse(event: Option<&str>, data: &str) -> Bytes {
    match event {
        Some(e) => Bytes::from(format!("event: {e}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

fn build(shape: Shape) -> Prebuilt {
    let t = text(shape.event_bytes);
    let n = shape.events;
    let events: Vec<Bytes> = match (shape.api, shape.stream) {
        (Api::Messages, false) if shape.tool_use => {
            vec![Bytes::from(format!(
                r#"{{"id":"msg_mock","type":"message","role":"assistant","model":"mock","content":[{TOOL_CALL}],"stop_reason":"tool_use","stop_sequence":null,"usage":{{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":9}}}}"#
            ))]
        }
        (Api::Messages, true) if shape.tool_use => vec![
            sse(
                Some("message_start"),
                r#"{"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant","model":"mock","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
            ),
            sse(
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_mock","name":"bmcp_bench_list_workspaces","input":{}}}"#,
            ),
            sse(
                Some("content_block_delta"),
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"owner\":\"bench\"}"}}"#,
            ),
            sse(
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            sse(
                Some("message_delta"),
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9}}"#,
            ),
            sse(Some("message_stop"), r#"{"type":"message_stop"}"#),
        ],
        (Api::Messages, false) => {
            let all = text(shape.event_bytes * n.max(1));
            vec![Bytes::from(format!(
                r#"{{"id":"msg_mock","type":"message","role":"assistant","model":"mock","content":[{{"type":"text","text":"{all}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{n}}}}}"#
            ))]
        }
        (Api::Messages, true) => {
            let mut v = vec![
                sse(
                    Some("message_start"),
                    r#"{"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant","model":"mock","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
                ),
                sse(
                    Some("content_block_start"),
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
            ];
            let delta = sse(
                Some("content_block_delta"),
                &format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{t}"}}}}"#
                ),
            );
            v.extend(std::iter::repeat_n(delta, n));
            v.push(sse(
                Some("content_block_stop"),
                r#"{"type":"content_block_stop","index":0}"#,
            ));
            v.push(sse(
                Some("message_delta"),
                &format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{n}}}}}"#
                ),
            ));
            v.push(sse(Some("message_stop"), r#"{"type":"message_stop"}"#));
            v
        }
        (Api::Chat, false) => {
            let all = text(shape.event_bytes * n.max(1));
            vec![Bytes::from(format!(
                r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"mock","choices":[{{"index":0,"message":{{"role":"assistant","content":"{all}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":{n},"total_tokens":{}}}}}"#,
                n + 12
            ))]
        }
        (Api::Chat, true) => {
            let chunk = |delta: &str, finish: &str| {
                sse(
                    None,
                    &format!(
                        r#"{{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"mock","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#
                    ),
                )
            };
            let mut v = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
            let delta = chunk(&format!(r#"{{"content":"{t}"}}"#), "null");
            v.extend(std::iter::repeat_n(delta, n));
            v.push(chunk("{}", r#""stop""#));
            if shape.include_usage {
                v.push(sse(
                    None,
                    &format!(
                        r#"{{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"mock","choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":{n},"total_tokens":{}}}}}"#,
                        n + 12
                    ),
                ));
            }
            v.push(sse(None, "[DONE]"));
            v
        }
        (Api::Responses, false) => {
            let all = text(shape.event_bytes * n.max(1));
            vec![Bytes::from(format!(
                r#"{{"id":"resp_mock","object":"response","created_at":1700000000,"status":"completed","model":"mock","output":[{{"id":"msg_mock","type":"message","status":"completed","role":"assistant","content":[{{"type":"output_text","text":"{all}","annotations":[]}}]}}],"usage":{{"input_tokens":12,"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{n},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}}}"#,
                n + 12
            ))]
        }
        (Api::Responses, true) => {
            let mut seq = 0usize;
            let mut ev = |kind: &str, body: &str| {
                let b = sse(
                    Some(kind),
                    &format!(r#"{{"type":"{kind}",{body},"sequence_number":{seq}}}"#),
                );
                seq += 1;
                b
            };
            let mut v = vec![
                ev(
                    "response.created",
                    r#""response":{"id":"resp_mock","object":"response","created_at":1700000000,"status":"in_progress","model":"mock","output":[]}"#,
                ),
                ev(
                    "response.output_item.added",
                    r#""output_index":0,"item":{"id":"msg_mock","type":"message","status":"in_progress","role":"assistant","content":[]}"#,
                ),
            ];
            for _ in 0..n {
                v.push(ev(
                    "response.output_text.delta",
                    &format!(
                        r#""item_id":"msg_mock","output_index":0,"content_index":0,"delta":"{t}""#
                    ),
                ));
            }
            v.push(ev(
                "response.output_item.done",
                r#""output_index":0,"item":{"id":"msg_mock","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"…","annotations":[]}]}"#,
            ));
            v.push(ev(
                "response.completed",
                &format!(
                    r#""response":{{"id":"resp_mock","object":"response","created_at":1700000000,"status":"completed","model":"mock","output":[],"usage":{{"input_tokens":12,"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{n},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}}}"#,
                    n + 12
                ),
            ));
            v
        }
    };
    let whole = Bytes::from(events.concat());
    let mut runs = Vec::new();
    let (mut from, mut at) = (0, 0);
    for e in &events {
        at += e.len();
        if at - from >= 16 * 1024 {
            runs.push(whole.slice(from..at));
            from = at;
        }
    }
    if at > from {
        runs.push(whole.slice(from..at));
    }
    Prebuilt {
        events,
        whole,
        runs,
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn plain(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(msg.as_bytes())).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let api = if path.ends_with("/messages") {
        Api::Messages
    } else if path.ends_with("/chat/completions") {
        Api::Chat
    } else if path.ends_with("/responses") {
        Api::Responses
    } else if path.ends_with("/healthz") {
        return Ok(plain(StatusCode::OK, "ok\n"));
    } else {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    };
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(plain(StatusCode::BAD_REQUEST, "unreadable body\n"));
    };
    let stream = json_value_after(&body, b"\"stream\"").is_some_and(|v| v.starts_with(b"true"));
    let include_usage =
        json_value_after(&body, b"\"include_usage\"").is_some_and(|v| v.starts_with(b"true"));
    let model = json_value_after(&body, b"\"model\"")
        .and_then(|v| v.strip_prefix(b"\""))
        .map(|v| &v[..memchr::memchr(b'"', v).unwrap_or(v.len())])
        .unwrap_or(b"");
    let (events, event_bytes, ttfb_ms, delay_us, tool) = shape_params(model, state.defaults);
    let shape = Shape {
        api,
        stream,
        include_usage: include_usage && api == Api::Chat,
        events,
        event_bytes,
        tool_use: tool
            && api == Api::Messages
            && memchr::memmem::find(&body, b"\"tool_result\"").is_none(),
    };
    let cached = state.cache.read().ok().and_then(|c| c.get(&shape).cloned());
    let pre = match cached {
        Some(p) => p,
        None => {
            let p = Arc::new(build(shape));
            if let Ok(mut c) = state.cache.write() {
                c.insert(shape, p.clone());
            }
            p
        }
    };
    if ttfb_ms > 0 {
        tokio::time::sleep(Duration::from_millis(ttfb_ms)).await;
    }
    // Streams go out chunked (no content-length), as real providers send them.
    let body: Body = if !stream {
        Full::new(pre.whole.clone()).boxed()
    } else if delay_us == 0 {
        let runs = futures::stream::iter(
            (0..pre.runs.len()).map(move |i| Ok::<_, Infallible>(Frame::data(pre.runs[i].clone()))),
        );
        BodyExt::boxed(StreamBody::new(runs))
    } else {
        let delay = Duration::from_micros(delay_us);
        let s = futures::stream::unfold((pre, 0usize), move |(pre, i)| async move {
            let ev = pre.events.get(i)?.clone();
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(ev)), (pre, i + 1)))
        });
        BodyExt::boxed(StreamBody::new(s))
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    if stream {
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
    } else {
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    h.insert("request-id", http::HeaderValue::from_static("req_mock"));
    Ok(resp)
}

fn main() {
    let listen: SocketAddr = env_or("MOCK_LISTEN", "127.0.0.1:0".parse().expect("address"));
    let threads: usize = env_or("MOCK_THREADS", 1);
    let defaults = Defaults {
        events: env_or("MOCK_EVENTS", 20),
        event_bytes: env_or("MOCK_EVENT_BYTES", 32),
        ttfb_ms: env_or("MOCK_TTFB_MS", 0),
        delay_us: env_or("MOCK_DELAY_US", 0),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("mock upstream: bind");
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "mock upstream listening on http://{}",
                listener.local_addr().expect("local address")
            );
            let _ = out.flush();
        }
        let state = Arc::new(State {
            defaults,
            cache: RwLock::new(HashMap::new()),
        });
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}
