//! The upstream side of a request: its URL, its headers, its timeouts, and what a
//! connection failure is called (routing.md, resilience.md, D4, S18, S22).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::Actor;
use crate::provider::{Credential, CredentialKind, Provider};

/// Upstream timeouts.
///
/// ```
/// use std::time::Duration;
/// use aibridge::bridge::UpstreamTimeouts;
/// let t = UpstreamTimeouts::default().with_stream_idle(Duration::from_secs(30));
/// assert_eq!(t.connect, Duration::from_secs(10));
/// assert_eq!(t.stream_idle, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamTimeouts {
    /// Connect (TLS included) per attempt; default 10 s.
    pub connect: Duration,
    /// From request sent to response head (blocking: to the whole body); default 600 s.
    pub response: Duration,
    /// Longest gap between upstream body bytes of a relayed stream; default 600 s.
    pub stream_idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(600),
            stream_idle: Duration::from_secs(600),
        }
    }
}

impl UpstreamTimeouts {
    /// Sets [`connect`](Self::connect).
    #[must_use]
    pub fn with_connect(mut self, d: Duration) -> Self {
        self.connect = d;
        self
    }
    /// Sets [`response`](Self::response).
    #[must_use]
    pub fn with_response(mut self, d: Duration) -> Self {
        self.response = d;
        self
    }
    /// Sets [`stream_idle`](Self::stream_idle).
    #[must_use]
    pub fn with_stream_idle(mut self, d: Duration) -> Self {
        self.stream_idle = d;
        self
    }
}

/// `{base}{relative}{?query}`, ignoring a trailing `/` on the base path.
pub(crate) fn upstream_url(base: &http::Uri, relative: &str, query: Option<&str>) -> String {
    let base = base.to_string();
    let base = base.trim_end_matches('/');
    match query {
        Some(q) => format!("{base}{relative}?{q}"),
        None => format!("{base}{relative}"),
    }
}

/// The metric/breaker label of a route: the path relative to `/{name}`, e.g.
/// `/v1/messages`, `/v1/chat/completions` (OpenAI), `/chat/completions` (Copilot).
pub(crate) fn route_label(provider: &dyn Provider, route_path: &str) -> String {
    let prefix = provider.route_prefix();
    let under_name = prefix
        .strip_prefix(&format!("/{}", provider.name()))
        .unwrap_or("");
    format!("{under_name}{route_path}")
}

/// The spec's kind of a connection-level failure.
pub(crate) fn connect_error_kind(err: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut text = String::new();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused",
                std::io::ErrorKind::TimedOut => return "connect timeout",
                _ => {}
            }
        }
        text.push_str(&e.to_string().to_ascii_lowercase());
        text.push(' ');
        source = e.source();
    }
    if err.is_timeout() || text.contains("timed out") {
        "connect timeout"
    } else if text.contains("dns") || text.contains("resolve") {
        "dns lookup failed"
    } else if text.contains("tls") || text.contains("certificate") || text.contains("handshake") {
        "tls handshake failed"
    } else if text.contains("refused") {
        "connection refused"
    } else {
        "connection reset"
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Which kind of upstream request the headers are for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// A bridged route; actor headers are added when the provider enables them.
    Bridged(&'a Actor),
    /// A passthrough route.
    Passthrough,
}

/// The upstream request headers built from the client's (routing.md "Upstream request
/// headers"). `credential` is None only for a passthrough request whose policy found none.
pub(crate) fn request_headers(
    client: &HeaderMap,
    provider: &dyn Provider,
    credential: Option<&Credential>,
    mode: Mode<'_>,
) -> HeaderMap {
    let connection_named: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    let bridged = matches!(mode, Mode::Bridged(_));
    let keep_client_cred = credential
        .filter(|c| c.kind() == CredentialKind::Byok)
        .map(|c| c.header().0.clone());
    let mut out = HeaderMap::with_capacity(client.len() + 4);
    for (name, value) in client {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || connection_named.iter().any(|c| c == n) || n == "host" {
            continue;
        }
        if bridged && (n == "content-length" || n == "accept-encoding") {
            continue;
        }
        if (n == "authorization" || n == "x-api-key") && keep_client_cred.as_ref() != Some(name) {
            continue;
        }
        if n.starts_with("x-ai-bridge-actor") {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if bridged {
        if !out.contains_key(header::CONTENT_TYPE) {
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        out.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    for (name, value) in provider.extra_headers() {
        out.insert(name.clone(), value.clone());
    }
    if let Some(c) = credential
        && c.kind() == CredentialKind::Centralized
    {
        let (name, value) = c.header();
        out.insert(name.clone(), value.clone());
    }
    if let Mode::Bridged(actor) = mode
        && provider.sends_actor_headers()
    {
        add_actor_headers(&mut out, actor);
    }
    out
}

fn add_actor_headers(out: &mut HeaderMap, actor: &Actor) {
    if let Ok(v) = HeaderValue::from_str(actor.id()) {
        out.insert(HeaderName::from_static("x-ai-bridge-actor-id"), v);
    }
    for (key, value) in actor.metadata() {
        let canonical: Vec<String> = key
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(f) => f
                        .to_uppercase()
                        .chain(chars.flat_map(char::to_lowercase))
                        .collect(),
                    None => String::new(),
                }
            })
            .collect();
        let name = format!("X-Ai-Bridge-Actor-Metadata-{}", canonical.join("-"));
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                out.insert(n, v);
            }
            _ => tracing::debug!(key, "actor metadata entry skipped: not a valid header"),
        }
    }
}

/// An upstream URL as spans show it (D17): no userinfo, query or fragment (a base URL may
/// carry credentials, a query may carry a key).
pub(crate) fn url_for_span(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return String::new();
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.into()
}

/// Whether a bridged response header is relayed to the client (routing.md, S18).
pub(crate) fn relayed_response_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type"
            | "cache-control"
            | "request-id"
            | "x-request-id"
            | "retry-after"
            | "retry-after-ms"
            | "x-should-retry"
    ) || n.starts_with("anthropic-ratelimit-")
        || n.starts_with("x-ratelimit-")
        || n.starts_with("openai-")
}

/// The relayed subset of upstream response headers.
pub(crate) fn relayed_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        if relayed_response_header(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Passthrough response headers: all but hop-by-hop.
pub(crate) fn passthrough_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let connection_named: Vec<String> = upstream
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || connection_named.iter().any(|c| c == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Anthropic, CredentialPolicy, ProviderTestExt, Secret};

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bridged_headers_follow_d4() {
        let p = Anthropic::new(Secret::new("sk-central"))
            .with_actor_headers(true)
            .with_extra_header(
                HeaderName::from_static("x-extra"),
                HeaderValue::from_static("e"),
            );
        let client = map(&[
            ("host", "gw"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("content-length", "10"),
            ("accept-encoding", "gzip"),
            ("authorization", "Bearer gateway-token"),
            ("x-api-key", "client-key"),
            ("X-Ai-Bridge-Actor-Id", "mallory"),
            ("anthropic-beta", "a,b"),
            ("anthropic-beta", "c"),
            ("x-extra", "client"),
            ("user-agent", "claude-cli/2"),
        ]);
        let cred = p.credential_for_test(&client);
        let actor = Actor::new("alice").with_metadata("org-id", "acme");
        let h = request_headers(&client, &p, Some(&cred), Mode::Bridged(&actor));
        for gone in [
            "host",
            "connection",
            "x-drop-me",
            "content-length",
            "authorization",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-api-key"], "sk-central");
        assert_eq!(h["accept-encoding"], "identity");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h.get_all("anthropic-beta").iter().count(), 2);
        assert_eq!(h["x-extra"], "e");
        assert_eq!(h["x-ai-bridge-actor-id"], "alice");
        assert_eq!(h["x-ai-bridge-actor-metadata-org-id"], "acme");
        assert_eq!(h["user-agent"], "claude-cli/2");
    }

    #[test]
    fn byok_keeps_exactly_the_client_header_used() {
        let p = Anthropic::without_key().with_credential_policy(CredentialPolicy::ClientFirst);
        let client = map(&[
            ("authorization", "Bearer mine"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        let cred = p.credential_for_test(&client);
        let h = request_headers(&client, &p, Some(&cred), Mode::Passthrough);
        assert_eq!(h["authorization"], "Bearer mine");
        assert!(!h.contains_key("x-api-key"));
    }

    #[test]
    fn response_header_filter() {
        let up = map(&[
            ("content-type", "text/event-stream"),
            ("set-cookie", "a=b"),
            ("anthropic-ratelimit-requests-limit", "5"),
            ("openai-processing-ms", "3"),
            ("server", "x"),
            ("retry-after-ms", "10"),
        ]);
        let h = relayed_response_headers(&up);
        assert_eq!(h.len(), 4);
        assert!(!h.contains_key("set-cookie"));
    }

    #[test]
    fn builds_upstream_urls_per_the_spec_table() {
        let u = |b: &str, r: &str, q: Option<&str>| upstream_url(&b.parse().unwrap(), r, q);
        assert_eq!(
            u(
                "https://api.anthropic.com",
                "/v1/messages",
                Some("beta=true")
            ),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        assert_eq!(
            u("http://h/api", "/v1/messages", None),
            "http://h/api/v1/messages"
        );
        assert_eq!(
            u("https://api.anthropic.com/", "/v1/models", None),
            "https://api.anthropic.com/v1/models"
        );
        assert_eq!(
            u("https://api.openai.com/v1", "/chat/completions", None),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            u("http://u", "/conversations", Some("limit=10")),
            "http://u/conversations?limit=10"
        );
    }

    #[test]
    fn span_urls_carry_no_credentials_or_query() {
        assert_eq!(
            url_for_span("https://user:pa55@api.example.com/v1/messages?key=sk-1#f"),
            "https://api.example.com/v1/messages"
        );
        assert_eq!(url_for_span("not a url"), "");
    }
}
