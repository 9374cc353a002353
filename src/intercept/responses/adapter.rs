//! The Responses adapter (also Copilot's `/responses`).

#[cfg(feature = "mcp")]
use std::sync::Arc;

use super::ResponsesStream;
use crate::intercept::adapter::{Adapter, module_delegates};
use crate::intercept::observer::StreamObserver;
use crate::intercept::request::RequestInfo;
#[cfg(feature = "mcp")]
use crate::intercept::tool_loop::{BlockingTurn, Executed, Tools};

/// OpenAI Responses (openai-responses.md).
#[derive(Debug)]
pub(crate) struct Responses;

impl Adapter for Responses {
    module_delegates!(super);

    fn observer(&self, _info: &RequestInfo) -> Box<dyn StreamObserver> {
        Box::new(ResponsesStream::new())
    }

    #[cfg(feature = "mcp")]
    fn injectable(&self, body: &[u8]) -> bool {
        super::mcp::injectable(body)
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
    fn blocking_turn(&self, original: &[u8], body: &[u8], tools: &Tools) -> Option<BlockingTurn> {
        super::mcp::blocking_turn(body, tools, super::mcp::store_false(original))
    }

    #[cfg(feature = "mcp")]
    fn presents_first_id(&self) -> bool {
        true
    }

    #[cfg(feature = "mcp")]
    fn previous_response_id(&self, body: &[u8]) -> Option<String> {
        super::mcp::previous_response_id(body)
    }

    #[cfg(feature = "mcp")]
    fn continue_from(&self, body: &[u8], id: &str) -> Option<bytes::Bytes> {
        super::mcp::continue_from(body, id)
    }

    #[cfg(feature = "mcp")]
    fn present_id(&self, body: bytes::Bytes, first_id: &str) -> bytes::Bytes {
        super::mcp::present_id(&body, first_id).unwrap_or(body)
    }

    #[cfg(feature = "mcp")]
    fn mcp_view(
        &self,
        _info: &RequestInfo,
        original: &[u8],
        tools: Arc<Tools>,
        max_iterations: u32,
    ) -> Box<dyn StreamObserver> {
        Box::new(super::mcp::view(original, tools, max_iterations))
    }
}
