//! The policy stage: who may send which request, decided before anything goes upstream.
//!
//! A [`Policy`] is called once per bridged request, after the body is parsed and the client
//! detected, and before the interception's first upstream call. It sees a
//! [`PolicyRequest`] (actor, provider, API, model, streaming flag, client, session id,
//! credential kind, body size, the names of the client's own tools) and answers with a
//! [`Decision`]:
//!
//! - [`Decision::Allow`], optionally narrowing the injected MCP tools this request may use
//!   ([`Allow::mcp_tools`], a [`ToolFilter`] on original tool names, enforced when the tools
//!   are injected and again when the model calls one);
//! - [`Decision::Deny`] with a [`Denial`]: the bridge answers with a provider-shaped error
//!   (403 for [`DenyKind::Forbidden`] and [`DenyKind::Budget`], 429 with `Retry-After` for
//!   [`DenyKind::RateLimited`], the host's own status for [`DenyKind::Other`]), sends
//!   nothing upstream, records the interception ended with
//!   [`Outcome::Denied`](crate::recorder::Outcome::Denied) and counts it in
//!   `policy_denials_total{provider, model, reason}`.
//!
//! Without a policy (`bridge::Builder::policy` not called) the stage is one `Option` check.
//!
//! The built-in policy is [`RulesPolicy`]: model globs, budgets in tokens or US dollars per
//! UTC calendar window, and rate limits, from [`Rules`]. Costs come from [`Prices`], which
//! the bridge also uses to fill [`TokenUsage::cost_usd`](crate::recorder::TokenUsage).
//!
//! ```
//! use aibridge::async_trait;
//! use aibridge::policy::{Decision, Denial, DenyKind, Policy, PolicyRequest};
//!
//! /// Nobody uses preview models.
//! struct NoPreviews;
//!
//! #[async_trait]
//! impl Policy for NoPreviews {
//!     async fn check(&self, req: &PolicyRequest<'_>) -> Decision {
//!         if req.model.ends_with("-preview") {
//!             return Decision::Deny(Denial::new(
//!                 DenyKind::Forbidden,
//!                 format!("model {} is not allowed", req.model),
//!             ));
//!         }
//!         Decision::allow()
//!     }
//! }
//! ```

mod budget;
mod builtin;
mod client_tools;
mod clock;
mod ledger;
mod prices;
mod rate;
mod rules;
mod spend;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;

pub(crate) use self::budget::retry_secs as retry_after_secs;
pub use self::builtin::{BudgetStatus, DEFAULT_REFRESH, RulesPolicy, RulesPolicyBuilder};
pub use self::client_tools::ClientTools;
pub use self::clock::{Clock, SystemClock};
pub use self::prices::{Price, Prices};
pub use self::rules::{ActorRules, Budget, Rate, RatePer, Rules, Unpriced, Window};
pub use self::spend::{ActorSpend, Spend, SpendSource};
use crate::Actor;
use crate::provider::{Api, CredentialKind, ProviderKind};
use crate::recorder::TokenUsage;

/// Decides, per bridged request, whether it may go upstream.
///
/// Implemented with `#[async_trait]` (re-exported as [`aibridge::async_trait`](crate::async_trait)).
/// `check` runs on the request path before anything is sent upstream: keep it cheap (no
/// database query per request; keep state in memory and refresh it in the background, as
/// [`RulesPolicy`] does).
#[async_trait]
pub trait Policy: Send + Sync + 'static {
    /// The decision for one request.
    async fn check(&self, req: &PolicyRequest<'_>) -> Decision;

    /// Called by the bridge for every token-usage record it makes (also those of the MCP
    /// inner loop), after [`TokenUsage::cost_usd`] is filled: a policy that keeps a spend
    /// ledger adds it at once. The default does nothing. Must not block.
    fn usage(&self, actor: &str, model: &str, usage: &TokenUsage) {
        let _ = (actor, model, usage);
    }
}

/// What a [`Policy`] sees of a request. Read-only for the host.
#[derive(Debug)]
#[non_exhaustive]
pub struct PolicyRequest<'a> {
    /// The authenticated actor.
    pub actor: &'a Actor,
    /// The provider's configured name.
    pub provider_name: &'a str,
    /// The provider's kind.
    pub provider_kind: ProviderKind,
    /// The API of the route.
    pub api: Api,
    /// The request's `model`.
    pub model: &'a str,
    /// The request asks for a stream.
    pub streaming: bool,
    /// The detected client, as recorded (`"Claude Code"`, `"Codex"`, … or `"Unknown"`).
    pub client: &'a str,
    /// The client's session id, when it sent one.
    pub session_id: Option<&'a str>,
    /// Whose credential would be used upstream.
    pub credential_kind: CredentialKind,
    /// The request body size in bytes.
    pub body_len: usize,
    /// The names of the client's own tools in the request (not the injected ones), read
    /// from the body on first use.
    pub client_tools: ClientTools<'a>,
}

impl<'a> PolicyRequest<'a> {
    /// A request for tests of a policy (the bridge builds its own). `provider_kind`
    /// Anthropic, API Messages, not streaming, client `"Unknown"`, no session, centralized
    /// credential, empty body, no client tools; change the public fields as needed.
    pub fn new(actor: &'a Actor, provider_name: &'a str, model: &'a str) -> Self {
        Self {
            actor,
            provider_name,
            provider_kind: ProviderKind::Anthropic,
            api: Api::Messages,
            model,
            streaming: false,
            client: "Unknown",
            session_id: None,
            credential_kind: CredentialKind::Centralized,
            body_len: 0,
            client_tools: ClientTools::default(),
        }
    }
}

/// A policy's answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Decision {
    /// The request may go upstream.
    Allow(Allow),
    /// The request is refused.
    Deny(Denial),
}

impl Decision {
    /// Allow, with every injected tool.
    pub fn allow() -> Self {
        Self::Allow(Allow::default())
    }
}

/// What an allowed request may use.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Allow {
    /// The injected MCP tools this request may use; `None` = all of them.
    pub mcp_tools: Option<ToolFilter>,
}

impl Allow {
    /// Allow, narrowing the injected MCP tools to those `filter` allows.
    pub fn with_mcp_tools(filter: ToolFilter) -> Self {
        Self {
            mcp_tools: Some(filter),
        }
    }
}

/// A set of regular expressions on original MCP tool names (the server's names, before
/// the bridge's prefix): a tool is allowed when any of them matches.
#[derive(Debug, Clone)]
pub struct ToolFilter {
    set: regex::RegexSet,
}

impl ToolFilter {
    /// A filter allowing the tools any of `patterns` matches (no pattern: no tool).
    ///
    /// # Errors
    ///
    /// A pattern that is not a valid regular expression.
    ///
    /// ```
    /// let f = aibridge::policy::ToolFilter::new(["^coder_list_"]).unwrap();
    /// assert!(f.allows("coder_list_workspaces"));
    /// assert!(!f.allows("coder_delete_workspace"));
    /// ```
    pub fn new<I, S>(patterns: I) -> Result<Self, regex::Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self {
            set: regex::RegexSet::new(patterns)?,
        })
    }

    /// Whether the tool (by its original name) is allowed.
    pub fn allows(&self, tool: &str) -> bool {
        self.set.is_match(tool)
    }
}

/// Why and how a request is refused.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Denial {
    /// The kind, which picks the status, the error type and code, and the metric reason.
    pub kind: DenyKind,
    /// What the user reads: what happened and when it resets.
    pub message: String,
    /// When to try again; sent as `Retry-After` in whole seconds (rounded up) on a 429.
    pub retry_after: Option<Duration>,
}

impl Denial {
    /// A denial without a retry-after.
    pub fn new(kind: DenyKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Sets the retry-after.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// The kind of a [`Denial`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyKind {
    /// The actor may not use this model: 403, code `model_not_allowed`, reason `model`.
    Forbidden,
    /// The actor's budget is spent: 403, code `budget_exceeded`, reason `budget`.
    Budget,
    /// The actor sends too fast: 429 with `Retry-After`, code `rate_limit_exceeded`,
    /// reason `rate_limit`.
    RateLimited,
    /// A host-defined reason, with its own status and error code.
    Other {
        /// The metric reason label (bounded by the host: keep the set small).
        reason: String,
        /// The HTTP status.
        status: http::StatusCode,
        /// The OpenAI-shape `code`.
        code: String,
    },
}

impl DenyKind {
    /// The `reason` label of `policy_denials_total`.
    pub fn reason(&self) -> &str {
        match self {
            Self::Forbidden => "model",
            Self::Budget => "budget",
            Self::RateLimited => "rate_limit",
            Self::Other { reason, .. } => reason,
        }
    }

    /// The HTTP status of the denial.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Forbidden | Self::Budget => http::StatusCode::FORBIDDEN,
            Self::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            Self::Other { status, .. } => *status,
        }
    }

    /// The OpenAI-shape error `code`.
    pub fn code(&self) -> &str {
        match self {
            Self::Forbidden => "model_not_allowed",
            Self::Budget => "budget_exceeded",
            Self::RateLimited => "rate_limit_exceeded",
            Self::Other { code, .. } => code,
        }
    }
}

/// Why a policy configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A field of the rules is invalid; the message names it.
    #[error("invalid policy field {field}: {reason}")]
    Invalid {
        /// The field, e.g. `actors."alice".models[0]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A spend source is set but the builder was called outside a Tokio runtime (the
    /// background refresh needs one).
    #[error("a spend source needs a Tokio runtime to refresh from: build the policy inside one")]
    NoRuntime,
}

impl PolicyError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
