//! [`RequestBridge`]: the tower `Service` that routes, relays and records.

pub(crate) mod budget;
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::BodyExt;
use tokio::sync::OnceCell;

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
    /// The bridge-wide budget of buffered request body bytes.
    request_budget: budget::RequestBudget,
    #[cfg(feature = "mcp")]
    mcp: Option<Arc<crate::mcp::McpRegistry>>,
    /// Set by the first `shutdown` call. Sequentially consistent with the in-flight count:
    /// a request counts itself in flight, then reads this; `shutdown` sets it, then reads
    /// the count. Whatever the interleaving, either the request sees the flag or
    /// `shutdown` sees the request.
    shutting_down: AtomicBool,
    /// Test hook: runs when a request has passed the shutdown check.
    #[cfg(test)]
    after_shutdown_check: Option<Box<dyn Fn(&Inner) + Send + Sync>>,
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
                inner.shutting_down.store(true, Ordering::SeqCst);
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

    /// The MCP endpoint for editors (feature `mcp-server`): the actors' injected tool sets
    /// served over MCP streamable HTTP, to be mounted next to the bridge (e.g. at
    /// `/api/v2/aibridge/mcp`) behind the same authentication. `None` without MCP
    /// configured. Every call returns a handle on the same endpoint state; its MCP sessions
    /// live in the returned service, so create it once and clone it.
    #[cfg(feature = "mcp-server")]
    pub fn mcp_endpoint(&self) -> Option<crate::mcp::McpEndpoint> {
        self.inner
            .mcp
            .as_ref()
            .map(|r| crate::mcp::McpEndpoint::new(r.clone(), self.inner.shared.clone()))
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
            let registry = crate::mcp::McpRegistry::start(config.clone(), shared.metrics.clone());
            shared.tool_source = Some(Arc::new(mcp::McpSource {
                registry: registry.clone(),
                config,
            }));
            registry
        });
        Self {
            table: Table::new(providers),
            path_prefix,
            request_budget: budget::RequestBudget::new(
                shared
                    .max_request_body
                    .saturating_mul(budget::DEFAULT_BUDGET_FACTOR),
                budget::DEFAULT_BUDGET_WAIT,
            ),
            shared: Arc::new(shared),
            #[cfg(feature = "mcp")]
            mcp,
            shutting_down: AtomicBool::new(false),
            #[cfg(test)]
            after_shutdown_check: None,
            shutdown_report: OnceCell::new(),
        }
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
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
        // Counted in flight before the shutdown check (issue 17, defect 6): checked first, a
        // request preempted between the two could run after `shutdown()` reported idle.
        let guard = InflightGuard {
            _tracked: self.shared.track_request(),
        };
        if self.is_shutting_down() {
            drop(guard);
            return reject(BridgeError::shutting_down());
        }
        #[cfg(test)]
        if let Some(hook) = &self.after_shutdown_check {
            hook(&self);
        }
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
        let bytes = match read_body(
            &parts.headers,
            body,
            self.shared.max_request_body,
            &self.request_budget,
        )
        .await
        {
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

/// Reads a request body up to the limit (routing.md step 6), within the bridge-wide buffer
/// budget: the declared `Content-Length` is taken from the budget before anything is read,
/// a body without one takes it chunk by chunk. The returned bytes hold their budget until
/// the last reference to them is dropped ([`budget::RequestBudget::attach`]); a body that is
/// refused or fails gives it back at once.
async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    budget: &budget::RequestBudget,
) -> Result<Bytes, BridgeError>
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
    let full = |_| BridgeError::request_buffer_full();
    let mut held = budget.hold();
    if let Some(n) = declared {
        // At most `limit`, checked above.
        let n = usize::try_from(n).unwrap_or(limit);
        budget.grow(&mut held, n).await.map_err(full)?;
    }
    let mut body = std::pin::pin!(http_body_util::Limited::new(body, limit));
    // A body that comes in one chunk is kept as it is; from the second chunk on, the chunks
    // are copied into one buffer (sized by the declared length) and dropped one by one, so
    // a large body is not held twice while it is joined.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    let mut total = 0;
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BridgeError::body_too_large(limit)
            } else {
                BridgeError::body_unreadable(&e.to_string())
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        total += data.len();
        budget.grow(&mut held, total).await.map_err(full)?;
        if let Some(all) = &mut joined {
            all.extend_from_slice(&data);
        } else if let Some(head) = first.take() {
            let expected = declared.map_or(total, |n| usize::try_from(n).unwrap_or(total));
            let mut all = bytes::BytesMut::with_capacity(expected.max(total));
            all.extend_from_slice(&head);
            all.extend_from_slice(&data);
            joined = Some(all);
        } else {
            first = Some(data);
        }
    }
    let bytes = match (joined, first) {
        (Some(all), _) => all.freeze(),
        (None, Some(one)) => one,
        (None, None) => Bytes::new(),
    };
    Ok(budget::RequestBudget::attach(held, bytes))
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

    /// Issue 17, defect 6: a request that passed the shutdown check must already be visible
    /// to `shutdown()`'s wait for in-flight work, whatever the interleaving. The hook plays
    /// `shutdown()` starting at the worst moment: right after the check passed.
    #[tokio::test]
    async fn a_request_past_the_shutdown_check_is_seen_by_shutdown() {
        use crate::provider::{Anthropic, Secret};
        use crate::recorder::NoopRecorder;
        use tower::ServiceExt as _;

        let mut bridge = RequestBridge::builder()
            .provider(
                Anthropic::new(Secret::new("sk-ant-test"))
                    .with_base_url("http://127.0.0.1:9".parse().unwrap()),
            )
            .recorder(NoopRecorder)
            .build()
            .unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
        let seen_in_hook = seen.clone();
        Arc::get_mut(&mut bridge.inner)
            .expect("no other handle yet")
            .after_shutdown_check = Some(Box::new(move |inner| {
            inner.shutting_down.store(true, Ordering::SeqCst);
            seen_in_hook.store(inner.shared.inflight(), Ordering::SeqCst);
        }));
        let req = Request::post("/anthropic/v1/messages")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = bridge.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::UNAUTHORIZED, "no actor");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "shutdown() starting after the check must see the request in flight"
        );
    }
}
