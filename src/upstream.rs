//! Upstream request and response header rules (routing.md, D4, S18, S22).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::Actor;
use crate::provider::{Credential, CredentialKind, Provider};

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
}
