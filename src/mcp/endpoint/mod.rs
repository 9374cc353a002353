//! The MCP endpoint for editors: the actor's governed tool set served as an MCP server over
//! streamable HTTP (feature `mcp-server`).

mod handler;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};

use self::handler::{EndpointCtx, Handler};
use super::registry::McpRegistry;
use crate::BoxError;
use crate::body::Body;
use crate::bridge::ResponseFuture;
use crate::pipeline::Shared;

/// The bridge's injected MCP tools, served to editors that speak MCP themselves (Claude
/// Code's `claude mcp`, Zed, OpenCode …), from [`RequestBridge::mcp_endpoint`](crate::RequestBridge::mcp_endpoint).
///
/// A `tower::Service` (cheap to clone, `Error = Infallible`) speaking MCP streamable HTTP
/// (POST, GET for the server's notification stream, DELETE). Mount it next to the bridge,
/// e.g. at `/api/v2/aibridge/mcp`, behind the same authentication middleware: like the
/// bridge, it reads the [`Actor`](crate::Actor) from the request extensions, and every
/// request of an MCP session must come from the actor that initialized it.
///
/// It serves `initialize`, `ping`, `tools/list` (the actor's tools, with their `bmcp_…`
/// ids and the servers' schemas), `tools/call` (run through the same per-actor session as
/// the bridge's tool loop, with the same timeout and result-size bound) and sends
/// `notifications/tools/list_changed` when the actor's tool set changes. Each call is
/// recorded as an interception (`api = mcp`, provider kind `mcp`, empty model, the client
/// from the `User-Agent`) with one injected `ToolUsage` and its end, and counted in
/// `injected_tool_invocations_total{provider="mcp"}`.
///
/// `Host` headers are not checked (rmcp's DNS-rebinding guard, meant for unauthenticated
/// local servers): the endpoint is authenticated by the host. Restrict them with
/// [`allowed_hosts`](Self::allowed_hosts) if wanted.
#[derive(Clone)]
pub struct McpEndpoint {
    ctx: Arc<EndpointCtx>,
    service: StreamableHttpService<Handler, LocalSessionManager>,
}

// === impl McpEndpoint ===

impl McpEndpoint {
    pub(crate) fn new(registry: Arc<McpRegistry>, shared: Arc<Shared>) -> Self {
        let ctx = Arc::new(EndpointCtx::new(registry, shared));
        let service = Self::service(
            &ctx,
            StreamableHttpServerConfig::default().disable_allowed_hosts(),
        );
        Self { ctx, service }
    }

    /// Accepts only these `Host` values (`host` or `host:port`), answering 403 otherwise.
    #[must_use]
    pub fn allowed_hosts(self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts);
        Self {
            service: Self::service(&self.ctx, config),
            ctx: self.ctx,
        }
    }

    fn service(
        ctx: &Arc<EndpointCtx>,
        config: StreamableHttpServerConfig,
    ) -> StreamableHttpService<Handler, LocalSessionManager> {
        let ctx = ctx.clone();
        StreamableHttpService::new(
            move || Ok(Handler::new(ctx.clone())),
            Arc::new(LocalSessionManager::default()),
            config.with_sse_keep_alive(Some(std::time::Duration::from_secs(15))),
        )
    }
}

impl fmt::Debug for McpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpEndpoint").finish_non_exhaustive()
    }
}

impl<B> tower_service::Service<Request<B>> for McpEndpoint
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let service = self.service.clone();
        ResponseFuture::new(async move {
            let req = req.map(|b| b.map_err(|e| -> BoxError { e.into() }));
            service.handle(req).await.map(Body::new)
        })
    }
}
