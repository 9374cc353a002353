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
