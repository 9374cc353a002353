//! The streaming view of a tool loop (D11), one skeleton for the three APIs: it wraps the
//! API's plain stream parser (records, status), keeps injected calls out of the client
//! records, owns the tools, the iteration, the usage sum and the continue-or-finish
//! decision, and leaves the API only its event rewriting ([`Rewrite`]).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Decision, Ending, NotExecuted, ToolCall, Tools, Turn, UsageSum, decide};
use crate::intercept::facts::{Fact, FrameAction, StreamStatus};
use crate::intercept::observer::StreamObserver;
use crate::sse::Frame;

/// The event rewriting of one API under the tool loop.
pub(crate) trait Rewrite: Send + Sync {
    /// The API's plain stream parser, which the view wraps.
    type Inner: StreamObserver;

    /// Rewrites a frame the plain parser has seen (and would have handled with `inner`):
    /// hides injected calls, renumbers what the client sees, hides the ends of iterations
    /// that continue (deciding through `lp` when a message ends), sums usage.
    fn on_frame(
        &mut self,
        lp: &mut ViewLoop,
        frame: &Frame,
        inner: FrameAction,
        facts: &mut Vec<Fact>,
    ) -> Result<FrameAction, String>;

    /// The stream ended or broke (after the plain parser's flush).
    fn flush(&mut self, lp: &mut ViewLoop, facts: &mut Vec<Fact>) {
        let _ = (lp, facts);
    }

    /// The turn of the message that ended calling injected tools.
    fn take_turn(&mut self) -> Turn;

    /// Forgets the finished message: the loop calls the upstream again.
    fn next_message(&mut self);
}

/// The loop's side of a streaming view, shared with the API's [`Rewrite`].
#[derive(Debug)]
pub(crate) struct ViewLoop {
    tools: Arc<Tools>,
    max_iterations: u32,
    iteration: u32,
    /// Usage of the finished iterations.
    sum: UsageSum,
    /// The usage object of the current message, as the API merges it.
    pub(crate) usage: Map<String, Value>,
    /// The latest decision about the current message.
    decision: Option<Decision>,
    /// The last decision of the current message that continued the loop.
    continuing: Option<Decision>,
    /// Set once the current message ended calling injected tools.
    calls_tools: bool,
}

impl ViewLoop {
    fn new(tools: Arc<Tools>, max_iterations: u32) -> Self {
        Self {
            tools,
            max_iterations,
            iteration: 1,
            sum: UsageSum::default(),
            usage: Map::new(),
            decision: None,
            continuing: None,
            calls_tools: false,
        }
    }

    /// The injected tools.
    pub(crate) fn tools(&self) -> &Tools {
        &self.tools
    }

    /// Whether this is the first upstream call (the client sees its start).
    pub(crate) fn first(&self) -> bool {
        self.iteration == 1
    }

    /// Decides about the current message as it ends (see [`decide`]) and remembers it.
    pub(crate) fn decide(&mut self, ending: Ending) -> Decision {
        let d = decide(self.iteration, self.max_iterations, ending);
        self.decision = Some(d);
        if d.continues() {
            self.continuing = Some(d);
        }
        d
    }

    /// Whether the latest decision continues the loop.
    pub(crate) fn continues(&self) -> bool {
        self.decision.is_some_and(Decision::continues)
    }

    /// The current message ended calling injected tools: the stream's status is
    /// `ToolCalls` from now on.
    pub(crate) fn set_calls_tools(&mut self) {
        self.calls_tools = true;
    }

    /// Whether the current message ended calling injected tools.
    pub(crate) fn calls_tools(&self) -> bool {
        self.calls_tools
    }

    /// The usage the client gets at the end: summed over the iterations, from the second
    /// one on (`None` in the first: the upstream's own usage stands).
    pub(crate) fn summed(&self) -> Option<Map<String, Value>> {
        (self.iteration > 1).then(|| {
            let mut sum = self.sum.clone();
            sum.add(&self.usage);
            sum.0
        })
    }

    /// Records the calls of a message that finished as not executed, for `reason`.
    pub(crate) fn not_executed(
        &self,
        response_id: Option<String>,
        calls: Vec<ToolCall>,
        reason: NotExecuted,
        facts: &mut Vec<Fact>,
    ) {
        let turn = Turn {
            response_id,
            assistant: Vec::new(),
            calls,
        };
        super::not_executed(&self.tools, &turn, reason, facts);
    }

    /// The status merged with the plain parser's: an upstream error wins, then a message
    /// that calls tools.
    fn status(&self, inner: StreamStatus) -> StreamStatus {
        match inner {
            StreamStatus::UpstreamError(e) => StreamStatus::UpstreamError(e),
            _ if self.calls_tools => StreamStatus::ToolCalls,
            StreamStatus::Completed if self.continues() => StreamStatus::ToolCalls,
            s => s,
        }
    }

    /// Moves on to upstream call `iteration`.
    fn next(&mut self, iteration: u32) {
        let usage = std::mem::take(&mut self.usage);
        self.sum.add(&usage);
        self.iteration = iteration;
        self.decision = None;
        self.continuing = None;
        self.calls_tools = false;
    }
}

/// The streaming view of a tool loop for the API of `R`.
#[derive(Debug)]
pub(crate) struct McpView<R: Rewrite> {
    inner: R::Inner,
    rewrite: R,
    lp: ViewLoop,
}

impl<R: Rewrite> McpView<R> {
    /// A view over `inner` with `tools` injected, bounded by `max_iterations`.
    pub(crate) fn new(inner: R::Inner, rewrite: R, tools: Arc<Tools>, max_iterations: u32) -> Self {
        Self {
            inner,
            rewrite,
            lp: ViewLoop::new(tools, max_iterations),
        }
    }
}

impl<R: Rewrite> StreamObserver for McpView<R> {
    fn on_frame(&mut self, frame: &Frame, facts: &mut Vec<Fact>) -> Result<FrameAction, String> {
        let before = facts.len();
        let inner = self.inner.on_frame(frame, facts)?;
        super::drop_injected(facts, before, &self.lp.tools);
        self.rewrite.on_frame(&mut self.lp, frame, inner, facts)
    }

    fn flush(&mut self, facts: &mut Vec<Fact>) {
        let before = facts.len();
        self.inner.flush(facts);
        super::drop_injected(facts, before, &self.lp.tools);
        self.rewrite.flush(&mut self.lp, facts);
    }

    fn status(&self) -> StreamStatus {
        self.lp.status(self.inner.status())
    }

    fn content_started(&self) -> bool {
        self.inner.content_started()
    }

    /// The upstream message's own terminal event, whatever the loop makes of it.
    fn ended(&self) -> bool {
        self.inner.ended()
    }

    fn terminal_event(&self, message: &str) -> Bytes {
        self.inner.terminal_event(message)
    }

    fn error_event(&self, error: &crate::intercept::UpstreamError) -> Bytes {
        self.inner.error_event(error)
    }

    fn take_turn(&mut self) -> Option<(Turn, Decision)> {
        let decision = self.lp.continuing?;
        Some((self.rewrite.take_turn(), decision))
    }

    fn next_iteration(&mut self, iteration: u32) {
        self.rewrite.next_message();
        self.lp.next(iteration);
        self.inner.next_iteration(iteration);
    }
}
