//! Test support for the decoder: a naive whole-input reference decoder, and drivers that
//! decode an input under a given chunking and check every invariant against it.

use std::{borrow::Cow, ops::Range};

use bytes::Bytes;
use serde_json::Value;

use crate::sse::decode::DecodeError;
use crate::sse::{Decoder, Frame};

/// The bridge's maximum event size.
pub(super) const MAX: usize = 16 << 20;
/// The UTF-8 byte order mark.
pub(super) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What one frame means: its event type and joined data.
pub(super) type Event = (Option<String>, Option<Vec<u8>>);

/// What the naive reference decoder makes of a whole input.
#[derive(Debug)]
pub(super) struct Reference {
    /// Each frame's byte range in the input and its meaning.
    pub(super) frames: Vec<(Range<usize>, Event)>,
    /// The bytes after the last complete frame.
    pub(super) tail: Range<usize>,
}

/// A deliberately simple decoder of a whole input, written from the SSE standard: byte loops,
/// no memchr, no incremental state. A CR at the very end is a complete line terminator.
pub(super) fn reference(input: &[u8]) -> Reference {
    let mut frames = Vec::new();
    let mut frame_start = 0;
    let mut pos = if input.starts_with(BOM) { BOM.len() } else { 0 };
    let mut event_type: Option<Vec<u8>> = None;
    let mut data: Option<Vec<u8>> = None;
    while let Some(len) = input[pos..].iter().position(|&b| b == b'\n' || b == b'\r') {
        let line = &input[pos..pos + len];
        pos += len + 1;
        if input[pos - 1] == b'\r' && input.get(pos) == Some(&b'\n') {
            pos += 1;
        }
        if line.is_empty() {
            let event_type = event_type.take().filter(|t| !t.is_empty());
            let event_type = event_type.and_then(|t| String::from_utf8(t).ok());
            frames.push((frame_start..pos, (event_type, data.take())));
            frame_start = pos;
        } else if line[0] != b':' {
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match (name, &mut data) {
                (b"event", _) => event_type = Some(value.to_vec()),
                (b"data", Some(data)) => {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                (b"data", None) => data = Some(value.to_vec()),
                _ => {}
            }
        }
    }
    Reference {
        frames,
        tail: frame_start..input.len(),
    }
}

/// The meaning of a decoded frame.
pub(super) fn event_of(frame: &Frame) -> Event {
    (
        frame.event_type().map(str::to_owned),
        frame.data().map(Cow::into_owned),
    )
}

/// Pushes `chunks` one by one, draining frames after each push and again after `finish`.
/// Returns the frames and then the `finish` remainder, or the first error.
pub(super) fn run(
    chunks: &[Bytes],
    max: usize,
) -> (Vec<Frame>, Result<Option<Bytes>, DecodeError>) {
    fn drain(decoder: &mut Decoder, frames: &mut Vec<Frame>) -> Result<(), DecodeError> {
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
        Ok(())
    }
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk.clone());
        if let Err(err) = drain(&mut decoder, &mut frames) {
            return (frames, Err(err));
        }
    }
    let tail = decoder.finish();
    assert_eq!(decoder.buffered(), 0, "finish takes every buffered byte");
    if let Err(err) = drain(&mut decoder, &mut frames) {
        return (frames, Err(err));
    }
    (frames, Ok(tail))
}

/// Zero-copy slices of `input` cut at the (sorted, deduplicated) offsets `cuts`.
pub(super) fn split(input: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < input.len()));
    bounds.push(input.len());
    bounds.sort_unstable();
    bounds.dedup();
    bounds.windows(2).map(|w| input.slice(w[0]..w[1])).collect()
}

/// Decodes `input` cut at `cuts` and checks it against `expected`: the same frames (raw
/// bytes and meaning) and tail; raws plus tail concatenate to the input; and a frame lying
/// wholly inside one chunk points into that chunk (it was not copied).
pub(super) fn check(input: &Bytes, cuts: &[usize], expected: &Reference) -> Vec<Frame> {
    let chunks = split(input, cuts);
    let (frames, tail) = run(&chunks, MAX);
    let tail = tail.expect("no event is too large");
    let mut joined = Vec::with_capacity(input.len());
    for frame in &frames {
        joined.extend_from_slice(frame.raw());
    }
    joined.extend_from_slice(tail.as_deref().unwrap_or_default());
    assert_eq!(joined, input[..], "concatenation, cuts {cuts:?}");
    assert_eq!(
        frames.len(),
        expected.frames.len(),
        "frame count, cuts {cuts:?}"
    );
    let mut chunk_ends = chunks.iter().scan(0, |end, chunk| {
        *end += chunk.len();
        Some(*end)
    });
    let mut chunk_end = chunk_ends.next().unwrap_or(0);
    let mut chunk_start = 0;
    for (frame, (range, event)) in frames.iter().zip(&expected.frames) {
        assert_eq!(frame.raw()[..], input[range.clone()], "raw, cuts {cuts:?}");
        assert_eq!(&event_of(frame), event, "event, cuts {cuts:?}");
        while range.start >= chunk_end {
            chunk_start = chunk_end;
            chunk_end = chunk_ends.next().expect("frame inside the input");
        }
        if range.end <= chunk_end {
            let at = input.as_ptr() as usize + range.start;
            assert_eq!(
                frame.raw().as_ptr() as usize,
                at,
                "frame {range:?} inside chunk {chunk_start}..{chunk_end} was copied, cuts {cuts:?}"
            );
        }
    }
    let tail = tail.map(|t| t.to_vec()).unwrap_or_default();
    assert_eq!(tail, input[expected.tail.clone()], "tail, cuts {cuts:?}");
    frames
}

/// Checks `input` whole, cut at every byte boundary, and one byte per chunk.
pub(super) fn check_every_split(input: &[u8]) -> Vec<Frame> {
    let input = Bytes::copy_from_slice(input);
    let expected = reference(&input);
    for cut in 1..input.len() {
        check(&input, &[cut], &expected);
    }
    let every: Vec<usize> = (1..input.len()).collect();
    check(&input, &every, &expected);
    check(&input, &[], &expected)
}

/// Checks `input` cut at every pair of byte boundaries.
pub(super) fn check_every_pair(input: &[u8]) {
    let input = Bytes::copy_from_slice(input);
    let expected = reference(&input);
    for a in 1..input.len() {
        for b in a + 1..input.len() {
            check(&input, &[a, b], &expected);
        }
    }
}

/// `input` with every LF replaced by `terminator`.
pub(super) fn with_terminator(input: &[u8], terminator: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    for &byte in input {
        match byte {
            b'\n' => out.extend_from_slice(terminator),
            _ => out.push(byte),
        }
    }
    out
}

/// `input` with its LFs replaced by LF, CR and CRLF in turn (in that order, so that no CR
/// is followed by an LF and the lines stay the same).
pub(super) fn with_mixed_terminators(input: &[u8]) -> Vec<u8> {
    let terminators: [&[u8]; 3] = [b"\n", b"\r", b"\r\n"];
    let mut out = Vec::with_capacity(input.len() * 2);
    for (index, line) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        match line.strip_suffix(b"\n") {
            Some(line) => out.extend_from_slice(&[line, terminators[index % 3]].concat()),
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// Decodes a whole input in one chunk; returns the frames' raws, meanings and the tail.
pub(super) fn decode_whole(input: &'static [u8]) -> (Vec<Bytes>, Vec<Event>, Option<Bytes>) {
    let (frames, tail) = run(&[Bytes::from_static(input)], MAX);
    let events = frames.iter().map(event_of).collect();
    let raws = frames.into_iter().map(Frame::into_raw).collect();
    (raws, events, tail.unwrap())
}

pub(super) fn json(frame: &Frame) -> Value {
    serde_json::from_slice(&frame.data().expect("a data line")).expect("JSON data")
}
