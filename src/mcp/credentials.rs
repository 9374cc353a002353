//! Per-actor MCP credentials: which headers an actor's calls to a server carry, or a refusal.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use http::HeaderName;

use crate::Actor;
use crate::provider::Secret;

/// Chooses, per actor and MCP server, the credential the bridge uses for that actor's
/// session with the server. Implemented by the host (e.g. from its user database or a
/// token broker).
///
/// The bridge keeps one MCP session per (server, credential) and never shares a session
/// between two credentials, so each actor's tool calls reach the server with its own
/// identity and the server's audit log names the right user. The answer is asked for on
/// every request that would get tools; keep it cheap (cache in the implementation).
///
/// ```
/// use aibridge::Actor;
/// use aibridge::mcp::{McpCredential, McpCredentials};
/// use aibridge::provider::Secret;
///
/// struct FromHeaderStore;
///
/// #[async_trait::async_trait]
/// impl McpCredentials for FromHeaderStore {
///     async fn credential(&self, actor: &Actor, server: &str) -> McpCredential {
///         match (actor.id(), server) {
///             ("alice", "coder") => McpCredential::headers([(
///                 http::header::AUTHORIZATION,
///                 Secret::new("Bearer alice-coder-token"),
///             )]),
///             (_, "coder") => McpCredential::refused("no Coder token on file"),
///             _ => McpCredential::Static,
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait McpCredentials: Send + Sync + 'static {
    /// The credential for `actor`'s calls to the server named `server` (the name given
    /// to [`McpServer::new`](super::McpServer::new)).
    async fn credential(&self, actor: &Actor, server: &str) -> McpCredential;
}

/// The answer of [`McpCredentials::credential`].
#[derive(Clone)]
#[non_exhaustive]
pub enum McpCredential {
    /// The server's static configuration ([`McpServer::with_header`](super::McpServer::with_header)):
    /// the bridge's shared session with the server.
    Static,
    /// A session of its own, with these headers on every MCP HTTP request (added to the
    /// server's static headers; a header of the same name replaces the static one).
    Headers(Vec<(HeaderName, Secret)>),
    /// The actor may not use the server: its tools are left out for this actor only (a log
    /// line and `mcp_actor_unavailable_total{server, reason="refused"}`; never a client
    /// error).
    Refused(String),
}

/// A fixed table of per-actor headers, the simple [`McpCredentials`]: an actor and server
/// with an entry get their own session with these headers; everyone else uses the
/// server's static headers.
///
/// ```
/// use aibridge::mcp::ActorHeaders;
/// use aibridge::provider::Secret;
///
/// let creds = ActorHeaders::new()
///     .with("alice", "coder", http::header::AUTHORIZATION, Secret::new("Bearer alice-token"));
/// assert!(!format!("{creds:?}").contains("alice-token"));
/// ```
#[derive(Clone, Default)]
pub struct ActorHeaders {
    entries: HashMap<(String, String), Vec<(HeaderName, Secret)>>,
}

// === impl McpCredential ===

impl McpCredential {
    /// [`McpCredential::Headers`] from any list of header pairs.
    pub fn headers(headers: impl IntoIterator<Item = (HeaderName, Secret)>) -> Self {
        Self::Headers(headers.into_iter().collect())
    }

    /// [`McpCredential::Refused`] with the reason (logged; never a secret).
    pub fn refused(reason: impl Into<String>) -> Self {
        Self::Refused(reason.into())
    }
}

impl fmt::Debug for McpCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static => f.write_str("Static"),
            Self::Headers(h) => f
                .debug_tuple("Headers")
                .field(&h.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
                .finish(),
            Self::Refused(reason) => f.debug_tuple("Refused").field(reason).finish(),
        }
    }
}

// === impl ActorHeaders ===

impl ActorHeaders {
    /// An empty table (everyone uses the static headers).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the header `name: value` to `actor`'s requests to the server `server`.
    #[must_use]
    pub fn with(
        mut self,
        actor: impl Into<String>,
        server: impl Into<String>,
        name: HeaderName,
        value: Secret,
    ) -> Self {
        self.entries
            .entry((actor.into(), server.into()))
            .or_default()
            .push((name, value));
        self
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for ActorHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.entries.keys().collect();
        keys.sort();
        f.debug_struct("ActorHeaders")
            .field("entries", &keys)
            .finish()
    }
}

#[async_trait]
impl McpCredentials for ActorHeaders {
    async fn credential(&self, actor: &Actor, server: &str) -> McpCredential {
        match self
            .entries
            .get(&(actor.id().to_owned(), server.to_owned()))
        {
            Some(headers) => McpCredential::Headers(headers.clone()),
            None => McpCredential::Static,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn actor_headers_answer_per_actor_and_server() {
        let creds = ActorHeaders::new().with(
            "alice",
            "coder",
            http::header::AUTHORIZATION,
            Secret::new("Bearer a"),
        );
        let alice = Actor::new("alice");
        let bob = Actor::new("bob");
        match creds.credential(&alice, "coder").await {
            McpCredential::Headers(h) => {
                assert_eq!(h.len(), 1);
                assert_eq!(h[0].1.expose(), "Bearer a");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            creds.credential(&bob, "coder").await,
            McpCredential::Static
        ));
        assert!(matches!(
            creds.credential(&alice, "github").await,
            McpCredential::Static
        ));
        assert!(
            !format!(
                "{:?}",
                McpCredential::headers([(http::header::AUTHORIZATION, Secret::new("Bearer zz"))])
            )
            .contains("zz")
        );
    }
}
