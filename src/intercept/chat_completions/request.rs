//! Chat Completions request intake (openai-chat.md "Request intake") and the stream usage
//! request (S2).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::BridgeError;
use crate::intercept::openai::{string_of, text_parts};
use crate::intercept::request::{RequestInfo, parse_top};

/// One entry of the request's `messages`, as far as classification needs it.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_call_id: Option<&'a RawValue>,
}

/// A member's raw value, `null` included; `Default` is "absent". (An `Option<&RawValue>`
/// field reads `null` as absent, which would make the S2 edit add a duplicate key.)
#[derive(Debug, Default, Clone, Copy)]
struct Member<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| Self(Some(raw)))
    }
}

/// The top-level member the S2 edit looks at.
#[derive(Deserialize)]
struct EditTop<'a> {
    #[serde(borrow, default)]
    stream_options: Member<'a>,
}

/// The `stream_options` member the S2 edit looks at.
#[derive(Deserialize)]
struct StreamOptions<'a> {
    #[serde(borrow, default)]
    include_usage: Member<'a>,
}

/// Classifies a Chat Completions request (openai-chat.md "Request intake").
#[allow(
    clippy::result_large_err,
    reason = "BridgeError is the engine's request error type"
)]
pub(crate) fn parse_request(body: &[u8]) -> Result<RequestInfo, BridgeError> {
    let top = parse_top(body)?;
    let mut info = top.info()?;
    let last = top
        .messages
        .and_then(|m| serde_json::from_str::<Vec<&RawValue>>(m.get()).ok())
        .and_then(|messages| messages.last().copied())
        .and_then(|m| serde_json::from_str::<Message<'_>>(m.get()).ok());
    if let Some(m) = last {
        match m.role.as_deref() {
            Some("user") => info.prompt = m.content.and_then(prompt_of),
            Some("tool") => {
                info.correlating_tool_call_id = m
                    .tool_call_id
                    .and_then(string_of)
                    .filter(|id| !id.is_empty());
            }
            _ => {}
        }
    }
    info.client_include_usage = top
        .stream_options
        .and_then(|o| serde_json::from_str::<StreamOptions<'_>>(o.get()).ok())
        .and_then(|o| o.include_usage.0)
        .is_some_and(|v| v.get() == "true");
    Ok(info)
}

/// The prompt of a user message's `content` (S1 for Chat).
fn prompt_of(content: &RawValue) -> Option<String> {
    let text = if content.get().starts_with('[') {
        text_parts(content, "text")?.pop()?
    } else {
        string_of(content)?
    };
    (!text.is_empty()).then_some(text)
}

/// The body sent upstream: for a stream whose client did not ask for usage,
/// `stream_options.include_usage` set to `true` with a targeted byte edit (S2); every other
/// byte unchanged. Non-streaming requests are never edited.
pub(crate) fn upstream_body(info: &RequestInfo, body: Bytes) -> Bytes {
    if !info.streaming || info.client_include_usage {
        return body;
    }
    match usage_edit(&body) {
        Some(edited) => edited,
        None => {
            tracing::debug!("stream_options could not be located; body forwarded unchanged");
            body
        }
    }
}

/// `body` with `stream_options.include_usage: true`, or `None` if it already says so or
/// the members cannot be located.
fn usage_edit(body: &[u8]) -> Option<Bytes> {
    // A derived struct also deserializes from a JSON array: only edit an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let top: EditTop<'_> = serde_json::from_slice(body).ok()?;
    let (at, removed, inserted): (usize, usize, Cow<'static, str>) = match top.stream_options.0 {
        None => {
            let close = body.iter().rposition(|b| !is_ws(*b))?;
            let at = body[..close].iter().rposition(|b| !is_ws(*b))? + 1;
            let sep = if body[at - 1] == b'{' { "" } else { "," };
            let text = format!("{sep}\"stream_options\":{{\"include_usage\":true}}");
            (at, 0, Cow::Owned(text))
        }
        Some(raw) if raw.get().starts_with('{') => {
            let opts: StreamOptions<'_> = serde_json::from_str(raw.get()).ok()?;
            match opts.include_usage.0 {
                Some(v) if v.get() == "true" => return None,
                Some(v) => (
                    offset_in(body, v.get())?,
                    v.get().len(),
                    Cow::Borrowed("true"),
                ),
                None => {
                    let start = offset_in(body, raw.get())?;
                    let close = start + raw.get().len() - 1;
                    let at = body[..close].iter().rposition(|b| !is_ws(*b))? + 1;
                    let sep = if at == start + 1 { "" } else { "," };
                    (at, 0, Cow::Owned(format!("{sep}\"include_usage\":true")))
                }
            }
        }
        Some(raw) => (
            offset_in(body, raw.get())?,
            raw.get().len(),
            Cow::Borrowed("{\"include_usage\":true}"),
        ),
    };
    let mut out = BytesMut::with_capacity(body.len() + inserted.len());
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(inserted.as_bytes());
    out.extend_from_slice(&body[at + removed..]);
    Some(out.freeze())
}

/// JSON insignificant whitespace.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The byte offset of `part` (borrowed from `body`) inside `body`.
fn offset_in(body: &[u8], part: &str) -> Option<usize> {
    let at = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    (at + part.len() <= body.len()).then_some(at)
}
