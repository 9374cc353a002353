//! The Chat Completions stream parser and the terminal error chunk (openai-chat.md
//! "Streaming").

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::usage::{object, usage_of};
use crate::error::json_string;
use crate::intercept::facts::{Fact, FrameAction, StreamStatus, Usage, json_or_empty, json_text};
use crate::intercept::observer::StreamObserver;
use crate::intercept::openai::error_text;
use crate::intercept::request::RequestInfo;
use crate::sse::Frame;

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

    fn content_started(&self) -> bool {
        self.content_started
    }

    /// A finished choice is not the end: other choices and the usage chunk may follow
    /// until `[DONE]`.
    fn ended(&self) -> bool {
        self.done && self.error.is_none()
    }

    fn terminal_event(&self, message: &str) -> Bytes {
        terminal_event(message)
    }

    #[cfg(feature = "mcp")]
    fn error_event(&self, error: &crate::intercept::UpstreamError) -> Bytes {
        let code = error
            .code
            .as_deref()
            .map_or_else(|| "null".to_owned(), json_string);
        Bytes::from(format!(
            "data: {{\"error\":{{\"message\":{},\"type\":{},\"param\":null,\"code\":{code}}}}}\n\n",
            json_string(&error.message),
            json_string(error.kind.as_deref().unwrap_or("server_error")),
        ))
    }

    /// Forgets the finished completion (the tool loop continues with a new one).
    #[cfg(feature = "mcp")]
    fn next_iteration(&mut self, _iteration: u32) {
        self.response_id = None;
        self.usage = None;
        self.tools.clear();
        self.done = false;
        self.finished = false;
        self.error = None;
    }
}

/// A `data:` chunk with an OpenAI error object, and no `[DONE]` (D7).
pub(crate) fn terminal_event(message: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"error\":{{\"message\":{},\"type\":\"server_error\",\"param\":null,\"code\":\"upstream_stream_error\"}}}}\n\n",
        json_string(message)
    ))
}
