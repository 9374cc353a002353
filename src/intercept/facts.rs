//! What the per-API parsers extract from upstream answers, before it becomes records.

use std::collections::BTreeMap;

use crate::recorder::ThoughtSource;

/// Token counts of one upstream message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) cache_read: u64,
    pub(crate) cache_write: u64,
    pub(crate) extra: BTreeMap<String, u64>,
}

/// One thing worth recording, found in an upstream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fact {
    /// The upstream message id became known.
    ResponseId(String),
    /// The final usage of one upstream message.
    Usage {
        response_id: Option<String>,
        usage: Usage,
    },
    /// A tool call the model made (client or provider-executed).
    Tool {
        response_id: Option<String>,
        name: String,
        call_id: String,
        input: String,
        provider_executed: bool,
    },
    /// A thought of the model.
    Thought {
        response_id: Option<String>,
        content: String,
        source: ThoughtSource,
    },
    /// A call of an injected (MCP) tool: executed by the bridge, or not executed and why.
    #[cfg_attr(
        not(feature = "mcp"),
        expect(dead_code, reason = "made by the MCP tool loop only")
    )]
    InjectedTool {
        response_id: Option<String>,
        /// The original MCP tool name.
        name: String,
        call_id: String,
        server_url: String,
        input: String,
        error: Option<String>,
        /// Whether the bridge executed it (counted in `injected_tool_invocations_total`).
        executed: bool,
    },
}

/// How a stream stands, as far as the parser can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamStatus {
    /// Still expecting events.
    Open,
    /// The API's normal terminal event was seen.
    Completed,
    /// The upstream message ended by calling injected tools: the tool loop continues
    /// (nothing of the message's end was relayed).
    ToolCalls,
    /// The upstream sent an in-band error (already provider-shaped; relayed verbatim).
    UpstreamError(String),
}

/// What to do with a frame after observing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameAction {
    /// Relay the frame's bytes unchanged.
    Relay,
    /// Do not relay it (the client did not ask for it, or it belongs to a hidden
    /// injected tool call).
    Drop,
    /// Relay these bytes instead (a re-encoded event: renumbered, summed usage).
    #[cfg_attr(
        not(feature = "mcp"),
        expect(dead_code, reason = "made by the MCP views only")
    )]
    Replace(bytes::Bytes),
}

/// Text that is valid JSON: the input itself, else the input as a JSON string.
pub(crate) fn json_text(raw: &str) -> String {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return "{}".to_owned();
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok() {
        trimmed.to_owned()
    } else {
        serde_json::to_string(raw).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// For a stream that broke: the input if it is valid JSON, else `{}`.
pub(crate) fn json_or_empty(raw: &str) -> String {
    let trimmed = raw.trim();
    if !trimmed.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok() {
        trimmed.to_owned()
    } else {
        "{}".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_always_yields_valid_json() {
        assert_eq!(json_text(""), "{}");
        assert_eq!(json_text("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(json_text("{\"a\":"), "\"{\\\"a\\\":\"");
        assert_eq!(json_or_empty("{\"a\":"), "{}");
    }
}
