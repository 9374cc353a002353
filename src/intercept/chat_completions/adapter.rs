//! The Chat Completions adapter (also Copilot's `/chat/completions`).

#[cfg(feature = "mcp")]
use std::sync::Arc;

use bytes::Bytes;

use super::ChatStream;
use crate::intercept::adapter::{Adapter, module_delegates};
use crate::intercept::observer::StreamObserver;
use crate::intercept::request::RequestInfo;
#[cfg(feature = "mcp")]
use crate::intercept::tool_loop::{BlockingTurn, Executed, Tools};

/// OpenAI Chat Completions (openai-chat.md).
#[derive(Debug)]
pub(crate) struct ChatCompletions;

impl Adapter for ChatCompletions {
    module_delegates!(super);

    fn upstream_body(&self, info: &RequestInfo, body: Bytes) -> Bytes {
        super::upstream_body(info, body)
    }

    fn observer(&self, info: &RequestInfo) -> Box<dyn StreamObserver> {
        Box::new(ChatStream::new(info))
    }

    #[cfg(feature = "mcp")]
    fn results_turns(
        &self,
        results: &[Executed],
        max_bytes: usize,
        note: Option<&str>,
    ) -> Vec<String> {
        super::mcp::tool_results_turns(results, max_bytes, note)
    }

    #[cfg(feature = "mcp")]
    fn blocking_turn(&self, _original: &[u8], body: &[u8], tools: &Tools) -> Option<BlockingTurn> {
        super::mcp::blocking_turn(body, tools)
    }

    #[cfg(feature = "mcp")]
    fn mcp_view(
        &self,
        info: &RequestInfo,
        _original: &[u8],
        tools: Arc<Tools>,
        max_iterations: u32,
    ) -> Box<dyn StreamObserver> {
        Box::new(super::mcp::view(info, tools, max_iterations))
    }
}
