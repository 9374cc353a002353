//! Hostile request bodies on every bridged route: huge, deeply nested, not JSON, JSON of the
//! wrong shape. The answer is a provider-shaped 4xx from the bridge, or, for a body that is
//! a JSON object with a valid `model` (the bridge judges nothing else, routing.md step 7),
//! the upstream's own answer. Never a 5xx, never a crash (no stack overflow on deep nesting).

mod common;
mod faultkit;
mod support;

use aibridge::Actor;
use bytes::Bytes;
use common::{bridge, ended, post, send};
use faultkit::Api;
use http_body_util::StreamBody;
use support::{MockResponse, MockUpstream};

const LIMIT: usize = 32 * 1024 * 1024;

/// `open`×depth, `middle`, `close`×depth.
fn nested(open: &str, middle: &str, close: &str, depth: usize) -> String {
    let mut s = String::with_capacity(depth * (open.len() + close.len()) + middle.len());
    for _ in 0..depth {
        s.push_str(open);
    }
    s.push_str(middle);
    for _ in 0..depth {
        s.push_str(close);
    }
    s
}

/// What the bridge must do with a body.
enum Want {
    /// A 400 from the bridge whose message starts with this; the upstream is not called.
    Rejected(&'static str),
    /// Sent upstream as is (the upstream answers 400 here).
    Forwarded,
}

fn cases(api: Api) -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::*;
    const NOT_JSON: &str = "aibridge: request body is not valid JSON: ";
    const MODEL: &str = "aibridge: \"model\" must be a non-empty string";
    const OBJECT: &str = "aibridge: request body must be a JSON object";
    let arrays = nested("[", "", "]", 100_000);
    let objects = nested("{\"a\":", "1", "}", 100_000);
    let deeper = nested("[", "", "]", 1_000_000);
    let s = |v: &str| v.as_bytes().to_vec();
    let mut out = vec![
        ("empty", vec![], Rejected("aibridge: request body is empty")),
        ("blank", s(" \r\n\t "), Rejected("aibridge: request body is empty")),
        ("text", s("hello"), Rejected(NOT_JSON)),
        ("binary", vec![0, 159, 146, 150, 255, b'{', 0], Rejected(NOT_JSON)),
        ("invalid UTF-8 in the model", b"{\"model\":\"m\xff\"}".to_vec(), Rejected(NOT_JSON)),
        // Used to be forwarded: serde_json skips unread strings without checking them.
        ("invalid UTF-8 in an unread value", b"{\"model\":\"m\",\"x\":\"\xff\xfe\"}".to_vec(), Rejected(NOT_JSON)),
        ("invalid UTF-8 in an unread key", b"{\"model\":\"m\",\"\xc3\":1}".to_vec(), Rejected(NOT_JSON)),
        ("UTF-16", b"\xff\xfe{\0}\0".to_vec(), Rejected(NOT_JSON)),
        ("truncated", s(r#"{"model":"m","messages":[{"#), Rejected(NOT_JSON)),
        ("trailing garbage", s(r#"{"model":"m"} x"#), Rejected(NOT_JSON)),
        ("two objects", s(r#"{"model":"m"}{"model":"n"}"#), Rejected(NOT_JSON)),
        ("duplicate model", s(r#"{"model":"m","model":"n"}"#), Rejected(NOT_JSON)),
        ("deep object, unclosed", nested("{\"a\":", "", "", 100_000).into_bytes(), Rejected(NOT_JSON)),
        ("array", s("[1,2]"), Rejected(OBJECT)),
        ("string", s("\"model\""), Rejected(OBJECT)),
        ("null", s("null"), Rejected(OBJECT)),
        ("100k nested arrays", arrays.clone().into_bytes(), Rejected(OBJECT)),
        ("no model", s(r#"{"messages":[]}"#), Rejected(MODEL)),
        ("model number", s(r#"{"model":4}"#), Rejected(MODEL)),
        ("model empty", s(r#"{"model":""}"#), Rejected(MODEL)),
        ("model null", s(r#"{"model":null}"#), Rejected(MODEL)),
        ("model object", s(r#"{"model":{"id":"m"}}"#), Rejected(MODEL)),
        ("model 100k nested", format!("{{\"model\":{arrays}}}").into_bytes(), Rejected(MODEL)),
        // A JSON object with a model: the upstream judges the rest.
        ("messages a string", s(r#"{"model":"m","messages":"hi","input":5}"#), Forwarded),
        ("messages of scalars", s(r#"{"model":"m","messages":[1,null,"x"],"input":[1,null]}"#), Forwarded),
        ("stream a string", s(r#"{"model":"m","stream":"true","stream_options":"x"}"#), Forwarded),
        ("tools a number", s(r#"{"model":"m","stream":true,"tools":7,"tool_choice":[]}"#), Forwarded),
        ("metadata a list", s(r#"{"model":"m","metadata":[{"user_id":1}]}"#), Forwarded),
        (
            "100k nested messages and input",
            format!("{{\"model\":\"m\",\"stream\":true,\"messages\":{arrays},\"input\":{arrays}}}").into_bytes(),
            Forwarded,
        ),
        (
            "100k nested content",
            format!(
                "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":{arrays}}}],\"input\":[{{\"role\":\"user\",\"content\":{arrays}}}]}}"
            )
            .into_bytes(),
            Forwarded,
        ),
        (
            "100k nested objects in metadata and stream_options",
            format!("{{\"model\":\"m\",\"stream\":true,\"metadata\":{objects},\"stream_options\":{objects}}}").into_bytes(),
            Forwarded,
        ),
        (
            "1M nested arrays in messages",
            format!("{{\"model\":\"m\",\"messages\":{deeper},\"input\":{deeper}}}").into_bytes(),
            Forwarded,
        ),
    ];
    if api == Api::Responses {
        out.push((
            "background",
            s(r#"{"model":"m","background":true}"#),
            Rejected("aibridge: background responses are not supported"),
        ));
    }
    out
}

#[tokio::test]
async fn hostile_bodies_get_a_4xx_and_never_a_5xx() {
    const UPSTREAM_NO: &str =
        r#"{"error":{"message":"upstream says no","type":"invalid_request_error"}}"#;
    let upstream = MockUpstream::start().await;
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let mut forwarded = 0;
    for api in Api::ALL {
        for (label, body, want) in cases(api) {
            let label = format!("{api:?}: {label}");
            if matches!(want, Want::Forwarded) {
                upstream
                    .push(MockResponse::json(400, UPSTREAM_NO).header("x-should-retry", "false"));
            }
            let before = upstream.request_count();
            let resp = send(&bridge, post(api.path(), body.clone())).await;
            match want {
                Want::Rejected(prefix) => {
                    assert_eq!(resp.status, 400, "{label}: {}", resp.text());
                    assert_eq!(
                        upstream.request_count(),
                        before,
                        "{label}: not sent upstream"
                    );
                    let v = resp.json();
                    let msg = v["error"]["message"].as_str().unwrap_or_default();
                    assert!(msg.starts_with(prefix), "{label}: {v}");
                    api.assert_error_body(&resp.body, msg);
                }
                Want::Forwarded => {
                    assert_eq!(resp.status, 400, "{label}");
                    assert_eq!(resp.body, UPSTREAM_NO, "{label}: the upstream's answer");
                    let got = upstream.wait_for_requests(before + 1).await;
                    let sent = &got[before].body;
                    // Chat streams get `stream_options.include_usage` added (S2); nothing
                    // else is ever edited.
                    let s2 = api == Api::Chat && body.windows(14).any(|w| w == b"\"stream\":true,");
                    if s2 {
                        let added = sent.len().saturating_sub(body.len());
                        assert!((1..=48).contains(&added), "{label}: {added} bytes added");
                        let usage = b"\"include_usage\":true";
                        assert!(sent.windows(usage.len()).any(|w| w == usage), "{label}");
                    } else {
                        assert!(sent[..] == body[..], "{label}: bytes sent unchanged");
                    }
                    forwarded += 1;
                }
            }
        }
    }
    ended(&rec, forwarded).await;
    assert_eq!(
        rec.interceptions().len(),
        forwarded,
        "only forwarded bodies are recorded"
    );
    assert_eq!(upstream.unanswered(), 0);
}

fn streamed_post(
    path: &str,
    chunks: Vec<Bytes>,
    content_length: Option<u64>,
) -> http::Request<impl http_body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static> {
    let frames = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(c))),
    );
    let mut req = http::Request::post(path).header("content-type", "application/json");
    if let Some(n) = content_length {
        req = req.header("content-length", n);
    }
    let mut req = req.body(StreamBody::new(frames)).unwrap();
    req.extensions_mut().insert(Actor::new("alice"));
    req
}

#[tokio::test]
async fn bodies_over_32_mib_are_413_and_bodies_just_under_pass_intact() {
    let upstream = MockUpstream::start().await;
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b);
    let mib = Bytes::from(vec![b' '; 1024 * 1024]);
    for api in Api::ALL {
        // Declared too large: refused without reading (the body would never end).
        let never = streamed_post(api.path(), vec![mib.clone()], Some(LIMIT as u64 + 1));
        let resp = send(&bridge, never).await;
        assert_eq!(resp.status, 413, "{api:?}");
        api.assert_error_body(
            &resp.body,
            &format!("aibridge: request body exceeds the limit of {LIMIT} bytes"),
        );
        // Chunked, no length: refused once the limit is crossed.
        let chunks = vec![mib.clone(); 33];
        let resp = send(&bridge, streamed_post(api.path(), chunks, None)).await;
        assert_eq!(resp.status, 413, "{api:?}");
    }
    assert_eq!(upstream.request_count(), 0);
    // A 31 MiB prompt is forwarded byte for byte.
    let api = Api::Messages;
    let prompt = "x".repeat(31 * 1024 * 1024);
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    upstream.push(MockResponse::json(200, api.blocking_body()));
    let resp = send(&bridge, post(api.path(), body.clone())).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, api.blocking_body());
    let got = upstream.wait_for_requests(1).await;
    assert!(got[0].body == body.as_bytes(), "forwarded intact");
    ended(&rec, 1).await;
    // Recorded cut to the default 64 KiB, with the original length (limit 12).
    let recorded = &rec.prompt_usages()[0].prompt;
    assert!(recorded.len() <= 64 * 1024, "{}", recorded.len());
    assert!(
        recorded.ends_with(&format!("…[truncated: {} bytes]", prompt.len())),
        "{}",
        &recorded[recorded.len() - 40..]
    );
}
