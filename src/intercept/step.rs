//! The pure step of the streaming relay: the SSE decoder's next frame through the stream
//! parser, to the bytes the client gets. Synchronous and free of I/O; the relay runs it
//! between its reads and sends, and the property tests, fuzz targets and benchmarks run
//! exactly the same step (`harness`, `bench_support`).

use bytes::Bytes;

use super::facts::{Fact, FrameAction, StreamStatus};
use super::observer::StreamObserver;
use crate::sse::{Decoder, Frame};

/// One frame after the parser has seen it.
#[derive(Debug)]
pub(crate) struct Stepped {
    /// The frame as received.
    pub(crate) frame: Frame,
    /// What the parser decided to do with it.
    pub(crate) action: FrameAction,
    /// The stream was open before this frame (so an error status is this frame's doing).
    pub(crate) was_open: bool,
}

impl Stepped {
    /// The bytes to relay for the frame, if any.
    pub(crate) fn into_bytes(self) -> Option<Bytes> {
        match self.action {
            FrameAction::Relay => Some(self.frame.into_raw()),
            FrameAction::Replace(bytes) => Some(bytes),
            FrameAction::Drop => None,
        }
    }
}

/// `frame` through `observer`, appending what is worth recording to `facts`. `Err` is an
/// invalid event: the relay stops with this reason.
pub(crate) fn step(
    observer: &mut dyn StreamObserver,
    frame: Frame,
    facts: &mut Vec<Fact>,
) -> Result<Stepped, String> {
    let was_open = observer.status() == StreamStatus::Open;
    let action = observer
        .on_frame(&frame, facts)
        .map_err(|d| format!("invalid event: {d}"))?;
    Ok(Stepped {
        frame,
        action,
        was_open,
    })
}

/// The decoder's next complete frame through `observer` (see [`step`]); `Ok(None)` when
/// the decoder needs more bytes. `Err` is an invalid or oversized event: the relay stops
/// with this reason.
pub(crate) fn next(
    decoder: &mut Decoder,
    observer: &mut dyn StreamObserver,
    facts: &mut Vec<Fact>,
) -> Result<Option<Stepped>, String> {
    match decoder.next_frame() {
        Err(e) => Err(format!("invalid event: {e}")),
        Ok(None) => Ok(None),
        Ok(Some(frame)) => step(observer, frame, facts).map(Some),
    }
}
