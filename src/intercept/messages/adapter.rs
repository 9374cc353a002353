//! The Messages adapter.

#[cfg(feature = "mcp")]
use std::sync::Arc;

#[cfg(feature = "mcp")]
use bytes::Bytes;

use super::MessagesStream;
use crate::intercept::adapter::{Adapter, module_delegates};
use crate::intercept::observer::StreamObserver;
use crate::intercept::request::RequestInfo;
#[cfg(feature = "mcp")]
use crate::intercept::tool_loop::{BlockingTurn, Executed, Tools};

/// Anthropic Messages (anthropic.md).
#[derive(Debug)]
pub(crate) struct Messages;

impl Adapter for Messages {
    module_delegates!(super);

    fn observer(&self, _info: &RequestInfo) -> Box<dyn StreamObserver> {
        Box::new(MessagesStream::new())
    }

    #[cfg(feature = "mcp")]
    fn results_turns(
        &self,
        results: &[Executed],
        max_bytes: usize,
        note: Option<&str>,
    ) -> Vec<String> {
        vec![super::mcp::tool_results_turn(results, max_bytes, note)]
    }

    #[cfg(feature = "mcp")]
    fn blocking_turn(&self, _original: &[u8], body: &[u8], tools: &Tools) -> Option<BlockingTurn> {
        super::mcp::blocking_turn(body, tools)
    }

    #[cfg(feature = "mcp")]
    fn keep_alive(&self) -> Bytes {
        Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
    }

    #[cfg(feature = "mcp")]
    fn mcp_view(
        &self,
        _info: &RequestInfo,
        _original: &[u8],
        tools: Arc<Tools>,
        max_iterations: u32,
    ) -> Box<dyn StreamObserver> {
        Box::new(super::mcp::view(tools, max_iterations))
    }
}
