//! The per-API stream parser's interface.

use bytes::Bytes;

use super::facts::{Fact, FrameAction, StreamStatus};
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
    /// The API's terminal error event (D7).
    fn terminal_event(&self, message: &str) -> Bytes;
    /// After status `ToolCalls`: the turn that called injected tools.
    #[cfg(feature = "mcp")]
    fn take_turn(&mut self) -> Option<super::tool_loop::Turn> {
        None
    }
    /// Prepares for the next upstream call of a tool loop (`last` = without injected tools).
    #[cfg(feature = "mcp")]
    fn next_iteration(&mut self, last: bool) {
        let _ = last;
    }
}
