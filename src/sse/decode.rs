//! Incremental, zero-copy decoding of a `text/event-stream` into raw frames.
//!
//! The bridge relays upstream bytes to the client unchanged, so the decoder does not hand out
//! parsed events but [`Frame`]s: the exact input bytes of one event, from the end of the
//! previous frame through the blank line that ends this one, with cheap accessors for the
//! `event:` type and the `data:` payload. Concatenating every frame and then the remainder
//! returned by [`Decoder::finish`] gives back the input byte for byte, however it was chunked.
//!
//! Parsing follows the SSE standard (WHATWG HTML, "Server-sent events"): lines end with LF,
//! CRLF or a bare CR; a UTF-8 BOM at the very start of the stream is ignored; lines starting
//! with `:` are comments; one space after the field's colon is dropped; `data:` lines join
//! with `\n`; a blank line ends the event.
//!
//! This file depends only on `std`, `bytes`, `memchr` and `thiserror`: `benches/sse.rs`
//! includes it with `#[path]`, because a bench cannot reach `pub(crate)` items.

use std::{borrow::Cow, collections::VecDeque, fmt};

use bytes::{Bytes, BytesMut};
use memchr::{memchr, memchr2};

/// The UTF-8 byte order mark, ignored at the very start of a stream.
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// An incremental SSE decoder yielding raw [`Frame`]s.
///
/// Feed upstream chunks with [`push`](Self::push) and take complete frames with
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. A frame that lies wholly
/// inside one pushed chunk is a [`Bytes::slice`]-style view of that chunk (no copy); only
/// frames spanning chunks are assembled by copying.
///
/// At the end of the input, call [`finish`](Self::finish) once and then drain `next_frame`
/// again: if the input ended with a bare CR that ends a blank line, only EOF could tell that
/// no LF belongs to it, so that last frame comes out after `finish`. Frames taken after
/// `finish` come before the remainder it returned:
///
/// ```text
/// let tail = decoder.finish();
/// while let Some(frame) = decoder.next_frame()? { relay(frame.into_raw()) }
/// if let Some(tail) = tail { relay(tail) } // truncated event: relayed, never dispatched
/// ```
pub(crate) struct Decoder {
    /// Largest allowed frame, in bytes.
    max_event_size: usize,
    /// Pushed chunks not yet yielded. The front one starts inside the frame being assembled.
    queue: VecDeque<Bytes>,
    /// Bytes of `queue.front()` already seen by the scanner.
    scanned: usize,
    /// The start of the frame being assembled, copied out of chunks already popped.
    partial: BytesMut,
    /// Line state of the frame being assembled.
    scanner: Scanner,
    /// How many of the stream's first bytes were compared with the BOM (at most 3).
    bom_seen: u8,
    /// Whether every byte compared so far matched the BOM.
    bom_match: bool,
    /// Whether the next frame starts at the very beginning of the stream.
    first_frame: bool,
    /// Set once `next_frame` failed; the decoder then yields nothing more.
    failed: bool,
    /// Set by `finish`: the frames and error still to hand out.
    eof: Option<Eof>,
}

/// What [`Decoder::finish`] leaves for [`Decoder::next_frame`].
#[derive(Debug, Default)]
struct Eof {
    frames: VecDeque<Frame>,
    error: Option<DecodeError>,
}

/// Where the scanner is inside the lines of the frame being assembled.
#[derive(Debug, Clone, Copy)]
struct Scanner {
    /// Bytes of the current line seen so far (saturating).
    line_len: usize,
    /// The last byte seen was a CR ending a line; an LF right after it belongs to it.
    pending_cr: bool,
    /// That CR ended a blank line, so the frame ends after it (and its LF, if any).
    pending_blank: bool,
    /// No line of the stream has ended yet (the BOM is only stripped from that line).
    first_line: bool,
}

/// An error decoding an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The event being assembled is larger than the decoder's maximum event size.
    #[error("event exceeds {0} bytes")]
    TooLarge(usize),
}

/// One event's exact bytes, as they came from upstream, with its fields located.
///
/// A frame ends with the blank line that dispatches it. It may hold no `data:` line at all
/// (a comment such as `: ping`, a stray blank line, or an event the SSE standard would not
/// dispatch); such frames are still relayed.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// The exact input bytes of this frame.
    raw: Bytes,
    /// The value of the last `event:` field.
    event: Option<Span>,
    /// The value of the first `data:` field.
    data: Option<Span>,
    /// How many `data:` fields the frame has.
    data_lines: usize,
    /// Where the lines start: 3 after a stream-leading BOM, else 0.
    start: usize,
}

/// A byte range inside a frame's raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

// === impl Decoder ===

impl Decoder {
    /// A decoder that rejects events larger than `max_event_size` bytes (the bridge uses
    /// 16 MiB).
    pub(crate) fn new(max_event_size: usize) -> Self {
        Self {
            max_event_size,
            queue: VecDeque::new(),
            scanned: 0,
            partial: BytesMut::new(),
            scanner: Scanner::new(),
            bom_seen: 0,
            bom_match: true,
            first_frame: true,
            failed: false,
            eof: None,
        }
    }

    /// Appends a chunk of upstream bytes (no copy when events lie wholly inside one chunk).
    ///
    /// Call it only before [`finish`](Self::finish).
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        for &byte in chunk.iter().take(BOM.len() - usize::from(self.bom_seen)) {
            self.bom_match &= byte == BOM[usize::from(self.bom_seen)];
            self.bom_seen += 1;
        }
        self.queue.push_back(chunk);
    }

    /// Next complete frame, if any.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] when the frame being assembled exceeds the maximum event
    /// size. The decoder is then spent: later calls fail again and
    /// [`finish`](Self::finish) returns every byte not yielded yet.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        match &mut self.eof {
            Some(eof) => match eof.frames.pop_front() {
                Some(frame) => Ok(Some(frame)),
                None => eof.error.map_or(Ok(None), Err),
            },
            None => self.decode(),
        }
    }

    /// At end of input: the trailing bytes that did not form a complete frame (None if none).
    ///
    /// An event not terminated by a blank line at EOF is not dispatched, per the SSE
    /// standard; the bridge treats it as a truncated stream and still relays these raw
    /// bytes. Frames still buffered (including one that EOF completes, see [`Decoder`]) are
    /// returned by [`next_frame`](Self::next_frame) afterwards; they precede the remainder.
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        if self.eof.is_some() {
            return None;
        }
        let mut eof = Eof::default();
        loop {
            match self.decode() {
                Ok(Some(frame)) => eof.frames.push_back(frame),
                Ok(None) => break,
                Err(err) => {
                    eof.error = Some(err);
                    break;
                }
            }
        }
        if !self.failed && self.scanner.pending_blank {
            // EOF decides the final CR: no LF follows, so everything buffered is one frame
            // (its size was checked when the CR was scanned).
            self.scanner.resolve_cr();
            if let Some(raw) = self.take_all() {
                let frame = self.frame(raw);
                eof.frames.push_back(frame);
            }
        }
        self.eof = Some(eof);
        self.take_all()
    }

    /// Bytes buffered but not yet yielded.
    pub(crate) fn buffered(&self) -> usize {
        self.partial.len() + self.queue.iter().map(Bytes::len).sum::<usize>()
    }

    /// Scans the queued chunks for the next frame end.
    fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.failed {
            return Err(DecodeError::TooLarge(self.max_event_size));
        }
        let bom = self.bom_seen == 3 && self.bom_match;
        loop {
            let Some(front) = self.queue.front_mut() else {
                return Ok(None);
            };
            if let Some(end) = self.scanner.scan(front, self.scanned, bom) {
                if self.partial.len() + end > self.max_event_size {
                    return Err(self.fail());
                }
                let head = front.split_to(end);
                if front.is_empty() {
                    self.queue.pop_front();
                }
                self.scanned = 0;
                let raw = self.join_partial(head);
                return Ok(Some(self.frame(raw)));
            }
            let front_len = front.len();
            if self.partial.len() + front_len > self.max_event_size {
                return Err(self.fail());
            }
            self.scanned = front_len;
            let Some(next) = self.queue.get(1) else {
                return Ok(None);
            };
            let frame_ends_here = self.scanner.pending_blank && next.first() != Some(&b'\n');
            let Some(head) = self.queue.pop_front() else {
                return Ok(None);
            };
            self.scanned = 0;
            if frame_ends_here {
                // A blank line ended with the front chunk's last byte, a CR, and the next
                // chunk does not start with LF: the frame is complete without copying it.
                self.scanner.resolve_cr();
                let raw = self.join_partial(head);
                return Ok(Some(self.frame(raw)));
            }
            // The frame continues in the next chunk: keep its start aside.
            self.partial.extend_from_slice(&head);
        }
    }

    /// Marks the decoder spent by a frame that is too large.
    fn fail(&mut self) -> DecodeError {
        self.failed = true;
        DecodeError::TooLarge(self.max_event_size)
    }

    /// `head`, prefixed by the copied start of the frame if there is one.
    fn join_partial(&mut self, head: Bytes) -> Bytes {
        if self.partial.is_empty() {
            head
        } else {
            self.partial.extend_from_slice(&head);
            self.partial.split().freeze()
        }
    }

    /// Takes every buffered byte, copying only if they lie in more than one place.
    fn take_all(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        if self.partial.is_empty() && self.queue.len() <= 1 {
            return self.queue.pop_front();
        }
        for chunk in self.queue.drain(..) {
            self.partial.extend_from_slice(&chunk);
        }
        Some(self.partial.split().freeze())
    }

    /// Wraps a frame's raw bytes, skipping the BOM if it opens the stream.
    fn frame(&mut self, raw: Bytes) -> Frame {
        let start = if self.first_frame && self.bom_seen == 3 && self.bom_match {
            BOM.len()
        } else {
            0
        };
        self.first_frame = false;
        Frame::parse(raw, start)
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("max_event_size", &self.max_event_size)
            .field("buffered", &self.buffered())
            .field("failed", &self.failed)
            .field("finished", &self.eof.is_some())
            .finish_non_exhaustive()
    }
}

// === impl Scanner ===

impl Scanner {
    const fn new() -> Self {
        Self {
            line_len: 0,
            pending_cr: false,
            pending_blank: false,
            first_line: true,
        }
    }

    /// Scans `buf[from..]`, continuing the lines seen so far. Returns the offset just past
    /// the blank line that ends the frame, or `None` when `buf` holds no frame end yet (or
    /// only one that ends with a CR as `buf`'s last byte, which needs the next byte).
    fn scan(&mut self, buf: &[u8], mut from: usize, bom: bool) -> Option<usize> {
        if self.pending_cr {
            let &byte = buf.get(from)?;
            from += usize::from(byte == b'\n');
            if self.resolve_cr() {
                return Some(from);
            }
        }
        while let Some(offset) = memchr2(b'\n', b'\r', &buf[from..]) {
            let at = from + offset;
            let len = self.line_len.saturating_add(offset);
            let blank = len == 0 || (self.first_line && bom && len == BOM.len());
            self.first_line = false;
            self.line_len = 0;
            if buf[at] == b'\n' {
                from = at + 1;
            } else if let Some(&next) = buf.get(at + 1) {
                from = at + 1 + usize::from(next == b'\n');
            } else {
                self.pending_cr = true;
                self.pending_blank = blank;
                return None;
            }
            if blank {
                return Some(from);
            }
        }
        self.line_len = self.line_len.saturating_add(buf.len() - from);
        None
    }

    /// Forgets a pending CR; returns whether it ended the frame.
    fn resolve_cr(&mut self) -> bool {
        self.pending_cr = false;
        std::mem::take(&mut self.pending_blank)
    }
}

// === impl Frame ===

impl Frame {
    /// Locates the fields of a complete frame; its lines start at `start`.
    fn parse(raw: Bytes, start: usize) -> Self {
        let mut frame = Self {
            raw,
            event: None,
            data: None,
            data_lines: 0,
            start,
        };
        for (name, value) in fields(&frame.raw, start) {
            match name {
                b"data" => {
                    frame.data_lines += 1;
                    frame.data.get_or_insert(value);
                }
                b"event" => frame.event = Some(value),
                _ => {}
            }
        }
        frame
    }

    /// The exact input bytes of this frame.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The exact input bytes of this frame, for relaying.
    pub(crate) fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The `event:` field value (last one wins), borrowed from the raw bytes.
    ///
    /// `None` if there is no `event:` field, if its value is empty (the SSE default type,
    /// `message`, applies) or if it is not UTF-8.
    pub(crate) fn event_type(&self) -> Option<&str> {
        let span = self.event?;
        let value = &self.raw[span.start..span.end];
        if value.is_empty() {
            return None;
        }
        std::str::from_utf8(value).ok()
    }

    /// The joined data, `None` if the frame has no `data:` line.
    ///
    /// A slice of the raw bytes when there is exactly one data line (the common case: no
    /// allocation); an owned buffer when several lines must be joined with `\n`.
    pub(crate) fn data(&self) -> Option<Cow<'_, [u8]>> {
        let first = self.data?;
        if self.data_lines == 1 {
            return Some(Cow::Borrowed(&self.raw[first.start..first.end]));
        }
        let mut joined = Vec::with_capacity(self.raw.len());
        let values = fields(&self.raw, self.start).filter(|&(name, _)| name == b"data");
        for (index, (_, value)) in values.enumerate() {
            if index > 0 {
                joined.push(b'\n');
            }
            joined.extend_from_slice(&self.raw[value.start..value.end]);
        }
        Some(Cow::Owned(joined))
    }
}

// === helpers ===

/// The `(name, value)` fields of a complete frame's lines from `start`, up to the first blank
/// line; comments are skipped. A line without a colon is a field with an empty value.
fn fields(raw: &[u8], start: usize) -> impl Iterator<Item = (&[u8], Span)> {
    let mut pos = start;
    std::iter::from_fn(move || {
        loop {
            let line = pos;
            let (end, next) = match memchr2(b'\n', b'\r', &raw[line..]) {
                Some(offset) => {
                    let at = line + offset;
                    let crlf = raw[at] == b'\r' && raw.get(at + 1) == Some(&b'\n');
                    (at, at + 1 + usize::from(crlf))
                }
                None => (raw.len(), raw.len()),
            };
            if end == line {
                return None;
            }
            pos = next;
            if raw[line] == b':' {
                continue;
            }
            let field = &raw[line..end];
            return Some(match memchr(b':', field) {
                Some(colon) => {
                    let mut value = line + colon + 1;
                    if value < end && raw[value] == b' ' {
                        value += 1;
                    }
                    (&field[..colon], Span { start: value, end })
                }
                None => (field, Span { start: end, end }),
            });
        }
    })
}
