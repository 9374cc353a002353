//! OpenAI Responses: request classification, blocking extraction, the stream parser and the
//! terminal error event (openai-responses.md).

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::facts::{Fact, FrameAction, StreamStatus, Usage, json_text};
use super::observer::StreamObserver;
use super::openai::{
    ErrorFields, TextPart, arguments_json, blocking_body, error_text, int_of, string_of, text_parts,
};
use super::request::{RequestInfo, parse_top};
use crate::error::{BridgeError, json_string};
use crate::recorder::ThoughtSource;
use crate::sse::Frame;

// === request ===

/// One `input` item, as far as classification needs it.
#[derive(Deserialize)]
struct InputItem<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    call_id: Option<&'a RawValue>,
}

/// Classifies a Responses request (openai-responses.md "Request intake"); refuses
/// `background: true` (S3).
#[allow(
    clippy::result_large_err,
    reason = "BridgeError is the engine's request error type"
)]
pub(crate) fn parse_request(body: &[u8]) -> Result<RequestInfo, BridgeError> {
    let top = parse_top(body)?;
    let mut info = top.info()?;
    if top.background.is_some_and(|b| b.get() == "true") {
        return Err(BridgeError::background_unsupported());
    }
    let Some(input) = top.input else {
        return Ok(info);
    };
    if input.get().starts_with('"') {
        info.prompt = string_of(input).filter(|p| !p.is_empty());
        return Ok(info);
    }
    let last = serde_json::from_str::<Vec<&RawValue>>(input.get())
        .ok()
        .and_then(|items| items.last().copied())
        .and_then(|item| serde_json::from_str::<InputItem<'_>>(item.get()).ok());
    let Some(last) = last else {
        tracing::debug!("responses input has no usable last item; no prompt");
        return Ok(info);
    };
    if last.role.as_deref() == Some("user") {
        info.prompt = last.content.and_then(prompt_of);
    }
    if matches!(
        last.kind.as_deref(),
        Some("function_call_output" | "custom_tool_call_output")
    ) {
        info.correlating_tool_call_id =
            last.call_id.and_then(string_of).filter(|id| !id.is_empty());
    }
    Ok(info)
}

/// The prompt of a user item's `content`: a string, or its `input_text` parts joined with
/// `\n`.
fn prompt_of(content: &RawValue) -> Option<String> {
    let text = if content.get().starts_with('[') {
        let texts = text_parts(content, "input_text")?;
        if texts.is_empty() {
            return None;
        }
        texts.join("\n")
    } else {
        string_of(content)?
    };
    (!text.is_empty()).then_some(text)
}

// === usage ===

/// A Responses `usage` object; counts stay raw so a non-integer value reads as absent.
#[derive(Deserialize, Default)]
struct UsageView<'a> {
    #[serde(borrow)]
    input_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    output_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    input_tokens_details: Option<InputDetails<'a>>,
    #[serde(borrow)]
    output_tokens_details: Option<OutputDetails<'a>>,
}

/// `usage.input_tokens_details`.
#[derive(Deserialize)]
struct InputDetails<'a> {
    #[serde(borrow)]
    cached_tokens: Option<&'a RawValue>,
}

/// `usage.output_tokens_details`.
#[derive(Deserialize)]
struct OutputDetails<'a> {
    #[serde(borrow)]
    reasoning_tokens: Option<&'a RawValue>,
}

/// A Responses `usage` object as token counts (openai-responses.md "Token usage"); `None`
/// unless it is a JSON object.
fn usage_of(raw: Option<&RawValue>) -> Option<Usage> {
    let raw = raw.filter(|r| r.get().starts_with('{'))?;
    let u: UsageView<'_> = serde_json::from_str(raw.get()).unwrap_or_default();
    let cached = int_of(u.input_tokens_details.and_then(|d| d.cached_tokens)).unwrap_or(0);
    let mut extra = BTreeMap::new();
    if let Some(n) = int_of(u.output_tokens_details.and_then(|d| d.reasoning_tokens)) {
        extra.insert("output_reasoning".to_owned(), n);
    }
    Some(Usage {
        input: int_of(u.input_tokens).unwrap_or(0).saturating_sub(cached),
        output: int_of(u.output_tokens).unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
        extra,
    })
}

// === output items ===

/// One output item: the members any recorded item type uses.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    phase: Option<Cow<'a, str>>,
    #[serde(borrow)]
    summary: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// Appends the ToolUsage or ModelThoughts of one complete output item (openai-responses.md
/// "Model thoughts", "Tool usage"). Items of other types, or of an unexpected shape, add
/// nothing.
fn item_facts(raw: &RawValue, rid: Option<&String>, facts: &mut Vec<Fact>) {
    let Ok(item) = serde_json::from_str::<Item<'_>>(raw.get()) else {
        tracing::debug!("output item of an unexpected shape; not recorded");
        return;
    };
    let own = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned).unwrap_or_default();
    let action = |a: Option<&RawValue>| {
        a.filter(|a| a.get() != "null")
            .map_or_else(|| "{}".to_owned(), |a| json_text(a.get()))
    };
    let kind = item.kind.as_deref().unwrap_or_default();
    let tool = |name: String, call_id: String, input: String, provider_executed: bool| Fact::Tool {
        response_id: rid.cloned(),
        name,
        call_id,
        input,
        provider_executed,
    };
    let fact = match kind {
        "function_call" => tool(
            own(item.name),
            own(item.call_id),
            item.arguments
                .map_or_else(|| "{}".to_owned(), arguments_json),
            false,
        ),
        "custom_tool_call" => tool(
            own(item.name),
            own(item.call_id),
            json_string(&item.input.and_then(string_of).unwrap_or_default()),
            false,
        ),
        "local_shell_call" | "shell_call" | "apply_patch_call" | "computer_call" => tool(
            kind.trim_end_matches("_call").to_owned(),
            own(item.call_id),
            action(item.action),
            false,
        ),
        "web_search_call"
        | "file_search_call"
        | "code_interpreter_call"
        | "image_generation_call" => tool(
            kind.trim_end_matches("_call").to_owned(),
            own(item.id),
            action(item.action),
            true,
        ),
        "mcp_call" => tool(
            own(item.name),
            own(item.id),
            item.arguments
                .map_or_else(|| "{}".to_owned(), arguments_json),
            true,
        ),
        "reasoning" => {
            thoughts(
                item.summary,
                None,
                ThoughtSource::ReasoningSummary,
                rid,
                facts,
            );
            return;
        }
        "message"
            if item.role.as_deref() == Some("assistant")
                && item.phase.as_deref() == Some("commentary") =>
        {
            thoughts(
                item.content,
                Some("output_text"),
                ThoughtSource::Commentary,
                rid,
                facts,
            );
            return;
        }
        _ => return,
    };
    facts.push(fact);
}

/// One ModelThought per part with a non-empty string `text` (and the `type` `part_type`,
/// when given).
fn thoughts(
    parts: Option<&RawValue>,
    part_type: Option<&str>,
    source: ThoughtSource,
    rid: Option<&String>,
    facts: &mut Vec<Fact>,
) {
    let parts = parts
        .and_then(|p| serde_json::from_str::<Vec<&RawValue>>(p.get()).ok())
        .unwrap_or_default();
    for part in parts {
        let Ok(part) = serde_json::from_str::<TextPart<'_>>(part.get()) else {
            continue;
        };
        if part_type.is_none_or(|t| part.kind.as_deref() == Some(t))
            && let Some(text) = part.text.and_then(string_of).filter(|t| !t.is_empty())
        {
            facts.push(Fact::Thought {
                response_id: rid.cloned(),
                content: text,
                source,
            });
        }
    }
}

// === blocking ===

/// A response object (blocking body, or `response` of a streamed event).
#[derive(Deserialize)]
struct ResponseObject<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    output: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// Facts of a blocking Responses body. `Err` when it is not a JSON object.
pub(crate) fn blocking_facts(body: &[u8], facts: &mut Vec<Fact>) -> Result<(), String> {
    let (r, rid) = blocking_body(body, |r: &ResponseObject<'_>| r.id.as_deref(), facts)?;
    for item in r.output.unwrap_or_default() {
        item_facts(item, rid.as_ref(), facts);
    }
    if let Some(usage) = usage_of(r.usage) {
        facts.push(Fact::Usage {
            response_id: rid,
            usage,
        });
    }
    Ok(())
}

// === streaming ===

/// The members of a streamed event the bridge uses (each event uses some of them).
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sequence_number: Option<&'a RawValue>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
    #[serde(borrow)]
    item: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// The Responses stream parser: one upstream response per stream.
#[derive(Debug, Default)]
pub(crate) struct ResponsesStream {
    /// The first non-empty response id.
    response_id: Option<String>,
    /// The last relayed `sequence_number`.
    last_sequence: Option<u64>,
    /// Set by a terminal or `error` event.
    status: Option<StreamStatus>,
    /// A `response.output_item.added` was seen.
    content_started: bool,
}

impl ResponsesStream {
    /// A parser for one stream.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Learns the response id from a response object, the first non-empty one.
    fn learn_id(&mut self, response: &ResponseObject<'_>, facts: &mut Vec<Fact>) {
        if self.response_id.is_none()
            && let Some(id) = response.id.as_deref().filter(|id| !id.is_empty())
        {
            facts.push(Fact::ResponseId(id.to_owned()));
            self.response_id = Some(id.to_owned());
        }
    }

    /// Handles one parsed event named `name`.
    fn on_event(
        &mut self,
        name: &str,
        ev: &Event<'_>,
        facts: &mut Vec<Fact>,
    ) -> Result<(), String> {
        if let Some(n) = int_of(ev.sequence_number) {
            self.last_sequence = Some(n);
        }
        let response = || -> Result<Option<ResponseObject<'_>>, String> {
            ev.response
                .map(|r| serde_json::from_str(r.get()).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        match name {
            "response.created" | "response.in_progress" | "response.queued" => {
                if let Some(r) = response()? {
                    self.learn_id(&r, facts);
                }
            }
            "response.output_item.added" => self.content_started = true,
            "response.output_item.done" => {
                if let Some(item) = ev.item {
                    item_facts(item, self.response_id.as_ref(), facts);
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let r = response()?;
                if let Some(r) = &r {
                    self.learn_id(r, facts);
                    if let Some(usage) = usage_of(r.usage) {
                        facts.push(Fact::Usage {
                            response_id: self.response_id.clone(),
                            usage,
                        });
                    }
                }
                self.status = Some(if name == "response.failed" {
                    let error = r.and_then(|r| r.error).filter(|e| e.get() != "null");
                    StreamStatus::UpstreamError(match error {
                        Some(e) => error_text("upstream response failed", e),
                        None => "upstream response failed".to_owned(),
                    })
                } else {
                    StreamStatus::Completed
                });
            }
            "error" => {
                let text = match ev.error.filter(|e| e.get().starts_with('{')) {
                    Some(e) => error_text("upstream stream error", e),
                    None => ErrorFields {
                        code: ev.code,
                        kind: None,
                        message: ev.message,
                    }
                    .text("upstream stream error"),
                };
                self.status = Some(StreamStatus::UpstreamError(text));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether the bridge reads an event's data.
fn needs_data(name: &str) -> bool {
    matches!(
        name,
        "response.created"
            | "response.in_progress"
            | "response.queued"
            | "response.output_item.done"
            | "response.completed"
            | "response.incomplete"
            | "response.failed"
            | "error"
    )
}

/// The top-level `"sequence_number":N` of an event, found without parsing it (the member
/// comes last in OpenAI's events; a JSON string cannot contain the unescaped pattern).
fn quick_sequence(data: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sequence_number\":";
    let pos = memchr::memmem::rfind(data, KEY)?;
    let rest = &data[pos + KEY.len()..];
    let start = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    let digits = rest[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&rest[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

impl StreamObserver for ResponsesStream {
    fn on_frame(&mut self, frame: &Frame, facts: &mut Vec<Fact>) -> Result<FrameAction, String> {
        let Some(data) = frame.data() else {
            // Includes an `event:` whose data line is malformed: it dispatches nothing.
            return Ok(FrameAction::Relay);
        };
        match frame.event_type() {
            Some(name) if !needs_data(name) => {
                if name == "response.output_item.added" {
                    self.content_started = true;
                }
                if let Some(n) = quick_sequence(&data) {
                    self.last_sequence = Some(n);
                }
            }
            Some(name) => {
                let ev: Event<'_> =
                    serde_json::from_slice(&data).map_err(|e| format!("{name}: {e}"))?;
                self.on_event(name, &ev, facts)?;
            }
            None => {
                // No `event:` line: the data's `type` names the event. Data that is not an
                // event object (e.g. a `[DONE]` some servers add) is relayed untouched.
                let Ok(ev) = serde_json::from_slice::<Event<'_>>(&data) else {
                    tracing::debug!("unnamed event without a JSON object; relayed");
                    return Ok(FrameAction::Relay);
                };
                let name = ev.kind.as_deref().unwrap_or_default();
                self.on_event(name, &ev, facts)?;
            }
        }
        Ok(FrameAction::Relay)
    }

    fn flush(&mut self, _facts: &mut Vec<Fact>) {
        // Items are recorded as they complete; usage only comes with a terminal event.
    }

    fn status(&self) -> StreamStatus {
        self.status.clone().unwrap_or(StreamStatus::Open)
    }

    fn content_started(&self) -> bool {
        self.content_started
    }

    fn terminal_event(&self, message: &str) -> Bytes {
        terminal_event(
            message,
            self.last_sequence.map_or(0, |n| n.saturating_add(1)),
        )
    }

    #[cfg(feature = "mcp")]
    fn error_event(&self, error: &crate::intercept::UpstreamError) -> Bytes {
        let code = error
            .code
            .as_deref()
            .or(error.kind.as_deref())
            .unwrap_or("upstream_stream_error");
        error_event(
            code,
            &error.message,
            self.last_sequence.map_or(0, |n| n.saturating_add(1)),
        )
    }

    /// Forgets the terminal status (the tool loop continues with a new response).
    #[cfg(feature = "mcp")]
    fn next_iteration(&mut self, _iteration: u32) {
        self.response_id = None;
        self.status = None;
    }
}

/// `event: error` with code `upstream_stream_error` and the next sequence number (D7).
pub(crate) fn terminal_event(message: &str, sequence_number: u64) -> Bytes {
    error_event("upstream_stream_error", message, sequence_number)
}

/// `event: error` with `code` and the next sequence number.
fn error_event(code: &str, message: &str, sequence_number: u64) -> Bytes {
    Bytes::from(format!(
        "event: error\ndata: {{\"type\":\"error\",\"code\":{},\"message\":{},\"param\":null,\"sequence_number\":{sequence_number}}}\n\n",
        json_string(code),
        json_string(message)
    ))
}

mod adapter;
#[cfg(feature = "mcp")]
pub(crate) mod mcp;
#[cfg(test)]
mod tests;

pub(crate) use self::adapter::Responses;
