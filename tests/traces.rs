//! The library's `tracing` spans (D17, issue 16): one streamed interception with an MCP
//! tool call makes the span tree interception → upstream ×2, tool_call, record, under the
//! host's request span (the current span when the service is called: a host whose
//! subscriber extracts the incoming W3C `traceparent` into that span gets the whole tree
//! in the caller's trace), with the GenAI semantic-convention attributes and no secret.
#![cfg(feature = "mcp")]

mod common;
mod mcp_support;
mod mcp_wire;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aibridge::mcp::{McpConfig, McpServer};
use common::{ANTHROPIC_KEY, OPENAI_KEY, bridge, post, send};
use mcp_support::McpTestServer;
use mcp_wire::{Api, Usage, call, turn};
use support::MockUpstream;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

const TOOL: &str = "coder_list_workspaces";
const TOOL_ID: &str = "bmcp_coder_coder_list_workspaces";
const MCP_SECRET: &str = "mcp-secret-token-0123456789";
const MCP_QUERY_SECRET: &str = "mcp-query-secret-9876543210";

#[derive(Debug, Clone)]
struct SpanRec {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

/// Collects every span with its parent and fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRec>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(SpanRec {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        // Ids are reused after a span closes: the latest span with this id is the live one.
        if let Some(s) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn one_streamed_interception_with_a_tool_call_makes_the_span_tree() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let api = Api::Messages;
    let upstream = MockUpstream::start().await;
    let mcp = McpTestServer::start(&[TOOL]).await;
    // A credential in the server URL's query must reach no span either.
    let url = format!("{}?key={MCP_QUERY_SECRET}", mcp.url());
    let server = McpServer::new("coder", url.parse().unwrap()).with_header(
        http::header::AUTHORIZATION,
        aibridge::provider::Secret::new(MCP_SECRET),
    );
    let (bridge, rec) = bridge(&upstream.base_url(), |b| {
        b.mcp(McpConfig::new().server(server))
    });
    bounded("mcp_ready", bridge.mcp_ready()).await;
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

    let host = tracing::info_span!(
        "host.request",
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    let resp = bounded(
        "the response",
        tracing::Instrument::instrument(
            send(
                &bridge,
                post(api.path(), api.request(true, "list my workspaces")),
            ),
            host.clone(),
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    bounded("the end", rec.wait_for_ended(1)).await;

    let all = spans.0.lock().unwrap().clone();
    let named =
        |name: &str| -> Vec<SpanRec> { all.iter().filter(|s| s.name == name).cloned().collect() };
    let host_id = host.id().unwrap().into_u64();
    let interceptions = named("aibridge.interception");
    assert_eq!(interceptions.len(), 1, "{all:#?}");
    let i = &interceptions[0];
    assert_eq!(i.parent, Some(host_id), "the host's span is the parent");
    let f = &i.fields;
    assert_eq!(f["outcome"], "completed", "{f:?}");
    assert_eq!(f["gen_ai.system"], "anthropic");
    assert_eq!(f["gen_ai.request.model"], api.model());
    assert_eq!(f["gen_ai.usage.input_tokens"], "300");
    assert_eq!(f["gen_ai.usage.output_tokens"], "30");
    assert_eq!(f["gen_ai.response.id"], "msg_01");

    let upstreams: Vec<SpanRec> = named("aibridge.upstream")
        .into_iter()
        .filter(|s| s.parent == Some(i.id))
        .collect();
    assert_eq!(upstreams.len(), 2, "{all:#?}");
    for (n, u) in upstreams.iter().enumerate() {
        assert_eq!(u.fields["iteration"], (n + 1).to_string());
        assert_eq!(u.fields["attempt"], "1");
        assert_eq!(u.fields["status"], "200");
        assert_eq!(u.fields["gen_ai.system"], "anthropic");
        assert!(u.fields["url"].ends_with("/v1/messages"), "{:?}", u.fields);
    }
    let tool_calls: Vec<SpanRec> = named("aibridge.tool_call")
        .into_iter()
        .filter(|s| s.parent == Some(i.id))
        .collect();
    assert_eq!(tool_calls.len(), 1, "{all:#?}");
    assert_eq!(tool_calls[0].fields["mcp_tool"], TOOL);
    let records: Vec<SpanRec> = named("aibridge.record")
        .into_iter()
        .filter(|s| s.parent == Some(i.id))
        .collect();
    assert_eq!(
        records.len(),
        1,
        "the interception record, awaited in the task"
    );
    assert_eq!(records[0].fields["kind"], "interception");
    assert_eq!(records[0].fields["outcome"], "written");
    assert!(
        named("aibridge.record").len() > 1,
        "queued records have their own spans"
    );
    let connects = named("aibridge.mcp.connect");
    assert!(!connects.is_empty(), "{all:#?}");
    assert_eq!(connects[0].fields["tool_count"], "1");
    // No secret in any attribute.
    for s in &all {
        for (k, v) in &s.fields {
            for secret in [ANTHROPIC_KEY, OPENAI_KEY, MCP_SECRET, MCP_QUERY_SECRET] {
                assert!(!v.contains(secret), "{} {k}={v}", s.name);
            }
        }
    }
}
