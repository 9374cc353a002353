//! One streamable-HTTP session with an MCP server: connect, list tools, close.

use std::{collections::HashMap, sync::Arc, time::Duration};

use http::HeaderValue;
use rmcp::{
    ClientHandler, ServiceExt,
    model::{ClientCapabilities, ClientConfig, Implementation, PaginatedRequestParams, Tool},
    service::{ClientCacheConfig, NotificationContext, RoleClient, RunningService, ServiceError},
    transport::{
        StreamableHttpClientTransport, common::client_side_sse::SseRetryPolicy,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use tokio::sync::Notify;

use super::config::McpServer;

/// Timeout of each connection step (connect + initialize, one `tools/list` page).
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for closing a session (the DELETE).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// `tools/list` pages followed at most.
const MAX_PAGES: usize = 100;
/// First reconnection delay; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest reconnection delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Same-origin 307/308 redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Reconnection of a broken SSE stream (a call in flight when the server went away): one
/// try after 0.2 s (or the server's own `retry:` hint, if longer; rmcp servers send 3 s),
/// then the call fails and the model gets an error result. rmcp's default retries forever
/// with a doubling delay, which held every call to a crashed server until the tool timeout
/// (60 s by default).
#[derive(Debug)]
struct OneSseRetry;

impl SseRetryPolicy for OneSseRetry {
    fn retry(&self, attempt: usize) -> Option<Duration> {
        (attempt <= 1).then_some(Duration::from_millis(200))
    }
}

/// A live MCP session.
pub(super) type Session = RunningService<RoleClient, Handler>;

/// The client side of the session: announces `aibridge` and turns
/// `notifications/tools/list_changed` into a wake-up of the session's owner.
#[derive(Clone)]
pub(super) struct Handler {
    on_list_changed: Arc<dyn Fn() + Send + Sync>,
}

// === impl Handler ===

impl Handler {
    /// Wakes the server task through `list_changed`.
    pub(super) fn new(list_changed: Arc<Notify>) -> Self {
        Self::with(move || list_changed.notify_one())
    }

    /// Runs `f` on every `notifications/tools/list_changed`.
    pub(super) fn with(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            on_list_changed: Arc::new(f),
        }
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").finish_non_exhaustive()
    }
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::debug!("MCP server announced a tool list change");
        (self.on_list_changed)();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("aibridge", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// The HTTP client for one server: no idle pooling (rmcp's choice, avoids delayed-ACK
/// stalls), only same-origin 307/308 redirects (headers never go to another origin).
pub(super) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .connect_timeout(STEP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let keeps_body = matches!(
                attempt.status(),
                reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
            );
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if !keeps_body || !same_origin {
                attempt.stop()
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Connects (`initialize`, `notifications/initialized`) within [`STEP_TIMEOUT`] and
/// turns rmcp's response cache off, so every `tools/list` reaches the server and a dead
/// server is noticed instead of served from a stale cache.
pub(super) async fn connect(
    server: &McpServer,
    http: reqwest::Client,
    handler: Handler,
) -> Result<Session, String> {
    let mut headers = HashMap::new();
    for (name, value) in server.headers() {
        let mut value = HeaderValue::from_str(value.expose())
            .map_err(|_| format!("header {name} has an invalid value"))?;
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
    let mut config = StreamableHttpClientTransportConfig::with_uri(server.url().to_string())
        .custom_headers(headers);
    config.retry_config = Arc::new(OneSseRetry);
    let transport = StreamableHttpClientTransport::with_client(http, config);
    let session = match tokio::time::timeout(STEP_TIMEOUT, handler.serve(transport)).await {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => return Err(format!("initialize failed: {}", error_chain(&e))),
        Err(_) => {
            return Err(format!(
                "initialize timed out after {}s",
                STEP_TIMEOUT.as_secs()
            ));
        }
    };
    session
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    Ok(session)
}

/// Lists every tool, following `nextCursor` (at most [`MAX_PAGES`] pages; the tools read
/// so far are kept beyond that). Each page has [`STEP_TIMEOUT`].
pub(super) async fn list_tools(session: &Session, server: &str) -> Result<Vec<Tool>, String> {
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        let page = match tokio::time::timeout(STEP_TIMEOUT, session.list_tools(Some(params))).await
        {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return Err(format!("tools/list failed: {}", service_error(&e))),
            Err(_) => {
                return Err(format!(
                    "tools/list timed out after {}s",
                    STEP_TIMEOUT.as_secs()
                ));
            }
        };
        tools.extend(page.tools);
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(tools);
        }
    }
    tracing::warn!(
        server,
        pages = MAX_PAGES,
        "MCP tools/list has more pages than allowed; keeping the tools read so far"
    );
    Ok(tools)
}

/// Closes the session: the transport sends the DELETE for a session id the server issued.
pub(super) async fn close(mut session: Session) {
    if let Ok(None) = session.close_with_timeout(CLOSE_TIMEOUT).await {
        tracing::debug!("MCP session did not close in time");
    }
}

/// A request failure as text: JSON-RPC errors as `tool error {code}: {message}`, transport
/// errors without rmcp's transport type name.
pub(super) fn service_error(error: &ServiceError) -> String {
    match error {
        ServiceError::McpError(e) => format!("tool error {}: {}", e.code.0, e.message),
        ServiceError::TransportSend(e) => {
            format!("transport error: {}", error_chain(e.error.as_ref()))
        }
        ServiceError::TransportClosed => "server connection closed".to_owned(),
        other => error_chain(other),
    }
}

/// The error's message followed by those of its sources that add something.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let message = e.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = e.source();
    }
    text
}

/// 1 s, 2 s, 4 s … capped at 60 s, for the n-th consecutive failure (n ≥ 1).
pub(super) fn backoff(failures: u32) -> Duration {
    crate::backoff::delay(
        BACKOFF_BASE,
        BACKOFF_MAX,
        failures.saturating_sub(1),
        crate::backoff::Jitter::None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
