//! The GitHub Copilot provider (OpenAI wire formats, the client's own token only).

use super::common::{Common, common_setters, impl_provider, openai_routes};
use super::{Api, CredentialPolicy, Match, ProviderKind, Route, RouteKind};

const ROUTES: &[Route] = openai_routes![
    Route::new("/agents/", Match::Subtree, RouteKind::Passthrough),
    Route::new("/mcp/", Match::Subtree, RouteKind::Passthrough),
    Route::new("/.well-known/", Match::Subtree, RouteKind::Passthrough),
];

/// The GitHub Copilot provider: name `copilot`, base URL
/// `https://api.individual.githubcopilot.com`, policy `ClientOnly` (always).
///
/// Several instances may coexist by name:
///
/// ```
/// use aibridge::provider::{Copilot, Provider};
/// let business = Copilot::new()
///     .with_name("copilot-business")
///     .with_base_url("https://api.business.githubcopilot.com".parse().unwrap());
/// assert_eq!(business.route_prefix(), "/copilot-business");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Copilot {
    common: Common,
}

impl Copilot {
    /// Name `copilot`, the individual-plan base URL.
    pub fn new() -> Self {
        Self {
            common: Common::new(
                "copilot",
                "https://api.individual.githubcopilot.com",
                None,
                CredentialPolicy::ClientOnly,
            ),
        }
    }

    common_setters!();
}

impl Default for Copilot {
    fn default() -> Self {
        Self::new()
    }
}

impl_provider!(Copilot, ProviderKind::Copilot, ROUTES);
