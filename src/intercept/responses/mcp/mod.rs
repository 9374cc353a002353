//! Responses under the MCP tool loop (openai-responses.md "MCP injection"): request edits,
//! the appended `input` items, the blocking final body, and the streaming view that hides
//! injected `function_call` items, renumbers `output_index` and `sequence_number`, hides
//! intermediate starts and ends, strips injected tools from echoed `tools` (S26) and
//! assembles the final response object (S20).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ResponsesStream;
use crate::intercept::facts::{Fact, FrameAction};
use crate::intercept::json_edit::{Edit, Obj, apply, array_append, merge_same_point};
use crate::intercept::openai::{function_members, inject_edits};
use crate::intercept::tool_loop::{
    BlockingTurn, Decision, Ending, Executed, McpView, Rewrite, ToolCall, Tools, Turn, UsageSum,
    ViewLoop,
};
use crate::mcp::InjectedTool;
use crate::sse::Frame;

fn tool_json(t: &InjectedTool) -> String {
    format!(r#"{{"type":"function",{}}}"#, function_members(t))
}

/// Whether the request's shapes allow injection (`tools` an array or absent; `input`
/// absent, null, a string or an array).
pub(crate) fn injectable(body: &[u8]) -> bool {
    let Some(top) = Obj::top(body) else {
        return false;
    };
    let tools_ok = top
        .get("tools")
        .is_none_or(|t| t.get().starts_with('[') || t.get() == "null");
    let input_ok = top.get("input").is_none_or(|i| {
        let s = i.get();
        s == "null" || s.starts_with('"') || s.starts_with('[')
    });
    if !(tools_ok && input_ok) {
        tracing::warn!("responses request has unusual tools/input shapes; no tools injected");
    }
    tools_ok && input_ok
}

/// The upstream body of one iteration.
pub(crate) fn request_body(
    original: &[u8],
    tools: Option<&Tools>,
    turns: &[String],
) -> Option<Bytes> {
    let top = Obj::top(original)?;
    let mut edits: Vec<Edit> = Vec::new();
    if let Some(tools) = tools.filter(|t| !t.0.is_empty()) {
        let items: Vec<String> = tools.0.iter().map(tool_json).collect();
        edits.extend(inject_edits(original, &top, &items.join(","))?);
    }
    if !turns.is_empty() {
        let joined = turns.join(",");
        match top.get("input") {
            Some(raw) if raw.get().starts_with('[') => {
                edits.push(array_append(original, raw, &joined)?);
            }
            Some(raw) if raw.get().starts_with('"') => {
                let text = format!(r#"[{{"role":"user","content":{}}},{joined}]"#, raw.get());
                edits.push(Edit {
                    range: top.value_range(raw)?,
                    text,
                });
            }
            Some(raw) if raw.get() == "null" => edits.push(Edit {
                range: top.value_range(raw)?,
                text: format!("[{joined}]"),
            }),
            Some(_) => return None,
            None => edits.push(top.set("input", &format!("[{joined}]"))?),
        }
    }
    merge_same_point(original, &mut edits);
    Some(apply(original, edits))
}

/// One `function_call_output` item per executed (or refused) call.
pub(crate) fn tool_results_turns(
    results: &[Executed],
    max_bytes: usize,
    note: Option<&str>,
) -> Vec<String> {
    results
        .iter()
        .map(|r| {
            let output = note.map_or_else(|| r.outcome.text(max_bytes), str::to_owned);
            serde_json::json!({"type": "function_call_output", "call_id": r.call.call_id, "output": output}).to_string()
        })
        .collect()
}

/// Whether an output item is a call the client must run (the loop then ends).
fn is_client_call(item: &Value, tools: &Tools) -> bool {
    match item["type"].as_str().unwrap_or_default() {
        "function_call" => !item["name"].as_str().is_some_and(|n| tools.contains(n)),
        "custom_tool_call" | "local_shell_call" | "shell_call" | "apply_patch_call"
        | "computer_call" => true,
        _ => false,
    }
}

fn injected_call(item: &Value, tools: &Tools) -> Option<ToolCall> {
    let name = item["name"].as_str()?;
    (item["type"] == "function_call" && tools.contains(name)).then(|| ToolCall {
        call_id: item["call_id"].as_str().unwrap_or_default().to_owned(),
        tool_id: name.to_owned(),
        raw_input: item["arguments"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Whether an item is appended to the next request (`store: false` cannot resolve
/// reasoning items that carry no encrypted content).
fn keep_in_turn(item: &Value, store_false: bool) -> bool {
    !(store_false
        && item["type"] == "reasoning"
        && item.get("encrypted_content").is_none_or(Value::is_null))
}

/// Whether the request says `store: false`.
pub(crate) fn store_false(original: &[u8]) -> bool {
    Obj::top(original)
        .and_then(|t| t.get("store"))
        .is_some_and(|s| s.get() == "false")
}

/// The `tools` array with the injected entries removed (S26), if any was removed.
fn strip_tools(tools_raw: &RawValue, tools: &Tools) -> Option<String> {
    let items: Vec<&RawValue> = serde_json::from_str(tools_raw.get()).ok()?;
    let kept: Vec<&str> = items
        .iter()
        .filter(|t| {
            let v: Value = serde_json::from_str(t.get()).unwrap_or(Value::Null);
            !v["name"].as_str().is_some_and(|n| tools.contains(n))
        })
        .map(|t| t.get())
        .collect();
    (kept.len() != items.len()).then(|| format!("[{}]", kept.join(",")))
}

/// Edits of a response object: S26 tools, and optionally output and usage.
fn response_edits(
    data: &[u8],
    resp: &Obj<'_>,
    tools: &Tools,
    output: Option<&str>,
    usage: Option<&Map<String, Value>>,
) -> Vec<Edit> {
    let mut edits = Vec::new();
    if let Some(t) = resp.get("tools")
        && let Some(text) = strip_tools(t, tools)
        && let Some(r) = resp.value_range(t)
    {
        edits.push(Edit { range: r, text });
    }
    if let Some(out) = output
        && let Some(e) = resp.set("output", out)
    {
        edits.push(e);
    }
    if let Some(u) = usage {
        match resp.get("usage").and_then(|raw| Obj::at(data, raw)) {
            Some(uo) => edits.extend(u.iter().filter_map(|(k, v)| uo.set(k, &v.to_string()))),
            None => edits.extend(resp.set("usage", &Value::Object(u.clone()).to_string())),
        }
    }
    edits
}

// === blocking ===

/// Reads a blocking response body for the loop.
pub(crate) fn blocking_turn(body: &[u8], tools: &Tools, store_false: bool) -> Option<BlockingTurn> {
    #[derive(serde::Deserialize)]
    struct Resp<'a> {
        id: Option<String>,
        #[serde(borrow)]
        output: Option<Vec<&'a RawValue>>,
        usage: Option<Map<String, Value>>,
    }
    let r: Resp<'_> = serde_json::from_slice(body).ok()?;
    let mut out = BlockingTurn {
        usage: r.usage.unwrap_or_default(),
        ..BlockingTurn::default()
    };
    out.turn.response_id = r.id;
    for raw in r.output.unwrap_or_default() {
        let item: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        if let Some(call) = injected_call(&item, tools) {
            out.turn.calls.push(call);
        } else if is_client_call(&item, tools) {
            out.client_tool = true;
        }
        if keep_in_turn(&item, store_false) {
            out.turn.assistant.push(raw.get().to_owned());
        }
    }
    Some(out)
}

/// The blocking body the client gets (S19, S26): summed usage, injected items and tools
/// removed; every other byte as received.
pub(crate) fn final_blocking(body: &Bytes, sum: Option<&UsageSum>, tools: &Tools) -> Bytes {
    let Some(top) = Obj::top(body) else {
        return body.clone();
    };
    let output = top.get("output").and_then(|o| {
        let items: Vec<&RawValue> = serde_json::from_str(o.get()).ok()?;
        let kept: Vec<&str> = items
            .iter()
            .filter(|i| {
                injected_call(&serde_json::from_str(i.get()).unwrap_or(Value::Null), tools)
                    .is_none()
            })
            .map(|i| i.get())
            .collect();
        (kept.len() != items.len()).then(|| format!("[{}]", kept.join(",")))
    });
    let mut edits = response_edits(body, &top, tools, output.as_deref(), sum.map(|s| &s.0));
    merge_same_point(body, &mut edits);
    apply(body, edits)
}

/// The request's `previous_response_id`, if it is a string.
pub(crate) fn previous_response_id(body: &[u8]) -> Option<String> {
    let raw = Obj::top(body)?.get("previous_response_id")?;
    serde_json::from_str::<String>(raw.get()).ok()
}

/// The request with `previous_response_id` set to `id` (every other byte kept).
pub(crate) fn continue_from(body: &[u8], id: &str) -> Option<Bytes> {
    let edit = Obj::top(body)?.set("previous_response_id", &crate::error::json_string(id))?;
    Some(apply(body, vec![edit]))
}

/// A response object (`body`) with its `id` replaced by `first_id` (S20), if it had
/// another one.
pub(crate) fn present_id(body: &[u8], first_id: &str) -> Option<Bytes> {
    let top = Obj::top(body)?;
    let edit = id_edit(&top, first_id)?;
    Some(apply(body, vec![edit]))
}

/// The edit that shows `first_id` as the response object's `id`, if it differs.
fn id_edit(resp: &Obj<'_>, first_id: &str) -> Option<Edit> {
    let id = resp.get("id")?;
    let want = crate::error::json_string(first_id);
    (id.get() != want).then(|| resp.set("id", &want)).flatten()
}

// === streaming ===

#[derive(Debug, Default)]
struct ResponseState {
    response_id: Option<String>,
    hidden_indices: BTreeSet<u64>,
    hidden_items: BTreeSet<String>,
    index_map: std::collections::BTreeMap<u64, u64>,
    visible: u64,
    /// Every item of this response, for the next request.
    turn_items: Vec<String>,
    calls: Vec<ToolCall>,
    client_call: bool,
}

/// The streaming view of a Responses tool loop: hides injected `function_call` items,
/// renumbers `output_index` and `sequence_number`, hides intermediate starts and ends,
/// strips injected tools from echoed `tools` and assembles the final response object.
pub(crate) type McpResponses = McpView<ResponsesRewrite>;

/// A Responses view for the request `original` with `tools` injected, bounded by
/// `max_iterations`.
pub(crate) fn view(original: &[u8], tools: Arc<Tools>, max_iterations: u32) -> McpResponses {
    let rewrite = ResponsesRewrite {
        store_false: store_false(original),
        items_before: 0,
        visible_items: Vec::new(),
        r: ResponseState::default(),
        renumber_from: None,
        first_id: None,
    };
    McpView::new(ResponsesStream::new(), rewrite, tools, max_iterations)
}

/// The Responses event rewriting under the tool loop.
#[derive(Debug)]
pub(crate) struct ResponsesRewrite {
    store_false: bool,
    items_before: u64,
    /// Visible output items of all iterations, in client order (raw JSON).
    visible_items: Vec<String>,
    r: ResponseState,
    /// Once an event was hidden, sequence numbers are rewritten from here on.
    renumber_from: Option<u64>,
    /// The first upstream response's id: the one id the client sees (S20).
    first_id: Option<String>,
}

impl ResponsesRewrite {
    /// Marks an event hidden and returns Drop.
    fn hide(&mut self, seq: Option<u64>) -> FrameAction {
        if self.renumber_from.is_none() {
            self.renumber_from = Some(seq.unwrap_or(0));
        }
        FrameAction::Drop
    }
}

impl Rewrite for ResponsesRewrite {
    type Inner = ResponsesStream;

    fn on_frame(
        &mut self,
        lp: &mut ViewLoop,
        frame: &Frame,
        inner_action: FrameAction,
        facts: &mut Vec<Fact>,
    ) -> Result<FrameAction, String> {
        let Some(data) = frame.data() else {
            return Ok(inner_action);
        };
        let Ok(v) = serde_json::from_slice::<Value>(&data) else {
            return Ok(inner_action);
        };
        let name = frame
            .event_type()
            .map(str::to_owned)
            .or_else(|| v["type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let seq = v["sequence_number"].as_u64();
        let Some(top) = Obj::top(&data) else {
            return Ok(inner_action);
        };
        let mut edits: Vec<Edit> = Vec::new();
        match name.as_str() {
            "response.created" | "response.in_progress" | "response.queued" => {
                if !lp.first() {
                    return Ok(self.hide(seq));
                }
                if self.first_id.is_none() {
                    self.first_id = v["response"]["id"].as_str().map(str::to_owned);
                }
                if let Some(resp) = top.get("response").and_then(|r| Obj::at(&data, r)) {
                    edits.extend(response_edits(&data, &resp, lp.tools(), None, None));
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = &v["item"];
                let index = v["output_index"].as_u64().unwrap_or(0);
                let hidden = injected_call(item, lp.tools()).is_some();
                if name == "response.output_item.done" {
                    if let Some(raw) = top.get("item") {
                        if keep_in_turn(item, self.store_false) {
                            self.r.turn_items.push(raw.get().to_owned());
                        }
                        if !hidden {
                            self.visible_items.push(raw.get().to_owned());
                        }
                    }
                    if let Some(call) = injected_call(item, lp.tools()) {
                        self.r.calls.push(call);
                    } else if is_client_call(item, lp.tools()) {
                        self.r.client_call = true;
                    }
                }
                if hidden {
                    self.r.hidden_indices.insert(index);
                    if let Some(id) = item["id"].as_str() {
                        self.r.hidden_items.insert(id.to_owned());
                    }
                    return Ok(self.hide(seq));
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(u) = v["response"]["usage"].as_object() {
                    lp.usage = u.clone();
                }
                self.r.response_id = v["response"]["id"].as_str().map(str::to_owned);
                if lp.first() && self.first_id.is_none() {
                    self.first_id.clone_from(&self.r.response_id);
                }
                let ending = Ending {
                    injected: !self.r.calls.is_empty(),
                    client_tool: self.r.client_call,
                    complete: name == "response.completed",
                };
                match lp.decide(ending) {
                    Decision::Execute | Decision::LastCall => {
                        lp.set_calls_tools();
                        return Ok(self.hide(seq));
                    }
                    Decision::Finish(Some(reason)) => {
                        let calls = std::mem::take(&mut self.r.calls);
                        lp.not_executed(self.r.response_id.clone(), calls, reason, facts);
                    }
                    Decision::Finish(None) => {}
                }
                if let Some(resp) = top.get("response").and_then(|r| Obj::at(&data, r)) {
                    let usage = lp.summed();
                    let assemble = !lp.first() || !self.r.hidden_indices.is_empty();
                    let output = assemble.then(|| format!("[{}]", self.visible_items.join(",")));
                    edits.extend(response_edits(
                        &data,
                        &resp,
                        lp.tools(),
                        output.as_deref(),
                        usage.as_ref(),
                    ));
                    // One lifecycle: the final object carries the first upstream id.
                    if let Some(first) = &self.first_id
                        && let Some(e) = id_edit(&resp, first)
                    {
                        edits.push(e);
                    }
                }
            }
            _ => {
                if let Some(id) = v["item_id"].as_str()
                    && self.r.hidden_items.contains(id)
                {
                    return Ok(self.hide(seq));
                }
            }
        }
        // output_index renumbering.
        if let Some(index) = v["output_index"].as_u64() {
            let client = match self.r.index_map.get(&index) {
                Some(c) => *c,
                None => {
                    let c = self.items_before + self.r.visible;
                    self.r.visible += 1;
                    self.r.index_map.insert(index, c);
                    c
                }
            };
            if client != index
                && let Some(e) = top.set("output_index", &client.to_string())
            {
                edits.push(e);
            }
        }
        // sequence_number: previous relayed + 1 once anything was hidden.
        if let (Some(from), Some(_)) = (self.renumber_from, seq) {
            let next = from;
            self.renumber_from = Some(next.saturating_add(1));
            if seq != Some(next)
                && let Some(e) = top.set("sequence_number", &next.to_string())
            {
                edits.push(e);
            }
        }
        if edits.is_empty() {
            return Ok(inner_action);
        }
        merge_same_point(&data, &mut edits);
        let out = apply(&data, edits);
        Ok(FrameAction::Replace(crate::sse::event(Some(&name), &out)))
    }

    fn take_turn(&mut self) -> Turn {
        Turn {
            response_id: self.r.response_id.clone(),
            assistant: std::mem::take(&mut self.r.turn_items),
            calls: std::mem::take(&mut self.r.calls),
        }
    }

    fn next_message(&mut self) {
        self.items_before += self.r.visible;
        self.r = ResponseState::default();
    }
}

#[cfg(test)]
mod tests;
