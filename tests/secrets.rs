//! Secret hygiene: known key values go through every kind of exchange (blocking, streaming,
//! passthrough, upstream errors, unreachable upstream, open breaker, recorder failure, bad
//! input, MCP connection errors) and no output channel may contain them: logs at TRACE
//! level (the bridge's and its dependencies'), records, metrics, response bodies and
//! headers, `Debug` output. Client-sent actor headers are stripped, and passthrough never
//! reaches a path outside the allowlist (traversal, encoded slashes, absolute-form URIs).

mod common;
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aibridge::bridge::Builder;
use aibridge::metrics::Metrics;
use aibridge::provider::{
    Anthropic, CircuitBreakerConfig, Copilot, CredentialPolicy, OpenAi, Provider, RetryConfig,
    Secret,
};
use aibridge::recorder::{MemoryRecorder, RecordKind};
use aibridge::{Actor, RequestBridge};
use common::{Collected, ended, get, post, send};
use support::{MockResponse, MockUpstream, fixture};

const ANTHROPIC_KEY: &str = "sk-ant-api03-CENTRAL7Q2W9E4R1T8Y-4f9a2b7c1d";
const OPENAI_KEY: &str = "sk-proj-CENTRALZ8X1C5V3B7N0-8e3d0a6b5c";
const BYOK_ANTHROPIC: &str = "sk-ant-api03-BYOKCLIENTK3J6H9G2F5-77aa11";
const BYOK_OPENAI: &str = "sk-BYOKOPENAIM4N8B2V6C1X-99bb22";
const COPILOT_TOKEN: &str = "ghu_COPILOTTOKENP0O9I8U7Y6-5566778899";
const MCP_HEADER: &str = "mcp-HEADERSECRET-Q1W2E3R4T5-123abc";
const MCP_URL_PASSWORD: &str = "mcpURLPASSWORD9Z8X7C6V5";
/// A key sent through `with_extra_header` (Azure-style `api-key`).
const EXTRA_HEADER: &str = "azEXTRAHEADERKEY4B7N2M9Q1";
/// A password in a provider's base URL.
const URL_PASSWORD: &str = "baseURLPASSWORD3H6J9K2L";

/// AWS credentials of the Bedrock provider.
const AWS_ACCESS_KEY: &str = "AKIASECRETSTESTQ7W3E9";
const AWS_SECRET_KEY: &str = "awsSECRETkeyR4T8Y2U6I0O-p1a5s9d3f7";
const AWS_SESSION_TOKEN: &str = "awsSESSIONtokenFQoGZXIvYXdzEJr-L3K7J1H5";
/// The Google access token the mock token endpoint hands out.
const GOOGLE_TOKEN: &str = "ya29.googleACCESStokenZ2X6C0V4B8N-aa11";

const SECRETS: [&str; 13] = [
    AWS_ACCESS_KEY,
    AWS_SECRET_KEY,
    AWS_SESSION_TOKEN,
    GOOGLE_TOKEN,
    ANTHROPIC_KEY,
    OPENAI_KEY,
    BYOK_ANTHROPIC,
    BYOK_OPENAI,
    COPILOT_TOKEN,
    MCP_HEADER,
    MCP_URL_PASSWORD,
    EXTRA_HEADER,
    URL_PASSWORD,
];

const MESSAGES_BLOCKING: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"say hello"}]}"#;
const MESSAGES_STREAM: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hello"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"say hello"}]}"#;
const CHAT_BLOCKING: &str =
    r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"say hello"}]}"#;
const RESPONSES_BLOCKING: &str = r#"{"model":"gpt-5-codex","input":"say hello"}"#;

// ---------------------------------------------------------------------------------------------
// Capturing every output channel

/// Everything any thread logged (TRACE, every target), since the first test started.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        // `try_init` also routes the `log` records of dependencies (reqwest) here.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("one global subscriber");
        buf
    })
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// Fails, naming the channel and showing the context, if `text` contains a secret or a
/// recognisable part of one (its middle: a masked hint shows at most 4 chars at each end).
fn assert_clean(channel: &str, text: &str) {
    for secret in SECRETS {
        let middle = &secret[4..secret.len() - 4];
        for needle in [secret, middle] {
            if let Some(at) = text.find(needle) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(200)
                    .map_or(0, |(i, _)| i);
                let to = (at + needle.len() + 200).min(text.len());
                panic!(
                    "{channel} contains a secret ({needle:?}) at byte {at}:\n…{}…",
                    &text[from..to]
                );
            }
        }
    }
}

fn check_response(label: &str, resp: &Collected) {
    assert_clean(&format!("{label}: response body"), &resp.text());
    assert_clean(
        &format!("{label}: response headers"),
        &format!("{:?}", resp.headers),
    );
}

fn records_text(rec: &MemoryRecorder) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        rec.interceptions(),
        rec.interceptions_ended(),
        rec.token_usages(),
        rec.prompt_usages(),
        rec.tool_usages(),
        rec.model_thoughts()
    )
}

fn metrics_text(registry: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap()
}

/// A bridge with one provider of each kind (plus BYOK variants) in front of `base`, with
/// metrics and a fresh recorder. Returns the `Debug` text of the builder too.
struct Setup {
    bridge: RequestBridge,
    rec: MemoryRecorder,
    registry: prometheus::Registry,
    builder_debug: String,
}

fn providers(base: &str) -> Vec<Arc<dyn Provider>> {
    let no_retry = || RetryConfig::default().with_max_retries(0);
    vec![
        Arc::new(
            Anthropic::new(Secret::new(ANTHROPIC_KEY))
                .with_base_url(base.parse().unwrap())
                .with_retry(no_retry())
                .with_circuit_breaker(
                    CircuitBreakerConfig::default()
                        .with_failure_threshold(1)
                        .with_open_timeout(Duration::from_secs(3600)),
                ),
        ),
        Arc::new(
            Anthropic::new(Secret::new(ANTHROPIC_KEY))
                .with_name("byok")
                .with_credential_policy(CredentialPolicy::ClientFirst)
                .with_base_url(with_password(base))
                .with_retry(no_retry())
                .with_actor_headers(true),
        ),
        Arc::new(
            OpenAi::new(Secret::new(OPENAI_KEY))
                .with_base_url(format!("{base}/v1").parse().unwrap())
                .with_retry(no_retry()),
        ),
        Arc::new(
            OpenAi::new(Secret::new(OPENAI_KEY))
                .with_name("openai-byok")
                .with_credential_policy(CredentialPolicy::ClientOnly)
                .with_base_url(format!("{base}/v1").parse().unwrap())
                .with_extra_header(
                    http::HeaderName::from_static("api-key"),
                    http::HeaderValue::from_static(EXTRA_HEADER),
                )
                .with_retry(no_retry()),
        ),
        Arc::new(
            Copilot::new()
                .with_base_url(base.parse().unwrap())
                .with_retry(no_retry()),
        ),
    ]
}

/// `http://user:PASSWORD@host:port` from `http://host:port`.
fn with_password(base: &str) -> http::Uri {
    base.replacen("http://", &format!("http://user:{URL_PASSWORD}@"), 1)
        .parse()
        .unwrap()
}

fn setup(base: &str, f: impl FnOnce(Builder) -> Builder) -> Setup {
    logs();
    let rec = MemoryRecorder::new();
    let registry = prometheus::Registry::new();
    let mut builder = RequestBridge::builder()
        .recorder(rec.clone())
        .metrics(Metrics::new(&registry).unwrap())
        .max_request_body(64 * 1024);
    for p in providers(base) {
        builder = builder.provider_arc(p);
    }
    let builder = f(builder);
    let builder_debug = format!("{builder:?}");
    Setup {
        bridge: builder.build().unwrap(),
        rec,
        registry,
        builder_debug,
    }
}

impl Setup {
    /// Checks every channel of this bridge (and the shared log).
    fn check_all(&self, label: &str) {
        assert_clean(&format!("{label}: records"), &records_text(&self.rec));
        assert_clean(&format!("{label}: metrics"), &metrics_text(&self.registry));
        assert_clean(&format!("{label}: builder Debug"), &self.builder_debug);
        assert_clean(
            &format!("{label}: bridge Debug"),
            &format!("{:?}", self.bridge),
        );
        assert_clean(&format!("{label}: logs"), &log_text());
    }
}

type Req = http::Request<http_body_util::Full<bytes::Bytes>>;

fn with_header(mut req: Req, name: &str, value: &str) -> Req {
    req.headers_mut().append(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    req
}

#[cfg(feature = "mcp")]
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Successful exchanges

#[tokio::test]
async fn successful_exchanges_leak_no_secret_anywhere() {
    let upstream = MockUpstream::start().await;
    let s = setup(&upstream.base_url(), |b| b);
    let go = async |label: &str, req: Req, resp: MockResponse, want: u16| {
        upstream.push(resp.header("x-should-retry", "false"));
        let got = send(&s.bridge, req).await;
        assert_eq!(got.status.as_u16(), want, "{label}: {}", got.text());
        check_response(label, &got);
        got
    };
    // Centralized keys, blocking and streaming, on every API.
    go(
        "messages blocking",
        post("/anthropic/v1/messages", MESSAGES_BLOCKING),
        MockResponse::json(200, fixture("anthropic/text_blocking.upstream.json")),
        200,
    )
    .await;
    go(
        "messages stream",
        post("/anthropic/v1/messages", MESSAGES_STREAM),
        MockResponse::sse(fixture("anthropic/tool_stream.upstream.sse")),
        200,
    )
    .await;
    go(
        "chat stream",
        post("/openai/v1/chat/completions", CHAT_STREAM),
        MockResponse::sse(fixture("openai/chat-simple.sse")),
        200,
    )
    .await;
    go(
        "responses blocking",
        post("/openai/v1/responses", RESPONSES_BLOCKING),
        MockResponse::json(200, fixture("openai/responses-simple.response.json")),
        200,
    )
    .await;
    // Client keys (BYOK) in x-api-key and in Authorization, and a Copilot token.
    go(
        "byok x-api-key stream",
        with_header(
            post("/byok/v1/messages", MESSAGES_STREAM),
            "x-api-key",
            BYOK_ANTHROPIC,
        ),
        MockResponse::sse(fixture("anthropic/thinking_stream.upstream.sse")),
        200,
    )
    .await;
    go(
        "byok bearer blocking",
        with_header(
            post("/openai-byok/v1/chat/completions", CHAT_BLOCKING),
            "authorization",
            &format!("Bearer {BYOK_OPENAI}"),
        ),
        MockResponse::json(200, fixture("openai/chat-simple.response.json")),
        200,
    )
    .await;
    go(
        "copilot stream",
        with_header(
            post("/copilot/chat/completions", CHAT_STREAM),
            "authorization",
            &format!("Bearer {COPILOT_TOKEN}"),
        ),
        MockResponse::sse(fixture("openai/copilot-chat-tool-first.sse")),
        200,
    )
    .await;
    // Passthrough with the central key and with the client's token.
    go(
        "passthrough models",
        get("/anthropic/v1/models"),
        MockResponse::json(200, r#"{"data":[]}"#),
        200,
    )
    .await;
    go(
        "passthrough copilot models",
        with_header(
            get("/copilot/models"),
            "authorization",
            &format!("Bearer {COPILOT_TOKEN}"),
        ),
        MockResponse::json(200, r#"{"data":[]}"#),
        200,
    )
    .await;
    ended(&s.rec, 7).await;

    // The secrets really were used: the upstream saw each of them.
    let seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| format!("{:?}", r.headers))
        .collect();
    let seen = seen.join("\n");
    for secret in [
        ANTHROPIC_KEY,
        OPENAI_KEY,
        BYOK_ANTHROPIC,
        BYOK_OPENAI,
        COPILOT_TOKEN,
        EXTRA_HEADER,
    ] {
        assert!(seen.contains(secret), "upstream never got {secret}");
    }
    // Records carry only the masked hints.
    let mut hints: Vec<String> = s
        .rec
        .interceptions()
        .iter()
        .map(|i| i.credential_hint.clone().unwrap_or_default())
        .collect();
    hints.sort();
    hints.dedup();
    assert_eq!(
        hints,
        [
            "ghu_...8899",
            "sk-B...bb22",
            "sk-a...7c1d",
            "sk-a...aa11",
            "sk-p...6b5c"
        ]
    );
    assert!(
        log_text().contains("aibridge.interception"),
        "the log capture works (it saw the interception span)"
    );
    s.check_all("successful exchanges");
    // Credentials and providers print redacted.
    for p in providers(&upstream.base_url()) {
        assert_clean("provider Debug", &format!("{p:?}"));
    }
    let mut h = http::HeaderMap::new();
    h.insert("x-api-key", BYOK_ANTHROPIC.parse().unwrap());
    let cred = providers(&upstream.base_url())[1].credential(&h).unwrap();
    assert_clean("credential Debug", &format!("{cred:?}"));
    assert_clean(
        "secret Debug",
        &format!(
            "{:?} {}",
            Secret::new(ANTHROPIC_KEY),
            Secret::new(OPENAI_KEY)
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// Failures

#[tokio::test]
async fn error_paths_leak_no_secret_anywhere() {
    let upstream = MockUpstream::start().await;
    let s = setup(&upstream.base_url(), |b| b);
    let mut ends = 0;
    // Upstream 401, 400 and 502 answers (relayed verbatim), centralized and BYOK.
    for (label, req, status, body) in [
        (
            "401",
            post("/anthropic/v1/messages", MESSAGES_BLOCKING),
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        ),
        (
            "400 byok",
            with_header(
                post("/byok/v1/messages", MESSAGES_STREAM),
                "x-api-key",
                BYOK_ANTHROPIC,
            ),
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: field required"}}"#,
        ),
        (
            "502 openai",
            with_header(
                post("/openai-byok/v1/responses", RESPONSES_BLOCKING),
                "authorization",
                &format!("Bearer {BYOK_OPENAI}"),
            ),
            502,
            "<html>bad gateway</html>",
        ),
    ] {
        upstream.push(MockResponse::json(status, body).header("x-should-retry", "false"));
        let got = send(&s.bridge, req).await;
        assert_eq!(got.status.as_u16(), status, "{label}");
        check_response(label, &got);
        ends += 1;
    }
    // The 401 tripped the Anthropic breaker? No: 401 is not a failure status. A 429 does.
    upstream.push(
        MockResponse::json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        )
        .header("x-should-retry", "false"),
    );
    let got = send(&s.bridge, post("/anthropic/v1/messages", MESSAGES_BLOCKING)).await;
    assert_eq!(got.status, 429);
    ends += 1;
    let got = send(&s.bridge, post("/anthropic/v1/messages", MESSAGES_BLOCKING)).await;
    assert_eq!(got.status, 503, "breaker open: {}", got.text());
    assert!(got.text().contains("circuit breaker is open"));
    check_response("breaker open", &got);
    ends += 1;
    // Mid-stream failure (terminal event) and an in-band error, BYOK.
    let sse = fixture("anthropic/text_stream.upstream.sse");
    upstream.push(MockResponse::sse(sse.slice(..sse.len() / 2)).then_abort());
    let got = send(
        &s.bridge,
        with_header(
            post("/byok/v1/messages", MESSAGES_STREAM),
            "x-api-key",
            BYOK_ANTHROPIC,
        ),
    )
    .await;
    assert!(got.text().contains("event: error"));
    check_response("mid-stream abort", &got);
    ends += 1;
    upstream.push(MockResponse::sse(fixture("openai/chat-error.sse")));
    let got = send(
        &s.bridge,
        with_header(
            post("/copilot/chat/completions", CHAT_STREAM),
            "authorization",
            &format!("Bearer {COPILOT_TOKEN}"),
        ),
    )
    .await;
    check_response("in-band error", &got);
    ends += 1;
    // Bad input: no records, provider-shaped 4xx; the key travels in the request only.
    for (label, req, status) in [
        (
            "not json",
            with_header(
                post(
                    "/byok/v1/messages",
                    format!("{{\"key\": \"{BYOK_ANTHROPIC}\""),
                ),
                "x-api-key",
                BYOK_ANTHROPIC,
            ),
            400,
        ),
        (
            "no model",
            with_header(
                post("/copilot/chat/completions", r#"{"messages":[]}"#),
                "authorization",
                &format!("Bearer {COPILOT_TOKEN}"),
            ),
            400,
        ),
        (
            "too large",
            with_header(
                post("/openai-byok/v1/chat/completions", vec![b' '; 65 * 1024]),
                "authorization",
                &format!("Bearer {BYOK_OPENAI}"),
            ),
            413,
        ),
        (
            "copilot without token",
            post("/copilot/chat/completions", CHAT_BLOCKING),
            401,
        ),
        (
            "malformed authorization",
            with_header(
                post("/openai-byok/v1/chat/completions", CHAT_BLOCKING),
                "authorization",
                &format!("Token {BYOK_OPENAI} extra"),
            ),
            401,
        ),
        (
            "no actor",
            {
                let mut r = with_header(
                    post("/byok/v1/messages", MESSAGES_BLOCKING),
                    "x-api-key",
                    BYOK_ANTHROPIC,
                );
                r.extensions_mut().clear();
                r
            },
            401,
        ),
        (
            "gzip body",
            with_header(
                with_header(
                    post("/byok/v1/messages", MESSAGES_BLOCKING),
                    "x-api-key",
                    BYOK_ANTHROPIC,
                ),
                "content-encoding",
                "gzip",
            ),
            415,
        ),
    ] {
        let got = send(&s.bridge, req).await;
        assert_eq!(got.status.as_u16(), status, "{label}: {}", got.text());
        check_response(label, &got);
    }
    // Recorder failure: 503, nothing sent upstream.
    let before = upstream.request_count();
    s.rec.fail_next(RecordKind::Interception, 1);
    let got = send(
        &s.bridge,
        with_header(
            post("/byok/v1/messages", MESSAGES_BLOCKING),
            "x-api-key",
            BYOK_ANTHROPIC,
        ),
    )
    .await;
    assert_eq!(got.status, 503);
    check_response("recorder failure", &got);
    assert_eq!(upstream.request_count(), before);
    ended(&s.rec, ends).await;
    s.check_all("error paths");
}

#[cfg(feature = "mcp")]
#[tokio::test]
async fn unreachable_upstreams_and_mcp_servers_leak_no_secret() {
    let dead = closed_port();
    let base = format!("http://{dead}");
    let mcp_mock = MockUpstream::start().await;
    // One MCP server that refuses connections, one that answers 401: both carry a secret
    // header and a password in the URL.
    let mcp = aibridge::mcp::McpConfig::new()
        .server(
            aibridge::mcp::McpServer::new(
                "dead",
                format!("http://user:{MCP_URL_PASSWORD}@{dead}/mcp")
                    .parse()
                    .unwrap(),
            )
            .with_header(
                http::header::AUTHORIZATION,
                Secret::new(format!("Bearer {MCP_HEADER}")),
            ),
        )
        .server(
            aibridge::mcp::McpServer::new(
                "denied",
                format!("http://user:{MCP_URL_PASSWORD}@{}/mcp", mcp_mock.addr())
                    .parse()
                    .unwrap(),
            )
            .with_header(
                http::HeaderName::from_static("x-mcp-token"),
                Secret::new(MCP_HEADER),
            ),
        );
    for _ in 0..4 {
        mcp_mock.push(MockResponse::json(401, r#"{"error":"unauthorized"}"#));
    }
    let mcp_debug = format!("{mcp:?}");
    let s = setup(&base, |b| b.mcp(mcp));
    tokio::time::timeout(Duration::from_secs(10), s.bridge.mcp_ready())
        .await
        .expect("MCP first attempts finish");
    assert!(mcp_mock.request_count() >= 1, "the 401 server was asked");
    let sent = format!("{:?}", mcp_mock.requests()[0].headers);
    assert!(
        sent.contains(MCP_HEADER),
        "the MCP header secret was sent: {sent}"
    );

    for (label, req) in [
        (
            "unreachable bridged",
            with_header(
                post("/byok/v1/messages", MESSAGES_STREAM),
                "x-api-key",
                BYOK_ANTHROPIC,
            ),
        ),
        (
            "unreachable central",
            post("/openai/v1/chat/completions", CHAT_BLOCKING),
        ),
        (
            "unreachable copilot",
            with_header(
                post("/copilot/responses", RESPONSES_BLOCKING),
                "authorization",
                &format!("Bearer {COPILOT_TOKEN}"),
            ),
        ),
    ] {
        let got = send(&s.bridge, req).await;
        assert_eq!(got.status, 502, "{label}: {}", got.text());
        check_response(label, &got);
    }
    let got = send(
        &s.bridge,
        with_header(
            get("/copilot/models"),
            "authorization",
            &format!("Bearer {COPILOT_TOKEN}"),
        ),
    )
    .await;
    assert_eq!(got.status, 502);
    check_response("unreachable passthrough", &got);
    ended(&s.rec, 3).await;
    assert_clean("MCP config Debug", &mcp_debug);
    assert!(
        log_text().contains("MCP server"),
        "MCP failures were logged"
    );
    let report = s.bridge.shutdown(Duration::from_secs(5)).await;
    assert_clean("shutdown report", &format!("{report:?}"));
    s.check_all("unreachable");
}

// ---------------------------------------------------------------------------------------------
// Actor headers

#[tokio::test]
async fn client_sent_actor_headers_never_reach_the_upstream() {
    let upstream = MockUpstream::start().await;
    let s = setup(&upstream.base_url(), |b| b);
    let forge = |req: Req| {
        let req = with_header(req, "X-Ai-Bridge-Actor-Id", "mallory");
        let req = with_header(req, "x-ai-bridge-actor-metadata-team", "admins");
        with_header(req, "X-AI-BRIDGE-ACTOR-METADATA-ROLE", "root")
    };
    // `byok` sends actor headers, `anthropic` does not; passthrough never does.
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    upstream.push(MockResponse::json(
        200,
        fixture("anthropic/text_blocking.upstream.json"),
    ));
    upstream.push(MockResponse::json(200, r#"{"data":[]}"#));
    let r1 = send(
        &s.bridge,
        forge(with_header(
            post("/byok/v1/messages", MESSAGES_BLOCKING),
            "x-api-key",
            BYOK_ANTHROPIC,
        )),
    )
    .await;
    let r2 = send(
        &s.bridge,
        forge(post("/anthropic/v1/messages", MESSAGES_BLOCKING)),
    )
    .await;
    let r3 = send(&s.bridge, forge(get("/anthropic/v1/models"))).await;
    assert_eq!(
        [r1.status, r2.status, r3.status].map(|s| s.as_u16()),
        [200; 3]
    );
    let reqs = upstream.wait_for_requests(3).await;
    let actor = |i: usize| -> Vec<(String, String)> {
        reqs[i]
            .headers
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-ai-bridge-actor"))
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(
        actor(0),
        vec![
            ("x-ai-bridge-actor-id".to_owned(), "alice".to_owned()),
            (
                "x-ai-bridge-actor-metadata-team".to_owned(),
                "infra".to_owned()
            ),
        ],
        "only the bridge's own actor headers"
    );
    assert_eq!(actor(1), vec![], "actor headers off: none at all");
    assert_eq!(actor(2), vec![], "passthrough: none at all");
    ended(&s.rec, 2).await;
    assert!(
        s.rec
            .interceptions()
            .iter()
            .all(|i| i.initiator_id == "alice")
    );
}

// ---------------------------------------------------------------------------------------------
// Passthrough allowlist over a real HTTP/1.1 connection

/// Serves the bridge on loopback (with an actor layer), like a host would.
async fn serve(bridge: RequestBridge) -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let svc = tower::ServiceBuilder::new()
        .map_request(|mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Actor::new("alice"));
            req
        })
        .service(bridge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
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

/// Sends one raw HTTP/1.1 request (request target and Host exactly as given) and returns
/// the status code and the whole response text.
async fn raw(addr: SocketAddr, method: &str, target: &str, host: &str) -> (u16, String) {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {BYOK_ANTHROPIC}\r\nConnection: close\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text:?}"));
        (status, text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn passthrough_never_leaves_the_allowlist() {
    let upstream = MockUpstream::start().await;
    let s = setup(&upstream.base_url(), |b| b);
    let addr = serve(s.bridge.clone()).await;
    let host = addr.to_string();
    // (method, request target, Host header, expected status).
    let cases: Vec<(&str, &str, &str, u16)> = vec![
        ("GET", "/anthropic/v1/models/../../admin", &host, 404),
        (
            "GET",
            "/anthropic/v1/models/../../../v1/messages/batches",
            &host,
            404,
        ),
        (
            "GET",
            "/anthropic/v1/models/%2e%2e/%2e%2e/admin",
            &host,
            404,
        ),
        ("GET", "/anthropic/v1/models/%2E%2e/%2e./admin", &host, 404),
        ("GET", "/anthropic/v1/models/.%2E/x", &host, 404),
        ("GET", "/anthropic/v1/models/./x", &host, 404),
        ("GET", "/anthropic/v1/models/..%2F..%2Fadmin", &host, 404),
        ("GET", "/anthropic/v1/models/..%2f..%2fadmin", &host, 404),
        (
            "GET",
            "/anthropic/v1/models/%2e%2e%2f%2e%2e%2fadmin",
            &host,
            404,
        ),
        ("GET", "/anthropic/v1/models/..%5C..%5Cadmin", &host, 404),
        ("GET", "/anthropic/v1/models%2F..%2F..%2Fadmin", &host, 404),
        ("GET", "/anthropic/v1/models//..//..//admin", &host, 404),
        ("GET", "/anthropic/v1/models//evil.example/x", &host, 404),
        ("GET", "/anthropic//v1/models", &host, 404),
        ("GET", "//anthropic/v1/models", &host, 404),
        ("GET", "/anthropic/v1/messages/batches", &host, 404),
        ("GET", "/anthropic/admin", &host, 404),
        ("GET", "/openai/v1/models/../../../admin", &host, 404),
        (
            "GET",
            "/openai/v1/responses/%2e%2e/%2e%2e/admin",
            &host,
            404,
        ),
        (
            "GET",
            "/openai/v1/conversations/..%2f..%2fadmin",
            &host,
            404,
        ),
        ("GET", "/openai/v1/completions", &host, 404),
        ("GET", "/copilot/agents/../../admin", &host, 404),
        ("GET", "/copilot/.well-known/../admin", &host, 404),
        ("GET", "/copilot/mcp/%2e%2e/%2e%2e/admin", &host, 404),
        ("GET", "http://evil.example/x", &host, 404),
        ("GET", "http://evil.example/admin", "evil.example", 404),
        (
            "GET",
            "http://evil.example/anthropic/v1/models/../../admin",
            &host,
            404,
        ),
        ("GET", "/admin", "evil.example", 404),
        // The WHATWG URL parser reads `\` as `/` in http URLs: this one used to reach /admin.
        ("GET", "/anthropic/v1/models/..\\..\\admin", &host, 404),
        ("GET", "/anthropic/v1/models/%2e%2e%5cadmin", &host, 404),
        (
            "GET",
            "/anthropic/v1/models/x\\..\\..\\..\\admin",
            &host,
            404,
        ),
    ];
    let mut failures = Vec::new();
    for (method, target, host, want) in &cases {
        let (status, text) = raw(addr, method, target, host).await;
        if status != *want {
            failures.push(format!(
                "{method} {target} (Host: {host}): {status}, want {want}\n{text}"
            ));
        }
        assert_clean(&format!("response to {target}"), &text);
    }
    assert_eq!(
        upstream.request_count(),
        0,
        "requests escaped to the upstream: {:?}",
        upstream
            .requests()
            .iter()
            .map(|r| r.path_and_query.clone())
            .collect::<Vec<_>>()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Allowlisted routes still pass, whatever Host or absolute form the client used; the
    // upstream sees its own host and the configured credential.
    for (target, host) in [
        ("/anthropic/v1/models", "evil.example"),
        (
            "http://evil.example/anthropic/v1/models?limit=1",
            "evil.example",
        ),
    ] {
        upstream.push(MockResponse::json(200, r#"{"data":[]}"#));
        let (status, text) = raw(addr, "GET", target, host).await;
        assert_eq!(status, 200, "{target}: {text}");
        assert_clean(&format!("response to {target}"), &text);
    }
    let reqs = upstream.wait_for_requests(2).await;
    for r in &reqs {
        assert_eq!(r.path(), "/v1/models");
        assert_eq!(r.header("host"), Some(upstream.addr().to_string().as_str()));
        assert_eq!(
            r.header("x-api-key"),
            Some(ANTHROPIC_KEY),
            "central key, not the client's"
        );
    }
    assert_eq!(reqs[1].query(), Some("limit=1"));
    s.check_all("passthrough allowlist");
}

// ---------------------------------------------------------------------------------------------
// Cloud providers

/// Bedrock (static keys with a session token) and Vertex (a service-account key exchanged
/// for a token) through success, streaming, AWS and Google errors, a failing token
/// endpoint and count_tokens: no key, token or private key reaches any channel.
#[cfg(all(feature = "bedrock", feature = "vertex"))]
#[tokio::test]
async fn cloud_credentials_leak_nowhere() {
    use aibridge::provider::{Bedrock, ModelMap, Vertex};
    let cloud = MockUpstream::start().await;
    let tokens = MockUpstream::start().await;
    let pem = std::fs::read_to_string(support::fixture_path("cloud/test-sa-key.pem")).unwrap();
    let key_line = pem.lines().nth(3).unwrap().to_owned();
    let sa = serde_json::json!({
        "type": "service_account",
        "private_key": pem,
        "client_email": "bridge@p.iam.gserviceaccount.com",
        "token_uri": format!("{}/token", tokens.base_url()),
    })
    .to_string();
    let no_retry = RetryConfig::default().with_max_retries(0);
    let bedrock = Bedrock::new("us-east-1")
        .with_base_url(cloud.base_url().parse().unwrap())
        .with_static_credentials(
            AWS_ACCESS_KEY,
            Secret::new(AWS_SECRET_KEY),
            Some(Secret::new(AWS_SESSION_TOKEN)),
        )
        .with_models(
            ModelMap::new().with_pair("anthropic.claude-main-v1:0", "anthropic.claude-haiku-v1:0"),
        )
        .with_retry(no_retry.clone());
    let vertex = Vertex::new("p", "global")
        .with_base_url(cloud.base_url().parse().unwrap())
        .with_service_account_key(&sa)
        .unwrap()
        .with_retry(no_retry);
    let debug = format!("{bedrock:?} {vertex:?}");
    assert!(!debug.contains(&key_line), "private key in Debug");
    let s = setup(&cloud.base_url(), |b| b.provider(bedrock).provider(vertex));
    let ok = || MockResponse::json(200, fixture("anthropic/text_blocking.upstream.json"));
    cloud.push(ok());
    let r = send(&s.bridge, post("/bedrock/v1/messages", MESSAGES_BLOCKING)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    check_response("bedrock ok", &r);
    cloud.push(
        MockResponse::json(
            403,
            r#"{"message":"The security token included in the request is invalid."}"#,
        )
        .header("x-amzn-errortype", "UnrecognizedClientException"),
    );
    let r = send(&s.bridge, post("/bedrock/v1/messages", MESSAGES_STREAM)).await;
    assert_eq!(r.status, 403);
    check_response("bedrock 403", &r);
    cloud.push(MockResponse::json(200, r#"{"inputTokens":3}"#));
    let r = send(
        &s.bridge,
        post("/bedrock/v1/messages/count_tokens", MESSAGES_BLOCKING),
    )
    .await;
    assert_eq!(r.status, 200);
    check_response("bedrock count_tokens", &r);
    tokens.push(MockResponse::json(
        200,
        format!(r#"{{"access_token":"{GOOGLE_TOKEN}","expires_in":3600}}"#),
    ));
    cloud.push(ok());
    let r = send(&s.bridge, post("/vertex/v1/messages", MESSAGES_BLOCKING)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    check_response("vertex ok", &r);
    cloud.push(MockResponse::json(401, r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#));
    let r = send(&s.bridge, post("/vertex/v1/messages", MESSAGES_BLOCKING)).await;
    assert_eq!(r.status, 401);
    check_response("vertex 401", &r);
    // The cloud saw the credentials (the test would be vacuous otherwise).
    let reqs = cloud.requests();
    assert_eq!(
        reqs[0].header("x-amz-security-token"),
        Some(AWS_SESSION_TOKEN)
    );
    assert_eq!(
        reqs[3].header("authorization"),
        Some(format!("Bearer {GOOGLE_TOKEN}").as_str())
    );
    ended(&s.rec, 4).await;
    s.check_all("cloud");
    for (channel, text) in [("logs", log_text()), ("records", records_text(&s.rec))] {
        assert!(!text.contains(&key_line), "private key in {channel}");
    }
}
