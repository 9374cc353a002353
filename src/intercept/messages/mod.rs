//! Anthropic Messages: request classification, blocking extraction, the stream parser and
//! the terminal error event (anthropic.md).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::facts::{Fact, FrameAction, StreamStatus, Usage, json_or_empty, json_text};
use super::observer::StreamObserver;
use super::request::{RequestInfo, parse_top};
use crate::error::{BridgeError, json_string};
use crate::recorder::ThoughtSource;
use crate::sse::Frame;

// === request ===

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<&'a str>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a str>,
    text: Option<String>,
    tool_use_id: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    user_id: Option<serde_json::Value>,
}

/// Classifies a Messages request (anthropic.md "Request intake").
pub(crate) fn parse_request(body: &[u8]) -> Result<RequestInfo, BridgeError> {
    let top = parse_top(body)?;
    let mut info = top.info()?;
    let messages: Vec<&RawValue> = top
        .messages
        .and_then(|m| {
            serde_json::from_str::<Option<Vec<&RawValue>>>(m.get())
                .ok()
                .flatten()
        })
        .unwrap_or_default();
    // Last message that is not a system message.
    let last = messages
        .iter()
        .rev()
        .filter_map(|m| serde_json::from_str::<Message<'_>>(m.get()).ok())
        .find(|m| m.role != Some("system"));
    if let Some(m) = &last {
        let blocks = m
            .content
            .and_then(|c| serde_json::from_str::<Vec<Block<'_>>>(c.get()).ok());
        if m.role == Some("user") {
            info.prompt = match (&blocks, m.content) {
                (Some(blocks), _) => blocks
                    .iter()
                    .rev()
                    .find(|b| {
                        b.kind == Some("text")
                            && b.text
                                .as_deref()
                                .is_some_and(|t| !t.starts_with("<system-reminder>"))
                    })
                    .and_then(|b| b.text.clone()),
                (None, Some(raw)) => serde_json::from_str::<String>(raw.get()).ok(),
                (None, None) => None,
            }
            .filter(|p| !p.is_empty());
        }
        info.correlating_tool_call_id = blocks.and_then(|blocks| {
            blocks
                .into_iter()
                .rev()
                .find(|b| {
                    b.kind == Some("tool_result")
                        && b.tool_use_id.as_deref().is_some_and(|id| !id.is_empty())
                })
                .and_then(|b| b.tool_use_id)
        });
    }
    if let Some(meta) = top
        .metadata
        .and_then(|m| serde_json::from_str::<Metadata>(m.get()).ok())
        && let Some(serde_json::Value::String(s)) = meta.user_id
    {
        info.metadata_user_id = Some(s);
    }
    Ok(info)
}

// === usage ===

#[derive(Deserialize, Default)]
struct UsageView {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_creation: Option<CacheCreation>,
    server_tool_use: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

/// Usage merged over `message_start` and every `message_delta` (latest value wins, D9).
#[derive(Debug, Default, Clone)]
struct UsageAcc {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    extra: BTreeMap<String, u64>,
}

impl UsageAcc {
    fn merge(&mut self, u: UsageView) {
        let over = |slot: &mut Option<u64>, v: Option<u64>| {
            if v.is_some() {
                *slot = v;
            }
        };
        over(&mut self.input, u.input_tokens);
        over(&mut self.output, u.output_tokens);
        over(&mut self.cache_read, u.cache_read_input_tokens);
        over(&mut self.cache_write, u.cache_creation_input_tokens);
        if let Some(c) = u.cache_creation {
            if let Some(v) = c.ephemeral_5m_input_tokens {
                self.extra.insert("cache_ephemeral_5m_input".to_owned(), v);
            }
            if let Some(v) = c.ephemeral_1h_input_tokens {
                self.extra.insert("cache_ephemeral_1h_input".to_owned(), v);
            }
        }
        for (k, v) in u.server_tool_use.unwrap_or_default() {
            if let Some(n) = v.as_u64() {
                self.extra.insert(k, n);
            }
        }
    }

    fn finish(&self) -> Usage {
        Usage {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_read: self.cache_read.unwrap_or(0),
            cache_write: self.cache_write.unwrap_or(0),
            extra: self.extra.clone(),
        }
    }
}

// === blocking ===

#[derive(Deserialize)]
struct BlockingMessage<'a> {
    id: Option<String>,
    #[serde(borrow, default)]
    content: Vec<ContentBlock<'a>>,
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct ContentBlock<'a> {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    name: Option<String>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    thinking: Option<String>,
}

fn provider_executed(kind: &str) -> Option<bool> {
    match kind {
        "tool_use" => Some(false),
        "server_tool_use" | "mcp_tool_use" => Some(true),
        _ => None,
    }
}

/// Facts of a blocking Messages response body. `Err` when it is not a message object.
pub(crate) fn blocking_facts(body: &[u8], facts: &mut Vec<Fact>) -> Result<(), String> {
    let msg: BlockingMessage<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let rid = msg.id.clone();
    if let Some(id) = &msg.id {
        facts.push(Fact::ResponseId(id.clone()));
    }
    for block in msg.content {
        if let Some(executed) = provider_executed(&block.kind) {
            facts.push(Fact::Tool {
                response_id: rid.clone(),
                name: block.name.unwrap_or_default(),
                call_id: block.id.unwrap_or_default(),
                input: block
                    .input
                    .map_or_else(|| "{}".to_owned(), |r| json_text(r.get())),
                provider_executed: executed,
            });
        } else if block.kind == "thinking"
            && let Some(t) = block.thinking.filter(|t| !t.is_empty())
        {
            facts.push(Fact::Thought {
                response_id: rid.clone(),
                content: t,
                source: ThoughtSource::Thinking,
            });
        }
    }
    let mut acc = UsageAcc::default();
    acc.merge(msg.usage.unwrap_or_default());
    facts.push(Fact::Usage {
        response_id: rid,
        usage: acc.finish(),
    });
    Ok(())
}

// === streaming ===

#[derive(Deserialize)]
struct MessageStart {
    message: StartMessage,
}

#[derive(Deserialize)]
struct StartMessage {
    id: Option<String>,
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct BlockStart<'a> {
    index: usize,
    #[serde(borrow)]
    content_block: ContentBlock<'a>,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    index: usize,
    #[serde(borrow)]
    delta: Delta<'a>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    partial_json: Option<String>,
    thinking: Option<String>,
}

#[derive(Deserialize)]
struct BlockStop {
    index: usize,
}

#[derive(Deserialize)]
struct MessageDelta {
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct ErrorEvent {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

#[derive(Debug)]
enum OpenBlock {
    /// Text and anything else not recorded.
    Other,
    Tool {
        name: String,
        id: String,
        initial: String,
        partial: String,
        provider_executed: bool,
    },
    Thinking(String),
}

/// The Messages stream parser: one upstream message per `message_start`…`message_stop`.
#[derive(Debug, Default)]
pub(crate) struct MessagesStream {
    response_id: Option<String>,
    usage: Option<UsageAcc>,
    blocks: HashMap<usize, OpenBlock>,
    status: Option<StreamStatus>,
    content_started: bool,
}

impl MessagesStream {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn close_block(&mut self, index: usize, facts: &mut Vec<Fact>, complete: bool) {
        let Some(block) = self.blocks.remove(&index) else {
            return;
        };
        let rid = self.response_id.clone();
        match block {
            OpenBlock::Other => {}
            OpenBlock::Tool {
                name,
                id,
                initial,
                partial,
                provider_executed,
            } => {
                let raw = if partial.is_empty() { initial } else { partial };
                let input = if complete {
                    json_text(&raw)
                } else {
                    json_or_empty(&raw)
                };
                facts.push(Fact::Tool {
                    response_id: rid,
                    name,
                    call_id: id,
                    input,
                    provider_executed,
                });
            }
            OpenBlock::Thinking(text) => {
                if !text.is_empty() {
                    facts.push(Fact::Thought {
                        response_id: rid,
                        content: text,
                        source: ThoughtSource::Thinking,
                    });
                }
            }
        }
    }

    fn end_message(&mut self, facts: &mut Vec<Fact>) {
        if let Some(acc) = self.usage.take() {
            facts.push(Fact::Usage {
                response_id: self.response_id.clone(),
                usage: acc.finish(),
            });
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(data: &'a [u8], event: &str) -> Result<T, String> {
    serde_json::from_slice(data).map_err(|e| format!("{event}: {e}"))
}

/// The `"index":N` of an event, found without parsing the JSON (used only to skip text
/// deltas cheaply; a wrong guess falls back to the full parse).
fn quick_index(data: &[u8]) -> Option<usize> {
    let pos = memchr::memmem::find(data, b"\"index\":")?;
    let digits = data[pos + 8..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit());
    let mut n: usize = 0;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

impl StreamObserver for MessagesStream {
    fn on_frame(&mut self, frame: &Frame, facts: &mut Vec<Fact>) -> Result<FrameAction, String> {
        let Some(event) = frame.event_type() else {
            return Ok(FrameAction::Relay);
        };
        let needs_data = matches!(
            event,
            "message_start"
                | "content_block_start"
                | "content_block_delta"
                | "content_block_stop"
                | "message_delta"
                | "error"
        );
        if event == "message_stop" {
            self.end_message(facts);
            self.status = Some(StreamStatus::Completed);
            return Ok(FrameAction::Relay);
        }
        if !needs_data {
            return Ok(FrameAction::Relay);
        }
        let Some(data) = frame.data() else {
            return Err(format!("{event}: missing data"));
        };
        match event {
            "message_start" => {
                let start: MessageStart = parse(&data, event)?;
                // A new message: close out a previous one that never saw message_stop.
                self.end_message(facts);
                if let Some(id) = &start.message.id {
                    facts.push(Fact::ResponseId(id.clone()));
                }
                self.response_id = start.message.id;
                let mut acc = UsageAcc::default();
                acc.merge(start.message.usage.unwrap_or_default());
                self.usage = Some(acc);
            }
            "content_block_start" => {
                let start: BlockStart<'_> = parse(&data, event)?;
                self.content_started = true;
                let b = start.content_block;
                let block = if let Some(executed) = provider_executed(&b.kind) {
                    let initial = b
                        .input
                        .map(|r| r.get().to_owned())
                        .filter(|s| s.trim() != "{}")
                        .unwrap_or_default();
                    OpenBlock::Tool {
                        name: b.name.unwrap_or_default(),
                        id: b.id.unwrap_or_default(),
                        initial,
                        partial: String::new(),
                        provider_executed: executed,
                    }
                } else if b.kind == "thinking" {
                    OpenBlock::Thinking(b.thinking.unwrap_or_default())
                } else {
                    OpenBlock::Other
                };
                self.blocks.insert(start.index, block);
            }
            "content_block_delta" => {
                if let Some(i) = quick_index(&data)
                    && matches!(self.blocks.get(&i), Some(OpenBlock::Other) | None)
                {
                    return Ok(FrameAction::Relay);
                }
                let delta: BlockDelta<'_> = parse(&data, event)?;
                match (self.blocks.get_mut(&delta.index), delta.delta.kind) {
                    (Some(OpenBlock::Tool { partial, .. }), "input_json_delta") => {
                        partial.push_str(delta.delta.partial_json.as_deref().unwrap_or_default());
                    }
                    (Some(OpenBlock::Thinking(text)), "thinking_delta") => {
                        text.push_str(delta.delta.thinking.as_deref().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let stop: BlockStop = parse(&data, event)?;
                self.close_block(stop.index, facts, true);
            }
            "message_delta" => {
                let delta: MessageDelta = parse(&data, event)?;
                if let (Some(acc), Some(u)) = (self.usage.as_mut(), delta.usage) {
                    acc.merge(u);
                }
            }
            "error" => {
                let e: ErrorEvent =
                    serde_json::from_slice(&data).unwrap_or(ErrorEvent { error: None });
                let (kind, message) = e.error.map_or((None, None), |e| (e.kind, e.message));
                let text = match (kind, message) {
                    (Some(k), Some(m)) => format!("upstream stream error: {k}: {m}"),
                    (Some(k), None) => format!("upstream stream error: {k}"),
                    (None, Some(m)) => format!("upstream stream error: {m}"),
                    (None, None) => "upstream stream error".to_owned(),
                };
                self.status = Some(StreamStatus::UpstreamError(text));
            }
            _ => {}
        }
        Ok(FrameAction::Relay)
    }

    fn flush(&mut self, facts: &mut Vec<Fact>) {
        let mut open: Vec<usize> = self.blocks.keys().copied().collect();
        open.sort_unstable();
        for i in open {
            self.close_block(i, facts, false);
        }
        self.end_message(facts);
    }

    fn status(&self) -> StreamStatus {
        self.status.clone().unwrap_or(StreamStatus::Open)
    }

    fn content_started(&self) -> bool {
        self.content_started
    }

    fn terminal_event(&self, message: &str) -> Bytes {
        terminal_event(message)
    }

    #[cfg(feature = "mcp")]
    fn error_event(&self, error: &crate::intercept::UpstreamError) -> Bytes {
        error_event(error.kind.as_deref().unwrap_or("api_error"), &error.message)
    }

    /// Forgets the terminal status (the tool loop continues with a new message).
    #[cfg(feature = "mcp")]
    fn next_iteration(&mut self, _iteration: u32) {
        self.status = None;
    }
}

/// `event: error` with an Anthropic `api_error` (D7).
pub(crate) fn terminal_event(message: &str) -> Bytes {
    error_event("api_error", message)
}

/// `event: error` with an Anthropic error of type `kind`.
fn error_event(kind: &str, message: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Event<'a> {
        r#type: &'a str,
        error: ErrorObj<'a>,
    }
    #[derive(serde::Serialize)]
    struct ErrorObj<'a> {
        r#type: &'a str,
        message: &'a str,
    }
    let value = Event {
        r#type: "error",
        error: ErrorObj {
            r#type: kind,
            message,
        },
    };
    if let Ok(b) = crate::sse::json_event(Some("error"), &value) {
        return b;
    }
    Bytes::from(format!(
        "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":{},\"message\":{}}}}}\n\n",
        json_string(kind),
        json_string(message)
    ))
}

mod adapter;
#[cfg(feature = "mcp")]
pub(crate) mod mcp;
#[cfg(test)]
mod tests;

pub(crate) use self::adapter::Messages;
