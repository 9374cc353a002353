//! Upstream wire shapes for the tool-loop tests (what a provider answers, blocking and
//! streaming, for each API) and client-side accumulators that read what the bridge relayed
//! the way the official SDKs do, checking the invariants they rely on (one start, one end,
//! contiguous indices, consecutive sequence numbers).
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{MockResponse, parse_sse};

/// The three bridged APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Messages,
    Chat,
    Responses,
}

/// Token counts of one upstream message. `input` includes `cached` (OpenAI style); for
/// Anthropic `input` is the uncached input and `cached` the cache reads.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
}

/// One injected or client tool call the model makes.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub args: String,
}

pub fn call(id: &str, name: &str, args: &str) -> Call {
    Call {
        id: id.to_owned(),
        name: name.to_owned(),
        args: args.to_owned(),
    }
}

/// One model answer: optional text, then calls.
#[derive(Debug, Clone)]
pub struct Turn {
    pub id: String,
    pub text: Option<String>,
    pub calls: Vec<Call>,
    pub usage: Usage,
    /// Responses: the injected tool names the upstream echoes in its response objects (the
    /// real API repeats the request's `tools`).
    pub echo: Vec<String>,
}

impl Turn {
    /// Echo these injected tools instead of the reference tool (Responses).
    pub fn echo(mut self, ids: &[&str]) -> Self {
        self.echo = ids.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

pub fn turn(id: &str, text: Option<&str>, calls: Vec<Call>, usage: Usage) -> Turn {
    Turn {
        id: id.to_owned(),
        text: text.map(str::to_owned),
        calls,
        usage,
        echo: vec![crate::TOOL_ID.to_owned()],
    }
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Messages => "/anthropic/v1/messages",
            Api::Chat => "/openai/v1/chat/completions",
            Api::Responses => "/openai/v1/responses",
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Api::Messages => "claude-sonnet-4-5",
            Api::Chat => "gpt-4.1",
            Api::Responses => "gpt-5",
        }
    }

    pub fn provider(self) -> &'static str {
        match self {
            Api::Messages => "anthropic",
            Api::Chat | Api::Responses => "openai",
        }
    }

    /// A client request asking `prompt`, with one client tool (`Read` / `read_file`).
    pub fn request(self, stream: bool, prompt: &str) -> String {
        self.request_with(stream, prompt, self.model())
    }

    pub fn request_with(self, stream: bool, prompt: &str, model: &str) -> String {
        let prompt = serde_json::to_string(prompt).unwrap();
        // Chat streams ask for usage themselves (as Codex and the SDKs' users do).
        let opts = if stream {
            r#""stream_options":{"include_usage":true},"#
        } else {
            ""
        };
        match self {
            Api::Messages => format!(
                r#"{{"model":"{model}","max_tokens":1024,"stream":{stream},"messages":[{{"role":"user","content":{prompt}}}],"tools":[{{"name":"Read","description":"Read a file","input_schema":{{"type":"object","properties":{{"path":{{"type":"string"}}}}}},"cache_control":{{"type":"ephemeral"}}}}]}}"#
            ),
            Api::Chat => format!(
                r#"{{"model":"{model}","stream":{stream},{opts}"messages":[{{"role":"user","content":{prompt}}}],"tools":[{{"type":"function","function":{{"name":"read_file","parameters":{{"type":"object","properties":{{"path":{{"type":"string"}}}}}}}}}}]}}"#
            ),
            Api::Responses => format!(
                r#"{{"model":"{model}","stream":{stream},"input":[{{"role":"user","content":[{{"type":"input_text","text":{prompt}}}]}}],"tools":[{{"type":"function","name":"read_file","parameters":{{"type":"object","properties":{{"path":{{"type":"string"}}}}}},"strict":false}}]}}"#
            ),
        }
    }

    /// The client tool of [`Api::request`].
    pub fn client_tool(self) -> &'static str {
        match self {
            Api::Messages => "Read",
            Api::Chat | Api::Responses => "read_file",
        }
    }

    /// The upstream's answer for `t`.
    pub fn answer(self, stream: bool, t: &Turn) -> MockResponse {
        match (self, stream) {
            (Api::Messages, false) => MockResponse::json(200, anthropic_json(t).to_string()),
            (Api::Messages, true) => MockResponse::sse(anthropic_sse(t)),
            (Api::Chat, false) => MockResponse::json(200, chat_json(t).to_string()),
            (Api::Chat, true) => MockResponse::sse(chat_sse(t)),
            (Api::Responses, false) => MockResponse::json(200, responses_json(t, true).to_string()),
            (Api::Responses, true) => MockResponse::sse(responses_sse(t)),
        }
    }

    /// The recorded TokenUsage numbers of one message: (input, output, cache_read).
    pub fn recorded(self, u: Usage) -> (u64, u64, u64) {
        match self {
            Api::Messages => (u.input, u.output, u.cached),
            Api::Chat | Api::Responses => (u.input - u.cached, u.output, u.cached),
        }
    }

    /// The usage the client should see at the end: the sum over `turns`, in the API's
    /// fields.
    pub fn summed_usage(self, usages: &[Usage]) -> Value {
        let input: u64 = usages.iter().map(|u| u.input).sum();
        let cached: u64 = usages.iter().map(|u| u.cached).sum();
        let output: u64 = usages.iter().map(|u| u.output).sum();
        match self {
            Api::Messages => json!({
                "input_tokens": input,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cached,
                "output_tokens": output,
            }),
            Api::Chat => json!({
                "prompt_tokens": input,
                "completion_tokens": output,
                "total_tokens": input + output,
                "prompt_tokens_details": {"cached_tokens": cached},
            }),
            Api::Responses => json!({
                "input_tokens": input,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": output,
                "total_tokens": input + output,
            }),
        }
    }
}

fn halves(s: &str) -> (String, String) {
    let mut cut = s.len() / 2;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    (s[..cut].to_owned(), s[cut..].to_owned())
}

// === Anthropic ===

fn ev(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn anthropic_usage(u: Usage, output: u64) -> Value {
    json!({
        "input_tokens": u.input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached,
        "output_tokens": output,
    })
}

fn anthropic_stop(t: &Turn) -> &'static str {
    if t.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

pub fn anthropic_json(t: &Turn) -> Value {
    let mut content = Vec::new();
    if let Some(text) = &t.text {
        content.push(json!({"type": "text", "text": text}));
    }
    for c in &t.calls {
        let input: Value = serde_json::from_str(&c.args).unwrap();
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
    }
    json!({
        "id": t.id,
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": anthropic_stop(t),
        "stop_sequence": null,
        "usage": anthropic_usage(t.usage, t.usage.output),
    })
}

pub fn anthropic_sse(t: &Turn) -> String {
    let mut out = ev(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": t.id, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": anthropic_usage(t.usage, 1),
        }}),
    );
    out += &ev("ping", &json!({"type": "ping"}));
    let mut index = 0;
    if let Some(text) = &t.text {
        out += &ev(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        );
        let (a, b) = halves(text);
        for piece in [a, b] {
            out += &ev(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
            );
        }
        out += &ev(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    for c in &t.calls {
        out += &ev(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
        );
        let (a, b) = halves(&c.args);
        for piece in [String::new(), a, b] {
            out += &ev(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            );
        }
        out += &ev(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    out += &ev(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": anthropic_stop(t), "stop_sequence": null}, "usage": {"output_tokens": t.usage.output}}),
    );
    out += &ev("message_stop", &json!({"type": "message_stop"}));
    out
}

// === Chat Completions ===

fn chat_usage(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

pub fn chat_json(t: &Turn) -> Value {
    let mut message =
        json!({"role": "assistant", "content": t.text, "refusal": null, "annotations": []});
    if !t.calls.is_empty() {
        message["tool_calls"] = t
            .calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args}}))
            .collect();
    }
    json!({
        "id": t.id,
        "object": "chat.completion",
        "created": 1_750_000_000,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": if t.calls.is_empty() { "stop" } else { "tool_calls" }}],
        "usage": chat_usage(t.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_1",
    })
}

pub fn chat_sse(t: &Turn) -> String {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({
            "id": t.id, "object": "chat.completion.chunk", "created": 1_750_000_000,
            "model": "gpt-4.1-2025-04-14", "service_tier": "default", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null,
        });
        format!("data: {c}\n\n")
    };
    // With text, OpenAI opens with a role-only chunk; a turn that starts with a tool call
    // carries the role in the first tool-call chunk.
    let mut out = String::new();
    if t.text.is_some() || t.calls.is_empty() {
        out += &chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        );
    }
    if let Some(text) = &t.text {
        let (a, b) = halves(text);
        for piece in [a, b] {
            out += &chunk(json!({"content": piece}), Value::Null);
        }
    }
    for (i, c) in t.calls.iter().enumerate() {
        let mut delta = json!({"tool_calls": [{"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}]});
        if i == 0 && t.text.is_none() {
            delta["role"] = Value::from("assistant");
            delta["content"] = Value::Null;
            delta["refusal"] = Value::Null;
        }
        out += &chunk(delta, Value::Null);
        let (a, b) = halves(&c.args);
        for piece in [a, b] {
            out += &chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            );
        }
    }
    let finish = if t.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    out += &chunk(json!({}), Value::from(finish));
    let usage = json!({
        "id": t.id, "object": "chat.completion.chunk", "created": 1_750_000_000,
        "model": "gpt-4.1-2025-04-14", "service_tier": "default", "system_fingerprint": "fp_1",
        "choices": [], "usage": chat_usage(t.usage),
    });
    out += &format!("data: {usage}\n\ndata: [DONE]\n\n");
    out
}

// === Responses ===

fn responses_usage(u: Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input + u.output,
    })
}

fn message_item(t: &Turn) -> Option<Value> {
    t.text.as_ref().map(|text| {
        json!({"id": format!("msg_{}", t.id), "type": "message", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]})
    })
}

fn call_item(c: &Call) -> Value {
    json!({"id": format!("fc_{}", c.id), "type": "function_call", "status": "completed",
           "arguments": c.args, "call_id": c.id, "name": c.name})
}

/// The echoed `tools` of a response object: the client's tool and (as the real API does
/// when the request carried it) the injected one.
fn echoed_tools(t: &Turn) -> Value {
    let mut tools = vec![
        json!({"type": "function", "name": "read_file", "description": null, "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}, "strict": false}),
    ];
    for id in &t.echo {
        tools.push(json!({"type": "function", "name": id, "description": "an injected tool", "parameters": {"type": "object"}, "strict": false}));
    }
    Value::Array(tools)
}

fn response_object(t: &Turn, done: bool) -> Value {
    let mut output: Vec<Value> = Vec::new();
    if done {
        output.extend(message_item(t));
        output.extend(t.calls.iter().map(call_item));
    }
    json!({
        "id": t.id, "object": "response", "created_at": 1_750_000_000,
        "status": if done { "completed" } else { "in_progress" },
        "background": false, "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": "gpt-5-2025-08-07", "output": output,
        "parallel_tool_calls": false, "previous_response_id": null,
        "reasoning": {"effort": "medium", "summary": null}, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": echoed_tools(t), "top_p": 1.0, "truncation": "disabled",
        "usage": if done { responses_usage(t.usage) } else { Value::Null },
        "user": null, "metadata": {},
    })
}

pub fn responses_json(t: &Turn, _done: bool) -> Value {
    response_object(t, true)
}

pub fn responses_sse(t: &Turn) -> String {
    let mut seq = 0u64;
    let mut out = String::new();
    let mut emit = |kind: &str, mut data: Value| {
        data["type"] = Value::from(kind);
        data["sequence_number"] = Value::from(seq);
        seq += 1;
        out += &ev(kind, &data);
    };
    emit(
        "response.created",
        json!({"response": response_object(t, false)}),
    );
    emit(
        "response.in_progress",
        json!({"response": response_object(t, false)}),
    );
    let mut index = 0;
    if let Some(item) = message_item(t) {
        let id = item["id"].clone();
        let text = t.text.clone().unwrap();
        let mut added = item.clone();
        added["status"] = Value::from("in_progress");
        added["content"] = json!([]);
        emit(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        emit(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
        );
        let (a, b) = halves(&text);
        for piece in [a, b] {
            emit(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": piece, "logprobs": []}),
            );
        }
        emit(
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
        );
        emit(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text}}),
        );
        emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        index += 1;
    }
    for c in &t.calls {
        let item = call_item(c);
        let id = item["id"].clone();
        let mut added = item.clone();
        added["status"] = Value::from("in_progress");
        added["arguments"] = Value::from("");
        emit(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        let (a, b) = halves(&c.args);
        for piece in [a, b] {
            emit(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": piece}),
            );
        }
        emit(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "arguments": c.args}),
        );
        emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        index += 1;
    }
    emit(
        "response.completed",
        json!({"response": response_object(t, true)}),
    );
    out
}

// === what the client sees ===

/// One message as an SDK accumulates it.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// Message / completion / response id.
    pub id: String,
    /// Text blocks (Anthropic), the message content (Chat, one entry if non-empty) or the
    /// `output_text` of each message item (Responses), in order.
    pub texts: Vec<String>,
    /// Tool calls: (id, name, arguments JSON text).
    pub calls: Vec<(String, String, String)>,
    /// `stop_reason` / `finish_reason` / `status`.
    pub stop: String,
    /// The final usage object.
    pub usage: Value,
    /// Responses: the `tools` echoed in every response object seen.
    pub echoed_tools: Vec<Value>,
    /// Keep-alives seen (Anthropic `ping` events, OpenAI `: keep-alive` comments).
    pub keep_alives: usize,
}

impl ClientView {
    pub fn call_names(&self) -> Vec<&str> {
        self.calls.iter().map(|c| c.1.as_str()).collect()
    }
}

pub fn client_view(api: Api, stream: bool, body: &Bytes) -> ClientView {
    let text = String::from_utf8_lossy(body).into_owned();
    match (api, stream) {
        (Api::Messages, false) => anthropic_view(&serde_json::from_slice(body).unwrap()),
        (Api::Messages, true) => anthropic_stream_view(body),
        (Api::Chat, false) => chat_view(&serde_json::from_slice(body).unwrap()),
        (Api::Chat, true) => chat_stream_view(&text, body),
        (Api::Responses, false) => responses_view(&serde_json::from_slice(body).unwrap()),
        (Api::Responses, true) => responses_stream_view(body),
    }
}

fn anthropic_view(v: &Value) -> ClientView {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for b in v["content"].as_array().unwrap() {
        match b["type"].as_str().unwrap() {
            "text" => texts.push(b["text"].as_str().unwrap().to_owned()),
            "tool_use" => calls.push((
                b["id"].as_str().unwrap().to_owned(),
                b["name"].as_str().unwrap().to_owned(),
                b["input"].to_string(),
            )),
            other => panic!("unexpected block {other}"),
        }
    }
    ClientView {
        id: v["id"].as_str().unwrap().to_owned(),
        texts,
        calls,
        stop: v["stop_reason"].as_str().unwrap().to_owned(),
        usage: v["usage"].clone(),
        echoed_tools: Vec::new(),
        keep_alives: 0,
    }
}

fn anthropic_stream_view(body: &Bytes) -> ClientView {
    let events = parse_sse(body);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"message_start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"message_stop"), "{kinds:?}");
    for once in ["message_start", "message_delta", "message_stop"] {
        assert_eq!(
            kinds.iter().filter(|k| **k == once).count(),
            1,
            "{once} must appear exactly once: {kinds:?}"
        );
    }
    let mut id = String::new();
    let mut blocks: Vec<Value> = Vec::new();
    let mut open: Option<usize> = None;
    let mut partial = String::new();
    let mut stop = String::new();
    let mut usage = Value::Null;
    let mut keep_alives = 0;
    for e in &events {
        let v = e.json();
        assert_eq!(
            v["type"].as_str(),
            e.event.as_deref(),
            "event name and type differ"
        );
        match e.event.as_deref().unwrap() {
            "message_start" => {
                id = v["message"]["id"].as_str().unwrap().to_owned();
                usage = v["message"]["usage"].clone();
            }
            "ping" => keep_alives += 1,
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(index, blocks.len(), "block indices must be contiguous");
                assert!(open.is_none(), "a block started while {open:?} is open");
                open = Some(index);
                blocks.push(v["content_block"].clone());
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(Some(index), open, "delta for a block that is not open");
                let d = &v["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = blocks[index]["text"].as_str().unwrap().to_owned()
                            + d["text"].as_str().unwrap();
                        blocks[index]["text"] = Value::from(t);
                    }
                    "input_json_delta" => partial.push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(Some(index), open, "stop for a block that is not open");
                if blocks[index]["type"] == "tool_use" && !partial.is_empty() {
                    blocks[index]["input"] = serde_json::from_str(&partial).unwrap();
                }
                partial.clear();
                open = None;
            }
            "message_delta" => {
                stop = v["delta"]["stop_reason"].as_str().unwrap().to_owned();
                for (k, val) in v["usage"].as_object().unwrap() {
                    usage[k] = val.clone();
                }
            }
            "message_stop" => assert!(open.is_none()),
            other => panic!("unexpected event {other}"),
        }
    }
    let mut view = anthropic_view(&json!({
        "id": id, "content": blocks, "stop_reason": stop, "usage": usage,
    }));
    view.keep_alives = keep_alives;
    view
}

fn chat_view(v: &Value) -> ClientView {
    let msg = &v["choices"][0]["message"];
    ClientView {
        id: v["id"].as_str().unwrap().to_owned(),
        texts: msg["content"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect(),
        calls: msg["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["function"]["name"].as_str().unwrap().to_owned(),
                    c["function"]["arguments"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
        stop: v["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_owned(),
        usage: v["usage"].clone(),
        echoed_tools: Vec::new(),
        keep_alives: 0,
    }
}

fn chat_stream_view(text: &str, body: &Bytes) -> ClientView {
    let keep_alives = text.matches(": keep-alive\n\n").count();
    let events = parse_sse(body);
    let datas: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "last chunk must be [DONE]");
    assert_eq!(
        datas.iter().filter(|d| **d == "[DONE]").count(),
        1,
        "exactly one [DONE]"
    );
    let mut id = String::new();
    let mut content = String::new();
    let mut roles = 0;
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finishes = Vec::new();
    let mut usages = Vec::new();
    for e in &events[..events.len() - 1] {
        let v = e.json();
        if id.is_empty() {
            id = v["id"].as_str().unwrap().to_owned();
        }
        if v["usage"].is_object() {
            usages.push(v["usage"].clone());
        }
        for choice in v["choices"].as_array().unwrap() {
            let d = &choice["delta"];
            if d["role"].is_string() {
                roles += 1;
                assert_eq!(d["role"], "assistant");
            }
            if let Some(c) = d["content"].as_str() {
                content.push_str(c);
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let index = tc["index"].as_u64().unwrap() as usize;
                if index == calls.len() {
                    calls.push((
                        tc["id"].as_str().unwrap().to_owned(),
                        tc["function"]["name"].as_str().unwrap().to_owned(),
                        String::new(),
                    ));
                }
                assert!(index < calls.len(), "tool-call indices must be contiguous");
                calls[index].2 += tc["function"]["arguments"].as_str().unwrap_or("");
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finishes.push(f.to_owned());
            }
        }
    }
    assert_eq!(roles, 1, "the role must be announced once");
    assert_eq!(finishes.len(), 1, "one finish_reason: {finishes:?}");
    assert_eq!(usages.len(), 1, "one usage chunk: {usages:?}");
    ClientView {
        id,
        texts: (!content.is_empty())
            .then_some(content)
            .into_iter()
            .collect(),
        calls,
        stop: finishes.remove(0),
        usage: usages.remove(0),
        echoed_tools: Vec::new(),
        keep_alives,
    }
}

fn responses_view(v: &Value) -> ClientView {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for item in v["output"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                for part in item["content"].as_array().unwrap() {
                    texts.push(part["text"].as_str().unwrap().to_owned());
                }
            }
            "function_call" => calls.push((
                item["call_id"].as_str().unwrap().to_owned(),
                item["name"].as_str().unwrap().to_owned(),
                item["arguments"].as_str().unwrap().to_owned(),
            )),
            other => panic!("unexpected item {other}"),
        }
    }
    ClientView {
        id: v["id"].as_str().unwrap().to_owned(),
        texts,
        calls,
        stop: v["status"].as_str().unwrap().to_owned(),
        usage: v["usage"].clone(),
        echoed_tools: vec![v["tools"].clone()],
        keep_alives: 0,
    }
}

fn responses_stream_view(body: &Bytes) -> ClientView {
    let text = String::from_utf8_lossy(body);
    let keep_alives = text.matches(": keep-alive\n\n").count();
    let events = parse_sse(body);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"response.created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"response.completed"), "{kinds:?}");
    for once in [
        "response.created",
        "response.in_progress",
        "response.completed",
    ] {
        assert_eq!(
            kinds.iter().filter(|k| **k == once).count(),
            1,
            "{once} must appear once: {kinds:?}"
        );
    }
    let mut echoed = Vec::new();
    let mut items: Vec<Value> = Vec::new();
    let mut streamed_text: Vec<String> = Vec::new();
    let mut terminal = Value::Null;
    for (n, e) in events.iter().enumerate() {
        let v = e.json();
        assert_eq!(v["type"].as_str(), e.event.as_deref());
        assert_eq!(
            v["sequence_number"].as_u64(),
            Some(n as u64),
            "sequence numbers must be consecutive from 0: {kinds:?}"
        );
        if v["response"].is_object() {
            echoed.push(v["response"]["tools"].clone());
        }
        match e.event.as_deref().unwrap() {
            "response.output_item.added" => {
                let index = v["output_index"].as_u64().unwrap() as usize;
                assert_eq!(index, items.len(), "output indices must be contiguous");
                items.push(v["item"].clone());
                streamed_text.push(String::new());
            }
            "response.output_text.delta" => {
                let index = v["output_index"].as_u64().unwrap() as usize;
                assert_eq!(index + 1, items.len(), "delta for an item that is not open");
                streamed_text[index] += v["delta"].as_str().unwrap();
            }
            "response.output_item.done" => {
                let index = v["output_index"].as_u64().unwrap() as usize;
                assert_eq!(index + 1, items.len(), "done for an item that is not open");
                items[index] = v["item"].clone();
            }
            "response.completed" => terminal = v["response"].clone(),
            _ => {
                if let Some(index) = v["output_index"].as_u64() {
                    assert_eq!(index as usize + 1, items.len(), "event for a closed item");
                }
            }
        }
    }
    // The terminal response's output is what the SDKs return as the final response.
    assert_eq!(
        terminal["output"].as_array().unwrap(),
        &items,
        "the terminal output must hold the streamed items"
    );
    let mut view = responses_view(&terminal);
    let texts_from_deltas: Vec<String> = streamed_text
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(
        view.texts, texts_from_deltas,
        "streamed text vs final output"
    );
    view.echoed_tools = echoed;
    view.keep_alives = keep_alives;
    view
}
