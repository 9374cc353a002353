//! Providers: the upstreams the bridge routes to, and how each is configured.
//!
//! A provider has a **kind** (the wire protocol family: [`ProviderKind`]) and a unique
//! instance **name** (route prefix, metric label, record `provider_name`). Several providers
//! of one kind may coexist, e.g. `copilot` and `copilot-business`.
//!
//! ```
//! use aibridge::provider::{Anthropic, CredentialPolicy, Secret};
//! let anthropic = Anthropic::new(Secret::new("sk-ant-test"))
//!     .with_name("claude")
//!     .with_base_url("http://127.0.0.1:9000".parse().unwrap())
//!     .with_credential_policy(CredentialPolicy::ClientFirst);
//! assert_eq!(format!("{anthropic:?}").contains("sk-ant-test"), false);
//! ```

mod anthropic;
#[cfg(any(feature = "bedrock", feature = "vertex"))]
pub(crate) mod cloud;
mod common;
mod config;
mod copilot;
mod credential;
mod kind;
mod openai;

pub use self::anthropic::Anthropic;
#[cfg(feature = "bedrock")]
pub use self::cloud::bedrock::Bedrock;
#[cfg(any(feature = "bedrock", feature = "vertex"))]
pub use self::cloud::models::{ModelMap, ModelMapError};
#[cfg(any(feature = "bedrock", feature = "vertex"))]
pub use self::cloud::transport::CloudTransport;
#[cfg(feature = "vertex")]
pub use self::cloud::vertex::{AccessToken, TokenError, TokenSource, Vertex};
pub use self::config::{CircuitBreakerConfig, RetryConfig};
pub use self::copilot::Copilot;
pub use self::credential::{Credential, CredentialError, CredentialKind, CredentialPolicy, Secret};
pub use self::kind::{Api, ProviderKind};
pub use self::openai::OpenAi;

pub(crate) use self::credential::select_credential;

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, Uri};

/// An upstream the bridge routes to. Object safe: the bridge stores `Arc<dyn Provider>`.
///
/// The built-in [`Anthropic`], [`OpenAi`] and [`Copilot`] implement it. Hosts may implement
/// it to build variants; the bridge still picks the interceptor from [`kind`](Self::kind)
/// and the route table.
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// Wire protocol family; also the record's `provider` value.
    fn kind(&self) -> ProviderKind;
    /// Unique instance name: route prefix, metric label, record `provider_name`.
    fn name(&self) -> &str;
    /// Client-facing prefix: `/{name}` for Anthropic and Copilot, `/{name}/v1` for OpenAI.
    fn route_prefix(&self) -> String {
        match self.kind() {
            ProviderKind::OpenAi => format!("/{}/v1", self.name()),
            ProviderKind::Anthropic | ProviderKind::Copilot | ProviderKind::Mcp => {
                format!("/{}", self.name())
            }
        }
    }
    /// Upstream base URL (http or https; path allowed; no query, no fragment).
    fn base_url(&self) -> &Uri;
    /// Routes relative to [`route_prefix`](Self::route_prefix).
    fn routes(&self) -> &[Route];
    /// Chooses the upstream credential for one request. `Err` answers 401.
    ///
    /// # Errors
    ///
    /// [`CredentialError::Missing`] when the policy needs a client credential that is absent.
    fn credential(&self, client_headers: &HeaderMap) -> Result<Credential, CredentialError>;
    /// The credential policy, if the provider has one (used by `Builder::build` to reject
    /// a `Centralized` provider without a key). Defaults to `None`.
    fn credential_policy(&self) -> Option<CredentialPolicy> {
        None
    }
    /// Retry policy for upstream calls.
    fn retry(&self) -> &RetryConfig;
    /// Circuit breaker settings; `None` disables the breaker for this provider.
    fn circuit_breaker(&self) -> Option<&CircuitBreakerConfig>;
    /// Send `X-Ai-Bridge-Actor-*` headers upstream (never on passthrough).
    fn sends_actor_headers(&self) -> bool;
    /// Added to every upstream request (bridged and passthrough), replacing same-named
    /// client headers.
    fn extra_headers(&self) -> &HeaderMap;
    /// The cloud transport of the built-in `Bedrock` and `Vertex`: the Anthropic API served
    /// through a cloud. `None` (the default) for every other provider.
    #[cfg(any(feature = "bedrock", feature = "vertex"))]
    fn cloud(&self) -> Option<CloudTransport> {
        None
    }
}

/// One entry of a provider's route table.
///
/// Built with [`Route::new`]; the fields are public, so a route with a path computed at
/// run time is `Route::new("", …)` with [`path`](Self::path) set afterwards.
///
/// ```
/// use std::borrow::Cow;
/// use aibridge::provider::{Match, Route, RouteKind};
/// let mut route = Route::new("", Match::Subtree, RouteKind::Passthrough);
/// route.path = Cow::Owned(format!("/{}/", "files"));
/// assert!(route.matches("/files/a"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// Path relative to the provider's route prefix. Subtree paths end in `/`.
    pub path: Cow<'static, str>,
    /// How the path matches.
    pub matching: Match,
    /// What the bridge does with a matching request.
    pub kind: RouteKind,
}

impl Route {
    /// A route with a static path.
    pub const fn new(path: &'static str, matching: Match, kind: RouteKind) -> Self {
        Self {
            path: Cow::Borrowed(path),
            matching,
            kind,
        }
    }

    /// Does `rest` (the request path after the prefix, without query) match this route?
    pub fn matches(&self, rest: &str) -> bool {
        match self.matching {
            Match::Exact => rest == self.path,
            Match::Subtree => rest.starts_with(&*self.path),
        }
    }
}

/// How a [`Route`] path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Match {
    /// Only this path.
    Exact,
    /// Every path that starts with it (the route path ends in `/`, so the path without
    /// the trailing slash does not match).
    Subtree,
}

/// What the bridge does with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteKind {
    /// Parsed, recorded, possibly tool-injected.
    Bridged(Api),
    /// Reverse-proxied unchanged apart from credentials and hop-by-hop headers.
    Passthrough,
}

#[cfg(test)]
pub(crate) trait ProviderTestExt: Provider {
    fn credential_for_test(&self, h: &HeaderMap) -> Credential {
        self.credential(h).expect("credential")
    }
}
#[cfg(test)]
impl<P: Provider> ProviderTestExt for P {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_routes_need_something_after_the_slash() {
        let r = Route::new("/v1/models/", Match::Subtree, RouteKind::Passthrough);
        assert!(r.matches("/v1/models/claude"));
        assert!(r.matches("/v1/models/"));
        assert!(!r.matches("/v1/models"));
        let e = Route::new("/v1/models", Match::Exact, RouteKind::Passthrough);
        assert!(e.matches("/v1/models"));
        assert!(!e.matches("/v1/models/x"));
    }
}
