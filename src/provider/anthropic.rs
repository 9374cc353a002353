//! The Anthropic provider (Messages API).

use super::common::{Common, common_setters, impl_provider, key_setters};
use super::{Api, CredentialPolicy, Match, ProviderKind, Route, RouteKind, Secret};

const ROUTES: &[Route] = &[
    Route::new(
        "/v1/messages",
        Match::Exact,
        RouteKind::Bridged(Api::Messages),
    ),
    Route::new("/v1/models", Match::Exact, RouteKind::Passthrough),
    Route::new("/v1/models/", Match::Subtree, RouteKind::Passthrough),
    Route::new(
        "/v1/messages/count_tokens",
        Match::Exact,
        RouteKind::Passthrough,
    ),
    Route::new(
        "/api/event_logging/",
        Match::Subtree,
        RouteKind::Passthrough,
    ),
];

/// The Anthropic Messages provider: name `anthropic`, base URL `https://api.anthropic.com`
/// (without `/v1`), policy `Centralized`.
///
/// ```
/// use aibridge::provider::{Anthropic, Provider, Secret};
/// let p = Anthropic::new(Secret::new("sk-ant-x")).with_name("claude-team");
/// assert_eq!(p.route_prefix(), "/claude-team");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Anthropic {
    common: Common,
}

impl Anthropic {
    /// Policy `Centralized` with `key`.
    pub fn new(key: Secret) -> Self {
        Self {
            common: Common::new(
                "anthropic",
                "https://api.anthropic.com",
                Some(key),
                CredentialPolicy::Centralized,
            ),
        }
    }

    /// No key: the policy is `ClientFirst` (clients must bring their own key).
    pub fn without_key() -> Self {
        Self {
            common: Common::new(
                "anthropic",
                "https://api.anthropic.com",
                None,
                CredentialPolicy::ClientFirst,
            ),
        }
    }

    common_setters!();
    key_setters!();
}

impl_provider!(Anthropic, ProviderKind::Anthropic, ROUTES);
