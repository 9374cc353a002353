//! The API adapter: everything that differs between Anthropic Messages, OpenAI Chat
//! Completions and OpenAI Responses, behind one interface. One adapter per API
//! (`messages::Messages`, `chat_completions::ChatCompletions`, `responses::Responses`);
//! an interception chooses its adapter once, from its [`Api`](crate::provider::Api)
//! (`super::adapter_for`). Copilot is a provider, not an API: it uses the OpenAI adapters.
//!
//! The adapter is reached through a `&'static dyn Adapter`: its methods run once per
//! request or per tool-loop iteration, never per stream event (the stream parser it builds
//! handles the events).

#[cfg(feature = "mcp")]
use std::sync::Arc;

use bytes::Bytes;

use super::facts::Fact;
use super::observer::StreamObserver;
use super::request::RequestInfo;
#[cfg(feature = "mcp")]
use super::tool_loop::{
    BlockingTurn, Executed, LoopConfig, LoopState, Offer, Tools, Turn, UsageSum, tools_for_request,
};
use crate::error::BridgeError;

/// What is specific to one API.
pub(crate) trait Adapter: Send + Sync + std::fmt::Debug {
    /// Classifies a request body (routing.md steps 7–8; the API's "Request intake").
    #[allow(
        clippy::result_large_err,
        reason = "BridgeError is the engine's request error type"
    )]
    fn parse_request(&self, body: &[u8]) -> Result<RequestInfo, BridgeError>;

    /// The bytes sent upstream: the client's, with the API's targeted edits (D1), if any.
    fn upstream_body(&self, info: &RequestInfo, body: Bytes) -> Bytes {
        let _ = info;
        body
    }

    /// The stream parser for the answer to `info`'s request.
    fn observer(&self, info: &RequestInfo) -> Box<dyn StreamObserver>;

    /// Facts of a blocking response body (`Err`: it is not the API's JSON).
    fn blocking_facts(&self, body: &[u8], facts: &mut Vec<Fact>) -> Result<(), String>;

    /// Whether the request's shapes allow tool injection at all (mcp.md "When injection
    /// happens", step 3).
    #[cfg(feature = "mcp")]
    fn injectable(&self, body: &[u8]) -> bool {
        let _ = body;
        true
    }

    /// The body of one loop iteration: the client's bytes with the injected `tools` (none:
    /// the last call after the bound) and the appended `turns`, without the
    /// [`upstream_body`](Self::upstream_body) edits. `None`: the body cannot be edited.
    #[cfg(feature = "mcp")]
    fn request_body(
        &self,
        original: &[u8],
        tools: Option<&Tools>,
        turns: &[String],
    ) -> Option<Bytes>;

    /// The turn(s) that answer executed (or refused, with `note`) calls.
    #[cfg(feature = "mcp")]
    fn results_turns(
        &self,
        results: &[Executed],
        max_bytes: usize,
        note: Option<&str>,
    ) -> Vec<String>;

    /// What a blocking response `body` to the request `original` asks of the loop.
    #[cfg(feature = "mcp")]
    fn blocking_turn(&self, original: &[u8], body: &[u8], tools: &Tools) -> Option<BlockingTurn>;

    /// The blocking body the client gets at the end of a loop (S19): injected calls hidden,
    /// usage summed over the iterations when `sum` is given.
    #[cfg(feature = "mcp")]
    fn final_blocking(&self, body: &Bytes, sum: Option<&UsageSum>, tools: &Tools) -> Bytes;

    /// Whether a tool loop shows the client its first upstream response id, which later
    /// requests may name (S20: Responses).
    fn presents_first_id(&self) -> bool {
        false
    }

    /// The response id a request continues from (`previous_response_id`), if any.
    #[cfg(feature = "mcp")]
    fn previous_response_id(&self, body: &[u8]) -> Option<String> {
        let _ = body;
        None
    }

    /// The request `body` continuing from `id` instead (S20), if it can be edited.
    #[cfg(feature = "mcp")]
    fn continue_from(&self, body: &[u8], id: &str) -> Option<Bytes> {
        let _ = (body, id);
        None
    }

    /// The final blocking body of a loop, with the response id the client is shown: the
    /// first upstream response's (S20; Responses only, the other APIs keep the body).
    #[cfg(feature = "mcp")]
    fn present_id(&self, body: Bytes, first_id: &str) -> Bytes {
        let _ = first_id;
        body
    }

    /// What a streaming client gets while tools run (D11): an SSE comment unless the API
    /// has its own keep-alive event.
    #[cfg(feature = "mcp")]
    fn keep_alive(&self) -> Bytes {
        crate::sse::comment("keep-alive")
    }

    /// The stream parser of a tool loop: the plain parser wrapped in the API's view.
    #[cfg(feature = "mcp")]
    fn mcp_view(
        &self,
        info: &RequestInfo,
        original: &[u8],
        tools: Arc<Tools>,
        max_iterations: u32,
    ) -> Box<dyn StreamObserver>;

    /// Starts the loop with the actor's `offer` (the caller checked the skip predicate and
    /// [`injectable`](Self::injectable)): the loop's state and the first upstream body, or
    /// `None` (no MCP edit at all).
    #[cfg(feature = "mcp")]
    fn start_loop(
        &self,
        offer: Offer,
        config: LoopConfig,
        info: &RequestInfo,
        body: &Bytes,
        filter: Option<&crate::policy::ToolFilter>,
    ) -> Option<(LoopState, Bytes)> {
        let tools = tools_for_request(body, &offer.tools, filter);
        if tools.0.is_empty() {
            return None;
        }
        let lp = LoopState::new(
            Arc::new(tools),
            offer.executor,
            config,
            body.clone(),
            info.clone(),
        );
        let first = self.loop_body(&lp, true)?;
        Some((lp, first))
    }

    /// Appends `turn` and the `results` of its calls to the loop's conversation and
    /// returns the next upstream body; `last_call`: the calls were answered by the limit
    /// procedure and the body carries no injected tools (D12).
    #[cfg(feature = "mcp")]
    fn advance(
        &self,
        lp: &mut LoopState,
        turn: Turn,
        results: &[Executed],
        last_call: bool,
    ) -> Option<Bytes> {
        let note = last_call.then(|| lp.limit_result());
        let results = self.results_turns(results, lp.config.max_result_bytes, note.as_deref());
        lp.append(turn.assistant, results);
        self.loop_body(lp, !last_call)
    }

    /// The upstream body of the loop's current iteration.
    #[cfg(feature = "mcp")]
    fn loop_body(&self, lp: &LoopState, with_tools: bool) -> Option<Bytes> {
        let tools = with_tools.then_some(&*lp.tools);
        let body = self.request_body(lp.original(), tools, lp.turns())?;
        Some(self.upstream_body(lp.info(), body))
    }
}

/// The [`Adapter`] methods that every API implements the same way: by calling the function
/// of the same name in its own module (`parse_request`, `blocking_facts`) and in its `mcp`
/// module (`request_body`, `final_blocking`). Expanded inside each `impl Adapter` as
/// `module_delegates!(super)`, `super` being that API's module.
macro_rules! module_delegates {
    ($api:ident) => {
        fn parse_request(
            &self,
            body: &[u8],
        ) -> Result<crate::intercept::request::RequestInfo, crate::error::BridgeError> {
            $api::parse_request(body)
        }

        fn blocking_facts(
            &self,
            body: &[u8],
            facts: &mut Vec<crate::intercept::facts::Fact>,
        ) -> Result<(), String> {
            $api::blocking_facts(body, facts)
        }

        #[cfg(feature = "mcp")]
        fn request_body(
            &self,
            original: &[u8],
            tools: Option<&crate::intercept::tool_loop::Tools>,
            turns: &[String],
        ) -> Option<bytes::Bytes> {
            $api::mcp::request_body(original, tools, turns)
        }

        #[cfg(feature = "mcp")]
        fn final_blocking(
            &self,
            body: &bytes::Bytes,
            sum: Option<&crate::intercept::tool_loop::UsageSum>,
            tools: &crate::intercept::tool_loop::Tools,
        ) -> bytes::Bytes {
            $api::mcp::final_blocking(body, sum, tools)
        }
    };
}
pub(crate) use module_delegates;
