//! Anthropic Messages under the MCP tool loop (anthropic.md "MCP injection"): request
//! edits, the assistant and tool-result turns, the blocking final body, and the streaming
//! view that hides injected calls, renumbers blocks and sums usage.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::MessagesStream;
use crate::intercept::facts::{Fact, FrameAction};
use crate::intercept::json_edit::{
    Edit, Obj, apply, array_append, array_prepend, merge_same_point,
};
use crate::intercept::tool_loop::{
    BlockingTurn, Decision, Ending, Executed, McpView, Rewrite, ToolCall, Tools, Turn, UsageSum,
    ViewLoop, merge_usage,
};
use crate::mcp::InjectedTool;
use crate::sse::Frame;

/// `{"name":…,"description":…,"input_schema":…}` with a fixed key order.
fn tool_json(t: &InjectedTool) -> String {
    let name = serde_json::to_string(&t.id).unwrap_or_default();
    match &t.description {
        Some(d) if !d.is_empty() => format!(
            r#"{{"name":{name},"description":{},"input_schema":{}}}"#,
            serde_json::to_string(d).unwrap_or_default(),
            t.input_schema.get()
        ),
        _ => format!(
            r#"{{"name":{name},"input_schema":{}}}"#,
            t.input_schema.get()
        ),
    }
}

/// The `tool_choice` edit of the injection table.
fn tool_choice_edit(body: &[u8], top: &Obj<'_>) -> Option<Edit> {
    const DISABLE: &str = r#"{"type":"auto","disable_parallel_tool_use":true}"#;
    let Some(raw) = top.get("tool_choice") else {
        return top.set("tool_choice", DISABLE);
    };
    if raw.get() == "null" {
        return top.set("tool_choice", DISABLE);
    }
    let Some(obj) = Obj::at(body, raw) else {
        tracing::warn!("tool_choice is not an object; left unchanged");
        return None;
    };
    let kind = obj
        .get("type")
        .map(|t| serde_json::from_str::<Value>(t.get()).unwrap_or(Value::Null));
    let rebuild = || {
        // Missing or empty `type`: set it to "auto" and disable parallel tool use.
        let mut v: Map<String, Value> = serde_json::from_str(raw.get()).ok()?;
        v.insert("type".into(), Value::from("auto"));
        v.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        Some(Edit {
            range: top.value_range(raw)?,
            text: Value::Object(v).to_string(),
        })
    };
    match kind {
        None | Some(Value::Null) => rebuild(),
        Some(Value::String(t)) if t.is_empty() => rebuild(),
        Some(Value::String(t)) if matches!(t.as_str(), "auto" | "any" | "tool") => {
            obj.set("disable_parallel_tool_use", "true")
        }
        Some(Value::String(t)) if t == "none" => None,
        _ => {
            tracing::warn!("tool_choice has an unknown type; left unchanged");
            None
        }
    }
}

/// The upstream body of one loop iteration: the client's bytes with the injected tools
/// (unless `tools` is None: the final call after the bound) and the appended turns.
pub(crate) fn request_body(
    original: &[u8],
    tools: Option<&Tools>,
    turns: &[String],
) -> Option<Bytes> {
    let top = Obj::top(original)?;
    let mut edits = Vec::new();
    if let Some(tools) = tools.filter(|t| !t.0.is_empty()) {
        let items: Vec<String> = tools.0.iter().map(tool_json).collect();
        let items = items.join(",");
        match top.get("tools") {
            Some(raw) if raw.get().starts_with('[') => {
                edits.push(array_prepend(original, raw, &items)?);
            }
            Some(raw) if raw.get() == "null" => {
                edits.push(top.set("tools", &format!("[{items}]"))?);
            }
            Some(_) => return None,
            None => edits.push(top.set("tools", &format!("[{items}]"))?),
        }
        if let Some(e) = tool_choice_edit(original, &top) {
            edits.push(e);
        }
    }
    if !turns.is_empty() {
        let messages = top.get("messages")?;
        edits.push(array_append(original, messages, &turns.join(","))?);
    }
    // Two appends at the same closing brace (tools and tool_choice both new): keep order.
    edits.sort_by_key(|e| e.range.start);
    merge_same_point(original, &mut edits);
    Some(apply(original, edits))
}

/// The user message with one `tool_result` per executed (or refused) call (S16).
pub(crate) fn tool_results_turn(
    results: &[Executed],
    max_bytes: usize,
    note: Option<&str>,
) -> String {
    let blocks: Vec<Value> = results
        .iter()
        .map(|r| {
            let content = match note {
                Some(n) => serde_json::json!([{"type": "text", "text": n}]),
                None => r.outcome.anthropic_content(max_bytes),
            };
            serde_json::json!({
                "type": "tool_result",
                "tool_use_id": r.call.call_id,
                "content": content,
                "is_error": note.is_some() || r.outcome.is_error(),
            })
        })
        .collect();
    serde_json::json!({"role": "user", "content": blocks}).to_string()
}

// === blocking ===

/// Reads a blocking response body for the loop.
pub(crate) fn blocking_turn(body: &[u8], tools: &Tools) -> Option<BlockingTurn> {
    #[derive(serde::Deserialize)]
    struct Msg<'a> {
        id: Option<String>,
        #[serde(borrow)]
        content: Option<&'a RawValue>,
        usage: Option<Map<String, Value>>,
    }
    #[derive(serde::Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type")]
        kind: Option<String>,
        id: Option<String>,
        name: Option<String>,
        #[serde(borrow)]
        input: Option<&'a RawValue>,
    }
    let msg: Msg<'_> = serde_json::from_slice(body).ok()?;
    let mut out = BlockingTurn {
        usage: msg.usage.unwrap_or_default(),
        ..BlockingTurn::default()
    };
    out.turn.response_id = msg.id;
    let content = msg.content?;
    let blocks: Vec<&RawValue> = serde_json::from_str(content.get()).ok()?;
    for raw in &blocks {
        let Ok(b) = serde_json::from_str::<Block<'_>>(raw.get()) else {
            continue;
        };
        if b.kind.as_deref() != Some("tool_use") {
            continue;
        }
        let name = b.name.unwrap_or_default();
        if tools.contains(&name) {
            out.turn.calls.push(ToolCall {
                call_id: b.id.unwrap_or_default(),
                tool_id: name,
                raw_input: b.input.map(|i| i.get().to_owned()).unwrap_or_default(),
            });
        } else {
            out.client_tool = true;
        }
    }
    out.turn.assistant.push(format!(
        r#"{{"role":"assistant","content":{}}}"#,
        content.get()
    ));
    Some(out)
}

/// The final blocking body the client gets (S19): usage summed over iterations (when
/// there was more than one) and injected calls hidden, `stop_reason` fixed.
pub(crate) fn final_blocking(body: &Bytes, sum: Option<&UsageSum>, tools: &Tools) -> Bytes {
    let Some(top) = Obj::top(body) else {
        return body.clone();
    };
    let mut edits = Vec::new();
    let mut hidden = false;
    let mut client_tool = false;
    if let Some(content) = top.get("content")
        && let Ok(blocks) = serde_json::from_str::<Vec<&RawValue>>(content.get())
    {
        let keep: Vec<&str> = blocks
            .iter()
            .filter(|b| {
                let v: Value = serde_json::from_str(b.get()).unwrap_or(Value::Null);
                let injected = v["type"] == "tool_use"
                    && v["name"].as_str().is_some_and(|n| tools.contains(n));
                client_tool |= v["type"] == "tool_use" && !injected;
                hidden |= injected;
                !injected
            })
            .map(|b| b.get())
            .collect();
        if hidden && let Some(r) = top.value_range(content) {
            edits.push(Edit {
                range: r,
                text: format!("[{}]", keep.join(",")),
            });
        }
    }
    if hidden
        && !client_tool
        && let Some(sr) = top.get("stop_reason")
        && sr.get() == r#""tool_use""#
        && let Some(r) = top.value_range(sr)
    {
        edits.push(Edit {
            range: r,
            text: r#""end_turn""#.to_owned(),
        });
    }
    if let Some(sum) = sum
        && let Some(usage) = top.get("usage")
        && let Some(uobj) = Obj::at(body, usage)
    {
        for (k, v) in &sum.0 {
            if let Some(e) = uobj.set(k, &v.to_string()) {
                edits.push(e);
            }
        }
    }
    edits.sort_by_key(|e| e.range.start);
    merge_same_point(body, &mut edits);
    apply(body, edits)
}

// === streaming ===

/// The streaming view of a Messages tool loop: hides injected calls, renumbers blocks,
/// sums usage and builds the assistant turn.
pub(crate) type McpMessages = McpView<MessagesRewrite>;

/// A Messages view with `tools` injected, bounded by `max_iterations`.
pub(crate) fn view(tools: Arc<Tools>, max_iterations: u32) -> McpMessages {
    McpView::new(
        MessagesStream::new(),
        MessagesRewrite::default(),
        tools,
        max_iterations,
    )
}

/// The Messages event rewriting under the tool loop.
#[derive(Debug, Default)]
pub(crate) struct MessagesRewrite {
    /// Client-visible blocks relayed in earlier iterations.
    relayed_before: usize,
    msg: MessageState,
}

#[derive(Debug, Default)]
struct MessageState {
    response_id: Option<String>,
    hidden: BTreeSet<usize>,
    index_map: HashMap<usize, usize>,
    visible: usize,
    builders: BTreeMap<usize, Value>,
    partial: HashMap<usize, String>,
    calls: Vec<ToolCall>,
    client_tool: bool,
    stop_reason: Option<String>,
}

impl MessageState {
    /// How the message ends, for the loop's decision.
    fn ending(&self) -> Ending {
        Ending {
            injected: !self.calls.is_empty(),
            client_tool: self.client_tool,
            complete: true,
        }
    }
}

impl MessagesRewrite {
    fn renumber(&self, data: &[u8], index: usize) -> FrameAction {
        match self.msg.index_map.get(&index) {
            Some(&ci) if ci == index => FrameAction::Relay,
            Some(&ci) => reencode(data, "index", &ci.to_string()),
            None => FrameAction::Relay,
        }
    }

    fn final_delta(&self, lp: &ViewLoop, data: &[u8]) -> FrameAction {
        let Some(top) = Obj::top(data) else {
            return FrameAction::Relay;
        };
        let mut edits = Vec::new();
        if !self.msg.hidden.is_empty()
            && !self.msg.client_tool
            && self.msg.stop_reason.as_deref() == Some("tool_use")
            && let Some(delta) = top.get("delta")
            && let Some(d) = Obj::at(data, delta)
            && let Some(e) = d.set("stop_reason", r#""end_turn""#)
        {
            edits.push(e);
        }
        if let Some(sum) = lp.summed() {
            match top.get("usage").and_then(|u| Obj::at(data, u)) {
                Some(u) => {
                    for (k, v) in &sum {
                        if let Some(e) = u.set(k, &v.to_string()) {
                            edits.push(e);
                        }
                    }
                }
                None => {
                    if let Some(e) = top.set("usage", &Value::Object(sum).to_string()) {
                        edits.push(e);
                    }
                }
            }
        }
        if edits.is_empty() {
            return FrameAction::Relay;
        }
        edits.sort_by_key(|e| e.range.start);
        merge_same_point(data, &mut edits);
        FrameAction::Replace(event_bytes("message_delta", &apply(data, edits)))
    }
}

/// `event: <type>\ndata: <json>\n\n`.
fn event_bytes(kind: &str, data: &[u8]) -> Bytes {
    crate::sse::event(Some(kind), data)
}

/// The event re-encoded with one top-level member changed.
fn reencode(data: &[u8], key: &str, value: &str) -> FrameAction {
    let Ok(v) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return FrameAction::Relay;
    };
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(top) = Obj::top(data) else {
        return FrameAction::Relay;
    };
    let Some(e) = top.set(key, value) else {
        return FrameAction::Relay;
    };
    FrameAction::Replace(event_bytes(&kind, &apply(data, vec![e])))
}

fn index_of(v: &Value) -> Option<usize> {
    v.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
}

impl Rewrite for MessagesRewrite {
    type Inner = MessagesStream;

    fn on_frame(
        &mut self,
        lp: &mut ViewLoop,
        frame: &Frame,
        inner_action: FrameAction,
        facts: &mut Vec<Fact>,
    ) -> Result<FrameAction, String> {
        let Some(event) = frame.event_type() else {
            return Ok(inner_action);
        };
        let Some(data) = frame.data() else {
            return Ok(inner_action);
        };
        let v: Value = match event {
            "message_start"
            | "content_block_start"
            | "content_block_delta"
            | "content_block_stop"
            | "message_delta" => {
                serde_json::from_slice(&data).map_err(|e| format!("{event}: {e}"))?
            }
            "message_stop" => Value::Null,
            _ => return Ok(inner_action),
        };
        let action = match event {
            "message_start" => {
                self.msg.response_id = v["message"]["id"].as_str().map(str::to_owned);
                if let Some(u) = v["message"]["usage"].as_object() {
                    merge_usage(&mut lp.usage, u);
                }
                if lp.first() { FrameAction::Relay } else { FrameAction::Drop }
            }
            "content_block_start" => {
                let index = index_of(&v).ok_or("content_block_start: no index")?;
                let block = v.get("content_block").cloned().unwrap_or(Value::Null);
                let is_tool_use = block["type"] == "tool_use";
                let name = block["name"].as_str().unwrap_or_default().to_owned();
                self.msg.builders.insert(index, block);
                if is_tool_use && lp.tools().contains(&name) {
                    self.msg.hidden.insert(index);
                    FrameAction::Drop
                } else {
                    self.msg.client_tool |= is_tool_use;
                    let ci = self.relayed_before + self.msg.visible;
                    self.msg.visible += 1;
                    self.msg.index_map.insert(index, ci);
                    self.renumber(&data, index)
                }
            }
            "content_block_delta" => {
                let index = index_of(&v).ok_or("content_block_delta: no index")?;
                let delta = &v["delta"];
                if let Some(b) = self.msg.builders.get_mut(&index) {
                    match delta["type"].as_str().unwrap_or_default() {
                        "text_delta" => append(b, "text", delta["text"].as_str()),
                        "thinking_delta" => append(b, "thinking", delta["thinking"].as_str()),
                        "signature_delta" => {
                            b["signature"] = delta["signature"].clone();
                        }
                        "input_json_delta" => {
                            self.msg.partial.entry(index).or_default().push_str(delta["partial_json"].as_str().unwrap_or_default());
                        }
                        "citations_delta" => {
                            if let Some(arr) = b.get_mut("citations").and_then(Value::as_array_mut) {
                                arr.push(delta["citation"].clone());
                            } else {
                                b["citations"] = Value::Array(vec![delta["citation"].clone()]);
                            }
                        }
                        _ => {}
                    }
                }
                if self.msg.hidden.contains(&index) { FrameAction::Drop } else { self.renumber(&data, index) }
            }
            "content_block_stop" => {
                let index = index_of(&v).ok_or("content_block_stop: no index")?;
                let partial = self.msg.partial.remove(&index);
                if let Some(b) = self.msg.builders.get_mut(&index)
                    && let Some(p) = &partial
                    && !p.trim().is_empty()
                {
                    b["input"] = serde_json::from_str(p).unwrap_or_else(|_| Value::Object(Map::new()));
                }
                if self.msg.hidden.contains(&index) {
                    let b = &self.msg.builders[&index];
                    self.msg.calls.push(ToolCall {
                        call_id: b["id"].as_str().unwrap_or_default().to_owned(),
                        tool_id: b["name"].as_str().unwrap_or_default().to_owned(),
                        raw_input: partial.filter(|p| !p.trim().is_empty()).unwrap_or_else(|| b["input"].to_string()),
                    });
                    FrameAction::Drop
                } else {
                    self.renumber(&data, index)
                }
            }
            "message_delta" => {
                if let Some(u) = v["usage"].as_object() {
                    merge_usage(&mut lp.usage, u);
                }
                self.msg.stop_reason = v["delta"]["stop_reason"].as_str().map(str::to_owned);
                if lp.decide(self.msg.ending()).continues() { FrameAction::Drop } else { self.final_delta(lp, &data) }
            }
            _ /* message_stop */ => match lp.decide(self.msg.ending()) {
                Decision::Finish(reason) => {
                    if let Some(reason) = reason {
                        let calls = std::mem::take(&mut self.msg.calls);
                        lp.not_executed(self.msg.response_id.clone(), calls, reason, facts);
                    }
                    FrameAction::Relay
                }
                Decision::Execute | Decision::LastCall => {
                    lp.set_calls_tools();
                    FrameAction::Drop
                }
            },
        };
        Ok(action)
    }

    fn take_turn(&mut self) -> Turn {
        let content: Vec<Value> = std::mem::take(&mut self.msg.builders)
            .into_values()
            .collect();
        Turn {
            response_id: self.msg.response_id.clone(),
            assistant: vec![
                serde_json::json!({"role": "assistant", "content": content}).to_string(),
            ],
            calls: std::mem::take(&mut self.msg.calls),
        }
    }

    fn next_message(&mut self) {
        self.relayed_before += self.msg.visible;
        self.msg = MessageState::default();
    }
}

fn append(b: &mut Value, key: &str, text: Option<&str>) {
    let text = text.unwrap_or_default();
    match b.get_mut(key) {
        Some(Value::String(s)) => s.push_str(text),
        _ => b[key] = Value::from(text),
    }
}

#[cfg(test)]
mod tests;
