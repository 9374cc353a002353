//! Writing SSE events and comments, for the few events the bridge makes or rewrites.
//!
//! Everything else is relayed as the upstream's original bytes (see [`super::Frame`]).

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr2;
use serde::Serialize;

/// An event: `event: T\ndata: D\n\n`, with no `event:` line when `event_type` is `None`.
///
/// Data holding line breaks is written as several `data:` lines, which a decoder joins with
/// `\n` again (a CR or CRLF in `data` therefore comes back as LF). An `event_type` holding CR
/// or LF (it can come from an upstream's JSON `type`) is left out, as if `None`: a line break
/// there would end the `event:` line and inject the rest into the stream.
pub(crate) fn event(event_type: Option<&str>, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(event_len(event_type, data));
    write_event(&mut buf, event_type, data);
    buf.freeze()
}

/// An event whose data is `value` serialized as compact JSON (one `data:` line).
///
/// # Errors
///
/// When `value` cannot be serialized (a map with non-string keys, a failing `Serialize`).
pub(crate) fn json_event<T>(event_type: Option<&str>, value: &T) -> Result<Bytes, serde_json::Error>
where
    T: Serialize + ?Sized,
{
    let mut buf = BytesMut::with_capacity(128);
    write_event_type(&mut buf, event_type);
    buf.put_slice(b"data: ");
    // Compact JSON escapes control characters, so it never breaks the line.
    serde_json::to_writer((&mut buf).writer(), value)?;
    buf.put_slice(b"\n\n");
    Ok(buf.freeze())
}

/// A comment: `: text\n\n`. Clients ignore it; the bridge uses it as a keep-alive.
///
/// Text holding line breaks is written as several comment lines.
pub(crate) fn comment(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 4);
    for line in lines(text.as_bytes()) {
        buf.put_slice(b": ");
        buf.put_slice(line);
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Appends [`event`]'s bytes to `buf`, so several events can share one buffer.
fn write_event(buf: &mut BytesMut, event_type: Option<&str>, data: &[u8]) {
    buf.reserve(event_len(event_type, data));
    write_event_type(buf, event_type);
    for line in lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line);
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
}

/// Writes the `event:` line, if any (none for a type that holds a line break).
fn write_event_type(buf: &mut BytesMut, event_type: Option<&str>) {
    if let Some(event_type) = event_type
        && memchr2(b'\n', b'\r', event_type.as_bytes()).is_none()
    {
        buf.put_slice(b"event: ");
        buf.put_slice(event_type.as_bytes());
        buf.put_u8(b'\n');
    }
}

/// An upper bound of the encoded size (exact when `data` has no line breaks).
fn event_len(event_type: Option<&str>, data: &[u8]) -> usize {
    let event_line = event_type.map_or(0, |t| "event: \n".len() + t.len());
    let breaks = memchr::memchr2_iter(b'\n', b'\r', data).count();
    event_line + (breaks + 1) * "data: \n".len() + data.len() + 1
}

/// The lines of `text`, split at LF, CRLF or CR; always at least one (possibly empty) line.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr2(b'\n', b'\r', current) {
            Some(at) => {
                let crlf = current[at] == b'\r' && current.get(at + 1) == Some(&b'\n');
                rest = Some(&current[at + 1 + usize::from(crlf)..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{Decoder, Frame};

    /// Decodes one encoded event and returns its type and data.
    fn decode_one(bytes: Bytes) -> (Option<String>, Option<Vec<u8>>) {
        let mut decoder = Decoder::new(1 << 20);
        decoder.push(bytes);
        let frame = decoder.next_frame().unwrap().expect("one complete frame");
        assert_eq!(decoder.next_frame().unwrap().map(Frame::into_raw), None);
        assert_eq!(decoder.finish(), None);
        (
            frame.event_type().map(str::to_owned),
            frame.data().map(|d| d.into_owned()),
        )
    }

    #[test]
    fn event_writes_type_and_single_data_line() {
        let bytes = event(Some("message_stop"), br#"{"type":"message_stop"}"#);
        assert_eq!(
            &bytes[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
    }

    #[test]
    fn a_type_with_a_line_break_is_left_out_and_cannot_inject_lines() {
        // Found by the stream_observers fuzz target: a Responses MCP view re-encoded an
        // event under its JSON `type`, which held an escaped newline.
        for t in [
            "response.cont\nt_part.done",
            "a\rdata: injected",
            "x\r\nid: 9",
        ] {
            let bytes = event(Some(t), br#"{"type":"x"}"#);
            assert_eq!(&bytes[..], b"data: {\"type\":\"x\"}\n\n", "{t:?}");
            assert_eq!(decode_one(bytes).0, None);
            let json = json_event(Some(t), &1).unwrap();
            assert_eq!(&json[..], b"data: 1\n\n", "{t:?}");
        }
    }

    #[test]
    fn event_without_type_has_no_event_line() {
        assert_eq!(&event(None, b"[DONE]")[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn event_splits_line_breaks_into_data_lines() {
        let bytes = event(Some("x"), b"a\nb\r\nc\rd\n");
        assert_eq!(
            &bytes[..],
            b"event: x\ndata: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"
        );
        assert_eq!(
            decode_one(bytes),
            (Some("x".to_owned()), Some(b"a\nb\nc\nd\n".to_vec()))
        );
    }

    #[test]
    fn event_with_empty_data_round_trips() {
        let bytes = event(None, b"");
        assert_eq!(&bytes[..], b"data: \n\n");
        assert_eq!(decode_one(bytes), (None, Some(Vec::new())));
    }

    #[test]
    fn event_keeps_a_leading_space_of_the_data() {
        assert_eq!(decode_one(event(None, b" x")), (None, Some(b" x".to_vec())));
    }

    #[test]
    fn json_event_writes_compact_json() {
        let value = serde_json::json!({"type": "error", "error": {"message": "a\nb"}});
        let bytes = json_event(Some("error"), &value).unwrap();
        assert_eq!(
            &bytes[..],
            b"event: error\ndata: {\"error\":{\"message\":\"a\\nb\"},\"type\":\"error\"}\n\n"
        );
        let (event_type, data) = decode_one(bytes);
        assert_eq!(event_type.as_deref(), Some("error"));
        let back: serde_json::Value = serde_json::from_slice(&data.unwrap()).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn comment_writes_comment_lines() {
        assert_eq!(&comment("ping")[..], b": ping\n\n");
        assert_eq!(&comment("")[..], b": \n\n");
        assert_eq!(&comment("a\nb")[..], b": a\n: b\n\n");
        assert_eq!(decode_one(comment("a\r\nb")), (None, None));
    }

    #[test]
    fn write_event_appends_to_the_buffer() {
        let mut buf = BytesMut::new();
        write_event(&mut buf, Some("a"), b"1");
        write_event(&mut buf, None, b"2");
        assert_eq!(&buf[..], b"event: a\ndata: 1\n\ndata: 2\n\n");
    }

    proptest::proptest! {
        #[test]
        fn event_round_trips_through_the_decoder(
            event_type in proptest::option::of("[a-z_.]{1,20}"),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let bytes = event(event_type.as_deref(), &data);
            proptest::prop_assert!(bytes.len() <= event_len(event_type.as_deref(), &data));
            let mut expected = data;
            // CRLF and CR come back as LF.
            let mut i = 0;
            while i < expected.len() {
                if expected[i] == b'\r' {
                    if expected.get(i + 1) == Some(&b'\n') {
                        expected.remove(i);
                    } else {
                        expected[i] = b'\n';
                    }
                }
                i += 1;
            }
            proptest::prop_assert_eq!(decode_one(bytes), (event_type, Some(expected)));
        }
    }
}
