//! Metrics under hostile input (issue 17, limit 9): label values that come from the client
//! are bounded (metrics module docs, "Bounded labels"). A real bridge in front of the
//! loopback mock upstream, driven as an attacker would: thousands of distinct model names,
//! tool names and actor ids, and extension HTTP methods on a passthrough route.
//!
//! Current-thread runtime: an interception's metrics are updated by its task right after it
//! queues its ended record, without an await in between, so once
//! `MemoryRecorder::wait_for_ended` returns they are in place.

mod common;
mod support;

use std::collections::BTreeSet;

use aibridge::RequestBridge;
use aibridge::metrics::{DEFAULT_MAX_LABEL_VALUES, Metrics, OTHER};
use aibridge::recorder::MemoryRecorder;
use bytes::Bytes;
use common::prom::try_value;
use common::*;
use futures::StreamExt as _;
use http::Request;
use http_body_util::Full;
use prometheus::Registry;
use prometheus::proto::MetricFamily;
use support::{MockResponse, MockUpstream, fixture};

const CHAT_PATH: &str = "/openai/v1/chat/completions";
/// Requests in flight at once (the mock upstream and the bridge share one thread).
const CONCURRENCY: usize = 32;

/// A Chat request for `model` by actor `who`.
fn chat(model: &str, who: &str) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let mut req = post(CHAT_PATH, body);
    req.extensions_mut().insert(aibridge::Actor::new(who));
    req
}

/// The upstream's answer: a selection of the client tool `tool`.
fn selecting(tool: &str) -> MockResponse {
    let body = String::from_utf8(fixture("openai/chat-tool-read_file.response.json").to_vec())
        .unwrap()
        .replace(r#""name": "read_file""#, &format!(r#""name": "{tool}""#));
    MockResponse::json(200, body)
}

/// Sends requests `range` (model `m-{i}`, actor `user-{i}`, tool `tool-{i}`), all answered
/// 200, and waits until `range.end` interceptions have ended in total.
async fn hostile_batch(
    bridge: &RequestBridge,
    rec: &MemoryRecorder,
    upstream: &MockUpstream,
    range: std::ops::Range<usize>,
) {
    let end = range.end;
    for i in range.clone() {
        upstream.push(selecting(&format!("tool-{i}")));
    }
    let statuses: Vec<_> = futures::stream::iter(range)
        .map(|i| async move {
            send(bridge, chat(&format!("m-{i}"), &format!("user-{i}")))
                .await
                .status
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    ended(rec, end).await;
}

/// Every value the label `label` takes in the families `name` selects.
fn label_values(
    families: &[MetricFamily],
    name: impl Fn(&str) -> bool,
    label: &str,
) -> BTreeSet<String> {
    families
        .iter()
        .filter(|f| name(f.name()))
        .flat_map(|f| f.get_metric().iter())
        .flat_map(|m| m.get_label().iter())
        .filter(|l| l.name() == label)
        .map(|l| l.value().to_owned())
        .collect()
}

/// Distinct values of `label` within the family `name`.
fn values_in(reg: &Registry, name: &str, label: &str) -> BTreeSet<String> {
    label_values(&reg.gather(), |n| n == name, label)
}

fn scrape(reg: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&reg.gather())
        .unwrap()
}

fn overflow(reg: &Registry, label: &str, reason: &str) -> Option<f64> {
    try_value(
        reg,
        "metric_label_overflow_total",
        &[("label", label), ("reason", reason)],
    )
}

#[tokio::test]
async fn five_thousand_distinct_models_leave_the_scrape_bounded() {
    const N: usize = 5_000;
    let cap = DEFAULT_MAX_LABEL_VALUES;
    let upstream = MockUpstream::start().await;
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.metrics(metrics));

    hostile_batch(&bridge, &rec, &upstream, 0..N / 2).await;
    let half = scrape(&reg);
    hostile_batch(&bridge, &rec, &upstream, N / 2..N).await;
    let full = scrape(&reg);

    // Each bounded label holds the first `cap` values plus `other`, in every family.
    let families = reg.gather();
    let models = label_values(&families, |_| true, "model");
    assert_eq!(models.len(), cap + 1, "distinct model values");
    assert!(models.contains(OTHER));
    assert!(models.contains("m-0"), "the first values keep their names");
    for family in [
        "interceptions_total",
        "interceptions_duration_seconds",
        "interceptions_inflight",
        "tokens_total",
        "prompts_total",
        "non_injected_tool_selections_total",
        "circuit_breaker_state",
    ] {
        assert_eq!(
            label_values(&families, |n| n == family, "model").len(),
            cap + 1,
            "{family}{{model}}"
        );
    }
    assert_eq!(
        label_values(&families, |_| true, "initiator_id").len(),
        cap + 1
    );
    assert_eq!(
        label_values(
            &families,
            |n| n == "non_injected_tool_selections_total",
            "name"
        )
        .len(),
        cap + 1
    );

    // Whatever went to `other` is counted: once per interception, once per tool selection.
    let rest = (N - cap) as f64;
    assert_eq!(overflow(&reg, "model", "limit"), Some(rest));
    assert_eq!(overflow(&reg, "initiator_id", "limit"), Some(rest));
    assert_eq!(overflow(&reg, "name", "limit"), Some(rest));
    assert_eq!(overflow(&reg, "model", "length"), Some(0.0));
    assert_eq!(overflow(&reg, "type", "limit"), Some(0.0));
    // The gauge is lowered under the label it was raised under: nothing stays in flight.
    let inflight = families
        .iter()
        .find(|f| f.name() == "interceptions_inflight")
        .unwrap();
    for m in inflight.get_metric() {
        assert_eq!(m.get_gauge().get_value(), 0.0, "{:?}", m.get_label());
    }
    assert_eq!(
        try_value(
            &reg,
            "interceptions_total",
            &[
                ("provider", "openai"),
                ("model", OTHER),
                ("status", "completed"),
                ("route", "/v1/chat/completions"),
                ("method", "POST"),
                ("initiator_id", OTHER),
                ("client", "Unknown"),
            ]
        ),
        Some(rest)
    );

    // The scrape stopped growing once the bound was reached (before the bound, each new
    // model added its series: about 10 MB for 5,000 models). A few bytes of slack for the
    // digits of the `other` series' values.
    assert!(
        full.len() <= half.len() + 1024,
        "scrape grew from {} bytes after {} requests to {} after {N}",
        half.len(),
        N / 2,
        full.len()
    );
    let lines = full.lines().count();
    assert!(
        lines < 40 * (cap + 1),
        "{lines} lines, {} bytes",
        full.len()
    );
}

#[tokio::test]
async fn a_smaller_bound_and_over_long_values() {
    let upstream = MockUpstream::start().await;
    let reg = Registry::new();
    let metrics = Metrics::builder()
        .max_label_values(3)
        .register(&reg)
        .unwrap();
    let (bridge, rec) = bridge(&upstream.base_url(), |b| b.metrics(metrics));
    let long = "x".repeat(aibridge::metrics::MAX_LABEL_VALUE_BYTES + 1);
    for (i, model) in ["a", &long, "b", "c", "d", "a"].into_iter().enumerate() {
        upstream.push(selecting("read_file"));
        assert_eq!(send(&bridge, chat(model, "alice")).await.status, 200);
        ended(&rec, i + 1).await;
    }
    assert_eq!(
        values_in(&reg, "interceptions_total", "model"),
        ["a", "b", "c", OTHER].map(str::to_owned).into()
    );
    assert_eq!(overflow(&reg, "model", "length"), Some(1.0));
    assert_eq!(overflow(&reg, "model", "limit"), Some(1.0));
}

#[tokio::test]
async fn passthrough_reports_extension_methods_as_other() {
    let upstream = MockUpstream::start().await;
    let reg = Registry::new();
    let metrics = Metrics::new(&reg).unwrap();
    let (bridge, _rec) = bridge(&upstream.base_url(), |b| b.metrics(metrics));
    for i in 0..20 {
        upstream.push(MockResponse::json(200, r#"{"data":[]}"#));
        let mut req = get("/openai/v1/models");
        *req.method_mut() = http::Method::from_bytes(format!("PROBE{i}").as_bytes()).unwrap();
        assert_eq!(send(&bridge, req).await.status, 200);
    }
    upstream.push(MockResponse::json(200, r#"{"data":[]}"#));
    assert_eq!(send(&bridge, get("/openai/v1/models")).await.status, 200);
    assert_eq!(
        values_in(&reg, "passthrough_total", "method"),
        ["GET", OTHER].map(str::to_owned).into()
    );
    assert_eq!(overflow(&reg, "method", "limit"), Some(20.0));
}
