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
    /// No AI provider: the bridge's own MCP endpoint for editors (records of tool calls
    /// made through it carry this kind and [`Api::Mcp`]). No [`Provider`](super::Provider)
    /// of the crate has this kind.
    Mcp,
}

impl ProviderKind {
    /// `"anthropic"`, `"openai"`, `"copilot"` or `"mcp"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::Copilot => "copilot",
            Self::Mcp => "mcp",
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
    /// A `tools/call` through the bridge's MCP endpoint for editors (feature `mcp-server`).
    Mcp,
}

impl Api {
    /// `"messages"`, `"chat_completions"`, `"responses"` or `"mcp"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Mcp => "mcp",
        }
    }
}
