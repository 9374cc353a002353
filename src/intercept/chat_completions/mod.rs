//! OpenAI Chat Completions: request classification, the stream usage request (S2),
//! blocking extraction, the stream parser and the terminal error chunk (openai-chat.md).
//!
//! The usage mapping and the in-band error text are shared with the Responses adapter.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::StreamObserver;
use super::facts::{Fact, FrameAction, StreamStatus, Usage, json_or_empty, json_text};
use super::request::{RequestInfo, parse_top};
use crate::error::{BridgeError, json_string};
use crate::sse::Frame;

// === request ===

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

/// One part of an array `content`.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
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
        let parts = serde_json::from_str::<Vec<&RawValue>>(content.get()).ok()?;
        parts
            .iter()
            .rev()
            .filter_map(|p| serde_json::from_str::<Part<'_>>(p.get()).ok())
            .filter(|p| p.kind.as_deref() == Some("text"))
            .find_map(|p| p.text.and_then(string_of))?
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

// === shared with Responses ===

/// A JSON string's value.
pub(super) fn string_of(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

/// A JSON string's value, or a number's text (error codes come as either).
fn scalar_of(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if text.starts_with('"') {
        string_of(raw)
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(text.to_owned())
    } else {
        None
    }
}

/// An integer member (`None` for any other JSON value).
pub(super) fn int_of(raw: Option<&RawValue>) -> Option<u64> {
    raw.and_then(|r| r.get().parse().ok())
}

/// The fields of an OpenAI error object (`{"code","type","message",…}`).
#[derive(Deserialize, Default)]
pub(super) struct ErrorFields<'a> {
    #[serde(borrow)]
    pub(super) code: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    pub(super) kind: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) message: Option<&'a RawValue>,
}

impl ErrorFields<'_> {
    /// `{prefix}: {code|type}: {message}`, with the parts that are present.
    pub(super) fn text(&self, prefix: &str) -> String {
        let kind = self
            .code
            .and_then(scalar_of)
            .or_else(|| self.kind.and_then(scalar_of));
        let message = self.message.and_then(scalar_of);
        let mut text = prefix.to_owned();
        for part in [kind, message].into_iter().flatten() {
            text.push_str(": ");
            text.push_str(&part);
        }
        text
    }
}

/// An error object, or an error message given as a bare string.
pub(super) fn error_text(prefix: &str, raw: &RawValue) -> String {
    if raw.get().starts_with('"') {
        let message = string_of(raw).unwrap_or_default();
        return ErrorFields::default().text(prefix) + ": " + &message;
    }
    serde_json::from_str::<ErrorFields<'_>>(raw.get())
        .unwrap_or_default()
        .text(prefix)
}

// === usage ===

/// A Chat `usage` object; counts stay raw so a non-integer value reads as absent.
#[derive(Deserialize, Default)]
struct UsageView<'a> {
    #[serde(borrow)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt_tokens_details: Option<&'a RawValue>,
    #[serde(borrow)]
    completion_tokens_details: Option<&'a RawValue>,
}

/// `usage.prompt_tokens_details`.
#[derive(Deserialize, Default)]
struct PromptDetails<'a> {
    #[serde(borrow)]
    cached_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    audio_tokens: Option<&'a RawValue>,
}

/// `usage.completion_tokens_details`.
#[derive(Deserialize, Default)]
struct CompletionDetails<'a> {
    #[serde(borrow)]
    reasoning_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    audio_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    accepted_prediction_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    rejected_prediction_tokens: Option<&'a RawValue>,
}

/// A nested object, or its defaults when absent or not an object.
fn details<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> T {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or_default()
}

/// The Chat usage object (`usage`, a JSON object) as token counts (openai-chat.md
/// "Token usage").
fn usage_of(raw: &RawValue) -> Usage {
    let u: UsageView<'_> = details(Some(raw));
    let prompt: PromptDetails<'_> = details(u.prompt_tokens_details);
    let completion: CompletionDetails<'_> = details(u.completion_tokens_details);
    let cached = int_of(prompt.cached_tokens).unwrap_or(0);
    let mut extra = BTreeMap::new();
    for (key, value) in [
        ("prompt_audio", prompt.audio_tokens),
        ("completion_reasoning", completion.reasoning_tokens),
        ("completion_audio", completion.audio_tokens),
        (
            "completion_accepted_prediction",
            completion.accepted_prediction_tokens,
        ),
        (
            "completion_rejected_prediction",
            completion.rejected_prediction_tokens,
        ),
    ] {
        if let Some(n) = int_of(value) {
            extra.insert(key.to_owned(), n);
        }
    }
    Usage {
        input: int_of(u.prompt_tokens).unwrap_or(0).saturating_sub(cached),
        output: int_of(u.completion_tokens).unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
        extra,
    }
}

/// A JSON object (not `null`, not another type).
fn object(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().starts_with('{'))
}

// === blocking ===

/// A blocking `chat.completion` body; choices are parsed one by one, leniently.
#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

/// One entry of a blocking body's `choices`.
#[derive(Deserialize)]
struct BlockingChoice<'a> {
    #[serde(borrow)]
    message: Option<BlockingMessage<'a>>,
}

/// `choices[*].message`; tool calls are parsed one by one, leniently.
#[derive(Deserialize)]
struct BlockingMessage<'a> {
    #[serde(borrow)]
    tool_calls: Option<Vec<&'a RawValue>>,
}

/// One entry of `message.tool_calls`.
#[derive(Deserialize)]
struct BlockingToolCall<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<BlockingFunction<'a>>,
    #[serde(borrow)]
    custom: Option<BlockingFunction<'a>>,
}

/// `function` (`name`, `arguments`) or `custom` (`name`, `input`) of a tool call.
#[derive(Deserialize)]
struct BlockingFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

/// Facts of a blocking Chat Completions body. `Err` when it is not a JSON object.
pub(crate) fn blocking_facts(body: &[u8], facts: &mut Vec<Fact>) -> Result<(), String> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err("not a JSON object".to_owned());
    }
    let c: Completion<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let rid = c.id.map(Cow::into_owned).filter(|id| !id.is_empty());
    if let Some(id) = &rid {
        facts.push(Fact::ResponseId(id.clone()));
    }
    let calls = c
        .choices
        .unwrap_or_default()
        .into_iter()
        .filter_map(|ch| serde_json::from_str::<BlockingChoice<'_>>(ch.get()).ok())
        .filter_map(|ch| ch.message.and_then(|m| m.tool_calls))
        .flatten();
    for call in calls {
        let Ok(call) = serde_json::from_str::<BlockingToolCall<'_>>(call.get()) else {
            continue;
        };
        let id = call.id.map(Cow::into_owned).unwrap_or_default();
        let (name, input) = match (call.kind.as_deref(), call.custom, call.function) {
            (Some("custom"), Some(c), _) | (_, Some(c), None) => (
                c.name,
                json_string(&c.input.and_then(string_of).unwrap_or_default()),
            ),
            (_, _, Some(f)) => (f.name, f.arguments.map_or_else(empty, arguments_json)),
            (_, None, None) => (None, empty()),
        };
        facts.push(Fact::Tool {
            response_id: rid.clone(),
            name: name.map(Cow::into_owned).unwrap_or_default(),
            call_id: id,
            input,
            provider_executed: false,
        });
    }
    if let Some(u) = object(c.usage) {
        facts.push(Fact::Usage {
            response_id: rid,
            usage: usage_of(u),
        });
    }
    Ok(())
}

/// `{}`.
fn empty() -> String {
    "{}".to_owned()
}

/// Tool arguments (normally a JSON string holding JSON) as JSON text.
pub(super) fn arguments_json(raw: &RawValue) -> String {
    match string_of(raw) {
        Some(s) => json_text(&s),
        None => json_text(raw.get()),
    }
}

// === streaming ===

/// One `chat.completion.chunk` (or an in-band error object).
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

/// One entry of a chunk's `choices`.
#[derive(Deserialize)]
struct ChunkChoice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

/// `choices[*].delta`: what the bridge looks at.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

/// One entry of `delta.tool_calls`.
#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<FunctionDelta<'a>>,
    #[serde(borrow)]
    custom: Option<CustomDelta<'a>>,
}

/// `function` of a tool-call delta.
#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// `custom` of a custom tool-call delta.
#[derive(Deserialize)]
struct CustomDelta<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    input: Option<Cow<'a, str>>,
}

/// One tool call being accumulated from its deltas.
#[derive(Debug, Default)]
struct ToolAcc {
    id: String,
    name: String,
    custom: bool,
    /// `function.arguments` or `custom.input` fragments, concatenated.
    input: String,
}

/// The Chat Completions stream parser: one upstream completion per stream.
#[derive(Debug, Default)]
pub(crate) struct ChatStream {
    /// The bridge added `include_usage` (S2): withhold the usage-only chunk.
    withhold_usage_chunk: bool,
    /// The first non-empty chunk `id`.
    response_id: Option<String>,
    /// Usage of the last chunk with a usage object, until recorded.
    usage: Option<Usage>,
    /// Open tool calls by (choice index, tool-call index).
    tools: BTreeMap<(u64, u64), ToolAcc>,
    /// `data: [DONE]` was seen.
    done: bool,
    /// Choice 0 had a `finish_reason`.
    finished: bool,
    /// An in-band upstream error.
    error: Option<String>,
    /// A chunk with content or tool calls was seen.
    content_started: bool,
}

impl ChatStream {
    /// A parser for the stream answering `info`'s request.
    pub(crate) fn new(info: &RequestInfo) -> Self {
        Self {
            withhold_usage_chunk: info.streaming && !info.client_include_usage,
            ..Self::default()
        }
    }

    /// Forgets the finished completion (the tool loop continues with a new one).
    #[cfg(feature = "mcp")]
    pub(crate) fn reset_for_next(&mut self) {
        self.response_id = None;
        self.usage = None;
        self.tools.clear();
        self.done = false;
        self.finished = false;
        self.error = None;
    }

    /// Records the open tool calls of `choice` (at its `finish_reason`), or of all choices
    /// (`None`: at `[DONE]`, or a flush where they may be cut off).
    fn close_tools(&mut self, choice: Option<u64>, facts: &mut Vec<Fact>) {
        let complete = self.done || choice.is_some();
        let keys: Vec<(u64, u64)> = self
            .tools
            .keys()
            .filter(|k| choice.is_none_or(|c| k.0 == c))
            .copied()
            .collect();
        for key in keys {
            let Some(acc) = self.tools.remove(&key) else {
                continue;
            };
            if acc.id.is_empty() && acc.name.is_empty() {
                continue;
            }
            let input = if acc.custom {
                json_string(&acc.input)
            } else if complete {
                json_text(&acc.input)
            } else {
                json_or_empty(&acc.input)
            };
            facts.push(Fact::Tool {
                response_id: self.response_id.clone(),
                name: acc.name,
                call_id: acc.id,
                input,
                provider_executed: false,
            });
        }
    }

    /// Ends the completion: its open tool calls, then its usage if one was seen (D9).
    fn end_completion(&mut self, facts: &mut Vec<Fact>) {
        self.close_tools(None, facts);
        if let Some(usage) = self.usage.take() {
            facts.push(Fact::Usage {
                response_id: self.response_id.clone(),
                usage,
            });
        }
    }

    /// Accumulates one tool-call delta (`position` stands in for a missing `index`).
    fn on_tool_delta(&mut self, choice: u64, position: usize, d: ToolCallDelta<'_>) {
        let index = d.index.unwrap_or(position as u64);
        let acc = self.tools.entry((choice, index)).or_default();
        if acc.id.is_empty()
            && let Some(id) = d.id
        {
            acc.id = id.into_owned();
        }
        if d.kind.as_deref() == Some("custom") || d.custom.is_some() {
            acc.custom = true;
        }
        let (name, fragment) = match (d.function, d.custom) {
            (_, Some(c)) => (c.name, c.input),
            (Some(f), None) => (f.name, f.arguments),
            (None, None) => (None, None),
        };
        if acc.name.is_empty()
            && let Some(name) = name
        {
            acc.name = name.into_owned();
        }
        if let Some(fragment) = fragment {
            acc.input.push_str(&fragment);
        }
    }
}

impl StreamObserver for ChatStream {
    fn on_frame(&mut self, frame: &Frame, facts: &mut Vec<Fact>) -> Result<FrameAction, String> {
        let Some(data) = frame.data() else {
            return Ok(FrameAction::Relay);
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            self.end_completion(facts);
            return Ok(FrameAction::Relay);
        }
        let chunk: Chunk<'_> = serde_json::from_slice(data).map_err(|e| format!("chunk: {e}"))?;
        if let Some(err) = chunk.error {
            self.error = Some(error_text("upstream stream error", err));
            return Ok(FrameAction::Relay);
        }
        if self.response_id.is_none()
            && let Some(id) = chunk.id.filter(|id| !id.is_empty())
        {
            let id = id.into_owned();
            facts.push(Fact::ResponseId(id.clone()));
            self.response_id = Some(id);
        }
        let choices = chunk.choices.unwrap_or_default();
        let usage_only = choices.is_empty();
        for choice in choices {
            let index = choice.index.unwrap_or(0);
            if let Some(delta) = choice.delta {
                let has_text = |raw: Option<&RawValue>| {
                    raw.is_some_and(|r| r.get().starts_with('"') && r.get() != "\"\"")
                };
                let calls = delta.tool_calls.unwrap_or_default();
                if has_text(delta.content) || has_text(delta.refusal) || !calls.is_empty() {
                    self.content_started = true;
                }
                for (position, call) in calls.into_iter().enumerate() {
                    self.on_tool_delta(index, position, call);
                }
            }
            if choice.finish_reason.is_some() {
                if index == 0 {
                    self.finished = true;
                }
                self.close_tools(Some(index), facts);
            }
        }
        if let Some(u) = object(chunk.usage) {
            self.usage = Some(usage_of(u));
            if usage_only && self.withhold_usage_chunk {
                return Ok(FrameAction::Drop);
            }
        }
        Ok(FrameAction::Relay)
    }

    fn flush(&mut self, facts: &mut Vec<Fact>) {
        self.end_completion(facts);
    }

    fn status(&self) -> StreamStatus {
        match &self.error {
            Some(text) => StreamStatus::UpstreamError(text.clone()),
            None if self.done || self.finished => StreamStatus::Completed,
            None => StreamStatus::Open,
        }
    }

    /// A finished choice is not the end: other choices and the usage chunk may follow
    /// until `[DONE]`.
    fn ended(&self) -> bool {
        self.done && self.error.is_none()
    }

    fn content_started(&self) -> bool {
        self.content_started
    }

    fn terminal_event(&self, message: &str) -> Bytes {
        terminal_event(message)
    }
}

/// A `data:` chunk with an OpenAI error object, and no `[DONE]` (D7).
pub(crate) fn terminal_event(message: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"error\":{{\"message\":{},\"type\":\"server_error\",\"param\":null,\"code\":\"upstream_stream_error\"}}}}\n\n",
        json_string(message)
    ))
}

#[cfg(feature = "mcp")]
pub(crate) mod mcp;
#[cfg(test)]
mod tests;
