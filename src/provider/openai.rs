//! The OpenAI provider (Chat Completions and Responses).

use super::common::{Common, common_setters, impl_provider, key_setters, openai_routes};
use super::{Api, CredentialPolicy, Match, ProviderKind, Route, RouteKind, Secret};

const ROUTES: &[Route] = openai_routes![
    Route::new("/conversations", Match::Exact, RouteKind::Passthrough),
    Route::new("/conversations/", Match::Subtree, RouteKind::Passthrough),
    Route::new("/responses/", Match::Subtree, RouteKind::Passthrough),
];

/// The OpenAI provider: name `openai`, base URL `https://api.openai.com/v1` (with `/v1`),
/// policy `Centralized`. Its route prefix is `/{name}/v1`.
///
/// ```
/// use aibridge::provider::{OpenAi, Provider, Secret};
/// let p = OpenAi::new(Secret::new("sk-x"));
/// assert_eq!(p.route_prefix(), "/openai/v1");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenAi {
    common: Common,
}

impl OpenAi {
    /// Policy `Centralized` with `key`.
    pub fn new(key: Secret) -> Self {
        Self {
            common: Common::new(
                "openai",
                "https://api.openai.com/v1",
                Some(key),
                CredentialPolicy::Centralized,
            ),
        }
    }

    /// No key: the policy is `ClientFirst` (clients must bring their own key).
    pub fn without_key() -> Self {
        Self {
            common: Common::new(
                "openai",
                "https://api.openai.com/v1",
                None,
                CredentialPolicy::ClientFirst,
            ),
        }
    }

    common_setters!();
    key_setters!();
}

impl_provider!(OpenAi, ProviderKind::OpenAi, ROUTES);
