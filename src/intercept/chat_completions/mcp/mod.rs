//! Chat Completions under the MCP tool loop (openai-chat.md "MCP injection"): request
//! edits, turns, the blocking final body, and the streaming view that hides injected
//! tool-call deltas, renumbers visible ones, hides intermediate ends and sums usage.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::ChatStream;
use crate::intercept::facts::{Fact, FrameAction, StreamStatus};
use crate::intercept::json_edit::{Edit, Obj, apply, array_append, merge_same_point};
use crate::intercept::observer::StreamObserver;
use crate::intercept::request::RequestInfo;
use crate::intercept::tool_loop::{Executed, ToolCall, Tools, Turn, UsageSum, not_executed};
use crate::mcp::InjectedTool;
use crate::sse::Frame;

fn tool_json(t: &InjectedTool) -> String {
    let name = serde_json::to_string(&t.id).unwrap_or_default();
    let description = t
        .description
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|d| {
            format!(
                r#","description":{}"#,
                serde_json::to_string(d).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!(
        r#"{{"type":"function","function":{{"name":{name}{description},"parameters":{},"strict":false}}}}"#,
        t.input_schema.get()
    )
}

/// Edits that add the injected tools (appended) and `parallel_tool_calls: false`.
pub(crate) fn inject_edits(original: &[u8], top: &Obj<'_>, items: &str) -> Option<Vec<Edit>> {
    let mut edits = Vec::new();
    match top.get("tools") {
        Some(raw) if raw.get().starts_with('[') => edits.push(array_append(original, raw, items)?),
        Some(raw) if raw.get() == "null" => edits.push(top.set("tools", &format!("[{items}]"))?),
        Some(_) => return None,
        None => edits.push(top.set("tools", &format!("[{items}]"))?),
    }
    edits.push(top.set("parallel_tool_calls", "false")?);
    Some(edits)
}

/// The upstream body of one iteration: client bytes + injected tools (unless `None`) +
/// the appended messages; with the S2 usage request for streams.
pub(crate) fn request_body(
    original: &[u8],
    tools: Option<&Tools>,
    turns: &[String],
) -> Option<Bytes> {
    let top = Obj::top(original)?;
    let mut edits = Vec::new();
    if let Some(tools) = tools.filter(|t| !t.0.is_empty()) {
        let items: Vec<String> = tools.0.iter().map(tool_json).collect();
        edits.extend(inject_edits(original, &top, &items.join(","))?);
    }
    if !turns.is_empty() {
        edits.push(array_append(
            original,
            top.get("messages")?,
            &turns.join(","),
        )?);
    }
    merge_same_point(original, &mut edits);
    Some(apply(original, edits))
}

/// The S2 edit on top of a loop body (streams must ask for usage).
pub(crate) fn with_usage_request(info: &RequestInfo, body: Bytes) -> Bytes {
    super::upstream_body(info, body)
}

/// One `tool` message per executed (or refused) call.
pub(crate) fn tool_results_turns(
    results: &[Executed],
    max_bytes: usize,
    note: Option<&str>,
) -> Vec<String> {
    results
        .iter()
        .map(|r| {
            let content = note.map_or_else(|| r.outcome.text(max_bytes), str::to_owned);
            serde_json::json!({"role": "tool", "tool_call_id": r.call.call_id, "content": content})
                .to_string()
        })
        .collect()
}

fn assistant_turn(content: Option<&str>, calls: &[(String, String, String)]) -> String {
    let tool_calls: Vec<Value> = calls
        .iter()
        .filter(|(id, _, _)| !id.is_empty())
        .map(|(id, name, args)| serde_json::json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    serde_json::json!({"role": "assistant", "content": content, "tool_calls": tool_calls})
        .to_string()
}

// === blocking ===

/// What a blocking completion asks of the loop.
#[derive(Debug, Default)]
pub(crate) struct BlockingTurn {
    pub(crate) turn: Turn,
    pub(crate) client_tool: bool,
    pub(crate) usage: Map<String, Value>,
}

/// Reads a blocking completion (choice 0 drives the loop).
pub(crate) fn blocking_turn(body: &[u8], tools: &Tools) -> Option<BlockingTurn> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut out = BlockingTurn {
        usage: v["usage"].as_object().cloned().unwrap_or_default(),
        ..BlockingTurn::default()
    };
    out.turn.response_id = v["id"].as_str().map(str::to_owned);
    let msg = &v["choices"][0]["message"];
    let mut calls = Vec::new();
    for c in msg["tool_calls"].as_array().into_iter().flatten() {
        let name = c["function"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let id = c["id"].as_str().unwrap_or_default().to_owned();
        let args = c["function"]["arguments"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if tools.contains(&name) {
            out.turn.calls.push(ToolCall {
                call_id: id.clone(),
                tool_id: name.clone(),
                raw_input: args.clone(),
            });
            calls.push((id, name, args));
        } else {
            out.client_tool = true;
        }
    }
    out.turn
        .assistant
        .push(assistant_turn(msg["content"].as_str(), &calls));
    Some(out)
}

/// The final blocking body (S19): summed usage, injected calls removed from choice 0.
pub(crate) fn final_blocking(body: &Bytes, sum: Option<&UsageSum>, tools: &Tools) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    let mut changed = false;
    if let Some(msg) = v.pointer_mut("/choices/0/message")
        && let Some(calls) = msg.get_mut("tool_calls").and_then(Value::as_array_mut)
    {
        let before = calls.len();
        calls.retain(|c| {
            !c["function"]["name"]
                .as_str()
                .is_some_and(|n| tools.contains(n))
        });
        if calls.len() != before {
            changed = true;
            let empty = calls.is_empty();
            if empty && let Some(m) = msg.as_object_mut() {
                m.remove("tool_calls");
            }
            if empty
                && v.pointer("/choices/0/finish_reason")
                    .and_then(Value::as_str)
                    == Some("tool_calls")
            {
                v["choices"][0]["finish_reason"] = Value::from("stop");
            }
        }
    }
    if !changed {
        // Only usage changes: edit in place, every other byte as received.
        let Some(sum) = sum else { return body.clone() };
        let Some(top) = Obj::top(body) else {
            return body.clone();
        };
        let Some(u) = top.get("usage").and_then(|u| Obj::at(body, u)) else {
            return body.clone();
        };
        let mut edits: Vec<Edit> = sum
            .0
            .iter()
            .filter_map(|(k, val)| u.set(k, &val.to_string()))
            .collect();
        merge_same_point(body, &mut edits);
        return apply(body, edits);
    }
    if let Some(sum) = sum {
        v["usage"] = Value::Object(sum.0.clone());
    }
    Bytes::from(v.to_string())
}

// === streaming ===

#[derive(Debug, Default)]
struct CallState {
    hidden: bool,
    id: String,
    name: String,
    args: String,
}

#[derive(Debug, Default)]
struct CompletionState {
    response_id: Option<String>,
    /// Tool calls of choice 0 by upstream index.
    calls: BTreeMap<u64, CallState>,
    /// Visible calls relayed in this completion.
    visible: u64,
    index_map: BTreeMap<u64, u64>,
    content: String,
    usage: Map<String, Value>,
    finish: Option<String>,
    continues: bool,
}

/// The streaming view of a Chat tool loop.
#[derive(Debug)]
pub(crate) struct McpChat {
    inner: ChatStream,
    tools: Arc<Tools>,
    client_include_usage: bool,
    iteration: u32,
    last: bool,
    relayed_calls_before: u64,
    /// The client has received `delta.role` (once is what SDK accumulators expect).
    role_sent: bool,
    sum: UsageSum,
    c: CompletionState,
    status: Option<StreamStatus>,
}

impl McpChat {
    pub(crate) fn new(info: &RequestInfo, tools: Arc<Tools>) -> Self {
        Self {
            inner: ChatStream::new(info),
            tools,
            client_include_usage: info.client_include_usage,
            iteration: 1,
            last: false,
            relayed_calls_before: 0,
            role_sent: false,
            sum: UsageSum::default(),
            c: CompletionState::default(),
            status: None,
        }
    }

    fn injected_pending(&self) -> bool {
        self.c.calls.values().any(|c| c.hidden)
    }

    fn client_calls(&self) -> bool {
        self.c
            .calls
            .values()
            .any(|c| !c.hidden && !c.name.is_empty())
    }

    fn summed(&self) -> Map<String, Value> {
        let mut sum = self.sum.clone();
        sum.add(&self.c.usage);
        sum.0
    }
}

impl StreamObserver for McpChat {
    fn on_frame(&mut self, frame: &Frame, facts: &mut Vec<Fact>) -> Result<FrameAction, String> {
        let before = facts.len();
        let inner_action = self.inner.on_frame(frame, facts)?;
        crate::intercept::tool_loop::drop_injected(facts, before, &self.tools);
        let Some(data) = frame.data() else {
            return Ok(inner_action);
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            if self.c.continues || self.status == Some(StreamStatus::ToolCalls) {
                self.status = Some(StreamStatus::ToolCalls);
                return Ok(FrameAction::Drop);
            }
            return Ok(inner_action);
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
            return Ok(inner_action);
        };
        if v.get("error").is_some() {
            return Ok(inner_action);
        }
        if self.c.response_id.is_none() {
            self.c.response_id = v["id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
        }
        let mut changed = false;
        let mut visible = false;
        let has_usage = v["usage"].is_object();
        if let Some(u) = v["usage"].as_object() {
            self.c.usage = u.clone();
        }
        let choices = v["choices"].as_array().cloned().unwrap_or_default();
        let mut finish_in_chunk = false;
        let mut carries_role = false;
        for (ci, choice) in choices.iter().enumerate() {
            let index = choice["index"].as_u64().unwrap_or(0);
            if index != 0 {
                visible = true; // other choices are relayed as received
                continue;
            }
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str() {
                self.c.content.push_str(text);
            }
            let has_content = delta["content"].as_str().is_some_and(|s| !s.is_empty())
                || delta["refusal"].as_str().is_some_and(|s| !s.is_empty());
            let has_role = delta.get("role").is_some_and(|r| !r.is_null());
            carries_role |= has_role;
            let role_only = has_role && !has_content && delta.get("tool_calls").is_none();
            if has_content {
                visible = true;
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                let mut kept = Vec::new();
                for (pos, call) in calls.iter().enumerate() {
                    let tindex = call["index"].as_u64().unwrap_or(pos as u64);
                    let state = self.c.calls.entry(tindex).or_default();
                    if state.id.is_empty()
                        && let Some(id) = call["id"].as_str()
                    {
                        state.id = id.to_owned();
                    }
                    if state.name.is_empty()
                        && let Some(name) = call["function"]["name"].as_str()
                    {
                        state.name = name.to_owned();
                        state.hidden = self.tools.contains(name);
                    }
                    if let Some(a) = call["function"]["arguments"].as_str() {
                        state.args.push_str(a);
                    }
                    if state.hidden {
                        changed = true;
                        continue;
                    }
                    let client_index = match self.c.index_map.get(&tindex) {
                        Some(ci) => *ci,
                        None => {
                            let ci = self.relayed_calls_before + self.c.visible;
                            self.c.visible += 1;
                            self.c.index_map.insert(tindex, ci);
                            ci
                        }
                    };
                    let mut call = call.clone();
                    if client_index != tindex {
                        call["index"] = Value::from(client_index);
                        changed = true;
                    }
                    kept.push(call);
                }
                if kept.is_empty() {
                    if let Some(d) = v["choices"][ci]["delta"].as_object_mut() {
                        d.remove("tool_calls");
                    }
                } else {
                    visible = true;
                    v["choices"][ci]["delta"]["tool_calls"] = Value::Array(kept);
                }
            }
            if let Some(fr) = choice["finish_reason"].as_str() {
                finish_in_chunk = true;
                self.c.finish = Some(fr.to_owned());
                self.c.continues = self.injected_pending() && !self.client_calls() && !self.last;
                if !self.c.continues {
                    visible = true;
                    if self.injected_pending() && !self.client_calls() && fr == "tool_calls" {
                        v["choices"][ci]["finish_reason"] = Value::from("stop");
                        changed = true;
                    }
                }
            }
            if self.iteration > 1
                && self.role_sent
                && role_only
                && choice["finish_reason"].is_null()
                && !has_usage
            {
                // The opening chunk of iterations 2…n.
                return Ok(FrameAction::Drop);
            }
            if role_only && self.iteration == 1 {
                visible = true;
            }
            if has_role && !self.role_sent {
                // The role must reach the client once, even when the chunk that carries it
                // held nothing but injected calls (OpenAI puts the role into the first
                // tool-call chunk when there is no text): relayed without them.
                visible = true;
            }
        }
        if self.c.continues && (finish_in_chunk || choices.is_empty()) {
            // The end of an iteration that calls injected tools: hidden.
            return Ok(FrameAction::Drop);
        }
        if has_usage && !self.c.continues {
            if choices.is_empty()
                && !self.client_include_usage
                && matches!(inner_action, FrameAction::Drop)
            {
                return Ok(FrameAction::Drop);
            }
            if self.iteration > 1 {
                v["usage"] = Value::Object(self.summed());
                changed = true;
            }
            visible = true;
        }
        if !visible && !choices.is_empty() {
            return Ok(FrameAction::Drop);
        }
        self.role_sent |= carries_role;
        if !changed {
            return Ok(inner_action);
        }
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        Ok(FrameAction::Replace(Bytes::from(out)))
    }

    fn flush(&mut self, facts: &mut Vec<Fact>) {
        let before = facts.len();
        self.inner.flush(facts);
        crate::intercept::tool_loop::drop_injected(facts, before, &self.tools);
        if !self.c.continues && self.injected_pending() {
            let reason = if self.last {
                "tool loop limit reached"
            } else {
                "not executed: the response also called client tools"
            };
            let turn = self.pending_turn();
            not_executed(&self.tools, &turn, reason, facts);
            self.c.calls.clear();
        }
    }

    fn status(&self) -> StreamStatus {
        match (&self.status, self.inner.status()) {
            (_, StreamStatus::UpstreamError(e)) => StreamStatus::UpstreamError(e),
            (Some(s), _) => s.clone(),
            (None, StreamStatus::Completed) if self.c.continues => StreamStatus::ToolCalls,
            (None, s) => s,
        }
    }

    fn content_started(&self) -> bool {
        self.inner.content_started()
    }

    fn terminal_event(&self, message: &str) -> Bytes {
        self.inner.terminal_event(message)
    }

    fn take_turn(&mut self) -> Option<Turn> {
        let turn = self.pending_turn();
        Some(turn)
    }

    fn next_iteration(&mut self, last: bool) {
        self.relayed_calls_before += self.c.visible;
        let usage = std::mem::take(&mut self.c.usage);
        self.sum.add(&usage);
        self.c = CompletionState::default();
        self.iteration += 1;
        self.last = last;
        self.status = None;
        self.inner.reset_for_next();
    }
}

impl McpChat {
    fn pending_turn(&self) -> Turn {
        let calls: Vec<(String, String, String)> = self
            .c
            .calls
            .values()
            .filter(|c| c.hidden)
            .map(|c| (c.id.clone(), c.name.clone(), c.args.clone()))
            .collect();
        let content = (!self.c.content.is_empty()).then_some(self.c.content.as_str());
        Turn {
            response_id: self.c.response_id.clone(),
            assistant: vec![assistant_turn(content, &calls)],
            calls: calls
                .into_iter()
                .filter(|(id, _, _)| !id.is_empty())
                .map(|(id, name, args)| ToolCall {
                    call_id: id,
                    tool_id: name,
                    raw_input: args,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
