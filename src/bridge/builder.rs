//! [`Builder`]: configures and validates a [`RequestBridge`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::budget::{DEFAULT_BUDGET_FACTOR, DEFAULT_BUDGET_WAIT, RequestBudget};
use super::{Inner, RequestBridge};
use crate::metrics::Metrics;
use crate::pipeline::{DEFAULT_CLIENT_WRITE_TIMEOUT, Shared};
use crate::policy::{Policy, Prices};
use crate::provider::{CredentialPolicy, Provider, ProviderKind};
use crate::recorder::limits::RecordLimits;
use crate::recorder::queue::RecordQueue;
use crate::recorder::response_ids::ResponseIdMap;
use crate::recorder::{RecordQueueConfig, Recorder, ResponseIds};
use crate::upstream::UpstreamTimeouts;

/// Default maximum request body: 32 MiB.
pub(crate) const DEFAULT_MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// Why [`Builder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No provider was added.
    #[error("no providers configured")]
    NoProviders,
    /// No recorder was set (use `NoopRecorder` to record nothing).
    #[error("no recorder configured (use NoopRecorder to record nothing)")]
    MissingRecorder,
    /// A provider name does not match `^[a-z0-9]+(-[a-z0-9]+)*$`.
    #[error("invalid provider name {name:?}: must match ^[a-z0-9]+(-[a-z0-9]+)*$")]
    InvalidProviderName {
        /// The name.
        name: String,
    },
    /// Two providers share a name.
    #[error("duplicate provider name {name:?}")]
    DuplicateProviderName {
        /// The name.
        name: String,
    },
    /// A base URL is not http(s), has no authority, or has a query or fragment.
    #[error("invalid base URL for provider {provider:?}: {reason}")]
    InvalidBaseUrl {
        /// The provider name.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// The policy is `Centralized` but no key is configured.
    #[error("provider {provider:?} uses the Centralized credential policy but has no key")]
    MissingKey {
        /// The provider name.
        provider: String,
    },
    /// The credential policy is not allowed for this provider.
    #[error("invalid credential policy for provider {provider:?}")]
    InvalidCredentialPolicy {
        /// The provider name.
        provider: String,
    },
    /// A limit of the bridge or its record queue is zero.
    #[error("invalid limit: {what} must be greater than zero")]
    InvalidLimit {
        /// Which limit.
        what: &'static str,
    },
    /// The path prefix does not start with `/` or ends with `/`.
    #[error("invalid path prefix {prefix:?}: must start with \"/\" and not end with \"/\"")]
    InvalidPathPrefix {
        /// The prefix.
        prefix: String,
    },
    /// The request buffer budget cannot hold even one body of the largest allowed size.
    #[error(
        "invalid limit: request_buffer_budget ({budget} bytes) must be at least max_request_body ({max_request_body} bytes)"
    )]
    BudgetBelowBodyLimit {
        /// The budget.
        budget: usize,
        /// The largest request body.
        max_request_body: usize,
    },
    /// The MCP configuration is invalid (feature `mcp`).
    #[cfg(feature = "mcp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
    #[error(transparent)]
    Mcp(#[from] crate::mcp::McpConfigError),
    /// The HTTP client could not be built.
    #[error("cannot build the upstream HTTP client: {reason}")]
    HttpClient {
        /// What failed.
        reason: String,
    },
}

/// Configures a [`RequestBridge`]. Setters consume and return the builder.
///
/// ```
/// use aibridge::RequestBridge;
/// use aibridge::provider::{Anthropic, Secret};
/// use aibridge::recorder::NoopRecorder;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bridge = RequestBridge::builder()
///     .provider(Anthropic::new(Secret::new("sk-ant-key")))
///     .recorder(NoopRecorder)
///     .max_request_body(8 * 1024 * 1024)
///     .build()
///     .unwrap();
/// # drop(bridge); }
/// ```
#[must_use]
pub struct Builder {
    providers: Vec<Arc<dyn Provider>>,
    recorder: Option<Arc<dyn Recorder>>,
    queue: RecordQueueConfig,
    max_request_body: usize,
    request_buffer_budget: Option<usize>,
    request_buffer_wait: Duration,
    record_limits: RecordLimits,
    path_prefix: Option<String>,
    timeouts: UpstreamTimeouts,
    client_write_timeout: Duration,
    metrics: Option<Metrics>,
    policy: Option<Arc<dyn Policy>>,
    prices: Option<Prices>,
    response_ids: Option<Arc<dyn ResponseIds>>,
    #[cfg(feature = "mcp")]
    mcp: Option<crate::mcp::McpConfig>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("providers", &self.providers)
            .field("queue", &self.queue)
            .field("max_request_body", &self.max_request_body)
            .field("request_buffer_budget", &self.request_buffer_budget)
            .field("request_buffer_wait", &self.request_buffer_wait)
            .field("record_limits", &self.record_limits)
            .field("path_prefix", &self.path_prefix)
            .field("timeouts", &self.timeouts)
            .field("policy", &self.policy.is_some())
            .field("prices", &self.prices)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            recorder: None,
            queue: RecordQueueConfig::default(),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            request_buffer_budget: None,
            request_buffer_wait: DEFAULT_BUDGET_WAIT,
            record_limits: RecordLimits::default(),
            path_prefix: None,
            timeouts: UpstreamTimeouts::default(),
            client_write_timeout: DEFAULT_CLIENT_WRITE_TIMEOUT,
            metrics: None,
            policy: None,
            prices: None,
            response_ids: None,
            #[cfg(feature = "mcp")]
            mcp: None,
        }
    }
}

impl RequestBridge {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Builder {
    /// Adds a provider. Names must be unique.
    pub fn provider(mut self, provider: impl Provider) -> Self {
        self.providers.push(Arc::new(provider));
        self
    }

    /// Adds a provider that is already shared.
    pub fn provider_arc(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Sets the recorder (required; use `NoopRecorder` to record nothing).
    pub fn recorder(mut self, recorder: impl Recorder) -> Self {
        self.recorder = Some(Arc::new(recorder));
        self
    }

    /// Where presented Responses ids are resolved when this process does not know them
    /// (openai-responses.md S20): a tool loop shows the client its first upstream response
    /// id, and a later `previous_response_id` (or `/v1/responses/{id}` call) naming it is
    /// sent upstream as that interception's last upstream id. `SqliteRecorder` and
    /// `PostgresRecorder` answer from their token-usage rows, so replicas sharing a
    /// database, and restarts, resolve each other's ids. Without a store the bridge uses
    /// its in-process cache only.
    pub fn response_ids(mut self, store: impl ResponseIds) -> Self {
        self.response_ids = Some(Arc::new(store));
        self
    }

    /// Sets the queue between the interceptors and the recorder.
    pub fn record_queue(mut self, config: RecordQueueConfig) -> Self {
        self.queue = config;
        self
    }

    /// Maximum request body on bridged and passthrough routes; default 32 MiB.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_request_body = bytes;
        self
    }

    /// Longest time a streaming client may accept no bytes while the bridge has some for it;
    /// default 60 s. A client that stops reading (a stuck editor, a dead network path the
    /// kernel has not noticed) would otherwise hold its interception, upstream connection and
    /// buffers forever; after this long the interception is cancelled (outcome `cancelled`,
    /// error `client stopped reading for more than Ns`), the upstream call is dropped and the
    /// client's body ends with an error. Also bounds, at one second, the terminal event of a
    /// stream cancelled at shutdown.
    pub fn client_write_timeout(mut self, d: Duration) -> Self {
        self.client_write_timeout = d;
        self
    }

    /// Request body bytes buffered at once across all bridged requests; default 8 ×
    /// [`max_request_body`](Self::max_request_body) (256 MiB with the default limit: eight
    /// bodies of the largest size, or thousands of ordinary ones, at once). Must be at
    /// least `max_request_body`.
    ///
    /// A body takes its declared `Content-Length` from the budget before it is read (or
    /// grows chunk by chunk without one) and gives it back when the bridge no longer
    /// references the body: once the interception's last upstream call can no longer be
    /// retried and its MCP tool loop is done, which for a stream is its end. A request that
    /// cannot get its share within [`request_buffer_wait`](Self::request_buffer_wait) is
    /// answered 503 with `Retry-After: 1` in its provider's error shape (Anthropic
    /// `overloaded_error`; OpenAI `server_error` / `request_buffer_full`), and nothing is
    /// recorded. Passthrough routes stream their bodies and take no budget.
    pub fn request_buffer_budget(mut self, bytes: usize) -> Self {
        self.request_buffer_budget = Some(bytes);
        self
    }

    /// How long a request waits in all for [`request_buffer_budget`] before it is refused;
    /// default 1 s. Zero refuses at once when the budget is short.
    ///
    /// [`request_buffer_budget`]: Self::request_buffer_budget
    pub fn request_buffer_wait(mut self, wait: Duration) -> Self {
        self.request_buffer_wait = wait;
        self
    }

    /// Most bytes of a recorded prompt ([`PromptUsage::prompt`]); default 64 KiB. A longer
    /// prompt is recorded as its start, cut on a character boundary, followed by the
    /// marker `…[truncated: N bytes]` (N: the original length in bytes), the whole within
    /// the cap (the marker alone if the cap is smaller than it). The full prompt is still
    /// sent upstream; only the record is cut.
    ///
    /// [`PromptUsage::prompt`]: crate::recorder::PromptUsage::prompt
    pub fn max_recorded_prompt(mut self, bytes: usize) -> Self {
        self.record_limits.prompt = bytes;
        self
    }

    /// Most bytes of a recorded tool input ([`ToolUsage::input`]), client, provider-executed
    /// and injected (MCP) tools alike; default 64 KiB. A longer input is recorded as the
    /// JSON object `{"aibridge_truncated":true,"original_bytes":N,"prefix":"…"}`, whose
    /// `prefix` is the start of the input as a JSON string, as long as fits the cap, so
    /// the column stays valid JSON. Tools still receive their whole input.
    ///
    /// [`ToolUsage::input`]: crate::recorder::ToolUsage::input
    pub fn max_recorded_tool_input(mut self, bytes: usize) -> Self {
        self.record_limits.tool_input = bytes;
        self
    }

    /// Strips this prefix (e.g. `/api/v2/aibridge`) before routing; requests outside it get
    /// the plain-text 404. Default: none (the host strips, as axum's `nest_service` does).
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// MCP servers and tool-loop bounds (feature `mcp`). Servers connect in the background;
    /// building never waits for them.
    #[cfg(feature = "mcp")]
    pub fn mcp(mut self, config: crate::mcp::McpConfig) -> Self {
        self.mcp = Some(config);
        self
    }

    /// Prometheus metrics; none are recorded without them.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The policy stage: asked once per bridged request, before anything goes upstream,
    /// whether the request may go (see [`policy`](crate::policy)). Without one every
    /// request goes.
    ///
    /// ```
    /// use aibridge::RequestBridge;
    /// use aibridge::policy::{Rules, RulesPolicy};
    /// use aibridge::provider::{Anthropic, Secret};
    /// use aibridge::recorder::NoopRecorder;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut rules = Rules::default();
    /// rules.default.models = Some(vec!["claude-*".into()]);
    /// let bridge = RequestBridge::builder()
    ///     .provider(Anthropic::new(Secret::new("sk-ant-key")))
    ///     .recorder(NoopRecorder)
    ///     .policy(RulesPolicy::builder().rules(rules).build().unwrap())
    ///     .build()
    ///     .unwrap();
    /// # drop(bridge); }
    /// ```
    pub fn policy(self, policy: impl Policy) -> Self {
        self.policy_arc(Arc::new(policy))
    }

    /// [`policy`](Self::policy) from a shared policy (e.g. a `RulesPolicy` the host also
    /// reloads and reads the spend of).
    pub fn policy_arc(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The price table that fills [`TokenUsage::cost_usd`](crate::recorder::TokenUsage)
    /// at record time, with or without a policy. Default [`Prices::builtin`].
    pub fn prices(mut self, prices: Prices) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Upstream timeouts.
    pub fn upstream_timeouts(mut self, timeouts: UpstreamTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Validates everything once and starts the record workers. Must be called inside a
    /// Tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first invalid setting.
    pub fn build(self) -> Result<RequestBridge, BuildError> {
        if self.providers.is_empty() {
            return Err(BuildError::NoProviders);
        }
        let recorder = self.recorder.ok_or(BuildError::MissingRecorder)?;
        if self.max_request_body == 0 {
            return Err(BuildError::InvalidLimit {
                what: "max_request_body",
            });
        }
        if self.client_write_timeout.is_zero() {
            return Err(BuildError::InvalidLimit {
                what: "client_write_timeout",
            });
        }
        let budget = self
            .request_buffer_budget
            .unwrap_or_else(|| self.max_request_body.saturating_mul(DEFAULT_BUDGET_FACTOR));
        if budget < self.max_request_body {
            return Err(BuildError::BudgetBelowBodyLimit {
                budget,
                max_request_body: self.max_request_body,
            });
        }
        if self.queue.capacity == 0 {
            return Err(BuildError::InvalidLimit {
                what: "record queue capacity",
            });
        }
        if self.queue.workers == 0 {
            return Err(BuildError::InvalidLimit {
                what: "record queue workers",
            });
        }
        if let Some(p) = &self.path_prefix
            && (!p.starts_with('/') || p.ends_with('/'))
        {
            return Err(BuildError::InvalidPathPrefix { prefix: p.clone() });
        }
        let mut names = HashSet::new();
        for p in &self.providers {
            let name = p.name();
            if !valid_name(name) {
                return Err(BuildError::InvalidProviderName {
                    name: name.to_owned(),
                });
            }
            if !names.insert(name.to_owned()) {
                return Err(BuildError::DuplicateProviderName {
                    name: name.to_owned(),
                });
            }
            validate_base_url(p.as_ref())?;
            validate_credentials(p.as_ref())?;
        }
        #[cfg(feature = "mcp")]
        if let Some(cfg) = &self.mcp {
            cfg.validate()?;
        }
        let client = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError::HttpClient {
                reason: e.to_string(),
            })?;
        let queue = RecordQueue::start_with(recorder, self.queue, self.record_limits);
        if let Some(m) = &self.metrics {
            queue.set_metrics(m.clone());
        }
        let mut shared = Shared::new(
            queue,
            client,
            self.max_request_body,
            self.timeouts,
            self.metrics,
        );
        shared.client_write_stall = self.client_write_timeout;
        shared.policy = self.policy;
        shared.prices = Arc::new(self.prices.unwrap_or_default());
        shared.response_ids = ResponseIdMap::new(self.response_ids);
        let mut inner = Inner::new(
            &self.providers,
            self.path_prefix,
            shared,
            #[cfg(feature = "mcp")]
            self.mcp,
        );
        inner.request_budget = RequestBudget::new(budget, self.request_buffer_wait);
        Ok(RequestBridge {
            inner: Arc::new(inner),
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn validate_base_url(p: &dyn Provider) -> Result<(), BuildError> {
    let url = p.base_url();
    let bad = |reason: &str| BuildError::InvalidBaseUrl {
        provider: p.name().to_owned(),
        reason: reason.to_owned(),
    };
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("scheme must be http or https")),
    }
    if url.authority().is_none() {
        return Err(bad("missing host"));
    }
    if url.query().is_some() {
        return Err(bad("must not have a query"));
    }
    if url.to_string().contains('#') {
        return Err(bad("must not have a fragment"));
    }
    Ok(())
}

fn validate_credentials(p: &dyn Provider) -> Result<(), BuildError> {
    // Probe the policy with no client headers: a Centralized provider without a key is a
    // configuration error; ClientFirst/ClientOnly legitimately fail here.
    let centralized_probe_failed = p.credential(&http::HeaderMap::new()).is_err();
    let policy = p.credential_policy();
    if p.kind() == ProviderKind::Copilot && policy != Some(CredentialPolicy::ClientOnly) {
        return Err(BuildError::InvalidCredentialPolicy {
            provider: p.name().to_owned(),
        });
    }
    if policy == Some(CredentialPolicy::Centralized) && centralized_probe_failed {
        return Err(BuildError::MissingKey {
            provider: p.name().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_follow_the_pattern() {
        for ok in ["anthropic", "copilot-business", "a1", "x-2-y"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "Anthropic", "a_b", "a.b", "a/b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
