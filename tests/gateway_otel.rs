//! The example gateway's OpenTelemetry export (issue 16): the real gateway process, built
//! with feature `otel`, exports its spans over OTLP/HTTP (protobuf) to a collector stub in
//! this test. One streamed Messages request, with a W3C `traceparent`, in which the model
//! calls an injected tool of a real rmcp MCP server, must arrive (after a graceful
//! shutdown, which flushes the batch exporter) as the span tree interception → upstream
//! ×2, tool_call, record in the caller's trace, with the GenAI attributes, the
//! `service.name` resource and no secret anywhere in the exported bytes.
//!
//! Needs the example gateway binary built with `otel`: `$AIBRIDGE_GATEWAY_BIN`, or the one
//! a whole `cargo test --all-features` builds next to this test
//! (`<target>/<profile>/examples/gateway`).
#![cfg(all(feature = "otel", feature = "mcp", feature = "sqlite"))]

mod common;
mod mcp_support;
mod mcp_wire;
mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use common::ANTHROPIC_KEY;
use mcp_support::McpTestServer;
use mcp_wire::{Api, Usage, call, turn};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use support::MockUpstream;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

const TOOL: &str = "coder_list_workspaces";
const TOOL_ID: &str = "bmcp_coder_coder_list_workspaces";
/// Alice's own MCP credential (policy file), and her gateway token.
const MCP_SECRET: &str = "mcp-secret-token-0123456789";
const GATEWAY_TOKEN: &str = "gw-token-alice-0123456789";
const SERVICE_NAME: &str = "aibridge-otel-test";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN_ID: &str = "b7ad6b7169203331";
/// The longest any step waits.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The collector stub
// ---------------------------------------------------------------------------------------

/// One export request as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    content_type: Option<String>,
    raw: Bytes,
    req: ExportTraceServiceRequest,
}

/// A plain OTLP/HTTP collector: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest` (anything else: 404, or 400 if it does not decode).
struct Collector {
    url: String,
    got: watch::Sender<Vec<Received>>,
}

impl Collector {
    async fn start() -> Self {
        let got = watch::Sender::new(Vec::new());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, got }
    }

    /// Every span received so far, with the `service.name` of its resource.
    fn spans(&self) -> Vec<(Option<String>, Span)> {
        self.got
            .borrow()
            .iter()
            .flat_map(|r| r.req.resource_spans.iter())
            .flat_map(|rs| {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"));
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter())
                    .map(move |s| (service.clone(), s.clone()))
            })
            .collect()
    }

    /// Waits (bounded) until the received spans satisfy `done`; `logs` (the gateway's)
    /// go into the failure message.
    async fn wait_for(
        &self,
        what: &str,
        logs: &str,
        done: impl Fn(&[(Option<String>, Span)]) -> bool,
    ) {
        let mut rx = self.got.subscribe();
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                if done(&self.spans()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(
            waited.is_ok() && done(&self.spans()),
            "the collector never got {what}; spans: {:#?}\ngateway log:\n{logs}",
            self.spans()
                .iter()
                .map(|(_, s)| &s.name)
                .collect::<Vec<_>>()
        );
    }
}

async fn export(
    State(got): State<watch::Sender<Vec<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let Ok(req) = ExportTraceServiceRequest::decode(body.clone()) else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    got.send_modify(|v| {
        v.push(Received {
            content_type,
            raw: body,
            req,
        });
    });
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------

fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AIBRIDGE_GATEWAY_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_absolute() {
            p
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
        };
    }
    // This test runs from <target>/<profile>/deps/; `cargo test` builds the examples into
    // <target>/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("gateway"))
        .unwrap();
    assert!(
        candidate.is_file(),
        "the example gateway binary is not at {}: run the whole `cargo test --all-features` \
         (it builds the examples), or `cargo build --features sqlite,mcp,otel --example \
         gateway` and set AIBRIDGE_GATEWAY_BIN",
        candidate.display()
    );
    candidate
}

/// A running example gateway; killed if still running when dropped.
struct GatewayProc {
    child: Child,
    url: String,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProc {
    /// Starts the gateway with exactly `env` (nothing inherited) and alice's policy file.
    async fn start(env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("gateway.stderr");
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "[actors.\"alice\"]\nmodels = [\"*\"]\n\n\
                 [actors.\"alice\".mcp_headers.coder]\nAuthorization = \"Bearer {MCP_SECRET}\"\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(gateway_bin());
        cmd.env_clear()
            .current_dir(dir.path())
            .env("AIBRIDGE_LISTEN", "127.0.0.1:0")
            .env("AIBRIDGE_POLICY", &policy)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut gw = Self {
            child,
            url: String::new(),
            stderr,
            _dir: dir,
        };
        let mut line = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line)).await;
        match line
            .trim_end()
            .strip_prefix("aibridge gateway listening on ")
        {
            Some(url) => url.clone_into(&mut gw.url),
            None => panic!(
                "gateway did not announce its address (stdout {line:?}):\n{}",
                gw.logs()
            ),
        }
        gw
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM (a graceful shutdown, which flushes the exporter), then the exit code.
    async fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().expect("the gateway is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(status) => status.unwrap().code(),
            Err(_) => panic!("gateway did not exit after SIGTERM:\n{}", self.logs()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_exports_one_streamed_interception_as_a_span_tree_in_the_callers_trace() {
    let api = Api::Messages;
    let collector = Collector::start().await;
    let upstream = MockUpstream::start().await;
    let mcp = McpTestServer::start(&[TOOL]).await;
    let usage = |input, output| Usage {
        input,
        cached: 0,
        output,
    };
    let c1 = call("call_01", TOOL_ID, r#"{"owner":"admin"}"#);
    upstream.push(api.answer(
        true,
        &turn("msg_01", Some("Listing."), vec![c1], usage(100, 10)),
    ));
    upstream.push(api.answer(true, &turn("msg_02", Some("One."), vec![], usage(200, 20))));

    let mut gw = GatewayProc::start(&[
        (
            "AIBRIDGE_DATABASE_URL",
            "sqlite://gateway.db?mode=rwc".to_owned(),
        ),
        ("AIBRIDGE_TOKENS", format!("{GATEWAY_TOKEN}:alice")),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_owned()),
        ("ANTHROPIC_BASE_URL", upstream.base_url()),
        (
            "AIBRIDGE_MCP_SERVERS",
            format!("coder={}", mcp.url_string()),
        ),
        // The general endpoint: the gateway must append `/v1/traces` itself.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.clone()),
        ("OTEL_SERVICE_NAME", SERVICE_NAME.to_owned()),
    ])
    .await;
    assert!(
        gw.logs().contains("exporting traces over OTLP/HTTP"),
        "the gateway does not export (a binary built without feature `otel`, or an old one? \
         `cargo build --all-features --example gateway`):\n{}",
        gw.logs()
    );

    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/aibridge{}", gw.url, api.path()))
        .header("content-type", "application/json")
        .header("x-api-key", GATEWAY_TOKEN)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .body(api.request(true, "list my workspaces"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.logs());
    let text = tokio::time::timeout(DEADLINE, resp.text())
        .await
        .expect("the stream ended")
        .unwrap();
    assert!(text.contains("message_stop"), "{text}");
    assert!(text.contains(r#""stop_reason":"end_turn""#), "{text}");
    // The tool ran through alice's own MCP session, with her credential.
    let auth = mcp.call_auth();
    assert_eq!(
        auth,
        vec![(TOOL.to_owned(), Some(format!("Bearer {MCP_SECRET}")))],
        "{}",
        gw.logs()
    );

    // A graceful shutdown flushes the batch exporter before the process exits.
    assert_eq!(gw.terminate().await, Some(0), "{}", gw.logs());
    collector
        .wait_for("the interception with its record", &gw.logs(), |spans| {
            let Some(i) = spans
                .iter()
                .find(|(_, s)| s.name == "aibridge.interception")
            else {
                return false;
            };
            spans
                .iter()
                .any(|(_, s)| s.name == "aibridge.record" && s.parent_span_id == i.1.span_id)
        })
        .await;

    let received = collector.got.borrow().clone();
    for r in &received {
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/x-protobuf"),
            "OTLP/HTTP protobuf"
        );
    }
    let spans = collector.spans();
    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    for (service, s) in &spans {
        assert_eq!(service.as_deref(), Some(SERVICE_NAME), "{}", s.name);
    }

    // The interception continues the caller's trace, as the child of its span.
    let interceptions = named("aibridge.interception");
    assert_eq!(interceptions.len(), 1, "{interceptions:#?}");
    let i = interceptions[0];
    assert_eq!(hex::encode(&i.trace_id), TRACE_ID, "the caller's trace id");
    assert_eq!(
        hex::encode(&i.parent_span_id),
        PARENT_SPAN_ID,
        "the traceparent's span is the parent"
    );
    let a = &i.attributes;
    assert_eq!(string_attr(a, "outcome").as_deref(), Some("completed"));
    assert_eq!(
        string_attr(a, "gen_ai.system").as_deref(),
        Some("anthropic")
    );
    assert_eq!(
        string_attr(a, "gen_ai.request.model").as_deref(),
        Some(api.model())
    );
    assert_eq!(
        string_attr(a, "gen_ai.response.id").as_deref(),
        Some("msg_01")
    );
    assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), Some(300), "{a:?}");
    assert_eq!(int_attr(a, "gen_ai.usage.output_tokens"), Some(30), "{a:?}");
    assert_eq!(string_attr(a, "initiator_id").as_deref(), Some("alice"));

    let children = |name: &str| -> Vec<&Span> {
        named(name)
            .into_iter()
            .filter(|s| s.parent_span_id == i.span_id)
            .collect()
    };
    let mut upstreams = children("aibridge.upstream");
    assert_eq!(upstreams.len(), 2, "{spans:#?}");
    upstreams.sort_by_key(|s| int_attr(&s.attributes, "iteration"));
    for (n, u) in upstreams.iter().enumerate() {
        assert_eq!(u.trace_id, i.trace_id);
        let a = &u.attributes;
        assert_eq!(int_attr(a, "iteration"), Some(n as i64 + 1), "{a:?}");
        assert_eq!(int_attr(a, "attempt"), Some(1), "{a:?}");
        assert_eq!(int_attr(a, "status"), Some(200), "{a:?}");
        assert_eq!(
            string_attr(a, "gen_ai.system").as_deref(),
            Some("anthropic")
        );
        let url = string_attr(a, "url").unwrap_or_default();
        assert!(url.ends_with("/v1/messages"), "{url}");
    }
    let tool_calls = children("aibridge.tool_call");
    assert_eq!(tool_calls.len(), 1, "{spans:#?}");
    assert_eq!(
        string_attr(&tool_calls[0].attributes, "mcp_tool").as_deref(),
        Some(TOOL)
    );
    let records = children("aibridge.record");
    assert_eq!(records.len(), 1, "the awaited interception record");
    assert_eq!(
        string_attr(&records[0].attributes, "kind").as_deref(),
        Some("interception")
    );
    assert_eq!(
        string_attr(&records[0].attributes, "outcome").as_deref(),
        Some("written")
    );
    assert!(
        !named("aibridge.mcp.connect").is_empty(),
        "the MCP connections are exported too"
    );

    // No secret anywhere in what left the gateway (the search does find plain values).
    let exported = |value: &str| {
        received
            .iter()
            .any(|r| r.raw.windows(value.len()).any(|w| w == value.as_bytes()))
    };
    assert!(exported("msg_01") && exported(SERVICE_NAME));
    for secret in [ANTHROPIC_KEY, MCP_SECRET, GATEWAY_TOKEN] {
        assert!(!exported(secret), "{secret} in an export");
    }
}
