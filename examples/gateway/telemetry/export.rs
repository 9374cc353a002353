//! The OTLP/HTTP span export (feature `otel`): `tracing-opentelemetry` over a batch span
//! processor and `opentelemetry-otlp`'s protobuf exporter, which sends through the
//! reqwest client the library already uses (no second HTTP stack, no gRPC), and the
//! middleware that makes the incoming `traceparent` the parent of a request's spans.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use super::OtlpTarget;

/// A collector's answer larger than this fails the export (it is a small status message).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The instrumentation scope of the exported spans.
const SCOPE: &str = "aibridge";

/// The running exporter.
pub(crate) struct Export {
    provider: SdkTracerProvider,
    timeout: Duration,
}

impl Export {
    /// Exports what is still queued, then stops the batch processor. Runs the blocking
    /// shutdown off the runtime's workers, which the export requests themselves need.
    pub(crate) async fn shutdown(self) {
        let Self { provider, timeout } = self;
        // One export of the last batch, plus the processor's own hand-over.
        let bound = timeout + Duration::from_secs(1);
        match tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(bound)).await {
            Ok(Ok(())) => tracing::info!("trace export flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export: shutdown incomplete"),
            Err(e) => tracing::warn!(error = %e, "trace export: shutdown failed"),
        }
    }
}

/// Builds the exporter for `target` and the layer that feeds it the library's spans
/// (target `aibridge`, info and above).
pub(crate) fn start<S>(target: &OtlpTarget) -> Result<(impl Layer<S>, Export), String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let client = TokioClient {
        client: reqwest::Client::builder()
            .timeout(target.timeout)
            .build()
            .map_err(|e| format!("OTLP exporter: HTTP client: {e}"))?,
        runtime: tokio::runtime::Handle::current(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(target.endpoint.clone())
        .with_timeout(target.timeout)
        .with_http_client(client)
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(target.service_name.clone())
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_filter(Targets::new().with_target("aibridge", tracing::Level::INFO));
    Ok((
        layer,
        Export {
            provider,
            timeout: target.timeout,
        },
    ))
}

/// Axum middleware: the W3C trace context of the request's `traceparent` (and
/// `tracestate`) is the current OpenTelemetry context while the request is served, so the
/// bridge's root span (`aibridge.interception`, `aibridge.passthrough`) continues the
/// caller's trace. A missing or malformed header starts a new trace.
pub(crate) async fn parent_from_traceparent(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    next.run(req).with_context(parent).await
}

/// The exporter's HTTP client: the batch span processor runs exports on its own thread
/// (outside Tokio), so each request is spawned onto the gateway's runtime, where reqwest
/// runs, and awaited from there.
#[derive(Debug)]
struct TokioClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for TokioClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let mut resp = client.execute(request).await?;
                let mut out = http::Response::builder().status(resp.status());
                if let Some(h) = out.headers_mut() {
                    *h = std::mem::take(resp.headers_mut());
                }
                let mut body = BytesMut::new();
                while let Some(chunk) = resp.chunk().await? {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(HttpError::from("OTLP collector response too large"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(out.body(body.freeze())?)
            })
            .await?
    }
}
