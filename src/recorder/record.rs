//! The six record types the bridge hands to a [`Recorder`](super::Recorder).
//!
//! Every record carries its own [`RecordId`] (UUID version 7, generated once), so a retried
//! delivery re-sends the same value and an idempotent recorder never double counts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::provider::{Api, CredentialKind, ProviderKind};

/// A record id: a UUID (version 7, time ordered).
///
/// `Display` prints the 36-character lower-case hyphenated form.
///
/// ```
/// use aibridge::recorder::RecordId;
/// let id: RecordId = "0192f0c1-7a3e-7cc2-9d1e-3b8e1f0a2b4c".parse().unwrap();
/// assert_eq!(id.to_string(), "0192f0c1-7a3e-7cc2-9d1e-3b8e1f0a2b4c");
/// assert_eq!(RecordId::from_bytes(*id.as_bytes()), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId([u8; 16]);

/// The error returned when a string is not a hyphenated UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid record id")]
pub struct ParseRecordIdError(());

impl RecordId {
    /// A new time-ordered (version 7) id.
    pub(crate) fn new() -> Self {
        Self(*uuid::Uuid::now_v7().as_bytes())
    }

    /// The 16 bytes of the UUID.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The UUID as a big-endian integer.
    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Builds an id from the 16 bytes of a UUID.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

impl FromStr for RecordId {
    type Err = ParseRecordIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 36 {
            return Err(ParseRecordIdError(()));
        }
        uuid::Uuid::try_parse(s)
            .map(|u| Self(*u.as_bytes()))
            .map_err(|_| ParseRecordIdError(()))
    }
}

/// How an interception ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The final upstream call answered 2xx and the whole answer was delivered.
    Completed,
    /// The bridge finished the exchange, but not successfully.
    Failed,
    /// The client went away, or shutdown cancelled the interception.
    Cancelled,
    /// The policy refused the request before anything was sent upstream.
    Denied,
}

impl Outcome {
    /// `"completed"`, `"failed"`, `"cancelled"` or `"denied"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Denied => "denied",
        }
    }
}

/// Where a [`ModelThought`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThoughtSource {
    /// An Anthropic `thinking` block.
    Thinking,
    /// An OpenAI Responses reasoning summary.
    ReasoningSummary,
    /// An OpenAI Responses commentary message.
    Commentary,
}

impl ThoughtSource {
    /// `"thinking"`, `"reasoning_summary"` or `"commentary"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Thinking => "thinking",
            Self::ReasoningSummary => "reasoning_summary",
            Self::Commentary => "commentary",
        }
    }
}

/// The kind of a record (for metrics, logs and `MemoryRecorder::fail_next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// [`Interception`].
    Interception,
    /// [`InterceptionEnded`].
    InterceptionEnded,
    /// [`TokenUsage`].
    TokenUsage,
    /// [`PromptUsage`].
    PromptUsage,
    /// [`ToolUsage`].
    ToolUsage,
    /// [`ModelThought`].
    ModelThought,
}

impl RecordKind {
    /// The snake-case name, e.g. `"token_usage"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Interception => "interception",
            Self::InterceptionEnded => "interception_ended",
            Self::TokenUsage => "token_usage",
            Self::PromptUsage => "prompt_usage",
            Self::ToolUsage => "tool_usage",
            Self::ModelThought => "model_thought",
        }
    }
}

/// One interception: the bridge's handling of one request on a bridged route.
///
/// Recorded (awaited) before the first upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Interception {
    /// The interception id; also the `x-aibridge-interception-id` response header.
    pub id: RecordId,
    /// The [`Actor`](crate::Actor) id.
    pub initiator_id: String,
    /// The actor's metadata.
    pub metadata: BTreeMap<String, String>,
    /// The provider kind.
    pub provider: ProviderKind,
    /// The provider instance name, e.g. `copilot-business`.
    pub provider_name: String,
    /// The wire API.
    pub api: Api,
    /// The request body's `model`.
    pub model: String,
    /// The request asked for a stream (`"stream": true`).
    pub streaming: bool,
    /// The detected client label, e.g. `Claude Code`, or `Unknown`.
    pub client: String,
    /// The detected client session id.
    pub client_session_id: Option<String>,
    /// The raw `User-Agent` header.
    pub user_agent: Option<String>,
    /// Whose credential was sent upstream.
    pub credential_kind: CredentialKind,
    /// The masked credential that was sent upstream (None if none was sent).
    pub credential_hint: Option<String>,
    /// The tool call this request answers, per the API's rule.
    pub correlating_tool_call_id: Option<String>,
    /// When the bridge received the request head.
    pub started_at: SystemTime,
}

/// The end of an interception. Delivered after every other record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterceptionEnded {
    /// Same as [`Interception::id`].
    pub id: RecordId,
    /// When the interception finished.
    pub ended_at: SystemTime,
    /// How it ended.
    pub outcome: Outcome,
    /// Human-readable failure text (at most 1 KiB, never a secret); None when completed.
    pub error: Option<String>,
}

/// Token usage of one upstream message (one record per upstream call that reported usage).
///
/// `PartialEq` only (not `Eq`): [`TokenUsage::cost_usd`] is a float.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TokenUsage {
    /// The record id.
    pub id: RecordId,
    /// The owning interception.
    pub interception_id: RecordId,
    /// Anthropic message id, Chat completion id or Responses response id.
    pub provider_response_id: Option<String>,
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_input_tokens: u64,
    /// Provider-specific extras, none duplicating a main field.
    pub extra: BTreeMap<String, u64>,
    /// What these tokens cost in US dollars, from the bridge's price table; `None` when the
    /// model has no price (never `Some(0.0)` for an unknown model).
    pub cost_usd: Option<f64>,
    /// When the record was created.
    pub created_at: SystemTime,
}

/// The user's prompt of one interception (at most one per interception).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PromptUsage {
    /// The record id.
    pub id: RecordId,
    /// The owning interception.
    pub interception_id: RecordId,
    /// The first upstream message id, if any.
    pub provider_response_id: Option<String>,
    /// The prompt text (never empty).
    pub prompt: String,
    /// When the record was created.
    pub created_at: SystemTime,
}

/// One tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolUsage {
    /// The record id.
    pub id: RecordId,
    /// The owning interception.
    pub interception_id: RecordId,
    /// The upstream message that contained the call.
    pub provider_response_id: Option<String>,
    /// The client tool name, or the original MCP tool name (never `bmcp_…`).
    pub tool: String,
    /// The provider's call id (`toolu_…`, `call_…`); empty if the provider gave none.
    pub tool_call_id: String,
    /// The MCP server URL (injected tools only), without user info.
    pub server_url: Option<String>,
    /// The call arguments: always valid JSON text.
    pub input: String,
    /// Executed by the bridge (MCP).
    pub injected: bool,
    /// Executed by the upstream provider (web search and the like).
    pub provider_executed: bool,
    /// Injected tools only: why the call failed or was not executed.
    pub invocation_error: Option<String>,
    /// When the record was created.
    pub created_at: SystemTime,
}

/// A thought of the model: thinking text, reasoning summary or commentary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelThought {
    /// The record id.
    pub id: RecordId,
    /// The owning interception.
    pub interception_id: RecordId,
    /// The upstream message id.
    pub provider_response_id: Option<String>,
    /// The text (never empty).
    pub content: String,
    /// Where it came from.
    pub source: ThoughtSource,
    /// When the record was created.
    pub created_at: SystemTime,
}

/// Any record but [`Interception`], as queued for delivery.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    TokenUsage(TokenUsage),
    PromptUsage(PromptUsage),
    ToolUsage(ToolUsage),
    ModelThought(ModelThought),
    InterceptionEnded(InterceptionEnded),
}

impl Record {
    pub(crate) fn kind(&self) -> RecordKind {
        match self {
            Self::TokenUsage(_) => RecordKind::TokenUsage,
            Self::PromptUsage(_) => RecordKind::PromptUsage,
            Self::ToolUsage(_) => RecordKind::ToolUsage,
            Self::ModelThought(_) => RecordKind::ModelThought,
            Self::InterceptionEnded(_) => RecordKind::InterceptionEnded,
        }
    }

    pub(crate) fn id(&self) -> RecordId {
        match self {
            Self::TokenUsage(r) => r.id,
            Self::PromptUsage(r) => r.id,
            Self::ToolUsage(r) => r.id,
            Self::ModelThought(r) => r.id,
            Self::InterceptionEnded(r) => r.id,
        }
    }
}

/// What happened to one record (the `outcome` label of `records_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Written,
    Failed,
    Dropped,
}

impl Delivery {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_v7_and_time_ordered() {
        let a = RecordId::new();
        let b = RecordId::new();
        assert!(a < b, "v7 ids generated later sort later");
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "7", "version nibble");
        assert_eq!(s.parse::<RecordId>().unwrap(), a);
        assert_eq!(RecordId::from_bytes(*a.as_bytes()).as_u128(), a.as_u128());
    }

    #[test]
    fn record_id_rejects_non_hyphenated_forms() {
        assert!(
            "0192f0c17a3e7cc29d1e3b8e1f0a2b4c"
                .parse::<RecordId>()
                .is_err()
        );
        assert!("not-a-uuid".parse::<RecordId>().is_err());
    }

    #[test]
    fn enum_strings_match_the_schema() {
        assert_eq!(Outcome::Cancelled.as_str(), "cancelled");
        assert_eq!(Outcome::Denied.as_str(), "denied");
        assert_eq!(
            ThoughtSource::ReasoningSummary.as_str(),
            "reasoning_summary"
        );
        assert_eq!(RecordKind::InterceptionEnded.as_str(), "interception_ended");
    }
}
