//! The Responses adapter (also Copilot's `/responses`).

#[cfg(feature = "mcp")]
use std::sync::Arc;

#[cfg(feature = "mcp")]
use bytes::Bytes;

use super::ResponsesStream;
use crate::error::BridgeError;
use crate::intercept::adapter::Adapter;
use crate::intercept::facts::Fact;
use crate::intercept::observer::StreamObserver;
use crate::intercept::request::RequestInfo;
#[cfg(feature = "mcp")]
use crate::intercept::tool_loop::{BlockingTurn, Executed, Tools, UsageSum};

/// OpenAI Responses (openai-responses.md).
#[derive(Debug)]
pub(crate) struct Responses;

impl Adapter for Responses {
    fn parse_request(&self, body: &[u8]) -> Result<RequestInfo, BridgeError> {
        super::parse_request(body)
    }

    fn observer(&self, _info: &RequestInfo) -> Box<dyn StreamObserver> {
        Box::new(ResponsesStream::new())
    }

    fn blocking_facts(&self, body: &[u8], facts: &mut Vec<Fact>) -> Result<(), String> {
        super::blocking_facts(body, facts)
    }

    #[cfg(feature = "mcp")]
    fn injectable(&self, body: &[u8]) -> bool {
        super::mcp::injectable(body)
    }

    #[cfg(feature = "mcp")]
    fn request_body(
        &self,
        original: &[u8],
        tools: Option<&Tools>,
        turns: &[String],
    ) -> Option<Bytes> {
        super::mcp::request_body(original, tools, turns)
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
    fn final_blocking(&self, body: &Bytes, sum: Option<&UsageSum>, tools: &Tools) -> Bytes {
        super::mcp::final_blocking(body, sum, tools)
    }

    fn presents_first_id(&self) -> bool {
        true
    }

    #[cfg(feature = "mcp")]
    fn previous_response_id(&self, body: &[u8]) -> Option<String> {
        super::mcp::previous_response_id(body)
    }

    #[cfg(feature = "mcp")]
    fn continue_from(&self, body: &[u8], id: &str) -> Option<Bytes> {
        super::mcp::continue_from(body, id)
    }

    #[cfg(feature = "mcp")]
    fn present_id(&self, body: Bytes, first_id: &str) -> Bytes {
        super::mcp::present_id(&body, first_id).unwrap_or(body)
    }

    #[cfg(feature = "mcp")]
    fn keep_alive(&self) -> Bytes {
        crate::sse::comment("keep-alive")
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
