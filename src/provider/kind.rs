//! What kind of upstream a provider is, and which wire protocol a bridged route speaks.

/// The wire protocol family of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderKind {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Chat Completions and Responses.
    OpenAi,
    /// GitHub Copilot (OpenAI wire formats, client tokens only).
    Copilot,
}

impl ProviderKind {
    /// `"anthropic"`, `"openai"` or `"copilot"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::Copilot => "copilot",
        }
    }
}

/// The wire protocol of a bridged route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// Anthropic Messages.
    Messages,
    /// OpenAI Chat Completions.
    ChatCompletions,
    /// OpenAI Responses.
    Responses,
}

impl Api {
    /// `"messages"`, `"chat_completions"` or `"responses"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
        }
    }
}
