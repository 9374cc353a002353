//! Bedrock's streaming answer (AWS EventStream, decoded by `aws-smithy-eventstream`) as
//! the Anthropic SSE stream the client expects: each `chunk` event's payload
//! `{"bytes":"<base64 of one Anthropic event>"}` becomes `event: <type>` / `data: <the
//! decoded bytes, unchanged>`; an `exception` message ends the stream with the Anthropic
//! terminal error event.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue as EsValue, Message};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, header};

use super::super::transport::rebuild;

/// Whether an answer is AWS EventStream.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/vnd.amazon.eventstream")
        })
}

/// The answer with its EventStream body turned into SSE.
pub(crate) fn to_sse(resp: reqwest::Response) -> reqwest::Response {
    let status = resp.status();
    let mut headers = resp.headers().clone();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    let body = sse_stream(resp.bytes_stream());
    rebuild(status, headers, reqwest::Body::wrap_stream(body))
}

/// Why the EventStream could not be read (ends the relayed stream as a broken upstream).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The framing is broken (length, CRC, headers).
    #[error("invalid AWS EventStream frame: {0}")]
    Frame(String),
    /// The connection broke.
    #[error("{0}")]
    Read(String),
}

/// The converter: bytes in (any split), SSE events out.
#[derive(Debug, Default)]
pub(crate) struct Converter {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    /// An exception was turned into the terminal event: nothing more is relayed.
    done: bool,
}

impl Converter {
    /// Feeds `chunk`; returns the SSE bytes of the complete messages it finished.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Bytes, DecodeError> {
        let mut out = BytesMut::new();
        if self.done {
            return Ok(out.freeze());
        }
        self.buf.extend_from_slice(chunk);
        loop {
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Incomplete) => return Ok(out.freeze()),
                Ok(DecodedFrame::Complete(msg)) => {
                    if self.message(&msg, &mut out)? {
                        self.done = true;
                        return Ok(out.freeze());
                    }
                }
                Err(e) => return Err(DecodeError::Frame(e.to_string())),
            }
        }
    }

    /// Whether the input ended between messages.
    pub(crate) fn finished_cleanly(&self) -> bool {
        self.done || self.buf.is_empty()
    }

    /// Writes one message's SSE event; true when it ended the stream (an exception).
    fn message(&self, msg: &Message, out: &mut BytesMut) -> Result<bool, DecodeError> {
        let kind = header(msg, ":message-type").unwrap_or("event");
        match kind {
            "event" => {
                if header(msg, ":event-type") == Some("chunk") {
                    chunk(msg.payload(), out)?;
                }
                Ok(false)
            }
            _ => {
                let name = header(msg, ":exception-type")
                    .or_else(|| header(msg, ":error-code"))
                    .unwrap_or("exception");
                let detail = serde_json::from_slice::<serde_json::Value>(msg.payload())
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .or_else(|| v.get("Message"))
                            .and_then(|m| m.as_str().map(str::to_owned))
                    })
                    .or_else(|| header(msg, ":error-message").map(str::to_owned));
                let error_type = if name.to_ascii_lowercase().contains("throttl") {
                    "overloaded_error"
                } else {
                    "api_error"
                };
                let message = match detail {
                    Some(d) => format!("{name}: {d}"),
                    None => name.to_owned(),
                };
                let data = serde_json::json!({
                    "type": "error",
                    "error": {"type": error_type, "message": message},
                });
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(data.to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
                Ok(true)
            }
        }
    }
}

/// One `chunk` event as its SSE event.
fn chunk(payload: &[u8], out: &mut BytesMut) -> Result<(), DecodeError> {
    #[derive(serde::Deserialize)]
    struct Chunk {
        bytes: String,
    }
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    let c: Chunk = serde_json::from_slice(payload)
        .map_err(|e| DecodeError::Frame(format!("chunk payload: {e}")))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(c.bytes.as_bytes())
        .map_err(|e| DecodeError::Frame(format!("chunk bytes: {e}")))?;
    let typed: Typed<'_> = serde_json::from_slice(&data)
        .map_err(|e| DecodeError::Frame(format!("chunk event: {e}")))?;
    if typed.kind.contains(['\n', '\r']) || memchr::memchr2(b'\n', b'\r', &data).is_some() {
        // SSE data is one line: the decoded JSON is compact as Bedrock sends it; a
        // pretty-printed event would need one `data:` line per line.
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(typed.kind.replace(['\n', '\r'], "").as_bytes());
        out.extend_from_slice(b"\n");
        let text = String::from_utf8_lossy(&data);
        for line in text.lines() {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
        return Ok(());
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(typed.kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\n\n");
    Ok(())
}

fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            EsValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

/// The SSE stream of an EventStream body.
fn sse_stream<S>(body: S) -> impl Stream<Item = Result<Bytes, DecodeError>> + Send + 'static
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    let state = Some((Box::pin(body), Converter::default()));
    futures::stream::unfold(state, |state| async move {
        let (mut body, mut conv) = state?;
        loop {
            match body.next().await {
                None if conv.finished_cleanly() => return None,
                None => {
                    let e = DecodeError::Read(
                        "connection closed inside an EventStream message".to_owned(),
                    );
                    return Some((Err(e), None));
                }
                Some(Err(e)) => return Some((Err(DecodeError::Read(e.to_string())), None)),
                Some(Ok(chunk)) => match conv.push(&chunk) {
                    Err(e) => return Some((Err(e), None)),
                    Ok(out) if conv.done => return Some((Ok(out), None)),
                    Ok(out) if out.is_empty() => {}
                    Ok(out) => return Some((Ok(out), Some((body, conv)))),
                },
            }
        }
    })
}

/// EventStream frames for tests (this crate's and the black-box ones' mock Bedrock).
#[cfg(test)]
pub(crate) mod frames {
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    use base64::Engine as _;

    fn encode(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        write_message_to(msg, &mut out).unwrap();
        out
    }

    /// A `chunk` event carrying `event` (one Anthropic stream event's JSON).
    pub(crate) fn chunk(event: &str) -> Vec<u8> {
        let payload = serde_json::json!({
            "bytes": base64::engine::general_purpose::STANDARD.encode(event),
        });
        encode(
            &Message::new(payload.to_string().into_bytes())
                .add_header(Header::new(
                    ":message-type",
                    HeaderValue::String("event".into()),
                ))
                .add_header(Header::new(
                    ":event-type",
                    HeaderValue::String("chunk".into()),
                ))
                .add_header(Header::new(
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                )),
        )
    }

    /// An exception message.
    pub(crate) fn exception(kind: &str, message: &str) -> Vec<u8> {
        let payload = serde_json::json!({ "message": message });
        encode(
            &Message::new(payload.to_string().into_bytes())
                .add_header(Header::new(
                    ":message-type",
                    HeaderValue::String("exception".into()),
                ))
                .add_header(Header::new(
                    ":exception-type",
                    HeaderValue::String(kind.to_owned().into()),
                )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [&str; 3] = [
        r#"{"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":3,"output_tokens":1}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hé \\n"}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    fn expected() -> String {
        EVENTS
            .iter()
            .map(|e| {
                let t: serde_json::Value = serde_json::from_str(e).unwrap();
                format!("event: {}\ndata: {e}\n\n", t["type"].as_str().unwrap())
            })
            .collect()
    }

    /// Every split of the input into two pieces gives the same SSE bytes.
    #[test]
    fn split_at_every_byte_boundary() {
        let input: Vec<u8> = EVENTS.iter().flat_map(|e| frames::chunk(e)).collect();
        for cut in 0..=input.len() {
            let mut conv = Converter::default();
            let mut out = conv.push(&input[..cut]).unwrap().to_vec();
            out.extend_from_slice(&conv.push(&input[cut..]).unwrap());
            assert!(conv.finished_cleanly());
            assert_eq!(String::from_utf8(out).unwrap(), expected(), "cut {cut}");
        }
        // And byte by byte.
        let mut conv = Converter::default();
        let mut out = Vec::new();
        for b in &input {
            out.extend_from_slice(&conv.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(String::from_utf8(out).unwrap(), expected());
    }

    #[test]
    fn exception_mid_stream_ends_with_the_terminal_error() {
        let mut input = frames::chunk(EVENTS[0]);
        input.extend(frames::exception("throttlingException", "slow down"));
        input.extend(frames::chunk(EVENTS[2]));
        let mut conv = Converter::default();
        let out = String::from_utf8(conv.push(&input).unwrap().to_vec()).unwrap();
        assert!(out.starts_with("event: message_start\n"));
        assert!(out.ends_with(
            "event: error\ndata: {\"error\":{\"message\":\"throttlingException: slow down\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n"
        ), "{out}");
        assert!(!out.contains("message_stop"));
        let mut conv = Converter::default();
        let out = conv
            .push(&frames::exception("modelStreamErrorException", "boom"))
            .unwrap();
        assert!(String::from_utf8_lossy(&out).contains(r#""type":"api_error""#));
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        let mut input = frames::chunk(EVENTS[0]);
        let n = input.len();
        input[n - 1] ^= 0xff; // message CRC
        assert!(Converter::default().push(&input).is_err());
        let mut conv = Converter::default();
        conv.push(&frames::chunk(EVENTS[0])[..10]).unwrap();
        assert!(!conv.finished_cleanly());
        assert!(Converter::default().push(&[0u8; 16]).is_err());
    }
}
