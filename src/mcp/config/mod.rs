//! MCP configuration: the servers to connect to and the tool-loop bounds.

use std::{collections::HashSet, fmt, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Uri};

use super::credentials::McpCredentials;
use crate::provider::{Api, Secret};

/// Header names the MCP transport sets itself; a server may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// MCP servers whose tools the bridge injects, and the bounds of the tool loop.
///
/// Nothing is contacted while the configuration is built; the bridge validates it once when
/// it is built and then connects to every server in the background.
///
/// ```
/// use std::time::Duration;
/// use aibridge::mcp::{McpConfig, McpServer};
/// use aibridge::provider::Secret;
///
/// let config = McpConfig::new()
///     .server(
///         McpServer::new("coder", "https://coder.example.com/api/experimental/mcp/http".parse().unwrap())
///             .with_header(http::header::AUTHORIZATION, Secret::new("Bearer s3cret"))
///             .with_deny("^delete_"),
///     )
///     .tool_timeout(Duration::from_secs(30))
///     .max_iterations(5);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct McpConfig {
    servers: Vec<McpServer>,
    refresh_interval: Duration,
    max_iterations: u32,
    tool_timeout: Duration,
    max_result_bytes: usize,
    keep_alive_interval: Duration,
    skip_injection: Arc<dyn Fn(Api, &str) -> bool + Send + Sync>,
    credentials: Option<Arc<dyn McpCredentials>>,
    session_idle_timeout: Duration,
    max_sessions: usize,
}

/// One MCP server, reached over the streamable HTTP transport.
///
/// The name must match `^[A-Za-z0-9][A-Za-z0-9_-]*$` and be unique; it becomes part of the
/// injected tool ids (`bmcp_{server}_{tool}`). `Debug` redacts header values.
///
/// ```
/// use aibridge::mcp::McpServer;
/// use aibridge::provider::Secret;
///
/// let server = McpServer::new("github", "https://mcp.example.com/mcp".parse().unwrap())
///     .with_header(http::HeaderName::from_static("x-api-key"), Secret::new("k-123"))
///     .with_allow("^(list|get)_");
/// assert!(!format!("{server:?}").contains("k-123"));
/// ```
#[derive(Clone)]
pub struct McpServer {
    name: String,
    url: Uri,
    headers: Vec<(HeaderName, Secret)>,
    allow: Vec<String>,
    deny: Vec<String>,
}

/// A configuration the bridge refuses to build with (reported by the bridge builder).
///
/// ```
/// use aibridge::mcp::McpConfigError;
///
/// let err = McpConfigError::InvalidLimit { what: "max_iterations" };
/// assert_eq!(err.to_string(), "invalid MCP setting max_iterations: must be greater than zero");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpConfigError {
    /// A server's name, URL or headers are invalid, or its name is used twice.
    #[error("invalid MCP server {server:?}: {reason}")]
    InvalidServer {
        /// The server name as configured.
        server: String,
        /// What is wrong.
        reason: String,
    },
    /// An allow or deny pattern is not a valid regular expression.
    #[error("invalid regex {pattern:?} for MCP server {server:?}: {reason}")]
    InvalidRegex {
        /// The server name.
        server: String,
        /// The pattern as configured.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// A bound is zero (`max_iterations`, `max_result_bytes`, a duration).
    #[error("invalid MCP setting {what}: must be greater than zero")]
    InvalidLimit {
        /// The setting's name.
        what: &'static str,
    },
}

/// The default skip: Claude Code's small-model background calls on the Messages API.
fn default_skip(api: Api, model: &str) -> bool {
    api == Api::Messages && model.contains("haiku")
}

// === impl McpConfig ===

impl McpConfig {
    /// An empty configuration with the default bounds: refresh every 5 min, 10 iterations,
    /// 60 s per tool call, 256 KiB per result, keep-alives every 10 s, no injection into
    /// Anthropic Messages requests for models whose name contains `haiku` (Claude Code's
    /// background calls; Chat Completions and Responses requests for a haiku model, e.g.
    /// Copilot's `claude-haiku-4.5`, get the tools).
    pub fn new() -> Self {
        Self {
            servers: Vec::new(),
            refresh_interval: Duration::from_secs(300),
            max_iterations: 10,
            tool_timeout: Duration::from_secs(60),
            max_result_bytes: 262_144,
            keep_alive_interval: Duration::from_secs(10),
            skip_injection: Arc::new(default_skip),
            credentials: None,
            session_idle_timeout: Duration::from_secs(600),
            max_sessions: 256,
        }
    }

    /// Per-actor credentials: asked, for each actor and server, which headers that actor's
    /// session with the server carries, or whether the actor may not use it. Without it
    /// (the default) every actor uses the servers' static headers and one shared session
    /// per server.
    ///
    /// An actor whose answer is [`McpCredential::Headers`](super::McpCredential::Headers)
    /// gets a session of its own per (server, credential), with its own tool list (cached
    /// and refreshed like the shared one: on `notifications/tools/list_changed` and every
    /// `refresh_interval`).
    #[must_use]
    pub fn credentials(mut self, credentials: impl McpCredentials) -> Self {
        self.credentials = Some(Arc::new(credentials));
        self
    }

    /// [`credentials`](Self::credentials) from an `Arc`.
    #[must_use]
    pub fn credentials_arc(mut self, credentials: Arc<dyn McpCredentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// A per-credential session unused for this long is closed (DELETE) and forgotten
    /// (default 10 min).
    #[must_use]
    pub fn session_idle_timeout(mut self, d: Duration) -> Self {
        self.session_idle_timeout = d;
        self
    }

    /// At most this many per-credential sessions are open at once (default 256); opening
    /// one more closes the least recently used first.
    #[must_use]
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n;
        self
    }

    /// Adds a server. Servers configured earlier win when two tools get the same id.
    #[must_use]
    pub fn server(mut self, server: McpServer) -> Self {
        self.servers.push(server);
        self
    }

    /// How often each server's tool list is fetched again (default 5 min). A server that
    /// stays unreachable for longer than this has its tools withdrawn.
    #[must_use]
    pub fn refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }

    /// Upstream calls that may carry injected tools per interception (default 10, ≥ 1).
    #[must_use]
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = n;
        self
    }

    /// Timeout of one MCP tool call (default 60 s).
    #[must_use]
    pub fn tool_timeout(mut self, d: Duration) -> Self {
        self.tool_timeout = d;
        self
    }

    /// Size limit of one rendered tool result (default 262 144 bytes).
    #[must_use]
    pub fn max_result_bytes(mut self, n: usize) -> Self {
        self.max_result_bytes = n;
        self
    }

    /// Interval of client keep-alives while tools run in a streaming response (default 10 s).
    #[must_use]
    pub fn keep_alive_interval(mut self, d: Duration) -> Self {
        self.keep_alive_interval = d;
        self
    }

    /// Skips injection, on every API, for the models the predicate returns `true` for
    /// (replaces the default, which skips only Anthropic Messages requests for models whose
    /// name contains `haiku`). [`skip_injection_for`](Self::skip_injection_for) also sees
    /// the API.
    ///
    /// ```
    /// use aibridge::mcp::McpConfig;
    /// let config = McpConfig::new().skip_injection_when(|model| model.starts_with("gpt-4o-mini"));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn skip_injection_when(mut self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.skip_injection = Arc::new(move |_, model| f(model));
        self
    }

    /// Skips injection for the requests the predicate returns `true` for, given the
    /// request's API and model (replaces the default, which is `api == Api::Messages &&
    /// model.contains("haiku")`).
    ///
    /// ```
    /// use aibridge::mcp::McpConfig;
    /// use aibridge::provider::Api;
    /// let config = McpConfig::new()
    ///     .skip_injection_for(|api, model| api == Api::ChatCompletions && model.ends_with("-mini"));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn skip_injection_for(
        mut self,
        f: impl Fn(Api, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.skip_injection = Arc::new(f);
        self
    }

    /// Checks every invariant: server names (pattern, unique), URLs (http/https with a
    /// host), headers (valid values, no transport-reserved names), regexes, non-zero bounds.
    pub(crate) fn validate(&self) -> Result<(), McpConfigError> {
        let limits: [(&'static str, bool); 7] = [
            ("session_idle_timeout", self.session_idle_timeout.is_zero()),
            ("max_sessions", self.max_sessions == 0),
            ("max_iterations", self.max_iterations == 0),
            ("max_result_bytes", self.max_result_bytes == 0),
            ("tool_timeout", self.tool_timeout.is_zero()),
            ("refresh_interval", self.refresh_interval.is_zero()),
            ("keep_alive_interval", self.keep_alive_interval.is_zero()),
        ];
        if let Some((what, _)) = limits.iter().find(|(_, bad)| *bad) {
            return Err(McpConfigError::InvalidLimit { what });
        }
        let mut names = HashSet::new();
        for server in &self.servers {
            server.validate()?;
            if !names.insert(server.name.as_str()) {
                return Err(server.invalid("the name is used by another server"));
            }
        }
        Ok(())
    }

    /// Whether tools are injected into an `api` request for `model`.
    pub(crate) fn should_inject(&self, api: Api, model: &str) -> bool {
        !(self.skip_injection)(api, model)
    }

    /// The configured servers, in configuration order.
    pub(crate) fn servers(&self) -> &[McpServer] {
        &self.servers
    }

    /// Upstream calls that may carry injected tools (`max_iterations`).
    pub(crate) fn iterations(&self) -> u32 {
        self.max_iterations
    }

    /// Timeout of one tool call (`tool_timeout`).
    pub(crate) fn call_timeout(&self) -> Duration {
        self.tool_timeout
    }

    /// Size limit of one rendered result (`max_result_bytes`).
    pub(crate) fn result_limit(&self) -> usize {
        self.max_result_bytes
    }

    /// Keep-alive interval while tools run (`keep_alive_interval`).
    pub(crate) fn keep_alive(&self) -> Duration {
        self.keep_alive_interval
    }

    /// Tool-list TTL (`refresh_interval`).
    pub(crate) fn refresh_period(&self) -> Duration {
        self.refresh_interval
    }

    /// The host's per-actor credentials, if any.
    pub(crate) fn actor_credentials(&self) -> Option<&Arc<dyn McpCredentials>> {
        self.credentials.as_ref()
    }

    /// Idle time after which a per-credential session is closed.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.session_idle_timeout
    }

    /// Bound on live per-credential sessions.
    pub(crate) fn session_limit(&self) -> usize {
        self.max_sessions
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for McpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpConfig")
            .field("servers", &self.servers)
            .field("refresh_interval", &self.refresh_interval)
            .field("max_iterations", &self.max_iterations)
            .field("tool_timeout", &self.tool_timeout)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("skip_injection_when", &format_args!("<fn>"))
            .field("credentials", &self.credentials.is_some())
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("max_sessions", &self.max_sessions)
            .finish()
    }
}

// === impl McpServer ===

impl McpServer {
    /// A server named `name` (`^[A-Za-z0-9][A-Za-z0-9_-]*$`, unique) at the streamable HTTP
    /// endpoint `url` (`http` or `https`). The bridge checks both when it is built.
    pub fn new(name: impl Into<String>, url: Uri) -> Self {
        Self {
            name: name.into(),
            url,
            headers: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }

    /// A header sent on every MCP HTTP request to this server, e.g.
    /// `Authorization: Bearer …`. Values are secrets: they are never logged.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: Secret) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Only tools whose original name matches one of the allow patterns are injected
    /// (unanchored, case-sensitive regex search; use `^…$` for whole names).
    #[must_use]
    pub fn with_allow(mut self, pattern: impl Into<String>) -> Self {
        self.allow.push(pattern.into());
        self
    }

    /// Tools whose original name matches a deny pattern are never injected, even when an
    /// allow pattern matches too.
    #[must_use]
    pub fn with_deny(mut self, pattern: impl Into<String>) -> Self {
        self.deny.push(pattern.into());
        self
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn url(&self) -> &Uri {
        &self.url
    }

    pub(crate) fn headers(&self) -> &[(HeaderName, Secret)] {
        &self.headers
    }

    pub(crate) fn allow(&self) -> &[String] {
        &self.allow
    }

    pub(crate) fn deny(&self) -> &[String] {
        &self.deny
    }

    /// This server with `extra` headers (an actor's credential): an extra header replaces a
    /// static one of the same name. Fails (with a reason naming the header, never its
    /// value) on a transport-reserved name or an invalid value.
    pub(crate) fn with_credential(&self, extra: &[(HeaderName, Secret)]) -> Result<Self, String> {
        let mut out = self.clone();
        for (name, value) in extra {
            check_header(name, value)?;
            out.headers.retain(|(n, _)| n != name);
        }
        out.headers.extend(extra.iter().cloned());
        Ok(out)
    }

    /// The URL without userinfo, as recorded and logged.
    pub(crate) fn display_url(&self) -> String {
        display_url(&self.url)
    }

    fn validate(&self) -> Result<(), McpConfigError> {
        if !is_valid_name(&self.name) {
            return Err(self.invalid("the name must match ^[A-Za-z0-9][A-Za-z0-9_-]*$"));
        }
        match self.url.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(self.invalid("the URL must be http or https")),
        }
        if self.url.host().is_none_or(str::is_empty) {
            return Err(self.invalid("the URL has no host"));
        }
        for (name, value) in &self.headers {
            check_header(name, value).map_err(|reason| self.invalid(reason))?;
        }
        for pattern in self.allow.iter().chain(&self.deny) {
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(McpConfigError::InvalidRegex {
                    server: self.name.clone(),
                    pattern: pattern.clone(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    fn invalid(&self, reason: impl Into<String>) -> McpConfigError {
        McpConfigError::InvalidServer {
            server: self.name.clone(),
            reason: reason.into(),
        }
    }
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted<'a>(&'a [(HeaderName, Secret)]);
        impl fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(name, _)| (name.as_str(), "***")))
                    .finish()
            }
        }
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .field("url", &self.display_url())
            .field("headers", &Redacted(&self.headers))
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .finish()
    }
}

// === helpers ===

/// A header the MCP transport may carry: not one it sets itself, a valid value.
fn check_header(name: &HeaderName, value: &Secret) -> Result<(), String> {
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!("header {name} is set by the MCP transport"));
    }
    if HeaderValue::from_str(value.expose()).is_err() {
        return Err(format!("header {name} has an invalid value"));
    }
    Ok(())
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `scheme://host[:port]/path`: without any `user:password@`, and without the query (a
/// server may take its key there: `?api_key=…`). This is the form of the URL in logs,
/// spans, errors, `Debug` and the tool records.
fn display_url(url: &Uri) -> String {
    let Some(authority) = url.authority() else {
        return url.to_string();
    };
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, host)| host);
    let scheme = url.scheme_str().unwrap_or("http");
    format!("{scheme}://{host_port}{}", url.path())
}

#[cfg(test)]
mod tests;
