//! The pure step of the streaming relay: the SSE decoder's next frame through the stream
//! parser, to the bytes the client gets. Synchronous and free of I/O; the relay runs it
//! between its reads and sends, and the property tests, fuzz targets and benchmarks run
//! exactly the same step (`harness`, `bench_support`).

use bytes::Bytes;

use super::facts::{Fact, FrameAction, StreamStatus};
use super::observer::StreamObserver;
use crate::sse::{Decoder, Frame};

/// What one frame gave after the parser saw it.
#[derive(Debug)]
pub(crate) struct Stepped {
    /// The bytes to relay for it (`None`: the parser dropped it).
    pub(crate) out: Option<Bytes>,
    /// The frame, when it turned an open stream into an upstream error (the relay
    /// classifies that error; at most once per stream, so boxed to keep the step small).
    pub(crate) error: Option<Box<Frame>>,
}

/// `frame` through `observer`, appending what is worth recording to `facts`. `Err` is an
/// invalid event: the relay stops with this reason.
#[inline(always)]
pub(crate) fn step(
    observer: &mut dyn StreamObserver,
    frame: Frame,
    facts: &mut Vec<Fact>,
) -> Result<Stepped, String> {
    let was_open = observer.status() == StreamStatus::Open;
    let action = observer
        .on_frame(&frame, facts)
        .map_err(|d| format!("invalid event: {d}"))?;
    let error = (was_open && matches!(observer.status(), StreamStatus::UpstreamError(_)))
        .then(|| Box::new(frame.clone()));
    let out = match action {
        FrameAction::Relay => Some(frame.into_raw()),
        FrameAction::Replace(bytes) => Some(bytes),
        FrameAction::Drop => None,
    };
    Ok(Stepped { out, error })
}

/// The decoder's next complete frame through `observer` (see [`step`]); `Ok(None)` when
/// the decoder needs more bytes. `Err` is an invalid or oversized event: the relay stops
/// with this reason.
#[inline(always)]
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
