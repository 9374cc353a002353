//! [`RequestBridge`]: the tower `Service` that routes, relays and records.

mod builder;
mod future;
#[cfg(feature = "mcp")]
mod mcp;
pub(crate) mod route;

pub use self::builder::{BuildError, Builder};
pub use self::future::ResponseFuture;
pub use crate::upstream::UpstreamTimeouts;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::BodyExt;
use tokio::sync::{OnceCell, watch};

use self::route::{Resolved, Table};
use crate::body::Body;
use crate::error::{BridgeError, Flavor, plain_not_found};
use crate::intercept::{self, Bridged};
use crate::pipeline::{Shared, Tracked};
use crate::provider::{Provider, RouteKind};
use crate::{Actor, BoxError, passthrough};

/// The bridge: a cheap-to-clone `tower::Service` (one `Arc` inside).
///
/// Mount it under a prefix in a host application; see the crate docs for axum and hyper
/// examples. `poll_ready` is always ready: concurrency limits, timeouts and load shedding
/// belong to the host's tower layers. `Error = Infallible`: every failure is an HTTP
/// response shaped for the client's SDK. `call` must run inside a Tokio runtime.
#[derive(Clone)]
pub struct RequestBridge {
    inner: Arc<Inner>,
}

/// What [`RequestBridge::shutdown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// In-flight requests that had to be cancelled at the deadline.
    pub cancelled_requests: usize,
    /// Records still queued at the deadline and therefore dropped.
    pub dropped_records: u64,
}

/// The bridge's state: its routes and lifecycle, plus the [`Shared`] state it hands to
/// the interceptors and to passthrough.
struct Inner {
    table: Table,
    path_prefix: Option<String>,
    shared: Arc<Shared>,
    #[cfg(feature = "mcp")]
    mcp: Option<Arc<crate::mcp::McpRegistry>>,
    shutting_down: watch::Sender<bool>,
    shutdown_report: OnceCell<ShutdownReport>,
}

impl fmt::Debug for RequestBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBridge")
            .field(
                "providers",
                &self
                    .inner
                    .table
                    .providers()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .field("inflight", &self.inflight_requests())
            .finish_non_exhaustive()
    }
}

impl RequestBridge {
    /// Requests currently being handled (bridged and passthrough), until their response
    /// body ends or is dropped.
    pub fn inflight_requests(&self) -> usize {
        self.inner.shared.inflight()
    }

    /// Graceful shutdown: new requests get a provider-shaped 503 at once; in-flight
    /// requests may finish during the first two thirds of `timeout`; the rest are then
    /// cancelled (streams end with their API's terminal error event); the record queue is
    /// drained until `timeout`. Idempotent: concurrent and later calls wait for the same
    /// completion and return the same report.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let inner = self.inner.clone();
        *self
            .inner
            .shutdown_report
            .get_or_init(|| async move {
                let start = tokio::time::Instant::now();
                let deadline = start + timeout;
                inner.shutting_down.send_replace(true);
                let grace = start + timeout.mul_f64(2.0 / 3.0);
                let mut cancelled_requests = 0;
                let shared = &inner.shared;
                if !shared.wait_idle(grace).await {
                    cancelled_requests = shared.inflight();
                    tracing::warn!(
                        requests = cancelled_requests,
                        "shutdown: cancelling in-flight requests"
                    );
                    shared.cancel.send_replace(true);
                    shared.wait_idle(deadline).await;
                }
                let dropped_records = shared.queue.drain(deadline).await;
                #[cfg(feature = "mcp")]
                if let Some(registry) = &inner.mcp {
                    registry.shutdown().await;
                }
                ShutdownReport {
                    cancelled_requests,
                    dropped_records,
                }
            })
            .await
    }
}

#[cfg(feature = "mcp")]
impl RequestBridge {
    /// Resolves once every configured MCP server has finished its first connection
    /// attempt (success or failure); at once without MCP. For tests and readiness probes.
    pub async fn mcp_ready(&self) {
        if let Some(registry) = &self.inner.mcp {
            registry.ready().await;
        }
    }

    /// The tools currently injectable, sorted by id.
    pub fn mcp_tools(&self) -> Vec<crate::mcp::McpToolInfo> {
        self.inner
            .mcp
            .as_ref()
            .map(|r| r.tools())
            .unwrap_or_default()
    }
}

impl Inner {
    /// The bridge's state around the shared one. With MCP configured, the MCP registry is
    /// started and becomes the tool loop's tool source.
    fn new(
        providers: &[Arc<dyn Provider>],
        path_prefix: Option<String>,
        shared: Shared,
        #[cfg(feature = "mcp")] mcp: Option<crate::mcp::McpConfig>,
    ) -> Self {
        #[cfg(feature = "mcp")]
        let mut shared = shared;
        #[cfg(feature = "mcp")]
        let mcp = mcp.map(|config| {
            let registry = crate::mcp::McpRegistry::start(config.clone());
            shared.tool_source = Some(Arc::new(mcp::McpSource {
                registry: registry.clone(),
                config,
            }));
            registry
        });
        Self {
            table: Table::new(providers),
            path_prefix,
            shared: Arc::new(shared),
            #[cfg(feature = "mcp")]
            mcp,
            shutting_down: watch::Sender::new(false),
            shutdown_report: OnceCell::new(),
        }
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }

    async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let head = parts.method == Method::HEAD;
        let full_path = parts.uri.path();
        let path = match &self.path_prefix {
            None => full_path,
            Some(prefix) => match full_path
                .strip_prefix(prefix.as_str())
                .filter(|r| r.starts_with('/'))
            {
                Some(rest) => rest,
                None => return strip_head(plain_not_found(&parts.method, full_path), head),
            },
        };
        let (provider, route, rest) = match self.table.resolve(path) {
            Resolved::NoProvider => {
                tracing::debug!(method = %parts.method, path, "route not supported");
                return strip_head(plain_not_found(&parts.method, path), head);
            }
            Resolved::Unknown(p) => {
                tracing::debug!(provider = p.name(), method = %parts.method, path, "route not supported");
                let flavor = Flavor::from(p.kind());
                let resp = BridgeError::route_not_supported(&parts.method, path)
                    .into_response(flavor, None);
                return strip_head(resp, head);
            }
            Resolved::Matched {
                provider,
                route,
                rest,
            } => (provider.clone(), route.clone(), rest.to_owned()),
        };
        let flavor = Flavor::from(provider.kind());
        let reject = |e: BridgeError| {
            tracing::info!(provider = provider.name(), status = e.status.as_u16(), reason = %e.message, "request rejected");
            e.into_response(flavor, None)
        };
        if self.is_shutting_down() {
            return reject(BridgeError::shutting_down());
        }
        let guard = InflightGuard {
            _tracked: self.shared.track_request(),
        };
        let api = match route.kind {
            RouteKind::Passthrough => {
                let resp =
                    passthrough::proxy(&self.shared, &provider, &route, &rest, parts, body).await;
                return guard.attach(resp);
            }
            RouteKind::Bridged(api) => api,
        };
        if parts.method != Method::POST {
            return guard.attach(reject(BridgeError::method_not_allowed(&parts.method, path)));
        }
        let actor = match parts.extensions.get::<Actor>() {
            Some(a) if !a.id().is_empty() => a.clone(),
            _ => return guard.attach(reject(BridgeError::no_actor())),
        };
        let credential = match provider.credential(&parts.headers) {
            Ok(c) => c,
            Err(e) => return guard.attach(reject(BridgeError::credential(e.to_string()))),
        };
        let bytes = match read_body(&parts.headers, body, self.shared.max_request_body).await {
            Ok(b) => b,
            Err(e) => return guard.attach(reject(e)),
        };
        let info = match intercept::parse_request(api, &bytes) {
            Ok(info) => info,
            Err(e) => return guard.attach(reject(e)),
        };
        let bridged = Bridged {
            provider,
            api,
            endpoint: route.path.clone(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body: bytes,
            actor,
            credential,
            info,
            started_at,
            start,
        };
        guard.attach(intercept::run(self.shared.clone(), bridged).await)
    }
}

/// Reads a request body up to the limit (routing.md step 6).
async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, BridgeError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let value = enc.to_str().unwrap_or("(invalid)").trim();
        if !value.eq_ignore_ascii_case("identity") {
            return Err(BridgeError::unsupported_encoding(value));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BridgeError::body_too_large(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BridgeError::body_too_large(limit))
        }
        Err(e) => Err(BridgeError::body_unreadable(&e.to_string())),
    }
}

/// HEAD answers carry the same status and headers with an empty body.
fn strip_head(resp: Response<Body>, head: bool) -> Response<Body> {
    if !head {
        return resp;
    }
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::empty())
}

/// Counts a request as in flight until its response body ends or is dropped.
struct InflightGuard {
    _tracked: Tracked,
}

impl InflightGuard {
    fn attach(self, resp: Response<Body>) -> Response<Body> {
        resp.map(|b| {
            Body::new(Guarded {
                body: b,
                _guard: self,
            })
        })
    }
}

pin_project_lite::pin_project! {
    struct Guarded {
        #[pin]
        body: Body,
        _guard: InflightGuard,
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B> tower_service::Service<Request<B>> for RequestBridge
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        ResponseFuture::new(inner.handle(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn public_types_have_the_promised_auto_traits() {
        assert_send_sync::<RequestBridge>();
        assert_send::<Body>();
        assert_send::<ResponseFuture>();
    }
}
