//! Helpers shared by the bridge's black-box tests: building a bridge in front of the mock
//! upstream and sending requests through `tower::ServiceExt::oneshot`.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use aibridge::bridge::Builder;
use aibridge::provider::{Anthropic, OpenAi, Secret};
use aibridge::recorder::MemoryRecorder;
use aibridge::{Actor, RequestBridge};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

pub const ANTHROPIC_KEY: &str = "sk-ant-central-key-0123456789";
pub const OPENAI_KEY: &str = "sk-openai-central-key-0123456789";

/// A bridge with an Anthropic and an OpenAI provider in front of `base`, recording into
/// a fresh `MemoryRecorder`. Retries are off so each test sees exactly one upstream call.
pub fn bridge(base: &str, f: impl FnOnce(Builder) -> Builder) -> (RequestBridge, MemoryRecorder) {
    let rec = MemoryRecorder::new();
    let builder = RequestBridge::builder()
        .provider(Anthropic::new(Secret::new(ANTHROPIC_KEY)).with_base_url(base.parse().unwrap()))
        .provider(
            OpenAi::new(Secret::new(OPENAI_KEY))
                .with_base_url(format!("{base}/v1").parse().unwrap()),
        )
        .recorder(rec.clone());
    (f(builder).build().unwrap(), rec)
}

/// A POST with an actor.
pub fn post(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(body.into()))
        .unwrap();
    req.extensions_mut()
        .insert(Actor::new("alice").with_metadata("team", "infra"));
    req
}

/// The collected response.
#[derive(Debug)]
pub struct Collected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Collected {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send<B>(bridge: &RequestBridge, req: Request<B>) -> Collected
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<aibridge::BoxError>,
{
    let resp = bridge.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Waits for `n` interception ends (bounded, so a bug fails instead of hanging).
pub async fn ended(rec: &MemoryRecorder, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), rec.wait_for_ended(n))
        .await
        .expect("interceptions did not end");
}

/// A bridge with exactly the providers (and settings) `f` adds, recording into a fresh
/// `MemoryRecorder`.
pub fn bridge_with(f: impl FnOnce(Builder) -> Builder) -> (RequestBridge, MemoryRecorder) {
    let rec = MemoryRecorder::new();
    let builder = RequestBridge::builder().recorder(rec.clone());
    (f(builder).build().unwrap(), rec)
}

/// The Anthropic provider of [`bridge`], to be adjusted (retries, breaker …).
pub fn anthropic(base: &str) -> Anthropic {
    Anthropic::new(Secret::new(ANTHROPIC_KEY)).with_base_url(base.parse().unwrap())
}

/// The OpenAI provider of [`bridge`], to be adjusted.
pub fn openai(base: &str) -> OpenAi {
    OpenAi::new(Secret::new(OPENAI_KEY)).with_base_url(format!("{base}/v1").parse().unwrap())
}

/// A GET without a body (passthrough routes).
pub fn get(path: &str) -> Request<Full<Bytes>> {
    let mut req = post(path, "");
    *req.method_mut() = http::Method::GET;
    req.headers_mut().remove("content-type");
    req
}

/// Reads Prometheus values from a registry.
pub mod prom {
    use std::collections::BTreeMap;

    use prometheus::Registry;
    use prometheus::proto::{Metric, MetricFamily, MetricType};

    /// `"k=v,k=v"` as label pairs (`""` is no labels).
    pub fn at(spec: &str) -> Vec<(&str, &str)> {
        spec.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=')
                    .unwrap_or_else(|| panic!("bad label {p:?}"))
            })
            .collect()
    }

    fn family(reg: &Registry, name: &str) -> Option<MetricFamily> {
        reg.gather().into_iter().find(|f| f.name() == name)
    }

    fn labels(m: &Metric) -> BTreeMap<String, String> {
        m.get_label()
            .iter()
            .map(|l| (l.name().to_owned(), l.value().to_owned()))
            .collect()
    }

    /// Every series of a metric, as its label map (empty if the metric has no series).
    pub fn series(reg: &Registry, name: &str) -> Vec<BTreeMap<String, String>> {
        family(reg, name).map_or_else(Vec::new, |f| f.get_metric().iter().map(labels).collect())
    }

    /// The metric's type, if it has any series.
    pub fn kind(reg: &Registry, name: &str) -> Option<MetricType> {
        family(reg, name).map(|f| f.get_field_type())
    }

    /// The series with exactly these label values (no more, no fewer labels).
    pub fn find(reg: &Registry, name: &str, want: &[(&str, &str)]) -> Option<(MetricType, Metric)> {
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let f = family(reg, name)?;
        let t = f.get_field_type();
        f.get_metric()
            .iter()
            .find(|m| labels(m) == want)
            .map(|m| (t, m.clone()))
    }

    /// The value of a counter or gauge series; panics (listing the series) if absent.
    pub fn value(reg: &Registry, name: &str, want: &[(&str, &str)]) -> f64 {
        try_value(reg, name, want)
            .unwrap_or_else(|| panic!("no series {name}{want:?}; have {:?}", series(reg, name)))
    }

    /// The value of a counter or gauge series, if it exists.
    pub fn try_value(reg: &Registry, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let (t, m) = find(reg, name, want)?;
        Some(match t {
            MetricType::COUNTER => m.get_counter().get_value(),
            MetricType::GAUGE => m.get_gauge().get_value(),
            other => panic!("{name} is a {other:?}, not a counter or gauge"),
        })
    }

    /// The sum of a counter or gauge over all its series.
    pub fn total(reg: &Registry, name: &str) -> f64 {
        family(reg, name).map_or(0.0, |f| {
            f.get_metric()
                .iter()
                .map(|m| match f.get_field_type() {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    other => panic!("{name} is a {other:?}"),
                })
                .sum()
        })
    }

    /// `(sample_count, sample_sum)` of a histogram series; panics if absent.
    pub fn histogram(reg: &Registry, name: &str, want: &[(&str, &str)]) -> (u64, f64) {
        let (t, m) = find(reg, name, want)
            .unwrap_or_else(|| panic!("no series {name}{want:?}; have {:?}", series(reg, name)));
        assert_eq!(t, MetricType::HISTOGRAM, "{name}");
        let h = m.get_histogram();
        (h.get_sample_count(), h.get_sample_sum())
    }

    /// The upper bounds of a histogram's buckets (of its first series).
    pub fn buckets(reg: &Registry, name: &str) -> Vec<f64> {
        let f = family(reg, name).unwrap_or_else(|| panic!("no series of {name}"));
        f.get_metric()[0]
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|b| b.upper_bound())
            .collect()
    }
}
