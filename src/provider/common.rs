//! Settings shared by the built-in providers, and the setters they all expose.

use http::{HeaderMap, Uri};

use super::{CircuitBreakerConfig, CredentialPolicy, RetryConfig, Secret};

/// The fields every built-in provider has. `Debug` shows no secret: the key prints `***`,
/// the base URL without its userinfo, extra headers by name only.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) name: String,
    pub(crate) base_url: Uri,
    pub(crate) key: Option<Secret>,
    pub(crate) policy: CredentialPolicy,
    pub(crate) retry: RetryConfig,
    pub(crate) breaker: Option<CircuitBreakerConfig>,
    pub(crate) actor_headers: bool,
    pub(crate) extra_headers: HeaderMap,
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base_url = match self.base_url.authority() {
            Some(a) if a.as_str().contains('@') => {
                let host = a.as_str().rsplit_once('@').map_or("", |(_, h)| h);
                let scheme = self.base_url.scheme_str().unwrap_or("http");
                let path = self.base_url.path_and_query().map_or("", |p| p.as_str());
                format!("{scheme}://***@{host}{path}")
            }
            _ => self.base_url.to_string(),
        };
        let extra: Vec<&str> = self.extra_headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("Common")
            .field("name", &self.name)
            .field("base_url", &base_url)
            .field("key", &self.key)
            .field("policy", &self.policy)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("actor_headers", &self.actor_headers)
            .field("extra_headers", &extra)
            .finish()
    }
}

impl Common {
    pub(crate) fn new(
        name: &str,
        base_url: &'static str,
        key: Option<Secret>,
        policy: CredentialPolicy,
    ) -> Self {
        Self {
            name: name.to_owned(),
            base_url: Uri::from_static(base_url),
            key,
            policy,
            retry: RetryConfig::default(),
            breaker: Some(CircuitBreakerConfig::default()),
            actor_headers: false,
            extra_headers: HeaderMap::new(),
        }
    }
}

/// Setters shared by all built-in providers (`self.common` must exist).
macro_rules! common_setters {
    () => {
        /// Sets the instance name (route prefix, metric label, record `provider_name`).
        pub fn with_name(mut self, name: impl Into<String>) -> Self {
            self.common.name = name.into();
            self
        }
        /// Sets the upstream base URL.
        pub fn with_base_url(mut self, url: http::Uri) -> Self {
            self.common.base_url = url;
            self
        }
        /// Sets the retry policy.
        pub fn with_retry(mut self, r: $crate::provider::RetryConfig) -> Self {
            self.common.retry = r;
            self
        }
        /// Sets the circuit breaker configuration (and enables it).
        pub fn with_circuit_breaker(mut self, c: $crate::provider::CircuitBreakerConfig) -> Self {
            self.common.breaker = Some(c);
            self
        }
        /// Disables the circuit breaker.
        pub fn without_circuit_breaker(mut self) -> Self {
            self.common.breaker = None;
            self
        }
        /// Adds a header to every upstream request, replacing a same-named client header.
        /// The value is treated as a secret (it may be a key): never printed or logged.
        pub fn with_extra_header(
            mut self,
            name: http::HeaderName,
            mut value: http::HeaderValue,
        ) -> Self {
            value.set_sensitive(true);
            self.common.extra_headers.insert(name, value);
            self
        }
    };
}

/// Setters for providers that hold a key (Anthropic and OpenAI).
macro_rules! key_setters {
    () => {
        /// Sets the configured key.
        pub fn with_key(mut self, key: $crate::provider::Secret) -> Self {
            self.common.key = Some(key);
            self
        }
        /// Sets the credential policy.
        pub fn with_credential_policy(mut self, p: $crate::provider::CredentialPolicy) -> Self {
            self.common.policy = p;
            self
        }
        /// Sends `X-Ai-Bridge-Actor-*` headers upstream on bridged routes (default off).
        pub fn with_actor_headers(mut self, on: bool) -> Self {
            self.common.actor_headers = on;
            self
        }
    };
}

/// Implements [`Provider`](crate::provider::Provider) by delegating to `self.common`.
macro_rules! impl_provider {
    ($ty:ty, $kind:expr, $routes:expr) => {
        impl $crate::provider::Provider for $ty {
            fn kind(&self) -> $crate::provider::ProviderKind {
                $kind
            }
            fn name(&self) -> &str {
                &self.common.name
            }
            fn base_url(&self) -> &http::Uri {
                &self.common.base_url
            }
            fn routes(&self) -> &[$crate::provider::Route] {
                $routes
            }
            fn credential(
                &self,
                client_headers: &http::HeaderMap,
            ) -> Result<$crate::provider::Credential, $crate::provider::CredentialError> {
                $crate::provider::select_credential(
                    $kind,
                    self.common.policy,
                    self.common.key.as_ref(),
                    client_headers,
                )
            }
            fn credential_policy(&self) -> Option<$crate::provider::CredentialPolicy> {
                Some(self.common.policy)
            }
            fn retry(&self) -> &$crate::provider::RetryConfig {
                &self.common.retry
            }
            fn circuit_breaker(&self) -> Option<&$crate::provider::CircuitBreakerConfig> {
                self.common.breaker.as_ref()
            }
            fn sends_actor_headers(&self) -> bool {
                self.common.actor_headers
            }
            fn extra_headers(&self) -> &http::HeaderMap {
                &self.common.extra_headers
            }
        }
    };
}

/// The route table of a provider speaking the OpenAI wire formats: the two bridged APIs
/// and the `/models` passthroughs every such provider has, followed by the provider's
/// own passthrough routes.
macro_rules! openai_routes {
    ($($extra:expr),* $(,)?) => {
        &[
            Route::new(
                "/chat/completions",
                Match::Exact,
                RouteKind::Bridged(Api::ChatCompletions),
            ),
            Route::new("/responses", Match::Exact, RouteKind::Bridged(Api::Responses)),
            Route::new("/models", Match::Exact, RouteKind::Passthrough),
            Route::new("/models/", Match::Subtree, RouteKind::Passthrough),
            $($extra),*
        ]
    };
}

pub(crate) use {common_setters, impl_provider, key_setters, openai_routes};
