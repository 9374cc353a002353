//! Server-sent events: an incremental zero-copy decoder and small encoders.
//! (Temporary simple decoder; replaced by the zero-copy one.)

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("event exceeds {0} bytes")]
    TooLarge(usize),
}

#[derive(Debug)]
pub(crate) struct Decoder {
    buf: BytesMut,
    max: usize,
}

impl Decoder {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.buf.extend_from_slice(&chunk);
    }
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let mut i = 0;
        let b = &self.buf;
        let mut line_start = true;
        while i < b.len() {
            let c = b[i];
            if c == b'\n' || c == b'\r' {
                let mut end = i + 1;
                if c == b'\r' {
                    if end >= b.len() {
                        break;
                    }
                    if b[end] == b'\n' {
                        end += 1;
                    }
                }
                if line_start {
                    let raw = self.buf.split_to(end).freeze();
                    return Ok(Some(Frame { raw }));
                }
                line_start = true;
                i = end;
                continue;
            }
            line_start = false;
            i += 1;
        }
        if self.buf.len() > self.max {
            return Err(DecodeError::TooLarge(self.max));
        }
        Ok(None)
    }
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

#[derive(Debug)]
pub(crate) struct Frame {
    raw: Bytes,
}

impl Frame {
    pub(crate) fn raw(&self) -> &Bytes {
        &self.raw
    }
    pub(crate) fn into_raw(self) -> Bytes {
        self.raw
    }
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.raw
            .split(|c| *c == b'\n' || *c == b'\r')
            .filter(|l| !l.is_empty())
    }
    pub(crate) fn event_type(&self) -> Option<&str> {
        self.lines()
            .filter_map(|l| l.strip_prefix(b"event:"))
            .map(|v| v.strip_prefix(b" ").unwrap_or(v))
            .last()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
    pub(crate) fn data(&self) -> Option<Cow<'_, [u8]>> {
        let parts: Vec<&[u8]> = self
            .lines()
            .filter_map(|l| l.strip_prefix(b"data:"))
            .map(|v| v.strip_prefix(b" ").unwrap_or(v))
            .collect();
        match parts.len() {
            0 => None,
            1 => Some(Cow::Borrowed(parts[0])),
            _ => Some(Cow::Owned(parts.join(&b'\n'))),
        }
    }
}
