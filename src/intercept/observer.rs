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

    /// The API's terminal error event carrying an upstream's own error (a later tool-loop
    /// call answered an error status after bytes were relayed): its type or code and its
    /// message, in the API's shape.
    #[cfg(feature = "mcp")]
    fn error_event(&self, error: &UpstreamError) -> Bytes;
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

/// An upstream's error answer, as a later tool-loop call got it: what the client's terminal
/// event carries (the error object's `type`, `code` and `message`) and the record's text.
#[cfg(feature = "mcp")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamError {
    /// `error.type`.
    pub(crate) kind: Option<String>,
    /// `error.code` (OpenAI), as text.
    pub(crate) code: Option<String>,
    /// `error.message`, or the record's text when the body has none.
    pub(crate) message: String,
    /// The end record's text (`upstream returned {status}: …`).
    pub(crate) text: String,
}

#[cfg(feature = "mcp")]
impl UpstreamError {
    /// Reads the error object of an error `body`; `text` is the end record's text.
    pub(crate) fn parse(body: &[u8], text: String) -> Self {
        let (kind, code, message) = match crate::error::UpstreamErrorObject::parse(body) {
            Some(e) => (e.kind, e.code, e.message),
            None => (None, None, None),
        };
        Self {
            kind,
            code,
            message: message.unwrap_or_else(|| text.clone()),
            text,
        }
    }
}

#[cfg(all(test, feature = "mcp"))]
mod tests {
    use super::UpstreamError;

    #[test]
    fn upstream_errors_keep_type_code_and_message() {
        let e = UpstreamError::parse(
            br#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
            "upstream returned 400".into(),
        );
        assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(e.message, "too long");
        let e = UpstreamError::parse(b"<html>bad gateway</html>", "upstream returned 502".into());
        assert_eq!((e.kind, e.code), (None, None));
        assert_eq!(e.message, "upstream returned 502");
    }
}
