//! The per-API stream parser's interface.

use bytes::Bytes;

use super::facts::{Fact, FrameAction, StreamStatus};
#[cfg(feature = "mcp")]
use super::tool_loop::{Decision, Turn};
use crate::sse::Frame;

/// A per-API parser of upstream SSE streams. Synchronous and free of I/O, so it can be
/// tested and fuzzed on its own.
pub(crate) trait StreamObserver: Send + Sync {
    /// Looks at one frame, appending what is worth recording. `Err` is an invalid event (a
    /// JSON decode failure of an event the bridge needs).
    fn on_frame(&mut self, frame: &Frame, facts: &mut Vec<Fact>) -> Result<FrameAction, String>;
    /// The stream ended or broke: flush what is pending (usage seen so far, open blocks).
    fn flush(&mut self, facts: &mut Vec<Fact>);
    /// How the stream stands.
    fn status(&self) -> StreamStatus;
    /// Whether content (a block, a chunk with content, an output item) was seen.
    fn content_started(&self) -> bool;
    /// Whether the API's terminal event was seen (`message_stop`, `response.completed`,
    /// `[DONE]`): nothing but the end of the stream may follow.
    fn ended(&self) -> bool {
        matches!(
            self.status(),
            StreamStatus::Completed | StreamStatus::ToolCalls
        )
    }
    /// The API's terminal error event (D7).
    fn terminal_event(&self, message: &str) -> Bytes;
    /// After status `ToolCalls`: the turn that called injected tools, and how the loop
    /// goes on ([`Decision::Execute`] or [`Decision::LastCall`]).
    #[cfg(feature = "mcp")]
    fn take_turn(&mut self) -> Option<(Turn, Decision)> {
        None
    }
    /// Prepares for upstream call `iteration` (2, 3, …) of a tool loop: the parser forgets
    /// the finished message's end.
    #[cfg(feature = "mcp")]
    fn next_iteration(&mut self, iteration: u32) {
        let _ = iteration;
    }
}
