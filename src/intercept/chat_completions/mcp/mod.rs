//! Chat Completions under the MCP tool loop (openai-chat.md "MCP injection"): request
//! edits, turns, the blocking final body, and the streaming view that hides injected
//! tool-call deltas, renumbers visible ones, hides intermediate ends and sums usage.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::ChatStream;
use crate::intercept::facts::{Fact, FrameAction};
use crate::intercept::json_edit::{Edit, Obj, apply, array_append, merge_same_point};
use crate::intercept::openai::{function_members, inject_edits};
use crate::intercept::request::RequestInfo;
use crate::intercept::tool_loop::{
    BlockingTurn, Decision, Ending, Executed, McpView, Rewrite, ToolCall, Tools, Turn, UsageSum,
    ViewLoop,
};
use crate::mcp::InjectedTool;
use crate::sse::Frame;

fn tool_json(t: &InjectedTool) -> String {
    format!(
        r#"{{"type":"function","function":{{{}}}}}"#,
        function_members(t)
    )
}

/// The upstream body of one iteration: client bytes + injected tools (unless `None`) +
/// the appended messages (the adapter adds the S2 usage request for streams).
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
}

/// The streaming view of a Chat tool loop: hides injected tool-call deltas, renumbers
/// visible ones, hides intermediate ends and sums usage.
pub(crate) type McpChat = McpView<ChatRewrite>;

/// A Chat view for `info`'s request with `tools` injected, bounded by `max_iterations`.
pub(crate) fn view(info: &RequestInfo, tools: Arc<Tools>, max_iterations: u32) -> McpChat {
    let rewrite = ChatRewrite {
        client_include_usage: info.client_include_usage,
        relayed_calls_before: 0,
        role_sent: false,
        c: CompletionState::default(),
    };
    McpView::new(ChatStream::new(info), rewrite, tools, max_iterations)
}

/// The Chat event rewriting under the tool loop.
#[derive(Debug)]
pub(crate) struct ChatRewrite {
    client_include_usage: bool,
    relayed_calls_before: u64,
    /// The client has received `delta.role` (once is what SDK accumulators expect).
    role_sent: bool,
    c: CompletionState,
}

impl ChatRewrite {
    fn injected_pending(&self) -> bool {
        self.c.calls.values().any(|c| c.hidden)
    }

    fn client_calls(&self) -> bool {
        self.c
            .calls
            .values()
            .any(|c| !c.hidden && !c.name.is_empty())
    }

    /// How the completion ends (`complete`: at its `finish_reason`), for the decision.
    fn ending(&self, complete: bool) -> Ending {
        Ending {
            injected: self.injected_pending(),
            client_tool: self.client_calls(),
            complete,
        }
    }
}

impl Rewrite for ChatRewrite {
    type Inner = ChatStream;

    fn on_frame(
        &mut self,
        lp: &mut ViewLoop,
        frame: &Frame,
        inner_action: FrameAction,
        _facts: &mut Vec<Fact>,
    ) -> Result<FrameAction, String> {
        let Some(data) = frame.data() else {
            return Ok(inner_action);
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            if lp.continues() || lp.calls_tools() {
                lp.set_calls_tools();
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
            lp.usage = u.clone();
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
                        state.hidden = lp.tools().contains(name);
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
                if !lp.decide(self.ending(true)).continues() {
                    visible = true;
                    if self.injected_pending() && !self.client_calls() && fr == "tool_calls" {
                        v["choices"][ci]["finish_reason"] = Value::from("stop");
                        changed = true;
                    }
                }
            }
            if !lp.first()
                && self.role_sent
                && role_only
                && choice["finish_reason"].is_null()
                && !has_usage
            {
                // The opening chunk of iterations 2…n.
                return Ok(FrameAction::Drop);
            }
            if role_only && lp.first() {
                visible = true;
            }
            if has_role && !self.role_sent {
                // The role must reach the client once, even when the chunk that carries it
                // held nothing but injected calls (OpenAI puts the role into the first
                // tool-call chunk when there is no text): relayed without them.
                visible = true;
            }
        }
        if lp.continues() && (finish_in_chunk || choices.is_empty()) {
            // The end of an iteration that calls injected tools: hidden.
            return Ok(FrameAction::Drop);
        }
        if has_usage && !lp.continues() {
            if choices.is_empty()
                && !self.client_include_usage
                && matches!(inner_action, FrameAction::Drop)
            {
                return Ok(FrameAction::Drop);
            }
            if let Some(sum) = lp.summed() {
                v["usage"] = Value::Object(sum);
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

    fn flush(&mut self, lp: &mut ViewLoop, facts: &mut Vec<Fact>) {
        if !lp.continues()
            && self.injected_pending()
            && let Decision::Finish(Some(reason)) = lp.decide(self.ending(false))
        {
            let turn = self.pending_turn();
            lp.not_executed(turn.response_id, turn.calls, reason, facts);
            self.c.calls.clear();
        }
    }

    fn take_turn(&mut self) -> Turn {
        self.pending_turn()
    }

    fn next_message(&mut self) {
        self.relayed_calls_before += self.c.visible;
        self.c = CompletionState::default();
    }
}

impl ChatRewrite {
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
